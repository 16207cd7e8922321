//! The DICOM UIDs the project names: transfer syntaxes it reads, writes or negotiates, and
//! the SOP classes of the objects it handles. One constant each, so a reader, a writer and
//! the network side cannot disagree on a digit. (PS3.6 annex A lists them.)

/// Implicit VR Little Endian, the DICOM default transfer syntax.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian: what ionguide and its simulator write.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Explicit VR Big Endian (retired, still met in old archives).
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// RLE Lossless.
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Verification (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
/// CT Image Storage (one slice per object).
pub const CT_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Enhanced CT Image Storage (multi-frame).
pub const ENHANCED_CT_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2.1";
/// RT Structure Set Storage.
pub const RT_STRUCTURE_SET_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.3";
/// RT Dose Storage.
pub const RT_DOSE_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.2";
/// RT Ion Plan Storage.
pub const RT_ION_PLAN_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.8";
/// Spatial Registration Storage.
pub const SPATIAL_REGISTRATION_SOP_CLASS: &str = dicom_dictionary_std::uids::SPATIAL_REGISTRATION_STORAGE;

/// The standard name of a SOP class (`RT Structure Set Storage`), or `unknown SOP class`:
/// an operator reading "rejected" should see at once that a structure set was sent by
/// mistake, not only its UID.
pub fn sop_class_name(uid: &str) -> &'static str {
    use dicom_core::dictionary::UidDictionary;
    dicom_dictionary_std::StandardSopClassDictionary
        .by_uid(uid.trim_end_matches('\0'))
        .map_or("unknown SOP class", |e| e.name)
}
