//! Registration on a synthetic anatomy-like phantom with known applied transforms.
//!
//! Truth is the transform used to make each frame (`resample(planning, T⁻¹)` plus seeded
//! 20 HU Gaussian noise); the target registration error is measured over the phantom's
//! tumor voxels.

mod register_support;

use ionguide::geometry::RigidTransform;
use ionguide::register::{
    resample, FixedContext, QualityFailure, RegisterOptions, Registrar, Roi, Verdict, DEFAULT_MARGIN_MM,
};
use ionguide::units::VectorMm;
use ionguide::volume::CtVolume;
use proptest::prelude::*;
use register_support::{
    make_frame, phantom, random_transform, slab_grid, target_registration_error, Phantom, Rng,
};
use std::sync::OnceLock;

/// Tolerance on the mean target registration error, mm.
const TRE_LIMIT_MM: f64 = 0.2;
/// Per-case bound in the property test (the 0.2 mm limit holds for ≥95% of cases).
const CASE_LIMIT_MM: f64 = 0.5;

/// A phantom of the benchmark's size class (1 × 1 × 3.27 mm voxels), built once.
fn fixture() -> &'static (Phantom, FixedContext) {
    static F: OnceLock<(Phantom, FixedContext)> = OnceLock::new();
    F.get_or_init(|| {
        let p = phantom([204, 201, 60], [0.977, 0.977, 3.27], 0);
        let roi = Roi::from_mask(&p.target, DEFAULT_MARGIN_MM).unwrap();
        let ctx = FixedContext::new(&p.ct, roi, &RegisterOptions::default()).unwrap();
        (p, ctx)
    })
}

fn register_case(rng: &mut Rng, slab: bool) -> (f64, ionguide::register::Registration) {
    let (p, ctx) = fixture();
    let truth = random_transform(rng, p.target_centroid_mm, 15.0, 4.0);
    let grid = if slab {
        slab_grid(p.ct.grid(), 0.3, &truth.apply(&p.target_centroid_mm))
    } else {
        p.ct.grid().clone()
    };
    let frame = make_frame(&p.ct, &truth, &grid, 20.0, rng);
    let mut reg = Registrar::new(RegisterOptions::default());
    let r = reg.register(ctx, &frame, &RigidTransform::identity()).unwrap();
    (target_registration_error(&p.target, &r.transform, &truth), r)
}

fn success_rate(seed: u64, cases: usize, slab: bool) -> f64 {
    let mut rng = Rng::new(seed);
    let mut ok = 0;
    for case in 0..cases {
        let (tre, r) = register_case(&mut rng, slab);
        eprintln!(
            "slab={slab} case {case}: TRE {tre:.3} mm, {} it, ncc {:.3}, overlap {:.2}, {:?}",
            r.iterations, r.similarity_ncc, r.overlap_fraction, r.verdict
        );
        if tre <= TRE_LIMIT_MM && r.is_usable() {
            ok += 1;
        }
    }
    ok as f64 / cases as f64
}

#[test]
fn full_frames_are_recovered_within_tre_limit() {
    let rate = success_rate(1, 20, false);
    assert!(
        rate >= 0.95,
        "only {:.0}% of cases within {TRE_LIMIT_MM} mm",
        rate * 100.0
    );
}

#[test]
fn slab_frames_are_recovered_within_tre_limit() {
    let rate = success_rate(2, 20, true);
    assert!(
        rate >= 0.95,
        "only {:.0}% of cases within {TRE_LIMIT_MM} mm",
        rate * 100.0
    );
}

proptest! {
    // Fixed seed: the ≥95% rate is asserted by the batches above; here every case must be
    // usable and within the per-case bound, the same cases on every run.
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5a7),
        ..ProptestConfig::default()
    })]
    #[test]
    fn any_transform_within_bounds_is_recovered(seed in any::<u64>(), slab in any::<bool>()) {
        let mut rng = Rng::new(seed);
        let (tre, r) = register_case(&mut rng, slab);
        prop_assert!(r.is_usable(), "{:?}", r.verdict);
        prop_assert!(tre <= CASE_LIMIT_MM, "TRE {tre} mm");
    }
}

