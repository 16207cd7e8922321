//! DICOM writing of CT series and structure sets, and the in-room frame synthesizer.
//!
//! Everything is deterministic: UIDs come from a seed and a label ([`uid_from_seed`](crate::uid::uid_from_seed)), noise
//! from a seed per frame, dates are fixed. The same inputs give byte-identical output.

use std::f64::consts::PI;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use ionguide::dicom::rtplan::format_ds;
use ionguide::dicom::uids::{CT_SOP_CLASS, EXPLICIT_VR_LE, RT_STRUCTURE_SET_SOP_CLASS};
use ionguide::geometry::{Grid, RoomSetup};
use ionguide::structure::StructureSet;
use ionguide::units::Hu;
use ionguide::volume::CtVolume;

use crate::phantom::{Phantom, PhantomError};
use crate::rng::{derive_seed, SplitMix64};
use crate::uid::uid_from_seed;

/// Stored value = HU − this; −1024 keeps air at 0 as most scanners do.
const RESCALE_INTERCEPT: f64 = -1024.0;
/// Fixed dates keep output byte-identical between runs.
const FIXED_DATE: &str = "20260101";
const FIXED_TIME: &str = "120000";

/// Why DICOM output cannot be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The file meta group cannot be built.
    #[error("cannot build DICOM file meta for {what}")]
    Meta {
        /// Which object.
        what: String,
        /// The builder's error.
        #[source]
        source: Box<dicom_object::meta::Error>,
    },
    /// The object cannot be serialized.
    #[error("cannot write DICOM object {what}")]
    Write {
        /// Which object.
        what: String,
        /// The writer's error.
        #[source]
        source: Box<dicom_object::WriteError>,
    },
    /// An identifier or parameter is not usable.
    #[error("invalid {name}: {reason}")]
    BadParameter {
        /// What.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The phantom cannot render the frame.
    #[error(transparent)]
    Phantom(#[from] PhantomError),
}

/// Box–Muller samples from a fixed seed, shifted and scaled to mean 0 and σ 1 exactly.
fn gaussian_table() -> Vec<f32> {
    const N: usize = 1 << 16;
    let mut rng = SplitMix64::new(0x6A09_E667_F3BC_C908);
    let mut t = Vec::with_capacity(N);
    while t.len() < N {
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * PI * u2).sin_cos();
        t.push(r * c);
        t.push(r * s);
    }
    let mean = t.iter().sum::<f64>() / N as f64;
    let sd = (t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / N as f64).sqrt();
    t.iter().map(|v| ((v - mean) / sd) as f32).collect()
}

/// Identifiers of one CT series (and the patient and study it belongs to).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesIds {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Patient's Name (0010,0010), DICOM PN form.
    pub patient_name: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: String,
    /// Series Number.
    pub series_number: u32,
    /// Acquisition Number (one per in-room frame).
    pub acquisition_number: u32,
    /// Temporal Position Identifier (one per in-room frame), if any.
    pub temporal_position: Option<u32>,
    /// Slice `k` gets SOP Instance UID `{sop_instance_uid_root}.{k + 1}`.
    pub sop_instance_uid_root: String,
}

impl SeriesIds {
    /// The planning CT identifiers of a phantom: patient, study and series UIDs derived
    /// from its seed, its Frame of Reference.
    pub fn planning(phantom: &Phantom) -> Self {
        let seed = phantom.spec.seed;
        SeriesIds {
            patient_id: "IONGUIDE-PHANTOM".into(),
            patient_name: "Phantom^Thorax".into(),
            study_instance_uid: uid_from_seed(seed, "study", 0),
            series_instance_uid: uid_from_seed(seed, "planning-ct-series", 0),
            frame_of_reference_uid: phantom.spec.frame_of_reference_uid.clone(),
            series_number: 1,
            acquisition_number: 1,
            temporal_position: None,
            sop_instance_uid_root: uid_from_seed(seed, "planning-ct-sop", 0),
        }
    }

    /// SOP Instance UID of slice `k`.
    pub fn sop_instance_uid(&self, k: usize) -> String {
        format!("{}.{}", self.sop_instance_uid_root, k + 1)
    }

