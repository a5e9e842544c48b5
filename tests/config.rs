//! Configuration from YAML and TOML; validation names the bad field.

use std::time::Duration;

use lanebus::{Bus, BusConfig, ConfigError, DeadLetter, Persistence, TransportKind};

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
        bus.list_topics(),
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
