//! The database side: one connection, the schema brought up to date on connect, and a batch of
//! rows written in one transaction — the points upserted, the samples inserted with conflicts
//! on (point, time) ignored, so a batch written twice (a replay, a crash before the buffer
//! forgot it) lands once.

use crate::row::{columns, Row};
use crate::target::Target;
use crate::HistorianError;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::{Client, NoTls, Statement};
use tracing::warn;

const UPSERT_POINTS: &str = "
INSERT INTO pointhub_points AS p (name, data_type, unit, description, first_seen, last_seen)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[])
ON CONFLICT (name) DO UPDATE SET
    data_type = EXCLUDED.data_type,
    unit = EXCLUDED.unit,
    description = COALESCE(EXCLUDED.description, p.description),
    first_seen = LEAST(p.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(p.last_seen, EXCLUDED.last_seen)
RETURNING id, name";

const INSERT_SAMPLES: &str = "
INSERT INTO pointhub_samples (point_id, source_time, hub_time, value, value_text, quality, history)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::float8[], $5::text[], $6::bigint[], $7::bool[])
ON CONFLICT DO NOTHING";

/// A connected database with its schema up to date.
pub struct Db {
    client: Client,
    upsert: Statement,
    insert: Statement,
}

/// Runs a connection's I/O until it ends.
fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            warn!(error = %e, "historian database connection ended");
        }
    });
}

/// A microsecond timestamp as PostgreSQL's `timestamptz`.
pub fn system_time(t: pointhub_schemas::Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(t.0)
}

impl Db {
    /// Connects (over TLS where the target says so), migrates the schema and prepares the
    /// statements.
    pub async fn connect(target: &Target) -> Result<Db, HistorianError> {
        let mut client = match &target.tls {
            Some(tls) => {
                let (client, conn) = target.config.connect(tls.clone()).await?;
                drive(conn);
                client
            }
            None => {
                let (client, conn) = target.config.connect(NoTls).await?;
                drive(conn);
                client
            }
        };
        crate::schema::migrate(&mut client).await?;
        let upsert = client.prepare(UPSERT_POINTS).await?;
        let insert = client.prepare(INSERT_SAMPLES).await?;
        Ok(Db {
            client,
            upsert,
            insert,
        })
    }

    /// The connection, for queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes `rows` in one transaction; returns how many samples were new.
    pub async fn write(&mut self, rows: &[Row]) -> Result<u64, HistorianError> {
        if rows.is_empty() {
            return Ok(0);
        }
        // One entry per point: its metadata and the batch's first and last time.
        let mut points: HashMap<&str, (usize, SystemTime, SystemTime)> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let t = system_time(r.time);
            let e = points.entry(r.point.as_str()).or_insert((i, t, t));
            e.0 = i;
            e.1 = e.1.min(t);
            e.2 = e.2.max(t);
        }
        let (mut names, mut types, mut units, mut descs, mut firsts, mut lasts) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (name, (i, first, last)) in &points {
            let r = &rows[*i];
            names.push(name.to_string());
            types.push(r.dtype.as_str().to_string());
            units.push(r.unit.clone());
            descs.push(r.description.clone());
            firsts.push(*first);
            lasts.push(*last);
        }
        let tx = self.client.transaction().await?;
        let ids: HashMap<String, i64> = tx
            .query(
                &self.upsert,
                &[&names, &types, &units, &descs, &firsts, &lasts],
            )
            .await?
            .into_iter()
            .map(|row| (row.get::<_, String>(1), row.get::<_, i64>(0)))
            .collect();
        let n = rows.len();
        let (mut pid, mut time, mut hub, mut num, mut text, mut quality, mut history) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            let Some(id) = ids.get(&r.point) else {
                continue;
            };
            let (v, t) = columns(&r.value);
            pid.push(*id);
            time.push(system_time(r.time));
            hub.push((!r.hub_time.is_never()).then(|| system_time(r.hub_time)));
            num.push(v);
            text.push(t);
            quality.push(i64::from(r.quality.0));
            history.push(r.history);
        }
        let new = tx
            .execute(
                &self.insert,
                &[&pid, &time, &hub, &num, &text, &quality, &history],
            )
            .await?;
        tx.commit().await?;
        Ok(new)
    }
}
