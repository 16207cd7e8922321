//! The treatment record of a session, rebuilt from its audit log: what the controller
//! reported delivered (delivered-spots records, kind 8), grouped by beam and energy layer,
//! with each beam's termination read from the holds, operator actions, controller reports
//! and shutdown on record. Not from what was sent: a correction set that was never
//! delivered leaves no trace here.
//!
//! Rules, in the log's own order (one writer, so file order is event order):
//! - pieces are grouped into control-point deliveries: a new one starts when the energy
//!   layer changes or the controller turned the beam on again (an acknowledgement with the
//!   beam on after one with it off) — a spot interrupted by a hold appears in two;
//! - a beam whose every spot got its full planned meterset is `NORMAL`/`COMPLETED`;
//! - otherwise the cause is the first hold on record after the beam-on period its last
//!   piece belongs to: an ionguide hold (frame held or rejected, controller silent) is
//!   `MACHINE`/`HOLD_<code>`, the controller holding on its own `MACHINE`/`INTERLOCK`, an
//!   operator action `OPERATOR`/`OPERATOR`, the end of the session (the link stage's
//!   shutdown HOLD, or the daemon's shutdown record) `OPERATOR`/`SHUTDOWN`;
//!   none at all (a log cut short) is `UNKNOWN`.

use crate::audit::{AuditRecord, Outcome};
use crate::correction::{DeliveredSpot, HoldReason};
use crate::pipeline::operator::OPERATOR_ACTION_CODE;
use crate::plan::IonPlan;
use ionguide_core::record::{
    BeamDelivery, ControlPointDelivery, Termination, TerminationStatus, TreatmentRecord,
};

/// Why a treatment record cannot be built from a log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A delivered-spots record does not follow the one before it: a report was lost, so
    /// the record would be incomplete.
    #[error("delivered-spots record {record} starts at delivery {found}, expected {expected}: a controller report is missing")]
    Gap {
        /// Position of the record in the log (records read, 0-based).
        record: usize,
        /// The ordinal it should start at.
        expected: u64,
        /// The ordinal it starts at.
        found: u64,
    },
    /// A piece names a spot the plan does not have.
    #[error("delivered-spots record {record} names spot {spot_index}, the plan has {spots}")]
    UnknownSpot {
        /// Position of the record in the log.
        record: usize,
        /// The spot index.
        spot_index: u32,
        /// Spots in the plan.
        spots: usize,
    },
    /// The log's session is not the plan's.
    #[error("the log's session delivered plan {log}, not {plan}")]
    WrongPlan {
        /// Plan SOP Instance UID in the log's session start.
        log: String,
        /// The plan given.
        plan: String,
    },
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn hold_event(rec: &AuditRecord) -> Option<Termination> {
    let t = |status, code: &str, description: String| {
        Some(Termination {
            status,
            code: code.to_string(),
            description: cut(&description, 64),
        })
    };
    match rec {
        AuditRecord::Frame(f) if matches!(f.outcome, Some(Outcome::Held) | Some(Outcome::Rejected)) => {
            let r = f.hold_reason?;
            t(
                TerminationStatus::Machine,
                &format!("HOLD_{}", r.code()),
                format!("ionguide hold: {} (frame {})", r.name(), f.frame_id),
            )
        }
        AuditRecord::Link { code, detail, .. } if *code == OPERATOR_ACTION_CODE => {
            t(TerminationStatus::Operator, "OPERATOR", detail.clone())
        }
        AuditRecord::Link { code, detail, .. } if *code == HoldReason::LinkSilent.code() => t(
            TerminationStatus::Machine,
            &format!("HOLD_{code}"),
            format!("ionguide hold: link_silent ({detail})"),
        ),
        AuditRecord::Link { code, detail, .. } if *code == HoldReason::Shutdown.code() => t(
            TerminationStatus::Operator,
            "SHUTDOWN",
            format!("session ended ({detail})"),
        ),
        // the link stage's record of the controller holding on its own
        AuditRecord::Link { code: 0, detail, .. } => {
            t(TerminationStatus::Machine, "INTERLOCK", detail.clone())
        }
        AuditRecord::Shutdown { reason, .. } => t(
            TerminationStatus::Operator,
            "SHUTDOWN",
            format!("session ended: {reason}"),
        ),
        _ => None,
    }
}

/// The records of the last session in `records` (from its session start on; all of them
/// when there is none): a daemon appends every session to one log.
pub fn last_session(records: &[AuditRecord]) -> &[AuditRecord] {
    let start = records
        .iter()
        .rposition(|r| matches!(r, AuditRecord::SessionStart { .. }))
        .unwrap_or(0);
    &records[start..]
}

