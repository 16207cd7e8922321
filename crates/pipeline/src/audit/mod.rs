//! The audit log: every frame that entered the pipeline — corrected, held, rejected or
//! dropped — with why, its latency and the corrections sent; plus session, link and shutdown
//! events. Append-only, every record checksummed, readable after a crash.
//!
//! # File format (version 3, all integers little-endian; versions 1 and 2 are read too)
//!
//! ```text
//! header (32 bytes)
//!   0  magic        8  b"IGAUDIT\n"
//!   8  version      u16  3 (2: session start without plan warnings; 1: also without setup records)
//!  10  flags        u16  0 (reserved)
//!  12  header_len   u32  32
//!  16  session_start_unix_ns u64
//!  24  reserved     u32  0
//!  28  crc32        u32  CRC-32 (IEEE) of bytes 0..28
//! record (repeated)
//!   0  len          u32  payload bytes, 1 ..= 16 MiB
//!   4  crc32        u32  CRC-32 of the 4 len bytes followed by the payload
//!   8  payload      len bytes: kind u8, then the kind's fields
//! ```
//!
//! Strings are `u16` length + UTF-8. Optional integers use `u64::MAX` for "none"; optional
//! floats a flag bit. Payload kinds: 1 session start, 2 frame, 3 link event, 4 shutdown, 5
//! setup (how in-room coordinates map to the plan's; see `docs/audit-log.md` for the field
//! tables). A frame's corrections are kept in full (20
//! bytes per spot: index u32, x f32, y f32, energy f32, range shifter f32) or, when
//! configured, only as the SHA-256 of exactly those bytes ([`corrections_digest`]), so a
//! replay can still be checked against the log.
//!
//! # Crash safety
//!
//! A record is encoded whole into a reused buffer and handed to the OS in one `write` on a
//! file opened for append, so a crash leaves at most the last record incomplete. The reader
//! ends with a [`TailStatus`]:
//!
//! - `Clean`: every byte belongs to a valid record.
//! - `TornTail { offset, bytes }`: the last record is incomplete (shorter than its length
//!   says, or its header cut), or the tail is all zeros (a file extended but not written
//!   before the crash). Every record before `offset` is intact and returned.
//! - `Corrupt { offset, why }`: a record fails its checksum, has an impossible length, or
//!   does not decode, and it is not a torn tail — a record whose length runs past the end
//!   while a valid record starts later is corruption, not a crash. Records before it are
//!   returned; nothing after it is trusted.
//!
//! The CRC covers the length field, so a damaged length is detected like a damaged payload.
//! A writer never truncates: [`AuditWriter::create`] refuses an existing file and
//! [`AuditWriter::open_append`] appends only to a log that reads `Clean`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::correction::{HoldReason, RangeMode, SpotCorrection};
use crate::geometry::{RigidTransform, RoomSetup};

/// File magic.
pub const MAGIC: [u8; 8] = *b"IGAUDIT\n";
/// Format version this code writes (and the newest it reads).
pub const VERSION: u16 = 3;
/// Oldest format version this code reads (version 1 has no setup records, versions 1 and 2
/// no plan warnings in the session start).
pub const OLDEST_READ_VERSION: u16 = 1;
/// Header length, bytes.
pub const HEADER_LEN: usize = 32;
/// Largest payload accepted, bytes (a 100 000-spot frame is 2 MB).
pub const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Bytes per spot in a full corrections list.
pub const SPOT_BYTES: usize = 20;

const KIND_SESSION: u8 = 1;
const KIND_FRAME: u8 = 2;
const KIND_LINK: u8 = 3;
const KIND_SHUTDOWN: u8 = 4;
const KIND_SETUP: u8 = 5;
const NONE_U64: u64 = u64::MAX;

/// Why the audit log could not be written or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// An I/O failure.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `create` on a path that exists (a log is never overwritten).
    #[error("audit log {path} already exists; open it for append, or choose a new file")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Not an audit log, or a header that fails its checks.
    #[error("audit log {path}: bad header: {why}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// A version this code does not read.
    #[error(
        "audit log {path}: format version {version}, this build reads {OLDEST_READ_VERSION} to {VERSION}"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The file's version.
        version: u16,
    },
    /// Appending to a log of an older version (its readers would not know the new records).
    #[error("audit log {path} is format version {version}; this build appends to version {VERSION} only: keep it and start a new file")]
    AppendOldVersion {
        /// The file.
        path: PathBuf,
        /// The file's version.
        version: u16,
    },
    /// Appending to a log whose tail is not clean (it would bury the damage).
    #[error("audit log {path} does not end cleanly ({status:?}); keep it and start a new file")]
    NotClean {
        /// The file.
        path: PathBuf,
        /// How it ends.
        status: TailStatus,
    },
    /// A field that does not fit its encoding.
    #[error("audit record field {field} too long: {len} bytes, at most {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Corrections were sent.
    Corrected,
    /// The beam was held (see the hold reason).
    Held,
    /// The frame was refused before registration (corrupt, wrong patient, …).
    Rejected,
    /// Superseded by a fresher frame before it was processed.
    Dropped,
}

