//! Subscription topic patterns: exact names and NATS-style wildcards.
//!
//! A pattern is a topic name whose segments (the parts between dots) may be
//! wildcards, written as NATS writes them:
//!
//! - `*` stands for exactly one segment: `orders.*` matches `orders.created`
//!   but neither `orders` nor `orders.eu.created`;
//! - `>` stands for one or more trailing segments and may only be the last
//!   segment: `orders.>` matches `orders.created` and `orders.eu.created`
//!   but not `orders`.
//!
//! A wildcard is always a whole segment (`ord*` is refused, not a prefix
//! match). Every other segment follows the topic-name rules
//! ([`validate_topic_name`]). Publishing needs an exact topic: a publish
//! name holding `*` or `>` is refused with [`TopicError::Wildcard`].
//!
//! A wildcard subscription's default dead-letter topic is `dlq.` then the
//! pattern with each wildcard segment written `_` (`orders.*` →
//! `dlq.orders._`): the usual `{topic}.dlq` would hold a wildcard, and a
//! suffix stays inside a `>` pattern. A dead-letter topic that the
//! subscription's own pattern matches (say `>`'s) would send dead letters
//! back to it, so subscribe refuses it.
//!
//! # Algorithm
//!
//! Parsing replaces each wildcard segment with a one-letter stand-in and
//! checks the result as a topic name, so a pattern accepts exactly the
//! alphabet, length and segment rules of a name, with the same errors and
//! byte offsets. Matching walks the topic once, segment by segment, against
//! the parsed segments, without allocating. Matching only runs on the
//! registry's cold path (subscribe, unsubscribe, the first publish to a
//! topic while wildcard subscriptions exist), never per publish.
//!
//! # Invariants
//!
//! - An exact pattern (no wildcard) matches its own text and nothing else.
//! - A parsed pattern's literal segments are valid topic-name segments, so
//!   a pattern can only match valid topic names.

use crate::{validate_topic_name, ConfigError, DeadLetter, TopicError};

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Matches itself.
    Literal(Box<str>),
    /// `*`: any one segment.
    One,
    /// `>`: one or more segments, to the end (always the last segment).
    Rest,
}

/// A parsed subscription topic: an exact name or a wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    segments: Box<[Segment]>,
}

/// True when `name` holds a wildcard character (`*` or `>`) anywhere.
#[inline]
pub(crate) fn has_wildcard(name: &str) -> bool {
    name.bytes().any(|b| b == b'*' || b == b'>')
}

/// Checks a name for publishing: an exact topic name. A wildcard character
/// gets [`TopicError::Wildcard`], anything else [`validate_topic_name`]'s
/// error.
pub(crate) fn validate_publish_name(name: &str) -> Result<(), TopicError> {
    if crate::topic::is_plain_name(name) {
        return Ok(());
    }
    if let Some((index, ch)) = name.char_indices().find(|&(_, c)| c == '*' || c == '>') {
        return Err(TopicError::Wildcard { ch, index });
    }
    validate_topic_name(name)
}

impl Pattern {
    /// Parses a subscription topic.
    pub(crate) fn parse(text: &str) -> Result<Self, TopicError> {
        if !has_wildcard(text) {
            validate_topic_name(text)?;
            let segments = text
                .split('.')
                .map(|s| Segment::Literal(s.into()))
                .collect();
            return Ok(Self { segments });
        }
        let mut stand_in = String::with_capacity(text.len());
        let mut segments = Vec::new();
        let mut offset = 0;
        let count = text.split('.').count();
        for (i, seg) in text.split('.').enumerate() {
            if i > 0 {
                stand_in.push('.');
            }
            match seg {
                "*" => {
                    segments.push(Segment::One);
                    stand_in.push('x');
                }
                ">" if i + 1 == count => {
                    segments.push(Segment::Rest);
                    stand_in.push('x');
                }
                _ => {
                    if let Some((at, ch)) = seg.char_indices().find(|&(_, c)| c == '*' || c == '>')
                    {
                        return Err(TopicError::MisplacedWildcard {
                            ch,
                            index: offset + at,
                        });
                    }
                    segments.push(Segment::Literal(seg.into()));
                    stand_in.push_str(seg);
                }
            }
            offset += seg.len() + 1;
        }
        validate_topic_name(&stand_in)?;
        Ok(Self {
            segments: segments.into(),
        })
    }

