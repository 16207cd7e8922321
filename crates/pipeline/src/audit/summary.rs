//! Counting a log's records by kind, outcome and reason.

use std::collections::BTreeMap;
use std::path::Path;

use super::{AuditError, AuditReader, AuditRecord, Outcome, TailStatus};

/// Counts of a log's records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditSummary {
    /// Frames per outcome name (`corrected`, `held`, `rejected`, `dropped`, and `unknown`
    /// for a frame written without one).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Held or rejected frames per hold reason name.
    pub reasons: BTreeMap<&'static str, u64>,
    /// Rejected frames per reject reason name (`not_ct`, `unparseable`, …; version 3 logs).
    pub rejects: BTreeMap<&'static str, u64>,
    /// Frame records.
    pub frames: u64,
    /// Session start records.
    pub sessions: u64,
    /// Link event records.
    pub link_events: u64,
    /// Shutdown records.
    pub shutdowns: u64,
    /// Setup records.
    pub setups: u64,
    /// Controller acknowledgements recorded, per outcome name (`applied`, `expired`,
    /// `accepted`: a beam-state change).
    pub acks: BTreeMap<&'static str, u64>,
    /// Spots (pieces) the controller reported delivered (kind 8 records).
    pub delivered_spots: u64,
    /// Frame-target records (kind 9, deformable tracking).
    pub targets: u64,
    /// Spots switched off, summed over the frame-target records.
    pub spots_off: u64,
    /// Frames with a latency, and the largest, ns.
    pub max_latency_ns: Option<u64>,
    /// How the log ends.
    pub status: Option<TailStatus>,
}

/// Reads a log and counts its records by kind, outcome and hold reason.
pub fn summary(path: &Path) -> Result<AuditSummary, AuditError> {
    let mut r = AuditReader::open(path)?;
    let mut s = AuditSummary::default();
    for rec in r.by_ref() {
        s.count(&rec);
    }
    s.status = r.status().cloned();
    Ok(s)
}

impl AuditSummary {
    /// Counts one record (`status` is left to the caller).
    pub fn count(&mut self, rec: &AuditRecord) {
        match rec {
            AuditRecord::SessionStart { .. } => self.sessions += 1,
            AuditRecord::Link { .. } => self.link_events += 1,
            AuditRecord::Shutdown { .. } => self.shutdowns += 1,
            AuditRecord::Setup(_) => self.setups += 1,
            AuditRecord::ControllerAck { status, .. } => *self.acks.entry(status.name()).or_default() += 1,
            AuditRecord::Delivered { spots, .. } => self.delivered_spots += spots.len() as u64,
            AuditRecord::Target(t) => {
                self.targets += 1;
                self.spots_off += t.spots_off.len() as u64;
            }
            AuditRecord::Frame(f) => {
                self.frames += 1;
                *self
                    .outcomes
                    .entry(f.outcome.map_or("unknown", Outcome::name))
                    .or_default() += 1;
                if let Some(h) = f.hold_reason {
                    *self.reasons.entry(h.name()).or_default() += 1;
                }
                if let Some(r) = f.reject_reason {
                    *self.rejects.entry(r.name()).or_default() += 1;
                }
                if let Some(l) = f.latency_ns {
                    self.max_latency_ns = Some(self.max_latency_ns.map_or(l, |m| m.max(l)));
                }
            }
        }
    }
}
