//! Who may connect, and as what: approved keys (the store, then the config's `[[nodes]]`),
//! revoked keys, pending keys, one-time enrollment tokens; and the operator's actions on them.
//!
//! A key is decided in this order: revoked in the store → refused; approved in the store →
//! admitted with the store's grant; listed in the config → admitted with the config's grant;
//! presented with a valid, unused, unexpired enrollment token → approved with the token's grant and
//! admitted (the token is spent); otherwise refused and recorded as pending.

use crate::audit::AuditLog;
use crate::config::NodeEntry;
use crate::store::{self, KeyRecord, KeyState, Store, StoreError, TokenRecord};
use pointhub_link::Fingerprint;
use pointhub_schemas::{Pattern, Role, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// Why an operator's request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The request itself is wrong (a bad name, a grant that does not fit, an unknown key):
    /// the message says what to ask instead.
    #[error("{0}")]
    Invalid(String),
    /// The hub's store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A token or password could not be made (no system randomness, or hashing failed).
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// The audit log (`audit.jsonl` in the data folder) could not be opened.
    #[error("audit log: {0}")]
    Audit(std::io::Error),
}

impl From<crate::grant::GrantError> for AccessError {
    fn from(e: crate::grant::GrantError) -> Self {
        AccessError::Invalid(e.0)
    }
}

impl From<String> for AccessError {
    fn from(message: String) -> Self {
        AccessError::Invalid(message)
    }
}

/// Why a secret (a token, a password, its hash) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The system's random source failed, so no secret or salt could be drawn.
    #[error("the system gave no randomness")]
    NoRandomness,
    /// argon2 could not encode the salt or hash the password; the string says why.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// What a node says about itself in its connection request (untrusted).
#[derive(Clone, Debug, Default)]
pub struct Claim {
    /// The name the node asks for (`x-pointhub-node` header, cut to 128 chars); empty if none.
    pub name: String,
    /// The role it asks for (`x-pointhub-role`); `None` if absent or not a role name.
    pub role: Option<Role>,
    /// The enrollment token it presents (`x-pointhub-enroll`); `None` if it has none.
    pub token: Option<String>,
}

/// Who may connect: decides connecting keys and carries out operator requests, over the store,
/// the config's `[[nodes]]` and the audit log.
pub struct Access {
    /// The hub's store (`hub.redb`): keys, pending keys, tokens, users, API tokens, saved points.
    pub store: Store,
    /// The audit log every admission, refusal and operator action is recorded in.
    pub audit: AuditLog,
    config_nodes: HashMap<Fingerprint, NodeEntry>,
    /// Approved keys seen since the store last recorded it: (when, from where). Written in one
    /// transaction a second ([`Access::flush_seen`]), so admitting a key costs no disk write.
    seen: std::sync::Mutex<HashMap<Fingerprint, (String, String)>>,
}

