//! A designed relation between the external surrogate and the tumor: the tumor follows the
//! surrogate's breathing signal with its own amplitude per axis, a phase lag, hysteresis (a
//! different path in inhale and exhale), an internal baseline drift the surrogate does not
//! show, and occasional irregular breaths in which the tumor moves more than the surrogate
//! says. The other way to drive a tumor ([`super::surrogate::simulate`]) takes it from another
//! marker of the same recording, where the relation is what the patient did; this one puts
//! each known failure of a correlation model in by hand, with the truth known.
//!
//! The default values are of the size the literature reports; the papers were not at hand to
//! check the figures against, so they are stated as assumptions:
//! - amplitude (peak to peak) 10 mm superior–inferior, 4 mm anterior–posterior, 2 mm
//!   left–right: lung tumors move most along SI and least along LR (Seppenwoolde et al., Int J
//!   Radiat Oncol Biol Phys 53 (2002) 822, lower-lobe tumors the most);
//! - the tumor 0.2 s behind the surrogate: internal–external phase differences of a few
//!   tenths of a second are commonly reported (e.g. Hoisak et al. 2004, Ionascu et al. 2007);
//! - hysteresis 2 mm along AP: Seppenwoolde et al. saw 1–5 mm loops in about half the tumors;
//! - baseline drift 1 mm/min SI and 0.5 mm/min AP inside the patient that the chest marker
//!   does not show: drifts of a few mm over a fraction, the reason every new CT frame checks
//!   the model;
//! - one breath in ten with the tumor's excursion 1.5 times its usual against the same
//!   surrogate excursion (an irregular, deeper internal breath).

use crate::rng::SplitMix64;

/// How the tumor follows the surrogate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TumorFromSurrogate {
    /// Tumor peak-to-peak excursion per axis (patient LPS x, y, z), mm, for the surrogate's
    /// peak-to-peak excursion over the first 30 s (2nd–98th percentile).
    pub amplitude_mm: [f64; 3],
    /// The tumor follows the surrogate this much later, s (≥ 0).
    pub phase_lag_s: f64,
    /// Full width of the inhale–exhale loop per axis, mm: the tumor is `±width/2` off its
    /// mid path in proportion to the surrogate's normalised velocity.
    pub hysteresis_mm: [f64; 3],
    /// Internal baseline drift, mm per minute per axis, from the first sample.
    pub drift_mm_per_min: [f64; 3],
    /// Share of breaths (0–1) in which the tumor's excursion is scaled by
    /// `irregular_amplitude_ratio`.
    pub irregular_fraction: f64,
    /// The scale of an irregular breath's excursion.
    pub irregular_amplitude_ratio: f64,
    /// Which breaths are irregular.
    pub seed: u64,
}

impl Default for TumorFromSurrogate {
    /// The module's documented values.
    fn default() -> Self {
        TumorFromSurrogate {
            amplitude_mm: [2.0, 4.0, 10.0],
            phase_lag_s: 0.2,
            hysteresis_mm: [0.0, 2.0, 0.0],
            drift_mm_per_min: [0.0, 0.5, 1.0],
            irregular_fraction: 0.1,
            irregular_amplitude_ratio: 1.5,
            seed: 1,
        }
    }
}

/// A relation that cannot be used, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} = {value}: {reason}")]
pub struct RelationError {
    /// The parameter.
    pub name: &'static str,
    /// Its value.
    pub value: f64,
    /// Why.
    pub reason: &'static str,
}

