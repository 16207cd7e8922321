//! What the adapt stage produces and the link carries to the gantry controller: per-spot
//! corrections, and the reasons a frame ends in a beam hold.
//!
//! These types are shared by `adapt`, `link`, the audit log and the simulator's controller,
//! so they live here, in the leaf, and know nothing of threads, sockets or files.

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
    /// A frame passed its deadline in some stage.
    DeadlineMissed,
    /// The frame could not be decoded, or was incomplete.
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
}

impl HoldReason {
    /// Every reason, in code order.
    pub const ALL: [HoldReason; 13] = [
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
        }
    }
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
}
