//! The binary codec: postcard, one [`Msg`] per frame, bounded by [`Limits`].
//!
//! Decoding never panics and never allocates more than the frame it reads: the frame size is
//! checked before the parse, and counts, names and strings are checked after it.

use crate::name::{validate_name, MAX_NAME_LEN};
use crate::{Msg, Value, PROTOCOL_MAJOR};

/// Size limits every decoder applies. Exceeding one is an error, not a truncation.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest frame, in bytes.
    pub max_frame: usize,
    /// Most points or updates in one birth part, data batch or define.
    pub max_batch: usize,
    /// Longest point name, in bytes.
    pub max_name_len: usize,
    /// Longest string value, unit, description or message, in bytes.
    pub max_string_len: usize,
    /// Most patterns in one subscribe.
    pub max_patterns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 4 << 20,
            max_batch: 65_536,
            max_name_len: MAX_NAME_LEN,
            max_string_len: 4096,
            max_patterns: 256,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is longer than [`Limits::max_frame`]; checked before it is parsed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The largest frame allowed, in bytes.
        max: usize,
    },
    /// The bytes do not parse as a [`Msg`]; carries postcard's error.
    #[error("frame does not decode as a pointhub message: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes are left over after one whole message.
    #[error("frame has {extra} bytes after the message")]
    Trailing {
        /// Bytes left over after the message.
        extra: usize,
    },
    /// A birth, data batch, define, subscribe or chain holds more items than its limit allows.
    #[error("{what}: {count} items exceed the limit of {max}")]
    TooMany {
        /// Which list: `birth points`, `data updates`, `patterns`, ….
        what: &'static str,
        /// Items the frame holds.
        count: usize,
        /// The limit that applies.
        max: usize,
    },
    /// A name, string value, unit, description, pattern or message is longer than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    StringTooLong {
        /// Which string: `node name`, `unit`, `string value`, ….
        what: &'static str,
        /// Its length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A point name in a birth or define is not a valid name.
    #[error("invalid point name: {0}")]
    Name(#[from] crate::NameError),
    /// An update's source or hub time lies past `Timestamp::MAX` (the end of the year 9999).
    #[error("{what} {micros} µs after 1970 lies past the year 9999: check the clock of the device or node that made it")]
    Timestamp {
        /// Which timestamp.
        what: &'static str,
        /// Its value, µs since the epoch.
        micros: u64,
    },
    /// The frame is a `Hello` of another major protocol version than [`PROTOCOL_MAJOR`].
    #[error("peer speaks protocol {major}.x; this node speaks {ours}.x: upgrade the older side")]
    Version {
        /// The peer's protocol major version.
        major: u16,
        /// This side's protocol major version.
        ours: u16,
    },
}

/// Encodes one message into a frame.
pub fn encode(msg: &Msg) -> Vec<u8> {
    // Sized up front from the message, so a big batch is not copied as its buffer grows.
    let cap = match msg {
        Msg::Data(d) => 16 + d.updates.len() * UPDATE_SIZE,
        Msg::Birth(b) => 16 + b.points.len() * DEF_SIZE + b.states.len() * UPDATE_SIZE,
        Msg::Define(d) => 16 + d.points.len() * DEF_SIZE,
        _ => 64,
    };
    // Serializing our own types into a Vec cannot fail: no map with non-string keys, no
    // unsized sequences.
    postcard::serialize_with_flavor(msg, FrameBuf(Vec::with_capacity(cap))).unwrap_or_default()
}

/// Bytes an update usually takes on the wire (id, value, quality, two timestamps, flags).
const UPDATE_SIZE: usize = 32;
/// Bytes a point definition usually takes (most of it the name).
const DEF_SIZE: usize = 64;

/// postcard's output into a `Vec`, with short pieces (varints: 1 to 10 bytes) copied at a
/// length fixed when compiling. postcard's own `Vec` output copies every piece with
/// `extend_from_slice` of a length known only at run time, a `memcpy` call per field: 21 % of
/// the hub's CPU when it fanned out to ten clients.
struct FrameBuf(Vec<u8>);

impl postcard::ser_flavors::Flavor for FrameBuf {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // A copy of a length known when compiling is a move or two, not a call.
        macro_rules! sized {
            ($($n:literal)*) => {
                match data.len() {
                    $($n => match <&[u8; $n]>::try_from(data) {
                        Ok(a) => self.0.extend_from_slice(a),
                        Err(_) => self.0.extend_from_slice(data),
                    },)*
                    _ => self.0.extend_from_slice(data),
                }
            };
        }
        sized!(1 2 3 4 5 6 7 8 9 10);
        Ok(())
    }

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Reads the protocol version from a frame that holds a `Hello` of any version.
pub fn peek_hello_version(frame: &[u8]) -> Option<(u16, u16)> {
    let (tag, rest): (u32, &[u8]) = postcard::take_from_bytes(frame).ok()?;
    if tag != 0 {
        return None;
    }
    let ((major, minor), _): ((u16, u16), _) = postcard::take_from_bytes(rest).ok()?;
    Some((major, minor))
}

