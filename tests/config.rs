//! Configuration from YAML and TOML; validation names the bad field.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanebus::{
    Bus, BusConfig, ConfigError, DeadLetter, Persistence, RetryPolicy, TopicOptions, TransportKind,
};

const YAML: &str = r#"
type: memory
close_timeout: 10s
subscribe:
  lanes: 16
  ring_capacity: 4096
  drain_batch: 32
  retry:
    max_attempts: 5
    initial_backoff: 20ms
    max_backoff: 2s
    multiplier: 3.0
  dead_letter:
    topic: orders.failed
topics:
  orders.events:
    persistence: persistent
    retention: { max_age: 7d, max_messages: 1000000 }
    partitions: 6
    replicas: 3
  notifications:
    persistence: ephemeral
"#;

const TOML: &str = r#"
type = "memory"
close_timeout = "10s"

[subscribe]
lanes = 16
ring_capacity = 4096
drain_batch = 32
dead_letter = { topic = "orders.failed" }

[subscribe.retry]
max_attempts = 5
initial_backoff = "20ms"
max_backoff = "2s"
multiplier = 3.0

[topics."orders.events"]
persistence = "persistent"
partitions = 6
replicas = 3
retention = { max_age = "7d", max_messages = 1000000 }

[topics.notifications]
persistence = "ephemeral"
"#;

