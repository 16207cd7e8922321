//! RT Ion Plan (SOP class 1.2.840.10008.5.1.4.1.1.481.8) ↔ [`IonPlan`].
//!
//! Reading accepts what real planning systems write where the meaning is unambiguous and
//! says so with a typed [`PlanWarning`] (also logged with `tracing::warn!`); it refuses
//! where it is not (unknown radiation, spot maps that disagree with their weights, NaN).
//!
//! Energy layers: the standard writes a pair of control points per layer (start with the
//! spot weights, end with the same map and zero weights); OpenTPS writes one control point
//! per layer. Both read the same: every control point with non-zero weights starts a layer,
//! and an all-zero control point that repeats the previous layer's energy and map is its
//! end point.
//!
//! Writing produces a standard-conformant file (explicit VR little endian, control point
//! pairs with cumulative meterset weights). Decimal strings are written as the shortest
//! decimal that parses back to the same `f64` (plain or exponent form, whichever fits the
//! 16-character limit), so every value that a DS can carry exactly round-trips bit for bit;
//! only values needing 17 significant digits are rounded (to the most digits that fit).
//! Spot positions and weights are FL (float32) by the standard, so they round-trip exactly
//! when they are float32 values — which every value read from a DICOM file is.
//!
//! This file holds the errors, warnings and the checks a session runs on a loaded plan;
//! reading is in `rtplan/read.rs`, writing in `rtplan/write.rs`.
//!
//! ```no_run
//! use ionguide_dicom::rtplan;
//! let (plan, warnings) = rtplan::read_plan("tests/data/plans/STS_001/RPSTS001G0G90.dcm").unwrap();
//! println!("{} spots, {} warnings", plan.spot_count(), warnings.len());
//! let bytes = rtplan::write_plan_bytes(&plan).unwrap();
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::attrs::{self, AttrError, OpenError, Read};
use crate::geometry::Grid;
use crate::plan::{IonPlan, Spot};

mod read;
mod write;

use read::parse_plan;
pub use write::{format_ds, write_plan, write_plan_bytes, write_plan_bytes_for_machine};

/// Explicit VR Little Endian is the transfer syntax plans are written in.
pub use crate::uids::{EXPLICIT_VR_LE, RT_ION_PLAN_SOP_CLASS};
/// Default largest |x| or |y| of a spot in the isocenter plane, mm.
pub const DEFAULT_MAX_FIELD_HALF_SIZE_MM: f64 = 200.0;