/// Decodes and checks one frame.
pub fn decode(frame: &[u8], limits: &Limits) -> Result<Msg, DecodeError> {
    if frame.len() > limits.max_frame {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max: limits.max_frame,
        });
    }
    if let Some((major, _)) = peek_hello_version(frame) {
        if major != PROTOCOL_MAJOR {
            return Err(DecodeError::Version {
                major,
                ours: PROTOCOL_MAJOR,
            });
        }
    }
    let (msg, rest): (Msg, _) = postcard::take_from_bytes(frame)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing { extra: rest.len() });
    }
    check(&msg, limits)?;
    Ok(msg)
}

fn count(what: &'static str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        return Err(DecodeError::TooMany { what, count, max });
    }
    Ok(())
}

fn string(what: &'static str, s: &str, max: usize) -> Result<(), DecodeError> {
    if s.len() > max {
        return Err(DecodeError::StringTooLong {
            what,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

fn value(v: &Value, limits: &Limits) -> Result<(), DecodeError> {
    if let Value::String(s) = v {
        string("string value", s, limits.max_string_len)?;
    }
    Ok(())
}

fn times(u: &crate::Update) -> Result<(), DecodeError> {
    for (what, t) in [("source time", u.source_ts), ("hub time", u.hub_ts)] {
        if !t.is_valid() {
            return Err(DecodeError::Timestamp { what, micros: t.0 });
        }
    }
    Ok(())
}

fn check(msg: &Msg, l: &Limits) -> Result<(), DecodeError> {
    let defs = |points: &[crate::PointDef]| -> Result<(), DecodeError> {
        for p in points {
            validate_name(&p.name, l.max_name_len)?;
            string("unit", p.unit.as_deref().unwrap_or(""), l.max_string_len)?;
            string(
                "description",
                p.description.as_deref().unwrap_or(""),
                l.max_string_len,
            )?;
        }
        Ok(())
    };
    match msg {
        Msg::Hello(h) => {
            string("node name", &h.name, l.max_name_len)?;
            string("software", &h.software, l.max_string_len)?;
        }
        Msg::Welcome(w) => {
            string("hub name", &w.hub, l.max_name_len)?;
            string("node name", &w.node, l.max_name_len)?;
            string("namespace", &w.namespace, l.max_name_len)?;
        }
        Msg::Birth(b) => {
            count("birth points", b.points.len(), l.max_batch)?;
            count("birth states", b.states.len(), l.max_batch)?;
            defs(&b.points)?;
            for u in &b.states {
                value(&u.value, l)?;
                times(u)?;
            }
        }
        Msg::Data(d) => {
            count("data updates", d.updates.len(), l.max_batch)?;
            for u in &d.updates {
                value(&u.value, l)?;
                times(u)?;
            }
        }
        Msg::Define(d) => {
            count("definitions", d.points.len(), l.max_batch)?;
            defs(&d.points)?;
        }
        Msg::Subscribe(s) => {
            count("patterns", s.patterns.len(), l.max_patterns)?;
            for p in &s.patterns {
                string("pattern", p, l.max_name_len)?;
            }
        }
        Msg::Unsubscribe(s) => count("patterns", s.patterns.len(), l.max_patterns)?,
        Msg::Write(w) => {
            string("point name", &w.point, l.max_name_len)?;
            value(&w.value, l)?;
        }
        Msg::WriteResult(r) => string("write message", &r.message, l.max_string_len)?,
        Msg::Error(e) => string("error message", &e.message, l.max_string_len)?,
        Msg::Death(d) => string("death reason", &d.reason, l.max_string_len)?,
        Msg::Rebirth(r) => string("rebirth reason", &r.reason, l.max_string_len)?,
        Msg::Chain(c) => {
            count("chain", c.hubs.len(), 64)?;
            for h in &c.hubs {
                string("hub name", h, l.max_name_len)?;
            }
        }
        Msg::Durable(d) => {
            string("durable subscription name", &d.name, l.max_name_len)?;
            count("patterns", d.patterns.len(), l.max_patterns)?;
            for p in &d.patterns {
                string("pattern", p, l.max_name_len)?;
            }
        }
        Msg::SnapshotDone(_) | Msg::Ping(_) | Msg::Pong(_) | Msg::Ack(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn samples() -> Vec<Msg> {
        let def = PointDef {
            id: 7,
            name: "plant1/sim/sine1".into(),
            dtype: DataType::Float,
            unit: Some("bar".into()),
            description: None,
            writable: true,
        };
        let up = Update {
            id: 7,
            value: Value::Float(12.5),
            quality: Quality::Good,
            source_ts: Timestamp(1),
            hub_ts: Timestamp(2),
            flags: 0,
        };
        vec![
            Msg::Hello(Hello {
                major: PROTOCOL_MAJOR,
                minor: PROTOCOL_MINOR,
                role: Role::Edge,
                name: "plant1".into(),
                software: "pointhub 0.1.0".into(),
            }),
            Msg::Birth(Birth {
                seq: 1,
                part: 0,
                last: true,
                points: vec![def.clone()],
                states: vec![up.clone()],
            }),
            Msg::Data(Data {
                seq: 2,
                updates: vec![
                    up.clone(),
                    Update {
                        value: Value::String("x".into()),
                        ..up.clone()
                    },
                ],
            }),
            Msg::Define(Define { points: vec![def] }),
            Msg::Subscribe(Subscribe {
                patterns: vec!["plant1/**".into()],
                history: false,
            }),
            Msg::Write(WriteRequest {
                req: 9,
                point: "plant1/sim/sp".into(),
                value: Value::Int(-3),
            }),
            Msg::WriteResult(WriteResult {
                req: 9,
                status: Quality::BadNotWritable,
                message: "no".into(),
            }),
            Msg::Ping(Ping { t: Timestamp(5) }),
            Msg::Durable(DurableSubscribe {
                name: "historian".into(),
                patterns: vec!["plant1/**".into()],
            }),
            Msg::Error(ErrorMsg {
                code: ErrorCode::Malformed,
                message: "bad".into(),
            }),
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let frame = encode(&m);
            assert_eq!(decode(&frame, &Limits::default()).expect("decodes"), m);
        }
    }

    #[test]
    fn frames_are_exactly_postcards_encoding() {
        // The wire format is postcard's: the faster output must not change a byte.
        for m in samples() {
            assert_eq!(
                encode(&m),
                postcard::to_stdvec(&m).expect("encodes"),
                "{}",
                m.kind()
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in samples() {
            let frame = encode(&m);
            for cut in 0..frame.len() {
                assert!(
                    decode(&frame[..cut], &Limits::default()).is_err(),
                    "{} cut at {cut}",
                    m.kind()
                );
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        let l = Limits {
            max_frame: 64,
            max_batch: 1,
            ..Limits::default()
        };
        let big = Msg::Error(ErrorMsg {
            code: ErrorCode::Internal,
            message: "x".repeat(100),
        });
        assert!(matches!(
            decode(&encode(&big), &l),
            Err(DecodeError::TooLarge { .. })
        ));
        let two = samples()
            .into_iter()
            .find(|m| matches!(m, Msg::Data(_)))
            .expect("data sample");
        assert!(matches!(
            decode(&encode(&two), &l),
            Err(DecodeError::TooMany { .. })
        ));
        // A length prefix that claims four billion updates in a 7-byte frame.
        let hostile = [3u8, 1, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode(&hostile, &Limits::default()).is_err());
    }

    #[test]
    fn other_major_version_is_named() {
        let hello = Msg::Hello(Hello {
            major: PROTOCOL_MAJOR + 1,
            minor: 0,
            role: Role::Client,
            name: "c".into(),
            software: String::new(),
        });
        let frame = encode(&hello);
        assert_eq!(peek_hello_version(&frame), Some((PROTOCOL_MAJOR + 1, 0)));
        let err = decode(&frame, &Limits::default()).expect_err("refused");
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn bad_names_in_a_birth_are_refused() {
        let m = Msg::Define(Define {
            points: vec![PointDef {
                id: 1,
                name: "a//b".into(),
                dtype: DataType::Bool,
                unit: None,
                description: None,
                writable: false,
            }],
        });
        assert!(matches!(
            decode(&encode(&m), &Limits::default()),
            Err(DecodeError::Name(_))
        ));
    }

    #[test]
    fn a_source_time_past_the_year_9999_is_refused_with_advice() {
        let far = Update {
            id: 1,
            value: Value::Float(1.0),
            quality: Quality::Good,
            source_ts: Timestamp(Timestamp::MAX.0 + 1),
            hub_ts: Timestamp::NEVER,
            flags: 0,
        };
        for m in [
            Msg::Data(Data {
                seq: 1,
                updates: vec![far.clone()],
            }),
            Msg::Birth(Birth {
                seq: 1,
                part: 0,
                last: true,
                points: vec![],
                states: vec![far.clone()],
            }),
        ] {
            let err = decode(&encode(&m), &Limits::default()).expect_err("refused");
            assert!(matches!(err, DecodeError::Timestamp { .. }), "{err}");
            assert!(err.to_string().contains("check the clock"), "{err}");
        }
        let ok = Msg::Data(Data {
            seq: 1,
            updates: vec![Update {
                source_ts: Timestamp::MAX,
                ..far
            }],
        });
        assert!(decode(&encode(&ok), &Limits::default()).is_ok());
    }
}