#[test]
fn yaml_and_toml_read_the_same_config() {
    let y = BusConfig::from_yaml_str(YAML).unwrap();
    let t = BusConfig::from_toml_str(TOML).unwrap();
    assert_eq!(y, t);
    assert_eq!(y.transport, TransportKind::Memory);
    assert_eq!(y.close_timeout, Duration::from_secs(10));
    assert_eq!(y.subscribe.lanes, 16);
    assert_eq!(y.subscribe.retry.max_attempts, 5);
    assert_eq!(y.subscribe.retry.initial_backoff, Duration::from_millis(20));
    assert_eq!(
        y.subscribe.dead_letter,
        DeadLetter::Topic("orders.failed".into())
    );
    let orders = &y.topics["orders.events"];
    assert_eq!(orders.persistence, Persistence::Persistent);
    assert_eq!(
        orders.retention.max_age,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(orders.partitions, 6);
}

#[test]
fn defaults_fill_what_is_absent() {
    let c = BusConfig::from_yaml_str("type: memory\n").unwrap();
    assert_eq!(c, BusConfig::default());
    let c = BusConfig::from_toml_str("").unwrap();
    assert_eq!(c, BusConfig::default());
}

#[test]
fn config_round_trips_through_yaml() {
    let c = BusConfig::from_yaml_str(YAML).unwrap();
    let text = serde_yaml_ng::to_string(&c).unwrap();
    assert_eq!(BusConfig::from_yaml_str(&text).unwrap(), c);
}

#[test]
fn bad_values_name_the_field() {
    let cases = [
        ("type: memory\nsubscribe:\n  lanes: 0\n", "subscribe.lanes"),
        (
            "subscribe:\n  ring_capacity: 0\n",
            "subscribe.ring_capacity",
        ),
        (
            "subscribe:\n  retry:\n    max_attempts: 0\n",
            "subscribe.retry.max_attempts",
        ),
        (
            "subscribe:\n  retry:\n    multiplier: 0.5\n",
            "subscribe.retry.multiplier",
        ),
        (
            "subscribe:\n  dead_letter:\n    topic: 'bad topic'\n",
            "subscribe.dead_letter.topic",
        ),
        ("topics:\n  t:\n    partitions: 0\n", "topics.t.partitions"),
        ("topics:\n  'a b':\n    partitions: 1\n", "topics.a b"),
        ("close_timeout: 0s\n", "close_timeout"),
    ];
    for (text, field) in cases {
        match BusConfig::from_yaml_str(text) {
            Err(e @ ConfigError::Invalid { .. }) => {
                assert_eq!(e.field(), Some(field), "{text}");
                assert!(e.to_string().contains(field), "{e}");
            }
            other => panic!("{text}: expected invalid {field}, got {other:?}"),
        }
    }
    let e = BusConfig::from_toml_str("[subscribe]\nlanes = 0\n").unwrap_err();
    assert_eq!(e.field(), Some("subscribe.lanes"));
}

#[test]
fn unknown_fields_and_bad_types_are_named() {
    let e = BusConfig::from_yaml_str("subscribe:\n  lane: 4\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { format: "yaml", .. }));
    assert!(e.to_string().contains("lane"), "{e}");
    let e = BusConfig::from_yaml_str("type: carrier-pigeon\n").unwrap_err();
    assert!(e.to_string().contains("carrier-pigeon"), "{e}");
    let e = BusConfig::from_toml_str("close_timeout = \"5 fortnights\"\n").unwrap_err();
    assert!(e.to_string().contains("fortnights"), "{e}");
    let e = BusConfig::from_toml_str("[subscribe]\nlanes = \"many\"\n").unwrap_err();
    assert!(
        matches!(e, ConfigError::Parse { format: "toml", .. }),
        "{e}"
    );
}

#[test]
fn config_files_are_read_by_extension() {
    let dir = std::env::temp_dir().join(format!("lanebus-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let y = dir.join("bus.yaml");
    let t = dir.join("bus.toml");
    std::fs::write(&y, YAML).unwrap();
    std::fs::write(&t, TOML).unwrap();
    assert_eq!(
        BusConfig::from_file(&y).unwrap(),
        BusConfig::from_file(&t).unwrap()
    );
    assert!(matches!(
        BusConfig::from_file(dir.join("missing.yaml")),
        Err(ConfigError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bus_from_config_applies_it() {
    let bus = Bus::from_config(BusConfig::from_yaml_str(YAML).unwrap()).unwrap();
    assert_eq!(
        bus.list_topics().await.unwrap(),
        vec!["notifications".to_string(), "orders.events".to_string()]
    );
    assert_eq!(bus.config().subscribe.lanes, 16);
    let sub = bus
        .subscribe("orders.events", |_m: lanebus::Message| async {
            Ok::<(), lanebus::HandlerError>(())
        })
        .await
        .unwrap();
    assert_eq!(
        sub.stats().lanes.len(),
        16,
        "default subscribe options come from the config"
    );
    bus.close().await.unwrap();
}

/// The example every duration error shows.
const DURATION_EXAMPLE: &str = r#"such as "10s", "250ms" or "1m30s""#;

#[test]
fn durations_take_compound_and_fractional_forms() {
    let y = BusConfig::from_yaml_str(
        "close_timeout: 1m30s\nsubscribe:\n  retry: { initial_backoff: 1.5s, max_backoff: 1h 15m }\n",
    )
    .unwrap();
    let t = BusConfig::from_toml_str(
        "close_timeout = \"1m30s\"\n[subscribe.retry]\ninitial_backoff = \"1.5s\"\nmax_backoff = \"1h 15m\"\n",
    )
    .unwrap();
    assert_eq!(y, t);
    assert_eq!(y.close_timeout, Duration::from_secs(90));
    assert_eq!(
        y.subscribe.retry.initial_backoff,
        Duration::from_millis(1500)
    );
    assert_eq!(y.subscribe.retry.max_backoff, Duration::from_secs(4500));
}

#[test]
fn bare_numbers_are_refused_with_an_example() {
    let yaml = [
        ("close_timeout: 10\n", "close_timeout", 1),
        (
            "subscribe:\n  retry:\n    max_backoff: 2.5\n",
            "subscribe.retry.max_backoff",
            3,
        ),
        (
            "topics:\n  t:\n    retention: { max_age: 7 }\n",
            "topics.t.retention.max_age",
            3,
        ),
    ];
    for (text, field, line) in yaml {
        let e = BusConfig::from_yaml_str(text).unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { format: "yaml", .. }),
            "{e}"
        );
        assert_eq!((e.field(), e.line()), (Some(field), Some(line)), "{e}");
        assert!(e.to_string().contains(DURATION_EXAMPLE), "{e}");
    }
    let toml = [
        ("close_timeout = 10\n", "close_timeout", 1),
        ("close_timeout = \"10\"\n", "close_timeout", 1),
        (
            "[subscribe.retry]\ninitial_backoff = 20\n",
            "subscribe.retry.initial_backoff",
            2,
        ),
    ];
    for (text, field, line) in toml {
        let e = BusConfig::from_toml_str(text).unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { format: "toml", .. }),
            "{e}"
        );
        assert_eq!((e.field(), e.line()), (Some(field), Some(line)), "{e}");
        assert!(e.to_string().contains(DURATION_EXAMPLE), "{e}");
    }
    let e = BusConfig::from_yaml_str("close_timeout: 5 fortnights\n").unwrap_err();
    assert!(e.to_string().contains("unknown unit `fortnights`"), "{e}");
}

#[test]
fn dead_letter_typos_name_the_path_and_the_accepted_forms() {
    let forms = "`default`, `disabled` or `{ topic: <name> }`";
    let cases = [
        (
            BusConfig::from_yaml_str("subscribe:\n  dead_letter: { topc: x }\n"),
            "unknown field `topc`",
        ),
        (
            BusConfig::from_toml_str("[subscribe]\ndead_letter = { topc = \"x\" }\n"),
            "unknown field `topc`",
        ),
        (
            BusConfig::from_yaml_str("subscribe:\n  dead_letter: disable\n"),
            "unknown dead_letter `disable`",
        ),
        (
            BusConfig::from_toml_str("[subscribe]\ndead_letter = 5\n"),
            "invalid type: integer `5`",
        ),
        (
            BusConfig::from_yaml_str("subscribe:\n  dead_letter: {}\n"),
            "has no `topic`",
        ),
    ];
    for (result, says) in cases {
        let e = result.unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert_eq!(e.field(), Some("subscribe.dead_letter"), "{e}");
        assert_eq!(e.line(), Some(2), "{e}");
        let text = e.to_string();
        assert!(text.contains(says) && text.contains(forms), "{text}");
        assert!(!text.contains("untagged"), "{text}");
    }
}

/// A parse error of `format` that names `field` at `(line, column)`, in its
/// accessors and in its text.
fn assert_parse_error(
    format: &str,
    parsed: Result<BusConfig, ConfigError>,
    field: &str,
    (line, column): (usize, usize),
) {
    let e = parsed.unwrap_err();
    assert!(
        matches!(&e, ConfigError::Parse { format: f, .. } if *f == format),
        "{e}"
    );
    assert_eq!(e.field(), Some(field), "{e}");
    assert_eq!((e.line(), e.column()), (Some(line), Some(column)), "{e}");
    let shown = e.to_string();
    assert!(shown.contains(&format!("`{field}`")), "{shown}");
    assert!(shown.contains(&format!("line {line}")), "{shown}");
}

#[test]
fn type_errors_name_the_field_and_the_position_in_both_formats() {
    let toml = [
        ("[subscribe]\nlanes = -1\n", "subscribe.lanes", (2, 9)),
        (
            "[subscribe]\nring_capacity = \"big\"\n",
            "subscribe.ring_capacity",
            (2, 17),
        ),
        (
            "[subscribe]\nlanes = 4\n\n[subscribe.retry]\nmax_attempts = -3\n",
            "subscribe.retry.max_attempts",
            (5, 16),
        ),
    ];
    for (text, field, at) in toml {
        assert_parse_error("toml", BusConfig::from_toml_str(text), field, at);
    }
    let yaml = [
        ("subscribe:\n  lanes: -1\n", "subscribe.lanes", (2, 10)),
        (
            "subscribe:\n  ring_capacity: big\n",
            "subscribe.ring_capacity",
            (2, 18),
        ),
        (
            "subscribe:\n  retry:\n    max_attempts: -3\n",
            "subscribe.retry.max_attempts",
            (3, 19),
        ),
    ];
    for (text, field, at) in yaml {
        assert_parse_error("yaml", BusConfig::from_yaml_str(text), field, at);
    }
    // An unknown key names itself in the path; a syntax error has a position only.
    let e = BusConfig::from_toml_str("[subscribe]\nlane = 4\n").unwrap_err();
    assert_eq!((e.field(), e.line()), (Some("subscribe.lane"), Some(2)));
    let e = BusConfig::from_toml_str("x = = 1\n").unwrap_err();
    assert_eq!((e.field(), e.line()), (None, Some(1)));
}

#[test]
fn config_round_trips_through_toml_and_odd_durations() {
    let mut c = BusConfig::from_toml_str(TOML).unwrap();
    c.close_timeout = Duration::from_millis(1500);
    c.subscribe.retry =
        RetryPolicy::attempts(4).with_backoff(Duration::from_micros(250), Duration::from_secs(90));
    c.topics.insert(
        "audit".into(),
        TopicOptions::persistent().max_age(Duration::new(86_400, 7)),
    );
    let toml_text = toml::to_string(&c).unwrap();
    assert_eq!(
        BusConfig::from_toml_str(&toml_text).unwrap(),
        c,
        "{toml_text}"
    );
    let yaml_text = serde_yaml_ng::to_string(&c).unwrap();
    assert_eq!(
        BusConfig::from_yaml_str(&yaml_text).unwrap(),
        c,
        "{yaml_text}"
    );
    for dead_letter in [DeadLetter::Default, DeadLetter::Disabled] {
        c.subscribe.dead_letter = dead_letter;
        let text = toml::to_string(&c).unwrap();
        assert_eq!(BusConfig::from_toml_str(&text).unwrap(), c, "{text}");
        let text = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(BusConfig::from_yaml_str(&text).unwrap(), c, "{text}");
    }
}

/// Collects every event as `LEVEL field=value ...`.
struct Capture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn options_the_memory_transport_cannot_honour_are_warned_once() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(Capture(logs.clone()), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // orders.events sets retention, partitions and replicas;
            // notifications only persistence.
            let bus = Bus::from_config(BusConfig::from_yaml_str(YAML).unwrap()).unwrap();
            bus.configure_topic("audit", TopicOptions::persistent())
                .await
                .unwrap();
            bus.configure_topic("billing", TopicOptions::default().replicas(3))
                .await
                .unwrap();
            bus.close().await.unwrap();
        });
    });
    let logs = logs.lock().unwrap();
    let warnings: Vec<&String> = logs.iter().filter(|l| l.starts_with("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{logs:#?}");
    let orders = warnings[0];
    assert!(orders.contains("topic=\"orders.events\""), "{orders}");
    assert!(orders.contains("transport=\"memory\""), "{orders}");
    for field in [
        "retention.max_age",
        "retention.max_messages",
        "partitions",
        "replicas",
    ] {
        assert!(orders.contains(field), "{orders}");
    }
    assert!(!orders.contains("max_bytes"), "{orders}");
    let billing = warnings[1];
    assert!(
        billing.contains("topic=\"billing\"") && billing.contains("options=replicas"),
        "{billing}"
    );
}
