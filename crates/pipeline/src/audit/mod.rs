//! The audit log: every frame that entered the pipeline — corrected, held, rejected or
//! dropped — with why, its latency and the corrections sent; plus session, link and shutdown
//! events. Append-only, every record checksummed, readable after a crash.
//!
//! # File format (version 7, all integers little-endian; versions 1 to 6 are read too)
//!
//! ```text
//! header (32 bytes)
//!   0  magic        8  b"IGAUDIT\n"
//!   8  version      u16  7 (6: no frame-target records; 5: no delivered spots; 4: no chain;
//!                          3: no acquisition instant; 2: frames without reject reason,
//!                          session start without plan warnings; 1: also no setup records)
//!  10  flags        u16  0 (reserved)
//!  12  header_len   u32  32
//!  16  session_start_unix_ns u64
//!  24  reserved     u32  0
//!  28  crc32        u32  CRC-32 (IEEE) of bytes 0..28
//! record (repeated)
//!   0  len          u32  payload bytes, 1 ..= 16 MiB
//!   4  crc32        u32  CRC-32 of the 4 len bytes followed by the payload
//!   8  payload      len bytes: (version 5) seq u64, prev SHA-256 32 bytes; kind u8, then
//!                    the kind's fields
//! ```
//!
//! # Integrity (version 5)
//!
//! The CRC finds accidents; it cannot find a record removed or edited on purpose, since
//! anyone can recompute it. From version 5 each record carries its sequence number and the
//! SHA-256 of the whole record before it (the header's for the first), so a record removed,
//! moved, inserted or edited breaks the chain at a place [`verify`] names. A chain alone
//! can be rebuilt by whoever rewrites the tail, so a writer given a key
//! ([`AuditWriter::sign_with`]) also writes a checkpoint record (kind 6) every N records and
//! when closed: an HMAC-SHA256 over the checkpoint's own payload, which holds the chain's
//! head. Without the key the chain cannot be re-signed; [`verify`] says through which record
//! the log is proven and what it found after. Checkpoints are integrity data, not events:
//! the record iterator skips them.//!
//! Strings are `u16` length + UTF-8. Optional integers use `u64::MAX` for "none"; optional
//! floats a flag bit. Payload kinds: 1 session start, 2 frame, 3 link event, 4 shutdown, 5
//! setup (how in-room coordinates map to the plan's), 6 checkpoint, 7 controller
//! acknowledgement, 8 delivered spots, 9 the target in a frame (version 7, deformable
//! tracking); see `docs/audit-log.md` for the field tables and the reject reason codes. A frame's corrections are kept in full (20 bytes
//! per spot, the wire's encoding: [`SpotCorrection::to_le_bytes`]) or, when configured,
//! only as the SHA-256 of exactly those bytes ([`corrections_digest`]), so a replay can
//! still be checked against the log.
//!
//! The code is split by concern: this root holds the record types and constants,
//! `format` the byte layout (encode and decode), `writer` the append-only writer,
//! `reader` the crash-tolerant reader, `summary` the counts.
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

use std::path::{Path, PathBuf};

use crate::correction::{HoldReason, RangeMode, RejectReason, SpotCorrection};
use crate::geometry::{RigidTransform, RoomSetup};

mod format;
mod reader;
mod summary;
mod verify;
mod writer;

pub use crate::link::LinkKey as AuditKey;
pub use format::corrections_digest;
pub use reader::{AuditHeader, AuditReader};
pub use summary::{summary, AuditSummary};
pub use verify::{verify, verify_bytes, Finding, FindingKind, Proven, Verification};
pub use writer::{AuditOptions, AuditWriter, Fsync};

