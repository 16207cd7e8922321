//! The dose a tracking strategy delivers, from where it steered at every moment
//! ([`crate::motion::surrogate::TrackingSeries`]): target V95 and gamma against the static
//! dose, so the strategies between sparse CT frames are compared in dose as well as in mm.
//!
//! The plan is delivered once from the start of the series on the synchrotron's timeline,
//! the beam held wherever the strategy held it (a model strategy's `None` samples). Each
//! spot lands off its planned place in the tumor by the strategy's steering error at the
//! moment it starts, `d = steered − true` (mm, the recording's axes taken as patient LPS):
//! laterally by `d`'s beam's-eye-view components, in depth by a water-equivalent range
//! shifter of `d · to_source` (a spot aimed `δ` deeper than the tumor needs `−δ` of shifter
//! to stand for it; mm of tissue taken as mm of water, as the tumor's soft tissue is). Its
//! dose is computed on the planning CT: the **static dose cloud** approximation — the
//! anatomy along the beam is taken to move with the tumor, which holds where the tumor
//! and what lies upstream move together and is wrong by the density change along the path
//! where they do not (a lung tumor sliding under a rib). The replay's 4D dose
//! ([`super::deliveries`]) moves the CT itself and has no such approximation; it is driven by
//! frame-driven correction sets, not by a surrogate.

use ionguide::dose::{DeliveredSpot, DoseError};
use ionguide::pipeline::Session;
use ionguide::range::BeamGeometry;
use ionguide::volume::Volume;

use crate::delivery::timeline::{
    schedule_what_fits, spot_requests, BeamPermit, SpotRequest, SynchrotronModel, TimelineError,
};
use crate::scoring::deliveries::DoseSetup;
use crate::scoring::dose_figures::{as_volume, DoseFigures, FiguresError};

/// Why a strategy's dose could not be scored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackingDoseError {
    /// The dose engine refused.
    #[error("dose: {0}")]
    Dose(#[from] DoseError),
    /// The delivery could not be scheduled.
    #[error("timeline: {0}")]
    Timeline(#[from] TimelineError),
    /// The figures could not be taken.
    #[error("figures: {0}")]
    Figures(#[from] FiguresError),
    /// A beam's geometry could not be built.
    #[error("beam {beam}: {reason}")]
    Beam {
        /// Beam index in the plan.
        beam: usize,
        /// Why.
        reason: String,
    },
    /// The series is unusable (empty, a non-positive interval).
    #[error("series: {0}")]
    Series(String),
    /// The static dose has no target dose to refer the figures to.
    #[error("the static dose gives the target no dose")]
    NoTargetDose,
}

/// One strategy's delivered dose.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategyDose {
    /// The figures (gamma against the static dose).
    pub figures: DoseFigures,
    /// Spots delivered before the series ended, over the plan's.
    pub delivered_fraction: f64,
    /// From the first spot to the last delivered one, s.
    pub treatment_s: f64,
}

/// A beam's axes in patient LPS.
#[derive(Debug, Clone, Copy)]
struct Axes {
    bev_x: [f64; 3],
    bev_y: [f64; 3],
    to_source: [f64; 3],
}

/// The plan, its static dose and the delivery model, set up once and scored per strategy.
pub struct TrackingDoseScene<'a> {
    session: &'a Session,
    setup: DoseSetup,
    synchrotron: SynchrotronModel,
    requests: Vec<SpotRequest>,
    planned: Vec<DeliveredSpot>,
    axes: Vec<Axes>,
    static_dose: Volume<f32>,
    prescription_gy: f64,
    accum: Vec<f64>,
}

