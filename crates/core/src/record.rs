//! What a treatment session delivered, beam by beam: the DICOM-free model of an RT Ion
//! Beams Treatment Record. `pipeline::record` builds it from an audit log (the controller's
//! delivered-spots reports); `dicom::rtrecord` writes and reads it.

use crate::correction::DeliveredSpot;

/// How a beam's delivery ended: Treatment Termination Status (3008,002A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationStatus {
    /// `NORMAL`: every spot of the beam was delivered.
    Normal,
    /// `OPERATOR`: the operator ended it (an operator action, the session ended by hand).
    Operator,
    /// `MACHINE`: the delivery system ended it: an ionguide hold or a controller interlock.
    Machine,
    /// `UNKNOWN`: the log does not say (cut short).
    Unknown,
}

impl TerminationStatus {
    /// The DICOM defined term.
    pub fn code(self) -> &'static str {
        match self {
            TerminationStatus::Normal => "NORMAL",
            TerminationStatus::Operator => "OPERATOR",
            TerminationStatus::Machine => "MACHINE",
            TerminationStatus::Unknown => "UNKNOWN",
        }
    }
    /// From the DICOM defined term.
    pub fn from_code(code: &str) -> Option<Self> {
        [
            TerminationStatus::Normal,
            TerminationStatus::Operator,
            TerminationStatus::Machine,
            TerminationStatus::Unknown,
        ]
        .into_iter()
        .find(|s| s.code() == code.trim())
    }
}

/// Why a beam's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The status.
    pub status: TerminationStatus,
    /// The machine-specific termination code (Code Value of Machine-Specific Treatment
    /// Termination Code Sequence (300A,0716); the retired Treatment Termination Code), at most 16 characters: `COMPLETED`,
    /// `OPERATOR`, `SHUTDOWN`, `INTERLOCK`, or `HOLD_<n>` for an ionguide hold of
    /// `HoldReason` code n.
    pub code: String,
    /// Treatment Termination Description (300A,0730), at most 64 characters: the reason in
    /// words (the hold reason's name, the operator action, the controller's report).
    pub description: String,
}

/// The spots (pieces) delivered in one run of one energy layer: one item of the Ion Control
/// Point Delivery Sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlPointDelivery {
    /// Layer index in the beam (0-based, the plan model's `EnergyLayer` order).
    pub layer: usize,
    /// The layer's planned Nominal Beam Energy, MeV/u.
    pub nominal_energy_mev_u: f64,
    /// The pieces in delivery order, verbatim from the controller.
    pub spots: Vec<DeliveredSpot>,
}

/// One beam of the session.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamDelivery {
    /// Beam index in the plan (0-based).
    pub beam_index: usize,
    /// Referenced Beam Number (the plan's Beam Number).
    pub beam_number: i32,
    /// Beam Name.
    pub beam_name: String,
    /// Radiation Type (PROTON, ION).
    pub radiation_type: String,
    /// The plan's meterset for the beam, Scan Spot Meterset Weight units (sum of its weights).
    pub specified_meterset: f64,
    /// How it ended.
    pub termination: Termination,
    /// What was delivered, in delivery order.
    pub control_points: Vec<ControlPointDelivery>,
}

impl BeamDelivery {
    /// Delivered meterset, Scan Spot Meterset Weight units (sum over every piece).
    pub fn delivered_meterset(&self) -> f64 {
        self.control_points
            .iter()
            .flat_map(|c| c.spots.iter())
            .map(|s| s.meterset)
            .sum()
    }

    /// Every piece in delivery order.
    pub fn pieces(&self) -> impl Iterator<Item = &DeliveredSpot> {
        self.control_points.iter().flat_map(|c| c.spots.iter())
    }
}

/// One session's delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct TreatmentRecord {
    /// SOP Instance UID of the plan delivered.
    pub plan_sop_instance_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// When the session's first spot was delivered (else its start), ns since the UNIX epoch.
    pub treatment_unix_ns: u64,
    /// The beams delivered (at least one piece each), in plan order.
    pub beams: Vec<BeamDelivery>,
}

impl TreatmentRecord {
    /// Every piece of the session in delivery order.
    pub fn pieces(&self) -> impl Iterator<Item = &DeliveredSpot> {
        self.beams.iter().flat_map(|b| b.pieces())
    }
}
