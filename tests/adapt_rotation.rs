//! Spots follow the registration's full rigid transform: a rotation about the target region
//! moves every spot's Bragg point differently, and each corrected spot's ray must pass
//! through its own rotated point, with the water depth to it. A translation-only correction
//! of the same frame misses by what the rotation moved each point beyond the target's shift.
//! Over the rotation limit the frame is held.

mod adapt_support;

use adapt_support::*;
use ionguide::adapt::{AdaptOptions, Adapter, FrameStamp, FrameWepl, HoldCheck, SafetyLimits};
use ionguide::correction::{CorrectionSet, HoldReason};
use ionguide::geometry::RigidTransform;
use ionguide::range::BeamGeometry;
use ionguide::register::Registration;
use ionguide::units::{PointMm, VectorMm};
use nalgebra::Rotation3;

const STAMP: FrameStamp = FrameStamp {
    frame_id: 11,
    valid_until_unix_ns: 5_000,
};

/// A usable registration with transform `t`, its target planned at `planned`.
fn rigid_registration(t: RigidTransform, planned: PointMm) -> Registration {
    let mut reg = registration(VectorMm::zeros());
    reg.transform = t;
    reg.target_planned_mm = planned;
    reg.target_mm = t.apply(&planned);
    reg.tumor_shift_mm = reg.target_mm - planned;
    reg
}

/// A 3.5° rotation about an oblique axis through a point near the targets, plus a shift.
fn rotated() -> (RigidTransform, PointMm) {
    let centre = PointMm::new(5.0, 10.0, -5.0);
    let axis = VectorMm::new(0.3, 0.5, 0.8).normalize();
    let t = RigidTransform::about_center(
        Rotation3::new(axis * 3.5f64.to_radians()),
        centre,
        VectorMm::new(2.0, -1.0, 1.5),
    );
    (t, centre)
}

/// Distance from `q` to the ray of the corrected spot `(x, y)`.
fn ray_miss_mm(geo: &BeamGeometry, x_mm: f32, y_mm: f32, q: PointMm) -> f64 {
    let ray = geo.spot_ray(x_mm as f64, y_mm as f64, 1000.0);
    let v = q - ray.origin;
    (v - ray.direction * v.dot(&ray.direction)).norm()
}

#[test]
fn each_corrected_spot_passes_through_its_rotated_target_at_its_water_depth() {
    let mut s = setup();
    let (t, centre) = rotated();
    let reg = rigid_registration(t, centre);
    let plan = adapt_plan(
        &s,
        AdaptOptions::new(wide_limits(), SAD_MM).with_follow_rotation(true),
    );
    let mut wepl = FrameWepl::for_plan(&plan);
    let motion = plan.motion_of(&reg);
    plan.measure_ct(&mut s.frame, &water_ct(0), &s.hlut, &motion, &mut wepl)
        .unwrap();
    let mut adapter = Adapter::new(plan);
    let mut out = CorrectionSet::default();
    let summary = adapter
        .adapt(STAMP, &reg, &wepl, &mut out)
        .unwrap_or_else(|h| panic!("held: {h}"));
    let geo = BeamGeometry::from_beam(&s.plan.beams[0], SAD_MM).unwrap();
    let rsp_water = s.hlut.rsp(0.0);
    let mut worst_translation_only_mm = 0.0f64;
    for (n, c) in out.spots.iter().enumerate() {
        let p = s.planned.target_point_mm(n).unwrap();
        let q = t.apply(&p);
        let miss = ray_miss_mm(&geo, c.x_mm, c.y_mm, q);
        // f32 spot positions: ~1e-5 mm at 50 mm, magnified to the target depth
        assert!(
            miss < 1e-3,
            "spot {n}: corrected ray misses the rotated target by {miss} mm"
        );
        worst_translation_only_mm =
            worst_translation_only_mm.max(ray_miss_mm(&geo, c.x_mm, c.y_mm, p + reg.tumor_shift_mm));
        // Water from the box's face at y = −100 along the ray (direction `dir`): the new
        // depth is the rotated target's, measured where it projects on the moved ray.
        let dir = s.planned.rays()[s.planned.spots()[n].ray].direction;
        let want = rsp_water * (q.y + 100.0) / dir.y;
        let got = f64::from(wepl.wepl_mm[n]);
        // f32 storage: ~1e-5 relative; the projection onto the moved ray shortens the depth
        // by at most miss²/2 / depth, far below that
        assert!(
            (got - want).abs() < 0.01,
            "spot {n}: WEPL {got} mm, analytic {want} mm"
        );
    }
    // The same spots corrected by translation only would miss their targets by millimetres:
    // what the rotation moves a point 40-60 mm from the centre.
    assert!(
        worst_translation_only_mm > 1.5,
        "translation-only would miss by only {worst_translation_only_mm} mm"
    );
    // The range half's documented bound: a target lies at most sin θ · (half its ray's span
    // of target depths) off the moved ray it is read on; here the two layers' targets are
    // ≈ 38 mm apart along each ray.
    let bound = 3.5f64.to_radians().sin() * 0.5 * 40.0;
    assert!(
        wepl.max_ray_miss_mm > 0.0 && wepl.max_ray_miss_mm <= bound,
        "ray miss {} mm, bound {bound} mm",
        wepl.max_ray_miss_mm
    );
    assert_eq!(summary.max_ray_miss.get(), wepl.max_ray_miss_mm);
}

