//! CT series ingest: DICOM slices (one file per slice, or one Enhanced CT object) → one HU
//! [`CtVolume`] and its [`SeriesMeta`].
//!
//! Ingest is two passes. Pass 1 parses every header (stopping before Pixel Data), checks that
//! the slices form one regular, untilted series and sorts them along the slice normal
//! `row × column` — never by file name or Instance Number. Pass 2 writes each slice's pixels
//! into its sorted place in the volume, applying Rescale Slope/Intercept there. For native
//! little-endian transfer syntaxes the pixel bytes are read straight out of the input buffer
//! (no intermediate copy of the 24 MB a 512×512×48 frame holds); compressed syntaxes go through
//! `dicom-pixeldata` (RLE, JPEG lossless, JPEG 2000, all pure Rust).
//!
//! Anything a clinic's scanner or network hands over is external input: every fault is a
//! [`CtError`] naming the file (or in-memory slice) and what is wrong, never a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;
use nalgebra::{Matrix3, Vector3};

use crate::dicom::attrs::{self, attr, Attr, AttrError, OpenError, Read};
use crate::geometry::Grid;
use crate::units::{PointMm, VectorMm};
use crate::volume::CtVolume;

/// SOP Class UID of the Enhanced CT Image Storage (multi-frame) object.
pub const ENHANCED_CT_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2.1";
/// SOP Class UID of the classic CT Image Storage object.
pub const CT_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Why a CT series cannot be ingested. Every variant names the file (or in-memory slice,
/// shown as `<memory>/slice-N`) where the fault was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtError {
    /// The file or directory cannot be read.
    #[error("{path}: cannot read", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The input has no DICOM Part 10 `DICM` marker.
    #[error("{path}: not a DICOM file (no DICM marker at byte 128 or 0)", path = path.display())]
    NotDicom {
        /// The file.
        path: PathBuf,
    },
    /// The data ends before the data set does: the file is cut short, or a length field is
    /// corrupt (refused before any allocation of the claimed length).
    #[error("{path}: DICOM data is truncated or has a corrupt length", path = path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Which element runs past the end, or the parser's error.
        #[source]
        source: OpenError,
    },
    /// The data set cannot be parsed.
    #[error("{path}: cannot parse DICOM data set", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// The object is not a CT image.
    #[error("{path}: modality is {found:?}, expected CT", path = path.display())]
    WrongModality {
        /// The file.
        path: PathBuf,
        /// The Modality (or SOP Class) found.
        found: String,
    },
    /// The object has no Pixel Data.
    #[error("{path}: no Pixel Data (7FE0,0010)", path = path.display())]
    NoPixelData {
        /// The file.
        path: PathBuf,
    },
    /// The transfer syntax has no decoder here.
    #[error("{path}: unsupported transfer syntax {ts}", path = path.display())]
    UnsupportedTransferSyntax {
        /// The file.
        path: PathBuf,
        /// Transfer Syntax UID.
        ts: String,
    },
    /// The pixel image format is not a single-sample grayscale CT image.
    #[error("{path}: unsupported pixel format: {what}", path = path.display())]
    UnsupportedPixelFormat {
        /// The file.
        path: PathBuf,
        /// What is unsupported (photometric interpretation, samples, bit depth).
        what: String,
    },
    /// The compressed pixel data cannot be decoded.
    #[error("{path}: cannot decode pixel data in transfer syntax {ts}", path = path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Transfer Syntax UID.
        ts: String,
        /// The decoder's error.
        #[source]
        source: Box<dicom_pixeldata::Error>,
    },
    /// The decoded pixel data is shorter than rows × columns × frames.
    #[error("{path}: pixel data holds {found} bytes, {expected} expected", path = path.display())]
    PixelDataLength {
        /// The file.
        path: PathBuf,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// Two inputs belong to different series.
    #[error("{path}: Series Instance UID {found} differs from {expected} of {first}", path = path.display(), first = first.display())]
    MixedSeries {
        /// The file that differs.
        path: PathBuf,
        /// The first file of the series.
        first: PathBuf,
        /// The first file's Series Instance UID.
        expected: String,
        /// This file's Series Instance UID.
        found: String,
    },
    /// Two inputs are in different frames of reference.
    #[error("{path}: Frame of Reference UID {found} differs from {expected} of {first}", path = path.display(), first = first.display())]
    MixedFrameOfReference {
        /// The file that differs.
        path: PathBuf,
        /// The first file of the series.
        first: PathBuf,
        /// The first file's Frame of Reference UID.
        expected: String,
        /// This file's Frame of Reference UID.
        found: String,
    },
    /// Image Orientation (Patient) differs between slices.
    #[error("{path}: Image Orientation {found:?} differs from {expected:?} of {first}", path = path.display(), first = first.display())]
    MixedOrientation {
        /// The file that differs.
        path: PathBuf,
        /// The first file of the series.
        first: PathBuf,
        /// The first file's row and column cosines (boxed to keep `CtError` small).
        expected: Box<[f64; 6]>,
        /// This file's row and column cosines.
        found: Box<[f64; 6]>,
    },
    /// Rows, columns or pixel spacing differ between slices.
    #[error("{path}: {what} is {found} but {expected} in {first}", path = path.display(), first = first.display())]
    MixedGeometry {
        /// The file that differs.
        path: PathBuf,
        /// The first file of the series.
        first: PathBuf,
        /// Which attribute differs.
        what: &'static str,
        /// The first file's value.
        expected: String,
        /// This file's value.
        found: String,
    },
    /// Two slices sit at the same position along the normal.
    #[error("{path}: slice at {position_mm:.3} mm along the normal duplicates {other}", path = path.display(), other = other.display())]
    DuplicateSlice {
        /// One of the two files.
        path: PathBuf,
        /// The other file.
        other: PathBuf,
        /// Position along the slice normal, mm.
        position_mm: f64,
    },
    /// A gap of about twice the slice spacing or more: a slice is missing.
    #[error("{path}: slice missing near {position_mm:.3} mm along the normal (gap {gap_mm:.3} mm, spacing {spacing_mm:.3} mm)", path = path.display())]
    MissingSlice {
        /// The file after the gap.
        path: PathBuf,
        /// Where the first missing slice would be, mm along the slice normal.
        position_mm: f64,
        /// The gap found, mm.
        gap_mm: f64,
        /// The expected slice spacing, mm.
        spacing_mm: f64,
    },
    /// Slice spacing is not uniform within the tolerance; `path` is the first slice whose gap
    /// to its predecessor is out of tolerance.
    #[error("{path}: slice spacing deviates by {max_deviation_mm:.4} mm from {spacing_mm:.4} mm, tolerance {tolerance_mm:.4} mm", path = path.display())]
    UnevenSpacing {
        /// The first slice after an out-of-tolerance gap.
        path: PathBuf,
        /// Largest deviation of a gap from the mean spacing, mm.
        max_deviation_mm: f64,
        /// Mean spacing, mm.
        spacing_mm: f64,
        /// Allowed deviation, mm.
        tolerance_mm: f64,
    },
    /// The slices are not stacked along their normal: a tilted gantry (or a sheared series).
    #[error("{path}: gantry tilt of {tilt_deg:.3} deg (position {off_normal_mm:.3} mm off the slice normal); resample before ingest", path = path.display())]
    GantryTilt {
        /// The file.
        path: PathBuf,
        /// Tilt angle, degrees (from Gantry/Detector Tilt or from the slice positions).
        tilt_deg: f64,
        /// Displacement of the slice position off the normal through the first slice, mm.
        off_normal_mm: f64,
    },
    /// A rescaled value falls outside the accepted HU range (or outside `i16`).
    #[error("{path}: rescaled values span {min} to {max} HU, outside the accepted {allowed_min} to {allowed_max} HU", path = path.display())]
    HuOutOfRange {
        /// The file.
        path: PathBuf,
        /// Smallest rescaled value.
        min: f64,
        /// Largest rescaled value.
        max: f64,
        /// Lower accepted bound.
        allowed_min: i16,
        /// Upper accepted bound.
        allowed_max: i16,
    },
    /// A required attribute is absent.
    #[error("{path}: missing attribute {tag_name}", path = path.display())]
    MissingAttribute {
        /// The file.
        path: PathBuf,
        /// DICOM keyword.
        tag_name: &'static str,
    },
    /// An attribute has an unusable value.
    #[error("{path}: attribute {tag_name}: {reason}", path = path.display())]
    InvalidAttribute {
        /// The file.
        path: PathBuf,
        /// DICOM keyword.
        tag_name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No slices were given (or the directory holds no DICOM file).
    #[error("{path}: no CT slices", path = path.display())]
    EmptySeries {
        /// The directory, or `<memory>`.
        path: PathBuf,
    },
    /// A preallocated volume cannot hold the series (grid construction failed).
    #[error("{path}: cannot build the volume grid", path = path.display())]
    Grid {
        /// The first file.
        path: PathBuf,
        /// The geometry error.
        #[source]
        source: crate::geometry::GeometryError,
    },
}

fn attr_err(path: &Path, e: AttrError) -> CtError {
    match e {
        AttrError::Missing { name, .. } => CtError::MissingAttribute {
            path: path.to_owned(),
            tag_name: name,
        },
        other => CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: other.name(),
            reason: match std::error::Error::source(&other) {
                Some(cause) => format!("{other}: {cause}"),
                None => other.to_string(),
            },
        },
    }
}

