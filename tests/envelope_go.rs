//! Interop with the Go system's envelope as it is today, and the typed
//! payload helpers and serde form built on the same JSON code.
//!
//! The Go vectors below were written by Go's `encoding/json` (go 1.26)
//! marshalling a struct with the field tags of ChenBigdata421/jxt-core's
//! `sdk/pkg/eventbus/envelope.go`.

use std::time::{Duration, SystemTime};

use lanebus::{DecodeError, EncodeError, Envelope, EnvelopeError, WireFormat};

#[path = "common/envelopes.rs"]
mod envelopes;

use envelopes::{full, minimal, MAY_FIRST};

// ---- interop with the Go envelope as it is today -------------------------
//
// The Go system (ChenBigdata421/jxt-core, `sdk/pkg/eventbus/envelope.go`)
// declares `TenantID int \`json:"tenant_id,omitempty"\``: a JSON number,
// absent when 0. The three texts below were written by Go's `encoding/json`
// marshalling a struct with those field tags: `time.Time` in a `+08:00`
// zone as RFC3339Nano (trailing fraction zeros trimmed), the
// `json.RawMessage` payload compacted with HTML characters escaped, and
// every `omitempty` field at its zero value left out.

/// Tenant 42, trace ID set, correlation ID empty, `+08:00` with nanoseconds.
const GO_TENANT_42: &str = r#"{"event_id":"01890a5d-ac96-7e4b-8f6b-2d5a9c1e0f3a","aggregate_id":"tenant:acme/order-42","event_type":"OrderPlaced","event_version":3,"timestamp":"2024-05-01T10:30:00.123456789+08:00","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","tenant_id":42,"payload":{"order_id":"order-42","note":"\u003cb\u003e\u0026\u003c/b\u003e","total":19.990}}"#;

/// Tenant 0 and trace ID empty (both left out), in UTC.
const GO_NO_TENANT_UTC: &str = r#"{"event_id":"01890a5d-ac96-7e4b-8f6b-2d5a9c1e0f3a","aggregate_id":"tenant:acme/order-42","event_type":"OrderPlaced","event_version":3,"timestamp":"2024-05-01T02:30:00.5Z","correlation_id":"corr-1","payload":[1,2.5,null,"x"]}"#;

/// A negative tenant, `+08:00` with one fraction digit.
const GO_NEGATIVE_TENANT: &str = r#"{"event_id":"01890a5d-ac96-7e4b-8f6b-2d5a9c1e0f3a","aggregate_id":"tenant:acme/order-42","event_type":"OrderPlaced","event_version":3,"timestamp":"2024-05-01T10:30:00.1+08:00","correlation_id":"corr-1","tenant_id":-7,"payload":[1,2.5,null,"x"]}"#;

#[test]
fn go_numeric_tenant_is_read_as_its_decimal_text() {
    let env = Envelope::decode(GO_TENANT_42.as_bytes()).unwrap();
    assert_eq!(env.tenant_id.as_deref(), Some("42"));
    assert_eq!(env.aggregate_id, "tenant:acme/order-42");
    assert_eq!(
        env.timestamp,
        SystemTime::UNIX_EPOCH + Duration::new(MAY_FIRST, 123_456_789),
        "+08:00 local time is the same instant"
    );
    assert_eq!(
        &env.payload[..],
        br#"{"order_id":"order-42","note":"\u003cb\u003e\u0026\u003c/b\u003e","total":19.990}"#,
        "the raw payload is kept byte for byte"
    );
    assert_eq!(env.correlation_id, None);

    let env = Envelope::decode(GO_NEGATIVE_TENANT.as_bytes()).unwrap();
    assert_eq!(env.tenant_id.as_deref(), Some("-7"));
    assert_eq!(
        env.timestamp,
        SystemTime::UNIX_EPOCH + Duration::new(MAY_FIRST, 100_000_000)
    );
    let env = Envelope::decode(GO_NO_TENANT_UTC.as_bytes()).unwrap();
    assert_eq!((env.tenant_id, env.trace_id), (None, None));
}

