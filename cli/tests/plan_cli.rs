//! `ionguide plan` on a real CT and its GTV (STS_003), read back by `ionguide inspect`: the
//! plan sits in the CT's Frame of Reference with no reading warning, its isocenter is the
//! GTV's centroid as `inspect` rasterizes it, its beams carry the ion asked for. What
//! cannot be planned fails with the reason; planner options beside `--plan` are refused.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(p)
}

fn ionguide(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(args)
        .output()
        .expect("run ionguide")
}

fn plan_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "plan",
        "--ct",
        data("STS_003/image").to_str().unwrap(),
        "--structures",
        data("STS_003/mask/RS.dcm").to_str().unwrap(),
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(args: &[String]) -> Output {
    ionguide(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_plan_made_for_a_gtv_is_read_back_by_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let rp = dir.path().join("RP.dcm");
    let out = run(&plan_args(
        rp.to_str().unwrap(),
        &["--roi", "GTV_Mass_CT", "--ion", "4He"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    eprintln!("{stderr}");

    let out = ionguide(&[
        "inspect",
        "--json",
        data("STS_003").to_str().unwrap(),
        rp.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plans = json["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 1);
    let plan = &plans[0];
    // matched to the CT given (same Frame of Reference), nothing to warn about
    assert_eq!(plan["series_index"], 0, "{plan}");
    assert_eq!(
        plan["frame_of_reference_uid"],
        json["series"][0]["frame_of_reference_uid"]
    );
    assert_eq!(plan["warnings"].as_array().unwrap().len(), 0, "{plan}");
    let gtv = json["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "GTV_Mass_CT")
        .unwrap();
    let beams = plan["beams"].as_array().unwrap();
    assert_eq!(beams.len(), 2);
    for b in beams {
        assert_eq!(b["ion"], serde_json::json!({"z": 2, "a": 4}));
        for a in 0..3 {
            let (iso, c) = (
                b["isocenter_mm"][a].as_f64().unwrap(),
                gtv["centroid_mm"][a].as_f64().unwrap(),
            );
            assert!((iso - c).abs() < 1e-6, "isocenter {iso} vs GTV centroid {c}");
        }
        let g = b["gantry_angle_deg"].as_f64().unwrap();
        assert!(g <= 90.0 || g >= 270.0, "gantry {g}° from below the table");
        assert!(b["spots"].as_u64().unwrap() > 100);
        // helium reaching 4–12 cm of water: 70–130 MeV/u (libamtrack: 100 MeV/u ≈ 78 mm)
        let (lo, hi) = (
            b["energy_min_mev_u"].as_f64().unwrap(),
            b["energy_max_mev_u"].as_f64().unwrap(),
        );
        assert!(lo > 50.0 && hi < 200.0 && lo < hi, "{lo}–{hi} MeV/u");
    }
}

#[test]
fn what_cannot_be_planned_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rp = dir.path().join("RP.dcm");
    let out = run(&plan_args(rp.to_str().unwrap(), &["--roi", "PTV"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"PTV\"") && stderr.contains("\"GTV_Mass_CT\""),
        "names the ROI asked for and those present: {stderr}"
    );
    // the STS_003 GTV lies 4–11 cm deep: carbon below 100 MeV/u (26 mm of water) cannot reach
    let out = run(&plan_args(
        rp.to_str().unwrap(),
        &["--roi", "GTV_Mass_CT", "--max-energy-mev-u", "100"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("outside the energies"), "{stderr}");
    assert!(!rp.exists(), "no plan written");
    // planner options have no meaning beside a given plan
    let out = ionguide(&[
        "replay",
        "--ct",
        data("STS_003/image").to_str().unwrap(),
        "--structures",
        data("STS_003/mask/RS.dcm").to_str().unwrap(),
        "--roi",
        "GTV_Mass_CT",
        "--plan",
        data("plans/STS_001/RPSTS001G0G90.dcm").to_str().unwrap(),
        "--ion",
        "16O",
        "--trace",
        "unused.csv",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("with --plan they have no effect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
