//! The adapt stage: per-spot corrections from a frame's tumor shift and measured WEPL, and the
//! safety limits that turn a doubtful frame into a beam hold.
//!
//! The stage has two halves, meant for two pipeline threads:
//!
//! 1. **Range half** ([`AdaptPlan::measure_ct`] / [`AdaptPlan::measure_rsp`]): maps every
//!    spot's planned target through the target's motion (a [`PointMap`](crate::geometry::PointMap): the registration's
//!    rigid transform), traces the plan's rays through the frame, each moved to pass through
//!    its mapped reference point, and writes every spot's new water depth into a reused
//!    [`FrameWepl`].
//! 2. **Adapt half** ([`Adapter::adapt`]): pure arithmetic. Turns the [`Registration`] (its
//!    motion, [`AdaptPlan::motion_of`]) and the [`FrameWepl`] into one [`SpotCorrection`]
//!    per planned spot in a reused [`CorrectionSet`],
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
//! The target's motion is a [`PointMap`](crate::geometry::PointMap) `T`: with
//! [`AdaptOptions::follow_rotation`] the registration's full rigid transform `T(p) = R·p + t`
//! (rotation included); by default, until a known fault is fixed (an in-room scanner's setup
//! rotation shows up in a still patient's registration), `T(p) = p + s` with `s` the tumor
//! shift at the registration's target, every spot moved alike. Each spot's planned target `p` goes to `T(p)`, its own displacement
//! `u = T(p) − p`. With a rotation by θ about the target region's centre `c`, `u` differs
//! from the shift by `(R − I)(p − c)`, up to `2 sin(θ/2)·|p − c|`: 2.1 mm for 3° at 40 mm,
//! which a translation-only correction leaves.
//!
//! `u` (patient mm) has BEV components `u_x = u·bev_x`, `u_y = u·bev_y`, `u_z = u·to_source`.
//! The mapped target is at `X + u_x`, height `d + u_z`. The corrected spot `x'` is the one
//! whose ray passes through it: `x'(1 − (d + u_z)/SAD_x) = x(1 − d/SAD_x) + u_x`, so
//!
//! ```text
//! Δx_iso = x' − x = (u_x·SAD_x + x·u_z) / (SAD_x − d − u_z)
//! ```
//!
//! and likewise for `y` — exact per spot, whatever the motion. For a purely lateral move
//! (`u_z = 0`) this is the magnification `u_x·SAD_x / (SAD_x − d)`: a target upstream of the
//! isocenter (`d > 0`) needs a larger move at the isocenter plane. The `x·u_z` term keeps the
//! corrected ray exact when the target also moves along the beam (the ray is divergent, so a
//! deeper target at the same lateral position lies on a different spot's ray); it is
//! ≈ 0.07 mm for `x = 50`, `u_z = 10`, `SAD = 7 m`. A parallel beam (infinite SAD) gives
//! `Δx_iso = u_x`. A point at or above the virtual source (`SAD_x − d − u_z ≤ 0`) has no
//! spot; it trips the lateral limit.
//!
//! # Range
//!
//! Spots of one beam that share a planned position share a ray (one per layer stack), and the
//! frame is traced once per ray, not once per spot. Each ray `o + t·dir` is moved across
//! itself so it passes through the mapped position of its reference point
//! `p_ref = o + t_ref·dir`, `t_ref` the middle of its spots' target parameters: by the
//! perpendicular part of `T(p_ref) − p_ref`
//! ([`crate::range::SpotTracer::trace_frame_ct_rays_moved_at`]). A spot's mapped target
//! `T(p)` is then read at its projection on the moved ray, `t* = (T(p) − o − offset)·dir`,
//! and
//!
//! ```text
//! ΔWEPL = WEPL_frame(moved ray, t*) − planned Bragg depth
//! ```
//!
//! **Error bound.** For a translation every mapped target lies on its moved ray (exact). For
//! a rigid motion `T(o + t·dir) = T(p_ref) + (t − t_ref)·R·dir`, so a spot whose target sits
//! at `t` lies `|t − t_ref|·|R·dir × dir| ≤ |t − t_ref|·sin θ` off the moved ray: at most
//! `sin θ` times half the ray's spread of target depths (0.9 mm for 3° and layers 36 mm
//! apart; `tests/adapt_rotation.rs` checks the bound). The depth is read that far sideways
//! from the exact point: no error in uniform tissue, and in heterogeneous tissue the error
//! of a ray displaced by that much. Every frame reports the largest such distance
//! ([`FrameWepl::max_ray_miss_mm`], [`AdaptSummary::max_ray_miss`]). The lateral correction
//! is exact per spot regardless (above). Tracing per spot instead would multiply the range
//! half's work by the layers per ray (tens).
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
//! the first failed check, in this order: registration not usable (its residual-deformation
//! check failed: [`HoldReason::ResidualDeformation`]) or its NCC below
//! `min_ncc` or a non-finite shift or its rotation over `max_rotation_deg`
//! ([`HoldReason::RegistrationFailed`]); the shift moved more
//! than `max_jump` since the last corrected frame ([`HoldReason::JumpOverLimit`]); the
//! WEPL was measured for another plan ([`HoldReason::InternalFault`]); then per
//! spot in plan order: its depth measured for another mapped target than the motion gives
//! ([`HoldReason::InternalFault`]); WEPL unavailable — the target lies outside the traced part of the
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
pub(crate) use limits::registration_hold_reason;
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
