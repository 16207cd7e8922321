//! The range half: maps every spot's planned target through the target's motion, traces the
//! frame with each ray moved to pass through its mapped reference point, and reads every
//! spot's new water depth at its mapped target.

use crate::geometry::{PointMap, RigidTransform};
use crate::range::{Hlut, SpotTracer};
use crate::register::Registration;
use crate::units::{PointMm, VectorMm};
use crate::volume::{CtVolume, Volume};

use super::{AdaptError, AdaptPlan};

impl AdaptPlan {
    /// The target's motion the adapt stage uses for a registration: its full rigid transform,
    /// or (with [`AdaptOptions::follow_rotation`](super::AdaptOptions::follow_rotation)
    /// off) a pure translation by its tumor shift. Both halves must be given the same one.
    pub fn motion_of(&self, reg: &Registration) -> RigidTransform {
        if self.options.follow_rotation {
            reg.transform
        } else {
            RigidTransform::from_rotation_vector(VectorMm::zeros(), reg.tumor_shift_mm)
        }
    }

    /// Range half on a CT frame: maps every spot's planned target through `motion`, traces
    /// `frame` (a copy of the planned tracer, with or without profiles:
    /// [`SpotTracer::without_profiles`]) through `ct` with every ray moved to pass through
    /// its mapped reference point, then fills `out` with every spot's water depth to its
    /// mapped target (NaN where it lies outside the traced frame).
    pub fn measure_ct<M: PointMap + ?Sized>(
        &self,
        frame: &mut SpotTracer,
        ct: &CtVolume,
        hlut: &Hlut,
        motion: &M,
        out: &mut FrameWepl,
    ) -> Result<(), AdaptError> {
        self.prepare(frame, motion, out)?;
        frame.trace_frame_ct_rays_moved_at(ct, hlut, &out.offsets, &out.query_t_mm, &mut out.wepl_mm)?;
        out.valid = true;
        Ok(())
    }

    /// Range half on an RSP frame, as [`Self::measure_ct`].
    pub fn measure_rsp<M: PointMap + ?Sized>(
        &self,
        frame: &mut SpotTracer,
        rsp: &Volume<f32>,
        motion: &M,
        out: &mut FrameWepl,
    ) -> Result<(), AdaptError> {
        self.prepare(frame, motion, out)?;
        frame.trace_frame_rays_moved_at(rsp, &out.offsets, &out.query_t_mm, &mut out.wepl_mm)?;
        out.valid = true;
        Ok(())
    }

    /// Checks the tracer, maps the targets, moves each ray and asks each spot's WEPL where
    /// its mapped target projects on its moved ray.
    fn prepare<M: PointMap + ?Sized>(
        &self,
        frame: &SpotTracer,
        motion: &M,
        out: &mut FrameWepl,
    ) -> Result<(), AdaptError> {
        // Invalidate first: on any error below, `out` describes no motion at all, so the
        // adapt half holds instead of using a stale measurement.
        out.valid = false;
        out.wepl_mm.clear();
        out.target_mm.clear();
        out.max_ray_miss_mm = f64::NAN;
        if frame.spots().len() != self.spots.len()
            || frame.beam_count() != self.beams.len()
            || frame.rays().len() != self.rays.len()
        {
            return Err(AdaptError::TracerMismatch {
                what: "spots",
                tracer: frame.spots().len(),
                plan: self.spots.len(),
            });
        }
        out.offsets.clear();
        for r in &self.rays {
            // The ray moves across itself by the perpendicular part of its reference point's
            // displacement, so the moved ray passes exactly through the mapped reference.
            let p_ref = r.origin + r.dir * r.t_ref_mm;
            let disp = motion.map_mm(p_ref) - p_ref;
            out.offsets.push(disp - r.dir * disp.dot(&r.dir));
        }
        out.query_t_mm.clear();
        let mut max_miss = 0.0f64;
        for g in &self.spots {
            let q = motion.map_mm(g.target_mm);
            out.target_mm.push(q);
            let r = &self.rays[g.ray];
            let v = q - (r.origin + out.offsets[g.ray]);
            let t = v.dot(&r.dir);
            max_miss = max_miss.max((v - r.dir * t).norm());
            out.query_t_mm.push(t);
        }
        out.max_ray_miss_mm = max_miss;
        Ok(())
    }
}

/// The range half's output: each spot's water depth to its mapped target in one frame, for
/// one motion. Reused frame to frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameWepl {
    /// Per spot, plan order: WEPL from the ray start to the mapped target, mm (NaN: the
    /// target lies outside the traced frame).
    pub wepl_mm: Vec<f32>,
    /// Per spot, plan order: the mapped target point the depth was measured for, patient mm.
    pub target_mm: Vec<PointMm>,
    /// Largest distance of a spot's mapped target from the moved ray its depth was read on,
    /// mm (the depth is read at the target's projection on that ray): 0 for a pure
    /// translation, at most `sin θ ·` half a ray's spread of target depths for a rotation by
    /// θ. NaN: no valid measurement.
    pub max_ray_miss_mm: f64,
    /// Whether the last measurement succeeded.
    valid: bool,
    /// Per ray: its offset.
    offsets: Vec<VectorMm>,
    /// Per spot: where on its moved ray the WEPL is measured, mm.
    query_t_mm: Vec<f64>,
}

impl FrameWepl {
    /// Buffers for a plan (so the first frame does not allocate either).
    pub fn for_plan(plan: &AdaptPlan) -> Self {
        FrameWepl {
            wepl_mm: Vec::with_capacity(plan.spot_count()),
            target_mm: Vec::with_capacity(plan.spot_count()),
            max_ray_miss_mm: f64::NAN,
            valid: false,
            offsets: Vec::with_capacity(plan.rays.len()),
            query_t_mm: Vec::with_capacity(plan.spot_count()),
        }
    }

    /// A frame's measurement carried to a target that moved on since, without tracing
    /// ([`Adapter::adapt_shifted`](super::Adapter::adapt_shifted)): every planned target
    /// through `motion` (the frame's motion, then the move) and each spot's depth from
    /// `wepl_mm`, in plan order. The ray miss is not measured (NaN): no ray was traced.
    pub(crate) fn set_carried<M: PointMap + ?Sized>(
        &mut self,
        plan: &AdaptPlan,
        motion: &M,
        wepl_mm: impl Iterator<Item = f32>,
    ) {
        self.valid = false;
        self.target_mm.clear();
        self.target_mm
            .extend(plan.spots.iter().map(|g| motion.map_mm(g.target_mm)));
        self.wepl_mm.clear();
        self.wepl_mm.extend(wepl_mm);
        self.max_ray_miss_mm = f64::NAN;
        self.valid = self.wepl_mm.len() == self.target_mm.len();
    }

    /// Whether it holds a measurement (the last `measure_*` succeeded).
    pub fn is_valid(&self) -> bool {
        self.valid
    }
}
