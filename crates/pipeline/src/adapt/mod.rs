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
//! than `max_jump_mm` since the last corrected frame ([`HoldReason::JumpOverLimit`]); the
//! WEPL was measured for another shift or plan ([`HoldReason::InternalFault`]); then per
//! spot in plan order: WEPL unavailable — the target lies outside the traced part of the
//! frame ([`HoldReason::RangeUnavailable`]); lateral correction `|(Δx, Δy)|` over
//! `max_lateral_mm` ([`HoldReason::LateralOverLimit`]); `|ΔWEPL|` (and, when snapping, the
//! delivered range change) over `max_range_mm` ([`HoldReason::RangeOverLimit`]); a new
//! energy or range-shifter setting outside what can be delivered
//! ([`HoldReason::RangeUnavailable`]).
//!
//! The jump reference is the shift of the last *corrected* frame; held frames do not move
//! it. So after a real jump the stage keeps holding until [`Adapter::reset_jump_reference`]
//! (an operator decision), rather than following the tumor wherever it went.

use std::sync::Arc;

use crate::correction::{CorrectionSet, HoldReason, RangeMode, SpotCorrection};
use crate::plan::IonPlan;
use crate::range::beam::BeamGeometry;
use crate::range::facility::FacilityTable;
use crate::range::range_energy::RangeEnergyTable;
use crate::range::{Hlut, RangeError, SpotTracer};
use crate::register::Registration;
use crate::units::VectorMm;
use crate::volume::{CtVolume, Volume};

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

/// The safety limits (from the session configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SafetyLimits {
    /// Largest lateral correction `|(Δx, Δy)|` at the isocenter plane, mm.
    pub max_lateral_mm: f64,
    /// Largest `|ΔWEPL|` (and delivered range change), mm water.
    pub max_range_mm: f64,
    /// Largest change of the tumor shift between consecutive corrected frames, mm.
    pub max_jump_mm: f64,
    /// Smallest registration NCC that may drive the beam.
    pub min_ncc: f64,
}

impl SafetyLimits {
    /// Limits from their values (checked by [`AdaptPlan::new`]).
    pub fn new(max_lateral_mm: f64, max_range_mm: f64, max_jump_mm: f64, min_ncc: f64) -> Self {
        SafetyLimits {
            max_lateral_mm,
            max_range_mm,
            max_jump_mm,
            min_ncc,
        }
    }

    fn validate(&self) -> Result<(), AdaptError> {
        for (name, v) in [
            ("max_lateral_mm", self.max_lateral_mm),
            ("max_range_mm", self.max_range_mm),
            ("max_jump_mm", self.max_jump_mm),
        ] {
            if v.is_nan() || v < 0.0 {
                return Err(AdaptError::BadOption {
                    name,
                    value: v,
                    why: "must be ≥ 0 (infinite: no limit)",
                });
            }
        }
        if !(-1.0..=1.0).contains(&self.min_ncc) {
            return Err(AdaptError::BadOption {
                name: "min_ncc",
                value: self.min_ncc,
                why: "must lie in [-1, 1]",
            });
        }
        Ok(())
    }
}

/// How a new range becomes an energy in [`RangeMode::Energy`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EnergyModel {
    /// Continuous energies from the ion's CSDA range–energy relation.
    Csda,
    /// Snapped to the nearest deliverable energy of a facility table (the range error this
    /// introduces is reported in [`AdaptSummary::max_abs_snap_residual_mm`]).
    FacilitySnap(FacilityTable),
}

/// Options of the adapt stage.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdaptOptions {
    /// How range changes are delivered.
    pub mode: RangeMode,
    /// Energy model for [`RangeMode::Energy`].
    pub energy_model: EnergyModel,
    /// Safety limits.
    pub limits: SafetyLimits,
    /// Room virtual SADs `[x, y]` for beams whose plan gives none, mm — the same as the
    /// tracer's (checked).
    pub default_sad_mm: [f64; 2],
    /// Deliverable energies `[min, max]`, MeV/u ([`RangeMode::Energy`]; default: the table's).
    pub energy_span_mev_u: [f64; 2],
    /// Deliverable range-shifter settings `[min, max]`, mm water ([`RangeMode::RangeShifter`];
    /// default `[-∞, ∞]`; a facility that cannot pull back sets `min = 0`).
    pub range_shifter_span_mm_we: [f64; 2],
}