/// An operator's request (CLI, admin socket).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Lists keys that tried to connect and are not approved, latest attempt first.
    KeysPending,
    /// Lists approved and revoked keys, the store's and the config's `[[nodes]]`, by name.
    KeysList,
    /// Shows what the hub knows of one key: its store record, pending record and config entry.
    KeysShow {
        /// The key to look up; one the hub does not know at all is refused as `Invalid`.
        fingerprint: Fingerprint,
    },
    /// Approves (or re-approves) a key with a grant, and takes it off the pending list.
    KeysApprove {
        /// The key to approve (pending or not: a key may be approved before it first connects).
        fingerprint: Fingerprint,
        /// What the key is approved as; checked by [`Grant::validate`] first.
        grant: Grant,
    },
    /// Revokes a key for good (even one the hub never saw); the running hub ends its sessions.
    KeysRevoke {
        /// The key to revoke: approved, listed in the config, pending or unknown.
        fingerprint: Fingerprint,
        /// Why, kept in the key's record and in its `key.revoked` audit entry.
        reason: String,
    },
    /// Makes a one-time enrollment token; the answer holds the token once (only its hash is kept).
    TokensCreate {
        /// What the key that spends the token is approved as.
        grant: Grant,
        /// How long the token is valid, in seconds: 1 s to 30 days.
        ttl_s: u64,
    },
    /// Lists enrollment tokens, used and unused (by id: the store keeps only their hashes).
    TokensList,
    /// Adds (or resets) a console user with a new random password, returned once.
    UsersAdd {
        /// The login name; an existing user gets a new password (and its sessions end).
        name: String,
        /// Admin (manages keys and tokens) or viewer (looks only).
        role: crate::store::UserRole,
        /// Patterns of points the user may see; empty means everything (`**`).
        namespaces: Vec<Pattern>,
        /// Nodes the user may see; empty means all.
        nodes: Vec<String>,
    },
    /// Lists console users with their role and limits (never their password hashes).
    UsersList,
    /// Removes a console user; the running hub ends its console and JSON sessions.
    UsersRemove {
        /// The user's login name; a name without an account is not an error.
        name: String,
    },
    /// Makes a JSON API token, returned once.
    ApiTokensCreate {
        /// A label for the token; the audit log names its actions `api-token:<name>`.
        name: String,
        /// Patterns of points it may read; empty means everything.
        read: Vec<Pattern>,
        /// Patterns of writable points it may write; empty means none.
        write: Vec<Pattern>,
    },
    /// Lists JSON API tokens by id and name (the store keeps only their hashes).
    ApiTokensList,
    /// Removes a JSON API token by its id.
    ApiTokensRevoke {
        /// The token's id: the first 8 hex digits of its hash, as `ApiTokensList` shows.
        id: String,
    },
    /// Lists the durable subscriptions: owner, name, patterns, what each keeps.
    DurableList,
    /// Removes a durable subscription and what its queue keeps.
    DurableRemove {
        /// The owner's node name, as `DurableList` shows it.
        node: String,
        /// The subscription's name.
        name: String,
    },
}

pub use crate::grant::Grant;

impl From<&KeyRecord> for NodeEntry {
    fn from(r: &KeyRecord) -> NodeEntry {
        NodeEntry {
            fingerprint: r.fingerprint,
            grant: r.grant.clone(),
        }
    }
}

/// Why a node was refused: the sentence the node gets, and the short reason for the log.
#[derive(Debug)]
pub struct Refusal {
    /// A short, fixed reason for the hub's log (e.g. "revoked key").
    pub reason: &'static str,
    /// The sentence the node gets (the body of the HTTP 403): why, and what to do about it.
    pub message: String,
}

impl Access {
    /// Opens the store and audit log in `dir` (the data folder), with the config's `[[nodes]]`;
    /// the audit log rotates at `audit_max_bytes` and keeps `audit_keep` old files.
    pub fn open(
        dir: &Path,
        nodes: &[NodeEntry],
        audit_max_bytes: u64,
        audit_keep: usize,
    ) -> Result<Access, AccessError> {
        let store = Store::open(dir)?;
        let audit = AuditLog::open(dir, audit_max_bytes, audit_keep).map_err(AccessError::Audit)?;
        Ok(Access {
            store,
            audit,
            config_nodes: nodes.iter().map(|n| (n.fingerprint, n.clone())).collect(),
            seen: Default::default(),
        })
    }

    /// Writes the last-seen times of keys admitted since the last call.
    pub fn flush_seen(&self) -> Result<(), StoreError> {
        let seen: Vec<(Fingerprint, String, String)> = match self.seen.lock() {
            Ok(mut s) => s.drain().map(|(fp, (at, addr))| (fp, at, addr)).collect(),
            Err(_) => return Ok(()),
        };
        self.store.touch_keys(&seen)
    }

    /// Whether a key is revoked now (a store that cannot be read counts as revoked: refuse).
    pub fn is_revoked(&self, fp: &Fingerprint) -> bool {
        match self.store.key(fp) {
            Ok(rec) => rec.is_some_and(|r| r.state == KeyState::Revoked),
            Err(e) => {
                tracing::error!(error = %e, "store failed");
                true
            }
        }
    }

