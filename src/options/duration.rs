//! Durations in config: `"250ms"`, `"10s"`, `"1m30s"`, `"7d"`.
//!
//! Used as `#[serde(with = "crate::options::duration")]` (and
//! `duration::option` for `Option<Duration>`).
//!
//! # Algorithm
//!
//! Reading hands the text to `humantime`'s parser: units `ns`, `us`/`µs`,
//! `ms`, `s`, `m`, `h`, `d`, `w` and their long forms (`sec`, `min`,
//! `hours`, `days`, …), several parts in a row (`1m30s`, `1h 15m`) and
//! decimal fractions (`1.5s`). A bare number (`10`, or TOML `10` without
//! quotes) is refused, with an example, rather than guessed: `10` read as
//! milliseconds where seconds were meant is off by a factor of 1000. Our
//! own error text replaces the parser's, naming the accepted forms.
//!
//! Writing picks the largest unit that holds the duration exactly (`7d`,
//! `2m`, `90s`, `1500ms`, `20us`, `7ns`); beyond what a `u64` count of
//! nanoseconds holds it writes seconds and nanoseconds (`…s 5ns`).
//!
//! # Invariants
//!
//! - `parse(&format(d)) == Ok(d)` for every `Duration`, so a written config
//!   reads back unchanged.
//! - Negative durations and numbers without a unit are errors.

use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// The example every duration error ends with.
const EXAMPLE: &str = "a duration needs a unit, such as \"10s\", \"250ms\" or \"1m30s\"";

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// `Option<Duration>` in the same format; `None` when absent or null.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        struct OptVisitor;
        impl<'de> Visitor<'de> for OptVisitor {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\", or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                super::deserialize(d).map(Some)
            }
        }
        d.deserialize_option(OptVisitor)
    }
}

/// The shortest exact text for `d` that [`parse`] reads back.
pub(crate) fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 {
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs != 0 && secs.is_multiple_of(size) {
                return format!("{}{unit}", secs / size);
            }
        }
        return format!("{secs}s");
    }
    let nanos = d.as_nanos();
    // humantime counts sub-second units in a u64 of nanoseconds.
    if nanos <= u128::from(u64::MAX) {
        for (unit, size) in [("ms", 1_000_000), ("us", 1_000), ("ns", 1)] {
            if nanos.is_multiple_of(size) {
                return format!("{}{unit}", nanos / size);
            }
        }
    }
    format!("{secs}s {}ns", d.subsec_nanos())
}

/// Reads a duration; the error names the accepted forms.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;

    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("a duration cannot be negative (`{text}`)"));
    }
    humantime::parse_duration(text).map_err(|e| match e {
        E::Empty => format!("empty duration: {EXAMPLE}"),
        E::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("`{text}` has a number without a unit: {EXAMPLE}")
        }
        E::UnknownUnit { unit, .. } => format!(
            "unknown unit `{unit}` in duration `{text}`; units are ns, us, ms, s, m, h, d and w, \
             as in \"250ms\" or \"1m30s\""
        ),
        E::NumberOverflow => {
            format!("duration `{text}` is too large, or finer than a nanosecond")
        }
        _ => format!("`{text}` is not a duration: {EXAMPLE}"),
    })
}

struct DurationVisitor;

impl DurationVisitor {
    fn bare<E: de::Error>(number: impl std::fmt::Display) -> E {
        E::custom(format_args!("`{number}` has no unit: {EXAMPLE}"))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(EXAMPLE)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(Self::bare(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(Self::bare(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(Self::bare(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h 15m"), Ok(Duration::from_secs(4500)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("20us"), Ok(Duration::from_micros(20)));
    }

    #[test]
    fn refuses_with_the_accepted_forms() {
        for (text, says) in [
            ("10", "`10` has a number without a unit"),
            ("", "empty duration"),
            ("5 parsecs", "unknown unit `parsecs`"),
            ("-1s", "cannot be negative"),
            ("s", "is not a duration"),
            ("99999999999999999999999s", "too large"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
            if !err.contains("unknown unit") && !err.contains("negative") && !err.contains("large")
            {
                assert!(err.contains(EXAMPLE), "{text:?}: {err}");
            }
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(20), "20us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::new(u64::MAX, 5), "18446744073709551615s 5ns"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d), "{text}");
        }
    }

    proptest! {
        #[test]
        fn format_reads_back(secs in any::<u64>(), nanos in 0u32..1_000_000_000, small in any::<bool>()) {
            let d = if small {
                Duration::new(secs % 100_000, nanos)
            } else {
                Duration::new(secs, nanos)
            };
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