impl AdaptOptions {
    /// Energy mode with CSDA energies and the given limits and room SADs.
    pub fn new(limits: SafetyLimits, default_sad_mm: [f64; 2]) -> Self {
        AdaptOptions {
            mode: RangeMode::Energy,
            energy_model: EnergyModel::Csda,
            limits,
            default_sad_mm,
            energy_span_mev_u: [0.0, f64::INFINITY],
            range_shifter_span_mm_we: [f64::NEG_INFINITY, f64::INFINITY],
        }
    }
    /// Sets the range mode.
    pub fn with_mode(mut self, mode: RangeMode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the energy model.
    pub fn with_energy_model(mut self, model: EnergyModel) -> Self {
        self.energy_model = model;
        self
    }
    /// Sets the deliverable energy span, MeV/u.
    pub fn with_energy_span_mev_u(mut self, span: [f64; 2]) -> Self {
        self.energy_span_mev_u = span;
        self
    }
    /// Sets the deliverable range-shifter span, mm water.
    pub fn with_range_shifter_span_mm_we(mut self, span: [f64; 2]) -> Self {
        self.range_shifter_span_mm_we = span;
        self
    }
}

/// Per-spot constants, computed once per plan.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SpotGeom {
    beam: usize,
    x_mm: f64,
    y_mm: f64,
    /// Height of the planned target above the isocenter plane, mm.
    d_mm: f64,
    /// Planned target's parameter on the spot's ray, mm.
    t_target_mm: f64,
    /// The ray's unit direction.
    dir: VectorMm,
    energy_mev_u: f64,
    planned_depth_mm: f64,
    /// The planned energy's range in the energy model (CSDA range or facility depth), mm.
    model_range_mm: f64,
    /// Index into `AdaptPlan::tables` (CSDA).
    table: usize,
}

/// Everything about a plan the adapt stage needs, built once per session and shared by the
/// range and adapt threads (it is immutable; wrap it in an [`Arc`]).
#[derive(Debug, Clone)]
pub struct AdaptPlan {
    beams: Vec<BeamGeometry>,
    spots: Vec<SpotGeom>,
    tables: Vec<RangeEnergyTable>,
    options: AdaptOptions,
}

