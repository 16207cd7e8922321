//! A Spatial Registration object from outside → the room setup (planning CT → in-room
//! scanner). An accepted setup must be a proper rigid map with a finite translation between
//! the planning Frame of Reference asked for and a different one; written back with
//! `write_room_setup_bytes` it must read back to the same map within 1e-6 mm at a few points
//! (writing may refuse with a typed error).
#![no_main]

use ionguide::dicom::spatial_registration::{read_room_setup_bytes, write_room_setup_bytes, RegistrationIds};
use ionguide::geometry::RoomSetup;
use ionguide::units::PointMm;
use libfuzzer_sys::fuzz_target;

/// The planning CT's Frame of Reference in the seeds (`fuzz/seed.sh`), as in
/// `tests/spatial_registration.rs`.
const PLANNING_FOR: &str = "1.2.826.0.1.3680043.9.7777.1";

/// Points (mm) at which the written and read-back maps are compared: the origin and three
/// up to 1.3 m from it, in different directions.
const POINTS: [[f64; 3]; 4] = [
    [0.0, 0.0, 0.0],
    [100.0, -50.0, 30.0],
    [-250.0, 400.0, -1200.0],
    [600.0, 600.0, 600.0],
];

fn check_proper_rigid(setup: &RoomSetup) {
    let t = setup.planning_to_room.translation_mm;
    assert!(
        t.iter().all(|v| v.is_finite()),
        "accepted setup has a non-finite translation {t:?}"
    );
    let r = setup.planning_to_room.rotation.matrix();
    let gram = r.transpose() * r;
    // `<=` so that NaN fails too
    let orthonormal =
        (0..3).all(|i| (0..3).all(|j| (gram[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs() <= 1e-9));
    assert!(
        orthonormal,
        "accepted rotation is not orthonormal: RᵀR = {gram}, R = {r}"
    );
    let det = r.determinant();
    assert!(
        (det - 1.0).abs() <= 1e-9,
        "accepted rotation has determinant {det}, R = {r}"
    );
}

fn ids() -> RegistrationIds {
    RegistrationIds {
        patient_id: "FUZZ".into(),
        patient_name: "Fuzz^Input".into(),
        study_instance_uid: "1.2.826.0.1.3680043.9.7777.10".into(),
        series_instance_uid: "1.2.826.0.1.3680043.9.7777.11".into(),
        sop_instance_uid: "1.2.826.0.1.3680043.9.7777.12".into(),
        content_date: "20261129".into(),
        content_time: "090000".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(setup) = read_room_setup_bytes(data, "fuzz.dcm", PLANNING_FOR) else {
        return;
    };
    check_proper_rigid(&setup);
    assert_eq!(setup.planning_frame_of_reference_uid, PLANNING_FOR);
    assert_ne!(
        setup.room_frame_of_reference_uid, PLANNING_FOR,
        "the room's Frame of Reference is the planning one"
    );

    let Ok(bytes) = write_room_setup_bytes(&setup, &ids()) else {
        return;
    };
    let back =
        read_room_setup_bytes(&bytes, "written.dcm", PLANNING_FOR).expect("a written room setup reads back");
    check_proper_rigid(&back);
    assert_eq!(back.planning_frame_of_reference_uid, PLANNING_FOR);
    assert_eq!(
        back.room_frame_of_reference_uid, setup.room_frame_of_reference_uid,
        "the written setup names another room Frame of Reference"
    );
    for p in POINTS {
        let p = PointMm::new(p[0], p[1], p[2]);
        let a = setup.planning_to_room.apply(&p);
        let b = back.planning_to_room.apply(&p);
        let d = (a - b).norm();
        assert!(
            d <= 1e-6,
            "written and read back, planning {p:?} maps {d} mm apart: {a:?} vs {b:?} \
             (setup {:?}, read back {:?})",
            setup.planning_to_room,
            back.planning_to_room
        );
    }
});