    /// True when the pattern holds a wildcard.
    pub(crate) fn is_wildcard(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !matches!(s, Segment::Literal(_)))
    }

    /// The dead-letter topic of a subscription to this pattern, written
    /// `text`: [`DeadLetter::topic_for`] for an exact topic; for a wildcard
    /// pattern the default is `dlq.` and the pattern with `_` for each
    /// wildcard segment, and a topic the pattern matches is refused
    /// (`field` names the option in the error).
    pub(crate) fn dead_letter_topic(
        &self,
        text: &str,
        dead_letter: &DeadLetter,
        field: &str,
    ) -> Result<Option<String>, ConfigError> {
        let topic = match dead_letter {
            DeadLetter::Default if self.is_wildcard() => {
                let segments: Vec<&str> = self
                    .segments
                    .iter()
                    .map(|s| match s {
                        Segment::Literal(l) => &**l,
                        Segment::One | Segment::Rest => "_",
                    })
                    .collect();
                Some(format!("dlq.{}", segments.join(".")))
            }
            other => other.topic_for(text),
        };
        match topic {
            // Its dead letters would come back to it, and a full lane would
            // wait on itself.
            Some(t) if !self.is_wildcard() && t == text => Err(ConfigError::invalid(
                field,
                format!("`{t}` is the subscribed topic itself, so dead letters would loop"),
            )),
            Some(t) if self.matches(&t) => Err(ConfigError::invalid(
                field,
                format!(
                    "dead-letter topic {t} matches the subscription's own pattern {text}, so dead letters would come back to it: name a topic outside the pattern, or disable dead-lettering"
                ),
            )),
            t => Ok(t),
        }
    }

    /// Whether the exact topic `topic` matches.
    pub(crate) fn matches(&self, topic: &str) -> bool {
        let mut rest = Some(topic);
        for seg in self.segments.iter() {
            let Some(r) = rest else {
                // The topic ran out of segments first.
                return false;
            };
            if let Segment::Rest = seg {
                // One or more segments remain: `r` is never empty for a
                // valid topic, but check rather than assume.
                return !r.is_empty();
            }
            let (head, tail) = match r.split_once('.') {
                Some((h, t)) => (h, Some(t)),
                None => (r, None),
            };
            match seg {
                Segment::Literal(l) if **l != *head => return false,
                _ => {}
            }
            rest = tail;
        }
        rest.is_none()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The model: NATS subject matching by recursion on segment lists.
    fn model(pattern: &[&str], topic: &[&str]) -> bool {
        match (pattern.split_first(), topic.split_first()) {
            (None, None) => true,
            (Some((&">", rest)), Some(_)) => rest.is_empty(),
            (Some((&"*", p)), Some((_, t))) => model(p, t),
            (Some((lit, p)), Some((seg, t))) => lit == seg && model(p, t),
            _ => false,
        }
    }

    fn matches(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern)
            .expect("valid pattern")
            .matches(topic)
    }

    #[test]
    fn one_segment_and_the_rest() {
        assert!(matches("orders.*", "orders.created"));
        assert!(!matches("orders.*", "orders"));
        assert!(!matches("orders.*", "orders.eu.created"));
        assert!(matches("orders.>", "orders.created"));
        assert!(matches("orders.>", "orders.eu.created"));
        assert!(!matches("orders.>", "orders"));
        assert!(!matches("orders.>", "ordersx.created"));
        assert!(matches("*.created", "orders.created"));
        assert!(matches("a.*.c.>", "a.b.c.d.e"));
        assert!(!matches("a.*.c.>", "a.b.c"));
        assert!(matches(">", "a"));
        assert!(matches(">", "a.b.c"));
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders.x"));
        assert!(!matches("orders", "order"));
    }

    #[test]
    fn parse_errors() {
        assert!(!Pattern::parse("orders.created").unwrap().is_wildcard());
        assert!(Pattern::parse("orders.*").unwrap().is_wildcard());
        assert_eq!(
            Pattern::parse("orders.>.x"),
            Err(TopicError::MisplacedWildcard { ch: '>', index: 7 })
        );
        assert_eq!(
            Pattern::parse("ord*.x"),
            Err(TopicError::MisplacedWildcard { ch: '*', index: 3 })
        );
        assert_eq!(
            Pattern::parse("a.**"),
            Err(TopicError::MisplacedWildcard { ch: '*', index: 2 })
        );
        assert_eq!(Pattern::parse("a..*"), Err(TopicError::EmptySegment));
        assert_eq!(Pattern::parse("*."), Err(TopicError::EmptySegment));
        assert_eq!(
            Pattern::parse("a b.*"),
            Err(TopicError::InvalidChar { ch: ' ', index: 1 })
        );
        assert_eq!(Pattern::parse(""), Err(TopicError::Empty));
        let long = format!("{}.>", "x".repeat(248));
        assert_eq!(Pattern::parse(&long), Err(TopicError::TooLong { len: 250 }));
    }

    #[test]
    fn wildcard_dead_letter_topics() {
        let dl = |p: &str, d: DeadLetter| Pattern::parse(p).unwrap().dead_letter_topic(p, &d, "o");
        assert_eq!(
            dl("orders", DeadLetter::Default).unwrap().as_deref(),
            Some("orders.dlq")
        );
        assert_eq!(
            dl("orders.*", DeadLetter::Default).unwrap().as_deref(),
            Some("dlq.orders._")
        );
        assert_eq!(
            dl("orders.>", DeadLetter::Default).unwrap().as_deref(),
            Some("dlq.orders._")
        );
        assert_eq!(
            dl("*.created", DeadLetter::Default).unwrap().as_deref(),
            Some("dlq._.created")
        );
        assert_eq!(dl("orders.*", DeadLetter::Disabled).unwrap(), None);
        let own = DeadLetter::Topic("orders.failed".into());
        assert_eq!(dl("orders.*", own.clone()).unwrap_err().field(), Some("o"));
        assert!(dl("orders.*.x", own).is_ok());
        assert!(
            dl(">", DeadLetter::Default).is_err(),
            "`>` matches every topic"
        );
        assert!(dl("*.>", DeadLetter::Default).is_err());
    }

    #[test]
    fn publish_names() {
        assert!(validate_publish_name("orders.created").is_ok());
        assert_eq!(
            validate_publish_name("orders.*"),
            Err(TopicError::Wildcard { ch: '*', index: 7 })
        );
        assert_eq!(
            validate_publish_name("a>"),
            Err(TopicError::Wildcard { ch: '>', index: 1 })
        );
        assert_eq!(validate_publish_name(""), Err(TopicError::Empty));
    }

    proptest! {
        /// The matcher agrees with the model on patterns and topics from a
        /// tiny alphabet (so that matches are common).
        #[test]
        fn matcher_agrees_with_model(
            pattern in prop::collection::vec(prop_oneof!["a", "b", "ab", Just("*".to_owned()), Just(">".to_owned())], 1..5),
            topic in prop::collection::vec(prop_oneof!["a", "b", "ab"], 1..6),
        ) {
            let text = pattern.join(".");
            let name = topic.join(".");
            let model_pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
            let model_topic: Vec<&str> = topic.iter().map(String::as_str).collect();
            match Pattern::parse(&text) {
                Ok(p) => prop_assert_eq!(p.matches(&name), model(&model_pattern, &model_topic), "{} vs {}", text, name),
                // Only a `>` before the end is refused here.
                Err(e) => {
                    let gt = pattern.iter().position(|s| s == ">");
                    prop_assert!(matches!(gt, Some(i) if i + 1 < pattern.len()), "{} refused: {}", text, e);
                    let misplaced_gt = matches!(e, TopicError::MisplacedWildcard { ch: '>', .. });
                    prop_assert!(misplaced_gt, "{}: {:?}", text, e);
                }
            }
        }

        /// An exact name parses as exact and matches itself only.
        #[test]
        fn exact_matches_itself_only(a in "[ab]{1,3}(\\.[ab]{1,3}){0,3}", b in "[ab]{1,3}(\\.[ab]{1,3}){0,3}") {
            let p = Pattern::parse(&a).unwrap();
            prop_assert!(!p.is_wildcard());
            prop_assert!(p.matches(&a));
            prop_assert_eq!(p.matches(&b), a == b);
        }
    }
}
