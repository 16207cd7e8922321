//! Reading an RT Ion Plan data set into an [`IonPlan`]: the plan's identity and setups, then
//! each beam in named steps (identity, radiation, geometry, range shifters, control points).

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{check_layer_spots, PlanError, PlanWarning, RT_ION_PLAN_SOP_CLASS};
use crate::attrs::{self, attr, AttrError};
use crate::plan::{DosimeterUnit, EnergyLayer, IonBeam, IonPlan, RangeShifter, Spot};
use crate::units::{Ion, MmWe, PointMm};

/// Patient Setup Number and Patient Position of a Patient Setup Sequence item.
type Setup = (Option<i32>, Option<String>);

/// Wraps an attribute error with the file and where in it the attribute was read.
fn at(path: &Path, context: String) -> impl FnOnce(AttrError) -> PlanError + '_ {
    move |source| PlanError::Attribute {
        path: path.to_path_buf(),
        context,
        source,
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

/// The plan in `obj`, with the quirks accepted on the way (also logged).
pub(super) fn parse_plan(
    path: &Path,
    obj: &dicom_object::DefaultDicomObject,
) -> Result<(IonPlan, Vec<PlanWarning>), PlanError> {
    let ds = || "dataset".to_string();
    let mut warnings = Vec::new();
    let sop = attrs::sop_class_uid(obj).map_err(at(path, ds()))?;
    if sop != RT_ION_PLAN_SOP_CLASS {
        return Err(PlanError::WrongSopClass {
            path: path.to_path_buf(),
            found: sop,
        });
    }
    let modality = attrs::opt_str(obj, attr!(MODALITY, "Modality"))
        .map_err(at(path, ds()))?
        .unwrap_or_default();
    if modality != "RTPLAN" {
        warnings.push(PlanWarning::NonStandardModality { found: modality });
    }
    let sop_instance_uid = attrs::opt_str(obj, attr!(SOP_INSTANCE_UID, "SOPInstanceUID"))
        .map_err(at(path, ds()))?
        .unwrap_or_else(|| {
            obj.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string()
        });
    let frame_of_reference_uid =
        attrs::req_str(obj, attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID")).map_err(at(path, ds()))?;
    let patient_id = attrs::opt_str(obj, attr!(PATIENT_ID, "PatientID"))
        .map_err(at(path, ds()))?
        .unwrap_or_default();
    let label = attrs::opt_str(obj, attr!(RT_PLAN_LABEL, "RTPlanLabel"))
        .map_err(at(path, ds()))?
        .unwrap_or_default();
    let setups = patient_setups(path, obj)?;
    let beams_seq = attrs::opt_items(obj, attr!(ION_BEAM_SEQUENCE, "IonBeamSequence"))
        .map_err(at(path, ds()))?
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

/// Patient Position per setup number.
fn patient_setups(path: &Path, obj: &dicom_object::DefaultDicomObject) -> Result<Vec<Setup>, PlanError> {
    let mut setups = Vec::new();
    if let Some(items) = attrs::opt_items(obj, attr!(PATIENT_SETUP_SEQUENCE, "PatientSetupSequence"))
        .map_err(at(path, "dataset".into()))?
    {
        for (n, it) in items.iter().enumerate() {
            let ctx = || format!("Patient Setup Sequence item {n}");
            let num = attrs::opt_int::<i32>(it, attr!(PATIENT_SETUP_NUMBER, "PatientSetupNumber"))
                .map_err(at(path, ctx()))?;
            let pos =
                attrs::opt_str(it, attr!(PATIENT_POSITION, "PatientPosition")).map_err(at(path, ctx()))?;
            setups.push((num, pos));
        }
    }
    Ok(setups)
}

/// One beam being read: where it is, for errors and warnings.
struct BeamAt<'a> {
    path: &'a Path,
    index: usize,
    name: String,
}

impl BeamAt<'_> {
    /// "beam "NAME" (Ion Beam Sequence item N)", the context of the beam's errors.
    fn ctx(&self) -> String {
        format!("beam {:?} (Ion Beam Sequence item {})", self.name, self.index)
    }

    fn at(&self, context: String) -> impl FnOnce(AttrError) -> PlanError + '_ {
        at(self.path, context)
    }
}

