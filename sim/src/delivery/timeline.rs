//! When a synchrotron delivers each spot of a plan: a scanning-delivery time model.
//!
//! Spots are delivered in plan order (beams, their layers, each layer's spots, as the plan
//! lists them). Each spot costs
//! - a **scan move** from the previous spot, `|dx|/vx` and `|dy|/vy` combined per
//!   [`ScanAxes`], then `spot_settle_s` of settling (both only between spots of one layer;
//!   the first spot of a treatment starts with the magnets already on it);
//! - its **dwell**, `particles / particle_rate_per_s`, which needs beam: the current spill
//!   must still hold the spot's particles and (if flat-tops are finite) still run for the
//!   whole dwell, and the [`BeamPermit`] must allow all of `[start, start + dwell)`.
//!
//! Between layers of different energy the machine spends `energy_switch_s` (the magnets
//! move to the first spot meanwhile: the longer of the two counts); between beams it
//! spends `beam_switch_s` and always starts a fresh synchrotron cycle. A conventional
//! synchrotron also starts a fresh cycle at every energy switch
//! (`energy_switch_refills_spill`); a multi-energy synchrotron changes energy within the
//! flat-top and keeps the spill's remaining particles and its running flat-top clock.
//!
//! What is simplified, on purpose:
//! - A spot is **never split**: when its dwell does not fit in what is left of the spill
//!   (particles or flat-top time) the spill is ended and a new one awaited; when it would
//!   cross the end of a permitted interval it **waits** for the next interval long enough
//!   to hold it. Real controllers interrupt a spot mid-way and resume it; waiting makes a
//!   gated treatment slightly longer than that (at most one dwell per gate window) and
//!   keeps "no beam outside permission" exact.
//! - Extraction stops and resumes instantly when the beam is held (no beam-off latency,
//!   no intensity ramp); the rate is flat over a spill.
//! - A spill's flat-top clock starts at its first extraction (the cycle is assumed timed so
//!   the beam is ready when the first spot is) and keeps running while the beam is held or
//!   the energy changes; when it runs out, or the spill holds too few particles for the
//!   next spot, the rest is dumped and a new cycle takes `spill_recharge_s` from the end of
//!   the flat-top (or from the last spot, when it is the particles that ran out). The scan
//!   move to the next spot overlaps the recharge.
//! - No dose-monitor overhead, no interlock delays, no gantry rotation model beyond
//!   `beam_switch_s`.
//!
//! Particles: a spot's weight times a particles-per-weight factor (1 when the weights are
//! already particle numbers, as DICOM's Scan Spot Meterset Weights are when the meterset is
//! NP; matRad's own convention is 10^6 particles per unit weight).

use ionguide::plan::IonPlan;
use serde::{Deserialize, Serialize};

/// How the two scanning magnets share a move between spots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanAxes {
    /// Both magnets ramp together: a move takes the longer of `|dx|/vx` and `|dy|/vy`.
    Simultaneous,
    /// One after the other: `|dx|/vx + |dy|/vy` (matRad's steering time: Manhattan
    /// distance over one scan speed).
    Sequential,
}

/// The timing constants of a scanning synchrotron. See the module doc for how they combine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynchrotronModel {
    /// Time to change energy between layers, s.
    pub energy_switch_s: f64,
    /// `true`: an energy switch starts a new synchrotron cycle with a full spill (its time is
    /// `energy_switch_s`, no recharge on top). `false`: the energy changes within the
    /// flat-top; the spill keeps its remaining particles and its flat-top clock runs on.
    pub energy_switch_refills_spill: bool,
    /// Dead time from the end of a spill to the next one's first possible extraction, s.
    pub spill_recharge_s: f64,
    /// Particles one spill holds.
    pub particles_per_spill: f64,
    /// Longest flat-top (extraction time of one spill, pauses included), s; `None`: unlimited.
    pub max_spill_length_s: Option<f64>,
    /// Extracted particles per second while the beam is on.
    pub particle_rate_per_s: f64,
    /// Scan speeds in the isocenter plane along beam's-eye-view [x, y], mm/s.
    pub scan_speed_mm_per_s: [f64; 2],
    /// How the two magnets combine in a move.
    pub scan_axes: ScanAxes,
    /// Settling time after each move between two spots of a layer, s.
    pub spot_settle_s: f64,
    /// Time between the last spot of a beam and the first of the next (room, gantry or
    /// couch change, new cycle), s.
    pub beam_switch_s: f64,
}

