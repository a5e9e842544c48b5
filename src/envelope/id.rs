//! [`EventId`]: an event ID that needs no heap allocation in the common
//! case, and the UUIDv7 generator behind [`Envelope::new`].
//!
//! # Algorithm
//!
//! An `EventId` is a string. Up to [`EventId::INLINE_CAP`] bytes (room for
//! a hyphenated UUID, 36 bytes, and for most IDs other systems write) are
//! stored inline in the value, with their length; a longer ID, which any
//! publisher may send, lives in one heap `Box<str>`. Both read as the same
//! `&str`, so equality, ordering and hashing are those of the text, and the
//! storage is invisible to users and to both wire forms.
//!
//! [`EventId::now_v7_at`] builds a UUIDv7 (RFC 9562, section 5.7) from a
//! time the caller already read, so an envelope reads the clock once for
//! its ID and its timestamp. The 128 bits are, from the top: 48 bits of
//! Unix milliseconds; the version `7`; a 42-bit counter spread over
//! `rand_a` (12 bits) and the top of `rand_b` (30 bits), around the
//! variant `0b10`; and 32 random bits. The counter is the RFC's "fixed
//! bit-length dedicated counter" (method 1), kept per thread: when the
//! millisecond advances it is reseeded with 41 random bits (top bit clear,
//! leaving room to count), otherwise it is incremented, and on overflow the
//! millisecond is advanced by one. Random bits come from `rand`'s
//! thread-local generator (a CSPRNG seeded from the operating system), one
//! 64-bit draw per ID. No lock, no shared cache line, no 128-bit division:
//! the hex text is written eight digits at a time with SWAR arithmetic
//! straight into the inline buffer.
//!
//! # Invariants
//!
//! - An inline ID's `len <= INLINE_CAP` and `bytes[..len]` is UTF-8 (it is
//!   only ever copied from a `str` or written as ASCII hex); a heap ID is
//!   longer than `INLINE_CAP`, so each text has exactly one representation
//!   (comparisons and hashing go through the text all the same).
//! - IDs generated on one thread sort in generation order (text order and
//!   UUID order agree, as lowercase hex sorts by value); across threads
//!   they sort by millisecond.
//! - A generated ID is a valid UUIDv7: version 7, RFC variant, and the
//!   millisecond of the time given (or later, see above).
//!
//! [`Envelope::new`]: super::Envelope::new

use std::borrow::Borrow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::time::SystemTime;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};
use uuid::Uuid;

/// The ID of one event: a string, stored inline up to
/// [`INLINE_CAP`](Self::INLINE_CAP) bytes (a UUID fits), on the heap beyond.
///
/// It reads as a `&str` (`Deref`, `AsRef<str>`, `Borrow<str>`), compares
/// with `str`, `&str` and `String`, and is built from `&str` or `String`.
///
/// # Examples
///
/// ```
/// use lanebus::envelope::EventId;
///
/// let id = EventId::from("evt-1");
/// assert_eq!(id, "evt-1");
/// assert_eq!(id.len(), 5);
/// assert_eq!(id.to_string(), "evt-1");
///
/// let fresh = EventId::now_v7();
/// assert_eq!(uuid::Uuid::parse_str(&fresh).unwrap().get_version_num(), 7);
/// ```
#[derive(Clone)]
pub struct EventId(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; EventId::INLINE_CAP],
    },
    Heap(Box<str>),
}

