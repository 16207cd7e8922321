//! Pass 1: what one input's header says (geometry, pixel format, rescale, identity), read
//! from a classic CT slice or from an Enhanced CT object's functional groups, and the checks
//! that every input belongs to the first one's series.

use std::path::{Path, PathBuf};

use dicom_object::{DefaultDicomObject, InMemDicomObject};
use nalgebra::Vector3;

use super::{attr_err, CtError, IngestOptions, SeriesMeta, ENHANCED_CT_SOP_CLASS};
use crate::attrs::{self, attr, Attr, AttrError, OpenError, Read};
use crate::datetime::{parse_date_and_time, parse_datetime, parse_utc_offset, DateTimeError, UtcOffset};

const MODALITY: Attr = attr!(MODALITY, "Modality");
const SERIES_UID: Attr = attr!(SERIES_INSTANCE_UID, "SeriesInstanceUID");
const STUDY_UID: Attr = attr!(STUDY_INSTANCE_UID, "StudyInstanceUID");
const FOR_UID: Attr = attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID");
const PATIENT_ID: Attr = attr!(PATIENT_ID, "PatientID");
const ROWS: Attr = attr!(ROWS, "Rows");
const COLUMNS: Attr = attr!(COLUMNS, "Columns");
const PIXEL_SPACING: Attr = attr!(PIXEL_SPACING, "PixelSpacing");
pub(super) const IOP: Attr = attr!(IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient");
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
pub(super) const SPACING_BETWEEN_SLICES: Attr = attr!(SPACING_BETWEEN_SLICES, "SpacingBetweenSlices");
const SLICE_THICKNESS: Attr = attr!(SLICE_THICKNESS, "SliceThickness");
const ACQUISITION_DATE: Attr = attr!(ACQUISITION_DATE, "AcquisitionDate");
const ACQUISITION_TIME: Attr = attr!(ACQUISITION_TIME, "AcquisitionTime");
const ACQUISITION_DATETIME: Attr = attr!(ACQUISITION_DATE_TIME, "AcquisitionDateTime");
const CONTENT_DATE: Attr = attr!(CONTENT_DATE, "ContentDate");
const CONTENT_TIME: Attr = attr!(CONTENT_TIME, "ContentTime");
const PATIENT_POSITION: Attr = attr!(PATIENT_POSITION, "PatientPosition");
const TIMEZONE_OFFSET: Attr = attr!(TIMEZONE_OFFSET_FROM_UTC, "TimezoneOffsetFromUTC");
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

/// Per-frame geometry and rescale.
#[derive(Debug, Clone)]
pub(super) struct FrameHeader {
    pub(super) ipp: Vector3<f64>,
    pub(super) slope: f64,
    pub(super) intercept: f64,
}

/// What pass 1 reads from one input.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub(super) series_uid: Option<String>,
    pub(super) for_uid: String,
    pub(super) rows: u32,
    pub(super) columns: u32,
    pub(super) pixel_spacing: [f64; 2],
    pub(super) iop: [f64; 6],
    pub(super) bits_allocated: u16,
    pub(super) bits_stored: u16,
    pub(super) signed: bool,
    pub(super) spacing_between_slices: Option<f64>,
    pub(super) slice_thickness: Option<f64>,
    pub(super) frames: Vec<FrameHeader>,
    /// When it was acquired, ns since the UNIX epoch (see [`super::AcquisitionSpan`]).
    pub(super) acquired_unix_ns: Option<i64>,
}

/// The first input's header and path: what every later input is checked against.
pub(super) struct FirstHeader {
    pub(super) path: PathBuf,
    pub(super) h: Header,
    pub(super) meta: SeriesMeta,
}

/// Parses one input (only up to Pixel Data when `header_only`), naming it in every error.
pub(super) fn parse(bytes: &[u8], path: &Path, header_only: bool) -> Result<DefaultDicomObject, CtError> {
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

/// A UID as stored, without the padding NUL or space.
pub(super) fn trim_uid(s: &str) -> String {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned()
}

/// Reads and checks one input's header (pass 1). The checks run in a fixed order, so an
/// input with several faults always reports the same one.
pub(super) fn read_header(
    obj: &DefaultDicomObject,
    path: &Path,
    opt: &IngestOptions,
) -> Result<Header, CtError> {
    let ds: &InMemDicomObject = obj;
    let ae = |e| attr_err(path, e);
    let enhanced = check_modality(obj, path)?;
    let (bits_allocated, bits_stored, signed) = pixel_format(ds, path)?;
    let (rows, columns) = image_size(ds, path)?;
    check_tilt(ds, path, opt)?;
    // Type 1, but anonymizers blank it; accepted only if every slice agrees (checked later).
    let series_uid = attrs::opt_str(ds, SERIES_UID).map_err(ae)?;
    let for_uid = attrs::req_str(ds, FOR_UID).map_err(ae)?;
    let spacing_between_slices = attrs::opt_f64(ds, SPACING_BETWEEN_SLICES).map_err(ae)?;
    let (pixel_spacing, iop, slice_thickness, frames) = if enhanced {
        enhanced_frames(ds, path)?
    } else {
        classic_geometry(ds, path)?
    };
    if pixel_spacing.iter().any(|s| *s <= 0.0) {
        return Err(CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: PIXEL_SPACING.name,
            reason: format!("{pixel_spacing:?} is not positive"),
        });
    }
    let acquired_unix_ns = match acquisition_instant(ds).map_err(ae)? {
        Ok(t) => t,
        Err(source) if opt.strict_acquisition_time => {
            return Err(CtError::AcquisitionTime {
                path: path.to_owned(),
                source,
            })
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "acquisition time unknown: {e}");
            None
        }
    };
    Ok(Header {
        acquired_unix_ns,
        series_uid,
        for_uid,
        rows,
        columns,
        pixel_spacing,
        iop,
        bits_allocated,
        bits_stored,
        signed,
        spacing_between_slices,
        slice_thickness,
        frames,
    })
}

