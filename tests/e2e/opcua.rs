//! The edge's OPC UA source against an independent UA server (Python asyncua as the device):
//! values of every type with their source times, the device's own StatusCodes unchanged, writes
//! back to the nodes, a restarted device, and a secure channel with a user and a certificate
//! trusted on first use.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const T: Duration = Duration::from_secs(30);

/// The device: an asyncua server on `port`, killed when dropped.
struct UaDevice {
    port: u16,
    secure: Option<PathBuf>,
    child: Option<Child>,
}

impl UaDevice {
    fn start(port: u16, secure: Option<&Path>) -> UaDevice {
        let mut d = UaDevice {
            port,
            secure: secure.map(Path::to_path_buf),
            child: None,
        };
        d.restart();
        d
    }

    fn restart(&mut self) {
        let mut cmd = Command::new(peers_python());
        cmd.arg(peer_script("opcua_device.py"))
            .arg(self.port.to_string());
        if let Some(dir) = &self.secure {
            cmd.arg("--secure").arg(dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the OPC UA device starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the OPC UA device did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for UaDevice {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `plant1` with one OPC UA source `ua` on `port`; `security` is the source's security lines.
fn write_ua_edge(p: &Plant, port: u16, security: &str) {
    let points = [
        ("bool", "Bool", "bool", false),
        ("i16", "I16", "int", true),
        ("i32", "I32", "int", true),
        ("i64", "I64", "int", false),
        ("u16", "U16", "uint", false),
        ("u32", "U32", "uint", false),
        ("u64", "U64", "uint", false),
        ("f32", "F32", "float", false),
        ("f64", "F64", "float", true),
        ("str", "Str", "string", true),
        ("counter", "Counter", "uint", false),
        ("broken", "Broken", "float", false),
        ("doubtful", "Doubtful", "float", false),
    ];
    let mut toml = format!(
        "name = \"plant1\"\n{}\n[[sources]]\nkind = \"opcua\"\nname = \"ua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\n{security}publishing_ms = 100\nsampling_ms = 50\n",
        p.hub_section("plant1", "")
    );
    for (name, node, ty, writable) in points {
        toml.push_str(&format!(
            "\n[[sources.points]]\nname = \"{name}\"\nnode = \"ns=2;s={node}\"\ntype = \"{ty}\"\nwritable = {writable}\n"
        ));
    }
    std::fs::write(p.path("plant1.toml"), toml).expect("write");
}

/// A hub with `plant1` and an HMI admitted, started.
fn plant() -> (Plant, Proc) {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("plant1"), Node::client("hmi", "[\"plant1/**\"]")],
    );
    let hub = p.start_hub();
    p.write_client("hmi");
    (p, hub)
}

/// Reads the HMI's records until `pred` holds for one; on a timeout the edge's log goes with
/// the failure.
fn until(
    w: &Proc,
    edge: &Proc,
    what: &str,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        let line = w
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .filter(|_| Instant::now() < deadline);
        let Some(line) = line else {
            panic!(
                "no record for {what} within {T:?}; edge log:\n{}",
                edge.stderr_text()
            );
        };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if pred(&v) {
                return v;
            }
        }
    }
}

fn is(v: &serde_json::Value, point: &str, quality: &str) -> bool {
    v["point"] == format!("plant1/ua/{point}").as_str() && v["quality"] == quality
}

#[test]
fn an_opcua_device_reaches_the_hmi_with_its_types_times_and_status_codes() {
    let (p, _hub) = plant();
    let port = free_port();
    let _device = UaDevice::start(port, None);
    write_ua_edge(&p, port, "security = \"none\"\n");
    let edge = p.start_edge("plant1");
    let w = p.watch("hmi", "plant1/**");
    let expected: [(&str, serde_json::Value); 10] = [
        ("bool", true.into()),
        ("i16", (-16).into()),
        ("i32", (-32).into()),
        ("i64", (-64).into()),
        ("u16", 16.into()),
        ("u32", 32.into()),
        ("u64", 64.into()),
        ("f32", 1.5.into()),
        ("f64", 2.25.into()),
        ("str", "hello".into()),
    ];
    let mut seen = std::collections::HashMap::new();
    let started = Instant::now();
    let deadline = started + T;
    while seen.len() < expected.len() + 3 {
        let l = w.next_line(T).unwrap_or_else(|| {
            panic!(
                "the HMI saw {:?} of the device's nodes; edge log:\n{}",
                seen.keys().collect::<Vec<_>>(),
                edge.stderr_text()
            )
        });
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        let Some(point) = v["point"]
            .as_str()
            .and_then(|n| n.strip_prefix("plant1/ua/"))
        else {
            continue;
        };
        let done = match point {
            "broken" => v["quality"] == "BadSensorFailure" && v["quality_code"] == 0x808C_0000u32,
            "doubtful" => v["quality"] == "UncertainSensorNotAccurate" && v["value"] == 7.5,
            "counter" => v["quality"] == "Good" && v["value"].as_u64().is_some_and(|n| n > 0),
            other => expected
                .iter()
                .any(|(n, want)| *n == other && v["quality"] == "Good" && v["value"] == *want),
        };
        if done {
            seen.insert(point.to_string(), v);
        }
        assert!(Instant::now() < deadline, "saw only {:?}", seen.keys());
    }
    println!(
        "OPC UA device → edge → hub → HMI: all 13 nodes in {} ms, each type, BadSensorFailure and UncertainSensorNotAccurate passed on unchanged",
        started.elapsed().as_millis()
    );
    // The counter carries the device's source time, not the edge's.
    let ts = seen["counter"]["source_ts"].as_str().expect("source time");
    let ts = humantime::parse_rfc3339(ts).expect("rfc3339");
    let age = SystemTime::now()
        .duration_since(ts)
        .unwrap_or(Duration::ZERO);
    assert!(age < Duration::from_secs(30), "source time {ts:?}");

    // Writes go back to the node in its own type; the device's subscription shows them.
    let write = |point: &str, value: &str| {
        p.run(&[
            "client",
            "write",
            "--config",
            &p.cfg("hmi"),
            &format!("plant1/ua/{point}"),
            value,
        ])
    };
    for (point, value, want) in [
        ("i32", "123", serde_json::json!(123)),
        ("f64", "-4.5", serde_json::json!(-4.5)),
        ("str", "\"bye\"", serde_json::json!("bye")),
    ] {
        let (code, out, err) = write(point, value);
        assert_eq!(code, 0, "{point}: {out}{err}");
        w.expect_json(T, "the written value back from the device", |v| {
            is(v, point, "Good") && v["value"] == want
        });
    }
    let (code, out, _) = write("i16", "70000");
    assert_eq!(code, 2, "70000 does not fit an Int16 node: {out}");
    assert!(out.contains("BadTypeMismatch"), "{out}");
    let (code, out, _) = write("counter", "1");
    assert_eq!(code, 2, "a point not configured writable: {out}");
    assert!(out.contains("BadNotWritable"), "{out}");
}

#[test]
fn a_restarted_opcua_device_turns_its_points_bad_and_they_come_back_by_themselves() {
    let (p, _hub) = plant();
    let port = free_port();
    let mut device = UaDevice::start(port, None);
    write_ua_edge(&p, port, "security = \"none\"\n");
    let edge = p.start_edge("plant1");
    let w = p.watch("hmi", "plant1/**");
    until(&w, &edge, "the counter", |v| is(v, "counter", "Good"));
    device.kill();
    let gone = Instant::now();
    until(&w, &edge, "the device gone", |v| {
        is(v, "counter", "BadCommunicationError")
    });
    println!(
        "OPC UA device killed: its points BadCommunicationError at the HMI in {} ms",
        gone.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(2));
    device.restart();
    let back = Instant::now();
    until(&w, &edge, "the device back", |v| is(v, "counter", "Good"));
    until(&w, &edge, "its status codes again", |v| {
        is(v, "broken", "BadSensorFailure")
    });
    println!(
        "OPC UA device restarted: the edge's subscription came back by itself, values in {} ms",
        back.elapsed().as_millis()
    );
    assert!(
        edge.stderr_text().contains("OPC UA session lost"),
        "the edge says it lost the device"
    );
}

#[test]
fn an_opcua_device_with_basic256sha256_and_a_user_is_read_and_its_certificate_trusted_on_first_use()
{
    let (p, _hub) = plant();
    let port = free_port();
    let _device = UaDevice::start(port, Some(&p.path("device-pki")));
    std::fs::write(p.path("ua.password"), "secret\n").expect("write");
    write_ua_edge(
        &p,
        port,
        "security = \"basic256sha256\"\nmode = \"sign-and-encrypt\"\nuser = \"edge\"\npassword_file = \"ua.password\"\n",
    );
    let edge = p.start_edge("plant1");
    let w = p.watch("hmi", "plant1/**");
    let started = Instant::now();
    w.expect_json(T, "the counter over a secure channel", |v| {
        is(v, "counter", "Good")
    });
    println!(
        "OPC UA over Basic256Sha256 SignAndEncrypt with a user: first value in {} ms (own certificate made on the first start)",
        started.elapsed().as_millis()
    );
    edge.wait_stderr(T, "trusted the OPC UA server's certificate on first use");
    let trusted: Vec<_> = std::fs::read_dir(p.path("opcua-pki/ua/trusted"))
        .expect("the trusted folder")
        .collect();
    assert_eq!(trusted.len(), 1, "the device's certificate is kept");

    // A wrong password: refused, and the points say the device cannot be read.
    drop(edge);
    std::fs::write(p.path("ua.password"), "wrong\n").expect("write");
    let edge = p.start_edge("plant1");
    edge.wait_stderr(T, "BadUserAccessDenied");
    w.expect_json(T, "the refused session", |v| {
        is(v, "counter", "BadCommunicationError")
    });
}
