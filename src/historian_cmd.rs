//! `pointhub client historian` (record points in PostgreSQL) and `pointhub client history`
//! (read them back).

use anyhow::{Context, Result};
use clap::ValueEnum;
use pointhub_client::config::HistorianSection;
use pointhub_client::sinks;
use pointhub_client::ClientConfig;
use pointhub_historian::query::Sample;
use pointhub_historian::{db::Db, Historian, HistorianError};
use pointhub_schemas::{Pattern, Role, Timestamp};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How `client history` prints samples.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum HistoryFormat {
    /// One JSON object per sample, as `client watch` prints them.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

fn section(config: &Path) -> Result<(ClientConfig, HistorianSection)> {
    let cfg = ClientConfig::load(config)?;
    let Some(h) = cfg.historian.clone() else {
        anyhow::bail!(
            "{}: no [historian] section: see examples/historian/client.toml",
            config.display()
        );
    };
    Ok((cfg, h))
}

/// Runs the historian until shutdown.
pub(crate) async fn record(config: &Path, shutdown: CancellationToken) -> Result<()> {
    let (cfg, h) = section(config)?;
    let historian = Historian::new(h).with_context(|| config.display().to_string())?;
    let link = cfg.hub.link_config(Role::Client, &cfg.name)?;
    sinks::run(link, Box::new(historian), shutdown).await?;
    Ok(())
}

/// A time as `--since`/`--until` take it: a duration back from now, or an RFC 3339 time.
fn when(text: &str) -> Result<Timestamp> {
    if let Ok(back) = humantime::parse_duration(text) {
        let t = SystemTime::now()
            .checked_sub(back)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(Timestamp::from(t));
    }
    let t = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("{text:?} is neither a duration (1h, 30min) nor an RFC 3339 time (2026-12-07T08:00:00Z)")
    })?;
    Ok(Timestamp::from(t))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(s: &Sample) -> String {
    let value = match &s.value {
        pointhub_schemas::Value::Null => String::new(),
        v => csv_field(&v.to_string()),
    };
    let ts = |t: Timestamp| {
        if t.is_never() {
            String::new()
        } else {
            t.to_rfc3339()
        }
    };
    format!(
        "{},{},{},{},{},{},{}",
        csv_field(&s.point),
        ts(s.time),
        ts(s.hub_time),
        value,
        s.quality,
        s.quality.0,
        s.history
    )
}

/// Prints the stored samples of `patterns` between `since` and `until`.
pub(crate) async fn history(
    config: &Path,
    patterns: &[String],
    since: &str,
    until: Option<&str>,
    format: HistoryFormat,
) -> Result<()> {
    // Patterns checked before anything else, as every client command does.
    let patterns = patterns
        .iter()
        .map(|p| Pattern::parse(p).with_context(|| format!("pattern {p:?}")))
        .collect::<Result<Vec<_>>>()?;
    let (_, h) = section(config)?;
    let since = when(since)?;
    let until = match until {
        Some(u) => when(u)?,
        None => Timestamp::from(SystemTime::now() + Duration::from_secs(1)),
    };
    let mut target =
        pointhub_historian::Target::new(&h).with_context(|| config.display().to_string())?;
    if target.config.get_connect_timeout().is_none() {
        target.config.connect_timeout(Duration::from_secs(10));
    }
    let db = Db::connect(&target).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if matches!(format, HistoryFormat::Csv) {
        writeln!(
            out,
            "point,time,hub_time,value,quality,quality_code,history"
        )?;
    }
    let n = pointhub_historian::query::samples(db.client(), &patterns, since, until, |s| {
        let line = match format {
            HistoryFormat::Jsonl => pointhub_schemas::json::record(
                &s.point, &s.value, s.quality, s.time, s.hub_time, s.history,
            )
            .to_string(),
            HistoryFormat::Csv => csv_line(&s),
        };
        writeln!(out, "{line}").map_err(HistorianError::from)
    })
    .await?;
    out.flush()?;
    eprintln!("{n} samples");
    Ok(())
}
