//! An in-room scanner with its own Frame of Reference: the real STS_001 CT re-placed 250 mm
//! and a few degrees away from the planning coordinates (as another scanner's table and
//! origin would put it), with known tumor shifts on top. With the setup registration (a DICOM
//! Spatial Registration object) named in the configuration, the pipeline tracks the shifts
//! and every spot's correction matches a truth computed from the shift and the beam geometry
//! alone; without it, the same frames are held — never corrected from 250 mm off.

mod support;

use std::path::Path;

use ionguide::audit::AuditRecord;
use ionguide::correction::RejectReason;
use ionguide::dicom::spatial_registration::{write_room_setup_bytes, RegistrationIds};
use ionguide::geometry::{RigidTransform, RoomSetup};
use ionguide::pipeline::Outcome;
use ionguide::units::VectorMm;
use support::dicom_edit::{frame_bytes, load_objects, Edit};
use support::rig::{data, Rig, RigOptions};
use support::truth::check_against_truth;

const ROOM_FOR: &str = "1.2.826.0.1.3680043.9.7777.20";

/// Planning → in-room scanner coordinates: turned 1.5°, −1°, 3° and moved (−120, 250, −900) mm.
fn planning_to_room() -> RigidTransform {
    RigidTransform::from_xyz_deg([1.5, -1.0, 3.0], VectorMm::new(-120.0, 250.0, -900.0))
}

fn planning_for(objects: &[dicom_object::DefaultDicomObject]) -> String {
    objects[0]
        .element(dicom_dictionary_std::tags::FRAME_OF_REFERENCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string()
}

/// Writes the setup registration for `planning_for` → [`ROOM_FOR`].
fn write_registration(dir: &Path, planning_for: &str) -> std::path::PathBuf {
    let setup = RoomSetup {
        planning_to_room: planning_to_room(),
        planning_frame_of_reference_uid: planning_for.to_string(),
        room_frame_of_reference_uid: ROOM_FOR.into(),
    };
    let bytes = write_room_setup_bytes(
        &setup,
        &RegistrationIds {
            patient_id: "STS_001".into(),
            patient_name: "STS_001".into(),
            study_instance_uid: "1.2.826.0.1.3680043.9.7777.21".into(),
            series_instance_uid: "1.2.826.0.1.3680043.9.7777.22".into(),
            sop_instance_uid: "1.2.826.0.1.3680043.9.7777.23".into(),
            content_date: "20261129".into(),
            content_time: "100000".into(),
        },
    )
    .unwrap();
    let path = dir.join("setup_registration.dcm");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn room_edit(shift_mm: [f64; 3]) -> Edit {
    Edit {
        shift_mm,
        frame_of_reference_uid: Some(ROOM_FOR.into()),
        planning_to_room: Some(planning_to_room()),
        ..Edit::default()
    }
}

#[test]
fn frames_of_another_scanner_are_tracked_through_the_setup_registration() {
    let objects = load_objects(&data("STS_001/image"));
    let registration_dir = tempfile::tempdir().unwrap();
    let registration = write_registration(registration_dir.path(), &planning_for(&objects));
    let mut rig = Rig::start(RigOptions {
        planning_toml: format!("setup_registration = \"{}\"", registration.display()),
        extra_toml: "[timing]\nbudget_ms = 3000\nvalidity_ms = 6000\n".into(),
        ..RigOptions::default()
    });
    let shifts_mm = [[0.0, 0.0, 0.0], [2.0, -1.5, 3.0]];
    for (k, shift_mm) in shifts_mm.iter().enumerate() {
        let frame = k as u32 + 1;
        rig.push(frame_bytes(&objects, frame, &room_edit(*shift_mm)));
        let ev = rig.next_event();
        assert_eq!(ev.ticket.outcome, Outcome::Corrected, "frame {frame}");
        let set = rig.applied_set(ev.ticket.frame_id);
        check_against_truth(&rig, &set, *shift_mm, frame as usize);
    }
    // a frame in the planning CT's own coordinates is not this session's scanner
    rig.push(frame_bytes(&objects, 3, &Edit::default()));
    let ev = rig.next_event();
    assert_eq!(
        ev.ticket.outcome,
        Outcome::Rejected(RejectReason::FrameOfReferenceChanged)
    );
    let detail = detail_of(&rig.stop(), ev.ticket.frame_id);
    assert!(detail.contains(ROOM_FOR), "{detail}");
}

/// The audit log's detail for frame `id`.
fn detail_of(records: &[AuditRecord], id: u64) -> String {
    records
        .iter()
        .find_map(|r| match r {
            AuditRecord::Frame(f) if f.frame_id == id => Some(f.detail.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("frame {id} is in the audit log"))
}

#[test]
fn without_the_setup_registration_the_same_frames_are_held() {
    let objects = load_objects(&data("STS_001/image"));
    let mut rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 3000\nvalidity_ms = 6000\n".into(),
        ..RigOptions::default()
    });
    let mut held = Vec::new();
    for frame in 1..=2u32 {
        rig.push(frame_bytes(&objects, frame, &room_edit([0.0; 3])));
        let ev = rig.next_event();
        held.push((ev.ticket.frame_id, ev.ticket.outcome));
    }
    assert_eq!(rig.controller().with(|c| c.counters()).applied_sets, 0);
    let records = rig.stop();
    for (id, outcome) in held {
        let detail = detail_of(&records, id);
        eprintln!("frame {id}: {outcome:?}: {detail}");
        assert!(
            matches!(outcome, Outcome::Held(_)),
            "frame {id}: {outcome:?}, {detail}"
        );
    }
}