#[test]
fn tumor_shift_is_the_truth_carried_target() {
    let (p, ctx) = fixture();
    let truth = RigidTransform::from_xyz_deg([1.0, -2.0, 0.5], VectorMm::zeros());
    let truth = RigidTransform::about_center(
        truth.rotation,
        p.target_centroid_mm,
        VectorMm::new(6.0, -4.0, 9.0),
    );
    let frame = make_frame(&p.ct, &truth, p.ct.grid(), 20.0, &mut Rng::new(9));
    let r = Registrar::new(RegisterOptions::default())
        .register(ctx, &frame, &RigidTransform::identity())
        .unwrap();
    assert!(r.is_usable(), "{:?}", r.verdict);
    // rotation is about the centroid, so the centroid moves by the translation alone
    assert!(
        (r.tumor_shift_mm - VectorMm::new(6.0, -4.0, 9.0)).norm() < 0.2,
        "{:?}",
        r.tumor_shift_mm
    );
    assert_eq!(r.target_planned_mm, ctx.roi().target_mm);
}

#[test]
fn warm_start_takes_fewer_iterations_than_cold() {
    let (p, ctx) = fixture();
    let mut rng = Rng::new(3);
    let truth = random_transform(&mut rng, p.target_centroid_mm, 12.0, 3.0);
    let frame = make_frame(&p.ct, &truth, p.ct.grid(), 20.0, &mut rng);
    let mut reg = Registrar::new(RegisterOptions::default());
    let cold = reg.register(ctx, &frame, &RigidTransform::identity()).unwrap();
    // previous answer within 2 mm / 1° of this frame's truth
    let nudge = RigidTransform::about_center(
        nalgebra::Rotation3::from_axis_angle(&nalgebra::Vector3::y_axis(), 0.8f64.to_radians()),
        p.target_centroid_mm,
        VectorMm::new(1.2, -1.0, 0.9),
    );
    let previous = nudge.compose(&truth);
    let warm = reg.register_warm(ctx, &frame, &previous).unwrap();
    eprintln!("cold {} it, warm {} it", cold.iterations, warm.iterations);
    assert!(
        cold.is_usable() && warm.is_usable(),
        "{:?} {:?}",
        cold.verdict,
        warm.verdict
    );
    assert!(
        warm.iterations < cold.iterations,
        "warm {} vs cold {}",
        warm.iterations,
        cold.iterations
    );
    assert!(target_registration_error(&p.target, &warm.transform, &truth) <= TRE_LIMIT_MM);
}

fn assert_flagged(r: &ionguide::register::Registration) {
    assert!(!r.is_usable(), "a bad frame passed: {r:?}");
}

#[test]
fn unrelated_anatomy_is_flagged() {
    let (p, ctx) = fixture();
    let other = phantom([204, 201, 60], [0.977, 0.977, 3.27], 5);
    let frame = resample(&other.ct, &RigidTransform::identity(), p.ct.grid(), -1000);
    let r = Registrar::new(RegisterOptions::default())
        .register(ctx, &frame, &RigidTransform::identity())
        .unwrap();
    eprintln!("unrelated: {r:?}");
    assert_flagged(&r);
}

#[test]
fn pure_noise_frame_is_flagged() {
    let (p, ctx) = fixture();
    let mut rng = Rng::new(4);
    let mut frame = CtVolume::filled(p.ct.grid().clone(), 0);
    for v in frame.as_slice_mut() {
        *v = (300.0 * rng.normal()).round() as i16;
    }
    let r = Registrar::new(RegisterOptions::default())
        .register(ctx, &frame, &RigidTransform::identity())
        .unwrap();
    eprintln!("noise: {r:?}");
    assert_flagged(&r);
    assert!(matches!(
        r.verdict,
        Verdict::Reject(QualityFailure::PoorSimilarity { .. } | QualityFailure::NotConverged { .. })
    ));
}

#[test]
fn frame_away_from_the_roi_is_flagged_as_insufficient_overlap() {
    let (p, ctx) = fixture();
    // a slab of 10 slices at the far end from the tumor
    let g = p.ct.grid();
    let far = g.index_to_patient([0.0, 0.0, 0.0]);
    let grid = slab_grid(g, 10.0 / g.dims()[2] as f64, &far);
    let frame = resample(&p.ct, &RigidTransform::identity(), &grid, -1000);
    let r = Registrar::new(RegisterOptions::default())
        .register(ctx, &frame, &RigidTransform::identity())
        .unwrap();
    eprintln!("far: {r:?}");
    assert_flagged(&r);
    assert!(
        matches!(
            r.verdict,
            Verdict::Reject(QualityFailure::InsufficientOverlap { .. })
        ),
        "{:?}",
        r.verdict
    );
}
