//! Scoring at delivery time: every spot of a plan is delivered at its own instant on the
//! synchrotron's timeline, with the correction set in force then (or as planned), and is
//! scored against the anatomy of that instant — lateral and range error per spot, and,
//! with a dose engine, the 4D dose: each instant's spots dosed on that instant's true CT
//! and carried back to the planning CT through the known motion.
//!
//! Four deliveries of one replay, on the same clock and the same motion:
//! - **static**: the plan on the planning CT, no motion (the reference);
//! - **tracked**: the beam is permitted from the arrival of each frame's corrections until
//!   the next arrive or they lapse (validity from acquisition); each spot uses the set in
//!   force when it starts;
//! - **untracked**: the plan as written, beam always permitted;
//! - **gated**: the plan as written, beam permitted while the tumor's displacement along its
//!   main axis is in the end-exhale window.
//!
//! Spots of one delivery at one motion sample (the instants are the track's samples, at
//! least 20 per breathing cycle) share that sample's truth: one render of the noise-free
//! CT, one trace of every spot's true water depth, one dose call per delivery.

use ionguide::adapt::FrameWepl;
use ionguide::correction::CorrectionSet;
use ionguide::dose::{DeliveredSpot, DoseEngine};
use ionguide::geometry::Grid;
use ionguide::pipeline::Session;
use ionguide::units::VectorMm;
use serde::Serialize;

use crate::delivery::gating::{gate, GatingWindow, MotionSignal};
use crate::delivery::timeline::{
    schedule_spots, schedule_what_fits, spot_requests, BeamPermit, SynchrotronModel, Timeline, TimelineError,
};
use crate::imaging::sources::{FrameSource, SourceError};
use crate::motion::track::MotionTrack;
use crate::scoring::accumulate::Accumulator;
use crate::scoring::histogram::{ErrorHistogram, Quantiles};
use crate::scoring::spots::{tumor_error_mm, SpotScorer};

/// What the pipeline did with one frame, on the replay's clock (trace time, s).
#[derive(Debug, Clone)]
pub struct FrameRecord {
    /// The instant the frame shows (its acquisition time).
    pub depicts_s: f64,
    /// When its corrections are in force at the controller: the frame's completion plus the
    /// latency budget (the deterministic bound the pipeline keeps; absent: held, rejected or
    /// dropped).
    pub arrival_s: Option<f64>,
    /// The tumor shift the pipeline estimated, mm.
    pub est_shift_mm: Option<[f64; 3]>,
    /// The set the controller applied.
    pub set: Option<CorrectionSet>,
}

/// How the plan is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySetup {
    /// Name of the accelerator preset (for the report).
    pub preset: String,
    /// The accelerator's timing.
    pub synchrotron: SynchrotronModel,
    /// Particles per unit of spot weight.
    pub particles_per_weight: f64,
    /// The gated delivery's window.
    pub gating: GatingWindow,
}

/// Dose of the deliveries: an engine, the dose grid (the planning CT's box) and the
/// planning CT to dose the static delivery on.
pub struct DoseSetup {
    /// The engine (its options say what a weight counts).
    pub engine: DoseEngine,
    /// The dose grid, on the planning CT.
    pub grid: Grid,
    /// The target (and body) the figures are taken over.
    pub regions: crate::scoring::dose_figures::DoseRegions,
}

/// One delivery's result.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// `tracked`, `untracked` or `gated`.
    pub name: &'static str,
    /// The timeline (spots in delivery order; a prefix of the plan when the replay ended
    /// before the delivery did).
    pub timeline: Timeline,
    /// Spots in the plan.
    pub spots_planned: usize,
    /// Fraction of the delivery's span the beam was permitted.
    pub permitted_fraction: f64,
    /// Per-spot lateral error at delivery time, mm.
    pub spot_error: ErrorHistogram,
    /// Per-spot range error at delivery time, mm w.e.
    pub range_error: ErrorHistogram,
    /// Per-spot |estimated − true| tumor shift at delivery time, mm (tracked only).
    pub tumor_error: ErrorHistogram,
    /// The accumulated dose on the planning CT, Gy (with a dose setup).
    pub dose_gy: Option<Vec<f64>>,
}

/// Summary of one delivery for `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliverySummary {
    /// Spots delivered.
    pub spots_delivered: usize,
    /// Spots in the plan.
    pub spots_planned: usize,
    /// From the start of treatment to the last spot, s.
    pub treatment_s: f64,
    /// Beam on, s.
    pub beam_on_s: f64,
    /// Beam-on time over treatment time.
    pub duty_cycle: f64,
    /// Per-spot lateral error at delivery time.
    pub spot_error_mm: Quantiles,
    /// Per-spot range error at delivery time.
    pub range_error_mm: Quantiles,
    /// Per-spot tumor position error at delivery time (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tumor_error_mm: Option<Quantiles>,
}

