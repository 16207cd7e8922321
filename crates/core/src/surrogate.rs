//! External surrogate samples (a breathing marker's position over time) and the rules that
//! make a recorded or streamed sequence of them usable: timestamps checked against the
//! camera's frame counter and against each other, glitches repaired or dropped, duplicates
//! and out-of-order samples dropped, gaps reported — every change a typed warning naming the
//! sample it touched.
//!
//! Why these rules: real ExtMarker recordings carry timestamp glitches — for one or two rows
//! the timestamp falls back to a small value (in every case seen, the true value divided by
//! 500) while the frame counter goes on. The frame counter and the timestamps otherwise agree
//! to the millisecond (60 Hz camera, a sample every 6 frames), so the frame counter is the
//! witness that says which of two disagreeing clocks is wrong.
//!
//! The rules ([`repair`]):
//! - The **frame period** is the median over consecutive samples of Δt / Δframe (robust to a
//!   few glitches); without a frame counter there is nothing to repair from.
//! - A sample **agrees** with an accepted *anchor* sample when its time is the anchor's time
//!   plus Δframe × period within [`RepairLimits::tolerance_fraction`] of the median sample
//!   interval.
//! - A sample that disagrees with the anchor is a **glitch** when one of the next
//!   [`RepairLimits::max_glitch_run`] samples agrees with the anchor again and the frame
//!   counter climbs strictly through the run: its time is then rebuilt from the frame counter
//!   (anchor time + Δframe × period) — unambiguous, since samples on both sides agree. If no
//!   later sample agrees, the clock itself jumped: a forward jump is accepted (and reported),
//!   a backward one cannot be placed and the sample is dropped.
//! - The same frame again is a **duplicate**, an older frame (or, without frame counter, a
//!   time not after the anchor's) is **out of order**: both dropped. Without a frame counter a
//!   lone sample far ahead of both neighbours is dropped as a **spike**.
//! - A step between accepted samples longer than [`RepairLimits::max_gap_s`] is a **gap**:
//!   reported, never filled; a consumer must not interpolate or extrapolate across it.
//! - A trace in which more than [`RepairLimits::max_changed_fraction`] of the samples (10% by
//!   default) had to be repaired or dropped is refused: with that many faults the repair rules
//!   are guessing rather than correcting (the worst real recording seen needs 0.4%).

use std::fmt;

/// One surrogate sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurrogateSample {
    /// The tracking camera's frame counter, when the source gives one.
    pub frame: Option<u64>,
    /// Sample time, s.
    pub t_s: f64,
    /// Marker position, mm.
    pub pos_mm: [f64; 3],
}

/// Limits of [`repair`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepairLimits {
    /// A step between accepted samples longer than this is reported as a gap, s.
    pub max_gap_s: f64,
    /// A sample agrees with its anchor when its time is within this fraction of the median
    /// sample interval of the frame counter's prediction.
    pub tolerance_fraction: f64,
    /// The longest run of consecutive glitching samples that is repaired.
    pub max_glitch_run: usize,
    /// Refuse a trace when more than this fraction of its samples were repaired or dropped.
    pub max_changed_fraction: f64,
}

impl Default for RepairLimits {
    fn default() -> Self {
        Self {
            // Five samples at 10 Hz: longer than any frame-drop seen in the recordings (the
            // longest step there is 7 camera frames, 117 ms), shorter than a breathing phase.
            max_gap_s: 0.5,
            tolerance_fraction: 0.25,
            max_glitch_run: 5,
            max_changed_fraction: 0.10,
        }
    }
}

/// Why a sample was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// A time or position is not finite.
    NotFinite,
    /// The same frame (or, without frame counter, the same time) as the sample before.
    Duplicate,
    /// An older frame (or an earlier time) than the sample before.
    OutOfOrder,
    /// Its time disagrees with the frame counter and no later sample says which is right,
    /// and the time goes backwards.
    Unplaceable,
    /// Without frame counter: a lone time far ahead of both neighbours.
    Spike,
    /// Before the first two samples that agree with each other.
    BeforeFirstAgreement,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFinite => "not finite",
            Self::Duplicate => "duplicate of the sample before",
            Self::OutOfOrder => "out of order",
            Self::Unplaceable => "time goes back and disagrees with the frame counter",
            Self::Spike => "time far ahead of both neighbours",
            Self::BeforeFirstAgreement => "disagrees with the samples after it",
        })
    }
}

