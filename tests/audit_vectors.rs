//! The audit log's bytes against `docs/audit-log.md`, written here by hand field by field:
//! the reader must decode them to the expected records, and the writer must produce exactly
//! them. Checksums and digests are computed with crc32fast and sha2 over the hand-written
//! bytes, never with the crate's encoder.

mod doc_example;

use std::path::Path;

use ionguide::audit::{
    corrections_digest, AuditOptions, AuditReader, AuditRecord, AuditWriter, Corrections, FrameRecord, Fsync,
    Outcome, TailStatus,
};
use ionguide::correction::{HoldReason, RangeMode, RejectReason};
use sha2::{Digest, Sha256};

/// Session start in the header: 0x1800_0000_0000_0000 ns (2024-10-20).
const START_NS: u64 = 0x1800_0000_0000_0000;

/// The 32-byte header of docs/audit-log.md, "Header", for format `version`.
fn header(version: u16) -> Vec<u8> {
    #[rustfmt::skip]
    let mut h = vec![
        0x49, 0x47, 0x41, 0x55, 0x44, 0x49, 0x54, 0x0a, //  0 magic "IGAUDIT\n"
        version as u8, 0x00, //                             8 version u16
        0x00, 0x00, //                                     10 flags u16 = 0
        0x20, 0x00, 0x00, 0x00, //                         12 header length u32 = 32
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // 16 session start u64 = START_NS
        0x00, 0x00, 0x00, 0x00, //                         24 reserved u32 = 0
    ];
    // 28: CRC-32 (IEEE) of bytes 0..28
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(h.len(), 32);
    h
}

/// A record: length u32, CRC-32 of the 4 length bytes followed by the payload, payload.
fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut r = len.to_vec();
    r.extend_from_slice(&crc.finalize().to_le_bytes());
    r.extend_from_slice(payload);
    r
}

/// Frame 42, a structure set sent by mistake: rejected, `not_ct`, the controller told
/// `corrupt_frame`, in the layout of format `version`: versions 1 and 2 have no reject
/// reason, versions 1 to 3 no acquisition instant.
fn rejected_payload(version: u16) -> Vec<u8> {
    let mut p = vec![
        0x02, //                                           kind 2 frame
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame_id u64 = 42
        0x07, 0x00, b's', b'c', b'p', b':', b'C', b'T', b'1', // origin "scp:CT1"
        0x02, //                                           outcome 2 rejected
        0x03, 0x00, //                                     hold reason 3 corrupt_frame
    ];
    if version >= 3 {
        p.extend_from_slice(&[0x01, 0x00]); //             reject reason 1 not_ct
    }
    p.extend_from_slice(&[
        0x08, 0x00, b'R', b'T', b'S', b'T', b'R', b'U', b'C', b'T', // detail "RTSTRUCT"
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // arrival = START_NS + 0x100
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // complete = START_NS + 0x200
    ]);
    if version >= 4 {
        p.extend_from_slice(&[0xff; 8]); //                 acquired: none (never decoded)
    }
    p.extend_from_slice(&[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // latency: none
        0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ingest 0x1000 ns
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // register: none
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // range: none
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // adapt: none
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // link: none
        0x00, //                                           flags: no shift, no NCC
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // shift 3 × 0.0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // NCC 0.0
        0x00, //                                           corrections tag 0 none
    ]);
    p
}

fn rejected_record(version: u16) -> FrameRecord {
    FrameRecord {
        frame_id: 42,
        origin: "scp:CT1".into(),
        outcome: Some(Outcome::Rejected),
        hold_reason: Some(HoldReason::CorruptFrame),
        reject_reason: (version >= 3).then_some(RejectReason::NotCt),
        detail: "RTSTRUCT".into(),
        arrival_unix_ns: START_NS + 0x100,
        complete_unix_ns: START_NS + 0x200,
        acquired_unix_ns: None,
        latency_ns: None,
        stage_ns: [Some(0x1000), None, None, None, None],
        tumor_shift_mm: None,
        ncc: None,
        corrections: Corrections::None,
    }
}

/// Two spots, 20 bytes each: index u32, x f32, y f32, energy f32, range shifter f32.
const SPOT_BYTES: [u8; 40] = [
    0x00, 0x00, 0x00, 0x00, // spot 0: index 0
    0x00, 0x00, 0x20, 0x41, //   x 10.0 mm
    0x00, 0x00, 0xa0, 0xc0, //   y -5.0 mm
    0x00, 0x00, 0x7a, 0x43, //   energy 250.0 MeV/u
    0x00, 0x00, 0x00, 0x00, //   range shifter 0.0 mm
    0x01, 0x00, 0x00, 0x00, // spot 1: index 1
    0x00, 0x00, 0x48, 0x41, //   x 12.5 mm
    0x00, 0x00, 0xa0, 0xc0, //   y -5.0 mm
    0x00, 0x80, 0x78, 0x43, //   energy 248.5 MeV/u
    0x00, 0x00, 0x00, 0x00, //   range shifter 0.0 mm
];

