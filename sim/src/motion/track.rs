//! The tumor's displacement as a function of time, sampled uniformly, for as long as a
//! delivery needs it.
//!
//! A delivery can outlast the recording (a gated carbon field takes minutes; a recorded
//! trace may hold one). Beyond its end the recording is played backwards, then forwards
//! again, and so on: the displacement stays continuous (no jump where a loop would restart),
//! at the price of breathing played in reverse on every other pass — exhale and inhale
//! swap their shapes, periods and amplitudes do not change. The report says how many
//! passes a replay used.

use serde::Serialize;

/// Uniformly sampled tumor displacement, mm LPS, from `start_s` at `rate_hz`.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionTrack {
    start_s: f64,
    rate_hz: f64,
    displacement_mm: Vec<[f64; 3]>,
}

/// Why a track cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// Fewer than two samples, or times not increasing.
    #[error("motion track: {0}")]
    Bad(String),
}

/// What a replay drew from the track, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackUse {
    /// Samples per second.
    pub rate_hz: f64,
    /// Length of the recording, s.
    pub recording_s: f64,
    /// Dominant breathing period, s (from the displacement's mean crossings).
    pub period_s: f64,
    /// Samples per breathing cycle (`rate_hz × period_s`).
    pub samples_per_cycle: f64,
    /// Passes over the recording the replay used (1: it never ran past the end).
    pub passes: f64,
}

impl MotionTrack {
    /// A track through the samples `(times_s, displacement_mm)`, resampled at `rate_hz` by
    /// linear interpolation.
    pub fn new(times_s: &[f64], displacement_mm: &[[f64; 3]], rate_hz: f64) -> Result<Self, TrackError> {
        if times_s.is_empty() || times_s.len() != displacement_mm.len() {
            return Err(TrackError::Bad(format!(
                "need ≥ 1 sample with one displacement each, got {} times and {} displacements",
                times_s.len(),
                displacement_mm.len()
            )));
        }
        if !(rate_hz.is_finite() && rate_hz > 0.0) {
            return Err(TrackError::Bad(format!(
                "rate must be finite and > 0 Hz, got {rate_hz}"
            )));
        }
        if let Some(i) = times_s
            .windows(2)
            .position(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
        {
            return Err(TrackError::Bad(format!(
                "times must increase: sample {} at {} s follows {} s",
                i + 1,
                times_s[i + 1],
                times_s[i]
            )));
        }
        let start_s = times_s[0];
        let span = times_s[times_s.len() - 1] - start_s;
        let n = (span * rate_hz + 1e-9).floor() as usize + 1;
        let displacement_mm = (0..n)
            .map(|k| interpolate(times_s, displacement_mm, start_s + k as f64 / rate_hz))
            .collect();
        Ok(MotionTrack {
            start_s,
            rate_hz,
            displacement_mm,
        })
    }

    /// First sample time, s.
    pub fn start_s(&self) -> f64 {
        self.start_s
    }

    /// Samples per second.
    pub fn rate_hz(&self) -> f64 {
        self.rate_hz
    }

    /// Length of the recording, s.
    pub fn recording_s(&self) -> f64 {
        (self.displacement_mm.len() - 1) as f64 / self.rate_hz
    }

    /// The recorded samples.
    pub fn samples_mm(&self) -> &[[f64; 3]] {
        &self.displacement_mm
    }

    /// Index of the sample nearest `t_s`, counted on, past the recording's end, through
    /// the backward and forward passes (so indices keep increasing with time).
    pub fn sample_index(&self, t_s: f64) -> usize {
        ((t_s - self.start_s) * self.rate_hz).round().max(0.0) as usize
    }

    /// Time of sample `index`, s.
    pub fn sample_time_s(&self, index: usize) -> f64 {
        self.start_s + index as f64 / self.rate_hz
    }

    /// Displacement of sample `index`, mm (through the passes).
    pub fn sample_mm(&self, index: usize) -> [f64; 3] {
        let n = self.displacement_mm.len();
        if n == 1 {
            // one sample: the anatomy holds still
            return self.displacement_mm[0];
        }
        let period = 2 * (n - 1);
        let k = index % period;
        self.displacement_mm[if k < n { k } else { period - k }]
    }

    /// Displacement at `t_s`, mm: linear between samples; before the start, the first.
    pub fn at(&self, t_s: f64) -> [f64; 3] {
        let u = ((t_s - self.start_s) * self.rate_hz).max(0.0);
        let k = u.floor() as usize;
        let f = u - k as f64;
        let (a, b) = (self.sample_mm(k), self.sample_mm(k + 1));
        std::array::from_fn(|i| a[i] + f * (b[i] - a[i]))
    }

    /// The axis (unit vector, LPS) along which the recording moves most: the principal
    /// direction of its displacements (largest-variance eigenvector).
    pub fn principal_axis(&self) -> [f64; 3] {
        let n = self.displacement_mm.len() as f64;
        let mean: [f64; 3] =
            std::array::from_fn(|a| self.displacement_mm.iter().map(|d| d[a]).sum::<f64>() / n);
        let mut c = nalgebra::Matrix3::<f64>::zeros();
        for d in &self.displacement_mm {
            let v = nalgebra::Vector3::new(d[0] - mean[0], d[1] - mean[1], d[2] - mean[2]);
            c += v * v.transpose();
        }
        let e = nalgebra::SymmetricEigen::new(c);
        let i = e.eigenvalues.imax();
        let v = e.eigenvectors.column(i);
        // Sign: the axis points the way the largest component of the motion goes.
        let s = if v
            .iter()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { *x } else { m })
            < 0.0
        {
            -1.0
        } else {
            1.0
        };
        [s * v[0], s * v[1], s * v[2]]
    }

