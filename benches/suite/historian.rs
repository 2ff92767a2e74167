//! Case 7: the historian into a real PostgreSQL server: rows/s it sustains (the drain of a
//! backlog after a database outage), CPU per 1,000 rows of the historian and of the database,
//! and how long live rows wait while a long history backfill replays.

use crate::postgres::Postgres;
use crate::*;

/// CPU seconds of every `postgres` process on the machine (the test server's are the only ones).
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains("(postgres)"))
        .map(|s| cpu_of(&s))
        .sum()
}

fn one(db: &Postgres, sql: &str) -> f64 {
    db.query(sql)
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn rows(db: &Postgres) -> f64 {
    one(db, "SELECT count(*) FROM pointhub_samples")
}

/// Waits until a live row newer than `after` (µs since the epoch) is in: the live buffer, first
/// in first out, is then written up to there.
fn live_past(db: &Postgres, after: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let sql = format!(
        "SELECT count(*) FROM pointhub_samples WHERE NOT history AND hub_time > to_timestamp({} / 1e6) LIMIT 1",
        after
    );
    while Instant::now() < deadline {
        if db
            .try_query(&sql)
            .is_some_and(|r| r.first().and_then(|r| r.first()).is_some_and(|v| v != "0"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub(crate) async fn historian(r: &mut Report, o: Opts) {
    r.add("");
    r.add("### 7. Historian into PostgreSQL (edge → hub → `client historian` → PostgreSQL 15, same machine)");
    r.add("");
    let (signals, outage, cut) = if o.quick { (199, 2, 2) } else { (999, 20, 30) };
    let rate = (signals + 1) * 10;
    let db = Postgres::start();
    let mut h = pointhub_hub(1);
    let p = &mut h.plant;
    let path = crate::path::Path::to(&p.hub_addr);
    let direct = p.hub_addr.clone();
    p.hub_addr = format!("127.0.0.1:{}", path.port);
    let cfg = p.write_edge("bench", signals, 10.0);
    p.hub_addr = direct;
    let mut text = std::fs::read_to_string(&cfg).unwrap_or_default();
    text = text.replace("rate_hz = 10\n", "rate_hz = 10\ntick = true\n");
    std::fs::write(&cfg, text).expect("write");
    let hist_cfg = p.path("c0.toml");
    let mut text = std::fs::read_to_string(&hist_cfg).unwrap_or_default();
    text.push_str(&format!(
        "\n[historian]\ndatabase = \"{}\"\npoints = [\"bench/**\"]\n",
        db.url()
    ));
    std::fs::write(&hist_cfg, text).expect("write");
    let _edge = p.start_edge("bench");
    let hist = Proc::spawn(
        "historian",
        &[
            "client",
            "historian",
            "--config",
            hist_cfg.to_str().expect("utf8"),
        ],
    );
    let pid = hist.pid() as u32;
    if !live_past(&db, now_ns() / 1000, Duration::from_secs(60)) {
        r.add("(the historian wrote no rows within 60 s: case skipped)");
        return;
    }

    // Sustained at the offered rate.
    let (n0, c0, d0, t0) = (rows(&db), cpu_secs(pid), postgres_cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(o.secs.max(2.0))).await;
    let (n1, c1, d1, secs) = (
        rows(&db),
        cpu_secs(pid),
        postgres_cpu(),
        t0.elapsed().as_secs_f64(),
    );
    let k = ((n1 - n0) / 1000.0).max(1e-9);
    r.add("| phase | rows | rows/s | historian CPU ms per 1,000 rows | PostgreSQL CPU ms per 1,000 rows |");
    r.add("| --- | --- | --- | --- | --- |");
    r.add(format!(
        "| live at the offered {rate} updates/s | {:.0} | {} | {:.1} | {:.1} |",
        n1 - n0,
        fmt_rate((n1 - n0) / secs),
        (c1 - c0) * 1000.0 / k,
        (d1 - d0) * 1000.0 / k
    ));

    // The drain of a backlog: the database is down for `outage` s, then the historian writes
    // as fast as it can (and keeps taking live rows meanwhile).
    let before = rows(&db);
    db.down();
    tokio::time::sleep(Duration::from_secs(outage)).await;
    db.up();
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    let up_at = now_ns() / 1000;
    let d0 = postgres_cpu();
    let drained = live_past(&db, up_at + 500_000, Duration::from_secs(300));
    let secs = t0.elapsed().as_secs_f64();
    let (n1, c1, d1) = (rows(&db), cpu_secs(pid), postgres_cpu());
    let k = ((n1 - before) / 1000.0).max(1e-9);
    r.add(format!(
        "| drain after a {outage} s outage of the database{} | {:.0} | {} | {:.1} | {:.1} |",
        if drained {
            ""
        } else {
            " (not drained in 300 s)"
        },
        n1 - before,
        fmt_rate((n1 - before) / secs),
        (c1 - c0) * 1000.0 / k,
        (d1 - d0) * 1000.0 / k
    ));

    // A backfill: the edge's link is cut for `cut` s; its spool replays the outage as history
    // while live rows go on. How long do live rows wait for the database meanwhile?
    path.cut();
    tokio::time::sleep(Duration::from_secs(cut)).await;
    let h0 = one(&db, "SELECT count(*) FROM pointhub_samples WHERE history");
    path.restore();
    let back = now_ns() / 1000;
    let t0 = Instant::now();
    let expect = (cut * rate as u64) as f64 * 0.9;
    let deadline = Instant::now() + Duration::from_secs(300);
    while one(&db, "SELECT count(*) FROM pointhub_samples WHERE history") - h0 < expect
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replay = t0.elapsed().as_secs_f64();
    let history = one(&db, "SELECT count(*) FROM pointhub_samples WHERE history") - h0;
    // Every live row of the replay's time is in once one from after it is.
    live_past(&db, now_ns() / 1000 + 500_000, Duration::from_secs(60));
    let delay = db.query(&format!(
        "SELECT coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY d), 0), coalesce(percentile_disc(0.99) WITHIN GROUP (ORDER BY d), 0), coalesce(max(d), 0) \
         FROM (SELECT extract(epoch FROM recorded_at - hub_time) * 1000 AS d FROM pointhub_samples \
         WHERE NOT history AND hub_time > to_timestamp({back} / 1e6)) x"
    ));
    let cell = |i: usize| {
        delay
            .first()
            .and_then(|r| r.get(i))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    r.add("");
    r.add(format!(
        "Backfill: a {cut} s cut of the edge's link replayed {history:.0} history rows in {replay:.1} s ({}); live rows meanwhile waited p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms from the hub to the database's transaction (`recorded_at - hub_time` of the live rows from the link's return on; `recorded_at` is the writing transaction's start).",
        fmt_rate(history / replay.max(1e-9)),
        cell(0),
        cell(1),
        cell(2)
    ));
    r.add(format!(
        "Terms: edge simulator at {rate} updates/s (10 Hz × {} points), hub and historian in debug or release as built, PostgreSQL 15 with fsync off in a temporary cluster, batches of 5,000 rows, everything on this machine at once.",
        signals + 1
    ));
    drop(hist);
}
