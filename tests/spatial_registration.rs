//! Spatial Registration objects written by an independent encoder — dcmtk's `dump2dcm`, from a
//! text dump with the matrices typed in — read into the room setup. The expected maps are
//! worked out by hand from the standard's definition (a matrix takes its Frame of
//! Reference's points into the object's registered one), not from the reader.

use std::path::{Path, PathBuf};
use std::process::Command;

use ionguide::dicom::spatial_registration::{read_room_setup, RegistrationError};
use ionguide::geometry::RoomSetup;
use ionguide::units::PointMm;

const PLANNING: &str = "1.2.826.0.1.3680043.9.7777.1";
const ROOM: &str = "1.2.826.0.1.3680043.9.7777.2";
const OTHER: &str = "1.2.826.0.1.3680043.9.7777.3";
const IDENTITY: [f64; 16] = [1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.];
/// Room → planning: `x_p = −y_r + 10`, `y_p = x_r + 20`, `z_p = z_r + 30` (a quarter turn
/// about z and a shift).
const QUARTER_TURN: [f64; 16] = [0., -1., 0., 10., 1., 0., 0., 20., 0., 0., 1., 30., 0., 0., 0., 1.];

/// One Registration Sequence item: a Frame of Reference and its matrices (type, 16 values).
struct Item<'a> {
    uid: &'a str,
    matrices: Vec<(&'a str, [f64; 16])>,
}

fn values(m: &[f64; 16]) -> String {
    m.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join("\\")
}

/// Writes a Spatial Registration object with dcmtk's `dump2dcm` and returns its path.
fn dump2dcm(dir: &Path, name: &str, sop_class: &str, registered: &str, items: &[Item]) -> PathBuf {
    let mut d = format!(
        "(0002,0001) OB 00\\01\n(0002,0002) UI [{sop_class}]\n(0002,0003) UI [1.2.3.4.5]\n\
         (0002,0010) UI [1.2.840.10008.1.2.1]\n(0008,0016) UI [{sop_class}]\n(0008,0018) UI [1.2.3.4.5]\n\
         (0008,0060) CS [REG]\n(0010,0020) LO [STS_001]\n(0020,000d) UI [1.2.3.4.6]\n\
         (0020,000e) UI [1.2.3.4.7]\n(0020,0052) UI [{registered}]\n(0070,0308) SQ (Sequence)\n"
    );
    for item in items {
        d += &format!(
            "(fffe,e000) na (Item)\n(0020,0052) UI [{}]\n(0070,0309) SQ (Sequence)\n(fffe,e000) na (Item)\n(0070,030a) SQ (Sequence)\n",
            item.uid
        );
        for (kind, m) in &item.matrices {
            d += &format!(
                "(fffe,e000) na (Item)\n(3006,00c6) DS [{}]\n(0070,030c) CS [{kind}]\n(fffe,e00d) na (ItemDelimitationItem)\n",
                values(m)
            );
        }
        d += "(fffe,e0dd) na (SequenceDelimitationItem)\n(fffe,e00d) na (ItemDelimitationItem)\n\
              (fffe,e0dd) na (SequenceDelimitationItem)\n(fffe,e00d) na (ItemDelimitationItem)\n";
    }
    d += "(fffe,e0dd) na (SequenceDelimitationItem)\n";
    let dump = dir.join(format!("{name}.dump"));
    let out = dir.join(format!("{name}.dcm"));
    std::fs::write(&dump, d).unwrap();
    let status = Command::new("dump2dcm")
        .arg(&dump)
        .arg(&out)
        .status()
        .expect("dump2dcm (Debian package dcmtk, installed by .ci/run) runs");
    assert!(status.success(), "dump2dcm failed on {}", dump.display());
    out
}

fn assert_maps(setup: &RoomSetup, pairs: &[([f64; 3], [f64; 3])]) {
    for (p, r) in pairs {
        let got = setup.planning_to_room.apply(&PointMm::new(p[0], p[1], p[2]));
        let err = (got - PointMm::new(r[0], r[1], r[2])).norm();
        assert!(err < 1e-9, "planning {p:?} → room {got:?}, expected {r:?}");
    }
}

