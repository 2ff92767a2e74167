//! An update as a hub keeps it on disk: with its point's name, not its number. A point's number
//! in the hub's table holds only for the life of the process; a hub restarted with updates on
//! disk numbers its points afresh, and finds each update's point again by name.

use crate::core::Table;
use pointhub_schemas::Update;
use serde::{Deserialize, Serialize};

/// One kept update and the name of its point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Named {
    pub(crate) name: String,
    pub(crate) update: Update,
}

/// Names each update's point; an update of a point the table does not have is left out.
pub(crate) fn name_all(table: &Table, updates: &[Update]) -> Vec<Named> {
    updates
        .iter()
        .filter_map(|u| {
            let p = table.points.get(u.id as usize)?;
            Some(Named {
                name: table.name(p).to_string(),
                update: u.clone(),
            })
        })
        .collect()
}