impl Outcome {
    /// Every outcome, in code order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Corrected,
        Outcome::Held,
        Outcome::Rejected,
        Outcome::Dropped,
    ];
    /// Stable code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Corrected => 0,
            Outcome::Held => 1,
            Outcome::Rejected => 2,
            Outcome::Dropped => 3,
        }
    }
    /// From a code.
    pub fn from_code(code: u8) -> Option<Self> {
        Outcome::ALL.into_iter().find(|o| o.code() == code)
    }
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Corrected => "corrected",
            Outcome::Held => "held",
            Outcome::Rejected => "rejected",
            Outcome::Dropped => "dropped",
        }
    }
}

/// Pipeline stages with a timing slot in a frame record, in slot order.
pub const STAGES: [&str; 5] = ["ingest", "register", "range", "adapt", "link"];

/// A frame's corrections as logged.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Corrections {
    /// None were computed (held, rejected, dropped).
    #[default]
    None,
    /// The full list.
    Full {
        /// Range mode.
        mode: Option<RangeMode>,
        /// Void after this time, ns since the UNIX epoch.
        valid_until_unix_ns: u64,
        /// One per spot.
        spots: Vec<SpotCorrection>,
    },
    /// Only the count and the SHA-256 of the 20-byte-per-spot encoding.
    Digest {
        /// Range mode.
        mode: Option<RangeMode>,
        /// Void after this time, ns since the UNIX epoch.
        valid_until_unix_ns: u64,
        /// Number of spots.
        count: u32,
        /// [`corrections_digest`] of the spots.
        sha256: [u8; 32],
    },
}

/// One frame's record. Reuse one value frame to frame (its strings and vector keep their
/// capacity).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameRecord {
    /// Frame id.
    pub frame_id: u64,
    /// Where it came from (source name, spool path, …).
    pub origin: String,
    /// Outcome. `None` only while a reused record is being filled; written as code 0xFF and
    /// counted as `unknown` by [`summary`].
    pub outcome: Option<Outcome>,
    /// Hold or rejection reason.
    pub hold_reason: Option<HoldReason>,
    /// Human-readable detail (the hold detail, the rejection error).
    pub detail: String,
    /// Arrival of the first byte, ns since the UNIX epoch.
    pub arrival_unix_ns: u64,
    /// Frame complete (all slices in), ns since the UNIX epoch.
    pub complete_unix_ns: u64,
    /// Frame complete → message on the wire, ns (`None` when nothing was sent).
    pub latency_ns: Option<u64>,
    /// Per-stage durations, ns, in [`STAGES`] order.
    pub stage_ns: [Option<u64>; 5],
    /// Tumor shift, patient mm.
    pub tumor_shift_mm: Option<[f32; 3]>,
    /// Registration NCC.
    pub ncc: Option<f64>,
    /// The corrections sent.
    pub corrections: Corrections,
}

/// The room setup a session used, enough to recompute every frame's placement.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupRecord {
    /// When, ns since the UNIX epoch.
    pub unix_ns: u64,
    /// The planning CT's Frame of Reference UID.
    pub planning_frame_of_reference_uid: String,
    /// The in-room scanner's Frame of Reference UID (empty: none, frames are used in their
    /// own coordinates).
    pub room_frame_of_reference_uid: String,
    /// Planning → room map: rotation matrix row-major, then translation in mm (the identity
    /// when there is no setup registration).
    pub planning_to_room: [f64; 12],
    /// SHA-256 of the Spatial Registration file the map was read from (`None`: no file).
    pub registration_sha256: Option<[u8; 32]>,
}

