//! The name and config of a topic's JetStream stream, from its
//! [`TopicOptions`] and back.
//!
//! # Algorithm
//!
//! - **Name**: `options.stream` when set, else the topic escaped into the
//!   stream alphabet: `-` → `--`, `_` → `-_`, `.` → `_`, letters and
//!   digits as they are. Read left to right, a `-` always opens a
//!   two-character token and a lone `_` is always a `.`, so a name decodes
//!   to one topic only.
//! - **Config**: subjects `[topic]`, retention `limits`, `max_age`,
//!   `max_bytes`, `max_msgs` (unset → unlimited: 0 for the age, -1 for the
//!   counts, a count above `i64::MAX` as `i64::MAX`), storage, replicas,
//!   discard, description (an empty one as none); everything else at
//!   async-nats's defaults, which the server fills in (the duplicate window:
//!   2 min, or `max_age` when shorter).
//! - **Difference**: the fields above compared in that order, each shown
//!   as the options spell it (`1h`, `unlimited`, `memory`, `new`).
//! - **Back**: the server's config mapped onto a persistent topic's
//!   options; the stream name only when it is not the derived one.
//!
//! # Invariants
//!
//! - Distinct topics get distinct derived names, made only of
//!   `A-Z a-z 0-9 - _` (tested by a decoder, an exhaustive check of short
//!   names and properties).
//! - Read back what was written: `topic_options(stream_config(o)) == o`
//!   for every persistent `o` with one partition, counts up to `i64::MAX`
//!   and no empty description (tested by property).

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

use crate::options::duration;
use crate::{Discard, Persistence, Retention, Storage, TopicOptions};

/// The longest stream name the server accepts.
pub(crate) const MAX_STREAM_NAME: usize = 255;

/// The stream name of `topic`: `options.stream` when set, else derived.
pub(crate) fn stream_name(topic: &str, options: Option<&TopicOptions>) -> String {
    match options.and_then(|o| o.stream.as_deref()) {
        Some(name) => name.to_owned(),
        None => derived_name(topic),
    }
}

/// The topic escaped into the stream-name alphabet (see the module docs).
pub(crate) fn derived_name(topic: &str) -> String {
    let mut name = String::with_capacity(topic.len() + topic.len() / 4);
    for c in topic.chars() {
        match c {
            '-' => name.push_str("--"),
            '_' => name.push_str("-_"),
            '.' => name.push('_'),
            c => name.push(c),
        }
    }
    name
}

/// The stream config of `topic` from its options (see the module docs).
pub(crate) fn stream_config(topic: &str, name: &str, options: &TopicOptions) -> Config {
    let limit = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    Config {
        name: name.to_owned(),
        subjects: vec![topic.to_owned()],
        retention: RetentionPolicy::Limits,
        max_age: options.retention.max_age.unwrap_or(Duration::ZERO),
        max_bytes: limit(options.retention.max_bytes),
        max_messages: limit(options.retention.max_messages),
        storage: match options.storage {
            Storage::Memory => StorageType::Memory,
            _ => StorageType::File,
        },
        num_replicas: options.replicas as usize,
        discard: match options.discard {
            Discard::New => DiscardPolicy::New,
            _ => DiscardPolicy::Old,
        },
        description: options.description.clone().filter(|d| !d.is_empty()),
        ..Config::default()
    }
}

/// The server's `config` with the fields lanebus sets taken from `wanted`
/// and the duplicate window left to the server again.
pub(crate) fn updated(mut config: Config, wanted: &Config) -> Config {
    config.retention = wanted.retention;
    config.max_age = wanted.max_age;
    config.max_bytes = wanted.max_bytes;
    config.max_messages = wanted.max_messages;
    config.storage = wanted.storage;
    config.num_replicas = wanted.num_replicas;
    config.discard = wanted.discard;
    config.description = wanted.description.clone();
    config.duplicate_window = Duration::ZERO;
    config
}

/// A field where the server's stream and the options differ.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Difference {
    /// Its name in the topic's options (`retention.max_age`, `storage`, …).
    pub(crate) field: &'static str,
    /// The server's value.
    pub(crate) server: String,
    /// The options' value.
    pub(crate) wanted: String,
}

