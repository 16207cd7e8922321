//! The audit log's chain and signed checkpoints (format version 5) against tampering: each
//! way a record can be removed, moved, inserted or edited — with its CRC recomputed, and
//! with the whole chain after it rebuilt — a cut tail and a forged checkpoint, found by
//! `audit::verify`, which must name the record and say how far the log is proven. The
//! tampering is done here on the file's bytes, with crc32fast and sha2, never with the
//! crate's encoder.

use std::path::Path;

use ionguide::audit::{
    verify, verify_bytes, AuditKey, AuditOptions, AuditRecord, AuditWriter, FindingKind, Fsync, TailStatus,
    Verification,
};
use ionguide::link::KeyError;
use sha2::{Digest, Sha256};

const KEY: [u8; 32] = [0x3c; 32];
/// Checkpoint interval of the test logs.
const EVERY: u32 = 4;
/// Event records in a test log.
const EVENTS: u64 = 10;

fn key() -> AuditKey {
    AuditKey::from_bytes(&KEY).unwrap()
}

fn event(i: u64) -> AuditRecord {
    AuditRecord::Link {
        unix_ns: 1_000 + i,
        code: 7,
        detail: format!("event {i}"),
    }
}

/// A signed, closed log of `EVENTS` link events: seq 0..=3 events, 4 checkpoint, 5..=8
/// events, 9 checkpoint, 10..=11 events, 12 closing checkpoint.
fn signed_log(dir: &Path) -> Vec<u8> {
    let path = dir.join("a.igaudit");
    let mut w = AuditWriter::create(&path, 77, AuditOptions::default().with_fsync(Fsync::Never))
        .unwrap()
        .sign_with(key(), EVERY);
    for i in 0..EVENTS {
        w.write(&event(i)).unwrap();
    }
    w.close().unwrap();
    drop(w);
    std::fs::read(&path).unwrap()
}

/// The header and every record's bytes, split on the length fields.
fn split(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut records = Vec::new();
    let mut o = 32;
    while o < bytes.len() {
        let len = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        records.push(bytes[o..o + 8 + len].to_vec());
        o += 8 + len;
    }
    (bytes[..32].to_vec(), records)
}

fn join(header: &[u8], records: &[Vec<u8>]) -> Vec<u8> {
    let mut b = header.to_vec();
    for r in records {
        b.extend_from_slice(r);
    }
    b
}

/// Recomputes a record's CRC (over the length and the payload) after an edit.
fn fix_crc(r: &mut [u8]) {
    let mut h = crc32fast::Hasher::new();
    h.update(&r[0..4]);
    h.update(&r[8..]);
    let crc = h.finalize().to_le_bytes();
    r[4..8].copy_from_slice(&crc);
}

fn seq_of(r: &[u8]) -> u64 {
    u64::from_le_bytes(r[8..16].try_into().unwrap())
}

/// What a forger without the key can do: renumber and rechain every record from `from` on
/// (new seq, SHA-256 of the record before, CRC), so the chain is whole again.
fn rechain(header: &[u8], records: &mut [Vec<u8>], from: usize) {
    for i in from..records.len() {
        let prev: [u8; 32] = if i == 0 {
            Sha256::digest(header).into()
        } else {
            Sha256::digest(&records[i - 1]).into()
        };
        let seq = if i == 0 { 0 } else { seq_of(&records[i - 1]) + 1 };
        records[i][8..16].copy_from_slice(&seq.to_le_bytes());
        records[i][16..48].copy_from_slice(&prev);
        fix_crc(&mut records[i]);
    }
}

fn check(bytes: Vec<u8>) -> Verification {
    verify_bytes(bytes, Path::new("test"), Some(&key())).unwrap()
}

fn offset_of(records: &[Vec<u8>], i: usize) -> u64 {
    32 + records[..i].iter().map(|r| r.len() as u64).sum::<u64>()
}