#[test]
fn translation_only_mode_moves_every_spot_by_the_tumor_shift() {
    let mut s = setup();
    let (t, centre) = rotated();
    let reg = rigid_registration(t, centre);
    let options = AdaptOptions::new(wide_limits(), SAD_MM).with_follow_rotation(false);
    let plan = adapt_plan(&s, options);
    let mut wepl = FrameWepl::for_plan(&plan);
    let motion = plan.motion_of(&reg);
    plan.measure_ct(&mut s.frame, &water_ct(0), &s.hlut, &motion, &mut wepl)
        .unwrap();
    assert!(
        wepl.max_ray_miss_mm < 1e-9,
        "a pure shift moves every ray exactly, miss {} mm",
        wepl.max_ray_miss_mm
    );
    let mut out = CorrectionSet::default();
    Adapter::new(plan)
        .adapt(STAMP, &reg, &wepl, &mut out)
        .unwrap_or_else(|h| panic!("held: {h}"));
    let geo = BeamGeometry::from_beam(&s.plan.beams[0], SAD_MM).unwrap();
    for (n, c) in out.spots.iter().enumerate() {
        let p = s.planned.target_point_mm(n).unwrap();
        let miss = ray_miss_mm(&geo, c.x_mm, c.y_mm, p + reg.tumor_shift_mm);
        assert!(miss < 1e-3, "spot {n}: {miss} mm off the shifted target");
    }
}

#[test]
fn a_measurement_for_the_translation_only_motion_is_not_used_for_the_rotated_one() {
    let mut s = setup();
    let (t, centre) = rotated();
    let reg = rigid_registration(t, centre);
    let plan = adapt_plan(
        &s,
        AdaptOptions::new(wide_limits(), SAD_MM).with_follow_rotation(true),
    );
    let mut wepl = FrameWepl::for_plan(&plan);
    plan.measure_ct(
        &mut s.frame,
        &water_ct(0),
        &s.hlut,
        &reg.tumor_shift_mm,
        &mut wepl,
    )
    .unwrap();
    let mut out = CorrectionSet::default();
    let h = Adapter::new(plan)
        .adapt(STAMP, &reg, &wepl, &mut out)
        .expect_err("a depth measured for other points must hold");
    assert_eq!(
        (h.reason, h.check),
        (HoldReason::InternalFault, HoldCheck::WeplShiftMismatch)
    );
    assert!(out.spots.is_empty());
}

#[test]
fn a_rotation_over_the_limit_holds() {
    let mut s = setup();
    let limits = SafetyLimits {
        max_rotation_deg: 3.0,
        ..wide_limits()
    };
    let plan = adapt_plan(&s, AdaptOptions::new(limits, SAD_MM).with_follow_rotation(true));
    let mut adapter = Adapter::new(plan.clone());
    let mut out = CorrectionSet::default();
    let mut wepl = FrameWepl::for_plan(&plan);
    // 3.5° holds…
    let (t, centre) = rotated();
    let reg = rigid_registration(t, centre);
    plan.measure_ct(
        &mut s.frame,
        &water_ct(0),
        &s.hlut,
        &plan.motion_of(&reg),
        &mut wepl,
    )
    .unwrap();
    let h = adapter
        .adapt(STAMP, &reg, &wepl, &mut out)
        .expect_err("3.5° > 3°");
    assert_eq!(
        (h.reason, h.check),
        (HoldReason::RegistrationFailed, HoldCheck::RotationOverLimit)
    );
    assert!((h.value - 3.5).abs() < 1e-9 && h.limit == 3.0, "{h}");
    // …2.5° about the same axis passes.
    let axis = VectorMm::new(0.3, 0.5, 0.8).normalize();
    let t = RigidTransform::about_center(
        Rotation3::new(axis * 2.5f64.to_radians()),
        centre,
        VectorMm::zeros(),
    );
    let reg = rigid_registration(t, centre);
    plan.measure_ct(
        &mut s.frame,
        &water_ct(0),
        &s.hlut,
        &plan.motion_of(&reg),
        &mut wepl,
    )
    .unwrap();
    adapter
        .adapt(STAMP, &reg, &wepl, &mut out)
        .unwrap_or_else(|h| panic!("2.5° held: {h}"));
}
