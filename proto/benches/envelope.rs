//! Seal and verify+decode costs of a heartbeat and of a 1 KB report.
//!
//! Run: `cargo bench -p proto --bench envelope`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proto::{
    Body, Heartbeat, HostId, KeyId, KeyRing, Report, ReportBody, Sealer, SessionId, Verifier,
};
use std::hint::black_box;
use std::sync::Arc;

fn keys() -> Arc<KeyRing> {
    Arc::new(KeyRing::generate(KeyId(1)))
}

fn heartbeat() -> Body {
    Body::Heartbeat(Heartbeat {
        sent_at_us: 1_795_000_000_000_000,
        leaving: false,
    })
}

fn report_1k() -> Body {
    Body::Report(Report {
        id: 42,
        body: ReportBody::Discovery {
            kind: "bench".into(),
            data: "x".repeat(1000),
        },
    })
}

fn bench(c: &mut Criterion) {
    for (name, body) in [("heartbeat", heartbeat()), ("report_1k", report_1k())] {
        let keys = keys();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        let mut sealer = Sealer::new(keys.clone(), HostId(1), SessionId(1));
        let mut buf = Vec::with_capacity(1400);
        group.bench_function("seal", |b| {
            b.iter(|| {
                sealer
                    .seal_into(black_box(&body), &mut buf)
                    .map(|_| buf.len())
            })
        });
        // Pre-seal distinct datagrams so the replay window accepts every one of them.
        let mut sealer = Sealer::new(keys.clone(), HostId(1), SessionId(1));
        let datagrams: Vec<Vec<u8>> = (0..100_000)
            .filter_map(|_| sealer.seal(&body).ok())
            .collect();
        let mut verifier = Verifier::new(keys.clone(), 16);
        let mut next = 0usize;
        group.bench_function("verify_decode", |b| {
            b.iter(|| {
                if next == datagrams.len() {
                    // Start a fresh session so the same datagrams are new again.
                    verifier = Verifier::new(keys.clone(), 16);
                    next = 0;
                }
                let out = verifier.verify(black_box(&datagrams[next]));
                next += 1;
                out.is_ok()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
