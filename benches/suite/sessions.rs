//! Case 6: idle node sessions: hub memory per session and the time to admit them.

use crate::*;

pub(crate) async fn sessions(r: &mut Report, o: Opts) {
    r.add("");
    r.add("### 6. Idle node sessions");
    r.add("");
    r.add("| sessions | time to admit all (s) | hub RSS per session (KiB) |");
    r.add("| --- | --- | --- |");
    let n = std::env::args()
        .skip_while(|a| a != "--sessions")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(if o.quick { 200 } else { 10_000 });
    let h = pointhub_hub(1);
    let rss0 = rss_kib(h.proc.pid() as u32);
    let cfg = link_cfg(&h.plant, "c0", Role::Client);
    let t0 = Instant::now();
    let mut links = Vec::with_capacity(n);
    let token = CancellationToken::new();
    let mut futs = Vec::new();
    for _ in 0..n {
        let cfg = cfg.clone();
        let token = token.clone();
        futs.push(tokio::spawn(async move {
            for _ in 0..5 {
                if let Ok(l) = link::dial(&cfg, &cfg.hubs[0], &token).await {
                    return Some(l);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None
        }));
        if futs.len() >= 64 {
            for f in futs.drain(..) {
                if let Ok(Some(l)) = f.await {
                    links.push(l);
                }
            }
        }
    }
    for f in futs {
        if let Ok(Some(l)) = f.await {
            links.push(l);
        }
    }
    let took = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(h.proc.pid() as u32);
    let per = rss1.saturating_sub(rss0) as f64 / links.len().max(1) as f64;
    r.add(format!("| {} of {n} | {took:.1} | {per:.1} |", links.len()));
    token.cancel();
}
