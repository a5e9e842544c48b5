//! Subscription groups on the memory bus: competing consumers inside a
//! group, every group (and every subscription without one) gets every
//! message, per-key order inside a group, members leaving mid-stream, and
//! the all-or-nothing `try_publish` over a group.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use common::{collect_with, gated, one_lane, settle, Gate, HResult};
use lanebus::{
    Bus, Envelope, Message, OutboundMessage, SubscribeError, SubscribeOptions, TryPublishError,
};
use tokio::sync::mpsc;

fn grouped(name: &str) -> SubscribeOptions {
    SubscribeOptions::default().group(name)
}

fn number(m: &Message) -> u32 {
    u32::from_le_bytes(m.payload()[..4].try_into().expect("a u32 payload"))
}

/// Everything a receiver holds (call after `close`, when every accepted
/// record has been handled), as the numbers in the payloads.
fn numbers(rx: &mut mpsc::UnboundedReceiver<Message>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(number(&m));
    }
    out
}

/// Numbers received by the members of one group: each exactly once.
fn union_once(parts: &[&[u32]]) -> Vec<u32> {
    let mut all: Vec<u32> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    all.sort_unstable();
    let unique: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a record reached a group twice");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_and_every_loner_gets_every_message() {
    let bus = Bus::memory();
    let (_a1, mut ra1) = collect_with(&bus, "orders", grouped("a")).await;
    let (_a2, mut ra2) = collect_with(&bus, "orders", grouped("a")).await;
    let (_b1, mut rb1) = collect_with(&bus, "orders", grouped("b")).await;
    let (_l, mut rl) = collect_with(&bus, "orders", SubscribeOptions::default()).await;
    for i in 0..300u32 {
        bus.publish("orders", i.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    bus.close().await.unwrap();
    let all: Vec<u32> = (0..300).collect();
    let (a1, a2) = (numbers(&mut ra1), numbers(&mut ra2));
    assert_eq!(union_once(&[&a1, &a2]), all, "group a shares the topic");
    assert_eq!(union_once(&[&numbers(&mut rb1)]), all, "group b");
    assert_eq!(union_once(&[&numbers(&mut rl)]), all, "no group");
    let stats = bus.stats();
    assert_eq!(stats.published, 300);
    assert_eq!(stats.unrouted, 0);
    assert_eq!(stats.total.delivered, 900, "three targets, one per group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_shared_inside_a_group() {
    let bus = Bus::memory();
    let (_m1, mut r1) = collect_with(&bus, "jobs", grouped("workers").lanes(4)).await;
    let (_m2, mut r2) = collect_with(&bus, "jobs", grouped("workers").lanes(4)).await;
    // Unkeyed records, then keyed ones over 100 keys.
    for i in 0..1000u32 {
        bus.publish("jobs", i.to_le_bytes().to_vec()).await.unwrap();
    }
    for i in 1000..2000u32 {
        let msg = OutboundMessage::new(i.to_le_bytes().to_vec()).with_key(format!("k{}", i % 100));
        bus.publish_with("jobs", msg).await.unwrap();
    }
    bus.close().await.unwrap();
    let (a, b) = (numbers(&mut r1), numbers(&mut r2));
    assert_eq!(union_once(&[&a, &b]), (0..2000).collect::<Vec<_>>());
    for (name, got) in [("first", &a), ("second", &b)] {
        assert!(
            got.iter().any(|&n| n < 1000),
            "{name} member got no unkeyed record"
        );
        assert!(
            got.iter().any(|&n| n >= 1000),
            "{name} member got no keyed record"
        );
    }
}

/// A small deterministic pseudo-random delay: some records sleep, some
/// yield a few times, some go straight through.
async fn jitter(seed: u64) {
    let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    match x % 5 {
        0 => tokio::time::sleep(std::time::Duration::from_micros(x % 700)).await,
        1 | 2 => {
            for _ in 0..(x % 13) {
                tokio::task::yield_now().await;
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_inside_a_group() {
    const MEMBERS: usize = 3;
    const AGGREGATES: usize = 30;
    const VERSIONS: i64 = 20;
    let bus = Bus::memory();
    // (member, aggregate, version) in the order the handlers ran.
    let seen: Arc<Mutex<Vec<(usize, String, i64)>>> = Arc::default();
    let mut subs = Vec::new();
    for member in 0..MEMBERS {
        let seen = seen.clone();
        let sub = bus
            .subscribe_envelope_with(
                "orders.events",
                grouped("projection").lanes(4).ring_capacity(16),
                move |ev: Envelope| {
                    let seen = seen.clone();
                    async move {
                        jitter(ev.event_version as u64 * 31 + ev.aggregate_id.len() as u64).await;
                        seen.lock().unwrap().push((
                            member,
                            ev.aggregate_id.to_string(),
                            ev.event_version,
                        ));
                        HResult::Ok(())
                    }
                },
            )
            .await
            .unwrap();
        subs.push(sub);
    }
    for v in 1..=VERSIONS {
        for agg in 0..AGGREGATES {
            bus.publish_envelope(
                "orders.events",
                Envelope::new(format!("order-{agg}"), "Changed", v, "{}"),
            )
            .await
            .unwrap();
        }
    }
    bus.close().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), AGGREGATES * VERSIONS as usize, "each once");
    let mut last: HashMap<&str, (usize, i64)> = HashMap::new();
    let mut members_used = BTreeSet::new();
    for (member, agg, v) in seen.iter() {
        let (owner, prev) = last.get(agg.as_str()).copied().unwrap_or((*member, 0));
        assert_eq!(owner, *member, "{agg} moved between members");
        assert_eq!(*v, prev + 1, "{agg} out of order");
        last.insert(agg, (*member, *v));
        members_used.insert(*member);
    }
    assert_eq!(members_used.len(), MEMBERS, "keys spread over every member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_mid_stream_loses_nothing() {
    let bus = Bus::memory();
    let gate = Gate::new();
    // The leaving member holds its records at a gate, so they are still in
    // its lane when it leaves; one lane large enough for all it can get.
    let (tx_a, mut ra) = mpsc::unbounded_channel();
    let leaving = {
        let gate = gate.clone();
        bus.subscribe_with(
            "stream",
            grouped("g").lanes(1).ring_capacity(256).drain_batch(1),
            move |m: Message| {
                let (gate, tx) = (gate.clone(), tx_a.clone());
                async move {
                    gate.pass().await;
                    let _ = tx.send(m);
                    HResult::Ok(())
                }
            },
        )
        .await
        .unwrap()
    };
    let (_stays, mut rb) = collect_with(&bus, "stream", grouped("g")).await;
    let keyed = |i: u32| OutboundMessage::new(i.to_le_bytes().to_vec()).with_key(format!("k{i}"));
    for i in 0..100u32 {
        bus.publish_with("stream", keyed(i)).await.unwrap();
    }
    // Start leaving: the first poll removes the member from routing and
    // closes its lane; the rest of the future waits for its drain.
    let unsubscribe = leaving.unsubscribe();
    tokio::pin!(unsubscribe);
    tokio::select! {
        biased;
        _ = &mut unsubscribe => panic!("drained although its handler is held at the gate"),
        _ = std::future::ready(()) => {}
    }
    for i in 100..200u32 {
        bus.publish_with("stream", keyed(i)).await.unwrap();
    }
    gate.open(1_000);
    unsubscribe.await;
    bus.close().await.unwrap();
    let (a, b) = (numbers(&mut ra), numbers(&mut rb));
    assert!(!a.is_empty(), "the leaving member had records in its lane");
    assert!(
        a.iter().all(|&n| n < 100),
        "records published after it left went to it: {a:?}"
    );
    assert_eq!(union_once(&[&a, &b]), (0..200).collect::<Vec<_>>());
    assert_eq!(bus.stats().unrouted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_publish_fills_every_member_before_full() {
    let bus = Bus::memory();
    let gate = Gate::new();
    let handled: Arc<Mutex<[usize; 2]>> = Arc::default();
    let mut subs = Vec::new();
    for member in 0..2 {
        let (gate, handled) = (gate.clone(), handled.clone());
        let sub = bus
            .subscribe_with("tp", one_lane(2).group("g"), move |_m: Message| {
                let (gate, handled) = (gate.clone(), handled.clone());
                async move {
                    gate.pass().await;
                    handled.lock().unwrap()[member] += 1;
                    HResult::Ok(())
                }
            })
            .await
            .unwrap();
        subs.push(sub);
    }
    let mut accepted = 0usize;
    loop {
        match bus.try_publish("tp", "x") {
            Ok(()) => accepted += 1,
            Err(TryPublishError::Full(p)) => {
                assert_eq!(p, "x", "the refused payload comes back");
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(accepted <= 6, "two members of one lane of two slots");
        settle().await;
    }
    gate.open(accepted);
    bus.close().await.unwrap();
    let handled = *handled.lock().unwrap();
    assert_eq!(handled[0] + handled[1], accepted);
    assert!(
        handled.iter().all(|&n| n > 0),
        "unkeyed records tried the other member before Full: {handled:?}"
    );
}

#[tokio::test]
async fn a_group_name_is_checked_like_a_topic() {
    let bus = Bus::memory();
    let res = bus
        .subscribe_with("t", grouped("no spaces"), |_m: Message| async {
            HResult::Ok(())
        })
        .await;
    match res {
        Err(SubscribeError::InvalidOptions(e)) => assert_eq!(e.field(), Some("options.group")),
        other => panic!("{other:?}"),
    }
    let back: SubscribeOptions = serde_json::from_str(r#"{"group":"billing"}"#).unwrap();
    assert_eq!(back, SubscribeOptions::default().group("billing"));
    let _gated = gated(&bus, "t", grouped("ok-name"), &Gate::new()).await;
}