impl AdaptPlan {
    /// Builds the per-spot constants from `plan` and `planned`, a [`SpotTracer`] of the same
    /// plan that has traced the planning CT (its target points are the planned ones).
    pub fn new(plan: &IonPlan, planned: &SpotTracer, options: AdaptOptions) -> Result<Self, AdaptError> {
        options.limits.validate()?;
        let [e_lo, e_hi] = options.energy_span_mev_u;
        if e_lo.is_nan() || e_hi.is_nan() || e_lo > e_hi {
            return Err(AdaptError::BadOption {
                name: "energy_span_mev_u",
                value: e_lo,
                why: "must be an ordered [min, max]",
            });
        }
        let [r_lo, r_hi] = options.range_shifter_span_mm_we;
        if r_lo.is_nan() || r_hi.is_nan() || r_lo > r_hi {
            return Err(AdaptError::BadOption {
                name: "range_shifter_span_mm_we",
                value: r_lo,
                why: "must be an ordered [min, max]",
            });
        }
        if planned.beam_count() != plan.beams.len() {
            return Err(AdaptError::TracerMismatch {
                what: "beams",
                tracer: planned.beam_count(),
                plan: plan.beams.len(),
            });
        }
        if planned.spots().len() != plan.spot_count() {
            return Err(AdaptError::TracerMismatch {
                what: "spots",
                tracer: planned.spots().len(),
                plan: plan.spot_count(),
            });
        }
        let mut beams = Vec::with_capacity(plan.beams.len());
        let mut tables: Vec<RangeEnergyTable> = Vec::new();
        let mut beam_table = Vec::with_capacity(plan.beams.len());
        for beam in &plan.beams {
            beams.push(BeamGeometry::from_beam(beam, options.default_sad_mm)?);
            let t = match tables.iter().position(|t| t.ion() == beam.ion) {
                Some(t) => t,
                None => {
                    tables.push(RangeEnergyTable::new(beam.ion)?);
                    tables.len() - 1
                }
            };
            beam_table.push(t);
        }
        let mut spots = Vec::with_capacity(planned.spots().len());
        for (index, s) in planned.spots().iter().enumerate() {
            let beam = &plan.beams[s.beam];
            let spot = beam.layers.get(s.layer).and_then(|l| l.spots.get(s.spot)).ok_or(
                AdaptError::TracerMismatch {
                    what: "spot positions",
                    tracer: index,
                    plan: plan.spot_count(),
                },
            )?;
            let no_target = AdaptError::NoPlannedTarget {
                index,
                beam: s.beam,
                layer: s.layer,
                spot: s.spot,
            };
            let t_target_mm = planned
                .target_t_mm()
                .get(index)
                .copied()
                .flatten()
                .ok_or_else(|| no_target.clone())?;
            let p = planned.target_point_mm(index).ok_or(no_target)?;
            let geo = &beams[s.beam];
            let ray = planned.rays()[s.ray];
            // The target must lie on the geometry's ray of this spot, or the lateral formula
            // would correct a different ray than the one traced.
            let g = geo.spot_ray(spot.x_mm, spot.y_mm, 1000.0);
            let v = p - g.origin;
            let off_mm = (v - g.direction * v.dot(&g.direction)).norm();
            if !within(off_mm, 1e-6 * (1.0 + v.norm())) {
                return Err(AdaptError::GeometryMismatch { index, off_mm });
            }
            let model_range_mm = match &options.energy_model {
                EnergyModel::Csda => tables[beam_table[s.beam]].range_mm(s.energy_mev_u)?,
                EnergyModel::FacilitySnap(f) => f.depth_mm(s.energy_mev_u)?,
            };
            spots.push(SpotGeom {
                beam: s.beam,
                x_mm: spot.x_mm,
                y_mm: spot.y_mm,
                d_mm: (p - geo.isocenter_mm).dot(&geo.to_source),
                t_target_mm,
                dir: ray.direction,
                energy_mev_u: s.energy_mev_u,
                planned_depth_mm: s.planned_depth_mm,
                model_range_mm,
                table: beam_table[s.beam],
            });
        }
        Ok(AdaptPlan {
            beams,
            spots,
            tables,
            options,
        })
    }

    /// Number of planned spots.
    pub fn spot_count(&self) -> usize {
        self.spots.len()
    }
    /// Number of beams.
    pub fn beam_count(&self) -> usize {
        self.beams.len()
    }
    /// The beams' geometry.
    pub fn beams(&self) -> &[BeamGeometry] {
        &self.beams
    }
    /// The options.
    pub fn options(&self) -> &AdaptOptions {
        &self.options
    }

    /// The lateral part of `shift_mm` for every beam (`s − (s·to_source)·to_source`): the
    /// offsets the range half moves each beam's rays by.
    pub fn beam_offsets_into(&self, shift_mm: &VectorMm, out: &mut [VectorMm]) {
        for (o, b) in out.iter_mut().zip(&self.beams) {
            *o = shift_mm - b.to_source * shift_mm.dot(&b.to_source);
        }
    }

    /// Range half on a CT frame: traces `frame` (a copy of the planned tracer, with or
    /// without profiles: [`SpotTracer::without_profiles`]) through `ct`
    /// with rays moved by the lateral part of `shift_mm`, then fills `out` with every spot's
    /// new water depth (NaN where its shifted target lies outside the traced frame).
    pub fn measure_ct(
        &self,
        frame: &mut SpotTracer,
        ct: &CtVolume,
        hlut: &Hlut,
        shift_mm: &VectorMm,
        out: &mut FrameWepl,
    ) -> Result<(), AdaptError> {
        self.prepare(frame, shift_mm, out)?;
        frame.trace_frame_ct_moved_at(ct, hlut, &out.offsets, &out.query_t_mm, &mut out.wepl_mm)?;
        out.shift_mm = *shift_mm;
        Ok(())
    }

    /// Range half on an RSP frame, as [`Self::measure_ct`].
    pub fn measure_rsp(
        &self,
        frame: &mut SpotTracer,
        rsp: &Volume<f32>,
        shift_mm: &VectorMm,
        out: &mut FrameWepl,
    ) -> Result<(), AdaptError> {
        self.prepare(frame, shift_mm, out)?;
        frame.trace_frame_moved_at(rsp, &out.offsets, &out.query_t_mm, &mut out.wepl_mm)?;
        out.shift_mm = *shift_mm;
        Ok(())
    }

