//! The range stage: every spot's planned target mapped through the registration's motion,
//! its ray moved to pass through it and traced through the frame; each spot's new water
//! depth lands in the work item's `FrameWepl`.

use std::sync::Arc;

use super::deform::FullMotion;
use super::session::Session;
use super::stages::StageIo;
use super::work::Outcome;
use crate::correction::HoldReason;

/// Runs until the pipeline stops.
pub fn run(mut io: StageIo, session: Arc<Session>) {
    // The planned tracer's rays and spots without its profiles: each ray is traced into one
    // scratch buffer and its spots measured at once, so a frame writes a few pages, not
    // megabytes (ARCHITECTURE.md, "Memory touched per frame"). A warm trace does not allocate.
    let mut tracer = session.planned.without_profiles();
    while let Some(w) = io.next_frame() {
        io.process(w, |w| {
            let Some(reg) = w.registration else {
                w.decide(
                    Outcome::Held(HoldReason::InternalFault),
                    format_args!("range stage got a frame without a registration"),
                );
                return;
            };
            // with deformable tracking, every spot through rigid ∘ deformation
            let measured = match &w.target {
                Some(t) => session.adapt_plan.measure_ct(
                    &mut tracer,
                    &w.volume,
                    &session.hlut,
                    &FullMotion(&t.registration),
                    &mut w.wepl,
                ),
                None => session.adapt_plan.measure_ct(
                    &mut tracer,
                    &w.volume,
                    &session.hlut,
                    &session.adapt_plan.motion_of(&reg),
                    &mut w.wepl,
                ),
            };
            if let Err(e) = measured {
                w.decide(
                    Outcome::Held(HoldReason::RangeUnavailable),
                    format_args!("range not measurable in this frame: {e}"),
                );
            }
        });
    }
}