    /// Decides a connecting key.
    pub fn admit(
        &self,
        fp: &Fingerprint,
        claim: &Claim,
        addr: &str,
        hub: &str,
    ) -> Result<NodeEntry, Refusal> {
        let internal = |e: StoreError| {
            tracing::error!(error = %e, "store failed");
            Refusal {
                reason: "store error",
                message: "the hub cannot read its store; try again later".into(),
            }
        };
        if let Some(rec) = self.store.key(fp).map_err(internal)? {
            return match rec.state {
                KeyState::Revoked => {
                    self.audit.record(crate::audit::Event::ConnectionRefused, json!({"fingerprint": fp, "name": rec.grant.name, "remote": addr, "reason": "revoked"}));
                    Err(Refusal {
                        reason: "revoked key",
                        message: format!("key {fp} was revoked on hub {hub}; make a new key and have it approved"),
                    })
                }
                KeyState::Approved => {
                    if let Ok(mut seen) = self.seen.lock() {
                        seen.insert(*fp, (store::now(), addr.into()));
                    }
                    Ok(NodeEntry::from(&rec))
                }
            };
        }
        if let Some(n) = self.config_nodes.get(fp) {
            return Ok(n.clone());
        }
        if let Some(token) = &claim.token {
            return self.enroll(fp, token, claim, addr, hub);
        }
        let _ = self.store.note_pending(fp, &claim.name, claim.role, addr);
        self.audit.record(
            crate::audit::Event::ConnectionRefused,
            json!({"fingerprint": fp, "name": claim.name, "role": claim.role, "remote": addr, "reason": "unknown key: pending approval"}),
        );
        Err(Refusal {
            reason: "unknown key: pending approval",
            message: format!(
                "key {fp} is not approved on hub {hub}; it is now pending: the operator approves it with \
                 `pointhub hub keys approve {fp} --role {} --name {} --config hub.toml` (or give this node an enrollment token)",
                claim.role.map(|r| r.as_str()).unwrap_or("edge"),
                if claim.name.is_empty() { "NAME" } else { &claim.name }
            ),
        })
    }

