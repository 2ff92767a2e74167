//! `pointhub client …`: watch, get and write from the command line.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use pointhub_client::sinks::{
    self, lines::LineFormat, lines::Lines, modbus::ModbusSink, mqtt::MqttSink,
    sparkplug::SparkplugSink,
};
use pointhub_client::{Client, ClientConfig, ClientOptions, Event, LinkConfig};
use pointhub_schemas::{Pattern, Role, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub(crate) enum ClientCmd {
    /// Print every change of the matching points, with quality, until stopped.
    Watch {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Also print replays of buffered history, flagged "history": true.
        #[arg(long)]
        history: bool,
        /// Take the points from the hub's durable subscription of this name (made on first use):
        /// the hub keeps what was not printed while this client is away. Implies --history.
        #[arg(long, value_name = "NAME")]
        durable: Option<String>,
        /// Point patterns: plant1/**, plant1/*/speed, ** (quote them in the shell).
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Print one snapshot of the matching points as JSON lines, then exit.
    Get {
        #[arg(long, short)]
        config: PathBuf,
        /// Seconds to wait for the hub.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Serve mirrored points as a local Modbus TCP server for an HMI (the modbus_server section of the config).
    ModbusServer {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Publish mirrored points to an MQTT broker as retained JSON topics, and take writes from it (the mqtt section of the config).
    Mqtt {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Publish mirrored points as a Sparkplug B edge node, and take DCMD writes (the sparkplug section of the config).
    Sparkplug {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Record points in PostgreSQL, exactly once, live and history apart (the historian section of the config).
    Historian {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print what the historian's database holds for the matching points over a time range.
    History {
        #[arg(long, short)]
        config: PathBuf,
        /// From when: a duration back from now (1h, 30min, 2days) or an RFC 3339 time.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Until when (excluded): a duration back from now or an RFC 3339 time; default now.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::historian_cmd::HistoryFormat::Jsonl)]
        format: crate::historian_cmd::HistoryFormat,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Write a value to a writable point; prints the result. Exit code 0 only when the device took it.
    Write {
        #[arg(long, short)]
        config: PathBuf,
        /// Seconds to wait for the hub and the device.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        point: String,
        /// The value: a number (negative ones too), true/false, or text (JSON is read as JSON).
        #[arg(allow_negative_numbers = true)]
        value: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per change.
    Jsonl,
    /// Aligned columns for a terminal.
    Table,
}

/// Patterns checked before anything dials.
fn checked(patterns: Vec<String>) -> Result<Vec<String>> {
    for p in &patterns {
        Pattern::parse(p).with_context(|| format!("pattern {p:?}"))?;
    }
    Ok(patterns)
}

fn link_config(config: &std::path::Path) -> Result<LinkConfig> {
    let cfg = ClientConfig::load(config)?;
    Ok(cfg.hub.link_config(Role::Client, &cfg.name)?)
}

fn start(
    config: &std::path::Path,
    patterns: Vec<String>,
    shutdown: CancellationToken,
) -> Result<(Client, tokio::sync::mpsc::Receiver<Event>)> {
    let patterns = checked(patterns)?;
    Ok(Client::spawn(
        link_config(config)?,
        ClientOptions {
            patterns,
            ..Default::default()
        },
        shutdown,
    ))
}

pub(crate) async fn run(cmd: ClientCmd, shutdown: CancellationToken) -> Result<ExitCode> {
    match cmd {
        ClientCmd::Watch {
            config,
            format,
            history,
            durable,
            patterns,
        } => {
            if let Some(d) = durable
                .as_deref()
                .filter(|d| !pointhub_schemas::DurableSubscribe::valid_name(d))
            {
                anyhow::bail!("--durable {d:?}: use 1 to 64 of A-Z a-z 0-9 . _ -");
            }
            let sink = Lines {
                patterns: checked(patterns)?,
                history,
                durable,
                format: match format {
                    Format::Jsonl => LineFormat::Json,
                    Format::Table => LineFormat::Table,
                },
            };
            sinks::run(link_config(&config)?, Box::new(sink), shutdown).await?;
        }
        ClientCmd::ModbusServer { config } => {
            let cfg = ClientConfig::load(&config)?;
            let Some(server) = cfg.modbus_server.clone() else {
                anyhow::bail!(
                    "{}: no [modbus_server] section: see examples/modbus/client.toml",
                    config.display()
                );
            };
            let listener = tokio::net::TcpListener::bind(server.listen.as_str())
                .await
                .with_context(|| format!("cannot listen on {} for Modbus", server.listen))?;
            eprintln!("modbus server listening on {}", listener.local_addr()?);
            let link = cfg.hub.link_config(Role::Client, &cfg.name)?;
            let sink = ModbusSink {
                cfg: server,
                listener,
            };
            sinks::run(link, Box::new(sink), shutdown).await?;
        }
        ClientCmd::Mqtt { config } => {
            let cfg = ClientConfig::load(&config)?;
            let Some(section) = cfg.mqtt.clone() else {
                anyhow::bail!(
                    "{}: no [mqtt] section: see examples/mqtt/client.toml",
                    config.display()
                );
            };
            let link = cfg.hub.link_config(Role::Client, &cfg.name)?;
            let sink = MqttSink {
                section,
                name: cfg.name.clone(),
            };
            sinks::run(link, Box::new(sink), shutdown).await?;
        }
        ClientCmd::Sparkplug { config } => {
            let cfg = ClientConfig::load(&config)?;
            let Some(section) = cfg.sparkplug.clone() else {
                anyhow::bail!(
                    "{}: no [sparkplug] section: see examples/mqtt/sparkplug.toml",
                    config.display()
                );
            };
            let link = cfg.hub.link_config(Role::Client, &cfg.name)?;
            let sink = SparkplugSink {
                section,
                name: cfg.name.clone(),
            };
            sinks::run(link, Box::new(sink), shutdown).await?;
        }
        ClientCmd::Historian { config } => crate::historian_cmd::record(&config, shutdown).await?,
        ClientCmd::History {
            config,
            since,
            until,
            format,
            patterns,
        } => {
            crate::historian_cmd::history(&config, &patterns, &since, until.as_deref(), format)
                .await?
        }
        ClientCmd::Get {
            config,
            timeout,
            patterns,
        } => {
            let (client, mut events) = start(&config, patterns.clone(), shutdown.clone())?;
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => anyhow::bail!("no snapshot from the hub within {timeout} s (see the messages above)"),
                    _ = shutdown.cancelled() => return Ok(ExitCode::FAILURE),
                    ev = events.recv() => match ev {
                        Some(Event::SnapshotDone { .. }) => break,
                        Some(_) => {}
                        None => anyhow::bail!("client stopped"),
                    }
                }
            }
            let pats: Vec<Pattern> = patterns
                .iter()
                .map(|p| Pattern::parse(p).with_context(|| format!("pattern {p:?}")))
                .collect::<Result<_>>()?;
            let mut out = std::io::stdout().lock();
            for r in client
                .mirror()
                .into_iter()
                .filter(|r| pats.iter().any(|p| p.matches(&r.name)))
            {
                writeln!(out, "{}", r.to_json())?;
            }
            shutdown.cancel();
        }
        ClientCmd::Write {
            config,
            timeout,
            point,
            value,
        } => {
            let (client, mut events) = start(&config, Vec::new(), shutdown.clone())?;
            let wait = Duration::from_secs(timeout);
            let connected = tokio::time::timeout(wait, async {
                while let Some(ev) = events.recv().await {
                    if matches!(ev, Event::Connected { .. }) {
                        return true;
                    }
                }
                false
            })
            .await;
            if !matches!(connected, Ok(true)) {
                anyhow::bail!("cannot reach the hub within {timeout} s (see the messages above)");
            }
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            let outcome = client
                .write(&point, Value::parse_user(&value), wait)
                .await?;
            let line = serde_json::json!({
                "point": point,
                "status": outcome.status.to_string(),
                "status_code": outcome.status.0,
                "message": outcome.message,
            });
            println!("{line}");
            shutdown.cancel();
            if !outcome.is_ok() {
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