thread_local! {
    /// This thread's UUIDv7 state: the millisecond of the last ID and the
    /// counter within it; `None` before the thread's first ID.
    static V7_STATE: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Bits of the per-millisecond counter: `rand_a` (12) and the top 30 of
/// `rand_b`.
const COUNTER_BITS: u32 = 42;

impl EventId {
    /// Longest ID stored inline, in bytes: room for a hyphenated UUID (36).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(lanebus::envelope::EventId::INLINE_CAP, 38);
    /// ```
    pub const INLINE_CAP: usize = 38;

    /// A fresh UUIDv7 for the current time, lowercase and hyphenated.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::envelope::EventId;
    ///
    /// let (a, b) = (EventId::now_v7(), EventId::now_v7());
    /// assert_eq!(a.len(), 36);
    /// assert!(a < b, "one thread's IDs sort in generation order");
    /// ```
    pub fn now_v7() -> EventId {
        Self::v7_at_millis(super::clock::now_with_millis().1)
    }

    /// A fresh UUIDv7 whose timestamp is `time` (before 1970 counts as 1970),
    /// lowercase and hyphenated, without a heap allocation. When this
    /// thread's previous ID carried a later millisecond (the clock stepped
    /// back), that later one is kept, so the thread's IDs stay sorted.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use lanebus::envelope::EventId;
    ///
    /// let id = EventId::now_v7_at(SystemTime::UNIX_EPOCH + Duration::from_millis(1));
    /// assert!(id.starts_with("00000000-0001-7"));
    /// ```
    #[inline]
    pub fn now_v7_at(time: SystemTime) -> EventId {
        Self::v7_at_millis(super::clock::unix_millis(time))
    }

    /// [`now_v7_at`](Self::now_v7_at) for a time given in milliseconds
    /// since the Unix epoch.
    #[inline]
    pub(crate) fn v7_at_millis(now_ms: u64) -> EventId {
        // 48 bits of milliseconds last until the year 10889.
        let random: u64 = rand::random();
        let reseed = |ms| (ms, random >> (64 - (COUNTER_BITS - 1)));
        let (ms, counter) = V7_STATE.with(|state| {
            let next = match state.get() {
                // A new millisecond (or the thread's first ID): reseed, top
                // counter bit clear to leave room to count.
                None => reseed(now_ms),
                Some((last_ms, _)) if now_ms > last_ms => reseed(now_ms),
                Some((last_ms, last)) if last + 1 < 1 << COUNTER_BITS => (last_ms, last + 1),
                // Counter exhausted: borrow the next millisecond.
                Some((last_ms, _)) => reseed(last_ms + 1),
            };
            state.set(Some(next));
            next
        });
        let hi = (ms & 0xFFFF_FFFF_FFFF) << 16 | 0x7 << 12 | counter >> 30;
        let lo = 0b10 << 62 | (counter & 0x3FFF_FFFF) << 32 | (random & 0xFFFF_FFFF);
        EventId(Repr::Inline {
            len: 36,
            bytes: hyphenated(hi, lo),
        })
    }

    /// The ID as a string slice.
    ///
    /// # Examples
    ///
    /// ```
    /// let id = lanebus::envelope::EventId::from("e-1");
    /// assert_eq!(id.as_str(), "e-1");
    /// ```
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let text = &bytes[..usize::from(*len)];
                // Inline bytes are copied from a `str` or are ASCII hex (see
                // the invariants), so this never fails; the fallback keeps
                // the code free of `unsafe` and of panics.
                std::str::from_utf8(text).unwrap_or_default()
            }
            Repr::Heap(text) => text,
        }
    }

    /// Length of the ID in bytes, read without looking at the text.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(lanebus::envelope::EventId::now_v7().len(), 36);
    /// ```
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Inline { len, .. } => usize::from(*len),
            Repr::Heap(text) => text.len(),
        }
    }

    /// Whether the ID is empty (which
    /// [`Envelope::validate`](super::Envelope::validate) rejects).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(lanebus::envelope::EventId::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the ID is stored inline, without a heap allocation.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::envelope::EventId;
    ///
    /// assert!(EventId::now_v7().is_inline());
    /// assert!(!EventId::from("x".repeat(39)).is_inline());
    /// ```
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