/// Why a plan cannot be read, written or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file could not be read.
    #[error("{}: cannot read RT Ion Plan", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a DICOM Part 10 file.
    #[error("{}: not a DICOM file (no DICM magic code at byte 128)", path.display())]
    NotDicom {
        /// File.
        path: PathBuf,
    },
    /// A length field runs past the end of the file (corrupt or truncated).
    #[error("{}: corrupt DICOM file", path.display())]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Which element and where.
        #[source]
        source: OpenError,
    },
    /// DICOM parsing failed.
    #[error("{}: DICOM parsing failed (truncated or malformed)", path.display())]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// Not an RT Ion Plan.
    #[error("{}: SOP Class UID is {found:?}, not RT Ion Plan ({RT_ION_PLAN_SOP_CLASS})", path.display())]
    WrongSopClass {
        /// File.
        path: PathBuf,
        /// SOP Class UID found.
        found: String,
    },
    /// An attribute is missing or unreadable.
    #[error("{}: {context}", path.display())]
    Attribute {
        /// File.
        path: PathBuf,
        /// Where in the file.
        context: String,
        /// What is wrong.
        #[source]
        source: AttrError,
    },
    /// No Ion Beam Sequence.
    #[error("{}: Ion Beam Sequence (300A,03A2) is missing or empty", path.display())]
    MissingIonBeamSequence {
        /// File.
        path: PathBuf,
    },
    /// Only setup or portal beams.
    #[error("{}: the plan has no TREATMENT beam", path.display())]
    NoTreatmentBeams {
        /// File.
        path: PathBuf,
    },
    /// Radiation type ionguide cannot deliver or an ION without a usable Z/A.
    #[error("{}: beam {beam:?}: unsupported radiation {radiation_type:?} ({detail})", path.display())]
    UnsupportedRadiation {
        /// File.
        path: PathBuf,
        /// Beam name.
        beam: String,
        /// Radiation Type as written.
        radiation_type: String,
        /// Why.
        detail: String,
    },
    /// A control point's spot map, weights and count disagree.
    #[error("{}: beam {beam:?} control point {control_point}: {positions} spot coordinates, {weights} weights, Number of Scan Spot Positions {stated:?}", path.display())]
    SpotCountMismatch {
        /// File.
        path: PathBuf,
        /// Beam name.
        beam: String,
        /// Control point index.
        control_point: usize,
        /// Numbers in Scan Spot Position Map.
        positions: usize,
        /// Numbers in Scan Spot Meterset Weights.
        weights: usize,
        /// Number of Scan Spot Positions, if stated.
        stated: Option<i32>,
    },
    /// A control point has spots but no energy to deliver them at.
    #[error("{}: beam {beam:?} control point {control_point}: no Nominal Beam Energy", path.display())]
    MissingEnergy {
        /// File.
        path: PathBuf,
        /// Beam name.
        beam: String,
        /// Control point index.
        control_point: usize,
    },
    /// A spot is unusable (non-finite, outside the field, negative weight).
    #[error("beam {beam:?} layer {layer} spot {spot}: {fault} (x {x_mm} mm, y {y_mm} mm, weight {weight})")]
    BadSpot {
        /// Beam name.
        beam: String,
        /// Layer index in the beam.
        layer: usize,
        /// Spot index in the layer.
        spot: usize,
        /// x, mm.
        x_mm: f64,
        /// y, mm.
        y_mm: f64,
        /// Weight.
        weight: f64,
        /// What is wrong.
        fault: SpotFault,
    },
    /// A non-finite beam-level value (energy, angle, isocenter).
    #[error("{}: beam {beam:?}: {what} is not finite", path.display())]
    NonFinite {
        /// File.
        path: PathBuf,
        /// Beam name.
        beam: String,
        /// The value.
        what: &'static str,
    },
    /// The plan is in another patient frame than the CT.
    #[error("plan Frame of Reference UID {plan:?} differs from the CT's {ct:?}: the plan was made on another scan or registration")]
    FrameOfReferenceMismatch {
        /// Plan's FoR UID.
        plan: String,
        /// CT's FoR UID.
        ct: String,
    },
    /// A beam's isocenter lies outside the CT.
    #[error("beam {beam:?}: isocenter {isocenter_mm:?} mm lies outside the CT (bounds {ct_min_mm:?} to {ct_max_mm:?} mm): plan spots fall outside the CT")]
    IsocenterOutsideCt {
        /// Beam name.
        beam: String,
        /// Isocenter, LPS mm.
        isocenter_mm: [f64; 3],
        /// CT bounding box lower corner (outer voxel faces), mm.
        ct_min_mm: [f64; 3],
        /// CT bounding box upper corner, mm.
        ct_max_mm: [f64; 3],
    },
    /// A value cannot be written (empty UID, ion out of range).
    #[error("cannot write plan: {0}")]
    Unwritable(String),
    /// Building the file meta group failed.
    #[error("cannot write plan: file meta group")]
    WriteMeta(#[source] Box<dicom_object::meta::Error>),
    /// Encoding or writing failed.
    #[error("{}: cannot write plan", path.display())]
    Write {
        /// Destination.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dicom_object::WriteError>,
    },
}

pub use crate::plan::SpotFault;