/// Frame 43, corrected, its two spots in full (`digest` false) or as their SHA-256.
fn corrected_payload(digest: bool) -> Vec<u8> {
    let mut p = vec![
        0x02, //                                           kind 2 frame
        0x2b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame_id u64 = 43
        0x00, 0x00, //                                     origin ""
        0x00, //                                           outcome 0 corrected
        0x00, 0x00, //                                     hold reason: none
        0x00, 0x00, //                                     reject reason: none
        0x00, 0x00, //                                     detail ""
        0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // arrival = START_NS + 0x300
        0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // complete = START_NS + 0x400
        0x80, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // acquired = START_NS + 0x280 (before arrival)
        0x40, 0x6f, 0x40, 0x01, 0x00, 0x00, 0x00, 0x00, // latency 21 000 000 ns (0x01406f40)
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ingest 0x100 ns
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // register 0x200 ns
        0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range 0x300 ns
        0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // adapt 0x400 ns
        0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // link 0x500 ns
        0x03, //                                           flags: shift and NCC present
        0x00, 0x00, 0xc0, 0x3f, //                         shift x 1.5 mm
        0x00, 0x00, 0x00, 0xc0, //                         shift y -2.0 mm
        0x00, 0x00, 0x80, 0x3e, //                         shift z 0.25 mm
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x3f, // NCC 0.75 (f64 0x3fe8…)
    ];
    p.push(if digest { 0x02 } else { 0x01 }); //       corrections tag: 1 full, 2 digest
    p.extend_from_slice(&[
        0x00, //                                           mode 0 Energy
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x18, // valid until START_NS + 0x10000
        0x02, 0x00, 0x00, 0x00, //                         count 2
    ]);
    if digest {
        // SHA-256 of exactly the 2 × 20 spot bytes
        p.extend_from_slice(&Sha256::digest(SPOT_BYTES));
    } else {
        p.extend_from_slice(&SPOT_BYTES);
    }
    p
}

fn corrected_record(digest: bool) -> FrameRecord {
    FrameRecord {
        frame_id: 43,
        origin: String::new(),
        outcome: Some(Outcome::Corrected),
        hold_reason: None,
        reject_reason: None,
        detail: String::new(),
        arrival_unix_ns: START_NS + 0x300,
        complete_unix_ns: START_NS + 0x400,
        acquired_unix_ns: Some(START_NS + 0x280),
        latency_ns: Some(21_000_000),
        stage_ns: [Some(0x100), Some(0x200), Some(0x300), Some(0x400), Some(0x500)],
        tumor_shift_mm: Some([1.5, -2.0, 0.25]),
        ncc: Some(0.75),
        corrections: if digest {
            Corrections::Digest {
                mode: Some(RangeMode::Energy),
                valid_until_unix_ns: START_NS + 0x10000,
                count: 2,
                sha256: Sha256::digest(SPOT_BYTES).into(),
            }
        } else {
            Corrections::Full {
                mode: Some(RangeMode::Energy),
                valid_until_unix_ns: START_NS + 0x10000,
                spots: doc_example::two_spots(),
            }
        },
    }
}

fn read(bytes: Vec<u8>) -> (u16, Vec<AuditRecord>, TailStatus) {
    let mut r = AuditReader::from_bytes(bytes, Path::new("hand-written")).unwrap();
    let records: Vec<AuditRecord> = r.by_ref().collect();
    (r.header().version, records, r.status().cloned().unwrap())
}

