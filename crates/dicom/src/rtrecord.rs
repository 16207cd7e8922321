//! RT Ion Beams Treatment Record (SOP class 1.2.840.10008.5.1.4.1.1.481.9) ↔
//! [`TreatmentRecord`](ionguide_core::record::TreatmentRecord): what a session delivered,
//! written from the controller's delivery reports, and read back.
//!
//! Modules written (PS3.3 A.50): Patient, General Study, RT Series, General Equipment, RT
//! General Treatment Record, RT Treatment Machine Record, RT Ion Beams Session Record, SOP
//! Common. Patient and study come from the plan (so the record files with it); the plan is
//! referenced in Referenced RT Plan Sequence.
//!
//! Metersets: the controller reports Scan Spot Meterset Weight units; the record states
//! them in the beam's Primary Dosimeter Unit, scaled by Beam Meterset / Final Cumulative
//! Meterset Weight from the plan (by 1 when the plan gives neither). One Ion Control Point
//! Delivery item per run of one energy layer ([`ControlPointDelivery`]); its Referenced
//! Control Point Index is the plan's control point that opens the layer.
//!
//! What the standard has no attribute for is kept in a private block (creator
//! `IONGUIDE RECORD 1` at (0071,0010)), per delivery item, one value per piece: spot index in
//! plan order (0071,1001) UL, delivered energy MeV/u (0071,1002) FL, range shifter mm w.e.
//! (0071,1003) FL, meterset in weight units (0071,1004) FD, frame id of the applied
//! correction set (0071,1005) UV, delivery instant ns since the UNIX epoch (0071,1006) UV,
//! the layer index (0071,1011) IS and its nominal energy MeV/u (0071,1013) FD (a DS rounds
//! past 16 characters); per beam the plan beam index (0071,1010) IS and the
//! specified meterset in weight units (0071,1012) FD; at the top the treatment instant
//! (0071,1020) UV. With them the reader rebuilds the record exactly.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::attrs::{self, attr, AttrError, OpenError, Read};
use crate::ct::write::producer_meta;
use crate::datetime::{format_datetime, UtcOffset};
use crate::uids::RT_ION_PLAN_SOP_CLASS;
use crate::write::elements::{ds, int_s, part10, sq, ss, text};
use crate::write::{check_uid, Producer, WriteError};
use ionguide_core::correction::{DeliveredSpot, SpotCorrection};
use ionguide_core::record::{
    BeamDelivery, ControlPointDelivery, Termination, TerminationStatus, TreatmentRecord,
};

/// RT Ion Beams Treatment Record Storage.
pub const RT_ION_BEAMS_TREATMENT_RECORD_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.9";
/// The coding scheme of the machine-specific termination codes (a private scheme: `99` prefix).
pub const CODING_SCHEME: &str = "99IONGUIDE";
/// The private creator of ionguide's per-piece data.
pub const PRIVATE_CREATOR: &str = "IONGUIDE RECORD 1";

const GROUP: u16 = 0x0071;
const CREATOR: Tag = Tag(GROUP, 0x0010);
const P_SPOT_INDEX: Tag = Tag(GROUP, 0x1001);
const P_ENERGY: Tag = Tag(GROUP, 0x1002);
const P_RANGE_SHIFTER: Tag = Tag(GROUP, 0x1003);
const P_METERSET: Tag = Tag(GROUP, 0x1004);
const P_FRAME_ID: Tag = Tag(GROUP, 0x1005);
const P_DELIVERED_NS: Tag = Tag(GROUP, 0x1006);
const P_BEAM_INDEX: Tag = Tag(GROUP, 0x1010);
const P_LAYER: Tag = Tag(GROUP, 0x1011);
const P_SPECIFIED: Tag = Tag(GROUP, 0x1012);
const P_NOMINAL_ENERGY: Tag = Tag(GROUP, 0x1013);
const P_TREATMENT_NS: Tag = Tag(GROUP, 0x1020);

/// Identifiers of a written record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIds {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID (RT Series).
    pub series_instance_uid: String,
    /// Series Number.
    pub series_number: i32,
}

/// Why a treatment record cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtRecordError {
    /// The data is not readable DICOM.
    #[error("treatment record: {0}")]
    Open(#[source] OpenError),
    /// The plan given to the writer is not readable DICOM.
    #[error("plan: {0}")]
    PlanOpen(#[source] OpenError),
    /// Another SOP class.
    #[error("not an RT Ion Beams Treatment Record: SOP class {0:?}")]
    NotRecord(String),
    /// An attribute is missing or unusable; `at` says where.
    #[error("{at}: {source}")]
    Attr {
        /// Where (module, beam item, delivery item).
        at: String,
        /// What.
        #[source]
        source: AttrError,
    },
    /// Values that disagree with each other (counts, private data).
    #[error("{at}: {what}")]
    Inconsistent {
        /// Where.
        at: String,
        /// What.
        what: String,
    },
    /// The object cannot be encoded.
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn at(place: impl Into<String>) -> impl FnOnce(AttrError) -> RtRecordError {
    let at = place.into();
    move |source| RtRecordError::Attr { at, source }
}

fn private_creator() -> DataElement<InMemDicomObject> {
    text(CREATOR, VR::LO, PRIVATE_CREATOR)
}

fn prim(tag: Tag, vr: VR, v: PrimitiveValue) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v)
}

