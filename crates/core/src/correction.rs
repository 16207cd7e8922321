//! What the adapt stage produces and the link carries to the gantry controller: per-spot
//! corrections, and the reasons a frame ends in a beam hold.
//!
//! These types are shared by `adapt`, `link`, the audit log and the simulator's controller,
//! so they live here, in the leaf, and know nothing of threads, sockets or files. With them
//! the vocabulary both the pipeline and the audit log speak: the [`Stage`] list, why a frame
//! was refused on input ([`RejectReason`]), the per-spot byte encoding the wire and the audit
//! log share ([`SpotCorrection::to_le_bytes`]) and the wall clock both stamp ([`unix_now_ns`]).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How a range change is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeMode {
    /// A new beam energy per spot (from the range–energy relation, or snapped to a facility
    /// table); `range_shifter_mm_we` is 0.
    Energy,
    /// The planned energy with a water-equivalent range-shifter offset per spot.
    RangeShifter,
}

impl RangeMode {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            RangeMode::Energy => 0,
            RangeMode::RangeShifter => 1,
        }
    }
    /// From a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(RangeMode::Energy),
            1 => Some(RangeMode::RangeShifter),
            _ => None,
        }
    }
}

/// One spot's corrected delivery.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpotCorrection {
    /// Index of the spot in plan order (beams, then layers, then spots), as
    /// `range::SpotTracer::spots` numbers them.
    pub spot_index: u32,
    /// Corrected spot position at the isocenter plane, beam's-eye-view x (IEC gantry), mm.
    pub x_mm: f32,
    /// Corrected spot position at the isocenter plane, beam's-eye-view y (IEC gantry), mm.
    pub y_mm: f32,
    /// Energy to deliver, MeV/u (the planned one in [`RangeMode::RangeShifter`]).
    pub energy_mev_u: f32,
    /// Water-equivalent range-shifter thickness to add, mm (0 in [`RangeMode::Energy`];
    /// negative means pull back, which a facility must support to use it).
    pub range_shifter_mm_we: f32,
}

/// Bytes of one spot in the shared little-endian encoding: spot index u32, x mm f32, y mm
/// f32, energy MeV/u f32, range shifter mm w.e. f32. The wire (`docs/protocol.md`) and the
/// audit log (`docs/audit-log.md`, and the digest of a frame's corrections) use exactly
/// these bytes, so a logged digest can be checked against what was sent.
pub const SPOT_BYTES: usize = 20;

impl SpotCorrection {
    /// The spot in the shared encoding ([`SPOT_BYTES`]).
    pub fn to_le_bytes(&self) -> [u8; SPOT_BYTES] {
        let mut b = [0u8; SPOT_BYTES];
        b[0..4].copy_from_slice(&self.spot_index.to_le_bytes());
        b[4..8].copy_from_slice(&self.x_mm.to_le_bytes());
        b[8..12].copy_from_slice(&self.y_mm.to_le_bytes());
        b[12..16].copy_from_slice(&self.energy_mev_u.to_le_bytes());
        b[16..20].copy_from_slice(&self.range_shifter_mm_we.to_le_bytes());
        b
    }

    /// A spot from the shared encoding. Any 20 bytes decode (non-finite floats included);
    /// whether they are acceptable is the reader's rule.
    pub fn from_le_bytes(b: &[u8; SPOT_BYTES]) -> Self {
        let word = |at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
        SpotCorrection {
            spot_index: u32::from_le_bytes(word(0)),
            x_mm: f32::from_le_bytes(word(4)),
            y_mm: f32::from_le_bytes(word(8)),
            energy_mev_u: f32::from_le_bytes(word(12)),
            range_shifter_mm_we: f32::from_le_bytes(word(16)),
        }
    }
}

/// One spot as the controller delivered it (or a piece of it, when a hold split its dwell):
/// the correction it was delivered with, how much meterset, under which frame's set, when.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DeliveredSpot {
    /// The applied correction: plan index, position, energy and range shifter as delivered.
    pub spot: SpotCorrection,
    /// Meterset delivered, in the plan's Scan Spot Meterset Weight units (300A,0396); a
    /// treatment record scales it to the beam's Primary Dosimeter Unit.
    pub meterset: f64,
    /// The frame whose correction set was applied when the spot (piece) was delivered.
    pub frame_id: u64,
    /// When its delivery ended, ns since the UNIX epoch (controller wall clock).
    pub delivered_unix_ns: u64,
}

