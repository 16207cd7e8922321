//! End to end: frame complete (in-process source) → corrections on the UDP wire, through
//! ingest, registration, range, adapt and link, with the controller receiving. Criterion
//! times each frame on an idle chain (one in flight) from the ticket's own clock, so what
//! is measured is exactly the pipeline's latency, not the bench's bookkeeping.
//!
//! Two deliveries: `burst` (every slice of the frame arrives at once, so the whole frame is
//! decoded on the clock; frames back to back) and `streamed` (slices arrive over 80 ms of a
//! 10 Hz frame period as from a scanner, announced as they land and decoded early; the
//! clock starts with the last one).
//!
//! `IONGUIDE_BENCH_WORKLOAD=reference` (512×512×48, ~10,000 spots, 80 mm ROI) for the release
//! figure; the default is the small CI workload. The release gate (`ionguide gate`) reads
//! p50/p99/max against `benches/budgets.toml`; this bench gives criterion's statistics.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ionguide::pipeline::Outcome;
use ionguide_sim::gate::{Chain, Workload, STREAM_SPREAD};

fn pipeline(c: &mut Criterion) {
    let workload = match std::env::var("IONGUIDE_BENCH_WORKLOAD").as_deref() {
        Ok("reference") => Workload::Reference,
        _ => Workload::Small,
    };
    let dir = std::env::temp_dir().join(format!("ionguide-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let chain = Chain::start(workload, &dir, 1000.0).expect("chain");
    let mut n = 0u64;
    let finished = |chain: &Chain| {
        let ev = chain
            .pipeline
            .telemetry()
            .recv_timeout(Duration::from_secs(30))
            .expect("frame finished");
        assert_eq!(ev.ticket.outcome, Outcome::Corrected, "{:?}", ev.ticket.outcome);
        Duration::from_nanos(ev.ticket.latency_ns())
    };
    let burst = |n: &mut u64| {
        chain.push(*n).expect("push");
        *n += 1;
        finished(&chain)
    };
    let period = Duration::from_millis(100);
    let streamed = |n: &mut u64| {
        let due = Instant::now() + period;
        chain
            .push_streamed(*n, due, period.mul_f64(STREAM_SPREAD))
            .expect("push");
        *n += 1;
        finished(&chain)
    };
    for _ in 0..5 {
        burst(&mut n); // warm: the first frame registers cold
    }
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function(format!("{}_frame_to_wire_burst", workload.name()), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| burst(&mut n)).sum())
    });
    // 100 ms a frame: few, equal samples
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    g.bench_function(format!("{}_frame_to_wire_streamed_10hz", workload.name()), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| streamed(&mut n)).sum())
    });
    g.finish();
    let _ = chain.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
