//! A set of global ids, a bit each.

/// A set of global ids: a bit each.
#[derive(Default)]
pub struct GidSet {
    pub(crate) words: Vec<u64>,
    pub(crate) len: usize,
}

impl GidSet {
    /// Adds `gid`; true if it was not there.
    pub fn insert(&mut self, gid: u32) -> bool {
        let (w, bit) = ((gid / 64) as usize, 1u64 << (gid % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.len += usize::from(new);
        new
    }

    pub fn remove(&mut self, gid: u32) {
        let (w, bit) = ((gid / 64) as usize, 1u64 << (gid % 64));
        if let Some(word) = self.words.get_mut(w) {
            if *word & bit != 0 {
                *word &= !bit;
                self.len -= 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.words.clear();
        self.len = 0;
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u32)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i as u32 * 64 + b)
        })
    }
}
