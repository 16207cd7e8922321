//! The audit log reads back what was written, and after damage tells a torn tail (a crash
//! mid-write) from corruption, losing nothing before either.

use std::path::Path;

use ionguide::audit::{
    corrections_digest, summary, AuditError, AuditOptions, AuditReader, AuditRecord, AuditWriter,
    Corrections, FrameRecord, Fsync, Outcome, SetupRecord, TailStatus, TargetRecord, VERSION,
};
use ionguide::correction::{HoldReason, RangeMode, RejectReason, SpotCorrection};

fn spots(n: u32, seed: f32) -> Vec<SpotCorrection> {
    (0..n)
        .map(|i| SpotCorrection {
            spot_index: i,
            x_mm: seed + i as f32 * 0.5,
            y_mm: -seed * 0.25 + i as f32,
            energy_mev_u: 200.0 + seed + i as f32 * 0.01,
            range_shifter_mm_we: -1.5 * seed,
        })
        .collect()
}

fn frame(id: u64, outcome: Outcome) -> FrameRecord {
    let held = outcome != Outcome::Corrected;
    FrameRecord {
        frame_id: id,
        origin: format!("sim:replay/{id}"),
        outcome: Some(outcome),
        hold_reason: held.then_some(HoldReason::LateralOverLimit),
        reject_reason: (outcome == Outcome::Rejected).then_some(RejectReason::NotCt),
        detail: if held {
            "lateral_over_limit: spot 3: lateral correction 7.25 mm over limit 5.00 mm".into()
        } else {
            String::new()
        },
        arrival_unix_ns: 1_700_000_000_000_000_000 + id * 100_000_000,
        complete_unix_ns: 1_700_000_000_000_000_000 + id * 100_000_000 + 5_000_000,
        acquired_unix_ns: Some(1_700_000_000_000_000_000 + id * 100_000_000 - 150_000_000),
        latency_ns: (!held).then_some(21_000_000 + id),
        stage_ns: [
            Some(4_000_000),
            Some(11_000_000),
            None,
            Some(30_000 + id),
            (!held).then_some(9_000),
        ],
        tumor_shift_mm: Some([1.5, -0.25 * id as f32, 3.0]),
        ncc: (outcome != Outcome::Dropped).then_some(0.9731),
        corrections: if held {
            Corrections::None
        } else {
            Corrections::Full {
                mode: Some(RangeMode::Energy),
                valid_until_unix_ns: 1_800_000_000_000_000_000 + id,
                spots: spots(5 + id as u32 % 7, id as f32),
            }
        },
    }
}

/// A log of every record kind and outcome; returns the records and each one's offset.
fn write_log(path: &Path, options: AuditOptions) -> (Vec<AuditRecord>, Vec<u64>) {
    let mut w = AuditWriter::create(path, 1_700_000_000_000_000_000, options).unwrap();
    let mut records = vec![AuditRecord::SessionStart {
        unix_ns: 1_700_000_000_000_000_001,
        config_sha256: [7; 32],
        plan_sop_uid: "1.2.826.0.1.3680043.8.274.1.1.42".into(),
        plan_warnings: vec![
            "Modality is \"RT Ion Plan IOD\", not RTPLAN".into(),
            "beam \"G90\": no Patient Position, HFS assumed".into(),
        ],
    }];
    for id in 0..12 {
        records.push(AuditRecord::Frame(frame(id, Outcome::ALL[id as usize % 4])));
        if id == 5 {
            records.push(AuditRecord::Link {
                unix_ns: 1_700_000_000_600_000_000,
                code: 3,
                detail: "controller ack late: 41 ms".into(),
            });
        }
        if id == 8 {
            // A setup from a registration file, and one without (the identity).
            records.push(AuditRecord::Setup(SetupRecord {
                unix_ns: 1_700_000_000_900_000_000,
                planning_frame_of_reference_uid: "1.2.826.0.1.3680043.8.274.1.1.7".into(),
                room_frame_of_reference_uid: "1.2.826.0.1.3680043.8.274.1.1.8".into(),
                planning_to_room: [
                    0.9996, -0.0262, 0.0, 0.0262, 0.9996, 0.0, 0.0, 0.0, 1.0, 35.0, -180.0, 1250.0,
                ],
                registration_sha256: Some([0xA5; 32]),
            }));
            records.push(AuditRecord::Setup(SetupRecord::new(
                1_700_000_000_900_000_001,
                "1.2.3",
                None,
                None,
            )));
        }
    }
    records.push(AuditRecord::Shutdown {
        unix_ns: 1_700_000_002_000_000_000,
        reason: "operator stop".into(),
    });
    let mut offsets = Vec::new();
    for r in &records {
        offsets.push(w.offset());
        match r {
            AuditRecord::Frame(f) => w.write_frame(f).unwrap(),
            other => w.write(other).unwrap(),
        }
    }
    w.flush().unwrap();
    w.sync().unwrap();
    offsets.push(w.offset());
    (records, offsets)
}

