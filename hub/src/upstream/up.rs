//! The state of one live link to the parent, shared by the link loop and the forwarding.

use pointhub_link::Link;

/// One live link to the parent.
pub(super) struct Up {
    pub(super) link: Link,
    pub(super) seq: u64,
    pub(super) part: u32,
    pub(super) chain_sent: Vec<String>,
    /// The spool goes up once the birth (the snapshot after connecting) is complete.
    pub(super) replay_pending: bool,
    /// Until the spool has gone up: the source time of each point's first value sent live on
    /// this link (its birth value). A spooled value that recent already went up live.
    pub(super) first_live: rustc_hash::FxHashMap<u32, pointhub_schemas::Timestamp>,
}