/// What the writer takes from the plan, per beam.
struct PlanBeam {
    number: i32,
    /// Beam Meterset / Final Cumulative Meterset Weight.
    scale: f64,
    machine: String,
    beam_type: String,
    scan_mode: String,
    gantry_deg: Option<f64>,
    couch_deg: Option<f64>,
    bld_deg: Option<f64>,
    /// Control point index of each layer (control points with a non-zero spot map).
    layer_cp: Vec<usize>,
    /// Scan Spot Tune ID of each layer.
    tune: Vec<String>,
    range_shifters: Vec<(i64, String)>,
}

fn plan_beams(plan: &InMemDicomObject) -> Result<Vec<PlanBeam>, RtRecordError> {
    let mut meterset: Vec<(i64, f64)> = Vec::new();
    if let Some(fg) = attrs::opt_first_item(plan, attr!(FRACTION_GROUP_SEQUENCE, "FractionGroupSequence"))
        .map_err(at("plan fraction group"))?
    {
        for rb in attrs::opt_items(fg, attr!(REFERENCED_BEAM_SEQUENCE, "ReferencedBeamSequence"))
            .map_err(at("plan fraction group"))?
            .unwrap_or(&[])
        {
            let n = attrs::opt_int::<i64>(rb, attr!(REFERENCED_BEAM_NUMBER, "ReferencedBeamNumber"))
                .map_err(at("plan referenced beam"))?;
            let m = attrs::opt_f64(rb, attr!(BEAM_METERSET, "BeamMeterset"))
                .map_err(at("plan referenced beam"))?;
            if let (Some(n), Some(m)) = (n, m) {
                meterset.push((n, m));
            }
        }
    }
    let mut out = Vec::new();
    for (bi, b) in attrs::opt_items(plan, attr!(ION_BEAM_SEQUENCE, "IonBeamSequence"))
        .map_err(at("plan"))?
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let ctx = || format!("plan beam item {bi}");
        let number = attrs::opt_int::<i32>(b, attr!(BEAM_NUMBER, "BeamNumber"))
            .map_err(at(ctx()))?
            .unwrap_or(bi as i32);
        let fcmw = attrs::opt_f64(
            b,
            attr!(FINAL_CUMULATIVE_METERSET_WEIGHT, "FinalCumulativeMetersetWeight"),
        )
        .map_err(at(ctx()))?;
        let bm = meterset
            .iter()
            .find(|(n, _)| *n == i64::from(number))
            .map(|m| m.1);
        let scale = match (bm, fcmw) {
            (Some(m), Some(w)) if w > 0.0 && m.is_finite() && m >= 0.0 => m / w,
            _ => 1.0,
        };
        let s = |a| attrs::opt_str(b, a).map_err(at(ctx()));
        let mut pb = PlanBeam {
            number,
            scale,
            machine: s(attr!(TREATMENT_MACHINE_NAME, "TreatmentMachineName"))?.unwrap_or_default(),
            beam_type: s(attr!(BEAM_TYPE, "BeamType"))?.unwrap_or_else(|| "STATIC".into()),
            scan_mode: s(attr!(SCAN_MODE, "ScanMode"))?.unwrap_or_else(|| "MODULATED".into()),
            gantry_deg: None,
            couch_deg: None,
            bld_deg: None,
            layer_cp: Vec::new(),
            tune: Vec::new(),
            range_shifters: Vec::new(),
        };
        for rs in attrs::opt_items(b, attr!(RANGE_SHIFTER_SEQUENCE, "RangeShifterSequence"))
            .map_err(at(ctx()))?
            .unwrap_or(&[])
        {
            let n = attrs::opt_int::<i64>(rs, attr!(RANGE_SHIFTER_NUMBER, "RangeShifterNumber"))
                .map_err(at(ctx()))?;
            let id = attrs::opt_str(rs, attr!(RANGE_SHIFTER_ID, "RangeShifterID")).map_err(at(ctx()))?;
            pb.range_shifters.push((n.unwrap_or(0), id.unwrap_or_default()));
        }
        let cps = attrs::opt_items(b, attr!(ION_CONTROL_POINT_SEQUENCE, "IonControlPointSequence"))
            .map_err(at(ctx()))?
            .unwrap_or(&[]);
        let mut tune = String::from("1");
        for (ci, cp) in cps.iter().enumerate() {
            let cctx = || format!("plan beam item {bi} control point {ci}");
            if ci == 0 {
                pb.gantry_deg = attrs::opt_f64(cp, attr!(GANTRY_ANGLE, "GantryAngle")).map_err(at(cctx()))?;
                pb.couch_deg = attrs::opt_f64(cp, attr!(PATIENT_SUPPORT_ANGLE, "PatientSupportAngle"))
                    .map_err(at(cctx()))?;
                pb.bld_deg = attrs::opt_f64(cp, attr!(BEAM_LIMITING_DEVICE_ANGLE, "BeamLimitingDeviceAngle"))
                    .map_err(at(cctx()))?;
            }
            if let Some(t) =
                attrs::opt_str(cp, attr!(SCAN_SPOT_TUNE_ID, "ScanSpotTuneID")).map_err(at(cctx()))?
            {
                tune = t;
            }
            // the plan reader's rule: a control point whose spot map has a non-zero weight
            // opens a layer
            let w = attrs::opt_f64s(cp, attr!(SCAN_SPOT_METERSET_WEIGHTS, "ScanSpotMetersetWeights"))
                .map_err(at(cctx()))?;
            if w.is_some_and(|w| w.iter().any(|v| *v != 0.0)) {
                pb.layer_cp.push(ci);
                pb.tune.push(tune.clone());
            }
        }
        out.push(pb);
    }
    Ok(out)
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn da_tm(unix_ns: u64) -> (String, String) {
    let dt = format_datetime(i64::try_from(unix_ns).unwrap_or(i64::MAX), UtcOffset::UTC);
    (dt[..8].to_string(), dt[8..21].to_string())
}

