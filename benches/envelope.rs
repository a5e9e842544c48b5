//! Envelope codecs: binary and Go-compatible JSON, encode and decode.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lanebus::Envelope;

fn sample() -> Envelope {
    Envelope::new(
        "order-1234567",
        "OrderPlaced",
        7,
        Bytes::from_static(br#"{"order_id":"order-1234567","total":99.5,"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#),
    )
    .with_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
    .with_correlation_id("req-8812")
    .with_tenant_id("4711")
    .with_header("content-type", "application/json")
}

fn codecs(c: &mut Criterion) {
    let ev = sample();
    let binary = ev.encode();
    let json = ev.encode_json().expect("json payload");
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_binary", |b| b.iter(|| black_box(&ev).encode()));
    g.bench_function("decode_binary", |b| {
        b.iter(|| Envelope::decode_bytes(black_box(&binary)).expect("decodes"))
    });
    g.bench_function("encode_json", |b| {
        b.iter(|| black_box(&ev).encode_json().expect("encodes"))
    });
    g.bench_function("decode_json", |b| {
        b.iter(|| Envelope::decode_bytes(black_box(&json)).expect("decodes"))
    });
    g.bench_function("new_envelope", |b| {
        b.iter(|| {
            Envelope::new(
                black_box("order-1"),
                "OrderPlaced",
                1,
                Bytes::from_static(b"{}"),
            )
        })
    });
    g.bench_function("new_event_id", |b| {
        b.iter(lanebus::envelope::EventId::now_v7)
    });
    g.bench_function("new_and_drop_shared", |b| {
        // What a publish does per envelope: build it, share it, drop it.
        b.iter(|| {
            std::sync::Arc::new(Envelope::new(
                black_box("order-1"),
                "OrderPlaced",
                1,
                Bytes::from_static(b"{}"),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
