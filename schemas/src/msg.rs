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
    Hello(Hello),
    Welcome(Welcome),
    Birth(Birth),
    Data(Data),
    Death(Death),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Define(Define),
    SnapshotDone(SnapshotDone),
    Write(WriteRequest),
    WriteResult(WriteResult),
    Ping(Ping),
    Pong(Ping),
    Error(ErrorMsg),
    Rebirth(Rebirth),
    /// Hub → authority: every batch up to `seq` is applied (store-and-forward may forget them).
    Ack(Ack),
    /// A hub → its parent: the hubs at and below it, to refuse loops in a chain.
    Chain(Chain),
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
        }
    }
}

/// First frame of a node. `major` and `minor` stay the first fields forever.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub major: u16,
    pub minor: u16,
    pub role: Role,
    /// The name the node calls itself; the hub's name for it wins.
    pub name: String,
    /// Software and version, e.g. `pointhub 0.1.0`.
    pub software: String,
}

/// The hub's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub major: u16,
    pub minor: u16,
    /// The hub's name.
    pub hub: String,
    /// The name the hub knows this node by.
    pub node: String,
    /// Where this node may publish (edges): names equal to it or below it.
    pub namespace: String,
    pub heartbeat_ms: u32,
    pub timeout_ms: u32,
    pub software: String,
}

/// A point's definition. `id` is the sender's id for it within this session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointDef {
    pub id: u32,
    pub name: String,
    pub dtype: DataType,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub writable: bool,
}

/// A point's state: value, quality, and the device's timestamp. `hub_ts` is zero from an edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub id: u32,
    pub value: Value,
    pub quality: Quality,
    pub source_ts: Timestamp,
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
    pub seq: u64,
    /// 0 for the first part; a part 0 starts a new birth.
    pub part: u32,
    /// The birth is complete with this part.
    pub last: bool,
    pub points: Vec<PointDef>,
    pub states: Vec<Update>,
}

/// A batch of changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub seq: u64,
    pub updates: Vec<Update>,
}

/// An authority leaves on purpose (shutdown): its points turn stale at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Death {
    pub reason: String,
}

/// Subscribe to the points matching any of `patterns`: a snapshot comes first, then changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    pub patterns: Vec<String>,
    /// Also send history replays (historians); an HMI wants live values only.
    pub history: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unsubscribe {
    pub patterns: Vec<String>,
}

/// Hub → client: ids of this session for point names, sent before the first update of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Define {
    pub points: Vec<PointDef>,
}

/// Hub → client: every point matching the subscription has been sent once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDone {
    pub points: u32,
}

/// A write of one point, by name. `req` is chosen by the sender and comes back in the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub req: u64,
    pub point: String,
    pub value: Value,
}

/// The outcome of a write: `Good`, or the code of the refusal or failure with a sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteResult {
    pub req: u64,
    pub status: Quality,
    pub message: String,
}

/// Heartbeat; the `Pong` echoes `t` so the sender learns the round trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub t: Timestamp,
}

/// Why a session is refused or ended. The message says what to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
}

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
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// The sender's name first, then every hub below it.
    pub hubs: Vec<String>,
}