/// Writes `record` as a Part 10 RT Ion Beams Treatment Record of the plan whose Part 10
/// bytes are `plan` (patient, study, machine and metersets come from it).
pub fn write_treatment_record(
    record: &TreatmentRecord,
    plan: &[u8],
    ids: &RecordIds,
    producer: &Producer,
) -> Result<Vec<u8>, RtRecordError> {
    check_uid("SOP Instance UID", &ids.sop_instance_uid, 64)?;
    check_uid("Series Instance UID", &ids.series_instance_uid, 64)?;
    check_uid(
        "Referenced RT Plan SOP Instance UID",
        &record.plan_sop_instance_uid,
        64,
    )?;
    let p = attrs::parse(plan, Read::Whole).map_err(RtRecordError::PlanOpen)?;
    let beams = plan_beams(&p)?;
    let ps = |a| attrs::opt_str(&p, a).map_err(at("plan"));
    let (date, time) = da_tm(record.treatment_unix_ns);

    let mut o = InMemDicomObject::new_empty();
    // SOP Common
    o.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    o.put(text(
        tags::SOP_CLASS_UID,
        VR::UI,
        RT_ION_BEAMS_TREATMENT_RECORD_SOP_CLASS,
    ));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &ids.sop_instance_uid));
    o.put(text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"));
    // Patient, General Study: the plan's
    o.put(text(
        tags::PATIENT_NAME,
        VR::PN,
        &ps(attr!(PATIENT_NAME, "PatientName"))?.unwrap_or_default(),
    ));
    o.put(text(tags::PATIENT_ID, VR::LO, &record.patient_id));
    o.put(text(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &ps(attr!(PATIENT_BIRTH_DATE, "PatientBirthDate"))?.unwrap_or_default(),
    ));
    o.put(text(
        tags::PATIENT_SEX,
        VR::CS,
        &ps(attr!(PATIENT_SEX, "PatientSex"))?.unwrap_or_default(),
    ));
    let study_uid =
        ps(attr!(STUDY_INSTANCE_UID, "StudyInstanceUID"))?.ok_or_else(|| RtRecordError::Attr {
            at: "plan".into(),
            source: AttrError::Missing {
                name: "StudyInstanceUID",
                tag: tags::STUDY_INSTANCE_UID,
            },
        })?;
    o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &study_uid));
    o.put(text(
        tags::STUDY_DATE,
        VR::DA,
        &ps(attr!(STUDY_DATE, "StudyDate"))?.unwrap_or_default(),
    ));
    o.put(text(
        tags::STUDY_TIME,
        VR::TM,
        &ps(attr!(STUDY_TIME, "StudyTime"))?.unwrap_or_default(),
    ));
    o.put(text(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &ps(attr!(REFERRING_PHYSICIAN_NAME, "ReferringPhysicianName"))?.unwrap_or_default(),
    ));
    o.put(text(
        tags::STUDY_ID,
        VR::SH,
        &ps(attr!(STUDY_ID, "StudyID"))?.unwrap_or_default(),
    ));
    o.put(text(
        tags::ACCESSION_NUMBER,
        VR::SH,
        &ps(attr!(ACCESSION_NUMBER, "AccessionNumber"))?.unwrap_or_default(),
    ));
    // RT Series, General Equipment
    o.put(text(tags::MODALITY, VR::CS, "RTRECORD"));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_instance_uid));
    o.put(int_s(tags::SERIES_NUMBER, ids.series_number.into()));
    o.put(text(tags::OPERATORS_NAME, VR::PN, ""));
    o.put(text(tags::MANUFACTURER, VR::LO, producer.manufacturer));
    // RT General Treatment Record
    o.put(int_s(tags::INSTANCE_NUMBER, 1));
    o.put(text(tags::TREATMENT_DATE, VR::DA, &date));
    o.put(text(tags::TREATMENT_TIME, VR::TM, &time));
    let mut plan_ref = InMemDicomObject::new_empty();
    plan_ref.put(text(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        RT_ION_PLAN_SOP_CLASS,
    ));
    plan_ref.put(text(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &record.plan_sop_instance_uid,
    ));
    o.put(sq(tags::REFERENCED_RT_PLAN_SEQUENCE, vec![plan_ref]));
    // RT Treatment Machine Record
    let mut machine = InMemDicomObject::new_empty();
    let machine_name = beams.first().map(|b| b.machine.clone()).unwrap_or_default();
    machine.put(text(tags::TREATMENT_MACHINE_NAME, VR::SH, &machine_name));
    machine.put(text(tags::MANUFACTURER, VR::LO, ""));
    machine.put(text(tags::INSTITUTION_NAME, VR::LO, ""));
    machine.put(text(tags::MANUFACTURER_MODEL_NAME, VR::LO, ""));
    machine.put(text(tags::DEVICE_SERIAL_NUMBER, VR::LO, ""));
    o.put(sq(tags::TREATMENT_MACHINE_SEQUENCE, vec![machine]));
    // RT Ion Beams Session Record
    o.put(text(tags::NUMBER_OF_FRACTIONS_PLANNED, VR::IS, ""));
    let unit = attrs::opt_items(&p, attr!(ION_BEAM_SEQUENCE, "IonBeamSequence"))
        .map_err(at("plan"))?
        .and_then(|items| items.first())
        .map(|b| attrs::opt_str(b, attr!(PRIMARY_DOSIMETER_UNIT, "PrimaryDosimeterUnit")))
        .transpose()
        .map_err(at("plan beam item 0"))?
        .flatten()
        .unwrap_or_else(|| "NP".into());
    o.put(text(tags::PRIMARY_DOSIMETER_UNIT, VR::CS, &unit));
    let mut items = Vec::with_capacity(record.beams.len());
    for b in &record.beams {
        let pb = beams
            .iter()
            .find(|pb| pb.number == b.beam_number)
            .ok_or_else(|| RtRecordError::Inconsistent {
                at: format!("beam {}", b.beam_number),
                what: "the plan has no beam of that number".into(),
            })?;
        items.push(beam_item(b, pb)?);
    }
    o.put(sq(tags::TREATMENT_SESSION_ION_BEAM_SEQUENCE, items));
    o.put(private_creator());
    o.put(prim(
        P_TREATMENT_NS,
        VR::UV,
        PrimitiveValue::from(record.treatment_unix_ns),
    ));
    let meta = producer_meta(
        producer,
        RT_ION_BEAMS_TREATMENT_RECORD_SOP_CLASS,
        &ids.sop_instance_uid,
    );
    Ok(part10(o, meta, "RT Ion Beams Treatment Record")?)
}

