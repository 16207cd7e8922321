//! RT Structure Set (SOP class 1.2.840.10008.5.1.4.1.1.481.3) ↔ [`StructureSet`]; the writer is [`write`](mod@write).
//!
//! Reads the Structure Set ROI Sequence (number, name, referenced Frame of Reference) and
//! the ROI Contour Sequence (contours of each referenced ROI). Only CLOSED_PLANAR contours
//! enclose anything; POINT and OPEN contours are skipped with a warning. Nothing here
//! panics on a malformed file: every fault comes back as an [`RtStructError`] naming the
//! file and, where it applies, the ROI and contour index.
//!
//! ```no_run
//! let ss = ionguide_dicom::rtstruct::read_structure_set("tests/data/STS_001/mask/RS.dcm").unwrap();
//! let gtv = ss.roi("GTV_Mass_CT").unwrap();
//! println!("{} contours", gtv.contours.len());
//! ```

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;

use super::attrs::{self, attr, AttrError, OpenError, Read};
use crate::structure::{Contour, Roi, StructureSet};
use crate::units::PointMm;

pub use crate::uids::RT_STRUCTURE_SET_SOP_CLASS;
pub use write::{write_structure_set, StructureSetIds};

pub mod write;

/// Why an RT Structure Set cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtStructError {
    /// The file could not be read.
    #[error("{}: cannot read RT Structure Set", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a DICOM Part 10 file.
    #[error("{}: not a DICOM file (no DICM magic code at byte 128)", path.display())]
    NotDicom {
        /// File.
        path: PathBuf,
    },
    /// A length field runs past the end of the file (corrupt or truncated).
    #[error("{}: corrupt DICOM file", path.display())]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Which element and where.
        #[source]
        source: OpenError,
    },
    /// DICOM parsing failed.
    #[error("{}: DICOM parsing failed (truncated or malformed)", path.display())]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// Not an RT Structure Set.
    #[error("{}: SOP Class UID is {found:?}, not RT Structure Set ({RT_STRUCTURE_SET_SOP_CLASS})", path.display())]
    WrongSopClass {
        /// File.
        path: PathBuf,
        /// SOP Class UID found.
        found: String,
    },
    /// An attribute is missing or unreadable.
    #[error("{}: {context}", path.display())]
    Attribute {
        /// File.
        path: PathBuf,
        /// Where in the file (e.g. "ROI Contour Sequence item 2").
        context: String,
        /// What is wrong.
        #[source]
        source: AttrError,
    },
    /// A contour's data is unusable.
    #[error("{}: ROI {roi:?} contour {contour_index}: {fault}", path.display())]
    MalformedContour {
        /// File.
        path: PathBuf,
        /// ROI name.
        roi: String,
        /// Index of the contour in the ROI's Contour Sequence.
        contour_index: usize,
        /// What is wrong.
        fault: ContourFault,
    },
    /// The requested ROI is not in the file.
    #[error("{}: ROI {name:?} not found; available ROIs: {available:?}", path.display())]
    RoiNotFound {
        /// File.
        path: PathBuf,
        /// Requested name.
        name: String,
        /// The names that exist.
        available: Vec<String>,
    },
}

/// What is wrong with one contour's data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ContourFault {
    /// Contour Data length is not a multiple of 3.
    #[error("Contour Data has {count} coordinates, not a multiple of 3")]
    NotTriples {
        /// Number of coordinates.
        count: usize,
    },
    /// Number of Contour Points disagrees with the data.
    #[error("Number of Contour Points is {stated} but Contour Data holds {found} points")]
    PointCountMismatch {
        /// Number of Contour Points.
        stated: i32,
        /// Points in Contour Data.
        found: usize,
    },
    /// A coordinate is NaN or infinite.
    #[error("Contour Data holds a non-finite coordinate at point {point}")]
    NonFinite {
        /// Point index.
        point: usize,
    },
    /// Contour Data is absent.
    #[error("Contour Data (3006,0050) is missing")]
    MissingData,
    /// Contour Data is unreadable.
    #[error("Contour Data (3006,0050) is unreadable: {0}")]
    BadData(String),
}

/// Reads a whole RT Structure Set.
pub fn read_structure_set(path: impl AsRef<Path>) -> Result<StructureSet, RtStructError> {
    let path = path.as_ref();
    let obj = attrs::open(path, Read::Whole).map_err(|e| open_error(path, e))?;
    parse_structure_set(path, &obj)
}

/// Reads an RT Structure Set from Part 10 bytes; `path` only names the source in errors.
pub fn read_structure_set_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<StructureSet, RtStructError> {
    let path = path.as_ref();
    let obj = attrs::parse(bytes, Read::Whole).map_err(|e| open_error(path, e))?;
    parse_structure_set(path, &obj)
}

/// Reads one ROI by name; a missing name lists the ROIs that exist.
pub fn read_roi(path: impl AsRef<Path>, name: &str) -> Result<(String, Roi), RtStructError> {
    let path = path.as_ref();
    let ss = read_structure_set(path)?;
    let for_uid = ss.frame_of_reference_uid.clone();
    let available = ss.names();
    ss.rois
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| (for_uid, r))
        .ok_or_else(|| RtStructError::RoiNotFound {
            path: path.to_path_buf(),
            name: name.to_string(),
            available,
        })
}

fn open_error(path: &Path, e: OpenError) -> RtStructError {
    let path = path.to_path_buf();
    match e {
        OpenError::Io(source) => RtStructError::Io { path, source },
        OpenError::NotDicom => RtStructError::NotDicom { path },
        OpenError::Parse(source) | OpenError::Truncated(source) => RtStructError::Parse { path, source },
        e @ OpenError::LengthBeyondEnd { .. } => RtStructError::Corrupt { path, source: e },
    }
}

