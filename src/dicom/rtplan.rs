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
//! ```no_run
//! use ionguide::dicom::rtplan;
//! let (plan, warnings) = rtplan::read_plan("tests/data/plans/STS_001/RPSTS001G0G90.dcm").unwrap();
//! println!("{} spots, {} warnings", plan.spot_count(), warnings.len());
//! let bytes = rtplan::write_plan_bytes(&plan).unwrap();
//! ```

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use serde::Serialize;

use super::attrs::{self, attr, AttrError, OpenError, Read};
use crate::geometry::Grid;
use crate::plan::{EnergyLayer, IonBeam, IonPlan, RangeShifter, Spot};
use crate::units::{Ion, MmWe, PointMm};

/// SOP Class UID of RT Ion Plan Storage.
pub const RT_ION_PLAN_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.8";
/// Explicit VR Little Endian, the transfer syntax plans are written in.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
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

/// Whether any value of a decimal string exceeds 16 characters.
fn overlong_ds(obj: &InMemDicomObject, tag: Tag) -> bool {
    obj.get(tag)
        .and_then(|e| {
            e.value()
                .to_raw_str()
                .ok()
                .map(|s| s.split('\\').any(|v| v.trim().len() > 16))
        })
        .unwrap_or(false)
}

fn parse_plan(
    path: &Path,
    obj: &dicom_object::DefaultDicomObject,
) -> Result<(IonPlan, Vec<PlanWarning>), PlanError> {
    let at = |context: String| {
        move |source| PlanError::Attribute {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let mut warnings = Vec::new();
    let sop = attrs::sop_class_uid(obj).map_err(at("dataset".into()))?;
    if sop != RT_ION_PLAN_SOP_CLASS {
        return Err(PlanError::WrongSopClass {
            path: path.to_path_buf(),
            found: sop,
        });
    }
    let modality = attrs::opt_str(obj, attr!(MODALITY, "Modality"))
        .map_err(at("dataset".into()))?
        .unwrap_or_default();
    if modality != "RTPLAN" {
        warnings.push(PlanWarning::NonStandardModality { found: modality });
    }
    let sop_instance_uid = attrs::opt_str(obj, attr!(SOP_INSTANCE_UID, "SOPInstanceUID"))
        .map_err(at("dataset".into()))?
        .unwrap_or_else(|| {
            obj.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string()
        });
    let frame_of_reference_uid = attrs::req_str(obj, attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"))
        .map_err(at("dataset".into()))?;
    let patient_id = attrs::opt_str(obj, attr!(PATIENT_ID, "PatientID"))
        .map_err(at("dataset".into()))?
        .unwrap_or_default();
    let label = attrs::opt_str(obj, attr!(RT_PLAN_LABEL, "RTPlanLabel"))
        .map_err(at("dataset".into()))?
        .unwrap_or_default();

    // Patient Position per setup number.
    let mut setups: Vec<(Option<i32>, Option<String>)> = Vec::new();
    if let Some(items) = attrs::opt_items(obj, attr!(PATIENT_SETUP_SEQUENCE, "PatientSetupSequence"))
        .map_err(at("dataset".into()))?
    {
        for (n, it) in items.iter().enumerate() {
            let ctx = || format!("Patient Setup Sequence item {n}");
            let num = attrs::opt_int::<i32>(it, attr!(PATIENT_SETUP_NUMBER, "PatientSetupNumber"))
                .map_err(at(ctx()))?;
            let pos = attrs::opt_str(it, attr!(PATIENT_POSITION, "PatientPosition")).map_err(at(ctx()))?;
            setups.push((num, pos));
        }
    }

    let beams_seq = attrs::opt_items(obj, attr!(ION_BEAM_SEQUENCE, "IonBeamSequence"))
        .map_err(at("dataset".into()))?
        .ok_or_else(|| PlanError::MissingIonBeamSequence {
            path: path.to_path_buf(),
        })?;
    let mut beams = Vec::with_capacity(beams_seq.len());
    for (bi, b) in beams_seq.iter().enumerate() {
        if let Some(beam) = parse_beam(path, bi, b, &setups, &mut warnings)? {
            beams.push(beam);
        }
    }
    if beams.is_empty() {
        return Err(PlanError::NoTreatmentBeams {
            path: path.to_path_buf(),
        });
    }
    for w in &warnings {
        tracing::warn!(path = %path.display(), "RT Ion Plan quirk accepted: {w}");
    }
    Ok((
        IonPlan {
            sop_instance_uid,
            frame_of_reference_uid,
            patient_id,
            label,
            beams,
        },
        warnings,
    ))
}

fn parse_beam(
    path: &Path,
    bi: usize,
    b: &InMemDicomObject,
    setups: &[(Option<i32>, Option<String>)],
    warnings: &mut Vec<PlanWarning>,
) -> Result<Option<IonBeam>, PlanError> {
    let at = |context: String| {
        move |source| PlanError::Attribute {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let bctx = || format!("Ion Beam Sequence item {bi}");
    let number = attrs::opt_int::<i32>(b, attr!(BEAM_NUMBER, "BeamNumber"))
        .map_err(at(bctx()))?
        .ok_or(AttrError::Missing {
            name: "BeamNumber",
            tag: tags::BEAM_NUMBER,
        })
        .map_err(at(bctx()))?;
    let name = attrs::opt_str(b, attr!(BEAM_NAME, "BeamName"))
        .map_err(at(bctx()))?
        .unwrap_or_else(|| format!("Beam {number}"));
    let bctx = || format!("beam {name:?} (Ion Beam Sequence item {bi})");
    let delivery = attrs::opt_str(b, attr!(TREATMENT_DELIVERY_TYPE, "TreatmentDeliveryType"))
        .map_err(at(bctx()))?
        .unwrap_or_else(|| "TREATMENT".into());
    if delivery != "TREATMENT" {
        warnings.push(PlanWarning::NonTreatmentBeamSkipped {
            beam: name,
            delivery_type: delivery,
        });
        return Ok(None);
    }
    if number == 0 {
        warnings.push(PlanWarning::ZeroBeamNumber { beam: name.clone() });
    }
    let radiation_type = attrs::opt_str(b, attr!(RADIATION_TYPE, "RadiationType"))
        .map_err(at(bctx()))?
        .unwrap_or_default();
    let unsupported = |detail: &str| PlanError::UnsupportedRadiation {
        path: path.to_path_buf(),
        beam: name.clone(),
        radiation_type: radiation_type.clone(),
        detail: detail.to_string(),
    };
    let ion = match radiation_type.as_str() {
        "PROTON" => Ion::PROTON,
        "ION" => {
            let z = attrs::opt_int::<i32>(b, attr!(RADIATION_ATOMIC_NUMBER, "RadiationAtomicNumber"))
                .map_err(at(bctx()))?;
            let a = attrs::opt_int::<i32>(b, attr!(RADIATION_MASS_NUMBER, "RadiationMassNumber"))
                .map_err(at(bctx()))?;
            match (z.and_then(|v| u8::try_from(v).ok()), a.and_then(|v| u8::try_from(v).ok())) {
                (Some(z), Some(a)) if z >= 1 && a >= z => Ion { z, a },
                _ => {
                    return Err(unsupported(
                        "ION needs Radiation Atomic Number (300A,0304) and Mass Number (300A,0302) with 1 <= Z <= A <= 255",
                    ))
                }
            }
        }
        _ => return Err(unsupported("only PROTON and ION beams can be delivered")),
    };

    let sad = attrs::opt_f64s_as_stored(
        b,
        attr!(VIRTUAL_SOURCE_AXIS_DISTANCES, "VirtualSourceAxisDistances"),
    )
    .map_err(at(bctx()))?;
    let virtual_sad_mm = match sad.as_deref() {
        Some(&[x, y]) if x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0 => Some([x, y]),
        _ => {
            warnings.push(PlanWarning::NoUsableVirtualSad {
                beam: name.clone(),
                found: sad.clone(),
            });
            None
        }
    };

    let setup_ref = attrs::opt_int::<i32>(
        b,
        attr!(REFERENCED_PATIENT_SETUP_NUMBER, "ReferencedPatientSetupNumber"),
    )
    .map_err(at(bctx()))?;
    let setup = setups
        .iter()
        .find(|(n, _)| n.is_some() && *n == setup_ref)
        .or(setups.first());
    let patient_position = setup.and_then(|(_, p)| p.clone());
    if patient_position.is_none() {
        warnings.push(PlanWarning::EmptyPatientPosition { beam: name.clone() });
    }

    let mut range_shifters = Vec::new();
    if let Some(items) =
        attrs::opt_items(b, attr!(RANGE_SHIFTER_SEQUENCE, "RangeShifterSequence")).map_err(at(bctx()))?
    {
        for (n, it) in items.iter().enumerate() {
            let ctx = || format!("{} Range Shifter Sequence item {n}", bctx());
            let number = attrs::opt_int::<i32>(it, attr!(RANGE_SHIFTER_NUMBER, "RangeShifterNumber"))
                .map_err(at(ctx()))?
                .unwrap_or(n as i32);
            let id = attrs::opt_str(it, attr!(RANGE_SHIFTER_ID, "RangeShifterID"))
                .map_err(at(ctx()))?
                .unwrap_or_default();
            range_shifters.push(RangeShifter {
                number,
                id,
                water_equivalent_thickness_mm: None,
            });
        }
    }

    let cps = attrs::req_items(b, attr!(ION_CONTROL_POINT_SEQUENCE, "IonControlPointSequence"))
        .map_err(at(bctx()))?;
    let mut energy: Option<f64> = None;
    let mut gantry: Option<f64> = None;
    let mut couch: Option<f64> = None;
    let mut iso: Option<[f64; 3]> = None;
    let mut layers: Vec<EnergyLayer> = Vec::new();
    let (mut empty_cum, mut end_points, mut overlong, mut orphan_rs) = (false, 0usize, false, false);
    for (ci, cp) in cps.iter().enumerate() {
        let ctx = || format!("{} control point {ci}", bctx());
        if let Some(e) =
            attrs::opt_f64(cp, attr!(NOMINAL_BEAM_ENERGY, "NominalBeamEnergy")).map_err(at(ctx()))?
        {
            energy = Some(e);
        }
        if ci == 0 {
            gantry = attrs::opt_f64(cp, attr!(GANTRY_ANGLE, "GantryAngle")).map_err(at(ctx()))?;
            couch =
                attrs::opt_f64(cp, attr!(PATIENT_SUPPORT_ANGLE, "PatientSupportAngle")).map_err(at(ctx()))?;
        }
        if iso.is_none() {
            iso = attrs::opt_f64_n::<3>(cp, attr!(ISOCENTER_POSITION, "IsocenterPosition"))
                .map_err(at(ctx()))?;
        }
        if attrs::opt_f64s_as_stored(cp, attr!(CUMULATIVE_METERSET_WEIGHT, "CumulativeMetersetWeight"))
            .map_err(at(ctx()))?
            .is_none()
        {
            empty_cum = true;
        }
        for t in [
            tags::NOMINAL_BEAM_ENERGY,
            tags::GANTRY_ANGLE,
            tags::PATIENT_SUPPORT_ANGLE,
            tags::ISOCENTER_POSITION,
            tags::CUMULATIVE_METERSET_WEIGHT,
        ] {
            overlong |= overlong_ds(cp, t);
        }
        if let Some(items) = attrs::opt_items(
            cp,
            attr!(RANGE_SHIFTER_SETTINGS_SEQUENCE, "RangeShifterSettingsSequence"),
        )
        .map_err(at(ctx()))?
        {
            for it in items {
                let r = attrs::opt_int::<i32>(
                    it,
                    attr!(REFERENCED_RANGE_SHIFTER_NUMBER, "ReferencedRangeShifterNumber"),
                )
                .map_err(at(ctx()))?;
                let wet = attrs::opt_f64(
                    it,
                    attr!(
                        RANGE_SHIFTER_WATER_EQUIVALENT_THICKNESS,
                        "RangeShifterWaterEquivalentThickness"
                    ),
                )
                .map_err(at(ctx()))?;
                match range_shifters.iter_mut().find(|s| Some(s.number) == r) {
                    Some(s) => {
                        if s.water_equivalent_thickness_mm.is_none() {
                            s.water_equivalent_thickness_mm = wet.map(MmWe);
                        }
                    }
                    None => orphan_rs = true,
                }
            }
        }

        let positions = attrs::opt_f64s_as_stored(cp, attr!(SCAN_SPOT_POSITION_MAP, "ScanSpotPositionMap"))
            .map_err(at(ctx()))?;
        let weights =
            attrs::opt_f64s_as_stored(cp, attr!(SCAN_SPOT_METERSET_WEIGHTS, "ScanSpotMetersetWeights"))
                .map_err(at(ctx()))?;
        let stated = attrs::opt_int::<i32>(
            cp,
            attr!(NUMBER_OF_SCAN_SPOT_POSITIONS, "NumberOfScanSpotPositions"),
        )
        .map_err(at(ctx()))?;
        let (positions, weights) = match (positions, weights) {
            (None, None) if stated.unwrap_or(0) == 0 => continue,
            (p, w) => (p.unwrap_or_default(), w.unwrap_or_default()),
        };
        if positions.len() != 2 * weights.len()
            || stated.is_some_and(|n| usize::try_from(n).ok() != Some(weights.len()))
        {
            return Err(PlanError::SpotCountMismatch {
                path: path.to_path_buf(),
                beam: name.clone(),
                control_point: ci,
                positions: positions.len(),
                weights: weights.len(),
                stated,
            });
        }
        let Some(e) = energy else {
            return Err(PlanError::MissingEnergy {
                path: path.to_path_buf(),
                beam: name.clone(),
                control_point: ci,
            });
        };
        let spots: Vec<Spot> = weights
            .iter()
            .enumerate()
            .map(|(s, &w)| Spot {
                x_mm: positions[2 * s],
                y_mm: positions[2 * s + 1],
                weight: w,
            })
            .collect();
        if weights.iter().all(|w| *w == 0.0) {
            let same_as_last = layers.last().is_some_and(|l| {
                l.energy_mev_u == e
                    && l.spots.len() == spots.len()
                    && l.spots
                        .iter()
                        .zip(&spots)
                        .all(|(a, b)| a.x_mm == b.x_mm && a.y_mm == b.y_mm)
            });
            if same_as_last {
                end_points += 1;
            } else {
                warnings.push(PlanWarning::ZeroWeightControlPointSkipped {
                    beam: name.clone(),
                    control_point: ci,
                });
            }
            continue;
        }
        let layer = layers.len();
        for (s, sp) in spots.iter().enumerate() {
            // The field size is checked later, against the configured limit (check_spot_maps).
            check_spot(&name, layer, s, sp, f64::INFINITY)?;
        }
        layers.push(EnergyLayer {
            energy_mev_u: e,
            spots,
        });
    }
    if empty_cum {
        warnings.push(PlanWarning::EmptyCumulativeMetersetWeight { beam: name.clone() });
    }
    if !layers.is_empty() && end_points == 0 {
        warnings.push(PlanWarning::SingleControlPointLayers { beam: name.clone() });
    }
    if overlong {
        warnings.push(PlanWarning::OverlongDecimalString { beam: name.clone() });
    }
    if orphan_rs {
        warnings.push(PlanWarning::RangeShifterSettingsWithoutRangeShifter { beam: name.clone() });
    }
    let gantry_angle_deg = gantry
        .ok_or(AttrError::Missing {
            name: "GantryAngle",
            tag: tags::GANTRY_ANGLE,
        })
        .map_err(at(format!("{} control point 0", bctx())))?;
    let couch_angle_deg = couch.unwrap_or_else(|| {
        warnings.push(PlanWarning::MissingCouchAngle { beam: name.clone() });
        0.0
    });
    let iso = iso
        .ok_or(AttrError::Missing {
            name: "IsocenterPosition",
            tag: tags::ISOCENTER_POSITION,
        })
        .map_err(at(format!("{} control points", bctx())))?;
    let non_finite = |what| PlanError::NonFinite {
        path: path.to_path_buf(),
        beam: name.clone(),
        what,
    };
    if !gantry_angle_deg.is_finite() || !couch_angle_deg.is_finite() {
        return Err(non_finite("gantry or couch angle"));
    }
    if !iso.iter().all(|v| v.is_finite()) {
        return Err(non_finite("isocenter"));
    }
    if !layers
        .iter()
        .all(|l| l.energy_mev_u.is_finite() && l.energy_mev_u > 0.0)
    {
        return Err(non_finite("a nominal beam energy (or it is not positive)"));
    }
    Ok(Some(IonBeam {
        number,
        name,
        radiation_type,
        ion,
        gantry_angle_deg,
        couch_angle_deg,
        isocenter_mm: PointMm::new(iso[0], iso[1], iso[2]),
        patient_position,
        virtual_sad_mm,
        range_shifters,
        layers,
    }))
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
            for (si, s) in l.spots.iter().enumerate() {
                check_spot(&b.name, li, si, s, max_half_field_mm)?;
            }
        }
    }
    Ok(())
}

/// One spot through [`Spot::fault`], as the plan error naming beam, layer and spot.
fn check_spot(
    beam: &str,
    layer: usize,
    spot: usize,
    s: &Spot,
    max_half_field_mm: f64,
) -> Result<(), PlanError> {
    match s.fault(max_half_field_mm) {
        None => Ok(()),
        Some(fault) => Err(PlanError::BadSpot {
            beam: beam.to_owned(),
            layer,
            spot,
            x_mm: s.x_mm,
            y_mm: s.y_mm,
            weight: s.weight,
            fault,
        }),
    }
}

/// Formats a value as a DICOM decimal string of at most 16 characters: the shortest
/// decimal that parses back to the same `f64` when one fits, else the closest that fits.
pub fn format_ds(v: f64) -> String {
    if v == 0.0 {
        return "0".into(); // also folds -0.0, which no DS reader distinguishes
    }
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    let exp = format!("{v:E}");
    if exp.len() <= 16 {
        return exp;
    }
    // Needs rounding: most significant digits that fit, in either form.
    for digits in (1..=16usize).rev() {
        let e = format!("{:.*E}", digits - 1, v);
        let p = format!("{}", e.parse::<f64>().unwrap_or(v));
        if p.len() <= 16 {
            return p;
        }
        if e.len() <= 16 {
            return e;
        }
    }
    format!("{v:.0}")
}

fn ds(tag: Tag, values: &[f64]) -> DataElement<InMemDicomObject> {
    let strs: Vec<String> = values.iter().map(|v| format_ds(*v)).collect();
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(strs.into()))
}

fn fl(tag: Tag, values: &[f64]) -> DataElement<InMemDicomObject> {
    let v: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    DataElement::new(tag, VR::FL, PrimitiveValue::F32(v.into()))
}

fn text(tag: Tag, vr: VR, s: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(s.to_string()))
}

fn int_s(tag: Tag, v: i64) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::IS, PrimitiveValue::from(v.to_string()))
}

