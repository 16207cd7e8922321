//! Real CT slices rewritten for end-to-end and fault tests: a known shift of the image
//! position, another patient, another Frame of Reference, a new acquisition number and
//! fresh instance UIDs per frame (a scanner never resends an instance).

use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
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
}

fn put_str(obj: &mut DefaultDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Encodes frame number `frame` (Acquisition Number, fresh SOP Instance UIDs) with `edit`.
pub fn frame_bytes(objects: &[DefaultDicomObject], frame: u32, edit: &Edit) -> Vec<Vec<u8>> {
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