    fn validate(&self) -> Result<(), FrameError> {
        for (name, uid) in [
            ("Study Instance UID", &self.study_instance_uid),
            ("Series Instance UID", &self.series_instance_uid),
            ("Frame of Reference UID", &self.frame_of_reference_uid),
            ("SOP Instance UID root", &self.sop_instance_uid_root),
        ] {
            let ok = !uid.is_empty()
                && uid.len() <= 56
                && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && !uid.starts_with('.')
                && !uid.ends_with('.')
                && !uid.contains("..");
            if !ok {
                return Err(FrameError::BadParameter {
                    name,
                    reason: format!(
                        "{uid:?} is not a UID of at most 56 characters (slice suffixes need the rest)"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn text(tag: Tag, vr: VR, s: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(s.to_string()))
}

fn ds(tag: Tag, values: &[f64]) -> DataElement<InMemDicomObject> {
    let strs: Vec<String> = values.iter().map(|v| format_ds(*v)).collect();
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(strs.into()))
}

fn int_s(tag: Tag, v: i64) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::IS, PrimitiveValue::from(v.to_string()))
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

fn sq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn to_part10(
    obj: InMemDicomObject,
    sop_class: &str,
    sop_uid: &str,
    what: &str,
) -> Result<Vec<u8>, FrameError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_uid)
        .transfer_syntax(EXPLICIT_VR_LE)
        .implementation_class_uid("2.25.133380963425137375563702155347418419371")
        .implementation_version_name("IONGUIDE_SIM")
        .build()
        .map_err(|e| FrameError::Meta {
            what: what.to_string(),
            source: Box::new(e),
        })?;
    let file = obj.with_exact_meta(meta);
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| FrameError::Write {
        what: what.to_string(),
        source: Box::new(e),
    })?;
    Ok(out)
}

fn patient_study(o: &mut InMemDicomObject, ids: &SeriesIds) {
    o.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    o.put(text(tags::STUDY_DATE, VR::DA, FIXED_DATE));
    o.put(text(tags::STUDY_TIME, VR::TM, FIXED_TIME));
    o.put(text(tags::ACCESSION_NUMBER, VR::SH, ""));
    o.put(text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""));
    o.put(text(tags::PATIENT_NAME, VR::PN, &ids.patient_name));
    o.put(text(tags::PATIENT_ID, VR::LO, &ids.patient_id));
    o.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, ""));
    o.put(text(tags::PATIENT_SEX, VR::CS, "O"));
    o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &ids.study_instance_uid));
    o.put(text(tags::STUDY_ID, VR::SH, "1"));
}

/// Writes a CT volume as a classic CT series: one Part-10 CT Image Storage object per slice,
/// Explicit VR Little Endian, 16-bit signed stored values with rescale (intercept −1024,
/// slope 1), so every HU from −33 792 to 31 743 round-trips exactly (values outside are
/// clamped).
pub fn write_ct_series(ct: &CtVolume, ids: &SeriesIds) -> Result<Vec<Vec<u8>>, FrameError> {
    write_ct_series_placed(ct, ct.grid(), ids)
}