impl SetupRecord {
    /// The record of a session's room setup (`None`: no setup registration, frames used in
    /// their own coordinates, the map recorded as the identity).
    pub fn new(
        unix_ns: u64,
        planning_frame_of_reference_uid: &str,
        setup: Option<&RoomSetup>,
        registration_sha256: Option<[u8; 32]>,
    ) -> Self {
        let (room_uid, map) = match setup {
            Some(s) => (s.room_frame_of_reference_uid.clone(), s.planning_to_room),
            None => (String::new(), RigidTransform::identity()),
        };
        let m = map.matrix();
        let mut planning_to_room = [0.0; 12];
        for r in 0..3 {
            for c in 0..3 {
                planning_to_room[3 * r + c] = m[(r, c)];
            }
            planning_to_room[9 + r] = m[(r, 3)];
        }
        SetupRecord {
            unix_ns,
            planning_frame_of_reference_uid: setup
                .map_or(planning_frame_of_reference_uid, |s| {
                    &s.planning_frame_of_reference_uid
                })
                .to_string(),
            room_frame_of_reference_uid: room_uid,
            planning_to_room,
            registration_sha256,
        }
    }
}

/// A record of the log.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditRecord {
    /// A session started.
    SessionStart {
        /// When, ns since the UNIX epoch.
        unix_ns: u64,
        /// SHA-256 of the session configuration.
        config_sha256: [u8; 32],
        /// SOP Instance UID of the plan.
        plan_sop_uid: String,
        /// What the plan reader accepted with a warning, as the log showed it (version 3;
        /// empty when read from an older log).
        plan_warnings: Vec<String>,
    },
    /// A frame.
    Frame(FrameRecord),
    /// A link event (connected, lost, acknowledged late, …).
    Link {
        /// When, ns since the UNIX epoch.
        unix_ns: u64,
        /// Event code (the link module's).
        code: u16,
        /// Detail text.
        detail: String,
    },
    /// How the in-room scanner's coordinates map to the planning CT's for the frames that
    /// follow (written after the session start).
    Setup(SetupRecord),
    /// The session ended.
    Shutdown {
        /// When, ns since the UNIX epoch.
        unix_ns: u64,
        /// Why.
        reason: String,
    },
}

/// How a log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailStatus {
    /// Every byte belongs to a valid record.
    Clean,
    /// The last record is incomplete (a crash mid-write); everything before is intact.
    TornTail {
        /// Where the incomplete record starts.
        offset: u64,
        /// Its bytes present.
        bytes: u64,
    },
    /// A record in the file is damaged; records before `offset` are intact.
    Corrupt {
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
}

/// When the writer asks the OS to put records on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never (the OS decides; a power loss may lose recent records, a process crash not).
    Never,
    /// After every record.
    EveryRecord,
    /// After a record when this long has passed since the last sync.
    Interval(Duration),
}

/// Writer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditOptions {
    /// fsync policy.
    pub fsync: Fsync,
    /// Keep full correction lists (`false`: only their SHA-256).
    pub full_corrections: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            fsync: Fsync::Interval(Duration::from_millis(100)),
            full_corrections: true,
        }
    }
}

impl AuditOptions {
    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }
    /// Keeps full correction lists (`true`) or only their digest.
    pub fn with_full_corrections(mut self, full: bool) -> Self {
        self.full_corrections = full;
        self
    }
}

/// SHA-256 of the spots' 20-byte encoding (what a digest-only record keeps).
pub fn corrections_digest(spots: &[SpotCorrection]) -> [u8; 32] {
    let mut h = Sha256::new();
    for s in spots {
        h.update(spot_bytes(s));
    }
    h.finalize().into()
}

fn spot_bytes(s: &SpotCorrection) -> [u8; SPOT_BYTES] {
    let mut b = [0u8; SPOT_BYTES];
    b[0..4].copy_from_slice(&s.spot_index.to_le_bytes());
    b[4..8].copy_from_slice(&s.x_mm.to_le_bytes());
    b[8..12].copy_from_slice(&s.y_mm.to_le_bytes());
    b[12..16].copy_from_slice(&s.energy_mev_u.to_le_bytes());
    b[16..20].copy_from_slice(&s.range_shifter_mm_we.to_le_bytes());
    b
}