/// One Ion Beam Sequence item; `None` for a beam that is not delivered (setup, verification).
fn parse_beam(
    path: &Path,
    bi: usize,
    b: &InMemDicomObject,
    setups: &[Setup],
    warnings: &mut Vec<PlanWarning>,
) -> Result<Option<IonBeam>, PlanError> {
    let Some((number, beam)) = treatment_beam(path, bi, b, warnings)? else {
        return Ok(None);
    };
    let radiation_type = attrs::opt_str(b, attr!(RADIATION_TYPE, "RadiationType"))
        .map_err(beam.at(beam.ctx()))?
        .unwrap_or_default();
    let ion = beam_ion(&beam, b, &radiation_type)?;
    let virtual_sad_mm = virtual_sad(&beam, b, warnings)?;
    let patient_position = patient_position(&beam, b, setups, warnings)?;
    let primary_dosimeter_unit = dosimeter_unit(&beam, b, warnings)?;
    let mut range_shifters = range_shifters(&beam, b)?;
    let cps = attrs::req_items(b, attr!(ION_CONTROL_POINT_SEQUENCE, "IonControlPointSequence"))
        .map_err(beam.at(beam.ctx()))?;
    let mut walk = ControlPoints::default();
    for (ci, cp) in cps.iter().enumerate() {
        walk.read(&beam, ci, cp, &mut range_shifters, warnings)?;
    }
    walk.warn(&beam.name, warnings);
    let (gantry_angle_deg, couch_angle_deg, iso) = walk.geometry(&beam, warnings)?;
    check_finite(&beam, gantry_angle_deg, couch_angle_deg, &iso, &walk.layers)?;
    Ok(Some(IonBeam {
        number,
        name: beam.name,
        radiation_type,
        ion,
        gantry_angle_deg,
        couch_angle_deg,
        isocenter_mm: PointMm::new(iso[0], iso[1], iso[2]),
        patient_position,
        virtual_sad_mm,
        range_shifters,
        primary_dosimeter_unit,
        layers: walk.layers,
    }))
}

/// Primary Dosimeter Unit (300A,00B3): NP or MU; absent or empty is `None`, anything else
/// `None` with a warning.
fn dosimeter_unit(
    beam: &BeamAt,
    b: &InMemDicomObject,
    warnings: &mut Vec<PlanWarning>,
) -> Result<Option<DosimeterUnit>, PlanError> {
    let Some(code) = attrs::opt_str(b, attr!(PRIMARY_DOSIMETER_UNIT, "PrimaryDosimeterUnit"))
        .map_err(beam.at(beam.ctx()))?
    else {
        return Ok(None);
    };
    if code.trim().is_empty() {
        return Ok(None);
    }
    let unit = DosimeterUnit::from_code(&code);
    if unit.is_none() {
        warnings.push(PlanWarning::UnknownDosimeterUnit {
            beam: beam.name.clone(),
            found: code,
        });
    }
    Ok(unit)
}

