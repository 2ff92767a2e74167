//! Which history a point still owes its subscribers.
//!
//! While a point's authority is away, its values of that stretch of device time reach the hub
//! later as history (a replay from the authority's buffer). A gap is such a stretch: from the
//! last live value before the loss to the first live value after it (the birth's), both
//! excluded, since both came live. History inside a gap is new; history outside any gap came
//! live already, and is a double. A replay goes in order of device time, so each gap remembers
//! how far it has been filled: a replay that starts over after a link was lost mid-way (and
//! sends part of it again) passes on only what it had not yet.
//!
//! A point keeps its latest gap and a few older ones: a link lost during a replay, or cuts on
//! two hops at overlapping times, leave more than one gap open at a time.

use pointhub_schemas::Timestamp;

/// Older gaps kept per point beyond the latest; past it the oldest is given up.
const MAX_OLDER: usize = 8;

/// The end of a gap whose authority has not come back yet.
const OPEN: Timestamp = Timestamp(u64::MAX);

/// One stretch of device time whose values may still come as history.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Gap {
    /// The last live value before the loss (excluded).
    from: Timestamp,
    /// The first live value after it (excluded); [`OPEN`] while the authority is still away.
    to: Timestamp,
    /// The latest device time passed on as history in this gap.
    filled: Timestamp,
}

impl Gap {
    fn open(from: Timestamp) -> Gap {
        Gap {
            from,
            to: OPEN,
            filled: from,
        }
    }

    /// Takes `ts` if it is new to this gap.
    fn take(&mut self, ts: Timestamp) -> bool {
        let inside = ts > self.from && ts < self.to;
        if inside && ts > self.filled {
            self.filled = ts;
            true
        } else {
            false
        }
    }

    /// Nothing can come in it any more.
    fn is_empty(&self) -> bool {
        self.to != OPEN && (self.to <= self.filled || self.to <= self.from)
    }
}

/// A point's gaps: none until its authority is first lost (until then it takes all history,
/// as before any loss nothing came live that history could double). One word in the point's
/// entry; the gaps themselves are boxed, as most points never lose their authority.
#[derive(Debug, Default)]
pub(crate) struct Gaps(Option<Box<List>>);

#[derive(Debug)]
struct List {
    latest: Gap,
    /// Boxed: one word while there is no older gap, which is almost always.
    #[expect(clippy::box_collection, reason = "one word, not three, while empty")]
    older: Option<Box<Vec<Gap>>>,
}

impl Gaps {
    /// A point just defined: it takes all history until its authority is lost.
    pub(crate) fn new() -> Gaps {
        Gaps(None)
    }

    /// A point whose authority is away, its last live value at `ts` (`NEVER` for a point
    /// restored from the store at a hub restart: all its history is new to this process).
    pub(crate) fn since(ts: Timestamp) -> Gaps {
        Gaps(Some(Box::new(List {
            latest: Gap::open(ts),
            older: None,
        })))
    }

    /// The authority was lost; its last live value was at `ts`.
    pub(crate) fn lost(&mut self, ts: Timestamp) {
        let Some(list) = self.0.as_mut() else {
            *self = Gaps::since(ts);
            return;
        };
        if list.latest.to == OPEN {
            return; // still away: the same gap
        }
        let previous = std::mem::replace(&mut list.latest, Gap::open(ts));
        if previous.is_empty() {
            return;
        }
        let older = list.older.get_or_insert_with(Default::default);
        older.retain(|g| !g.is_empty());
        if older.len() >= MAX_OLDER {
            older.remove(0);
        }
        older.push(previous);
    }

    /// A live value at `ts`: the first after a loss closes the open gap.
    pub(crate) fn live(&mut self, ts: Timestamp) {
        if let Some(list) = self.0.as_mut() {
            if list.latest.to == OPEN {
                list.latest.to = ts;
            }
        }
    }

    /// Whether history at `ts` is new (and, if so, it counts as passed on).
    pub(crate) fn take(&mut self, ts: Timestamp) -> bool {
        let Some(list) = self.0.as_mut() else {
            return true;
        };
        if list.latest.take(ts) {
            return true;
        }
        match list.older.as_mut() {
            Some(older) => {
                let taken = older.iter_mut().any(|g| g.take(ts));
                if older.iter().all(Gap::is_empty) {
                    list.older = None;
                }
                taken
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Timestamp {
        Timestamp(n)
    }

    #[test]
    fn history_passes_once_and_only_inside_a_gap() {
        let mut g = Gaps::since(t(10));
        // Live again at 20 (the birth): 11..=19 are owed, 10 and 20 came live.
        g.live(t(20));
        assert!(!g.take(t(10)) && !g.take(t(20)) && !g.take(t(25)));
        assert!(g.take(t(11)) && g.take(t(12)));
        assert!(!g.take(t(12)), "a double");
        // The link is lost mid-replay (at live 30); the replay starts over from 11.
        g.live(t(30));
        g.lost(t(30));
        g.live(t(40));
        assert!(
            !g.take(t(11)) && !g.take(t(12)),
            "sent before the second loss"
        );
        assert!(g.take(t(13)) && g.take(t(19)), "the rest of the first gap");
        assert!(g.take(t(31)) && g.take(t(39)), "the second gap");
        assert!(!g.take(t(35)), "behind what the second gap passed on");
    }

    #[test]
    fn a_new_point_takes_its_history_and_old_gaps_are_bounded() {
        let mut g = Gaps::new();
        g.live(t(100));
        assert!(g.take(t(1)) && g.take(t(99)), "never lost: all history");
        g.lost(t(100));
        g.live(t(110));
        assert!(!g.take(t(100)) && g.take(t(105)) && !g.take(t(110)));
        // Many losses with nothing replayed: the oldest gaps are given up, the latest kept.
        for i in 0..20u64 {
            g.lost(t(1000 + i * 10));
            g.live(t(1005 + i * 10));
        }
        assert!(!g.take(t(1001)), "the oldest gap was given up");
        assert!(g.take(t(1000 + 19 * 10 + 1)), "the latest is kept");
        assert!(g.take(t(1000 + 12 * 10 + 1)), "and the eight before it");
    }
}