#[test]
fn a_clean_signed_log_is_proven_whole_and_without_the_key_only_chained() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = signed_log(dir.path());
    let (_, records) = split(&bytes);
    assert_eq!(records.len(), 13, "10 events, 2 periodic checkpoints, 1 closing");
    let v = check(bytes.clone());
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    assert_eq!((v.records, v.checkpoints, v.checkpoints_verified), (13, 3, 3));
    let p = v.proven.unwrap();
    assert_eq!((p.seq, p.closing, p.end), (12, true, bytes.len() as u64));
    assert!(v.is_proven_whole());
    let unkeyed = verify_bytes(bytes, Path::new("t"), None).unwrap();
    assert!(unkeyed.findings.is_empty());
    assert_eq!(unkeyed.proven, None);
    assert!(!unkeyed.is_proven_whole());
}

#[test]
fn a_removed_record_is_named_and_the_log_proven_up_to_the_checkpoint_before() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    records.remove(6); // event at seq 6
    let at = offset_of(&records, 6);
    let v = check(join(&header, &records));
    assert_eq!(
        v.findings[0].kind,
        FindingKind::Removed {
            first_seq: 6,
            last_seq: 6
        }
    );
    assert_eq!((v.findings[0].offset, v.findings[0].seq), (at, Some(7)));
    assert_eq!(
        v.proven.map(|p| p.seq),
        Some(4),
        "proven through the checkpoint at seq 4"
    );
    assert!(!v.is_proven_whole());
}

#[test]
fn two_swapped_records_are_found_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    records.swap(1, 2);
    let v = check(join(&header, &records));
    assert_eq!(v.findings[0].kind, FindingKind::Moved { after_seq: Some(0) });
    assert_eq!(
        (v.findings[0].offset, v.findings[0].seq),
        (offset_of(&records, 1), Some(2))
    );
    assert!(v
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::Moved { after_seq: Some(2) } && f.seq == Some(1)));
    assert_eq!(v.proven, None, "no checkpoint before the first finding");
}

#[test]
fn an_edited_record_with_its_crc_recomputed_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    // "event 7" → "event 9": the detail's last byte
    let r = &mut records[8];
    assert_eq!(seq_of(r), 8);
    let last = r.len() - 1;
    assert_eq!(r[last], b'7');
    r[last] = b'9';
    fix_crc(r);
    let at = offset_of(&records, 8);
    let bytes = join(&header, &records);
    // the reader alone sees nothing wrong: the CRC matches
    let mut reader = ionguide::audit::AuditReader::from_bytes(bytes.clone(), Path::new("t")).unwrap();
    let read: Vec<AuditRecord> = reader.by_ref().collect();
    assert!(read.contains(&AuditRecord::Link {
        unix_ns: 1_007,
        code: 7,
        detail: "event 9".into()
    }));
    assert_eq!(reader.status(), Some(&TailStatus::Clean));
    let v = check(bytes);
    assert_eq!(v.findings.len(), 1, "{:?}", v.findings);
    assert_eq!(v.findings[0].kind, FindingKind::Edited);
    assert_eq!((v.findings[0].offset, v.findings[0].seq), (at, Some(8)));
    assert_eq!(v.proven.map(|p| p.seq), Some(4));
}

/// The forger rebuilds the chain after the edit: it is whole again, but the next checkpoint
/// cannot be re-signed without the key.
#[test]
fn an_edit_with_the_chain_rebuilt_fails_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    let last = records[6].len() - 1;
    records[6][last] = b'0';
    rechain(&header, &mut records, 6);
    let v = check(join(&header, &records));
    assert_eq!(v.findings[0].kind, FindingKind::ForgedCheckpoint);
    assert_eq!(
        (v.findings[0].offset, v.findings[0].seq),
        (offset_of(&records, 9), Some(9))
    );
    assert_eq!(
        v.proven.map(|p| p.seq),
        Some(4),
        "proven up to the last good checkpoint"
    );
    // without the key the rebuilt chain looks whole: only a checkpoint proves anything
    let unkeyed = verify_bytes(join(&header, &records), Path::new("t"), None).unwrap();
    assert!(unkeyed.findings.is_empty());
}

