//! Property test of the whole engine on the memory bus: arbitrary envelope
//! publishes over a few aggregates, arbitrary handler delays and failures
//! (transient, retry-exhausting, permanent, panics) and a close at an
//! arbitrary point. Checked against a simple model:
//!
//! - every publish accepted before close is, by the time `close()` returns,
//!   handled successfully exactly once if its failures were transient, or
//!   dead-lettered exactly once (never handled) otherwise;
//! - every publish after close is refused with `Closed` and never seen;
//! - successes of one aggregate happen in publish order.
//!
//! Cases: 96 by default (`PROPTEST_CASES` overrides).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanebus::{
    Bus, Envelope, HandlerError, Message, PublishError, RetryPolicy, SubscribeOptions,
    HEADER_ERROR_CLASS,
};
use proptest::prelude::*;

const MAX_ATTEMPTS: u32 = 3;

#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Succeeds at the first attempt.
    Ok,
    /// Fails `n` times (retryable or panicking), then succeeds (`n` < max).
    Transient { fails: u32, panic: bool },
    /// Fails retryably every time: dead-lettered after `MAX_ATTEMPTS`.
    Exhausts,
    /// Fails permanently: dead-lettered at once.
    Permanent,
}

impl Outcome {
    fn succeeds(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Transient { .. })
    }
}

#[derive(Clone, Copy, Debug)]
enum Delay {
    None,
    Yield(u8),
    Sleep,
}

#[derive(Clone, Debug)]
struct Op {
    key: u8,
    outcome: Outcome,
    delay: Delay,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        6 => Just(Outcome::Ok),
        2 => (1..MAX_ATTEMPTS, any::<bool>()).prop_map(|(fails, panic)| Outcome::Transient { fails, panic }),
        1 => Just(Outcome::Exhausts),
        1 => Just(Outcome::Permanent),
    ];
    let delay = prop_oneof![
        6 => Just(Delay::None),
        3 => (1u8..8).prop_map(Delay::Yield),
        1 => Just(Delay::Sleep),
    ];
    (0u8..4, outcome, delay).prop_map(|(key, outcome, delay)| Op {
        key,
        outcome,
        delay,
    })
}

#[derive(Default)]
struct Seen {
    /// seq of each success, in handling order, per key.
    successes: HashMap<u8, Vec<usize>>,
    success_count: HashMap<usize, u32>,
    attempts: HashMap<usize, u32>,
}

/// Keeps planned handler panics out of the test output; others still print.
fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"planned panic") {
                default(info);
            }
        }));
    });
}