#[test]
fn records_read_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.igaudit");
    let (written, offsets) = write_log(&path, AuditOptions::default().with_fsync(Fsync::EveryRecord));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), *offsets.last().unwrap());
    let mut r = AuditReader::open(&path).unwrap();
    assert_eq!(r.header().session_start_unix_ns, 1_700_000_000_000_000_000);
    let read: Vec<AuditRecord> = r.by_ref().collect();
    assert_eq!(read, written);
    assert_eq!(r.status(), Some(&TailStatus::Clean));
    // A corrected frame of n spots carries 20 bytes per spot.
    let Some(AuditRecord::Frame(f)) = written.get(1) else {
        panic!()
    };
    let Corrections::Full { spots, .. } = &f.corrections else {
        panic!()
    };
    let (a, b) = (offsets[1], offsets[2]);
    let f_no_spots = {
        let mut g = f.clone();
        g.corrections = Corrections::Full {
            mode: Some(RangeMode::Energy),
            valid_until_unix_ns: 0,
            spots: vec![],
        };
        g
    };
    let p2 = dir.path().join("b.igaudit");
    let mut w = AuditWriter::create(&p2, 0, AuditOptions::default()).unwrap();
    w.write_frame(&f_no_spots).unwrap();
    assert_eq!((b - a) - (w.offset() - 32), 20 * spots.len() as u64);
}

#[test]
fn digest_mode_keeps_the_sha256_of_the_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.igaudit");
    let (written, _) = write_log(&path, AuditOptions::default().with_full_corrections(false));
    let (read, status) = AuditReader::read_all(&path).unwrap();
    assert_eq!(status, TailStatus::Clean);
    let mut digests = 0;
    for (w, r) in written.iter().zip(&read) {
        match (w, r) {
            (AuditRecord::Frame(fw), AuditRecord::Frame(fr)) => {
                match (&fw.corrections, &fr.corrections) {
                    (
                        Corrections::Full {
                            spots,
                            mode,
                            valid_until_unix_ns,
                        },
                        Corrections::Digest {
                            count,
                            sha256,
                            mode: m2,
                            valid_until_unix_ns: v2,
                        },
                    ) => {
                        assert_eq!(
                            (*count as usize, mode, valid_until_unix_ns),
                            (spots.len(), m2, v2)
                        );
                        assert_eq!(*sha256, corrections_digest(spots));
                        // A different list gives a different digest.
                        let mut other = spots.clone();
                        other[0].x_mm += 0.001;
                        assert_ne!(*sha256, corrections_digest(&other));
                        digests += 1;
                    }
                    (a, b) => assert_eq!(a, b),
                }
                let (mut a, mut b) = (fw.clone(), fr.clone());
                a.corrections = Corrections::None;
                b.corrections = Corrections::None;
                assert_eq!(a, b);
            }
            (a, b) => assert_eq!(a, b),
        }
    }
    assert_eq!(digests, 3);
    // SHA-256 of the bytes: known answer for the empty list (FIPS 180-2 test vector "").
    assert_eq!(
        corrections_digest(&[])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn truncation_anywhere_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.igaudit");
    let (written, offsets) = write_log(&path, AuditOptions::default());
    let bytes = std::fs::read(&path).unwrap();
    let (start, end) = (offsets[offsets.len() - 2], offsets[offsets.len() - 1]);
    let cut_path = dir.path().join("cut.igaudit");
    for cut in start + 1..end {
        std::fs::write(&cut_path, &bytes[..cut as usize]).unwrap();
        let (read, status) = AuditReader::read_all(&cut_path).unwrap();
        assert_eq!(read, written[..written.len() - 1], "cut at {cut}");
        assert_eq!(
            status,
            TailStatus::TornTail {
                offset: start,
                bytes: cut - start
            },
            "cut at {cut}"
        );
    }
    // Cut exactly at a record boundary: clean, one record fewer.
    std::fs::write(&cut_path, &bytes[..start as usize]).unwrap();
    assert_eq!(AuditReader::read_all(&cut_path).unwrap().1, TailStatus::Clean);
    // A crash that extended the file with zeros but wrote nothing: torn, nothing lost.
    let mut zeros = bytes.clone();
    zeros.extend_from_slice(&[0u8; 300]);
    std::fs::write(&cut_path, &zeros).unwrap();
    let (read, status) = AuditReader::read_all(&cut_path).unwrap();
    assert_eq!(read, written);
    assert_eq!(
        status,
        TailStatus::TornTail {
            offset: end,
            bytes: 300
        }
    );
}

