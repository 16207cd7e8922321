//! Small, panic-free accessors for DICOM attributes shared by the RT readers.
//!
//! Real files hold empty values, strings where numbers belong and sequences where a value
//! was expected; every accessor turns those into a typed [`AttrError`] that names the
//! attribute, and treats an empty value like an absent one, as the standard does for
//! type 2 attributes.

use std::path::Path;

use dicom_core::value::ConvertValueError;
use dicom_core::Tag;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

/// Why an attribute cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// Required but absent or empty.
    #[error("{name} {tag} is missing or empty")]
    Missing {
        /// Attribute keyword.
        name: &'static str,
        /// Its tag.
        tag: Tag,
    },
    /// Expected a sequence, found something else.
    #[error("{name} {tag} is not a sequence")]
    NotASequence {
        /// Attribute keyword.
        name: &'static str,
        /// Its tag.
        tag: Tag,
    },
    /// Present but not convertible to what the reader needs.
    #[error("{name} {tag} cannot be read as {expected}")]
    BadValue {
        /// Attribute keyword.
        name: &'static str,
        /// Its tag.
        tag: Tag,
        /// What was expected.
        expected: &'static str,
        /// The conversion failure.
        #[source]
        source: ConvertValueError,
    },
    /// Wrong number of values.
    #[error("{name} {tag} has {found} values, expected {expected}")]
    Count {
        /// Attribute keyword.
        name: &'static str,
        /// Its tag.
        tag: Tag,
        /// Values present.
        found: usize,
        /// Values expected (description).
        expected: &'static str,
    },
}

/// Why a file could not be opened as a DICOM object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Reading the file failed.
    #[error("cannot read file")]
    Io(#[source] std::io::Error),
    /// No `DICM` magic after a 128-byte preamble.
    #[error("not a DICOM file (no DICM magic code at byte 128)")]
    NotDicom,
    /// DICOM parsing failed: truncated or malformed.
    #[error("DICOM parsing failed (truncated or malformed file)")]
    Parse(#[source] Box<dicom_object::ReadError>),
}

/// Reads a DICOM Part 10 file.
pub(crate) fn open(path: &Path) -> Result<DefaultDicomObject, OpenError> {
    let bytes = std::fs::read(path).map_err(OpenError::Io)?;
    parse(&bytes)
}

/// Parses DICOM Part 10 bytes (preamble, magic, meta group, data set).
pub(crate) fn parse(bytes: &[u8]) -> Result<DefaultDicomObject, OpenError> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(OpenError::NotDicom);
    }
    OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&bytes[128..])
        .map_err(|e| OpenError::Parse(Box::new(e)))
}

/// A sequence's items; `None` when absent or empty.
pub(crate) fn seq<'a>(
    obj: &'a InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<&'a [InMemDicomObject]>, AttrError> {
    match obj.get(tag) {
        None => Ok(None),
        Some(e) => match e.value().items() {
            Some([]) => Ok(None),
            Some(items) => Ok(Some(items)),
            // An empty non-sequence value (zero length, read without a known VR) is absent.
            None if e.value().multiplicity() == 0 => Ok(None),
            None => Err(AttrError::NotASequence { name, tag }),
        },
    }
}

/// Required sequence.
pub(crate) fn seq_req<'a>(
    obj: &'a InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<&'a [InMemDicomObject], AttrError> {
    seq(obj, tag, name)?.ok_or(AttrError::Missing { name, tag })
}

/// A trimmed string; `None` when absent or blank.
pub(crate) fn string(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<String>, AttrError> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    let s = e.value().to_str().map_err(|source| AttrError::BadValue {
        name,
        tag,
        expected: "text",
        source,
    })?;
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    Ok((!t.is_empty()).then(|| t.to_string()))
}

/// Required string.
pub(crate) fn string_req(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<String, AttrError> {
    string(obj, tag, name)?.ok_or(AttrError::Missing { name, tag })
}

/// Whether a value is absent or holds only blanks.
fn blank(obj: &InMemDicomObject, tag: Tag) -> bool {
    match obj.get(tag) {
        None => true,
        Some(e) => {
            e.value().multiplicity() == 0
                || e
                    .value()
                    .to_str()
                    .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0' || c == '\\').is_empty())
                    .unwrap_or(false)
        }
    }
}

/// All numbers of a DS/FL/FD/IS value; `None` when absent or blank.
pub(crate) fn floats(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<Vec<f64>>, AttrError> {
    if blank(obj, tag) {
        return Ok(None);
    }
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    e.value()
        .to_multi_float64()
        .map(Some)
        .map_err(|source| AttrError::BadValue {
            name,
            tag,
            expected: "decimal numbers",
            source,
        })
}

/// Exactly `n` numbers, or `None` when absent or blank.
pub(crate) fn floats_n(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
    n: usize,
    expected: &'static str,
) -> Result<Option<Vec<f64>>, AttrError> {
    match floats(obj, tag, name)? {
        Some(v) if v.len() != n => Err(AttrError::Count {
            name,
            tag,
            found: v.len(),
            expected,
        }),
        other => Ok(other),
    }
}

/// One number; `None` when absent or blank.
pub(crate) fn float(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<f64>, AttrError> {
    Ok(floats_n(obj, tag, name, 1, "1")?.map(|v| v[0]))
}

/// One integer; `None` when absent or blank.
pub(crate) fn int(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<i32>, AttrError> {
    if blank(obj, tag) {
        return Ok(None);
    }
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    e.value()
        .to_int::<i32>()
        .map(Some)
        .map_err(|source| AttrError::BadValue {
            name,
            tag,
            expected: "an integer",
            source,
        })
}