const MODALITY: Attr = attr!(MODALITY, "Modality");
const SERIES_UID: Attr = attr!(SERIES_INSTANCE_UID, "SeriesInstanceUID");
const STUDY_UID: Attr = attr!(STUDY_INSTANCE_UID, "StudyInstanceUID");
const FOR_UID: Attr = attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID");
const PATIENT_ID: Attr = attr!(PATIENT_ID, "PatientID");
const ROWS: Attr = attr!(ROWS, "Rows");
const COLUMNS: Attr = attr!(COLUMNS, "Columns");
const PIXEL_SPACING: Attr = attr!(PIXEL_SPACING, "PixelSpacing");
const IOP: Attr = attr!(IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient");
const IPP: Attr = attr!(IMAGE_POSITION_PATIENT, "ImagePositionPatient");
const BITS_ALLOCATED: Attr = attr!(BITS_ALLOCATED, "BitsAllocated");
const BITS_STORED: Attr = attr!(BITS_STORED, "BitsStored");
const PIXEL_REPRESENTATION: Attr = attr!(PIXEL_REPRESENTATION, "PixelRepresentation");
const PHOTOMETRIC: Attr = attr!(PHOTOMETRIC_INTERPRETATION, "PhotometricInterpretation");
const SAMPLES_PER_PIXEL: Attr = attr!(SAMPLES_PER_PIXEL, "SamplesPerPixel");
const RESCALE_SLOPE: Attr = attr!(RESCALE_SLOPE, "RescaleSlope");
const RESCALE_INTERCEPT: Attr = attr!(RESCALE_INTERCEPT, "RescaleIntercept");
const GANTRY_TILT: Attr = attr!(GANTRY_DETECTOR_TILT, "GantryDetectorTilt");
const NUMBER_OF_FRAMES: Attr = attr!(NUMBER_OF_FRAMES, "NumberOfFrames");
const SPACING_BETWEEN_SLICES: Attr = attr!(SPACING_BETWEEN_SLICES, "SpacingBetweenSlices");
const SLICE_THICKNESS: Attr = attr!(SLICE_THICKNESS, "SliceThickness");
const ACQUISITION_DATE: Attr = attr!(ACQUISITION_DATE, "AcquisitionDate");
const ACQUISITION_TIME: Attr = attr!(ACQUISITION_TIME, "AcquisitionTime");
const ACQUISITION_DATETIME: Attr = attr!(ACQUISITION_DATE_TIME, "AcquisitionDateTime");
const CONTENT_DATE: Attr = attr!(CONTENT_DATE, "ContentDate");
const CONTENT_TIME: Attr = attr!(CONTENT_TIME, "ContentTime");
const TEMPORAL_POSITION_INDEX: Attr = attr!(TEMPORAL_POSITION_INDEX, "TemporalPositionIndex");
const TEMPORAL_POSITION_ID: Attr = attr!(TEMPORAL_POSITION_IDENTIFIER, "TemporalPositionIdentifier");
const SHARED_FG: Attr = attr!(
    SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
    "SharedFunctionalGroupsSequence"
);
const PER_FRAME_FG: Attr = attr!(
    PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    "PerFrameFunctionalGroupsSequence"
);
const PIXEL_MEASURES: Attr = attr!(PIXEL_MEASURES_SEQUENCE, "PixelMeasuresSequence");
const PLANE_POSITION: Attr = attr!(PLANE_POSITION_SEQUENCE, "PlanePositionSequence");
const PLANE_ORIENTATION: Attr = attr!(PLANE_ORIENTATION_SEQUENCE, "PlaneOrientationSequence");
const PIXEL_VALUE_TRANSFORM: Attr = attr!(
    PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
    "PixelValueTransformationSequence"
);

/// Ingest tolerances and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOptions {
    /// Allowed deviation of any slice gap from the mean spacing, as a fraction of the spacing.
    pub spacing_tolerance_rel: f64,
    /// Allowed deviation of any slice gap from the mean spacing, absolute floor in mm; the
    /// tolerance is the larger of the two.
    pub spacing_tolerance_mm: f64,
    /// Largest accepted Gantry/Detector Tilt, degrees (writers store 0 as e.g. `0.0` or `-0`).
    pub max_tilt_deg: f64,
    /// Smallest accepted HU. Below −1024 only padding values (e.g. −2048, −3024) are
    /// physical; anything lower points to a wrong rescale.
    pub hu_min: i16,
    /// Largest accepted HU (extended-scale CT reaches ~30 000 in metal).
    pub hu_max: i16,
    /// Threads a series is decoded on (the calling one included; 0 and 1 both mean the
    /// calling thread only). Header parsing and the HU pass of native slices split evenly;
    /// results and errors are the same for any count.
    pub threads: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            spacing_tolerance_rel: 0.01,
            spacing_tolerance_mm: 0.01,
            max_tilt_deg: 0.01,
            hu_min: -4096,
            hu_max: i16::MAX,
            threads: 2,
        }
    }
}

/// What a series is, besides its voxels.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesMeta {
    /// Series Instance UID; `None` only when every slice lacks it (anonymizers blank it).
    pub series_instance_uid: Option<String>,
    /// Study Instance UID, if present.
    pub study_instance_uid: Option<String>,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: String,
    /// Patient ID, if present.
    pub patient_id: Option<String>,
    /// Modality (always `CT` once accepted).
    pub modality: String,
    /// SOP Class UID (CT or Enhanced CT).
    pub sop_class_uid: String,
    /// Transfer Syntax UID of the first sorted slice.
    pub transfer_syntax_uid: String,
    /// Acquisition Date (DA), if present.
    pub acquisition_date: Option<String>,
    /// Acquisition Time (TM), or Acquisition DateTime (DT) for enhanced objects, if present.
    pub acquisition_time: Option<String>,
    /// Content Date (DA), if present.
    pub content_date: Option<String>,
    /// Content Time (TM), if present.
    pub content_time: Option<String>,
    /// Temporal Position Index or Identifier (4D CT phase), if present.
    pub temporal_position: Option<u32>,
    /// Number of slices.
    pub slices: usize,
    /// Mean slice spacing along the normal, mm.
    pub slice_spacing_mm: f64,
    /// Largest deviation of a slice gap from the mean spacing, mm.
    pub max_spacing_deviation_mm: f64,
    /// Sorted file paths (empty for in-memory input); for one multi-frame file, that file.
    pub files: Vec<PathBuf>,
}

/// A decoded series.
#[derive(Debug, Clone, PartialEq)]
pub struct CtSeries {
    /// HU voxels on the patient grid.
    pub volume: CtVolume,
    /// Series metadata.
    pub meta: SeriesMeta,
}

/// Reads every DICOM file in a directory (not recursive) as one series.
///
/// Files without a DICOM marker (READMEs, licenses) are skipped; any other DICOM object
/// (e.g. an RT Structure Set) is refused, since a directory must hold exactly one series.
pub fn read_series_dir(dir: impl AsRef<Path>) -> Result<CtSeries, CtError> {
    read_series_dir_with(dir, &IngestOptions::default())
}

/// [`read_series_dir`] with explicit options.
pub fn read_series_dir_with(dir: impl AsRef<Path>, options: &IngestOptions) -> Result<CtSeries, CtError> {
    let dir = dir.as_ref();
    let io = |source| CtError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && path.is_file() {
            paths.push(path);
        }
    }
    let mut buffers = Vec::with_capacity(paths.len());
    let mut kept = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| CtError::Io {
            path: path.clone(),
            source,
        })?;
        if attrs::dicom_body(&bytes).is_none() {
            tracing::debug!(path = %path.display(), "skipping non-DICOM file in series directory");
            continue;
        }
        buffers.push(bytes);
        kept.push(path);
    }
    if kept.is_empty() {
        return Err(CtError::EmptySeries { path: dir.to_owned() });
    }
    read_buffers(&kept, &buffers, options)
}

/// Reads the given files as one series.
pub fn read_series_files(files: &[PathBuf]) -> Result<CtSeries, CtError> {
    read_series_files_with(files, &IngestOptions::default())
}

