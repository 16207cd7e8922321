//! The `ionguide register` subcommand end to end on real series (STS_002, TCIA, CC BY 3.0).

use std::process::Command;

fn ionguide(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_series_against_itself_is_the_identity_in_json() {
    let out = ionguide(&[
        "register",
        "--fixed",
        "tests/data/STS_002/image",
        "--moving",
        "tests/data/STS_002/image",
        "--structures",
        "tests/data/STS_002/mask/RS.dcm",
        "--roi",
        "GTV_Mass_CT",
        "--json",
    ]);
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
