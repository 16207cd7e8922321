//! The surrogate tracker: live surrogate samples and CT-frame evidence in, the tumor shift
//! predicted at delivery time (relative to the newest frame) or a hold reason out. No
//! threads and no spots: the surrogate stage drives it, [`crate::adapt::Adapter`] turns
//! its shift into spots.
//!
//! Per sample (after the causal [`LiveRepair`]):
//! 1. The breathing signal `s` is the marker's position along its principal axis, learnt
//!    from the first `axis_samples` samples (mean and axis then fixed for the session, so
//!    the model's coefficients keep their meaning).
//! 2. The marker is forecast `latency_s` ahead (the surrogate sample → spot on the beam
//!    latency) by the online predictor ([`EnsemblePredictor`] or [`RlsBaseline`] of
//!    `ionguide::predict`), at the nominal sample rate; `ŝ` is the forecast's signal and
//!    `v̂` its velocity over `velocity_window_s` (the same backward difference the model
//!    is fitted with).
//! 3. The correlation model (`tumor = a + b·s + c·ṡ` per axis, refit on each frame) gives
//!    the shift since the newest frame: `δ = model(ŝ, v̂) − model(s_f, v_f)`, `s_f, v_f`
//!    the surrogate at that frame's acquisition instant. The newest frame supplies the
//!    position, the model only the motion since: a model offset or a slow drift cancels.
//!
//! Holds, in precedence order (the first that applies is the reason):
//! - [`HoldReason::SurrogateLost`]: no sample for `stall_s` (the stage calls
//!   [`Tracker::check_stall`]), the marker frozen (no coordinate moved by more than
//!   `freeze_tolerance_mm` for `stall_s`: real markers always jitter), a gap or a clock jump
//!   in the stream; lifted after `resume_after_s` of continuous stream.
//! - [`HoldReason::ModelDisagrees`]: a frame's measured tumor was off the model's
//!   prediction for its acquisition instant by more than `limit_mm` (held until a later
//!   frame agrees), or the forecast signal lies outside the span the model was fitted on by
//!   more than `max_extrapolation` of that span (a changed breathing pattern, such as a
//!   doubled amplitude, is caught at the surrogate rate, before the next frame).
//! - [`HoldReason::ModelNotReady`]: the axis is not learnt yet, the model has fewer than
//!   `min_frames` frames, or the newest frame was acquired more than `max_frame_age_s`
//!   before the sample (the scanner stopped: the model's shift since an ever older frame is
//!   not steered by).

use crate::correction::HoldReason;
use ionguide_core::surrogate::{DropReason, LiveLimits, LiveNote, LiveOutcome, LiveRepair, SurrogateError};
use ionguide_kernels::predict::correlation::{CorrelationModel, CorrelationSample, FrameCheck};
use ionguide_kernels::predict::{EnsemblePredictor, OnlinePredictor, PredictError, RlsBaseline};

/// Which forecast covers the latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forecast {
    /// No prediction: the newest sample stands for the delivery instant.
    None,
    /// Recursive least squares per coordinate on the last 12 samples.
    Rls,
    /// Ridge + RLS + analog, weighted online (`ionguide predict`'s default).
    Ensemble,
}

