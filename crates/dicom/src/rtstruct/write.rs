//! Writing a [`StructureSet`] as an RT Structure Set that references the CT series it was
//! drawn on.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::ct::write::{producer_meta, CtSeriesIds};
use crate::structure::{Roi, StructureSet};
use crate::uids::{CT_SOP_CLASS, RT_STRUCTURE_SET_SOP_CLASS};
use crate::write::elements::{ds, int_s, int_s_multi, part10, sq, text};
use crate::write::{check_uid, Producer, WriteError};

/// Detached Study Management SOP Class: what the RT Structure Set module has its Referenced
/// Study items name.
const DETACHED_STUDY_MANAGEMENT_SOP_CLASS: &str = "1.2.840.10008.3.1.2.3.1";

/// Distinct, fixed display colours, by ROI position.
const DISPLAY_COLOURS: [[i64; 3]; 5] = [
    [255, 200, 150],
    [0, 128, 255],
    [0, 200, 255],
    [255, 0, 0],
    [255, 128, 0],
];

/// The structure set's own identity (its patient and study are the CT's).
#[derive(Debug, Clone, PartialEq)]
pub struct StructureSetIds {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Series Number.
    pub series_number: u32,
    /// Structure Set Label (SH, at most 16 characters).
    pub label: String,
}

/// The RT ROI Interpreted Type an ROI name conventionally means (BODY is the external
/// contour, GTV and PTV are targets, anything else an organ).
pub fn interpreted_type(name: &str) -> &'static str {
    match name {
        "BODY" => "EXTERNAL",
        "GTV" => "GTV",
        "PTV" => "PTV",
        _ => "ORGAN",
    }
}

/// Writes `ss` as an RT Structure Set referencing the CT series `ct_ids` (its Frame of
/// Reference, study, series and its `ct_slices` slice instances), dated as the CT.
///
/// With `ct_slices` = 0 no slice is referenced (for a series read from elsewhere, whose
/// slice UIDs do not follow `sop_instance_uid_root`): its UIDs then only need to be UIDs
/// (≤ 64 characters), not leave room for slice suffixes.
pub fn write_structure_set(
    ss: &StructureSet,
    ct_ids: &CtSeriesIds,
    ct_slices: usize,
    ids: &StructureSetIds,
    producer: &Producer,
) -> Result<Vec<u8>, WriteError> {
    if ct_slices > 0 {
        ct_ids.validate()?;
    } else {
        for (name, uid) in [
            ("Study Instance UID", &ct_ids.study_instance_uid),
            ("Series Instance UID", &ct_ids.series_instance_uid),
            ("Frame of Reference UID", &ct_ids.frame_of_reference_uid),
        ] {
            check_uid(name, uid, 64)?;
        }
    }
    check_uid("structure set SOP Instance UID", &ids.sop_instance_uid, 64)?;
    check_uid("structure set Series Instance UID", &ids.series_instance_uid, 64)?;
    if ss.frame_of_reference_uid != ct_ids.frame_of_reference_uid {
        return Err(WriteError::BadParameter {
            name: "Frame of Reference UID",
            reason: format!(
                "structures are in {} but the CT series in {}",
                ss.frame_of_reference_uid, ct_ids.frame_of_reference_uid
            ),
        });
    }
    let mut o = InMemDicomObject::new_empty();
    ct_ids.put_patient_study(&mut o);
    put_structure_set_identity(&mut o, ct_ids, ids, producer);
    o.put(sq(
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![referenced_frame_of_reference(ct_ids, ct_slices)],
    ));
    put_rois(&mut o, ss, &ct_ids.frame_of_reference_uid);
    let meta = producer_meta(producer, RT_STRUCTURE_SET_SOP_CLASS, &ids.sop_instance_uid);
    part10(o, meta, "RT Structure Set")
}

/// SOP Common, RT Series and Structure Set identity.
fn put_structure_set_identity(
    o: &mut InMemDicomObject,
    ct_ids: &CtSeriesIds,
    ids: &StructureSetIds,
    producer: &Producer,
) {
    o.put(text(tags::SOP_CLASS_UID, VR::UI, RT_STRUCTURE_SET_SOP_CLASS));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &ids.sop_instance_uid));
    o.put(text(tags::MODALITY, VR::CS, "RTSTRUCT"));
    o.put(text(tags::MANUFACTURER, VR::LO, producer.manufacturer));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_instance_uid));
    o.put(int_s(tags::SERIES_NUMBER, ids.series_number.into()));
    o.put(int_s(tags::INSTANCE_NUMBER, 1));
    o.put(text(tags::STRUCTURE_SET_LABEL, VR::SH, &ids.label));
    o.put(text(tags::STRUCTURE_SET_DATE, VR::DA, &ct_ids.date));
    o.put(text(tags::STRUCTURE_SET_TIME, VR::TM, &ct_ids.time));
}

