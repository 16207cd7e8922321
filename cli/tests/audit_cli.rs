//! `ionguide audit` on a log written by the library's writer: what it reports for a whole
//! session, a log cut by a crash (reported, exit 0) and a damaged one (exit 1, records before
//! the damage still listed).

use std::path::Path;
use std::process::{Command, Output};

use ionguide::audit::{
    AuditOptions, AuditRecord, AuditWriter, Corrections, FrameRecord, Outcome, SetupRecord, TargetRecord,
};
use ionguide::correction::{HoldReason, RangeMode, RejectReason, SpotCorrection};
use ionguide::geometry::{RigidTransform, RoomSetup};
use ionguide::units::VectorMm;

const T0: u64 = 1_796_000_000_000_000_000; // 2026-11-30 00:53:20 UTC

fn frame(id: u64, latency_ms: Option<u64>, hold: Option<HoldReason>) -> FrameRecord {
    FrameRecord {
        frame_id: id,
        origin: format!("scp:1.2.3/{id}"),
        outcome: Some(if hold.is_some() {
            Outcome::Held
        } else {
            Outcome::Corrected
        }),
        hold_reason: hold,
        reject_reason: None,
        detail: String::new(),
        arrival_unix_ns: T0 + id * 100_000_000,
        complete_unix_ns: T0 + id * 100_000_000 + 1_000_000,
        acquired_unix_ns: None,
        latency_ns: latency_ms.map(|ms| ms * 1_000_000),
        stage_ns: [None; 5],
        tumor_shift_mm: Some([0.5, -1.25, 2.0]),
        ncc: Some(0.987),
        corrections: match hold {
            Some(_) => Corrections::None,
            None => Corrections::Full {
                mode: Some(RangeMode::Energy),
                valid_until_unix_ns: T0 + id * 100_000_000 + 60_000_000,
                spots: (0..7)
                    .map(|i| SpotCorrection {
                        spot_index: i,
                        x_mm: 1.0,
                        y_mm: -1.0,
                        energy_mev_u: 250.0,
                        range_shifter_mm_we: 0.0,
                    })
                    .collect(),
            },
        },
    }
}

/// A session of 100 frames: latencies 1..=98 ms for 98 corrected ones, two held.
fn write_session(path: &Path) {
    let mut w = AuditWriter::create(path, T0, AuditOptions::default()).unwrap();
    w.write(&AuditRecord::SessionStart {
        unix_ns: T0,
        config_sha256: [0xAB; 32],
        plan_sop_uid: "1.2.826.0.1.3680043.8.274.1.1.99".into(),
        plan_warnings: vec![],
    })
    .unwrap();
    let setup = RoomSetup {
        planning_to_room: RigidTransform::from_xyz_deg([0.4, 0.0, 1.5], VectorMm::new(35.0, -180.0, 1250.0)),
        planning_frame_of_reference_uid: "1.2.3.100".into(),
        room_frame_of_reference_uid: "1.2.3.200".into(),
    };
    w.write(&AuditRecord::Setup(SetupRecord::new(
        T0,
        "ignored",
        Some(&setup),
        Some([0x5C; 32]),
    )))
    .unwrap();
    for id in 1..=100u64 {
        let f = match id {
            40 => frame(id, None, Some(HoldReason::DeadlineMissed)),
            70 => frame(id, None, Some(HoldReason::LateralOverLimit)),
            _ => frame(id, Some(id - u64::from(id > 40) - u64::from(id > 70)), None),
        };
        w.write_frame(&f).unwrap();
    }
    // a structure set sent to the scanner port by mistake
    w.write_frame(&FrameRecord {
        frame_id: 101,
        origin: "scp:TPS@10.0.0.7".into(),
        outcome: Some(Outcome::Rejected),
        hold_reason: Some(HoldReason::CorruptFrame),
        reject_reason: Some(RejectReason::NotCt),
        detail: "SOP class 1.2.840.10008.5.1.4.1.1.481.3 (RT Structure Set Storage) is not CT Image Storage nor Enhanced CT Image Storage".into(),
        arrival_unix_ns: T0 + 10_200_000_000,
        complete_unix_ns: T0 + 10_200_000_000,
        ..FrameRecord::default()
    })
    .unwrap();
    // deformable tracking's target in two frames
    for (frame_id, change_pct, off) in [(1u64, -4.0, vec![2u32]), (2, -12.5, vec![2, 5, 6])] {
        w.write(&AuditRecord::Target(TargetRecord {
            frame_id,
            accepted: true,
            volume_cc: 40.0 * (1.0 + change_pct / 100.0),
            planned_volume_cc: 40.0,
            volume_change_pct: change_pct,
            centroid_mm: Some([1.0, 2.0, 3.0]),
            jacobian_min: 0.8,
            field_max_mm: 2.5,
            inverse_error_mm: 0.1,
            similarity_ncc: 0.99,
            spots_total: 7,
            spots_off: off,
        }))
        .unwrap();
    }
    w.write(&AuditRecord::Link {
        unix_ns: T0 + 5_000_000_000,
        code: 3,
        detail: "controller ack late: 41 ms".into(),
    })
    .unwrap();
    w.write(&AuditRecord::Shutdown {
        unix_ns: T0 + 11_000_000_000,
        reason: "signal".into(),
    })
    .unwrap();
    w.flush().unwrap();
}

