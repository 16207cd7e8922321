//! Checking a version 5 log's chain and checkpoints: what was removed, moved, inserted or
//! edited, where, and through which record the log is proven.
//!
//! Every record carries its sequence number and the SHA-256 of the record before it. The
//! verifier reads every valid record, then walks them in file order: a record whose
//! predecessor's hash is not the one it carries marks a break, and the sequence numbers
//! around it tell what kind of break (numbers missing from the whole file: removed; present
//! elsewhere: moved; present twice: inserted; continuous: the record before was edited).
//! A chain can be rebuilt by whoever rewrites the tail, so only a checkpoint whose HMAC
//! verifies with the key proves the records up to it; the report says which one.

use std::collections::HashMap;
use std::path::Path;

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::format::Body;
use super::reader::RawEntry;
use super::{AuditError, AuditKey, AuditReader, TailStatus, CHAIN_VERSION, CHECKPOINT_MAC_LABEL, HEADER_LEN};

/// What a verification found at one place of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Byte offset of the record it concerns (0: the header).
    pub offset: u64,
    /// That record's sequence number, when it has one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: FindingKind,
}

/// The kinds of damage the chain and the checkpoints reveal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// The log's format has no chain (version 4 and older): nothing can be proven.
    Unchained {
        /// Its version.
        version: u16,
    },
    /// The first record does not chain to the header: the header (its session start) was
    /// edited, or the file's head replaced.
    HeaderEdited,
    /// Records with these sequence numbers are in no place of the file.
    Removed {
        /// First missing sequence number.
        first_seq: u64,
        /// Last missing sequence number.
        last_seq: u64,
    },
    /// This record is not where it was written: the record before it has sequence number
    /// `after_seq` (`None`: it is first in the file).
    Moved {
        /// Sequence number of the record before it in the file.
        after_seq: Option<u64>,
    },
    /// A second record with a sequence number already used: one of the two was inserted.
    Inserted {
        /// Offset of the other record with that number.
        other_offset: u64,
    },
    /// The record is not the one its successor chained to: it was changed after it was
    /// written (its checksum may have been recomputed).
    Edited,
    /// A checkpoint whose HMAC does not verify with the key given, though it names that key:
    /// forged, or the records it covers were rewritten.
    ForgedCheckpoint,
    /// A checkpoint made with another key (its key id is not the given key's).
    OtherKey {
        /// The checkpoint's key id.
        key_id: [u8; 8],
    },
    /// More records than the checkpoint interval without a checkpoint: checkpoints removed.
    CheckpointMissing {
        /// The interval the last checkpoint stated.
        interval_records: u32,
    },
    /// The log holds no checkpoint at all: written without a key (nothing can be proven),
    /// or every checkpoint removed.
    NoCheckpoints,
    /// The log does not end with a closing checkpoint: its tail was cut, or the writer
    /// stopped without closing (a crash). `seq` is the last record present.
    NotClosed,
    /// The file ends in damage the reader found before any chain check (a bad checksum, an
    /// impossible length, a record that does not decode); nothing from here on is read.
    Damaged {
        /// What the reader found.
        why: &'static str,
    },
    /// The last record is incomplete (a crash mid-write, or a cut).
    TornTail {
        /// Its bytes present.
        bytes: u64,
    },
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindingKind::Unchained { version } => write!(
                f,
                "format version {version} has no chain (version {CHAIN_VERSION} and newer): nothing can be proven"
            ),
            FindingKind::HeaderEdited => write!(f, "the first record does not chain to the header: the header was edited"),
            FindingKind::Removed { first_seq, last_seq } if first_seq == last_seq => {
                write!(f, "record {first_seq} was removed before this one")
            }
            FindingKind::Removed { first_seq, last_seq } => {
                write!(f, "records {first_seq} to {last_seq} were removed before this one")
            }
            FindingKind::Moved { after_seq: Some(after) } => {
                write!(f, "out of order: written elsewhere, found after record {after}")
            }
            FindingKind::Moved { after_seq: None } => {
                write!(f, "out of order: written elsewhere, found first in the file")
            }
            FindingKind::Inserted { other_offset } => write!(
                f,
                "inserted: its sequence number is also the record's at byte {other_offset}"
            ),
            FindingKind::Edited => write!(
                f,
                "edited after it was written: it does not hash to what the next record chained"
            ),
            FindingKind::ForgedCheckpoint => write!(
                f,
                "checkpoint does not verify with this key: forged, or the records it covers were rewritten"
            ),
            FindingKind::OtherKey { key_id } => write!(
                f,
                "checkpoint made with another key (key id {}): give that key",
                hex(key_id)
            ),
            FindingKind::CheckpointMissing { interval_records } => write!(
                f,
                "more than {interval_records} records without a checkpoint: checkpoints were removed"
            ),
            FindingKind::NoCheckpoints => write!(
                f,
                "no checkpoint in the log: written without a key, or every checkpoint removed; nothing can be proven"
            ),
            FindingKind::NotClosed => write!(
                f,
                "the log ends without a closing checkpoint: the tail was cut after this record, or the writer crashed"
            ),
            FindingKind::Damaged { why } => write!(f, "damaged ({why}); nothing after it is read"),
            FindingKind::TornTail { bytes } => write!(f, "incomplete last record ({bytes} bytes)"),
        }
    }
}