/// The beam's number and name, or `None` (with a warning) when its Treatment Delivery Type
/// is not TREATMENT.
fn treatment_beam<'a>(
    path: &'a Path,
    bi: usize,
    b: &InMemDicomObject,
    warnings: &mut Vec<PlanWarning>,
) -> Result<Option<(i32, BeamAt<'a>)>, PlanError> {
    let bctx = || format!("Ion Beam Sequence item {bi}");
    let number = attrs::opt_int::<i32>(b, attr!(BEAM_NUMBER, "BeamNumber"))
        .map_err(at(path, bctx()))?
        .ok_or(AttrError::Missing {
            name: "BeamNumber",
            tag: tags::BEAM_NUMBER,
        })
        .map_err(at(path, bctx()))?;
    let name = attrs::opt_str(b, attr!(BEAM_NAME, "BeamName"))
        .map_err(at(path, bctx()))?
        .unwrap_or_else(|| format!("Beam {number}"));
    let beam = BeamAt {
        path,
        index: bi,
        name,
    };
    let delivery = attrs::opt_str(b, attr!(TREATMENT_DELIVERY_TYPE, "TreatmentDeliveryType"))
        .map_err(beam.at(beam.ctx()))?
        .unwrap_or_else(|| "TREATMENT".into());
    if delivery != "TREATMENT" {
        warnings.push(PlanWarning::NonTreatmentBeamSkipped {
            beam: beam.name,
            delivery_type: delivery,
        });
        return Ok(None);
    }
    if number == 0 {
        warnings.push(PlanWarning::ZeroBeamNumber {
            beam: beam.name.clone(),
        });
    }
    Ok(Some((number, beam)))
}

/// The ion a beam delivers: PROTON, or ION with its atomic and mass numbers.
fn beam_ion(beam: &BeamAt, b: &InMemDicomObject, radiation_type: &str) -> Result<Ion, PlanError> {
    let unsupported = |detail: &str| PlanError::UnsupportedRadiation {
        path: beam.path.to_path_buf(),
        beam: beam.name.clone(),
        radiation_type: radiation_type.to_string(),
        detail: detail.to_string(),
    };
    match radiation_type {
        "PROTON" => Ok(Ion::PROTON),
        "ION" => {
            let z = attrs::opt_int::<i32>(b, attr!(RADIATION_ATOMIC_NUMBER, "RadiationAtomicNumber"))
                .map_err(beam.at(beam.ctx()))?;
            let a = attrs::opt_int::<i32>(b, attr!(RADIATION_MASS_NUMBER, "RadiationMassNumber"))
                .map_err(beam.at(beam.ctx()))?;
            match (z.and_then(|v| u8::try_from(v).ok()), a.and_then(|v| u8::try_from(v).ok())) {
                (Some(z), Some(a)) if z >= 1 && a >= z => Ok(Ion { z, a }),
                _ => Err(unsupported(
                    "ION needs Radiation Atomic Number (300A,0304) and Mass Number (300A,0302) with 1 <= Z <= A <= 255",
                )),
            }
        }
        _ => Err(unsupported("only PROTON and ION beams can be delivered")),
    }
}

/// Virtual Source-Axis Distances (x, y), when both are usable; else a warning.
fn virtual_sad(
    beam: &BeamAt,
    b: &InMemDicomObject,
    warnings: &mut Vec<PlanWarning>,
) -> Result<Option<[f64; 2]>, PlanError> {
    let sad = attrs::opt_f64s_as_stored(
        b,
        attr!(VIRTUAL_SOURCE_AXIS_DISTANCES, "VirtualSourceAxisDistances"),
    )
    .map_err(beam.at(beam.ctx()))?;
    Ok(match sad.as_deref() {
        Some(&[x, y]) if x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0 => Some([x, y]),
        _ => {
            warnings.push(PlanWarning::NoUsableVirtualSad {
                beam: beam.name.clone(),
                found: sad.clone(),
            });
            None
        }
    })
}

/// The Patient Position of the beam's setup (else of the first setup); a warning when none.
fn patient_position(
    beam: &BeamAt,
    b: &InMemDicomObject,
    setups: &[Setup],
    warnings: &mut Vec<PlanWarning>,
) -> Result<Option<String>, PlanError> {
    let setup_ref = attrs::opt_int::<i32>(
        b,
        attr!(REFERENCED_PATIENT_SETUP_NUMBER, "ReferencedPatientSetupNumber"),
    )
    .map_err(beam.at(beam.ctx()))?;
    let setup = setups
        .iter()
        .find(|(n, _)| n.is_some() && *n == setup_ref)
        .or(setups.first());
    let patient_position = setup.and_then(|(_, p)| p.clone());
    if patient_position.is_none() {
        warnings.push(PlanWarning::EmptyPatientPosition {
            beam: beam.name.clone(),
        });
    }
    Ok(patient_position)
}

