//! Real CT slices rewritten for end-to-end and fault tests: a known shift of the image
//! position, another patient, another Frame of Reference, a new acquisition number and
//! fresh instance UIDs per frame (a scanner never resends an instance).

use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use ionguide::dicom::datetime::UtcOffset;
use ionguide::geometry::RigidTransform;
use ionguide::units::{PointMm, VectorMm};

/// The DICOM files of a folder, sorted by name.
pub fn load_objects(dir: &Path) -> Vec<DefaultDicomObject> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    paths.sort();
    paths.iter().map(|p| open_file(p).unwrap()).collect()
}

/// What to change in every slice of a frame.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    /// Added to Image Position (Patient), mm.
    pub shift_mm: [f64; 3],
    /// New Patient ID.
    pub patient_id: Option<String>,
    /// New Frame of Reference UID.
    pub frame_of_reference_uid: Option<String>,
    /// Overwrite every pixel with this stored value (a featureless frame).
    pub flat_pixels: Option<i16>,
    /// Cut the encoded object to this many bytes (a corrupt frame).
    pub truncate_to: Option<usize>,
    /// Images in Acquisition (0020,1002), as a scanner that announces its frame size writes it.
    pub images_in_acquisition: Option<u32>,
    /// Place the (shifted) slices in another scanner's coordinates: this maps a planning
    /// point to the room's, and turns Image Position and Orientation (Patient) with it.
    pub planning_to_room: Option<RigidTransform>,
    /// When the slices say they were acquired.
    pub acquired: Stamp,
}

/// When a frame's slices say they were acquired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stamp {
    /// When the frame is encoded, as a scanner sending what it just acquired.
    Now,
    /// At this instant, ns since the UNIX epoch.
    At(u64),
    /// No acquisition or content date or time at all: the pipeline reckons validity from
    /// the frame's completion. The default: tests encode frames long before they push them
    /// (and the real series' own times are years old, which a pipeline holds as stale).
    #[default]
    Unstated,
}