/// [`read_series_files`] with explicit options.
pub fn read_series_files_with(files: &[PathBuf], options: &IngestOptions) -> Result<CtSeries, CtError> {
    let buffers = files
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|source| CtError::Io {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    read_buffers(files, &buffers, options)
}

fn read_buffers(
    files: &[PathBuf],
    buffers: &[Vec<u8>],
    options: &IngestOptions,
) -> Result<CtSeries, CtError> {
    let slices: Vec<&[u8]> = buffers.iter().map(|b| b.as_slice()).collect();
    let mut decoder = SeriesDecoder::new(options.clone());
    let mut volume = empty_volume();
    let mut meta = decoder.decode_labeled(&slices, Some(files), &mut volume)?;
    meta.files = decoder.sorted_inputs().map(|i| files[i].clone()).collect();
    meta.files.dedup();
    Ok(CtSeries { volume, meta })
}

/// Reads a series from in-memory DICOM Part 10 buffers (with or without the 128-byte
/// preamble), as received from the network. Errors name inputs `<memory>/slice-N`.
pub fn read_series_bytes(slices: &[&[u8]]) -> Result<CtSeries, CtError> {
    let mut decoder = SeriesDecoder::new(IngestOptions::default());
    let mut volume = empty_volume();
    let meta = decoder.decode_into(slices, &mut volume)?;
    Ok(CtSeries { volume, meta })
}

fn empty_volume() -> CtVolume {
    // A 1-voxel placeholder; decode_into replaces grid and storage as needed.
    let grid = Grid::axis_aligned([1, 1, 1], PointMm::origin(), [1.0; 3])
        .unwrap_or_else(|_| unreachable!("a unit grid is valid"));
    CtVolume::filled(grid, 0)
}

/// One slice (a classic CT file, or one frame of an Enhanced CT object) after pass 1.
#[derive(Debug, Clone)]
struct SliceHeader {
    input: usize,
    frame: usize,
    frames_in_input: usize,
    ipp: Vector3<f64>,
    position_mm: f64,
    slope: f64,
    intercept: f64,
}

/// Per-input facts shared by its frames.
#[derive(Debug, Clone)]
struct InputHeader {
    ts: String,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    /// The volume slot this input's pixels were already stored in by early decoding.
    early_slot: Option<usize>,
}

/// An object decoded ahead of its frame by [`SeriesDecoder::decode_early`]. Holding the
/// `Arc` keeps the bytes alive and unchanged, so the pointer identifies them.
#[derive(Debug)]
struct EarlyObject {
    object: Arc<Vec<u8>>,
    ts: String,
    header: Header,
    /// Where its pixels went, when they could be placed.
    slot: Option<usize>,
}

/// The volume early decoding writes into: its grid (the last decoded series') and the
/// address of its storage (only compared, to know it is the same volume).
#[derive(Debug)]
struct EarlyTarget {
    grid: Grid,
    storage: usize,
}

fn storage_of(volume: &CtVolume) -> usize {
    volume.as_slice().as_ptr() as usize
}

/// Reusable series decoder: keeps its scratch buffers between calls so a pipeline decoding a
/// frame every few hundred milliseconds does not allocate per frame.
///
/// It can also decode a frame's objects *as they arrive* ([`begin_early`](Self::begin_early),
/// [`decode_early`](Self::decode_early)): each object's header is read and its pixels stored
/// in the slot the last decoded series' grid predicts for it. [`decode_into`](Self::decode_into)
/// on the completed frame then re-checks everything as usual and only stores the slots early
/// decoding did not fill correctly — the result is the same as decoding from scratch.
#[derive(Debug, Default)]
pub struct SeriesDecoder {
    options: IngestOptions,
    slices: Vec<SliceHeader>,
    inputs: Vec<InputHeader>,
    /// Grid of the last series decoded without error: the layout early decoding predicts.
    last_grid: Option<Grid>,
    early: Vec<EarlyObject>,
    early_target: Option<EarlyTarget>,
    last_early_slices: usize,
}

impl SeriesDecoder {
    /// A decoder with the given options.
    pub fn new(options: IngestOptions) -> Self {
        SeriesDecoder {
            options,
            ..SeriesDecoder::default()
        }
    }

    /// Starts early decoding of the next frame into `volume`, which takes the last decoded
    /// series' grid. Forgets any earlier early decoding. Returns false (nothing to predict
    /// from) before the first successful decode.
    pub fn begin_early(&mut self, volume: &mut CtVolume) -> bool {
        self.end_early();
        let Some(grid) = self.last_grid.clone() else {
            return false;
        };
        if volume.grid() != &grid {
            prepare_volume(volume, grid.clone());
        }
        self.early_target = Some(EarlyTarget {
            grid,
            storage: storage_of(volume),
        });
        true
    }

    /// Objects held for the frame being decoded early.
    pub fn early_objects(&self) -> usize {
        self.early.len()
    }

    /// Slices the last [`decode_into`](Self::decode_into) kept from early decoding instead of
    /// decoding them again.
    pub fn last_early_slices(&self) -> usize {
        self.last_early_slices
    }

    /// Forgets early decoding (the objects it holds are released).
    pub fn end_early(&mut self) {
        self.early.clear();
        self.early_target = None;
    }

    /// Decodes one object of a frame still arriving into `volume` (the one given to
    /// [`begin_early`](Self::begin_early)); returns whether its pixels were placed. Never
    /// fails: an object that does not fit the predicted layout, or is not valid, is simply
    /// left to [`decode_into`](Self::decode_into), which decodes or reports it.
    pub fn decode_early(&mut self, object: &Arc<Vec<u8>>, volume: &mut CtVolume) -> bool {
        let Some(target) = &self.early_target else {
            return false;
        };
        if storage_of(volume) != target.storage
            || volume.grid() != &target.grid
            || self.early.iter().any(|e| Arc::ptr_eq(&e.object, object))
        {
            return false;
        }
        let path = Path::new("<memory>/early");
        let Ok(obj) = parse(object, path, true) else {
            return false;
        };
        let ts = trim_uid(obj.meta().transfer_syntax());
        let Ok(header) = read_header(&obj, path, &self.options) else {
            return false;
        };
        drop(obj);
        let slot = predicted_slot(&target.grid, &header, &ts)
            .filter(|k| !self.early.iter().any(|e| e.slot == Some(*k)))
            .filter(|&k| {
                let frame_len = target.grid.dims()[0] * target.grid.dims()[1];
                let ih = InputHeader {
                    ts: String::new(),
                    bits_allocated: header.bits_allocated,
                    bits_stored: header.bits_stored,
                    signed: header.signed,
                    early_slot: None,
                };
                let total = frame_len * usize::from(header.bits_allocated / 8);
                let Some(raw) = native_pixel_bytes(object, total, ts == EXPLICIT_VR_LE) else {
                    return false;
                };
                let fr = &header.frames[0];
                let out = &mut volume.as_slice_mut()[k * frame_len..(k + 1) * frame_len];
                store_frame(raw, &ih, fr.slope, fr.intercept, out, &self.options).is_ok()
            });
        self.early.push(EarlyObject {
            object: Arc::clone(object),
            ts,
            header,
            slot,
        });
        slot.is_some()
    }

    /// Decodes in-memory slices into `volume`, reusing its storage when the voxel count
    /// matches (its grid is replaced by the series' grid). On error `volume` keeps its
    /// previous grid but its voxels are unspecified.
    pub fn decode_into(&mut self, slices: &[&[u8]], volume: &mut CtVolume) -> Result<SeriesMeta, CtError> {
        self.last_early_slices = 0;
        let result = self.decode_labeled(slices, None, volume);
        self.end_early();
        result
    }

    /// Input indices in sorted slice order (after a successful decode).
    fn sorted_inputs(&self) -> impl Iterator<Item = usize> + '_ {
        self.slices.iter().map(|s| s.input)
    }

    fn decode_labeled(
        &mut self,
        slices: &[&[u8]],
        files: Option<&[PathBuf]>,
        volume: &mut CtVolume,
    ) -> Result<SeriesMeta, CtError> {
        let label = |i: usize| -> PathBuf {
            match files {
                Some(f) => f[i].clone(),
                None => PathBuf::from(format!("<memory>/slice-{i}")),
            }
        };
        if slices.is_empty() {
            return Err(CtError::EmptySeries {
                path: PathBuf::from(if files.is_some() { "<no files>" } else { "<memory>" }),
            });
        }
        self.slices.clear();
        self.inputs.clear();

        // Pass 1: headers. With 2 threads the second half is parsed on a helper thread while
        // this one parses (and checks) the first; its results are then checked in input
        // order, so the first error in input order is the one returned, as sequentially.
        let options = &self.options;
        let early = &self.early;
        let early_of = |bytes: &[u8]| {
            early
                .iter()
                .find(|e| e.object.as_ptr() == bytes.as_ptr() && e.object.len() == bytes.len())
        };
        let header_of = |i: usize| -> Result<(String, Header, Option<SeriesMeta>), CtError> {
            if i > 0 {
                if let Some(e) = early_of(slices[i]) {
                    return Ok((e.ts.clone(), e.header.clone(), None));
                }
            }
            let path = label(i);
            let obj = parse(slices[i], &path, true)?;
            let ts = trim_uid(obj.meta().transfer_syntax());
            let h = read_header(&obj, &path, options)?;
            let meta = if i == 0 {
                Some(series_meta(&obj, &path, &h, &ts)?)
            } else {
                None
            };
            Ok((ts, h, meta))
        };
        // (with early-decoded headers most of pass 1 is a lookup: no helper thread)
        let mid = if self.options.threads >= 2 && self.early.is_empty() {
            slices.len().div_ceil(2)
        } else {
            slices.len()
        };
        let mut first: Option<FirstHeader> = None;
        let mut accept = |i: usize,
                          r: Result<(String, Header, Option<SeriesMeta>), CtError>,
                          inputs: &mut Vec<InputHeader>,
                          headers: &mut Vec<SliceHeader>|
         -> Result<(), CtError> {
            let (ts, h, meta) = r?;
            match (&first, meta) {
                (None, Some(meta)) => {
                    first = Some(FirstHeader {
                        path: label(i),
                        meta,
                        h: h.clone(),
                    })
                }
                (Some(f), _) => check_consistent(f, &h, &label(i))?,
                (None, None) => unreachable!("input 0 is accepted first and carries the meta"),
            }
            inputs.push(InputHeader {
                ts,
                bits_allocated: h.bits_allocated,
                bits_stored: h.bits_stored,
                signed: h.signed,
                early_slot: early_of(slices[i]).and_then(|e| e.slot),
            });
            for (frame, fr) in h.frames.iter().enumerate() {
                headers.push(SliceHeader {
                    input: i,
                    frame,
                    frames_in_input: h.frames.len(),
                    ipp: fr.ipp,
                    position_mm: 0.0,
                    slope: fr.slope,
                    intercept: fr.intercept,
                });
            }
            Ok(())
        };
        let (inputs, headers) = (&mut self.inputs, &mut self.slices);
        std::thread::scope(|scope| -> Result<(), CtError> {
            let second = (mid < slices.len())
                .then(|| scope.spawn(|| (mid..slices.len()).map(header_of).collect::<Vec<_>>()));
            for i in 0..mid {
                accept(i, header_of(i), inputs, headers)?;
            }
            if let Some(handle) = second {
                let results = handle
                    .join()
                    .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
                for (i, r) in (mid..).zip(results) {
                    accept(i, r, inputs, headers)?;
                }
            }
            Ok(())
        })?;
        let first = first.unwrap_or_else(|| unreachable!("slices is non-empty"));
        let h0 = &first.h;

        // Sort along the normal.
        let row = Vector3::new(h0.iop[0], h0.iop[1], h0.iop[2]);
        let col = Vector3::new(h0.iop[3], h0.iop[4], h0.iop[5]);
        let normal = row.cross(&col);
        if !(normal.norm() > 0.99 && normal.norm() < 1.01 && row.dot(&col).abs() < 1e-3) {
            return Err(CtError::InvalidAttribute {
                path: first.path.clone(),
                tag_name: IOP.name,
                reason: format!("row and column cosines {:?} are not orthonormal", h0.iop),
            });
        }
        let normal = normal.normalize();
        let (row, col) = (row.normalize(), col.normalize());
        for s in &mut self.slices {
            s.position_mm = s.ipp.dot(&normal);
        }
        self.slices
            .sort_by(|a, b| a.position_mm.total_cmp(&b.position_mm));

        let n = self.slices.len();
        let (slice_spacing_mm, max_dev) = self.check_stack(&normal, &label, h0)?;

        // Grid.
        let origin = self.slices[0].ipp;
        let direction = Matrix3::from_columns(&[row, col, normal]);
        let spacing = [h0.pixel_spacing[1], h0.pixel_spacing[0], slice_spacing_mm];
        let dims = [h0.columns as usize, h0.rows as usize, n];
        let grid =
            Grid::new(dims, PointMm::from(origin), spacing, direction).map_err(|source| CtError::Grid {
                path: first.path.clone(),
                source,
            })?;
        // Early decoding filled this very storage on this very grid: its placed slots stand
        // wherever the sorted order put the same object (the bytes are held unchanged).
        let early_valid = self
            .early_target
            .as_ref()
            .is_some_and(|t| t.grid == grid && volume.grid() == &grid && storage_of(volume) == t.storage);
        let early_done = |slot: usize, s: &SliceHeader, inputs: &[InputHeader]| {
            early_valid && s.frames_in_input == 1 && inputs[s.input].early_slot == Some(slot)
        };
        let kept_early = self
            .slices
            .iter()
            .enumerate()
            .filter(|(k, s)| early_done(*k, s, &self.inputs))
            .count();
        let any_early = kept_early > 0;
        prepare_volume(volume, grid.clone());
        self.last_grid = Some(grid);

        // Pass 2: pixels.
        let frame_len = dims[0] * dims[1];
        // (input, frame) → sorted slot, grouped per input so each input is parsed once.
        let mut order: Vec<(usize, usize, usize)> = self
            .slices
            .iter()
            .enumerate()
            .map(|(k, s)| (s.input, s.frame, k))
            .collect();
        order.sort_unstable();
        let out = volume.as_slice_mut();
        let done = !any_early && self.store_native_split(slices, out, frame_len, &label)?;
        let mut idx = if done { order.len() } else { 0 };
        while idx < order.len() {
            let input = order[idx].0;
            let mut end = idx;
            while end < order.len() && order[end].0 == input {
                end += 1;
            }
            let group = &order[idx..end];
            if group.len() == 1 && early_done(group[0].2, &self.slices[group[0].2], &self.inputs) {
                idx = end;
                continue;
            }
            let path = label(input);
            let ih = &self.inputs[input];
            let frames_in_input = self.slices[group[0].2].frames_in_input;
            let bytes_per = usize::from(ih.bits_allocated / 8);
            let total = frame_len * bytes_per * frames_in_input;
            let native = ih.ts == IMPLICIT_VR_LE || ih.ts == EXPLICIT_VR_LE;
            let fast = if native {
                native_pixel_bytes(slices[input], total, ih.ts == EXPLICIT_VR_LE)
            } else {
                None
            };
            let decoded;
            let raw: &[u8] = match fast {
                Some(raw) => raw,
                None => {
                    let obj = parse(slices[input], &path, false)?;
                    let Some(pixel_data) = obj.get(tags::PIXEL_DATA) else {
                        return Err(CtError::NoPixelData { path });
                    };
                    if native {
                        decoded = pixel_data
                            .to_bytes()
                            .map_err(|err| CtError::InvalidAttribute {
                                path: path.clone(),
                                tag_name: "PixelData",
                                reason: err.to_string(),
                            })?
                            .into_owned();
                    } else {
                        if dicom_transfer_syntax_registry::TransferSyntaxRegistry
                            .get(&ih.ts)
                            .is_none_or(|t| !t.can_decode_all())
                        {
                            return Err(CtError::UnsupportedTransferSyntax {
                                path,
                                ts: ih.ts.clone(),
                            });
                        }
                        if ih.ts == RLE_LOSSLESS {
                            let fragments = pixel_data.value().fragments().unwrap_or_default();
                            check_rle_fragments(fragments, frame_len, usize::from(ih.bits_allocated / 8))
                                .map_err(|reason| CtError::InvalidAttribute {
                                    path: path.clone(),
                                    tag_name: "PixelData",
                                    reason,
                                })?;
                        }
                        decoded = obj
                            .decode_pixel_data()
                            .map_err(|source| CtError::Decode {
                                path: path.clone(),
                                ts: ih.ts.clone(),
                                source: Box::new(source),
                            })?
                            .data()
                            .to_vec();
                    }
                    &decoded
                }
            };
            if raw.len() < total {
                return Err(CtError::PixelDataLength {
                    path,
                    expected: total,
                    found: raw.len(),
                });
            }
            for &(_, frame, k) in group {
                let s = &self.slices[k];
                let src = &raw[frame * frame_len * bytes_per..(frame + 1) * frame_len * bytes_per];
                let dst = &mut out[k * frame_len..(k + 1) * frame_len];
                store_frame(src, ih, s.slope, s.intercept, dst, &self.options).map_err(|(min, max)| {
                    CtError::HuOutOfRange {
                        path: path.clone(),
                        min,
                        max,
                        allowed_min: self.options.hu_min,
                        allowed_max: self.options.hu_max,
                    }
                })?;
            }
            idx = end;
        }

        self.last_early_slices = kept_early;
        let mut meta = first.meta;
        meta.transfer_syntax_uid = self.inputs[self.slices[0].input].ts.clone();
        meta.slices = n;
        meta.slice_spacing_mm = slice_spacing_mm;
        meta.max_spacing_deviation_mm = max_dev;
        Ok(meta)
    }

    /// The common case, one native frame per input found by [`native_pixel_bytes`]: the HU
    /// pass over slots split between two threads (each writes its own half of `out`).
    /// Returns `Ok(false)` (nothing written) when some input needs the general path. The
    /// error is the one the sequential input-order loop would report first.
    fn store_native_split(
        &self,
        slices: &[&[u8]],
        out: &mut [i16],
        frame_len: usize,
        label: &(dyn Fn(usize) -> PathBuf + Sync),
    ) -> Result<bool, CtError> {
        let raw_of = |s: &SliceHeader| -> Option<&[u8]> {
            let ih = &self.inputs[s.input];
            let native = ih.ts == IMPLICIT_VR_LE || ih.ts == EXPLICIT_VR_LE;
            let total = frame_len * usize::from(ih.bits_allocated / 8);
            if !native || s.frames_in_input != 1 {
                return None;
            }
            native_pixel_bytes(slices[s.input], total, ih.ts == EXPLICIT_VR_LE)
        };
        if self.options.threads < 2 || !self.slices.iter().all(|s| raw_of(s).is_some()) {
            return Ok(false);
        }
        // First failing slot of a run by input index: (input, (min, max)).
        let run = |headers: &[SliceHeader], out: &mut [i16]| -> Option<(usize, (f64, f64))> {
            let mut worst: Option<(usize, (f64, f64))> = None;
            for (s, dst) in headers.iter().zip(out.chunks_exact_mut(frame_len)) {
                let raw = raw_of(s)?;
                let ih = &self.inputs[s.input];
                if let Err(range) = store_frame(raw, ih, s.slope, s.intercept, dst, &self.options) {
                    if worst.is_none_or(|(i, _)| s.input < i) {
                        worst = Some((s.input, range));
                    }
                }
            }
            worst
        };
        let mid = self.slices.len() / 2;
        let (h0, h1) = self.slices.split_at(mid);
        let (o0, o1) = out.split_at_mut(mid * frame_len);
        let (e0, e1) = std::thread::scope(|scope| {
            let second = scope.spawn(|| run(h1, o1));
            let e0 = run(h0, o0);
            let e1 = second
                .join()
                .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
            (e0, e1)
        });
        let worst = match (e0, e1) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        match worst {
            None => Ok(true),
            Some((input, (min, max))) => Err(CtError::HuOutOfRange {
                path: label(input),
                min,
                max,
                allowed_min: self.options.hu_min,
                allowed_max: self.options.hu_max,
            }),
        }
    }

    /// Checks duplicates, tilt, missing slices and uniform spacing of the sorted stack;
    /// returns (mean spacing, max deviation).
    fn check_stack(
        &self,
        normal: &VectorMm,
        label: &dyn Fn(usize) -> PathBuf,
        h0: &Header,
    ) -> Result<(f64, f64), CtError> {
        let n = self.slices.len();
        let o = &self.slices;
        if n == 1 {
            let s = h0
                .spacing_between_slices
                .or(h0.slice_thickness)
                .filter(|s| *s > 0.0)
                .ok_or_else(|| CtError::MissingAttribute {
                    path: label(o[0].input),
                    tag_name: SPACING_BETWEEN_SLICES.name,
                })?;
            return Ok((s, 0.0));
        }
        for w in o.windows(2) {
            if w[1].position_mm - w[0].position_mm < 1e-3 {
                return Err(CtError::DuplicateSlice {
                    path: label(w[1].input),
                    other: label(w[0].input),
                    position_mm: w[1].position_mm,
                });
            }
        }
        // Tilt: every position must lie on the normal through the first slice.
        let p0 = o[0].ipp;
        let span = o[n - 1].position_mm - o[0].position_mm;
        for s in o.iter() {
            let d = s.ipp - p0;
            let along = d.dot(normal);
            let off = (d - normal * along).norm();
            let tol = self.options.spacing_tolerance_mm.max(1e-3);
            if off > tol {
                return Err(CtError::GantryTilt {
                    path: label(s.input),
                    tilt_deg: off.atan2(along.abs()).to_degrees(),
                    off_normal_mm: off,
                });
            }
        }
        // Expected spacing: the median gap, robust to a missing slice.
        let mut gaps: Vec<f64> = o
            .windows(2)
            .map(|w| w[1].position_mm - w[0].position_mm)
            .collect();
        gaps.sort_by(f64::total_cmp);
        let median = gaps[gaps.len() / 2];
        for w in o.windows(2) {
            let gap = w[1].position_mm - w[0].position_mm;
            if gap > 1.5 * median {
                return Err(CtError::MissingSlice {
                    path: label(w[1].input),
                    position_mm: w[0].position_mm + median,
                    gap_mm: gap,
                    spacing_mm: median,
                });
            }
        }
        let mean = span / (n - 1) as f64;
        let tol = (self.options.spacing_tolerance_rel * mean).max(self.options.spacing_tolerance_mm);
        let dev = |w: &[SliceHeader]| (w[1].position_mm - w[0].position_mm - mean).abs();
        let max_dev = o.windows(2).map(dev).fold(0.0f64, f64::max);
        // Name the first slice (in sorted order) whose gap is out of tolerance.
        if let Some(w) = o.windows(2).find(|w| dev(w) > tol) {
            return Err(CtError::UnevenSpacing {
                path: label(w[1].input),
                max_deviation_mm: max_dev,
                spacing_mm: mean,
                tolerance_mm: tol,
            });
        }
        Ok((mean, max_dev))
    }
}