/// [`write_ct_series`] with the voxels placed on `grid` (same dimensions as the volume's):
/// how another scanner, with its own coordinates, would describe the same images.
pub fn write_ct_series_placed(
    ct: &CtVolume,
    grid: &Grid,
    ids: &SeriesIds,
) -> Result<Vec<Vec<u8>>, FrameError> {
    ids.validate()?;
    if grid.dims() != ct.grid().dims() {
        return Err(FrameError::BadParameter {
            name: "placement grid",
            reason: format!(
                "dimensions {:?} are not the volume's {:?}",
                grid.dims(),
                ct.grid().dims()
            ),
        });
    }
    let g = grid;
    let [nx, ny, nz] = g.dims();
    let (rows, cols) = match (u16::try_from(ny), u16::try_from(nx)) {
        (Ok(r), Ok(c)) => (r, c),
        _ => {
            return Err(FrameError::BadParameter {
                name: "image size",
                reason: format!("{nx}×{ny} exceeds 65535"),
            })
        }
    };
    let s = g.spacing_mm();
    let d = g.direction();
    let iop = [d[(0, 0)], d[(1, 0)], d[(2, 0)], d[(0, 1)], d[(1, 1)], d[(2, 1)]];
    let plane = nx * ny;
    let data = ct.as_slice();
    let mut out = Vec::with_capacity(nz);
    for k in 0..nz {
        let sop_uid = ids.sop_instance_uid(k);
        let mut o = InMemDicomObject::new_empty();
        patient_study(&mut o, ids);
        o.put(text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"));
        o.put(text(tags::SOP_CLASS_UID, VR::UI, CT_SOP_CLASS));
        o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &sop_uid));
        o.put(text(tags::SERIES_DATE, VR::DA, FIXED_DATE));
        o.put(text(tags::ACQUISITION_DATE, VR::DA, FIXED_DATE));
        o.put(text(tags::CONTENT_DATE, VR::DA, FIXED_DATE));
        o.put(text(tags::SERIES_TIME, VR::TM, FIXED_TIME));
        o.put(text(tags::ACQUISITION_TIME, VR::TM, FIXED_TIME));
        o.put(text(tags::CONTENT_TIME, VR::TM, FIXED_TIME));
        o.put(text(tags::MODALITY, VR::CS, "CT"));
        o.put(text(tags::MANUFACTURER, VR::LO, "ionguide-sim"));
        o.put(text(tags::KVP, VR::DS, "120"));
        o.put(ds(tags::SLICE_THICKNESS, &[s[2]]));
        o.put(text(tags::PATIENT_POSITION, VR::CS, "HFS"));
        o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_instance_uid));
        o.put(int_s(tags::SERIES_NUMBER, ids.series_number.into()));
        o.put(int_s(tags::ACQUISITION_NUMBER, ids.acquisition_number.into()));
        o.put(int_s(tags::INSTANCE_NUMBER, k as i64 + 1));
        let p = g.index_to_patient([0.0, 0.0, k as f64]);
        o.put(ds(tags::IMAGE_POSITION_PATIENT, &[p.x, p.y, p.z]));
        o.put(ds(tags::IMAGE_ORIENTATION_PATIENT, &iop));
        o.put(text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &ids.frame_of_reference_uid,
        ));
        if let Some(t) = ids.temporal_position {
            o.put(int_s(tags::TEMPORAL_POSITION_IDENTIFIER, t.into()));
        }
        o.put(text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));
        o.put(ds(tags::SLICE_LOCATION, &[p.z]));
        o.put(int_s(tags::IMAGES_IN_ACQUISITION, nz as i64));
        o.put(us(tags::SAMPLES_PER_PIXEL, 1));
        o.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
        o.put(us(tags::ROWS, rows));
        o.put(us(tags::COLUMNS, cols));
        // Pixel Spacing is row spacing (along j), then column spacing (along i).
        o.put(ds(tags::PIXEL_SPACING, &[s[1], s[0]]));
        o.put(us(tags::BITS_ALLOCATED, 16));
        o.put(us(tags::BITS_STORED, 16));
        o.put(us(tags::HIGH_BIT, 15));
        o.put(us(tags::PIXEL_REPRESENTATION, 1));
        o.put(ds(tags::RESCALE_INTERCEPT, &[RESCALE_INTERCEPT]));
        o.put(ds(tags::RESCALE_SLOPE, &[1.0]));
        o.put(text(tags::RESCALE_TYPE, VR::LO, "HU"));
        let mut px = Vec::with_capacity(2 * plane);
        for &hu in &data[k * plane..(k + 1) * plane] {
            let stored =
                (i32::from(hu) - RESCALE_INTERCEPT as i32).clamp(i16::MIN.into(), i16::MAX.into()) as i16;
            px.extend_from_slice(&stored.to_le_bytes());
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(px),
        ));
        out.push(to_part10(o, CT_SOP_CLASS, &sop_uid, &format!("CT slice {k}"))?);
    }
    Ok(out)
}

/// The RT ROI Interpreted Type for the phantom's ROI names.
fn interpreted_type(name: &str) -> &'static str {
    match name {
        "BODY" => "EXTERNAL",
        "GTV" => "GTV",
        "PTV" => "PTV",
        _ => "ORGAN",
    }
}

