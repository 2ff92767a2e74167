//! The messages of a node session.
//!
//! A session opens with [`Hello`] from the node and [`Welcome`] from the hub. An authority (an
//! edge, or a hub below) then sends a [`Birth`] with all its points and their current state, and
//! [`Data`] batches of changes; a client sends [`Subscribe`] and gets [`Define`]s, a snapshot as
//! [`Data`], [`SnapshotDone`], then changes. Every batch carries a sequence number per session and
//! direction; a gap makes the receiver send [`Rebirth`]. Either side sends [`Ping`] each heartbeat
//! interval and answers with `Pong`; nothing heard for the timeout ends the session.
//!
//! Compatibility: [`Msg::Hello`] is variant 0 and starts with the protocol version forever, so any
//! peer can read the version of any other; new variants are only ever added at the end.

use crate::{DataType, Quality, Timestamp, Value};
use serde::{Deserialize, Serialize};

/// What a node is to the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Publishes points from devices; the authority for them.
    Edge,
    /// Subscribes, reads and writes.
    Client,
    /// A hub below this one in a chain.
    Hub,
}

impl Role {
    /// The role's name as configuration and logs write it: `edge`, `client` or `hub`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Client => "client",
            Role::Hub => "hub",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edge" => Ok(Role::Edge),
            "client" => Ok(Role::Client),
            "hub" => Ok(Role::Hub),
            other => Err(format!("unknown role {other:?}: use edge, client or hub")),
        }
    }
}

/// One message; one per WebSocket binary frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Node → hub, the first frame: protocol version, role, name and software.
    Hello(Hello),
    /// Hub → node, the answer to `Hello`: the node's name and namespace, and the heartbeat.
    Welcome(Welcome),
    /// Authority → hub: all its points with their current state, after the welcome or a rebirth.
    Birth(Birth),
    /// A batch of changes: authority → hub, or hub → client for subscribed points.
    Data(Data),
    /// Authority → hub: it leaves on purpose, and its points turn stale at once.
    Death(Death),
    /// Client → hub: follow the points matching more patterns; a snapshot of them comes first.
    Subscribe(Subscribe),
    /// Client → hub: stop following the points of some patterns.
    Unsubscribe(Unsubscribe),
    /// Hub → client: the session's ids for point names, before each point's first update.
    Define(Define),
    /// Hub → client: the snapshot of a subscribe (or rebirth) has been sent.
    SnapshotDone(SnapshotDone),
    /// Client → hub → authority: a write of one point's value.
    Write(WriteRequest),
    /// Authority → hub → client: the outcome of a `Write`, matched by its `req`.
    WriteResult(WriteResult),
    /// Heartbeat, from either side each heartbeat interval; answered with `Pong`.
    Ping(Ping),
    /// The answer to a `Ping`, echoing it unchanged.
    Pong(Ping),
    /// Either side: the session is refused or ended, with a code and what to do.
    Error(ErrorMsg),
    /// The receiver of batches saw a sequence gap: an authority answers with a full birth, the
    /// hub with a fresh snapshot.
    Rebirth(Rebirth),
    /// Hub → authority: every batch up to `seq` is applied (store-and-forward may forget them).
    Ack(Ack),
    /// A hub → its parent: the hubs at and below it, to refuse loops in a chain.
    Chain(Chain),
    /// Client → hub: take this session's points from a durable subscription, which the hub
    /// keeps on disk while the client is away; the client acknowledges with `Ack` as it stores.
    Durable(DurableSubscribe),
}

impl Msg {
    /// A short name of the message kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "hello",
            Msg::Welcome(_) => "welcome",
            Msg::Birth(_) => "birth",
            Msg::Data(_) => "data",
            Msg::Death(_) => "death",
            Msg::Subscribe(_) => "subscribe",
            Msg::Unsubscribe(_) => "unsubscribe",
            Msg::Define(_) => "define",
            Msg::SnapshotDone(_) => "snapshot-done",
            Msg::Write(_) => "write",
            Msg::WriteResult(_) => "write-result",
            Msg::Ping(_) => "ping",
            Msg::Pong(_) => "pong",
            Msg::Error(_) => "error",
            Msg::Rebirth(_) => "rebirth",
            Msg::Ack(_) => "ack",
            Msg::Chain(_) => "chain",
            Msg::Durable(_) => "durable",
        }
    }
}

