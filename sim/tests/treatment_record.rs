//! The treatment record from a real session (STS_001 CT, target and plan; real UDP link; the
//! controller simulator delivering the plan's spots; real audit file) with an ionguide hold,
//! an operator's restart and a resume: the record rebuilt from the audit log holds exactly
//! the pieces the controller's own log says it delivered, to the spot and the bit, in order;
//! the DICOM object written from it reads back the same and dcmtk's `dcmdump` reads it.

mod support;

use std::time::Duration;

use ionguide::correction::HoldReason;
use ionguide::dicom::rtrecord::{read_treatment_record, write_treatment_record, RecordIds};
use ionguide::dicom::write::Producer;
use ionguide::pipeline::{OperatorAction, Outcome};
use ionguide::record::TerminationStatus;
use ionguide_sim::delivery::controller::{BeamState, DeliveryModel};
use ionguide_sim::delivery::timeline::{ScanAxes, SynchrotronModel};
use support::dicom_edit::{frame_bytes, load_objects, Edit};
use support::rig::{data, Rig, RigOptions};

/// Every spot a 5 ms dwell (weights of about 1/30: 6.7 weight units a second), scanning and
/// switching instantaneous: the plan's ~3 600 spots take ~18 s, longer than the test, and
/// every instant of beam-on time is inside a dwell, so a hold always splits a spot.
fn fast_delivery(plan: &ionguide::plan::IonPlan) -> DeliveryModel {
    let machine = SynchrotronModel {
        energy_switch_s: 0.0,
        energy_switch_refills_spill: false,
        spill_recharge_s: 0.0,
        particles_per_spill: 1e12,
        max_spill_length_s: None,
        particle_rate_per_s: 0.0333 / 0.005,
        scan_speed_mm_per_s: [1e12, 1e12],
        scan_axes: ScanAxes::Simultaneous,
        spot_settle_s: 0.0,
        beam_switch_s: 0.0,
    };
    DeliveryModel::from_plan(plan, &machine, 1.0).unwrap()
}

