//! Metrics: a memory bus with `metrics` on, the Prometheus exporter's HTTP
//! listener on a free loopback port, the page fetched with hyper's HTTP/1
//! client while messages flow, then (after `flush` and `export_metrics`,
//! so the figures are settled) every figure checked against `stats()`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use lanebus::{
    Bus, BusConfig, BusStats, HandlerError, Message, MetricsOptions, RetryPolicy, SubscribeOptions,
    HANDLER_DURATION_BUCKETS,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// A Prometheus page: (name, labels) → value.
type Page = HashMap<(String, BTreeMap<String, String>), f64>;

/// Installs the process's recorder with its listener on a free loopback
/// port (bound and released first: another process could take the port
/// in between, which would fail the install loudly, not silently).
fn install_exporter() -> SocketAddr {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("lanebus_handler_duration_seconds".into()),
            &HANDLER_DURATION_BUCKETS,
        )
        .expect("buckets")
        .install()
        .expect("install the exporter");
    addr
}

/// GET `http://addr/metrics` with hyper's client connection.
async fn fetch(addr: SocketAddr) -> String {
    // The listener starts on the exporter's own task: retry a refused
    // connection for a while.
    let mut tries = 0;
    let stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if tries < 200 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("connect to the exporter: {e}"),
        }
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("GET /metrics");
    assert_eq!(res.status(), hyper::StatusCode::OK);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    drop(sender);
    let _ = conn.await;
    String::from_utf8(body.to_vec()).expect("utf-8 page")
}

/// Parses the text exposition format (our label values have no quotes,
/// commas or escapes).
fn parse(page: &str) -> Page {
    let mut out = Page::new();
    for line in page.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                let labels = rest
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        out.insert((name, labels), value);
    }
    out
}

/// The value of `name` with exactly `labels`.
fn value(page: &Page, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    page.get(&(name.to_owned(), labels)).copied()
}

