//! Writing a dose grid (Gy, on a possibly rotated [`Grid`](crate::geometry::Grid)) as a multi-frame RT Dose object:
//! physical dose of one plan, 32-bit unsigned stored values times Dose Grid Scaling.
//!
//! The scaling is `max dose / (2³² − 1)`, so the maximum uses the whole stored range and any
//! voxel reads back within half a quantum (`scaling / 2`) of the f32 it was written from.
//! Deterministic: the same grid and identity give the same bytes.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::ct::write::producer_meta;
use crate::uids::{RT_DOSE_SOP_CLASS, RT_ION_PLAN_SOP_CLASS};
use crate::volume::Volume;
use crate::write::elements::{ds, int_s, ow, part10, sq, text, us};
use crate::write::{check_uid, Producer, WriteError};

/// The identity an RT Dose is written with: the CT's patient, study and Frame of Reference,
/// the plan it is the dose of, and its own series and instance.
#[derive(Debug, Clone, PartialEq)]
pub struct RtDoseIds {
    /// Patient ID (0010,0020), the CT's.
    pub patient_id: String,
    /// Patient's Name (0010,0010), the CT's (empty when unknown).
    pub patient_name: String,
    /// Study Instance UID, the CT's.
    pub study_instance_uid: String,
    /// Frame of Reference UID, the CT's (the dose grid's coordinates are in it).
    pub frame_of_reference_uid: String,
    /// Series Instance UID of the dose.
    pub series_instance_uid: String,
    /// SOP Instance UID of the dose.
    pub sop_instance_uid: String,
    /// SOP Instance UID of the RT Ion Plan this is the dose of.
    pub referenced_plan_sop_instance_uid: String,
    /// Series Number.
    pub series_number: u32,
    /// Study and content date (DA, `YYYYMMDD`, or empty when unknown).
    pub date: String,
    /// Study and content time (TM, `HHMMSS`, or empty when unknown).
    pub time: String,
}

/// Why a dose grid cannot be written as RT Dose.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtDoseError {
    /// A voxel's dose is NaN, infinite or negative: no stored value means it.
    #[error("dose voxel ({i}, {j}, {k}) is {value} Gy; RT Dose stores finite doses ≥ 0")]
    BadDose {
        /// Column index.
        i: usize,
        /// Row index.
        j: usize,
        /// Frame index.
        k: usize,
        /// The value.
        value: f32,
    },
    /// Rows or Columns (US) cannot hold the grid's size, or Number of Frames is too large.
    #[error("dose grid {dims:?} does not fit RT Dose (rows and columns ≤ 65535)")]
    TooLarge {
        /// Grid dimensions `[i, j, k]`.
        dims: [usize; 3],
    },
    /// An identifier is not usable, or the object cannot be encoded.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Dose Grid Scaling for a grid whose largest dose is `max_gy`: the maximum stores as
/// `u32::MAX`. An all-zero grid gets 1 (any scaling stores zeros).
pub fn dose_grid_scaling(max_gy: f32) -> f64 {
    if max_gy > 0.0 {
        f64::from(max_gy) / f64::from(u32::MAX)
    } else {
        1.0
    }
}