fn header_bytes(session_start_unix_ns: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&session_start_unix_ns.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends records to an audit log.
#[derive(Debug)]
pub struct AuditWriter {
    path: PathBuf,
    file: File,
    options: AuditOptions,
    buf: Vec<u8>,
    offset: u64,
    last_sync: Instant,
}

impl AuditWriter {
    /// Creates a new log with its header; refuses an existing file.
    pub fn create(
        path: &Path,
        session_start_unix_ns: u64,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => AuditError::Exists {
                    path: path.to_path_buf(),
                },
                _ => io_err(path, e),
            })?;
        file.write_all(&header_bytes(session_start_unix_ns))
            .map_err(|e| io_err(path, e))?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        Ok(AuditWriter {
            path: path.to_path_buf(),
            file,
            options,
            buf: Vec::with_capacity(4096),
            offset: HEADER_LEN as u64,
            last_sync: Instant::now(),
        })
    }

    /// Opens an existing log for append, only if it reads [`TailStatus::Clean`].
    pub fn open_append(path: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        let mut reader = AuditReader::open(path)?;
        if reader.header().version != VERSION {
            return Err(AuditError::AppendOldVersion {
                path: path.to_path_buf(),
                version: reader.header().version,
            });
        }
        for _ in reader.by_ref() {}
        let status = reader.status().cloned().unwrap_or(TailStatus::Clean);
        if status != TailStatus::Clean {
            return Err(AuditError::NotClean {
                path: path.to_path_buf(),
                status,
            });
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let offset = file.metadata().map_err(|e| io_err(path, e))?.len();
        Ok(AuditWriter {
            path: path.to_path_buf(),
            file,
            options,
            buf: Vec::with_capacity(4096),
            offset,
            last_sync: Instant::now(),
        })
    }

    /// Byte offset where the next record goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends a frame record.
    pub fn write_frame(&mut self, frame: &FrameRecord) -> Result<(), AuditError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        encode_frame(&mut self.buf, frame, self.options.full_corrections)?;
        self.commit()
    }

    /// Appends any record.
    pub fn write(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        let b = &mut self.buf;
        match record {
            AuditRecord::Frame(f) => encode_frame(b, f, self.options.full_corrections)?,
            AuditRecord::SessionStart {
                unix_ns,
                config_sha256,
                plan_sop_uid,
                plan_warnings,
            } => {
                b.push(KIND_SESSION);
                b.extend_from_slice(&unix_ns.to_le_bytes());
                b.extend_from_slice(config_sha256);
                put_str(b, "plan_sop_uid", plan_sop_uid)?;
                let count = u16::try_from(plan_warnings.len()).map_err(|_| AuditError::FieldTooLong {
                    field: "plan_warnings",
                    len: plan_warnings.len(),
                    max: u16::MAX as usize,
                })?;
                b.extend_from_slice(&count.to_le_bytes());
                for w in plan_warnings {
                    put_str(b, "plan_warning", w)?;
                }
            }
            AuditRecord::Link {
                unix_ns,
                code,
                detail,
            } => {
                b.push(KIND_LINK);
                b.extend_from_slice(&unix_ns.to_le_bytes());
                b.extend_from_slice(&code.to_le_bytes());
                put_str(b, "detail", detail)?;
            }
            AuditRecord::Setup(r) => {
                b.push(KIND_SETUP);
                b.extend_from_slice(&r.unix_ns.to_le_bytes());
                put_str(
                    b,
                    "planning_frame_of_reference_uid",
                    &r.planning_frame_of_reference_uid,
                )?;
                put_str(b, "room_frame_of_reference_uid", &r.room_frame_of_reference_uid)?;
                for v in r.planning_to_room {
                    b.extend_from_slice(&v.to_le_bytes());
                }
                b.push(u8::from(r.registration_sha256.is_some()));
                b.extend_from_slice(&r.registration_sha256.unwrap_or([0; 32]));
            }
            AuditRecord::Shutdown { unix_ns, reason } => {
                b.push(KIND_SHUTDOWN);
                b.extend_from_slice(&unix_ns.to_le_bytes());
                put_str(b, "reason", reason)?;
            }
        }
        self.commit()
    }

    /// Frames `buf[8..]` with length and CRC and writes it in one call.
    fn commit(&mut self) -> Result<(), AuditError> {
        let len = self.buf.len() - 8;
        if len > MAX_RECORD_BYTES as usize {
            return Err(AuditError::FieldTooLong {
                field: "record",
                len,
                max: MAX_RECORD_BYTES as usize,
            });
        }
        let len_bytes = (len as u32).to_le_bytes();
        self.buf[0..4].copy_from_slice(&len_bytes);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len_bytes);
        crc.update(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        self.file
            .write_all(&self.buf)
            .map_err(|e| io_err(&self.path, e))?;
        self.offset += self.buf.len() as u64;
        let sync = match self.options.fsync {
            Fsync::Never => false,
            Fsync::EveryRecord => true,
            Fsync::Interval(d) => self.last_sync.elapsed() >= d,
        };
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Hands everything written to the OS (records are written unbuffered, so this only
    /// flushes the file handle).
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.file.flush().map_err(|e| io_err(&self.path, e))
    }

    /// Puts everything written on disk (fsync).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn io_err(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn put_str(b: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), AuditError> {
    let len = u16::try_from(s.len()).map_err(|_| AuditError::FieldTooLong {
        field,
        len: s.len(),
        max: u16::MAX as usize,
    })?;
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt_u64(b: &mut Vec<u8>, v: Option<u64>) {
    b.extend_from_slice(&v.unwrap_or(NONE_U64).to_le_bytes());
}

fn mode_code(m: Option<RangeMode>) -> u8 {
    m.map_or(0xFF, RangeMode::code)
}

fn encode_frame(b: &mut Vec<u8>, f: &FrameRecord, full: bool) -> Result<(), AuditError> {
    b.push(KIND_FRAME);
    b.extend_from_slice(&f.frame_id.to_le_bytes());
    put_str(b, "origin", &f.origin)?;
    b.push(f.outcome.map_or(0xFF, Outcome::code));
    b.extend_from_slice(&f.hold_reason.map_or(0, HoldReason::code).to_le_bytes());
    put_str(b, "detail", &f.detail)?;
    b.extend_from_slice(&f.arrival_unix_ns.to_le_bytes());
    b.extend_from_slice(&f.complete_unix_ns.to_le_bytes());
    put_opt_u64(b, f.latency_ns);
    for s in f.stage_ns {
        put_opt_u64(b, s);
    }
    let flags = u8::from(f.tumor_shift_mm.is_some()) | (u8::from(f.ncc.is_some()) << 1);
    b.push(flags);
    for v in f.tumor_shift_mm.unwrap_or_default() {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&f.ncc.unwrap_or(0.0).to_le_bytes());
    match &f.corrections {
        Corrections::None => b.push(0),
        Corrections::Full {
            mode,
            valid_until_unix_ns,
            spots,
        } => {
            let count = u32::try_from(spots.len()).map_err(|_| AuditError::FieldTooLong {
                field: "spots",
                len: spots.len(),
                max: u32::MAX as usize,
            })?;
            b.push(if full { 1 } else { 2 });
            b.push(mode_code(*mode));
            b.extend_from_slice(&valid_until_unix_ns.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            if full {
                for s in spots {
                    b.extend_from_slice(&spot_bytes(s));
                }
            } else {
                b.extend_from_slice(&corrections_digest(spots));
            }
        }
        Corrections::Digest {
            mode,
            valid_until_unix_ns,
            count,
            sha256,
        } => {
            b.push(2);
            b.push(mode_code(*mode));
            b.extend_from_slice(&valid_until_unix_ns.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(sha256);
        }
    }
    Ok(())
}

/// A bounds-checked little-endian reader over a payload; `None` when it runs out.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(a)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.arr()?))
    }
    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes(self.arr()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.arr()?))
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        let v = self.u64()?;
        Some((v != NONE_U64).then_some(v))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn mode(&mut self) -> Option<Option<RangeMode>> {
        match self.u8()? {
            0xFF => Some(None),
            c => RangeMode::from_code(c).map(Some),
        }
    }
}