/// The UUID `hi:lo` as lowercase hyphenated hex (8-4-4-4-12), padded to
/// the inline buffer.
#[inline]
fn hyphenated(hi: u64, lo: u64) -> [u8; EventId::INLINE_CAP] {
    // The four groups of eight digits as little-endian words (byte `i` of
    // the text in bits `8i..8i+8`), assembled with the hyphens into whole
    // words in registers: each output word is stored once, so no narrow
    // store is read back by a wide load (a store-forwarding stall).
    let [a, b, c, d] = [hi >> 32, hi, lo >> 32, lo].map(|x| u64::from_le_bytes(hex8(x as u32)));
    const DASH: u64 = b'-' as u64;
    let words = [
        a,
        DASH | (b & 0xFFFF_FFFF) << 8 | DASH << 40 | (b >> 32 & 0xFFFF) << 48,
        b >> 48 | DASH << 16 | (c & 0xFFFF_FFFF) << 24 | DASH << 56,
        c >> 32 | (d & 0xFFFF_FFFF) << 32,
        d >> 32,
    ];
    let mut out = [0u8; EventId::INLINE_CAP];
    for (chunk, word) in out.chunks_mut(8).zip(words) {
        let n = chunk.len();
        chunk.copy_from_slice(&word.to_le_bytes()[..n]);
    }
    out
}

