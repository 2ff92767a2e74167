//! The audit log: append-only JSON lines in the hub's data folder (`audit.jsonl`), each entry
//! written and flushed to disk (`fdatasync`) before the action it records goes on. When the file
//! passes its size limit it is renamed `audit.jsonl.1` (older ones shift up to `.N`, the oldest is
//! dropped) and a new file starts.
//!
//! Events: `connection.accepted`, `connection.refused`, `connection.closed`, `key.pending`,
//! `key.approved`, `key.revoked`, `token.created`, `token.used`, `token.refused`,
//! `publish.refused`, `write`.

use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
    max_bytes: u64,
    keep: usize,
}

impl AuditLog {
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> std::io::Result<AuditLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.jsonl");
        let file = open_append(&path)?;
        Ok(AuditLog {
            path,
            file: Mutex::new(Some(file)),
            max_bytes,
            keep,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry: `{"ts":…, "event":…, …fields}`; durable when this returns.
    pub fn record(&self, event: &str, fields: Value) {
        let mut m = Map::new();
        m.insert(
            "ts".into(),
            json!(pointhub_schemas::Timestamp::now().to_rfc3339()),
        );
        m.insert("event".into(), json!(event));
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        let mut line = Value::Object(m).to_string();
        line.push('\n');
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if let Err(e) = self.append(&mut guard, line.as_bytes()) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
        }
    }

    fn append(&self, file: &mut Option<File>, bytes: &[u8]) -> std::io::Result<()> {
        let f = match file {
            Some(f) => f,
            None => file.insert(open_append(&self.path)?),
        };
        f.write_all(bytes)?;
        f.sync_data()?;
        if f.metadata()?.len() >= self.max_bytes {
            *file = None;
            self.rotate()?;
            *file = Some(open_append(&self.path)?);
        }
        Ok(())
    }

    fn rotate(&self) -> std::io::Result<()> {
        let name = |i: usize| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = std::fs::remove_file(name(self.keep));
        for i in (1..self.keep).rev() {
            if name(i).exists() {
                std::fs::rename(name(i), name(i + 1))?;
            }
        }
        std::fs::rename(&self.path, name(1))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Reads entries from the rotated files and the current one, oldest first.
pub fn read_all(dir: &Path) -> std::io::Result<Vec<Value>> {
    let base = dir.join("audit.jsonl");
    let mut files: Vec<PathBuf> = Vec::new();
    for i in (1..=1000).rev() {
        let p = PathBuf::from(format!("{}.{i}", base.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(base);
    let mut out = Vec::new();
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        for line in BufReader::new(file).lines() {
            let line = line?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path(), 300, 3).expect("open");
        for i in 0..20 {
            log.record("write", json!({ "n": i }));
        }
        let all = read_all(dir.path()).expect("read");
        let ns: Vec<i64> = all.iter().filter_map(|v| v["n"].as_i64()).collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order: {ns:?}");
        assert_eq!(ns.last(), Some(&19));
        assert!(
            !dir.path().join("audit.jsonl.4").exists(),
            "keeps at most 3 rotated files"
        );
        assert!(dir.path().join("audit.jsonl.1").exists());
    }
}