/// One record's payload as the file's format `version` lays it out.
fn decode(payload: &[u8], version: u16) -> Option<AuditRecord> {
    let mut d = Dec(payload);
    let rec = match d.u8()? {
        KIND_SESSION => AuditRecord::SessionStart {
            unix_ns: d.u64()?,
            config_sha256: d.arr()?,
            plan_sop_uid: d.string()?,
            plan_warnings: if version >= 3 {
                let n = d.u16()?;
                (0..n).map(|_| d.string()).collect::<Option<_>>()?
            } else {
                Vec::new()
            },
        },
        KIND_LINK => AuditRecord::Link {
            unix_ns: d.u64()?,
            code: d.u16()?,
            detail: d.string()?,
        },
        KIND_SHUTDOWN => AuditRecord::Shutdown {
            unix_ns: d.u64()?,
            reason: d.string()?,
        },
        KIND_SETUP => {
            let unix_ns = d.u64()?;
            let planning_frame_of_reference_uid = d.string()?;
            let room_frame_of_reference_uid = d.string()?;
            let mut planning_to_room = [0.0; 12];
            for v in &mut planning_to_room {
                *v = d.f64()?;
            }
            let has_sha = match d.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let sha: [u8; 32] = d.arr()?;
            AuditRecord::Setup(SetupRecord {
                unix_ns,
                planning_frame_of_reference_uid,
                room_frame_of_reference_uid,
                planning_to_room,
                registration_sha256: has_sha.then_some(sha),
            })
        }
        KIND_FRAME => {
            let frame_id = d.u64()?;
            let origin = d.string()?;
            let outcome = match d.u8()? {
                0xFF => None,
                c => Some(Outcome::from_code(c)?),
            };
            let hold_reason = match d.u16()? {
                0 => None,
                c => Some(HoldReason::from_code(c)?),
            };
            let detail = d.string()?;
            let arrival_unix_ns = d.u64()?;
            let complete_unix_ns = d.u64()?;
            let latency_ns = d.opt_u64()?;
            let mut stage_ns = [None; 5];
            for s in &mut stage_ns {
                *s = d.opt_u64()?;
            }
            let flags = d.u8()?;
            let shift = [d.f32()?, d.f32()?, d.f32()?];
            let ncc = d.f64()?;
            let corrections = match d.u8()? {
                0 => Corrections::None,
                tag @ (1 | 2) => {
                    let mode = d.mode()?;
                    let valid_until_unix_ns = d.u64()?;
                    let count = d.u32()?;
                    if tag == 1 {
                        let bytes = d.take((count as usize).checked_mul(SPOT_BYTES)?)?;
                        let spots = bytes
                            .chunks_exact(SPOT_BYTES)
                            .map(|c| {
                                let mut s = Dec(c);
                                Some(SpotCorrection {
                                    spot_index: s.u32()?,
                                    x_mm: s.f32()?,
                                    y_mm: s.f32()?,
                                    energy_mev_u: s.f32()?,
                                    range_shifter_mm_we: s.f32()?,
                                })
                            })
                            .collect::<Option<Vec<_>>>()?;
                        Corrections::Full {
                            mode,
                            valid_until_unix_ns,
                            spots,
                        }
                    } else {
                        Corrections::Digest {
                            mode,
                            valid_until_unix_ns,
                            count,
                            sha256: d.arr()?,
                        }
                    }
                }
                _ => return None,
            };
            AuditRecord::Frame(FrameRecord {
                frame_id,
                origin,
                outcome,
                hold_reason,
                detail,
                arrival_unix_ns,
                complete_unix_ns,
                latency_ns,
                stage_ns,
                tumor_shift_mm: (flags & 1 != 0).then_some(shift),
                ncc: (flags & 2 != 0).then_some(ncc),
                corrections,
            })
        }
        _ => return None,
    };
    // Trailing bytes mean the writer and reader disagree on the layout.
    d.0.is_empty().then_some(rec)
}

