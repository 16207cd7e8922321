//! End to end with real sockets: dcmtk's `storescu` pushes shifted copies of the real STS_001
//! CT to the C-STORE receiver, which feeds the pipeline; the controller simulator receives
//! the corrections over the authenticated UDP link. Every spot's correction is checked
//! against a truth computed here from the known shift and the beam geometry alone —
//! independently of `src/adapt` — and the audit log must hold one Corrected record per frame.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ionguide::audit::{self, AuditRecord};
use ionguide::pipeline::Outcome;
use ionguide::source::{scp, AssemblerConfig, ScpConfig, ScpHandle};
use support::dicom_edit::{frame_bytes, load_objects, Edit};
use support::rig::{data, Rig, RigOptions};
use support::truth::check_against_truth;

/// Known rigid shifts of the whole patient, one per frame, LPS mm.
const SHIFTS_MM: [[f64; 3]; 3] = [[0.0, 0.0, 0.0], [2.0, -1.5, 3.0], [-1.0, 2.5, -2.0]];
const SLICES: usize = 59;

/// Writes one frame's slices as files, as a scanner's export would hold them.
fn write_frame(dir: &Path, objects: &[Vec<u8>]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    objects
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.join(format!("{i:04}.dcm"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

/// Sends files with dcmtk's `storescu`; a missing tool fails the test (never skipped).
fn storescu(scp: &ScpHandle, files: &[PathBuf]) -> Output {
    let addr = scp.local_addr();
    let mut args: Vec<String> = ["-aet", "SCANNER", "-aec", "IONGUIDE"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(addr.ip().to_string());
    args.push(addr.port().to_string());
    args.extend(files.iter().map(|f| f.display().to_string()));
    match Command::new("storescu").args(&args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`storescu` is not on PATH: install dcmtk (CI installs it)")
        }
        Err(e) => panic!("cannot run storescu: {e}"),
    }
}

/// The C-STORE receiver feeding the rig, completing a frame at the series' slice count.
fn start_scp(rig: &Rig) -> ScpHandle {
    scp::start(
        ScpConfig {
            assembler: AssemblerConfig {
                expected_slices: Some(SLICES),
                assembly_timeout: Duration::from_secs(600),
                ..AssemblerConfig::default()
            },
            ..ScpConfig::default()
        },
        rig.events.clone(),
    )
    .unwrap()
}

#[test]
fn storescu_frames_with_known_shifts_reach_the_controller_corrected_to_the_truth() {
    let mut rig = Rig::start(RigOptions {
        // frame 2 → 3 moves 7 mm, more than the default jump limit; generous budget: this
        // test checks geometry, not speed
        extra_toml: "[timing]\nbudget_ms = 3000\nvalidity_ms = 6000\n[limits]\nmax_jump_mm = 20.0\n".into(),
        ..RigOptions::default()
    });
    let scp = start_scp(&rig);
    let objects = load_objects(&data("STS_001/image"));
    assert_eq!(objects.len(), SLICES);
    let scratch = tempfile::tempdir().unwrap();
    let mut frame_ids = Vec::new();
    let mut applied_sets = Vec::new();
    for (k, shift_mm) in SHIFTS_MM.iter().enumerate() {
        let frame = k as u32 + 1;
        let bytes = frame_bytes(
            &objects,
            frame,
            &Edit {
                shift_mm: *shift_mm,
                ..Edit::default()
            },
        );
        let files = write_frame(&scratch.path().join(format!("frame{frame}")), &bytes);
        let out = storescu(&scp, &files);
        assert!(
            out.status.success(),
            "storescu failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ev = rig.next_event();
        assert_eq!(
            ev.ticket.outcome,
            Outcome::Corrected,
            "frame {frame} (shift {shift_mm:?} mm) is corrected"
        );
        assert_eq!(ev.spots_sent as usize, rig.session.spot_count());
        let id = ev.ticket.frame_id;
        let set = rig.applied_set(id);
        check_against_truth(&rig, &set, *shift_mm, k + 1);
        frame_ids.push(id);
        applied_sets.push(set);
    }
    scp.shutdown();
    let counters = rig.controller().with(|c| c.counters());
    assert_eq!(counters.applied_sets, SHIFTS_MM.len() as u64);
    assert_eq!(counters.expired_sets, 0);
    let records = rig.stop();
    let frames: Vec<&audit::FrameRecord> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), SHIFTS_MM.len(), "one audit record per frame");
    for (id, set) in frame_ids.iter().zip(&applied_sets) {
        let r = frames.iter().find(|f| f.frame_id == *id).unwrap();
        assert_eq!(r.outcome, Some(audit::Outcome::Corrected), "frame {id}");
        assert!(r.latency_ns.is_some_and(|ns| ns > 0), "frame {id} has a latency");
        assert!(r.origin.starts_with("scp:SCANNER@127.0.0.1:"), "{}", r.origin);
        match &r.corrections {
            audit::Corrections::Full {
                spots,
                valid_until_unix_ns,
                ..
            } => {
                assert_eq!(spots, &set.spots, "frame {id}: the audit holds what was applied");
                assert_eq!(*valid_until_unix_ns, set.valid_until_unix_ns);
            }
            other => panic!("frame {id}: full corrections expected, got {other:?}"),
        }
    }
}

/// The C-STORE receiver announces each slice as it lands, and ingest decodes it before the
/// frame is complete: a second frame in the first one's layout is partly decoded early, and
/// its corrections still match the truth.
#[test]
fn storescu_slices_are_decoded_early_and_the_frame_still_matches_the_truth() {
    let mut rig = Rig::start(RigOptions {
        extra_toml: "[timing]\nbudget_ms = 3000\nvalidity_ms = 6000\n".into(),
        ..RigOptions::default()
    });
    let scp = start_scp(&rig);
    let objects = load_objects(&data("STS_001/image"));
    let scratch = tempfile::tempdir().unwrap();
    let early = || {
        rig.pipeline
            .as_ref()
            .unwrap()
            .shared()
            .counters
            .slices_decoded_early
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for frame in 1..=2u32 {
        let bytes = frame_bytes(&objects, frame, &Edit::default());
        let files = write_frame(&scratch.path().join(format!("frame{frame}")), &bytes);
        assert!(storescu(&scp, &files).status.success());
        let ev = rig.next_event();
        assert_eq!(ev.ticket.outcome, Outcome::Corrected, "frame {frame}");
        let set = rig.applied_set(ev.ticket.frame_id);
        check_against_truth(&rig, &set, [0.0; 3], frame as usize);
        // the first frame has no layout to predict from; the second reuses the slices ingest
        // got to before the frame completed (all but the last when it keeps up with storescu;
        // announcements still queued with the completed frame are left to its decode)
        if frame == 1 {
            assert_eq!(early(), 0, "nothing to predict the first frame's layout from");
        } else {
            assert!(
                (1..SLICES as u64).contains(&early()),
                "slices decoded early in frame 2: {}",
                early()
            );
        }
    }
    scp.shutdown();
    rig.stop();
}

/// `Pipeline::start` returns only when every stage thread has finished its set-up (the range
/// stage's tracer clone alone takes 10–20 ms), so a scanner's first frame does not spend its
/// latency budget waiting for threads still starting.
#[test]
fn the_pipeline_starts_with_every_stage_set_up() {
    let mut rig = Rig::start(RigOptions::default());
    let ready = rig
        .pipeline
        .as_ref()
        .unwrap()
        .shared()
        .counters
        .stages_ready
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(ready, 5, "ingest, register, range, adapt and link");
    rig.stop();
}