fn beam_item(b: &BeamDelivery, pb: &PlanBeam) -> Result<InMemDicomObject, RtRecordError> {
    let mut it = InMemDicomObject::new_empty();
    it.put(int_s(tags::REFERENCED_BEAM_NUMBER, b.beam_number.into()));
    it.put(text(tags::BEAM_NAME, VR::LO, &b.beam_name));
    it.put(text(tags::BEAM_TYPE, VR::CS, &pb.beam_type));
    it.put(text(tags::RADIATION_TYPE, VR::CS, &b.radiation_type));
    if b.radiation_type.trim() == "ION" {
        it.put(int_s(tags::RADIATION_MASS_NUMBER, 12));
        it.put(int_s(tags::RADIATION_ATOMIC_NUMBER, 6));
        it.put(ss(tags::RADIATION_CHARGE_STATE, 6));
    }
    it.put(text(tags::SCAN_MODE, VR::CS, &pb.scan_mode));
    for t in [
        tags::NUMBER_OF_WEDGES,
        tags::NUMBER_OF_COMPENSATORS,
        tags::NUMBER_OF_BOLI,
        tags::NUMBER_OF_BLOCKS,
        tags::NUMBER_OF_LATERAL_SPREADING_DEVICES,
        tags::NUMBER_OF_RANGE_MODULATORS,
    ] {
        it.put(int_s(t, 0));
    }
    it.put(int_s(
        tags::NUMBER_OF_RANGE_SHIFTERS,
        pb.range_shifters.len() as i64,
    ));
    if !pb.range_shifters.is_empty() {
        let recorded = pb
            .range_shifters
            .iter()
            .map(|(n, id)| {
                let mut r = InMemDicomObject::new_empty();
                r.put(int_s(tags::REFERENCED_RANGE_SHIFTER_NUMBER, *n));
                r.put(text(tags::RANGE_SHIFTER_ID, VR::SH, id));
                r
            })
            .collect();
        it.put(sq(tags::RECORDED_RANGE_SHIFTER_SEQUENCE, recorded));
    }
    it.put(text(tags::PATIENT_SUPPORT_TYPE, VR::CS, "TABLE"));
    it.put(text(tags::CURRENT_FRACTION_NUMBER, VR::IS, ""));
    it.put(text(tags::TREATMENT_DELIVERY_TYPE, VR::CS, "TREATMENT"));
    it.put(text(
        tags::TREATMENT_TERMINATION_STATUS,
        VR::CS,
        b.termination.status.code(),
    ));
    // Treatment Termination Code (3008,002B) is retired; its successor is a coded item
    let mut code = InMemDicomObject::new_empty();
    code.put(text(tags::CODE_VALUE, VR::SH, &b.termination.code));
    code.put(text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, CODING_SCHEME));
    code.put(text(
        tags::CODE_MEANING,
        VR::LO,
        &cut(&b.termination.description, 64),
    ));
    it.put(sq(
        tags::MACHINE_SPECIFIC_TREATMENT_TERMINATION_CODE_SEQUENCE,
        vec![code],
    ));
    it.put(text(
        tags::TREATMENT_TERMINATION_DESCRIPTION,
        VR::ST,
        &b.termination.description,
    ));
    it.put(text(tags::TREATMENT_VERIFICATION_STATUS, VR::CS, ""));
    it.put(ds(
        tags::SPECIFIED_PRIMARY_METERSET,
        &[b.specified_meterset * pb.scale],
    ));
    it.put(ds(
        tags::DELIVERED_PRIMARY_METERSET,
        &[b.delivered_meterset() * pb.scale],
    ));
    it.put(int_s(
        tags::NUMBER_OF_CONTROL_POINTS,
        b.control_points.len() as i64,
    ));
    let mut cps = Vec::with_capacity(b.control_points.len());
    for (k, c) in b.control_points.iter().enumerate() {
        let cp_index = pb
            .layer_cp
            .get(c.layer)
            .copied()
            .ok_or_else(|| RtRecordError::Inconsistent {
                at: format!("beam {} delivery {k}", b.beam_number),
                what: format!("layer {} is not in the plan's beam", c.layer),
            })?;
        cps.push(control_point_item(c, cp_index, pb));
    }
    it.put(sq(tags::ION_CONTROL_POINT_DELIVERY_SEQUENCE, cps));
    it.put(private_creator());
    it.put(int_s(P_BEAM_INDEX, b.beam_index as i64));
    it.put(prim(
        P_SPECIFIED,
        VR::FD,
        PrimitiveValue::from(b.specified_meterset),
    ));
    Ok(it)
}

