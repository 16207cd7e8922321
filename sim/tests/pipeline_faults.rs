//! Fault injection through the whole chain (real STS_001 CT, target and plan; real UDP link
//! and controller; real audit file). Each fault must end in a HOLD within one frame — the
//! frame it hits — and leave an audit record saying why.

mod support;

use std::time::Duration;

use ionguide::audit::{self, AuditRecord};
use ionguide::correction::{HoldReason, RejectReason};
use ionguide::pipeline::{Outcome, Stage};
use ionguide_sim::delivery::controller::{BeamState, Cause};
use support::dicom_edit::{frame_bytes, load_objects, Edit};
use support::rig::{data, Rig, RigOptions};

fn slices() -> Vec<dicom_object::DefaultDicomObject> {
    load_objects(&data("STS_001/image"))
}

fn frame_record(records: &[AuditRecord], frame_id: u64) -> audit::FrameRecord {
    records
        .iter()
        .find_map(|r| match r {
            AuditRecord::Frame(f) if f.frame_id == frame_id => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no audit record for frame {frame_id}"))
}

/// Frame 1 clean (corrected, beam on), then the faulty frame 2: it must be held for
/// `reason` (or rejected for `rejected`, the controller told `reason`), the controller must
/// be held, and the audit log must say so.
fn second_frame_holds(
    mut rig: Rig,
    faulty: Vec<Vec<u8>>,
    reason: HoldReason,
    rejected: Option<RejectReason>,
) -> Vec<AuditRecord> {
    let objs = slices();
    rig.push(frame_bytes(&objs, 1, &Edit::default()));
    let first = rig.next_event();
    assert_eq!(
        first.ticket.outcome,
        Outcome::Corrected,
        "the clean frame is corrected"
    );
    assert!(
        rig.controller()
            .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::BeamOn),
        "beam on after the clean frame"
    );
    rig.push(faulty);
    let second = rig.next_event();
    let expected = match rejected {
        Some(why) => {
            assert_eq!(why.hold_reason(), reason, "the hold a {why} rejection sends");
            Outcome::Rejected(why)
        }
        None => Outcome::Held(reason),
    };
    assert_eq!(second.ticket.outcome, expected, "the faulty frame's outcome");
    assert!(
        rig.controller()
            .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::Held),
        "the controller holds the beam"
    );
    let held_for = rig.controller().with(|c| {
        c.events()
            .iter()
            .rev()
            .find(|e| e.to == BeamState::Held)
            .map(|e| e.cause.hold_reason())
    });
    assert_eq!(held_for, Some(Some(reason)), "the controller was told why");
    let records = rig.stop();
    let r = frame_record(&records, second.ticket.frame_id);
    assert_eq!(r.hold_reason, Some(reason));
    assert_eq!(r.reject_reason, rejected, "the audit record's reject reason");
    assert!(!r.detail.is_empty(), "the audit record says why");
    assert_eq!(
        r.outcome,
        Some(if rejected.is_some() {
            audit::Outcome::Rejected
        } else {
            audit::Outcome::Held
        })
    );
    records
}

#[test]
fn a_stage_slowed_past_the_budget_holds() {
    let rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 600\nvalidity_ms = 3000\n".into(),
        ..RigOptions::default()
    });
    let objs = slices();
    let faulty = frame_bytes(&objs, 2, &Edit::default());
    // slow the range stage only after the first frame went through
    let shared = rig.pipeline.as_ref().unwrap().shared().clone();
    let records = {
        let objs1 = frame_bytes(&objs, 1, &Edit::default());
        let mut rig = rig;
        rig.push(objs1);
        assert_eq!(rig.next_event().ticket.outcome, Outcome::Corrected);
        assert!(rig
            .controller()
            .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::BeamOn));
        shared.set_stage_delay(Stage::Range, Duration::from_millis(700));
        rig.push(faulty);
        let ev = rig.next_event();
        assert_eq!(ev.ticket.outcome, Outcome::Held(HoldReason::DeadlineMissed));
        assert!(
            ev.ticket.sent_at.is_some_and(|t| t > ev.ticket.deadline),
            "held after the deadline, never sent"
        );
        assert!(rig
            .controller()
            .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::Held));
        rig.stop()
    };
    let r = frame_record(&records, 2);
    assert_eq!(r.hold_reason, Some(HoldReason::DeadlineMissed));
    assert!(
        r.detail.contains("range"),
        "the detail names the stage: {}",
        r.detail
    );
    // and where the time went: the range stage's 700 ms, not a wait for a thread
    let range_ms: f64 = r
        .detail
        .split(" · ")
        .find_map(|part| part.strip_prefix("range "))
        .and_then(|v| v.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no range time in the timeline: {}", r.detail));
    assert!(
        (700.0..1500.0).contains(&range_ms),
        "range took {range_ms} ms: {}",
        r.detail
    );
    assert!(matches!(r.corrections, audit::Corrections::None) || corrections_empty(&r.corrections));
}

