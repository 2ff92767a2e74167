//! The operator console in real headless Chromium, and the JSON and REST APIs with independent
//! clients (Python websockets, jsonschema, prometheus-client).

use crate::harness::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn run_peer(script: &str, args: &[&str]) -> String {
    let out = Command::new(peers_python())
        .arg(peer_script(script))
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    print!("{text}");
    text
}

/// Adds a console admin with `pointhub hub users add` (and `extra` limits); returns the
/// password it prints once.
fn add_user(p: &Plant, name: &str, extra: &[&str]) -> String {
    let cfg = p.cfg("hub");
    let mut args = vec!["hub", "users", "add", name, "--role", "admin"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--config", &cfg]);
    let (code, out, err) = p.run(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password")
        .to_string()
}

#[test]
fn the_json_websocket_and_rest_apis_match_their_schemas() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::edge("edge1")]);
    let _hub = p.start_hub();
    p.write_edge("edge1", 4, 10.0);
    let _edge = p.start_edge("edge1");
    let token = p.api_token("script", &["--write", "edge1/sim/**"]);
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/json");
    let base = format!("https://{}", p.hub_addr);
    let text = run_peer(
        "api_check.py",
        &[
            "--base",
            &base,
            "--token",
            &token,
            "--schemas",
            schemas.to_str().expect("utf8"),
            "--write",
            "edge1/sim/setpoint1=3.5",
        ],
    );
    assert!(text.contains("all API checks passed"));
}

#[test]
fn the_console_shows_live_values_staleness_and_approves_a_key_in_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists(),
        "this test needs Debian's chromium and chromium-driver: `bash tests/run` installs them"
    );
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::edge("edge1")]);
    let hub = p.start_hub();
    p.write_edge("edge1", 4, 5.0);
    let edge = p.start_edge("edge1");
    // A second edge whose key the hub does not know yet: it lands in the pending list.
    let newbie_fp = p.key("newbie");
    p.write_edge("newbie", 2, 2.0);
    let _newbie = p.start_edge("newbie");
    hub.wait_stderr(T, &newbie_fp);
    let password = add_user(&p, "op", &[]);
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console.png");
    if let Some(dir) = shot.parent() {
        std::fs::create_dir_all(dir).expect("screenshot folder");
    }
    let base = format!("https://{}", p.hub_addr);
    let pid = edge.pid().to_string();
    run_peer(
        "console_check.py",
        &[
            "--base",
            &base,
            "--user",
            "op",
            "--password",
            &password,
            "--edge-pid",
            &pid,
            "--point",
            "edge1/sim/sine1",
            "--pending",
            &newbie_fp,
            "--pending-name",
            "newbie",
            "--screenshot",
            shot.to_str().expect("utf8"),
        ],
    );
    assert!(shot.exists());
    // The approval went through the audit log as the console user.
    let (_, out, _) = p.run(&[
        "hub",
        "audit",
        "--config",
        &p.cfg("hub"),
        "--event",
        "key.approved",
    ]);
    assert!(out.contains(&newbie_fp) && out.contains("user:op"), "{out}");
}

#[test]
fn a_user_limited_to_a_plant_sees_only_that_plant() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::edge("plant1"), Node::edge("plant2")]);
    let _hub = p.start_hub();
    p.write_edge("plant1", 2, 5.0);
    p.write_edge("plant2", 2, 5.0);
    let _e1 = p.start_edge("plant1");
    let _e2 = p.start_edge("plant2");
    let password = add_user(
        &p,
        "ops2",
        &["--namespace", "plant2/**", "--node", "plant2"],
    );
    // Wait until both edges have published.
    _hub.wait_stderr(T, "node=plant2");
    std::thread::sleep(Duration::from_millis(500));
    let base = format!("https://{}", p.hub_addr);
    run_peer(
        "restricted_check.py",
        &[
            "--base",
            &base,
            "--user",
            "ops2",
            "--password",
            &password,
            "--allowed",
            "plant2/",
            "--node",
            "plant2",
        ],
    );
}
