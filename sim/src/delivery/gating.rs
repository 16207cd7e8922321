//! Respiratory gating: the beam permit a motion signal and an amplitude window give.
//!
//! The signal (a tumor displacement component, or an external surrogate) is taken as
//! piecewise linear between its samples; the beam may be on while the amplitude lies in
//! the window `[lo, hi]` mm, and the crossing times are where the linear pieces meet the
//! window's bounds. Outside the signal's time span there is no permission (nothing is
//! known there). The duty cycle is the permitted fraction of that span.
//!
//! Simplified: the permit follows the signal itself, with no gating latency and no
//! prediction; a real gate acts on a measured surrogate some tens of ms late.

use serde::{Deserialize, Serialize};

use super::timeline::{BeamPermit, TimelineError};

/// Which amplitudes let the beam on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum GatingWindow {
    /// The lowest `fraction` of the signal's amplitude range, `[min, min + fraction·(max −
    /// min)]`: end-exhale when larger amplitude is further inhaled.
    LowestFraction(f64),
    /// An explicit amplitude band `[lo_mm, hi_mm]`.
    Band {
        /// Lower bound, mm.
        lo_mm: f64,
        /// Upper bound, mm.
        hi_mm: f64,
    },
}

impl GatingWindow {
    /// The lowest `fraction` (0 < fraction ≤ 1) of the amplitude range.
    pub fn lowest_fraction(fraction: f64) -> Self {
        GatingWindow::LowestFraction(fraction)
    }

    /// The amplitude band `[lo_mm, hi_mm]`.
    pub fn band(lo_mm: f64, hi_mm: f64) -> Self {
        GatingWindow::Band { lo_mm, hi_mm }
    }
}

/// A sampled motion amplitude.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MotionSignal {
    times_s: Vec<f64>,
    amplitude_mm: Vec<f64>,
}

/// Why a gate cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GatingError {
    /// The signal is malformed.
    #[error("motion signal: {0}")]
    BadSignal(String),
    /// The window is malformed.
    #[error("gating window: {0}")]
    BadWindow(String),
    /// The permit could not be built (cannot happen for a valid signal; kept typed).
    #[error(transparent)]
    Permit(#[from] TimelineError),
}

impl MotionSignal {
    /// A signal of `times_s` (finite, strictly increasing, at least two) and as many finite
    /// `amplitude_mm`.
    pub fn new(times_s: Vec<f64>, amplitude_mm: Vec<f64>) -> Result<Self, GatingError> {
        if times_s.len() != amplitude_mm.len() {
            return Err(GatingError::BadSignal(format!(
                "{} times but {} amplitudes",
                times_s.len(),
                amplitude_mm.len()
            )));
        }
        if times_s.len() < 2 {
            return Err(GatingError::BadSignal(format!(
                "needs at least two samples, got {}",
                times_s.len()
            )));
        }
        if let Some(k) = times_s.iter().position(|t| !t.is_finite()) {
            return Err(GatingError::BadSignal(format!("time {k} is {}", times_s[k])));
        }
        if let Some(k) = amplitude_mm.iter().position(|a| !a.is_finite()) {
            return Err(GatingError::BadSignal(format!(
                "amplitude {k} is {}",
                amplitude_mm[k]
            )));
        }
        if let Some(k) = times_s.windows(2).position(|w| w[1] <= w[0]) {
            return Err(GatingError::BadSignal(format!(
                "times must increase: sample {} at {} s follows {} s",
                k + 1,
                times_s[k + 1],
                times_s[k]
            )));
        }
        Ok(MotionSignal {
            times_s,
            amplitude_mm,
        })
    }

    /// Sample times, s.
    pub fn times_s(&self) -> &[f64] {
        &self.times_s
    }

    /// Amplitudes, mm.
    pub fn amplitude_mm(&self) -> &[f64] {
        &self.amplitude_mm
    }
}

/// A gate: the permit and what it costs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// When the beam may be on.
    pub permit: BeamPermit,
    /// The amplitude band actually used, `[lo, hi]` mm.
    pub window_mm: [f64; 2],
    /// Permitted time over the signal's time span.
    pub duty_cycle: f64,
}

/// The beam permit of `signal` under `window`.
pub fn gate(signal: &MotionSignal, window: GatingWindow) -> Result<Gate, GatingError> {
    let a = &signal.amplitude_mm;
    let t = &signal.times_s;
    let (lo, hi) = match window {
        GatingWindow::LowestFraction(f) => {
            if !(f.is_finite() && f > 0.0 && f <= 1.0) {
                return Err(GatingError::BadWindow(format!(
                    "fraction must be in (0, 1], got {f}"
                )));
            }
            let min = a.iter().copied().fold(f64::INFINITY, f64::min);
            let max = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min, min + f * (max - min))
        }
        GatingWindow::Band { lo_mm, hi_mm } => {
            if !(lo_mm.is_finite() && hi_mm.is_finite() && lo_mm <= hi_mm) {
                return Err(GatingError::BadWindow(format!(
                    "band needs finite lo ≤ hi, got [{lo_mm}, {hi_mm}]"
                )));
            }
            (lo_mm, hi_mm)
        }
    };
    let mut intervals: Vec<[f64; 2]> = Vec::new();
    for k in 0..t.len() - 1 {
        if let Some([s0, s1]) = segment_inside(t[k], t[k + 1], a[k], a[k + 1], lo, hi) {
            match intervals.last_mut() {
                // pieces that meet at a sample are one gate opening
                Some(last) if s0 <= last[1] => last[1] = last[1].max(s1),
                _ if s1 > s0 => intervals.push([s0, s1]),
                _ => {}
            }
        }
    }
    let span_s = t[t.len() - 1] - t[0];
    let on_s: f64 = intervals.iter().map(|iv| iv[1] - iv[0]).sum();
    Ok(Gate {
        permit: BeamPermit::intervals(intervals)?,
        window_mm: [lo, hi],
        duty_cycle: on_s / span_s,
    })
}

