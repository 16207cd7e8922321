//! Writing DICOM Part 10 objects: the element builders every writer of this crate shares
//! (RT Ion Plan, Spatial Registration, CT series, RT Structure Set), the Part 10 encoder and
//! the error they report.
//!
//! The writers are deterministic: the same inputs give byte-identical output (the simulator's
//! replays compare hashes of what they write).

pub(crate) mod elements;

pub use elements::format_ds;

/// Who wrote an object: Manufacturer (0008,0070) and the file meta group's implementation
/// identity. Part of the output, so a fixed producer keeps output byte-identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    /// Manufacturer (0008,0070).
    pub manufacturer: &'static str,
    /// Implementation Class UID (0002,0012).
    pub implementation_class_uid: &'static str,
    /// Implementation Version Name (0002,0013), at most 16 characters.
    pub implementation_version_name: &'static str,
}

/// Why a DICOM object cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
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
    /// A template object lacks an attribute the edit needs.
    #[error("no usable {what}")]
    MissingAttribute {
        /// Which attribute.
        what: &'static str,
    },
}

/// Checks `uid` is a UID of at most `max_len` characters (less than 64 where suffixes follow).
pub(crate) fn check_uid(name: &'static str, uid: &str, max_len: usize) -> Result<(), WriteError> {
    let ok = !uid.is_empty()
        && uid.len() <= max_len
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !uid.starts_with('.')
        && !uid.ends_with('.')
        && !uid.contains("..");
    if ok {
        Ok(())
    } else {
        Err(WriteError::BadParameter {
            name,
            reason: format!(
                "{uid:?} is not a UID of at most {max_len} characters (slice suffixes need the rest)"
            ),
        })
    }
}
