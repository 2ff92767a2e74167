//! The historian's tables, created and upgraded by the historian itself: numbered migrations,
//! each applied once in a transaction and recorded in `pointhub_schema`. docs/historian.md
//! prints the same SQL for a DBA to read.

use crate::HistorianError;
use tokio_postgres::Client;

/// One step of the schema.
pub struct Migration {
    /// Its number: migrations apply in order, each once.
    pub version: i32,
    /// What it does, as recorded in `pointhub_schema`.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "points and samples",
    sql: V1,
}];

const V1: &str = r#"
CREATE TABLE pointhub_points (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    data_type   text NOT NULL,
    unit        text,
    description text,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL
);
CREATE TABLE pointhub_samples (
    point_id    bigint NOT NULL REFERENCES pointhub_points (id),
    source_time timestamptz NOT NULL,
    hub_time    timestamptz,
    value       double precision,
    value_text  text,
    quality     bigint NOT NULL,
    history     boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (point_id, source_time)
);
CREATE INDEX pointhub_samples_time ON pointhub_samples USING brin (source_time);
CREATE VIEW pointhub_history AS
    SELECT p.name, s.source_time, s.hub_time, s.value, s.value_text, s.quality, s.history, s.recorded_at
    FROM pointhub_samples s JOIN pointhub_points p ON p.id = s.point_id;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('pointhub_samples', 'source_time');
    END IF;
END
$$;
"#;

/// A lock number only the historian's migrations take, so two historians starting at once
/// do not both migrate.
const MIGRATION_LOCK: i64 = 0x7074_6875_6230_0001;

/// Brings the database's schema to the newest version; refuses a schema newer than this build.
/// Returns the version the database is at.
pub async fn migrate(client: &mut Client) -> Result<i32, HistorianError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pointhub_schema (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: Option<i32> = tx
        .query_one("SELECT max(version) FROM pointhub_schema", &[])
        .await?
        .get(0);
    let current = current.unwrap_or(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(HistorianError::SchemaTooNew {
            found: current,
            known: newest,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO pointhub_schema (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "historian schema migrated"
        );
    }
    tx.commit().await?;
    Ok(newest)
}