/// How the tracker works (the config's `[surrogate]` section, validated there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerOptions {
    /// Which marker of the sample carries the breathing signal (0-based).
    pub marker: usize,
    /// Surrogate sample → spot on the beam, s.
    pub latency_s: f64,
    /// The stream's nominal rate, Hz (the forecast horizon is `latency_s` in samples).
    pub sample_rate_hz: f64,
    /// The forecast.
    pub forecast: Forecast,
    /// Frames the model is fitted on.
    pub window: usize,
    /// Frames before the model is used.
    pub min_frames: usize,
    /// A frame off the model by more than this holds, mm.
    pub limit_mm: f64,
    /// Allowed excursion of the forecast signal beyond the model's fitted span, as a
    /// fraction of that span.
    pub max_extrapolation: f64,
    /// Samples that fix the breathing axis.
    pub axis_samples: usize,
    /// Backward difference for the velocity, s.
    pub velocity_window_s: f64,
    /// The stream's live repair (its gap limit is the longest step bridged).
    pub live: LiveLimits,
    /// No sample, or a frozen marker, for this long → lost, s.
    pub stall_s: f64,
    /// A marker whose coordinates all stay within this of where they were is frozen, mm.
    pub freeze_tolerance_mm: f64,
    /// Continuous stream needed after a loss before corrections resume, s.
    pub resume_after_s: f64,
    /// The newest frame may be at most this old (its acquisition before the sample), s.
    pub max_frame_age_s: f64,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        TrackerOptions {
            marker: 0,
            latency_s: 0.2,
            sample_rate_hz: 10.0,
            forecast: Forecast::Ensemble,
            window: 15,
            min_frames: 4,
            limit_mm: 2.0,
            max_extrapolation: 0.5,
            axis_samples: 50,
            velocity_window_s: 0.2,
            live: LiveLimits::default(),
            stall_s: 0.5,
            freeze_tolerance_mm: 1e-3,
            resume_after_s: 1.0,
            max_frame_age_s: 3.0,
        }
    }
}

/// Why a tracker could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// The predictor refused its parameters.
    #[error("surrogate forecast: {0}")]
    Predict(#[from] PredictError),
    /// The live repair refused its limits.
    #[error("surrogate live repair: {0}")]
    Repair(#[from] SurrogateError),
}

/// What one sample led to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Steer {
    /// Steer to the newest frame's position moved by `delta_mm`.
    Shift {
        /// The newest frame.
        frame_id: u64,
        /// Predicted tumor shift since that frame's acquisition, patient mm.
        delta_mm: [f64; 3],
        /// The forecast signal and velocity the model was read at.
        s_mm: f64,
        /// Velocity, mm/s.
        v_mm_s: f64,
    },
    /// Hold the beam.
    Hold(HoldReason),
    /// The sample was dropped by the live repair (nothing changes).
    Dropped(DropReason),
}

/// What the last hold-state change was about (formatted into the audit detail).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// No sample for this long, s.
    Silent(f64),
    /// The marker has not moved for this long, s.
    Frozen(f64),
    /// A gap in the stream, s.
    Gap(f64),
    /// The stream's clock jumped by this much, s.
    ClockJump(f64),
    /// The stream is not yet continuous for long enough after a loss, s so far.
    Recovering(f64),
    /// A frame disagreed with the model by this much, mm.
    FrameOff {
        /// The frame.
        frame_id: u64,
        /// Distance, mm.
        off_mm: f64,
    },
    /// The forecast signal is outside the fitted span (value, span low, span high), mm.
    Extrapolating(f64, f64, f64),
    /// Frames in the model so far.
    TooFewFrames(usize),
    /// The axis is being learnt (samples so far).
    LearningAxis(usize),
    /// The newest frame is this old, s.
    FrameTooOld(f64),
    /// Nothing wrong.
    Clear,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Cause::Silent(s) => write!(f, "no surrogate sample for {:.0} ms", s * 1e3),
            Cause::Frozen(s) => write!(f, "surrogate marker frozen for {:.0} ms", s * 1e3),
            Cause::Gap(s) => write!(f, "surrogate stream gap of {:.0} ms (not bridged)", s * 1e3),
            Cause::ClockJump(s) => write!(f, "surrogate clock jumped by {:.0} ms", s * 1e3),
            Cause::Recovering(s) => write!(f, "surrogate stream continuous for only {:.0} ms", s * 1e3),
            Cause::FrameOff { frame_id, off_mm } => {
                write!(
                    f,
                    "frame {frame_id}: tumor {off_mm:.2} mm off the correlation model"
                )
            }
            Cause::Extrapolating(s, lo, hi) => write!(
                f,
                "forecast surrogate {s:.2} mm outside the model's span {lo:.2}..{hi:.2} mm"
            ),
            Cause::TooFewFrames(n) => write!(f, "correlation model has {n} frames"),
            Cause::LearningAxis(n) => write!(f, "learning the breathing axis ({n} samples)"),
            Cause::FrameTooOld(s) => write!(f, "newest CT frame acquired {:.1} s ago", s),
            Cause::Clear => f.write_str("tracking"),
        }
    }
}