/// A quirk accepted while reading, with the beam it concerns where it applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub enum PlanWarning {
    /// Modality is not RTPLAN (OpenTPS writes "RT Ion Plan IOD"); the SOP class decides.
    NonStandardModality {
        /// Modality as written.
        found: String,
    },
    /// Beam Number 0 (numbers start at 1 in the standard).
    ZeroBeamNumber {
        /// Beam name.
        beam: String,
    },
    /// Patient Position is empty or absent; HFS is assumed downstream.
    EmptyPatientPosition {
        /// Beam name.
        beam: String,
    },
    /// Virtual Source-Axis Distances absent, zero or negative; the room's apply.
    NoUsableVirtualSad {
        /// Beam name.
        beam: String,
        /// Values as written.
        found: Option<Vec<f64>>,
    },
    /// Cumulative Meterset Weight empty on control points.
    EmptyCumulativeMetersetWeight {
        /// Beam name.
        beam: String,
    },
    /// One control point per layer instead of a start/end pair.
    SingleControlPointLayers {
        /// Beam name.
        beam: String,
    },
    /// Range Shifter Settings reference no declared range shifter.
    RangeShifterSettingsWithoutRangeShifter {
        /// Beam name.
        beam: String,
    },
    /// Decimal strings longer than the standard's 16 characters.
    OverlongDecimalString {
        /// Beam name.
        beam: String,
    },
    /// A non-TREATMENT beam was left out.
    NonTreatmentBeamSkipped {
        /// Beam name.
        beam: String,
        /// Treatment Delivery Type.
        delivery_type: String,
    },
    /// A control point with all-zero weights that is not the end of a layer.
    ZeroWeightControlPointSkipped {
        /// Beam name.
        beam: String,
        /// Control point index.
        control_point: usize,
    },
    /// Patient Support Angle absent on the first control point; 0° assumed.
    MissingCouchAngle {
        /// Beam name.
        beam: String,
    },
    /// Primary Dosimeter Unit is neither NP nor MU: what the spot weights count is unknown.
    UnknownDosimeterUnit {
        /// Beam name.
        beam: String,
        /// The value as written.
        found: String,
    },
}

impl std::fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanWarning::NonStandardModality { found } => {
                write!(f, "Modality is {found:?}, not RTPLAN; the SOP class identifies the plan")
            }
            PlanWarning::ZeroBeamNumber { beam } => {
                write!(f, "beam {beam:?}: Beam Number 0 (the standard starts at 1)")
            }
            PlanWarning::EmptyPatientPosition { beam } => {
                write!(f, "beam {beam:?}: Patient Position empty or absent; HFS assumed")
            }
            PlanWarning::NoUsableVirtualSad { beam, found } => write!(
                f,
                "beam {beam:?}: no usable Virtual Source-Axis Distances ({found:?}); the treatment room's configured distances apply"
            ),
            PlanWarning::EmptyCumulativeMetersetWeight { beam } => {
                write!(f, "beam {beam:?}: empty Cumulative Meterset Weight on control points")
            }
            PlanWarning::SingleControlPointLayers { beam } => {
                write!(f, "beam {beam:?}: one control point per energy layer instead of a start/end pair")
            }
            PlanWarning::RangeShifterSettingsWithoutRangeShifter { beam } => write!(
                f,
                "beam {beam:?}: Range Shifter Settings present but no range shifter declared; ignored"
            ),
            PlanWarning::OverlongDecimalString { beam } => {
                write!(f, "beam {beam:?}: decimal strings longer than 16 characters")
            }
            PlanWarning::NonTreatmentBeamSkipped { beam, delivery_type } => {
                write!(f, "beam {beam:?}: Treatment Delivery Type {delivery_type:?}, left out")
            }
            PlanWarning::ZeroWeightControlPointSkipped { beam, control_point } => write!(
                f,
                "beam {beam:?}: control point {control_point} has all-zero weights and ends no layer; skipped"
            ),
            PlanWarning::MissingCouchAngle { beam } => {
                write!(f, "beam {beam:?}: Patient Support Angle absent; 0° assumed")
            }
            PlanWarning::UnknownDosimeterUnit { beam, found } => write!(
                f,
                "beam {beam:?}: Primary Dosimeter Unit {found:?} is neither NP (particles) nor MU; the unit of the spot weights is unknown"
            ),
        }
    }
}

