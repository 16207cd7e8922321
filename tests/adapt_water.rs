//! The adapt stage against analytic answers in a water phantom with known rigid tumor
//! shifts: lateral magnification, ΔWEPL of a shift along the beam and of an inserted bone
//! slab, the energy round trip, both range modes and facility snapping.

mod adapt_support;

use std::path::Path;

use adapt_support::*;
use ionguide::adapt::{AdaptOptions, Adapter, EnergyModel, FrameStamp, FrameWepl};
use ionguide::correction::{CorrectionSet, RangeMode};
use ionguide::range::range_energy::RangeEnergyTable;
use ionguide::range::{BeamGeometry, FacilityTable};
use ionguide::units::{Ion, VectorMm};

const STAMP: FrameStamp = FrameStamp {
    frame_id: 7,
    valid_until_unix_ns: 1_000,
};

/// Runs range + adapt halves on `ct` for `shift`; panics on a hold (these shifts are legal).
fn run(
    s: &mut Setup,
    options: AdaptOptions,
    ct: &ionguide::volume::CtVolume,
    shift: VectorMm,
) -> (CorrectionSet, FrameWepl) {
    let plan = adapt_plan(s, options);
    let mut wepl = FrameWepl::for_plan(&plan);
    plan.measure_ct(&mut s.frame, ct, &s.hlut, &shift, &mut wepl)
        .unwrap();
    let mut adapter = Adapter::new(plan);
    let mut out = CorrectionSet::default();
    adapter
        .adapt(STAMP, &registration(shift), &wepl, &mut out)
        .unwrap_or_else(|h| panic!("held: {h}"));
    (out, wepl)
}

#[test]
fn lateral_shift_moves_spots_by_the_magnified_shift_and_keeps_the_range() {
    let mut s = setup();
    let shift = VectorMm::new(3.0, 0.0, -2.0); // BEV x +3 (left), BEV y −2 (inferior)
    let (out, wepl) = run(
        &mut s,
        AdaptOptions::new(wide_limits(), SAD_MM),
        &water_ct(0),
        shift,
    );
    let geo = BeamGeometry::from_beam(&s.plan.beams[0], SAD_MM).unwrap();
    let csda = RangeEnergyTable::new(Ion::CARBON12).unwrap();
    assert_eq!(out.spots.len(), s.planned.spots().len());
    assert_eq!(
        (out.frame_id, out.valid_until_unix_ns, out.mode),
        (7, 1_000, Some(RangeMode::Energy))
    );
    let mut depths = Vec::new();
    for (n, c) in out.spots.iter().enumerate() {
        let r = s.planned.spots()[n];
        let planned = s.plan.beams[0].layers[r.layer].spots[r.spot];
        let p = s.planned.target_point_mm(n).unwrap();
        // Target height above the isocenter plane (source at −y): d = −y.
        let d = -p.y;
        depths.push(d);
        let want_dx = 3.0 * SAD_MM[0] / (SAD_MM[0] - d);
        let want_dy = -2.0 * SAD_MM[1] / (SAD_MM[1] - d);
        assert!(
            (c.x_mm as f64 - planned.x_mm - want_dx).abs() < 1e-4,
            "spot {n}: dx {}",
            c.x_mm as f64 - planned.x_mm
        );
        assert!((c.y_mm as f64 - planned.y_mm - want_dy).abs() < 1e-4, "spot {n}");
        // Independent of the formula: the corrected spot's ray passes through the moved target.
        let ray = geo.spot_ray(c.x_mm as f64, c.y_mm as f64, 1000.0);
        let v = (p + shift) - ray.origin;
        let miss = (v - ray.direction * v.dot(&ray.direction)).norm();
        assert!(
            miss < 1e-3,
            "spot {n}: corrected ray misses the moved target by {miss} mm"
        );
        // Water everywhere: no range change, the planned energy.
        let dw = wepl.wepl_mm[n] as f64 - r.planned_depth.get();
        assert!(dw.abs() < 1e-3, "spot {n}: ΔWEPL {dw}");
        assert!((c.energy_mev_u as f64 / r.energy_mev_u - 1.0).abs() < 1e-5);
        assert!((csda.range_mm(c.energy_mev_u as f64).unwrap().get() - r.planned_depth.get()).abs() < 0.01);
        assert_eq!(c.range_shifter_mm_we, 0.0);
    }
    // Both signs of d occur, so magnification above and below 1 is exercised.
    assert!(
        depths.iter().any(|&d| d > 5.0) && depths.iter().any(|&d| d < -5.0),
        "{depths:?}"
    );
    assert_eq!(out.tumor_shift_mm, [3.0, 0.0, -2.0]);
}