/// The first field lanebus sets where `server` differs from `wanted`.
pub(crate) fn first_difference(server: &Config, wanted: &Config) -> Option<Difference> {
    let age = |d: Duration| {
        if d.is_zero() {
            "unlimited".to_owned()
        } else {
            duration::format(d)
        }
    };
    let count = |v: i64| {
        if v < 0 {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    let description = |d: &Option<String>| match d.as_deref() {
        None | Some("") => "none".to_owned(),
        Some(d) => format!("{d:?}"),
    };
    let fields = [
        (
            "retention policy",
            format!("{:?}", server.retention).to_lowercase(),
            format!("{:?}", wanted.retention).to_lowercase(),
        ),
        (
            "retention.max_age",
            age(server.max_age),
            age(wanted.max_age),
        ),
        (
            "retention.max_bytes",
            count(server.max_bytes),
            count(wanted.max_bytes),
        ),
        (
            "retention.max_messages",
            count(server.max_messages),
            count(wanted.max_messages),
        ),
        (
            "storage",
            format!("{:?}", server.storage).to_lowercase(),
            format!("{:?}", wanted.storage).to_lowercase(),
        ),
        (
            "replicas",
            server.num_replicas.to_string(),
            wanted.num_replicas.to_string(),
        ),
        (
            "discard",
            format!("{:?}", server.discard).to_lowercase(),
            format!("{:?}", wanted.discard).to_lowercase(),
        ),
        (
            "description",
            description(&server.description),
            description(&wanted.description),
        ),
    ];
    fields
        .into_iter()
        .find(|(_, s, w)| s != w)
        .map(|(field, server, wanted)| Difference {
            field,
            server,
            wanted,
        })
}

/// The server's stream of `topic` as topic options.
pub(crate) fn topic_options(topic: &str, config: &Config) -> TopicOptions {
    let limit = |v: i64| u64::try_from(v).ok().filter(|&v| v > 0);
    let mut options = TopicOptions::persistent();
    options.persistence = Persistence::Persistent;
    options.retention = Retention {
        max_age: Some(config.max_age).filter(|d| !d.is_zero()),
        max_bytes: limit(config.max_bytes),
        max_messages: limit(config.max_messages),
    };
    options.replicas = u32::try_from(config.num_replicas.max(1)).unwrap_or(u32::MAX);
    options.storage = match config.storage {
        StorageType::Memory => Storage::Memory,
        StorageType::File => Storage::File,
    };
    options.discard = match config.discard {
        DiscardPolicy::New => Discard::New,
        DiscardPolicy::Old => Discard::Old,
    };
    options.description = config.description.clone().filter(|d| !d.is_empty());
    options.stream = (config.name != derived_name(topic)).then(|| config.name.clone());
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate_topic_name;
    use proptest::prelude::*;

    #[test]
    fn derived_names_escape_the_topic() {
        let vectors = [
            ("orders", "orders"),
            ("orders.created", "orders_created"),
            ("user_events", "user-_events"),
            ("user-events", "user--events"),
            ("a.b_c-d", "a_b-_c--d"),
            ("a_.b", "a-__b"),
            ("--", "----"),
            ("__", "-_-_"),
            ("V1.x", "V1_x"),
        ];
        for (topic, name) in vectors {
            assert_eq!(derived_name(topic), name, "topic {topic}");
            assert_eq!(stream_name(topic, None), name);
        }
        let custom = TopicOptions::persistent().stream("ORDERS");
        assert_eq!(stream_name("orders.created", Some(&custom)), "ORDERS");
        assert_eq!(
            stream_name("orders.created", Some(&TopicOptions::persistent())),
            "orders_created"
        );
    }

    #[test]
    fn config_and_read_back_agree() {
        let options = TopicOptions::persistent()
            .max_age(Duration::from_secs(90))
            .max_bytes(1 << 20)
            .max_messages(1000)
            .storage(Storage::Memory)
            .discard(Discard::New)
            .stream("CUSTOM");
        let config = stream_config("a.b", "CUSTOM", &options);
        assert_eq!(config.subjects, ["a.b"]);
        assert_eq!(config.max_bytes, 1 << 20);
        assert_eq!(topic_options("a.b", &config), options);
        assert_eq!(first_difference(&config, &config), None);

        let plain = stream_config("a.b", "a_b", &TopicOptions::persistent());
        assert_eq!((plain.max_bytes, plain.max_messages), (-1, -1));
        assert_eq!(topic_options("a.b", &plain), TopicOptions::persistent());
        let diff = first_difference(&plain, &config).unwrap();
        assert_eq!(
            diff,
            Difference {
                field: "retention.max_age",
                server: "unlimited".into(),
                wanted: "90s".into()
            }
        );
    }

    /// The escape read backwards: a `-` opens a two-character token, a lone
    /// `_` is a `.`. That this inverts `derived_name` is what makes it
    /// injective.
    fn decode(name: &str) -> Option<String> {
        let mut topic = String::new();
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            match c {
                '-' => match chars.next()? {
                    '-' => topic.push('-'),
                    '_' => topic.push('_'),
                    _ => return None,
                },
                '_' => topic.push('.'),
                c => topic.push(c),
            }
        }
        Some(topic)
    }

    #[test]
    fn short_topics_over_the_escaped_characters_never_share_a_name() {
        let mut topics = vec![String::new()];
        let mut names = std::collections::HashMap::new();
        for _ in 0..6 {
            topics = topics
                .iter()
                .flat_map(|t| ['a', '.', '_', '-'].map(|c| format!("{t}{c}")))
                .collect();
            for t in topics.iter().filter(|t| validate_topic_name(t).is_ok()) {
                if let Some(other) = names.insert(derived_name(t), t.clone()) {
                    panic!("{t} and {other} share {}", derived_name(t));
                }
            }
        }
        assert!(names.len() > 1000, "{} topics checked", names.len());
    }

    fn topic() -> impl Strategy<Value = String> {
        // Segments over the whole topic alphabet, joined by dots.
        proptest::collection::vec("[A-Za-z0-9_-]{1,6}", 1..5).prop_map(|s| s.join("."))
    }

    /// Topics over the escape's own characters, so near misses are common.
    fn tricky_topic() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a_-]{1,4}", 1..4).prop_map(|s| s.join("."))
    }

    fn options() -> impl Strategy<Value = TopicOptions> {
        let age = proptest::option::of((1u64..=10_000_000, 0u32..1_000_000_000));
        let count = || proptest::option::of(1u64..=i64::MAX as u64);
        (
            age,
            count(),
            count(),
            1u32..=5,
            any::<bool>(),
            any::<bool>(),
            proptest::option::of("[A-Z_]{1,8}"),
            proptest::option::of("[a-z ]{1,12}"),
        )
            .prop_map(|(age, bytes, msgs, replicas, memory, new, stream, text)| {
                let mut o = TopicOptions::persistent().replicas(replicas);
                o.retention = Retention {
                    max_age: age.map(|(s, n)| Duration::new(s, n)),
                    max_bytes: bytes,
                    max_messages: msgs,
                };
                if memory {
                    o = o.storage(Storage::Memory);
                }
                if new {
                    o = o.discard(Discard::New);
                }
                o.stream = stream;
                o.description = text;
                o
            })
    }

    proptest! {
        #[test]
        fn options_read_back_as_written(o in options(), t in topic()) {
            // An override equal to the derived name reads back as none.
            prop_assume!(o.stream.as_deref() != Some(derived_name(&t).as_str()));
            let name = stream_name(&t, Some(&o));
            let config = stream_config(&t, &name, &o);
            prop_assert_eq!(topic_options(&t, &config), o);
            prop_assert_eq!(first_difference(&config, &config), None);
        }

        #[test]
        fn the_escape_decodes_back(t in topic()) {
            prop_assert_eq!(decode(&derived_name(&t)), Some(t));
        }

        #[test]
        fn distinct_topics_get_distinct_names(a in tricky_topic(), b in tricky_topic()) {
            prop_assume!(a != b);
            prop_assert_ne!(derived_name(&a), derived_name(&b));
        }

        #[test]
        fn derived_names_use_the_stream_alphabet(t in topic()) {
            let name = derived_name(&t);
            prop_assert!(name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}