/// Gives `volume` the new grid, reusing its allocation when the voxel count matches.
fn prepare_volume(volume: &mut CtVolume, grid: Grid) {
    let [nx, ny, nz] = grid.dims();
    let data = std::mem::replace(volume.data_mut(), ndarray::Array3::zeros((0, 0, 0)));
    let data = if data.len() == grid.len() {
        data.into_shape_with_order((nz, ny, nx))
            .unwrap_or_else(|_| ndarray::Array3::zeros((nz, ny, nx)))
    } else {
        ndarray::Array3::zeros((nz, ny, nx))
    };
    *volume = CtVolume::from_array(grid, data)
        .unwrap_or_else(|_| unreachable!("array shaped from the grid's own dims"));
}

/// Per-frame geometry and rescale.
#[derive(Debug, Clone)]
struct FrameHeader {
    ipp: Vector3<f64>,
    slope: f64,
    intercept: f64,
}

/// What pass 1 reads from one input.
#[derive(Debug, Clone)]
struct Header {
    series_uid: Option<String>,
    for_uid: String,
    rows: u32,
    columns: u32,
    pixel_spacing: [f64; 2],
    iop: [f64; 6],
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    spacing_between_slices: Option<f64>,
    slice_thickness: Option<f64>,
    frames: Vec<FrameHeader>,
}

