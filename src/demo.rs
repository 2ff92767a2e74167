//! `pointhub demo`: a hub and a simulated edge in one process, keys made on first run, a live view,
//! and a client configuration that a second terminal can use as printed.

use anyhow::{Context, Result};
use pointhub_client::client::ClientOptions;
use pointhub_client::{Client, Event};
use pointhub_link::identity;
use pointhub_schemas::Role;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Folder for the demo's keys and configs (default: ~/.local/share/pointhub/demo).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address for the hub (default 127.0.0.1:7420, or any free port if that one is taken).
    #[arg(long)]
    listen: Option<String>,
    /// Points the simulated edge publishes.
    #[arg(long, default_value_t = 8)]
    signals: u32,
    /// No live view; just run (for scripts).
    #[arg(long)]
    no_view: bool,
}

fn default_data() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".local/share/pointhub/demo"),
        _ => PathBuf::from("pointhub-data/demo"),
    }
}

fn key(dir: &Path, name: &str) -> Result<pointhub_link::Fingerprint> {
    let d = dir.join("keys").join(name);
    Ok(
        identity::load_or_create(&d, "node", name, &[name.to_string()])
            .with_context(|| format!("demo key for {name}"))?
            .0
            .fingerprint,
    )
}

fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub(crate) async fn run(args: DemoArgs, shutdown: CancellationToken) -> Result<ExitCode> {
    let data = args.data.unwrap_or_else(default_data);
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let data = std::fs::canonicalize(&data)?;
    let listener = match &args.listen {
        Some(a) => crate::bind_all(std::slice::from_ref(a)).await?.remove(0),
        None => match tokio::net::TcpListener::bind("127.0.0.1:7420").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        },
    };
    let addr = listener.local_addr()?;
    let url = if addr.is_ipv6() {
        format!("wss://[{}]:{}", addr.ip(), addr.port())
    } else {
        format!("wss://{addr}")
    };

    let edge_fp = key(&data, "demo-edge")?;
    let client_fp = key(&data, "demo-client")?;
    let view_fp = key(&data, "demo-view")?;
    let hub_toml = format!(
        r#"# Written by `pointhub demo`.
name = "demo-hub"
listen = ["{addr}"]
data_dir = "hub"

[[nodes]]
fingerprint = "{edge_fp}"
role = "edge"
name = "demo"

[[nodes]]
fingerprint = "{client_fp}"
role = "client"
name = "demo-client"
read = ["**"]
write = ["demo/**"]

[[nodes]]
fingerprint = "{view_fp}"
role = "client"
name = "demo-view"
read = ["**"]
"#
    );
    std::fs::write(data.join("hub.toml"), hub_toml)?;
    let hub_cfg = pointhub_hub::HubConfig::load(&data.join("hub.toml"))?;
    let hub_fp = crate::hub_fingerprint(&hub_cfg)?;

    let hub_section = |name: &str| {
        format!(
            "[hub]\nurls = [\"{url}\"]\nfingerprint = \"{hub_fp}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            data.join("keys").join(name).join("node.crt").display(),
            data.join("keys").join(name).join("node.key").display()
        )
    };
    let edge_toml = format!(
        "# Written by `pointhub demo`.\nname = \"demo\"\n\n{}\n[[sources]]\nkind = \"simulator\"\nname = \"sim\"\nsignals = {}\nsetpoints = 2\nrate_hz = 2.0\n",
        hub_section("demo-edge"),
        args.signals
    );
    std::fs::write(data.join("edge.toml"), edge_toml)?;
    let client_toml = format!(
        "# Written by `pointhub demo`.\nname = \"demo-client\"\n\n{}",
        hub_section("demo-client")
    );
    std::fs::write(data.join("client.toml"), client_toml)?;
    let view_toml = format!("name = \"demo-view\"\n\n{}", hub_section("demo-view"));
    std::fs::write(data.join("view.toml"), view_toml)?;

    // A console login for this run (a new random password each start; the hub keeps its hash).
    let password = {
        let access = pointhub_hub::access::Access::open(
            &hub_cfg.data_dir,
            &hub_cfg.nodes,
            hub_cfg.audit.max_bytes,
            hub_cfg.audit.keep,
        )?;
        let req = pointhub_hub::access::AdminRequest::UsersAdd {
            name: "demo".into(),
            role: pointhub_hub::store::UserRole::Admin,
            namespaces: vec![],
            nodes: vec![],
        };
        let v = access.execute(req, "demo")?;
        v["password"].as_str().unwrap_or_default().to_string()
    };
    let edge_cfg = pointhub_edge::EdgeConfig::load(&data.join("edge.toml"))?;
    let hub_task = tokio::spawn(pointhub_hub::run(hub_cfg, vec![listener], shutdown.clone()));
    let edge_task = tokio::spawn(pointhub_edge::run(edge_cfg, shutdown.clone()));

    let exe = std::env::current_exe()
        .map(|p| quote(&p))
        .unwrap_or_else(|_| "pointhub".into());
    let client_cfg = quote(&data.join("client.toml"));
    println!(
        "pointhub demo: hub \"demo-hub\" on {url}, simulated edge \"demo\" publishing under demo/"
    );
    println!("hub key fingerprint: {hub_fp}");
    println!();
    println!("Watch the same points as a client, from any folder in a second terminal:");
    println!("  {exe} client watch --config {client_cfg} 'demo/**'");
    println!("Write a setpoint:");
    println!("  {exe} client write --config {client_cfg} demo/sim/setpoint1 42");
    println!("Operator console (the browser warns once about the hub's own certificate):");
    println!(
        "  https://{}/   user demo, password {password}",
        url.trim_start_matches("wss://")
    );
    println!("Stop with Ctrl-C; stop this demo and watch the client turn every point stale.");
    println!();
    let _ = std::io::stdout().flush();

    if !args.no_view {
        let view = pointhub_client::ClientConfig::load(&data.join("view.toml"))?;
        let link = view.hub.link_config(Role::Client, "demo-view")?;
        let opts = ClientOptions {
            patterns: vec![
                "demo/**".into(),
                pointhub_schemas::sys::SysNamespace::of("demo").point("**"),
            ],
            ..Default::default()
        };
        let (client, mut events) = Client::spawn(link, opts, shutdown.clone());
        let tty = std::io::stdout().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut status = String::from("connecting");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(Event::Connected { .. }) => status = "connected".into(),
                    Some(Event::Disconnected { reason }) => status = format!("disconnected: {reason}"),
                    Some(_) => {}
                    None => break,
                },
                _ = tick.tick(), if tty => {
                    let mut out = String::from("\x1b[H\x1b[2J");
                    out.push_str(&format!("pointhub demo: {url}  view: {status}  (Ctrl-C to stop)\n"));
                    out.push_str(&format!("client: {exe} client watch --config {client_cfg} 'demo/**'\n\n"));
                    out.push_str(&format!("{:<32} {:>14} {:<8} {:<42} {}\n", "point", "value", "unit", "quality", "source time"));
                    for r in client.mirror() {
                        let v = match &r.value {
                            pointhub_schemas::Value::Float(f) => format!("{f:.3}"),
                            other => other.to_string(),
                        };
                        let ts = if r.source_ts.is_never() { "-".into() } else { r.source_ts.to_rfc3339() };
                        out.push_str(&format!("{:<32} {:>14} {:<8} {:<42} {}\n", r.name, v, r.unit.as_deref().unwrap_or(""), r.quality.to_string(), ts));
                    }
                    print!("{out}");
                    let _ = std::io::stdout().flush();
                }
            }
        }
    } else {
        shutdown.cancelled().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), edge_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), hub_task).await;
    Ok(ExitCode::SUCCESS)
}
