//! `ionguide predict` end to end on the bundled real ExtMarker recording: causal (cutting the
//! trace changes no forecast made before the cut) and better than holding.

use std::process::Command;

const TRACE: &str = "sim/data/traces/201205101522-UCC-1-N-138-6.csv";

fn ionguide(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn csv_rows(out: &std::process::Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn forecasts_up_to_a_cut_are_those_of_the_whole_trace() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = std::fs::read_to_string(format!("{root}/{TRACE}")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let dir = tempfile::tempdir().unwrap();
    for method in ["ensemble", "stack", "rls"] {
        let full = csv_rows(&ionguide(&[
            "predict",
            "--trace",
            TRACE,
            "--horizon-ms",
            "500",
            "--csv",
            "--method",
            method,
        ]));
        // Header + one row per sample (1383 samples, the all-zero end row skipped).
        assert_eq!(full.len(), 1 + 1383);
        // Cuts before the ridge has fitted, while the analog memory fills, and late.
        for cut in [150usize, 700, 1200] {
            let path = dir.path().join(format!("cut{cut}.csv"));
            // The header and the first `cut` data rows.
            std::fs::write(&path, lines[..=cut].join("\r\n")).unwrap();
            let part = csv_rows(&ionguide(&[
                "predict",
                "--trace",
                path.to_str().unwrap(),
                "--horizon-ms",
                "500",
                "--csv",
                "--method",
                method,
            ]));
            assert_eq!(part.len(), 1 + cut);
            assert_eq!(part[..], full[..=cut], "{method}, cut after {cut} samples");
        }
        // The forecast is for 0.5 s later and is not the sample itself.
        let row: Vec<f64> = full[1000].split(',').map(|v| v.parse().unwrap()).collect();
        assert!((row[1] - row[0] - 0.5).abs() < 1e-9, "{row:?}");
    }
}

#[test]
fn forecast_beats_holding_on_a_real_recording() {
    let out = ionguide(&["predict", "--trace", TRACE, "--horizon-ms", "500"]);
    let text = String::from_utf8(out.stdout).unwrap();
    // "RMSE over the whole trace (3-D, per marker): X mm predicted, Y mm without prediction"
    let line = text.lines().find(|l| l.starts_with("RMSE")).unwrap();
    let nums: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert!(nums[0] < 0.7 * nums[1], "{line}");
}

#[test]
fn a_horizon_beyond_the_trace_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["predict", "--trace", TRACE, "--horizon-ms", "1e9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--horizon-ms") && err.contains("1383 samples"),
        "{err}"
    );
}