fn parse_structure_set(
    path: &Path,
    obj: &dicom_object::DefaultDicomObject,
) -> Result<StructureSet, RtStructError> {
    let at = |context: &str| {
        let context = context.to_string();
        move |source| RtStructError::Attribute {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let sop = attrs::sop_class_uid(obj).map_err(at("dataset"))?;
    if sop != RT_STRUCTURE_SET_SOP_CLASS {
        return Err(RtStructError::WrongSopClass {
            path: path.to_path_buf(),
            found: sop,
        });
    }

    let ssroi = attrs::req_items(obj, attr!(STRUCTURE_SET_ROI_SEQUENCE, "StructureSetROISequence"))
        .map_err(at("dataset"))?;
    let mut rois = Vec::with_capacity(ssroi.len());
    let mut roi_for = None;
    for (n, item) in ssroi.iter().enumerate() {
        let ctx = format!("Structure Set ROI Sequence item {n}");
        let number = attrs::opt_int::<i32>(item, attr!(ROI_NUMBER, "ROINumber"))
            .map_err(at(&ctx))?
            .ok_or(AttrError::Missing {
                name: "ROINumber",
                tag: tags::ROI_NUMBER,
            })
            .map_err(at(&ctx))?;
        let name = attrs::opt_str(item, attr!(ROI_NAME, "ROIName"))
            .map_err(at(&ctx))?
            .unwrap_or_else(|| format!("ROI {number}"));
        if roi_for.is_none() {
            roi_for = attrs::opt_str(
                item,
                attr!(REFERENCED_FRAME_OF_REFERENCE_UID, "ReferencedFrameOfReferenceUID"),
            )
            .map_err(at(&ctx))?;
        }
        rois.push(Roi {
            number,
            name,
            contours: Vec::new(),
        });
    }

    let frame_of_reference_uid = match attrs::opt_items(
        obj,
        attr!(
            REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
            "ReferencedFrameOfReferenceSequence"
        ),
    )
    .map_err(at("dataset"))?
    {
        Some(items) => attrs::opt_str(&items[0], attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"))
            .map_err(at("Referenced Frame of Reference Sequence item 0"))?,
        None => None,
    }
    .or(roi_for)
    .ok_or(AttrError::Missing {
        name: "FrameOfReferenceUID",
        tag: tags::FRAME_OF_REFERENCE_UID,
    })
    .map_err(at("Referenced Frame of Reference Sequence"))?;

    let contours_seq = attrs::opt_items(obj, attr!(ROI_CONTOUR_SEQUENCE, "ROIContourSequence"))
        .map_err(at("dataset"))?
        .unwrap_or(&[]);
    for (n, item) in contours_seq.iter().enumerate() {
        let ctx = format!("ROI Contour Sequence item {n}");
        let Some(referenced) =
            attrs::opt_int::<i32>(item, attr!(REFERENCED_ROI_NUMBER, "ReferencedROINumber"))
                .map_err(at(&ctx))?
        else {
            tracing::warn!(path = %path.display(), item = n, "ROI Contour item without Referenced ROI Number skipped");
            continue;
        };
        let Some(roi) = rois.iter_mut().find(|r| r.number == referenced) else {
            tracing::warn!(path = %path.display(), referenced, "ROI Contour item references an undeclared ROI; skipped");
            continue;
        };
        let Some(cs) =
            attrs::opt_items(item, attr!(CONTOUR_SEQUENCE, "ContourSequence")).map_err(at(&ctx))?
        else {
            continue;
        };
        for (ci, c) in cs.iter().enumerate() {
            let bad = |fault| RtStructError::MalformedContour {
                path: path.to_path_buf(),
                roi: roi.name.clone(),
                contour_index: ci,
                fault,
            };
            let geometric = attrs::opt_str(c, attr!(CONTOUR_GEOMETRIC_TYPE, "ContourGeometricType"))
                .map_err(|e| bad(ContourFault::BadData(e.to_string())))?;
            if let Some(g) = geometric.as_deref() {
                if g != "CLOSED_PLANAR" {
                    tracing::warn!(path = %path.display(), roi = %roi.name, contour_index = ci, geometric_type = g, "non-CLOSED_PLANAR contour skipped");
                    continue;
                }
            }
            let data = attrs::opt_f64s_as_stored(c, attr!(CONTOUR_DATA, "ContourData"))
                .map_err(|e| bad(ContourFault::BadData(e.to_string())))?
                .ok_or_else(|| bad(ContourFault::MissingData))?;
            if data.len() % 3 != 0 {
                return Err(bad(ContourFault::NotTriples { count: data.len() }));
            }
            let found = data.len() / 3;
            if let Some(stated) =
                attrs::opt_int::<i32>(c, attr!(NUMBER_OF_CONTOUR_POINTS, "NumberOfContourPoints"))
                    .map_err(|e| bad(ContourFault::BadData(e.to_string())))?
            {
                if usize::try_from(stated).ok() != Some(found) {
                    return Err(bad(ContourFault::PointCountMismatch { stated, found }));
                }
            }
            if let Some(p) = data.iter().position(|v| !v.is_finite()) {
                return Err(bad(ContourFault::NonFinite { point: p / 3 }));
            }
            let points_mm = data
                .chunks_exact(3)
                .map(|t| PointMm::new(t[0], t[1], t[2]))
                .collect();
            roi.contours.push(Contour { points_mm });
        }
    }
    Ok(StructureSet {
        frame_of_reference_uid,
        rois,
    })
}