/// Bytes of one delivered spot in the shared little-endian encoding: the 20 bytes of
/// [`SpotCorrection::to_le_bytes`], meterset f64, frame id u64, delivery instant u64. The
/// DELIVERED datagram (`docs/protocol.md`) and the audit log's delivered-spots record
/// (`docs/audit-log.md`) carry exactly these bytes.
pub const DELIVERED_SPOT_BYTES: usize = 44;

impl DeliveredSpot {
    /// The delivered spot in the shared encoding ([`DELIVERED_SPOT_BYTES`]).
    pub fn to_le_bytes(&self) -> [u8; DELIVERED_SPOT_BYTES] {
        let mut b = [0u8; DELIVERED_SPOT_BYTES];
        b[0..20].copy_from_slice(&self.spot.to_le_bytes());
        b[20..28].copy_from_slice(&self.meterset.to_le_bytes());
        b[28..36].copy_from_slice(&self.frame_id.to_le_bytes());
        b[36..44].copy_from_slice(&self.delivered_unix_ns.to_le_bytes());
        b
    }

    /// A delivered spot from the shared encoding. Any 44 bytes decode; whether the values
    /// are acceptable (finite, meterset ≥ 0) is the reader's rule ([`DeliveredSpot::is_sane`]).
    pub fn from_le_bytes(b: &[u8; DELIVERED_SPOT_BYTES]) -> Self {
        let mut s = [0u8; SPOT_BYTES];
        s.copy_from_slice(&b[0..20]);
        let word8 = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            a
        };
        DeliveredSpot {
            spot: SpotCorrection::from_le_bytes(&s),
            meterset: f64::from_le_bytes(word8(20)),
            frame_id: u64::from_le_bytes(word8(28)),
            delivered_unix_ns: u64::from_le_bytes(word8(36)),
        }
    }

    /// True when every float is finite and the meterset is not negative.
    pub fn is_sane(&self) -> bool {
        let s = &self.spot;
        [s.x_mm, s.y_mm, s.energy_mev_u, s.range_shifter_mm_we]
            .iter()
            .all(|v| v.is_finite())
            && self.meterset.is_finite()
            && self.meterset >= 0.0
    }
}

/// The corrections for one frame. Buffers are reused frame to frame (`clear` keeps the
/// capacity), so a warm pipeline does not allocate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorrectionSet {
    /// The frame these corrections were computed from.
    pub frame_id: u64,
    /// Wall-clock time (ns since the UNIX epoch) after which the corrections are void.
    pub valid_until_unix_ns: u64,
    /// How range changes are expressed.
    pub mode: Option<RangeMode>,
    /// Tumor shift from the plan in this frame (patient LPS), mm.
    pub tumor_shift_mm: [f32; 3],
    /// One entry per planned spot, in plan order.
    pub spots: Vec<SpotCorrection>,
}

impl CorrectionSet {
    /// Empties the set, keeping its capacity.
    pub fn clear(&mut self) {
        self.frame_id = 0;
        self.valid_until_unix_ns = 0;
        self.mode = None;
        self.tumor_shift_mm = [0.0; 3];
        self.spots.clear();
    }
}

