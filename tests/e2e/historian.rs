//! The historian against a real PostgreSQL server: every update exactly once through a cut of
//! the edge's link and an outage of the database, stale transitions recorded, and
//! `client history` reading back what the database holds.

use crate::harness::*;
use crate::postgres::Postgres;
use std::time::{Duration, Instant};

const TICK: &str = "edge1/sim/tick";
const T: Duration = Duration::from_secs(60);

/// The tick's good samples: a row at its source time. (A return to Good with the value
/// unchanged, after a stale transition, is a row too, recorded at the hub's time of the
/// transition: its source time is its hub time, and it is not a new sample.)
const SAMPLES: &str = "quality = 0 AND (hub_time IS NULL OR source_time <> hub_time)";

/// The good ticks in the table: (rows, distinct values, lowest, highest, rows that came as history).
fn ticks(db: &Postgres) -> Option<(u64, u64, u64, u64, u64)> {
    let rows = db.try_query(&format!(
        "SELECT count(*), count(DISTINCT value), coalesce(min(value), 0)::bigint, coalesce(max(value), 0)::bigint, count(*) FILTER (WHERE history) \
         FROM pointhub_history WHERE name = '{TICK}' AND {SAMPLES}"
    ))?;
    let r = rows.first()?;
    let n = |i: usize| r.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((n(0), n(1), n(2), n(3), n(4)))
}

/// The tick's stale transition is a row (a live one, not history).
fn assert_stale_recorded(db: &Postgres) {
    let stale: u64 = db.query(&format!(
        "SELECT count(*) FROM pointhub_history WHERE name = '{TICK}' AND quality <> 0 AND NOT history"
    ))[0][0]
        .parse()
        .expect("count");
    assert!(stale >= 1, "the tick's stale transition is a row");
}

