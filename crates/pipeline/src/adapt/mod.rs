//! The adapt stage: per-spot corrections from a frame's tumor shift and measured WEPL, and the
//! safety limits that turn a doubtful frame into a beam hold.
//!
//! The stage has two halves, meant for two pipeline threads:
//!
//! 1. **Range half** ([`AdaptPlan::measure_ct`] / [`AdaptPlan::measure_rsp`]): traces the plan's
//!    rays through the frame, each beam's rays moved by the lateral part of the tumor shift,
//!    and writes every spot's new water depth into a reused [`FrameWepl`].
//! 2. **Adapt half** ([`Adapter::adapt`]): pure arithmetic. Turns the [`Registration`] and the
//!    [`FrameWepl`] into one [`SpotCorrection`] per planned spot in a reused [`CorrectionSet`],
//!    or a [`HoldDetail`] saying which limit tripped, on which spot, by how much.
//!
//! Neither half allocates once warm (`tests/adapt_no_alloc.rs` counts).
//!
//! # Geometry (beam's-eye view, one virtual source per scanning magnet)
//!
//! In gantry coordinates with `z` the height above the isocenter plane toward the source, the
//! ray of a spot planned at `(x, y)` in the isocenter plane is
//! `(x(1 − z/SAD_x), y(1 − z/SAD_y), z)` ([`crate::range::beam`]). Its planned target point
//! `p` (where the planning-CT WEPL reaches the planned Bragg depth) sits at height
//! `d = (p − iso)·to_source` (positive toward the source, i.e. upstream of the isocenter),
//! with BEV coordinate `X = x(1 − d/SAD_x)`.
//!
//! The tumor shift `s` (patient mm) has BEV components `s_x = s·bev_x`, `s_y = s·bev_y`,
//! `s_z = s·to_source`. The shifted target is at `X + s_x`, height `d + s_z`. The corrected
//! spot `x'` is the one whose ray passes through it:
//! `x'(1 − (d + s_z)/SAD_x) = x(1 − d/SAD_x) + s_x`, so
//!
//! ```text
//! Δx_iso = x' − x = (s_x·SAD_x + x·s_z) / (SAD_x − d − s_z)
//! ```
//!
//! and likewise for `y`. For a purely lateral shift (`s_z = 0`) this is the magnification
//! `s_x·SAD_x / (SAD_x − d)`: a target upstream of the isocenter (`d > 0`) needs a larger
//! move at the isocenter plane. The `x·s_z` term keeps the corrected ray exact when the
//! target also moves along the beam (the ray is divergent, so a deeper target at the same
//! lateral position lies on a different spot's ray); it is ≈ 0.07 mm for `x = 50`, `s_z = 10`,
//! `SAD = 7 m`. A parallel beam (infinite SAD) gives `Δx_iso = s_x`. A point at or above the
//! virtual source (`SAD_x − d − s_z ≤ 0`) has no spot; it trips the lateral limit.
//!
//! The rotation part of the registration is not used for spot positions: the target is
//! treated as a point that moves by `s`, which is what the registration around the target
//! ROI measures best.
//!
//! # Range
//!
//! The frame is traced with each beam's rays moved by `o_b = s − (s·to_source)·to_source`,
//! the lateral part of `s` for beam `b` ([`crate::range::SpotTracer::trace_frame_ct_moved_at`]):
//! one trace per ray shared by all layers, instead of one per spot. The shifted target
//! `p + s` is then nearest the moved ray at `t* = t_p + (s − o_b)·dir`, with `t_p` the planned
//! target's parameter and `dir` the ray's unit direction (for a divergent ray `p + s` lies
//! off the moved ray by `|s − o_b|·sin α`, α the ray's angle to the beam axis: a few µm).
//! The new water depth is the frame's cumulative WEPL at `t*`, and
//!
//! ```text
//! ΔWEPL = WEPL_frame(moved ray, t*) − planned Bragg depth
//! ```
//!
//! **Sign convention.** `ΔWEPL > 0`: more water in front of the target than planned (the
//! target moved deeper, or denser tissue came into the path) — the beam must reach further.
//! In [`RangeMode::Energy`] the spot gets the energy whose range (CSDA, or a facility's
//! Bragg-peak depth) is the planned one plus `ΔWEPL`: a higher energy. In
//! [`RangeMode::RangeShifter`] the energy stays and `range_shifter_mm_we = −ΔWEPL`: *less*
//! shifter material (negative: pull back). In water, a shift `s` along the beam direction
//! (away from the source) by δ mm gives `ΔWEPL = +δ·RSP_water`.
//!
//! # Safety limits
//!
//! The frame is held (the whole `CorrectionSet` is emptied, nothing partial can be sent) on
//! the first failed check, in this order: registration not usable or its NCC below
//! `min_ncc` or a non-finite shift ([`HoldReason::RegistrationFailed`]); the shift moved more
//! than `max_jump` since the last corrected frame ([`HoldReason::JumpOverLimit`]); the
//! WEPL was measured for another shift or plan ([`HoldReason::InternalFault`]); then per
//! spot in plan order: WEPL unavailable — the target lies outside the traced part of the
//! frame ([`HoldReason::RangeUnavailable`]); lateral correction `|(Δx, Δy)|` over
//! `max_lateral` ([`HoldReason::LateralOverLimit`]); `|ΔWEPL|` (and, when snapping, the
//! delivered range change) over `max_range` ([`HoldReason::RangeOverLimit`]); a new
//! energy or range-shifter setting outside what can be delivered
//! ([`HoldReason::RangeUnavailable`]).
//!
//! The jump reference is the shift of the last *corrected* frame; held frames do not move
//! it. So after a real jump the stage keeps holding until [`Adapter::reset_jump_reference`]
//! (an operator decision), rather than following the tumor wherever it went.

