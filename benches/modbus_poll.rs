//! Benchmark: one edge polls 10,000 holding registers of one real Modbus device (pymodbus) every
//! second, all of which change every second; a client watches them through the hub.
//! Prints reads/s, updates/s delivered, and the edge's CPU. Run: `cargo bench --bench modbus_poll`
//! (`-- --seconds N` to change the 20 s window).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    missing_docs,
    unreachable_pub
)] // bench code: a failed expectation is the report

#[path = "../tests/e2e/harness.rs"]
mod harness;

use harness::*;
use std::time::{Duration, Instant};

fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn polls(p: &Plant) -> u64 {
    let (_, out, _) = p.run(&[
        "client",
        "get",
        "--config",
        &p.cfg("hmi"),
        "$sys/bench/modbus/plc/polls",
    ]);
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["value"].as_u64())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let registers = 10_000u32;
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("bench"), Node::client("hmi", "[]")],
    );
    let _hub = p.start_hub();
    let port = free_port();
    let _sim = ModbusSim::start(port, registers);
    let mut toml = format!(
        "name = \"bench\"\n[hub]\nurls = [\"wss://{}\"]\nfingerprint = \"{}\"\ncert = \"keys/bench/node.crt\"\nkey = \"keys/bench/node.key\"\n\n[[sources]]\nkind = \"modbus\"\nname = \"plc\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_ms = 1000\ntimeout_ms = 2000\n",
        p.hub_addr, p.hub_fp
    );
    for i in 0..registers {
        toml.push_str(&format!("[[sources.points]]\nname = \"r{i}\"\ntable = \"holding\"\naddress = {}\ntype = \"u16\"\n", 1000 + i));
    }
    std::fs::write(p.path("bench.toml"), toml).expect("write");
    p.write_client("hmi");
    let edge = p.start_edge("bench");
    let w = p.watch("hmi", "bench/plc/**");
    w.expect_line(Duration::from_secs(60), "first values", |l| {
        l.contains("\"Good\"")
    });
    std::thread::sleep(Duration::from_secs(2));
    w.drain();
    let (cpu0, polls0, t0) = (cpu_seconds(edge.pid()), polls(&p), Instant::now());
    let mut updates = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        if w.next_line(Duration::from_millis(500)).is_some() {
            updates += 1;
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let (cpu1, polls1) = (cpu_seconds(edge.pid()), polls(&p));
    let reads = (polls1 - polls0) as f64 / el;
    println!("modbus_poll: {registers} registers at 1 s, {el:.1} s window");
    println!("  reads/s (block reads of <=125 registers): {reads:.1}");
    println!("  registers read/s: {:.0}", reads * 125.0);
    println!(
        "  updates/s delivered to the client: {:.0}",
        updates as f64 / el
    );
    println!(
        "  edge CPU: {:.1} % of one core",
        (cpu1 - cpu0) / el * 100.0
    );
}
