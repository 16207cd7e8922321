//! Motion traces: the real ExtMarker recordings bundled in `sim/data/traces`, their real
//! defects, and the tumor model's exact scaling.

use std::path::{Path, PathBuf};

use ionguide_sim::motion::trace::{parse_csv_trace, parse_extmarker, read_extmarker, MotionError, Trace};
use ionguide_sim::motion::tumor::{MotionReference, TumorMotionModel};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn reads_the_real_recording_and_skips_only_the_end_row() {
    let path = data("data/traces/201205101522-UCC-1-N-138-6.csv");
    let tr = read_extmarker(&path).unwrap();
    // 1385 lines: header, 1383 samples, the all-zero end row (counted with awk).
    assert_eq!(tr.t_s.len(), 1383);
    assert_eq!(tr.t_s[0], 0.0);
    assert_eq!(tr.pos_mm[0], [-286.7, 0.5, 95.7]);
    // Last data row "8299;138317;-286,7;0,3;95,5".
    assert!((tr.t_s[1382] - 138.317).abs() < 1e-12);
    assert_eq!(tr.pos_mm[1382], [-286.7, 0.3, 95.5]);
    tr.validate().unwrap();
}

#[test]
fn real_timestamp_defect_is_reported_with_its_line() {
    // Line 130 of 201205101534-LAC-1-NO-130-6.csv reads "768;25,6;..." after "762;12700;...".
    let path = data("tests/data/extmarker-NO-130-first140.csv");
    match read_extmarker(&path) {
        Err(MotionError::NonMonotonicTime {
            path: p,
            line,
            t_s,
            previous_t_s,
        }) => {
            assert_eq!(line, 130);
            assert!((t_s - 0.0256).abs() < 1e-12 && (previous_t_s - 12.7).abs() < 1e-12);
            assert!(p.ends_with("extmarker-NO-130-first140.csv"));
        }
        other => panic!("expected a non-monotonic time error, got {other:?}"),
    }
}

#[test]
fn malformed_rows_name_file_and_line() {
    let src = Path::new("x.csv");
    let head = "\"Frame\";\"Timestamp\";\"x\";\"y\";\"z\"\r\n";
    let e = parse_extmarker(&format!("{head}0;0;1,0;2;3\r\n6;100;1,5;abc;3\r\n"), src).unwrap_err();
    assert!(matches!(e, MotionError::BadRow { line: 3, .. }), "{e}");
    assert!(e.to_string().starts_with("x.csv:3:"), "{e}");
    let e = parse_extmarker(&format!("{head}0;0;1;2;3\r\n0;0;0;0;0\r\n6;100;1;2;3\r\n"), src).unwrap_err();
    assert!(
        matches!(e, MotionError::BadRow { line: 3, .. }),
        "zero row mid-file: {e}"
    );
    let e = parse_extmarker(&format!("{head}0;0;1;2\r\n"), src).unwrap_err();
    assert!(matches!(e, MotionError::BadRow { line: 2, .. }));
    let e = parse_extmarker("Frame,Timestamp\n", src).unwrap_err();
    assert!(matches!(e, MotionError::BadHeader { line: 1, .. }));
    let e = parse_extmarker(&format!("{head}0;0;1;2;3\r\n0;0;0;0;0\r\n"), src).unwrap_err();
    assert!(matches!(e, MotionError::TooShort { samples: 1, .. }));
}

#[test]
fn plain_csv_parses_and_checks() {
    let src = Path::new("t.csv");
    let tr = parse_csv_trace("t_s,x_mm,y_mm,z_mm\n0,1,2,3\n0.5,1.5,2,-3.25\n", src).unwrap();
    assert_eq!(tr.t_s, vec![0.0, 0.5]);
    assert_eq!(tr.pos_mm[1], [1.5, 2.0, -3.25]);
    assert!(matches!(
        parse_csv_trace("0,1,2,3\n1,1,2,3\n", src),
        Err(MotionError::BadHeader { .. })
    ));
    assert!(matches!(
        parse_csv_trace("t_s,x_mm,y_mm,z_mm\n0,1,2,3\n0,1,2,3\n", src),
        Err(MotionError::NonMonotonicTime { line: 3, .. })
    ));
    assert!(matches!(
        parse_csv_trace("t_s,x_mm,y_mm,z_mm\n0,1,2,3\n1,1,nan,3\n", src),
        Err(MotionError::BadRow { line: 3, .. })
    ));
}

