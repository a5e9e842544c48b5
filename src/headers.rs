//! Message headers: a small ordered multimap of string pairs.
//!
//! Most messages carry no headers or a handful, so a `Vec` of pairs beats a
//! hash map here: an empty `Headers` does not allocate, lookups scan a few
//! entries, and insertion order is kept for the wire. Keys compare exactly
//! (case-sensitive), as NATS and Kafka headers do.

use serde::{Deserialize, Serialize};

/// Ordered string headers carried by a [`Message`](crate::Message) or an
/// [`Envelope`](crate::Envelope).
///
/// `insert` replaces an existing value for the key; `append` keeps both.
///
/// # Examples
///
/// ```
/// use lanebus::Headers;
///
/// let mut h = Headers::new();
/// h.insert("content-type", "application/json");
/// h.insert("content-type", "text/plain");
/// assert_eq!(h.get("content-type"), Some("text/plain"));
/// assert_eq!(h.len(), 1);
/// ```
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "std::collections::BTreeMap<String, String>",
    into = "std::collections::BTreeMap<String, String>"
)]
pub struct Headers {
    pairs: Vec<(String, String)>,
}

impl Clone for Headers {
    /// Cloning empty headers (the common case on the hot path) is free.
    #[inline]
    fn clone(&self) -> Self {
        if self.pairs.is_empty() {
            Self::new()
        } else {
            Self {
                pairs: self.pairs.clone(),
            }
        }
    }
}

impl Headers {
    /// An empty set of headers; does not allocate.
    pub const fn new() -> Self {
        Self { pairs: Vec::new() }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing every earlier value of `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.pairs.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.pairs[i].1 = value;
                let mut j = i + 1;
                while j < self.pairs.len() {
                    if self.pairs[j].0 == key {
                        self.pairs.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.pairs.push((key, value)),
        }
    }

    /// Adds `key: value`, keeping earlier values of `key`.
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Removes every value of `key`; returns the first one removed.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let mut first = None;
        self.pairs.retain_mut(|(k, v)| {
            if k == key {
                if first.is_none() {
                    first = Some(std::mem::take(v));
                }
                false
            } else {
                true
            }
        });
        first
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            pairs: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl From<std::collections::BTreeMap<String, String>> for Headers {
    fn from(map: std::collections::BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl From<Headers> for std::collections::BTreeMap<String, String> {
    fn from(h: Headers) -> Self {
        h.pairs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a str, &'a str),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_append_keeps() {
        let mut h = Headers::new();
        h.append("a", "1");
        h.append("a", "2");
        h.append("b", "3");
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.len(), 3);
        h.insert("a", "9");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "9"), ("b", "3")]);
        assert_eq!(h.remove("a").as_deref(), Some("9"));
        assert_eq!(h.remove("a"), None);
        assert_eq!(h.len(), 1);
    }
}