fn run_case(
    ops: Vec<Op>,
    close_at: usize,
    lanes: usize,
    capacity: usize,
) -> Result<(), TestCaseError> {
    quiet_planned_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bus = Bus::memory();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let plan: Arc<Vec<Op>> = Arc::new(ops.clone());
        let dead: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let d2 = dead.clone();
        let _dlq = bus
            .subscribe("ev.dlq", move |m: Message| {
                let dead = d2.clone();
                async move {
                    let ev = Envelope::decode(m.payload()).expect("dead letter holds the envelope");
                    let seq: usize = ev.event_type.trim_start_matches("E").parse().unwrap();
                    let class = m.headers().get(HEADER_ERROR_CLASS).unwrap_or("").to_owned();
                    dead.lock().unwrap().push((seq, class));
                    Ok::<(), HandlerError>(())
                }
            })
            .await
            .unwrap();
        let s2 = seen.clone();
        let p2 = plan.clone();
        let opts = SubscribeOptions::default()
            .lanes(lanes)
            .ring_capacity(capacity)
            .retry(
                RetryPolicy::attempts(MAX_ATTEMPTS)
                    .with_backoff(Duration::from_micros(50), Duration::from_micros(200)),
            );
        let _sub = bus
            .subscribe_envelope_with("ev", opts, move |ev: Envelope| {
                let seen = s2.clone();
                let plan = p2.clone();
                async move {
                    let seq: usize = ev.event_type.trim_start_matches("E").parse().unwrap();
                    let op = plan[seq].clone();
                    let attempt = {
                        let mut s = seen.lock().unwrap();
                        let a = s.attempts.entry(seq).or_insert(0);
                        *a += 1;
                        *a
                    };
                    match op.delay {
                        Delay::None => {}
                        Delay::Yield(n) => {
                            for _ in 0..n {
                                tokio::task::yield_now().await;
                            }
                        }
                        Delay::Sleep => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                    match op.outcome {
                        Outcome::Ok => {}
                        Outcome::Transient { fails, panic } if attempt <= fails => {
                            if panic {
                                panic!("planned panic");
                            }
                            return Err(HandlerError::retryable("transient"));
                        }
                        Outcome::Transient { .. } => {}
                        Outcome::Exhausts => return Err(HandlerError::retryable("always")),
                        Outcome::Permanent => return Err(HandlerError::permanent("poison")),
                    }
                    let mut s = seen.lock().unwrap();
                    s.successes.entry(op.key).or_default().push(seq);
                    *s.success_count.entry(seq).or_insert(0) += 1;
                    Ok(())
                }
            })
            .await
            .unwrap();

        let mut accepted = Vec::new();
        let mut closer = None;
        for (seq, op) in ops.iter().enumerate() {
            if seq == close_at {
                let bus = bus.clone();
                closer = Some(tokio::spawn(async move { bus.close().await }));
                tokio::task::yield_now().await;
            }
            let ev = Envelope::new(format!("agg-{}", op.key), format!("E{seq}"), 1, "{}");
            match bus.publish_envelope("ev", ev).await {
                Ok(()) => accepted.push(seq),
                Err(PublishError::Closed(back)) => {
                    prop_assert!(closer.is_some(), "refused before close began");
                    prop_assert_eq!(
                        back.event_type,
                        format!("E{seq}"),
                        "refused envelope handed back"
                    );
                }
                Err(e) => return Err(TestCaseError::fail(format!("publish: {e}"))),
            }
        }
        match closer {
            Some(c) => c.await.unwrap().unwrap(),
            None => bus.close().await.unwrap(),
        }

        let seen = seen.lock().unwrap();
        let dead = dead.lock().unwrap();
        let mut dead_count: HashMap<usize, u32> = HashMap::new();
        for (seq, _) in dead.iter() {
            *dead_count.entry(*seq).or_insert(0) += 1;
        }
        for (seq, op) in ops.iter().enumerate() {
            let ok = seen.success_count.get(&seq).copied().unwrap_or(0);
            let dl = dead_count.get(&seq).copied().unwrap_or(0);
            if !accepted.contains(&seq) {
                prop_assert_eq!(ok + dl, 0, "refused message {} was seen", seq);
                prop_assert!(!seen.attempts.contains_key(&seq));
                continue;
            }
            if op.outcome.succeeds() {
                prop_assert_eq!((ok, dl), (1, 0), "message {} ({:?})", seq, op.outcome);
            } else {
                prop_assert_eq!((ok, dl), (0, 1), "message {} ({:?})", seq, op.outcome);
                let class = &dead.iter().find(|(s, _)| *s == seq).unwrap().1;
                let want = match op.outcome {
                    Outcome::Permanent => "permanent",
                    _ => "retryable",
                };
                prop_assert_eq!(class.as_str(), want);
                let tries = seen.attempts.get(&seq).copied().unwrap_or(0);
                let want_tries = if want == "permanent" { 1 } else { MAX_ATTEMPTS };
                prop_assert_eq!(tries, want_tries);
            }
        }
        for (key, seqs) in &seen.successes {
            prop_assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "key {} out of order: {:?}",
                key,
                seqs
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 96 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn accepted_messages_are_settled_once_in_key_order(
        ops in proptest::collection::vec(op(), 1..60),
        close_frac in 0.0f64..1.2,
        lanes in 1usize..5,
        capacity in 1usize..9,
    ) {
        let close_at = ((ops.len() as f64) * close_frac) as usize; // ≥ len: close after all
        run_case(ops, close_at, lanes, capacity)?;
    }
}