    /// Checks the tracer, moves the rays by the lateral part of the shift and asks each spot's
    /// WEPL at its target moved along the ray by the rest.
    fn prepare(
        &self,
        frame: &SpotTracer,
        shift_mm: &VectorMm,
        out: &mut FrameWepl,
    ) -> Result<(), AdaptError> {
        // Invalidate first: on any error below, `out` describes no shift at all, so the
        // adapt half holds instead of using a stale measurement.
        out.shift_mm = VectorMm::repeat(f64::NAN);
        out.wepl_mm.clear();
        if frame.spots().len() != self.spots.len() || frame.beam_count() != self.beams.len() {
            return Err(AdaptError::TracerMismatch {
                what: "spots",
                tracer: frame.spots().len(),
                plan: self.spots.len(),
            });
        }
        out.offsets.resize(self.beams.len(), VectorMm::zeros());
        self.beam_offsets_into(shift_mm, &mut out.offsets);
        out.query_t_mm.clear();
        for g in &self.spots {
            let along = shift_mm - out.offsets[g.beam];
            out.query_t_mm.push(g.t_target_mm + along.dot(&g.dir));
        }
        Ok(())
    }
}

/// The range half's output: each spot's water depth to its shifted target in one frame,
/// for one shift. Reused frame to frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameWepl {
    /// The shift the rays were moved by (NaN: no valid measurement).
    pub shift_mm: VectorMm,
    /// Per spot, plan order: WEPL from the ray start to the shifted target, mm (NaN: the
    /// target lies outside the traced frame).
    pub wepl_mm: Vec<f32>,
    offsets: Vec<VectorMm>,
    /// Per spot: where on its moved ray the WEPL is measured, mm.
    query_t_mm: Vec<f64>,
}

impl FrameWepl {
    /// Buffers for a plan (so the first frame does not allocate either).
    pub fn for_plan(plan: &AdaptPlan) -> Self {
        FrameWepl {
            shift_mm: VectorMm::repeat(f64::NAN),
            wepl_mm: Vec::with_capacity(plan.spot_count()),
            offsets: Vec::with_capacity(plan.beam_count()),
            query_t_mm: Vec::with_capacity(plan.spot_count()),
        }
    }
}

/// The frame a correction set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameStamp {
    /// Frame id.
    pub frame_id: u64,
    /// Wall-clock time (ns since the UNIX epoch) after which the corrections are void.
    pub valid_until_unix_ns: u64,
}

/// Which check a held frame failed (for the detail text; the [`HoldReason`] is the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldCheck {
    /// The registration's own verdict (not converged, poor overlap, …).
    RegistrationNotUsable,
    /// NCC below the limit.
    SimilarityBelowMin,
    /// The tumor shift is not finite.
    NonFiniteShift,
    /// The shift jumped since the last corrected frame.
    Jump,
    /// The WEPL was measured for another shift (or not at all).
    WeplShiftMismatch,
    /// The WEPL has a different spot count than the plan.
    WeplCountMismatch,
    /// A spot's shifted target lies outside the traced frame.
    WeplUnavailable,
    /// Lateral correction over the limit.
    Lateral,
    /// Requested range change over the limit.
    Range,
    /// Delivered (snapped) range change over the limit.
    DeliveredRange,
    /// The new range has no energy in the table.
    RangeOutsideTable,
    /// The new energy is outside the deliverable span.
    EnergyOutsideSpan,
    /// The range-shifter setting is outside the deliverable span.
    ShifterOutsideSpan,
}

/// Why a frame is held: a small `Copy` value, formatted (off the hot path) by its `Display`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldDetail {
    /// The hold code.
    pub reason: HoldReason,
    /// Which check failed.
    pub check: HoldCheck,
    /// The spot (plan order) it failed on, if a spot check.
    pub spot: Option<u32>,
    /// The offending value (mm, MeV/u, NCC, or a count; NaN where none).
    pub value: f64,
    /// The limit it was held against (NaN where none).
    pub limit: f64,
}

impl HoldDetail {
    fn new(reason: HoldReason, check: HoldCheck, spot: Option<usize>, value: f64, limit: f64) -> Self {
        HoldDetail {
            reason,
            check,
            spot: spot.map(|s| s as u32),
            value,
            limit,
        }
    }
}