#[test]
fn an_inserted_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    // a copy of seq 2 with another detail, chained properly after seq 2
    let mut forged = records[2].clone();
    let last = forged.len() - 1;
    forged[last] = b'X';
    forged[8..16].copy_from_slice(&3u64.to_le_bytes());
    let prev: [u8; 32] = Sha256::digest(&records[2]).into();
    forged[16..48].copy_from_slice(&prev);
    fix_crc(&mut forged);
    records.insert(3, forged);
    let v = check(join(&header, &records));
    let f = &v.findings[0];
    assert_eq!(
        f.kind,
        FindingKind::Inserted {
            other_offset: offset_of(&records, 3)
        }
    );
    assert_eq!((f.offset, f.seq), (offset_of(&records, 4), Some(3)));
    assert_eq!(v.proven, None);
}

#[test]
fn a_cut_tail_leaves_the_log_unclosed_and_proven_to_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    records.truncate(11); // keeps seq 0..=10: cut after an event, past the checkpoint at 9
    let v = check(join(&header, &records));
    assert_eq!(v.findings.len(), 1, "{:?}", v.findings);
    assert_eq!(v.findings[0].kind, FindingKind::NotClosed);
    assert_eq!(v.findings[0].seq, Some(10));
    let p = v.proven.unwrap();
    assert_eq!((p.seq, p.closing), (9, false));
    // a cut exactly after a periodic checkpoint is still not closed
    records.truncate(10);
    let v = check(join(&header, &records));
    assert_eq!(v.findings[0].kind, FindingKind::NotClosed);
    // cut mid-record: a torn tail as well
    let mut bytes = join(&header, &records);
    bytes.extend_from_slice(&[1, 2, 3]);
    let v = check(bytes);
    assert!(v
        .findings
        .iter()
        .any(|f| matches!(f.kind, FindingKind::TornTail { bytes: 3 })));
}

#[test]
fn a_forged_or_foreign_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut records) = split(&signed_log(dir.path()));
    // flip a MAC bit of the closing checkpoint, CRC recomputed
    let r = records.last_mut().unwrap();
    let last = r.len() - 1;
    r[last] ^= 1;
    fix_crc(r);
    let v = check(join(&header, &records));
    assert_eq!(v.findings.len(), 1, "{:?}", v.findings);
    assert_eq!(v.findings[0].kind, FindingKind::ForgedCheckpoint);
    assert_eq!(v.findings[0].seq, Some(12));
    assert_eq!(v.proven.map(|p| p.seq), Some(9));
    // removing the checkpoints (chain rebuilt) is found too: a run longer than the interval
    let (header, records) = split(&signed_log_in_new_dir());
    let mut plain: Vec<Vec<u8>> = records.into_iter().filter(|r| r[48] != 6).collect();
    rechain(&header, &mut plain, 0);
    let v = check(join(&header, &plain));
    assert!(v.findings.iter().any(|f| f.kind == FindingKind::NoCheckpoints));
    assert!(v
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::NotClosed && f.seq == Some(EVENTS - 1)));
    assert_eq!(v.proven, None);
    // a verifier holding another key is told so, not "forged"
    let other = AuditKey::from_bytes(&[0x11; 32]).unwrap();
    let v = verify_bytes(signed_log_in_new_dir(), Path::new("t"), Some(&other)).unwrap();
    assert!(matches!(v.findings[0].kind, FindingKind::OtherKey { key_id } if key_id == key().key_id()));
}

fn signed_log_in_new_dir() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    signed_log(dir.path())
}