fn check_page(page: &Page, stats: &BusStats, labels: &HashMap<u64, String>) {
    let bus = [("bus", "prom-test"), ("service", "tests")];
    assert_eq!(
        value(page, "lanebus_published_total", &bus),
        Some(stats.published as f64)
    );
    assert_eq!(
        value(page, "lanebus_unrouted_total", &bus),
        Some(stats.unrouted as f64)
    );
    for s in &stats.subscriptions {
        let name = &labels[&s.id];
        let l = [
            ("bus", "prom-test"),
            ("service", "tests"),
            ("subscription", name.as_str()),
            ("topic", s.topic.as_str()),
        ];
        let t = &s.total;
        for (metric, expected) in [
            ("lanebus_delivered_total", t.delivered),
            ("lanebus_failed_total", t.failed),
            ("lanebus_retried_total", t.retried),
            ("lanebus_dead_lettered_total", t.dead_lettered),
            ("lanebus_skipped_total", t.skipped),
            ("lanebus_dropped_total", t.dropped),
            ("lanebus_duplicates_total", t.duplicates),
            ("lanebus_backlog", t.depth as u64),
            // Every attempt that reached the handler is timed.
            (
                "lanebus_handler_duration_seconds_count",
                t.delivered + t.skipped + t.failed,
            ),
        ] {
            assert_eq!(
                value(page, metric, &l),
                Some(expected as f64),
                "{metric} of {name}; on the page: {:?}",
                page.iter()
                    .filter(|((n, _), _)| n == metric)
                    .collect::<Vec<_>>()
            );
        }
        for (i, lane) in s.lanes.iter().enumerate() {
            let i = i.to_string();
            let mut ll = l.to_vec();
            ll.insert(1, ("lane", i.as_str()));
            assert_eq!(
                value(page, "lanebus_lane_depth", &ll),
                Some(lane.depth as f64),
                "lane {i} of {name}"
            );
        }
        // The histogram's buckets are ours: the +Inf bucket is the count.
        let mut inf = l.to_vec();
        inf.insert(1, ("le", "+Inf"));
        assert_eq!(
            value(page, "lanebus_handler_duration_seconds_bucket", &inf),
            Some((t.delivered + t.skipped + t.failed) as f64)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_page_equals_stats() {
    let addr = install_exporter();
    let mut config = BusConfig::memory();
    config.metrics = MetricsOptions::on("prom-test")
        .interval(Duration::from_millis(20))
        .label("service", "tests");
    let bus = Bus::from_config(config).unwrap();

    // `orders`: "retry" fails once, "bad" is poison (dead-lettered to
    // orders.dlq, which has a subscriber), "skip" is skipped.
    let options = SubscribeOptions::default().lanes(4).retry(
        RetryPolicy::attempts(3).with_backoff(Duration::from_millis(1), Duration::from_millis(1)),
    );
    let orders = bus
        .subscribe_with("orders", options, |m: Message| async move {
            match (&m.payload()[..], m.attempt()) {
                (b"retry", 1) => Err(HandlerError::retryable("once more")),
                (b"bad", _) => Err(HandlerError::permanent("poison")),
                (b"skip", _) => Err(HandlerError::skip("not mine")),
                _ => Ok(()),
            }
        })
        .await
        .unwrap();
    let workers = bus
        .subscribe_with(
            "orders",
            SubscribeOptions::default().lanes(2).group("billing"),
            |_m: Message| async { Ok::<(), HandlerError>(()) },
        )
        .await
        .unwrap();
    let dlq = bus
        .subscribe("orders.dlq", |_m: Message| async {
            Ok::<(), HandlerError>(())
        })
        .await
        .unwrap();
    let labels: HashMap<u64, String> = [
        (orders.id(), format!("#{}", orders.id())),
        (workers.id(), "billing".to_owned()),
        (dlq.id(), format!("#{}", dlq.id())),
    ]
    .into();

    // Messages flow while the page is fetched.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (bus, stop) = (bus.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload: &'static [u8] = match i % 10 {
                    3 => b"retry",
                    5 => b"bad",
                    7 => b"skip",
                    _ => b"ok",
                };
                bus.publish("orders", payload).await.unwrap();
                bus.publish("nowhere", "x").await.unwrap();
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            i
        })
    };
    let mut seen_flowing = false;
    for _ in 0..50 {
        let page = parse(&fetch(addr).await);
        if value(
            &page,
            "lanebus_published_total",
            &[("bus", "prom-test"), ("service", "tests")],
        )
        .is_some_and(|v| v > 0.0)
        {
            seen_flowing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_flowing,
        "the page showed no publish while messages flowed"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = publisher.await.unwrap();
    assert!(rounds >= 10, "only {rounds} rounds published");

    // Settled: every record handled (dead letters included), then exported.
    bus.flush().await;
    bus.flush().await;
    bus.export_metrics();
    let stats = bus.stats();
    assert_eq!(stats.published, rounds * 2);
    assert!(stats.total.dead_lettered > 0 && stats.total.retried > 0 && stats.total.skipped > 0);
    let page = parse(&fetch(addr).await);
    check_page(&page, &stats, &labels);

    // After close: the final counts, exported by close itself.
    drop(workers);
    bus.close().await.unwrap();
    let stats = bus.stats();
    let page = parse(&fetch(addr).await);
    check_page(&page, &stats, &labels);
}

#[test]
fn metrics_config_round_trips_and_is_off_by_default() {
    let c = BusConfig::memory();
    assert!(!c.metrics.enabled);
    // Off and default: not written out.
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("metrics"), "{json}");
    let on = BusConfig::from_yaml_str(
        "metrics:\n  enabled: true\n  bus_name: a\n  interval: 250ms\n  labels:\n    service: s\n",
    )
    .unwrap();
    assert_eq!(
        on.metrics,
        MetricsOptions::on("a")
            .interval(Duration::from_millis(250))
            .label("service", "s")
    );
    let e = BusConfig::from_yaml_str("metrics:\n  interval: 0s\n").unwrap_err();
    assert_eq!(e.field(), Some("metrics.interval"));
    let e = BusConfig::from_toml_str("[metrics]\nlabels = { lane = \"x\" }\n").unwrap_err();
    assert_eq!(e.field(), Some("metrics.labels.lane"));
}
