//! Fuzz target: decode arbitrary bytes as an envelope, in both wire forms,
//! and re-encode whatever decodes.
//!
//! Properties checked on every input:
//! - no decoder panics, whatever the bytes (`decode`, `decode_binary`,
//!   `decode_json`, `decode_bytes`);
//! - the auto-detecting `decode` agrees with the decoder for the form it
//!   detected;
//! - whatever decodes re-encodes to binary that decodes back equal, and
//!   (when the Go form can carry it: see `Envelope::encode_json`) to JSON
//!   that decodes back equal.
#![no_main]

use bytes::Bytes;
use lanebus::{Envelope, WireFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let auto = Envelope::decode(data);
    let binary = Envelope::decode_binary(data);
    let json = Envelope::decode_json(data);
    let shared = Envelope::decode_bytes(&Bytes::copy_from_slice(data));
    match Envelope::detect(data) {
        Some(WireFormat::Binary) => assert_eq!(auto, binary),
        Some(WireFormat::Json) => assert_eq!(auto, json),
        _ => assert!(auto.is_err()),
    }
    assert_eq!(auto, shared);
    for ev in [binary, json].into_iter().flatten() {
        let again = Envelope::decode(&ev.encode()).expect("binary re-encoding decodes");
        assert_eq!(again, ev);
        if let Ok(text) = ev.encode_json() {
            let mut again = Envelope::decode(&text).expect("json re-encoding decodes");
            // JSON keeps the payload's JSON text; only surrounding white space
            // may differ.
            assert_eq!(again.payload.trim_ascii(), ev.payload.trim_ascii());
            again.payload = ev.payload.clone();
            assert_eq!(again, ev);
        }
    }
});