fn corrections_empty(c: &audit::Corrections) -> bool {
    match c {
        audit::Corrections::None => true,
        audit::Corrections::Full { spots, .. } => spots.is_empty(),
        _ => false,
    }
}

#[test]
fn a_corrupt_frame_is_rejected() {
    let objs = slices();
    let mut faulty = frame_bytes(&objs, 2, &Edit::default());
    // cut every slice in the middle of its pixel data
    for o in &mut faulty {
        let n = o.len() - 20_000;
        o.truncate(n);
    }
    second_frame_holds(
        Rig::start(RigOptions::default()),
        faulty,
        HoldReason::CorruptFrame,
        Some(RejectReason::Unparseable),
    );
}

/// A structure set sent to the frame source by mistake is refused as not a CT, naming its
/// SOP class, and the controller is told `corrupt_frame` as before.
#[test]
fn a_structure_set_sent_by_mistake_is_rejected_as_not_ct() {
    let mut rig = Rig::start(RigOptions::default());
    let rs = std::fs::read(data("STS_001/mask/RS.dcm")).unwrap();
    let refused = rig
        .try_push(vec![rs])
        .expect_err("the source refuses a structure set");
    assert_eq!(refused.reject_reason(), RejectReason::NotCt);
    let ev = rig.next_event();
    assert_eq!(ev.ticket.outcome, Outcome::Rejected(RejectReason::NotCt));
    let records = rig.stop();
    let r = frame_record(&records, ev.ticket.frame_id);
    assert_eq!(r.outcome, Some(audit::Outcome::Rejected));
    assert_eq!(r.reject_reason, Some(RejectReason::NotCt));
    assert_eq!(r.hold_reason, Some(HoldReason::CorruptFrame));
    assert!(
        r.detail.contains("1.2.840.10008.5.1.4.1.1.481.3") && r.detail.contains("RT Structure Set Storage"),
        "the detail names the SOP class: {}",
        r.detail
    );
}

#[test]
fn a_frame_of_another_patient_is_rejected() {
    let objs = slices();
    let faulty = frame_bytes(
        &objs,
        2,
        &Edit {
            patient_id: Some("SOMEONE_ELSE".into()),
            ..Edit::default()
        },
    );
    second_frame_holds(
        Rig::start(RigOptions::default()),
        faulty,
        HoldReason::WrongPatient,
        Some(RejectReason::WrongPatient),
    );
}

#[test]
fn a_frame_of_another_imaging_session_is_rejected() {
    let objs = slices();
    let faulty = frame_bytes(
        &objs,
        2,
        &Edit {
            frame_of_reference_uid: Some("2.25.123456789".into()),
            ..Edit::default()
        },
    );
    second_frame_holds(
        Rig::start(RigOptions::default()),
        faulty,
        HoldReason::FrameOfReferenceChanged,
        Some(RejectReason::FrameOfReferenceChanged),
    );
}

#[test]
fn a_registration_failure_holds() {
    let objs = slices();
    let faulty = frame_bytes(
        &objs,
        2,
        &Edit {
            flat_pixels: Some(1000),
            ..Edit::default()
        },
    );
    second_frame_holds(
        Rig::start(RigOptions::default()),
        faulty,
        HoldReason::RegistrationFailed,
        None,
    );
}

#[test]
fn a_correction_over_its_limit_holds() {
    let objs = slices();
    let faulty = frame_bytes(
        &objs,
        2,
        &Edit {
            shift_mm: [4.0, 0.0, 0.0],
            ..Edit::default()
        },
    );
    let rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 1500\nvalidity_ms = 3000\n[limits]\nmax_lateral_mm = 2.0\nmax_jump_mm = 20.0\n"
            .into(),
        ..RigOptions::default()
    });
    let records = second_frame_holds(rig, faulty, HoldReason::LateralOverLimit, None);
    let r = frame_record(&records, 2);
    assert!(r.detail.contains('2'), "the detail names the limit: {}", r.detail);
}