/// A change of the tracker's hold state, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// The hold before (`None`: corrections were flowing).
    pub from: Option<HoldReason>,
    /// The hold now (`None`: corrections flow again).
    pub to: Option<HoldReason>,
    /// Why.
    pub cause: Cause,
    /// Tracker time, s.
    pub t_s: f64,
}

/// The newest frame's evidence the model was last refit with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FrameRef {
    frame_id: u64,
    t_s: f64,
    s_mm: f64,
    v_mm_s: f64,
}

/// What a frame did to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameUse {
    /// Checked and added; the check's verdict.
    Added(FrameCheck),
    /// No surrogate at the frame's acquisition instant (before the stream, in a gap, or
    /// newer than its newest sample); not added.
    NoSurrogate,
    /// The breathing axis is not learnt yet; not added.
    NoAxis,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    t_s: f64,
    pos: [f64; 3],
    /// Forecast signal made at this sample (NaN: none).
    s_hat: f64,
    /// First sample of a continuous segment.
    segment_start: bool,
}

/// History kept, samples (a minute at 30 Hz: frames are at most a few s old).
const HISTORY: usize = 2048;

/// The tracker. Allocates at construction only (the ensemble's ridge member refits through
/// a small dense Cholesky that does allocate, every few samples; [`Forecast::Rls`] and
/// [`Forecast::None`] do not).
pub struct Tracker {
    o: TrackerOptions,
    repair: LiveRepair,
    origin_ns: Option<u64>,
    ring: Vec<Entry>,
    head: usize,
    len: usize,
    axis_sum: [f64; 3],
    axis_outer: [[f64; 3]; 3],
    axis_n: usize,
    axis: Option<([f64; 3], [f64; 3])>,
    predictor: Option<Box<dyn OnlinePredictor + Send>>,
    horizon: usize,
    forecast: [f64; 3],
    model: CorrelationModel,
    frame_s: Vec<f64>,
    frame_window: usize,
    newest: Option<FrameRef>,
    disagrees: Option<(u64, f64)>,
    lost: Option<Cause>,
    segment_t0: f64,
    last_sample_t: Option<f64>,
    moved_at: (f64, [f64; 3]),
    hold: Option<HoldReason>,
    cause: Cause,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("hold", &self.hold)
            .field("cause", &self.cause)
            .field("frames", &self.model.frames())
            .finish_non_exhaustive()
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

impl Tracker {
    /// A tracker with these options (validated by the config).
    pub fn new(o: TrackerOptions) -> Result<Self, TrackerError> {
        let horizon = ((o.latency_s * o.sample_rate_hz).round() as usize).max(1);
        let mut t = Tracker {
            o,
            repair: LiveRepair::new(o.live)?,
            origin_ns: None,
            ring: vec![Entry::default(); HISTORY],
            head: 0,
            len: 0,
            axis_sum: [0.0; 3],
            axis_outer: [[0.0; 3]; 3],
            axis_n: 0,
            axis: None,
            predictor: None,
            horizon,
            forecast: [0.0; 3],
            model: CorrelationModel::new(o.window, o.min_frames, o.limit_mm),
            frame_s: Vec::with_capacity(o.window.max(o.min_frames).max(3)),
            frame_window: o.window.max(o.min_frames).max(3),
            newest: None,
            disagrees: None,
            lost: None,
            segment_t0: 0.0,
            last_sample_t: None,
            moved_at: (0.0, [f64::NAN; 3]),
            hold: Some(HoldReason::ModelNotReady),
            cause: Cause::LearningAxis(0),
        };
        t.predictor = t.new_predictor()?;
        Ok(t)
    }

    fn new_predictor(&self) -> Result<Option<Box<dyn OnlinePredictor + Send>>, TrackerError> {
        Ok(match self.o.forecast {
            Forecast::None => None,
            Forecast::Rls => Some(Box::new(RlsBaseline::new(3, self.horizon)?)),
            Forecast::Ensemble => Some(Box::new(EnsemblePredictor::new(3, self.horizon)?)),
        })
    }

    /// The hold now (`None`: corrections flow).
    pub fn hold(&self) -> Option<HoldReason> {
        self.hold
    }

