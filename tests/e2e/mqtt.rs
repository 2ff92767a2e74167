//! The edge's MQTT source against a real broker: mosquitto (Debian) with a TLS listener that
//! requires client certificates, and `mosquitto_pub` as the independent publisher. Values and
//! their source times reach a client through the hub; a payload that does not decode, and the
//! broker going away, show in the points' quality at once; after the broker's return the
//! source subscribes again.

use crate::harness::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A CA, a broker certificate for 127.0.0.1 and two client certificates it signed, as PEM files
/// in `p`'s folder: `ca.pem`, `broker.{crt,key}`, `edge-mqtt.{crt,key}`, `pub.{crt,key}`.
fn pki(p: &Plant) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "plant broker CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params.clone(), ca_key).expect("ca");
    std::fs::write(p.path("ca.pem"), ca.pem()).expect("write");
    // Another CA, which signed nothing the broker shows.
    let other =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
    std::fs::write(p.path("other-ca.pem"), other.pem()).expect("write");
    for (stem, names) in [
        (
            "broker",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
        ),
        ("edge-mqtt", vec!["edge1".to_string()]),
        ("pub", vec!["publisher".to_string()]),
    ] {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, stem);
        let cert = params.signed_by(&key, &ca).expect("signed");
        std::fs::write(p.path(&format!("{stem}.crt")), cert.pem()).expect("write");
        std::fs::write(p.path(&format!("{stem}.key")), key.serialize_pem()).expect("write");
    }
}

/// mosquitto on `port` with TLS only, client certificates required.
struct Mosquitto(Child);