fn written(options: AuditOptions, frames: &[FrameRecord]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.igaudit");
    let mut w = AuditWriter::create(&path, START_NS, options.with_fsync(Fsync::Never)).unwrap();
    for f in frames {
        w.write_frame(f).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    std::fs::read(&path).unwrap()
}

/// A version 5 log: the header, then each payload behind its chain prefix (seq u64 from 0,
/// SHA-256 of the whole previous record, of the header for the first), docs/audit-log.md
/// "Chain".
fn chained(payloads: &[Vec<u8>]) -> Vec<u8> {
    chained_as(7, payloads)
}

/// [`chained`] behind a header of format `version` (5, 6 and 7 share the layout: 6 and 7
/// add record kinds and hold codes).
fn chained_as(version: u16, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = header(version);
    let mut prev: [u8; 32] = Sha256::digest(&bytes).into();
    for (seq, p) in payloads.iter().enumerate() {
        let mut full = (seq as u64).to_le_bytes().to_vec();
        full.extend_from_slice(&prev);
        full.extend_from_slice(p);
        let r = record(&full);
        prev = Sha256::digest(&r).into();
        bytes.extend(r);
    }
    bytes
}

#[test]
fn hand_written_frames_decode_and_the_writer_produces_them() {
    // the version 4 layout (no chain) still reads
    let mut v4 = header(4);
    v4.extend(record(&rejected_payload(4)));
    v4.extend(record(&corrected_payload(false)));
    let want = [rejected_record(4), corrected_record(false)];
    let want_records = want.iter().cloned().map(AuditRecord::Frame).collect::<Vec<_>>();
    let (version, records, status) = read(v4);
    assert_eq!(version, 4);
    assert_eq!(status, TailStatus::Clean);
    assert_eq!(records, want_records);
    // version 5: the same payloads behind their chain prefixes, still read
    let (version, records, status) = read(chained_as(5, &[rejected_payload(4), corrected_payload(false)]));
    assert_eq!(version, 5);
    assert_eq!(status, TailStatus::Clean);
    assert_eq!(records, want_records);
    // version 6: the same payloads, still read
    let (version, records, status) = read(chained_as(6, &[rejected_payload(4), corrected_payload(false)]));
    assert_eq!(version, 6);
    assert_eq!(status, TailStatus::Clean);
    assert_eq!(records, want_records);
    // version 7 (the writer's): the same layout; the writer produces exactly these bytes
    let bytes = chained(&[rejected_payload(4), corrected_payload(false)]);
    let (version, records, status) = read(bytes.clone());
    assert_eq!(version, 7);
    assert_eq!(status, TailStatus::Clean);
    assert_eq!(records, want_records);
    assert_eq!(
        written(AuditOptions::default(), &want),
        bytes,
        "the writer's bytes"
    );
}

/// A checkpoint by hand: kind 6, interval u32, closing u8, key id (8 bytes), then the
/// HMAC-SHA256 of the label "IGAUDIT checkpoint\0" followed by the payload so far (chain
/// prefix included), computed here with the hmac crate.
#[test]
fn a_signed_writer_adds_the_documented_checkpoints() {
    use hmac::{Hmac, Mac};
    let key_bytes = [0x5au8; 32];
    let key = ionguide::audit::AuditKey::from_bytes(&key_bytes).unwrap();
    let key_id: [u8; 8] = {
        let mut h = Sha256::new();
        h.update(b"ionguide key id\0");
        h.update(key_bytes);
        h.finalize()[..8].try_into().unwrap()
    };
    assert_eq!(key.key_id(), key_id);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.igaudit");
    let mut w = AuditWriter::create(&path, START_NS, AuditOptions::default().with_fsync(Fsync::Never))
        .unwrap()
        .sign_with(key, 2);
    w.write_frame(&rejected_record(4)).unwrap();
    w.write_frame(&corrected_record(false)).unwrap();
    w.close().unwrap();
    drop(w);
    let got = std::fs::read(&path).unwrap();
    // build by hand: two frames, a periodic checkpoint after them, a closing one
    let mut bytes = chained(&[rejected_payload(4), corrected_payload(false)]);
    for (seq, closing) in [(2u64, 0u8), (3, 1)] {
        let prev: [u8; 32] = {
            // the last record: walk lengths from the header
            let mut o = 32;
            let mut last = 32..32;
            while o < bytes.len() {
                let len = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
                last = o..o + 8 + len;
                o += 8 + len;
            }
            Sha256::digest(&bytes[last]).into()
        };
        let mut payload = seq.to_le_bytes().to_vec();
        payload.extend_from_slice(&prev);
        payload.push(6);
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.push(closing);
        payload.extend_from_slice(&key_id);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key_bytes).unwrap();
        mac.update(b"IGAUDIT checkpoint\0");
        mac.update(&payload);
        payload.extend_from_slice(&mac.finalize().into_bytes());
        bytes.extend(record(&payload));
    }
    assert_eq!(got, bytes);
    // checkpoints are not events: the reader skips them and counts them
    let mut r = AuditReader::from_bytes(bytes, Path::new("hand-written")).unwrap();
    assert_eq!(r.by_ref().count(), 2);
    assert_eq!(r.checkpoints(), 2);
    assert_eq!(r.status(), Some(&TailStatus::Clean));
}