/// The stretch of the log a checkpoint proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven {
    /// Sequence number of the checkpoint (every record before it is proven).
    pub seq: u64,
    /// Its byte offset.
    pub offset: u64,
    /// One past its last byte: the file is proven up to here.
    pub end: u64,
    /// Whether it is a closing checkpoint.
    pub closing: bool,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Format version.
    pub version: u16,
    /// Valid records read (checkpoints included).
    pub records: u64,
    /// Checkpoint records read.
    pub checkpoints: u64,
    /// Checkpoints whose HMAC verified with the key.
    pub checkpoints_verified: u64,
    /// Whether a key was given (without one, checkpoints are not checked and nothing is
    /// proven: the chain alone can be rebuilt by whoever rewrites the log).
    pub key_given: bool,
    /// The last checkpoint that verified with no finding before it: the log is proven from
    /// its header through it.
    pub proven: Option<Proven>,
    /// Everything found, in file order.
    pub findings: Vec<Finding>,
    /// How the file ends.
    pub tail: TailStatus,
}

impl Verification {
    /// Nothing found, a key given, and the log proven through its closing checkpoint.
    pub fn is_proven_whole(&self) -> bool {
        self.findings.is_empty()
            && self.key_given
            && self
                .proven
                .is_some_and(|p| p.closing && p.seq + 1 == self.records)
    }
}

/// Verifies the log at `path` (checkpoints with `key` when given).
pub fn verify(path: &Path, key: Option<&AuditKey>) -> Result<Verification, AuditError> {
    let data = std::fs::read(path).map_err(|e| super::io_err(path, e))?;
    verify_bytes(data, path, key)
}

/// One record's place, for the walk.
struct Entry {
    offset: u64,
    end: u64,
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    checkpoint: Option<CheckpointCheck>,
}

struct CheckpointCheck {
    interval_records: u32,
    closing: bool,
    /// `None` when no key was given.
    verdict: Option<Result<(), FindingKind>>,
}

/// [`verify`] of a log already in memory; `path` only names it in errors.
pub fn verify_bytes(data: Vec<u8>, path: &Path, key: Option<&AuditKey>) -> Result<Verification, AuditError> {
    let mut reader = AuditReader::from_bytes(data, path)?;
    let version = reader.header().version;
    let mut out = Verification {
        version,
        records: 0,
        checkpoints: 0,
        checkpoints_verified: 0,
        key_given: key.is_some(),
        proven: None,
        findings: Vec::new(),
        tail: TailStatus::Clean,
    };
    if version < CHAIN_VERSION {
        out.findings.push(Finding {
            offset: 0,
            seq: None,
            kind: FindingKind::Unchained { version },
        });
        while reader.next_raw().is_some() {
            out.records += 1;
        }
        out.tail = reader.status().cloned().unwrap_or(TailStatus::Clean);
        return Ok(out);
    }
    let header_hash: [u8; 32] = Sha256::digest(&reader.data()[..HEADER_LEN]).into();
    let key_id = key.map(AuditKey::key_id);
    let mut entries = Vec::new();
    while let Some(RawEntry {
        offset,
        end,
        link,
        body,
    }) = reader.next_raw()
    {
        let bytes = &reader.data()[offset..end];
        let Some(link) = link else { continue };
        let checkpoint = match body {
            Body::Record(_) => None,
            Body::Checkpoint(cp) => {
                out.checkpoints += 1;
                let verdict = key.map(|k| {
                    if Some(cp.key_id) != key_id {
                        return Err(FindingKind::OtherKey { key_id: cp.key_id });
                    }
                    let mut mac = k.mac();
                    mac.update(CHECKPOINT_MAC_LABEL);
                    // The payload up to the MAC: chain prefix, kind, interval, closing, key id.
                    mac.update(&bytes[8..bytes.len() - 32]);
                    mac.verify_slice(&cp.mac)
                        .map_err(|_| FindingKind::ForgedCheckpoint)
                });
                if matches!(verdict, Some(Ok(()))) {
                    out.checkpoints_verified += 1;
                }
                Some(CheckpointCheck {
                    interval_records: cp.interval_records,
                    closing: cp.closing,
                    verdict,
                })
            }
        };
        entries.push(Entry {
            offset: offset as u64,
            end: end as u64,
            seq: link.seq,
            prev: link.prev_sha256,
            hash: Sha256::digest(bytes).into(),
            checkpoint,
        });
    }
    out.records = entries.len() as u64;
    out.tail = reader.status().cloned().unwrap_or(TailStatus::Clean);
    walk(&entries, header_hash, &mut out);
    Ok(out)
}