impl Delivered {
    /// The summary.
    pub fn summary(&self) -> DeliverySummary {
        let t = &self.timeline.totals;
        DeliverySummary {
            spots_delivered: self.timeline.spots.len(),
            spots_planned: self.spots_planned,
            treatment_s: t.treatment_s,
            beam_on_s: t.beam_on_s,
            duty_cycle: if t.treatment_s > 0.0 {
                t.beam_on_s / t.treatment_s
            } else {
                0.0
            },
            spot_error_mm: self.spot_error.errors(),
            range_error_mm: self.range_error.errors(),
            tumor_error_mm: (!self.tumor_error.is_empty()).then(|| self.tumor_error.errors()),
        }
    }
}

/// Why delivery scoring failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The timeline could not be made.
    #[error("{delivery} delivery: {source}")]
    Timeline {
        /// Which delivery.
        delivery: &'static str,
        /// Why.
        source: TimelineError,
    },
    /// Gating could not be set up.
    #[error("gating: {0}")]
    Gating(String),
    /// Rendering or measuring the truth.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The truth's water depths.
    #[error("truth WEPL at {t_s:.2} s: {reason}")]
    Truth {
        /// When.
        t_s: f64,
        /// Why.
        reason: String,
    },
    /// The dose engine.
    #[error("dose: {0}")]
    Dose(String),
}

/// Schedules with `permit`; when the permit runs out before the plan is delivered (the
/// replay's frames ended), the delivered prefix.
fn schedule_prefix(
    name: &'static str,
    requests: &[crate::delivery::timeline::SpotRequest],
    model: &SynchrotronModel,
    permit: &BeamPermit,
) -> Result<Timeline, DeliveryError> {
    schedule_what_fits(requests, model, permit).map_err(|source| DeliveryError::Timeline {
        delivery: name,
        source,
    })
}

/// The tracked delivery's permit: from each corrected frame's arrival until the next
/// corrected frame's arrival or its validity ends, whichever is first; relative to `t0_s`.
pub fn tracking_permit(records: &[FrameRecord], validity_s: f64, t0_s: f64) -> Vec<[f64; 2]> {
    let arrivals: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.set.is_some())
        .filter_map(|r| r.arrival_s.map(|a| (a, r.depicts_s + validity_s)))
        .collect();
    let mut out: Vec<[f64; 2]> = Vec::new();
    for (n, &(a, lapse)) in arrivals.iter().enumerate() {
        let end = arrivals.get(n + 1).map_or(lapse, |next| next.0.min(lapse));
        if end > a {
            let iv = [a - t0_s, end - t0_s];
            match out.last_mut() {
                Some(last) if last[1] >= iv[0] => last[1] = last[1].max(iv[1]),
                _ => out.push(iv),
            }
        }
    }
    out
}

