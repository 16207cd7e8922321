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

criterion_group!(benches, bench);
criterion_main!(benches);