struct FirstHeader {
    path: PathBuf,
    h: Header,
    meta: SeriesMeta,
}

/// Checks RLE Lossless frames (one fragment each, PS3.5 annex G) before dicom-pixeldata
/// decodes them: its RLE adapter (0.10) slices a short header and indexes a short segment's
/// output without bounds checks, and panics (found by the `ct_frame` fuzz target). Every
/// fragment must hold the 64-byte header, and each segment a frame needs (one per byte of a
/// sample, 1 sample per pixel) must expand to at least `pixels` bytes.
fn check_rle_fragments(fragments: &[Vec<u8>], pixels: usize, bytes_per_sample: usize) -> Result<(), String> {
    for (frame, fragment) in fragments.iter().enumerate() {
        let u32_at = |o: usize| {
            fragment
                .get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (Some(count), true) = (u32_at(0), fragment.len() >= 64) else {
            return Err(format!(
                "RLE frame {frame} is {} bytes, shorter than its 64-byte header",
                fragment.len()
            ));
        };
        if count < bytes_per_sample || count > 15 {
            return Err(format!(
                "RLE frame {frame} has {count} segments, {bytes_per_sample} expected"
            ));
        }
        for segment in 0..bytes_per_sample {
            let start = u32_at(4 + 4 * segment).unwrap_or(usize::MAX);
            let end = if segment + 1 < count {
                u32_at(8 + 4 * segment).unwrap_or(usize::MAX)
            } else {
                fragment.len()
            };
            let Some(data) = fragment.get(start..end) else {
                return Err(format!(
                    "RLE frame {frame} segment {segment} spans bytes {start}..{end} of {}",
                    fragment.len()
                ));
            };
            let expanded = packbits_len(data);
            if expanded < pixels {
                return Err(format!(
                    "RLE frame {frame} segment {segment} expands to {expanded} bytes, {pixels} expected"
                ));
            }
        }
    }
    Ok(())
}

/// Bytes a PackBits segment expands to, counted as the decoder reads it: a literal run cut
/// short by the segment's end yields what is there, a repeat run without its byte nothing.
fn packbits_len(data: &[u8]) -> usize {
    let (mut at, mut out) = (0usize, 0usize);
    while let Some(&h) = data.get(at) {
        let h = h as i8;
        at += 1;
        if h >= 0 {
            let n = (h as usize + 1).min(data.len() - at);
            out += n;
            at += n;
        } else if h != -128 {
            if at >= data.len() {
                break;
            }
            out += 1 + h.unsigned_abs() as usize;
            at += 1;
        }
    }
    out
}

fn parse(bytes: &[u8], path: &Path, header_only: bool) -> Result<DefaultDicomObject, CtError> {
    let read = if header_only { Read::Header } else { Read::Whole };
    attrs::parse(bytes, read).map_err(|e| {
        let path = path.to_owned();
        match e {
            OpenError::NotDicom => CtError::NotDicom { path },
            OpenError::Io(source) => CtError::Io { path, source },
            OpenError::Parse(source) => CtError::Parse { path, source },
            // A cut file and a corrupt length field look alike: a value runs past the end.
            source => CtError::Truncated { path, source },
        }
    })
}

fn trim_uid(s: &str) -> String {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned()
}

/// Locates native Pixel Data as the last element of the buffer: its header must sit right
/// before the final `len` bytes (or `len + 1` with a pad byte). `None` sends the caller to
/// the full parser, which handles every other layout.
fn native_pixel_bytes(bytes: &[u8], len: usize, explicit: bool) -> Option<&[u8]> {
    const TAG: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
    for padded in [len, len + 1] {
        let header = if explicit { 12 } else { 8 };
        let start = bytes.len().checked_sub(padded)?;
        let h = start.checked_sub(header)?;
        let hb = &bytes[h..start];
        if hb[..4] != TAG {
            continue;
        }
        let len_bytes = &hb[header - 4..];
        let stored = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let vr_ok = !explicit || &hb[4..6] == b"OW" || &hb[4..6] == b"OB";
        if vr_ok && usize::try_from(stored).ok() == Some(padded) {
            return Some(&bytes[start..start + len]);
        }
    }
    None
}

fn read_header(obj: &DefaultDicomObject, path: &Path, opt: &IngestOptions) -> Result<Header, CtError> {
    let ds: &InMemDicomObject = obj;
    let ae = |e| attr_err(path, e);
    let sop = sop_class(obj, path)?;
    let modality = attrs::opt_str(ds, MODALITY).map_err(ae)?;
    if modality.as_deref() != Some("CT") {
        return Err(CtError::WrongModality {
            path: path.to_owned(),
            found: modality.unwrap_or_else(|| format!("<none>, SOP class {sop}")),
        });
    }
    let enhanced = sop == ENHANCED_CT_SOP_CLASS;
    let photometric = attrs::req_str(ds, PHOTOMETRIC).map_err(ae)?;
    let samples = attrs::req_u32(ds, SAMPLES_PER_PIXEL).map_err(ae)?;
    let bits_allocated = attrs::req_u32(ds, BITS_ALLOCATED).map_err(ae)?;
    let bits_stored = attrs::opt_u32(ds, BITS_STORED)
        .map_err(ae)?
        .unwrap_or(bits_allocated);
    let pixel_rep = attrs::req_u32(ds, PIXEL_REPRESENTATION).map_err(ae)?;
    let unsupported = |what: String| CtError::UnsupportedPixelFormat {
        path: path.to_owned(),
        what,
    };
    if photometric != "MONOCHROME2" {
        return Err(unsupported(format!(
            "PhotometricInterpretation {photometric}, expected MONOCHROME2"
        )));
    }
    if samples != 1 {
        return Err(unsupported(format!("SamplesPerPixel {samples}, expected 1")));
    }
    if !(bits_allocated == 8 || bits_allocated == 16) || bits_stored == 0 || bits_stored > bits_allocated {
        return Err(unsupported(format!(
            "BitsAllocated {bits_allocated} / BitsStored {bits_stored}, expected 8 or 16"
        )));
    }
    if pixel_rep > 1 {
        return Err(unsupported(format!("PixelRepresentation {pixel_rep}")));
    }
    let rows = attrs::req_u32(ds, ROWS).map_err(ae)?;
    let columns = attrs::req_u32(ds, COLUMNS).map_err(ae)?;
    if rows == 0 || columns == 0 {
        return Err(CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: if rows == 0 { ROWS.name } else { COLUMNS.name },
            reason: "zero".into(),
        });
    }
    if let Some(tilt) = attrs::opt_f64(ds, GANTRY_TILT).map_err(ae)? {
        if tilt.abs() > opt.max_tilt_deg {
            return Err(CtError::GantryTilt {
                path: path.to_owned(),
                tilt_deg: tilt,
                off_normal_mm: 0.0,
            });
        }
    }
    // Type 1, but anonymizers blank it; accepted only if every slice agrees (checked later).
    let series_uid = attrs::opt_str(ds, SERIES_UID).map_err(ae)?;
    let for_uid = attrs::req_str(ds, FOR_UID).map_err(ae)?;
    let spacing_between_slices = attrs::opt_f64(ds, SPACING_BETWEEN_SLICES).map_err(ae)?;

    let (pixel_spacing, iop, slice_thickness, frames) = if enhanced {
        enhanced_frames(ds, path)?
    } else {
        let ps = attrs::req_f64_n::<2>(ds, PIXEL_SPACING).map_err(ae)?;
        let iop = attrs::req_f64_n::<6>(ds, IOP).map_err(ae)?;
        let ipp = attrs::req_f64_n::<3>(ds, IPP).map_err(ae)?;
        let (slope, intercept) = rescale(ds, path)?;
        let thick = attrs::opt_f64(ds, SLICE_THICKNESS).map_err(ae)?;
        let frames = vec![FrameHeader {
            ipp: Vector3::from(ipp),
            slope,
            intercept,
        }];
        (ps, iop, thick, frames)
    };
    if pixel_spacing.iter().any(|s| *s <= 0.0) {
        return Err(CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: PIXEL_SPACING.name,
            reason: format!("{pixel_spacing:?} is not positive"),
        });
    }
    Ok(Header {
        series_uid,
        for_uid,
        rows,
        columns,
        pixel_spacing,
        iop,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        signed: pixel_rep == 1,
        spacing_between_slices,
        slice_thickness,
        frames,
    })
}

