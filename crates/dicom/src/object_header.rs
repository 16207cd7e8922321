//! The header facts of one received image object that frame assembly groups by.
//!
//! A scanner's objects arrive one by one (C-STORE, spool folder); before any pixel is decoded
//! the assembler needs to know which frame an object belongs to and how many objects that
//! frame has. This reads just those facts, nothing past Pixel Data, so that the pipeline's
//! frame sources never touch a dicom-rs type.

use crate::attrs::{self, attr, Attr, AttrError, OpenError, Read};
use crate::ct::ENHANCED_CT_SOP_CLASS;

const SOP_CLASS_UID: Attr = attr!(SOP_CLASS_UID, "SOPClassUID");
const SOP_INSTANCE_UID: Attr = attr!(SOP_INSTANCE_UID, "SOPInstanceUID");
const SERIES_INSTANCE_UID: Attr = attr!(SERIES_INSTANCE_UID, "SeriesInstanceUID");
const ACQUISITION_NUMBER: Attr = attr!(ACQUISITION_NUMBER, "AcquisitionNumber");
const TEMPORAL_POSITION_IDENTIFIER: Attr = attr!(TEMPORAL_POSITION_IDENTIFIER, "TemporalPositionIdentifier");
const IMAGES_IN_ACQUISITION: Attr = attr!(IMAGES_IN_ACQUISITION, "ImagesInAcquisition");

/// What frame assembly needs to know of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeader {
    /// SOP Class UID (0008,0016), or the file meta's Media Storage SOP Class UID when the data
    /// set lacks it.
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018), when present; always present for Enhanced CT.
    pub sop_instance_uid: Option<String>,
    /// Series Instance UID (0020,000E); required.
    pub series_instance_uid: String,
    /// Acquisition Number (0020,0012).
    pub acquisition_number: Option<i64>,
    /// Temporal Position Identifier (0020,0100).
    pub temporal_position_identifier: Option<i64>,
    /// Images in Acquisition (0020,1002).
    pub images_in_acquisition: Option<usize>,
}

/// Why an object's header could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectHeaderError {
    /// Not parseable as DICOM.
    #[error("unreadable DICOM object: {0}")]
    Unreadable(#[source] OpenError),
    /// An attribute the assembler needs is missing or unusable.
    #[error(transparent)]
    Attribute(#[from] AttrError),
}

/// Reads the header of a Part 10 object (nothing past Pixel Data).
pub fn read_object_header(bytes: &[u8]) -> Result<ObjectHeader, ObjectHeaderError> {
    let obj = attrs::parse(bytes, Read::Header).map_err(ObjectHeaderError::Unreadable)?;
    let sop_class_uid = match attrs::opt_str(&obj, SOP_CLASS_UID)? {
        Some(uid) => uid,
        None => obj
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches(['\0', ' '])
            .to_owned(),
    };
    // An Enhanced CT object is a whole frame, told apart from the next by its instance UID.
    let sop_instance_uid = if sop_class_uid == ENHANCED_CT_SOP_CLASS {
        Some(attrs::req_str(&obj, SOP_INSTANCE_UID)?)
    } else {
        attrs::opt_str(&obj, SOP_INSTANCE_UID)?
    };
    Ok(ObjectHeader {
        sop_class_uid,
        sop_instance_uid,
        series_instance_uid: attrs::req_str(&obj, SERIES_INSTANCE_UID)?,
        acquisition_number: attrs::opt_int::<i64>(&obj, ACQUISITION_NUMBER)?,
        temporal_position_identifier: attrs::opt_int::<i64>(&obj, TEMPORAL_POSITION_IDENTIFIER)?,
        images_in_acquisition: attrs::opt_int::<usize>(&obj, IMAGES_IN_ACQUISITION)?,
    })
}
