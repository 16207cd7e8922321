//! A writer killed with SIGKILL mid-stream leaves a log whose every record up to the kill
//! reads back intact, ending `Clean` or `TornTail` — never `Corrupt`. The test binary runs
//! itself as the child (the `child_writer` test does the writing only when asked to).

use std::process::Command;
use std::time::{Duration, Instant};

use ionguide::audit::{
    AuditOptions, AuditReader, AuditRecord, AuditWriter, Corrections, FrameRecord, Fsync, Outcome, TailStatus,
};
use ionguide::correction::{RangeMode, SpotCorrection};

const ENV: &str = "IONGUIDE_AUDIT_CRASH_CHILD_PATH";

#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(ENV) else {
        return; // run normally: nothing to do
    };
    let mut w =
        AuditWriter::create(path.as_ref(), 1, AuditOptions::default().with_fsync(Fsync::Never)).unwrap();
    let spots: Vec<SpotCorrection> = (0..2000)
        .map(|i| SpotCorrection {
            spot_index: i,
            x_mm: i as f32,
            ..Default::default()
        })
        .collect();
    let mut f = FrameRecord {
        origin: "crash-test".into(),
        outcome: Some(Outcome::Corrected),
        corrections: Corrections::Full {
            mode: Some(RangeMode::Energy),
            valid_until_unix_ns: 5,
            spots,
        },
        ..Default::default()
    };
    for id in 0.. {
        f.frame_id = id;
        w.write_frame(&f).unwrap();
    }
}

#[test]
fn sigkill_mid_write_loses_nothing_before_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.igaudit");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--test-threads=1"])
        .env(ENV, &path)
        .spawn()
        .unwrap();
    // Wait (not a timing assertion: the deadline only bounds a broken child) for ~100 records.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 4_000_000 {
        assert!(Instant::now() < deadline, "child wrote too little");
        assert!(child.try_wait().unwrap().is_none(), "child ended on its own");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let (records, status) = AuditReader::read_all(&path).unwrap();
    assert!(records.len() >= 90, "{} records", records.len());
    for (n, r) in records.iter().enumerate() {
        let AuditRecord::Frame(f) = r else {
            panic!("record {n} is not a frame")
        };
        assert_eq!(f.frame_id, n as u64);
        assert!(
            matches!(&f.corrections, Corrections::Full { spots, .. } if spots.len() == 2000 && spots[1999].x_mm == 1999.0)
        );
    }
    assert!(
        matches!(status, TailStatus::Clean | TailStatus::TornTail { .. }),
        "{status:?}"
    );
}