/// The part of `[t0, t1]` where the line from `(t0, a0)` to `(t1, a1)` lies in `[lo, hi]`
/// (one interval: a line meets a band once), or `None`.
fn segment_inside(t0: f64, t1: f64, a0: f64, a1: f64, lo: f64, hi: f64) -> Option<[f64; 2]> {
    let dt = t1 - t0;
    let da = a1 - a0;
    if da == 0.0 {
        return (a0 >= lo && a0 <= hi).then_some([t0, t1]);
    }
    // parameter u ∈ [0, 1] where the amplitude crosses each bound
    let u_lo = (lo - a0) / da;
    let u_hi = (hi - a0) / da;
    let (u_in, u_out) = if da > 0.0 { (u_lo, u_hi) } else { (u_hi, u_lo) };
    let u0 = u_in.max(0.0);
    let u1 = u_out.min(1.0);
    (u0 <= u1).then_some([t0 + u0 * dt, t0 + u1 * dt])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    #[test]
    fn triangle_wave_duty_cycle_equals_the_window_fraction() {
        // a symmetric triangle spends equal time at every amplitude: duty = fraction exactly
        let times: Vec<f64> = (0..=8).map(|k| k as f64 * 0.5).collect();
        let amps: Vec<f64> = (0..=8).map(|k| if k % 2 == 0 { 0.0 } else { 10.0 }).collect();
        let sig = MotionSignal::new(times, amps).unwrap();
        let g = gate(&sig, GatingWindow::lowest_fraction(0.3)).unwrap();
        assert!((g.duty_cycle - 0.3).abs() < 1e-12, "{}", g.duty_cycle);
        assert_eq!(g.window_mm[0], 0.0);
        assert!((g.window_mm[1] - 3.0).abs() < 1e-12);
        // openings around the troughs at t = 0, 1, 2, 3, 4: rising edge reaches 3 mm at 0.15 s
        let iv = g.permit.intervals_s();
        assert_eq!(iv.len(), 5);
        assert!((iv[0][0] - 0.0).abs() < 1e-12 && (iv[0][1] - 0.15).abs() < 1e-12);
        assert!((iv[1][0] - 0.85).abs() < 1e-12 && (iv[1][1] - 1.15).abs() < 1e-12);
        assert!((iv[4][0] - 3.85).abs() < 1e-12 && (iv[4][1] - 4.0).abs() < 1e-12);
    }

    #[test]
    fn sine_duty_cycle_matches_the_arccos_formula() {
        // a(t) = A sin(2πt/T) over whole periods: the time with a ≤ min + f·(max − min)
        // = A(2f − 1) is the fraction arccos(1 − 2f)/π of the time
        let period_s = 4.0;
        let n = 4000;
        let times: Vec<f64> = (0..=n).map(|k| k as f64 * 5.0 * period_s / n as f64).collect();
        let amps: Vec<f64> = times
            .iter()
            .map(|t| 8.0 * (2.0 * PI * t / period_s).sin())
            .collect();
        let sig = MotionSignal::new(times, amps).unwrap();
        for f in [0.1, 0.3, 0.5, 0.8] {
            let g = gate(&sig, GatingWindow::lowest_fraction(f)).unwrap();
            let analytic = (1.0 - 2.0 * f).acos() / PI;
            assert!(
                (g.duty_cycle - analytic).abs() < 1e-3,
                "f {f}: {} vs {analytic}",
                g.duty_cycle
            );
        }
        let g = gate(&sig, GatingWindow::lowest_fraction(0.3)).unwrap();
        assert_eq!(g.permit.intervals_s().len(), 5, "one opening per period");
    }

    #[test]
    fn band_window_and_crossing_times_interpolate_linearly() {
        let sig = MotionSignal::new(vec![0.0, 1.0, 2.0], vec![0.0, 4.0, 0.0]).unwrap();
        let g = gate(&sig, GatingWindow::band(1.0, 2.0)).unwrap();
        assert_eq!(g.permit.intervals_s(), &[[0.25, 0.5], [1.5, 1.75]]);
        assert!((g.duty_cycle - 0.25).abs() < 1e-12);
        // a band the signal never enters: no permission at all
        let g = gate(&sig, GatingWindow::band(5.0, 6.0)).unwrap();
        assert!(g.permit.intervals_s().is_empty());
        assert_eq!(g.duty_cycle, 0.0);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            MotionSignal::new(vec![0.0], vec![0.0]),
            Err(GatingError::BadSignal(_))
        ));
        assert!(matches!(
            MotionSignal::new(vec![0.0, 0.0], vec![0.0, 1.0]),
            Err(GatingError::BadSignal(_))
        ));
        assert!(matches!(
            MotionSignal::new(vec![0.0, 1.0], vec![0.0, f64::NAN]),
            Err(GatingError::BadSignal(_))
        ));
        let sig = MotionSignal::new(vec![0.0, 1.0], vec![0.0, 1.0]).unwrap();
        assert!(matches!(
            gate(&sig, GatingWindow::lowest_fraction(0.0)),
            Err(GatingError::BadWindow(_))
        ));
        assert!(matches!(
            gate(&sig, GatingWindow::band(2.0, 1.0)),
            Err(GatingError::BadWindow(_))
        ));
    }
}