/// Why the beam is (or stays) held. The wire and the audit log carry the code; the audit
/// log carries a detail text besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldReason {
    /// No usable frame yet (start of session), or the operator's hold.
    NotReady,
    /// A frame passed its deadline in some stage, or its corrections would be void before
    /// reaching the wire (it was acquired longer than the validity ago).
    DeadlineMissed,
    /// The frame was refused on input for a reason other than its patient or Frame of
    /// Reference: not decodable, incomplete, not a CT, over a limit (the audit log's
    /// [`RejectReason`] says which).
    CorruptFrame,
    /// The frame's Patient ID differs from the plan's.
    WrongPatient,
    /// The frame's Frame of Reference differs from the session's.
    FrameOfReferenceChanged,
    /// Registration failed or did not pass its quality checks.
    RegistrationFailed,
    /// A lateral correction exceeded its limit.
    LateralOverLimit,
    /// A range correction exceeded its limit.
    RangeOverLimit,
    /// The tumor moved more between consecutive frames than allowed.
    JumpOverLimit,
    /// A spot's range could not be computed (its ray left the frame) or its energy is
    /// outside the deliverable range.
    RangeUnavailable,
    /// The controller heard nothing valid within its watchdog period.
    LinkSilent,
    /// The pipeline is shutting down.
    Shutdown,
    /// An internal fault (a stage ended, a buffer pool ran dry).
    InternalFault,
    /// The rigid registration's answer does not describe the frame: after the rigid fit,
    /// parts of the target region are still misaligned by more than the configured limit
    /// (the anatomy deformed, or the tumor changed size or shape).
    ResidualDeformation,
    /// Surrogate-driven tracking lost its surrogate: the stream stalled (no sample, or the
    /// same position frozen, for longer than the configured limit) or has a gap longer than
    /// the limit, so no correction may be extrapolated across it.
    SurrogateLost,
    /// A CT frame's measured tumor position disagreed with the correlation model's
    /// prediction for that frame's acquisition instant by more than the limit (baseline
    /// drift, a changed breathing pattern); held until a refit model agrees again.
    ModelDisagrees,
    /// The correlation model has too few CT frames to be used (start of session, or after
    /// it was reset).
    ModelNotReady,
    /// (Deformable tracking) the target's volume in the frame differs from the plan's by
    /// more than the configured limit: the plan no longer fits the tumor, re-plan needed.
    TargetVolumeChanged,
    /// (Deformable tracking) the deformable registration's result is not plausible: the
    /// field folds (Jacobian determinant too small), its inverse is inconsistent, it is
    /// larger than the limit, or the deformed frame does not look like the planning CT.
    DeformationImplausible,
}

impl HoldReason {
    /// Every reason, in code order.
    pub const ALL: [HoldReason; 19] = [
        HoldReason::NotReady,
        HoldReason::DeadlineMissed,
        HoldReason::CorruptFrame,
        HoldReason::WrongPatient,
        HoldReason::FrameOfReferenceChanged,
        HoldReason::RegistrationFailed,
        HoldReason::LateralOverLimit,
        HoldReason::RangeOverLimit,
        HoldReason::JumpOverLimit,
        HoldReason::RangeUnavailable,
        HoldReason::LinkSilent,
        HoldReason::Shutdown,
        HoldReason::InternalFault,
        HoldReason::ResidualDeformation,
        HoldReason::SurrogateLost,
        HoldReason::ModelDisagrees,
        HoldReason::ModelNotReady,
        HoldReason::TargetVolumeChanged,
        HoldReason::DeformationImplausible,
    ];

    /// Wire and audit code (stable; never renumber).
    pub fn code(self) -> u16 {
        match self {
            HoldReason::NotReady => 1,
            HoldReason::DeadlineMissed => 2,
            HoldReason::CorruptFrame => 3,
            HoldReason::WrongPatient => 4,
            HoldReason::FrameOfReferenceChanged => 5,
            HoldReason::RegistrationFailed => 6,
            HoldReason::LateralOverLimit => 7,
            HoldReason::RangeOverLimit => 8,
            HoldReason::JumpOverLimit => 9,
            HoldReason::RangeUnavailable => 10,
            HoldReason::LinkSilent => 11,
            HoldReason::Shutdown => 12,
            HoldReason::InternalFault => 13,
            HoldReason::ResidualDeformation => 14,
            HoldReason::SurrogateLost => 15,
            HoldReason::ModelDisagrees => 16,
            HoldReason::ModelNotReady => 17,
            HoldReason::TargetVolumeChanged => 18,
            HoldReason::DeformationImplausible => 19,
        }
    }