fn sq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn plan_object(plan: &IonPlan) -> Result<InMemDicomObject, PlanError> {
    if plan.sop_instance_uid.trim().is_empty() {
        return Err(PlanError::Unwritable("empty SOP Instance UID".into()));
    }
    // It also goes into the file meta group, which readers (dicom-rs among them) refuse
    // unless it is a UID: a plan read from a lax file must not be written unreadable.
    let uid = plan.sop_instance_uid.trim();
    if uid.len() > 64 || !uid.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(PlanError::Unwritable(format!(
            "SOP Instance UID {uid:?} is not a UID (digits and dots, at most 64 characters)"
        )));
    }
    let mut o = InMemDicomObject::new_empty();
    o.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    o.put(text(tags::SOP_CLASS_UID, VR::UI, RT_ION_PLAN_SOP_CLASS));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &plan.sop_instance_uid));
    o.put(text(tags::MODALITY, VR::CS, "RTPLAN"));
    o.put(text(tags::PATIENT_ID, VR::LO, &plan.patient_id));
    o.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &plan.frame_of_reference_uid,
    ));
    o.put(text(tags::RT_PLAN_LABEL, VR::SH, &plan.label));
    o.put(text(tags::RT_PLAN_GEOMETRY, VR::CS, "PATIENT"));

    let mut setups = Vec::new();
    let mut refs = Vec::new();
    let mut beams = Vec::new();
    for (bi, b) in plan.beams.iter().enumerate() {
        let setup_number = bi as i64 + 1;
        let mut s = InMemDicomObject::new_empty();
        s.put(int_s(tags::PATIENT_SETUP_NUMBER, setup_number));
        s.put(text(
            tags::PATIENT_POSITION,
            VR::CS,
            b.patient_position.as_deref().unwrap_or(""),
        ));
        setups.push(s);

        let total: f64 = b.layers.iter().flat_map(|l| &l.spots).map(|s| s.weight).sum();
        let mut r = InMemDicomObject::new_empty();
        r.put(int_s(tags::REFERENCED_BEAM_NUMBER, b.number.into()));
        r.put(ds(tags::BEAM_METERSET, &[total]));
        refs.push(r);

        beams.push(beam_object(b, setup_number, total)?);
    }
    o.put(sq(tags::PATIENT_SETUP_SEQUENCE, setups));
    let mut fg = InMemDicomObject::new_empty();
    fg.put(int_s(tags::FRACTION_GROUP_NUMBER, 1));
    fg.put(int_s(tags::NUMBER_OF_FRACTIONS_PLANNED, 1));
    fg.put(int_s(tags::NUMBER_OF_BEAMS, plan.beams.len() as i64));
    fg.put(sq(tags::REFERENCED_BEAM_SEQUENCE, refs));
    o.put(sq(tags::FRACTION_GROUP_SEQUENCE, vec![fg]));
    o.put(sq(tags::ION_BEAM_SEQUENCE, beams));
    Ok(o)
}

