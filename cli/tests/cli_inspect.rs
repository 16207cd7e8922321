//! `ionguide inspect --json` end to end on real files: the keys later tools rely on, with
//! values checked against `tests/data/reference.json` (pydicom + SimpleITK) and the plan's
//! known contents.

use std::path::PathBuf;
use std::process::Command;

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(p)
}

fn inspect(args: &[PathBuf]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .arg("inspect")
        .arg("--json")
        .args(args)
        .output()
        .expect("run ionguide");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, stderr)
}

fn close(a: &serde_json::Value, b: &serde_json::Value, tol: f64) -> bool {
    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= tol
}

#[test]
fn inspect_json_matches_reference_for_ct_structures_and_plan() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("reference.json")).unwrap()).unwrap();
    let r = &reference["STS_001"];
    let (ok, json, stderr) = inspect(&[data("STS_001"), data("plans/STS_001/RPSTS001G0G90.dcm")]);
    assert!(ok, "inspect failed: {stderr}");

    let series = json["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    let s = &series[0];
    for key in [
        "rows",
        "columns",
        "slices",
        "transfer_syntax",
        "frame_of_reference_uid",
    ] {
        assert_eq!(s[key], r[key], "{key}");
    }
    for key in ["hu_min", "hu_max"] {
        assert!(close(&s[key], &r[key], 0.0), "{key}");
    }
    assert_eq!(
        s["hu_sum"].as_i64().unwrap() as f64,
        r["hu_sum"].as_f64().unwrap()
    );
    assert!(close(&s["hu_mean"], &r["hu_mean"], 1e-9));
    assert!(close(&s["slice_spacing_mm"], &r["slice_spacing_mm"], 1e-4));
    for a in 0..2 {
        assert!(close(&s["pixel_spacing_mm"][a], &r["pixel_spacing_mm"][a], 1e-6));
    }
    for a in 0..3 {
        assert!(close(&s["origin_mm"][a], &r["origin_mm"][a], 1e-4));
    }
    for a in 0..6 {
        assert!(close(&s["orientation"][a], &r["orientation"][a], 1e-6));
    }

    let structures = json["structures"].as_array().unwrap();
    let gtv = structures
        .iter()
        .find(|x| x["name"] == "GTV_Mass_CT")
        .expect("GTV listed");
    let ref_mask = &r["reference_mask"];
    let vol = gtv["volume_cc"].as_f64().unwrap();
    let ref_vol = ref_mask["mask_volume_cc"].as_f64().unwrap();
    assert!(
        (vol - ref_vol).abs() / ref_vol < 0.03,
        "volume {vol} vs {ref_vol}"
    );
    for a in 0..3 {
        assert!(close(
            &gtv["centroid_mm"][a],
            &ref_mask["mask_centroid_mm"][a],
            0.5
        ));
    }
    assert!(gtv["voxels"].as_u64().unwrap() > 0);

    let plans = json["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(
        plans[0]["series_index"], 0,
        "plan tied to its CT by Frame of Reference"
    );
    let beams = plans[0]["beams"].as_array().unwrap();
    assert_eq!(beams.len(), 2);
    let spots: Vec<u64> = beams.iter().map(|b| b["spots"].as_u64().unwrap()).collect();
    assert_eq!(spots, [1779, 1777]);
    for b in beams {
        assert_eq!(b["layers"], 21);
        assert_eq!(b["ion"]["z"], 1);
        assert_eq!(b["ion"]["a"], 1);
        assert!(close(&b["isocenter_mm"][0], &serde_json::json!(69.71), 0.01));
        for key in [
            "name",
            "gantry_angle_deg",
            "couch_angle_deg",
            "energy_min_mev_u",
            "energy_max_mev_u",
        ] {
            assert!(!b[key].is_null(), "{key}");
        }
    }
    let gantry: Vec<f64> = beams
        .iter()
        .map(|b| b["gantry_angle_deg"].as_f64().unwrap())
        .collect();
    assert_eq!(gantry, [0.0, 90.0]);
}

#[test]
fn inspect_reads_the_jpeg2000_series() {
    let (ok, json, stderr) = inspect(&[data("totalseg_j2k")]);
    assert!(ok, "{stderr}");
    let s = &json["series"][0];
    assert_eq!(s["transfer_syntax"], "1.2.840.10008.1.2.4.90");
    assert_eq!(s["hu_sum"].as_i64(), Some(-3272217339));
}

#[test]
fn inspect_names_the_bad_file_and_fails() {
    let dir = std::env::temp_dir().join(format!("ionguide-inspect-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = data("STS_002/image/000010.dcm");
    let bytes = std::fs::read(&src).unwrap();
    let bad = dir.join("truncated.dcm");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .arg("inspect")
        .arg(&bad)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated.dcm"), "error names the file: {stderr}");
}

#[test]
fn inspect_shows_the_room_setup_a_spatial_registration_gives_for_the_ct() {
    use ionguide::dicom::spatial_registration::{write_room_setup_bytes, RegistrationIds};
    use ionguide::geometry::{RigidTransform, RoomSetup};
    use ionguide::units::VectorMm;

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("reference.json")).unwrap()).unwrap();
    let planning_for = reference["STS_001"]["frame_of_reference_uid"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ids = RegistrationIds {
        patient_id: "STS_001".into(),
        patient_name: "STS_001".into(),
        study_instance_uid: "1.2.826.0.1.3680043.9.7777.31".into(),
        series_instance_uid: "1.2.826.0.1.3680043.9.7777.32".into(),
        sop_instance_uid: "1.2.826.0.1.3680043.9.7777.33".into(),
        content_date: "20261129".into(),
        content_time: "100000".into(),
    };
    let write = |name: &str, planning: &str| {
        let setup = RoomSetup {
            planning_to_room: RigidTransform::from_xyz_deg(
                [0.5, -1.0, 2.0],
                VectorMm::new(10.0, -250.0, 900.0),
            ),
            planning_frame_of_reference_uid: planning.into(),
            room_frame_of_reference_uid: "1.2.826.0.1.3680043.9.7777.30".into(),
        };
        let path = dir.path().join(name);
        std::fs::write(&path, write_room_setup_bytes(&setup, &ids).unwrap()).unwrap();
        path
    };
    let good = write("REG.dcm", planning_for);
    let other = write("REG_other.dcm", "1.2.826.0.1.3680043.9.7777.39");
    let (ok, json, stderr) = inspect(&[data("STS_001/image"), good.clone(), other.clone()]);
    assert!(ok, "{stderr}");
    let regs = json["registrations"].as_array().unwrap();
    assert_eq!(regs.len(), 2);
    let r = regs.iter().find(|r| r["file"] == good.to_str().unwrap()).unwrap();
    assert_eq!(r["series_index"], 0);
    assert_eq!(r["room_frame_of_reference_uid"], "1.2.826.0.1.3680043.9.7777.30");
    for (a, v) in [10.0, -250.0, 900.0].iter().enumerate() {
        assert!((r["translation_mm"][a].as_f64().unwrap() - v).abs() < 1e-6, "{r}");
    }
    for (a, v) in [0.5, -1.0, 2.0].iter().enumerate() {
        assert!(
            (r["rotation_xyz_deg"][a].as_f64().unwrap() - v).abs() < 1e-6,
            "{r}"
        );
    }
    let r = regs
        .iter()
        .find(|r| r["file"] == other.to_str().unwrap())
        .unwrap();
    assert!(r["series_index"].is_null());
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains(planning_for) && error.contains("not in this registration"),
        "{error}"
    );
}