    /// Why the tracker is in its state.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// The correlation model's residual over its window, mm.
    pub fn model_residual_mm(&self) -> Option<f64> {
        self.model.residual_rms_mm()
    }

    /// Tracker time of a wall-clock instant, s (relative to the first sample).
    pub fn time_s(&self, unix_ns: u64) -> Option<f64> {
        let o = self.origin_ns?;
        Some((unix_ns as i128 - o as i128) as f64 * 1e-9)
    }

    fn entry(&self, back: usize) -> &Entry {
        &self.ring[(self.head + HISTORY - 1 - back) % HISTORY]
    }

    fn signal(&self, pos: [f64; 3]) -> Option<f64> {
        let (mean, axis) = self.axis?;
        Some(dot([pos[0] - mean[0], pos[1] - mean[1], pos[2] - mean[2]], axis))
    }

    /// The signal (or the forecast signal) at `t_s`, interpolated within one segment.
    fn at(&self, t_s: f64, forecast: bool) -> Option<f64> {
        let value = |e: &Entry| {
            if forecast {
                Some(e.s_hat).filter(|v| v.is_finite())
            } else {
                self.signal(e.pos)
            }
        };
        let mut after: Option<&Entry> = None;
        for back in 0..self.len {
            let e = self.entry(back);
            if e.t_s <= t_s {
                let a = value(e)?;
                return match after {
                    None if t_s - e.t_s < 1e-9 => Some(a),
                    None => None,
                    Some(n) => {
                        let b = value(n)?;
                        let w = (t_s - e.t_s) / (n.t_s - e.t_s);
                        Some(a + w * (b - a))
                    }
                };
            }
            if e.segment_start {
                return None;
            }
            after = Some(e);
        }
        None
    }

    fn velocity(&self, t_s: f64, forecast: bool) -> Option<f64> {
        let dv = self.o.velocity_window_s;
        Some((self.at(t_s, forecast)? - self.at(t_s - dv, forecast)?) / dv)
    }

    fn set(&mut self, hold: Option<HoldReason>, cause: Cause, t_s: f64) -> Option<Transition> {
        let changed = hold != self.hold;
        let from = self.hold;
        self.hold = hold;
        self.cause = cause;
        changed.then_some(Transition {
            from,
            to: hold,
            cause,
            t_s,
        })
    }

    /// Reads the state in precedence order; `extrapolating` from this sample.
    fn decide(&mut self, t_s: f64, extrapolating: Option<Cause>) -> Option<Transition> {
        if let Some(c) = self.lost {
            return self.set(Some(HoldReason::SurrogateLost), c, t_s);
        }
        if let Some((frame_id, off_mm)) = self.disagrees {
            return self.set(
                Some(HoldReason::ModelDisagrees),
                Cause::FrameOff { frame_id, off_mm },
                t_s,
            );
        }
        if self.axis.is_none() {
            return self.set(
                Some(HoldReason::ModelNotReady),
                Cause::LearningAxis(self.axis_n),
                t_s,
            );
        }
        if self.model.predict(0.0, 0.0).is_none() || self.newest.is_none() {
            return self.set(
                Some(HoldReason::ModelNotReady),
                Cause::TooFewFrames(self.model.frames()),
                t_s,
            );
        }
        if let Some(age) = self
            .newest
            .map(|f| t_s - f.t_s)
            .filter(|a| *a > self.o.max_frame_age_s)
        {
            return self.set(Some(HoldReason::ModelNotReady), Cause::FrameTooOld(age), t_s);
        }
        if let Some(c) = extrapolating {
            return self.set(Some(HoldReason::ModelDisagrees), c, t_s);
        }
        self.set(None, Cause::Clear, t_s)
    }

    /// No sample lately? Call at least every `stall_s / 2` with the receiver's clock.
    pub fn check_stall(&mut self, now_unix_ns: u64) -> Option<Transition> {
        let now = self.time_s(now_unix_ns)?;
        let last = self.last_sample_t?;
        if now - last > self.o.stall_s && self.lost.is_none() {
            self.lost = Some(Cause::Silent(now - last));
            return self.decide(now, None);
        }
        None
    }

