//! Modbus at both ends, against a real Modbus device (pymodbus) and a real Modbus client.

use crate::harness::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn edge_toml(p: &Plant, dev_port: u16) -> String {
    format!(
        r#"name = "plant1"
[hub]
urls = ["wss://{addr}"]
fingerprint = "{fp}"
cert = "keys/plant1/node.crt"
key = "keys/plant1/node.key"
{FAST_HEARTBEAT}backoff_max_ms = 500

[[sources]]
kind = "modbus"
name = "plc1"
host = "127.0.0.1"
port = {dev_port}
timeout_ms = 300
retries = 0
poll_ms = 200

[[sources.points]]
name = "tank/level"
table = "holding"
address = 0
type = "f32"
unit = "m"
writable = true

[[sources.points]]
name = "pump/speed"
table = "holding"
address = 10
type = "u16"
writable = true

[[sources.points]]
name = "counter"
table = "input"
address = 0
type = "u16"

[[sources.points]]
name = "pump/run"
table = "coil"
address = 0
type = "bool"
writable = true

[[sources.points]]
name = "missing"
table = "holding"
address = 60000
type = "u16"
"#,
        addr = p.hub_addr,
        fp = p.hub_fp
    )
}

fn client_toml(p: &Plant, listen_port: u16) -> String {
    format!(
        r#"name = "hmi"
[hub]
urls = ["wss://{addr}"]
fingerprint = "{fp}"
cert = "keys/hmi/node.crt"
key = "keys/hmi/node.key"
{FAST_HEARTBEAT}backoff_max_ms = 500

[modbus_server]
listen = "127.0.0.1:{listen_port}"

[[modbus_server.points]]
name = "plant1/plc1/tank/level"
table = "holding"
address = 0
type = "f32"

[[modbus_server.points]]
name = "plant1/plc1/pump/speed"
table = "holding"
address = 2
type = "u16"
writable = true

[[modbus_server.points]]
name = "plant1/plc1/counter"
table = "input"
address = 0
type = "u16"
quality_register = 100
"#,
        addr = p.hub_addr,
        fp = p.hub_fp
    )
}

/// Waits until the device's `$sys` status says `what` (it follows its points by a moment).
fn status_says(p: &Plant, what: &str) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (_, out, _) = p.run(&[
            "client",
            "get",
            "--config",
            &p.cfg("hmi"),
            "$sys/plant1/modbus/plc1/status",
        ]);
        if out.contains(what) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never said {what:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn f32_of(regs: &serde_json::Value) -> f32 {
    let r: Vec<u16> = regs
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_u64().expect("u16") as u16)
        .collect();
    f32::from_bits((u32::from(r[0]) << 16) | u32::from(r[1]))
}

#[test]
fn polled_values_reach_a_client_and_a_lost_device_turns_exactly_its_points_bad() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("plant1"), Node::client("hmi", "[\"plant1/**\"]")],
    );
    let _hub = p.start_hub();
    let port = free_port();
    let mut sim = ModbusSim::start(port, 0);
    std::fs::write(p.path("plant1.toml"), edge_toml(&p, port)).expect("write");
    p.write_client("hmi");
    let _edge = p.start_edge("plant1");
    let w = p.watch("hmi", "plant1/**");

    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all points read once", |b| {
        let q = |n: &str| {
            b.quality
                .get(&format!("plant1/plc1/{n}"))
                .cloned()
                .unwrap_or_default()
        };
        ["tank/level", "pump/speed", "counter", "pump/run"]
            .iter()
            .all(|n| q(n) == "Good")
            && q("missing") == "BadDeviceFailure"
    });
    assert!(
        (board.value["plant1/plc1/tank/level"]
            .as_f64()
            .expect("float")
            - 123.456)
            .abs()
            < 1e-3,
        "{:?}",
        board.value
    );
    assert_eq!(board.value["plant1/plc1/pump/run"], true);
    assert_eq!(board.value["plant1/plc1/pump/speed"], 42);
    let c1 = board.value["plant1/plc1/counter"].clone();
    watch_until(&w, &mut board, T, "the counter moving", |b| {
        b.value["plant1/plc1/counter"] != c1
    });
    status_says(&p, "device exception");

    // The device stops: every one of its points turns BadCommunicationError, keeping its value.
    sim.stop();
    watch_until(&w, &mut board, T, "all BadCommunicationError", |b| {
        b.all("plant1/plc1/", 5, "BadCommunicationError")
    });
    assert!(
        (board.value["plant1/plc1/tank/level"]
            .as_f64()
            .expect("kept")
            - 123.456)
            .abs()
            < 1e-3
    );
    status_says(&p, "communication error");

    // It comes back: Good again (but for the unmapped one).
    let _sim2 = ModbusSim::start(port, 0);
    watch_until(&w, &mut board, T, "Good again", |b| {
        ["tank/level", "pump/speed", "counter", "pump/run"]
            .iter()
            .all(|n| {
                b.quality
                    .get(&format!("plant1/plc1/{n}"))
                    .is_some_and(|q| q == "Good")
            })
    });
}

