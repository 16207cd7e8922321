//! Every safety limit trips with its hold reason, and (proptest) no correction that is
//! emitted ever exceeds its limits, for random shifts and limits.

mod adapt_support;

use adapt_support::*;
use ionguide::adapt::{
    AdaptOptions, AdaptPlan, Adapter, FrameStamp, FrameWepl, HoldCheck, HoldDetail, SafetyLimits,
};
use ionguide::correction::{CorrectionSet, HoldReason, RangeMode};
use ionguide::range::range_energy::RangeEnergyTable;
use ionguide::register::{QualityFailure, Registration, Verdict};
use ionguide::units::{Ion, Mm, MmWe, VectorMm};
use ionguide::volume::CtVolume;
use proptest::prelude::*;

const STAMP: FrameStamp = FrameStamp {
    frame_id: 3,
    valid_until_unix_ns: 99,
};

/// Measures `ct` for the registration's shift and adapts.
fn once(
    s: &mut Setup,
    adapter: &mut Adapter,
    ct: &CtVolume,
    reg: &Registration,
    out: &mut CorrectionSet,
) -> Result<ionguide::adapt::AdaptSummary, HoldDetail> {
    let plan = adapter.plan().clone();
    let mut wepl = FrameWepl::for_plan(&plan);
    plan.measure_ct(&mut s.frame, ct, &s.hlut, &reg.tumor_shift_mm, &mut wepl)
        .unwrap();
    adapter.adapt(STAMP, reg, &wepl, out)
}

fn adapter(s: &Setup, limits: SafetyLimits) -> Adapter {
    Adapter::new(adapt_plan(s, AdaptOptions::new(limits, SAD_MM)))
}

fn held(r: Result<ionguide::adapt::AdaptSummary, HoldDetail>) -> HoldDetail {
    match r {
        Ok(s) => panic!("corrected, expected a hold: {s:?}"),
        Err(h) => h,
    }
}

#[test]
fn lateral_over_limit_holds_and_names_the_spot() {
    let mut s = setup();
    let mut a = adapter(
        &s,
        SafetyLimits {
            max_lateral: Mm(2.0),
            max_range: MmWe(50.0),
            max_jump: Mm(100.0),
            min_ncc: 0.5,
            max_rotation_deg: 90.0,
        },
    );
    let mut out = CorrectionSet::default();
    // 2.5 mm is over 2 mm for every spot, whatever its magnification (≈ 1 ± 0.02).
    let h = held(once(
        &mut s,
        &mut a,
        &water_ct(0),
        &registration(VectorMm::new(2.5, 0.0, 0.0)),
        &mut out,
    ));
    assert_eq!(
        (h.reason, h.check, h.spot),
        (HoldReason::LateralOverLimit, HoldCheck::Lateral, Some(0))
    );
    assert!(h.value > 2.5 * 0.99 && h.limit == 2.0, "{h:?}");
    // Nothing partial is left to send.
    assert!(out.spots.is_empty() && out.mode.is_none() && out.frame_id == 3);
    // 1.5 mm passes.
    once(
        &mut s,
        &mut a,
        &water_ct(0),
        &registration(VectorMm::new(1.5, 0.0, 0.0)),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.spots.len(), 8);
}

#[test]
fn range_over_limit_holds() {
    let mut s = setup();
    let mut a = adapter(
        &s,
        SafetyLimits {
            max_lateral: Mm(50.0),
            max_range: MmWe(3.0),
            max_jump: Mm(100.0),
            min_ncc: 0.5,
            max_rotation_deg: 90.0,
        },
    );
    let mut out = CorrectionSet::default();
    let h = held(once(
        &mut s,
        &mut a,
        &water_ct(0),
        &registration(VectorMm::new(0.0, 5.0, 0.0)),
        &mut out,
    ));
    assert_eq!(
        (h.reason, h.check),
        (HoldReason::RangeOverLimit, HoldCheck::Range)
    );
    assert!(
        (h.value - 5.0 * s.hlut.rsp(0.0)).abs() < 0.1 && h.limit == 3.0,
        "{h:?}"
    );
    // A bone slab upstream is a range change too, with no shift at all.
    let mut ct = water_ct(0);
    slab(&mut ct, -80.0, -70.0, 1000);
    let h = held(once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::zeros()),
        &mut out,
    ));
    assert_eq!(h.reason, HoldReason::RangeOverLimit);
}