/// The input's acquisition instant, ns since the UNIX epoch: Acquisition DateTime, else
/// Acquisition Date + Time, else Content Date + Time (the first that is present whole), at
/// the value's own offset, else Timezone Offset From UTC, else UTC. `Ok(Err(_))` for a value
/// that is present but not an instant; the outer error for an attribute not text at all.
fn acquisition_instant(ds: &InMemDicomObject) -> Result<Result<Option<i64>, DateTimeError>, AttrError> {
    let s = |a| attrs::opt_str(ds, a);
    // (the offset is read only when a value needs it: a malformed one beside values that
    // carry their own offset is left alone)
    let offset = || match s(TIMEZONE_OFFSET)? {
        Some(z) => Ok(parse_utc_offset(TIMEZONE_OFFSET.name, &z)),
        None => Ok(Ok(UtcOffset::UTC)),
    };
    if let Some(dt) = s(ACQUISITION_DATETIME)? {
        let has_own_offset = dt.contains(['+', '-']);
        let offset = if has_own_offset {
            Ok(UtcOffset::UTC)
        } else {
            offset()?
        };
        return Ok(offset.and_then(|o| parse_datetime(ACQUISITION_DATETIME.name, &dt, o).map(Some)));
    }
    for (date, time) in [(ACQUISITION_DATE, ACQUISITION_TIME), (CONTENT_DATE, CONTENT_TIME)] {
        if let (Some(d), Some(t)) = (s(date)?, s(time)?) {
            return Ok(
                offset()?.and_then(|o| parse_date_and_time((date.name, &d), (time.name, &t), o).map(Some))
            );
        }
    }
    Ok(Ok(None))
}

/// Refuses anything but a CT; returns whether the object is an Enhanced (multi-frame) CT.
fn check_modality(obj: &DefaultDicomObject, path: &Path) -> Result<bool, CtError> {
    let ds: &InMemDicomObject = obj;
    let sop = sop_class(obj, path)?;
    let modality = attrs::opt_str(ds, MODALITY).map_err(|e| attr_err(path, e))?;
    if modality.as_deref() != Some("CT") {
        return Err(CtError::WrongModality {
            path: path.to_owned(),
            found: modality.unwrap_or_else(|| format!("<none>, SOP class {sop}")),
        });
    }
    Ok(sop == ENHANCED_CT_SOP_CLASS)
}

/// (Bits Allocated, Bits Stored, signed) of a pixel format ingest can convert: one sample of
/// MONOCHROME2, 8 or 16 bits allocated.
fn pixel_format(ds: &InMemDicomObject, path: &Path) -> Result<(u16, u16, bool), CtError> {
    let ae = |e| attr_err(path, e);
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
    Ok((bits_allocated as u16, bits_stored as u16, pixel_rep == 1))
}

/// (Rows, Columns), both non-zero.
fn image_size(ds: &InMemDicomObject, path: &Path) -> Result<(u32, u32), CtError> {
    let ae = |e| attr_err(path, e);
    let rows = attrs::req_u32(ds, ROWS).map_err(ae)?;
    let columns = attrs::req_u32(ds, COLUMNS).map_err(ae)?;
    if rows == 0 || columns == 0 {
        return Err(CtError::InvalidAttribute {
            path: path.to_owned(),
            tag_name: if rows == 0 { ROWS.name } else { COLUMNS.name },
            reason: "zero".into(),
        });
    }
    Ok((rows, columns))
}

/// Refuses a stated Gantry/Detector Tilt beyond the tolerance (a tilt left unstated is
/// caught later, from the slice positions).
fn check_tilt(ds: &InMemDicomObject, path: &Path, opt: &IngestOptions) -> Result<(), CtError> {
    if let Some(tilt) = attrs::opt_f64(ds, GANTRY_TILT).map_err(|e| attr_err(path, e))? {
        if tilt.abs() > opt.max_tilt_deg {
            return Err(CtError::GantryTilt {
                path: path.to_owned(),
                tilt_deg: tilt,
                off_normal_mm: 0.0,
            });
        }
    }
    Ok(())
}

/// The plane geometry and rescale of a classic (single-frame) CT slice.
fn classic_geometry(ds: &InMemDicomObject, path: &Path) -> Result<SliceGeometry, CtError> {
    let ae = |e| attr_err(path, e);
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
    Ok((ps, iop, thick, frames))
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

/// (Pixel Spacing, Image Orientation, Slice Thickness, frames) of one input.
type SliceGeometry = ([f64; 2], [f64; 6], Option<f64>, Vec<FrameHeader>);

/// Reads the functional groups of an Enhanced CT object; per-frame groups override shared.
fn enhanced_frames(ds: &InMemDicomObject, path: &Path) -> Result<SliceGeometry, CtError> {
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

/// Checks that a later input belongs to the first one's series and shares its plane geometry.
pub(super) fn check_consistent(f: &FirstHeader, h: &Header, path: &Path) -> Result<(), CtError> {
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

/// The series metadata read from the first input (counts and spacing are filled in later).
pub(super) fn series_meta(
    obj: &DefaultDicomObject,
    path: &Path,
    h: &Header,
    ts: &str,
) -> Result<SeriesMeta, CtError> {
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
        patient_position: s(PATIENT_POSITION)?,
        temporal_position: temporal,
        acquisition: None,
        slices: 0,
        slice_spacing_mm: 0.0,
        max_spacing_deviation_mm: 0.0,
        files: Vec::new(),
    })
}
