//! The published evaluation protocol of breathing-motion prediction (Pohl et al., Comput
//! Methods Programs Biomed 2022; arXiv 2403.01607), so that figures compare:
//!
//! - one recording session = several markers × 3 coordinates, positions relative to the
//!   first sample, resampled to 10 Hz (the caller does this: [`Session`] holds it);
//! - the predictor runs online over the whole session from its first sample; 0–30 s are the
//!   training part, 30–60 s the tuning part (where parameters may be chosen), and only
//!   forecasts whose target lies from 60 s to the end are scored;
//! - the error of a forecast is the 3-D Euclidean distance per marker; RMSE is the root mean
//!   of its square over markers and scored targets; nRMSE is the root of the summed squared
//!   errors over the root of the summed squared deviations of each marker from its own mean
//!   over the scored part;
//! - figures are averaged over horizons of 1–21 samples (0.1–2.1 s).

use super::OnlinePredictor;

/// A session's samples: `markers` × 3 coordinates per sample, uniformly sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Markers (each 3 coordinates, mm).
    pub markers: usize,
    /// Samples, each `3 × markers` values, mm.
    pub samples: Vec<Vec<f64>>,
}

/// The figures of one horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizonScore {
    /// Horizon, samples.
    pub horizon: usize,
    /// Root mean squared 3-D error per marker, mm.
    pub rmse_mm: f64,
    /// Normalised RMSE (see the module doc).
    pub nrmse: f64,
}

/// The protocol's scoring start, samples at 10 Hz (60 s).
pub const SCORE_FROM: usize = 600;
/// The protocol's tuning part, samples at 10 Hz: targets from 30 s up to the scoring start.
pub const TUNE_FROM: usize = 300;
/// The protocol's horizons, samples at 10 Hz.
pub const HORIZONS: std::ops::RangeInclusive<usize> = 1..=21;

/// Scores forecasts: `preds[k]` is the forecast of `samples[k + horizon]` made at `k`;
/// targets `score_from..` are scored. `None` when nothing is scored or the scored part does
/// not move (nRMSE undefined).
pub fn score(
    session: &Session,
    preds: &[Vec<f64>],
    horizon: usize,
    score_from: usize,
) -> Option<HorizonScore> {
    score_between(session, preds, horizon, score_from, session.samples.len())
}

/// As [`score`], for the targets `score_from..score_to` only (the tuning part:
/// [`TUNE_FROM`]`..`[`SCORE_FROM`]); the deviations are taken from the means over that part.
pub fn score_between(
    session: &Session,
    preds: &[Vec<f64>],
    horizon: usize,
    score_from: usize,
    score_to: usize,
) -> Option<HorizonScore> {
    let n = session.samples.len().min(preds.len() + horizon).min(score_to);
    let from = score_from.max(horizon);
    if from >= n {
        return None;
    }
    let m = session.markers;
    let count = (n - from) as f64;
    let mut se = 0.0;
    let mut dev = 0.0;
    for mk in 0..m {
        let mut mean = [0.0; 3];
        for y in &session.samples[from..n] {
            for c in 0..3 {
                mean[c] += y[3 * mk + c] / count;
            }
        }
        for j in from..n {
            let (y, p) = (&session.samples[j], &preds[j - horizon]);
            for c in 0..3 {
                se += (y[3 * mk + c] - p[3 * mk + c]).powi(2);
                dev += (y[3 * mk + c] - mean[c]).powi(2);
            }
        }
    }
    (dev > 0.0).then(|| HorizonScore {
        horizon,
        rmse_mm: (se / (count * m as f64)).sqrt(),
        nrmse: se.sqrt() / dev.sqrt(),
    })
}

/// Runs a fresh predictor from `make(dim, horizon)` online over the session and scores it.
pub fn run<P: OnlinePredictor>(
    session: &Session,
    horizon: usize,
    score_from: usize,
    make: impl Fn(usize, usize) -> P,
) -> Option<HorizonScore> {
    score(session, &forecasts(session, horizon, make), horizon, score_from)
}