/// The beam's Range Shifter Sequence (thicknesses come later, from the control points).
fn range_shifters(beam: &BeamAt, b: &InMemDicomObject) -> Result<Vec<RangeShifter>, PlanError> {
    let mut range_shifters = Vec::new();
    if let Some(items) = attrs::opt_items(b, attr!(RANGE_SHIFTER_SEQUENCE, "RangeShifterSequence"))
        .map_err(beam.at(beam.ctx()))?
    {
        for (n, it) in items.iter().enumerate() {
            let ctx = || format!("{} Range Shifter Sequence item {n}", beam.ctx());
            let number = attrs::opt_int::<i32>(it, attr!(RANGE_SHIFTER_NUMBER, "RangeShifterNumber"))
                .map_err(beam.at(ctx()))?
                .unwrap_or(n as i32);
            let id = attrs::opt_str(it, attr!(RANGE_SHIFTER_ID, "RangeShifterID"))
                .map_err(beam.at(ctx()))?
                .unwrap_or_default();
            range_shifters.push(RangeShifter {
                number,
                id,
                water_equivalent_thickness_mm: None,
            });
        }
    }
    Ok(range_shifters)
}

/// What the walk over a beam's control points has gathered so far.
#[derive(Default)]
struct ControlPoints {
    /// The energy in force (a control point may leave it unstated, keeping the last).
    energy: Option<f64>,
    gantry: Option<f64>,
    couch: Option<f64>,
    iso: Option<[f64; 3]>,
    layers: Vec<EnergyLayer>,
    empty_cumulative: bool,
    end_points: usize,
    overlong: bool,
    orphan_range_shifter: bool,
}

impl ControlPoints {
    /// Reads control point `ci`: its beam-level attributes, range shifter settings, and spot
    /// map (a new layer, a layer's end point, or a skipped all-zero point).
    fn read(
        &mut self,
        beam: &BeamAt,
        ci: usize,
        cp: &InMemDicomObject,
        range_shifters: &mut [RangeShifter],
        warnings: &mut Vec<PlanWarning>,
    ) -> Result<(), PlanError> {
        let ctx = || format!("{} control point {ci}", beam.ctx());
        self.read_beam_attributes(beam, ci, cp)?;
        self.read_range_shifter_settings(beam, cp, range_shifters, &ctx)?;
        let Some(spots) = spot_map(beam, ci, cp, self.energy, &ctx)? else {
            return Ok(());
        };
        let (e, spots) = spots;
        if spots.iter().all(|s| s.weight == 0.0) {
            self.zero_weight_point(beam, ci, e, &spots, warnings);
            return Ok(());
        }
        // the field size is the session's check (check_spot_maps): no limit here
        check_layer_spots(&beam.name, self.layers.len(), &spots, f64::INFINITY)?;
        self.layers.push(EnergyLayer {
            energy_mev_u: e,
            spots,
        });
        Ok(())
    }

