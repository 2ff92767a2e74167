//! Shared subscriber sets: points with the same subscribers hold one list.

use super::subscriber::Subscriber;
use std::sync::Arc;

/// The subscribers of one point, shared: points with the same subscribers hold the same list,
/// so a million points subscribed by the same clients cost one (thin, 8-byte) pointer each.
#[derive(Clone, Default)]
pub(crate) struct SubSet(pub(crate) Option<Arc<Box<[Arc<Subscriber>]>>>);

impl SubSet {
    pub(crate) fn of(list: Vec<Arc<Subscriber>>) -> SubSet {
        SubSet((!list.is_empty()).then(|| Arc::new(list.into_boxed_slice())))
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Arc<Subscriber>> {
        self.0.as_deref().map(|l| &l[..]).unwrap_or(&[]).iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn key(&self) -> usize {
        self.0
            .as_ref()
            .map(|a| Arc::as_ptr(a) as usize)
            .unwrap_or(0)
    }
}

/// Set changes made during one table operation, remembered so that every point going from
/// the same set to the same new set shares the result.
#[derive(Default)]
pub(crate) struct SetChanges {
    /// Old set (by address; the old set is held so the address stays its own) → new set.
    pub(crate) done: rustc_hash::FxHashMap<usize, (SubSet, SubSet)>,
}

impl SetChanges {
    pub(crate) fn with(&mut self, old: &SubSet, sub: &Arc<Subscriber>) -> SubSet {
        let (_, new) = self.done.entry(old.key()).or_insert_with(|| {
            let mut v: Vec<Arc<Subscriber>> = old.iter().cloned().collect();
            if !v.iter().any(|s| s.id == sub.id) {
                v.push(sub.clone());
            }
            (old.clone(), SubSet::of(v))
        });
        new.clone()
    }

    pub(crate) fn without(&mut self, old: &SubSet, id: u64) -> SubSet {
        let (_, new) = self.done.entry(old.key()).or_insert_with(|| {
            let v: Vec<Arc<Subscriber>> = old.iter().filter(|s| s.id != id).cloned().collect();
            (old.clone(), SubSet::of(v))
        });
        new.clone()
    }
}
