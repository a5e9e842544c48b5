//! Measures the rate limits on the memory transport: a limit of `--rate`
//! per second (default 1,000, burst `--burst`, default 50) held for
//! `--seconds` (default 3), once on a subscription's handler calls and once
//! on the bus's publishers; prints how many calls each let through, beside
//! the expected `rate × seconds + burst` (the bucket starts full).
//!
//! ```text
//! cargo run --release --example rate_limit -- [--rate 1000] [--burst 50] [--seconds 3]
//! ```
//!
//! - `subscription`: 20,000 messages are queued on 4 lanes with a
//!   `SubscribeOptions::rate_limit`; handled messages are counted after
//!   the period.
//! - `publisher`: 2 tasks publish as fast as `publish` lets them on a bus
//!   with `BusConfig::publish_rate_limit`; accepted publishes are counted
//!   after the period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanebus::{Bus, BusConfig, HandlerError, Message, RateLimit, SubscribeOptions};

struct Args {
    rate: u32,
    burst: u32,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rate: 1000,
        burst: 50,
        seconds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--rate" => args.rate = value.parse().map_err(bad)?,
            "--burst" => args.burst = value.parse().map_err(bad)?,
            "--seconds" => args.seconds = value.parse().map_err(bad)?,
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(args)
}

async fn subscription(limit: RateLimit, period: Duration) -> u64 {
    let bus = Bus::memory();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let options = SubscribeOptions::default()
        .lanes(4)
        .ring_capacity(8192)
        .rate_limit(limit);
    let _sub = bus
        .subscribe_with("work", options, move |_m: Message| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .expect("subscribe");
    let start = Instant::now();
    for i in 0..20_000u32 {
        bus.publish("work", i.to_string()).await.expect("publish");
    }
    tokio::time::sleep_until((start + period).into()).await;
    let n = handled.load(Ordering::Relaxed);
    bus.close_within(Duration::from_millis(10)).await.ok();
    n
}

async fn publisher(limit: RateLimit, period: Duration) -> u64 {
    let mut config = BusConfig::memory();
    config.publish_rate_limit = Some(limit);
    let bus = Bus::from_config(config).expect("config");
    let start = Instant::now();
    let until = start + period;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    bus.publish("ticks", "x").await.expect("publish");
                }
            })
        })
        .collect();
    tokio::time::sleep_until(until.into()).await;
    let n = bus.stats().published;
    for t in tasks {
        t.abort();
    }
    n
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let limit = RateLimit::per_second(args.rate).with_burst(args.burst);
    limit.validate("--rate/--burst")?;
    let period = Duration::from_secs(args.seconds);
    let expected = u64::from(args.rate) * args.seconds + u64::from(args.burst);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "limit {}/s, burst {}, over {} s: expected {expected} (rate × seconds + burst)",
        args.rate, args.burst, args.seconds
    );
    for (name, got) in [
        (
            "subscription",
            runtime.block_on(subscription(limit.clone(), period)),
        ),
        ("publisher", runtime.block_on(publisher(limit, period))),
    ] {
        let off = (got as f64 / expected as f64 - 1.0) * 100.0;
        println!("{name:<13} delivered {got:>7}  ({off:+.1}% of expected)");
    }
    Ok(())
}