#[test]
fn a_flipped_byte_in_the_middle_is_corruption_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.igaudit");
    let (written, offsets) = write_log(&path, AuditOptions::default());
    let bytes = std::fs::read(&path).unwrap();
    let k = 4; // a corrected frame in the middle
    let (start, end) = (offsets[k], offsets[k + 1]);
    let bad = dir.path().join("bad.igaudit");
    for at in start..end {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[at as usize] ^= mask;
            std::fs::write(&bad, &b).unwrap();
            let (read, status) = AuditReader::read_all(&bad).unwrap();
            assert_eq!(read, written[..k], "byte {at} ^ {mask:#x}");
            assert!(
                matches!(status, TailStatus::Corrupt { offset, .. } if offset == start),
                "byte {at} ^ {mask:#x}: {status:?}"
            );
        }
    }
}

#[test]
fn writers_never_overwrite_and_append_only_to_clean_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.igaudit");
    let (mut written, _) = write_log(&path, AuditOptions::default());
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(matches!(
        AuditWriter::create(&path, 0, AuditOptions::default()),
        Err(AuditError::Exists { .. })
    ));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "create must not truncate"
    );
    // Append to a clean log: old and new records read back.
    let mut w = AuditWriter::open_append(&path, AuditOptions::default()).unwrap();
    let extra = frame(99, Outcome::Corrected);
    w.write_frame(&extra).unwrap();
    drop(w);
    written.push(AuditRecord::Frame(extra));
    assert_eq!(
        AuditReader::read_all(&path).unwrap(),
        (written, TailStatus::Clean)
    );
    // A torn log is refused for append and left as it is.
    let mut b = std::fs::read(&path).unwrap();
    b.truncate(b.len() - 3);
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        AuditWriter::open_append(&path, AuditOptions::default()),
        Err(AuditError::NotClean {
            status: TailStatus::TornTail { .. },
            ..
        })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b);
    // Not a log at all, or a damaged header.
    let other = dir.path().join("x.txt");
    std::fs::write(&other, b"hello, this is not an audit log at all!!").unwrap();
    assert!(matches!(
        AuditReader::open(&other),
        Err(AuditError::BadHeader { .. })
    ));
    b[20] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let e = AuditReader::open(&path).unwrap_err();
    assert!(e.to_string().contains("header checksum"), "{e}");
}

#[test]
fn summary_counts_outcomes_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.igaudit");
    write_log(&path, AuditOptions::default().with_fsync(Fsync::Never));
    let s = summary(&path).unwrap();
    assert_eq!(
        (s.frames, s.sessions, s.link_events, s.shutdowns, s.setups),
        (12, 1, 1, 1, 2)
    );
    for o in Outcome::ALL {
        assert_eq!(s.outcomes.get(o.name()), Some(&3), "{o:?}");
    }
    assert_eq!(s.reasons.get("lateral_over_limit"), Some(&9));
    assert_eq!(
        s.rejects.get("not_ct"),
        Some(&3),
        "one in four of 12 frames rejected"
    );
    assert_eq!(s.rejects.len(), 1);
    assert_eq!(s.max_latency_ns, Some(21_000_008));
    assert_eq!(s.status, Some(TailStatus::Clean));
}

