//! The tumor's motion: a surface marker's breathing signal (its projection on the principal
//! axis of the marker positions) scaled per patient axis into tumor displacement
//! ([`TumorMotionModel`]), and [`displacements`], which reads a trace file into one
//! displacement per frame.

use std::path::Path;

use super::trace::{read_csv_trace, read_extmarker, MotionError, Trace};

/// Which tumor position the displacements are measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MotionReference {
    /// The time-weighted mean position (mid-position planning): displacements average 0
    /// before drift.
    MidPosition,
    /// End-exhale: the low end of the breathing signal is displacement 0.
    EndExhale,
}

/// Maps a breathing signal to tumor displacement in patient LPS.
#[derive(Debug, Clone, PartialEq)]
pub struct TumorMotionModel {
    /// End-inhale minus end-exhale tumor position, mm, LPS `[x (L), y (P), z (S)]`: its
    /// absolute components are the peak-to-peak amplitudes per axis. Default
    /// `[1, −3, −10]`: typical lung tumor motion (about 10 mm superior–inferior, 3 mm
    /// anterior–posterior, 1 mm left–right; on inhale the tumor moves inferior and
    /// anterior).
    pub inhale_shift_mm: [f64; 3],
    /// Baseline drift, mm per minute, LPS, added linearly from the first sample.
    pub drift_mm_per_min: [f64; 3],
    /// Zero of the displacements.
    pub reference: MotionReference,
}

impl Default for TumorMotionModel {
    fn default() -> Self {
        TumorMotionModel {
            inhale_shift_mm: [1.0, -3.0, -10.0],
            drift_mm_per_min: [0.0; 3],
            reference: MotionReference::MidPosition,
        }
    }
}

impl TumorMotionModel {
    /// Tumor displacement per sample of `trace`, mm LPS. The breathing signal is scaled so
    /// its full peak-to-peak span gives exactly [`Self::inhale_shift_mm`].
    pub fn displacements_mm(&self, trace: &Trace) -> Result<Vec<[f64; 3]>, MotionError> {
        for (name, v) in [
            ("inhale_shift_mm", self.inhale_shift_mm),
            ("drift_mm_per_min", self.drift_mm_per_min),
        ] {
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(MotionError::BadParameter {
                    name,
                    value: *bad,
                    reason: "must be finite",
                });
            }
        }
        let s = self.breathing_signal(trace)?;
        let t0 = trace.t_s[0];
        Ok(s.iter()
            .zip(&trace.t_s)
            .map(|(f, t)| {
                let minutes = (t - t0) / 60.0;
                std::array::from_fn(|a| f * self.inhale_shift_mm[a] + self.drift_mm_per_min[a] * minutes)
            })
            .collect())
    }

    /// The normalized breathing phase per sample: 0 at the end-exhale extreme, 1 at the
    /// end-inhale extreme, minus the mean for [`MotionReference::MidPosition`].
    pub fn breathing_signal(&self, trace: &Trace) -> Result<Vec<f64>, MotionError> {
        let s = trace.breathing_signal_mm()?;
        let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = hi - lo;
        if span.is_nan() || span <= 1e-9 {
            return Err(MotionError::BadParameter {
                name: "trace peak-to-peak",
                value: span,
                reason: "the trace does not move",
            });
        }
        let mut f: Vec<f64> = s.iter().map(|v| (v - lo) / span).collect();
        if self.reference == MotionReference::MidPosition {
            let mean = time_weighted_mean(&trace.t_s, &f);
            f.iter_mut().for_each(|v| *v -= mean);
        }
        Ok(f)
    }
}

/// Trapezoidal time average, so irregular sampling does not bias the mid-position.
fn time_weighted_mean(t: &[f64], v: &[f64]) -> f64 {
    let span = t[t.len() - 1] - t[0];
    let area: f64 = t
        .windows(2)
        .zip(v.windows(2))
        .map(|(tw, vw)| (tw[1] - tw[0]) * 0.5 * (vw[0] + vw[1]))
        .sum();
    area / span
}

/// Tumor displacements at `rate_hz` from a trace file: the ExtMarker format (`;`-separated)
/// goes through the breathing model (surface marker → tumor); a plain `t_s,x_mm,y_mm,z_mm`
/// CSV is taken as the tumor's own displacement. Returns the frame times (s) and one
/// displacement (mm, LPS) per frame, the first `frames` of them when given.
pub fn displacements(
    path: &Path,
    rate_hz: f64,
    model: &TumorMotionModel,
    frames: Option<usize>,
) -> Result<(Vec<f64>, Vec<[f64; 3]>), MotionError> {
    let head = std::fs::read_to_string(path).map_err(|source| MotionError::Io {
        path: path.to_owned(),
        source,
    })?;
    let extmarker = head.lines().next().is_some_and(|l| l.contains(';'));
    let trace: Trace = if extmarker {
        read_extmarker(path)?
    } else {
        read_csv_trace(path)?
    };
    let trace = trace.resample(rate_hz)?;
    let mut d = if extmarker {
        model.displacements_mm(&trace)?
    } else {
        trace.pos_mm.clone()
    };
    let mut t = trace.t_s.clone();
    if let Some(n) = frames {
        d.truncate(n);
        t.truncate(n);
    }
    Ok((t, d))
}
