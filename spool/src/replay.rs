//! A replay of a buffer under way. What goes out is read on from a cursor and trimmed from the
//! buffer only once the next hop acknowledges it: a node killed in the middle of a replay finds
//! every batch it had sent but not had acknowledged still on disk, and replays it again (the
//! next hop drops what it already had).

use crate::{Buffer, BufferError, Key};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;

/// The state of one replay of a [`Buffer`] on one link.
#[derive(Debug, Default)]
pub struct Replay {
    /// The last entry read.
    cursor: Option<Key>,
    /// Batches sent and not acknowledged: their sequence number and the last entry they hold.
    sent: VecDeque<(u64, Key)>,
}

impl Replay {
    /// A replay from the start of the buffer.
    pub fn new() -> Replay {
        Replay::default()
    }

    /// The next `n` entries after the last read; empty once the replay has read everything.
    pub fn next<T: Serialize + DeserializeOwned>(
        &mut self,
        b: &Buffer<T>,
        n: usize,
    ) -> Result<Vec<(Key, T)>, BufferError> {
        let chunk = b.peek_after(self.cursor, n)?;
        if let Some((k, _)) = chunk.last() {
            self.cursor = Some(*k);
        }
        Ok(chunk)
    }

    /// The entries read through `last` went out as batch `seq`: trimmed once it is acknowledged.
    pub fn sent(&mut self, seq: u64, last: Key) {
        self.sent.push_back((seq, last));
    }

    /// The entries read through `last` need not go out (the next hop has them live): trimmed
    /// now if nothing before them waits for an acknowledgement, else with the batch before.
    pub fn skipped<T: Serialize + DeserializeOwned>(
        &mut self,
        b: &mut Buffer<T>,
        last: Key,
    ) -> Result<(), BufferError> {
        match self.sent.back_mut() {
            Some((_, k)) => {
                *k = last;
                Ok(())
            }
            None => b.remove_through(last),
        }
    }

    /// The next hop acknowledged everything through `seq`: what those batches held leaves the
    /// buffer.
    pub fn acked<T: Serialize + DeserializeOwned>(
        &mut self,
        b: &mut Buffer<T>,
        seq: u64,
    ) -> Result<(), BufferError> {
        let mut through = None;
        while let Some(&(s, k)) = self.sent.front() {
            if s > seq {
                break;
            }
            through = Some(k);
            self.sent.pop_front();
        }
        match through {
            Some(k) => b.remove_through(k),
            None => Ok(()),
        }
    }

    /// Batches sent and not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::up;

    fn times(b: &Buffer) -> Vec<u64> {
        b.peek(100)
            .expect("peek")
            .iter()
            .map(|(_, u)| u.source_ts.0)
            .collect()
    }

    #[test]
    fn what_went_out_stays_on_disk_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
            b.push(&(1..=6).map(up).collect::<Vec<_>>()).expect("push");
            let mut r = Replay::new();
            let first = r.next(&b, 2).expect("next");
            r.sent(10, first[1].0);
            let second = r.next(&b, 2).expect("next");
            assert_eq!(second[0].1.source_ts.0, 3, "read on from the cursor");
            r.sent(11, second[1].0);
            assert_eq!(b.len(), 6, "nothing trimmed before an acknowledgement");
            r.acked(&mut b, 10).expect("ack");
            assert_eq!(times(&b), vec![3, 4, 5, 6]);
            // Entries 5 and 6 need not go out: kept while 3 and 4 wait for their ack.
            let third = r.next(&b, 2).expect("next");
            r.skipped(&mut b, third[1].0).expect("skip");
            assert_eq!(b.len(), 4);
            assert!(r.next(&b, 2).expect("next").is_empty(), "read through");
            // The process dies here: batch 11 was never acknowledged.
        }
        let mut b: Buffer = Buffer::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            times(&b),
            vec![3, 4, 5, 6],
            "the unacknowledged batch is still there"
        );
        let mut r = Replay::new();
        let all = r.next(&b, 10).expect("next");
        r.sent(1, all[3].0);
        r.acked(&mut b, 1).expect("ack");
        assert!(b.is_empty());
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn with_nothing_in_flight_a_skipped_run_is_trimmed_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
        b.push(&(1..=3).map(up).collect::<Vec<_>>()).expect("push");
        let mut r = Replay::new();
        let c = r.next(&b, 2).expect("next");
        r.skipped(&mut b, c[1].0).expect("skip");
        assert_eq!(times(&b), vec![3]);
    }
}
