//! The hub's embedded store (redb, `hub.redb` in the data folder): approved and revoked keys,
//! pending keys, enrollment tokens. Every change is one committed transaction, so a restart (or a
//! crash) loses no approval and no revocation.

use crate::grant::Grant;
use pointhub_link::Fingerprint;
use pointhub_schemas::{Pattern, Role, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const POINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("points");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
/// Most pending keys kept; the oldest is dropped past it, so unknown keys cannot fill the disk.
const MAX_PENDING: usize = 1000;
/// Most pending keys from one address (IP, any port).
const MAX_PENDING_PER_ADDR: usize = 16;

/// Why the hub's store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (most likely a running hub) holds the store open.
    #[error("the hub's store {path} is in use by another process (is the hub running? its admin socket did not answer)")]
    InUse {
        /// The file or folder concerned.
        path: String,
    },
    /// `hub.redb` exists but is 0 bytes long (truncated).
    #[error("the hub's store {path} is empty (0 bytes): it was truncated. Restore it from a backup; to start afresh on purpose, move the whole data folder aside (every approval, revocation, user and token in the store is then lost, and the keys listed in hub.toml are admitted again)")]
    Empty {
        /// The file or folder concerned.
        path: String,
    },
    /// `hub.redb` cannot be opened or read as a database; `detail` says what failed.
    #[error("the hub's store {path} is damaged ({detail}). Restore it from a backup; to start afresh on purpose, move the whole data folder aside (every approval, revocation, user and token in the store is then lost, and the keys listed in hub.toml are admitted again)")]
    Damaged {
        /// The file or folder concerned.
        path: String,
        /// What the store reported.
        detail: String,
    },
    /// `hub.redb` is gone from a folder a hub used before (`seen` names the file that shows it).
    #[error("the hub's store {path} is missing, but this data folder was used by a hub before (it holds {seen}): restore the store from a backup; to start afresh on purpose, move the whole data folder aside")]
    Missing {
        /// The file or folder concerned.
        path: String,
        /// What was found instead.
        seen: String,
    },
    /// A database or file operation failed (I/O, a transaction); the string says which.
    #[error("store: {0}")]
    Db(String),
    /// A stored record could not be encoded or decoded.
    #[error("store record: {0}")]
    Json(#[from] serde_json::Error),
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Whether a known key is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Admitted with its record's grant.
    Approved,
    /// Refused for good, across restarts, even if the config's `[[nodes]]` lists it.
    Revoked,
}

/// A key the hub knows, with what it may do.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// The key's fingerprint (also the record's key in the store).
    pub fingerprint: Fingerprint,
    /// Approved or revoked.
    pub state: KeyState,
    /// What the key may do; stored at the record's top level, as before there was one type.
    #[serde(flatten)]
    pub grant: Grant,
    /// Who approved it: `cli`, `admin`, `token:<id>`.
    pub approved_by: String,
    /// When it was approved (RFC 3339); empty for a config key, or one revoked without approval.
    pub approved_at: String,
    /// When it was revoked (RFC 3339); `None` while approved.
    pub revoked_at: Option<String>,
    /// The operator's reason for the revocation; `None` while approved.
    pub revoke_reason: Option<String>,
    /// When the hub last admitted it (RFC 3339, written within a second); `None` if not yet.
    pub last_seen: Option<String>,
    /// The address (IP:port) it was last admitted from; `None` if not yet.
    pub last_addr: Option<String>,
}

/// A key that tried to connect and is not known.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingRecord {
    /// The unknown key's fingerprint.
    pub fingerprint: Fingerprint,
    /// The name and role the node asked for (its own claim, not trusted).
    pub name: String,
    /// The role it asked for; `None` if it named none.
    pub role: Option<Role>,
    /// The address (IP:port) of its latest attempt.
    pub addr: String,
    /// When it first tried to connect (RFC 3339).
    pub first_attempt: String,
    /// When it last tried (RFC 3339); the pending list is sorted by it, newest first.
    pub last_attempt: String,
    /// How many times it tried to connect.
    pub attempts: u64,
}

