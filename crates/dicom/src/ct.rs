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
//!
//! The steps live in child modules: `header` (pass 1 per input), `decoder` (the
//! [`SeriesDecoder`], both passes and the stack checks), `pixels` (pass 2's byte work and
//! the HU conversion) and `early` (decoding a frame's objects as they arrive).

use std::path::{Path, PathBuf};

use crate::attrs::{self, AttrError, OpenError};
use crate::geometry::Grid;
use crate::units::PointMm;
use crate::volume::CtVolume;

mod decoder;
mod early;
mod header;
mod pixels;
pub mod write;

pub use crate::uids::{CT_SOP_CLASS, ENHANCED_CT_SOP_CLASS};
pub use decoder::SeriesDecoder;
pub use write::{write_ct_series, write_ct_series_placed, Acquired, CtSeriesIds, CtSliceTemplate};

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
    /// The acquisition (or content) date or time is present but not a valid instant; only
    /// with [`IngestOptions::strict_acquisition_time`].
    #[error("{path}: acquisition time: {source}", path = path.display())]
    AcquisitionTime {
        /// The file.
        path: PathBuf,
        /// The attribute, its text and the fault.
        #[source]
        source: crate::datetime::DateTimeError,
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

/// A [`CtError`] for an attribute fault in `path`.
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
    /// Refuse an input whose acquisition date or time is present but malformed
    /// ([`CtError::AcquisitionTime`]): set by the pipeline, where a frame's time decides how
    /// long its corrections are valid. Otherwise (archives, planning CTs) such an input's
    /// time is left unknown with a warning, and the rest of the series is read as usual.
    pub strict_acquisition_time: bool,
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
            strict_acquisition_time: false,
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
    /// Patient Position (CS: HFS, FFS, …) of the first input, if present: the planner on a
    /// user's CT orients its beams by it.
    pub patient_position: Option<String>,
    /// Temporal Position Index or Identifier (4D CT phase), if present.
    pub temporal_position: Option<u32>,
    /// When the slices were acquired, over the inputs that say (see [`AcquisitionSpan`]);
    /// `None` when none does.
    pub acquisition: Option<AcquisitionSpan>,
    /// Number of slices.
    pub slices: usize,
    /// Mean slice spacing along the normal, mm.
    pub slice_spacing_mm: f64,
    /// Largest deviation of a slice gap from the mean spacing, mm.
    pub max_spacing_deviation_mm: f64,
    /// Sorted file paths (empty for in-memory input); for one multi-frame file, that file.
    pub files: Vec<PathBuf>,
}

/// When a series' inputs were acquired, ns since the UNIX epoch.
///
/// Each input's instant is its Acquisition DateTime (0008,002A); else its Acquisition Date
/// and Time (0008,0022 / 0008,0032); else its Content Date and Time (0008,0023 / 0008,0033).
/// A value without its own offset is at the input's Timezone Offset From UTC (0008,0201),
/// and with neither, at UTC (a scanner that writes local time without saying so reads
/// hours off; a configured offset would be the remedy, not built yet). An Enhanced CT object
/// counts as one input, at its top-level Acquisition DateTime (the per-frame Frame Acquisition
/// DateTime is not read). Parsing: [`crate::datetime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquisitionSpan {
    /// The earliest input's instant.
    pub earliest_unix_ns: i64,
    /// The latest input's instant.
    pub latest_unix_ns: i64,
    /// How many inputs carried an instant (the others carried none, or, when not strict,
    /// a malformed one).
    pub inputs_timed: usize,
    /// How many inputs the series has.
    pub inputs: usize,
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