/// SOP Class UID from the data set, else from the file meta group (anonymizers blank the former).
fn sop_class(obj: &DefaultDicomObject, path: &Path) -> Result<String, CtError> {
    attrs::sop_class_uid(obj).map_err(|e| attr_err(path, e))
}

fn rescale(ds: &InMemDicomObject, path: &Path) -> Result<(f64, f64), CtError> {
    let ae = |e| attr_err(path, e);
    // CT IODs require both; a missing pair means stored values already are HU.
    let slope = attrs::opt_f64(ds, RESCALE_SLOPE).map_err(ae)?.unwrap_or(1.0);
    let intercept = attrs::opt_f64(ds, RESCALE_INTERCEPT).map_err(ae)?.unwrap_or(0.0);
    if slope == 0.0 {
        return Err(CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: RESCALE_SLOPE.name,
            reason: "slope is 0".into(),
        });
    }
    Ok((slope, intercept))
}

type EnhancedGeometry = ([f64; 2], [f64; 6], Option<f64>, Vec<FrameHeader>);

/// Reads the functional groups of an Enhanced CT object; per-frame groups override shared.
fn enhanced_frames(ds: &InMemDicomObject, path: &Path) -> Result<EnhancedGeometry, CtError> {
    let ae = |e| attr_err(path, e);
    let n_frames = attrs::req_u32(ds, NUMBER_OF_FRAMES).map_err(ae)? as usize;
    let shared = attrs::opt_first_item(ds, SHARED_FG).map_err(ae)?;
    let per_frame = attrs::req_items(ds, PER_FRAME_FG).map_err(ae)?;
    if n_frames == 0 || per_frame.len() != n_frames {
        return Err(CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: PER_FRAME_FG.name,
            reason: format!("{} items for NumberOfFrames {n_frames}", per_frame.len()),
        });
    }
    let group = |frame, seq| fg_item(frame, shared, seq).map_err(ae);
    let mut pixel_spacing: Option<[f64; 2]> = None;
    let mut iop: Option<[f64; 6]> = None;
    let mut thickness = None;
    let mut frames = Vec::with_capacity(n_frames);
    for (f, item) in per_frame.iter().enumerate() {
        let measures = group(item, PIXEL_MEASURES)?.ok_or(CtError::MissingAttribute {
            path: path.to_owned(),
            tag_name: PIXEL_MEASURES.name,
        })?;
        let ps = attrs::req_f64_n::<2>(measures, PIXEL_SPACING).map_err(ae)?;
        let orient = group(item, PLANE_ORIENTATION)?.ok_or(CtError::MissingAttribute {
            path: path.to_owned(),
            tag_name: PLANE_ORIENTATION.name,
        })?;
        let o = attrs::req_f64_n::<6>(orient, IOP).map_err(ae)?;
        let pos = group(item, PLANE_POSITION)?.ok_or(CtError::MissingAttribute {
            path: path.to_owned(),
            tag_name: PLANE_POSITION.name,
        })?;
        let ipp = attrs::req_f64_n::<3>(pos, IPP).map_err(ae)?;
        let (slope, intercept) = match group(item, PIXEL_VALUE_TRANSFORM)? {
            Some(t) => rescale(t, path)?,
            None => rescale(ds, path)?,
        };
        let frame_path = || PathBuf::from(format!("{} (frame {})", path.display(), f + 1));
        match pixel_spacing {
            None => pixel_spacing = Some(ps),
            Some(p0) if !close(&p0, &ps, 1e-4) => {
                return Err(CtError::MixedGeometry {
                    path: frame_path(),
                    first: path.to_owned(),
                    what: PIXEL_SPACING.name,
                    expected: format!("{p0:?}"),
                    found: format!("{ps:?}"),
                })
            }
            _ => {}
        }
        match iop {
            None => iop = Some(o),
            Some(o0) if !close(&o0, &o, 1e-4) => {
                return Err(CtError::MixedOrientation {
                    path: frame_path(),
                    first: path.to_owned(),
                    expected: Box::new(o0),
                    found: Box::new(o),
                })
            }
            _ => {}
        }
        if thickness.is_none() {
            thickness = attrs::opt_f64(measures, SLICE_THICKNESS).map_err(ae)?;
        }
        frames.push(FrameHeader {
            ipp: Vector3::from(ipp),
            slope,
            intercept,
        });
    }
    let ps = pixel_spacing.unwrap_or_else(|| unreachable!("n_frames > 0"));
    let o = iop.unwrap_or_else(|| unreachable!("n_frames > 0"));
    Ok((ps, o, thickness, frames))
}