    /// Energy, angles and isocenter (gantry and couch from control point 0 only, the first
    /// isocenter stated), a missing cumulative weight and over-long decimal strings.
    fn read_beam_attributes(
        &mut self,
        beam: &BeamAt,
        ci: usize,
        cp: &InMemDicomObject,
    ) -> Result<(), PlanError> {
        let ctx = || format!("{} control point {ci}", beam.ctx());
        if let Some(e) =
            attrs::opt_f64(cp, attr!(NOMINAL_BEAM_ENERGY, "NominalBeamEnergy")).map_err(beam.at(ctx()))?
        {
            self.energy = Some(e);
        }
        if ci == 0 {
            self.gantry = attrs::opt_f64(cp, attr!(GANTRY_ANGLE, "GantryAngle")).map_err(beam.at(ctx()))?;
            self.couch = attrs::opt_f64(cp, attr!(PATIENT_SUPPORT_ANGLE, "PatientSupportAngle"))
                .map_err(beam.at(ctx()))?;
        }
        if self.iso.is_none() {
            self.iso = attrs::opt_f64_n::<3>(cp, attr!(ISOCENTER_POSITION, "IsocenterPosition"))
                .map_err(beam.at(ctx()))?;
        }
        if attrs::opt_f64s_as_stored(cp, attr!(CUMULATIVE_METERSET_WEIGHT, "CumulativeMetersetWeight"))
            .map_err(beam.at(ctx()))?
            .is_none()
        {
            self.empty_cumulative = true;
        }
        for t in [
            tags::NOMINAL_BEAM_ENERGY,
            tags::GANTRY_ANGLE,
            tags::PATIENT_SUPPORT_ANGLE,
            tags::ISOCENTER_POSITION,
            tags::CUMULATIVE_METERSET_WEIGHT,
        ] {
            self.overlong |= overlong_ds(cp, t);
        }
        Ok(())
    }

    /// Water-equivalent thicknesses from the Range Shifter Settings, onto the beam's range
    /// shifters (the first stated thickness of each stands).
    fn read_range_shifter_settings(
        &mut self,
        beam: &BeamAt,
        cp: &InMemDicomObject,
        range_shifters: &mut [RangeShifter],
        ctx: &dyn Fn() -> String,
    ) -> Result<(), PlanError> {
        let Some(items) = attrs::opt_items(
            cp,
            attr!(RANGE_SHIFTER_SETTINGS_SEQUENCE, "RangeShifterSettingsSequence"),
        )
        .map_err(beam.at(ctx()))?
        else {
            return Ok(());
        };
        for it in items {
            let r = attrs::opt_int::<i32>(
                it,
                attr!(REFERENCED_RANGE_SHIFTER_NUMBER, "ReferencedRangeShifterNumber"),
            )
            .map_err(beam.at(ctx()))?;
            let wet = attrs::opt_f64(
                it,
                attr!(
                    RANGE_SHIFTER_WATER_EQUIVALENT_THICKNESS,
                    "RangeShifterWaterEquivalentThickness"
                ),
            )
            .map_err(beam.at(ctx()))?;
            match range_shifters.iter_mut().find(|s| Some(s.number) == r) {
                Some(s) => {
                    if s.water_equivalent_thickness_mm.is_none() {
                        s.water_equivalent_thickness_mm = wet.map(MmWe);
                    }
                }
                None => self.orphan_range_shifter = true,
            }
        }
        Ok(())
    }

    /// An all-zero control point: the end point of the previous layer when it repeats its
    /// energy and map, else skipped with a warning.
    fn zero_weight_point(
        &mut self,
        beam: &BeamAt,
        ci: usize,
        energy: f64,
        spots: &[Spot],
        warnings: &mut Vec<PlanWarning>,
    ) {
        let same_as_last = self.layers.last().is_some_and(|l| {
            l.energy_mev_u == energy
                && l.spots.len() == spots.len()
                && l.spots
                    .iter()
                    .zip(spots)
                    .all(|(a, b)| a.x_mm == b.x_mm && a.y_mm == b.y_mm)
        });
        if same_as_last {
            self.end_points += 1;
        } else {
            warnings.push(PlanWarning::ZeroWeightControlPointSkipped {
                beam: beam.name.clone(),
                control_point: ci,
            });
        }
    }

    /// The quirks seen over the whole beam, as warnings.
    fn warn(&self, name: &str, warnings: &mut Vec<PlanWarning>) {
        let beam = || name.to_string();
        if self.empty_cumulative {
            warnings.push(PlanWarning::EmptyCumulativeMetersetWeight { beam: beam() });
        }
        if !self.layers.is_empty() && self.end_points == 0 {
            warnings.push(PlanWarning::SingleControlPointLayers { beam: beam() });
        }
        if self.overlong {
            warnings.push(PlanWarning::OverlongDecimalString { beam: beam() });
        }
        if self.orphan_range_shifter {
            warnings.push(PlanWarning::RangeShifterSettingsWithoutRangeShifter { beam: beam() });
        }
    }