#[test]
fn checkpoints_removed_from_a_long_log_are_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (header, records) = split(&signed_log(dir.path()));
    // drop the periodic checkpoint at seq 4 (kind byte after the 40-byte chain prefix)
    let mut kept: Vec<Vec<u8>> = records
        .into_iter()
        .filter(|r| !(r[48] == 6 && seq_of(r) == 4))
        .collect();
    rechain(&header, &mut kept, 4);
    let v = check(join(&header, &kept));
    assert!(
        v.findings.iter().any(|f| f.kind
            == FindingKind::CheckpointMissing {
                interval_records: EVERY
            }),
        "{:?}",
        v.findings
    );
}

#[test]
fn appending_continues_the_chain_and_an_old_log_is_unchained() {
    let dir = tempfile::tempdir().unwrap();
    signed_log(dir.path());
    let path = dir.path().join("a.igaudit");
    let mut w = AuditWriter::open_append(&path, AuditOptions::default())
        .unwrap()
        .sign_with(key(), EVERY);
    assert_eq!(w.next_seq(), 13);
    w.write(&event(99)).unwrap();
    w.close().unwrap();
    drop(w);
    let v = verify(&path, Some(&key())).unwrap();
    assert!(v.is_proven_whole(), "{:?}", v.findings);
    assert_eq!(v.records, 15);
    // a version 4 log reads but proves nothing
    let mut v4 = std::fs::read(&path).unwrap();
    v4[8] = 4;
    let crc = crc32fast::hash(&v4[0..28]).to_le_bytes();
    v4[28..32].copy_from_slice(&crc);
    let v = verify_bytes(v4, Path::new("t"), Some(&key())).unwrap();
    assert_eq!(v.findings[0].kind, FindingKind::Unchained { version: 4 });
    assert_eq!(v.proven, None);
}

#[cfg(unix)]
#[test]
fn a_key_file_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.key");
    std::fs::write(&p, hex(&KEY)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    match AuditKey::from_file(&p) {
        Err(e @ KeyError::Permissions { mode: 0o640, .. }) => {
            assert!(e.to_string().contains("chmod 600"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(AuditKey::from_file(&p).unwrap().key_id(), key().key_id());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Any records a writer could write (link events of random text), in a signed, closed log:
/// proven whole; any two swapped are found as moved, and any one removed is found as removed
/// at the record after it.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn log_of(details: &[String]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.igaudit");
        let mut w = AuditWriter::create(&path, 5, AuditOptions::default().with_fsync(Fsync::Never))
            .unwrap()
            .sign_with(key(), 3);
        for (i, d) in details.iter().enumerate() {
            w.write(&AuditRecord::Link {
                unix_ns: i as u64,
                code: 1,
                detail: d.clone(),
            })
            .unwrap();
        }
        w.close().unwrap();
        drop(w);
        std::fs::read(&path).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn swaps_and_removals_are_always_found(
            details in proptest::collection::vec("[a-z ]{0,40}", 2..20),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let bytes = log_of(&details);
            prop_assert!(check(bytes.clone()).is_proven_whole());
            let (header, records) = split(&bytes);
            let n = records.len();
            let (i, j) = (a.index(n), b.index(n));
            if i != j {
                let mut swapped = records.clone();
                swapped.swap(i, j);
                let v = check(join(&header, &swapped));
                let first = v.findings.first().map(|f| (f.kind.clone(), f.offset));
                prop_assert!(
                    matches!(first, Some((FindingKind::Moved { .. }, o)) if o == offset_of(&swapped, i.min(j))),
                    "{:?}", v.findings
                );
            }
            // remove one record that is not the last (removing the last is a cut tail)
            let k = a.index(n - 1);
            let mut removed = records.clone();
            removed.remove(k);
            let v = check(join(&header, &removed));
            let first = v.findings.first().map(|f| (f.kind.clone(), f.offset));
            prop_assert_eq!(
                first,
                Some((
                    FindingKind::Removed { first_seq: k as u64, last_seq: k as u64 },
                    offset_of(&removed, k)
                ))
            );
        }
    }
}
