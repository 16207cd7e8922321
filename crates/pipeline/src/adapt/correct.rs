//! The adapt half: registration and measured WEPL → one correction per spot, or a hold.

use std::sync::Arc;

use crate::correction::{CorrectionSet, HoldReason, SpotCorrection};
use crate::geometry::PointMap;
use crate::register::Registration;
use crate::units::{Mm, MmWe, PointMm, VectorMm};

use super::energy::deliver;
use super::lateral::lateral_mm;
use super::limits::within;
use super::{AdaptPlan, FrameWepl, HoldCheck, HoldDetail};

/// The frame a correction set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameStamp {
    /// Frame id.
    pub frame_id: u64,
    /// Wall-clock time (ns since the UNIX epoch) after which the corrections are void.
    pub valid_until_unix_ns: u64,
}

/// What a corrected frame looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptSummary {
    /// Spots corrected.
    pub spots: u32,
    /// The tumor shift used, patient mm.
    pub tumor_shift_mm: VectorMm,
    /// Largest lateral correction `|(Δx, Δy)|` at the isocenter plane.
    pub max_lateral: Mm,
    /// Largest `|ΔWEPL|`.
    pub max_abs_delta_wepl: MmWe,
    /// Largest `|snapped − requested depth|` (0 without snapping).
    pub max_abs_snap_residual: MmWe,
    /// Largest distance of a spot's mapped target from the moved ray its depth was read on
    /// ([`FrameWepl::max_ray_miss_mm`]).
    pub max_ray_miss: Mm,
}

/// The adapt half: stateful only in the jump reference.
#[derive(Debug, Clone)]
pub struct Adapter {
    plan: Arc<AdaptPlan>,
    last_shift_mm: Option<VectorMm>,
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
    /// nothing partial can be sent. The target's motion is the plan's
    /// [`AdaptPlan::motion_of`] the registration — what the range half must have been given.
    pub fn adapt(
        &mut self,
        stamp: FrameStamp,
        reg: &Registration,
        wepl: &FrameWepl,
        out: &mut CorrectionSet,
    ) -> Result<AdaptSummary, HoldDetail> {
        let motion = self.plan.motion_of(reg);
        self.adapt_with(stamp, reg, &motion, wepl, out)
    }