#[test]
fn go_vectors_are_written_back_as_go_writes_them() {
    // Our output is UTC; apart from the zone, each text is Go's own.
    let utc = [
        (
            GO_TENANT_42,
            "2024-05-01T10:30:00.123456789+08:00",
            "2024-05-01T02:30:00.123456789Z",
        ),
        (GO_NO_TENANT_UTC, "", ""),
        (
            GO_NEGATIVE_TENANT,
            "2024-05-01T10:30:00.1+08:00",
            "2024-05-01T02:30:00.1Z",
        ),
    ];
    for (go, local, z) in utc {
        let env = Envelope::decode_json(go.as_bytes()).unwrap();
        let ours = env.encode_json().unwrap();
        let expected = if local.is_empty() {
            go.to_owned()
        } else {
            go.replace(local, z)
        };
        assert_eq!(std::str::from_utf8(&ours).unwrap(), expected);
        assert_eq!(Envelope::decode_json(&ours).unwrap(), env);
    }
}

#[test]
fn tenant_ids_are_written_as_go_ints() {
    let tenant = |t: &str| minimal().with_tenant_id(t).encode_json();
    let text = |t: &str| String::from_utf8(tenant(t).unwrap().to_vec()).unwrap();
    assert!(text("42").contains(r#","tenant_id":42,"payload""#));
    assert!(text("-9223372036854775808").contains(r#""tenant_id":-9223372036854775808,"#));
    // Go omits its zero value; an explicit "0" is written and read back.
    assert!(text("0").contains(r#""tenant_id":0,"#));
    let zero = Envelope::decode_json(&tenant("0").unwrap()).unwrap();
    assert_eq!(zero.tenant_id.as_deref(), Some("0"));
    // Empty means none, and is left out as Go leaves out 0.
    assert!(!text("").contains("tenant_id"));
    assert!(!minimal()
        .encode_json()
        .unwrap()
        .windows(9)
        .any(|w| w == b"tenant_id"));
    for bad in [
        "acme",
        "042",
        "+42",
        "-0",
        "4.2",
        "9223372036854775808",
        " 42",
    ] {
        let err = EncodeError::TenantIdNotInteger {
            tenant_id: bad.to_owned(),
        };
        assert_eq!(tenant(bad), Err(err.clone()), "{bad}");
        assert_eq!(
            minimal().with_tenant_id(bad).validate_for(WireFormat::Json),
            Err(err)
        );
        // The binary form carries any text.
        let env = minimal().with_tenant_id(bad);
        assert_eq!(env.validate_for(WireFormat::Binary), Ok(()));
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }
    assert_eq!(
        tenant("acme").unwrap_err().to_string(),
        r#"tenant id "acme" is not an integer, as go's int tenant_id requires"#
    );
}

#[test]
fn string_tenants_from_older_publishers_are_read() {
    let old = GO_NO_TENANT_UTC.replace(r#","payload""#, r#","tenant_id":"acme","payload""#);
    let env = Envelope::decode(old.as_bytes()).unwrap();
    assert_eq!(env.tenant_id.as_deref(), Some("acme"));
    assert!(matches!(
        env.encode_json(),
        Err(EncodeError::TenantIdNotInteger { .. })
    ));
    // A numeric string is re-written as the number today's Go reads.
    let old = GO_NO_TENANT_UTC.replace(r#","payload""#, r#","tenant_id":"42","payload""#);
    let env = Envelope::decode(old.as_bytes()).unwrap();
    let text = String::from_utf8(env.encode_json().unwrap().to_vec()).unwrap();
    assert!(text.contains(r#""tenant_id":42,"#), "{text}");
    for empty in [r#""tenant_id":"","#, r#""tenant_id":null,"#] {
        let json = GO_NO_TENANT_UTC.replace(r#""payload""#, &format!(r#"{empty}"payload""#));
        assert_eq!(Envelope::decode(json.as_bytes()).unwrap().tenant_id, None);
    }
}

#[test]
fn tenant_numbers_go_refuses_are_refused() {
    for bad in [
        "4.2",
        "1e3",
        "42.0",
        "9223372036854775808",
        "true",
        "[42]",
        "{}",
    ] {
        let json = GO_TENANT_42.replace(r#""tenant_id":42"#, &format!(r#""tenant_id":{bad}"#));
        let err = Envelope::decode(json.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::InvalidJson { message } if message.contains("tenant")),
            "{bad}: {err}"
        );
    }
    let json = GO_TENANT_42.replace(r#""tenant_id":42"#, r#""tenant_id":-9223372036854775808"#);
    let env = Envelope::decode(json.as_bytes()).unwrap();
    assert_eq!(env.tenant_id.as_deref(), Some("-9223372036854775808"));
}

#[test]
fn envelopes_go_would_reject_are_not_written_as_json() {
    let cases = [
        (
            minimal().with_event_id(" \t"),
            EncodeError::Blank { field: "event id" },
        ),
        (
            Envelope::new("order-1", "  ", 1, "{}"),
            EncodeError::Blank {
                field: "event type",
            },
        ),
        (
            minimal().with_event_id(""),
            EncodeError::Invalid(EnvelopeError::EmptyEventId),
        ),
        (
            Envelope::new("order-1", "", 1, "{}"),
            EncodeError::Invalid(EnvelopeError::EmptyEventType),
        ),
        (
            Envelope::new("order-1", "T", 0, "{}"),
            EncodeError::Invalid(EnvelopeError::InvalidVersion { version: 0 }),
        ),
        (
            Envelope::new("order 1", "T", 1, "{}"),
            EncodeError::Invalid(EnvelopeError::InvalidAggregateIdChar { ch: ' ', index: 5 }),
        ),
        (
            Envelope::new("order-1", "T", 1, ""),
            EncodeError::EmptyPayload,
        ),
    ];
    for (env, err) in cases {
        assert_eq!(env.encode_json(), Err(err.clone()), "{env:?}");
        assert_eq!(env.validate_for(WireFormat::Json), Err(err));
    }
    assert_eq!(
        EncodeError::Blank { field: "event id" }.to_string(),
        "event id is only whitespace"
    );
    assert_eq!(
        EncodeError::EmptyPayload.to_string(),
        "empty payload: the go envelope requires one"
    );
    // What the JSON check accepts, encode_json writes and decode reads.
    let env = full().with_tenant_id("7");
    assert_eq!(env.validate_for(WireFormat::Json), Ok(()));
    assert_eq!(Envelope::decode(&env.encode_json().unwrap()).unwrap(), env);
}

// ---- typed payloads and the serde form ------------------------------------

mod typed {
    use std::collections::BTreeMap;

    use lanebus::{DecodeError, EncodeError, Envelope, ErrorClass, WireFormat};
    use serde::{Deserialize, Serialize};

    use super::{full, minimal, GO_NO_TENANT_UTC, GO_TENANT_42};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OrderPlaced {
        order_id: String,
        total_cents: u64,
        items: Vec<String>,
    }

    fn order() -> OrderPlaced {
        OrderPlaced {
            order_id: "order-42".into(),
            total_cents: 1999,
            items: vec!["A-1".into(), "B-<7>".into()],
        }
    }

    #[test]
    fn json_builds_a_payload_that_reads_back() {
        let env = Envelope::json("order-42", "OrderPlaced", 3, &order()).unwrap();
        assert_eq!(env.aggregate_id, "order-42");
        assert_eq!(env.event_type, "OrderPlaced");
        assert_eq!(env.event_version, 3);
        assert_eq!(
            &env.payload[..],
            br#"{"order_id":"order-42","total_cents":1999,"items":["A-1","B-<7>"]}"#
        );
        assert_eq!(env.payload_json::<OrderPlaced>().unwrap(), order());
        // It is a JSON payload, so the Go form carries it.
        assert_eq!(env.validate_for(WireFormat::Json), Ok(()));
        let back = Envelope::decode(&env.encode_json().unwrap()).unwrap();
        assert_eq!(back.payload_json::<OrderPlaced>().unwrap(), order());
    }

    #[test]
    fn json_reports_unserializable_payloads() {
        let mut map = BTreeMap::new();
        map.insert(vec![1u8], 1);
        let err = Envelope::json("a", "T", 1, &map).unwrap_err();
        assert!(
            matches!(&err, EncodeError::Serialize { message } if message.contains("key must be a string")),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("payload serialization failed: "));
    }

    #[test]
    fn payload_that_never_parses_is_a_permanent_error() {
        for payload in [
            &b"not json"[..],
            br#"{"order_id":"x"}"#,
            b"",
            br#"{"total_cents":-1}"#,
        ] {
            let mut env = minimal();
            env.payload = bytes::Bytes::copy_from_slice(payload);
            let err = env.payload_json::<OrderPlaced>().unwrap_err();
            assert_eq!(err.class(), ErrorClass::Permanent, "{payload:?}");
            let decode = err
                .source()
                .downcast_ref::<DecodeError>()
                .expect("a DecodeError inside");
            assert!(
                matches!(decode, DecodeError::PayloadJson { target, .. } if target.ends_with("OrderPlaced")),
                "{decode:?}"
            );
            assert!(
                err.to_string().starts_with("payload is not json of type "),
                "{err}"
            );
        }
    }

    #[test]
    fn payload_json_can_borrow() {
        #[derive(Deserialize)]
        struct Borrowed<'a> {
            order_id: &'a str,
        }
        let env = Envelope::json("order-42", "OrderPlaced", 1, &order()).unwrap();
        let view: Borrowed<'_> = env.payload_json().unwrap();
        assert_eq!(view.order_id, "order-42");
    }

    #[test]
    fn serialize_writes_exactly_what_encode_json_writes() {
        for env in [
            full(),
            minimal().with_tenant_id("-3"),
            minimal().with_trace_id("<&>"),
        ] {
            let text = serde_json::to_vec(&env).unwrap();
            assert_eq!(text, env.encode_json().unwrap().to_vec());
            let back: Envelope = serde_json::from_slice(&text).unwrap();
            assert_eq!(back, env);
        }
        // Nested in a larger value, the envelope stays the same object
        // (`Value` keeps one value per key, so no duplicate headers here).
        let env = full().with_headers([("source", "api")].into_iter().collect());
        let row = serde_json::json!({ "id": 7, "envelope": env });
        let back: Envelope = serde_json::from_value(row["envelope"].clone()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn serialize_fails_where_encode_json_fails() {
        for env in [
            minimal().with_tenant_id("acme"),
            Envelope::new("order-1", "T", 1, "not json"),
            Envelope::new("order-1", "T", 1, ""),
        ] {
            let err = serde_json::to_string(&env).unwrap_err();
            assert_eq!(err.to_string(), env.encode_json().unwrap_err().to_string());
        }
    }

    #[test]
    fn deserialize_reads_go_text_like_decode_json() {
        for go in [GO_TENANT_42, GO_NO_TENANT_UTC] {
            let env: Envelope = serde_json::from_str(go).unwrap();
            assert_eq!(env, Envelope::decode_json(go.as_bytes()).unwrap());
            let from_reader: Envelope = serde_json::from_reader(go.as_bytes()).unwrap();
            assert_eq!(from_reader, env);
        }
        let bad = GO_TENANT_42.replace(r#""event_version":3"#, r#""event_version":0"#);
        let err = serde_json::from_str::<Envelope>(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid envelope: invalid event version 0: must be positive"
        );
        let err = serde_json::from_str::<Envelope>(r#"{"tenant_id":1.5}"#).unwrap_err();
        assert!(err.to_string().contains("tenant"), "{err}");
    }
}
