//! The `ionguide register` subcommand end to end on real series (STS_002, TCIA, CC BY 3.0).

use std::process::Command;

fn ionguide(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap()
}

/// `ionguide register` of `moving` onto STS_002 around its GTV, with `extra` arguments.
fn register_on_sts002(moving: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "register",
        "--fixed",
        "tests/data/STS_002/image",
        "--moving",
        moving,
        "--structures",
        "tests/data/STS_002/mask/RS.dcm",
        "--roi",
        "GTV_Mass_CT",
    ];
    args.extend_from_slice(extra);
    ionguide(&args)
}

#[test]
fn a_series_against_itself_is_the_identity_in_json() {
    let out = register_on_sts002("tests/data/STS_002/image", &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["translation_mm", "rotation_deg", "tumor_shift_mm"] {
        for x in v[key].as_array().unwrap() {
            assert!(x.as_f64().unwrap().abs() < 1e-3, "{key}: {v}");
        }
    }
    let m: Vec<f64> = v["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(m.len(), 16);
    for (i, x) in m.iter().enumerate() {
        let want = if i % 5 == 0 { 1.0 } else { 0.0 };
        assert!((x - want).abs() < 1e-4, "matrix {m:?}");
    }
    assert_eq!(v["converged"], true);
    assert!(v["similarity"].as_f64().unwrap() > 0.999);
    assert!(v["iterations"].as_u64().unwrap() > 0);
    assert!(v["elapsed_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_frame_off_the_region_is_reported_not_hidden() {
    // STS_003 lies elsewhere in patient space: nothing of it covers this STS_002 box
    let out = ionguide(&[
        "register",
        "--fixed",
        "tests/data/STS_002/image",
        "--moving",
        "tests/data/STS_003/image",
        "--box",
        "40,90,-600,120,170,-520",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["converged"], false);
    assert!(
        v["verdict"].as_str().unwrap().contains("InsufficientOverlap"),
        "{v}"
    );
}

#[test]
fn a_malformed_box_is_an_error() {
    let out = ionguide(&[
        "register",
        "--fixed",
        "tests/data/STS_002/image",
        "--moving",
        "tests/data/STS_002/image",
        "--box",
        "1,2,3",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 numbers"));
}

/// STS_002 re-placed as another scanner would describe it: every slice's position and
/// orientation mapped by `planning_to_room`, a new Frame of Reference.
fn write_room_copy(
    dir: &std::path::Path,
    planning_to_room: &ionguide::geometry::RigidTransform,
    room_for: &str,
) {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    use ionguide::units::{PointMm, VectorMm};
    let src = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/STS_002/image"
    ));
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let mut obj = dicom_object::open_file(&path).unwrap();
        let f = |tag| obj.element(tag).unwrap().to_multi_float64().unwrap();
        let (ipp, iop) = (
            f(tags::IMAGE_POSITION_PATIENT),
            f(tags::IMAGE_ORIENTATION_PATIENT),
        );
        let p = planning_to_room.apply(&PointMm::new(ipp[0], ipp[1], ipp[2]));
        let row = planning_to_room.apply_vector(&VectorMm::new(iop[0], iop[1], iop[2]));
        let col = planning_to_room.apply_vector(&VectorMm::new(iop[3], iop[4], iop[5]));
        let ds = |v: Vec<f64>| PrimitiveValue::Strs(v.iter().map(|x| format!("{x:.10}")).collect());
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            ds(vec![p.x, p.y, p.z]),
        ));
        obj.put(DataElement::new(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            ds(row.iter().chain(col.iter()).copied().collect()),
        ));
        obj.put(DataElement::new(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            PrimitiveValue::from(room_for),
        ));
        obj.write_to_file(dir.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_registration_of_another_scanners_ct_is_written_as_the_setup_registration() {
    use ionguide::dicom::spatial_registration::read_room_setup;
    use ionguide::geometry::RigidTransform;
    use ionguide::units::{PointMm, VectorMm};

    // far beyond the cold search: the scanner's origin 0.95 m away, the patient turned 1°
    let truth = RigidTransform::from_xyz_deg([0.0, 0.0, 1.0], VectorMm::new(250.0, -120.0, 900.0));
    const ROOM_FOR: &str = "1.2.826.0.1.3680043.9.7777.40";
    let dir = tempfile::tempdir().unwrap();
    let room = dir.path().join("room");
    std::fs::create_dir_all(&room).unwrap();
    write_room_copy(&room, &truth, ROOM_FOR);
    let reg = dir.path().join("REG.dcm");
    let out = register_on_sts002(
        room.to_str().unwrap(),
        &[
            // a rough start, as a setup's couch positions would give it
            "--initial-translation-mm",
            "246,-117,904",
            "--write-setup-registration",
            reg.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "accept", "{v}");
    let planning_for = dicom_object::open_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/STS_002/image/000010.dcm"
    ))
    .unwrap()
    .element(dicom_dictionary_std::tags::FRAME_OF_REFERENCE_UID)
    .unwrap()
    .to_str()
    .unwrap()
    .trim_end_matches('\0')
    .to_string();
    let setup = read_room_setup(&reg, &planning_for).unwrap();
    assert_eq!(setup.room_frame_of_reference_uid, ROOM_FOR);
    let target: Vec<f64> = v["target_planned_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let t = PointMm::new(target[0], target[1], target[2]);
    let err = (setup.planning_to_room.apply(&t) - truth.apply(&t)).norm();
    assert!(
        err < 0.5,
        "the target maps {err:.3} mm from where the scanner put it"
    );

    // a frame in the planning CT's own coordinates needs no setup registration
    let same = dir.path().join("same.dcm");
    let out = register_on_sts002(
        "tests/data/STS_002/image",
        &["--write-setup-registration", same.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no setup registration is needed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!same.exists());
}

#[test]
fn deformable_on_the_same_series_is_the_identity_and_writes_the_target_back() {
    // Truth: a series against itself has the zero field, the target unchanged.
    let dir = tempfile::tempdir().unwrap();
    let rs = dir.path().join("propagated.dcm");
    let rs_arg = rs.to_str().unwrap();
    let out = register_on_sts002(
        "tests/data/STS_002/image",
        &["--deformable", "--json", "--write-structures", rs_arg],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // the rigid keys stay
    assert_eq!(v["converged"], true, "{v}");
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
    assert!(f("volume_change_pct").abs() < 0.5, "{v}");
    assert!((f("volume_cc") - f("planned_volume_cc")).abs() < 0.01 * f("planned_volume_cc"));
    assert!((f("jacobian_min") - 1.0).abs() < 0.05, "{v}");
    assert!(f("field_max_mm") < 0.5, "{v}");
    assert_eq!(v["deformable_verdict"], "accept", "{v}");

    // `ionguide inspect` reads the written structure set against the series
    let out = ionguide(&["inspect", "tests/data/STS_002/image", rs_arg, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gtv = j["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "GTV_Mass_CT")
        .unwrap_or_else(|| panic!("no GTV_Mass_CT in {j}"));
    let vol = gtv["volume_cc"].as_f64().unwrap();
    assert!(
        (vol - f("volume_cc")).abs() < 0.02 * f("volume_cc"),
        "inspect {vol} cc vs {}",
        f("volume_cc")
    );

    // pydicom reads it too, where the project's Python environment exists
    let python = "/work/pyrp/bin/python";
    if std::path::Path::new(python).exists() {
        let out = Command::new(python)
            .args([
                "-c",
                "import sys, pydicom; d = pydicom.dcmread(sys.argv[1]); \
                 print(d.Modality, d.StructureSetROISequence[0].ROIName, len(d.ROIContourSequence[0].ContourSequence))",
                rs_arg,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pydicom: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("RTSTRUCT GTV_Mass_CT "), "{text}");
    } else {
        eprintln!("note: {python} absent, pydicom read not checked");
    }
}