/// The macro item for `seq` in this frame's functional group, else in the shared group.
fn fg_item<'a>(
    frame: &'a InMemDicomObject,
    shared: Option<&'a InMemDicomObject>,
    seq: Attr,
) -> Result<Option<&'a InMemDicomObject>, AttrError> {
    match attrs::opt_first_item(frame, seq)? {
        Some(item) => Ok(Some(item)),
        None => shared.map_or(Ok(None), |s| attrs::opt_first_item(s, seq)),
    }
}

fn close<const N: usize>(a: &[f64; N], b: &[f64; N], tol: f64) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

fn check_consistent(f: &FirstHeader, h: &Header, path: &Path) -> Result<(), CtError> {
    let h0 = &f.h;
    if h.series_uid != h0.series_uid {
        return Err(CtError::MixedSeries {
            path: path.to_owned(),
            first: f.path.clone(),
            expected: h0.series_uid.clone().unwrap_or_else(|| "<none>".into()),
            found: h.series_uid.clone().unwrap_or_else(|| "<none>".into()),
        });
    }
    if h.for_uid != h0.for_uid {
        return Err(CtError::MixedFrameOfReference {
            path: path.to_owned(),
            first: f.path.clone(),
            expected: h0.for_uid.clone(),
            found: h.for_uid.clone(),
        });
    }
    if !close(&h.iop, &h0.iop, 1e-4) {
        return Err(CtError::MixedOrientation {
            path: path.to_owned(),
            first: f.path.clone(),
            expected: Box::new(h0.iop),
            found: Box::new(h.iop),
        });
    }
    let geometry = |what: &'static str, expected: String, found: String| CtError::MixedGeometry {
        path: path.to_owned(),
        first: f.path.clone(),
        what,
        expected,
        found,
    };
    if (h.rows, h.columns) != (h0.rows, h0.columns) {
        return Err(geometry(
            "Rows × Columns",
            format!("{}×{}", h0.rows, h0.columns),
            format!("{}×{}", h.rows, h.columns),
        ));
    }
    if !close(&h.pixel_spacing, &h0.pixel_spacing, 1e-4) {
        return Err(geometry(
            PIXEL_SPACING.name,
            format!("{:?}", h0.pixel_spacing),
            format!("{:?}", h.pixel_spacing),
        ));
    }
    Ok(())
}

fn series_meta(obj: &DefaultDicomObject, path: &Path, h: &Header, ts: &str) -> Result<SeriesMeta, CtError> {
    let ds: &InMemDicomObject = obj;
    if h.series_uid.is_none() {
        tracing::warn!(path = %path.display(), "CT series has no Series Instance UID");
    }
    let ae = |e| attr_err(path, e);
    let s = |a| attrs::opt_str(ds, a).map_err(ae);
    let temporal = match attrs::opt_u32(ds, TEMPORAL_POSITION_INDEX).map_err(ae)? {
        Some(t) => Some(t),
        None => attrs::opt_u32(ds, TEMPORAL_POSITION_ID).map_err(ae)?,
    };
    Ok(SeriesMeta {
        series_instance_uid: h.series_uid.clone(),
        study_instance_uid: s(STUDY_UID)?,
        frame_of_reference_uid: h.for_uid.clone(),
        patient_id: s(PATIENT_ID)?,
        modality: "CT".into(),
        sop_class_uid: sop_class(obj, path)?,
        transfer_syntax_uid: ts.to_owned(),
        acquisition_date: s(ACQUISITION_DATE)?,
        acquisition_time: match s(ACQUISITION_TIME)? {
            Some(t) => Some(t),
            None => s(ACQUISITION_DATETIME)?,
        },
        content_date: s(CONTENT_DATE)?,
        content_time: s(CONTENT_TIME)?,
        temporal_position: temporal,
        slices: 0,
        slice_spacing_mm: 0.0,
        max_spacing_deviation_mm: 0.0,
        files: Vec::new(),
    })
}

/// The slot of `grid` a single-frame native object belongs in, if it fits the grid exactly:
/// same size, orientation and pixel spacing, and its position on a slice of the grid.
fn predicted_slot(grid: &Grid, h: &Header, ts: &str) -> Option<usize> {
    let dims = grid.dims();
    let spacing = grid.spacing_mm();
    let d = grid.direction();
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-6;
    let fits = h.frames.len() == 1
        && (ts == IMPLICIT_VR_LE || ts == EXPLICIT_VR_LE)
        && matches!(h.bits_allocated, 8 | 16)
        && h.columns as usize == dims[0]
        && h.rows as usize == dims[1]
        && same(h.pixel_spacing[1], spacing[0])
        && same(h.pixel_spacing[0], spacing[1])
        && (0..3).all(|r| same(h.iop[r], d[(r, 0)]) && same(h.iop[3 + r], d[(r, 1)]));
    if !fits {
        return None;
    }
    let offset = h.frames[0].ipp - grid.origin_mm().coords;
    let along = offset.dot(&d.column(2)) / spacing[2];
    let k = along.round();
    let off_slot = (along - k).abs() * spacing[2];
    (off_slot <= 1e-3 && k >= 0.0 && (k as usize) < dims[2]).then_some(k as usize)
}

