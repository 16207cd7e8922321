//! End to end: frame complete (in-process source) → corrections on the UDP wire, through
//! ingest, registration, range, adapt and link, with the controller receiving. Criterion
//! times each frame on an idle chain (one in flight) from the ticket's own clock, so what
//! is measured is exactly the pipeline's latency, not the bench's bookkeeping.
//!
//! `IONGUIDE_BENCH_WORKLOAD=reference` (512×512×48, ~10,000 spots, 80 mm ROI) for the release
//! figure; the default is the small CI workload. The release gate (`ionguide gate`) reads
//! p50/p99/max against `benches/budgets.toml`; this bench gives criterion's statistics.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ionguide::pipeline::Outcome;
use ionguide_sim::gate::{Chain, Workload};

fn pipeline(c: &mut Criterion) {
    let workload = match std::env::var("IONGUIDE_BENCH_WORKLOAD").as_deref() {
        Ok("reference") => Workload::Reference,
        _ => Workload::Small,
    };
    let dir = std::env::temp_dir().join(format!("ionguide-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let chain = Chain::start(workload, &dir, 1000.0).expect("chain");
    let mut n = 0u64;
    let frame = |n: &mut u64| {
        chain.push(*n).expect("push");
        *n += 1;
        let ev = chain
            .pipeline
            .telemetry()
            .recv_timeout(Duration::from_secs(30))
            .expect("frame finished");
        assert_eq!(ev.ticket.outcome, Outcome::Corrected, "{:?}", ev.ticket.outcome);
        Duration::from_nanos(ev.ticket.latency_ns())
    };
    for _ in 0..5 {
        frame(&mut n); // warm: the first frame registers cold
    }
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function(format!("{}_frame_to_wire", workload.name()), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| frame(&mut n)).sum())
    });
    g.finish();
    let _ = chain.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