fn control_point_item(c: &ControlPointDelivery, cp_index: usize, pb: &PlanBeam) -> InMemDicomObject {
    let mut it = InMemDicomObject::new_empty();
    let (date, time) = da_tm(c.spots.first().map_or(0, |s| s.delivered_unix_ns));
    it.put(int_s(tags::REFERENCED_CONTROL_POINT_INDEX, cp_index as i64));
    it.put(text(tags::TREATMENT_CONTROL_POINT_DATE, VR::DA, &date));
    it.put(text(tags::TREATMENT_CONTROL_POINT_TIME, VR::TM, &time));
    it.put(text(tags::SPECIFIED_METERSET, VR::DS, ""));
    let delivered: f64 = c.spots.iter().map(|s| s.meterset).sum();
    it.put(ds(tags::DELIVERED_METERSET, &[delivered * pb.scale]));
    it.put(ds(tags::NOMINAL_BEAM_ENERGY, &[c.nominal_energy_mev_u]));
    it.put(ds(tags::GANTRY_ANGLE, &[pb.gantry_deg.unwrap_or(0.0)]));
    it.put(text(tags::GANTRY_ROTATION_DIRECTION, VR::CS, "NONE"));
    it.put(ds(tags::BEAM_LIMITING_DEVICE_ANGLE, &[pb.bld_deg.unwrap_or(0.0)]));
    it.put(text(
        tags::BEAM_LIMITING_DEVICE_ROTATION_DIRECTION,
        VR::CS,
        "NONE",
    ));
    it.put(ds(tags::PATIENT_SUPPORT_ANGLE, &[pb.couch_deg.unwrap_or(0.0)]));
    it.put(text(tags::PATIENT_SUPPORT_ROTATION_DIRECTION, VR::CS, "NONE"));
    if !pb.range_shifters.is_empty() {
        let inserted = c.spots.iter().any(|s| s.spot.range_shifter_mm_we != 0.0);
        let settings = pb
            .range_shifters
            .iter()
            .map(|(n, _)| {
                let mut r = InMemDicomObject::new_empty();
                r.put(text(
                    tags::RANGE_SHIFTER_SETTING,
                    VR::LO,
                    if inserted { "IN" } else { "OUT" },
                ));
                r.put(int_s(tags::REFERENCED_RANGE_SHIFTER_NUMBER, *n));
                r
            })
            .collect();
        it.put(sq(tags::RANGE_SHIFTER_SETTINGS_SEQUENCE, settings));
    }
    it.put(text(
        tags::SCAN_SPOT_TUNE_ID,
        VR::SH,
        pb.tune.get(c.layer).map_or("1", String::as_str),
    ));
    it.put(int_s(tags::NUMBER_OF_SCAN_SPOT_POSITIONS, c.spots.len() as i64));
    let map: Vec<f32> = c.spots.iter().flat_map(|s| [s.spot.x_mm, s.spot.y_mm]).collect();
    it.put(prim(
        tags::SCAN_SPOT_POSITION_MAP,
        VR::FL,
        PrimitiveValue::F32(map.into()),
    ));
    let metersets: Vec<f32> = c.spots.iter().map(|s| (s.meterset * pb.scale) as f32).collect();
    it.put(prim(
        tags::SCAN_SPOT_METERSETS_DELIVERED,
        VR::FL,
        PrimitiveValue::F32(metersets.into()),
    ));
    it.put(int_s(tags::NUMBER_OF_PAINTINGS, 1));
    it.put(private_creator());
    it.put(prim(
        P_SPOT_INDEX,
        VR::UL,
        PrimitiveValue::U32(c.spots.iter().map(|s| s.spot.spot_index).collect()),
    ));
    it.put(prim(
        P_ENERGY,
        VR::FL,
        PrimitiveValue::F32(c.spots.iter().map(|s| s.spot.energy_mev_u).collect()),
    ));
    it.put(prim(
        P_RANGE_SHIFTER,
        VR::FL,
        PrimitiveValue::F32(c.spots.iter().map(|s| s.spot.range_shifter_mm_we).collect()),
    ));
    it.put(prim(
        P_METERSET,
        VR::FD,
        PrimitiveValue::F64(c.spots.iter().map(|s| s.meterset).collect()),
    ));
    it.put(prim(
        P_FRAME_ID,
        VR::UV,
        PrimitiveValue::U64(c.spots.iter().map(|s| s.frame_id).collect()),
    ));
    it.put(prim(
        P_DELIVERED_NS,
        VR::UV,
        PrimitiveValue::U64(c.spots.iter().map(|s| s.delivered_unix_ns).collect()),
    ));
    it.put(int_s(P_LAYER, c.layer as i64));
    it.put(prim(
        P_NOMINAL_ENERGY,
        VR::FD,
        PrimitiveValue::from(c.nominal_energy_mev_u),
    ));
    it
}