impl std::fmt::Display for HoldDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.reason)?;
        if let Some(s) = self.spot {
            write!(f, "spot {s}: ")?;
        }
        let (v, l) = (self.value, self.limit);
        match self.check {
            HoldCheck::RegistrationNotUsable => write!(f, "registration not usable (NCC {v:.4})"),
            HoldCheck::SimilarityBelowMin => write!(f, "registration NCC {v:.4} below {l:.4}"),
            HoldCheck::NonFiniteShift => write!(f, "tumor shift is not finite"),
            HoldCheck::Jump => write!(
                f,
                "tumor shift moved {v:.2} mm since the last corrected frame, limit {l:.2} mm"
            ),
            HoldCheck::WeplShiftMismatch => write!(f, "WEPL measured for another shift (off by {v:.3} mm)"),
            HoldCheck::WeplCountMismatch => write!(f, "WEPL has {v} spots, plan {l}"),
            HoldCheck::WeplUnavailable => write!(f, "shifted target outside the traced frame, no WEPL"),
            HoldCheck::Lateral => write!(f, "lateral correction {v:.2} mm over limit {l:.2} mm"),
            HoldCheck::Range => write!(f, "range change {v:.2} mm over limit {l:.2} mm"),
            HoldCheck::DeliveredRange => write!(
                f,
                "delivered (snapped) range change {v:.2} mm over limit {l:.2} mm"
            ),
            HoldCheck::RangeOutsideTable => write!(
                f,
                "new range {v:.2} mm outside the energy table (limit {l:.2} mm)"
            ),
            HoldCheck::EnergyOutsideSpan => write!(
                f,
                "new energy {v:.3} MeV/u outside the deliverable span (limit {l:.3} MeV/u)"
            ),
            HoldCheck::ShifterOutsideSpan => write!(
                f,
                "range shifter {v:.2} mm w.e. outside the deliverable span (limit {l:.2} mm)"
            ),
        }
    }
}

/// What a corrected frame looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptSummary {
    /// Spots corrected.
    pub spots: u32,
    /// The tumor shift used, patient mm.
    pub tumor_shift_mm: VectorMm,
    /// Largest lateral correction `|(Δx, Δy)|`, mm.
    pub max_lateral_mm: f64,
    /// Largest `|ΔWEPL|`, mm water.
    pub max_abs_delta_wepl_mm: f64,
    /// Largest `|snapped − requested depth|`, mm (0 without snapping).
    pub max_abs_snap_residual_mm: f64,
}

/// The adapt half: stateful only in the jump reference.
#[derive(Debug, Clone)]
pub struct Adapter {
    plan: Arc<AdaptPlan>,
    last_shift_mm: Option<VectorMm>,
}

/// `value ≤ limit`, false when either is NaN: an unmeasurable value never passes a limit.
/// `value` inside `[lo, hi]` (NaN is not), or a range-unavailable hold naming the bound it
/// crossed.
fn in_span(value: f64, lo: f64, hi: f64, check: HoldCheck, spot: Option<usize>) -> Result<(), HoldDetail> {
    if within(lo, value) && within(value, hi) {
        return Ok(());
    }
    let bound = if value < lo { lo } else { hi };
    Err(HoldDetail::new(
        HoldReason::RangeUnavailable,
        check,
        spot,
        value,
        bound,
    ))
}

