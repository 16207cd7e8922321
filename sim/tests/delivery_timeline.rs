//! The delivery timeline on random plans and permits, and on the demo's own plan.
//!
//! Whatever the plan and permit: every spot's `[start, end)` lies inside one permitted
//! interval, spots keep plan order without overlapping, each dwell is its particles over the
//! rate, and gating never changes the beam-on time.

use ionguide_sim::delivery::gating::{gate, GatingWindow, MotionSignal};
use ionguide_sim::delivery::timeline::{
    schedule, schedule_spots, BeamPermit, ScanAxes, SpotRequest, SynchrotronModel, TimelineError,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn model(flat_top_s: Option<f64>, refill: bool, per_spill: f64) -> SynchrotronModel {
    SynchrotronModel {
        energy_switch_s: 0.2,
        energy_switch_refills_spill: refill,
        spill_recharge_s: 0.7,
        particles_per_spill: per_spill,
        max_spill_length_s: flat_top_s,
        particle_rate_per_s: 1e8,
        scan_speed_mm_per_s: [2000.0, 1000.0],
        scan_axes: ScanAxes::Simultaneous,
        spot_settle_s: 0.001,
        beam_switch_s: 3.0,
    }
}

/// Spots of up to 2 beams × 3 layers × 12 spots with up to 2e7 particles (≤ 0.2 s dwell).
fn spots_strategy() -> impl Strategy<Value = Vec<SpotRequest>> {
    vec(
        vec(vec((-50.0..50.0f64, -50.0..50.0f64, 0.0..2e7f64), 1..12), 1..4),
        1..3,
    )
    .prop_map(|beams| {
        let mut out = Vec::new();
        for (b, layers) in beams.iter().enumerate() {
            for (l, spots) in layers.iter().enumerate() {
                for (s, &(x, y, p)) in spots.iter().enumerate() {
                    out.push(SpotRequest {
                        beam: b,
                        layer: l,
                        spot: s,
                        energy_mev_u: 300.0 - 5.0 * l as f64,
                        x_mm: x,
                        y_mm: y,
                        particles: p,
                    });
                }
            }
        }
        out
    })
}

/// Alternating on/off durations; the last interval is open-ended so every spot fits.
fn permit_strategy() -> impl Strategy<Value = BeamPermit> {
    vec((0.05..2.0f64, 0.01..3.0f64), 0..20).prop_map(|pairs| {
        let mut t = 0.0;
        let mut iv = Vec::new();
        for (on, off) in pairs {
            iv.push([t, t + on]);
            t += on + off;
        }
        iv.push([t, f64::INFINITY]);
        BeamPermit::intervals(iv).expect("built sorted and disjoint")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn spots_lie_inside_the_permit_in_order_without_overlap(
        spots in spots_strategy(),
        permit in permit_strategy(),
        flat_top in prop::option::of(0.2..5.0f64),
        refill in any::<bool>(),
        per_spill in 2e7..1e9f64,
    ) {
        let m = model(flat_top, refill, per_spill);
        let tl = schedule_spots(&spots, &m, &permit).unwrap();
        let free = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
        prop_assert_eq!(tl.spots.len(), spots.len());
        for (k, (t, r)) in tl.spots.iter().zip(&spots).enumerate() {
            prop_assert_eq!(t.plan_index, k);
            prop_assert_eq!((t.beam, t.layer, t.spot), (r.beam, r.layer, r.spot));
            prop_assert!(permit.contains(t.start_s, t.end_s), "spot {} [{}, {}) outside", k, t.start_s, t.end_s);
            prop_assert!(((t.end_s - t.start_s) - r.particles / m.particle_rate_per_s).abs() < 1e-9);
            if let Some(ft) = flat_top {
                // a spill's spots fit in its flat-top
                let first = tl.spots.iter().find(|s| s.spill == t.spill).unwrap();
                prop_assert!(t.end_s <= first.start_s + ft + 1e-9);
            }
        }
        for w in tl.spots.windows(2) {
            prop_assert!(w[0].end_s <= w[1].start_s, "overlap {:?} {:?}", w[0], w[1]);
            prop_assert!(w[0].spill <= w[1].spill);
        }
        // a spill never gives more than it holds
        let last_spill = tl.spots.last().map_or(0, |s| s.spill);
        for sp in 0..=last_spill {
            let used: f64 = tl.spots.iter().zip(&spots).filter(|(t, _)| t.spill == sp).map(|(_, r)| r.particles).sum();
            prop_assert!(used <= per_spill * (1.0 + 1e-12));
        }
        prop_assert!((tl.totals.beam_on_s - free.totals.beam_on_s).abs() < 1e-9);
        prop_assert!(tl.totals.treatment_s >= free.totals.treatment_s - 1e-9 || flat_top.is_some());
        prop_assert_eq!(tl.totals.energy_switches, free.totals.energy_switches);
    }
}

#[test]
fn a_gate_from_a_breathing_signal_keeps_every_spot_inside_its_openings() {
    // 4 s breathing period, beam on in the lowest 30% of the amplitude range
    let period_s = 4.0;
    let times: Vec<f64> = (0..=24_000).map(|k| k as f64 * 0.025).collect();
    let amps: Vec<f64> = times
        .iter()
        .map(|t| 6.0 * (2.0 * std::f64::consts::PI * t / period_s).cos())
        .collect();
    let g = gate(
        &MotionSignal::new(times, amps).unwrap(),
        GatingWindow::lowest_fraction(0.3),
    )
    .unwrap();
    let spots: Vec<SpotRequest> = (0..300)
        .map(|k| SpotRequest {
            beam: 0,
            layer: k / 100,
            spot: k % 100,
            energy_mev_u: 250.0 - (k / 100) as f64 * 4.0,
            x_mm: (k % 10) as f64 * 3.0,
            y_mm: ((k % 100) / 10) as f64 * 3.0,
            particles: 2e7,
        })
        .collect();
    let m = SynchrotronModel::fast_multi_energy();
    let tl = schedule_spots(&spots, &m, &g.permit).unwrap();
    for s in &tl.spots {
        assert!(g.permit.contains(s.start_s, s.end_s));
    }
    let free = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
    assert!((tl.totals.beam_on_s - free.totals.beam_on_s).abs() < 1e-9);
    // at a ~37% duty cycle the gated delivery cannot be faster than beam-on / duty
    assert!(tl.totals.treatment_s >= tl.totals.beam_on_s / g.duty_cycle * 0.9);
}

#[test]
fn a_spot_that_fits_no_window_is_an_error_not_a_hang() {
    let permit = BeamPermit::intervals(vec![[0.0, 0.01], [5.0, 5.01]]).unwrap();
    let spots = [SpotRequest {
        beam: 0,
        layer: 0,
        spot: 0,
        energy_mev_u: 200.0,
        x_mm: 0.0,
        y_mm: 0.0,
        particles: 4e7,
    }];
    let err = schedule_spots(&spots, &SynchrotronModel::matrad(), &permit).unwrap_err();
    assert!(
        matches!(err, TimelineError::NoPermittedWindow { plan_index: 0, .. }),
        "{err}"
    );
}

/// The demo's plan (small phantom, default planner: what `ionguide demo --small` delivers)
/// under both presets, matRad's 10^6 particles per unit weight. Prints the times; run with
/// `--nocapture` to read them.
#[test]
fn demo_plan_under_both_presets() {
    use ionguide_sim::anatomy::phantom::{Phantom, PhantomSpec};
    use ionguide_sim::imaging::frames::planning_ids;
    use ionguide_sim::planning::{plan, PlannerOptions};

    let phantom = Phantom::thorax(&PhantomSpec::small()).unwrap();
    let p = plan(&phantom, &planning_ids(&phantom), &PlannerOptions::default()).unwrap();
    let n = p.spot_count();
    let layers: usize = p.beams.iter().map(|b| b.layers.len()).sum();
    let per_weight = 1e6;
    let always = BeamPermit::always();
    let slow = schedule(&p, per_weight, &SynchrotronModel::matrad(), &always).unwrap();
    let fast = schedule(&p, per_weight, &SynchrotronModel::fast_multi_energy(), &always).unwrap();
    // gated: a 4 s sinusoidal breathing, beam on in the lowest 30% of its range
    let times: Vec<f64> = (0..=100_000).map(|k| k as f64 * 0.04).collect();
    let amps: Vec<f64> = times
        .iter()
        .map(|t| 5.0 * (2.0 * std::f64::consts::PI * t / 4.0).cos())
        .collect();
    let g = gate(
        &MotionSignal::new(times, amps).unwrap(),
        GatingWindow::lowest_fraction(0.3),
    )
    .unwrap();
    let slow_gated = schedule(&p, per_weight, &SynchrotronModel::matrad(), &g.permit).unwrap();
    let fast_gated = schedule(&p, per_weight, &SynchrotronModel::fast_multi_energy(), &g.permit).unwrap();
    eprintln!("gate: duty cycle {:.4}", g.duty_cycle);
    for (name, m, tl) in [
        ("matrad", SynchrotronModel::matrad(), &slow),
        ("fast_multi_energy", SynchrotronModel::fast_multi_energy(), &fast),
        ("matrad gated", SynchrotronModel::matrad(), &slow_gated),
        (
            "fast_multi_energy gated",
            SynchrotronModel::fast_multi_energy(),
            &fast_gated,
        ),
    ] {
        eprintln!(
            "demo plan ({n} spots, {} beams, {layers} layers) under {name}: treatment {:.2} s \
             ({:.2} s without beam switches), beam-on {:.2} s, spill wait {:.2} s, permit wait {:.2} s, \
             spills {}, energy switches {}, beam switches {}",
            p.beams.len(),
            tl.totals.treatment_s,
            tl.totals.treatment_s - tl.totals.beam_switches as f64 * m.beam_switch_s,
            tl.totals.beam_on_s,
            tl.totals.spill_wait_s,
            tl.totals.permit_wait_s,
            tl.totals.spills_used,
            tl.totals.energy_switches,
            tl.totals.beam_switches
        );
    }
    for tl in [&slow_gated, &fast_gated] {
        assert!(tl.spots.iter().all(|s| g.permit.contains(s.start_s, s.end_s)));
        assert!((tl.totals.beam_on_s - slow.totals.beam_on_s).abs() < 1e-6);
    }
    assert!(slow_gated.totals.treatment_s > slow.totals.treatment_s);
    assert!(fast_gated.totals.treatment_s > fast.totals.treatment_s);
    // the planner gives every spot weight 1: beam-on is n · 10^6 / (4·10^8 /s) under both
    assert!((slow.totals.beam_on_s - n as f64 * 1e6 / 4e8).abs() < 1e-6);
    assert_eq!(slow.totals.energy_switches, layers - p.beams.len());
    assert_eq!(slow.totals.beam_switches, p.beams.len() - 1);
    // matRad's constants: 3 s per energy switch is a floor on its time
    assert!(slow.totals.treatment_s >= 3.0 * slow.totals.energy_switches as f64);
    assert!(fast.totals.treatment_s < slow.totals.treatment_s);
}
