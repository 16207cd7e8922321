//! The internal–external correlation model: the tumor's position as a function of an
//! external surrogate, fitted on the CT frames seen so far and refit with each new one, as
//! clinical trackers do between sparse X-ray or CT images (CyberKnife Synchrony's model, for
//! one).
//!
//! Per patient axis, `tumor = a + b·s + c·ṡ`, where `s` is the surrogate's breathing signal
//! (its position along one fixed direction) and `ṡ` its velocity: the velocity term lets
//! inhale and exhale differ (hysteresis). Fitted by least squares over the last `window`
//! frames, with a small ridge on `b` and `c` so that a window of nearly equal samples (a
//! breath hold) does not blow the slope up. Each frame is first checked against the model
//! as it stood — the safety check: a measured tumor that disagrees with the model's
//! prediction for its acquisition instant by more than a limit means the model is stale
//! (baseline drift, a changed breathing pattern), and the caller holds until the refit model
//! agrees again.

use nalgebra::{Matrix3, Vector3};

/// One CT frame's evidence: the surrogate at the frame's acquisition instant and where the
/// tumor was measured then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorrelationSample {
    /// Surrogate breathing signal, mm.
    pub s_mm: f64,
    /// Its velocity, mm/s.
    pub v_mm_s: f64,
    /// The tumor's measured position (patient axes), mm.
    pub tumor_mm: [f64; 3],
}

/// How a new frame compares with the model as it stood before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameCheck {
    /// Fewer than the minimum frames so far: nothing to compare with.
    TooFewFrames,
    /// The model predicted the frame's tumor within the limit; the distance, mm.
    Agrees(f64),
    /// The model was off by more than the limit; the distance, mm.
    Disagrees(f64),
}

/// The correlation model.
#[derive(Debug, Clone)]
pub struct CorrelationModel {
    window: usize,
    min_frames: usize,
    limit_mm: f64,
    samples: std::collections::VecDeque<CorrelationSample>,
    /// Per axis `[a, b, c]`.
    coef: Option<[[f64; 3]; 3]>,
    residual_rms_mm: Option<f64>,
}

impl CorrelationModel {
    /// A model over the last `window` frames, usable from `min_frames` (≥ 3: three
    /// coefficients per axis), whose frames must agree within `limit_mm`.
    pub fn new(window: usize, min_frames: usize, limit_mm: f64) -> Self {
        let min_frames = min_frames.max(3);
        CorrelationModel {
            window: window.max(min_frames),
            min_frames,
            limit_mm,
            samples: Default::default(),
            coef: None,
            residual_rms_mm: None,
        }
    }

    /// The tumor position the model gives for a surrogate state (`None` before it has its
    /// minimum frames).
    pub fn predict(&self, s_mm: f64, v_mm_s: f64) -> Option<[f64; 3]> {
        let c = self.coef?;
        Some(c.map(|[a, b, cv]| a + b * s_mm + cv * v_mm_s))
    }

    /// Root mean square residual of the current fit over its window, mm (3-D).
    pub fn residual_rms_mm(&self) -> Option<f64> {
        self.residual_rms_mm
    }

