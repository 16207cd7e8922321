//! `audit::verify` on a clean, signed log of 100,000 records (issue 17 asks < 2 s): frame
//! records as the daemon writes them — a corrected frame with its tumor shift, NCC, stage
//! times and a 64-spot full corrections list (1,280 bytes of spots), one checkpoint per
//! 1,000 records — read from the file, every record's SHA-256 chained, every checkpoint's
//! HMAC checked. A second case keeps only the corrections' digest (`audit.corrections =
//! "digest"`), the smaller records of a gate run.
//!
//! Measured with `cargo bench --bench audit_verify` on the 2-core development machine while
//! other builds ran: 64-spot full records (146.1 MB) 1.30 s [1.08, 1.47]; digest records
//! (21.4 MB) 100 ms [88, 110].

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ionguide::audit::{
    verify, AuditKey, AuditOptions, AuditWriter, Corrections, FrameRecord, Fsync, Outcome,
};
use ionguide::correction::{RangeMode, SpotCorrection};

const RECORDS: u64 = 100_000;
const SPOTS: u32 = 64;

fn frame(id: u64) -> FrameRecord {
    FrameRecord {
        frame_id: id,
        origin: format!("scp:CT1/{id}"),
        outcome: Some(Outcome::Corrected),
        arrival_unix_ns: 1_700_000_000_000_000_000 + id * 100_000_000,
        complete_unix_ns: 1_700_000_000_000_000_000 + id * 100_000_000 + 5_000_000,
        acquired_unix_ns: Some(1_700_000_000_000_000_000 + id * 100_000_000 - 150_000_000),
        latency_ns: Some(2_000_000 + id % 1000),
        stage_ns: [
            Some(400_000),
            Some(900_000),
            Some(300_000),
            Some(30_000),
            Some(9_000),
        ],
        tumor_shift_mm: Some([1.5, -0.25, 3.0]),
        ncc: Some(0.97),
        corrections: Corrections::Full {
            mode: Some(RangeMode::Energy),
            valid_until_unix_ns: 1_800_000_000_000_000_000 + id,
            spots: (0..SPOTS)
                .map(|i| SpotCorrection {
                    spot_index: i,
                    x_mm: i as f32 * 0.5,
                    y_mm: -(i as f32) * 0.25,
                    energy_mev_u: 150.0 + i as f32 * 0.1,
                    range_shifter_mm_we: 0.0,
                })
                .collect(),
        },
        ..FrameRecord::default()
    }
}

fn write(path: &Path, key: &AuditKey, full: bool) -> u64 {
    let options = AuditOptions::default()
        .with_fsync(Fsync::Never)
        .with_full_corrections(full);
    let mut w = AuditWriter::create(path, 1, options)
        .unwrap()
        .sign_with(key.clone(), 1000);
    let mut f = frame(0);
    // RECORDS in all, the checkpoints included (one per 1,000 frames, one closing)
    let frames = RECORDS - RECORDS / 1001 - 1;
    for id in 0..frames {
        f.frame_id = id;
        w.write_frame(&f).unwrap();
    }
    w.close().unwrap();
    w.next_seq()
}

fn bench(c: &mut Criterion) {
    let key = AuditKey::from_bytes(&[0x42; 32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, full) in [
        ("100k_records_64_spots_full", true),
        ("100k_records_digest", false),
    ] {
        let path = dir.path().join(format!("{name}.igaudit"));
        let n = write(&path, &key, full);
        let bytes = std::fs::metadata(&path).unwrap().len();
        let v = verify(&path, Some(&key)).unwrap();
        assert!(v.is_proven_whole(), "{:?}", v.findings);
        assert_eq!(v.records, n);
        eprintln!("{name}: {n} records, {:.1} MB", bytes as f64 / 1e6);
        g.bench_function(name, |b| b.iter(|| verify(&path, Some(&key)).unwrap().records));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
