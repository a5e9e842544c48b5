//! Property tests of the envelope codecs: binary and JSON round-trips over
//! arbitrary valid envelopes, and decoding that never panics on arbitrary or
//! mutated input.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lanebus::{Envelope, Headers, WireFormat};
use proptest::prelude::*;
use serde_json::Value;

/// Case counts, scaled down under Miri where every case is slow.
fn cases(native: u32) -> u32 {
    if cfg!(miri) {
        (native / 128).max(4)
    } else {
        native
    }
}

/// Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range the
/// JSON form (RFC 3339) can carry.
const JSON_MIN_SECS: i64 = -62_135_596_800;
const JSON_MAX_SECS: i64 = 253_402_300_799;

fn time_from(secs: i64, nanos: u32) -> Option<SystemTime> {
    let whole = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    whole.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Times in the RFC 3339 range, biased towards the epoch and sub-second
/// detail; pre-1970 included.
fn json_timestamp() -> impl Strategy<Value = SystemTime> {
    let secs = prop_oneof![
        -100_000i64..100_000,
        1_600_000_000i64..1_900_000_000,
        JSON_MIN_SECS..=JSON_MAX_SECS,
    ];
    let nanos = prop_oneof![
        Just(0u32),
        0u32..1_000_000_000,
        (0u32..1000).prop_map(|m| m * 1_000_000)
    ];
    (secs, nanos).prop_filter_map("representable", |(s, n)| time_from(s, n))
}

/// Any time the platform represents; the binary form carries all of them.
fn binary_timestamp() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        json_timestamp(),
        (any::<i64>(), 0u32..1_000_000_000)
            .prop_filter_map("representable", |(s, n)| time_from(s, n)),
    ]
}

/// Text with control characters, quotes, HTML characters and non-ASCII.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[\\PC\\x00-\\x1f\"\\\\<>&\u{2028}]{{0,{max}}}"))
        .expect("valid regex")
}

fn non_empty_text(max: usize) -> impl Strategy<Value = String> {
    text(max).prop_filter("non-empty", |s| !s.is_empty())
}

fn headers() -> impl Strategy<Value = Headers> {
    proptest::collection::vec((text(16), text(32)), 0..6)
        .prop_map(|pairs| pairs.into_iter().collect())
}

/// Tenant IDs of any text; the binary form carries all of them.
fn any_tenant() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text(40))
}

/// Tenant IDs the JSON form carries: Go's `int` as decimal text, or empty.
fn go_tenant() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        Just(String::new()),
    ])
}

/// Valid envelopes over arbitrary text, for the binary form.
fn envelope(
    payload: impl Strategy<Value = Bytes>,
    timestamp: impl Strategy<Value = SystemTime>,
) -> impl Strategy<Value = Envelope> {
    envelope_with(payload, timestamp, any_tenant())
}

/// Envelopes the Go side accepts, for the JSON form: a JSON payload, an
/// integer tenant, an event ID and type that are not only whitespace.
fn go_envelope() -> impl Strategy<Value = Envelope> {
    envelope_with(json_payload(), json_timestamp(), go_tenant())
        .prop_filter("go refuses blank ids", |env| {
            !env.event_id.trim().is_empty() && !env.event_type.trim().is_empty()
        })
}

/// Valid envelopes with the given payload, timestamp and tenant strategies.
fn envelope_with(
    payload: impl Strategy<Value = Bytes>,
    timestamp: impl Strategy<Value = SystemTime>,
    tenant: impl Strategy<Value = Option<String>>,
) -> impl Strategy<Value = Envelope> {
    let ids = (
        non_empty_text(40),
        "[A-Za-z0-9:_./-]{1,256}",
        non_empty_text(60),
        1i64..=i64::MAX,
    );
    let optional = (
        proptest::option::of(text(40)),
        proptest::option::of(text(40)),
        tenant,
    );
    (ids, optional, headers(), payload, timestamp).prop_map(
        |(
            (event_id, aggregate_id, event_type, version),
            (trace, corr, tenant),
            headers,
            payload,
            ts,
        )| {
            let mut env = Envelope::new(aggregate_id, event_type, version, payload)
                .with_event_id(event_id)
                .with_timestamp(ts)
                .with_headers(headers);
            env.trace_id = trace.map(Into::into);
            env.correlation_id = corr.map(Into::into);
            env.tenant_id = tenant.map(Into::into);
            env
        },
    )
}