/// One beam as the record states it in standard attributes, in the Primary Dosimeter Unit.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamSummary {
    /// Referenced Beam Number.
    pub beam_number: i32,
    /// Beam Name.
    pub beam_name: String,
    /// Specified Primary Meterset.
    pub specified_meterset: Option<f64>,
    /// Delivered Primary Meterset.
    pub delivered_meterset: Option<f64>,
    /// Treatment Termination Status, as written.
    pub termination_status: String,
    /// The machine-specific termination code (Code Value).
    pub termination_code: Option<String>,
    /// Treatment Termination Description.
    pub termination_description: Option<String>,
    /// Ion Control Point Delivery items.
    pub control_points: usize,
}

/// A treatment record read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRecord {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Primary Dosimeter Unit.
    pub primary_dosimeter_unit: String,
    /// Treatment Date and Time as written (DA, TM).
    pub treatment_date_time: (String, String),
    /// Per beam, from standard attributes.
    pub beams: Vec<BeamSummary>,
    /// The whole record, rebuilt from the standard and the private attributes.
    pub record: TreatmentRecord,
}

fn private_block(obj: &InMemDicomObject, at: &str) -> Result<(), RtRecordError> {
    let creator = attrs::opt_str(
        obj,
        attrs::Attr {
            tag: CREATOR,
            name: "PrivateCreator(0071,0010)",
        },
    )
    .map_err(self::at(at))?;
    if creator.as_deref() != Some(PRIVATE_CREATOR) {
        return Err(RtRecordError::Inconsistent {
            at: at.into(),
            what: format!("private creator (0071,0010) is {creator:?}, not {PRIVATE_CREATOR:?}: not written by ionguide"),
        });
    }
    Ok(())
}

fn req_prim<'a>(
    obj: &'a InMemDicomObject,
    tag: Tag,
    name: &'static str,
    at: &str,
) -> Result<&'a PrimitiveValue, RtRecordError> {
    obj.get(tag)
        .and_then(|e| e.value().primitive())
        .ok_or_else(|| RtRecordError::Attr {
            at: at.into(),
            source: AttrError::Missing { name, tag },
        })
}

fn values<T: Copy>(
    v: &PrimitiveValue,
    n: usize,
    name: &'static str,
    at: &str,
    get: impl Fn(&PrimitiveValue) -> Option<&[T]>,
) -> Result<Vec<T>, RtRecordError> {
    let vals = get(v).ok_or_else(|| RtRecordError::Inconsistent {
        at: at.into(),
        what: format!("{name} has the wrong value representation"),
    })?;
    if vals.len() != n {
        return Err(RtRecordError::Inconsistent {
            at: at.into(),
            what: format!(
                "{name} has {} values, Number of Scan Spot Positions says {n}",
                vals.len()
            ),
        });
    }
    Ok(vals.to_vec())
}

fn as_f32(v: &PrimitiveValue) -> Option<&[f32]> {
    match v {
        PrimitiveValue::F32(x) => Some(x),
        _ => None,
    }
}

fn u64s(v: &PrimitiveValue) -> Option<&[u64]> {
    match v {
        PrimitiveValue::U64(x) => Some(x),
        _ => None,
    }
}