fn audit(path: &Path, extra: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .arg("audit")
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

#[test]
fn a_whole_session_is_summarized_with_its_setup_and_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.igaudit");
    write_session(&path);
    let (out, text) = audit(&path, &[]);
    assert!(out.status.success(), "{text}");
    for want in [
        "format version 7",
        "started 2026-11-30 00:53:20.000 UTC",
        "plan 1.2.826.0.1.3680043.8.274.1.1.99",
        &"ab".repeat(32),
        "planning Frame of Reference 1.2.3.100 → room 1.2.3.200: translation (35.00, -180.00, 1250.00) mm",
        "x 0.400°, y 0.000°, z 1.500°",
        &"5c".repeat(32),
        "frames    101: corrected 98, held 2, rejected 1",
        "rejected  on input: not_ct 1",
        "deadline_missed 1",
        "lateral_over_limit 1",
        // 98 latencies 1..=98 ms: nearest-rank p50 is the 49th, p99 the 98th
        "p50 49.00 ms, p99 98.00 ms, max 98.00 ms",
        "controller ack late: 41 ms",
        "target    2 frame(s) tracked deformably (0 rejected), volume change -12.5…-4.0% from plan, 4 spot-frame(s) switched off",
        "last: frame 2: 35.00 cc (-12.5% from 40.00 cc), centroid (1.0, 2.0, 3.0) mm, J min 0.800, |u| max 2.5 mm, 3/7 spots off",
        "(signal)",
        "ends cleanly",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let (out, json) = audit(&path, &["--json", "--frames"]);
    assert!(out.status.success(), "{json}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 7);
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
    assert_eq!(v["targets"][1]["volume_change_pct"], -12.5);
    assert_eq!(v["targets"][1]["spots_off"], serde_json::json!([2, 5, 6]));
    assert_eq!(v["reject_reasons"]["not_ct"], 1);
    assert_eq!(v["frames"][100]["reject_reason"], "not_ct");
    assert_eq!(v["frames"][100]["hold_reason"], "corrupt_frame");
    assert_eq!(v["outcomes"]["corrected"], 98);
    assert_eq!(v["hold_reasons"]["deadline_missed"], 1);
    assert_eq!(v["latency"]["p99_ms"], 98.0);
    assert_eq!(v["setups"][0]["room_frame_of_reference_uid"], "1.2.3.200");
    assert_eq!(v["setups"][0]["planning_to_room_translation_mm"][2], 1250.0);
    assert_eq!(v["frames"].as_array().unwrap().len(), 101);
    assert_eq!(v["frames"][39]["hold_reason"], "deadline_missed");
    assert_eq!(v["frames"][0]["spots_sent"], 7);
    assert_eq!(v["tail"]["status"], "clean");

    let svg = dir.path().join("latency.svg");
    let (out, text) = audit(&path, &["--plot", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    // one dot per corrected frame, plus the legend's
    assert_eq!(drawn.matches("<circle").count(), 98 + 1, "{text}");
    assert!(
        drawn.contains("101 frames") && drawn.contains("3 not corrected"),
        "{drawn}"
    );

    // the frame list names why the frame was refused, and what was found
    let (out, text) = audit(&path, &["--frames"]);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("101 "))
        .unwrap_or_else(|| panic!("no line for frame 101 in:\n{text}"));
    assert!(line.contains("rejected") && line.contains("not_ct"), "{line}");
    assert!(line.contains("RT Structure Set Storage"), "{line}");
}

#[test]
fn a_crash_cut_log_is_reported_and_a_damaged_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.igaudit");
    write_session(&path);
    let whole = std::fs::read(&path).unwrap();

    // Cut in the middle of the last record (the shutdown): a crash mid-write.
    std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
    let (out, text) = audit(&path, &[]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("is incomplete") && text.contains("a crash mid-write"),
        "{text}"
    );
    assert!(text.contains("no shutdown record"), "{text}");
    assert!(text.contains("frames    101:"), "{text}");

    // A flipped byte in a record in the middle: damage, not a crash.
    let mut damaged = whole.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&path, &damaged).unwrap();
    let (out, text) = audit(&path, &[]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("DAMAGED at byte"), "{text}");
    assert!(
        text.contains("error:") && text.contains("damaged at byte"),
        "{text}"
    );
    // the frames before the damage are still counted
    let counted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("frames    "))
        .and_then(|l| l.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(counted > 10 && counted < 100, "{text}");
}

/// `--verify --key`: a signed session log is proven whole (exit 0); the same log with one
/// frame record edited and its CRC recomputed fails, naming that record's byte offset and
/// the checkpoint it is proven up to; a key file others may read is refused.
#[test]
fn verify_proves_a_signed_log_and_names_an_edited_record() {
    use ionguide::audit::AuditKey;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit.key");
    std::fs::write(&key_path, "42".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key = AuditKey::from_file(&key_path).unwrap();
    let path = dir.path().join("signed.igaudit");
    let mut w = AuditWriter::create(&path, T0, AuditOptions::default())
        .unwrap()
        .sign_with(key, 10);
    let mut offsets = Vec::new();
    for id in 1..=30u64 {
        offsets.push(w.offset());
        w.write_frame(&frame(id, Some(id), None)).unwrap();
    }
    w.close().unwrap();
    drop(w);
    let key_arg = key_path.to_str().unwrap();
    let (out, text) = audit(&path, &["--verify", "--key", key_arg]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("INTACT") && text.contains("34 records, 4 checkpoints, 4 verified"),
        "{text}"
    );

    // frame 25, record 26 (after the checkpoints at records 10 and 21): a byte of its origin
    // string changed, CRC recomputed
    let mut bytes = std::fs::read(&path).unwrap();
    let at = offsets[24] as usize;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let rec = &mut bytes[at..at + 8 + len];
    rec[8 + 40 + 20] ^= 0x01; // inside the origin string "scp:1.2.3/25"
    let crc = crc32fast_hash(&rec[0..4], &rec[8..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (out, text) = audit(&path, &["--verify", "--key", key_arg]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("byte {at}, record 26")), "{text}");
    assert!(text.contains("edited after it was written"), "{text}");
    assert!(text.contains("through record 21"), "{text}");

    // without the key: not proven, exit 1
    let (out, text) = audit(&path, &["--verify"]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("nothing proven: no key given"), "{text}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (out, text) = audit(&path, &["--verify", "--key", key_arg]);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("mode 644") && text.contains("chmod 600"), "{text}");
    }
}

/// CRC-32 (IEEE) of the length bytes followed by the payload, as the format defines it.
fn crc32fast_hash(len: &[u8], payload: &[u8]) -> u32 {
    // the IEEE polynomial, bit by bit: the test does not use the crate's checksum code
    let mut crc = !0u32;
    for &b in len.iter().chain(payload) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