/// Builds the treatment record of the session in `records` (an audit log read in order)
/// for `plan`, the plan the session delivered.
pub fn from_audit(records: &[AuditRecord], plan: &IonPlan) -> Result<TreatmentRecord, RecordError> {
    // plan order: every spot's beam, layer and weight
    let mut at: Vec<(usize, usize, f64)> = Vec::new();
    for (bi, b) in plan.beams.iter().enumerate() {
        for (li, l) in b.layers.iter().enumerate() {
            at.extend(l.spots.iter().map(|s| (bi, li, s.weight)));
        }
    }
    let mut session_unix_ns = None;
    // the controller's log may predate the session: the first report sets where it stands
    let mut expected: Option<u64> = None;
    let mut epoch = 0u64;
    let mut beam_on = false;
    // per piece: (record position, epoch)
    let mut pieces: Vec<(usize, u64, DeliveredSpot)> = Vec::new();
    // positions of acknowledgements that turned the beam on
    let mut on_at: Vec<usize> = Vec::new();
    for (pos, rec) in records.iter().enumerate() {
        match rec {
            AuditRecord::SessionStart {
                unix_ns,
                plan_sop_uid,
                ..
            } => {
                if plan_sop_uid != &plan.sop_instance_uid {
                    return Err(RecordError::WrongPlan {
                        log: plan_sop_uid.clone(),
                        plan: plan.sop_instance_uid.clone(),
                    });
                }
                session_unix_ns.get_or_insert(*unix_ns);
            }
            AuditRecord::ControllerAck { beam_on: on, .. } => {
                if *on && !beam_on {
                    epoch += 1;
                    on_at.push(pos);
                }
                beam_on = *on;
            }
            AuditRecord::Delivered {
                first_ordinal, spots, ..
            } => {
                let want = *expected.get_or_insert(*first_ordinal);
                if *first_ordinal != want {
                    return Err(RecordError::Gap {
                        record: pos,
                        expected: want,
                        found: *first_ordinal,
                    });
                }
                expected = Some(want + spots.len() as u64);
                for s in spots {
                    if s.spot.spot_index as usize >= at.len() {
                        return Err(RecordError::UnknownSpot {
                            record: pos,
                            spot_index: s.spot.spot_index,
                            spots: at.len(),
                        });
                    }
                    pieces.push((pos, epoch, *s));
                }
            }
            _ => {}
        }
    }

    let mut beams: Vec<BeamDelivery> = Vec::new();
    let mut last_pos: Vec<usize> = Vec::new();
    let mut last_key: Option<(usize, usize, u64)> = None;
    for &(pos, ep, s) in &pieces {
        let (bi, li, _) = at[s.spot.spot_index as usize];
        if beams.last().is_none_or(|b| b.beam_index != bi) {
            let b = &plan.beams[bi];
            beams.push(BeamDelivery {
                beam_index: bi,
                beam_number: b.number,
                beam_name: b.name.clone(),
                radiation_type: b.radiation_type.clone(),
                specified_meterset: b.layers.iter().flat_map(|l| &l.spots).map(|s| s.weight).sum(),
                termination: Termination {
                    status: TerminationStatus::Unknown,
                    code: String::new(),
                    description: String::new(),
                },
                control_points: Vec::new(),
            });
            last_pos.push(pos);
            last_key = None;
        }
        let beam = beams.last_mut().expect("pushed above");
        if last_key != Some((bi, li, ep)) {
            beam.control_points.push(ControlPointDelivery {
                layer: li,
                nominal_energy_mev_u: plan.beams[bi].layers[li].energy_mev_u,
                spots: Vec::new(),
            });
            last_key = Some((bi, li, ep));
        }
        beam.control_points
            .last_mut()
            .expect("pushed above")
            .spots
            .push(s);
        *last_pos.last_mut().expect("pushed with the beam") = pos;
    }

    for (beam, &last) in beams.iter_mut().zip(&last_pos) {
        let mut got = vec![0.0f64; at.len()];
        for p in beam.pieces() {
            got[p.spot.spot_index as usize] += p.meterset;
        }
        let complete = at
            .iter()
            .enumerate()
            .filter(|(_, (bi, _, _))| *bi == beam.beam_index)
            .all(|(i, (_, _, w))| got[i] >= w * (1.0 - 1e-9));
        beam.termination = if complete {
            Termination {
                status: TerminationStatus::Normal,
                code: "COMPLETED".into(),
                description: "every spot delivered".into(),
            }
        } else {
            let from = on_at.iter().rev().find(|&&p| p < last).copied().unwrap_or(0);
            records[from..]
                .iter()
                .find_map(hold_event)
                .unwrap_or(Termination {
                    status: TerminationStatus::Unknown,
                    code: "UNKNOWN".into(),
                    description: "the log ends without a hold or a shutdown".into(),
                })
        };
    }
    let treatment_unix_ns = pieces
        .first()
        .map(|p| p.2.delivered_unix_ns)
        .or(session_unix_ns)
        .unwrap_or(0);
    Ok(TreatmentRecord {
        plan_sop_instance_uid: plan.sop_instance_uid.clone(),
        patient_id: plan.patient_id.clone(),
        treatment_unix_ns,
        beams,
    })
}
