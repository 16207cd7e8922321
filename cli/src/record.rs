//! `ionguide record --audit LOG --plan RP --out RT.dcm`: the RT Ion Beams Treatment Record
//! of a session (the log's last, when several appended to it), rebuilt from its audit log — from what the controller reported delivered
//! (delivered-spots records), not from what was sent.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ionguide::audit::{AuditReader, AuditRecord, TailStatus};
use ionguide::dicom::rtplan;
use ionguide::dicom::rtrecord::{self, RecordIds};
use ionguide::dicom::write::Producer;
use ionguide::record::TreatmentRecord;
use sha2::{Digest, Sha256};

const PRODUCER: Producer = Producer {
    manufacturer: "ionguide",
    implementation_class_uid: "2.25.216143920517462233091582931405728375129",
    implementation_version_name: "IONGUIDE_0.1",
};

/// Arguments of `record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The session's audit log.
    #[arg(long)]
    audit: PathBuf,
    /// The RT Ion Plan the session delivered.
    #[arg(long)]
    plan: PathBuf,
    /// Where to write the treatment record (refused if it exists).
    #[arg(long)]
    out: PathBuf,
}

/// `2.25.` and the first 16 bytes of SHA-256 over `parts`: the same log gives the same UIDs.
fn derived_uid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// The record as Part 10 bytes, its UIDs derived from the plan and the delivery.
pub fn record_bytes(record: &TreatmentRecord, plan_bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let key = [
        record.plan_sop_instance_uid.clone(),
        record.treatment_unix_ns.to_string(),
        record.pieces().count().to_string(),
    ];
    let ids = RecordIds {
        sop_instance_uid: derived_uid(&["treatment record", &key[0], &key[1], &key[2]]),
        series_instance_uid: derived_uid(&["treatment record series", &key[0], &key[1]]),
        series_number: 1,
    };
    Ok(rtrecord::write_treatment_record(
        record, plan_bytes, &ids, &PRODUCER,
    )?)
}

/// Builds the treatment record of the log at `audit` for the plan at `plan`.
pub fn build(audit: &Path, plan: &Path) -> anyhow::Result<(TreatmentRecord, Vec<u8>)> {
    let mut reader = AuditReader::open(audit).with_context(|| format!("cannot open {}", audit.display()))?;
    let all: Vec<AuditRecord> = reader.by_ref().collect();
    // a log appended to by several sessions: the last one's record
    let records = ionguide::treatment::last_session(&all);
    if let Some(status) = reader.status() {
        if status != &TailStatus::Clean {
            tracing::warn!(
                "{}: the log does not end cleanly ({status:?}); the record covers what reads",
                audit.display()
            );
        }
    }
    let plan_bytes = std::fs::read(plan).with_context(|| format!("cannot read {}", plan.display()))?;
    let (ion_plan, _) = rtplan::read_plan_bytes(&plan_bytes, plan)?;
    let record = ionguide::treatment::from_audit(records, &ion_plan)
        .with_context(|| format!("cannot build the treatment record from {}", audit.display()))?;
    let bytes = record_bytes(&record, &plan_bytes)?;
    Ok((record, bytes))
}

/// Writes `bytes` to a new file at `out` (an existing file is never overwritten).
pub fn write_new(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| {
            format!(
                "cannot create {} (an existing file is not overwritten)",
                out.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))
}

/// Runs `record`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (record, bytes) = build(&args.audit, &args.plan)?;
    write_new(&args.out, &bytes)?;
    println!(
        "treatment record {}: {} beam(s), {} delivered spot piece(s)",
        args.out.display(),
        record.beams.len(),
        record.pieces().count()
    );
    for b in &record.beams {
        println!(
            "  beam {} {:?}: delivered {:.6} of {:.6} (spot weight units), {} {} ({})",
            b.beam_number,
            b.beam_name,
            b.delivered_meterset(),
            b.specified_meterset,
            b.termination.status.code(),
            b.termination.code,
            b.termination.description
        );
    }
    Ok(())
}