fn any_payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..512).prop_map(Bytes::from)
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text(20).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((text(8), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// JSON payload text, compact or pretty.
fn json_payload() -> impl Strategy<Value = Bytes> {
    (json_value(), any::<bool>()).prop_map(|(v, pretty)| {
        let text = if pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        };
        Bytes::from(text.expect("values serialise"))
    })
}

/// What the wire forms keep of `env`: empty optional IDs read as none.
fn json_view(mut env: Envelope) -> Envelope {
    for field in [
        &mut env.trace_id,
        &mut env.correlation_id,
        &mut env.tenant_id,
    ] {
        if field.as_deref() == Some("") {
            *field = None;
        }
    }
    env
}

/// Applies byte edits to `wire`: overwrite, insert, remove, truncate.
fn mutate(wire: &[u8], edits: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut out = wire.to_vec();
    for &(kind, at, byte) in edits {
        let at = if out.is_empty() { 0 } else { at % out.len() };
        match kind % 4 {
            0 if !out.is_empty() => out[at] = byte,
            1 => out.insert(at, byte),
            2 if !out.is_empty() => {
                out.remove(at);
            }
            _ => out.truncate(at),
        }
    }
    out
}

fn decode_checked(bytes: &[u8]) {
    if let Ok(env) = Envelope::decode(bytes) {
        assert_valid(env.validate());
    }
    if let Ok(env) = Envelope::decode_bytes(&Bytes::copy_from_slice(bytes)) {
        assert_valid(env.validate());
    }
}

fn assert_valid<E: std::fmt::Debug>(r: Result<(), E>) {
    assert!(r.is_ok(), "decoded an invalid envelope: {r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn binary_round_trip(env in envelope(any_payload(), binary_timestamp())) {
        prop_assert_eq!(env.validate(), Ok(()));
        let wire = env.encode();
        // Both forms read an empty optional ID as none.
        let env = json_view(env);
        prop_assert_eq!(Envelope::decode(&wire), Ok(env.clone()));
        prop_assert_eq!(Envelope::decode_bytes(&wire), Ok(env));
    }

    #[test]
    fn json_round_trip(env in go_envelope()) {
        let json = env.encode_json().expect("valid json payload");
        let back = Envelope::decode(&json).expect("decodes");
        prop_assert_eq!(&back, &json_view(env));
        // Re-encoding is stable: the second JSON text equals the first.
        prop_assert_eq!(back.encode_json().expect("encodes"), json);
    }

    #[test]
    fn json_check_agrees_with_encode_json(
        env in envelope(prop_oneof![json_payload(), any_payload()], binary_timestamp()),
    ) {
        // The check the bus runs at publish refuses exactly what
        // encode_json refuses, and what it accepts decodes back.
        let check = env.validate_for(WireFormat::Json);
        // The serde form is the same text, and fails where it fails.
        prop_assert_eq!(
            serde_json::to_vec(&env).ok(),
            env.encode_json().ok().map(|b| b.to_vec())
        );
        match env.encode_json() {
            Ok(json) => {
                prop_assert_eq!(check, Ok(()));
                prop_assert_eq!(Envelope::decode(&json), Ok(json_view(env)));
            }
            Err(err) => prop_assert_eq!(check, Err(err)),
        }
    }

    #[test]
    fn json_text_parses_as_plain_json(env in go_envelope()) {
        let json = env.encode_json().expect("valid json payload");
        let value: Value = serde_json::from_slice(&json).expect("well-formed json");
        prop_assert_eq!(value["aggregate_id"].as_str(), Some(env.aggregate_id.as_str()));
        prop_assert_eq!(value["event_version"].as_i64(), Some(env.event_version));
        let payload: Value = serde_json::from_slice(&env.payload).expect("payload is json");
        prop_assert_eq!(&value["payload"], &payload);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn decode_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        prefix in prop_oneof![Just(&b""[..]), Just(&[0xEB, 0x1B, 1, 0][..]), Just(&b"{"[..])],
    ) {
        let mut input = prefix.to_vec();
        input.extend_from_slice(&bytes);
        decode_checked(&input);
    }

    #[test]
    fn decode_mutated_binary_never_panics(
        env in envelope(any_payload(), binary_timestamp()),
        edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        decode_checked(&mutate(&env.encode(), &edits));
    }

    #[test]
    fn decode_mutated_json_never_panics(
        env in go_envelope(),
        edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        decode_checked(&mutate(&env.encode_json().expect("encodes"), &edits));
    }
}