#[test]
fn writes_land_in_the_device_and_the_local_modbus_server_serves_the_plant() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("plant1"),
            Node::client("hmi", "[\"plant1/**\"]"),
            Node::client("viewer", "[]"),
        ],
    );
    let _hub = p.start_hub();
    let port = free_port();
    let _sim = ModbusSim::start(port, 0);
    std::fs::write(p.path("plant1.toml"), edge_toml(&p, port)).expect("write");
    let mb_port = free_port();
    std::fs::write(p.path("hmi.toml"), client_toml(&p, mb_port)).expect("write");
    p.write_client("viewer");
    let mut edge = p.start_edge("plant1");
    let w = p.watch("viewer", "plant1/**");
    let level = w.expect_json(T, "the level", |v| {
        v["point"] == "plant1/plc1/tank/level" && v["quality"] == "Good"
    });
    assert_eq!(
        level["unit"], "m",
        "the JSON line carries the unit: {level}"
    );

    // pointhub client write → hub → edge → device register.
    let (code, out, err) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "plant1/plc1/pump/speed",
        "1234",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        modbus_client(port, &["read", "--address", "10"])["values"][0],
        1234
    );
    w.expect_json(T, "the written value read back", |v| {
        v["point"] == "plant1/plc1/pump/speed" && v["value"] == 1234
    });
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "plant1/plc1/counter",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadNotWritable"), "{out}");
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "plant1/plc1/pump/speed",
        "70000",
    ]);
    assert_eq!(code, 2, "out of range for u16");
    assert!(out.contains("BadTypeMismatch"), "{out}");

    // The client-side Modbus server, read by an independent Modbus client.
    let server = Proc::spawn(
        "modbus-server",
        &["client", "modbus-server", "--config", &p.cfg("hmi")],
    );
    server.wait_stderr(T, "connected to");
    let deadline = std::time::Instant::now() + T;
    let level = loop {
        let r = modbus_client(mb_port, &["read", "--address", "0", "--count", "2"]);
        if r["ok"] == true {
            break f32_of(&r["values"]);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no level from the local server: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!((level - 123.456).abs() < 1e-3, "{level}");
    assert_eq!(
        modbus_client(mb_port, &["read", "--table", "holding", "--address", "100"])["values"][0],
        0,
        "quality register: Good"
    );

    // A write from the HMI side lands in the device, answered after the device confirmed it.
    let r = modbus_client(mb_port, &["write", "--address", "2", "777"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        modbus_client(port, &["read", "--address", "10"])["values"][0],
        777
    );
    // A write to a point the server does not map as writable is refused.
    let r = modbus_client(mb_port, &["write", "--address", "0", "1", "2"]);
    assert_eq!(r["exception"], 2, "{r}");

    // The edge dies: reads of its points answer exception 0x0B; the quality register says why.
    edge.kill9();
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = modbus_client(mb_port, &["read", "--address", "0", "--count", "2"]);
        if r["exception"] == 11 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never 0x0B: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        modbus_client(mb_port, &["read", "--address", "100"])["values"][0],
        0x408F,
        "stale with last value"
    );
}

#[test]
fn modbus_rtu_over_a_serial_line_polls_and_writes() {
    // A serial line between the edge and the device: two linked pseudo-terminals (socat).
    assert!(
        std::path::Path::new("/usr/bin/socat").exists(),
        "this test needs socat: `bash tests/run` installs it"
    );
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("plant1"), Node::client("hmi", "[\"plant1/**\"]")],
    );
    let _hub = p.start_hub();
    let (a, b) = (p.path("ttyA"), p.path("ttyB"));
    let mut socat = std::process::Command::new("socat")
        .args([
            format!("pty,raw,echo=0,link={}", a.display()),
            format!("pty,raw,echo=0,link={}", b.display()),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("socat");
    let deadline = std::time::Instant::now() + T;
    while !(a.exists() && b.exists()) {
        assert!(std::time::Instant::now() < deadline, "socat made no ptys");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sim = std::process::Command::new(peers_python())
        .arg(peer_script("modbus_sim.py"))
        .args(["--serial", b.to_str().expect("utf8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("simulator");
    let toml = format!(
        "name = \"plant1\"\n[hub]\nurls = [\"wss://{}\"]\nfingerprint = \"{}\"\ncert = \"keys/plant1/node.crt\"\nkey = \"keys/plant1/node.key\"\n{FAST_HEARTBEAT}\n[[sources]]\nkind = \"modbus\"\nname = \"rtu1\"\ntransport = \"rtu\"\ndevice = \"{}\"\nbaud = 19200\nparity = \"none\"\nstop_bits = 1\ntimeout_ms = 500\npoll_ms = 300\n\n[[sources.points]]\nname = \"level\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n\n[[sources.points]]\nname = \"speed\"\ntable = \"holding\"\naddress = 10\ntype = \"u16\"\nwritable = true\n",
        p.hub_addr,
        p.hub_fp,
        a.display()
    );
    std::fs::write(p.path("plant1.toml"), toml).expect("write");
    p.write_client("hmi");
    let _edge = p.start_edge("plant1");
    let w = p.watch("hmi", "plant1/**");
    let v = w.expect_json(T, "the level over RTU", |v| {
        v["point"] == "plant1/rtu1/level" && v["quality"] == "Good"
    });
    assert!(
        (v["value"].as_f64().expect("float") - 123.456).abs() < 1e-3,
        "{v}"
    );
    let (code, out, err) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "plant1/rtu1/speed",
        "321",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    w.expect_json(T, "the written value read back over RTU", |v| {
        v["point"] == "plant1/rtu1/speed" && v["value"] == 321
    });
    let _ = sim.kill();
    let _ = sim.wait();
    w.expect_json(T, "the silent device", |v| {
        v["point"] == "plant1/rtu1/level" && v["quality"] == "BadCommunicationError"
    });
    let _ = socat.kill();
    let _ = socat.wait();
}
