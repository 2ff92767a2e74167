//! `pointhub`: the one binary. Parses arguments, starts tracing, binds, and calls the libraries.

mod client_cmd;
mod demo;
mod historian_cmd;
mod hub_cmd;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "pointhub", version, about = "Share industrial data without sharing the network.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a hub: accepts edge and client sessions on one TLS port.
    Hub(HubArgs),
    /// Run an edge: reads sources and publishes them to its hub.
    Edge(EdgeArgs),
    /// Client commands: watch, get, write.
    #[command(subcommand)]
    Client(client_cmd::ClientCmd),
    /// Make a node's key pair and certificate; prints the fingerprint to approve on the hub.
    Keygen(KeygenArgs),
    /// Run a hub and a simulated edge in one process, with a live view and a ready client config.
    Demo(demo::DemoArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct HubArgs {
    #[command(subcommand)]
    cmd: Option<hub_cmd::HubCmd>,
    /// The hub's configuration file (see examples/hub.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print a commented example configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the hub's key fingerprint (making the key first if needed) and exit.
    #[arg(long)]
    show_fingerprint: bool,
}

#[derive(clap::Args)]
struct EdgeArgs {
    /// The edge's configuration file (see examples/edge.toml).
    #[arg(long, short, required_unless_present = "print_config")]
    config: Option<PathBuf>,
    /// Print a commented example configuration and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Folder to write node.key (owner-only) and node.crt into.
    #[arg(long)]
    out: PathBuf,
    /// The node's name, written into its certificate.
    #[arg(long, default_value = "node")]
    name: String,
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A token that fires on SIGINT or SIGTERM.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received: shutting down");
        t.cancel();
    });
    token
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes in one line, each cause said once: many errors already carry their
/// cause in their own message, and printing the chain as well repeated it.
fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

async fn real_main(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.cmd {
        Cmd::Hub(a) => {
            if let Some(cmd) = a.cmd {
                hub_cmd::run(cmd)?;
                return Ok(std::process::ExitCode::SUCCESS);
            }
            if a.print_config {
                print!("{}", pointhub_hub::config::DEFAULT_TOML);
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let path = a
                .config
                .context("--config is required: pointhub hub --config hub.toml")?;
            let cfg = pointhub_hub::HubConfig::load(&path)?;
            if a.show_fingerprint {
                let fp = hub_fingerprint(&cfg)?;
                println!("fingerprint: {fp}");
                return Ok(std::process::ExitCode::SUCCESS);
            }
            init_tracing("info");
            // Everything that can fail is loaded and checked before a port is bound.
            let listen = cfg.listen.clone();
            let built = pointhub_hub::Hub::build(cfg)?;
            let listeners = bind_all(&listen).await?;
            built.serve(listeners, shutdown_on_signals()).await?;
        }
        Cmd::Edge(a) => {
            if a.print_config {
                print!("{}", pointhub_edge::config::DEFAULT_TOML);
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let path = a.config.context("--config is required")?;
            let cfg = pointhub_edge::EdgeConfig::load(&path)?;
            init_tracing("info");
            let shutdown = shutdown_on_signals();
            pointhub_edge::run(cfg, shutdown).await?;
        }
        Cmd::Client(c) => {
            init_tracing("warn");
            return client_cmd::run(c, shutdown_on_signals()).await;
        }
        Cmd::Keygen(a) => {
            let fp = pointhub_link::identity::create(
                &a.out,
                "node",
                &a.name,
                std::slice::from_ref(&a.name),
            )
            .context("keygen")?;
            println!(
                "wrote {} and {}",
                a.out.join("node.key").display(),
                a.out.join("node.crt").display()
            );
            println!("fingerprint: {fp}");
        }
        Cmd::Demo(a) => {
            init_tracing("warn");
            return demo::run(a, shutdown_on_signals()).await;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The hub's fingerprint, making its key first if it has none yet.
pub fn hub_fingerprint(cfg: &pointhub_hub::HubConfig) -> Result<pointhub_link::Fingerprint> {
    Ok(match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => pointhub_link::identity::load(c, k)?.fingerprint,
        _ => {
            let mut sans = vec![
                "localhost".to_string(),
                "127.0.0.1".into(),
                "::1".into(),
                cfg.name.clone(),
            ];
            sans.extend(cfg.tls.names.iter().cloned());
            pointhub_link::identity::load_or_create(&cfg.data_dir, "hub", &cfg.name, &sans)?
                .0
                .fingerprint
        }
    })
}

/// Binds every listen address before anything runs, so a bad or busy address is a clear error.
pub async fn bind_all(addrs: &[String]) -> Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        match tokio::net::TcpListener::bind(a.as_str()).await {
            Ok(l) => out.push(l),
            Err(e) => bail!("cannot listen on {a}: {e} (is another hub running there? pick another port in `listen`)"),
        }
    }
    Ok(out)
}