/// Rewrites a log's header version (and its checksum).
fn set_version(path: &Path, version: u16) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[8..10].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Turns a version 5 log into the layout of versions before 5: every record loses its
/// 40-byte chain prefix (seq u64, previous SHA-256), its length and CRC recomputed.
fn unchain(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let mut out = bytes[..32].to_vec();
    let mut o = 32;
    while o < bytes.len() {
        let len = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        let payload = &bytes[o + 8 + 40..o + 8 + len];
        let l = (payload.len() as u32).to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&l);
        h.update(payload);
        out.extend_from_slice(&l);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        o += 8 + len;
    }
    std::fs::write(path, out).unwrap();
}

/// Version 2 added setup records, version 3 the frames' reject reason and the plan's
/// warnings, version 4 the frames' acquisition instant, version 5 the chain, version 6 the
/// delivered spots and hold codes 14-17, version 7 the frame-target records (kind 9) and hold
/// codes 18-19: a version 1 to 6 log still reads (records of the kinds whose layout is unchanged are relabelled here; an
/// old frame record's bytes are checked in `tests/audit_vectors.rs`), but is not appended to
/// (its readers would not know the new fields); unknown versions are refused by name.
#[test]
fn older_logs_read_but_are_not_appended_to() {
    assert_eq!(VERSION, 7);
    for old in [1u16, 2, 3, 4, 5, 6] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("v{old}.igaudit"));
        let mut w = AuditWriter::create(&path, 5, AuditOptions::default()).unwrap();
        // (session starts grew the plan's warnings in version 3: their old layout is checked
        // against hand-written bytes below)
        let records = vec![
            AuditRecord::Link {
                unix_ns: 7,
                code: 11,
                detail: "controller silent".into(),
            },
            AuditRecord::Shutdown {
                unix_ns: 8,
                reason: "operator stop".into(),
            },
        ];
        for r in &records {
            w.write(r).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        // version 5 has the chain already; older ones are without it
        if old < 5 {
            unchain(&path);
        }
        set_version(&path, old);
        let mut r = AuditReader::open(&path).unwrap();
        assert_eq!(r.header().version, old);
        let read: Vec<AuditRecord> = r.by_ref().collect();
        assert_eq!(read, records);
        assert_eq!(r.status(), Some(&TailStatus::Clean));
        match AuditWriter::open_append(&path, AuditOptions::default()) {
            Err(e @ AuditError::AppendOldVersion { version, .. }) if version == old => {
                assert!(e.to_string().contains("start a new file"), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("appended to a version {old} log"),
        }
        set_version(&path, 8);
        match AuditReader::open(&path) {
            Err(e @ AuditError::UnsupportedVersion { version: 8, .. }) => {
                assert!(e.to_string().contains("reads 1 to 7"), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("read a version 8 log"),
        }
    }
}

/// A log of one session-start record, laid out by hand from `docs/audit-log.md`: header
/// (magic, version, flags, header length, start, reserved, CRC) and one record (length, CRC
/// of length and payload, payload).
fn hand_written_log(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = b"IGAUDIT\n".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&32u32.to_le_bytes());
    b.extend_from_slice(&9u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    b.extend_from_slice(&len);
    b.extend_from_slice(&h.finalize().to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// Version 3's session start ends in the plan's warnings (count u16, then strings); a
/// version 2 session start ends at the plan UID and still reads, with no warnings.
#[test]
fn session_start_plan_warnings_read_from_hand_written_bytes_and_older_logs_read_without() {
    let mut v2 = vec![1u8];
    v2.extend_from_slice(&7u64.to_le_bytes());
    v2.extend_from_slice(&[0xCD; 32]);
    v2.extend_from_slice(&3u16.to_le_bytes());
    v2.extend_from_slice(b"1.2");
    let mut v3 = v2.clone();
    v3.extend_from_slice(&2u16.to_le_bytes());
    v3.extend_from_slice(&2u16.to_le_bytes());
    v3.extend_from_slice(b"w1");
    v3.extend_from_slice(&5u16.to_le_bytes());
    v3.extend_from_slice("wé 2".as_bytes());
    let read = |version, payload: &[u8]| {
        let r = AuditReader::from_bytes(hand_written_log(version, payload), Path::new("hand")).unwrap();
        let mut r = r;
        let records: Vec<AuditRecord> = r.by_ref().collect();
        (records, r.status().cloned())
    };
    let session = |plan_warnings: Vec<String>| AuditRecord::SessionStart {
        unix_ns: 7,
        config_sha256: [0xCD; 32],
        plan_sop_uid: "1.2".into(),
        plan_warnings,
    };
    assert_eq!(
        read(3, &v3),
        (
            vec![session(vec!["w1".into(), "wé 2".into()])],
            Some(TailStatus::Clean)
        )
    );
    assert_eq!(read(2, &v2), (vec![session(vec![])], Some(TailStatus::Clean)));
    assert_eq!(read(1, &v2), (vec![session(vec![])], Some(TailStatus::Clean)));
    // the same bytes the other way round do not decode: a version 3 session start without
    // its count, and a version 2 one with bytes left over
    assert!(matches!(read(3, &v2).1, Some(TailStatus::Corrupt { .. })));
    assert!(matches!(read(2, &v3).1, Some(TailStatus::Corrupt { .. })));
    // and what the writer writes is exactly those bytes
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.igaudit");
    let mut w = AuditWriter::create(&path, 9, AuditOptions::default()).unwrap();
    w.write(&session(vec!["w1".into(), "wé 2".into()])).unwrap();
    w.flush().unwrap();
    drop(w);
    // (versions 4 and 5 left session starts as they were; 5 put the chain prefix before)
    unchain(&path);
    set_version(&path, 4);
    assert_eq!(std::fs::read(&path).unwrap(), hand_written_log(4, &v3));
}

/// Kind 8 (delivered spots), laid out by hand from `docs/audit-log.md`: after the chain
/// prefix, kind, read instant u64, first ordinal u64, count u32, then count × 44 bytes
/// (spot index u32, x, y, energy, range shifter f32, meterset f64, frame id u64, delivery
/// instant u64). What the writer writes reads back the same; a negative meterset does not
/// decode.
#[test]
fn delivered_spots_records_read_from_hand_written_bytes() {
    use ionguide::correction::DeliveredSpot;
    let spot = |i: u32, meterset: f64| DeliveredSpot {
        spot: SpotCorrection {
            spot_index: i,
            x_mm: 1.5 * i as f32,
            y_mm: -2.0,
            energy_mev_u: 150.25,
            range_shifter_mm_we: 0.5,
        },
        meterset,
        frame_id: 40 + u64::from(i),
        delivered_unix_ns: 1_750_000_000_000_000_000 + u64::from(i),
    };
    let record = AuditRecord::Delivered {
        unix_ns: 77,
        first_ordinal: 5,
        spots: vec![spot(0, 0.25), spot(3, 1e6)],
    };
    let mut payload = 0u64.to_le_bytes().to_vec(); // seq 0
    payload.extend_from_slice(&[0u8; 32]); // previous record's hash (not checked by the reader)
    payload.push(8);
    payload.extend_from_slice(&77u64.to_le_bytes());
    payload.extend_from_slice(&5u64.to_le_bytes());
    payload.extend_from_slice(&2u32.to_le_bytes());
    for (i, m) in [(0u32, 0.25f64), (3, 1e6)] {
        payload.extend_from_slice(&i.to_le_bytes());
        payload.extend_from_slice(&(1.5 * i as f32).to_le_bytes());
        payload.extend_from_slice(&(-2.0f32).to_le_bytes());
        payload.extend_from_slice(&150.25f32.to_le_bytes());
        payload.extend_from_slice(&0.5f32.to_le_bytes());
        payload.extend_from_slice(&m.to_le_bytes());
        payload.extend_from_slice(&(40 + u64::from(i)).to_le_bytes());
        payload.extend_from_slice(&(1_750_000_000_000_000_000 + u64::from(i)).to_le_bytes());
    }
    let read = |payload: &[u8]| {
        let mut r = AuditReader::from_bytes(hand_written_log(VERSION, payload), Path::new("hand")).unwrap();
        let records: Vec<AuditRecord> = r.by_ref().collect();
        (records, r.status().cloned())
    };
    assert_eq!(read(&payload), (vec![record.clone()], Some(TailStatus::Clean)));
    let mut negative = payload.clone();
    let at = 40 + 1 + 8 + 8 + 4 + 20;
    negative[at..at + 8].copy_from_slice(&(-1.0f64).to_le_bytes());
    assert!(matches!(read(&negative).1, Some(TailStatus::Corrupt { .. })));
    // a count beyond the bytes present does not decode either (nor reserves for it)
    let mut overlong = payload.clone();
    overlong[57..61].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(read(&overlong).1, Some(TailStatus::Corrupt { .. })));
    // the writer's record reads back the same, and the summary counts its spots
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.igaudit");
    let mut w = AuditWriter::create(&path, 9, AuditOptions::default()).unwrap();
    w.write(&record).unwrap();
    w.flush().unwrap();
    drop(w);
    let mut r = AuditReader::open(&path).unwrap();
    let back: Vec<AuditRecord> = r.by_ref().collect();
    assert_eq!(back, vec![record]);
    let s = summary(&path).unwrap();
    assert_eq!(s.delivered_spots, 2);
}

/// Kind 9 (the target in a frame, version 7), laid out by hand from `docs/audit-log.md`:
/// after the chain prefix, kind, frame id u64, flags u8 (bit 0 accepted, bit 1 centroid
/// present), volume, planned volume, change f64, centroid 3 × f64, Jacobian minimum, field
/// maximum, inverse error, NCC f64, spots checked u32, switched-off count u32, then the
/// indices u32. What the writer writes reads back the same; the record is not read from a
/// version 6 log, whose readers would take it for damage.
#[test]
fn frame_target_records_read_from_hand_written_bytes() {
    let record = AuditRecord::Target(TargetRecord {
        frame_id: 12,
        accepted: true,
        volume_cc: 29.5,
        planned_volume_cc: 36.25,
        volume_change_pct: -18.62,
        centroid_mm: Some([1.5, -2.0, 30.0]),
        jacobian_min: 0.55,
        field_max_mm: 6.25,
        inverse_error_mm: 0.125,
        similarity_ncc: 0.998,
        spots_total: 40,
        spots_off: vec![3, 17, 39],
    });
    let mut payload = 0u64.to_le_bytes().to_vec(); // seq 0
    payload.extend_from_slice(&[0u8; 32]); // previous record's hash (not checked by the reader)
    payload.push(9);
    payload.extend_from_slice(&12u64.to_le_bytes());
    payload.push(0b11);
    for v in [29.5f64, 36.25, -18.62, 1.5, -2.0, 30.0, 0.55, 6.25, 0.125, 0.998] {
        payload.extend_from_slice(&v.to_le_bytes());
    }
    payload.extend_from_slice(&40u32.to_le_bytes());
    payload.extend_from_slice(&3u32.to_le_bytes());
    for i in [3u32, 17, 39] {
        payload.extend_from_slice(&i.to_le_bytes());
    }
    let read = |version: u16, payload: &[u8]| {
        let mut r = AuditReader::from_bytes(hand_written_log(version, payload), Path::new("hand")).unwrap();
        let records: Vec<AuditRecord> = r.by_ref().collect();
        (records, r.status().cloned())
    };
    assert_eq!(
        read(VERSION, &payload),
        (vec![record.clone()], Some(TailStatus::Clean))
    );
    assert!(matches!(read(6, &payload).1, Some(TailStatus::Corrupt { .. })));
    // an undefined flag bit, or a count beyond the bytes present, does not decode
    let mut flags = payload.clone();
    flags[49] = 0b111;
    assert!(matches!(
        read(VERSION, &flags).1,
        Some(TailStatus::Corrupt { .. })
    ));
    let mut overlong = payload.clone();
    let at = 40 + 1 + 8 + 1 + 80 + 4;
    overlong[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read(VERSION, &overlong).1,
        Some(TailStatus::Corrupt { .. })
    ));
    // no centroid: bit 1 clear, three zeros in its place
    let mut vanished = payload.clone();
    vanished[49] = 0b01;
    let (records, _) = read(VERSION, &vanished);
    match &records[..] {
        [AuditRecord::Target(t)] => assert_eq!(t.centroid_mm, None),
        other => panic!("{other:?}"),
    }
    // the writer's record reads back the same, and the summary counts it
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.igaudit");
    let mut w = AuditWriter::create(&path, 9, AuditOptions::default()).unwrap();
    w.write(&record).unwrap();
    w.flush().unwrap();
    drop(w);
    let mut r = AuditReader::open(&path).unwrap();
    let back: Vec<AuditRecord> = r.by_ref().collect();
    assert_eq!(back, vec![record]);
    let s = summary(&path).unwrap();
    assert_eq!((s.targets, s.spots_off), (1, 3));
}