    /// (gantry angle, couch angle, isocenter): gantry and isocenter are required, a missing
    /// couch angle is 0 with a warning.
    fn geometry(
        &self,
        beam: &BeamAt,
        warnings: &mut Vec<PlanWarning>,
    ) -> Result<(f64, f64, [f64; 3]), PlanError> {
        let gantry_angle_deg = self
            .gantry
            .ok_or(AttrError::Missing {
                name: "GantryAngle",
                tag: tags::GANTRY_ANGLE,
            })
            .map_err(beam.at(format!("{} control point 0", beam.ctx())))?;
        let couch_angle_deg = self.couch.unwrap_or_else(|| {
            warnings.push(PlanWarning::MissingCouchAngle {
                beam: beam.name.clone(),
            });
            0.0
        });
        let iso = self
            .iso
            .ok_or(AttrError::Missing {
                name: "IsocenterPosition",
                tag: tags::ISOCENTER_POSITION,
            })
            .map_err(beam.at(format!("{} control points", beam.ctx())))?;
        Ok((gantry_angle_deg, couch_angle_deg, iso))
    }
}

/// Control point `ci`'s spot map with the energy in force, or `None` when it has none.
/// Positions must pair with the weights (and match a stated count), and an energy must be
/// known.
fn spot_map(
    beam: &BeamAt,
    ci: usize,
    cp: &InMemDicomObject,
    energy: Option<f64>,
    ctx: &dyn Fn() -> String,
) -> Result<Option<(f64, Vec<Spot>)>, PlanError> {
    let positions = attrs::opt_f64s_as_stored(cp, attr!(SCAN_SPOT_POSITION_MAP, "ScanSpotPositionMap"))
        .map_err(beam.at(ctx()))?;
    let weights = attrs::opt_f64s_as_stored(cp, attr!(SCAN_SPOT_METERSET_WEIGHTS, "ScanSpotMetersetWeights"))
        .map_err(beam.at(ctx()))?;
    let stated = attrs::opt_int::<i32>(
        cp,
        attr!(NUMBER_OF_SCAN_SPOT_POSITIONS, "NumberOfScanSpotPositions"),
    )
    .map_err(beam.at(ctx()))?;
    let (positions, weights) = match (positions, weights) {
        (None, None) if stated.unwrap_or(0) == 0 => return Ok(None),
        (p, w) => (p.unwrap_or_default(), w.unwrap_or_default()),
    };
    if positions.len() != 2 * weights.len()
        || stated.is_some_and(|n| usize::try_from(n).ok() != Some(weights.len()))
    {
        return Err(PlanError::SpotCountMismatch {
            path: beam.path.to_path_buf(),
            beam: beam.name.clone(),
            control_point: ci,
            positions: positions.len(),
            weights: weights.len(),
            stated,
        });
    }
    let Some(e) = energy else {
        return Err(PlanError::MissingEnergy {
            path: beam.path.to_path_buf(),
            beam: beam.name.clone(),
            control_point: ci,
        });
    };
    let spots = weights
        .iter()
        .enumerate()
        .map(|(s, &w)| Spot {
            x_mm: positions[2 * s],
            y_mm: positions[2 * s + 1],
            weight: w,
        })
        .collect();
    Ok(Some((e, spots)))
}

/// Refuses non-finite angles, isocenter or energies (and energies that are not positive).
fn check_finite(
    beam: &BeamAt,
    gantry_angle_deg: f64,
    couch_angle_deg: f64,
    iso: &[f64; 3],
    layers: &[EnergyLayer],
) -> Result<(), PlanError> {
    let non_finite = |what| PlanError::NonFinite {
        path: beam.path.to_path_buf(),
        beam: beam.name.clone(),
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
    Ok(())
}