fn walk(entries: &[Entry], header_hash: [u8; 32], out: &mut Verification) {
    // Where each sequence number sits (the first place), to tell removed from moved.
    let mut first_at: HashMap<u64, u64> = HashMap::with_capacity(entries.len());
    for e in entries {
        first_at.entry(e.seq).or_insert(e.offset);
    }
    let mut clean_so_far = true;
    let mut interval: Option<u32> = None;
    let mut since_checkpoint: u64 = 0;
    let mut here: Vec<Finding> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        here.clear();
        let mut found = |kind: FindingKind, offset: u64, seq: Option<u64>| {
            here.push(Finding { offset, seq, kind });
        };
        match i.checked_sub(1).map(|j| &entries[j]) {
            None => {
                if e.seq != 0 && (0..e.seq).any(|s| first_at.contains_key(&s)) {
                    found(FindingKind::Moved { after_seq: None }, e.offset, Some(e.seq));
                } else if e.seq != 0 {
                    found(
                        FindingKind::Removed {
                            first_seq: 0,
                            last_seq: e.seq - 1,
                        },
                        e.offset,
                        Some(e.seq),
                    );
                } else if e.prev != header_hash {
                    found(FindingKind::HeaderEdited, 0, None);
                }
            }
            Some(p) if e.prev == p.hash && e.seq == p.seq + 1 => {}
            Some(p) => {
                let other = first_at.get(&e.seq).copied().filter(|&o| o != e.offset);
                if let Some(other_offset) = other {
                    found(FindingKind::Inserted { other_offset }, e.offset, Some(e.seq));
                } else if e.seq <= p.seq {
                    found(
                        FindingKind::Moved {
                            after_seq: Some(p.seq),
                        },
                        e.offset,
                        Some(e.seq),
                    );
                } else if e.seq > p.seq + 1 {
                    // Numbers skipped here: removed if in no place of the file, else this
                    // record or those were moved.
                    let skipped = p.seq + 1..e.seq;
                    if skipped.clone().any(|s| first_at.contains_key(&s)) {
                        found(
                            FindingKind::Moved {
                                after_seq: Some(p.seq),
                            },
                            e.offset,
                            Some(e.seq),
                        );
                    } else {
                        found(
                            FindingKind::Removed {
                                first_seq: skipped.start,
                                last_seq: skipped.end - 1,
                            },
                            e.offset,
                            Some(e.seq),
                        );
                    }
                } else {
                    // Numbers continuous, hash not: the record before was changed (or this
                    // one's chain field, which is the same tampering seen from the other side).
                    found(FindingKind::Edited, p.offset, Some(p.seq));
                }
            }
        }
        match &e.checkpoint {
            Some(cp) => {
                // A writer checkpoints after every `interval` records: a longer run before
                // this one means checkpoints were taken out.
                if since_checkpoint > u64::from(cp.interval_records) {
                    found(
                        FindingKind::CheckpointMissing {
                            interval_records: cp.interval_records,
                        },
                        e.offset,
                        Some(e.seq),
                    );
                }
                since_checkpoint = 0;
                interval = Some(cp.interval_records);
                if let Some(Err(kind)) = &cp.verdict {
                    found(kind.clone(), e.offset, Some(e.seq));
                }
            }
            None => since_checkpoint += 1,
        }
        if !here.is_empty() {
            clean_so_far = false;
            out.findings.append(&mut here);
        } else if clean_so_far {
            if let Some(cp) = e
                .checkpoint
                .as_ref()
                .filter(|c| matches!(c.verdict, Some(Ok(()))))
            {
                out.proven = Some(Proven {
                    seq: e.seq,
                    offset: e.offset,
                    end: e.end,
                    closing: cp.closing,
                });
            }
        }
    }
    if let (Some(n), Some(last)) = (interval, entries.last()) {
        if since_checkpoint > u64::from(n) {
            out.findings.push(Finding {
                offset: last.offset,
                seq: Some(last.seq),
                kind: FindingKind::CheckpointMissing { interval_records: n },
            });
        }
    }
    match out.tail.clone() {
        TailStatus::Clean => {}
        TailStatus::TornTail { offset, bytes } => out.findings.push(Finding {
            offset,
            seq: None,
            kind: FindingKind::TornTail { bytes },
        }),
        TailStatus::Corrupt { offset, why } => out.findings.push(Finding {
            offset,
            seq: None,
            kind: FindingKind::Damaged { why },
        }),
    }
    if !entries.is_empty() && entries.iter().all(|e| e.checkpoint.is_none()) {
        out.findings.push(Finding {
            offset: HEADER_LEN as u64,
            seq: None,
            kind: FindingKind::NoCheckpoints,
        });
    }
    let closed = entries
        .last()
        .is_some_and(|e| e.checkpoint.as_ref().is_some_and(|c| c.closing));
    if !closed {
        let last = entries.last();
        out.findings.push(Finding {
            offset: last.map_or(0, |e| e.offset),
            seq: last.map(|e| e.seq),
            kind: FindingKind::NotClosed,
        });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