/// The Referenced Frame of Reference item: Frame of Reference → study → series → every slice.
fn referenced_frame_of_reference(ct_ids: &CtSeriesIds, ct_slices: usize) -> InMemDicomObject {
    let images: Vec<InMemDicomObject> = (0..ct_slices)
        .map(|k| {
            let mut i = InMemDicomObject::new_empty();
            i.put(text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_SOP_CLASS));
            i.put(text(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &ct_ids.sop_instance_uid(k),
            ));
            i
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    series.put(text(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &ct_ids.series_instance_uid,
    ));
    series.put(sq(tags::CONTOUR_IMAGE_SEQUENCE, images));
    let mut study = InMemDicomObject::new_empty();
    study.put(text(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        DETACHED_STUDY_MANAGEMENT_SOP_CLASS,
    ));
    study.put(text(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &ct_ids.study_instance_uid,
    ));
    study.put(sq(tags::RT_REFERENCED_SERIES_SEQUENCE, vec![series]));
    let mut forr = InMemDicomObject::new_empty();
    forr.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &ct_ids.frame_of_reference_uid,
    ));
    forr.put(sq(tags::RT_REFERENCED_STUDY_SEQUENCE, vec![study]));
    forr
}

/// Structure Set ROI, ROI Contour and RT ROI Observations sequences, one item per ROI each.
fn put_rois(o: &mut InMemDicomObject, ss: &StructureSet, frame_of_reference_uid: &str) {
    let mut roi_items = Vec::new();
    let mut contour_items = Vec::new();
    let mut obs_items = Vec::new();
    for (n, roi) in ss.rois.iter().enumerate() {
        roi_items.push(structure_set_roi(roi, frame_of_reference_uid));
        contour_items.push(roi_contour(roi, DISPLAY_COLOURS[n % DISPLAY_COLOURS.len()]));
        obs_items.push(observation(roi, n as i64 + 1));
    }
    o.put(sq(tags::STRUCTURE_SET_ROI_SEQUENCE, roi_items));
    o.put(sq(tags::ROI_CONTOUR_SEQUENCE, contour_items));
    o.put(sq(tags::RTROI_OBSERVATIONS_SEQUENCE, obs_items));
}

fn structure_set_roi(roi: &Roi, frame_of_reference_uid: &str) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    r.put(int_s(tags::ROI_NUMBER, roi.number.into()));
    r.put(text(
        tags::REFERENCED_FRAME_OF_REFERENCE_UID,
        VR::UI,
        frame_of_reference_uid,
    ));
    r.put(text(tags::ROI_NAME, VR::LO, &roi.name));
    r.put(text(tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC"));
    r
}

/// The ROI's contours, all CLOSED_PLANAR.
fn roi_contour(roi: &Roi, colour: [i64; 3]) -> InMemDicomObject {
    let contours: Vec<InMemDicomObject> = roi
        .contours
        .iter()
        .map(|c| {
            let mut ci = InMemDicomObject::new_empty();
            ci.put(text(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR"));
            ci.put(int_s(tags::NUMBER_OF_CONTOUR_POINTS, c.points_mm.len() as i64));
            let xyz: Vec<f64> = c.points_mm.iter().flat_map(|p| [p.x, p.y, p.z]).collect();
            ci.put(ds(tags::CONTOUR_DATA, &xyz));
            ci
        })
        .collect();
    let mut rc = InMemDicomObject::new_empty();
    rc.put(int_s_multi(tags::ROI_DISPLAY_COLOR, &colour));
    rc.put(int_s(tags::REFERENCED_ROI_NUMBER, roi.number.into()));
    rc.put(sq(tags::CONTOUR_SEQUENCE, contours));
    rc
}

fn observation(roi: &Roi, observation_number: i64) -> InMemDicomObject {
    let mut ob = InMemDicomObject::new_empty();
    ob.put(int_s(tags::OBSERVATION_NUMBER, observation_number));
    ob.put(int_s(tags::REFERENCED_ROI_NUMBER, roi.number.into()));
    ob.put(text(
        tags::RTROI_INTERPRETED_TYPE,
        VR::CS,
        interpreted_type(&roi.name),
    ));
    ob.put(text(tags::ROI_INTERPRETER, VR::PN, ""));
    ob
}