fn beam_object(b: &IonBeam, setup_number: i64, total: f64) -> Result<InMemDicomObject, PlanError> {
    let mut o = InMemDicomObject::new_empty();
    o.put(int_s(tags::BEAM_NUMBER, b.number.into()));
    o.put(text(tags::BEAM_NAME, VR::LO, &b.name));
    o.put(text(tags::BEAM_TYPE, VR::CS, "STATIC"));
    if b.ion == Ion::PROTON {
        o.put(text(tags::RADIATION_TYPE, VR::CS, "PROTON"));
    } else {
        o.put(text(tags::RADIATION_TYPE, VR::CS, "ION"));
        o.put(int_s(tags::RADIATION_MASS_NUMBER, b.ion.a.into()));
        o.put(int_s(tags::RADIATION_ATOMIC_NUMBER, b.ion.z.into()));
        o.put(DataElement::new(
            tags::RADIATION_CHARGE_STATE,
            VR::SS,
            PrimitiveValue::from(i16::from(b.ion.z)),
        ));
    }
    o.put(text(tags::TREATMENT_DELIVERY_TYPE, VR::CS, "TREATMENT"));
    o.put(text(tags::PRIMARY_DOSIMETER_UNIT, VR::CS, "MU"));
    o.put(text(tags::SCAN_MODE, VR::CS, "MODULATED"));
    if let Some(sad) = b.virtual_sad_mm {
        o.put(ds(tags::VIRTUAL_SOURCE_AXIS_DISTANCES, &sad));
    }
    o.put(int_s(tags::REFERENCED_PATIENT_SETUP_NUMBER, setup_number));
    for (t, v) in [
        (tags::NUMBER_OF_WEDGES, 0),
        (tags::NUMBER_OF_COMPENSATORS, 0),
        (tags::NUMBER_OF_BOLI, 0),
        (tags::NUMBER_OF_BLOCKS, 0),
        (tags::NUMBER_OF_LATERAL_SPREADING_DEVICES, 0),
        (tags::NUMBER_OF_RANGE_MODULATORS, 0),
    ] {
        o.put(int_s(t, v));
    }
    o.put(int_s(
        tags::NUMBER_OF_RANGE_SHIFTERS,
        b.range_shifters.len() as i64,
    ));
    if !b.range_shifters.is_empty() {
        let items = b
            .range_shifters
            .iter()
            .map(|r| {
                let mut s = InMemDicomObject::new_empty();
                s.put(int_s(tags::RANGE_SHIFTER_NUMBER, r.number.into()));
                s.put(text(tags::RANGE_SHIFTER_ID, VR::SH, &r.id));
                s.put(text(tags::RANGE_SHIFTER_TYPE, VR::CS, "BINARY"));
                s
            })
            .collect();
        o.put(sq(tags::RANGE_SHIFTER_SEQUENCE, items));
    }
    o.put(text(tags::PATIENT_SUPPORT_TYPE, VR::CS, "TABLE"));
    o.put(ds(tags::FINAL_CUMULATIVE_METERSET_WEIGHT, &[total]));
    o.put(int_s(tags::NUMBER_OF_CONTROL_POINTS, 2 * b.layers.len() as i64));

    let mut cps = Vec::with_capacity(2 * b.layers.len());
    let mut cumulative = 0.0;
    for (li, l) in b.layers.iter().enumerate() {
        let positions: Vec<f64> = l.spots.iter().flat_map(|s| [s.x_mm, s.y_mm]).collect();
        let weights: Vec<f64> = l.spots.iter().map(|s| s.weight).collect();
        for end in [false, true] {
            let mut cp = InMemDicomObject::new_empty();
            cp.put(int_s(
                tags::CONTROL_POINT_INDEX,
                (2 * li + usize::from(end)) as i64,
            ));
            cp.put(ds(tags::NOMINAL_BEAM_ENERGY, &[l.energy_mev_u]));
            if li == 0 && !end {
                cp.put(ds(tags::GANTRY_ANGLE, &[b.gantry_angle_deg]));
                cp.put(text(tags::GANTRY_ROTATION_DIRECTION, VR::CS, "NONE"));
                cp.put(ds(tags::BEAM_LIMITING_DEVICE_ANGLE, &[0.0]));
                cp.put(text(
                    tags::BEAM_LIMITING_DEVICE_ROTATION_DIRECTION,
                    VR::CS,
                    "NONE",
                ));
                cp.put(ds(tags::PATIENT_SUPPORT_ANGLE, &[b.couch_angle_deg]));
                cp.put(text(tags::PATIENT_SUPPORT_ROTATION_DIRECTION, VR::CS, "NONE"));
                cp.put(ds(
                    tags::ISOCENTER_POSITION,
                    &[b.isocenter_mm.x, b.isocenter_mm.y, b.isocenter_mm.z],
                ));
            }
            if !end
                && b.range_shifters
                    .iter()
                    .any(|r| r.water_equivalent_thickness_mm.is_some())
            {
                let items = b
                    .range_shifters
                    .iter()
                    .map(|r| {
                        let mut s = InMemDicomObject::new_empty();
                        s.put(int_s(tags::REFERENCED_RANGE_SHIFTER_NUMBER, r.number.into()));
                        s.put(text(tags::RANGE_SHIFTER_SETTING, VR::LO, "IN"));
                        if let Some(w) = r.water_equivalent_thickness_mm {
                            s.put(fl(tags::RANGE_SHIFTER_WATER_EQUIVALENT_THICKNESS, &[w.get()]));
                        }
                        s
                    })
                    .collect();
                cp.put(sq(tags::RANGE_SHIFTER_SETTINGS_SEQUENCE, items));
            }
            cp.put(ds(tags::CUMULATIVE_METERSET_WEIGHT, &[cumulative]));
            cp.put(text(tags::SCAN_SPOT_TUNE_ID, VR::SH, "ionguide"));
            cp.put(int_s(tags::NUMBER_OF_SCAN_SPOT_POSITIONS, l.spots.len() as i64));
            cp.put(fl(tags::SCAN_SPOT_POSITION_MAP, &positions));
            if end {
                cp.put(fl(tags::SCAN_SPOT_METERSET_WEIGHTS, &vec![0.0; weights.len()]));
            } else {
                cp.put(fl(tags::SCAN_SPOT_METERSET_WEIGHTS, &weights));
                cumulative += weights.iter().sum::<f64>();
            }
            cp.put(DataElement::new(
                tags::SCANNING_SPOT_SIZE,
                VR::FL,
                PrimitiveValue::F32(vec![5.0f32, 5.0].into()),
            ));
            cp.put(int_s(tags::NUMBER_OF_PAINTINGS, 1));
            cps.push(cp);
        }
    }
    o.put(sq(tags::ION_CONTROL_POINT_SEQUENCE, cps));
    Ok(o)
}

