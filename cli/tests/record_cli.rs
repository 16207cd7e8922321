//! `ionguide record` on a log written by the library's writer, and `ionguide inspect` on the
//! record it writes: the beam, what was delivered of what was specified, and how it ended.

use std::process::Command;

use ionguide::audit::{AckOutcome, AuditOptions, AuditRecord, AuditWriter, FrameRecord, Outcome};
use ionguide::correction::{DeliveredSpot, HoldReason, SpotCorrection};

const T0: u64 = 1_796_000_000_000_000_000; // 2026-11-30 00:53:20 UTC

fn plan_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/plans/STS_001/RPSTS001G0G90.dcm")
}

#[test]
fn record_rebuilds_a_session_and_inspect_reads_it_back() {
    let (plan, _) = ionguide::dicom::rtplan::read_plan(plan_path()).unwrap();
    let spots: Vec<_> = plan.beams[0]
        .layers
        .iter()
        .flat_map(|l| &l.spots)
        .take(3)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("session.audit");
    let mut w = AuditWriter::create(&log, T0, AuditOptions::default()).unwrap();
    w.write(&AuditRecord::SessionStart {
        unix_ns: T0,
        config_sha256: [0; 32],
        plan_sop_uid: plan.sop_instance_uid.clone(),
        plan_warnings: vec![],
    })
    .unwrap();
    w.write(&AuditRecord::ControllerAck {
        unix_ns: T0 + 1,
        frame_id: 1,
        acked_sequence: 3,
        status: AckOutcome::Applied,
        beam_on: true,
    })
    .unwrap();
    w.write_frame(&FrameRecord {
        frame_id: 2,
        outcome: Some(Outcome::Held),
        hold_reason: Some(HoldReason::LateralOverLimit),
        ..FrameRecord::default()
    })
    .unwrap();
    let delivered: Vec<DeliveredSpot> = spots
        .iter()
        .enumerate()
        .map(|(i, s)| DeliveredSpot {
            spot: SpotCorrection {
                spot_index: i as u32,
                x_mm: s.x_mm as f32,
                y_mm: s.y_mm as f32,
                energy_mev_u: 150.0,
                range_shifter_mm_we: 0.0,
            },
            // the third spot cut by the hold at a quarter of its weight
            meterset: if i == 2 { s.weight / 4.0 } else { s.weight },
            frame_id: 1,
            delivered_unix_ns: T0 + 10 + i as u64,
        })
        .collect();
    w.write(&AuditRecord::Delivered {
        unix_ns: T0 + 20,
        first_ordinal: 0,
        spots: delivered,
    })
    .unwrap();
    w.flush().unwrap();
    drop(w);

    let out_path = dir.path().join("RT.dcm");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&[
        "record".as_ref(),
        "--audit".as_ref(),
        log.as_os_str(),
        "--plan".as_ref(),
        plan_path().as_os_str(),
        "--out".as_ref(),
        out_path.as_os_str(),
    ]);
    assert!(text.contains("1 beam(s), 3 delivered spot piece(s)"), "{text}");
    let code = format!("MACHINE HOLD_{}", HoldReason::LateralOverLimit.code());
    assert!(text.contains(&code), "{text}");
    // refuses to overwrite
    let again = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["record", "--audit"])
        .arg(&log)
        .arg("--plan")
        .arg(plan_path())
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let text = run(&["inspect".as_ref(), out_path.as_os_str()]);
    assert!(text.contains("Treatment record"), "{text}");
    assert!(text.contains("1 beam(s)"), "{text}");
    assert!(
        text.contains(&format!(
            "2 control point deliveries, 3 spot pieces; {code} (ionguide hold: lateral_over_limit (frame 2))"
        )),
        "{text}"
    );
}