/// Converts one frame of stored values to HU in `out`. Integral slope 1 and intercept (every
/// CT scanner we know) take an exact integer path the compiler vectorizes; anything else is
/// computed in f64 and rounded to the nearest HU. Returns the offending (min, max) HU if the
/// result leaves the accepted range.
fn store_frame(
    raw: &[u8],
    ih: &InputHeader,
    slope: f64,
    intercept: f64,
    out: &mut [i16],
    opt: &IngestOptions,
) -> Result<(), (f64, f64)> {
    let shift = u32::from(ih.bits_allocated - ih.bits_stored);
    let signed = ih.signed;
    let mask: u32 = (1u32 << ih.bits_stored) - 1;
    // Stored value as i32: sign-extend from BitsStored, or mask off bits above it.
    let sv16 = move |x: u16| -> i32 {
        if signed {
            i32::from(((x << shift) as i16) >> shift)
        } else {
            (u32::from(x) & mask) as i32
        }
    };
    let sv8 = move |x: u8| -> i32 {
        if signed {
            i32::from(((x << shift) as i8) >> shift)
        } else {
            (u32::from(x) & mask) as i32
        }
    };
    let integral = slope == 1.0 && intercept.fract() == 0.0 && intercept.abs() < 65536.0;
    let (lo_ok, hi_ok) = (i32::from(opt.hu_min), i32::from(opt.hu_max));
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    if integral {
        let icpt = intercept as i32;
        // Separate monomorphic loops per stored-value decoding keep the hot loop branch-free
        // so it vectorizes (this loop is most of a native ingest's time).
        (lo, hi) = match (ih.bits_allocated, signed, shift) {
            (16, _, 0) if signed => convert16(raw, out, icpt, |x| x as i16),
            // Unsigned 16-bit: `x ^ 0x8000` read as i16 is `x − 32768`, so fold 32768 into the
            // intercept when that still fits an i16 (e.g. the usual −1024), else go wide.
            (16, _, 0) if i16::try_from(icpt + 32768).is_ok() => {
                convert16(raw, out, icpt + 32768, |x| (x ^ 0x8000) as i16)
            }
            (16, _, 0) => convert16_wide(raw, out, icpt, i32::from),
            (16, true, _) => convert16(raw, out, icpt, move |x| ((x << shift) as i16) >> shift),
            // At most 15 bits stored, so the masked value fits an i16.
            (16, false, _) => convert16(raw, out, icpt, move |x| (x & mask as u16) as i16),
            _ => {
                for (o, &b) in out.iter_mut().zip(raw) {
                    let hu = sv8(b) + icpt;
                    lo = lo.min(hu);
                    hi = hi.max(hu);
                    *o = hu as i16;
                }
                (lo, hi)
            }
        };
        if lo < lo_ok || hi > hi_ok {
            return Err((f64::from(lo), f64::from(hi)));
        }
        return Ok(());
    }
    let (mut flo, mut fhi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut put = |o: &mut i16, sv: i32| {
        let hu = (slope * f64::from(sv) + intercept).round();
        flo = flo.min(hu);
        fhi = fhi.max(hu);
        *o = hu.clamp(-32768.0, 32767.0) as i16;
    };
    if ih.bits_allocated == 16 {
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
            put(o, sv16(u16::from_le_bytes([c[0], c[1]])));
        }
    } else {
        for (o, &b) in out.iter_mut().zip(raw) {
            put(o, sv8(b));
        }
    }
    if flo < f64::from(lo_ok) || fhi > f64::from(hi_ok) {
        return Err((flo, fhi));
    }
    Ok(())
}

/// Stored 16-bit little-endian values that fit an i16 → HU, returning the (min, max) HU.
///
/// Works in the i16 domain (8 lanes per SSE2 op, pmin/pmaxsw exist there, not for i32):
/// `out = sv + icpt` wraps on overflow, but the min/max of the stored values is tracked
/// exactly and the true HU range is `min + icpt ..= max + icpt` in i32. The caller rejects
/// the frame unless that range lies inside its accepted HU window (which is inside i16), and
/// whenever it does no voxel wrapped, so every stored voxel is exact.
#[inline(always)]
fn convert16(raw: &[u8], out: &mut [i16], icpt: i32, sv: impl Fn(u16) -> i16) -> (i32, i32) {
    let n = out.len().min(raw.len() / 2);
    let (raw, out) = (&raw[..2 * n], &mut out[..n]);
    // Outside i16 the intercept always pushes some voxel out of the window: use the exact
    // wide path, which reports the offending range.
    let Ok(icpt16) = i16::try_from(icpt) else {
        return convert16_wide(raw, out, icpt, |x| i32::from(sv(x)));
    };
    let (mut lo, mut hi) = (i16::MAX, i16::MIN);
    for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
        let v = sv(u16::from_le_bytes([c[0], c[1]]));
        lo = lo.min(v);
        hi = hi.max(v);
        *o = v.wrapping_add(icpt16);
    }
    if n == 0 {
        return (i32::MAX, i32::MIN);
    }
    (i32::from(lo) + icpt, i32::from(hi) + icpt)
}

/// Stored 16-bit little-endian values → HU in i32 with the running (min, max).
#[inline(always)]
fn convert16_wide(raw: &[u8], out: &mut [i16], icpt: i32, sv: impl Fn(u16) -> i32) -> (i32, i32) {
    let n = out.len().min(raw.len() / 2);
    let (raw, out) = (&raw[..2 * n], &mut out[..n]);
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    for i in 0..n {
        let hu = sv(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])) + icpt;
        lo = lo.min(hu);
        hi = hi.max(hu);
        out[i] = hu as i16;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::{check_rle_fragments, packbits_len};

    #[test]
    fn packbits_lengths_follow_the_tiff_example() {
        // Apple TN1023 / TIFF 6.0 section 9: this packed run unpacks to 24 bytes.
        let packed = [
            0xFE, 0xAA, 0x02, 0x80, 0x00, 0x2A, 0xFD, 0xAA, 0x03, 0x80, 0x00, 0x2A, 0x22, 0xF7, 0xAA,
        ];
        assert_eq!(packbits_len(&packed), 24);
        // a literal run cut short yields what is there; a repeat without its byte nothing
        assert_eq!(packbits_len(&[0x05, 1, 2]), 2);
        assert_eq!(packbits_len(&[0x01, 1, 2, 0xFE]), 2);
        assert_eq!(packbits_len(&[0x80, 0x80]), 0);
    }

    #[test]
    fn rle_frames_must_hold_a_header_and_full_segments() {
        // One 16-bit frame of 4 pixels: two segments (MSB, LSB), each a repeat run of 4.
        let mut frame = vec![0u8; 64];
        frame[..4].copy_from_slice(&2u32.to_le_bytes());
        frame[4..8].copy_from_slice(&64u32.to_le_bytes());
        frame[8..12].copy_from_slice(&66u32.to_le_bytes());
        frame.extend_from_slice(&[0xFD, 0x00, 0xFD, 0x07]);
        assert_eq!(check_rle_fragments(&[frame.clone()], 4, 2), Ok(()));
        let e = check_rle_fragments(&[frame.clone()], 5, 2).unwrap_err();
        assert!(e.contains("segment 0 expands to 4 bytes, 5 expected"), "{e}");
        let e = check_rle_fragments(&[frame[..40].to_vec()], 4, 2).unwrap_err();
        assert!(e.contains("shorter than its 64-byte header"), "{e}");
        let mut one = frame.clone();
        one[..4].copy_from_slice(&1u32.to_le_bytes());
        assert!(check_rle_fragments(&[one], 4, 2)
            .unwrap_err()
            .contains("1 segments, 2 expected"));
        let mut past = frame;
        past[8..12].copy_from_slice(&9_000u32.to_le_bytes());
        assert!(check_rle_fragments(&[past], 4, 2)
            .unwrap_err()
            .contains("spans bytes 64..9000"));
    }

    use super::*;

    fn ih(bits_stored: u16, signed: bool) -> InputHeader {
        InputHeader {
            ts: IMPLICIT_VR_LE.into(),
            bits_allocated: 16,
            bits_stored,
            signed,
            early_slot: None,
        }
    }

    #[test]
    fn stored_values_are_sign_extended_or_masked_from_bits_stored() {
        // 12-bit signed 0xFFF is −1; 12-bit unsigned with overlay bits above bit 11 masks off.
        let raw = [0xFF, 0x0F, 0x00, 0xF0];
        let mut out = [0i16; 2];
        store_frame(&raw, &ih(12, true), 1.0, 0.0, &mut out, &IngestOptions::default()).unwrap();
        assert_eq!(out, [-1, 0]);
        store_frame(
            &raw,
            &ih(12, false),
            1.0,
            -1024.0,
            &mut out,
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(out, [4095 - 1024, -1024]);
    }

    #[test]
    fn non_unit_slope_is_rounded_and_range_checked() {
        let raw = 3u16.to_le_bytes();
        let mut out = [0i16; 1];
        store_frame(
            &raw,
            &ih(16, false),
            0.5,
            -1000.0,
            &mut out,
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(out, [-999]); // 1.5 − 1000 = −998.5 rounds half away from zero
        let raw = 0u16.to_le_bytes();
        let err = store_frame(
            &raw,
            &ih(16, false),
            1.0,
            -8192.0,
            &mut out,
            &IngestOptions::default(),
        );
        assert_eq!(err, Err((-8192.0, -8192.0)));
    }

    #[test]
    fn native_pixel_data_is_found_only_behind_a_matching_header() {
        let mut buf = vec![1u8, 2, 3];
        buf.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 4, 0, 0, 0]);
        buf.extend_from_slice(&[9, 9, 9, 9]);
        assert_eq!(native_pixel_bytes(&buf, 4, false), Some(&[9u8, 9, 9, 9][..]));
        assert_eq!(native_pixel_bytes(&buf, 2, false), None);
        assert_eq!(native_pixel_bytes(&buf, 4, true), None);
        assert_eq!(native_pixel_bytes(&buf[..5], 4, false), None);
    }
}