    /// From a wire code.
    pub fn from_code(code: u16) -> Option<Self> {
        HoldReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A short stable name (`snake_case`), for logs, reports and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            HoldReason::NotReady => "not_ready",
            HoldReason::DeadlineMissed => "deadline_missed",
            HoldReason::CorruptFrame => "corrupt_frame",
            HoldReason::WrongPatient => "wrong_patient",
            HoldReason::FrameOfReferenceChanged => "frame_of_reference_changed",
            HoldReason::RegistrationFailed => "registration_failed",
            HoldReason::LateralOverLimit => "lateral_over_limit",
            HoldReason::RangeOverLimit => "range_over_limit",
            HoldReason::JumpOverLimit => "jump_over_limit",
            HoldReason::RangeUnavailable => "range_unavailable",
            HoldReason::LinkSilent => "link_silent",
            HoldReason::Shutdown => "shutdown",
            HoldReason::InternalFault => "internal_fault",
            HoldReason::ResidualDeformation => "residual_deformation",
            HoldReason::SurrogateLost => "surrogate_lost",
            HoldReason::ModelDisagrees => "model_disagrees",
            HoldReason::ModelNotReady => "model_not_ready",
            HoldReason::TargetVolumeChanged => "target_volume_changed",
            HoldReason::DeformationImplausible => "deformation_implausible",
        }
    }
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The pipeline's stages, in order. A frame's timings (pipeline telemetry, the audit log's
/// five stage slots) and a deadline miss are attributed to one; both use this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Decode and session checks.
    Ingest,
    /// Rigid registration against the planning CT.
    Register,
    /// Spot ray tracing in the frame.
    Range,
    /// Per-spot corrections and safety limits.
    Adapt,
    /// The message to the gantry controller.
    Link,
}

impl Stage {
    /// Every stage, in order (the audit log's stage slots are in this order).
    pub const ALL: [Stage; 5] = [
        Stage::Ingest,
        Stage::Register,
        Stage::Range,
        Stage::Adapt,
        Stage::Link,
    ];
    /// Position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Register => "register",
            Stage::Range => "range",
            Stage::Adapt => "adapt",
            Stage::Link => "link",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame (or an object of one) was refused on input, before registration. The audit
/// log records the code; the wire carries only the [`HoldReason`] it maps to
/// ([`RejectReason::hold_reason`]), so the controller sees what it always saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// Readable DICOM, but not a CT image (another SOP class or modality: a structure set,
    /// a plan, an MR sent by mistake); the detail names the SOP class or modality found.
    NotCt,
    /// Not readable DICOM, a header without a usable attribute, pixel data that does not
    /// decode, or a transport that could not be understood.
    Unparseable,
    /// Over a configured limit: object bytes, objects per frame, frames assembling at
    /// once, voxels per frame.
    OverLimit,
    /// The frame's Patient ID is not the plan's.
    WrongPatient,
    /// The frame's Frame of Reference is not the session's.
    FrameOfReferenceChanged,
    /// The objects of one frame disagree among themselves (series, Frame of Reference,
    /// orientation, geometry, object count, duplicate or missing slices, an Enhanced CT
    /// object pushed with others, an empty frame).
    InconsistentFrame,
    /// The frame did not complete within the assembly timeout.
    AssemblyTimeout,
    /// The data could not be read at all (a spool file's I/O error).
    Unreadable,
    /// Refused at association time, before any object: a calling AE title or peer address
    /// not on the receiver's allow-list, or a presentation context whose abstract syntax the
    /// pipeline does not read (audit log version 5). No frame was touched, so the beam is
    /// not held for it ([`RejectReason::holds_beam`]): a stranger on the network must not be
    /// able to hold the treatment by connecting.
    PeerRefused,
}