impl SynchrotronModel {
    /// The timing constants matRad uses for its 4D (interplay) dose: `es_time = 3·10^6 µs`,
    /// `spill_recharge_time = 2·10^6 µs`, `spill_size = 4·10^10`, `scan_speed = 10 m/s`,
    /// `spill_intensity = 4·10^8` particles/s, in `4D/matRad_makeBixelTimeSeq.m` of
    /// e0404/matRad (commit 8988ecaa2d022ebba7cb49dce39466a8cf847f84; an earlier version,
    /// 13d2c7b5145d9481615773614b2acca7310738de, had `es_time = 4·10^6 µs`). matRad cites
    /// the CERN PIMMS study (cdsweb.cern.ch/record/1182954) for them.
    ///
    /// How matRad combines them, mirrored here: steering time is the Manhattan distance over
    /// the one scan speed ([`ScanAxes::Sequential`]); no settling; no flat-top limit (only
    /// the particle count ends a spill); spill usage carries over energy switches (so
    /// `energy_switch_refills_spill` is `false`); matRad times each beam from zero, so it
    /// has no beam switch time (0 here: a real gantry or couch move takes minutes).
    /// Differences: matRad adds the energy-switch time after the last layer of a beam too,
    /// and adds the recharge on top of the move instead of overlapping them.
    pub fn matrad() -> Self {
        SynchrotronModel {
            energy_switch_s: 3.0,
            energy_switch_refills_spill: false,
            spill_recharge_s: 2.0,
            particles_per_spill: 4e10,
            max_spill_length_s: None,
            particle_rate_per_s: 4e8,
            scan_speed_mm_per_s: [10_000.0, 10_000.0],
            scan_axes: ScanAxes::Sequential,
            spot_settle_s: 0.0,
            beam_switch_s: 0.0,
        }
    }

    /// A fast multi-energy carbon synchrotron, composed from published figures of today's
    /// centres where we have them, and marked assumptions where we do not:
    /// - energy switch 0.1 s within the flat-top (`energy_switch_refills_spill: false`):
    ///   HIMAC's multiple-energy operation with extended flat-tops (Iwata et al., NIM A 624
    ///   (2010) 33; Mizushima et al., NIM B 331 (2014) 243), energy change within one
    ///   spill of about 100 ms, as the issue cites them (the papers' text was not at hand
    ///   here to check);
    /// - scan speeds 100 mm/ms in x and 50 mm/ms in y, magnets ramping together: the NIRS
    ///   fast scanning system (Furukawa et al., Med. Phys. 37 (2010) 5672), same caveat;
    /// - flat-top 4 s and recharge 1 s: MedAustron's beam time structure for carbon
    ///   ("typical beam spill for carbon: 4 seconds", "minimum time between spills:
    ///   1 seconds"; H.T. Lau, 21 Jun 2019, as noted on the Imperial College CCAP wiki,
    ///   MedAustron-rates.txt);
    /// - *assumed*, no source checked: particle rate 4·10^8/s (matRad's value kept),
    ///   4·10^9 particles per spill (so that at that rate the flat-top, not the charge,
    ///   ends a spill), 1 ms settling per spot, 60 s between beams.
    pub fn fast_multi_energy() -> Self {
        SynchrotronModel {
            energy_switch_s: 0.1,
            energy_switch_refills_spill: false,
            spill_recharge_s: 1.0,
            particles_per_spill: 4e9,
            max_spill_length_s: Some(4.0),
            particle_rate_per_s: 4e8,
            scan_speed_mm_per_s: [100_000.0, 50_000.0],
            scan_axes: ScanAxes::Simultaneous,
            spot_settle_s: 1e-3,
            beam_switch_s: 60.0,
        }
    }