/// File magic.
pub const MAGIC: [u8; 8] = *b"IGAUDIT\n";
/// Format version this code writes (and the newest it reads).
pub const VERSION: u16 = 7;
/// Oldest format version this code reads (version 1 has no setup records, versions 1 and 2
/// no reject reason in frame records).
pub const OLDEST_READ_VERSION: u16 = 1;
/// First version whose frame records carry a reject reason.
pub const REJECT_REASON_VERSION: u16 = 3;
/// First format version whose session-start records carry the plan's warnings.
pub const PLAN_WARNINGS_VERSION: u16 = 3;
/// First format version whose frame records carry the frame's acquisition instant.
pub const ACQUIRED_VERSION: u16 = 4;
/// First format version whose records carry a sequence number and the SHA-256 of the record
/// before them, and may be followed by HMAC checkpoints.
pub const CHAIN_VERSION: u16 = 5;
/// Bytes of the chain prefix of a version 5 payload: seq u64 and the previous record's
/// SHA-256.
pub const CHAIN_PREFIX_BYTES: usize = 8 + 32;
/// First format version with frame-target records (kind 9, deformable tracking).
pub const TARGET_VERSION: u16 = 7;
/// Records between two checkpoints when the configuration does not say.
pub const DEFAULT_CHECKPOINT_EVERY: u32 = 1000;
/// The label a checkpoint's HMAC input starts with, so an audit MAC can never be mistaken
/// for a link datagram's MAC made with the same key.
pub const CHECKPOINT_MAC_LABEL: &[u8] = b"IGAUDIT checkpoint\0";
/// Header length, bytes.
pub const HEADER_LEN: usize = 32;
/// Largest payload accepted, bytes (a 100 000-spot frame is 2 MB).
pub const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Bytes per spot in a full corrections list (the encoding the wire uses too).
pub const SPOT_BYTES: usize = crate::correction::SPOT_BYTES;

const KIND_SESSION: u8 = 1;
const KIND_FRAME: u8 = 2;
const KIND_LINK: u8 = 3;
const KIND_SHUTDOWN: u8 = 4;
const KIND_SETUP: u8 = 5;
const KIND_CHECKPOINT: u8 = 6;
const KIND_ACK: u8 = 7;
const KIND_DELIVERED: u8 = 8;
const KIND_TARGET: u8 = 9;
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

/// The pipeline stages; a frame record has one timing slot per stage, in [`Stage::ALL`]
/// order (the same list the pipeline's telemetry uses).
pub use crate::correction::Stage;

// The frame record has one slot per stage: a stage added to the list changes the file
// format, which needs a new VERSION and a reader for the old layout.
const _: () = assert!(Stage::ALL.len() == 5, "the audit frame record has 5 stage slots");

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
    /// Hold reason (for a rejected frame, the hold the controller was told of).
    pub hold_reason: Option<HoldReason>,
    /// Why a rejected frame was refused (version 3; `None` in older logs, whose rejected
    /// frames carry only the hold reason).
    pub reject_reason: Option<RejectReason>,
    /// Human-readable detail (the hold detail, the rejection error).
    pub detail: String,
    /// Arrival of the first byte, ns since the UNIX epoch.
    pub arrival_unix_ns: u64,
    /// Frame complete (all slices in), ns since the UNIX epoch.
    pub complete_unix_ns: u64,
    /// When the scanner acquired it (the middle of its slices' acquisition instants), ns
    /// since the UNIX epoch: what its corrections' validity counts from (version 4; `None`
    /// in older logs, and for a frame without an acquisition time or not decoded).
    pub acquired_unix_ns: Option<u64>,
    /// Frame complete → message on the wire, ns (`None` when nothing was sent).
    pub latency_ns: Option<u64>,
    /// Per-stage durations, ns, in [`Stage::ALL`] order.
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
    /// What the controller acknowledged (version 5): every correction set it applied or
    /// found expired, and every change of its beam state; plain acknowledgements of
    /// heartbeats and holds that change nothing are not recorded. What was delivered is
    /// read from these, not from what was sent.
    ControllerAck {
        /// When the acknowledgement was read, ns since the UNIX epoch.
        unix_ns: u64,
        /// The frame concerned (0 for a message without one).
        frame_id: u64,
        /// The link sequence number acknowledged.
        acked_sequence: u64,
        /// What became of the message.
        status: AckOutcome,
        /// The controller's beam state after handling it.
        beam_on: bool,
    },
    /// Spots the controller reports delivered (kind 8, new; one per DELIVERED datagram), verbatim:
    /// what a treatment record is built from.
    Delivered {
        /// When the link read the report, ns since the UNIX epoch.
        unix_ns: u64,
        /// Position of the first spot in the controller's delivery log (0-based).
        first_ordinal: u64,
        /// The spots (pieces) in delivery order.
        spots: Vec<crate::correction::DeliveredSpot>,
    },
    /// The target in a frame, from deformable tracking (kind 9, version 7): written after
    /// the frame's record for every frame the deformable registration ran on.
    Target(TargetRecord),
    /// The session ended.
    Shutdown {
        /// When, ns since the UNIX epoch.
        unix_ns: u64,
        /// Why.
        reason: String,
    },
}