/// Eight lowercase hex digits of `x`, most significant first, computed on
/// all eight at once: each nibble is spread into its own byte, then `'0'`
/// is added, plus `'a' - '0' - 10` where the nibble is 10 or more.
#[inline]
fn hex8(x: u32) -> [u8; 8] {
    let x = u64::from(x);
    let x = (x & 0xFFFF_0000) << 16 | (x & 0xFFFF);
    let x = (x & 0x0000_FF00_0000_FF00) << 8 | (x & 0x0000_00FF_0000_00FF);
    let x = (x & 0x00F0_00F0_00F0_00F0) << 4 | (x & 0x000F_000F_000F_000F);
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

impl Default for EventId {
    /// The empty ID (which [`Envelope::validate`](super::Envelope::validate)
    /// rejects).
    fn default() -> Self {
        EventId(Repr::Inline {
            len: 0,
            bytes: [0; Self::INLINE_CAP],
        })
    }
}

impl From<&str> for EventId {
    fn from(text: &str) -> Self {
        if text.len() <= Self::INLINE_CAP {
            let mut bytes = [0u8; Self::INLINE_CAP];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            EventId(Repr::Inline {
                len: text.len() as u8,
                bytes,
            })
        } else {
            EventId(Repr::Heap(text.into()))
        }
    }
}

impl From<String> for EventId {
    /// Keeps the string's buffer when the ID is too long to be inline.
    fn from(text: String) -> Self {
        if text.len() <= Self::INLINE_CAP {
            EventId::from(text.as_str())
        } else {
            EventId(Repr::Heap(text.into_boxed_str()))
        }
    }
}

impl From<&String> for EventId {
    fn from(text: &String) -> Self {
        EventId::from(text.as_str())
    }
}

impl From<Box<str>> for EventId {
    fn from(text: Box<str>) -> Self {
        if text.len() <= Self::INLINE_CAP {
            EventId::from(&*text)
        } else {
            EventId(Repr::Heap(text))
        }
    }
}

impl From<compact_str::CompactString> for EventId {
    fn from(text: compact_str::CompactString) -> Self {
        EventId::from(text.as_str())
    }
}

impl From<Uuid> for EventId {
    /// The UUID, lowercase and hyphenated.
    fn from(uuid: Uuid) -> Self {
        EventId::from(uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) as &str)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> Self {
        match id.0 {
            Repr::Heap(text) => text.into_string(),
            Repr::Inline { .. } => id.as_str().to_owned(),
        }
    }
}

impl Deref for EventId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for EventId {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for EventId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for EventId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventId {}

impl PartialEq<str> for EventId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for EventId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<EventId> for str {
    fn eq(&self, other: &EventId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<EventId> for &str {
    fn eq(&self, other: &EventId) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<EventId> for String {
    fn eq(&self, other: &EventId) -> bool {
        self == other.as_str()
    }
}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for EventId {
    /// Hashes as the `str` does, consistent with `Borrow<str>`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = EventId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event id string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<EventId, E> {
                Ok(EventId::from(text))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<EventId, E> {
                Ok(EventId::from(text))
            }
        }

        deserializer.deserialize_str(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[test]
    fn inline_up_to_cap_heap_beyond() {
        for len in [0, 1, 36, EventId::INLINE_CAP] {
            let text = "a".repeat(len);
            let id = EventId::from(text.as_str());
            assert!(id.is_inline(), "{len}");
            assert_eq!(id, text);
            assert_eq!(EventId::from(text.clone()), id);
        }
        let long = "é".repeat(20); // 40 bytes
        let id = EventId::from(long.clone());
        assert!(!id.is_inline());
        assert_eq!(id.as_str(), long);
        assert_eq!(String::from(id.clone()), long);
        assert_eq!(EventId::from(long.as_str()), id);
    }

    #[test]
    fn equality_order_and_hash_follow_the_text() {
        let a = EventId::from("a");
        let b = EventId::from("b".repeat(50));
        assert!(a < b);
        assert_eq!(b.cmp(&a), Ordering::Greater);
        assert_eq!(a, "a");
        assert_eq!("a", a);
        assert_eq!(a, String::from("a"));
        let set: HashSet<EventId> = [a.clone(), b.clone(), a.clone()].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains("a"));
        assert_eq!(format!("{a:?} {a}"), "\"a\" a");
    }

    #[test]
    fn v7_ids_carry_the_given_millisecond_and_sort_per_thread() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_714_530_600, 123_456_789);
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::now_v7_at(at)).collect();
        for id in &ids {
            let uuid = Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 7);
            assert_eq!(id.as_str(), uuid.hyphenated().to_string());
            let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
            assert_eq!((secs, nanos / 1_000_000), (1_714_530_600, 123));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        // A fresh thread has no later time to keep, so before 1970 is 1970.
        let before = std::thread::spawn(|| {
            EventId::now_v7_at(SystemTime::UNIX_EPOCH - Duration::from_secs(5))
        })
        .join()
        .unwrap();
        assert!(before.starts_with("00000000-0000-7"), "{before}");
        // On this thread, an earlier time keeps the later one: still sorted.
        let earlier = EventId::now_v7_at(SystemTime::UNIX_EPOCH);
        assert!(ids.last().unwrap() < &earlier);
    }

    #[test]
    fn hex_matches_the_uuid_crate() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let edge = [
            (0, 0),
            (u64::MAX, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
        ];
        let random: Vec<(u64, u64)> = (0..1000).map(|_| (next(), next())).collect();
        for (hi, lo) in edge.into_iter().chain(random) {
            let uuid = Uuid::from_u64_pair(hi, lo);
            let ours = hyphenated(hi, lo);
            assert_eq!(&ours[..36], uuid.hyphenated().to_string().as_bytes());
            assert_eq!(&ours[36..], &[0, 0]);
        }
    }

    #[test]
    fn v7_layout_version_and_variant() {
        let id = EventId::now_v7();
        let uuid = Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        // Fresh threads reseed independently: their IDs differ.
        let ids: HashSet<EventId> = (0..8)
            .map(|_| std::thread::spawn(EventId::now_v7).join().unwrap())
            .collect();
        assert_eq!(ids.len(), 8);
    }

    #[test]
    fn serde_is_a_plain_string() {
        let id = EventId::from("x".repeat(40));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "x".repeat(40)));
        let back: EventId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        let escaped: EventId = serde_json::from_str(r#""a\"b""#).unwrap();
        assert_eq!(escaped, "a\"b");
        assert!(serde_json::from_str::<EventId>("7").is_err());
    }
}