impl TumorFromSurrogate {
    /// Refuses values that make no motion or no sense.
    pub fn validate(&self) -> Result<(), RelationError> {
        let bad = |name, value: f64, reason| Err(RelationError { name, value, reason });
        for (name, v) in [
            ("amplitude_mm", self.amplitude_mm),
            ("hysteresis_mm", self.hysteresis_mm),
            ("drift_mm_per_min", self.drift_mm_per_min),
        ] {
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return bad(name, *x, "must be finite");
            }
        }
        if !(self.phase_lag_s >= 0.0 && self.phase_lag_s <= 5.0) {
            return bad("phase_lag_s", self.phase_lag_s, "must be in [0, 5] s");
        }
        if !(0.0..=1.0).contains(&self.irregular_fraction) {
            return bad("irregular_fraction", self.irregular_fraction, "must be in [0, 1]");
        }
        if !(self.irregular_amplitude_ratio.is_finite() && self.irregular_amplitude_ratio >= 0.0) {
            return bad(
                "irregular_amplitude_ratio",
                self.irregular_amplitude_ratio,
                "must be finite and ≥ 0",
            );
        }
        Ok(())
    }

    /// The tumor's displacement (mm, LPS) at every sample of the surrogate's breathing signal
    /// `signal_mm` (one value per `dt_s`; its first 30 s set the normalisation); `None` when
    /// the signal does not move over those 30 s.
    pub fn tumor_mm(&self, signal_mm: &[f64], dt_s: f64) -> Result<Option<Vec<[f64; 3]>>, RelationError> {
        self.validate()?;
        if !(dt_s > 0.0 && dt_s.is_finite()) {
            return Err(RelationError {
                name: "dt_s",
                value: dt_s,
                reason: "must be finite and > 0",
            });
        }
        let n = signal_mm.len();
        let head = &signal_mm[..n.min((30.0 / dt_s).round() as usize).max(1)];
        let mut sorted = head.to_vec();
        sorted.sort_by(f64::total_cmp);
        let pick = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let excursion = pick(0.98) - pick(0.02);
        if excursion.is_nan() || excursion <= 1e-6 {
            return Ok(None);
        }
        let mid = 0.5 * (pick(0.98) + pick(0.02));
        let u: Vec<f64> = signal_mm.iter().map(|s| (s - mid) / excursion).collect();
        // normalised velocity: ±1 at the head's 98th percentile speed
        let du: Vec<f64> = (0..n)
            .map(|k| {
                if k >= 2 {
                    (u[k] - u[k - 2]) / (2.0 * dt_s)
                } else {
                    0.0
                }
            })
            .collect();
        let mut speeds: Vec<f64> = du[..head.len()].iter().map(|v| v.abs()).collect();
        speeds.sort_by(f64::total_cmp);
        let vmax = speeds[((speeds.len() - 1) as f64 * 0.98).round() as usize].max(1e-9);
        // breaths start where the signal crosses its middle upwards; each breath is irregular
        // or not by the seeded generator, in order
        let mut rng = SplitMix64::new(self.seed);
        let mut factor = 1.0;
        let lag = (self.phase_lag_s / dt_s).round() as usize;
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            if k >= 1 && u[k - 1] < 0.0 && u[k] >= 0.0 {
                factor = if rng.next_f64() < self.irregular_fraction {
                    self.irregular_amplitude_ratio
                } else {
                    1.0
                };
            }
            let j = k.saturating_sub(lag);
            let w = (du[j] / vmax).clamp(-1.0, 1.0);
            let minutes = k as f64 * dt_s / 60.0;
            out.push(std::array::from_fn(|a| {
                factor * self.amplitude_mm[a] * u[j]
                    + 0.5 * self.hysteresis_mm[a] * w
                    + self.drift_mm_per_min[a] * minutes
            }));
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, amplitude_mm: f64) -> Vec<f64> {
        (0..n)
            .map(|k| amplitude_mm * (2.0 * std::f64::consts::PI * k as f64 * 0.1 / 4.0).sin())
            .collect()
    }

    #[test]
    fn a_plain_relation_scales_the_signal_to_the_given_excursion() {
        let r = TumorFromSurrogate {
            phase_lag_s: 0.0,
            hysteresis_mm: [0.0; 3],
            drift_mm_per_min: [0.0; 3],
            irregular_fraction: 0.0,
            ..TumorFromSurrogate::default()
        };
        let t = r.tumor_mm(&sine(1200, 7.0), 0.1).unwrap().unwrap();
        for a in 0..3 {
            let (lo, hi) = t
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p[a]), h.max(p[a])));
            // the 2nd–98th percentile of a sampled sine is within 1 % of its full swing
            assert!(
                ((hi - lo) / r.amplitude_mm[a] - 1.0).abs() < 0.01,
                "axis {a}: {lo}..{hi}"
            );
        }
    }

    #[test]
    fn lag_drift_hysteresis_and_irregular_breaths_show_where_they_should() {
        let s = sine(1200, 7.0);
        let plain = TumorFromSurrogate {
            phase_lag_s: 0.0,
            hysteresis_mm: [0.0; 3],
            drift_mm_per_min: [0.0; 3],
            irregular_fraction: 0.0,
            ..TumorFromSurrogate::default()
        };
        let base = plain.tumor_mm(&s, 0.1).unwrap().unwrap();
        // a 0.3 s lag: the tumor is the plain one 3 samples later
        let lagged = TumorFromSurrogate {
            phase_lag_s: 0.3,
            ..plain
        }
        .tumor_mm(&s, 0.1)
        .unwrap()
        .unwrap();
        assert!((lagged[500][2] - base[497][2]).abs() < 1e-12);
        // 1 mm/min SI drift: 1.9 mm after 114 s, beside the plain path
        let drifted = TumorFromSurrogate {
            drift_mm_per_min: [0.0, 0.0, 1.0],
            ..plain
        }
        .tumor_mm(&s, 0.1)
        .unwrap()
        .unwrap();
        assert!((drifted[1140][2] - base[1140][2] - 1.9).abs() < 1e-9);
        // hysteresis: at the same surrogate position (zero crossing) inhale and exhale differ
        // by about the loop's width
        let loop_ = TumorFromSurrogate {
            hysteresis_mm: [0.0, 2.0, 0.0],
            ..plain
        }
        .tumor_mm(&s, 0.1)
        .unwrap()
        .unwrap();
        // the sine's period is 40 samples: rising through zero at 400, falling at 420
        let width = loop_[400][1] - loop_[420][1];
        assert!((width - 2.0).abs() < 0.1, "{width}");
        // every breath irregular at 1.5×: 1.5 times the plain excursion after the first crossing
        let irregular = TumorFromSurrogate {
            irregular_fraction: 1.0,
            irregular_amplitude_ratio: 1.5,
            ..plain
        }
        .tumor_mm(&s, 0.1)
        .unwrap()
        .unwrap();
        assert!((irregular[410][2] - 1.5 * base[410][2]).abs() < 1e-9);
    }

    #[test]
    fn nonsense_is_refused_by_name() {
        let e = TumorFromSurrogate {
            irregular_fraction: 2.0,
            ..TumorFromSurrogate::default()
        }
        .tumor_mm(&[0.0; 10], 0.1)
        .unwrap_err();
        assert_eq!(e.name, "irregular_fraction");
        assert_eq!(
            TumorFromSurrogate::default().tumor_mm(&[3.0; 400], 0.1).unwrap(),
            None
        );
    }
}