#[test]
fn jump_between_corrected_frames_holds_until_reset() {
    let mut s = setup();
    let mut a = adapter(
        &s,
        SafetyLimits {
            max_lateral: Mm(50.0),
            max_range: MmWe(50.0),
            max_jump: Mm(4.0),
            min_ncc: 0.5,
            max_rotation_deg: 90.0,
        },
    );
    let mut out = CorrectionSet::default();
    let ct = water_ct(0);
    once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(1.0, 0.0, 0.0)),
        &mut out,
    )
    .unwrap();
    once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(4.0, 0.0, 0.0)),
        &mut out,
    )
    .unwrap();
    let h = held(once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(4.0, 0.0, 4.5)),
        &mut out,
    ));
    assert_eq!((h.reason, h.check), (HoldReason::JumpOverLimit, HoldCheck::Jump));
    assert!((h.value - 4.5).abs() < 1e-9 && h.limit == 4.0);
    // The held frame did not become the reference.
    assert_eq!(a.jump_reference_mm(), Some(VectorMm::new(4.0, 0.0, 0.0)));
    assert!(once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(4.0, 0.0, 4.5)),
        &mut out
    )
    .is_err());
    a.reset_jump_reference();
    once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(4.0, 0.0, 4.5)),
        &mut out,
    )
    .unwrap();
}

#[test]
fn unusable_or_dissimilar_registration_holds() {
    let mut s = setup();
    let mut a = adapter(
        &s,
        SafetyLimits {
            max_lateral: Mm(50.0),
            max_range: MmWe(50.0),
            max_jump: Mm(100.0),
            min_ncc: 0.9,
            max_rotation_deg: 90.0,
        },
    );
    let mut out = CorrectionSet::default();
    let ct = water_ct(0);
    let mut reg = registration(VectorMm::new(1.0, 0.0, 0.0));
    reg.verdict = Verdict::Reject(QualityFailure::NotConverged { iterations: 40 });
    let h = held(once(&mut s, &mut a, &ct, &reg, &mut out));
    assert_eq!(
        (h.reason, h.check),
        (HoldReason::RegistrationFailed, HoldCheck::RegistrationNotUsable)
    );
    // a rigid answer that does not describe the frame has its own code
    let mut reg = registration(VectorMm::new(1.0, 0.0, 0.0));
    reg.verdict = Verdict::Reject(QualityFailure::ResidualDeformation {
        mm: 3.2,
        limit_mm: 1.5,
        block_centre_mm: [10.0, 0.0, -5.0],
    });
    let h = held(once(&mut s, &mut a, &ct, &reg, &mut out));
    assert_eq!(
        (h.reason, h.check, h.reason.code()),
        (
            HoldReason::ResidualDeformation,
            HoldCheck::RegistrationNotUsable,
            14
        )
    );
    let mut reg = registration(VectorMm::new(1.0, 0.0, 0.0));
    reg.converged = false;
    assert_eq!(
        held(once(&mut s, &mut a, &ct, &reg, &mut out)).reason,
        HoldReason::RegistrationFailed
    );
    let mut reg = registration(VectorMm::new(1.0, 0.0, 0.0));
    reg.similarity_ncc = 0.85;
    let h = held(once(&mut s, &mut a, &ct, &reg, &mut out));
    assert_eq!(
        (h.reason, h.check, h.value, h.limit),
        (
            HoldReason::RegistrationFailed,
            HoldCheck::SimilarityBelowMin,
            0.85,
            0.9
        )
    );
    reg.similarity_ncc = f64::NAN;
    assert_eq!(
        held(once(&mut s, &mut a, &ct, &reg, &mut out)).check,
        HoldCheck::SimilarityBelowMin
    );
}

