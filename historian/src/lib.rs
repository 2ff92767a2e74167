//! The pointhub historian: a client sink that records the points it subscribes to, with their
//! quality and their history replays, in PostgreSQL (`pointhub client historian`).
//!
//! - [`row`]: the rule that turns the client's records into rows (values once, quality
//!   transitions once, never the client's own link loss).
//! - [`schema`]: the tables, created and upgraded by numbered migrations.
//! - [`db`]: one connection and a batch written in one transaction, conflicts on
//!   (point, time) ignored, so a replay lands once.
//! - [`sink`]: the sink itself: rows go to an on-disk buffer first (live and history apart),
//!   and a writer moves them to the database, live first, forgetting them only once committed.
//! - [`query`]: reading the history back (`pointhub client history`).
//! - [`target`]: the database and how the link to it is secured (TLS, a password file).

pub mod db;
pub mod query;
pub mod row;
pub mod schema;
pub mod sink;
pub mod target;

pub use sink::Historian;
pub use target::Target;

/// Why the historian cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum HistorianError {
    /// `historian.database` is not a PostgreSQL connection string.
    #[error("historian.database: {0}; write e.g. \"postgresql://pointhub@127.0.0.1:5432/plant\" or \"host=127.0.0.1 user=pointhub dbname=plant\"")]
    Database(tokio_postgres::Error),
    /// The database refused or dropped a request, or cannot be reached.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database's schema is newer than this build knows.
    #[error("the database's historian schema is at version {found}, newer than this pointhub knows ({known}): upgrade pointhub, or point it at another database")]
    SchemaTooNew {
        /// The version found in `pointhub_schema`.
        found: i32,
        /// The newest this build applies.
        known: i32,
    },
    /// The on-disk buffer cannot be opened or written.
    #[error("historian buffer: {0}")]
    Buffer(#[from] pointhub_spool::BufferError),
    /// The TLS settings for the database do not work (a CA file that is not a certificate, a key
    /// that does not match its certificate).
    #[error("historian TLS to the database: {0}")]
    Tls(String),
    /// A CA, certificate or key file could not be read.
    #[error("historian: {0}")]
    Identity(#[from] pointhub_link::identity::IdentityError),
    /// The password file could not be read.
    #[error("historian.password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// Writing the output of a query failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// Parses a connection string as `historian.database` holds it.
pub fn database_config(text: &str) -> Result<tokio_postgres::Config, HistorianError> {
    text.parse().map_err(HistorianError::Database)
}