#[test]
fn shift_along_the_beam_in_water_changes_the_range_by_the_shift() {
    let mut s = setup();
    let rsp_water = s.hlut.rsp(0.0);
    let csda = RangeEnergyTable::new(Ion::CARBON12).unwrap();
    for delta in [7.0, -5.0] {
        // +y is downstream (away from the source): a deeper target.
        let shift = VectorMm::new(0.0, delta, 0.0);
        let (out, wepl) = run(
            &mut s,
            AdaptOptions::new(wide_limits(), SAD_MM),
            &water_ct(0),
            shift,
        );
        for (n, c) in out.spots.iter().enumerate() {
            let r = s.planned.spots()[n];
            let dw = wepl.wepl_mm[n] as f64 - r.planned_depth.get();
            assert!(
                (dw - delta * rsp_water).abs() < 0.1,
                "δ {delta} spot {n}: ΔWEPL {dw}"
            );
            // Energy round trip: the new energy's range is the planned range + ΔWEPL.
            let got = csda.range_mm(c.energy_mev_u as f64).unwrap().get() - r.planned_depth.get();
            assert!(
                (got - dw).abs() < 0.01,
                "δ {delta} spot {n}: range change {got} vs {dw}"
            );
            assert_eq!(c.energy_mev_u > r.energy_mev_u as f32, delta > 0.0);
        }
    }
}

#[test]
fn upstream_bone_slab_adds_its_excess_stopping_power() {
    let mut s = setup();
    let mut ct = water_ct(0);
    slab(&mut ct, -80.0, -70.0, 1000);
    let excess = 10.0 * (s.hlut.rsp(1000.0) - s.hlut.rsp(0.0));
    assert!(excess > 3.0, "the HLUT makes bone denser than water: {excess}");
    let (out, wepl) = run(
        &mut s,
        AdaptOptions::new(wide_limits(), SAD_MM),
        &ct,
        VectorMm::zeros(),
    );
    for (n, c) in out.spots.iter().enumerate() {
        let r = s.planned.spots()[n];
        // A divergent ray crosses the 10 mm slab over 10 / cos α.
        let cos_a = s.planned.rays()[r.ray].direction.y;
        let dw = wepl.wepl_mm[n] as f64 - r.planned_depth.get();
        assert!(
            (dw - excess / cos_a).abs() < 0.01,
            "spot {n}: ΔWEPL {dw}, want {}",
            excess / cos_a
        );
        assert_eq!(c.x_mm as f64, s.plan.beams[0].layers[r.layer].spots[r.spot].x_mm);
    }
}

#[test]
fn range_shifter_mode_keeps_the_energy_and_pulls_back_by_the_range_change() {
    let mut s = setup();
    let opts = AdaptOptions::new(wide_limits(), SAD_MM).with_mode(RangeMode::RangeShifter);
    let (out, wepl) = run(&mut s, opts, &water_ct(0), VectorMm::new(0.0, 6.0, 0.0));
    assert_eq!(out.mode, Some(RangeMode::RangeShifter));
    for (n, c) in out.spots.iter().enumerate() {
        let r = s.planned.spots()[n];
        let dw = wepl.wepl_mm[n] as f64 - r.planned_depth.get();
        assert!(dw > 5.0);
        assert_eq!(c.energy_mev_u, r.energy_mev_u as f32);
        assert!((c.range_shifter_mm_we as f64 + dw).abs() < 1e-4, "spot {n}");
    }
}

#[test]
fn facility_snapping_delivers_a_table_energy_within_half_a_step() {
    let mut s = setup();
    let f = FacilityTable::from_file(Path::new(
        "tests/data/physics/carbon_bragg_peak_depth_matRad_generic.csv",
    ))
    .unwrap();
    let opts =
        AdaptOptions::new(wide_limits(), SAD_MM).with_energy_model(EnergyModel::FacilitySnap(f.clone()));
    let plan = adapt_plan(&s, opts);
    let mut wepl = FrameWepl::for_plan(&plan);
    let shift = VectorMm::new(0.0, 4.0, 0.0);
    plan.measure_ct(&mut s.frame, &water_ct(0), &s.hlut, &shift, &mut wepl)
        .unwrap();
    let mut out = CorrectionSet::default();
    let summary = Adapter::new(plan)
        .adapt(STAMP, &registration(shift), &wepl, &mut out)
        .unwrap();
    let mut worst: f64 = 0.0;
    for (n, c) in out.spots.iter().enumerate() {
        let r = s.planned.spots()[n];
        let k = f
            .energies_mev_u()
            .iter()
            .position(|&e| e as f32 == c.energy_mev_u);
        let k = k.unwrap_or_else(|| panic!("spot {n}: {} MeV/u is not a table energy", c.energy_mev_u));
        let want = f.depth_mm(r.energy_mev_u).unwrap().get() + wepl.wepl_mm[n] as f64 - r.planned_depth.get();
        let residual = f.depths_mm()[k] - want;
        let step = f.depths_mm()[k.max(1)] - f.depths_mm()[k.max(1) - 1];
        assert!(
            residual.abs() <= 0.5 * step + 1e-3,
            "spot {n}: residual {residual}, step {step}"
        );
        worst = worst.max(residual.abs());
    }
    assert!((summary.max_abs_snap_residual.get() - worst).abs() < 1e-3);
}

