//! Spot weights that give the target a flat dose: the geometric planner places spots and
//! energies but gives every spot the same weight, which piles dose up proximally (every
//! layer's entrance plateau crosses the layers in front of it). A clinic would never treat
//! such a plan, and its 4D dose would be judged against a static dose that is already
//! 60 % inhomogeneous.
//!
//! The method is the classic iterative reweighting at the spots' Bragg-peak points: dose the
//! plan, then scale each spot's weight by `(prescription / dose at its own peak point)`,
//! damped, and repeat. Each spot's peak point is where its ray reaches its planned
//! water-equivalent depth (the range engine's target point), so the dose is flattened over
//! the volume the spots cover — the PTV and the planner's margin. It is not an optimizer
//! of dose–volume objectives; it is enough for a homogeneous target dose to compare
//! deliveries against.

use ionguide::dose::IonMachine;
use ionguide::dose::{DeliveredSpot, DoseEngine, DoseError};
use ionguide::geometry::Grid;
use ionguide::plan::IonPlan;
use ionguide::range::{Hlut, RangeEnergyTable, SpotTracer};
use ionguide::volume::CtVolume;

/// What the reweighting reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flattening {
    /// Iterations run.
    pub iterations: usize,
    /// Spread of the dose at the spots' peak points after the last iteration: (p95 − p5) /
    /// median.
    pub peak_dose_spread: f64,
}

/// Reweights `plan`'s spots so the dose at every spot's Bragg-peak point inside the target
/// (`inside`) is `prescription_gy`; spots peaking outside it (the planner's margin) follow
/// the median correction, so they keep feeding the target's edge without being driven up
/// by the dose fall-off around them. Spot weights then count particles for `engine`'s
/// weight unit. `tracer` is the plan's spot tracer on `ct` (its target points are the peak
/// points).
#[allow(clippy::too_many_arguments)]
pub fn flatten_weights(
    plan: &mut IonPlan,
    tracer: &SpotTracer,
    ct: &CtVolume,
    hlut: &Hlut,
    engine: &mut DoseEngine,
    grid: &Grid,
    prescription_gy: f64,
    iterations: usize,
    inside: impl Fn(&ionguide::units::PointMm) -> bool,
) -> Result<Flattening, DoseError> {
    // The planner aims each spot's CSDA range (the range engine's) at its planned depth; the
    // dose peaks proximal of it, by the machine's own Bragg-peak depth for that energy. The
    // weights are tuned there: at the CSDA depth the dose is already falling off, and a
    // spot scaled up to fill its own fall-off would make a hot peak.
    let machines = engine.machines().to_vec();
    let peaks: Vec<Option<[f64; 3]>> = tracer
        .spots()
        .iter()
        .map(|s| {
            let ion = plan.beams[s.beam].ion;
            let machine = machines.iter().find(|m| m.ion == ion)?;
            let csda = RangeEnergyTable::new(ion)
                .ok()?
                .range_mm(s.energy_mev_u)
                .ok()?
                .get();
            let peak_wepl = s.planned_depth.get() - (csda - bragg_peak_mm(machine, s.energy_mev_u)?);
            let t = tracer.profile(s.ray)?.depth_at_wepl(peak_wepl)?;
            let p = tracer.rays()[s.ray].at(t);
            inside(&p).then(|| grid.patient_to_index(&p))
        })
        .collect();
    let dims = grid.dims();
    let mut dose = vec![0.0f64; grid.len()];
    let mut spread = f64::NAN;
    for _ in 0..iterations {
        dose.iter_mut().for_each(|d| *d = 0.0);
        let spots: Vec<DeliveredSpot> = engine.delivered_spots(plan, None)?;
        engine.add_dose(ct, hlut, plan, &spots, grid, &mut dose)?;
        let at_peaks: Vec<f64> = peaks
            .iter()
            .map(|p| {
                p.map_or(f64::NAN, |u| {
                    crate::scoring::accumulate::trilinear(&dose, dims, u)
                })
            })
            .collect();
        let mut sorted: Vec<f64> = at_peaks
            .iter()
            .copied()
            .filter(|d| d.is_finite() && *d > 0.0)
            .collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            break;
        }
        let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
        let median = q(0.5);
        spread = (q(0.95) - q(0.05)) / median;
        let outside_ratio = (prescription_gy / median).sqrt();
        let mut i = 0;
        for layer in plan.beams.iter_mut().flat_map(|b| b.layers.iter_mut()) {
            for spot in &mut layer.spots {
                let d = at_peaks[i];
                // Damped (power 0.7): a spot's dose at its own peak is a fraction of what
                // its neighbours give there, so the full ratio overshoots and oscillates.
                let ratio = if d.is_finite() && d > 0.0 {
                    (prescription_gy / d).powf(0.7)
                } else {
                    outside_ratio
                };
                spot.weight *= ratio.clamp(0.25, 4.0);
                i += 1;
            }
        }
    }
    Ok(Flattening {
        iterations,
        peak_dose_spread: spread,
    })
}

/// The machine's Bragg-peak depth at `energy_mev_u`, mm w.e. (matRad's `peakPos + offset`,
/// linear between tabulated energies); `None` outside its energies.
pub fn bragg_peak_mm(machine: &IonMachine, energy_mev_u: f64) -> Option<f64> {
    let es = &machine.energies;
    let k = es.partition_point(|k| k.energy_mev_u < energy_mev_u);
    let p = |k: &ionguide::dose::EnergyKernel| k.peak_pos_mm + k.offset_mm;
    match (k.checked_sub(1).map(|j| &es[j]), es.get(k)) {
        (Some(a), Some(b)) if b.energy_mev_u > a.energy_mev_u => {
            let f = (energy_mev_u - a.energy_mev_u) / (b.energy_mev_u - a.energy_mev_u);
            Some(p(a) + f * (p(b) - p(a)))
        }
        (_, Some(b)) if (b.energy_mev_u - energy_mev_u).abs() < 1e-9 => Some(p(b)),
        // just below the lowest energy: its peak less the CSDA difference is close enough
        (None, Some(b)) => Some(p(b)),
        _ => None,
    }
}
