//! Access and trust: pending keys, approval, tokens, rights, revocation, audit, restarts.

use crate::harness::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn audit_events(p: &Plant) -> Vec<serde_json::Value> {
    let (code, out, err) = p.run(&["hub", "audit", "--config", &p.cfg("hub")]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

fn has(
    events: &[serde_json::Value],
    event: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    events.iter().any(|e| e["event"] == event && pred(e))
}

#[test]
fn unknown_key_goes_pending_then_approval_admits_it_and_restart_keeps_it() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::client("hmi", "[]")]);
    let mut hub = p.start_hub();
    let fp = p.key("plant7");
    p.write_edge("plant7", 2, 10.0);
    p.write_client("hmi");
    let _edge = p.start_edge("plant7");
    let w = p.watch("hmi", "plant7/**");

    // The edge is refused and lands in the pending list with the name and role it asked for.
    let deadline = Instant::now() + T;
    let pending = loop {
        let (code, out, err) = p.run(&["hub", "keys", "pending", "--config", &p.cfg("hub")]);
        assert_eq!(code, 0, "{err}");
        if let Some(l) = out.lines().find(|l| l.contains(&fp)) {
            break serde_json::from_str::<serde_json::Value>(l).expect("json");
        }
        assert!(Instant::now() < deadline, "key never pending");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(pending["name"], "plant7");
    assert_eq!(pending["role"], "edge");
    assert!(pending["attempts"].as_u64().unwrap_or(0) >= 1);

    // Approval through the running hub's admin socket; the edge gets in at its next try.
    let (code, _, err) = p.run(&[
        "hub",
        "keys",
        "approve",
        &fp,
        "--role",
        "edge",
        "--name",
        "plant7",
        "--config",
        &p.cfg("hub"),
    ]);
    assert_eq!(code, 0, "{err}");
    w.expect_json(T, "values from the approved edge", |v| {
        v["point"] == "plant7/sim/sine1" && v["quality"] == "Good"
    });
    let (_, out, _) = p.run(&["hub", "keys", "pending", "--config", &p.cfg("hub")]);
    assert!(!out.contains(&fp), "no longer pending: {out}");

    // Restart: the approval is still there.
    hub.kill9();
    let addr = p.hub_addr.clone();
    p.write_hub(&addr, &[Node::client("hmi", "[]")]);
    let _hub = p.start_hub();
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "Good again after the hub restart", |b| {
        b.all("plant7/sim/", 4, "Good")
    });

    let ev = audit_events(&p);
    assert!(has(&ev, "connection.refused", |e| e["fingerprint"]
        == fp.as_str()
        && e["reason"].as_str().is_some_and(|r| r.contains("pending"))));
    assert!(has(&ev, "key.approved", |e| e["fingerprint"]
        == fp.as_str()
        && e["by"] == "admin-socket"));
    assert!(has(&ev, "connection.accepted", |e| e["fingerprint"]
        == fp.as_str()));
}

#[test]
fn an_enrollment_token_works_once_and_never_again() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::client("hmi", "[]")]);
    let _hub = p.start_hub();
    let token = p.enrollment_token("edge", "plant8");
    p.key("plant8");
    p.key("thief");
    p.write_client("hmi");
    for (name, ns) in [("plant8", "plant8"), ("thief", "plant8")] {
        let cfg = format!(
            "name = \"{name}\"\nnamespace = \"{ns}\"\n[hub]\nurls = [\"wss://{}\"]\nfingerprint = \"{}\"\ncert = \"keys/{name}/node.crt\"\nkey = \"keys/{name}/node.key\"\nenroll_token = \"{token}\"\nbackoff_max_ms = 300\n[[sources]]\nkind = \"simulator\"\nsignals = 2\nsetpoints = 0\nrate_hz = 5.0\n",
            p.hub_addr, p.hub_fp
        );
        std::fs::write(p.path(&format!("{name}.toml")), cfg).expect("write");
    }
    let _edge = p.start_edge("plant8");
    let w = p.watch("hmi", "plant8/**");
    w.expect_json(T, "values from the enrolled edge", |v| {
        v["quality"] == "Good"
    });
    let thief = p.start_edge("thief");
    thief.wait_stderr(T, "already used");
    let ev = audit_events(&p);
    assert!(has(&ev, "token.created", |e| e["name"] == "plant8"));
    assert!(has(&ev, "token.used", |e| e["name"] == "plant8"));
    assert!(has(&ev, "token.refused", |e| e["reason"]
        == "enrollment token already used"));
}

#[test]
fn an_edge_publishing_outside_its_namespace_is_refused() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let _hub = p.start_hub();
    let cfg = p.write_edge("edge1", 2, 5.0);
    let text = std::fs::read_to_string(&cfg).expect("read").replacen(
        "name = \"edge1\"\n",
        "name = \"edge1\"\nnamespace = \"edge2\"\n",
        1,
    );
    std::fs::write(&cfg, text).expect("write");
    let edge = p.start_edge("edge1");
    edge.wait_stderr(T, "outside this node's namespace");
    let ev = audit_events(&p);
    assert!(has(&ev, "publish.refused", |e| e["name"] == "edge1"));
    p.write_client("hmi");
    let (code, out, _) = p.run(&["client", "get", "--config", &p.cfg("hmi"), "edge2/**"]);
    assert_eq!(code, 0);
    assert!(out.trim().is_empty(), "nothing published: {out}");
}

