//! The audit log: append-only JSON lines in the hub's data folder (`audit.jsonl`), each entry
//! written and flushed to disk (`fdatasync`) before the action it records goes on. Entries
//! written at the same time share one flush (group commit), so a burst of connections costs a
//! few flushes, not one each. When the file
//! passes its size limit it is renamed `audit.jsonl.1` (older ones shift up to `.N`, the oldest is
//! dropped) and a new file starts.
//!
//! Tamper-evident: every entry ends with `prev`, the SHA-256 of the line before it (across a
//! rotation too: a new file starts with an `audit.rotated` entry chained to the old file's
//! last line), so an entry edited, removed or inserted later breaks the chain, which
//! `pointhub hub audit --verify` ([`verify`]) finds. A flood of refusals is recorded in part and
//! counted (see `audit_limit`), so it cannot flush the log.
//!
//! The events are [`Event`]'s kinds; docs/security.md lists them (a test holds it).

pub use crate::audit_event::Event;
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The hub's append-only, hash-chained audit log (`audit.jsonl` in the data folder).
pub struct AuditLog {
    path: PathBuf,
    limiter: crate::audit_limit::Limiter,
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
    /// SHA-256 (hex) of the last line written: the next entry's `prev`.
    head: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The last line of the newest audit file that has one (for the chain's head at open).
fn last_line(dir: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    for f in files(dir).into_iter().rev() {
        let Ok(mut file) = File::open(&f) else {
            continue;
        };
        let len = file.metadata()?.len();
        // Entries are far shorter than this; read the tail only.
        let from = len.saturating_sub(1 << 20);
        file.seek(SeekFrom::Start(from))?;
        let mut tail = String::new();
        file.take(1 << 20).read_to_string(&mut tail)?;
        if let Some(l) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
            return Ok(Some(l.to_string()));
        }
    }
    Ok(None)
}

impl AuditLog {
    /// Opens (or starts) `audit.jsonl` in `dir`, chained to the newest kept line; the file
    /// rotates at `max_bytes` and `keep` rotated files are kept.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> std::io::Result<AuditLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.jsonl");
        let head = last_line(dir)?
            .map(|l| sha256_hex(l.as_bytes()))
            .unwrap_or_default();
        let file = open_append(&path)?;
        Ok(AuditLog {
            path,
            limiter: Default::default(),
            file: Mutex::new(Writer {
                file: Some(Arc::new(file)),
                written: 0,
                head,
            }),
            synced: Mutex::new(0),
            max_bytes,
            keep,
        })
    }

    /// The current log file: `audit.jsonl` in the data folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry: `{"ts":…, "event":…, …fields, "prev":…}`; durable when this returns.
    /// A refusal past its source's limit is only counted (see `audit_limit`).
    pub fn record(&self, event: Event, fields: Value) {
        let now = || pointhub_schemas::Timestamp::now().to_rfc3339();
        if let Some(key) = crate::audit_limit::refusal_key(event, &fields) {
            if !self.limiter.admit(&key, now) {
                return;
            }
        }
        self.write(event.as_str(), fields);
    }

    /// Writes one `audit.suppressed` entry for each source whose window ended with refusals
    /// left out. The hub calls it every second.
    pub fn flush_suppressed(&self) {
        for s in self.limiter.due() {
            let (event, source) = s.key.split_once(' ').unwrap_or((&s.key, ""));
            self.write(
                Event::AuditSuppressed.as_str(),
                json!({"of": event, "source": source, "count": s.count, "since": s.since, "why": "more refusals from this source than the audit log records"}),
            );
        }
    }