fn within(value: f64, limit: f64) -> bool {
    matches!(
        value.partial_cmp(&limit),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

/// `Δ_iso = (s_l·SAD + x·s_z) / (SAD − d − s_z)`; parallel beam: `s_l`. Infinite where the
/// shifted target is at or above the virtual source.
fn lateral_mm(s_l: f64, s_z: f64, x: f64, d: f64, sad: f64) -> f64 {
    if !sad.is_finite() {
        return s_l;
    }
    let den = sad - d - s_z;
    if den > 0.0 {
        (s_l * sad + x * s_z) / den
    } else {
        f64::INFINITY
    }
}

impl Adapter {
    /// An adapter for a plan; no frame corrected yet (so no jump reference).
    pub fn new(plan: Arc<AdaptPlan>) -> Self {
        Adapter {
            plan,
            last_shift_mm: None,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &AdaptPlan {
        &self.plan
    }

    /// Forgets the last corrected shift, so the next frame is not checked for a jump (at
    /// session start, or by an operator after a hold on a real jump).
    pub fn reset_jump_reference(&mut self) {
        self.last_shift_mm = None;
    }

    /// The shift of the last corrected frame.
    pub fn jump_reference_mm(&self) -> Option<VectorMm> {
        self.last_shift_mm
    }

    /// Turns a frame's registration and measured WEPL into corrections in `out` (its buffers
    /// reused), or a hold. On a hold `out` is emptied (frame id kept, no spots, no mode) so
    /// nothing partial can be sent.
    pub fn adapt(
        &mut self,
        stamp: FrameStamp,
        reg: &Registration,
        wepl: &FrameWepl,
        out: &mut CorrectionSet,
    ) -> Result<AdaptSummary, HoldDetail> {
        out.clear();
        out.frame_id = stamp.frame_id;
        match self.fill(stamp, reg, wepl, out) {
            Ok(summary) => {
                self.last_shift_mm = Some(reg.tumor_shift_mm);
                Ok(summary)
            }
            Err(hold) => {
                out.clear();
                out.frame_id = stamp.frame_id;
                Err(hold)
            }
        }
    }

    fn fill(
        &self,
        stamp: FrameStamp,
        reg: &Registration,
        wepl: &FrameWepl,
        out: &mut CorrectionSet,
    ) -> Result<AdaptSummary, HoldDetail> {
        use HoldCheck as C;
        use HoldReason as R;
        let plan = &*self.plan;
        let o = &plan.options;
        let lim = &o.limits;
        let ncc = reg.similarity_ncc;
        if !reg.is_usable() {
            return Err(HoldDetail::new(
                R::RegistrationFailed,
                C::RegistrationNotUsable,
                None,
                ncc,
                f64::NAN,
            ));
        }
        if !within(lim.min_ncc, ncc) {
            return Err(HoldDetail::new(
                R::RegistrationFailed,
                C::SimilarityBelowMin,
                None,
                ncc,
                lim.min_ncc,
            ));
        }
        let s = reg.tumor_shift_mm;
        if !s.iter().all(|v| v.is_finite()) {
            return Err(HoldDetail::new(
                R::RegistrationFailed,
                C::NonFiniteShift,
                None,
                f64::NAN,
                f64::NAN,
            ));
        }
        if let Some(prev) = self.last_shift_mm {
            let jump = (s - prev).norm();
            if !within(jump, lim.max_jump_mm) {
                return Err(HoldDetail::new(
                    R::JumpOverLimit,
                    C::Jump,
                    None,
                    jump,
                    lim.max_jump_mm,
                ));
            }
        }
        // Bit equality: the range half copies the very shift it was given.
        let off = (wepl.shift_mm - s).norm();
        if off != 0.0 {
            return Err(HoldDetail::new(
                R::InternalFault,
                C::WeplShiftMismatch,
                None,
                off,
                0.0,
            ));
        }
        if wepl.wepl_mm.len() != plan.spots.len() {
            return Err(HoldDetail::new(
                R::InternalFault,
                C::WeplCountMismatch,
                None,
                wepl.wepl_mm.len() as f64,
                plan.spots.len() as f64,
            ));
        }
        out.spots.reserve(plan.spots.len());
        let mut summary = AdaptSummary {
            spots: 0,
            tumor_shift_mm: s,
            max_lateral_mm: 0.0,
            max_abs_delta_wepl_mm: 0.0,
            max_abs_snap_residual_mm: 0.0,
        };
        for (n, (g, &w)) in plan.spots.iter().zip(&wepl.wepl_mm).enumerate() {
            let at = Some(n);
            if !w.is_finite() {
                return Err(HoldDetail::new(
                    R::RangeUnavailable,
                    C::WeplUnavailable,
                    at,
                    f64::NAN,
                    f64::NAN,
                ));
            }
            let b = &plan.beams[g.beam];
            let s_z = s.dot(&b.to_source);
            let dx = lateral_mm(s.dot(&b.bev_x), s_z, g.x_mm, g.d_mm, b.sad_mm[0]);
            let dy = lateral_mm(s.dot(&b.bev_y), s_z, g.y_mm, g.d_mm, b.sad_mm[1]);
            let lateral = dx.hypot(dy);
            if !within(lateral, lim.max_lateral_mm) {
                return Err(HoldDetail::new(
                    R::LateralOverLimit,
                    C::Lateral,
                    at,
                    lateral,
                    lim.max_lateral_mm,
                ));
            }
            let delta = f64::from(w) - g.planned_depth_mm;
            if !within(delta.abs(), lim.max_range_mm) {
                return Err(HoldDetail::new(
                    R::RangeOverLimit,
                    C::Range,
                    at,
                    delta,
                    lim.max_range_mm,
                ));
            }
            let (energy, shifter) = match o.mode {
                RangeMode::RangeShifter => {
                    let rs = -delta;
                    let [lo, hi] = o.range_shifter_span_mm_we;
                    in_span(rs, lo, hi, C::ShifterOutsideSpan, at)?;
                    (g.energy_mev_u, rs)
                }
                RangeMode::Energy => {
                    let want = g.model_range_mm + delta;
                    let e = match &o.energy_model {
                        EnergyModel::Csda => {
                            let table = &plan.tables[g.table];
                            let (lo, hi) = table.range_span_mm();
                            in_span(want, lo, hi, C::RangeOutsideTable, at)?;
                            match table.energy_mev_u(want) {
                                Ok(e) => e,
                                Err(_) => {
                                    return Err(HoldDetail::new(
                                        R::RangeUnavailable,
                                        C::RangeOutsideTable,
                                        at,
                                        want,
                                        hi,
                                    ))
                                }
                            }
                        }
                        EnergyModel::FacilitySnap(f) => {
                            let d = f.depths_mm();
                            let (lo, hi) = (d[0], d[d.len() - 1]);
                            in_span(want, lo, hi, C::RangeOutsideTable, at)?;
                            let snapped = match f.snap_depth(want) {
                                Ok(sn) => sn,
                                Err(_) => {
                                    return Err(HoldDetail::new(
                                        R::RangeUnavailable,
                                        C::RangeOutsideTable,
                                        at,
                                        want,
                                        hi,
                                    ))
                                }
                            };
                            let delivered = snapped.depth_mm - g.model_range_mm;
                            if !within(delivered.abs(), lim.max_range_mm) {
                                return Err(HoldDetail::new(
                                    R::RangeOverLimit,
                                    C::DeliveredRange,
                                    at,
                                    delivered,
                                    lim.max_range_mm,
                                ));
                            }
                            summary.max_abs_snap_residual_mm =
                                summary.max_abs_snap_residual_mm.max(snapped.residual_mm.abs());
                            snapped.energy_mev_u
                        }
                    };
                    let [lo, hi] = o.energy_span_mev_u;
                    in_span(e, lo, hi, C::EnergyOutsideSpan, at)?;
                    (e, 0.0)
                }
            };
            summary.max_lateral_mm = summary.max_lateral_mm.max(lateral);
            summary.max_abs_delta_wepl_mm = summary.max_abs_delta_wepl_mm.max(delta.abs());
            out.spots.push(SpotCorrection {
                spot_index: n as u32,
                x_mm: (g.x_mm + dx) as f32,
                y_mm: (g.y_mm + dy) as f32,
                energy_mev_u: energy as f32,
                range_shifter_mm_we: shifter as f32,
            });
        }
        summary.spots = out.spots.len() as u32;
        out.frame_id = stamp.frame_id;
        out.valid_until_unix_ns = stamp.valid_until_unix_ns;
        out.mode = Some(o.mode);
        out.tumor_shift_mm = [s.x as f32, s.y as f32, s.z as f32];
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateral_formula_reduces_to_magnification_and_parallel() {
        // s_z = 0: s·SAD/(SAD − d).
        assert!((lateral_mm(2.0, 0.0, 40.0, 100.0, 7000.0) - 2.0 * 7000.0 / 6900.0).abs() < 1e-12);
        assert_eq!(lateral_mm(2.0, 5.0, 40.0, 100.0, f64::INFINITY), 2.0);
        assert_eq!(lateral_mm(2.0, 0.0, 40.0, 7000.0, 7000.0), f64::INFINITY);
        let h = HoldDetail::new(
            HoldReason::LateralOverLimit,
            HoldCheck::Lateral,
            Some(3),
            7.25,
            5.0,
        );
        assert_eq!(
            h.to_string(),
            "lateral_over_limit: spot 3: lateral correction 7.25 mm over limit 5.00 mm"
        );
    }
}
