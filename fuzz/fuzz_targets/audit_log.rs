//! The audit-log reader on arbitrary files: as given (header and checksum checks), then the
//! same bytes cut into records behind a valid header with correct checksums, so the payload
//! decoder sees attacker-shaped fields. A log that reads must stay consistent: records
//! returned only before the reported tail, and writing them again reads back the same.
#![no_main]

use std::path::Path;

use ionguide::audit::{AuditOptions, AuditReader, AuditRecord, AuditWriter, TailStatus, HEADER_LEN, VERSION};
use libfuzzer_sys::fuzz_target;

fn header() -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..8].copy_from_slice(b"IGAUDIT\n");
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn read(data: Vec<u8>) -> Option<(Vec<AuditRecord>, TailStatus)> {
    let mut r = AuditReader::from_bytes(data, Path::new("fuzz.igaudit")).ok()?;
    let records: Vec<AuditRecord> = r.by_ref().collect();
    Some((records, r.status().cloned().expect("a status once exhausted")))
}

fuzz_target!(|data: &[u8]| {
    // 1. as given
    let _ = read(data.to_vec());
    // 2. re-framed: each `[u8 length][payload]` chunk becomes one record with a valid CRC
    let mut file = header();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (payload, next) = tail.split_at(n);
        if !payload.is_empty() {
            let len = (payload.len() as u32).to_le_bytes();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&len);
            crc.update(payload);
            file.extend_from_slice(&len);
            file.extend_from_slice(&crc.finalize().to_le_bytes());
            file.extend_from_slice(payload);
        }
        rest = next;
    }
    let Some((records, _tail)) = read(file) else {
        panic!("a valid header was refused");
    };
    // what decoded writes again and reads back the same (full corrections kept)
    let dir = std::env::temp_dir().join(format!("ionguide-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("again.igaudit");
    let _ = std::fs::remove_file(&path);
    let mut w = AuditWriter::create(&path, 0, AuditOptions::default().with_full_corrections(true))
        .expect("a fresh log");
    let mut written = Vec::new();
    for r in &records {
        let ok = match r {
            AuditRecord::Frame(f) => w.write_frame(f).is_ok(),
            other => w.write(other).is_ok(),
        };
        if ok {
            written.push(r.clone());
        }
    }
    w.flush().expect("flush");
    let (again, tail) = AuditReader::read_all(&path).expect("our own log");
    assert_eq!(tail, TailStatus::Clean);
    // NaN fields compare unequal: compare the encodings' debug forms instead
    assert_eq!(format!("{again:?}"), format!("{written:?}"));
});
