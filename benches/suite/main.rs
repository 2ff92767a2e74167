//! The benchmark suite: pointhub (TLS 1.3, WebSocket, mutual keys) against mosquitto and
//! nats-server on loopback, on the same workloads, in one run.
//!
//! `cargo bench --bench suite` runs everything and prints the tables; `-- --write-docs` also
//! writes them into docs/benchmarks.md; `-- --quick` is the seconds-long smoke run CI does.
//! `bash benches/run.sh` installs the peers and runs the full suite with `--write-docs`.
//!
//! Cases: 1 throughput 1→1; 2 fan-out 1→10 and 1→100; 3 latency at 10,000 updates/s to 1 and 10
//! clients; 4 time-to-know after kill -9 and SIGSTOP of an edge; 5 resync of 100,000 and
//! 1,000,000 points and hub memory per point; 6 idle sessions: hub memory per session and
//! time to admit them; 7 the historian into PostgreSQL: rows/s, CPU per 1,000 rows, live delay
//! during a backfill.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    missing_docs,
    unreachable_pub
)] // bench code: a failed expectation is the report

mod brokers;
#[path = "../../tests/e2e/harness.rs"]
mod harness;
mod historian;
mod latency;
mod machine;
mod measure;
#[path = "../../tests/e2e/path.rs"]
mod path;
mod pointhub;
#[path = "../../tests/e2e/postgres.rs"]
#[allow(
    dead_code,
    reason = "the benchmarks use the plain server only, not the TLS one"
)]
mod postgres;
mod report;
mod resync;
mod sessions;
mod throughput;
mod time_to_know;
mod wire;

use brokers::*;
use historian::*;
use latency::*;
use machine::*;
use measure::*;
use pointhub::*;
use report::*;
use resync::*;
use sessions::*;
use throughput::*;
use time_to_know::*;
use wire::*;

use harness::*;
use pointhub_client::ClientConfig;
use pointhub_link::{self as link, Link};
use pointhub_schemas::{
    Birth, Data, DataType, Msg, PointDef, Quality, Role, Subscribe, Timestamp, Update, Value,
};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
pub(crate) struct Opts {
    pub(crate) runs: usize,
    pub(crate) secs: f64,
    pub(crate) quick: bool,
    /// `--pointhub-only`: skip mosquitto and nats-server (for profiling runs).
    pub(crate) no_peers: bool,
    /// `--runs N` was given.
    pub(crate) runs_given: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(port) = args
        .iter()
        .position(|a| a == "--relay")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
    {
        relay_main(port);
        return;
    }
    // `cargo bench` passes --bench; `cargo test --bench suite` (CI's smoke run) does not.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let write_docs = args.iter().any(|a| a == "--write-docs");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let no_peers = args.iter().any(|a| a == "--pointhub-only");
    let mut o = if quick {
        Opts {
            runs: 1,
            secs: 1.0,
            quick,
            no_peers,
            runs_given: false,
        }
    } else {
        Opts {
            runs: 3,
            secs: 5.0,
            quick,
            no_peers,
            runs_given: false,
        }
    };
    // `--secs S` and `--runs N` override the lengths (for profiling runs).
    if let Some(s) = value("--secs").and_then(|v| v.parse().ok()) {
        o.secs = s;
    }
    if let Some(n) = value("--runs").and_then(|v| v.parse().ok()) {
        o.runs = n;
        o.runs_given = true;
    }
    // `--clients 1,10` picks the fan-out cases.
    let clients_arg: Option<Vec<usize>> =
        value("--clients").map(|v| v.split(',').filter_map(|c| c.parse().ok()).collect());
    let clients =
        clients_arg
            .clone()
            .unwrap_or_else(|| if quick { vec![1] } else { vec![1, 10, 100] });
    // The latency case runs one and ten clients unless `--clients` says otherwise.
    let latency_clients = clients_arg.unwrap_or_else(|| vec![1, 10]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut r = Report { lines: Vec::new() };
    r.add(format!("Machine: {}.", machine()));
    r.add(format!(
        "Run: {} run(s) of {} s per figure{}{}. Command: `bash benches/run.sh` (or `cargo bench --bench suite -- --write-docs`).",
        o.runs,
        o.secs,
        if quick || o.runs_given {
            ""
        } else {
            " (latency: twice as many)"
        },
        if quick { " (smoke run)" } else { "" }
    ));
    r.add("pointhub runs over TLS 1.3 + WebSocket with mutual keys; mosquitto and nats-server over plain TCP, QoS 0, one 24-byte message per update, fed by a client that batches its writes.");
    // `--only throughput|latency|know|resync|sessions|historian|machine` runs one case.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let run = |c: &str| only.as_deref().is_none_or(|o| o == c);
    // `--only machine`: how steady the idle machine is, for `--secs` (the latency case starts so).
    if only.as_deref() == Some("machine") {
        r.add(idle_machine(o.secs));
    }
    rt.block_on(async {
        if run("throughput") {
            throughput(&mut r, o, &clients).await;
        }
        if run("latency") {
            latency(&mut r, o, &latency_clients).await;
        }
        if run("know") {
            time_to_know(&mut r, o).await;
        }
        if run("resync") {
            resync(&mut r, o).await;
        }
        if run("sessions") {
            sessions(&mut r, o).await;
        }
        if run("historian") {
            historian(&mut r, o).await;
        }
    });
    if write_docs && only.is_none() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let (begin, end) = ("<!-- suite:begin -->", "<!-- suite:end -->");
        let body = format!(
            "{begin}\n## The suite: pointhub, mosquitto and nats-server\n\n{}\n{end}",
            r.lines.join("\n")
        );
        let new = match (old.find(begin), old.find(end)) {
            (Some(a), Some(b)) => format!("{}{}{}", &old[..a], body, &old[b + end.len()..]),
            _ => format!("{old}\n{body}\n"),
        };
        std::fs::write(&path, new).expect("write docs/benchmarks.md");
        println!("wrote {}", path.display());
    }
}