/// Planning points and where the quarter-turn registration puts them in the room.
const QUARTER_TURN_PAIRS: [([f64; 3], [f64; 3]); 3] = [
    ([10., 20., 30.], [0., 0., 0.]),
    ([10., 21., 30.], [1., 0., 0.]),
    ([9., 20., 35.], [0., 1., 5.]),
];

#[test]
fn planning_registered_with_the_room_mapped_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dump2dcm(
        dir.path(),
        "reg",
        "1.2.840.10008.5.1.4.1.1.66.1",
        PLANNING,
        &[
            Item {
                uid: PLANNING,
                matrices: vec![("RIGID", IDENTITY)],
            },
            Item {
                uid: ROOM,
                matrices: vec![("RIGID", QUARTER_TURN)],
            },
        ],
    );
    let setup = read_room_setup(&path, PLANNING).unwrap();
    assert_eq!(setup.room_frame_of_reference_uid, ROOM);
    assert_eq!(setup.planning_frame_of_reference_uid, PLANNING);
    assert_maps(&setup, &QUARTER_TURN_PAIRS);
}

#[test]
fn room_registered_with_the_planning_ct_mapped_into_it_and_no_identity_item() {
    // The same geometry seen from the other side: the room is the registered Frame of
    // Reference (no item of its own) and the planning CT maps into it by the inverse:
    // x_r = y_p − 20, y_r = −x_p + 10, z_r = z_p − 30.
    let planning_to_room = [
        0., 1., 0., -20., -1., 0., 0., 10., 0., 0., 1., -30., 0., 0., 0., 1.,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dump2dcm(
        dir.path(),
        "reg",
        "1.2.840.10008.5.1.4.1.1.66.1",
        ROOM,
        &[Item {
            uid: PLANNING,
            matrices: vec![("RIGID", planning_to_room)],
        }],
    );
    let setup = read_room_setup(&path, PLANNING).unwrap();
    assert_eq!(setup.room_frame_of_reference_uid, ROOM);
    assert_maps(&setup, &QUARTER_TURN_PAIRS);
}

#[test]
fn matrices_of_one_item_apply_in_sequence_order() {
    // First the quarter turn without its shift, then a pure shift (10, 20, 30): together the
    // quarter-turn registration. In the other order the shift would be turned too.
    let turn = [0., -1., 0., 0., 1., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.];
    let shift = [1., 0., 0., 10., 0., 1., 0., 20., 0., 0., 1., 30., 0., 0., 0., 1.];
    let dir = tempfile::tempdir().unwrap();
    let path = dump2dcm(
        dir.path(),
        "reg",
        "1.2.840.10008.5.1.4.1.1.66.1",
        PLANNING,
        &[Item {
            uid: ROOM,
            matrices: vec![("RIGID", turn), ("AFFINE", shift)],
        }],
    );
    let setup = read_room_setup(&path, PLANNING).unwrap();
    assert_maps(&setup, &QUARTER_TURN_PAIRS);
}

fn read_err(sop_class: &str, registered: &str, items: &[Item], planning: &str) -> RegistrationError {
    let dir = tempfile::tempdir().unwrap();
    let path = dump2dcm(dir.path(), "reg", sop_class, registered, items);
    read_room_setup(&path, planning).unwrap_err()
}

#[test]
fn what_cannot_give_a_rigid_room_setup_is_refused_naming_why() {
    const SRO: &str = "1.2.840.10008.5.1.4.1.1.66.1";
    let mut scaled = QUARTER_TURN;
    scaled[1] = -1.02; // a 2 % scale along one axis
    let e = read_err(
        SRO,
        PLANNING,
        &[Item {
            uid: ROOM,
            matrices: vec![("RIGID", IDENTITY), ("RIGID_SCALE", scaled)],
        }],
        PLANNING,
    );
    assert!(
        matches!(
            e,
            RegistrationError::NotRigid {
                item: 1,
                matrix: 2,
                ..
            }
        ),
        "{e}"
    );

    let e = read_err(
        SRO,
        PLANNING,
        &[Item {
            uid: ROOM,
            matrices: vec![("PERSPECTIVE", QUARTER_TURN)],
        }],
        PLANNING,
    );
    assert!(
        matches!(e, RegistrationError::UnknownMatrixType { ref found, .. } if found == "PERSPECTIVE"),
        "{e}"
    );

    // the planning CT's Frame of Reference is not among those registered
    let e = read_err(
        SRO,
        ROOM,
        &[Item {
            uid: OTHER,
            matrices: vec![("RIGID", QUARTER_TURN)],
        }],
        PLANNING,
    );
    assert!(
        matches!(e, RegistrationError::PlanningNotRegistered { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains(OTHER) && e.to_string().contains(ROOM),
        "{e}"
    );

    // two candidates for the room
    let e = read_err(
        SRO,
        PLANNING,
        &[
            Item {
                uid: ROOM,
                matrices: vec![("RIGID", QUARTER_TURN)],
            },
            Item {
                uid: OTHER,
                matrices: vec![("RIGID", IDENTITY)],
            },
        ],
        PLANNING,
    );
    assert!(
        matches!(e, RegistrationError::RoomFrameOfReference { ref found, .. } if found.len() == 2),
        "{e}"
    );

    // a deformable registration is another SOP class
    let e = read_err(
        "1.2.840.10008.5.1.4.1.1.66.3",
        PLANNING,
        &[Item {
            uid: ROOM,
            matrices: vec![("RIGID", QUARTER_TURN)],
        }],
        PLANNING,
    );
    assert!(matches!(e, RegistrationError::WrongSopClass { .. }), "{e}");

    // a file cut in half
    let dir = tempfile::tempdir().unwrap();
    let path = dump2dcm(
        dir.path(),
        "reg",
        SRO,
        PLANNING,
        &[Item {
            uid: ROOM,
            matrices: vec![("RIGID", QUARTER_TURN)],
        }],
    );
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.dcm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_room_setup(&cut, PLANNING).unwrap_err();
    assert!(matches!(e, RegistrationError::Open { .. }), "{e}");
    assert!(e.to_string().contains("cut.dcm"), "{e}");
}

#[test]
fn maps_that_only_together_stop_being_a_setup_are_refused() {
    // (found by hand while fuzzing) each matrix passes on its own; their product does not
    const SRO: &str = "1.2.840.10008.5.1.4.1.1.66.1";
    let room_item = |matrices| Item { uid: ROOM, matrices };

    // 1000 scalings by 1.00004, each within the rigidity tolerance, compound to 4 %
    let mut creep = IDENTITY;
    creep[0] = 1.00004;
    let e = read_err(
        SRO,
        PLANNING,
        &[room_item(vec![("RIGID", creep); 1000])],
        PLANNING,
    );
    assert!(
        matches!(
            e,
            RegistrationError::CombinedNotRigid {
                item: 1,
                matrices: 1000,
                ..
            }
        ),
        "{e}"
    );

    // two shifts of 1e308 mm overflow to infinity
    let mut huge = IDENTITY;
    huge[3] = 1e308;
    let e = read_err(
        SRO,
        PLANNING,
        &[room_item(vec![("RIGID", huge), ("RIGID", huge)])],
        PLANNING,
    );
    assert!(
        matches!(e, RegistrationError::ImplausibleTranslation { .. }),
        "{e}"
    );

    // a finite but impossible 1 235 km between two scanners' coordinates
    let mut far = IDENTITY;
    far[3] = 1.2345678901e9;
    let e = read_err(SRO, PLANNING, &[room_item(vec![("RIGID", far)])], PLANNING);
    assert!(
        matches!(e, RegistrationError::ImplausibleTranslation { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("10000"), "{e}");

    // 9.9 m is still a setup
    let mut near = IDENTITY;
    near[3] = 9_900.0;
    let dir = tempfile::tempdir().unwrap();
    let path = dump2dcm(
        dir.path(),
        "reg",
        SRO,
        PLANNING,
        &[room_item(vec![("RIGID", near)])],
    );
    let setup = read_room_setup(&path, PLANNING).unwrap();
    assert_maps(&setup, &[([0.0, 0.0, 0.0], [-9_900.0, 0.0, 0.0])]);
}