/// What [`repair`] changed or found, naming the sample (0-based index in the input).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SurrogateWarning {
    /// The timestamp disagreed with the frame counter and both neighbours; rebuilt from the
    /// frame counter.
    TimeRepaired {
        /// Sample index.
        index: usize,
        /// Its recorded time, s.
        recorded_t_s: f64,
        /// The time it now has, s.
        repaired_t_s: f64,
    },
    /// The sample was left out.
    Dropped {
        /// Sample index.
        index: usize,
        /// Its recorded time, s.
        t_s: f64,
        /// Why.
        reason: DropReason,
    },
    /// The timestamps jumped (forward) against the frame counter and stayed there: kept, and
    /// the frame counter re-anchored on it.
    ClockJump {
        /// Sample index.
        index: usize,
        /// Its time, s.
        t_s: f64,
        /// The time the frame counter predicted, s.
        expected_t_s: f64,
    },
    /// A step longer than the gap limit between two kept samples (not filled).
    Gap {
        /// Index of the sample after the gap.
        index: usize,
        /// Time of the kept sample before the gap, s.
        from_t_s: f64,
        /// Time of this sample, s.
        to_t_s: f64,
    },
}

impl SurrogateWarning {
    /// The input sample this warning is about.
    pub fn index(&self) -> usize {
        match self {
            Self::TimeRepaired { index, .. }
            | Self::Dropped { index, .. }
            | Self::ClockJump { index, .. }
            | Self::Gap { index, .. } => *index,
        }
    }
}

impl fmt::Display for SurrogateWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimeRepaired {
                recorded_t_s,
                repaired_t_s,
                ..
            } => write!(
                f,
                "time {recorded_t_s} s disagrees with the frame counter and both neighbours; repaired to {repaired_t_s} s"
            ),
            Self::Dropped { t_s, reason, .. } => write!(f, "sample at {t_s} s dropped: {reason}"),
            Self::ClockJump {
                t_s, expected_t_s, ..
            } => write!(
                f,
                "time jumps to {t_s} s where the frame counter says {expected_t_s} s, and stays: kept"
            ),
            Self::Gap {
                from_t_s, to_t_s, ..
            } => write!(
                f,
                "gap of {:.3} s from {from_t_s} s to {to_t_s} s (not filled)",
                to_t_s - from_t_s
            ),
        }
    }
}