/// Writes an RT Structure Set of `ss` referencing the CT series `ct_ids` (its Frame of
/// Reference, study, series and the `ct_slices` slice instances). `sop_instance_uid` names
/// the structure set; its series UID is that plus `.1`.
pub fn write_structure_set(
    ss: &StructureSet,
    ct_ids: &SeriesIds,
    ct_slices: usize,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, FrameError> {
    ct_ids.validate()?;
    if ss.frame_of_reference_uid != ct_ids.frame_of_reference_uid {
        return Err(FrameError::BadParameter {
            name: "Frame of Reference UID",
            reason: format!(
                "structures are in {} but the CT series in {}",
                ss.frame_of_reference_uid, ct_ids.frame_of_reference_uid
            ),
        });
    }
    let mut o = InMemDicomObject::new_empty();
    patient_study(&mut o, ct_ids);
    o.put(text(tags::SOP_CLASS_UID, VR::UI, RT_STRUCTURE_SET_SOP_CLASS));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid));
    o.put(text(tags::MODALITY, VR::CS, "RTSTRUCT"));
    o.put(text(tags::MANUFACTURER, VR::LO, "ionguide-sim"));
    o.put(text(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &format!("{sop_instance_uid}.1"),
    ));
    o.put(int_s(tags::SERIES_NUMBER, 100));
    o.put(int_s(tags::INSTANCE_NUMBER, 1));
    o.put(text(tags::STRUCTURE_SET_LABEL, VR::SH, "PHANTOM"));
    o.put(text(tags::STRUCTURE_SET_DATE, VR::DA, FIXED_DATE));
    o.put(text(tags::STRUCTURE_SET_TIME, VR::TM, FIXED_TIME));

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
    // Detached Study Management SOP Class, as the RT Structure Set module prescribes here.
    study.put(text(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.3.1.2.3.1",
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
    o.put(sq(tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, vec![forr]));

    let mut roi_items = Vec::new();
    let mut contour_items = Vec::new();
    let mut obs_items = Vec::new();
    for (n, roi) in ss.rois.iter().enumerate() {
        let mut r = InMemDicomObject::new_empty();
        r.put(int_s(tags::ROI_NUMBER, roi.number.into()));
        r.put(text(
            tags::REFERENCED_FRAME_OF_REFERENCE_UID,
            VR::UI,
            &ct_ids.frame_of_reference_uid,
        ));
        r.put(text(tags::ROI_NAME, VR::LO, &roi.name));
        r.put(text(tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC"));
        roi_items.push(r);

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
        // Distinct, fixed display colours.
        let colour = [
            [255u16, 200, 150],
            [0, 128, 255],
            [0, 200, 255],
            [255, 0, 0],
            [255, 128, 0],
        ][n % 5];
        rc.put(DataElement::new(
            tags::ROI_DISPLAY_COLOR,
            VR::IS,
            PrimitiveValue::Strs(colour.iter().map(|c| c.to_string()).collect()),
        ));
        rc.put(int_s(tags::REFERENCED_ROI_NUMBER, roi.number.into()));
        rc.put(sq(tags::CONTOUR_SEQUENCE, contours));
        contour_items.push(rc);

        let mut ob = InMemDicomObject::new_empty();
        ob.put(int_s(tags::OBSERVATION_NUMBER, n as i64 + 1));
        ob.put(int_s(tags::REFERENCED_ROI_NUMBER, roi.number.into()));
        ob.put(text(
            tags::RTROI_INTERPRETED_TYPE,
            VR::CS,
            interpreted_type(&roi.name),
        ));
        ob.put(text(tags::ROI_INTERPRETER, VR::PN, ""));
        obs_items.push(ob);
    }
    o.put(sq(tags::STRUCTURE_SET_ROI_SEQUENCE, roi_items));
    o.put(sq(tags::ROI_CONTOUR_SEQUENCE, contour_items));
    o.put(sq(tags::RTROI_OBSERVATIONS_SEQUENCE, obs_items));
    to_part10(
        o,
        RT_STRUCTURE_SET_SOP_CLASS,
        sop_instance_uid,
        "RT Structure Set",
    )
}

/// How in-room frames are made.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameOptions {
    /// `Some(n)`: a slab of `n` slices centred on the planning tumor position; `None`: the
    /// whole phantom volume.
    pub slab_slices: Option<usize>,
    /// Standard deviation of the Gaussian CT noise, HU (0: none).
    pub noise_sigma_hu: f64,
    /// Seed of the noise and of the frame UIDs.
    pub seed: u64,
    /// Overrides the Patient ID (fault tests: a frame of another patient).
    pub patient_id_override: Option<String>,
    /// Overrides the Frame of Reference UID (fault tests: an unregistered frame).
    pub frame_of_reference_override: Option<String>,
    /// Frames from an in-room scanner with its own coordinates: its Frame of Reference and the
    /// map from planning points to its points. Overrides `frame_of_reference_override`.
    pub room: Option<RoomSetup>,
}

impl Default for FrameOptions {
    fn default() -> Self {
        FrameOptions {
            slab_slices: None,
            noise_sigma_hu: 10.0,
            seed: 1,
            patient_id_override: None,
            frame_of_reference_override: None,
            room: None,
        }
    }
}

/// One synthesized in-room frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Frame index (0-based; Acquisition Number and Temporal Position are index + 1).
    pub index: usize,
    /// Tumor displacement rendered, mm LPS (the truth).
    pub displacement_mm: [f64; 3],
    /// Tumor centre in this frame, mm LPS (the truth).
    pub tumor_center_mm: [f64; 3],
    /// One Part-10 CT object per slice.
    pub slices: Vec<Vec<u8>>,
}

/// Makes in-room CT frames of the moving phantom, reusing its volume buffer.
#[derive(Debug, Clone)]
pub struct FrameSynth {
    phantom: Phantom,
    options: FrameOptions,
    ids: SeriesIds,
    volume: CtVolume,
    /// 65,536 standard normal samples (mean 0, σ 1 exactly): a table lookup per voxel is
    /// ~20× cheaper than Box–Muller and a frame's noise stays Gaussian to the eye and to
    /// the registration metric (tails end near ±4.5σ).
    gauss: Vec<f32>,
}

impl FrameSynth {
    /// A synthesizer for `phantom`; frames share `planning_ids`' patient and Frame of
    /// Reference (unless overridden) and get their own series.
    pub fn new(
        phantom: &Phantom,
        planning_ids: &SeriesIds,
        options: FrameOptions,
    ) -> Result<Self, FrameError> {
        if !(options.noise_sigma_hu.is_finite() && options.noise_sigma_hu >= 0.0) {
            return Err(FrameError::BadParameter {
                name: "noise_sigma_hu",
                reason: format!("must be finite and ≥ 0, got {}", options.noise_sigma_hu),
            });
        }
        let grid = match options.slab_slices {
            Some(n) => phantom.slab_grid(n)?,
            None => phantom.grid().clone(),
        };
        let mut ids = planning_ids.clone();
        if let Some(p) = &options.patient_id_override {
            ids.patient_id = p.clone();
        }
        if let Some(f) = &options.frame_of_reference_override {
            ids.frame_of_reference_uid = f.clone();
        }
        if let Some(room) = &options.room {
            ids.frame_of_reference_uid = room.room_frame_of_reference_uid.clone();
        }
        ids.series_instance_uid = uid_from_seed(options.seed, "in-room-series", 0);
        ids.series_number = 2;
        ids.validate()?;
        Ok(FrameSynth {
            phantom: phantom.clone(),
            options,
            ids,
            volume: CtVolume::filled(grid, 0),
            gauss: gaussian_table(),
        })
    }

    /// Renders frame `index` with the tumor displaced by `displacement_mm`, adds noise
    /// (seeded by the options' seed and `index`) and encodes it.
    pub fn frame(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<Frame, FrameError> {
        self.render(index, displacement_mm)?;
        let mut ids = self.ids.clone();
        let n = u32::try_from(index + 1).map_err(|_| FrameError::BadParameter {
            name: "frame index",
            reason: format!("{index} is too large"),
        })?;
        ids.acquisition_number = n;
        ids.temporal_position = Some(n);
        ids.sop_instance_uid_root = uid_from_seed(self.options.seed, "in-room-sop", index as u64);
        let slices = match &self.options.room {
            Some(room) => {
                let placed = self.volume.grid().mapped(&room.planning_to_room);
                write_ct_series_placed(&self.volume, &placed, &ids)?
            }
            None => write_ct_series(&self.volume, &ids)?,
        };
        let c = self.phantom.tumor_center_mm;
        Ok(Frame {
            index,
            displacement_mm,
            tumor_center_mm: [
                c[0] + displacement_mm[0],
                c[1] + displacement_mm[1],
                c[2] + displacement_mm[2],
            ],
            slices,
        })
    }

    /// Renders frame `index` into the internal volume without encoding it.
    pub fn render(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<&CtVolume, FrameError> {
        self.phantom.render_moved(displacement_mm, &mut self.volume)?;
        let sigma = self.options.noise_sigma_hu;
        if sigma > 0.0 {
            let mut rng = SplitMix64::new(derive_seed(self.options.seed, "noise", index as u64));
            let table = &self.gauss;
            // One 64-bit draw gives four 16-bit table indices.
            for quad in self.volume.as_slice_mut().chunks_mut(4) {
                let mut bits = rng.next_u64();
                for v in quad {
                    let z = f64::from(table[(bits & 0xFFFF) as usize]);
                    bits >>= 16;
                    *v = (f64::from(*v) + sigma * z)
                        .round()
                        .clamp(Hu::MIN.into(), Hu::MAX.into()) as Hu;
                }
            }
        }
        Ok(&self.volume)
    }

    /// The last rendered frame volume (with noise).
    pub fn volume(&self) -> &CtVolume {
        &self.volume
    }

    /// The identifiers frames are written with (before the per-frame numbers and UIDs).
    pub fn ids(&self) -> &SeriesIds {
        &self.ids
    }

    /// The phantom.
    pub fn phantom(&self) -> &Phantom {
        &self.phantom
    }
}