/// Reads a treatment record written by [`write_treatment_record`] from Part 10 bytes.
pub fn read_treatment_record(bytes: &[u8]) -> Result<ReadRecord, RtRecordError> {
    let obj = attrs::parse(bytes, Read::Whole).map_err(RtRecordError::Open)?;
    let class = attrs::sop_class_uid(&obj).map_err(at("SOP Common"))?;
    if class != RT_ION_BEAMS_TREATMENT_RECORD_SOP_CLASS {
        return Err(RtRecordError::NotRecord(class));
    }
    let top = "top level";
    let sop_instance_uid =
        attrs::req_str(&obj, attr!(SOP_INSTANCE_UID, "SOPInstanceUID")).map_err(at(top))?;
    let unit =
        attrs::req_str(&obj, attr!(PRIMARY_DOSIMETER_UNIT, "PrimaryDosimeterUnit")).map_err(at(top))?;
    let date = attrs::opt_str(&obj, attr!(TREATMENT_DATE, "TreatmentDate"))
        .map_err(at(top))?
        .unwrap_or_default();
    let time = attrs::opt_str(&obj, attr!(TREATMENT_TIME, "TreatmentTime"))
        .map_err(at(top))?
        .unwrap_or_default();
    let patient_id = attrs::opt_str(&obj, attr!(PATIENT_ID, "PatientID"))
        .map_err(at(top))?
        .unwrap_or_default();
    let plan_ref = attrs::opt_first_item(
        &obj,
        attr!(REFERENCED_RT_PLAN_SEQUENCE, "ReferencedRTPlanSequence"),
    )
    .map_err(at(top))?
    .ok_or_else(|| RtRecordError::Attr {
        at: top.into(),
        source: AttrError::Missing {
            name: "ReferencedRTPlanSequence",
            tag: tags::REFERENCED_RT_PLAN_SEQUENCE,
        },
    })?;
    let plan_uid = attrs::req_str(
        plan_ref,
        attr!(REFERENCED_SOP_INSTANCE_UID, "ReferencedSOPInstanceUID"),
    )
    .map_err(at("Referenced RT Plan Sequence"))?;
    private_block(&obj, top)?;
    let treatment_unix_ns = match req_prim(&obj, P_TREATMENT_NS, "TreatmentInstant(0071,1020)", top)? {
        PrimitiveValue::U64(v) if v.len() == 1 => v[0],
        _ => {
            return Err(RtRecordError::Inconsistent {
                at: top.into(),
                what: "the treatment instant (0071,1020) is not one UV value".into(),
            })
        }
    };
    let items = attrs::req_items(
        &obj,
        attr!(
            TREATMENT_SESSION_ION_BEAM_SEQUENCE,
            "TreatmentSessionIonBeamSequence"
        ),
    )
    .map_err(at(top))?;
    let mut summaries = Vec::with_capacity(items.len());
    let mut beams = Vec::with_capacity(items.len());
    for (bi, it) in items.iter().enumerate() {
        let bat = format!("beam item {bi}");
        let number = attrs::opt_int::<i32>(it, attr!(REFERENCED_BEAM_NUMBER, "ReferencedBeamNumber"))
            .map_err(at(&bat))?
            .ok_or_else(|| RtRecordError::Attr {
                at: bat.clone(),
                source: AttrError::Missing {
                    name: "ReferencedBeamNumber",
                    tag: tags::REFERENCED_BEAM_NUMBER,
                },
            })?;
        let name = attrs::req_str(it, attr!(BEAM_NAME, "BeamName")).map_err(at(&bat))?;
        let radiation_type = attrs::req_str(it, attr!(RADIATION_TYPE, "RadiationType")).map_err(at(&bat))?;
        let status_text = attrs::req_str(
            it,
            attr!(TREATMENT_TERMINATION_STATUS, "TreatmentTerminationStatus"),
        )
        .map_err(at(&bat))?;
        let status = TerminationStatus::from_code(&status_text).ok_or_else(|| RtRecordError::Inconsistent {
            at: bat.clone(),
            what: format!("Treatment Termination Status {status_text:?} is not NORMAL, OPERATOR, MACHINE or UNKNOWN"),
        })?;
        let code = attrs::opt_first_item(
            it,
            attr!(
                MACHINE_SPECIFIC_TREATMENT_TERMINATION_CODE_SEQUENCE,
                "MachineSpecificTreatmentTerminationCodeSequence"
            ),
        )
        .map_err(at(&bat))?
        .map(|c| attrs::opt_str(c, attr!(CODE_VALUE, "CodeValue")))
        .transpose()
        .map_err(at(&bat))?
        .flatten();
        let description = attrs::opt_str(
            it,
            attr!(
                TREATMENT_TERMINATION_DESCRIPTION,
                "TreatmentTerminationDescription"
            ),
        )
        .map_err(at(&bat))?;
        let cps = attrs::req_items(
            it,
            attr!(
                ION_CONTROL_POINT_DELIVERY_SEQUENCE,
                "IonControlPointDeliverySequence"
            ),
        )
        .map_err(at(&bat))?;
        let n_cp = attrs::opt_int::<usize>(it, attr!(NUMBER_OF_CONTROL_POINTS, "NumberOfControlPoints"))
            .map_err(at(&bat))?;
        if n_cp != Some(cps.len()) {
            return Err(RtRecordError::Inconsistent {
                at: bat,
                what: format!("Number of Control Points {n_cp:?}, {} delivery items", cps.len()),
            });
        }
        summaries.push(BeamSummary {
            beam_number: number,
            beam_name: name.clone(),
            specified_meterset: attrs::opt_f64(
                it,
                attr!(SPECIFIED_PRIMARY_METERSET, "SpecifiedPrimaryMeterset"),
            )
            .map_err(at(&bat))?,
            delivered_meterset: attrs::opt_f64(
                it,
                attr!(DELIVERED_PRIMARY_METERSET, "DeliveredPrimaryMeterset"),
            )
            .map_err(at(&bat))?,
            termination_status: status_text,
            termination_code: code.clone(),
            termination_description: description.clone(),
            control_points: cps.len(),
        });
        private_block(it, &bat)?;
        let beam_index = attrs::opt_int::<usize>(
            it,
            attrs::Attr {
                tag: P_BEAM_INDEX,
                name: "BeamIndex(0071,1010)",
            },
        )
        .map_err(at(&bat))?
        .ok_or_else(|| RtRecordError::Attr {
            at: bat.clone(),
            source: AttrError::Missing {
                name: "BeamIndex(0071,1010)",
                tag: P_BEAM_INDEX,
            },
        })?;
        let specified_meterset = match req_prim(it, P_SPECIFIED, "SpecifiedMeterset(0071,1012)", &bat)? {
            PrimitiveValue::F64(v) if v.len() == 1 && v[0].is_finite() => v[0],
            _ => {
                return Err(RtRecordError::Inconsistent {
                    at: bat,
                    what: "the specified meterset (0071,1012) is not one finite FD value".into(),
                })
            }
        };
        let mut control_points = Vec::with_capacity(cps.len());
        for (ci, cp) in cps.iter().enumerate() {
            control_points.push(read_control_point(cp, &format!("{bat} delivery item {ci}"))?);
        }
        beams.push(BeamDelivery {
            beam_index,
            beam_number: number,
            beam_name: name,
            radiation_type,
            specified_meterset,
            termination: Termination {
                status,
                code: code.unwrap_or_default(),
                description: description.unwrap_or_default(),
            },
            control_points,
        });
    }
    Ok(ReadRecord {
        sop_instance_uid,
        primary_dosimeter_unit: unit,
        treatment_date_time: (date, time),
        beams: summaries,
        record: TreatmentRecord {
            plan_sop_instance_uid: plan_uid,
            patient_id,
            treatment_unix_ns,
            beams,
        },
    })
}