/// The planning target carried into one frame by the deformable registration (kind 9).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetRecord {
    /// The frame.
    pub frame_id: u64,
    /// Whether the deformable registration passed its checks (folding, inverse
    /// consistency, field size, similarity); a rejected one holds the frame
    /// (`deformation_implausible`) and its numbers say why.
    pub accepted: bool,
    /// The target's volume in the frame, cm³.
    pub volume_cc: f64,
    /// The planning target's volume, cm³.
    pub planned_volume_cc: f64,
    /// `100 · (volume / planned − 1)`, %.
    pub volume_change_pct: f64,
    /// The target's centroid in the frame, patient mm (`None`: the target vanished).
    pub centroid_mm: Option<[f64; 3]>,
    /// Smallest Jacobian determinant of the field (≤ 0: folding).
    pub jacobian_min: f64,
    /// Largest displacement of the field, mm.
    pub field_max_mm: f64,
    /// Largest inverse-consistency error, mm.
    pub inverse_error_mm: f64,
    /// NCC over the region after deformation.
    pub similarity_ncc: f64,
    /// Spots checked against the frame's target (the plan's; 0 when the frame was held
    /// before its spots were mapped).
    pub spots_total: u32,
    /// Plan-order indices of the spots switched off: their mapped Bragg point lies farther
    /// than the configured margin from the frame's target.
    pub spots_off: Vec<u32>,
}

/// Where a version 5 record sits in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLink {
    /// Sequence number: 0 for the first record of the file, then one more per record
    /// (checkpoints included).
    pub seq: u64,
    /// SHA-256 of the whole record before this one (length, CRC and payload), or of the
    /// 32-byte header for the first.
    pub prev_sha256: [u8; 32],
}

/// A checkpoint record (kind 6, version 5): an HMAC over the chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Records between checkpoints the writer was configured for (a verifier flags a longer
    /// run without one).
    pub interval_records: u32,
    /// Written when the writer was closed: the last record of an orderly session.
    pub closing: bool,
    /// [`AuditKey::key_id`] of the key that signed it.
    pub key_id: [u8; 8],
    /// HMAC-SHA256 of [`CHECKPOINT_MAC_LABEL`] followed by the payload up to this field.
    pub mac: [u8; 32],
}

/// What the controller did with an acknowledged message (the wire's `AckStatus`, kept
/// here so the audit format does not follow the wire's numbering by accident).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// Verified and accepted (a HOLD, RESUME or heartbeat).
    Accepted,
    /// A correction set arrived whole and was applied.
    Applied,
    /// A correction set arrived past its validity and was not applied.
    Expired,
}

impl AckOutcome {
    /// Stable audit code.
    pub fn code(self) -> u8 {
        match self {
            AckOutcome::Accepted => 0,
            AckOutcome::Applied => 1,
            AckOutcome::Expired => 2,
        }
    }
    /// From an audit code.
    pub fn from_code(code: u8) -> Option<Self> {
        [AckOutcome::Accepted, AckOutcome::Applied, AckOutcome::Expired]
            .into_iter()
            .find(|o| o.code() == code)
    }
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            AckOutcome::Accepted => "accepted",
            AckOutcome::Applied => "applied",
            AckOutcome::Expired => "expired",
        }
    }
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

fn io_err(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}