impl<'a> TrackingDoseScene<'a> {
    /// Computes the static dose of `session`'s plan (the prescription: its target median),
    /// `particles_per_weight` ions per unit of spot weight, as the engine of `setup` counts.
    pub fn new(
        session: &'a Session,
        mut setup: DoseSetup,
        synchrotron: SynchrotronModel,
        particles_per_weight: f64,
    ) -> Result<Self, TrackingDoseError> {
        let plan = &session.plan;
        let requests = spot_requests(plan, particles_per_weight)?;
        let planned = setup.engine.delivered_spots(plan, None)?;
        let axes = plan
            .beams
            .iter()
            .enumerate()
            .map(|(b, beam)| {
                BeamGeometry::from_beam(beam, session.options.default_sad_mm)
                    .map(|g| Axes {
                        bev_x: g.bev_x.into(),
                        bev_y: g.bev_y.into(),
                        to_source: g.to_source.into(),
                    })
                    .map_err(|e| TrackingDoseError::Beam {
                        beam: b,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut accum = vec![0.0; setup.grid.len()];
        setup.engine.add_dose(
            &session.planning_ct,
            &session.hlut,
            plan,
            &planned,
            &setup.grid,
            &mut accum,
        )?;
        let static_dose = as_volume(&setup.grid, &accum)?;
        let prescription_gy = setup
            .regions
            .target_d50_gy(&static_dose)
            .filter(|d| *d > 0.0)
            .ok_or(TrackingDoseError::NoTargetDose)?;
        Ok(TrackingDoseScene {
            session,
            setup,
            synchrotron,
            requests,
            planned,
            axes,
            static_dose,
            prescription_gy,
            accum,
        })
    }

    /// The prescription the figures refer to (the static dose's target median), Gy.
    pub fn prescription_gy(&self) -> f64 {
        self.prescription_gy
    }

    /// The static dose's own figures (no gamma).
    pub fn static_figures(&self) -> Result<DoseFigures, TrackingDoseError> {
        Ok(self
            .setup
            .regions
            .figures(&self.static_dose, None, self.prescription_gy)?)
    }

    /// The dose of a delivery steered with `error_mm[k]` (steered − true, mm) during sample
    /// `k` of `dt_s` from the delivery's start; `None`: the beam is held during that sample.
    pub fn score(
        &mut self,
        error_mm: &[Option<[f64; 3]>],
        dt_s: f64,
    ) -> Result<StrategyDose, TrackingDoseError> {
        if error_mm.is_empty() || !(dt_s > 0.0 && dt_s.is_finite()) {
            return Err(TrackingDoseError::Series(format!(
                "{} samples at {dt_s} s",
                error_mm.len()
            )));
        }
        // the permit: runs of beam-on samples
        let mut intervals: Vec<[f64; 2]> = Vec::new();
        for (k, e) in error_mm.iter().enumerate() {
            if e.is_none() {
                continue;
            }
            let iv = [k as f64 * dt_s, (k + 1) as f64 * dt_s];
            match intervals.last_mut() {
                Some(last) if last[1] >= iv[0] => last[1] = iv[1],
                _ => intervals.push(iv),
            }
        }
        let mut delivered: Vec<DeliveredSpot> = Vec::with_capacity(self.planned.len());
        let mut treatment_s = 0.0;
        if !intervals.is_empty() {
            let permit = BeamPermit::intervals(intervals)?;
            let timeline = schedule_what_fits(&self.requests, &self.synchrotron, &permit)?;
            for t in &timeline.spots {
                // inside the permit, so inside a beam-on sample
                let k = (t.start_s / dt_s).floor() as usize;
                let Some(Some(d)) = error_mm.get(k) else {
                    continue;
                };
                let a = &self.axes[t.beam];
                let dot = |u: [f64; 3]| d[0] * u[0] + d[1] * u[1] + d[2] * u[2];
                let mut spot = self.planned[t.plan_index];
                spot.x_mm += dot(a.bev_x);
                spot.y_mm += dot(a.bev_y);
                spot.range_shifter_mm_we += dot(a.to_source);
                delivered.push(spot);
                treatment_s = t.end_s;
            }
        }
        self.accum.iter_mut().for_each(|v| *v = 0.0);
        self.setup.engine.add_dose(
            &self.session.planning_ct,
            &self.session.hlut,
            &self.session.plan,
            &delivered,
            &self.setup.grid,
            &mut self.accum,
        )?;
        let dose = as_volume(&self.setup.grid, &self.accum)?;
        let figures = self
            .setup
            .regions
            .figures(&dose, Some(&self.static_dose), self.prescription_gy)?;
        Ok(StrategyDose {
            figures,
            delivered_fraction: delivered.len() as f64 / self.planned.len().max(1) as f64,
            treatment_s,
        })
    }
}