#[test]
fn target_outside_the_frame_holds_as_range_unavailable() {
    let mut s = setup();
    let mut a = adapter(&s, wide_limits());
    let mut out = CorrectionSet::default();
    // A frame whose box ends at y = 0: the deep (250 MeV/u) targets lie beyond it.
    let short = {
        let g = ionguide::geometry::Grid::axis_aligned(
            [100, 50, 100],
            ionguide::units::PointMm::new(-99.0, -99.0, -99.0),
            [2.0; 3],
        )
        .unwrap();
        CtVolume::filled(g, 0)
    };
    let h = held(once(
        &mut s,
        &mut a,
        &short,
        &registration(VectorMm::zeros()),
        &mut out,
    ));
    assert_eq!(
        (h.reason, h.check),
        (HoldReason::RangeUnavailable, HoldCheck::WeplUnavailable)
    );
    let deep = s
        .planned
        .spots()
        .iter()
        .position(|r| r.energy_mev_u == 250.0)
        .unwrap();
    assert_eq!(h.spot, Some(deep as u32));
    // A measurement made for another shift is never used.
    let plan = a.plan().clone();
    let mut wepl = FrameWepl::for_plan(&plan);
    plan.measure_ct(
        &mut s.frame,
        &water_ct(0),
        &s.hlut,
        &VectorMm::new(1.0, 0.0, 0.0),
        &mut wepl,
    )
    .unwrap();
    let h = held(a.adapt(
        STAMP,
        &registration(VectorMm::new(1.5, 0.0, 0.0)),
        &wepl,
        &mut out,
    ));
    assert_eq!(
        (h.reason, h.check),
        (HoldReason::InternalFault, HoldCheck::WeplShiftMismatch)
    );
}

#[test]
fn energy_or_shifter_outside_the_deliverable_span_holds() {
    let mut s = setup();
    let ct = water_ct(0);
    let mut out = CorrectionSet::default();
    // Deliverable up to 251 MeV/u: a 250 MeV/u spot going 5 mm deeper needs more.
    let opts = AdaptOptions::new(wide_limits(), SAD_MM).with_energy_span_mev_u([100.0, 251.0]);
    let mut a = Adapter::new(adapt_plan(&s, opts));
    let h = held(once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(0.0, 5.0, 0.0)),
        &mut out,
    ));
    assert_eq!(
        (h.reason, h.check, h.limit),
        (HoldReason::RangeUnavailable, HoldCheck::EnergyOutsideSpan, 251.0)
    );
    assert!(h.value > 251.0);
    // A facility that cannot pull the shifter back: a deeper target needs a negative setting.
    let opts = AdaptOptions::new(wide_limits(), SAD_MM)
        .with_mode(RangeMode::RangeShifter)
        .with_range_shifter_span([MmWe(0.0), MmWe(30.0)]);
    let mut a = Adapter::new(adapt_plan(&s, opts));
    let h = held(once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(0.0, 5.0, 0.0)),
        &mut out,
    ));
    assert_eq!(
        (h.reason, h.check, h.limit),
        (HoldReason::RangeUnavailable, HoldCheck::ShifterOutsideSpan, 0.0)
    );
    // … and a shallower one is fine.
    once(
        &mut s,
        &mut a,
        &ct,
        &registration(VectorMm::new(0.0, -5.0, 0.0)),
        &mut out,
    )
    .unwrap();
}

