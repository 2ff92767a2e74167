//! Property tests: every message survives an encode/decode round trip; any bytes decode to a
//! message or an error, never a panic; patterns match what they should.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)] // test code

use pointhub_schemas::*;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z$][a-z0-9_.-]{0,8}(/[A-Za-z0-9 _.-]{1,10}){0,5}"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        (-1e300f64..1e300).prop_map(Value::Float),
        ".{0,40}".prop_map(Value::String),
    ]
}

fn update() -> impl Strategy<Value = Update> {
    (
        any::<u32>(),
        value(),
        any::<u32>(),
        // Every instant that prints (a later one is refused when decoding: its own test).
        0..=Timestamp::MAX.0,
        0..=Timestamp::MAX.0,
        any::<u8>(),
    )
        .prop_map(|(id, value, q, s, h, flags)| Update {
            id,
            value,
            quality: Quality(q),
            source_ts: Timestamp(s),
            hub_ts: Timestamp(h),
            flags,
        })
}

fn dtype() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataType::Bool),
        Just(DataType::Int),
        Just(DataType::UInt),
        Just(DataType::Float),
        Just(DataType::String)
    ]
}

fn def() -> impl Strategy<Value = PointDef> {
    (
        any::<u32>(),
        name(),
        dtype(),
        proptest::option::of("[a-z%]{0,6}"),
        proptest::option::of(".{0,30}"),
        any::<bool>(),
    )
        .prop_map(|(id, name, dtype, unit, description, writable)| PointDef {
            id,
            name,
            dtype,
            unit,
            description,
            writable,
        })
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (any::<u16>(), name()).prop_map(|(minor, name)| Msg::Hello(Hello {
            major: PROTOCOL_MAJOR,
            minor,
            role: Role::Edge,
            name,
            software: "x".into()
        })),
        (
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            prop::collection::vec(def(), 0..20),
            prop::collection::vec(update(), 0..20)
        )
            .prop_map(|(seq, part, last, points, states)| Msg::Birth(Birth {
                seq,
                part,
                last,
                points,
                states
            })),
        (any::<u64>(), prop::collection::vec(update(), 0..50))
            .prop_map(|(seq, updates)| Msg::Data(Data { seq, updates })),
        prop::collection::vec(def(), 0..20).prop_map(|points| Msg::Define(Define { points })),
        (prop::collection::vec(name(), 0..5), any::<bool>())
            .prop_map(|(patterns, history)| Msg::Subscribe(Subscribe { patterns, history })),
        (any::<u64>(), name(), value()).prop_map(|(req, point, value)| Msg::Write(WriteRequest {
            req,
            point,
            value
        })),
        (any::<u64>(), any::<u32>(), ".{0,40}").prop_map(|(req, s, message)| Msg::WriteResult(
            WriteResult {
                req,
                status: Quality(s),
                message
            }
        )),
        any::<u64>().prop_map(|t| Msg::Ping(Ping { t: Timestamp(t) })),
        ".{0,60}".prop_map(|message| Msg::Error(ErrorMsg {
            code: ErrorCode::Malformed,
            message
        })),
        any::<u32>().prop_map(|points| Msg::SnapshotDone(SnapshotDone { points })),
    ]
}

proptest! {
    #[test]
    fn encode_decode_round_trip(m in msg()) {
        let frame = encode(&m);
        prop_assert_eq!(decode(&frame, &Limits::default()).expect("decodes"), m);
    }

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &Limits::default());
    }

    #[test]
    fn every_prefix_of_a_frame_fails_cleanly(m in msg(), cut in any::<prop::sample::Index>()) {
        let frame = encode(&m);
        let n = cut.index(frame.len().max(1));
        if n < frame.len() {
            prop_assert!(decode(&frame[..n], &Limits::default()).is_err());
        }
    }

    #[test]
    fn patterns_match_their_names(n in name()) {
        prop_assert!(Pattern::parse(&n).expect("a name is a pattern").matches(&n));
        prop_assert!(Pattern::parse("**").expect("valid").matches(&n));
        let first = n.split('/').next().expect("a segment");
        let below = format!("{}/**", first);
        prop_assert!(Pattern::parse(&below).expect("valid").matches(&n));
    }
}