    fn enroll(
        &self,
        fp: &Fingerprint,
        token: &str,
        claim: &Claim,
        addr: &str,
        hub: &str,
    ) -> Result<NodeEntry, Refusal> {
        let hash = store::token_hash(token);
        let refuse = |why: &'static str| {
            self.audit.record(
                crate::audit::Event::TokenRefused,
                json!({"fingerprint": fp, "name": claim.name, "remote": addr, "reason": why}),
            );
            let _ = self.store.note_pending(fp, &claim.name, claim.role, addr);
            Err(Refusal {
                reason: why,
                message: format!(
                    "enrollment refused by hub {hub}: {why}; ask the operator for a new token"
                ),
            })
        };
        let now = Timestamp::now().0;
        let check = |t: &TokenRecord| {
            if t.used_by.is_some() {
                Err("enrollment token already used")
            } else if now > t.expires {
                Err("enrollment token expired")
            } else if claim.role.is_some_and(|r| r != t.grant.role) {
                Err("enrollment token is for another role")
            } else {
                Ok(())
            }
        };
        let key = |t: &TokenRecord| KeyRecord {
            fingerprint: *fp,
            state: KeyState::Approved,
            grant: t.grant.clone(),
            approved_by: format!("token:{}", t.id),
            approved_at: store::now(),
            revoked_at: None,
            revoke_reason: None,
            last_seen: Some(store::now()),
            last_addr: Some(addr.into()),
        };
        let (t, rec) = match self.store.spend_token(&hash, check, key) {
            Ok(Ok(spent)) => spent,
            Ok(Err(why)) => return refuse(why),
            Err(e) => {
                tracing::error!(error = %e, "store failed");
                return Err(Refusal {
                    reason: "store error",
                    message: "the hub cannot write its store; try again later".into(),
                });
            }
        };
        self.audit.record(crate::audit::Event::TokenUsed, json!({"token": t.id, "fingerprint": fp, "name": t.grant.name, "role": t.grant.role, "remote": addr}));
        self.audit.record(
            crate::audit::Event::KeyApproved,
            json!({"fingerprint": fp, "name": t.grant.name, "role": t.grant.role, "by": rec.approved_by}),
        );
        Ok(NodeEntry::from(&rec))
    }

    /// Carries out an operator's request. `by` says who (for the audit log).
    pub fn execute(&self, req: AdminRequest, by: &str) -> Result<serde_json::Value, AccessError> {
        let e = AccessError::Store;
        match req {
            AdminRequest::KeysPending => Ok(json!(self.store.pending().map_err(e)?)),
            AdminRequest::KeysList => {
                let mut keys = self.store.keys().map_err(e)?;
                for n in self.config_nodes.values() {
                    if !keys.iter().any(|k| k.fingerprint == n.fingerprint) {
                        keys.push(config_record(n));
                    }
                }
                keys.sort_by(|a, b| a.grant.name.cmp(&b.grant.name));
                Ok(json!(keys))
            }
            AdminRequest::KeysShow { fingerprint } => {
                let key = self.store.key(&fingerprint).map_err(e)?;
                let pending = self.store.pending_key(&fingerprint).map_err(e)?;
                let config = self
                    .config_nodes
                    .get(&fingerprint)
                    .map(|n| json!({"role": n.grant.role, "name": n.grant.name}));
                if key.is_none() && pending.is_none() && config.is_none() {
                    return Err(format!("the hub does not know key {fingerprint}").into());
                }
                Ok(json!({"key": key, "pending": pending, "config": config}))
            }
            AdminRequest::KeysApprove { fingerprint, grant } => {
                grant.validate()?;
                let rec = KeyRecord {
                    fingerprint,
                    state: KeyState::Approved,
                    grant: grant.with_default_read(),
                    approved_by: by.into(),
                    approved_at: store::now(),
                    revoked_at: None,
                    revoke_reason: None,
                    last_seen: None,
                    last_addr: None,
                };
                self.store.put_key(&rec).map_err(e)?;
                self.audit.record(
                    crate::audit::Event::KeyApproved,
                    json!({"fingerprint": fingerprint, "name": grant.name, "role": grant.role, "namespace": grant.namespace, "read": rec.grant.read, "write": rec.grant.write, "by": by}),
                );
                Ok(json!(rec))
            }
            AdminRequest::KeysRevoke {
                fingerprint,
                reason,
            } => {
                let mut rec = match self.store.key(&fingerprint).map_err(e)? {
                    Some(r) => r,
                    None => match self.config_nodes.get(&fingerprint) {
                        Some(n) => config_record(n),
                        None => {
                            // Revoking an unknown key still blocks it for good.
                            let p = self.store.pending_key(&fingerprint).map_err(e)?;
                            KeyRecord {
                                fingerprint,
                                state: KeyState::Approved,
                                grant: Grant {
                                    role: p.as_ref().and_then(|p| p.role).unwrap_or(Role::Client),
                                    name: p.map(|p| p.name).unwrap_or_default(),
                                    namespace: None,
                                    read: vec![],
                                    write: vec![],
                                },
                                approved_by: String::new(),
                                approved_at: String::new(),
                                revoked_at: None,
                                revoke_reason: None,
                                last_seen: None,
                                last_addr: None,
                            }
                        }
                    },
                };
                rec.state = KeyState::Revoked;
                rec.revoked_at = Some(store::now());
                rec.revoke_reason = Some(reason.clone());
                self.store.put_key(&rec).map_err(e)?;
                self.audit.record(crate::audit::Event::KeyRevoked, json!({"fingerprint": fingerprint, "name": rec.grant.name, "reason": reason, "by": by}));
                Ok(json!(rec))
            }
            AdminRequest::TokensCreate { grant, ttl_s } => {
                grant.validate()?;
                if ttl_s == 0 || ttl_s > 30 * 24 * 3600 {
                    return Err(AccessError::Invalid(
                        "ttl must be between 1 s and 30 days".into(),
                    ));
                }
                let token = new_token()?;
                let hash = store::token_hash(&token);
                let rec = TokenRecord {
                    id: hash[..8].to_string(),
                    grant: grant.with_default_read(),
                    created_at: store::now(),
                    expires: Timestamp::now().0 + ttl_s * 1_000_000,
                    used_by: None,
                    used_at: None,
                };
                self.store.put_token(&hash, &rec).map_err(e)?;
                self.audit.record(crate::audit::Event::TokenCreated, json!({"token": rec.id, "name": grant.name, "role": grant.role, "ttl_s": ttl_s, "by": by}));
                Ok(
                    json!({"token": token, "id": rec.id, "expires": Timestamp(rec.expires).to_rfc3339()}),
                )
            }
            AdminRequest::TokensList => Ok(json!(self.store.tokens().map_err(e)?)),
            AdminRequest::UsersAdd {
                name,
                role,
                namespaces,
                nodes,
            } => {
                pointhub_schemas::name::validate_name(&name, 64)
                    .map_err(|er| format!("user name: {er}"))?;
                let namespaces = if namespaces.is_empty() {
                    vec![Pattern::all()]
                } else {
                    namespaces
                };
                let password = new_secret(12)?;
                let rec = crate::store::UserRecord {
                    name: name.clone(),
                    hash: hash_password(&password)?,
                    role,
                    namespaces,
                    nodes,
                    created_at: store::now(),
                };
                self.store.put_user(&rec).map_err(e)?;
                self.audit.record(
                    crate::audit::Event::UserAdded,
                    json!({"user": name, "role": role, "by": by}),
                );
                Ok(json!({"user": name, "password": password, "role": role}))
            }
            AdminRequest::UsersList => {
                let users: Vec<serde_json::Value> = self
                    .store
                    .users()
                    .map_err(e)?
                    .into_iter()
                    .map(|u| json!({"name": u.name, "role": u.role, "namespaces": u.namespaces, "nodes": u.nodes, "created_at": u.created_at}))
                    .collect();
                Ok(json!(users))
            }
            AdminRequest::UsersRemove { name } => {
                self.store.remove_user(&name).map_err(e)?;
                self.audit.record(
                    crate::audit::Event::UserRemoved,
                    json!({"user": name, "by": by}),
                );
                Ok(json!({"removed": name}))
            }
            AdminRequest::ApiTokensCreate { name, read, write } => {
                let read = if read.is_empty() {
                    vec![Pattern::all()]
                } else {
                    read
                };
                let token = format!("phk_{}", new_secret(24)?);
                let hash = store::token_hash(&token);
                let rec = crate::store::ApiTokenRecord {
                    id: hash[..8].to_string(),
                    name: name.clone(),
                    read,
                    write,
                    created_at: store::now(),
                };
                self.store.put_api_token(&hash, &rec).map_err(e)?;
                self.audit.record(
                    crate::audit::Event::ApiTokenCreated,
                    json!({"token": rec.id, "name": name, "by": by}),
                );
                Ok(json!({"token": token, "id": rec.id}))
            }
            AdminRequest::ApiTokensList => Ok(json!(self.store.api_tokens().map_err(e)?)),
            // Durable subscriptions live in the data folder beside the store, not in it: the
            // running hub (`operator.rs`) and the stopped one (`admin.rs`) answer these.
            AdminRequest::DurableList | AdminRequest::DurableRemove { .. } => {
                Err(AccessError::Invalid(
                    "durable subscriptions are listed and removed by the hub".into(),
                ))
            }
            AdminRequest::ApiTokensRevoke { id } => {
                match self.store.remove_api_token(&id).map_err(e)? {
                    Some(rec) => {
                        self.audit.record(
                            crate::audit::Event::ApiTokenRevoked,
                            json!({"token": rec.id, "name": rec.name, "by": by}),
                        );
                        Ok(json!({"revoked": rec.id, "name": rec.name}))
                    }
                    None => Err(AccessError::Invalid(format!(
                    "no API token has id {id:?}: `pointhub hub api-tokens list` shows their ids"
                ))),
                }
            }
        }
    }
}