/// First frame of a node. `major` and `minor` stay the first fields forever.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's protocol major version ([`crate::PROTOCOL_MAJOR`]); another major is refused.
    pub major: u16,
    /// The node's protocol minor version: additions a peer of the same major may ignore.
    pub minor: u16,
    /// What the node asks to be; refused unless its key was approved for this role.
    pub role: Role,
    /// The name the node calls itself; the hub's name for it wins.
    pub name: String,
    /// Software and version, e.g. `pointhub 0.1.0`.
    pub software: String,
}

/// The hub's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The hub's protocol major version.
    pub major: u16,
    /// The hub's protocol minor version.
    pub minor: u16,
    /// The hub's name.
    pub hub: String,
    /// The name the hub knows this node by.
    pub node: String,
    /// Where this node may publish (edges): names equal to it or below it.
    pub namespace: String,
    /// The hub's heartbeat interval, in milliseconds: it sends a `Ping` this often.
    pub heartbeat_ms: u32,
    /// Milliseconds without a frame from the node after which the hub ends the session.
    pub timeout_ms: u32,
    /// The hub's software and version, e.g. `pointhub 0.1.0`.
    pub software: String,
}

/// A point's definition. `id` is the sender's id for it within this session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointDef {
    /// The sender's id for the point in this session; updates refer to the point by it.
    pub id: u32,
    /// The point's full name, e.g. `plant1/line2/pump3/speed`.
    pub name: String,
    /// The data type of the point's values.
    pub dtype: DataType,
    /// The engineering unit (`bar`), if any.
    pub unit: Option<String>,
    /// A human description of the point, if any.
    pub description: Option<String>,
    /// Whether clients may write the point; the hub refuses writes otherwise (`BadNotWritable`).
    pub writable: bool,
}

/// A point's state: value, quality, and the device's timestamp. `hub_ts` is zero from an edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The point's id in the sender's numbering (from its birth or define).
    pub id: u32,
    /// The value; `Null` if the point never had one.
    pub value: Value,
    /// The value's quality (an OPC UA status code).
    pub quality: Quality,
    /// When the device or source produced the value, µs since the epoch; zero for never.
    pub source_ts: Timestamp,
    /// When the hub took the update in, µs since the epoch; zero from an edge.
    pub hub_ts: Timestamp,
    /// Bit flags, see [`Update::HISTORY`].
    pub flags: u8,
}

impl Update {
    /// The update is a replay of buffered history, not the live value.
    pub const HISTORY: u8 = 1;
}

/// An authority's full list of points with their current state, in one or more parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    /// The batch's sequence number: every part of one birth carries the same, and the next
    /// `Data` one more.
    pub seq: u64,
    /// 0 for the first part; a part 0 starts a new birth.
    pub part: u32,
    /// The birth is complete with this part.
    pub last: bool,
    /// The definitions of this part's points.
    pub points: Vec<PointDef>,
    /// The current states of this part's points.
    pub states: Vec<Update>,
}

/// A batch of changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Data {
    /// One more than the previous batch's (birth or data) in this session and direction; a
    /// gap makes the receiver send `Rebirth`.
    pub seq: u64,
    /// The changes, each for a point defined earlier in the session.
    pub updates: Vec<Update>,
}

/// An authority leaves on purpose (shutdown): its points turn stale at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Death {
    /// Why it leaves, for logs (e.g. `edge shutting down`).
    pub reason: String,
}