/// Reads an RT Ion Plan file; warnings are returned and logged.
pub fn read_plan(path: impl AsRef<Path>) -> Result<(IonPlan, Vec<PlanWarning>), PlanError> {
    let path = path.as_ref();
    let obj = attrs::open(path, Read::Whole).map_err(|e| open_error(path, e))?;
    parse_plan(path, &obj)
}

/// Reads an RT Ion Plan from Part 10 bytes; `path` only names the source in errors.
pub fn read_plan_bytes(
    bytes: &[u8],
    path: impl AsRef<Path>,
) -> Result<(IonPlan, Vec<PlanWarning>), PlanError> {
    let path = path.as_ref();
    let obj = attrs::parse(bytes, Read::Whole).map_err(|e| open_error(path, e))?;
    parse_plan(path, &obj)
}

fn open_error(path: &Path, e: OpenError) -> PlanError {
    let path = path.to_path_buf();
    match e {
        OpenError::Io(source) => PlanError::Io { path, source },
        OpenError::NotDicom => PlanError::NotDicom { path },
        OpenError::Parse(source) | OpenError::Truncated(source) => PlanError::Parse { path, source },
        e @ OpenError::LengthBeyondEnd { .. } => PlanError::Corrupt { path, source: e },
    }
}

/// Refuses a plan whose Frame of Reference is not the CT's.
pub fn check_frame_of_reference(plan: &IonPlan, ct_for_uid: &str) -> Result<(), PlanError> {
    if plan.frame_of_reference_uid.trim() == ct_for_uid.trim() {
        Ok(())
    } else {
        Err(PlanError::FrameOfReferenceMismatch {
            plan: plan.frame_of_reference_uid.clone(),
            ct: ct_for_uid.to_string(),
        })
    }
}

/// Refuses a plan with a beam whose isocenter lies outside the CT's outer voxel faces.
pub fn check_isocenters_inside(plan: &IonPlan, ct: &Grid) -> Result<(), PlanError> {
    let dims = ct.dims();
    for b in &plan.beams {
        let ijk = ct.patient_to_index(&b.isocenter_mm);
        let inside = (0..3).all(|a| ijk[a] >= -0.5 && ijk[a] <= dims[a] as f64 - 0.5);
        if !inside {
            let (lo, hi) = ct.bounds_mm();
            return Err(PlanError::IsocenterOutsideCt {
                beam: b.name.clone(),
                isocenter_mm: [b.isocenter_mm.x, b.isocenter_mm.y, b.isocenter_mm.z],
                ct_min_mm: [lo.x, lo.y, lo.z],
                ct_max_mm: [hi.x, hi.y, hi.z],
            });
        }
    }
    Ok(())
}

/// Refuses non-finite spots, negative weights and |x| or |y| beyond `max_half_field_mm`.
pub fn check_spot_maps(plan: &IonPlan, max_half_field_mm: f64) -> Result<(), PlanError> {
    for b in &plan.beams {
        for (li, l) in b.layers.iter().enumerate() {
            check_layer_spots(&b.name, li, &l.spots, max_half_field_mm)?;
        }
    }
    Ok(())
}

/// The first faulty spot of layer `layer` of beam `beam` as [`PlanError::BadSpot`]. The
/// reader passes an infinite field (its spots are only checked for values that cannot be
/// delivered at all); [`check_spot_maps`] the session's field size.
fn check_layer_spots(
    beam: &str,
    layer: usize,
    spots: &[Spot],
    max_half_field_mm: f64,
) -> Result<(), PlanError> {
    for (si, s) in spots.iter().enumerate() {
        if let Some(fault) = s.fault(max_half_field_mm) {
            return Err(PlanError::BadSpot {
                beam: beam.to_string(),
                layer,
                spot: si,
                x_mm: s.x_mm,
                y_mm: s.y_mm,
                weight: s.weight,
                fault,
            });
        }
    }
    Ok(())
}