    /// [`Self::adapt`] with the target's motion given: every spot's planned target goes
    /// through `motion` (the one the range half measured `wepl` for, checked point by point),
    /// and its lateral correction is the one whose ray passes through the mapped point.
    /// `reg` still gives the frame-level checks and the jump reference.
    pub fn adapt_with<M: PointMap + ?Sized>(
        &mut self,
        stamp: FrameStamp,
        reg: &Registration,
        motion: &M,
        wepl: &FrameWepl,
        out: &mut CorrectionSet,
    ) -> Result<AdaptSummary, HoldDetail> {
        out.clear();
        out.frame_id = stamp.frame_id;
        match self.fill(stamp, reg, motion, wepl, out) {
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

    /// Corrections for the tumor moved by `delta_mm` since the frame `reg` and `wepl` were
    /// measured on (a surrogate-predicted shift between CT frames), through the same limits
    /// as [`adapt`](Self::adapt). `scratch` is a reused buffer ([`FrameWepl::for_plan`]).
    ///
    /// Lateral: exact for the moved target, as for a frame (`reg.tumor_shift_mm + delta`).
    /// Range: each spot's frame WEPL plus `rsp_at_target ×` the part of `delta` along its
    /// beam (away from the source: deeper). This is the approximation of issue 14 ("the
    /// newest frame moved by the predicted shift"): it ignores the lateral part of `delta`
    /// moving the ray through other tissue (error: the frame's lateral WEPL gradient × the
    /// lateral move; zero in uniform tissue, up to the full density step where the moved ray
    /// crosses a rib or lung edge) and anatomy that moved otherwise than the tumor since the
    /// frame (the CT image is of its acquisition instant). Both stay bounded by the model's
    /// limit: a frame is checked against the model when it arrives.
    // The frame's evidence, the move and the caller's two reused buffers are separate
    // borrows on the per-sample hot path; bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn adapt_shifted(
        &mut self,
        stamp: FrameStamp,
        reg: &Registration,
        wepl: &[f32],
        delta_mm: VectorMm,
        rsp_at_target: f64,
        scratch: &mut FrameWepl,
        out: &mut CorrectionSet,
    ) -> Result<AdaptSummary, HoldDetail> {
        let mut moved = *reg;
        moved.tumor_shift_mm = reg.tumor_shift_mm + delta_mm;
        moved.target_mm = reg.target_mm + delta_mm;
        // The frame's motion (its rotation too, when followed), then the predicted move.
        let motion = ThenShift {
            first: self.plan.motion_of(reg),
            shift_mm: delta_mm,
        };
        let plan = &*self.plan;
        scratch.set_carried(
            plan,
            &motion,
            plan.spots.iter().zip(wepl).map(|(g, &w)| {
                // to_source points upstream; moving away from it adds depth
                let deeper_mm = -delta_mm.dot(&plan.beams[g.beam].to_source);
                (f64::from(w) + rsp_at_target * deeper_mm) as f32
            }),
        );
        self.adapt_with(stamp, &moved, &motion, scratch, out)
    }

    fn fill<M: PointMap + ?Sized>(
        &self,
        stamp: FrameStamp,
        reg: &Registration,
        motion: &M,
        wepl: &FrameWepl,
        out: &mut CorrectionSet,
    ) -> Result<AdaptSummary, HoldDetail> {
        use HoldCheck as C;
        use HoldReason as R;
        let plan = &*self.plan;
        let o = &plan.options;
        let lim = &o.limits;
        lim.check_registration(reg, self.last_shift_mm)?;
        let s = reg.tumor_shift_mm;
        if !wepl.is_valid() {
            return Err(HoldDetail::new(
                R::InternalFault,
                C::WeplShiftMismatch,
                None,
                f64::NAN,
                0.0,
            ));
        }
        if wepl.wepl_mm.len() != plan.spots.len() || wepl.target_mm.len() != plan.spots.len() {
            return Err(HoldDetail::new(
                R::InternalFault,
                C::WeplCountMismatch,
                None,
                wepl.wepl_mm.len() as f64,
                plan.spots.len() as f64,
            ));
        }
        out.spots.reserve(plan.spots.len());
        // Bare f64 in the per-spot loop; typed once, in the summary.
        let (mut max_lateral_mm, mut max_abs_delta_wepl_mm, mut max_abs_snap_residual_mm) =
            (0.0f64, 0.0f64, 0.0f64);
        for (n, ((g, &w), measured)) in plan
            .spots
            .iter()
            .zip(&wepl.wepl_mm)
            .zip(&wepl.target_mm)
            .enumerate()
        {
            let at = Some(n);
            let q = motion.map_mm(g.target_mm);
            // Bit equality: the range half mapped the same point through the same motion.
            if q != *measured {
                let off = (q - measured).norm();
                return Err(HoldDetail::new(
                    R::InternalFault,
                    C::WeplShiftMismatch,
                    at,
                    if off.is_nan() { f64::INFINITY } else { off },
                    0.0,
                ));
            }
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
            // This spot's own displacement: with a rotation, spots move differently.
            let u = q - g.target_mm;
            let u_z = u.dot(&b.to_source);
            let dx = lateral_mm(u.dot(&b.bev_x), u_z, g.x_mm, g.d_mm, b.sad_mm[0]);
            let dy = lateral_mm(u.dot(&b.bev_y), u_z, g.y_mm, g.d_mm, b.sad_mm[1]);
            let lateral = dx.hypot(dy);
            if !within(lateral, lim.max_lateral.get()) {
                return Err(HoldDetail::new(
                    R::LateralOverLimit,
                    C::Lateral,
                    at,
                    lateral,
                    lim.max_lateral.get(),
                ));
            }
            let delta = f64::from(w) - g.planned_depth_mm_we;
            if !within(delta.abs(), lim.max_range.get()) {
                return Err(HoldDetail::new(
                    R::RangeOverLimit,
                    C::Range,
                    at,
                    delta,
                    lim.max_range.get(),
                ));
            }
            let delivery = deliver(plan, g, delta, at)?;
            max_abs_snap_residual_mm = max_abs_snap_residual_mm.max(delivery.snap_residual_mm.abs());
            max_lateral_mm = max_lateral_mm.max(lateral);
            max_abs_delta_wepl_mm = max_abs_delta_wepl_mm.max(delta.abs());
            out.spots.push(SpotCorrection {
                spot_index: n as u32,
                x_mm: (g.x_mm + dx) as f32,
                y_mm: (g.y_mm + dy) as f32,
                energy_mev_u: delivery.energy_mev_u as f32,
                range_shifter_mm_we: delivery.range_shifter_mm_we as f32,
            });
        }
        let summary = AdaptSummary {
            spots: out.spots.len() as u32,
            tumor_shift_mm: s,
            max_lateral: Mm(max_lateral_mm),
            max_abs_delta_wepl: MmWe(max_abs_delta_wepl_mm),
            max_abs_snap_residual: MmWe(max_abs_snap_residual_mm),
            max_ray_miss: Mm(wepl.max_ray_miss_mm),
        };
        out.frame_id = stamp.frame_id;
        out.valid_until_unix_ns = stamp.valid_until_unix_ns;
        out.mode = Some(o.mode);
        out.tumor_shift_mm = [s.x as f32, s.y as f32, s.z as f32];
        Ok(summary)
    }
}

/// A motion followed by a translation (a frame's motion, then the move predicted since).
struct ThenShift<M> {
    first: M,
    shift_mm: VectorMm,
}

impl<M: PointMap> PointMap for ThenShift<M> {
    #[inline]
    fn map_mm(&self, p: PointMm) -> PointMm {
        self.first.map_mm(p) + self.shift_mm
    }
}