/// Writes `dose` (Gy) as a Part 10 RT Dose object (Explicit VR Little Endian): Dose Units
/// GY, Dose Type PHYSICAL, Dose Summation Type PLAN, one frame per `k` plane.
pub fn write_rt_dose(
    dose: &Volume<f32>,
    ids: &RtDoseIds,
    producer: &Producer,
) -> Result<Vec<u8>, RtDoseError> {
    for (name, uid) in [
        ("Study Instance UID", &ids.study_instance_uid),
        ("Frame of Reference UID", &ids.frame_of_reference_uid),
        ("Series Instance UID", &ids.series_instance_uid),
        ("SOP Instance UID", &ids.sop_instance_uid),
        (
            "Referenced RT Plan SOP Instance UID",
            &ids.referenced_plan_sop_instance_uid,
        ),
    ] {
        check_uid(name, uid, 64)?;
    }
    let grid = dose.grid();
    let [nx, ny, nz] = grid.dims();
    let (rows, cols) = match (u16::try_from(ny), u16::try_from(nx)) {
        (Ok(r), Ok(c)) if i64::try_from(nz).is_ok() => (r, c),
        _ => return Err(RtDoseError::TooLarge { dims: grid.dims() }),
    };
    let data = dose.as_slice();
    let mut max = 0.0f32;
    for (n, &v) in data.iter().enumerate() {
        if !(v.is_finite() && v >= 0.0) {
            let (i, j, k) = (n % nx, (n / nx) % ny, n / (nx * ny));
            return Err(RtDoseError::BadDose { i, j, k, value: v });
        }
        max = max.max(v);
    }
    let scaling = dose_grid_scaling(max);

    let mut o = InMemDicomObject::new_empty();
    // Patient, General Study.
    o.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    o.put(text(tags::SOP_CLASS_UID, VR::UI, RT_DOSE_SOP_CLASS));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &ids.sop_instance_uid));
    o.put(text(tags::STUDY_DATE, VR::DA, &ids.date));
    o.put(text(tags::CONTENT_DATE, VR::DA, &ids.date));
    o.put(text(tags::STUDY_TIME, VR::TM, &ids.time));
    o.put(text(tags::CONTENT_TIME, VR::TM, &ids.time));
    o.put(text(tags::ACCESSION_NUMBER, VR::SH, ""));
    o.put(text(tags::MODALITY, VR::CS, "RTDOSE"));
    o.put(text(tags::MANUFACTURER, VR::LO, producer.manufacturer));
    o.put(text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""));
    o.put(text(tags::PATIENT_NAME, VR::PN, &ids.patient_name));
    o.put(text(tags::PATIENT_ID, VR::LO, &ids.patient_id));
    o.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, ""));
    o.put(text(tags::PATIENT_SEX, VR::CS, ""));
    o.put(text(tags::SLICE_THICKNESS, VR::DS, ""));
    o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &ids.study_instance_uid));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_instance_uid));
    o.put(text(tags::STUDY_ID, VR::SH, ""));
    o.put(int_s(tags::SERIES_NUMBER, ids.series_number.into()));
    o.put(int_s(tags::INSTANCE_NUMBER, 1));

    // Image Plane: the first frame's corner voxel, the i and j directions, the spacings.
    let s = grid.spacing_mm();
    let d = grid.direction();
    let iop = [d[(0, 0)], d[(1, 0)], d[(2, 0)], d[(0, 1)], d[(1, 1)], d[(2, 1)]];
    let p0 = grid.index_to_patient([0.0, 0.0, 0.0]);
    o.put(ds(tags::IMAGE_POSITION_PATIENT, &[p0.x, p0.y, p0.z]));
    o.put(ds(tags::IMAGE_ORIENTATION_PATIENT, &iop));
    o.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &ids.frame_of_reference_uid,
    ));
    o.put(text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));

    // Image Pixel and Multi-frame.
    o.put(us(tags::SAMPLES_PER_PIXEL, 1));
    o.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    o.put(int_s(tags::NUMBER_OF_FRAMES, nz as i64));
    // Frames step along Grid Frame Offset Vector.
    o.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        PrimitiveValue::Tags([tags::GRID_FRAME_OFFSET_VECTOR].into_iter().collect()),
    ));
    o.put(us(tags::ROWS, rows));
    o.put(us(tags::COLUMNS, cols));
    // Pixel Spacing is row spacing (along j), then column spacing (along i).
    o.put(ds(tags::PIXEL_SPACING, &[s[1], s[0]]));
    o.put(us(tags::BITS_ALLOCATED, 32));
    o.put(us(tags::BITS_STORED, 32));
    o.put(us(tags::HIGH_BIT, 31));
    o.put(us(tags::PIXEL_REPRESENTATION, 0));

    // RT Dose: offsets of each frame from the first along the image plane's normal
    // (row × column), which is what readers place frames by, rotated grid or not.
    let normal = d.column(0).cross(&d.column(1));
    let offsets: Vec<f64> = (0..nz)
        .map(|k| {
            let p = grid.index_to_patient([0.0, 0.0, k as f64]);
            (p - p0).dot(&normal)
        })
        .collect();
    o.put(text(tags::DOSE_UNITS, VR::CS, "GY"));
    o.put(text(tags::DOSE_TYPE, VR::CS, "PHYSICAL"));
    o.put(text(tags::DOSE_SUMMATION_TYPE, VR::CS, "PLAN"));
    o.put(ds(tags::GRID_FRAME_OFFSET_VECTOR, &offsets));
    o.put(ds(tags::DOSE_GRID_SCALING, &[scaling]));
    let mut plan_ref = InMemDicomObject::new_empty();
    plan_ref.put(text(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        RT_ION_PLAN_SOP_CLASS,
    ));
    plan_ref.put(text(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &ids.referenced_plan_sop_instance_uid,
    ));
    o.put(sq(tags::REFERENCED_RT_PLAN_SEQUENCE, vec![plan_ref]));

    let mut px = Vec::with_capacity(4 * data.len());
    for &v in data {
        // Rounding to the nearest quantum; the maximum is exactly u32::MAX.
        let stored = (f64::from(v) / scaling).round().min(f64::from(u32::MAX)) as u32;
        px.extend_from_slice(&stored.to_le_bytes());
    }
    o.put(ow(tags::PIXEL_DATA, px));
    let meta = producer_meta(producer, RT_DOSE_SOP_CLASS, &ids.sop_instance_uid);
    Ok(part10(o, meta, "RT Dose")?)
}