fn put_str(obj: &mut DefaultDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Encodes frame number `frame` (Acquisition Number, fresh SOP Instance UIDs, acquisition
/// time) with `edit`.
pub fn frame_bytes(objects: &[DefaultDicomObject], frame: u32, edit: &Edit) -> Vec<Vec<u8>> {
    let acquired = match edit.acquired {
        Stamp::Now => Some(ionguide::correction::unix_now_ns()),
        Stamp::At(t) => Some(t),
        Stamp::Unstated => None,
    }
    .map(|t| ionguide::dicom::datetime::format_datetime(t as i64, UtcOffset::UTC));
    objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut obj = o.clone();
            let ipp = obj
                .element(tags::IMAGE_POSITION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap();
            let mut moved = PointMm::new(
                ipp[0] + edit.shift_mm[0],
                ipp[1] + edit.shift_mm[1],
                ipp[2] + edit.shift_mm[2],
            );
            if let Some(t) = &edit.planning_to_room {
                moved = t.apply(&moved);
                let iop = obj
                    .element(tags::IMAGE_ORIENTATION_PATIENT)
                    .unwrap()
                    .to_multi_float64()
                    .unwrap();
                let row = t.apply_vector(&VectorMm::new(iop[0], iop[1], iop[2]));
                let col = t.apply_vector(&VectorMm::new(iop[3], iop[4], iop[5]));
                let turned: Vec<String> = row.iter().chain(col.iter()).map(|v| format!("{v:.10}")).collect();
                obj.put(DataElement::new(
                    tags::IMAGE_ORIENTATION_PATIENT,
                    VR::DS,
                    PrimitiveValue::Strs(turned.into_iter().collect()),
                ));
            }
            let moved: Vec<String> = moved.iter().map(|v| format!("{v:.4}")).collect();
            obj.put(DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                PrimitiveValue::Strs(moved.into_iter().collect()),
            ));
            obj.put(DataElement::new(
                tags::ACQUISITION_NUMBER,
                VR::IS,
                PrimitiveValue::from(frame.to_string()),
            ));
            let uid = format!("2.25.{}{:04}{:04}", 9_000_000 + frame, i, frame % 10_000);
            put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &uid);
            obj.update_meta(|m| m.media_storage_sop_instance_uid = uid.clone());
            match &acquired {
                // what a scanner writes: the instant with its offset, and the same in UTC
                // date and time
                Some(dt) => {
                    put_str(&mut obj, tags::ACQUISITION_DATE_TIME, VR::DT, dt);
                    put_str(&mut obj, tags::ACQUISITION_DATE, VR::DA, &dt[..8]);
                    put_str(&mut obj, tags::ACQUISITION_TIME, VR::TM, &dt[8..21]);
                    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, &dt[..8]);
                    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, &dt[8..21]);
                }
                None => {
                    for tag in [
                        tags::ACQUISITION_DATE_TIME,
                        tags::ACQUISITION_DATE,
                        tags::ACQUISITION_TIME,
                        tags::CONTENT_DATE,
                        tags::CONTENT_TIME,
                    ] {
                        obj.remove_element(tag);
                    }
                }
            }
            if let Some(p) = &edit.patient_id {
                put_str(&mut obj, tags::PATIENT_ID, VR::LO, p);
            }
            if let Some(n) = edit.images_in_acquisition {
                obj.put(DataElement::new(
                    tags::IMAGES_IN_ACQUISITION,
                    VR::IS,
                    PrimitiveValue::from(n.to_string()),
                ));
            }
            if let Some(f) = &edit.frame_of_reference_uid {
                put_str(&mut obj, tags::FRAME_OF_REFERENCE_UID, VR::UI, f);
            }
            if let Some(v) = edit.flat_pixels {
                let n = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len() / 2;
                let bytes: Vec<u8> = std::iter::repeat_n(v.to_le_bytes(), n).flatten().collect();
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::from(bytes),
                ));
            }
            let mut out = Vec::new();
            obj.write_all(&mut out).unwrap();
            if let Some(n) = edit.truncate_to {
                out.truncate(n);
            }
            out
        })
        .collect()
}

/// Sets `tag` to `value` wherever it already holds a value in `obj`, at the top level and in
/// every item of every sequence, however deep; returns how many elements it replaced.
pub fn replace_everywhere(
    obj: &mut dicom_object::InMemDicomObject,
    tag: dicom_core::Tag,
    vr: VR,
    value: &PrimitiveValue,
) -> usize {
    let mut n = 0;
    if obj.element(tag).is_ok() {
        obj.put(DataElement::new(tag, vr, value.clone()));
        n += 1;
    }
    let sequences: Vec<dicom_core::Tag> = obj
        .iter()
        .filter(|e| e.vr() == VR::SQ)
        .map(|e| e.header().tag)
        .collect();
    for t in sequences {
        let Some(items) = obj.element(t).ok().and_then(|e| e.items()) else {
            continue;
        };
        let mut items = items.to_vec();
        let inner: usize = items
            .iter_mut()
            .map(|item| replace_everywhere(item, tag, vr, value))
            .sum();
        if inner > 0 {
            obj.put(DataElement::new(
                t,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(items),
            ));
            n += inner;
        }
    }
    n
}

/// Copies the DICOM file `src` to `dst` with each `(tag, VR, value)` replaced wherever it
/// occurs (see [`replace_everywhere`]); panics when an edit finds nothing to replace, so a
/// test cannot pass on an edit that did not happen.
pub fn edited_copy(src: &Path, dst: &Path, edits: &[(dicom_core::Tag, VR, PrimitiveValue)]) {
    let mut obj = open_file(src).unwrap();
    for (tag, vr, value) in edits {
        let n = replace_everywhere(&mut obj, *tag, *vr, value);
        assert!(n > 0, "{} holds no {tag} to replace", src.display());
    }
    obj.write_to_file(dst).unwrap();
}