/// Why a surrogate sequence is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SurrogateError {
    /// Too many samples had to be repaired or dropped to trust the rest.
    #[error(
        "{changed} of {samples} samples had to be repaired or dropped (limit {:.0}%): the trace is mostly broken",
        limit_fraction * 100.0
    )]
    MostlyBroken {
        /// Samples in.
        samples: usize,
        /// Samples repaired or dropped.
        changed: usize,
        /// The limit, as a fraction.
        limit_fraction: f64,
    },
    /// Fewer than two usable samples.
    #[error("{usable} usable samples of {samples}: at least 2 needed")]
    TooShort {
        /// Samples in.
        samples: usize,
        /// Samples kept.
        usable: usize,
    },
    /// A limit is out of range.
    #[error("invalid repair limit {name} = {value}")]
    BadLimit {
        /// The limit.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

/// The outcome of [`repair`].
#[derive(Debug, Clone, PartialEq)]
pub struct Repaired {
    /// Kept samples, time strictly increasing (repaired times in place).
    pub samples: Vec<SurrogateSample>,
    /// For each kept sample, its index in the input.
    pub source_index: Vec<usize>,
    /// Every change and every gap, in input order.
    pub warnings: Vec<SurrogateWarning>,
}

impl Repaired {
    /// Indices (into the kept samples) where a gap starts a new segment: a consumer may
    /// interpolate only within a segment.
    pub fn segment_starts(&self) -> Vec<usize> {
        let mut starts = vec![0];
        let gap_at: std::collections::BTreeSet<usize> = self
            .warnings
            .iter()
            .filter_map(|w| match w {
                SurrogateWarning::Gap { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        for (k, src) in self.source_index.iter().enumerate() {
            if k > 0 && gap_at.contains(src) {
                starts.push(k);
            }
        }
        starts
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Median time per camera frame over consecutive finite samples whose frame and time both
/// advance, s; `None` without frame counters.
pub fn frame_period_s(samples: &[SurrogateSample]) -> Option<f64> {
    let ratios: Vec<f64> = samples
        .windows(2)
        .filter_map(|w| {
            let (fa, fb) = (w[0].frame?, w[1].frame?);
            let dt = w[1].t_s - w[0].t_s;
            (fb > fa && dt > 0.0 && dt.is_finite()).then(|| dt / (fb - fa) as f64)
        })
        .collect();
    median(ratios)
}

fn finite(s: &SurrogateSample) -> bool {
    s.t_s.is_finite() && s.pos_mm.iter().all(|v| v.is_finite())
}

/// Checks and repairs a recorded surrogate sequence (rules in the module doc).
pub fn repair(samples: &[SurrogateSample], limits: &RepairLimits) -> Result<Repaired, SurrogateError> {
    for (name, value, ok) in [
        ("max_gap_s", limits.max_gap_s, limits.max_gap_s > 0.0),
        (
            "tolerance_fraction",
            limits.tolerance_fraction,
            limits.tolerance_fraction > 0.0 && limits.tolerance_fraction < 1.0,
        ),
        (
            "max_changed_fraction",
            limits.max_changed_fraction,
            (0.0..=1.0).contains(&limits.max_changed_fraction),
        ),
    ] {
        if !ok || !value.is_finite() {
            return Err(SurrogateError::BadLimit { name, value });
        }
    }
    let n = samples.len();
    let mut out = Repaired {
        samples: Vec::with_capacity(n),
        source_index: Vec::with_capacity(n),
        warnings: Vec::new(),
    };
    let with_frames = n > 0 && samples.iter().all(|s| s.frame.is_some());
    let period = if with_frames {
        frame_period_s(samples)
    } else {
        None
    };
    // The median step between consecutive forward samples sets the agreement tolerance.
    let step = median(
        samples
            .windows(2)
            .map(|w| w[1].t_s - w[0].t_s)
            .filter(|d| *d > 0.0 && d.is_finite())
            .collect(),
    )
    .unwrap_or(1.0);
    let tol = limits.tolerance_fraction * step;
    let mut changed = 0usize;
    let drop = |out: &mut Repaired, changed: &mut usize, i: usize, reason| {
        *changed += 1;
        out.warnings.push(SurrogateWarning::Dropped {
            index: i,
            t_s: samples[i].t_s,
            reason,
        });
    };

    match period {
        Some(period) => {
            let frame = |i: usize| samples[i].frame.unwrap_or(0);
            // Expected time of sample j from anchor a by the frame counter.
            let expect = |a: (u64, f64), j: usize| a.1 + (frame(j) as f64 - a.0 as f64) * period;
            let agrees =
                |a: (u64, f64), j: usize| frame(j) > a.0 && (samples[j].t_s - expect(a, j)).abs() <= tol;
            // The first anchor: the first finite sample that one of the next few agrees with
            // (a glitch there is outvoted by the run limit, as later on).
            let start = (0..n).find(|&i| {
                finite(&samples[i])
                    && (i + 1..n.min(i + 2 + limits.max_glitch_run))
                        .any(|j| finite(&samples[j]) && agrees((frame(i), samples[i].t_s), j))
            });
            let Some(start) = start else {
                return Err(SurrogateError::TooShort {
                    samples: n,
                    usable: 0,
                });
            };
            for (i, s) in samples.iter().enumerate().take(start) {
                let reason = if finite(s) {
                    DropReason::BeforeFirstAgreement
                } else {
                    DropReason::NotFinite
                };
                drop(&mut out, &mut changed, i, reason);
            }
            let mut anchor = (frame(start), samples[start].t_s);
            out.samples.push(samples[start]);
            out.source_index.push(start);
            let mut i = start + 1;
            while i < n {
                let s = samples[i];
                if !finite(&s) {
                    drop(&mut out, &mut changed, i, DropReason::NotFinite);
                    i += 1;
                    continue;
                }
                let f = frame(i);
                if f == anchor.0 {
                    drop(&mut out, &mut changed, i, DropReason::Duplicate);
                    i += 1;
                    continue;
                }
                if f < anchor.0 {
                    drop(&mut out, &mut changed, i, DropReason::OutOfOrder);
                    i += 1;
                    continue;
                }
                let mut t = s.t_s;
                if !agrees(anchor, i) {
                    // Does a later sample within the run limit agree with the anchor again,
                    // with the frame counter climbing through the run?
                    let end = (i + 1..n.min(i + 1 + limits.max_glitch_run))
                        .find(|&j| finite(&samples[j]) && agrees(anchor, j));
                    let climbs = end.is_some_and(|j| (i..j).all(|k| frame(k + 1) > frame(k)));
                    if climbs {
                        t = expect(anchor, i);
                        changed += 1;
                        out.warnings.push(SurrogateWarning::TimeRepaired {
                            index: i,
                            recorded_t_s: s.t_s,
                            repaired_t_s: t,
                        });
                    } else if s.t_s > anchor.1 {
                        out.warnings.push(SurrogateWarning::ClockJump {
                            index: i,
                            t_s: s.t_s,
                            expected_t_s: expect(anchor, i),
                        });
                    } else {
                        drop(&mut out, &mut changed, i, DropReason::Unplaceable);
                        i += 1;
                        continue;
                    }
                }
                if t - anchor.1 > limits.max_gap_s {
                    out.warnings.push(SurrogateWarning::Gap {
                        index: i,
                        from_t_s: anchor.1,
                        to_t_s: t,
                    });
                }
                // A repaired sample anchors the next one by its frame-counter time, so a run
                // of glitches is rebuilt from the last trusted sample.
                anchor = (f, t);
                out.samples.push(SurrogateSample { t_s: t, ..s });
                out.source_index.push(i);
                i += 1;
            }
        }
        None => {
            let mut last: Option<f64> = None;
            for (i, &s) in samples.iter().enumerate() {
                if !finite(&s) {
                    drop(&mut out, &mut changed, i, DropReason::NotFinite);
                    continue;
                }
                if let Some(t_prev) = last {
                    if s.t_s == t_prev {
                        drop(&mut out, &mut changed, i, DropReason::Duplicate);
                        continue;
                    }
                    if s.t_s < t_prev {
                        drop(&mut out, &mut changed, i, DropReason::OutOfOrder);
                        continue;
                    }
                    // A lone sample far ahead: the next one falls back between it and the
                    // sample before, so the next is right and this one is the outlier.
                    let next = (i + 1..n).find(|&j| finite(&samples[j]));
                    if let Some(j) = next {
                        let tn = samples[j].t_s;
                        if s.t_s - t_prev > step + tol && tn > t_prev && tn < s.t_s {
                            drop(&mut out, &mut changed, i, DropReason::Spike);
                            continue;
                        }
                    }
                    if s.t_s - t_prev > limits.max_gap_s {
                        out.warnings.push(SurrogateWarning::Gap {
                            index: i,
                            from_t_s: t_prev,
                            to_t_s: s.t_s,
                        });
                    }
                }
                last = Some(s.t_s);
                out.samples.push(s);
                out.source_index.push(i);
            }
        }
    }
    if out.samples.len() < 2 {
        return Err(SurrogateError::TooShort {
            samples: n,
            usable: out.samples.len(),
        });
    }
    if changed as f64 > limits.max_changed_fraction * n as f64 {
        return Err(SurrogateError::MostlyBroken {
            samples: n,
            changed,
            limit_fraction: limits.max_changed_fraction,
        });
    }
    Ok(out)
}

/// Limits of the causal [`LiveRepair`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveLimits {
    /// A step between accepted samples longer than this is a gap, s.
    pub max_gap_s: f64,
    /// A sample agrees with the anchor when its time is within this fraction of the median
    /// sample interval of the time the counter predicts.
    pub tolerance_fraction: f64,
    /// Consecutive disagreeing samples whose time is rebuilt from the counter before a
    /// forward disagreement is taken as the clock itself having jumped.
    pub max_glitch_run: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        let batch = RepairLimits::default();
        LiveLimits {
            max_gap_s: batch.max_gap_s,
            tolerance_fraction: batch.tolerance_fraction,
            max_glitch_run: batch.max_glitch_run,
        }
    }
}

impl LiveLimits {
    /// Checks the limits' domains.
    pub fn validate(&self) -> Result<(), SurrogateError> {
        if !(self.max_gap_s > 0.0 && self.max_gap_s.is_finite()) {
            return Err(SurrogateError::BadLimit {
                name: "max_gap_s",
                value: self.max_gap_s,
            });
        }
        if !(self.tolerance_fraction > 0.0 && self.tolerance_fraction < 1.0) {
            return Err(SurrogateError::BadLimit {
                name: "tolerance_fraction",
                value: self.tolerance_fraction,
            });
        }
        Ok(())
    }
}

/// What [`LiveRepair::push`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveOutcome {
    /// Kept, at time `t_s` (rebuilt when `note` says so).
    Accepted {
        /// The sample's time after repair, s.
        t_s: f64,
        /// What was noticed, if anything.
        note: Option<LiveNote>,
    },
    /// Left out.
    Dropped(DropReason),
}

/// What the live repair noticed about a kept sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveNote {
    /// Its time disagreed with the counter; rebuilt from it.
    TimeRepaired {
        /// Time as received, s.
        recorded_t_s: f64,
        /// Time kept, s.
        repaired_t_s: f64,
    },
    /// The clock jumped forward and stayed: re-anchored on it. Continuity is broken as at a
    /// gap (the samples before were timed on the old clock).
    ClockJump {
        /// Time received, s.
        t_s: f64,
        /// Time the counter predicted, s.
        expected_t_s: f64,
    },
    /// A step longer than the gap limit before this sample: nothing may be interpolated or
    /// extrapolated across it.
    Gap {
        /// The accepted sample before, s.
        from_t_s: f64,
        /// This sample, s.
        to_t_s: f64,
    },
}

impl LiveNote {
    /// Whether continuity is broken here (a consumer restarts its velocity and forecasts).
    pub fn breaks_continuity(&self) -> bool {
        matches!(self, LiveNote::ClockJump { .. } | LiveNote::Gap { .. })
    }
}

/// Recent intervals kept for the medians (fixed: the repair never allocates).
const LIVE_HISTORY: usize = 15;

/// The causal counterpart of [`repair`], for a stream: each sample is judged on the samples
/// before it only (the batch repair looks up to five samples ahead; a live system cannot).
///
/// Rules, per sample (times in s, counter = the camera's frame counter when the source has
/// one):
/// - not finite → dropped; the same counter (or time) as the last kept → duplicate, dropped;
///   an older one → out of order, dropped.
/// - With a counter, once three intervals have been seen: the time the counter predicts is
///   the anchor's time + Δcounter × the median period. A time within `tolerance_fraction`
///   of the median sample interval of it agrees. One that disagrees is rebuilt from the
///   counter (the batch repair's glitch rule, decided without the witness after it) for up
///   to `max_glitch_run` samples in a row; a forward disagreement that lasts longer is the
///   clock having jumped: re-anchored and reported ([`LiveNote::ClockJump`], a continuity
///   break); a backward one cannot be placed and is dropped (the stream then looks stalled,
///   which the consumer holds on).
/// - A step longer than `max_gap_s` between kept samples is a [`LiveNote::Gap`]; nothing is
///   ever synthesised: a repair changes a time, never invents a sample.
#[derive(Debug, Clone)]
pub struct LiveRepair {
    limits: LiveLimits,
    /// The last kept sample: counter and (repaired) time.
    anchor: Option<(Option<u64>, f64)>,
    /// Recent per-count periods and sample intervals of agreeing steps (ring buffers).
    periods_s: [f64; LIVE_HISTORY],
    intervals_s: [f64; LIVE_HISTORY],
    seen: usize,
    disagree_run: usize,
}

fn median_of(v: &[f64]) -> f64 {
    let mut a = [0.0f64; LIVE_HISTORY];
    let a = &mut a[..v.len()];
    a.copy_from_slice(v);
    a.sort_unstable_by(f64::total_cmp);
    a[a.len() / 2]
}

impl LiveRepair {
    /// A repair with these limits (checked by [`LiveLimits::validate`]).
    pub fn new(limits: LiveLimits) -> Result<Self, SurrogateError> {
        limits.validate()?;
        Ok(LiveRepair {
            limits,
            anchor: None,
            periods_s: [0.0; LIVE_HISTORY],
            intervals_s: [0.0; LIVE_HISTORY],
            seen: 0,
            disagree_run: 0,
        })
    }

    /// Forgets the stream (a new tracking session).
    pub fn reset(&mut self) {
        self.anchor = None;
        self.seen = 0;
        self.disagree_run = 0;
    }

    /// The median time between kept samples, once known, s.
    pub fn sample_interval_s(&self) -> Option<f64> {
        (self.seen >= 3).then(|| median_of(&self.intervals_s[..self.seen.min(LIVE_HISTORY)]))
    }

    fn learn(&mut self, dcount: u64, dt_s: f64) {
        let k = self.seen % LIVE_HISTORY;
        self.periods_s[k] = dt_s / dcount.max(1) as f64;
        self.intervals_s[k] = dt_s;
        self.seen += 1;
    }

    fn keep(&mut self, counter: Option<u64>, t_s: f64, note: Option<LiveNote>) -> LiveOutcome {
        let gap = match self.anchor {
            Some((_, t0)) if t_s - t0 > self.limits.max_gap_s => Some(LiveNote::Gap {
                from_t_s: t0,
                to_t_s: t_s,
            }),
            _ => None,
        };
        self.anchor = Some((counter, t_s));
        LiveOutcome::Accepted {
            t_s,
            // a clock jump is reported as such even when it is also longer than a gap
            note: note.filter(|n| n.breaks_continuity()).or(gap).or(note),
        }
    }

    /// Judges the next received sample (`counter`: the source's frame counter, if any;
    /// `finite`: whether its coordinates are finite).
    pub fn push(&mut self, counter: Option<u64>, t_s: f64, finite: bool) -> LiveOutcome {
        if !finite || !t_s.is_finite() {
            return LiveOutcome::Dropped(DropReason::NotFinite);
        }
        let Some((c0, t0)) = self.anchor else {
            return self.keep(counter, t_s, None);
        };
        let (Some(c0), Some(c)) = (c0, counter) else {
            // no counter: time is the only witness
            if t_s == t0 {
                return LiveOutcome::Dropped(DropReason::Duplicate);
            }
            if t_s < t0 {
                return LiveOutcome::Dropped(DropReason::OutOfOrder);
            }
            if t_s - t0 <= self.limits.max_gap_s {
                self.learn(1, t_s - t0);
            }
            return self.keep(counter, t_s, None);
        };
        if c == c0 {
            return LiveOutcome::Dropped(DropReason::Duplicate);
        }
        if c < c0 {
            return LiveOutcome::Dropped(DropReason::OutOfOrder);
        }
        let dc = c - c0;
        if self.seen < 3 {
            // no period yet: take the time if it moves forward
            if t_s <= t0 {
                return LiveOutcome::Dropped(DropReason::Unplaceable);
            }
            if t_s - t0 <= self.limits.max_gap_s {
                self.learn(dc, t_s - t0);
            }
            return self.keep(Some(c), t_s, None);
        }
        let n = self.seen.min(LIVE_HISTORY);
        let period_s = median_of(&self.periods_s[..n]);
        let tolerance_s = self.limits.tolerance_fraction * median_of(&self.intervals_s[..n]);
        let expected_s = t0 + dc as f64 * period_s;
        if (t_s - expected_s).abs() <= tolerance_s {
            self.disagree_run = 0;
            if t_s - t0 <= self.limits.max_gap_s {
                self.learn(dc, t_s - t0);
            }
            return self.keep(Some(c), t_s, None);
        }
        self.disagree_run += 1;
        if self.disagree_run <= self.limits.max_glitch_run {
            return self.keep(
                Some(c),
                expected_s,
                Some(LiveNote::TimeRepaired {
                    recorded_t_s: t_s,
                    repaired_t_s: expected_s,
                }),
            );
        }
        if t_s > expected_s {
            self.disagree_run = 0;
            return self.keep(
                Some(c),
                t_s,
                Some(LiveNote::ClockJump {
                    t_s,
                    expected_t_s: expected_s,
                }),
            );
        }
        LiveOutcome::Dropped(DropReason::Unplaceable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A clean 10 Hz trace with a 60 Hz frame counter, times in whole ms as ExtMarker writes
    /// them.
    fn clean(n: usize) -> Vec<SurrogateSample> {
        (0..n)
            .map(|k| SurrogateSample {
                frame: Some(6 * k as u64),
                t_s: (100 * k) as f64 / 1000.0,
                pos_mm: [k as f64, 0.0, -(k as f64)],
            })
            .collect()
    }

    #[test]
    fn clean_trace_passes_untouched() {
        let s = clean(50);
        let r = repair(&s, &RepairLimits::default()).unwrap();
        assert_eq!(r.samples, s);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn the_real_two_row_glitch_is_rebuilt_from_the_frame_counter() {
        // Rows 129-133 of 201205101534-LAC-1-NO-130-6.csv (ms): 762;12700, 768;25.6,
        // 774;25.8, 781;13017, 787;13117 — two rows fall to a 500th of their time.
        let rows = [
            (750u64, 12500.0),
            (756, 12600.0),
            (762, 12700.0),
            (768, 25.6),
            (774, 25.8),
            (781, 13017.0),
            (787, 13117.0),
        ];
        let s: Vec<_> = rows
            .iter()
            .map(|&(f, t)| SurrogateSample {
                frame: Some(f),
                t_s: t / 1000.0,
                pos_mm: [0.0; 3],
            })
            .collect();
        // Two of seven rows is over the whole-trace limit; this excerpt checks the rule.
        let limits = RepairLimits {
            max_changed_fraction: 0.5,
            ..RepairLimits::default()
        };
        let r = repair(&s, &limits).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.samples.len(), 7);
        let fixed: Vec<_> = r
            .warnings
            .iter()
            .map(|w| match w {
                SurrogateWarning::TimeRepaired {
                    index, repaired_t_s, ..
                } => (*index, *repaired_t_s),
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(fixed.len(), 2);
        // 12.7 s + 6 and 12 frames at 1/60 s.
        assert_eq!(fixed[0].0, 3);
        assert!((fixed[0].1 - 12.8).abs() < 1e-6, "{fixed:?}");
        assert_eq!(fixed[1].0, 4);
        assert!((fixed[1].1 - 12.9).abs() < 1e-6, "{fixed:?}");
    }

    #[test]
    fn duplicates_out_of_order_and_gaps() {
        let mut s = clean(40);
        s.insert(10, s[9]); // duplicate frame: index 10
        s.insert(20, s[5]); // out of order: index 20
                            // A 2 s gap after the sample now at 30 (frames and times both jump: not a glitch).
        for x in &mut s[31..] {
            x.frame = x.frame.map(|f| f + 120);
            x.t_s += 2.0;
        }
        let r = repair(&s, &RepairLimits::default()).unwrap();
        assert_eq!(r.samples.len(), 40);
        assert!(r.warnings.contains(&SurrogateWarning::Dropped {
            index: 10,
            t_s: s[10].t_s,
            reason: DropReason::Duplicate
        }));
        assert!(r.warnings.contains(&SurrogateWarning::Dropped {
            index: 20,
            t_s: s[20].t_s,
            reason: DropReason::OutOfOrder
        }));
        let gaps: Vec<_> = r
            .warnings
            .iter()
            .filter(|w| matches!(w, SurrogateWarning::Gap { .. }))
            .collect();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].index(), 31);
        assert_eq!(r.segment_starts(), vec![0, 29]);
    }

    #[test]
    fn mostly_broken_is_refused_with_the_count() {
        let mut s = clean(40);
        for k in (1..40).step_by(3) {
            s[k].t_s = 0.001 * k as f64; // 13 glitches of 40
        }
        match repair(&s, &RepairLimits::default()) {
            Err(SurrogateError::MostlyBroken {
                samples: 40, changed, ..
            }) => assert_eq!(changed, 13),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_frame_counter_glitches_are_dropped_not_guessed() {
        let mut s = clean(30);
        for x in &mut s {
            x.frame = None;
        }
        let t_back = 0.0123;
        s[12].t_s = t_back; // back in time
        s[20].t_s = 9.0; // spike ahead
        let r = repair(&s, &RepairLimits::default()).unwrap();
        assert_eq!(r.samples.len(), 28);
        assert_eq!(
            r.warnings,
            vec![
                SurrogateWarning::Dropped {
                    index: 12,
                    t_s: t_back,
                    reason: DropReason::OutOfOrder
                },
                SurrogateWarning::Dropped {
                    index: 20,
                    t_s: 9.0,
                    reason: DropReason::Spike
                },
            ]
        );
    }

    proptest! {
        /// A clean monotone trace (times on a frame counter, any sampling step, occasional
        /// skipped frames) with one glitch run of 1-2 samples injected anywhere after the
        /// first sample is repaired to its original times.
        #[test]
        fn one_injected_glitch_is_repaired_exactly(
            n in 20usize..200,
            frames_per_sample in 1u64..8,
            skips in proptest::collection::vec(0u64..2, 200),
            at in 0usize..1000,
            run in 1usize..3,
            glitch_ms in 0.0f64..1e6,
            back in any::<bool>(),
        ) {
            let period_s = 1.0 / 60.0;
            let mut frame = 0u64;
            let mut s = Vec::new();
            for (k, skip) in skips.iter().enumerate().take(n) {
                if k > 0 { frame += frames_per_sample + skip; }
                s.push(SurrogateSample { frame: Some(frame), t_s: 3.0 + frame as f64 * period_s, pos_mm: [k as f64; 3] });
            }
            let at = 1 + at % (n - 1 - run);
            let mut bad = s.clone();
            for k in at..at + run {
                // Forward by a second or more, or back to a fraction of the time (as recorded).
                bad[k].t_s = if back { s[k].t_s / 500.0 + glitch_ms * 1e-9 } else { s[k].t_s + 1.0 + glitch_ms / 1000.0 };
            }
            let r = repair(&bad, &RepairLimits::default()).unwrap();
            prop_assert_eq!(r.samples.len(), n);
            for (got, want) in r.samples.iter().zip(&s) {
                // The rebuilt time is anchor + frames × the median period: equal to the
                // original up to floating-point rounding (a glitch is ≥ 1 s off).
                prop_assert!((got.t_s - want.t_s).abs() < 1e-9, "{} vs {}", got.t_s, want.t_s);
                prop_assert_eq!(got.pos_mm, want.pos_mm);
            }
            let repaired: Vec<usize> = r.warnings.iter().map(SurrogateWarning::index).collect();
            prop_assert_eq!(repaired, (at..at + run).collect::<Vec<_>>());
        }
    }

    // ---- live (causal) repair ----

    fn live_run(ts: &[(u64, f64)]) -> Vec<LiveOutcome> {
        let mut r = LiveRepair::new(LiveLimits::default()).unwrap();
        ts.iter().map(|&(c, t)| r.push(Some(c), t, true)).collect()
    }

    fn kept_t(o: &LiveOutcome) -> Option<f64> {
        match o {
            LiveOutcome::Accepted { t_s, .. } => Some(*t_s),
            LiveOutcome::Dropped(_) => None,
        }
    }

    /// The ExtMarker glitch (a time fallen to its 1/500th while the counter goes on) is
    /// rebuilt from the counter without looking ahead: the 60 Hz camera, every 6th frame.
    #[test]
    fn live_rebuilds_a_glitched_time_from_the_counter() {
        let mut ts: Vec<(u64, f64)> = (0..20).map(|k| (6 * k, 0.1 * k as f64)).collect();
        ts[10].1 /= 500.0;
        let out = live_run(&ts);
        assert!(
            matches!(out[10], LiveOutcome::Accepted { note: Some(LiveNote::TimeRepaired { .. }), t_s } if (t_s - 1.0).abs() < 1e-9),
            "{:?}",
            out[10]
        );
        // the next sample agrees again: no note, its own time
        assert_eq!(out[11], LiveOutcome::Accepted { t_s: 1.1, note: None });
    }

    #[test]
    fn live_drops_duplicates_and_out_of_order() {
        let ts = [(0, 0.0), (6, 0.1), (6, 0.1), (12, 0.2), (6, 0.1), (18, 0.3)];
        let out = live_run(&ts);
        assert_eq!(out[2], LiveOutcome::Dropped(DropReason::Duplicate));
        assert_eq!(out[4], LiveOutcome::Dropped(DropReason::OutOfOrder));
        assert_eq!(kept_t(&out[5]), Some(0.3));
    }

    /// A 1 s hole in a 10 Hz stream is reported on the first sample after it, as a gap,
    /// and nothing is filled in.
    #[test]
    fn live_reports_a_gap_and_fills_nothing() {
        let ts: Vec<(u64, f64)> = (0..30)
            .filter(|k| !(11..=20).contains(k))
            .map(|k| (6 * k, 0.1 * k as f64))
            .collect();
        let out = live_run(&ts);
        assert_eq!(out.len(), 20);
        let gaps: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                LiveOutcome::Accepted {
                    note: Some(LiveNote::Gap { from_t_s, to_t_s }),
                    ..
                } => Some((*from_t_s, *to_t_s)),
                _ => None,
            })
            .collect();
        assert_eq!(gaps.len(), 1);
        assert!(
            (gaps[0].0 - 1.0).abs() < 1e-9 && (gaps[0].1 - 2.1).abs() < 1e-9,
            "{gaps:?}"
        );
        assert!(out.iter().all(|o| kept_t(o).is_some()));
    }

    /// A clock that jumps forward by 3 s and stays is rebuilt for the glitch run, then taken
    /// as a jump (a continuity break), never as 3 s of missing samples.
    #[test]
    fn live_takes_a_lasting_forward_jump_as_a_clock_jump() {
        let ts: Vec<(u64, f64)> = (0..30)
            .map(|k| (6 * k, 0.1 * k as f64 + if k >= 15 { 3.0 } else { 0.0 }))
            .collect();
        let out = live_run(&ts);
        let run = LiveLimits::default().max_glitch_run;
        for o in &out[15..15 + run] {
            assert!(
                matches!(
                    o,
                    LiveOutcome::Accepted {
                        note: Some(LiveNote::TimeRepaired { .. }),
                        ..
                    }
                ),
                "{o:?}"
            );
        }
        assert!(
            matches!(
                out[15 + run],
                LiveOutcome::Accepted {
                    note: Some(LiveNote::ClockJump { .. }),
                    ..
                }
            ),
            "{:?}",
            out[15 + run]
        );
        assert_eq!(
            out[16 + run],
            LiveOutcome::Accepted {
                t_s: ts[16 + run].1,
                note: None
            }
        );
        // causal: the outcome of each sample is the same when the stream is cut right after it
        for cut in 1..ts.len() {
            assert_eq!(live_run(&ts[..cut]), out[..cut].to_vec(), "cut at {cut}");
        }
    }
}