#[test]
fn resampled_real_trace_hits_every_original_sample_on_the_grid() {
    let tr = read_extmarker(data("data/traces/201205111057-LAC-1-O-72-6.csv")).unwrap();
    let r = tr.resample(20.0).unwrap();
    let span = tr.duration_s();
    assert_eq!(r.t_s.len(), (span * 20.0 + 1e-9).floor() as usize + 1);
    // Original samples at whole 50 ms multiples reappear unchanged.
    let mut hits = 0;
    for (t, p) in tr.t_s.iter().zip(&tr.pos_mm) {
        let rel = (t - tr.t_s[0]) * 20.0;
        if (rel - rel.round()).abs() < 1e-9 {
            let q = r.pos_mm[rel.round() as usize];
            for a in 0..3 {
                assert!((q[a] - p[a]).abs() < 1e-9, "t {t}: {q:?} vs {p:?}");
            }
            hits += 1;
        }
    }
    // Timestamps jitter (100, 200, 317 ms, ...): only some fall on the 50 ms grid.
    assert!(hits > 20, "only {hits} samples on the grid");
}

#[test]
fn tumor_motion_has_the_asked_amplitude_axis_and_mid_position() {
    let tr = read_extmarker(data("data/traces/201205101522-UCC-1-N-138-6.csv"))
        .unwrap()
        .resample(10.0)
        .unwrap();
    let d = TumorMotionModel::default().displacements_mm(&tr).unwrap();
    assert_eq!(d.len(), tr.t_s.len());
    for (axis, pp) in [(0, 1.0), (1, 3.0), (2, 10.0)] {
        let lo = d.iter().map(|v| v[axis]).fold(f64::INFINITY, f64::min);
        let hi = d.iter().map(|v| v[axis]).fold(f64::NEG_INFINITY, f64::max);
        assert!(((hi - lo) - pp).abs() < 1e-9, "axis {axis}: {}", hi - lo);
    }
    // Mid-position: the mean displacement is zero (uniform samples: plain mean ≈ trapezoid).
    let mean_z: f64 = d.iter().map(|v| v[2]).sum::<f64>() / d.len() as f64;
    assert!(mean_z.abs() < 0.05, "mean SI {mean_z}");
    // Breathing dwells at end-exhale: with inhale = inferior (−z), the median sits nearer the
    // superior end.
    let mut z: Vec<f64> = d.iter().map(|v| v[2]).collect();
    z.sort_by(f64::total_cmp);
    let (lo, hi, med) = (z[0], z[z.len() - 1], z[z.len() / 2]);
    assert!(hi - med < med - lo, "median {med} not nearer the exhale end {hi}");

    // The breathing signal follows the marker: it correlates strongly with the marker's
    // dominant coordinate.
    let s: Vec<f64> = tr.pos_mm.iter().map(|p| p[2]).collect();
    let corr = correlation(&s, &d.iter().map(|v| v[2]).collect::<Vec<_>>()).abs();
    assert!(corr > 0.9, "correlation {corr}");
}

#[test]
fn drift_and_end_exhale_reference() {
    // A synthetic sine breathing trace along x with 4 s period over 60 s.
    let t: Vec<f64> = (0..=600).map(|i| i as f64 * 0.1).collect();
    let tr = Trace {
        pos_mm: t
            .iter()
            .map(|t| [5.0 * (2.0 * std::f64::consts::PI * t / 4.0).sin(), 0.0, 0.0])
            .collect(),
        t_s: t,
    };
    let model = TumorMotionModel {
        inhale_shift_mm: [0.0, 0.0, -10.0],
        drift_mm_per_min: [0.0, 2.0, 0.0],
        reference: MotionReference::EndExhale,
    };
    let d = model.displacements_mm(&tr).unwrap();
    let zmax = d.iter().map(|v| v[2]).fold(f64::NEG_INFINITY, f64::max);
    let zmin = d.iter().map(|v| v[2]).fold(f64::INFINITY, f64::min);
    assert!(zmax.abs() < 1e-9 && (zmin + 10.0).abs() < 1e-9);
    // 2 mm/min for 60 s.
    assert!((d[600][1] - 2.0).abs() < 1e-9 && d[0][1] == 0.0);

    let still = Trace {
        t_s: vec![0.0, 1.0, 2.0],
        pos_mm: vec![[1.0; 3]; 3],
    };
    assert!(TumorMotionModel::default().displacements_mm(&still).is_err());
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}