#[test]
fn bad_limits_and_untraced_planning_ct_are_typed_errors() {
    let s = setup();
    for limits in [
        SafetyLimits {
            max_lateral: Mm(-1.0),
            max_range: MmWe(1.0),
            max_jump: Mm(1.0),
            min_ncc: 0.5,
            max_rotation_deg: 90.0,
        },
        SafetyLimits {
            max_lateral: Mm(1.0),
            max_range: MmWe(f64::NAN),
            max_jump: Mm(1.0),
            min_ncc: 0.5,
            max_rotation_deg: 90.0,
        },
        SafetyLimits {
            max_lateral: Mm(1.0),
            max_range: MmWe(1.0),
            max_jump: Mm(1.0),
            min_ncc: 1.5,
            max_rotation_deg: 90.0,
        },
    ] {
        assert!(AdaptPlan::new(&s.plan, &s.planned, AdaptOptions::new(limits, SAD_MM)).is_err());
    }
    let untraced = ionguide::range::SpotTracer::new(&s.plan, &tracer_options()).unwrap();
    let e = AdaptPlan::new(&s.plan, &untraced, AdaptOptions::new(wide_limits(), SAD_MM)).unwrap_err();
    assert!(e.to_string().contains("no target point"), "{e}");
    // The plan states its SADs, so the room default does not apply…
    assert!(AdaptPlan::new(
        &s.plan,
        &s.planned,
        AdaptOptions::new(wide_limits(), [f64::INFINITY; 2])
    )
    .is_ok());
    // …but without them, a tracer and an adapt plan with different room SADs disagree.
    let mut plan = s.plan.clone();
    plan.beams[0].virtual_sad_mm = None;
    let mut tracer = ionguide::range::SpotTracer::new(&plan, &tracer_options()).unwrap();
    tracer.trace_frame_ct(&water_ct(0), &s.hlut);
    assert!(AdaptPlan::new(&plan, &tracer, AdaptOptions::new(wide_limits(), SAD_MM)).is_ok());
    let e = AdaptPlan::new(
        &plan,
        &tracer,
        AdaptOptions::new(wide_limits(), [f64::INFINITY; 2]),
    )
    .unwrap_err();
    assert!(
        matches!(e, ionguide::adapt::AdaptError::GeometryMismatch { .. }),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn emitted_corrections_are_always_within_their_limits(
        sx in -12.0f64..12.0, sy in -12.0f64..12.0, sz in -12.0f64..12.0,
        max_lateral in 0.5f64..12.0, max_range in 0.5f64..12.0,
    ) {
        let mut s = setup();
        let mut a = adapter(&s, SafetyLimits {
            max_lateral: Mm(max_lateral),
            max_range: MmWe(max_range),
            max_jump: Mm(1000.0),
            min_ncc: 0.5,
            max_rotation_deg: 90.0,
        });
        let csda = RangeEnergyTable::new(Ion::CARBON12).unwrap();
        let mut out = CorrectionSet::default();
        let shift = VectorMm::new(sx, sy, sz);
        match once(&mut s, &mut a, &water_ct(0), &registration(shift), &mut out) {
            Ok(summary) => {
                prop_assert_eq!(out.spots.len(), 8);
                prop_assert!(summary.max_lateral.get() <= max_lateral);
                for (n, c) in out.spots.iter().enumerate() {
                    let r = s.planned.spots()[n];
                    let p = s.plan.beams[0].layers[r.layer].spots[r.spot];
                    // Checked from the emitted values, not from the stage's own bookkeeping
                    // (f32 rounding of positions and energies allowed for).
                    let lateral = (c.x_mm as f64 - p.x_mm).hypot(c.y_mm as f64 - p.y_mm);
                    prop_assert!(lateral <= max_lateral + 1e-4, "spot {}: {} > {}", n, lateral, max_lateral);
                    let dr = csda.range_mm(c.energy_mev_u as f64).unwrap().get() - r.planned_depth.get();
                    prop_assert!(dr.abs() <= max_range + 0.01, "spot {}: {} > {}", n, dr, max_range);
                }
            }
            Err(h) => {
                prop_assert!(matches!(h.reason, HoldReason::LateralOverLimit | HoldReason::RangeOverLimit), "{}", h);
                prop_assert!(h.value.abs() > h.limit, "{:?}", h);
                prop_assert!(out.spots.is_empty());
            }
        }
    }
}
