//! `pointhub hub keys|tokens|audit`: the operator's commands. They talk to the running hub over
//! its admin socket, or work on its data folder directly while it is stopped.

use anyhow::{Context, Result};
use clap::Subcommand;
use pointhub_hub::access::{AdminRequest, Grant};
use pointhub_hub::HubConfig;
use pointhub_link::Fingerprint;
use pointhub_schemas::{Pattern, Role};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum HubCmd {
    /// Node keys: pending, list, show, approve, revoke.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// One-time enrollment tokens: a new node presents one at its first connect and is approved.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Read the audit log, oldest first, as JSON lines.
    Audit(AuditArgs),
    /// Operator accounts of the web console.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Tokens for the JSON API (browser HMIs, scripts, metrics scrapers).
    #[command(subcommand)]
    ApiTokens(ApiTokensCmd),
    /// Durable subscriptions (historians): list them, remove one and what it keeps.
    #[command(subcommand)]
    Durable(DurableCmd),
}

#[derive(Subcommand)]
pub(crate) enum DurableCmd {
    /// Every durable subscription: its node, name, patterns, updates queued and dropped, connected.
    List {
        #[command(flatten)]
        cfg: Cfg,
    },
    /// Remove a durable subscription and the updates it keeps (a historian that will not return);
    /// audited. A client that attaches with the name again starts a new one.
    Remove {
        #[command(flatten)]
        cfg: Cfg,
        /// The node name of its client, as `list` shows it.
        node: String,
        /// The subscription's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum UsersCmd {
    /// Add a user (or reset its password): prints a new random password once.
    Add {
        #[command(flatten)]
        cfg: Cfg,
        name: String,
        /// admin (manages keys and tokens) or viewer (looks only).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A pattern of points the user sees (repeat; default everything).
        #[arg(long)]
        namespace: Vec<Pattern>,
        /// A node the user sees (repeat; default all).
        #[arg(long)]
        node: Vec<String>,
    },
    List {
        #[command(flatten)]
        cfg: Cfg,
    },
    Remove {
        #[command(flatten)]
        cfg: Cfg,
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ApiTokensCmd {
    /// Make an API token: prints it once.
    Create {
        #[command(flatten)]
        cfg: Cfg,
        #[arg(long)]
        name: String,
        /// Points it may read (repeat; default everything).
        #[arg(long)]
        read: Vec<Pattern>,
        /// Writable points it may write (repeat; default nothing).
        #[arg(long)]
        write: Vec<Pattern>,
    },
    List {
        #[command(flatten)]
        cfg: Cfg,
    },
    /// Revoke an API token by its id (from `list`): it is refused from now on, and its open
    /// JSON WebSocket sessions end at once.
    Revoke {
        #[command(flatten)]
        cfg: Cfg,
        /// The token's id (the first 8 hex digits `list` shows).
        id: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct Cfg {
    /// The hub's configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct GrantArgs {
    /// edge, client or hub.
    #[arg(long)]
    role: Role,
    /// The node's name on this hub (one path segment).
    #[arg(long)]
    name: String,
    /// Where an edge may publish (default: its name).
    #[arg(long)]
    namespace: Option<String>,
    /// A pattern the node may read (repeat; clients default to everything).
    #[arg(long)]
    read: Vec<Pattern>,
    /// A pattern of writable points the node may write (repeat; default nothing).
    #[arg(long)]
    write: Vec<Pattern>,
}

impl GrantArgs {
    fn grant(self) -> Grant {
        Grant {
            role: self.role,
            name: self.name,
            namespace: self.namespace,
            read: self.read,
            write: self.write,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum KeysCmd {
    /// Keys that tried to connect and are not approved.
    Pending {
        #[command(flatten)]
        cfg: Cfg,
    },
    /// Approved and revoked keys (the store's and the config's).
    List {
        #[command(flatten)]
        cfg: Cfg,
    },
    /// Everything the hub knows of one key.
    Show {
        #[command(flatten)]
        cfg: Cfg,
        fingerprint: Fingerprint,
    },
    /// Approve a key with a role, a name and rights.
    Approve {
        #[command(flatten)]
        cfg: Cfg,
        fingerprint: Fingerprint,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Revoke a key: its live sessions end at once and it is refused from then on.
    Revoke {
        #[command(flatten)]
        cfg: Cfg,
        fingerprint: Fingerprint,
        #[arg(long, default_value = "revoked by the operator")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokensCmd {
    /// Make a one-time token; prints it once (only its hash is kept).
    Create {
        #[command(flatten)]
        cfg: Cfg,
        #[command(flatten)]
        grant: GrantArgs,
        /// How long the token is valid: 10m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Tokens, used and unused.
    List {
        #[command(flatten)]
        cfg: Cfg,
    },
}

#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    cfg: Cfg,
    /// Only this event (e.g. write, key.revoked, connection.refused) or prefix (connection.).
    #[arg(long)]
    event: Option<String>,
    /// Only entries about this node name.
    #[arg(long)]
    node: Option<String>,
    /// Only entries about this key.
    #[arg(long)]
    fingerprint: Option<Fingerprint>,
    /// Only entries at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Check the log's hash chain instead of printing it: exits 1 if an entry was edited,
    /// removed or inserted since it was written.
    #[arg(long)]
    verify: bool,
    /// Only the last N matching entries.
    #[arg(long)]
    last: Option<usize>,
}

fn load(cfg: &Cfg) -> Result<HubConfig> {
    Ok(HubConfig::load(&cfg.config)?)
}

fn call(cfg: &Cfg, req: AdminRequest) -> Result<serde_json::Value> {
    let hub = load(cfg)?;
    Ok(pointhub_hub::admin::call(
        &hub.data_dir,
        &hub.nodes,
        &hub.audit,
        req,
    )?)
}

fn lines(v: &serde_json::Value) {
    match v.as_array() {
        Some(items) => {
            for i in items {
                println!("{i}");
            }
        }
        None => println!("{v}"),
    }
}

pub(crate) fn run(cmd: HubCmd) -> Result<()> {
    match cmd {
        HubCmd::Keys(k) => match k {
            KeysCmd::Pending { cfg } => {
                let v = call(&cfg, AdminRequest::KeysPending)?;
                if v.as_array().is_some_and(|a| a.is_empty()) {
                    eprintln!("no pending keys");
                }
                lines(&v);
            }
            KeysCmd::List { cfg } => lines(&call(&cfg, AdminRequest::KeysList)?),
            KeysCmd::Show { cfg, fingerprint } => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&call(
                        &cfg,
                        AdminRequest::KeysShow { fingerprint }
                    )?)?
                )
            }
            KeysCmd::Approve {
                cfg,
                fingerprint,
                grant,
            } => {
                let v = call(
                    &cfg,
                    AdminRequest::KeysApprove {
                        fingerprint,
                        grant: grant.grant(),
                    },
                )?;
                println!("{v}");
                eprintln!("approved: the node is admitted at its next connect");
            }
            KeysCmd::Revoke {
                cfg,
                fingerprint,
                reason,
            } => {
                let v = call(
                    &cfg,
                    AdminRequest::KeysRevoke {
                        fingerprint,
                        reason,
                    },
                )?;
                println!("{v}");
                eprintln!("revoked: its live sessions (if the hub runs) have ended");
            }
        },
        HubCmd::Tokens(t) => match t {
            TokensCmd::Create { cfg, grant, ttl } => {
                let d = humantime::parse_duration(&ttl)
                    .with_context(|| format!("--ttl {ttl:?}: write 10m, 1h, 7d"))?;
                let v = call(
                    &cfg,
                    AdminRequest::TokensCreate {
                        grant: grant.grant(),
                        ttl_s: d.as_secs().max(1),
                    },
                )?;
                let token = v["token"].as_str().unwrap_or_default();
                println!("token: {token}");
                eprintln!(
                    "valid once, until {}. Give it to the node: enroll_token = \"{token}\" in its [hub] section, \
                     or POINTHUB_ENROLL_TOKEN in its environment.",
                    v["expires"].as_str().unwrap_or("?")
                );
            }
            TokensCmd::List { cfg } => lines(&call(&cfg, AdminRequest::TokensList)?),
        },
        HubCmd::Users(u) => match u {
            UsersCmd::Add {
                cfg,
                name,
                role,
                namespace,
                node,
            } => {
                let role = match role.as_str() {
                    "admin" => pointhub_hub::store::UserRole::Admin,
                    "viewer" => pointhub_hub::store::UserRole::Viewer,
                    other => anyhow::bail!("--role {other:?}: use admin or viewer"),
                };
                let v = call(
                    &cfg,
                    AdminRequest::UsersAdd {
                        name,
                        role,
                        namespaces: namespace,
                        nodes: node,
                    },
                )?;
                println!("user: {}", v["user"].as_str().unwrap_or_default());
                println!("password: {}", v["password"].as_str().unwrap_or_default());
                eprintln!("the password is shown once; the hub keeps only its argon2 hash");
            }
            UsersCmd::List { cfg } => lines(&call(&cfg, AdminRequest::UsersList)?),
            UsersCmd::Remove { cfg, name } => {
                println!("{}", call(&cfg, AdminRequest::UsersRemove { name })?)
            }
        },
        HubCmd::ApiTokens(t) => match t {
            ApiTokensCmd::Create {
                cfg,
                name,
                read,
                write,
            } => {
                let v = call(&cfg, AdminRequest::ApiTokensCreate { name, read, write })?;
                println!("token: {}", v["token"].as_str().unwrap_or_default());
                eprintln!("shown once: send it as Authorization: Bearer <token>, or ?token= on /api/v1/ws");
            }
            ApiTokensCmd::List { cfg } => lines(&call(&cfg, AdminRequest::ApiTokensList)?),
            ApiTokensCmd::Revoke { cfg, id } => {
                println!("{}", call(&cfg, AdminRequest::ApiTokensRevoke { id })?)
            }
        },
        HubCmd::Durable(d) => match d {
            DurableCmd::List { cfg } => lines(&call(&cfg, AdminRequest::DurableList)?),
            DurableCmd::Remove { cfg, node, name } => {
                println!(
                    "{}",
                    call(&cfg, AdminRequest::DurableRemove { node, name })?
                )
            }
        },
        HubCmd::Audit(a) if a.verify => {
            let hub = load(&a.cfg)?;
            let v = pointhub_hub::audit::verify(&hub.data_dir).context("reading the audit log")?;
            match &v.broken {
                None => println!(
                    "audit log intact: {} entries, {} chained, {} from before the chain; head {} (keep it elsewhere: it covers the newest entry too)",
                    v.entries, v.chained, v.unchained, v.head
                ),
                Some((file, line, why)) => {
                    println!("audit log BROKEN at {file} line {line}: {why}");
                    std::process::exit(1);
                }
            }
        }
        HubCmd::Audit(a) => {
            let hub = load(&a.cfg)?;
            let all =
                pointhub_hub::audit::read_all(&hub.data_dir).context("reading the audit log")?;
            let since = match &a.since {
                Some(s) => Some(
                    humantime::parse_rfc3339_weak(s)
                        .with_context(|| format!("--since {s:?}: write 2026-11-22T10:00:00Z"))?,
                ),
                None => None,
            };
            let fp = a.fingerprint.map(|f| f.to_string());
            let matching: Vec<&serde_json::Value> = all
                .iter()
                .filter(|v| {
                    a.event.as_ref().is_none_or(|e| {
                        v["event"]
                            .as_str()
                            .is_some_and(|x| x.starts_with(e.as_str()))
                    })
                })
                .filter(|v| {
                    a.node
                        .as_ref()
                        .is_none_or(|n| v["name"].as_str() == Some(n.as_str()))
                })
                .filter(|v| {
                    fp.as_ref()
                        .is_none_or(|f| v["fingerprint"].as_str() == Some(f.as_str()))
                })
                .filter(|v| {
                    since.is_none_or(|s| {
                        v["ts"]
                            .as_str()
                            .and_then(|t| humantime::parse_rfc3339(t).ok())
                            .is_some_and(|t| t >= s)
                    })
                })
                .collect();
            let skip = a
                .last
                .map(|n| matching.len().saturating_sub(n))
                .unwrap_or(0);
            for v in matching.into_iter().skip(skip) {
                println!("{v}");
            }
        }
    }
    Ok(())
}