    fn write(&self, event: &str, fields: Value) {
        let mut m = Map::new();
        m.insert(
            "ts".into(),
            json!(pointhub_schemas::Timestamp::now().to_rfc3339()),
        );
        m.insert("event".into(), json!(event));
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        m.remove("prev");
        let mine = {
            let Ok(mut w) = self.file.lock() else {
                return;
            };
            if let Err(e) = self.append(&mut w, m) {
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

    /// Writes one entry chained to the last, under the file lock.
    fn append_line(&self, w: &mut Writer, mut m: Map<String, Value>) -> std::io::Result<Arc<File>> {
        m.insert("prev".into(), json!(w.head));
        let line = Value::Object(m).to_string();
        let f = match &w.file {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(open_append(&self.path)?);
                w.file = Some(f.clone());
                f
            }
        };
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        (&*f).write_all(&bytes)?;
        w.head = sha256_hex(line.as_bytes());
        w.written += 1;
        Ok(f)
    }

    fn append(&self, w: &mut Writer, m: Map<String, Value>) -> std::io::Result<()> {
        let f = self.append_line(w, m)?;
        if f.metadata()?.len() >= self.max_bytes {
            // Entries in the old file are made durable before it is renamed.
            f.sync_data()?;
            w.file = None;
            self.rotate()?;
            w.file = Some(Arc::new(open_append(&self.path)?));
            // The new file starts chained to the old one's last line.
            let mut r = Map::new();
            r.insert(
                "ts".into(),
                json!(pointhub_schemas::Timestamp::now().to_rfc3339()),
            );
            r.insert("event".into(), json!(Event::AuditRotated.as_str()));
            r.insert(
                "previous".into(),
                json!(format!("{}.1", self.path.display())),
            );
            self.append_line(w, r)?;
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

/// The audit files of `dir`, oldest first: the rotated ones (`.N` … `.1`), then the current.
fn files(dir: &Path) -> Vec<PathBuf> {
    let base = dir.join("audit.jsonl");
    let mut files: Vec<PathBuf> = Vec::new();
    for i in (1..=1000).rev() {
        let p = PathBuf::from(format!("{}.{i}", base.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(base);
    files
}

/// Reads entries from the rotated files and the current one, oldest first.
pub fn read_all(dir: &Path) -> std::io::Result<Vec<Value>> {
    let mut out = Vec::new();
    for f in files(dir) {
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

/// What [`verify`] found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verified {
    /// Entries read.
    pub entries: u64,
    /// Entries whose `prev` matched the line before them.
    pub chained: u64,
    /// Entries written before the log was chained (no `prev`).
    pub unchained: u64,
    /// The first break: the file, the line (from 1), and what is wrong.
    pub broken: Option<(String, u64, String)>,
    /// SHA-256 of the newest entry: kept elsewhere, it also covers that entry.
    pub head: String,
}

/// Walks the chain over every kept file, oldest first. The very first kept entry cannot be
/// checked (what it points to may have been rotated away); every later one must point to the
/// line before it.
pub fn verify(dir: &Path) -> std::io::Result<Verified> {
    let mut v = Verified::default();
    let mut last: Option<String> = None;
    for f in files(dir) {
        let Ok(file) = File::open(&f) else { continue };
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            v.entries += 1;
            let at = |why: &str| (f.display().to_string(), i as u64 + 1, why.to_string());
            let entry: Value = match serde_json::from_str(&line) {
                Ok(e) => e,
                Err(_) => {
                    v.broken.get_or_insert_with(|| at("not a JSON entry"));
                    last = Some(sha256_hex(line.as_bytes()));
                    continue;
                }
            };
            match (entry["prev"].as_str(), &last) {
                (None, _) => v.unchained += 1,
                (Some(p), Some(l)) if p == l => v.chained += 1,
                (Some(_), None) => v.chained += 1,
                (Some(_), Some(_)) => {
                    v.broken.get_or_insert_with(|| {
                        at("its prev is not the hash of the line before: an entry was edited, removed or inserted")
                    });
                }
            }
            last = Some(sha256_hex(line.as_bytes()));
        }
    }
    v.head = last.unwrap_or_default();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path(), 300, 3).expect("open");
        for i in 0..20 {
            log.record(Event::Write, json!({ "n": i }));
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
                        log.record(Event::ConnectionAccepted, json!({ "t": t, "i": i }));
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

    #[test]
    fn the_chain_holds_across_rotations_and_reopen_and_finds_an_edit() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = AuditLog::open(dir.path(), 400, 5).expect("open");
            for i in 0..10 {
                log.record(Event::KeyApproved, json!({ "n": i }));
            }
        }
        let log = AuditLog::open(dir.path(), 400, 5).expect("reopen");
        log.record(Event::KeyApproved, json!({ "n": 10 }));
        let v = verify(dir.path()).expect("verify");
        assert!(v.broken.is_none(), "{v:?}");
        assert!(v.chained >= 11 && v.unchained == 0, "{v:?}");
        assert!(read_all(dir.path())
            .expect("read")
            .iter()
            .any(|e| e["event"] == "audit.rotated"));
        // Edit one entry of a rotated file (the newest entry of all is covered once another
        // follows it: `verify` prints the head for keeping elsewhere).
        let cur = dir.path().join("audit.jsonl.1");
        let text = std::fs::read_to_string(&cur).expect("read");
        let edited = text.replacen("\"n\":", "\"n\":1", 1);
        assert_ne!(edited, text);
        std::fs::write(&cur, edited).expect("write");
        let v = verify(dir.path()).expect("verify");
        assert!(v.broken.is_some(), "an edit breaks the chain: {v:?}");
    }

    #[test]
    fn a_flood_of_refusals_is_recorded_in_part_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path(), 1 << 20, 3).expect("open");
        for _ in 0..1000 {
            log.record(
                Event::ConnectionRefused,
                json!({"remote": "10.0.0.9:1234", "reason": "unknown key"}),
            );
        }
        log.record(Event::KeyRevoked, json!({"name": "e1"}));
        let all = read_all(dir.path()).expect("read");
        let refused = all
            .iter()
            .filter(|e| e["event"] == "connection.refused")
            .count();
        assert_eq!(refused, crate::audit_limit::PER_KEY as usize);
        assert!(all.iter().any(|e| e["event"] == "key.revoked"));
    }
}
