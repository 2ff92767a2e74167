//! Collecting a table operation's updates per subscriber and handing them over in runs.

use super::sets::SubSet;
use super::subscriber::{Entry, Subscriber};
use std::sync::Arc;

/// Updates handed to a subscriber's queue at a time while a batch is applied.
pub(crate) const FANOUT_RUN: usize = 512;

/// Updates collected per subscriber during one table operation, handed to each subscriber's
/// queue in runs of `run` (one queue lock and one wake-up per run) and at the end.
pub(crate) struct Fanout {
    pub(crate) out: Vec<(Arc<Subscriber>, Vec<Entry>)>,
    pub(crate) slot: rustc_hash::FxHashMap<u64, usize>,
    pub(crate) run: usize,
    /// The last subscriber set seen (by address) and its subscribers' places in `out`: points
    /// mostly share one set, so a batch looks each subscriber up once, not once per update.
    pub(crate) set_key: usize,
    pub(crate) set_slots: Vec<usize>,
}

impl Fanout {
    pub(crate) fn new(run: usize) -> Fanout {
        Fanout {
            out: Vec::new(),
            slot: Default::default(),
            run,
            set_key: 0,
            set_slots: Vec::new(),
        }
    }

    /// Where `s`'s updates are collected.
    pub(crate) fn slot(&mut self, s: &Arc<Subscriber>) -> usize {
        // One subscriber (the common case) needs no look-up.
        match self.out.first() {
            Some((first, _)) if self.out.len() == 1 && first.id == s.id => 0,
            _ => *self.slot.entry(s.id).or_insert_with(|| {
                self.out
                    .push((s.clone(), Vec::with_capacity(self.run.min(FANOUT_RUN))));
                self.out.len() - 1
            }),
        }
    }

    pub(crate) fn push(&mut self, i: usize, e: Entry) {
        let (sub, run) = &mut self.out[i];
        run.push(e);
        if run.len() >= self.run {
            sub.push_many(run.drain(..));
        }
    }

    pub(crate) fn add(&mut self, s: &Arc<Subscriber>, e: Entry) {
        let i = self.slot(s);
        self.push(i, e);
    }

    /// Adds `e` for every subscriber of `set`. The set stays alive (its point holds it) and
    /// unchanged (the table is locked) while this fan-out lasts, so its address names it.
    pub(crate) fn add_set(&mut self, set: &SubSet, e: Entry) {
        let key = set.key();
        if key != self.set_key {
            self.set_slots.clear();
            for s in set.iter() {
                let i = self.slot(s);
                self.set_slots.push(i);
            }
            self.set_key = key;
        }
        for k in 0..self.set_slots.len() {
            let i = self.set_slots[k];
            self.push(i, e.clone());
        }
    }

    pub(crate) fn finish(self) {
        for (s, entries) in self.out {
            if !entries.is_empty() {
                s.push_many(entries);
            }
        }
    }
}