/// Waits until the ticks reach `past` with no gap and no duplicate; returns the last reading.
pub(crate) fn caught_up(db: &Postgres, past: u64, within: Duration) -> (u64, u64, u64, u64, u64) {
    let deadline = Instant::now() + within;
    loop {
        let t = ticks(db).unwrap_or_default();
        let (rows, distinct, lo, hi, _) = t;
        if hi > past && rows == distinct && rows == hi - lo + 1 {
            return t;
        }
        if Instant::now() >= deadline {
            let missing = db
                .try_query(&format!(
                    "SELECT s FROM generate_series({lo}::bigint, {hi}::bigint) s WHERE s NOT IN \
                     (SELECT value::bigint FROM pointhub_history WHERE name = '{TICK}' AND {SAMPLES})"
                ))
                .unwrap_or_default();
            let doubled = db
                .try_query(&format!(
                    "SELECT value, source_time, hub_time, history FROM pointhub_history WHERE name = '{TICK}' AND {SAMPLES} \
                     AND value IN (SELECT value FROM pointhub_history WHERE name = '{TICK}' AND {SAMPLES} GROUP BY value HAVING count(*) > 1) \
                     ORDER BY value, source_time"
                ))
                .unwrap_or_default();
            panic!(
                "ticks not caught up past {past}: (rows, distinct, min, max, history) = {t:?}; missing {:?}; twice (value, source time, hub time, history): {doubled:?}",
                missing.iter().flatten().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes the client `historian` of `p` with a `[historian]` section into `db` for `edge1/**`;
/// `extra` goes into the section.
fn write_historian(p: &Plant, db: &Postgres, extra: &str) {
    let cfg = p.write_client("historian");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str(&format!(
        "\n[historian]\ndatabase = \"{}\"\npoints = [\"edge1/**\"]\n{extra}",
        db.url()
    ));
    std::fs::write(&cfg, text).expect("write");
}

/// A hub (on `listen`) with `edge1` and the historian admitted, started; `edge1` (a 10 Hz tick
/// among 99 signals) written to reach it through a cuttable path.
fn hub_and_edge_behind_a_path(listen: &str) -> (Plant, Proc, crate::path::Path) {
    let mut p = Plant::new();
    p.write_hub(
        listen,
        &[Node::edge("edge1"), Node::client("historian", "[]")],
    );
    let hub = p.start_hub();
    let proxy = crate::path::Path::to(&p.hub_addr);
    let direct = p.hub_addr.clone();
    p.hub_addr = format!("127.0.0.1:{}", proxy.port);
    crate::chain::write_tick_edge(&p);
    p.hub_addr = direct;
    (p, hub, proxy)
}

#[test]
fn every_update_lands_once_through_an_edge_cut_and_a_database_outage() {
    let db = Postgres::start();
    let (p, _hub, proxy) = hub_and_edge_behind_a_path("127.0.0.1:0");
    write_historian(&p, &db, "batch_rows = 2000\n");
    let _edge = p.start_edge("edge1");
    let hist = Proc::spawn(
        "historian",
        &["client", "historian", "--config", &p.cfg("historian")],
    );

    // Live rows arrive.
    let start = caught_up(&db, 10, T);
    println!("historian live: {start:?}");

    // The edge's link is cut for 6 s: the points go stale, the edge keeps the ticks and
    // replays them as history when it is back.
    proxy.cut();
    std::thread::sleep(Duration::from_secs(6));
    proxy.restore();
    let (_, _, _, hi, _) = caught_up(&db, start.3 + 60, T);
    assert_stale_recorded(&db);

    // The database is down for 6 s: the historian keeps the rows on disk and catches up.
    db.down();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    hist.wait_stderr(T, "rows wait in the buffer");
    db.up();
    let back = Instant::now();
    let t = caught_up(&db, hi + 60 + 50, T);
    println!(
        "historian: database down {} ms in all; from its return to every row in: {} ms; ticks (rows, distinct, min, max, history) = {t:?}",
        (back - down).as_millis(),
        back.elapsed().as_millis()
    );
    let (rows, _, _, _, history) = t;
    assert!(
        history >= 50,
        "the edge's outage came as history: {history}"
    );
    assert!(rows >= 150, "ticks over the whole run: {rows}");

    // Every one of the edge's points is in the points table, with its type.
    let points: u64 = db.query("SELECT count(*) FROM pointhub_points WHERE name LIKE 'edge1/%'")[0]
        [0]
    .parse()
    .expect("count");
    assert!(points >= 100, "every point of the edge: {points}");

    // `client history` returns what the table holds.
    let (code, out, err) = p.run(&[
        "client",
        "history",
        "--config",
        &p.cfg("historian"),
        "--since",
        "10min",
        TICK,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let good = lines.iter().filter(|v| v["quality"] == "Good").count() as u64;
    assert!(
        good >= rows,
        "client history printed {good} good ticks, the table held {rows}"
    );
    assert!(
        lines.iter().any(|v| v["history"] == true),
        "history rows are flagged"
    );
    let (code, csv, err) = p.run(&[
        "client",
        "history",
        "--config",
        &p.cfg("historian"),
        "--since",
        "10min",
        "--format",
        "csv",
        TICK,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        csv.starts_with("point,time,hub_time,value,quality,quality_code,history\n"),
        "{csv}"
    );
    assert!(csv.lines().count() as u64 > rows, "a header and every row");
}

#[test]
fn sixty_seconds_with_an_edge_cut_a_database_outage_and_a_killed_historian_lose_nothing() {
    // edge1 (1,000 updates/s, a 10 Hz tick among them) → path → hub → historian → PostgreSQL,
    // for about 60 s: the edge's link is cut for 30 s (5–35 s), the database is stopped for 20 s
    // (10–30 s), and the historian is killed with kill -9 at 15 s and started again at 20 s.
    // Afterwards every tick is in the table once, with no gap, the cut's ticks as history, and
    // the tick's stale transition is a row.
    let db = Postgres::start();
    let (p, hub, proxy) = hub_and_edge_behind_a_path("127.0.0.1:0");
    write_historian(&p, &db, "");
    let edge = p.start_edge("edge1");
    let args = ["client", "historian", "--config", &p.cfg("historian")];
    let mut hist = Proc::spawn("historian", &args);
    let start = caught_up(&db, 10, T);
    let t0 = Instant::now();
    let at = |s: u64| {
        let when = t0 + Duration::from_secs(s);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
    };
    at(5);
    proxy.cut();
    at(10);
    db.down();
    at(15);
    hist.kill9();
    at(20);
    let hist2 = Proc::spawn("historian", &args);
    at(30);
    db.up();
    let db_back = Instant::now();
    at(35);
    proxy.restore();
    let edge_back = Instant::now();
    // 35 s of ticks after the first reading, and more once the edge is back.
    // On a failure the three logs go with it.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        caught_up(&db, start.3 + 350 + 30, T)
    }));
    let t = caught.unwrap_or_else(|e| {
        eprintln!(
            "hub log:\n{}\nedge log:\n{}\nhistorian log:\n{}",
            hub.stderr_text(),
            edge.stderr_text(),
            hist2.stderr_text()
        );
        std::panic::resume_unwind(e)
    });
    let (rows, _, lo, hi, history) = t;
    println!(
        "60 s with an edge cut (30 s), a database outage (20 s) and a historian killed: ticks {lo}..={hi}, {rows} rows, each once, {history} of them history; every row in {} ms after the database returned, {} ms after the edge did",
        db_back.elapsed().as_millis(),
        edge_back.elapsed().as_millis()
    );
    assert!(
        history >= 270,
        "the 30 s cut came as history: {history} rows"
    );
    assert_stale_recorded(&db);
}

#[test]
fn a_historian_killed_for_20_s_while_its_hub_restarts_records_every_update_once() {
    // edge1 (1,000 updates/s, a 10 Hz tick among them) → hub (fixed port) → historian, on its
    // durable subscription. The historian is killed (kill -9); 5 s later the hub is stopped
    // (Ctrl-C) for 3 s, so the edge buffers; 20 s after the kill the historian starts again.
    let db = Postgres::start();
    let mut p = Plant::new();
    p.write_hub(
        &format!("127.0.0.1:{}", free_port()),
        &[Node::edge("edge1"), Node::client("historian", "[]")],
    );
    let mut hub = p.start_hub();
    crate::chain::write_tick_edge(&p);
    write_historian(&p, &db, "");
    let _edge = p.start_edge("edge1");
    let args = ["client", "historian", "--config", &p.cfg("historian")];
    let mut hist = Proc::spawn("historian", &args);
    let start = caught_up(&db, 10, T);
    hist.kill9();
    let away = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    hub.signal("INT");
    assert!(hub.child.wait().expect("the hub exits").success());
    std::thread::sleep(Duration::from_secs(3));
    let _hub = p.start_hub();
    std::thread::sleep(Duration::from_secs(20).saturating_sub(away.elapsed()));
    let _hist = Proc::spawn("historian", &args);
    let back = Instant::now();
    // Every tick from before the kill to 3 s after the historian's return: once each.
    let t = caught_up(&db, start.3 + 230, T);
    let (rows, _, _, _, history) = t;
    let samples: u64 = db.query("SELECT count(*) FROM pointhub_history")[0][0]
        .parse()
        .expect("count");
    println!(
        "historian killed for {} s across a hub restart: back and caught up in {} ms; ticks (rows, distinct, min, max, history) = {t:?}; {samples} samples of every point in all",
        back.duration_since(away).as_secs(),
        back.elapsed().as_millis()
    );
    assert!(
        history >= 20,
        "the edge's buffer of the hub's downtime came as history: {history}"
    );
    assert!(
        rows >= 240,
        "about 10 ticks a second for the whole run: {rows}"
    );
}

#[test]
fn a_historian_reaches_its_database_over_tls_with_a_password_file_and_refuses_an_unknown_ca() {
    // The server takes TCP over TLS only and asks for a password; the historian checks the
    // server's certificate against the database's CA and reads the password from a file.
    let (db, ca) = Postgres::start_tls("s3cret");
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("historian", "[]")],
    );
    let _hub = p.start_hub();
    crate::chain::write_tick_edge_of(&p, 1);
    std::fs::write(p.path("db-ca.pem"), ca).expect("write");
    std::fs::write(p.path("db-password"), "s3cret\n").expect("write");
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&rcgen::KeyPair::generate().expect("key"))
        .expect("other CA");
    std::fs::write(p.path("other-ca.pem"), other.pem()).expect("write");
    let cfg = p.write_client("historian");
    let base = std::fs::read_to_string(&cfg).expect("read");
    let section = |ca: &str| {
        format!(
            "{base}\n[historian]\ndatabase = \"{}\"\npoints = [\"edge1/**\"]\nca = [\"{ca}\"]\npassword_file = \"db-password\"\n",
            db.url()
        )
    };
    // An unknown CA: refused, and the message says why.
    std::fs::write(&cfg, section("other-ca.pem")).expect("write");
    let (code, _, err) = p.run(&["client", "history", "--config", &p.cfg("historian"), "**"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "an unknown CA is refused with its reason: {err}"
    );
    // Without TLS the server refuses (hostssl only): nothing goes over plain TCP.
    std::fs::write(
        &cfg,
        format!(
            "{base}\n[historian]\ndatabase = \"{}\"\npassword_file = \"db-password\"\n",
            db.url()
        ),
    )
    .expect("write");
    let (code, _, err) = p.run(&["client", "history", "--config", &p.cfg("historian"), "**"]);
    assert_ne!(code, 0, "plain TCP is refused by this server: {err}");
    // The right CA: rows arrive, over TLS.
    std::fs::write(&cfg, section("db-ca.pem")).expect("write");
    let _edge = p.start_edge("edge1");
    let _hist = Proc::spawn(
        "historian",
        &["client", "historian", "--config", &p.cfg("historian")],
    );
    let t = caught_up(&db, 10, T);
    let tls: Vec<Vec<String>> = db.query(
        "SELECT bool_and(s.ssl)::text, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'pointhub' AND a.client_addr IS NOT NULL",
    );
    println!("historian over TLS: ticks {t:?}; sessions (all TLS, count) {tls:?}");
    assert_eq!(
        tls[0][0], "true",
        "every TCP session of the historian is TLS: {tls:?}"
    );
    let (code, out, err) = p.run(&[
        "client",
        "history",
        "--config",
        &p.cfg("historian"),
        "--since",
        "10min",
        TICK,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().count() >= 10,
        "client history reads over TLS too: {out}"
    );
}

#[test]
fn a_bad_historian_section_is_refused_with_the_key_to_fix() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::client("historian", "[]")]);
    p.hub_fp = p.hub_fingerprint();
    p.hub_addr = "127.0.0.1:9".into();
    let cfg = p.write_client("historian");
    let base = std::fs::read_to_string(&cfg).expect("read");
    for (section, needle) in [
        ("database = \"\"\n", "historian.database"),
        (
            "database = \"postgresql://x@127.0.0.1/db\"\npoints = [\"a/b*\"]\n",
            "historian.points",
        ),
        (
            "database = \"postgresql://x@127.0.0.1/db\"\nbatch_rows = 0\n",
            "historian.batch_rows",
        ),
        (
            "database = \"postgresql://x@127.0.0.1/db\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        (
            "database = \"not a connection string=\"\n",
            "historian.database",
        ),
    ] {
        std::fs::write(&cfg, format!("{base}\n[historian]\n{section}")).expect("write");
        let (code, _, err) = p.run(&["client", "historian", "--config", &p.cfg("historian")]);
        assert_ne!(code, 0, "{section}");
        assert!(err.contains(needle), "{section}: {err}");
    }
}
