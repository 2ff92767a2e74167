//! The audit log: append-only JSON lines in the hub's data folder (`audit.jsonl`), each entry
//! written and flushed to disk (`fdatasync`) before the action it records goes on. Entries
//! written at the same time share one flush (group commit), so a burst of connections costs a
//! few flushes, not one each. When the file
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
use std::sync::{Arc, Mutex};

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Writer>,
    /// Entries known to be on disk (a count of entries written since open). Whoever syncs
    /// holds this lock: callers that wrote meanwhile find their entry covered and return, so
    /// many concurrent entries share one `fdatasync` (group commit).
    synced: Mutex<u64>,
    max_bytes: u64,
    keep: usize,
}

struct Writer {
    file: Option<Arc<File>>,
    /// Entries written since open.
    written: u64,
}

impl AuditLog {
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> std::io::Result<AuditLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.jsonl");
        let file = open_append(&path)?;
        Ok(AuditLog {
            path,
            file: Mutex::new(Writer {
                file: Some(Arc::new(file)),
                written: 0,
            }),
            synced: Mutex::new(0),
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
        let mine = {
            let Ok(mut w) = self.file.lock() else {
                return;
            };
            if let Err(e) = self.append(&mut w, line.as_bytes()) {
                tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
                return;
            }
            w.written
        };
        let Ok(mut synced) = self.synced.lock() else {
            return;
        };
        if *synced >= mine {
            return; // another caller's sync covered this entry
        }
        let (upto, file) = match self.file.lock() {
            Ok(w) => (w.written, w.file.clone()),
            Err(_) => return,
        };
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, path = %self.path.display(), "cannot flush the audit log");
                return;
            }
        }
        *synced = upto;
    }

    fn append(&self, w: &mut Writer, bytes: &[u8]) -> std::io::Result<()> {
        let f = match &w.file {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(open_append(&self.path)?);
                w.file = Some(f.clone());
                f
            }
        };
        (&*f).write_all(bytes)?;
        w.written += 1;
        if f.metadata()?.len() >= self.max_bytes {
            // Entries in the old file are made durable before it is renamed.
            f.sync_data()?;
            w.file = None;
            self.rotate()?;
            w.file = Some(Arc::new(open_append(&self.path)?));
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

    #[test]
    fn concurrent_entries_are_all_kept_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(AuditLog::open(dir.path(), 1 << 20, 3).expect("open"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.record("connection.accepted", json!({ "t": t, "i": i }));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let all = read_all(dir.path()).expect("read");
        assert_eq!(all.len(), 400, "every entry, each a whole JSON line");
        for t in 0..8 {
            let mine: Vec<i64> = all
                .iter()
                .filter(|v| v["t"] == t)
                .filter_map(|v| v["i"].as_i64())
                .collect();
            assert_eq!(mine, (0..50).collect::<Vec<i64>>(), "thread {t} in order");
        }
    }
}
