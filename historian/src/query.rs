//! Reading the history back (`pointhub client history`): the samples of the points matching
//! some patterns over a time range, in time order, streamed.

use crate::db::system_time;
use crate::row::{dtype_of, value_of};
use crate::HistorianError;
use futures_util::{pin_mut, TryStreamExt};
use pointhub_schemas::{Pattern, Quality, Timestamp, Value};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_postgres::Client;

/// One stored sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The point's name.
    pub point: String,
    /// The sample's time (source time, or a transition's time).
    pub time: Timestamp,
    /// When the hub took it in.
    pub hub_time: Timestamp,
    /// The value, as the point's type.
    pub value: Value,
    /// The OPC UA status code.
    pub quality: Quality,
    /// Whether it came as a history replay.
    pub history: bool,
}

fn micros(t: SystemTime) -> Timestamp {
    Timestamp(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
    )
}

/// Calls `each` for every sample of the points matching `patterns` with `since <= time < until`,
/// in time order; returns how many there were.
pub async fn samples(
    client: &Client,
    patterns: &[Pattern],
    since: Timestamp,
    until: Timestamp,
    mut each: impl FnMut(Sample) -> Result<(), HistorianError>,
) -> Result<u64, HistorianError> {
    let mut points: HashMap<i64, (String, pointhub_schemas::DataType)> = HashMap::new();
    for row in client
        .query("SELECT id, name, data_type FROM pointhub_points", &[])
        .await?
    {
        let name: String = row.get(1);
        if patterns.iter().any(|p| p.matches(&name)) {
            if let Some(d) = dtype_of(row.get(2)) {
                points.insert(row.get(0), (name, d));
            }
        }
    }
    if points.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = points.keys().copied().collect();
    let (since, until) = (system_time(since), system_time(until));
    let rows = client
        .query_raw(
            "SELECT point_id, source_time, hub_time, value, value_text, quality, history
             FROM pointhub_samples
             WHERE point_id = ANY($1) AND source_time >= $2 AND source_time < $3
             ORDER BY source_time, point_id",
            [
                &ids as &(dyn tokio_postgres::types::ToSql + Sync),
                &since,
                &until,
            ],
        )
        .await?;
    pin_mut!(rows);
    let mut n = 0;
    while let Some(row) = rows.try_next().await? {
        let Some((name, dtype)) = points.get(&row.get::<_, i64>(0)) else {
            continue;
        };
        let quality: i64 = row.get(5);
        each(Sample {
            point: name.clone(),
            time: micros(row.get(1)),
            hub_time: row
                .get::<_, Option<SystemTime>>(2)
                .map_or(Timestamp::NEVER, micros),
            value: value_of(*dtype, row.get(3), row.get(4)),
            quality: Quality(u32::try_from(quality).unwrap_or(u32::MAX)),
            history: row.get(6),
        })?;
        n += 1;
    }
    Ok(n)
}