/// The log's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHeader {
    /// Format version.
    pub version: u16,
    /// Session start, ns since the UNIX epoch.
    pub session_start_unix_ns: u64,
}

/// Reads an audit log: an iterator of records, then [`AuditReader::status`].
#[derive(Debug)]
pub struct AuditReader {
    data: Vec<u8>,
    pos: usize,
    header: AuditHeader,
    status: Option<TailStatus>,
    last_offset: u64,
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

    fn step(&mut self) -> Result<Option<AuditRecord>, TailStatus> {
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
        let Some(rec) = decode(&d[o + 8..end], self.header.version) else {
            return Err(TailStatus::Corrupt {
                offset,
                why: "checksum matches but the record does not decode",
            });
        };
        self.last_offset = offset;
        self.pos = end;
        Ok(Some(rec))
    }
}

impl Iterator for AuditReader {
    type Item = AuditRecord;

    fn next(&mut self) -> Option<AuditRecord> {
        if self.status.is_some() {
            return None;
        }
        match self.step() {
            Ok(Some(r)) => Some(r),
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
}

/// Counts of a log's records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditSummary {
    /// Frames per outcome name (`corrected`, `held`, `rejected`, `dropped`, and `unknown`
    /// for a frame written without one).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Held or rejected frames per hold reason name.
    pub reasons: BTreeMap<&'static str, u64>,
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
            AuditRecord::Frame(f) => {
                self.frames += 1;
                *self
                    .outcomes
                    .entry(f.outcome.map_or("unknown", Outcome::name))
                    .or_default() += 1;
                if let Some(h) = f.hold_reason {
                    *self.reasons.entry(h.name()).or_default() += 1;
                }
                if let Some(l) = f.latency_ns {
                    self.max_latency_ns = Some(self.max_latency_ns.map_or(l, |m| m.max(l)));
                }
            }
        }
    }
}
