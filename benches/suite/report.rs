//! The report: the tables of one run, printed and optionally written into docs/benchmarks.md.

use crate::*;

pub(crate) struct Report {
    pub(crate) lines: Vec<String>,
}

impl Report {
    pub(crate) fn add(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }
}

/// mosquitto and nats-server, started on loopback (none with `--pointhub-only`).
pub(crate) fn peers(o: Opts) -> (Option<Broker>, Option<Broker>) {
    if o.no_peers {
        (None, None)
    } else {
        (mosquitto(), nats())
    }
}
