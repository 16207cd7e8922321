//! The register stage: warm registration from the previous good answer; cold (from the
//! identity: ingest has placed the frame in planning coordinates, by the setup registration
//! when there is one) for the first frame and after any failure.
//!
//! With deformable tracking on (`[deformable]`), every frame the rigid answer can carry is
//! then registered deformably on top of it ([`super::deform`]): cold, or with
//! `deformable.warm_start` warm from the last accepted field (cold after a hold). A rigid answer that failed only its residual-deformation check
//! is carried too — the deformation is what describes such a frame, and its own checks
//! decide. The frame holds when the deformable result is implausible
//! (`deformation_implausible`) or the target's volume changed beyond the limit
//! (`target_volume_changed`, re-plan needed); otherwise its registration's target position
//! and tumor shift are those of the planned target centroid through rigid ∘ deformation.

use std::sync::Arc;

use super::deform::{FrameTarget, TargetHold};
use super::session::Session;
use super::stages::StageIo;
use super::work::{Outcome, Work};
use crate::adapt::registration_hold_reason;
use crate::correction::HoldReason;
use crate::geometry::RigidTransform;
use crate::register::{
    DeformableRegistrar, DisplacementField, QualityFailure, Registrar, Registration, Verdict,
};

/// Runs until the pipeline stops.
pub fn run(mut io: StageIo, session: Arc<Session>) {
    let start = RigidTransform::identity();
    // Warm-up before the stage says it is ready: a cold registration of the planning CT onto
    // itself allocates the moving pyramid's buffers and faults their pages in, work the first
    // frame would otherwise pay for inside its latency budget (measured: 16 ms cold
    // registrations of the reference workload's first frame took up to 49 ms without it).
    let mut registrar = Registrar::new(session.options.register.clone());
    let _ = registrar.register(&session.fixed, &session.planning_ct, &start);
    let mut deformer = DeformableRegistrar::new();
    let mut warm_field: Option<DisplacementField> = None;
    let mut last_good: Option<RigidTransform> = None;
    while let Some(w) = io.next_frame() {
        io.process(w, |w| {
            let result = match &last_good {
                Some(prev) => registrar.register_warm(&session.fixed, &w.volume, prev),
                None => registrar.register(&session.fixed, &w.volume, &start),
            };
            match result {
                Ok(reg) if reg.is_usable() || (session.deform.is_some() && only_residual(&reg)) => {
                    last_good = Some(reg.transform);
                    let mut reg = reg;
                    if session.deform.is_some() {
                        deform(&session, &mut deformer, &mut warm_field, w, &mut reg);
                    }
                    w.registration = Some(reg);
                }
                Ok(reg) => {
                    last_good = None;
                    warm_field = None;
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
                    warm_field = None;
                    w.decide(
                        Outcome::Held(HoldReason::RegistrationFailed),
                        format_args!("registration failed: {e}"),
                    );
                }
            }
        });
    }
}

/// A converged rigid answer whose only failed check is the residual-deformation one.
fn only_residual(reg: &Registration) -> bool {
    reg.converged
        && matches!(
            reg.verdict,
            Verdict::Reject(QualityFailure::ResidualDeformation { .. })
        )
}

/// The deformable half of the stage for one frame (deformable tracking on).
fn deform(
    session: &Session,
    deformer: &mut DeformableRegistrar,
    warm_field: &mut Option<DisplacementField>,
    w: &mut Work,
    reg: &mut Registration,
) {
    let Some(d) = &session.deform else {
        return;
    };
    let warm = warm_field.as_ref().filter(|_| d.settings.warm_start);
    let target: FrameTarget = match d.register(deformer, &w.volume, &reg.transform, warm) {
        Ok(t) => t,
        Err(e) => {
            *warm_field = None;
            w.decide(
                Outcome::Held(HoldReason::DeformationImplausible),
                format_args!("deformable registration failed: {e}"),
            );
            return;
        }
    };
    match target.check(d.settings.max_volume_change_pct) {
        Err(hold) => {
            let t = &target.target;
            match hold {
                TargetHold::Implausible(why) => {
                    // a rejected field is no start for the next frame
                    *warm_field = None;
                    w.decide(
                        Outcome::Held(hold.reason()),
                        format_args!(
                            "deformable registration implausible: {why:?} (J min {:.3}, |u| max {:.1} mm, inverse error {:.2} mm, NCC {:.4})",
                            target.registration.jacobian_min,
                            target.registration.field_max_mm,
                            target.registration.inverse_error_mm,
                            target.registration.similarity_ncc
                        ),
                    );
                }
                TargetHold::VolumeChanged {
                    change_pct,
                    limit_pct,
                } => {
                    // the field is sound, only the tumor changed: a good start for the next
                    *warm_field = Some(target.registration.field.clone());
                    w.decide(
                        Outcome::Held(hold.reason()),
                        format_args!(
                            "target volume {:.2} cc is {change_pct:+.1}% from the plan's {:.2} cc, beyond ±{limit_pct} %: re-plan needed",
                            t.volume_cc, t.planned_volume_cc
                        ),
                    );
                }
            }
        }
        Ok(()) => {
            keep_field(d.settings.warm_start, warm_field, &target);
            // The residual deformation the rigid check saw is what the field describes.
            if only_residual(reg) {
                reg.verdict = Verdict::Accept;
            }
            reg.target_mm = target.registration.map_mm(&reg.target_planned_mm);
            reg.tumor_shift_mm = reg.target_mm - reg.target_planned_mm;
        }
    }
    w.target = Some(Box::new(target));
}

/// Keeps the frame's field as the next frame's start (a copy of a few MB: only when warm
/// starts are on).
fn keep_field(warm_start: bool, warm_field: &mut Option<DisplacementField>, target: &FrameTarget) {
    *warm_field = warm_start.then(|| target.registration.field.clone());
}