/// Delivers and scores the tracked (when `records` has corrections; each set valid for
/// `validity_s` from its acquisition), untracked and gated deliveries of `session`'s plan on
/// `track`'s motion, starting at `track.start_s()`; with
/// `dose`, also returns the static dose (first) and each delivery's 4D dose.
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    session: &Session,
    scorer: &SpotScorer,
    track: &MotionTrack,
    records: Option<&[FrameRecord]>,
    validity_s: f64,
    setup: &DeliverySetup,
    source: &mut dyn FrameSource,
    mut dose: Option<&mut DoseSetup>,
    mut progress: impl FnMut(u64, u64),
) -> Result<(Option<Vec<f64>>, Vec<Delivered>), DeliveryError> {
    let t0 = track.start_s();
    let plan = &session.plan;
    let requests =
        spot_requests(plan, setup.particles_per_weight).map_err(|source| DeliveryError::Timeline {
            delivery: "plan",
            source,
        })?;
    let model = &setup.synchrotron;

    // Untracked first: its length bounds how much motion the gate needs.
    let untracked = schedule_prefix("untracked", &requests, model, &BeamPermit::always())?;
    let mut deliveries: Vec<(&'static str, Timeline, f64, Option<usize>)> = Vec::new();
    if let Some(records) = records {
        let intervals = tracking_permit(records, validity_s, t0);
        let span = records.last().map_or(0.0, |r| r.depicts_s - t0);
        let permitted: f64 = intervals.iter().map(|iv| iv[1] - iv[0]).sum();
        let permit = if intervals.is_empty() {
            None
        } else {
            Some(
                BeamPermit::intervals(intervals).map_err(|source| DeliveryError::Timeline {
                    delivery: "tracked",
                    source,
                })?,
            )
        };
        let timeline = match permit {
            Some(p) => schedule_prefix("tracked", &requests, model, &p)?,
            None => schedule_spots(&[], model, &BeamPermit::always()).map_err(|source| {
                DeliveryError::Timeline {
                    delivery: "tracked",
                    source,
                }
            })?,
        };
        deliveries.push((
            "tracked",
            timeline,
            if span > 0.0 { permitted / span } else { 0.0 },
            Some(0),
        ));
    }
    let untracked_span = untracked.totals.treatment_s;
    deliveries.push(("untracked", untracked, 1.0, None));
    // The gate: the displacement along the motion's main axis, over long enough for the
    // gated delivery (at the window's duty cycle it takes about 1/duty as long).
    let axis = track.principal_axis();
    let horizon_s = t0 + 8.0 * untracked_span.max(10.0);
    let (times, amplitude) = track.amplitude_mm(axis, horizon_s);
    let signal = MotionSignal::new(times.iter().map(|t| t - t0).collect(), amplitude)
        .map_err(|e| DeliveryError::Gating(e.to_string()))?;
    let g = gate(&signal, setup.gating).map_err(|e| DeliveryError::Gating(e.to_string()))?;
    let gated = schedule_prefix("gated", &requests, model, &g.permit)?;
    deliveries.push(("gated", gated, g.duty_cycle, None));

    // Every (sample, delivery, spot) in sample order: one truth per sample.
    struct Item {
        sample: usize,
        delivery: usize,
        spot: usize,
        set: Option<usize>,
        t_s: f64,
    }
    let corrected: Vec<(f64, usize)> = records
        .map(|r| {
            r.iter()
                .enumerate()
                .filter(|(_, r)| r.set.is_some())
                .filter_map(|(i, r)| r.arrival_s.map(|a| (a, i)))
                .collect()
        })
        .unwrap_or_default();
    let mut items = Vec::new();
    for (d, (_, timeline, _, tracked)) in deliveries.iter().enumerate() {
        for s in &timeline.spots {
            let start = t0 + s.start_s;
            let mid = t0 + 0.5 * (s.start_s + s.end_s);
            let set = tracked.and_then(|_| {
                let n = corrected.partition_point(|&(a, _)| a <= start + 1e-12);
                n.checked_sub(1).map(|n| corrected[n].1)
            });
            items.push(Item {
                sample: track.sample_index(mid),
                delivery: d,
                spot: s.plan_index,
                set,
                t_s: mid,
            });
        }
    }
    items.sort_by_key(|i| (i.sample, i.delivery, i.spot));

    let n_del = deliveries.len();
    let mut spot_h = vec![ErrorHistogram::default(); n_del];
    let mut range_h = vec![ErrorHistogram::default(); n_del];
    let mut tumor_h = vec![ErrorHistogram::default(); n_del];
    let mut accumulators: Vec<Accumulator> = match &dose {
        Some(ds) => (0..n_del).map(|_| Accumulator::new(&ds.grid)).collect(),
        None => Vec::new(),
    };
    let planned_spots: Option<Vec<DeliveredSpot>> = match &dose {
        Some(ds) => Some(
            ds.engine
                .delivered_spots(plan, None)
                .map_err(|e| DeliveryError::Dose(e.to_string()))?,
        ),
        None => None,
    };
    let static_dose = match (dose.as_deref_mut(), planned_spots.as_ref()) {
        (Some(ds), Some(spots)) => {
            let ct = source.truth(0, [0.0; 3])?;
            let mut acc = vec![0.0f64; ds.grid.len()];
            ds.engine
                .add_dose(ct, &session.hlut, plan, spots, &ds.grid, &mut acc)
                .map_err(|e| DeliveryError::Dose(e.to_string()))?;
            Some(acc)
        }
        _ => None,
    };
    let max_shift_mm = track
        .samples_mm()
        .iter()
        .map(|d| (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt())
        .fold(0.0, f64::max);

    let motion_map = source.motion_map();
    let rigid = source.moves_rigidly();
    let mut tracer = session.planned.clone();
    let mut truth_wepl = FrameWepl::for_plan(&session.adapt_plan);
    let total = items.len() as u64;
    let mut done = 0u64;
    let mut group_start = 0;
    let mut batch: Vec<DeliveredSpot> = Vec::new();
    while group_start < items.len() {
        let sample = items[group_start].sample;
        let group_end = group_start + items[group_start..].partition_point(|i| i.sample == sample);
        let d = track.sample_mm(sample);
        let dv = VectorMm::from(d);
        let t_s = track.sample_time_s(sample);
        let truth_ct = source.truth(sample, d)?;
        session
            .adapt_plan
            .measure_ct(&mut tracer, truth_ct, &session.hlut, &dv, &mut truth_wepl)
            .map_err(|e| DeliveryError::Truth {
                t_s,
                reason: e.to_string(),
            })?;
        let mut k = group_start;
        while k < group_end {
            let del = items[k].delivery;
            let del_end = k + items[k..group_end].partition_point(|i| i.delivery == del);
            batch.clear();
            for item in &items[k..del_end] {
                let set = item.set.and_then(|n| records.and_then(|r| r[n].set.as_ref()));
                let wepl = truth_wepl.wepl_mm.get(item.spot).copied().unwrap_or(f32::NAN);
                let (spot_err, range_err) = scorer.score_spot(item.spot, set, &dv, wepl);
                spot_h[del].record_mm(spot_err);
                if range_err.is_finite() {
                    range_h[del].record_mm(range_err);
                }
                if let Some(n) = item.set {
                    if let Some(est) = records.and_then(|r| r[n].est_shift_mm) {
                        tumor_h[del].record_mm(tumor_error_mm(est, track.at(item.t_s)));
                    }
                }
                if let (Some(ds), Some(planned)) = (dose.as_deref(), planned_spots.as_ref()) {
                    let spot = match set {
                        Some(set) => ionguide::dose::DeliveredSpot::from_correction(
                            plan,
                            set,
                            item.spot,
                            ds.engine.options().weight_unit,
                        )
                        .map_err(|e| DeliveryError::Dose(e.to_string()))?,
                        None => planned[item.spot],
                    };
                    batch.push(spot);
                }
            }
            if let Some(ds) = dose.as_deref_mut() {
                let acc = &mut accumulators[del];
                ds.engine
                    .add_dose(truth_ct, &session.hlut, plan, &batch, &ds.grid, &mut acc.scratch)
                    .map_err(|e| DeliveryError::Dose(e.to_string()))?;
                let identity = rigid && d.iter().all(|v| *v == 0.0);
                acc.fold_in(max_shift_mm, identity, |q| motion_map(q, d));
            }
            done += (del_end - k) as u64;
            k = del_end;
        }
        progress(done, total);
        group_start = group_end;
    }
    let spots_planned = requests.len();
    let mut accumulators = accumulators.into_iter();
    let out = deliveries
        .into_iter()
        .enumerate()
        .map(|(n, (name, timeline, permitted_fraction, _))| Delivered {
            name,
            timeline,
            spots_planned,
            permitted_fraction,
            spot_error: spot_h[n].clone(),
            range_error: range_h[n].clone(),
            tumor_error: tumor_h[n].clone(),
            dose_gy: accumulators.next().map(|a| a.total),
        })
        .collect();
    Ok((static_dose, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(depicts_s: f64, arrival_s: Option<f64>, corrected: bool) -> FrameRecord {
        FrameRecord {
            depicts_s,
            arrival_s,
            est_shift_mm: None,
            set: corrected.then(CorrectionSet::default),
        }
    }

    /// Frames every 0.5 s arriving 0.6 s after they depict; validity 1.2 s: each set is in
    /// force until the next arrives, so the permit is one interval from the first arrival
    /// to the last set's lapse. A held frame in between leaves its predecessor in force
    /// until that one lapses, then a gap until the next arrival.
    #[test]
    fn the_tracking_permit_runs_from_arrival_to_the_next_arrival_or_the_lapse() {
        let r: Vec<FrameRecord> = (0..4)
            .map(|k| record(k as f64 * 0.5, Some(k as f64 * 0.5 + 0.6), true))
            .collect();
        let p = tracking_permit(&r, 1.2, 0.0);
        assert_eq!(p.len(), 1);
        assert!(
            (p[0][0] - 0.6).abs() < 1e-12 && (p[0][1] - (1.5 + 1.2)).abs() < 1e-12,
            "{p:?}"
        );
        // frames 1 and 2 held: frame 0's set lapses at 1.2 s, frame 3's arrives at 2.1 s
        let mut r = r;
        r[1] = record(0.5, None, false);
        r[2] = record(1.0, None, false);
        let p = tracking_permit(&r, 1.2, 0.0);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            (p[0][1] - 1.2).abs() < 1e-12 && (p[1][0] - 2.1).abs() < 1e-12,
            "{p:?}"
        );
    }

    #[test]
    fn a_set_that_arrives_after_it_lapsed_permits_nothing() {
        let r = vec![record(0.0, Some(2.0), true)];
        assert!(tracking_permit(&r, 1.0, 0.0).is_empty());
    }
}
