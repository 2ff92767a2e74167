//! Fuzzes the frame decoder: any bytes give a message or an error, never a panic, a hang or a huge
//! allocation; and what decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pointhub_schemas::{decode, encode, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(msg) = decode(data, &limits) {
        let again = decode(&encode(&msg), &limits).expect("a decoded message re-encodes to a valid frame");
        // NaN floats are not equal to themselves; compare their encodings instead.
        assert_eq!(encode(&again), encode(&msg));
    }
});
