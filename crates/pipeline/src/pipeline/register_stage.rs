//! The register stage: warm registration from the previous good answer; cold (from the
//! identity: ingest has placed the frame in planning coordinates, by the setup registration
//! when there is one) for the first frame and after any failure.

use std::sync::Arc;

use super::session::Session;
use super::stages::StageIo;
use super::work::Outcome;
use crate::adapt::registration_hold_reason;
use crate::correction::HoldReason;
use crate::geometry::RigidTransform;
use crate::register::Registrar;

/// Runs until the pipeline stops.
pub fn run(mut io: StageIo, session: Arc<Session>) {
    let start = RigidTransform::identity();
    // Warm-up before the stage says it is ready: a cold registration of the planning CT onto
    // itself allocates the moving pyramid's buffers and faults their pages in, work the first
    // frame would otherwise pay for inside its latency budget (measured: 16 ms cold
    // registrations of the reference workload's first frame took up to 49 ms without it).
    let mut registrar = Registrar::new(session.options.register.clone());
    let _ = registrar.register(&session.fixed, &session.planning_ct, &start);
    let mut last_good: Option<RigidTransform> = None;
    while let Some(w) = io.next_frame() {
        io.process(w, |w| {
            let result = match &last_good {
                Some(prev) => registrar.register_warm(&session.fixed, &w.volume, prev),
                None => registrar.register(&session.fixed, &w.volume, &start),
            };
            match result {
                Ok(reg) if reg.is_usable() => {
                    last_good = Some(reg.transform);
                    w.registration = Some(reg);
                }
                Ok(reg) => {
                    last_good = None;
                    w.decide(
                        Outcome::Held(registration_hold_reason(&reg)),
                        format_args!(
                            "registration not usable: {:?}, converged {}, NCC {:.3}, overlap {:.2}",
                            reg.verdict, reg.converged, reg.similarity_ncc, reg.overlap_fraction
                        ),
                    );
                    w.registration = Some(reg);
                }
                Err(e) => {
                    last_good = None;
                    w.decide(
                        Outcome::Held(HoldReason::RegistrationFailed),
                        format_args!("registration failed: {e}"),
                    );
                }
            }
        });
    }
}