#[test]
fn a_jump_holds_until_an_operator_restarts_tracking_and_the_action_is_audited() {
    use ionguide::pipeline::{OperatorAction, OPERATOR_ACTION_CODE};
    let objs = slices();
    let mut rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 1500\nvalidity_ms = 3000\n[limits]\nmax_jump_mm = 3.0\n".into(),
        ..RigOptions::default()
    });
    let shifted = |n: u32, x: f64| {
        frame_bytes(
            &objs,
            n,
            &Edit {
                shift_mm: [x, 0.0, 0.0],
                ..Edit::default()
            },
        )
    };
    rig.push(shifted(1, 0.0));
    assert_eq!(rig.next_event().ticket.outcome, Outcome::Corrected);
    // the patient moved 5 mm at once: held, and held again at the new position (the jump
    // reference is the last corrected frame, which only an operator may move)
    rig.push(shifted(2, 5.0));
    assert_eq!(
        rig.next_event().ticket.outcome,
        Outcome::Held(HoldReason::JumpOverLimit)
    );
    rig.push(shifted(3, 5.0));
    assert_eq!(
        rig.next_event().ticket.outcome,
        Outcome::Held(HoldReason::JumpOverLimit)
    );
    let operator = rig.pipeline.as_ref().unwrap().operator();
    operator.act(OperatorAction::RestartTracking, "Dr. Ada").unwrap();
    rig.push(shifted(4, 5.0));
    assert_eq!(rig.next_event().ticket.outcome, Outcome::Corrected);
    let records = rig.stop();
    let action = records
        .iter()
        .find_map(|r| match r {
            AuditRecord::Link {
                code,
                detail,
                unix_ns,
            } if *code == OPERATOR_ACTION_CODE => Some((detail.clone(), *unix_ns)),
            _ => None,
        })
        .expect("the action is on record");
    assert_eq!(action.0, "operator \"Dr. Ada\": restart tracking");
    assert!(action.1 > 0);
}

#[test]
fn a_silent_controller_holds_the_next_frame() {
    let mut rig = Rig::start(RigOptions::default());
    let objs = slices();
    rig.push(frame_bytes(&objs, 1, &Edit::default()));
    assert_eq!(rig.next_event().ticket.outcome, Outcome::Corrected);
    // the controller goes away; acknowledgements stop
    rig.controller.take().unwrap().stop().unwrap();
    std::thread::sleep(Duration::from_millis(900));
    rig.push(frame_bytes(&objs, 2, &Edit::default()));
    let ev = rig.next_event();
    assert_eq!(ev.ticket.outcome, Outcome::Held(HoldReason::LinkSilent));
    let records = rig.stop();
    assert!(
        records
            .iter()
            .any(|r| matches!(r, AuditRecord::Link { code, .. } if *code == HoldReason::LinkSilent.code())),
        "a link record names the silence"
    );
    assert_eq!(
        frame_record(&records, 2).hold_reason,
        Some(HoldReason::LinkSilent)
    );
}

/// Frame 1 corrected with the beam on; then `attack` is sent to the controller. It must
/// hold the beam, count the datagram as rejected, and the pipeline's audit log must carry the
/// controller's report of the hold.
fn controller_holds_on(attack: impl FnOnce(&support::proxy::Proxy)) {
    let mut rig = Rig::start(RigOptions {
        via_proxy: true,
        ..RigOptions::default()
    });
    let objs = slices();
    rig.push(frame_bytes(&objs, 1, &Edit::default()));
    assert_eq!(rig.next_event().ticket.outcome, Outcome::Corrected);
    let on = rig
        .controller()
        .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::BeamOn);
    assert!(
        on,
        "beam on: {:?}",
        rig.controller().with(|c| (c.events().to_vec(), c.counters()))
    );
    let rejected_before = rig.controller().with(|c| c.counters());
    attack(rig.proxy.as_ref().unwrap());
    assert!(
        rig.controller()
            .wait_until(Duration::from_secs(5), |c| c.state() == BeamState::Held
                && matches!(c.events().last().map(|e| e.cause), Some(Cause::Rejected(_)))),
        "the controller holds on the rejected datagram"
    );
    let rejected_after = rig.controller().with(|c| c.counters());
    assert_ne!(rejected_before, rejected_after, "the datagram was counted");
    // a heartbeat's acknowledgement reports the hold back; the next frame resumes the beam
    std::thread::sleep(Duration::from_millis(200));
    rig.push(frame_bytes(&objs, 2, &Edit::default()));
    assert_eq!(rig.next_event().ticket.outcome, Outcome::Corrected);
    assert!(rig
        .controller()
        .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::BeamOn));
    let records = rig.stop();
    assert!(
        records
            .iter()
            .any(|r| matches!(r, AuditRecord::Link { detail, .. } if detail.contains("controller reports the beam held"))),
        "the audit log records the controller's hold"
    );
}

#[test]
fn a_forged_message_is_refused_and_holds() {
    controller_holds_on(|proxy| {
        // a genuine heartbeat with one bit flipped in its payload: the HMAC no longer matches
        let mut forged = proxy
            .captured
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|d| d.len() < 200)
            .cloned()
            .expect("a short message was captured");
        forged[20] ^= 0x01;
        proxy.inject(&forged);
    });
}

#[test]
fn a_replayed_message_is_refused_and_holds() {
    controller_holds_on(|proxy| {
        // a genuine, correctly signed datagram sent again
        let old = proxy.captured.lock().unwrap()[1].clone();
        proxy.inject(&old);
    });
}