/// A key listed in the config's `[[nodes]]`, as the store would hold it.
fn config_record(n: &NodeEntry) -> KeyRecord {
    KeyRecord {
        fingerprint: n.fingerprint,
        state: KeyState::Approved,
        grant: n.grant.clone(),
        approved_by: "config".into(),
        approved_at: String::new(),
        revoked_at: None,
        revoke_reason: None,
        last_seen: None,
        last_addr: None,
    }
}

fn new_token() -> Result<String, SecretError> {
    Ok(format!("pht_{}", new_secret(24)?))
}

/// `n` random bytes from the system, as hex.
pub fn new_secret(n: usize) -> Result<String, SecretError> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SecretError::NoRandomness)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// An argon2id hash of a password, in PHC string form.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::NoRandomness)?;
    let salt =
        SaltString::encode_b64(&bytes).map_err(|e| SecretError::Hash(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Checks a password against its stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, name: &str) -> Grant {
        Grant {
            role,
            name: name.into(),
            namespace: None,
            read: vec![],
            write: vec![],
        }
    }

    #[test]
    fn pending_approve_revoke_and_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Access::open(dir.path(), &[], 1 << 20, 3).expect("open");
        let fp = Fingerprint([1; 32]);
        let claim = Claim {
            name: "e1".into(),
            role: Some(Role::Edge),
            token: None,
        };
        let r = a
            .admit(&fp, &claim, "127.0.0.1:9", "hub")
            .expect_err("unknown");
        assert!(r.message.contains("pending"), "{}", r.message);
        assert_eq!(a.store.pending().expect("pending").len(), 1);
        a.execute(
            AdminRequest::KeysApprove {
                fingerprint: fp,
                grant: grant(Role::Edge, "e1"),
            },
            "test",
        )
        .expect("approve");
        assert_eq!(
            a.admit(&fp, &claim, "x", "hub")
                .expect("admitted")
                .grant
                .name,
            "e1"
        );
        a.execute(
            AdminRequest::KeysRevoke {
                fingerprint: fp,
                reason: "lost".into(),
            },
            "test",
        )
        .expect("revoke");
        assert_eq!(
            a.admit(&fp, &claim, "x", "hub")
                .expect_err("revoked")
                .reason,
            "revoked key"
        );

        let out = a
            .execute(
                AdminRequest::TokensCreate {
                    grant: grant(Role::Edge, "e2"),
                    ttl_s: 60,
                },
                "test",
            )
            .expect("token");
        let token = out["token"].as_str().expect("token").to_string();
        let fp2 = Fingerprint([2; 32]);
        let claim2 = Claim {
            name: "whatever".into(),
            role: Some(Role::Edge),
            token: Some(token.clone()),
        };
        assert_eq!(
            a.admit(&fp2, &claim2, "x", "hub")
                .expect("enrolled")
                .grant
                .name,
            "e2"
        );
        let fp3 = Fingerprint([3; 32]);
        let claim3 = Claim {
            token: Some(token),
            ..claim2
        };
        assert!(a
            .admit(&fp3, &claim3, "x", "hub")
            .expect_err("used")
            .message
            .contains("already used"));
        let events: Vec<String> = crate::audit::read_all(dir.path())
            .expect("audit")
            .iter()
            .map(|v| v["event"].as_str().unwrap_or("").to_string())
            .collect();
        for e in [
            "connection.refused",
            "key.approved",
            "key.revoked",
            "token.created",
            "token.used",
            "token.refused",
        ] {
            assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
        }
    }

    #[test]
    fn a_token_presented_by_many_keys_at_once_approves_exactly_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = std::sync::Arc::new(Access::open(dir.path(), &[], 1 << 20, 3).expect("open"));
        let out = a
            .execute(
                AdminRequest::TokensCreate {
                    grant: grant(Role::Edge, "e1"),
                    ttl_s: 60,
                },
                "test",
            )
            .expect("token");
        let token = out["token"].as_str().expect("token").to_string();
        let go = std::sync::Arc::new(std::sync::Barrier::new(16));
        let tries: Vec<_> = (0..16u8)
            .map(|i| {
                let (a, go, token) = (a.clone(), go.clone(), token.clone());
                std::thread::spawn(move || {
                    let claim = Claim {
                        name: format!("n{i}"),
                        role: Some(Role::Edge),
                        token: Some(token),
                    };
                    go.wait();
                    a.admit(&Fingerprint([100 + i; 32]), &claim, "x", "hub")
                        .is_ok()
                })
            })
            .collect();
        let admitted = tries
            .into_iter()
            .map(|t| t.join().unwrap_or(false))
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 1);
        assert_eq!(a.store.keys().expect("keys").len(), 1);
    }

    #[test]
    fn a_child_hub_is_approved_only_with_a_namespace_said_out_loud() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Access::open(dir.path(), &[], 1 << 20, 3).expect("open");
        let approve = |role, ns: Option<&str>| {
            a.execute(
                AdminRequest::KeysApprove {
                    fingerprint: Fingerprint([9; 32]),
                    grant: Grant {
                        namespace: ns.map(str::to_string),
                        ..grant(role, "dmz")
                    },
                },
                "test",
            )
        };
        let e = approve(Role::Hub, None).expect_err("no namespace");
        assert!(
            matches!(&e, AccessError::Invalid(m) if m.contains("needs a namespace")),
            "{e}"
        );
        assert!(
            approve(Role::Edge, Some("*")).is_err(),
            "anywhere is for hubs"
        );
        approve(Role::Hub, Some("*")).expect("anywhere, said explicitly");
        approve(Role::Hub, Some("plant1")).expect("a namespace");
    }
}