impl RejectReason {
    /// Every reason, in code order.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::NotCt,
        RejectReason::Unparseable,
        RejectReason::OverLimit,
        RejectReason::WrongPatient,
        RejectReason::FrameOfReferenceChanged,
        RejectReason::InconsistentFrame,
        RejectReason::AssemblyTimeout,
        RejectReason::Unreadable,
        RejectReason::PeerRefused,
    ];

    /// Audit code (stable; never renumber; 0 means none in the log).
    pub fn code(self) -> u16 {
        match self {
            RejectReason::NotCt => 1,
            RejectReason::Unparseable => 2,
            RejectReason::OverLimit => 3,
            RejectReason::WrongPatient => 4,
            RejectReason::FrameOfReferenceChanged => 5,
            RejectReason::InconsistentFrame => 6,
            RejectReason::AssemblyTimeout => 7,
            RejectReason::Unreadable => 8,
            RejectReason::PeerRefused => 9,
        }
    }

    /// From an audit code.
    pub fn from_code(code: u16) -> Option<Self> {
        RejectReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A short stable name (`snake_case`).
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::NotCt => "not_ct",
            RejectReason::Unparseable => "unparseable",
            RejectReason::OverLimit => "over_limit",
            RejectReason::WrongPatient => "wrong_patient",
            RejectReason::FrameOfReferenceChanged => "frame_of_reference_changed",
            RejectReason::InconsistentFrame => "inconsistent_frame",
            RejectReason::AssemblyTimeout => "assembly_timeout",
            RejectReason::Unreadable => "unreadable",
            RejectReason::PeerRefused => "peer_refused",
        }
    }

    /// Whether a rejection holds the beam: every one that concerns frame data does; a peer
    /// refused at association time does not (nothing it sent reached a frame).
    pub fn holds_beam(self) -> bool {
        self != RejectReason::PeerRefused
    }

    /// The hold the controller is told of (wire codes are unchanged by the finer audit
    /// reasons: a patient or Frame of Reference mismatch keeps its own code, everything
    /// else is `corrupt_frame`, as before).
    pub fn hold_reason(self) -> HoldReason {
        match self {
            RejectReason::WrongPatient => HoldReason::WrongPatient,
            RejectReason::FrameOfReferenceChanged => HoldReason::FrameOfReferenceChanged,
            _ => HoldReason::CorruptFrame,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Wall-clock now, ns since the UNIX epoch.
///
/// Saturating, not a typed error: a clock before 1970 gives 0 and one past 2554 (where u64
/// ns run out) gives `u64::MAX`. Both are absurd clocks the consumers already refuse (the
/// link's freshness check rejects a message stamped 0 or far in the future, and a
/// correction valid until 0 is void), while an error would make every hot-path stamp
/// handle a case that cannot arise on a working host; and unlike a truncating cast a
/// saturated value never jumps back towards 1970.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The wall-clock instant (ns since the UNIX epoch) of a monotonic instant in the past,
/// saturating like [`unix_now_ns`].
pub fn unix_ns_of(at: Instant) -> u64 {
    let ago_ns = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
    unix_now_ns().saturating_sub(ago_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in HoldReason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(HoldReason::from_code(r.code()), Some(r));
        }
        assert_eq!(HoldReason::from_code(0), None);
        assert_eq!(
            RangeMode::from_code(RangeMode::RangeShifter.code()),
            Some(RangeMode::RangeShifter)
        );
        assert_eq!(RangeMode::from_code(7), None);
    }

    #[test]
    fn reject_codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_ne!(r.code(), 0, "0 means none in the audit log");
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
        }
        assert_eq!(RejectReason::from_code(0), None);
    }

    #[test]
    fn spot_bytes_are_the_documented_layout() {
        // docs/protocol.md and docs/audit-log.md: u32 index, then four f32, little-endian.
        let s = SpotCorrection {
            spot_index: 0x0403_0201,
            x_mm: 1.0,
            y_mm: -2.0,
            energy_mev_u: 0.5,
            range_shifter_mm_we: 0.0,
        };
        let want: [u8; SPOT_BYTES] = [
            0x01, 0x02, 0x03, 0x04, // spot_index
            0x00, 0x00, 0x80, 0x3f, // 1.0
            0x00, 0x00, 0x00, 0xc0, // -2.0
            0x00, 0x00, 0x00, 0x3f, // 0.5
            0x00, 0x00, 0x00, 0x00, // 0.0
        ];
        assert_eq!(s.to_le_bytes(), want);
        assert_eq!(SpotCorrection::from_le_bytes(&want), s);
    }

    #[test]
    fn stage_index_is_its_position() {
        for (k, s) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), k);
        }
    }
}