/// Runs a fresh predictor online over the session once and scores it on the tuning part
/// ([`TUNE_FROM`]`..`[`SCORE_FROM`]) and on the scored part ([`SCORE_FROM`] to the end):
/// `(tuning, scored)`.
pub fn run_parts<P: OnlinePredictor>(
    session: &Session,
    horizon: usize,
    make: impl Fn(usize, usize) -> P,
) -> (Option<HorizonScore>, Option<HorizonScore>) {
    let preds = forecasts(session, horizon, make);
    (
        score_between(session, &preds, horizon, TUNE_FROM, SCORE_FROM),
        score(session, &preds, horizon, SCORE_FROM),
    )
}

/// The forecast made at every sample of the session, in order.
fn forecasts<P: OnlinePredictor>(
    session: &Session,
    horizon: usize,
    make: impl Fn(usize, usize) -> P,
) -> Vec<Vec<f64>> {
    let dim = 3 * session.markers;
    let mut p = make(dim, horizon);
    let mut preds = Vec::with_capacity(session.samples.len());
    let mut out = vec![0.0; dim];
    for s in &session.samples {
        p.step(s, &mut out);
        preds.push(out.clone());
    }
    preds
}

#[cfg(test)]
mod tests {
    use super::super::Hold;
    use super::*;

    #[test]
    fn hold_on_a_sine_scores_the_analytic_error() {
        // Two markers moving A·sin(2πk/100) (10 s period at 10 Hz) along different axes.
        // Holding errs by A·(sin(φ+ωh) − sin φ), whose mean square over whole periods is
        // A²(1 − cos ωh); the deviation's is A²/2. So RMSE = A·√(1 − cos ωh) (averaged over
        // both markers, which share it) and nRMSE = 2|sin(ωh/2)|.
        let amp = [5.0, 2.0];
        let w = std::f64::consts::TAU / 100.0;
        let samples: Vec<Vec<f64>> = (0..900)
            .map(|k| {
                let s = (w * k as f64).sin();
                vec![amp[0] * s, 0.0, 0.0, 0.0, 0.0, amp[1] * s]
            })
            .collect();
        let session = Session { markers: 2, samples };
        for h in [1, 5, 21] {
            let r = run(&session, h, 600, Hold::new).unwrap();
            let hw = w * h as f64;
            let rms_amp = ((amp[0] * amp[0] + amp[1] * amp[1]) / 2.0).sqrt();
            assert!((r.rmse_mm - rms_amp * (1.0 - hw.cos()).sqrt()).abs() < 1e-9);
            assert!((r.nrmse - 2.0 * (hw / 2.0).sin()).abs() < 1e-9, "{r:?}");
            // The tuning part (30–60 s) is 3 whole periods too: the same analytic figures.
            let (tune, scored) = run_parts(&session, h, Hold::new);
            let (tune, scored) = (tune.unwrap(), scored.unwrap());
            assert_eq!(scored, r);
            assert!((tune.nrmse - 2.0 * (hw / 2.0).sin()).abs() < 1e-9, "{tune:?}");
            assert!((tune.rmse_mm - rms_amp * (1.0 - hw.cos()).sqrt()).abs() < 1e-9);
        }
    }

    #[test]
    fn the_tuning_part_sees_only_its_targets() {
        // A forecast that is exact except for targets from 60 s on: the tuning part scores 0,
        // the scored part does not.
        let samples: Vec<Vec<f64>> = (0..900).map(|k| vec![(k as f64 * 0.2).sin(), 0.0, 0.0]).collect();
        let session = Session { markers: 1, samples };
        let h = 4;
        let preds: Vec<Vec<f64>> = (0..900)
            .map(|k| {
                let mut p = session.samples[(k + h).min(899)].clone();
                if k + h >= SCORE_FROM {
                    p[0] += 1.0;
                }
                p
            })
            .collect();
        let tune = score_between(&session, &preds, h, TUNE_FROM, SCORE_FROM).unwrap();
        assert_eq!(tune.nrmse, 0.0);
        let scored = score(&session, &preds, h, SCORE_FROM).unwrap();
        assert!((scored.rmse_mm - 1.0).abs() < 1e-12, "{scored:?}");
    }
}
