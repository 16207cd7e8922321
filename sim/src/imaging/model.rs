//! The imaging model: when an in-room CT acquires a frame, which instant of the anatomy it
//! shows, and when the image reaches ionguide.
//!
//! A frame `k` starts acquiring at `t₀ + k / rate`, acquires for `acquisition_s` and is
//! reconstructed for `reconstruction_s` more before its last slice arrives. It shows the
//! anatomy at mid-acquisition (no motion blur is rendered: the frame is the anatomy of
//! that one instant — a simplification that flatters registration a little, since a real
//! slab acquired while the tumor moves 2 mm is blurred by about that much). Its DICOM
//! Acquisition DateTime is that mid-acquisition instant, as the pipeline reckons a
//! correction's validity from it.

use serde::Serialize;

/// How an in-room CT images the patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImagingModel {
    /// Preset name, for the report.
    pub name: String,
    /// Frames per second.
    pub rate_hz: f64,
    /// Time one frame takes to acquire, s.
    pub acquisition_s: f64,
    /// From the end of acquisition to the last slice leaving the scanner, s.
    pub reconstruction_s: f64,
}

/// Why an imaging model cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("imaging model: {field} = {value}: {reason}")]
pub struct ImagingModelError {
    /// The field.
    pub field: &'static str,
    /// Its value.
    pub value: f64,
    /// What is wrong.
    pub reason: &'static str,
}

/// One frame's timing on the replay's clock (trace time, s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrameTiming {
    /// Acquisition starts.
    pub acquisition_start_s: f64,
    /// The instant the frame shows (mid-acquisition); its DICOM Acquisition DateTime.
    pub depicts_s: f64,
    /// The frame is complete at ionguide's input.
    pub available_s: f64,
}

impl ImagingModel {
    /// A fast in-room slab CT: 2 frames/s, 250 ms acquisition, 300 ms reconstruction — a
    /// frame is 425 ms old on arrival (from mid-acquisition).
    pub fn slab_ct_2hz() -> Self {
        ImagingModel {
            name: "slab-2hz".into(),
            rate_hz: 2.0,
            acquisition_s: 0.25,
            reconstruction_s: 0.30,
        }
    }

    /// The idealised model replays used before: 10 instantaneous frames/s that arrive the
    /// moment they are taken. No in-room CT works like this; it is kept for comparison.
    pub fn ideal_10hz() -> Self {
        ImagingModel {
            name: "ideal-10hz".into(),
            rate_hz: 10.0,
            acquisition_s: 0.0,
            reconstruction_s: 0.0,
        }
    }

    /// The preset called `name` (`slab-2hz`, `ideal-10hz`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "slab-2hz" => Some(Self::slab_ct_2hz()),
            "ideal-10hz" => Some(Self::ideal_10hz()),
            _ => None,
        }
    }

    /// Names of the presets.
    pub const PRESETS: [&'static str; 2] = ["slab-2hz", "ideal-10hz"];

    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), ImagingModelError> {
        let err = |field, value, reason| Err(ImagingModelError { field, value, reason });
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0) {
            return err("rate_hz", self.rate_hz, "must be finite and > 0");
        }
        for (field, v) in [
            ("acquisition_s", self.acquisition_s),
            ("reconstruction_s", self.reconstruction_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return err(field, v, "must be finite and ≥ 0");
            }
        }
        if self.acquisition_s > 1.0 / self.rate_hz {
            return err(
                "acquisition_s",
                self.acquisition_s,
                "longer than the frame interval: frames would overlap",
            );
        }
        Ok(())
    }

    /// Age of a frame when it arrives: mid-acquisition to complete, s.
    pub fn age_on_arrival_s(&self) -> f64 {
        0.5 * self.acquisition_s + self.reconstruction_s
    }

    /// Every frame whose acquisition starts in `[start_s, end_s)`.
    pub fn frames(&self, start_s: f64, end_s: f64) -> Vec<FrameTiming> {
        let mut out = Vec::new();
        let mut k = 0u64;
        loop {
            let a = start_s + k as f64 / self.rate_hz;
            if a.is_nan() || a >= end_s {
                break;
            }
            out.push(FrameTiming {
                acquisition_start_s: a,
                depicts_s: a + 0.5 * self.acquisition_s,
                available_s: a + self.acquisition_s + self.reconstruction_s,
            });
            k += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_frames_are_425_ms_old_on_arrival_and_half_a_second_apart() {
        let m = ImagingModel::slab_ct_2hz();
        m.validate().unwrap();
        let f = m.frames(10.0, 12.0);
        assert_eq!(f.len(), 4);
        assert!((f[1].acquisition_start_s - 10.5).abs() < 1e-12);
        assert!((f[0].depicts_s - 10.125).abs() < 1e-12);
        assert!((f[0].available_s - f[0].depicts_s - 0.425).abs() < 1e-12);
        assert!((m.age_on_arrival_s() - 0.425).abs() < 1e-12);
    }

    #[test]
    fn overlapping_or_negative_timings_are_refused_by_name() {
        let mut m = ImagingModel::slab_ct_2hz();
        m.acquisition_s = 0.6;
        assert_eq!(m.validate().unwrap_err().field, "acquisition_s");
        m.acquisition_s = 0.2;
        m.reconstruction_s = -1.0;
        assert_eq!(m.validate().unwrap_err().field, "reconstruction_s");
        m.reconstruction_s = 0.1;
        m.rate_hz = 0.0;
        assert_eq!(m.validate().unwrap_err().field, "rate_hz");
    }
}
