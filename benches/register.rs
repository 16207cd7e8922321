//! Registration latency: a cold and a warm-started registration of a 204×201×60 frame
//! (0.977 × 0.977 × 3.27 mm voxels, anatomy-like synthetic phantom) with an 80 mm ROI (a
//! target of a few cc plus margin) and a 150 mm ROI (a target of 500–600 cc plus margin, as
//! a large sarcoma or lung GTV gives from `Roi::from_mask`).
#![allow(missing_docs)] // criterion's macros generate undocumented items

#[path = "../tests/register_support/mod.rs"]
mod register_support;

use criterion::{criterion_group, criterion_main, Criterion};
use ionguide::geometry::RigidTransform;
use ionguide::register::{BoxMm, FixedContext, RegisterOptions, Registrar, Roi};
use ionguide::units::VectorMm;
use nalgebra::{Rotation3, Vector3};
use register_support::{make_frame, phantom, Rng};

fn bench(c: &mut Criterion) {
    let p = phantom([204, 201, 60], [0.977, 0.977, 3.27], 0);
    let centre = p.target_centroid_mm;
    let truth = RigidTransform::about_center(
        Rotation3::from_axis_angle(&Vector3::z_axis(), 2.5f64.to_radians()),
        centre,
        VectorMm::new(7.0, -5.0, 6.0),
    );
    let frame = make_frame(&p.ct, &truth, p.ct.grid(), 20.0, &mut Rng::new(11));
    // the previous frame's answer: within 2 mm / 1° of this frame's truth
    let previous = RigidTransform::about_center(
        Rotation3::from_axis_angle(&Vector3::x_axis(), 0.8f64.to_radians()),
        truth.apply(&centre),
        VectorMm::new(1.2, -0.9, 1.0),
    )
    .compose(&truth);
    for (roi_mm, threads) in [(80, 1), (80, 2), (150, 1), (150, 2)] {
        let options = RegisterOptions::default().with_threads(threads);
        let roi = Roi::from_box(BoxMm::cube(centre, roi_mm as f64).unwrap());
        let fixed = FixedContext::new(&p.ct, roi, &options).unwrap();
        let mut reg = Registrar::new(options);
        let cold = reg.register(&fixed, &frame, &RigidTransform::identity()).unwrap();
        let warm = reg.register_warm(&fixed, &frame, &previous).unwrap();
        eprintln!(
            "roi {roi_mm} mm, threads {threads}: {} fixed samples; cold {} it usable {}; warm {} it usable {}",
            fixed.finest_samples(),
            cold.iterations,
            cold.is_usable(),
            warm.iterations,
            warm.is_usable()
        );
        if threads == 1 {
            let cold_ms = thread_cpu_ms_per_call(|| {
                reg.register(&fixed, &frame, &RigidTransform::identity()).unwrap();
            });
            let warm_ms = thread_cpu_ms_per_call(|| {
                reg.register_warm(&fixed, &frame, &previous).unwrap();
            });
            if let (Some(cold_ms), Some(warm_ms)) = (cold_ms, warm_ms) {
                eprintln!(
                    "roi {roi_mm} mm, thread CPU time per call: cold {cold_ms:.2} ms, warm {warm_ms:.2} ms"
                );
            }
        }
        c.bench_function(
            &format!("register_cold_204x201x60_roi{roi_mm}mm_t{threads}"),
            |b| b.iter(|| reg.register(&fixed, &frame, &RigidTransform::identity()).unwrap()),
        );
        c.bench_function(
            &format!("register_warm_204x201x60_roi{roi_mm}mm_t{threads}"),
            |b| b.iter(|| reg.register_warm(&fixed, &frame, &previous).unwrap()),
        );
    }
}

/// This thread's CPU time per call of `f` over ~2 s of calls, ms; `None` without
/// `/proc/thread-self/schedstat`. Why beside criterion's wall time: on a shared machine
/// (2 cores, several builds) the wall time mostly measures the other processes; the CPU
/// time the registration's own thread ran does not (cache contention aside). The counter
/// advances at scheduler ticks, so it is read over many calls.
fn thread_cpu_ms_per_call(mut f: impl FnMut()) -> Option<f64> {
    let cpu_ns = || -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let start = cpu_ns()?;
    let wall = std::time::Instant::now();
    let mut calls = 0u32;
    while calls < 20 || cpu_ns()? - start < 2_000_000_000 {
        f();
        calls += 1;
        if wall.elapsed().as_secs() > 60 {
            break;
        }
    }
    Some((cpu_ns()? - start) as f64 / 1e6 / calls as f64)
}

criterion_group!(benches, bench);
criterion_main!(benches);
