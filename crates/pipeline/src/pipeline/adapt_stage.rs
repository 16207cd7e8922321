//! The adapt stage: registration + measured depths → one correction per spot, or a hold
//! with the limit that tripped.

use std::sync::Arc;

use super::deform::FullMotion;
use super::session::Session;
use super::stages::StageIo;
use super::surrogate_stage::EvidenceTap;
use super::work::Outcome;
use crate::adapt::{Adapter, FrameStamp};
use crate::correction::HoldReason;

/// Runs until the pipeline stops. With surrogate tracking on, `tap` hands every corrected
/// frame's registration and WEPL to the surrogate stage.
pub fn run(mut io: StageIo, session: Arc<Session>, tap: Option<EvidenceTap>) {
    let mut adapter = Adapter::new(session.adapt_plan.clone());
    let mut jump_resets_seen = 0;
    while let Some(w) = io.next_frame() {
        // an operator's reset (restart tracking) applies from the next frame on
        let jump_resets = io.shared.operator.jump_resets();
        if jump_resets != jump_resets_seen {
            jump_resets_seen = jump_resets;
            adapter.reset_jump_reference();
        }
        io.process(w, |w| {
            let Some(reg) = w.registration else {
                w.decide(
                    Outcome::Held(HoldReason::InternalFault),
                    format_args!("adapt stage got a frame without a registration"),
                );
                return;
            };
            let stamp = FrameStamp {
                frame_id: w.ticket.frame_id,
                valid_until_unix_ns: w.ticket.valid_until_unix_ns,
            };
            let adapted = match &mut w.target {
                Some(t) => {
                    let motion = FullMotion(&t.registration);
                    let result = adapter.adapt_with(stamp, &reg, &motion, &w.wepl, &mut w.corrections);
                    if result.is_ok() {
                        let margin_mm = session
                            .deform
                            .as_ref()
                            .map_or(0.0, |d| d.settings.spot_off_margin_mm);
                        t.switch_off(session.adapt_plan.spot_targets_mm(), margin_mm);
                    }
                    result
                }
                None => adapter.adapt(stamp, &reg, &w.wepl, &mut w.corrections),
            };
            match adapted {
                Err(hold) => w.decide(Outcome::Held(hold.reason), format_args!("{hold}")),
                Ok(_) => {
                    if let Some(tap) = &tap {
                        tap.offer(&w.ticket, &reg, &w.wepl);
                    }
                }
            }
        });
    }
}