#[test]
fn lateral_shift_moves_the_traced_rays_into_a_half_slab() {
    let mut s = setup();
    // Bone upstream only on the patient's left (x > 0): a ray sees it only once moved there.
    let mut ct = water_ct(0);
    for k in 0..100 {
        for j in 10..15 {
            for i in 50..100 {
                *ct.get_mut(i, j, k).unwrap() = 1000;
            }
        }
    }
    let excess = 10.0 * (s.hlut.rsp(1000.0) - s.hlut.rsp(0.0));
    for dx in [25.0, -25.0] {
        let (_, wepl) = run(
            &mut s,
            AdaptOptions::new(wide_limits(), SAD_MM),
            &ct,
            VectorMm::new(dx, 0.0, 0.0),
        );
        for (n, r) in s.planned.spots().iter().enumerate() {
            let ray = s.planned.rays()[r.ray];
            // Where the moved ray crosses the slab (y = −75): its planned x there plus dx.
            let x_at_slab = ray.at((-75.0 - ray.origin.y) / ray.direction.y).x + dx;
            let want = if x_at_slab > 0.0 {
                excess / ray.direction.y
            } else {
                0.0
            };
            let dw = wepl.wepl_mm[n] as f64 - r.planned_depth.get();
            assert!(
                (dw - want).abs() < 0.01,
                "dx {dx} spot {n} (x at slab {x_at_slab}): ΔWEPL {dw}, want {want}"
            );
        }
    }
}

/// The range stage's tracer keeps no profiles (each ray's spots are measured as it is
/// traced); on one or two threads it must measure exactly what the profile-keeping tracer
/// does, which the analytic slab tests above check against the truth.
#[test]
fn moved_trace_is_identical_on_two_threads_and_without_profiles() {
    let mut s = setup();
    let mut ct = water_ct(0);
    slab(&mut ct, -80.0, -70.0, 700);
    let plan = adapt_plan(&s, AdaptOptions::new(wide_limits(), SAD_MM));
    let shift = VectorMm::new(2.0, 3.0, -4.0);
    let mut one = FrameWepl::for_plan(&plan);
    plan.measure_ct(&mut s.frame, &ct, &s.hlut, &shift, &mut one)
        .unwrap();
    let mut two_threads =
        ionguide::range::SpotTracer::new(&s.plan, &tracer_options().with_threads(2)).unwrap();
    let mut two = FrameWepl::for_plan(&plan);
    plan.measure_ct(&mut two_threads, &ct, &s.hlut, &shift, &mut two)
        .unwrap();
    assert_eq!(one, two);
    for mut lean in [s.frame.without_profiles(), two_threads.without_profiles()] {
        let mut got = FrameWepl::for_plan(&plan);
        // Twice: the scratch buffer is reused.
        for _ in 0..2 {
            plan.measure_ct(&mut lean, &ct, &s.hlut, &shift, &mut got)
                .unwrap();
        }
        assert!(lean.profile(0).is_none());
        assert_eq!(lean.target_t_mm(), s.frame.target_t_mm());
        assert_eq!(
            got.wepl_mm.iter().map(|w| w.to_bits()).collect::<Vec<_>>(),
            one.wepl_mm.iter().map(|w| w.to_bits()).collect::<Vec<_>>()
        );
    }
    assert!(one.wepl_mm.iter().filter(|w| w.is_finite()).count() > one.wepl_mm.len() / 2);
    // A wrong offset count is an error, not a silent unmoved trace.
    let queries = vec![0.0; s.frame.spots().len()];
    let mut out = Vec::new();
    assert!(s
        .frame
        .trace_frame_ct_moved_at(&ct, &s.hlut, &[], &queries, &mut out)
        .is_err());
    // and so is a wrong query count
    let offsets = vec![VectorMm::zeros(); s.frame.beam_count()];
    assert!(s
        .frame
        .trace_frame_ct_moved_at(&ct, &s.hlut, &offsets, &queries[1..], &mut out)
        .is_err());
}