#[test]
fn the_corrections_digest_is_sha256_of_the_documented_spot_bytes() {
    let sha: [u8; 32] = Sha256::digest(SPOT_BYTES).into();
    assert_eq!(corrections_digest(&doc_example::two_spots()), sha);
    // a digest-only writer turns the full list into tag 2 with exactly that hash
    let bytes = chained(&[corrected_payload(true)]);
    let options = AuditOptions::default().with_full_corrections(false);
    assert_eq!(written(options, &[corrected_record(false)]), bytes);
    let (_, records, status) = read(bytes);
    assert_eq!(status, TailStatus::Clean);
    assert_eq!(records, vec![AuditRecord::Frame(corrected_record(true))]);
}

/// Versions 1 and 2 have no reject reason in frame records, versions 1 to 3 no acquisition
/// instant: their frames still read, with none, and each version's bytes under the next
/// version's header do not decode (the layouts differ).
#[test]
fn older_frame_records_read_without_a_reject_reason_or_acquisition_instant() {
    for version in [1, 2, 3] {
        let mut bytes = header(version);
        bytes.extend(record(&rejected_payload(version)));
        let (v, records, status) = read(bytes);
        assert_eq!(v, version);
        assert_eq!(status, TailStatus::Clean);
        assert_eq!(records, vec![AuditRecord::Frame(rejected_record(version))]);
    }
    for (layout, header_version) in [(2, 3), (3, 4)] {
        let mut bytes = header(header_version);
        bytes.extend(record(&rejected_payload(layout)));
        let (_, records, status) = read(bytes);
        assert!(
            records.is_empty(),
            "version {layout} bytes under a {header_version} header"
        );
        assert!(
            matches!(status, TailStatus::Corrupt { offset: 32, .. }),
            "{status:?}"
        );
    }
}

/// A corrected frame's acquisition instant, written between completion and latency, reads
/// back; the version 3 layout of the same frame (no instant) reads back with none.
#[test]
fn the_acquisition_instant_sits_after_completion() {
    let v4 = corrected_payload(false);
    // kind, frame_id, origin "", outcome, hold, reject, detail "", arrival, complete
    let at = 1 + 8 + 2 + 1 + 2 + 2 + 2 + 8 + 8;
    assert_eq!(
        u64::from_le_bytes(v4[at..at + 8].try_into().unwrap()),
        START_NS + 0x280
    );
    let mut v3 = v4.clone();
    v3.drain(at..at + 8);
    let mut bytes = header(3);
    bytes.extend(record(&v3));
    let (_, records, status) = read(bytes);
    assert_eq!(status, TailStatus::Clean);
    let want = FrameRecord {
        acquired_unix_ns: None,
        ..corrected_record(false)
    };
    assert_eq!(records, vec![AuditRecord::Frame(want)]);
}

/// An unknown reject reason code is not silently dropped: the record does not decode.
#[test]
fn an_unknown_reject_code_is_corrupt() {
    let mut payload = rejected_payload(4);
    // the reject reason sits after kind, frame_id, origin, outcome and hold reason
    let at = 1 + 8 + 2 + 7 + 1 + 2;
    assert_eq!(&payload[at..at + 2], &[0x01, 0x00]);
    payload[at] = 0xee;
    let mut bytes = header(4);
    bytes.extend(record(&payload));
    let (_, records, status) = read(bytes);
    assert!(records.is_empty());
    assert!(
        matches!(status, TailStatus::Corrupt { offset: 32, .. }),
        "{status:?}"
    );
}

/// A controller acknowledgement (kind 7, version 5) by hand: unix ns u64, frame id u64,
/// acknowledged sequence u64, outcome u8 (0 accepted, 1 applied, 2 expired), beam on u8.
#[test]
fn a_controller_acknowledgement_has_the_documented_bytes() {
    #[rustfmt::skip]
    let payload = vec![
        0x07, //                                           kind 7
        0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, // unix ns = START_NS + 0x10
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame id 42
        0x05, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // acked sequence 0x105
        0x01, //                                           applied
        0x01, //                                           beam on
    ];
    let bytes = chained(&[payload]);
    let want = AuditRecord::ControllerAck {
        unix_ns: START_NS + 0x10,
        frame_id: 42,
        acked_sequence: 0x105,
        status: ionguide::audit::AckOutcome::Applied,
        beam_on: true,
    };
    let (_, records, status) = read(bytes.clone());
    assert_eq!(status, TailStatus::Clean);
    assert_eq!(records, vec![want.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.igaudit");
    let mut w =
        AuditWriter::create(&path, START_NS, AuditOptions::default().with_fsync(Fsync::Never)).unwrap();
    w.write(&want).unwrap();
    drop(w);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}
