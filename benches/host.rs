//! What this machine charges for memory left idle between frames: reading one byte of each
//! of 2 048 pages (8 MiB) back to back, and after the buffer sat idle for 10 or 100 ms (the
//! pipeline's frame period). On a host that makes idle guest pages slow to touch again, the
//! idle cases cost microseconds per page; on a dedicated machine the three are alike. Read
//! the release gate's stage times with this in mind (ARCHITECTURE.md, "Memory touched per
//! frame").

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

const PAGE: usize = 4096;
const PAGES: usize = 2048;

fn touch(buf: &[u8]) -> u64 {
    buf.iter().step_by(PAGE).map(|&b| u64::from(b)).sum()
}

fn bench(c: &mut Criterion) {
    let buf: Vec<u8> = (0..PAGES * PAGE).map(|i| (i / PAGE) as u8).collect();
    let mut g = c.benchmark_group("host");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    g.bench_function("touch_2048_pages_back_to_back", |b| {
        b.iter(|| touch(black_box(&buf)))
    });
    for idle_ms in [10u64, 100] {
        g.bench_function(format!("touch_2048_pages_after_{idle_ms}ms_idle"), |b| {
            b.iter_custom(|iters| {
                let mut busy = Duration::ZERO;
                for _ in 0..iters {
                    std::thread::sleep(Duration::from_millis(idle_ms));
                    let start = Instant::now();
                    black_box(touch(black_box(&buf)));
                    busy += start.elapsed();
                }
                busy
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
