//! The point table: points by global id, their names in one arena, an index by name, the
//! owners, and the points changed since the last save.

use super::sets::SubSet;
use super::subscriber::Entry;
use pointhub_schemas::{DataType, PointDef, Quality, Timestamp, Update, Value};
use std::sync::Arc;

/// One point in the table. Kept small (96 bytes): a hub holds millions of them.
pub(crate) struct PointEntry {
    /// Where the name is in the table's name arena ([`Table::name`]).
    pub(crate) name: NameRef,
    pub dtype: DataType,
    /// Unit and description, boxed: most points have neither, and a million points should
    /// not carry two empty strings each.
    pub(crate) meta: Option<Box<Meta>>,
    pub writable: bool,
    /// The node that is the authority for the point: an index into the table's owners
    /// ([`Table::owner`]).
    pub(crate) owner: u32,
    /// The owner's session id while it is connected, [`NO_SESSION`] when not.
    pub(crate) owner_session: u64,
    pub value: Value,
    pub quality: Quality,
    pub source_ts: Timestamp,
    pub hub_ts: Timestamp,
    pub(crate) subs: SubSet,
    /// Changed since the store last saved it.
    pub(crate) dirty: bool,
    /// The stretches of device time whose values may still come as history ([`Gaps`]):
    /// history outside them came live already, and is not sent again.
    pub(crate) gaps: super::gaps::Gaps,
}

/// `owner_session` of a point whose authority is not connected.
pub(crate) const NO_SESSION: u64 = u64::MAX;

/// Where a point's name is in [`Table`]'s name arena: every name in one string, so a name
/// costs its bytes and 8 bytes here, not a pointer and an allocation of its own (≈ 64 bytes).
#[derive(Clone, Copy)]
pub(crate) struct NameRef {
    pub(crate) at: u32,
    pub(crate) len: u32,
}

/// A point as the store keeps it across restarts.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SavedPoint {
    pub name: String,
    pub dtype: DataType,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub writable: bool,
    pub owner: String,
    pub value: Value,
    pub quality: Quality,
    pub source_ts: Timestamp,
    pub hub_ts: Timestamp,
}

/// A point's rarely set descriptive fields.
pub(crate) struct Meta {
    pub(crate) unit: Option<String>,
    pub(crate) description: Option<String>,
}

pub(crate) fn meta(unit: &Option<String>, description: &Option<String>) -> Option<Box<Meta>> {
    (unit.is_some() || description.is_some()).then(|| {
        Box::new(Meta {
            unit: unit.clone(),
            description: description.clone(),
        })
    })
}

impl PointEntry {
    /// The owner's session id while it is connected.
    pub(crate) fn owner_session(&self) -> Option<u64> {
        (self.owner_session != NO_SESSION).then_some(self.owner_session)
    }

    pub(crate) fn def(&self, table: &Table, id: u32) -> PointDef {
        PointDef {
            id,
            name: table.name(self).to_string(),
            dtype: self.dtype,
            unit: self.unit().map(str::to_string),
            description: self.meta.as_ref().and_then(|m| m.description.clone()),
            writable: self.writable,
        }
    }

    /// Marks the point (global id `gid`) changed for the store, listing it once.
    pub(crate) fn mark_dirty(&mut self, gid: u32, dirty: &mut Vec<u32>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(gid);
        }
    }

    pub(crate) fn unit(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.unit.as_deref())
    }

    /// The point's current state as an update with the global id.
    pub(crate) fn entry(&self, gid: u32) -> Entry {
        Update {
            id: gid,
            value: self.value.clone(),
            quality: self.quality,
            source_ts: self.source_ts,
            hub_ts: self.hub_ts,
            flags: 0,
        }
    }
}

/// The point table: points by global id, and an index by name.
#[derive(Default)]
pub(crate) struct Table {
    pub points: Vec<PointEntry>,
    /// Global ids by name: a hash table of ids whose keys are the points' own names, so an
    /// index entry costs 4 bytes, not a second copy of the name.
    pub(crate) by_name: hashbrown::HashTable<u32>,
    /// Points changed since the store last saved them, so that saving costs the changes, not
    /// a walk over the whole table under its lock.
    pub(crate) dirty: Vec<u32>,
    /// Every point's name, one after another (points are never removed, names never change).
    pub(crate) names: String,
    /// The nodes that own points, each once, and their indexes.
    pub(crate) owners: Vec<Arc<str>>,
    pub(crate) owner_index: rustc_hash::FxHashMap<Arc<str>, u32>,
}

pub(crate) fn name_in<'a>(names: &'a str, p: &PointEntry) -> &'a str {
    names
        .get(p.name.at as usize..(p.name.at as usize + p.name.len as usize))
        .unwrap_or("")
}

impl Table {
    /// A point's name.
    pub(crate) fn name<'a>(&'a self, p: &PointEntry) -> &'a str {
        name_in(&self.names, p)
    }

    /// The node that is a point's authority.
    pub(crate) fn owner(&self, p: &PointEntry) -> &Arc<str> {
        static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "".into());
        self.owners.get(p.owner as usize).unwrap_or(&NONE)
    }

    /// The index of `owner`, added if new.
    pub(crate) fn owner_id(&mut self, owner: &Arc<str>) -> u32 {
        if let Some(&i) = self.owner_index.get(owner) {
            return i;
        }
        let i = self.owners.len() as u32;
        self.owners.push(owner.clone());
        self.owner_index.insert(owner.clone(), i);
        i
    }

    /// Puts a name in the arena; `None` once the arena would pass 4 GiB.
    pub(crate) fn add_name(&mut self, name: &str) -> Option<NameRef> {
        let at = u32::try_from(self.names.len()).ok()?;
        let len = u32::try_from(name.len()).ok()?;
        at.checked_add(len)?;
        self.names.push_str(name);
        Some(NameRef { at, len })
    }

    pub(crate) fn hash(name: &str) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(name)
    }

    /// The global id of a point by name.
    pub(crate) fn gid(&self, name: &str) -> Option<u32> {
        let (points, names) = (&self.points, &self.names);
        self.by_name
            .find(Self::hash(name), |&g| {
                points
                    .get(g as usize)
                    .is_some_and(|p| name_in(names, p) == name)
            })
            .copied()
    }

    /// Indexes the point `gid` (already in `points`) by its name.
    pub(crate) fn index(&mut self, gid: u32) {
        let Some(p) = self.points.get(gid as usize) else {
            return;
        };
        let (points, names) = (&self.points, &self.names);
        self.by_name
            .insert_unique(Self::hash(name_in(names, p)), gid, |&g| {
                points
                    .get(g as usize)
                    .map(|p| Self::hash(name_in(names, p)))
                    .unwrap_or(0)
            });
    }
}