impl Mosquitto {
    fn start(p: &Plant, port: u16) -> Mosquitto {
        let conf = p.path("mosquitto.conf");
        let f = |n: &str| p.path(n).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                f("ca.pem"),
                f("broker.crt"),
                f("broker.key")
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto; bash tests/run does it)");
        let deadline = Instant::now() + T;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto(child)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mosquitto_pub` with the publisher's certificate: one message, QoS 1, retained if asked.
fn publish(p: &Plant, port: u16, topic: &str, payload: &str, retain: bool) {
    let f = |n: &str| p.path(n).display().to_string();
    let port = port.to_string();
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ];
    if retain {
        args.push("-r");
    }
    let (ca, cert, key) = (f("ca.pem"), f("pub.crt"), f("pub.key"));
    args.extend(["--cafile", &ca, "--cert", &cert, "--key", &key]);
    let out = Command::new("mosquitto_pub")
        .args(&args)
        .output()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_mqtt_broker_over_tls_feeds_points_with_their_quality() {
    let mut p = Plant::new();
    pki(&p);
    let port = free_port();
    let mut broker = Mosquitto::start(&p, port);
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let _hub = p.start_hub();
    let cfg = p.write_edge("edge1", 1, 1.0);
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str(&format!(
        "\n[[sources]]\nkind = \"mqtt\"\nname = \"broker\"\n\
         [sources.broker]\nhost = \"127.0.0.1\"\nport = {port}\nca = [\"ca.pem\"]\ncert = \"edge-mqtt.crt\"\nkey = \"edge-mqtt.key\"\nkeep_alive_s = 1\n\
         [[sources.points]]\nname = \"tank1/level\"\ntopic = \"plant/tank1\"\ntype = \"float\"\njson = \"level\"\ntime = \"ts\"\nunit = \"m\"\n\
         [[sources.points]]\nname = \"tank1/pump\"\ntopic = \"plant/tank1/pump\"\ntype = \"bool\"\n\
         [[sources.points]]\nname = \"line/count\"\ntopic = \"plant/line/count\"\ntype = \"uint\"\n\
         [[sources]]\nkind = \"mqtt\"\nname = \"untrusted\"\n\
         [sources.broker]\nhost = \"127.0.0.1\"\nport = {port}\nca = [\"other-ca.pem\"]\ncert = \"edge-mqtt.crt\"\nkey = \"edge-mqtt.key\"\n\
         [[sources.points]]\nname = \"pump\"\ntopic = \"plant/tank1/pump\"\ntype = \"bool\"\n"
    ));
    std::fs::write(&cfg, text).expect("write");
    // Retained before the edge starts: the broker hands it over on subscribe.
    publish(&p, port, "plant/tank1/pump", "on", true);
    let _edge = p.start_edge("edge1");
    p.write_client("hmi");
    let w = p.watch("hmi", "edge1/**");
    // The retained pump state comes Good; the same broker checked against a CA that did not
    // sign its certificate is refused, and that source's point says so.
    let (mut pump, mut refused) = (None, false);
    let deadline = Instant::now() + T;
    while pump.is_none() || !refused {
        let l = w.next_line(T).expect("the hmi's records");
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["point"] == "edge1/broker/tank1/pump" && v["quality"] == "Good" {
            pump = Some(v.clone());
        }
        if v["point"] == "edge1/untrusted/pump" && v["quality"] == "BadCommunicationError" {
            refused = true;
        }
        assert!(
            Instant::now() < deadline,
            "pump {pump:?}, untrusted refused {refused}"
        );
    }
    let pump = pump.expect("seen");
    assert_eq!(pump["value"], true, "{pump}");

    // A JSON message with its own source time.
    publish(
        &p,
        port,
        "plant/tank1",
        r#"{"level": 3.25, "ts": "2026-12-07T06:00:00.250Z"}"#,
        true,
    );
    let level = w.expect_json(T, "the tank level", |v| {
        v["point"] == "edge1/broker/tank1/level" && v["quality"] == "Good"
    });
    assert_eq!(level["value"], 3.25, "{level}");
    assert!(
        level["source_ts"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-12-07T06:00:00.25")),
        "the payload's own time: {level}"
    );
    publish(&p, port, "plant/line/count", "41", false);
    w.expect_json(T, "the count", |v| {
        v["point"] == "edge1/broker/line/count" && v["value"] == 41
    });

    // Nonsense on a topic: that point only is BadDecodingError, its last value kept.
    publish(&p, port, "plant/line/count", "forty-two", false);
    let bad = w.expect_json(T, "a payload that does not decode", |v| {
        v["point"] == "edge1/broker/line/count" && v["quality"] != "Good"
    });
    assert_eq!(bad["quality"], "BadDecodingError", "{bad}");
    assert_eq!(bad["value"], 41, "the last value stays: {bad}");

    // The broker goes away: every point of the source turns BadCommunicationError.
    let gone = Instant::now();
    drop(broker);
    let lost = w.expect_json(T, "the broker's loss", |v| {
        v["point"] == "edge1/broker/tank1/pump" && v["quality"] == "BadCommunicationError"
    });
    let noticed = gone.elapsed();
    assert_eq!(lost["value"], true, "the last value stays: {lost}");
    // Back (a fresh broker, with no retained messages): the source subscribes again and the
    // next message is Good.
    broker = Mosquitto::start(&p, port);
    let back_at = Instant::now();
    let back = loop {
        publish(&p, port, "plant/tank1/pump", "off", false);
        if let Some(l) = w.next_line(Duration::from_millis(500)) {
            let v: serde_json::Value = serde_json::from_str(&l).expect("json");
            if v["point"] == "edge1/broker/tank1/pump" && v["quality"] == "Good" {
                break v;
            }
        }
        assert!(back_at.elapsed() < T, "no value after the broker's return");
    };
    println!(
        "MQTT source over TLS with client certificates: the broker's loss noticed in {} ms; a value Good again {} ms after its return",
        noticed.as_millis(),
        back_at.elapsed().as_millis()
    );
    assert_eq!(back["value"], false);
    drop(broker);
}

#[test]
fn an_mqtt_source_refuses_settings_that_cannot_work() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::edge("edge1")]);
    p.hub_fp = p.hub_fingerprint();
    p.hub_addr = "127.0.0.1:9".into();
    let cfg = p.write_edge("edge1", 1, 1.0);
    let base = std::fs::read_to_string(&cfg).expect("read");
    for (extra, needle) in [
        (
            "[sources.broker]\nhost = \"b\"\n[[sources.points]]\nname = \"a\"\ntopic = \"t\"\ntype = \"float\"\n",
            "TLS needs ca",
        ),
        (
            "[sources.broker]\nhost = \"b\"\ntls = false\n[[sources.points]]\nname = \"a\"\ntopic = \"t/#\"\ntype = \"float\"\n",
            "without + or #",
        ),
        (
            "[sources.broker]\nhost = \"b\"\ntls = false\n[[sources.points]]\nname = \"a\"\ntopic = \"t\"\ntype = \"decimal\"\n",
            "decimal",
        ),
        ("[sources.broker]\nhost = \"b\"\ntls = false\n", "no points"),
    ] {
        std::fs::write(
            &cfg,
            format!("{base}\n[[sources]]\nkind = \"mqtt\"\nname = \"m\"\n{extra}"),
        )
        .expect("write");
        let (code, _, err) = p.run(&["edge", "--config", cfg.to_str().expect("utf8")]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
    }
}

/// `mosquitto_sub -v` on `topics` with the publisher's certificate: each line `topic payload`.
struct Sub {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Sub {
    fn start(p: &Plant, port: u16, topics: &[&str]) -> Sub {
        use std::io::BufRead;
        let f = |n: &str| p.path(n).display().to_string();
        let port = port.to_string();
        let (ca, cert, key) = (f("ca.pem"), f("pub.crt"), f("pub.key"));
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-v",
            "--cafile",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        for t in topics {
            args.extend(["-t", t]);
        }
        let mut child = Command::new("mosquitto_sub")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines }
    }

    /// The next message on `topic` whose payload `ok` accepts; its payload.
    fn expect(&self, what: &str, topic: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(l) = self.lines.recv_timeout(left) else {
                panic!("mosquitto_sub: no {what} on {topic} within {T:?}");
            };
            if let Some((t, payload)) = l.split_once(' ') {
                if t == topic && ok(payload) {
                    return payload.to_string();
                }
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(payload: &str) -> serde_json::Value {
    serde_json::from_str(payload).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_client_publishes_its_mirror_to_mqtt_with_quality_and_takes_writes() {
    let mut p = Plant::new();
    pki(&p);
    let port = free_port();
    let _broker = Mosquitto::start(&p, port);
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::client("bridge", "[\"edge1/**\"]"),
        ],
    );
    let _hub = p.start_hub();
    p.write_edge("edge1", 4, 2.0);
    let mut edge = p.start_edge("edge1");
    let cfg = p.write_client("bridge");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str(&format!(
        "\n[mqtt]\npoints = [\"edge1/**\"]\nwrite_prefix = \"pointhub-set/\"\n\
         [mqtt.broker]\nhost = \"127.0.0.1\"\nport = {port}\nca = [\"ca.pem\"]\ncert = \"edge-mqtt.crt\"\nkey = \"edge-mqtt.key\"\nkeep_alive_s = 1\n"
    ));
    std::fs::write(&cfg, text).expect("write");
    let sub = Sub::start(&p, port, &["pointhub/#", "pointhub-status/#"]);
    let mut bridge = Proc::spawn("bridge", &["client", "mqtt", "--config", &p.cfg("bridge")]);
    sub.expect("presence", "pointhub-status/bridge", |m| m == "online");
    let sine = sub.expect("a live value", "pointhub/edge1/sim/sine1", |m| {
        json(m)["quality"] == "Good"
    });
    assert!(json(&sine)["value"].is_number(), "{sine}");

    // A write from MQTT reaches the edge's setpoint through the hub, and its outcome is published.
    publish(&p, port, "pointhub-set/edge1/sim/setpoint1", "42.5", false);
    let (mut result, mut written) = (None, false);
    let deadline = Instant::now() + T;
    while result.is_none() || !written {
        let l = sub
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the write: result {result:?}, value seen {written}"));
        let Some((t, m)) = l.split_once(' ') else {
            continue;
        };
        if t == "pointhub/edge1/sim/setpoint1/write-result" {
            result = Some(json(m));
        }
        if t == "pointhub/edge1/sim/setpoint1" && json(m)["value"] == 42.5 {
            assert_eq!(json(m)["quality"], "Good", "{m}");
            written = true;
        }
    }
    let result = result.expect("seen");
    assert_eq!(result["status"], "Good", "{result}");
    // A point the bridge's key may not write: refused, and said so.
    publish(&p, port, "pointhub-set/edge1/sim/sine1", "1", false);
    let refused = sub.expect(
        "a refused write",
        "pointhub/edge1/sim/sine1/write-result",
        |_| true,
    );
    assert_ne!(json(&refused)["status"], "Good", "{refused}");

    // The edge dies: the broker's subscribers see its points stale at once.
    let killed = Instant::now();
    edge.kill9();
    sub.expect("the stale value", "pointhub/edge1/sim/sine1", |m| {
        json(m)["quality"] == "UncertainNoCommunicationLastUsableValue"
    });
    let stale_in = killed.elapsed();
    // The bridge dies: the broker publishes its will.
    let killed = Instant::now();
    bridge.kill9();
    sub.expect("the will", "pointhub-status/bridge", |m| m == "offline");
    println!(
        "MQTT publisher: an edge's kill -9 seen stale on the broker in {} ms; the bridge's kill -9 announced by its will in {} ms",
        stale_in.as_millis(),
        killed.elapsed().as_millis()
    );
}

/// The independent Sparkplug host (`tests/peers/sparkplug_host.py`: paho-mqtt and the payload
/// module of the PyPI package pysparkplug): its decoded messages as JSON, commands on stdin.
struct Host {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Host {
    fn start(p: &Plant, port: u16, group: &str) -> Host {
        use std::io::BufRead;
        let f = |n: &str| p.path(n).display().to_string();
        let mut child = Command::new(peers_python())
            .arg(peer_script("sparkplug_host.py"))
            .args(["--port", &port.to_string(), "--group", group])
            .args([
                "--ca",
                &f("ca.pem"),
                "--cert",
                &f("pub.crt"),
                "--key",
                &f("pub.key"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the Sparkplug host runs");
        let stdin = child.stdin.take().expect("stdin");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if let Ok(v) = serde_json::from_str(&l) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let h = Host {
            child,
            stdin,
            lines,
        };
        h.expect("its connection", |v| v["type"] == "CONNECTED");
        h
    }

    fn expect(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("Sparkplug host: no {what} within {T:?}"));
            if ok(&v) {
                return v;
            }
        }
    }

    fn send(&mut self, command: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{command}").expect("host stdin");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric<'a>(msg: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    msg["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

#[test]
fn a_client_is_a_sparkplug_edge_node_to_an_independent_host() {
    let mut p = Plant::new();
    pki(&p);
    let port = free_port();
    let _broker = Mosquitto::start(&p, port);
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::client("scada", "[\"edge1/sim/setpoint1\"]"),
        ],
    );
    let _hub = p.start_hub();
    p.write_edge("edge1", 4, 2.0);
    let mut edge = p.start_edge("edge1");
    let cfg = p.write_client("scada");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str(&format!(
        "\n[sparkplug]\ngroup_id = \"plant\"\nedge_node_id = \"pointhub1\"\npoints = [\"edge1/**\"]\nwrites = true\n\
         [sparkplug.broker]\nhost = \"127.0.0.1\"\nport = {port}\nca = [\"ca.pem\"]\ncert = \"edge-mqtt.crt\"\nkey = \"edge-mqtt.key\"\nkeep_alive_s = 1\n"
    ));
    std::fs::write(&cfg, text).expect("write");
    let mut host = Host::start(&p, port, "plant");
    let mut node = Proc::spawn(
        "scada",
        &["client", "sparkplug", "--config", &p.cfg("scada")],
    );

    let nbirth = host.expect("NBIRTH", |v| v["type"] == "NBIRTH");
    assert_eq!(nbirth["seq"], 0, "{nbirth}");
    let bd_seq = metric(&nbirth, "bdSeq").expect("bdSeq")["value"].clone();
    assert!(
        metric(&nbirth, "Node Control/Rebirth").is_some(),
        "{nbirth}"
    );
    let dbirth = host.expect("DBIRTH", |v| {
        v["type"] == "DBIRTH" && v["device"] == "edge1"
    });
    let sine = metric(&dbirth, "sim/sine1").expect("sine1 born");
    assert_eq!(sine["datatype"], 10, "a float point is a Double: {sine}");
    assert_eq!(sine["quality"], 192, "{sine}");
    assert_eq!(sine["quality_code"], 0, "{sine}");
    let onoff = metric(&dbirth, "sim/onoff1").expect("onoff1 born");
    assert_eq!(onoff["datatype"], 11, "a bool point is a Boolean: {onoff}");
    let seq = dbirth["seq"].as_u64().expect("seq");
    let data = host.expect("DDATA", |v| v["type"] == "DDATA" && v["device"] == "edge1");
    assert!(
        data["seq"].as_u64().expect("seq") > seq,
        "seq goes up: {data}"
    );

    // A DCMD from the host writes the setpoint through the hub; the new value comes as DDATA.
    host.send("DCMD pointhub1 edge1 sim/setpoint1 42.5");
    host.expect("the written setpoint", |v| {
        v["type"] == "DDATA" && metric(v, "sim/setpoint1").is_some_and(|m| m["value"] == 42.5)
    });
    // A rebirth request: NBIRTH (seq 0) and the DBIRTH again.
    host.send("REBIRTH pointhub1");
    let again = host.expect("NBIRTH again", |v| v["type"] == "NBIRTH");
    assert_eq!(again["seq"], 0);
    host.expect("DBIRTH again", |v| v["type"] == "DBIRTH");

    // The edge dies: its metrics go out stale (500), with the exact OPC UA code.
    let killed = Instant::now();
    edge.kill9();
    let stale = host.expect("stale metrics", |v| {
        v["type"] == "DDATA" && metric(v, "sim/sine1").is_some_and(|m| m["quality"] == 500)
    });
    let stale_in = killed.elapsed();
    assert_eq!(
        metric(&stale, "sim/sine1").expect("sine1")["quality_code"],
        0x408F_0000u32,
        "{stale}"
    );
    // The node dies: the broker sends its will, NDEATH, with the NBIRTH's bdSeq.
    let killed = Instant::now();
    node.kill9();
    let death = host.expect("NDEATH", |v| v["type"] == "NDEATH");
    assert_eq!(
        metric(&death, "bdSeq").expect("bdSeq")["value"],
        bd_seq,
        "{death}"
    );
    println!(
        "Sparkplug edge node: an edge's kill -9 reached the host as quality 500 in {} ms; the node's kill -9 as NDEATH in {} ms",
        stale_in.as_millis(),
        killed.elapsed().as_millis()
    );
}