    /// The displacement projected on `axis`, one value per sample through `until_s`.
    pub fn amplitude_mm(&self, axis: [f64; 3], until_s: f64) -> (Vec<f64>, Vec<f64>) {
        let last = self.sample_index(until_s) + 1;
        (0..=last)
            .map(|k| {
                let d = self.sample_mm(k);
                (
                    self.sample_time_s(k),
                    d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2],
                )
            })
            .unzip()
    }

    /// Dominant period, s: twice the mean time between crossings of the mean along the
    /// principal axis (∞ when it never crosses twice).
    pub fn period_s(&self) -> f64 {
        let axis = self.principal_axis();
        let a: Vec<f64> = self
            .displacement_mm
            .iter()
            .map(|d| d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2])
            .collect();
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let crossings: Vec<usize> = a
            .windows(2)
            .enumerate()
            .filter(|(_, w)| (w[0] - mean) * (w[1] - mean) < 0.0)
            .map(|(i, _)| i)
            .collect();
        if crossings.len() < 3 {
            return f64::INFINITY;
        }
        let span = (crossings[crossings.len() - 1] - crossings[0]) as f64 / self.rate_hz;
        2.0 * span / (crossings.len() - 1) as f64
    }

    /// What a replay that ran until `until_s` drew from the track.
    pub fn usage(&self, until_s: f64) -> TrackUse {
        let period_s = self.period_s();
        TrackUse {
            rate_hz: self.rate_hz,
            recording_s: self.recording_s(),
            period_s,
            samples_per_cycle: period_s * self.rate_hz,
            passes: if self.recording_s() > 0.0 {
                ((until_s - self.start_s) / self.recording_s()).max(1.0)
            } else {
                1.0
            },
        }
    }
}

/// Linear interpolation of the displacement at time `t` (clamped to the samples).
pub fn interpolate(times: &[f64], d: &[[f64; 3]], t: f64) -> [f64; 3] {
    let i = times.partition_point(|&x| x <= t);
    if i == 0 {
        return d[0];
    }
    if i >= times.len() {
        return d[times.len() - 1];
    }
    let (t0, t1) = (times[i - 1], times[i]);
    let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
    std::array::from_fn(|a| d[i - 1][a] + f * (d[i][a] - d[i - 1][a]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_is_linear_and_clamped() {
        let t = [0.0, 1.0, 2.0];
        let d = [[0.0; 3], [2.0, 0.0, -2.0], [2.0, 4.0, -2.0]];
        assert_eq!(interpolate(&t, &d, 0.5), [1.0, 0.0, -1.0]);
        assert_eq!(interpolate(&t, &d, 1.5), [2.0, 2.0, -2.0]);
        assert_eq!(interpolate(&t, &d, -1.0), d[0]);
        assert_eq!(interpolate(&t, &d, 9.0), d[2]);
    }

    /// A sine of period 4 s along z, 10 s recorded at 25 Hz: period, axis, and the
    /// backward pass past the end mirror the recording.
    #[test]
    fn a_sine_track_has_its_period_axis_and_mirrored_passes() {
        let t: Vec<f64> = (0..=300).map(|k| k as f64 * 0.04).collect();
        let d: Vec<[f64; 3]> = t
            .iter()
            .map(|t| [0.0, 0.0, -5.0 * (2.0 * std::f64::consts::PI * t / 4.0).sin()])
            .collect();
        let m = MotionTrack::new(&t, &d, 25.0).unwrap();
        assert!((m.period_s() - 4.0).abs() < 0.1, "{}", m.period_s());
        let axis = m.principal_axis();
        assert!((axis[2].abs() - 1.0).abs() < 1e-9);
        assert!((m.recording_s() - 12.0).abs() < 1e-9);
        // 1 s past the end is the sample 1 s before it
        let past = m.at(13.0);
        let before = m.at(11.0);
        assert!((past[2] - before[2]).abs() < 1e-9);
        // continuous at the turn
        assert!((m.at(12.0 - 1e-6)[2] - m.at(12.0 + 1e-6)[2]).abs() < 1e-3);
        assert!((m.usage(30.0).passes - 2.5).abs() < 1e-9);
    }

    #[test]
    fn bad_tracks_are_refused_with_the_reason() {
        assert!(MotionTrack::new(&[], &[], 10.0).is_err());
        // one sample: the anatomy holds still, at any time
        let still = MotionTrack::new(&[0.0], &[[1.0, 2.0, 3.0]], 10.0).unwrap();
        assert_eq!(still.at(5.0), [1.0, 2.0, 3.0]);
        let e = MotionTrack::new(&[0.0, 1.0, 1.0], &[[0.0; 3]; 3], 10.0).unwrap_err();
        assert!(e.to_string().contains("increase"), "{e}");
        assert!(MotionTrack::new(&[0.0, 1.0], &[[0.0; 3]; 2], 0.0).is_err());
    }
}
