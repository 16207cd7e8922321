//! The audit-log verifier (`audit::verify_bytes`) on arbitrary files, then on the same bytes
//! cut into records that this target chains itself (seq, SHA-256 of the record before, CRC:
//! docs/audit-log.md "Chain and checkpoints", computed here with sha2 and crc32fast, not with
//! the crate's writer), so the walk sees chained logs of attacker-shaped records. A log the
//! target chained correctly must show no chain break before the first record that does not
//! decode; the first input byte, when odd, also swaps two records of it, which must be found.
#![no_main]

use std::path::Path;

use ionguide::audit::{verify_bytes, AuditKey, FindingKind, HEADER_LEN, VERSION};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn header() -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..8].copy_from_slice(b"IGAUDIT\n");
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut r = len.to_vec();
    r.extend_from_slice(&crc.finalize().to_le_bytes());
    r.extend_from_slice(payload);
    r
}

fn is_break(k: &FindingKind) -> bool {
    matches!(
        k,
        FindingKind::Removed { .. }
            | FindingKind::Moved { .. }
            | FindingKind::Inserted { .. }
            | FindingKind::Edited
            | FindingKind::HeaderEdited
    )
}

fuzz_target!(|data: &[u8]| {
    let key = AuditKey::from_bytes(&[0x5a; 32]).expect("a 32-byte key");
    // 1. as given, with and without a key
    let _ = verify_bytes(data.to_vec(), Path::new("fuzz.igaudit"), Some(&key));
    let _ = verify_bytes(data.to_vec(), Path::new("fuzz.igaudit"), None);
    // 2. chained here: each `[u8 length][body]` chunk becomes one record
    let Some((&op, mut rest)) = data.split_first() else { return };
    let head = header();
    let mut prev: [u8; 32] = Sha256::digest(&head).into();
    let mut records: Vec<Vec<u8>> = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        if body.is_empty() {
            continue;
        }
        let mut payload = (records.len() as u64).to_le_bytes().to_vec();
        payload.extend_from_slice(&prev);
        payload.extend_from_slice(body);
        let r = frame(&payload);
        prev = Sha256::digest(&r).into();
        records.push(r);
    }
    let join = |rs: &[Vec<u8>]| {
        let mut b = head.clone();
        for r in rs {
            b.extend_from_slice(r);
        }
        b
    };
    let v = verify_bytes(join(&records), Path::new("chained"), Some(&key)).expect("a valid header");
    assert!(
        !v.findings.iter().any(|f| is_break(&f.kind)),
        "a correctly chained log shows a break: {:?}",
        v.findings
    );
    // a swap of two records that both read is found (when the reader gets past both)
    if op & 1 == 1 && v.records >= 2 && (v.records as usize) <= records.len() {
        let n = v.records as usize;
        let (i, j) = ((op as usize >> 1) % n, (op as usize >> 4) % n);
        if i != j && records[i] != records[j] {
            let mut swapped = records[..n].to_vec();
            swapped.swap(i, j);
            let w = verify_bytes(join(&swapped), Path::new("swapped"), Some(&key)).expect("a valid header");
            assert!(
                w.findings.iter().any(|f| is_break(&f.kind)),
                "records {i} and {j} swapped unseen: {:?}",
                w.findings
            );
        }
    }
});
