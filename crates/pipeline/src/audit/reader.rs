//! Reading a log back: the header checked, then every valid record, then how the file ends
//! ([`TailStatus`]).

use std::path::Path;

use super::format::{decode, Body};
use super::{io_err, AuditError, AuditRecord, ChainLink, TailStatus};
use super::{HEADER_LEN, MAGIC, MAX_RECORD_BYTES, OLDEST_READ_VERSION, VERSION};

/// The log's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHeader {
    /// Format version.
    pub version: u16,
    /// Session start, ns since the UNIX epoch.
    pub session_start_unix_ns: u64,
}

/// Reads an audit log: an iterator of records, then [`AuditReader::status`]. Checkpoints
/// (version 5) are integrity data, not events: the iterator counts them
/// ([`AuditReader::checkpoints`]) and skips them; [`super::verify`] checks them.
#[derive(Debug)]
pub struct AuditReader {
    data: Vec<u8>,
    pos: usize,
    header: AuditHeader,
    status: Option<TailStatus>,
    last_offset: u64,
    checkpoints: u64,
}

/// One valid record as it sits in the file, for the chain's checks.
#[derive(Debug)]
pub(super) struct RawEntry {
    /// Where its 8-byte frame starts.
    pub offset: usize,
    /// One past its last byte.
    pub end: usize,
    /// Its place in the chain (version 5).
    pub link: Option<ChainLink>,
    /// What it holds.
    pub body: Body,
}

impl AuditReader {
    /// Reads the file and checks its header (the records are checked as they are read).
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
        Self::from_bytes(data, path)
    }

    /// A log's bytes already in memory; `path` only names it in errors.
    pub fn from_bytes(data: Vec<u8>, path: &Path) -> Result<Self, AuditError> {
        let bad = |why| AuditError::BadHeader {
            path: path.to_path_buf(),
            why,
        };
        if data.len() < HEADER_LEN {
            return Err(bad("shorter than the 32-byte header"));
        }
        if data[0..8] != MAGIC {
            return Err(bad("no IGAUDIT magic: not an ionguide audit log"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        if crc32fast::hash(&data[0..28]) != u32_at(28) {
            return Err(bad("header checksum mismatch"));
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        if !(OLDEST_READ_VERSION..=VERSION).contains(&version) {
            return Err(AuditError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        if u32_at(12) as usize != HEADER_LEN {
            return Err(bad("unexpected header length"));
        }
        let mut start = [0u8; 8];
        start.copy_from_slice(&data[16..24]);
        Ok(AuditReader {
            data,
            pos: HEADER_LEN,
            header: AuditHeader {
                version,
                session_start_unix_ns: u64::from_le_bytes(start),
            },
            status: None,
            last_offset: HEADER_LEN as u64,
            checkpoints: 0,
        })
    }

    /// The header.
    pub fn header(&self) -> AuditHeader {
        self.header
    }

    /// How the log ends; `None` until the iterator is exhausted.
    pub fn status(&self) -> Option<&TailStatus> {
        self.status.as_ref()
    }

    /// Checkpoint records passed so far.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// The file's bytes (header included).
    pub(super) fn data(&self) -> &[u8] {
        &self.data
    }

    /// The next valid record of any kind, checkpoints included; `None` at the end, with the
    /// status set.
    pub(super) fn next_raw(&mut self) -> Option<RawEntry> {
        if self.status.is_some() {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(e),
            Ok(None) => {
                self.status = Some(TailStatus::Clean);
                None
            }
            Err(s) => {
                self.status = Some(s);
                None
            }
        }
    }

    /// File offset of the record last returned.
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// Reads every record and the status.
    pub fn read_all(path: &Path) -> Result<(Vec<AuditRecord>, TailStatus), AuditError> {
        let mut r = AuditReader::open(path)?;
        let records: Vec<AuditRecord> = r.by_ref().collect();
        let status = r.status.unwrap_or(TailStatus::Clean);
        Ok((records, status))
    }

    /// A valid record (length in range, fits, checksum matches) starts at `o`.
    fn valid_at(&self, o: usize) -> Option<usize> {
        let d = &self.data;
        let head = d.get(o..o + 8)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if len == 0 || len > MAX_RECORD_BYTES {
            return None;
        }
        let end = o.checked_add(8 + len as usize)?;
        let payload = d.get(o + 8..end)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[0..4]);
        crc.update(payload);
        let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        (crc.finalize() == want).then_some(end)
    }

    fn step(&mut self) -> Result<Option<RawEntry>, TailStatus> {
        let o = self.pos;
        let d = &self.data;
        let rest = &d[o..];
        if rest.is_empty() {
            return Ok(None);
        }
        let offset = o as u64;
        let torn = TailStatus::TornTail {
            offset,
            bytes: rest.len() as u64,
        };
        if rest.iter().all(|&b| b == 0) {
            return Err(torn);
        }
        if rest.len() < 8 {
            return Err(torn);
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len == 0 || len > MAX_RECORD_BYTES {
            return Err(TailStatus::Corrupt {
                offset,
                why: "impossible record length",
            });
        }
        if 8 + len as usize > rest.len() {
            // Incomplete — unless a valid record starts further on, in which case the length
            // field itself was damaged.
            if (o + 1..d.len()).any(|p| self.valid_at(p).is_some()) {
                return Err(TailStatus::Corrupt {
                    offset,
                    why: "record length runs past the end but valid records follow",
                });
            }
            return Err(torn);
        }
        let Some(end) = self.valid_at(o) else {
            return Err(TailStatus::Corrupt {
                offset,
                why: "checksum mismatch",
            });
        };
        let Some((link, body)) = decode(&d[o + 8..end], self.header.version) else {
            return Err(TailStatus::Corrupt {
                offset,
                why: "checksum matches but the record does not decode",
            });
        };
        self.last_offset = offset;
        self.pos = end;
        Ok(Some(RawEntry {
            offset: o,
            end,
            link,
            body,
        }))
    }
}

impl Iterator for AuditReader {
    type Item = AuditRecord;

    fn next(&mut self) -> Option<AuditRecord> {
        loop {
            match self.next_raw()?.body {
                Body::Record(r) => return Some(r),
                Body::Checkpoint(_) => self.checkpoints += 1,
            }
        }
    }
}