/// A one-time enrollment token. Only its SHA-256 is stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    /// Short id for logs and listings (not secret).
    pub id: String,
    /// What the key that spends the token is approved with; stored at the record's top level.
    #[serde(flatten)]
    pub grant: Grant,
    /// When the token was made (RFC 3339).
    pub created_at: String,
    /// Microseconds since the epoch.
    pub expires: u64,
    /// The key that spent the token; `None` while unused.
    pub used_by: Option<Fingerprint>,
    /// When it was spent (RFC 3339); `None` while unused.
    pub used_at: Option<String>,
}

/// What a console user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Looks, approves and revokes keys, makes tokens.
    Admin,
    /// Looks only.
    Viewer,
}

/// An operator account of the web console. The password is kept as an argon2 hash only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    /// The login name (also the record's key in the store).
    pub name: String,
    /// The password's argon2id hash, in PHC string form.
    pub hash: String,
    /// What the user may do: manage keys and tokens (admin) or look only (viewer).
    pub role: UserRole,
    /// Points the user may see (patterns); `**` for all.
    pub namespaces: Vec<Pattern>,
    /// Nodes the user may see; empty for all.
    pub nodes: Vec<String>,
    /// When the user was added, or its password last reset (RFC 3339).
    pub created_at: String,
}

impl UserRecord {
    /// Whether the user sees everything (and may manage keys, if an admin).
    pub fn unrestricted(&self) -> bool {
        self.nodes.is_empty() && self.namespaces.iter().any(|n| n.as_str() == "**")
    }
}

/// A token for the JSON API (browser HMIs, scripts). Only its SHA-256 is kept.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiTokenRecord {
    /// Short id for listings and revoking: the first 8 hex digits of the token's hash (not secret).
    pub id: String,
    /// The label the operator gave it; the audit log names its actions `api-token:<name>`.
    pub name: String,
    /// Patterns of points it may read (empty at creation becomes everything).
    pub read: Vec<Pattern>,
    /// Patterns of writable points it may write; empty means none.
    pub write: Vec<Pattern>,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// The current time as RFC 3339 UTC with microseconds, the form the store's records keep.
pub fn now() -> String {
    Timestamp::now().to_rfc3339()
}

/// SHA-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The hub's embedded store, `hub.redb` in the data folder; one process may open it at a time.
pub struct Store {
    db: Database,
}

/// Bytes of the store file the hub keeps cached in memory.
const STORE_CACHE: usize = 4 << 20;

