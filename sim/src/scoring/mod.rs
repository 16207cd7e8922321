//! Scoring: every frame of a replay against the truth at delivery time — the tumor's
//! estimated against its true shift, each delivered spot against where its moved target
//! needs it, each range change against the true (noise-free) water depth — and the
//! accumulators and quantiles the report shows.
//!
//! The per-spot geometry here is computed independently of the adapt stage's own
//! arithmetic, so a mistake there shows up as an error here. Depends on no other part of
//! the simulator, only on the library's plan, range and correction types.

use serde::Serialize;

pub mod accumulate;
pub mod deliveries;
pub mod dose_figures;
pub mod histogram;
pub mod spots;
pub mod tracking_dose;

/// One frame of a replay, scored against the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameScore {
    /// Pipeline frame id.
    pub frame: u64,
    /// Replay time of the frame (trace time), s.
    pub t_s: f64,
    /// True tumor displacement, mm (patient LPS).
    pub true_shift_mm: [f64; 3],
    /// Estimated tumor shift, mm, when the frame was registered.
    pub est_shift_mm: Option<[f64; 3]>,
    /// `corrected`, `held`, `rejected` or `dropped`.
    pub outcome: &'static str,
    /// Hold reason, when held or rejected.
    pub reason: Option<&'static str>,
    /// Complete → on the wire, ms.
    pub latency_ms: Option<f64>,
    /// Whether the controller had the beam on after this frame.
    pub beam_on: bool,
    /// |estimated − true| tumor shift at delivery time, mm.
    pub tumor_error_mm: Option<f64>,
    /// Largest delivered-spot position error in this frame, mm.
    pub spot_error_max_mm: Option<f64>,
    /// Largest range error in this frame, mm.
    pub range_error_max_mm: Option<f64>,
}