mod adapt_plan;
mod correct;
mod energy;
mod lateral;
mod limits;
mod measure;
mod options;

pub use adapt_plan::AdaptPlan;
pub use correct::{AdaptSummary, Adapter, FrameStamp};
pub use limits::{HoldCheck, HoldDetail, SafetyLimits};
pub use measure::FrameWepl;
pub use options::{AdaptOptions, EnergyModel};

use crate::range::RangeError;

/// Why an adapt plan could not be built or a frame could not be measured (configuration or
/// programming faults; a doubtful *frame* is a [`HoldDetail`], not an error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AdaptError {
    /// A limit or option is out of range.
    #[error("adapt option {name} = {value} is invalid: {why}")]
    BadOption {
        /// The option.
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        why: &'static str,
    },
    /// The tracer was built from another plan (spot or beam count differs).
    #[error("tracer does not match the plan: {what} {tracer} in the tracer, {plan} in the plan")]
    TracerMismatch {
        /// What differs.
        what: &'static str,
        /// Count in the tracer.
        tracer: usize,
        /// Count in the plan.
        plan: usize,
    },
    /// The planned tracer has no target for a spot: its ray leaves the planning CT before the
    /// planned depth (trace the planning CT first; a spot outside the CT cannot be adapted).
    #[error("beam {beam} layer {layer} spot {spot} (plan spot {index}): no target point in the planning CT — trace it first, or its ray leaves the CT before the planned depth")]
    NoPlannedTarget {
        /// Plan-order spot index.
        index: usize,
        /// Beam index.
        beam: usize,
        /// Layer index.
        layer: usize,
        /// Spot index in the layer.
        spot: usize,
    },
    /// The tracer's ray of a spot is not the one the beam geometry gives (another default
    /// SAD or upstream setting).
    #[error("plan spot {index}: the tracer's ray is {off_mm} mm off the beam geometry's ray — build both with the same virtual SADs")]
    GeometryMismatch {
        /// Plan-order spot index.
        index: usize,
        /// Distance of the planned target from the geometry's ray, mm.
        off_mm: f64,
    },
    /// A range-engine failure (unsupported ion, energy outside a table, bad geometry).
    #[error(transparent)]
    Range(#[from] RangeError),
}
