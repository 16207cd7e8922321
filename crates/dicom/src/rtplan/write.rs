//! Writing an [`IonPlan`] as a standard-conformant RT Ion Plan: control point pairs per
//! layer with cumulative meterset weights, decimal strings that round-trip.

use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{PlanError, RT_ION_PLAN_SOP_CLASS};
use crate::plan::{DosimeterUnit, EnergyLayer, IonBeam, IonPlan};
use crate::units::Ion;
use crate::write::elements::{ds, fl, int_s, meta, part10, sq, ss, text};
use crate::write::WriteError;

pub use crate::write::format_ds;

/// The plan's data set: identity, a setup and a referenced beam per beam, the beams.
fn plan_object(plan: &IonPlan, machine: Option<&str>) -> Result<InMemDicomObject, PlanError> {
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

        let mut beam = beam_object(b, setup_number, total)?;
        if let Some(machine) = machine {
            beam.put(text(tags::TREATMENT_MACHINE_NAME, VR::SH, machine));
        }
        beams.push(beam);
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

/// One Ion Beam Sequence item: the beam's fixed attributes, then a control point pair per
/// energy layer.
fn beam_object(b: &IonBeam, setup_number: i64, total: f64) -> Result<InMemDicomObject, PlanError> {
    let mut o = InMemDicomObject::new_empty();
    put_beam_attributes(&mut o, b, setup_number, total);
    let mut cps = Vec::with_capacity(2 * b.layers.len());
    let mut cumulative = 0.0;
    for (li, l) in b.layers.iter().enumerate() {
        for end in [false, true] {
            cps.push(control_point(b, li, l, end, cumulative));
            if !end {
                cumulative += l.spots.iter().map(|s| s.weight).sum::<f64>();
            }
        }
    }
    o.put(sq(tags::ION_CONTROL_POINT_SEQUENCE, cps));
    Ok(o)
}

/// The beam-level attributes: identity, radiation, delivery, devices, range shifters.
fn put_beam_attributes(o: &mut InMemDicomObject, b: &IonBeam, setup_number: i64, total: f64) {
    o.put(int_s(tags::BEAM_NUMBER, b.number.into()));
    o.put(text(tags::BEAM_NAME, VR::LO, &b.name));
    o.put(text(tags::BEAM_TYPE, VR::CS, "STATIC"));
    if b.ion == Ion::PROTON {
        o.put(text(tags::RADIATION_TYPE, VR::CS, "PROTON"));
    } else {
        o.put(text(tags::RADIATION_TYPE, VR::CS, "ION"));
        o.put(int_s(tags::RADIATION_MASS_NUMBER, b.ion.a.into()));
        o.put(int_s(tags::RADIATION_ATOMIC_NUMBER, b.ion.z.into()));
        o.put(ss(tags::RADIATION_CHARGE_STATE, b.ion.z.into()));
    }
    o.put(text(tags::TREATMENT_DELIVERY_TYPE, VR::CS, "TREATMENT"));
    // Type 1 in the Ion Beam Sequence: a beam whose unit is not known is written as NP,
    // which is how ionguide's dose engine counts weights without one.
    let unit = b.primary_dosimeter_unit.unwrap_or(DosimeterUnit::Particles);
    o.put(text(tags::PRIMARY_DOSIMETER_UNIT, VR::CS, unit.code()));
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
}

/// Layer `li`'s start (`end` false: the weights) or end (zero weights) control point, at
/// cumulative meterset weight `cumulative`. The first one also carries the beam geometry.
fn control_point(b: &IonBeam, li: usize, l: &EnergyLayer, end: bool, cumulative: f64) -> InMemDicomObject {
    let positions: Vec<f64> = l.spots.iter().flat_map(|s| [s.x_mm, s.y_mm]).collect();
    let weights: Vec<f64> = l.spots.iter().map(|s| s.weight).collect();
    let mut cp = InMemDicomObject::new_empty();
    cp.put(int_s(
        tags::CONTROL_POINT_INDEX,
        (2 * li + usize::from(end)) as i64,
    ));
    cp.put(ds(tags::NOMINAL_BEAM_ENERGY, &[l.energy_mev_u]));
    if li == 0 && !end {
        put_beam_geometry(&mut cp, b);
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
    }
    cp.put(fl(tags::SCANNING_SPOT_SIZE, &[5.0, 5.0]));
    cp.put(int_s(tags::NUMBER_OF_PAINTINGS, 1));
    cp
}

/// Gantry and couch angles (fixed during the beam) and the isocenter, on control point 0.
fn put_beam_geometry(cp: &mut InMemDicomObject, b: &IonBeam) {
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

/// Writes a plan as a DICOM Part 10 byte stream (explicit VR little endian).
pub fn write_plan_bytes(plan: &IonPlan) -> Result<Vec<u8>, PlanError> {
    write_plan_bytes_for_machine(plan, None)
}

/// [`write_plan_bytes`] with every beam's Treatment Machine Name (300A,00B2): the room a
/// facility delivers it in (`None`: left out, as the plan model has no machine).
pub fn write_plan_bytes_for_machine(plan: &IonPlan, machine: Option<&str>) -> Result<Vec<u8>, PlanError> {
    if let Some(m) = machine {
        if m.trim().is_empty() || m.len() > 16 || !m.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(PlanError::Unwritable(format!(
                "treatment machine name {m:?}: 1–16 printable ASCII characters (DICOM SH)"
            )));
        }
    }
    let obj = plan_object(plan, machine)?;
    let meta = meta(RT_ION_PLAN_SOP_CLASS, plan.sop_instance_uid.as_str());
    part10(obj, meta, "RT Ion Plan").map_err(|e| match e {
        WriteError::Meta { source, .. } => PlanError::WriteMeta(source),
        WriteError::Write { source, .. } => PlanError::Write {
            path: PathBuf::from("<memory>"),
            source,
        },
        other => PlanError::Unwritable(other.to_string()),
    })
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