#[test]
fn writes_are_checked_and_audited_and_revocation_ends_a_live_session_within_a_second() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::client("op", "[\"edge1/**\"]"),
            Node::client("viewer", "[]"),
        ],
    );
    let mut hub = p.start_hub();
    p.write_edge("edge1", 2, 5.0);
    p.write_client("op");
    p.write_client("viewer");
    let _edge = p.start_edge("edge1");
    let w = p.watch("viewer", "edge1/**");
    w.expect_json(T, "Good", |v| v["quality"] == "Good");

    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("op"),
        "edge1/sim/setpoint1",
        "7",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("viewer"),
        "edge1/sim/setpoint1",
        "8",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadUserAccessDenied"), "{out}");
    let ev = audit_events(&p);
    assert!(
        has(&ev, "write", |e| e["name"] == "op"
            && e["status"] == "Good"
            && e["new"] == 7
            && e["old"] == 0.0),
        "{ev:?}"
    );
    assert!(has(&ev, "write", |e| e["name"] == "viewer"
        && e["status"] == "BadUserAccessDenied"));

    // Revoke the watching client's key while it is connected.
    let viewer_fp = pointhub_link::identity::load(
        &p.path("keys/viewer/node.crt"),
        &p.path("keys/viewer/node.key"),
    )
    .expect("load")
    .fingerprint
    .to_string();
    let start = Instant::now();
    let (code, _, err) = p.run(&[
        "hub",
        "keys",
        "revoke",
        &viewer_fp,
        "--reason",
        "laptop lost",
        "--config",
        &p.cfg("hub"),
    ]);
    assert_eq!(code, 0, "{err}");
    w.wait_stderr(T, "disconnected");
    let took = start.elapsed();
    println!(
        "revocation -> live session ended in {} ms (including the CLI's own start)",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    w.wait_stderr(T, "was revoked");

    // After a restart the revocation still holds, and the audit log still has everything.
    hub.kill9();
    let addr = p.hub_addr.clone();
    p.write_hub(
        &addr,
        &[
            Node::edge("edge1"),
            Node::client("op", "[\"edge1/**\"]"),
            Node::client("viewer", "[]"),
        ],
    );
    let _hub = p.start_hub();
    let (code, _, err) = p.run(&[
        "client",
        "get",
        "--config",
        &p.cfg("viewer"),
        "--timeout",
        "2",
        "**",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("revoked"), "{err}");
    let ev = audit_events(&p);
    assert!(has(&ev, "key.revoked", |e| e["fingerprint"]
        == viewer_fp.as_str()
        && e["reason"] == "laptop lost"));
    assert!(has(&ev, "write", |e| e["name"] == "op"));
    assert!(has(&ev, "connection.refused", |e| e["reason"] == "revoked"));
}

#[test]
fn keys_can_be_managed_while_the_hub_is_stopped() {
    let p = Plant::new();
    p.write_hub("127.0.0.1:0", &[]);
    let fp = p.key("offline");
    let (code, _, err) = p.run(&[
        "hub",
        "keys",
        "approve",
        &fp,
        "--role",
        "client",
        "--name",
        "offline",
        "--read",
        "a/**",
        "--config",
        &p.cfg("hub"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = p.run(&["hub", "keys", "list", "--config", &p.cfg("hub")]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&fp) && out.contains("\"read\":[\"a/**\"]"),
        "{out}"
    );
    let (code, _, err) = p.run(&[
        "hub",
        "keys",
        "approve",
        &fp,
        "--role",
        "client",
        "--name",
        "a/b",
        "--config",
        &p.cfg("hub"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("one segment"), "{err}");
}

/// A CA and a hub certificate it signed for 127.0.0.1; returns the CA's PEM.
fn ca_signed_hub(p: &Plant) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pointhub test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
    std::fs::write(p.path("hub.crt"), format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(p.path("hub.key"), leaf_key.serialize_pem()).expect("write");
    ca.pem()
}

#[test]
fn nodes_verify_a_ca_issued_hub_certificate_by_ca_file_and_refuse_another_ca() {
    let mut p = Plant::new();
    let ca = ca_signed_hub(&p);
    p.write_hub_named(
        "hub1",
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::client("hmi", "[]"),
            Node::client("other", "[]"),
        ],
        "[tls]\ncert = \"hub.crt\"\nkey = \"hub.key\"\n",
    );
    let _hub = p.start_hub();
    std::fs::write(p.path("ca.pem"), ca).expect("write");
    let other = Plant::new();
    let other_ca = ca_signed_hub(&other);
    std::fs::write(p.path("other-ca.pem"), other_ca).expect("write");
    p.write_edge("edge1", 2, 5.0);
    let _edge = p.start_edge("edge1");
    for (name, ca_file) in [("hmi", "ca.pem"), ("other", "other-ca.pem")] {
        let cfg = p.write_client(name);
        let text = std::fs::read_to_string(&cfg).expect("read").replace(
            &format!("fingerprint = \"{}\"", p.hub_fp),
            &format!("ca = \"{ca_file}\""),
        );
        std::fs::write(&cfg, text).expect("write");
    }
    // The edge may not have sent its first values yet: ask again until it has.
    let deadline = Instant::now() + T;
    loop {
        let (code, out, err) = p.run(&["client", "get", "--config", &p.cfg("hmi"), "edge1/**"]);
        assert_eq!(code, 0, "verified by the CA file: {err}");
        if out.contains("\"quality\":\"Good\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no Good values: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, err) = p.run(&[
        "client",
        "get",
        "--config",
        &p.cfg("other"),
        "--timeout",
        "2",
        "edge1/**",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "a loud refusal: {err}"
    );
}
