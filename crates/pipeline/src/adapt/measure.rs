//! The range half: traces a frame with each beam's rays moved by the lateral part of the
//! tumor shift, and reads every spot's new water depth at its shifted target.

use crate::range::{Hlut, SpotTracer};
use crate::units::VectorMm;
use crate::volume::{CtVolume, Volume};

use super::{AdaptError, AdaptPlan};

impl AdaptPlan {
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