    /// Frames in the window.
    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// Checks a new frame against the model as it stands, then adds it and refits.
    pub fn add_frame(&mut self, sample: CorrelationSample) -> FrameCheck {
        let check = match self.predict(sample.s_mm, sample.v_mm_s) {
            None => FrameCheck::TooFewFrames,
            Some(p) => {
                let d = (0..3)
                    .map(|i| (p[i] - sample.tumor_mm[i]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if d <= self.limit_mm {
                    FrameCheck::Agrees(d)
                } else {
                    FrameCheck::Disagrees(d)
                }
            }
        };
        self.samples.push_back(sample);
        while self.samples.len() > self.window {
            self.samples.pop_front();
        }
        self.refit();
        check
    }

    /// Forgets every frame (after a hold the operator restarts tracking from scratch).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.coef = None;
        self.residual_rms_mm = None;
    }

    fn refit(&mut self) {
        let n = self.samples.len();
        if n < self.min_frames {
            self.coef = None;
            self.residual_rms_mm = None;
            return;
        }
        // centred regressors: the intercept is then the mean, and the ridge acts on slopes
        let mean = |f: &dyn Fn(&CorrelationSample) -> f64| self.samples.iter().map(f).sum::<f64>() / n as f64;
        let (ms, mv) = (mean(&|x| x.s_mm), mean(&|x| x.v_mm_s));
        let mut g = Matrix3::<f64>::zeros();
        let mut rhs = [Vector3::<f64>::zeros(); 3];
        let mut mt = [0.0; 3];
        for (i, m) in mt.iter_mut().enumerate() {
            *m = mean(&|x| x.tumor_mm[i]);
        }
        for x in &self.samples {
            let r = Vector3::new(1.0, x.s_mm - ms, x.v_mm_s - mv);
            g += r * r.transpose();
            for i in 0..3 {
                rhs[i] += r * (x.tumor_mm[i] - mt[i]);
            }
        }
        // ridge relative to the regressors' own spread, a small fraction of it
        let ridge = 1e-3 * (g[(1, 1)] + g[(2, 2)]).max(1e-9) / 2.0;
        g[(1, 1)] += ridge;
        g[(2, 2)] += ridge;
        let Some(chol) = g.cholesky() else {
            self.coef = None;
            return;
        };
        let mut coef = [[0.0; 3]; 3];
        for i in 0..3 {
            let w = chol.solve(&rhs[i]);
            // back to uncentred: tumor = mt + w0 + w1 (s − ms) + w2 (v − mv)
            coef[i] = [mt[i] + w[0] - w[1] * ms - w[2] * mv, w[1], w[2]];
        }
        self.coef = Some(coef);
        let sq: f64 = self
            .samples
            .iter()
            .map(|x| {
                (0..3)
                    .map(|i| {
                        let [a, b, c] = coef[i];
                        (a + b * x.s_mm + c * x.v_mm_s - x.tumor_mm[i]).powi(2)
                    })
                    .sum::<f64>()
            })
            .sum();
        self.residual_rms_mm = Some((sq / n as f64).sqrt());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tumor that follows the surrogate with hysteresis (a velocity term) is recovered
    /// exactly; a 5 mm baseline shift of the tumor alone is caught by the next frame.
    #[test]
    fn recovers_position_and_hysteresis_and_catches_a_baseline_shift() {
        let mut m = CorrelationModel::new(12, 4, 1.0);
        let truth = |s: f64, v: f64| [0.5 + 0.8 * s + 0.1 * v, -0.2 * s, 2.0 + 0.6 * s - 0.05 * v];
        let mut last = FrameCheck::TooFewFrames;
        for k in 0..20 {
            let t = k as f64 * 0.9;
            let (s, v) = (5.0 * (t * 1.3).sin(), 5.0 * 1.3 * (t * 1.3).cos());
            last = m.add_frame(CorrelationSample {
                s_mm: s,
                v_mm_s: v,
                tumor_mm: truth(s, v),
            });
        }
        // the small ridge on the slopes costs a few µm
        assert!(matches!(last, FrameCheck::Agrees(d) if d < 0.01), "{last:?}");
        let p = m.predict(3.0, -2.0).unwrap();
        let want = truth(3.0, -2.0);
        for i in 0..3 {
            assert!((p[i] - want[i]).abs() < 0.01, "{p:?} vs {want:?}");
        }
        assert!(m.residual_rms_mm().unwrap() < 0.01);
        // the patient settles: the tumor moves 5 mm with the surrogate unchanged
        let (s, v) = (1.0, 0.5);
        let mut shifted = truth(s, v);
        shifted[0] += 5.0;
        let check = m.add_frame(CorrelationSample {
            s_mm: s,
            v_mm_s: v,
            tumor_mm: shifted,
        });
        assert!(
            matches!(check, FrameCheck::Disagrees(d) if (d - 5.0).abs() < 0.01),
            "{check:?}"
        );
    }

    #[test]
    fn too_few_frames_give_no_model() {
        let mut m = CorrelationModel::new(12, 4, 1.0);
        for k in 0..3 {
            let c = m.add_frame(CorrelationSample {
                s_mm: k as f64,
                v_mm_s: 0.0,
                tumor_mm: [k as f64; 3],
            });
            assert_eq!(c, FrameCheck::TooFewFrames);
            assert!(m.predict(0.0, 0.0).is_none());
        }
    }
}