    /// Checks every field: times finite and ≥ 0, rates, speeds, spill size and flat-top
    /// finite and > 0.
    pub fn validate(&self) -> Result<(), TimelineError> {
        let bad = |field: &'static str, reason: String| Err(TimelineError::BadModel { field, reason });
        for (field, v) in [
            ("energy_switch_s", self.energy_switch_s),
            ("spill_recharge_s", self.spill_recharge_s),
            ("spot_settle_s", self.spot_settle_s),
            ("beam_switch_s", self.beam_switch_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("must be finite and ≥ 0, got {v}"));
            }
        }
        for (field, v) in [
            ("particles_per_spill", self.particles_per_spill),
            ("particle_rate_per_s", self.particle_rate_per_s),
            ("scan_speed_mm_per_s[0]", self.scan_speed_mm_per_s[0]),
            ("scan_speed_mm_per_s[1]", self.scan_speed_mm_per_s[1]),
            ("max_spill_length_s", self.max_spill_length_s.unwrap_or(1.0)),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("must be finite and > 0, got {v}"));
            }
        }
        Ok(())
    }

    /// Time to move the magnets from `from` to `to`, mm in the isocenter plane → s.
    pub fn travel_s(&self, from_mm: [f64; 2], to_mm: [f64; 2]) -> f64 {
        let tx = (to_mm[0] - from_mm[0]).abs() / self.scan_speed_mm_per_s[0];
        let ty = (to_mm[1] - from_mm[1]).abs() / self.scan_speed_mm_per_s[1];
        match self.scan_axes {
            ScanAxes::Simultaneous => tx.max(ty),
            ScanAxes::Sequential => tx + ty,
        }
    }
}

/// When the beam may be on: sorted, disjoint half-open intervals `[t0, t1)` in seconds from
/// the start of treatment (`t0` may be −∞, `t1` +∞).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BeamPermit {
    intervals_s: Vec<[f64; 2]>,
}

impl BeamPermit {
    /// No restriction (ungated delivery).
    pub fn always() -> Self {
        BeamPermit {
            intervals_s: vec![[f64::NEG_INFINITY, f64::INFINITY]],
        }
    }

    /// Permission during `intervals_s`, which must be sorted, non-empty (`t0 < t1`), not
    /// NaN and not overlapping; intervals that touch are merged (a spot may then span the
    /// seam: nothing interrupts the beam there).
    pub fn intervals(intervals_s: Vec<[f64; 2]>) -> Result<Self, TimelineError> {
        let mut merged: Vec<[f64; 2]> = Vec::with_capacity(intervals_s.len());
        for (index, &[t0, t1]) in intervals_s.iter().enumerate() {
            let bad = |reason: String| Err(TimelineError::BadPermit { index, reason });
            if t0.is_nan() || t1.is_nan() || t0 == f64::INFINITY || t1 == f64::NEG_INFINITY {
                return bad(format!(
                    "bounds must be numbers with t0 < +∞ and t1 > −∞, got [{t0}, {t1})"
                ));
            }
            if t0 >= t1 {
                return bad(format!("empty: [{t0}, {t1})"));
            }
            match merged.last_mut() {
                Some(last) if t0 < last[1] => {
                    return bad(format!(
                        "[{t0}, {t1}) starts before the previous interval ends at {}: intervals must be sorted and disjoint",
                        last[1]
                    ))
                }
                Some(last) if t0 == last[1] => last[1] = t1,
                _ => merged.push([t0, t1]),
            }
        }
        Ok(BeamPermit { intervals_s: merged })
    }

    /// The permitted intervals, sorted and disjoint, `[t0, t1)` s.
    pub fn intervals_s(&self) -> &[[f64; 2]] {
        &self.intervals_s
    }

    /// The earliest `s ≥ after_s` with `[s, s + dwell_s)` inside one permitted interval
    /// (for a zero dwell: `s` inside one), or `None` if no interval after `after_s` holds it.
    pub fn earliest_fit(&self, after_s: f64, dwell_s: f64) -> Option<f64> {
        let first = self.intervals_s.partition_point(|iv| iv[1] <= after_s);
        self.intervals_s[first..].iter().find_map(|&[t0, t1]| {
            let s = after_s.max(t0);
            (s < t1 && s + dwell_s <= t1).then_some(s)
        })
    }

    /// Whether `[start_s, end_s)` lies inside one permitted interval (a point when empty).
    pub fn contains(&self, start_s: f64, end_s: f64) -> bool {
        self.intervals_s
            .iter()
            .any(|&[t0, t1]| start_s >= t0 && start_s < t1 && end_s <= t1)
    }
}