/// Subscribe to the points matching any of `patterns`: a snapshot comes first, then changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Patterns of point names (`plant1/**`); the hub also limits them to the client's grants.
    pub patterns: Vec<String>,
    /// Also send history replays, and every live value rather than the latest of each point
    /// (historians); an HMI wants the latest live values only.
    pub history: bool,
}

/// Stop following the points of `patterns`; points another pattern still matches stay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// Patterns to drop, by the exact text they were subscribed with; unknown ones are ignored.
    pub patterns: Vec<String>,
}

/// Hub → client: ids of this session for point names, sent before the first update of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Define {
    /// The definitions; each `id` is the hub's id for the point in this session.
    pub points: Vec<PointDef>,
}

/// Hub → client: every point matching the subscription has been sent once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDone {
    /// How many points the snapshot sent.
    pub points: u32,
}

/// A write of one point, by name. `req` is chosen by the sender and comes back in the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The request's id, chosen by the sender; the `WriteResult` carries it back.
    pub req: u64,
    /// The full name of the point to write.
    pub point: String,
    /// The value to write; the hub coerces it to the point's data type (`BadTypeMismatch` if
    /// it cannot).
    pub value: Value,
}

/// The outcome of a write: `Good`, or the code of the refusal or failure with a sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The `req` of the `WriteRequest` this answers.
    pub req: u64,
    /// `Good` if the write was done, else the OPC UA code of the refusal or failure.
    pub status: Quality,
    /// A sentence on what happened, for the writer's log or user.
    pub message: String,
}

/// Heartbeat; the `Pong` echoes `t` so the sender learns the round trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// The sender's clock when it sent the ping, µs since the epoch; the `Pong` returns it.
    pub t: Timestamp,
}

/// Why a session is refused or ended. The message says what to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// The kind of refusal or failure.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// The kind of an [`ErrorMsg`]: why a session was refused or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer speaks another major protocol version.
    ProtocolVersion,
    /// A frame that does not decode, or a message out of place.
    Malformed,
    /// The node may not do this.
    AccessDenied,
    /// A size or rate limit was exceeded.
    LimitExceeded,
    /// A point name or pattern is not valid.
    InvalidName,
    /// Another live authority already owns the point.
    Conflict,
    /// The receiver fell too far behind and is cut off; it may reconnect.
    SlowConsumer,
    /// The hub or node is shutting down.
    ShuttingDown,
    /// Something failed inside the peer.
    Internal,
}

/// The receiver lost track (a sequence gap): the authority sends a full birth again, the hub a
/// fresh snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rebirth {
    /// Why, for logs (e.g. `gap: expected 8 got 10`).
    pub reason: String,
}

/// Hub → authority: every batch up to `seq` is applied; sent at most every 100 ms. Client → hub
/// on a durable subscription: every batch up to `seq` is stored, and the hub may forget it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The sequence number of the last batch applied.
    pub seq: u64,
}

/// Client → hub, instead of `Subscribe`: attach this session to the client key's durable
/// subscription `name`, made with `patterns` the first time and given them anew when they
/// changed. The hub keeps on disk, bounded, every update the subscription covers that the client
/// has not acknowledged — while the client is away, and across a restart of the hub — and sends
/// it first, in the order the hub took it in, then what comes live. Updates keep their history
/// flag. The client sends `Ack` with a batch's `seq` once it has stored the batch; batches not
/// acknowledged when a session ends come again on the next one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DurableSubscribe {
    /// The subscription's name, chosen by the client: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Patterns of point names; the hub also limits them to the client's grants.
    pub patterns: Vec<String>,
}

impl DurableSubscribe {
    /// The longest name of a durable subscription.
    pub const MAX_NAME: usize = 64;

    /// Whether `name` may name a durable subscription: 1 to 64 of `A-Z a-z 0-9 . _ -`, not
    /// `.` or `..` (the hub makes a folder of it).
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= Self::MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && name != "."
            && name != ".."
    }
}

/// A hub → its parent: the names of the hubs at and below it, so the parent refuses a loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// The sender's name first, then every hub below it.
    pub hubs: Vec<String>,
}