/// A planning input that does not belong with the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The plan in another Frame of Reference than the CT.
    PlanFrameOfReference,
    /// The structure set in another Frame of Reference than the CT.
    StructureSetFrameOfReference,
    /// The plan of another patient.
    PlanPatient,
    /// Every beam's isocenter 5 m from the patient.
    IsocenterOutsideCt,
    /// The plan made on another structure set.
    PlanStructureSet,
}

impl Mismatch {
    /// Every case.
    pub const ALL: [Mismatch; 5] = [
        Mismatch::PlanFrameOfReference,
        Mismatch::StructureSetFrameOfReference,
        Mismatch::PlanPatient,
        Mismatch::IsocenterOutsideCt,
        Mismatch::PlanStructureSet,
    ];
}

fn first_str(path: &Path, tag: dicom_core::Tag) -> String {
    open_file(path)
        .unwrap()
        .element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

/// Makes `case` by editing a copy of the real structure set or plan in `dir`: returns the
/// CT folder, structure set and plan to configure, and two texts the refusal must name (the
/// edited value and the value it contradicts, read from the untouched files with dicom-rs).
pub fn mismatched(
    case: Mismatch,
    [ct, rs, plan]: [&Path; 3],
    dir: &Path,
) -> ([std::path::PathBuf; 3], [String; 2]) {
    let slice = std::fs::read_dir(ct)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "dcm"))
        .unwrap();
    let (ct_for, ct_patient) = (
        first_str(&slice, tags::FRAME_OF_REFERENCE_UID),
        first_str(&slice, tags::PATIENT_ID),
    );
    let uid = |v: &str| (VR::UI, PrimitiveValue::from(v));
    let copy = |src: &Path, edits: Vec<(dicom_core::Tag, (VR, PrimitiveValue))>| {
        let dst = dir.join(format!("edited-{}", src.file_name().unwrap().to_string_lossy()));
        let edits: Vec<_> = edits.into_iter().map(|(t, (vr, v))| (t, vr, v)).collect();
        edited_copy(src, &dst, &edits);
        dst
    };
    let mut files = [ct.to_path_buf(), rs.to_path_buf(), plan.to_path_buf()];
    let values = match case {
        Mismatch::PlanFrameOfReference => {
            files[2] = copy(plan, vec![(tags::FRAME_OF_REFERENCE_UID, uid("2.25.1901"))]);
            ["2.25.1901".to_string(), ct_for]
        }
        Mismatch::StructureSetFrameOfReference => {
            files[1] = copy(
                rs,
                vec![
                    (tags::FRAME_OF_REFERENCE_UID, uid("2.25.1902")),
                    (tags::REFERENCED_FRAME_OF_REFERENCE_UID, uid("2.25.1902")),
                ],
            );
            ["2.25.1902".to_string(), ct_for]
        }
        Mismatch::PlanPatient => {
            files[2] = copy(
                plan,
                vec![(tags::PATIENT_ID, (VR::LO, PrimitiveValue::from("STS_002")))],
            );
            ["\"STS_002\"".to_string(), format!("{ct_patient:?}")]
        }
        Mismatch::IsocenterOutsideCt => {
            let iso = PrimitiveValue::Strs(
                ["0".to_string(), "0".to_string(), "5000".to_string()]
                    .into_iter()
                    .collect(),
            );
            files[2] = copy(plan, vec![(tags::ISOCENTER_POSITION, (VR::DS, iso))]);
            ["(0.00, 0.00, 5000.00) mm".to_string(), ct.display().to_string()]
        }
        Mismatch::PlanStructureSet => {
            files[2] = copy(plan, vec![(tags::REFERENCED_SOP_INSTANCE_UID, uid("2.25.1903"))]);
            ["2.25.1903".to_string(), first_str(rs, tags::SOP_INSTANCE_UID)]
        }
    };
    (files, values)
}