/// One spot to deliver, in delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpotRequest {
    /// Beam index in the plan (0-based).
    pub beam: usize,
    /// Layer index in its beam.
    pub layer: usize,
    /// Spot index in its layer.
    pub spot: usize,
    /// Layer energy, MeV/u (a change between consecutive spots of a beam is an energy switch).
    pub energy_mev_u: f64,
    /// Spot position in the isocenter plane, beam's-eye-view x, mm.
    pub x_mm: f64,
    /// Spot position in the isocenter plane, beam's-eye-view y, mm.
    pub y_mm: f64,
    /// Particles to deliver.
    pub particles: f64,
}

/// The plan's spots in delivery order, each with `weight · particles_per_weight` particles.
pub fn spot_requests(plan: &IonPlan, particles_per_weight: f64) -> Result<Vec<SpotRequest>, TimelineError> {
    if !(particles_per_weight.is_finite() && particles_per_weight > 0.0) {
        return Err(TimelineError::BadParticlesPerWeight(particles_per_weight));
    }
    let mut out = Vec::with_capacity(plan.spot_count());
    for (beam, b) in plan.beams.iter().enumerate() {
        for (layer, l) in b.layers.iter().enumerate() {
            if !(l.energy_mev_u.is_finite() && l.energy_mev_u > 0.0) {
                return Err(TimelineError::BadSpot {
                    beam,
                    layer,
                    spot: 0,
                    reason: format!("layer energy {} MeV/u is not finite and > 0", l.energy_mev_u),
                });
            }
            for (spot, s) in l.spots.iter().enumerate() {
                if let Some(fault) = s.fault(f64::INFINITY) {
                    return Err(TimelineError::BadSpot {
                        beam,
                        layer,
                        spot,
                        reason: fault.to_string(),
                    });
                }
                out.push(SpotRequest {
                    beam,
                    layer,
                    spot,
                    energy_mev_u: l.energy_mev_u,
                    x_mm: s.x_mm,
                    y_mm: s.y_mm,
                    particles: s.weight * particles_per_weight,
                });
            }
        }
    }
    Ok(out)
}

/// When one spot was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpotTiming {
    /// Index in delivery (plan) order over all beams and layers.
    pub plan_index: usize,
    /// Beam index in the plan.
    pub beam: usize,
    /// Layer index in its beam.
    pub layer: usize,
    /// Spot index in its layer.
    pub spot: usize,
    /// Which spill (0-based, over the whole treatment) delivered it.
    pub spill: usize,
    /// Beam on, s from the start of treatment.
    pub start_s: f64,
    /// Beam off, s (`start_s` + dwell).
    pub end_s: f64,
}

/// Totals of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelineTotals {
    /// From the start of treatment to the end of the last spot, s.
    pub treatment_s: f64,
    /// Sum of the dwells, s.
    pub beam_on_s: f64,
    /// Time spots were ready (magnets in place, spill available) but waited for the permit, s.
    pub permit_wait_s: f64,
    /// Time spots waited for a new spill after the magnets were in place, s.
    pub spill_wait_s: f64,
    /// Spills that delivered at least one spot.
    pub spills_used: usize,
    /// Energy changes between consecutive spots of one beam.
    pub energy_switches: usize,
    /// Changes of beam.
    pub beam_switches: usize,
}

/// A delivery timeline: every spot's beam-on interval, in delivery order, and totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// One entry per spot, in delivery order.
    pub spots: Vec<SpotTiming>,
    /// Totals.
    pub totals: TimelineTotals,
}