#[test]
fn the_record_holds_exactly_what_the_controller_delivered_through_a_hold_and_a_resume() {
    let plan_path = data("plans/STS_001/RPSTS001G0G90.dcm");
    let (plan, _) = ionguide::dicom::rtplan::read_plan(&plan_path).unwrap();
    let mut rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 1500\nvalidity_ms = 10000\n[limits]\nmax_jump_mm = 3.0\n".into(),
        delivery: Some(fast_delivery(&plan)),
        ..RigOptions::default()
    });
    let objs = load_objects(&data("STS_001/image"));
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
    let beam = |state| {
        rig.controller()
            .wait_until(Duration::from_secs(10), |c| c.state() == state)
    };
    rig.push(shifted(1, 0.0));
    let first = rig.next_event();
    assert_eq!(first.ticket.outcome, Outcome::Corrected);
    assert!(beam(BeamState::BeamOn));
    std::thread::sleep(Duration::from_millis(300));
    // a 5 mm jump: ionguide holds, twice
    rig.push(shifted(2, 5.0));
    assert_eq!(
        rig.next_event().ticket.outcome,
        Outcome::Held(HoldReason::JumpOverLimit)
    );
    assert!(beam(BeamState::Held));
    let at_hold = rig.controller().with(|c| c.delivery_log().len());
    rig.push(shifted(3, 5.0));
    assert_eq!(
        rig.next_event().ticket.outcome,
        Outcome::Held(HoldReason::JumpOverLimit)
    );
    assert_eq!(
        rig.controller().with(|c| c.delivery_log().len()),
        at_hold,
        "nothing is delivered while held"
    );
    // the operator restarts tracking; delivery resumes where it stopped
    let operator = rig.pipeline.as_ref().unwrap().operator();
    operator.act(OperatorAction::RestartTracking, "Dr. Ada").unwrap();
    rig.push(shifted(4, 5.0));
    let fourth = rig.next_event();
    assert_eq!(fourth.ticket.outcome, Outcome::Corrected);
    assert!(beam(BeamState::BeamOn));
    std::thread::sleep(Duration::from_millis(300));
    let records = rig.stop();
    let controller = rig.controller.take().unwrap().stop().unwrap();
    let truth = controller.delivery_log();
    assert!(
        truth.len() > at_hold && at_hold > 0,
        "delivered before and after the hold"
    );

    let record = ionguide::treatment::from_audit(&records, &rig.session.plan).unwrap();
    let pieces: Vec<_> = record.pieces().copied().collect();
    assert_eq!(pieces.len(), truth.len(), "as many pieces on record as delivered");
    assert_eq!(
        pieces, truth,
        "the record's pieces are the controller's, in order, bit for bit"
    );

    // the hold split one spot: its first piece under frame 1, its rest under frame 4,
    // together its planned weight
    let split = truth[at_hold - 1].spot.spot_index;
    let parts: Vec<_> = truth.iter().filter(|p| p.spot.spot_index == split).collect();
    assert_eq!(parts.len(), 2, "the spot the hold interrupted is in two pieces");
    assert_eq!(
        (parts[0].frame_id, parts[1].frame_id),
        (first.ticket.frame_id, fourth.ticket.frame_id)
    );
    let weight = plan.beams[0]
        .layers
        .iter()
        .flat_map(|l| &l.spots)
        .nth(split as usize)
        .unwrap()
        .weight;
    assert!((parts[0].meterset + parts[1].meterset - weight).abs() <= 1e-12 * weight);
    // spots in plan order, each once except the split one
    for w in truth.windows(2) {
        assert!(
            w[1].spot.spot_index == w[0].spot.spot_index + 1 || w[1].spot.spot_index == w[0].spot.spot_index
        );
    }
    // the session ended with beam 0 unfinished: the shutdown ended it
    assert_eq!(record.beams.len(), 1);
    assert_eq!(record.beams[0].termination.status, TerminationStatus::Operator);
    assert_eq!(record.beams[0].termination.code, "SHUTDOWN");

    // the DICOM object: written, read back the same, read by dcmtk
    let producer = Producer {
        manufacturer: "ionguide-test",
        implementation_class_uid: "2.25.1234567",
        implementation_version_name: "IONGUIDE_TEST",
    };
    let ids = RecordIds {
        sop_instance_uid: "2.25.99".into(),
        series_instance_uid: "2.25.98".into(),
        series_number: 1,
    };
    let bytes =
        write_treatment_record(&record, &std::fs::read(&plan_path).unwrap(), &ids, &producer).unwrap();
    let back = read_treatment_record(&bytes).unwrap();
    assert_eq!(back.record.pieces().copied().collect::<Vec<_>>(), truth);
    let path = rig.dir.path().join("RT.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new("dcmdump")
        .args(["-E"])
        .arg(&path)
        .output()
        .expect("dcmtk's dcmdump on PATH (CI installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_beam_cut_by_an_ionguide_hold_is_recorded_as_such() {
    let plan_path = data("plans/STS_001/RPSTS001G0G90.dcm");
    let (plan, _) = ionguide::dicom::rtplan::read_plan(&plan_path).unwrap();
    let mut rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 1500\nvalidity_ms = 10000\n[limits]\nmax_jump_mm = 3.0\n".into(),
        delivery: Some(fast_delivery(&plan)),
        ..RigOptions::default()
    });
    let objs = load_objects(&data("STS_001/image"));
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
    assert!(rig
        .controller()
        .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::BeamOn));
    std::thread::sleep(Duration::from_millis(200));
    rig.push(shifted(2, 5.0));
    let held = rig.next_event();
    assert_eq!(held.ticket.outcome, Outcome::Held(HoldReason::JumpOverLimit));
    assert!(rig
        .controller()
        .wait_until(Duration::from_secs(10), |c| c.state() == BeamState::Held));
    let records = rig.stop();
    let controller = rig.controller.take().unwrap().stop().unwrap();
    let record = ionguide::treatment::from_audit(&records, &rig.session.plan).unwrap();
    assert_eq!(
        record.pieces().copied().collect::<Vec<_>>(),
        controller.delivery_log()
    );
    let t = &record.beams[0].termination;
    assert_eq!(t.status, TerminationStatus::Machine);
    assert_eq!(t.code, format!("HOLD_{}", HoldReason::JumpOverLimit.code()));
    assert_eq!(
        t.description,
        format!("ionguide hold: jump_over_limit (frame {})", held.ticket.frame_id)
    );
}
