//! Case 5: resync of 100,000 and 1,000,000 points, and hub memory per point.

use crate::*;

pub(crate) async fn resync(r: &mut Report, o: Opts) {
    r.add("");
    r.add("### 5. Resync and memory per point");
    r.add("");
    r.add("| points | first birth → client complete and Good (s) | reconnect → client complete and Good (s) | hub RSS growth per point (bytes) |");
    r.add("| --- | --- | --- | --- |");
    let sizes: &[u32] = if o.quick {
        &[10_000]
    } else {
        &[100_000, 1_000_000]
    };
    for &n in sizes {
        let h = pointhub_hub(1);
        let rss0 = rss_kib(h.proc.pid() as u32);
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = dial(&h.plant, "c0", Role::Client).await;
        c.session
            .tx
            .send(Msg::Subscribe(Subscribe {
                patterns: vec!["bench/**".into()],
                history: false,
            }))
            .await;
        let measure = |label: &'static str,
                       mut c: Link,
                       count: Arc<AtomicU64>,
                       target_good: u64| async move {
            // Counts updates that are Good for distinct ids until all are in.
            let mut good = std::collections::HashSet::new();
            while (good.len() as u64) < target_good {
                match tokio::time::timeout(Duration::from_secs(60), c.session.rx.recv()).await {
                    Ok(Some(Msg::Data(d))) => {
                        for u in d.updates {
                            if u.quality.is_good() {
                                good.insert(u.id);
                            } else {
                                good.remove(&u.id);
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    other => panic!(
                        "{label}: client stopped at {} ({:?}: {})",
                        good.len(),
                        other.map(|m| m.map(|m| m.kind())),
                        c.session.close_reason()
                    ),
                }
            }
            count.store(good.len() as u64, Ordering::Relaxed);
            c
        };
        let t0 = Instant::now();
        let pubr = dial(&h.plant, "bench", Role::Edge).await;
        let mut seq = 0;
        birth(&pubr, n, &mut seq).await;
        c = measure("first birth", c, count.clone(), n as u64).await;
        let first = t0.elapsed().as_secs_f64();
        let rss1 = rss_kib(h.proc.pid() as u32);
        let per = |rss: u64| (rss.saturating_sub(rss0) as f64 * 1024.0) / n as f64;
        // Reconnect: the old session drops, the edge dials again and sends its birth.
        pubr.session.closed.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t1 = Instant::now();
        let pubr2 = dial(&h.plant, "bench", Role::Edge).await;
        let mut seq2 = 0;
        birth(&pubr2, n, &mut seq2).await;
        let _c = measure("reconnect", c, count.clone(), n as u64).await;
        let again = t1.elapsed().as_secs_f64();
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let rss2 = rss_kib(h.proc.pid() as u32);
            tokio::time::sleep(Duration::from_secs(3)).await;
            eprintln!(
                "{n} points: RSS growth per point {:.0} B after the first birth, {:.0} after the reconnect, {:.0} 3 s later",
                per(rss1),
                per(rss2),
                per(rss_kib(h.proc.pid() as u32))
            );
        }
        stop.store(true, Ordering::Relaxed);
        let per_point = per(rss1);
        r.add(format!(
            "| {n} | {first:.2} | {again:.2} | {per_point:.0} |"
        ));
    }
}