/// Why a timeline cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TimelineError {
    /// A model constant is out of range.
    #[error("synchrotron model field {field}: {reason}")]
    BadModel {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The particles-per-weight factor is not finite and > 0.
    #[error("particles per weight must be finite and > 0, got {0}")]
    BadParticlesPerWeight(f64),
    /// A spot or its layer cannot be timed.
    #[error("beam {beam} layer {layer} spot {spot}: {reason}")]
    BadSpot {
        /// Beam index.
        beam: usize,
        /// Layer index.
        layer: usize,
        /// Spot index.
        spot: usize,
        /// Why.
        reason: String,
    },
    /// A beam-permit interval is malformed.
    #[error("beam permit interval {index}: {reason}")]
    BadPermit {
        /// Interval index as given.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A spot needs more particles than a full spill holds (spots are never split).
    #[error("spot {plan_index} needs {particles:e} particles, more than a spill holds ({per_spill:e})")]
    SpotExceedsSpill {
        /// Delivery-order index.
        plan_index: usize,
        /// Its particles.
        particles: f64,
        /// The model's spill size.
        per_spill: f64,
    },
    /// A spot's dwell is longer than a whole flat-top.
    #[error("spot {plan_index} dwells {dwell_s} s, longer than a flat-top of {max_s} s")]
    SpotExceedsFlatTop {
        /// Delivery-order index.
        plan_index: usize,
        /// Its dwell, s.
        dwell_s: f64,
        /// The model's flat-top, s.
        max_s: f64,
    },
    /// No permitted interval after the spot is ready is long enough for its dwell.
    #[error("spot {plan_index}: no permitted interval from {after_s} s on holds its {dwell_s} s dwell")]
    NoPermittedWindow {
        /// Delivery-order index.
        plan_index: usize,
        /// When it was ready, s.
        after_s: f64,
        /// Its dwell, s.
        dwell_s: f64,
    },
}

/// The spill being extracted (or awaited).
struct Spill {
    index: usize,
    particles_left: f64,
    /// First possible extraction, s.
    ready_s: f64,
    /// End of the flat-top once extraction has started (∞ before, or without a limit).
    flat_top_end_s: f64,
    started: bool,
    last_end_s: f64,
}

impl Spill {
    fn fresh(index: usize, model: &SynchrotronModel, ready_s: f64) -> Self {
        Spill {
            index,
            particles_left: model.particles_per_spill,
            ready_s,
            flat_top_end_s: f64::INFINITY,
            started: false,
            last_end_s: ready_s,
        }
    }
}

/// Times the delivery of `plan` (weights × `particles_per_weight` particles per spot) on
/// `model` under `permit`. See the module doc for the model.
pub fn schedule(
    plan: &IonPlan,
    particles_per_weight: f64,
    model: &SynchrotronModel,
    permit: &BeamPermit,
) -> Result<Timeline, TimelineError> {
    schedule_spots(&spot_requests(plan, particles_per_weight)?, model, permit)
}

/// Times the delivery of `spots`, in the order given, on `model` under `permit`.
pub fn schedule_spots(
    spots: &[SpotRequest],
    model: &SynchrotronModel,
    permit: &BeamPermit,
) -> Result<Timeline, TimelineError> {
    model.validate()?;
    let mut out = Vec::with_capacity(spots.len());
    let mut totals = TimelineTotals {
        treatment_s: 0.0,
        beam_on_s: 0.0,
        permit_wait_s: 0.0,
        spill_wait_s: 0.0,
        spills_used: 0,
        energy_switches: 0,
        beam_switches: 0,
    };
    let mut spill = Spill::fresh(0, model, 0.0);
    let mut prev: Option<(&SpotRequest, f64)> = None;
    for (plan_index, req) in spots.iter().enumerate() {
        if !(req.particles.is_finite()
            && req.particles >= 0.0
            && req.x_mm.is_finite()
            && req.y_mm.is_finite())
        {
            return Err(TimelineError::BadSpot {
                beam: req.beam,
                layer: req.layer,
                spot: req.spot,
                reason: format!(
                    "needs finite position and particles ≥ 0, got ({}, {}) mm, {} particles",
                    req.x_mm, req.y_mm, req.particles
                ),
            });
        }
        if req.particles > model.particles_per_spill {
            return Err(TimelineError::SpotExceedsSpill {
                plan_index,
                particles: req.particles,
                per_spill: model.particles_per_spill,
            });
        }
        let dwell_s = req.particles / model.particle_rate_per_s;
        if let Some(max_s) = model.max_spill_length_s {
            if dwell_s > max_s {
                return Err(TimelineError::SpotExceedsFlatTop {
                    plan_index,
                    dwell_s,
                    max_s,
                });
            }
        }
        // when the magnets are on this spot (and, after a switch, the new energy is there)
        let in_place_s = match prev {
            None => 0.0,
            Some((p, end_s)) => {
                let move_s = model.travel_s([p.x_mm, p.y_mm], [req.x_mm, req.y_mm]) + model.spot_settle_s;
                if p.beam != req.beam {
                    totals.beam_switches += 1;
                    let t = end_s + model.beam_switch_s.max(move_s);
                    spill = Spill::fresh(spill.index + 1, model, end_s + model.beam_switch_s);
                    t
                } else if p.energy_mev_u != req.energy_mev_u {
                    totals.energy_switches += 1;
                    if model.energy_switch_refills_spill {
                        spill = Spill::fresh(spill.index + 1, model, end_s + model.energy_switch_s);
                    }
                    end_s + model.energy_switch_s.max(move_s)
                } else {
                    end_s + move_s
                }
            }
        };
        let (start_s, ready_s) = loop {
            if spill.particles_left < req.particles {
                // the controller knows the next spot's charge when the last one ends
                let dump_s = spill.last_end_s;
                spill = Spill::fresh(spill.index + 1, model, dump_s + model.spill_recharge_s);
                continue;
            }
            let ready_s = in_place_s.max(spill.ready_s);
            let start_s = permit
                .earliest_fit(ready_s, dwell_s)
                .ok_or(TimelineError::NoPermittedWindow {
                    plan_index,
                    after_s: ready_s,
                    dwell_s,
                })?;
            if spill.started && start_s + dwell_s > spill.flat_top_end_s {
                let dump_s = start_s.min(spill.flat_top_end_s);
                spill = Spill::fresh(spill.index + 1, model, dump_s + model.spill_recharge_s);
                continue;
            }
            break (start_s, ready_s);
        };
        if !spill.started {
            spill.started = true;
            spill.flat_top_end_s = start_s + model.max_spill_length_s.unwrap_or(f64::INFINITY);
            totals.spills_used += 1;
        }
        let end_s = start_s + dwell_s;
        spill.particles_left -= req.particles;
        spill.last_end_s = end_s;
        totals.beam_on_s += dwell_s;
        totals.permit_wait_s += start_s - ready_s;
        totals.spill_wait_s += ready_s - in_place_s;
        totals.treatment_s = end_s;
        out.push(SpotTiming {
            plan_index,
            beam: req.beam,
            layer: req.layer,
            spot: req.spot,
            spill: spill.index,
            start_s,
            end_s,
        });
        prev = Some((req, end_s));
    }
    Ok(Timeline { spots: out, totals })
}
/// [`schedule_spots`] for as many spots as the permit has room for: when a spot finds no
/// permitted window left (the motion recording ended), the plan's spots before it.
pub fn schedule_what_fits(
    spots: &[SpotRequest],
    model: &SynchrotronModel,
    permit: &BeamPermit,
) -> Result<Timeline, TimelineError> {
    match schedule_spots(spots, model, permit) {
        Err(TimelineError::NoPermittedWindow { plan_index, .. }) => {
            schedule_spots(&spots[..plan_index], model, permit)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose constants make hand arithmetic easy.
    fn simple() -> SynchrotronModel {
        SynchrotronModel {
            energy_switch_s: 1.5,
            energy_switch_refills_spill: true,
            spill_recharge_s: 2.0,
            particles_per_spill: 1e12,
            max_spill_length_s: None,
            particle_rate_per_s: 1e8,
            scan_speed_mm_per_s: [1000.0, 500.0],
            scan_axes: ScanAxes::Simultaneous,
            spot_settle_s: 0.002,
            beam_switch_s: 30.0,
        }
    }

    fn req(
        beam: usize,
        layer: usize,
        spot: usize,
        energy: f64,
        x: f64,
        y: f64,
        particles: f64,
    ) -> SpotRequest {
        SpotRequest {
            beam,
            layer,
            spot,
            energy_mev_u: energy,
            x_mm: x,
            y_mm: y,
            particles,
        }
    }

    #[test]
    fn one_layer_takes_dwell_plus_moves_plus_settling() {
        let m = simple();
        let xs = [0.0, 3.0, 9.0, 10.0, -5.0];
        let ps = [2e6, 5e6, 1e6, 8e6, 3e6];
        let spots: Vec<_> = (0..5).map(|k| req(0, 0, k, 200.0, xs[k], 7.0, ps[k])).collect();
        let tl = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
        // by hand: Σp/rate = 19e6/1e8 = 0.19 s; Σ|dx|/vx = (3+6+1+15)/1000 = 0.025 s; 4 settles
        let expected = 0.19 + 0.025 + 4.0 * 0.002;
        assert!(
            (tl.totals.treatment_s - expected).abs() < 1e-12,
            "{}",
            tl.totals.treatment_s
        );
        assert!((tl.totals.beam_on_s - 0.19).abs() < 1e-12);
        assert_eq!(tl.totals.spills_used, 1);
        assert_eq!(tl.totals.energy_switches, 0);
        assert_eq!(tl.spots[0].start_s, 0.0);
        // the y move dominates when it is slower: 4 mm at 500 mm/s = 8 ms > 1 mm at 1000 mm/s
        let two = [
            req(0, 0, 0, 200.0, 0.0, 0.0, 0.0),
            req(0, 0, 1, 200.0, 1.0, 4.0, 0.0),
        ];
        let tl = schedule_spots(&two, &m, &BeamPermit::always()).unwrap();
        assert!((tl.spots[1].start_s - (0.008 + 0.002)).abs() < 1e-15);
        let seq = SynchrotronModel {
            scan_axes: ScanAxes::Sequential,
            ..m
        };
        let tl = schedule_spots(&two, &seq, &BeamPermit::always()).unwrap();
        assert!((tl.spots[1].start_s - (0.009 + 0.002)).abs() < 1e-15);
    }

    #[test]
    fn particles_beyond_a_spill_cost_a_recharge_each() {
        // 10 spots of 1e9 in spills of 3e9: ceil(10/3) = 4 spills, 3 recharges
        let m = SynchrotronModel {
            particles_per_spill: 3e9,
            ..simple()
        };
        let spots: Vec<_> = (0..10).map(|k| req(0, 0, k, 200.0, k as f64, 0.0, 1e9)).collect();
        let tl = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
        assert_eq!(tl.totals.spills_used, 4);
        let spills: Vec<usize> = tl.spots.iter().map(|s| s.spill).collect();
        assert_eq!(spills, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
        // 10 dwells of 10 s, 6 moves of 1 mm + settle inside spills, 3 recharges (the move
        // overlaps the recharge)
        let expected = 100.0 + 6.0 * (0.001 + 0.002) + 3.0 * 2.0;
        assert!(
            (tl.totals.treatment_s - expected).abs() < 1e-9,
            "{}",
            tl.totals.treatment_s
        );
        assert!((tl.totals.spill_wait_s - 3.0 * (2.0 - 0.003)).abs() < 1e-9);
    }

    #[test]
    fn energy_and_beam_switches_are_counted_and_timed() {
        let m = simple();
        let mut spots = Vec::new();
        for beam in 0..2 {
            for layer in 0..3 {
                for spot in 0..2 {
                    spots.push(req(beam, layer, spot, 300.0 - 10.0 * layer as f64, 0.0, 0.0, 1e6));
                }
            }
        }
        let tl = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
        assert_eq!(tl.totals.energy_switches, 2 * (3 - 1));
        assert_eq!(tl.totals.beam_switches, 1);
        // 12 dwells of 10 ms, 6 in-layer settles, 4 energy switches, 1 beam switch
        let expected = 12.0 * 0.01 + 6.0 * 0.002 + 4.0 * 1.5 + 30.0;
        assert!(
            (tl.totals.treatment_s - expected).abs() < 1e-9,
            "{}",
            tl.totals.treatment_s
        );
        // a conventional synchrotron refills at each energy switch and each beam
        assert_eq!(tl.totals.spills_used, 6);
        // the same energy in two consecutive layers needs no switch
        let same: Vec<_> = (0..3).map(|l| req(0, l, 0, 250.0, 0.0, 0.0, 1e6)).collect();
        let tl = schedule_spots(&same, &m, &BeamPermit::always()).unwrap();
        assert_eq!(tl.totals.energy_switches, 0);
    }

    #[test]
    fn the_flat_top_ends_a_spill_and_keeps_running_through_a_hold() {
        // flat-top 1 s; spots of 0.3 s dwell: three fit (0.9 s + moves), the fourth waits
        let m = SynchrotronModel {
            max_spill_length_s: Some(1.0),
            spot_settle_s: 0.0,
            ..simple()
        };
        let spots: Vec<_> = (0..4).map(|k| req(0, 0, k, 200.0, 0.0, 0.0, 3e7)).collect();
        let tl = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
        assert_eq!(tl.spots[3].spill, 1);
        // the 4th would run 0.9 → 1.2 s, past the flat-top end at 1.0: dumped at 0.9, recharged
        assert!(
            (tl.spots[3].start_s - (0.9 + 2.0)).abs() < 1e-12,
            "{}",
            tl.spots[3].start_s
        );
        // a hold from 0.3 s to 0.55 s eats flat-top time: spot 1 (0.55–0.85) fits, spot 2
        // (0.85–1.15) no longer does
        let permit = BeamPermit::intervals(vec![[0.0, 0.3], [0.55, f64::INFINITY]]).unwrap();
        let tl = schedule_spots(&spots, &m, &permit).unwrap();
        let spills: Vec<usize> = tl.spots.iter().map(|s| s.spill).collect();
        assert_eq!(spills, [0, 0, 1, 1]);
        // spot 1 (ready at 0.3) waits for 0.55; its end at 0.85 leaves 0.15 s of flat-top:
        // spot 2 waits for the dump at 0.85 plus the recharge
        assert!((tl.spots[1].start_s - 0.55).abs() < 1e-12);
        assert!(
            (tl.spots[2].start_s - 2.85).abs() < 1e-12,
            "{}",
            tl.spots[2].start_s
        );
        assert!((tl.totals.permit_wait_s - 0.25).abs() < 1e-12);
    }

    #[test]
    fn spots_wait_out_a_forbidden_gap_and_beam_on_time_is_unchanged() {
        let m = simple();
        let spots: Vec<_> = (0..40)
            .map(|k| req(0, 0, k, 200.0, (k % 7) as f64, 0.0, 4e6))
            .collect();
        let free = schedule_spots(&spots, &m, &BeamPermit::always()).unwrap();
        let gap = [0.5, 1.3];
        let permit = BeamPermit::intervals(vec![[0.0, gap[0]], [gap[1], f64::INFINITY]]).unwrap();
        let gated = schedule_spots(&spots, &m, &permit).unwrap();
        assert!((gated.totals.beam_on_s - free.totals.beam_on_s).abs() < 1e-12);
        for s in &gated.spots {
            assert!(s.end_s <= gap[0] || s.start_s >= gap[1], "{s:?} overlaps the gap");
            assert!(permit.contains(s.start_s, s.end_s));
        }
        for w in gated.spots.windows(2) {
            assert!(w[0].end_s <= w[1].start_s);
        }
        assert!(gated.totals.treatment_s >= free.totals.treatment_s + (gap[1] - gap[0]) - 0.04 - 1e-9);
        assert!(gated.totals.permit_wait_s > 0.0);
    }

    #[test]
    fn impossible_requests_are_typed_errors() {
        let m = simple();
        let big = [req(0, 0, 0, 200.0, 0.0, 0.0, 2e12)];
        assert!(matches!(
            schedule_spots(&big, &m, &BeamPermit::always()),
            Err(TimelineError::SpotExceedsSpill { plan_index: 0, .. })
        ));
        // a 0.1 s dwell never fits the 0.05 s windows
        let permit = BeamPermit::intervals(vec![[0.0, 0.05], [1.0, 1.05]]).unwrap();
        let one = [req(0, 0, 0, 200.0, 0.0, 0.0, 1e7)];
        assert!(matches!(
            schedule_spots(&one, &m, &permit),
            Err(TimelineError::NoPermittedWindow { plan_index: 0, .. })
        ));
        let bad = SynchrotronModel {
            particle_rate_per_s: 0.0,
            ..simple()
        };
        assert!(matches!(
            schedule_spots(&one, &bad, &BeamPermit::always()),
            Err(TimelineError::BadModel {
                field: "particle_rate_per_s",
                ..
            })
        ));
        assert!(matches!(
            BeamPermit::intervals(vec![[0.0, 2.0], [1.0, 3.0]]),
            Err(TimelineError::BadPermit { index: 1, .. })
        ));
        assert!(matches!(
            BeamPermit::intervals(vec![[1.0, 1.0]]),
            Err(TimelineError::BadPermit { index: 0, .. })
        ));
        assert_eq!(
            BeamPermit::intervals(vec![[0.0, 1.0], [1.0, 2.0]])
                .unwrap()
                .intervals_s(),
            &[[0.0, 2.0]]
        );
    }

    #[test]
    fn presets_are_valid_and_survive_a_json_round_trip() {
        for m in [SynchrotronModel::matrad(), SynchrotronModel::fast_multi_energy()] {
            m.validate().unwrap();
            let back: SynchrotronModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
        // matRad's steering time for one 5 mm bixel step at 10 m/s is 500 µs
        let m = SynchrotronModel::matrad();
        assert!((m.travel_s([0.0, 0.0], [5.0, 0.0]) - 5e-4).abs() < 1e-15);
    }
}