fn read_control_point(cp: &InMemDicomObject, cat: &str) -> Result<ControlPointDelivery, RtRecordError> {
    let n = attrs::opt_int::<usize>(
        cp,
        attr!(NUMBER_OF_SCAN_SPOT_POSITIONS, "NumberOfScanSpotPositions"),
    )
    .map_err(at(cat))?
    .ok_or_else(|| RtRecordError::Attr {
        at: cat.into(),
        source: AttrError::Missing {
            name: "NumberOfScanSpotPositions",
            tag: tags::NUMBER_OF_SCAN_SPOT_POSITIONS,
        },
    })?;
    let map = values(
        req_prim(cp, tags::SCAN_SPOT_POSITION_MAP, "ScanSpotPositionMap", cat)?,
        2 * n,
        "ScanSpotPositionMap (pairs)",
        cat,
        as_f32,
    )?;
    private_block(cp, cat)?;
    let layer = attrs::opt_int::<usize>(
        cp,
        attrs::Attr {
            tag: P_LAYER,
            name: "Layer(0071,1011)",
        },
    )
    .map_err(at(cat))?
    .ok_or_else(|| RtRecordError::Attr {
        at: cat.into(),
        source: AttrError::Missing {
            name: "Layer(0071,1011)",
            tag: P_LAYER,
        },
    })?;
    let energy = match req_prim(cp, P_NOMINAL_ENERGY, "NominalEnergy(0071,1013)", cat)? {
        PrimitiveValue::F64(v) if v.len() == 1 && v[0].is_finite() => v[0],
        _ => {
            return Err(RtRecordError::Inconsistent {
                at: cat.into(),
                what: "the nominal energy (0071,1013) is not one finite FD value".into(),
            })
        }
    };
    let index = values(
        req_prim(cp, P_SPOT_INDEX, "SpotIndex(0071,1001)", cat)?,
        n,
        "SpotIndex(0071,1001)",
        cat,
        |v| match v {
            PrimitiveValue::U32(x) => Some(x),
            _ => None,
        },
    )?;
    let e = values(
        req_prim(cp, P_ENERGY, "Energy(0071,1002)", cat)?,
        n,
        "Energy(0071,1002)",
        cat,
        as_f32,
    )?;
    let rs = values(
        req_prim(cp, P_RANGE_SHIFTER, "RangeShifter(0071,1003)", cat)?,
        n,
        "RangeShifter(0071,1003)",
        cat,
        as_f32,
    )?;
    let m = values(
        req_prim(cp, P_METERSET, "Meterset(0071,1004)", cat)?,
        n,
        "Meterset(0071,1004)",
        cat,
        |v| match v {
            PrimitiveValue::F64(x) => Some(x),
            _ => None,
        },
    )?;
    let f = values(
        req_prim(cp, P_FRAME_ID, "FrameId(0071,1005)", cat)?,
        n,
        "FrameId(0071,1005)",
        cat,
        u64s,
    )?;
    let t = values(
        req_prim(cp, P_DELIVERED_NS, "DeliveredAt(0071,1006)", cat)?,
        n,
        "DeliveredAt(0071,1006)",
        cat,
        u64s,
    )?;
    let mut spots = Vec::with_capacity(n);
    for k in 0..n {
        let d = DeliveredSpot {
            spot: SpotCorrection {
                spot_index: index[k],
                x_mm: map[2 * k],
                y_mm: map[2 * k + 1],
                energy_mev_u: e[k],
                range_shifter_mm_we: rs[k],
            },
            meterset: m[k],
            frame_id: f[k],
            delivered_unix_ns: t[k],
        };
        if !d.is_sane() {
            return Err(RtRecordError::Inconsistent {
                at: cat.into(),
                what: format!("spot {k} has a non-finite value or a negative meterset"),
            });
        }
        spots.push(d);
    }
    Ok(ControlPointDelivery {
        layer,
        nominal_energy_mev_u: energy,
        spots,
    })
}
