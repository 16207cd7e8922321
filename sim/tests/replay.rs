//! The simulator's must-shows: recorded breathing (a real ExtMarker trace) through the whole
//! chain — real pipeline, UDP link and controller — tracks the tumor within the clinical bars
//! on the built-in phantom and on a real CT, replays byte for byte, and without correction
//! shows the error motion causes.

use std::path::Path;

use ionguide_sim::anatomy::phantom::PhantomSpec;
use ionguide_sim::imaging::sources::RealCtFrames;
use ionguide_sim::motion::tumor::{displacements, TumorMotionModel};
use ionguide_sim::planning::PlannerOptions;
use ionguide_sim::replay::{run, ReplayOptions, ReplayResult};
use ionguide_sim::scenario;

/// Generous: these runs share 2 cores with the rest of the suite; speed is the bench's job.
const BUDGET_MS: f64 = 1000.0;

fn bars(r: &ReplayResult) {
    let rep = &r.report;
    eprintln!("{}", serde_json::to_string_pretty(rep).unwrap());
    assert!(
        rep.corrected >= rep.frames - 2,
        "nearly every frame corrected: {rep:?}"
    );
    assert_eq!(rep.stale_corrections, 0);
    assert!(
        rep.tumor_error_mm.p95.unwrap() <= 0.5,
        "tumor error p95 {:?}",
        rep.tumor_error_mm
    );
    assert!(
        rep.spot_error_mm.p95.unwrap() <= 0.5,
        "spot error p95 {:?}",
        rep.spot_error_mm
    );
    assert!(
        rep.range_error_mm.p95.unwrap() <= 1.0,
        "range error p95 {:?}",
        rep.range_error_mm
    );
    assert!(rep.latency_ms.p99.unwrap() <= rep.budget_ms);
}

#[test]
fn the_phantom_demo_tracks_within_the_bars_and_replays_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario::write_phantom_session(
        dir.path(),
        &PhantomSpec::small(),
        &PlannerOptions::default(),
        BUDGET_MS,
        Some(scenario::in_room_scanner()),
    )
    .unwrap();
    let (t, d) = displacements(
        &scenario::bundled_trace(),
        10.0,
        &TumorMotionModel::default(),
        Some(30),
    )
    .unwrap();
    let replay = |correction: bool| {
        let mut frames = s.frames(10.0, 7).unwrap();
        run(
            "test",
            &s.config,
            &mut frames,
            &t,
            &d,
            &ReplayOptions {
                correction,
                ..ReplayOptions::default()
            },
        )
        .unwrap()
    };
    let first = replay(true);
    bars(&first);
    let second = replay(true);
    // byte-identical corrections (the validity time is wall-clock and differs by design)
    assert_eq!(first.applied.len(), second.applied.len());
    for (a, b) in first.applied.iter().zip(&second.applied) {
        assert_eq!(
            (a.frame_id, a.mode, a.spots.len()),
            (b.frame_id, b.mode, b.spots.len())
        );
        let same = a.spots.iter().zip(&b.spots).all(|(x, y)| {
            (
                x.spot_index,
                x.x_mm.to_bits(),
                x.y_mm.to_bits(),
                x.energy_mev_u.to_bits(),
                x.range_shifter_mm_we.to_bits(),
            ) == (
                y.spot_index,
                y.x_mm.to_bits(),
                y.y_mm.to_bits(),
                y.energy_mev_u.to_bits(),
                y.range_shifter_mm_we.to_bits(),
            )
        });
        assert!(
            same,
            "frame {}: corrections differ between identical replays",
            a.frame_id
        );
    }
    assert_eq!(first.report.corrections_sha256, second.report.corrections_sha256);
    // what tracking buys: the same motion, planned spots delivered unchanged
    let baseline = replay(false);
    let moved = baseline.report.spot_error_mm.p95.unwrap();
    assert!(
        moved > 4.0 * first.report.spot_error_mm.p95.unwrap() && moved > 1.0,
        "untracked spot error p95 {moved} mm"
    );
}

#[test]
fn a_real_ct_replay_tracks_within_the_bars() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let dir = tempfile::tempdir().unwrap();
    let config = scenario::write_user_session(
        dir.path(),
        &data.join("STS_001/image"),
        &data.join("STS_001/mask/RS.dcm"),
        "GTV_Mass_CT",
        &data.join("plans/STS_001/RPSTS001G0G90.dcm"),
        BUDGET_MS,
    )
    .unwrap();
    let (t, d) = displacements(
        &scenario::bundled_trace(),
        10.0,
        &TumorMotionModel::default(),
        Some(20),
    )
    .unwrap();
    let mut frames = RealCtFrames::load(&data.join("STS_001/image")).unwrap();
    let r = run("real CT", &config, &mut frames, &t, &d, &ReplayOptions::default()).unwrap();
    bars(&r);
}