    fn restart_segment(&mut self, t_s: f64, cause: Cause) -> Result<(), TrackerError> {
        self.lost = Some(cause);
        self.segment_t0 = t_s;
        self.predictor = self.new_predictor()?;
        Ok(())
    }

    /// Takes one sample: tracking-system counter, acquisition instant (unix ns), marker
    /// positions (mm). Returns what to steer to and, when the hold state changed, the
    /// transition to audit.
    pub fn on_sample(
        &mut self,
        counter: u64,
        acquired_unix_ns: u64,
        markers: &[[f64; 3]],
    ) -> Result<(Steer, Option<Transition>), TrackerError> {
        let pos = markers.get(self.o.marker).copied();
        let finite = pos.is_some_and(|p| p.iter().all(|v| v.is_finite()));
        let origin = *self.origin_ns.get_or_insert(acquired_unix_ns);
        let t_raw = (acquired_unix_ns as i128 - origin as i128) as f64 * 1e-9;
        let (t_s, note) = match self.repair.push(Some(counter), t_raw, finite) {
            LiveOutcome::Dropped(r) => return Ok((Steer::Dropped(r), None)),
            LiveOutcome::Accepted { t_s, note } => (t_s, note),
        };
        let pos = pos.unwrap_or([0.0; 3]);
        let first = self.last_sample_t.is_none();
        self.last_sample_t = Some(t_s);
        match note {
            Some(LiveNote::Gap { from_t_s, to_t_s }) => {
                self.restart_segment(t_s, Cause::Gap(to_t_s - from_t_s))?
            }
            Some(LiveNote::ClockJump {
                t_s: got,
                expected_t_s,
            }) => self.restart_segment(t_s, Cause::ClockJump(got - expected_t_s))?,
            _ => {}
        }
        if first {
            self.segment_t0 = t_s;
        }
        // frozen: every coordinate within the tolerance of where it last moved
        let moved = self.moved_at.1.iter().zip(pos).any(|(a, b)| {
            // NaN (no position yet) counts as moved
            let d = (a - b).abs();
            d.is_nan() || d > self.o.freeze_tolerance_mm
        });
        if moved {
            self.moved_at = (t_s, pos);
        } else if t_s - self.moved_at.0 > self.o.stall_s && !matches!(self.lost, Some(Cause::Frozen(_))) {
            self.lost = Some(Cause::Frozen(t_s - self.moved_at.0));
            self.segment_t0 = t_s;
        }
        match self.lost {
            None => {}
            // still frozen: the clock for resuming starts when it moves
            Some(Cause::Frozen(_)) if !moved => self.segment_t0 = t_s,
            // the stream is back after a silence: it must now run continuously
            Some(Cause::Silent(_)) => {
                self.segment_t0 = t_s;
                self.lost = Some(Cause::Recovering(0.0));
            }
            Some(_) if t_s - self.segment_t0 >= self.o.resume_after_s => self.lost = None,
            Some(_) if t_s > self.segment_t0 => self.lost = Some(Cause::Recovering(t_s - self.segment_t0)),
            Some(_) => {}
        }
        // the axis, from the first samples
        if self.axis.is_none() {
            self.axis_n += 1;
            for i in 0..3 {
                self.axis_sum[i] += pos[i];
                for j in 0..3 {
                    self.axis_outer[i][j] += pos[i] * pos[j];
                }
            }
            if self.axis_n >= self.o.axis_samples.max(3) {
                self.axis = self.learn_axis();
            }
        }
        // forecast over the latency
        let s_hat = match self.predictor.as_mut() {
            Some(p) => {
                p.step(&pos, &mut self.forecast);
                self.signal(self.forecast)
            }
            None => self.signal(pos),
        };
        let segment_start = first || matches!(note, Some(n) if n.breaks_continuity());
        self.ring[self.head] = Entry {
            t_s,
            pos,
            s_hat: s_hat.unwrap_or(f64::NAN),
            segment_start,
        };
        self.head = (self.head + 1) % HISTORY;
        self.len = (self.len + 1).min(HISTORY);

        // the forecast needs its horizon of history in this segment to be warm
        let warm = t_s - self.segment_t0 >= self.o.latency_s + self.o.velocity_window_s;
        let read = match (s_hat, self.velocity(t_s, true), self.velocity(t_s, false)) {
            (Some(s), Some(v), _) if warm => Some((s, v)),
            (Some(_), _, Some(v)) => self.signal(pos).map(|s| (s, v)),
            _ => None,
        };
        let extrapolating = read.and_then(|(s, _)| {
            let (lo, hi) = self.frame_span()?;
            let m = self.o.max_extrapolation * (hi - lo);
            (s < lo - m || s > hi + m).then_some(Cause::Extrapolating(s, lo, hi))
        });
        let transition = self.decide(t_s, extrapolating);
        if let Some(reason) = self.hold {
            return Ok((Steer::Hold(reason), transition));
        }
        let steer = match (read, self.newest) {
            (Some((s, v)), Some(f)) => match (self.model.predict(s, v), self.model.predict(f.s_mm, f.v_mm_s))
            {
                (Some(now), Some(then)) => Steer::Shift {
                    frame_id: f.frame_id,
                    delta_mm: [now[0] - then[0], now[1] - then[1], now[2] - then[2]],
                    s_mm: s,
                    v_mm_s: v,
                },
                _ => Steer::Hold(HoldReason::ModelNotReady),
            },
            // no velocity yet in this segment
            _ => Steer::Hold(HoldReason::SurrogateLost),
        };
        Ok((steer, transition))
    }