impl Store {
    /// Opens `hub.redb` in `dir` (made in a fresh folder) and reads every record once; refuses a
    /// store in use, empty, damaged, or missing from a folder a hub used before.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(db)?;
        let path = dir.join("hub.redb");
        let shown = path.display().to_string();
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => return Err(StoreError::Empty { path: shown }),
            Ok(_) => {}
            Err(_) => {
                // A store that vanished from a used folder would start a fresh hub that has
                // forgotten every revocation: refuse, the operator decides.
                if let Some(seen) = ["audit.jsonl"].into_iter().find(|f| dir.join(f).exists()) {
                    return Err(StoreError::Missing {
                        path: shown,
                        seen: seen.into(),
                    });
                }
            }
        }
        // redb panics on some damaged pages rather than returning an error: that is a damaged
        // store with advice, not a crash.
        std::panic::catch_unwind(|| Store::open_file(&path)).unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the database library gave up reading it".into());
            Err(StoreError::Damaged {
                path: shown,
                detail,
            })
        })
    }

    fn open_file(path: &Path) -> Result<Store, StoreError> {
        let damaged = |e: &dyn std::fmt::Display| StoreError::Damaged {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        // redb caches up to 1 GiB by default; the store is small and read at start, so its
        // cache is kept to a size that does not count against the point table.
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                    path: path.display().to_string(),
                },
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                    StoreError::Db(format!("{}: {io}", path.display()))
                }
                other => damaged(&other),
            })?;
        let tx = db.begin_write().map_err(|e| damaged(&e))?;
        {
            tx.open_table(KEYS).map_err(|e| damaged(&e))?;
            tx.open_table(PENDING).map_err(|e| damaged(&e))?;
            tx.open_table(TOKENS).map_err(|e| damaged(&e))?;
            tx.open_table(POINTS).map_err(|e| damaged(&e))?;
            tx.open_table(USERS).map_err(|e| damaged(&e))?;
            tx.open_table(API_TOKENS).map_err(|e| damaged(&e))?;
        }
        tx.commit().map_err(|e| damaged(&e))?;
        for p in [path.parent().unwrap_or(path), path] {
            pointhub_link::identity::owner_only(p)
                .map_err(|e| StoreError::Db(format!("{}: {e}", p.display())))?;
        }
        let store = Store { db };
        // Read every record once: a damaged page shows now, at start, not at the first node.
        store.keys()?;
        store.pending()?;
        store.tokens()?;
        store.users()?;
        store.api_tokens()?;
        Ok(store)
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(table).map_err(db)?;
        match t.get(key).map_err(db)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn all<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (_, v) = item.map_err(db)?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value)?;
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(table).map_err(db)?;
            t.insert(key, bytes.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn remove(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(table).map_err(db)?;
            t.remove(key).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// The record of an approved or revoked key; `None` if the store does not know it.
    pub fn key(&self, fp: &Fingerprint) -> Result<Option<KeyRecord>, StoreError> {
        self.get(KEYS, &fp.to_string())
    }

    /// Records when and from where approved keys were last seen, all in one transaction.
    pub fn touch_keys(&self, seen: &[(Fingerprint, String, String)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(KEYS).map_err(db)?;
            for (fp, at, addr) in seen {
                let k = fp.to_string();
                let rec: Option<KeyRecord> = match t.get(k.as_str()).map_err(db)? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                // A key revoked or removed meanwhile is left as it is.
                let Some(mut rec) = rec.filter(|r| r.state == KeyState::Approved) else {
                    continue;
                };
                rec.last_seen = Some(at.clone());
                rec.last_addr = Some(addr.clone());
                let bytes = serde_json::to_vec(&rec)?;
                t.insert(k.as_str(), bytes.as_slice()).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Every approved and revoked key in the store (not the config's `[[nodes]]`).
    pub fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.all(KEYS)
    }

    /// Approves (or re-approves) a key, and forgets it as pending.
    pub fn put_key(&self, rec: &KeyRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        approve_in(&tx, rec)?;
        tx.commit().map_err(db)
    }

    /// Keys that tried to connect and are not known, latest attempt first.
    pub fn pending(&self) -> Result<Vec<PendingRecord>, StoreError> {
        let mut v: Vec<PendingRecord> = self.all(PENDING)?;
        v.sort_by(|a, b| b.last_attempt.cmp(&a.last_attempt));
        Ok(v)
    }

    /// The pending record of one key; `None` if it is not pending.
    pub fn pending_key(&self, fp: &Fingerprint) -> Result<Option<PendingRecord>, StoreError> {
        self.get(PENDING, &fp.to_string())
    }

    /// Records an attempt of an unknown key, in one write transaction: a key approved or
    /// revoked meanwhile (its record is in the keys table by now) is not made pending again.
    pub fn note_pending(
        &self,
        fp: &Fingerprint,
        name: &str,
        role: Option<Role>,
        addr: &str,
    ) -> Result<(), StoreError> {
        let k = fp.to_string();
        let now = now();
        let tx = self.db.begin_write().map_err(db)?;
        {
            if tx
                .open_table(KEYS)
                .map_err(db)?
                .get(k.as_str())
                .map_err(db)?
                .is_some()
            {
                return Ok(());
            }
            let mut t = tx.open_table(PENDING).map_err(db)?;
            let existing: Option<PendingRecord> = match t.get(k.as_str()).map_err(db)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            let rec = match existing {
                Some(mut r) => {
                    r.last_attempt = now;
                    r.attempts += 1;
                    r.addr = addr.into();
                    r.name = name.into();
                    r.role = role;
                    r
                }
                None => {
                    let mut all: Vec<PendingRecord> = Vec::new();
                    for item in t.iter().map_err(db)? {
                        let (_, v) = item.map_err(db)?;
                        all.push(serde_json::from_slice(v.value())?);
                    }
                    // One address may hold only a few places on the list, and a full list
                    // makes room at the address that holds the most: a flood of unknown keys
                    // from a few addresses cannot push the keys of real nodes off it.
                    let host = |a: &str| a.rsplit_once(':').map_or(a, |(h, _)| h).to_string();
                    let mut per_host: std::collections::HashMap<String, usize> = Default::default();
                    for r in &all {
                        *per_host.entry(host(&r.addr)).or_default() += 1;
                    }
                    if per_host.get(&host(addr)).copied().unwrap_or(0) >= MAX_PENDING_PER_ADDR {
                        return Ok(());
                    }
                    if all.len() >= MAX_PENDING {
                        let busiest = per_host
                            .iter()
                            .max_by_key(|(_, n)| **n)
                            .map(|(h, _)| h.clone())
                            .unwrap_or_default();
                        let oldest = all
                            .iter()
                            .filter(|r| host(&r.addr) == busiest)
                            .min_by(|a, b| a.last_attempt.cmp(&b.last_attempt))
                            .map(|r| r.fingerprint.to_string());
                        if let Some(oldest) = oldest {
                            t.remove(oldest.as_str()).map_err(db)?;
                        }
                    }
                    PendingRecord {
                        fingerprint: *fp,
                        name: name.into(),
                        role,
                        addr: addr.into(),
                        first_attempt: now.clone(),
                        last_attempt: now,
                        attempts: 1,
                    }
                }
            };
            let bytes = serde_json::to_vec(&rec)?;
            t.insert(k.as_str(), bytes.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Stores (or replaces) an enrollment token under `hash`, its SHA-256 ([`token_hash`]).
    pub fn put_token(&self, hash: &str, rec: &TokenRecord) -> Result<(), StoreError> {
        self.put(TOKENS, hash, rec)
    }

    /// Spends a one-time token in one write transaction: reads it, lets `check` refuse it
    /// (used, expired, another role), marks it used by `rec`'s key and approves that key. redb
    /// runs one write transaction at a time, so a token is spent once however many nodes present
    /// it at the same moment.
    pub fn spend_token(
        &self,
        hash: &str,
        check: impl FnOnce(&TokenRecord) -> Result<(), &'static str>,
        key: impl FnOnce(&TokenRecord) -> KeyRecord,
    ) -> Result<Result<(TokenRecord, KeyRecord), &'static str>, StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let spent = {
            let mut tokens = tx.open_table(TOKENS).map_err(db)?;
            let token: Option<TokenRecord> = match tokens.get(hash).map_err(db)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            let Some(mut token) = token else {
                return Ok(Err("unknown enrollment token"));
            };
            if let Err(why) = check(&token) {
                return Ok(Err(why));
            }
            let rec = key(&token);
            token.used_by = Some(rec.fingerprint);
            token.used_at = Some(now());
            let bytes = serde_json::to_vec(&token)?;
            tokens.insert(hash, bytes.as_slice()).map_err(db)?;
            approve_in(&tx, &rec)?;
            (token, rec)
        };
        tx.commit().map_err(db)?;
        Ok(Ok(spent))
    }

    /// The enrollment token whose SHA-256 is `hash`; `None` if there is none.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get(TOKENS, hash)
    }

    /// Every enrollment token, used and unused.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all(TOKENS)
    }

    /// The console user named `name`; `None` if there is no such account.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.get(USERS, name)
    }

    /// Every console user.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.all(USERS)
    }

    /// Adds a console user, or replaces the one of that name.
    pub fn put_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        self.put(USERS, &u.name.clone(), u)
    }

    /// Removes the console user named `name`; a name without an account is not an error.
    pub fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        self.remove(USERS, name)
    }

    /// The JSON API token whose SHA-256 is `hash`; `None` if there is none.
    pub fn api_token(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        self.get(API_TOKENS, hash)
    }

    /// Stores (or replaces) a JSON API token under `hash`, its SHA-256 ([`token_hash`]).
    pub fn put_api_token(&self, hash: &str, t: &ApiTokenRecord) -> Result<(), StoreError> {
        self.put(API_TOKENS, hash, t)
    }

    /// Removes the API token with id `id`; returns it, or `None` if no token has that id.
    pub fn remove_api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let found = {
            let mut t = tx.open_table(API_TOKENS).map_err(db)?;
            let mut found = None;
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let rec: ApiTokenRecord = serde_json::from_slice(v.value())?;
                if rec.id == id {
                    found = Some((k.value().to_string(), rec));
                    break;
                }
            }
            if let Some((hash, _)) = &found {
                t.remove(hash.as_str()).map_err(db)?;
            }
            found.map(|(_, rec)| rec)
        };
        tx.commit().map_err(db)?;
        Ok(found)
    }

    /// Every JSON API token.
    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        self.all(API_TOKENS)
    }

    /// Saves point states, all in one transaction. `durable`: on disk when this returns, and so
    /// is every non-durable save before it; if not, it is kept in memory until a durable one
    /// (a slice of a bigger save: one disk flush per save, not per slice).
    pub fn save_points(
        &self,
        points: &[crate::core::SavedPoint],
        durable: bool,
    ) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(db)?;
        if !durable {
            tx.set_durability(redb::Durability::None).map_err(db)?;
        }
        {
            let mut t = tx.open_table(POINTS).map_err(db)?;
            for p in points {
                let bytes = serde_json::to_vec(p)?;
                t.insert(p.name.as_str(), bytes.as_slice()).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Puts every save before it on disk (an empty durable commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.begin_write().map_err(db)?.commit().map_err(db)
    }

    /// The saved point states, restored at start (stale until their edges return).
    pub fn points(&self) -> Result<Vec<crate::core::SavedPoint>, StoreError> {
        self.all(POINTS)
    }
}

/// Within a write transaction: the key record stored, and the key no longer pending.
fn approve_in(tx: &redb::WriteTransaction, rec: &KeyRecord) -> Result<(), StoreError> {
    let k = rec.fingerprint.to_string();
    let bytes = serde_json::to_vec(rec)?;
    tx.open_table(KEYS)
        .map_err(db)?
        .insert(k.as_str(), bytes.as_slice())
        .map_err(db)?;
    tx.open_table(PENDING)
        .map_err(db)?
        .remove(k.as_str())
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_pending_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fp = Fingerprint([7; 32]);
        {
            let s = Store::open(dir.path()).expect("open");
            s.note_pending(&fp, "edge9", Some(Role::Edge), "127.0.0.1:1")
                .expect("pending");
            s.note_pending(&fp, "edge9", Some(Role::Edge), "127.0.0.1:2")
                .expect("pending");
            assert_eq!(s.pending().expect("list")[0].attempts, 2);
            assert!(matches!(
                Store::open(dir.path()),
                Err(StoreError::InUse { .. })
            ));
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.pending().expect("list").len(), 1);
        let rec = KeyRecord {
            fingerprint: fp,
            state: KeyState::Approved,
            grant: Grant {
                role: Role::Edge,
                name: "edge9".into(),
                namespace: None,
                read: vec![],
                write: vec![],
            },
            approved_by: "cli".into(),
            approved_at: now(),
            revoked_at: None,
            revoke_reason: None,
            last_seen: None,
            last_addr: None,
        };
        s.put_key(&rec).expect("approve");
        assert!(s.pending().expect("list").is_empty());
        assert_eq!(s.key(&fp).expect("get"), Some(rec));
    }

    #[test]
    fn an_empty_a_damaged_or_a_vanished_store_is_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        std::fs::write(&path, b"").expect("truncate");
        let e = Store::open(dir.path()).err().expect("empty refused");
        assert!(matches!(e, StoreError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("backup"), "{e}");

        std::fs::remove_file(&path).expect("rm");
        {
            let s = Store::open(dir.path()).expect("fresh");
            for i in 0..200u8 {
                s.note_pending(&Fingerprint([i; 32]), "n", None, "a")
                    .expect("pending");
            }
        }
        // Garbage over the whole file past its header: every page damaged.
        let mut bytes = std::fs::read(&path).expect("read");
        let mut x = 0x9e37_79b9u32;
        for b in bytes.iter_mut().skip(64) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        std::fs::write(&path, &bytes).expect("write");
        let e = Store::open(dir.path()).err().expect("damaged refused");
        assert!(
            matches!(e, StoreError::Damaged { .. } | StoreError::Json(_)),
            "{e}"
        );

        std::fs::remove_file(&path).expect("rm");
        std::fs::write(dir.path().join("audit.jsonl"), b"{}\n").expect("audit");
        let e = Store::open(dir.path()).err().expect("vanished refused");
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    }

    #[test]
    fn one_address_holds_few_places_on_the_pending_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        for i in 0..40u8 {
            s.note_pending(&Fingerprint([i; 32]), "flood", None, "127.0.0.2:999")
                .expect("pending");
        }
        s.note_pending(&Fingerprint([200; 32]), "plant7", None, "127.0.0.1:5")
            .expect("pending");
        let all = s.pending().expect("list");
        assert_eq!(
            all.iter()
                .filter(|r| r.addr.starts_with("127.0.0.2"))
                .count(),
            MAX_PENDING_PER_ADDR
        );
        assert!(all.iter().any(|r| r.name == "plant7"));
    }
}