/// Writes a plan as a DICOM Part 10 byte stream (explicit VR little endian).
pub fn write_plan_bytes(plan: &IonPlan) -> Result<Vec<u8>, PlanError> {
    let obj = plan_object(plan)?;
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(RT_ION_PLAN_SOP_CLASS)
        .media_storage_sop_instance_uid(plan.sop_instance_uid.as_str())
        .transfer_syntax(EXPLICIT_VR_LE)
        .build()
        .map_err(|e| PlanError::WriteMeta(Box::new(e)))?;
    let file = obj.with_exact_meta(meta);
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|source| PlanError::Write {
        path: PathBuf::from("<memory>"),
        source: Box::new(source),
    })?;
    Ok(out)
}

/// Writes a plan to a file.
pub fn write_plan(plan: &IonPlan, path: impl AsRef<Path>) -> Result<(), PlanError> {
    let path = path.as_ref();
    let bytes = write_plan_bytes(plan)?;
    std::fs::write(path, bytes).map_err(|source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_formatting_round_trips_or_fits() {
        for v in [
            0.1,
            -791.17525828163,
            1e-7,
            123456789012345.0,
            1.5e300,
            -2.5e-300,
            69.70513257829193,
        ] {
            let s = format_ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            if format!("{v}").len() <= 16 || format!("{v:E}").len() <= 16 {
                assert_eq!(back, v, "{s}");
            } else {
                assert!(((back - v) / v).abs() < 1e-13, "{s}");
            }
        }
        assert_eq!(format_ds(-0.0), "0");
    }
}