    fn frame_span(&self) -> Option<(f64, f64)> {
        let lo = self.frame_s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.frame_s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (hi >= lo).then_some((lo, hi))
    }

    fn learn_axis(&self) -> Option<([f64; 3], [f64; 3])> {
        let n = self.axis_n as f64;
        let mean = self.axis_sum.map(|v| v / n);
        let mut c = nalgebra::Matrix3::<f64>::zeros();
        for i in 0..3 {
            for j in 0..3 {
                c[(i, j)] = self.axis_outer[i][j] / n - mean[i] * mean[j];
            }
        }
        let e = nalgebra::SymmetricEigen::new(c);
        let k = e.eigenvalues.imax();
        let mut a = [
            e.eigenvectors[(0, k)],
            e.eigenvectors[(1, k)],
            e.eigenvectors[(2, k)],
        ];
        // a fixed sign, so that the same motion gives the same signal on every run
        let big = (0..3)
            .max_by(|&i, &j| a[i].abs().total_cmp(&a[j].abs()))
            .unwrap_or(0);
        if a[big] < 0.0 {
            a = a.map(|v| -v);
        }
        (e.eigenvalues[k] > 0.0 && a.iter().all(|v| v.is_finite())).then_some((mean, a))
    }

    /// Takes a CT frame's evidence: its registered tumor position (patient mm, the shift from
    /// the plan) at its acquisition instant. Checks it against the model as it stood, then
    /// refits. Returns what was done and the hold transition, if any.
    pub fn on_frame(
        &mut self,
        frame_id: u64,
        acquired_unix_ns: u64,
        tumor_shift_mm: [f64; 3],
    ) -> (FrameUse, Option<Transition>) {
        let Some(t_s) = self.time_s(acquired_unix_ns) else {
            return (FrameUse::NoSurrogate, None);
        };
        if self.axis.is_none() {
            return (FrameUse::NoAxis, None);
        }
        let (Some(s), Some(v)) = (self.at(t_s, false), self.velocity(t_s, false)) else {
            return (FrameUse::NoSurrogate, None);
        };
        let check = self.model.add_frame(CorrelationSample {
            s_mm: s,
            v_mm_s: v,
            tumor_mm: tumor_shift_mm,
        });
        if self.frame_s.len() >= self.frame_window {
            self.frame_s.remove(0);
        }
        self.frame_s.push(s);
        self.newest = Some(FrameRef {
            frame_id,
            t_s,
            s_mm: s,
            v_mm_s: v,
        });
        match check {
            FrameCheck::Disagrees(d) => self.disagrees = Some((frame_id, d)),
            FrameCheck::Agrees(_) => self.disagrees = None,
            FrameCheck::TooFewFrames => {}
        }
        let now = self.last_sample_t.unwrap_or(t_s);
        (FrameUse::Added(check), self.decide(now, None))
    }
}
