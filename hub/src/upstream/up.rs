//! The state of one live link to the parent, shared by the link loop and the forwarding.

use pointhub_link::Link;
use pointhub_schemas::{Quality, Timestamp};

/// One live link to the parent.
pub(super) struct Up {
    pub(super) link: Link,
    pub(super) seq: u64,
    pub(super) part: u32,
    pub(super) chain_sent: Vec<String>,
    /// The spool goes up once the birth (the snapshot after connecting) is complete.
    pub(super) replay_pending: bool,
    /// Until the birth is complete: the source time and quality of each point's first value
    /// sent live on this link (its birth value). A spooled value more recent, or as recent and
    /// of the same quality, already went up live.
    pub(super) first_live: rustc_hash::FxHashMap<u32, (Timestamp, Quality)>,
    /// The spool's replay under way, a batch at a time between live batches.
    pub(super) replay: Option<Replay>,
}

/// A replay of the spool under way on one link.
pub(super) struct Replay {
    /// Each point's first live value on this link (see [`Up::first_live`]).
    pub(super) first_live: rustc_hash::FxHashMap<u32, (Timestamp, Quality)>,
    /// Each point's latest spooled time sent: the same (point, time) again is a twin.
    pub(super) sent: rustc_hash::FxHashMap<u32, pointhub_schemas::Timestamp>,
    /// Spooled updates of points this hub no longer has.
    pub(super) gone: u64,
    /// Twins left out.
    pub(super) twins: u64,
}
