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
    /// An element claims more bytes than the file holds (corrupt length field).
    #[error("element {tag} at byte {offset} claims {length} bytes but only {remaining} remain")]
    LengthBeyondEnd {
        /// Tag of the element.
        tag: Tag,
        /// Byte offset of the element header in the file.
        offset: usize,
        /// Claimed value length.
        length: u64,
        /// Bytes left in the file after the header.
        remaining: usize,
    },
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
    check_lengths(bytes)?;
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
pub(crate) fn string_req(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<String, AttrError> {
    string(obj, tag, name)?.ok_or(AttrError::Missing { name, tag })
}

/// Whether a value is absent or holds only blanks.
fn blank(obj: &InMemDicomObject, tag: Tag) -> bool {
    match obj.get(tag) {
        None => true,
        Some(e) => {
            e.value().multiplicity() == 0
                || e.value()
                    .to_str()
                    .map(|s| {
                        s.trim_matches(|c: char| c == ' ' || c == '\0' || c == '\\')
                            .is_empty()
                    })
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
pub(crate) fn float(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<Option<f64>, AttrError> {
    Ok(floats_n(obj, tag, name, 1, "1")?.map(|v| v[0]))
}

/// One integer; `None` when absent or blank.
pub(crate) fn int(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<Option<i32>, AttrError> {
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

/// Walks the element headers and refuses any defined length that runs past the end of the
/// file. The DICOM decoder allocates (and zero-fills) a value's claimed length before
/// reading it, so one corrupt length field would otherwise cost gigabytes of memory.
/// Big-endian and deflated data sets are left to the decoder.
fn check_lengths(bytes: &[u8]) -> Result<(), OpenError> {
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 132;
    let mut explicit = true;
    let mut in_meta = true;
    let mut in_fragments = false;
    while pos < bytes.len() {
        let (Some(group), Some(elem)) = (u16_at(pos), u16_at(pos + 2)) else {
            return Ok(()); // a truncated header: the decoder reports it
        };
        let tag = Tag(group, elem);
        if in_meta && group != 0x0002 {
            in_meta = false;
            let ts = find_transfer_syntax(bytes);
            match ts.as_deref() {
                Some("1.2.840.10008.1.2") => explicit = false,
                Some("1.2.840.10008.1.2.2") | Some("1.2.840.10008.1.2.1.99") | None => return Ok(()),
                _ => explicit = true,
            }
        }
        let (header, length, is_sq) = if group == 0xFFFE {
            (8, u32_at(pos + 4), false)
        } else if explicit {
            let Some(vr) = bytes.get(pos + 4..pos + 6) else {
                return Ok(());
            };
            match vr {
                b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR"
                | b"UT" | b"UV" => (12, u32_at(pos + 8), vr == b"SQ"),
                _ => (8, u16_at(pos + 6).map(u32::from), false),
            }
        } else {
            (8, u32_at(pos + 4), false)
        };
        let Some(length) = length else {
            return Ok(());
        };
        let body = pos + header;
        if tag == Tag(0x7FE0, 0x0010) && length == u32::MAX {
            in_fragments = true; // encapsulated pixel data: items hold codestream bytes
        } else if group == 0xFFFE && elem == 0xE0DD {
            in_fragments = false;
        }
        if length == u32::MAX || (group == 0xFFFE && elem != 0xE000) {
            pos = body; // undefined length or delimiter: contents follow as elements/items
            continue;
        }
        let remaining = bytes.len().saturating_sub(body);
        if length as usize > remaining {
            return Err(OpenError::LengthBeyondEnd {
                tag,
                offset: pos,
                length: length.into(),
                remaining,
            });
        }
        // Descend into sequences and items (their contents carry lengths too); an
        // implicit-VR sequence is recognised by its first item tag.
        let starts_with_item = u16_at(body) == Some(0xFFFE) && u16_at(body + 2) == Some(0xE000);
        let descend =
            is_sq || (group == 0xFFFE && elem == 0xE000 && !in_fragments) || (!explicit && starts_with_item);
        pos = if descend { body } else { body + length as usize };
    }
    Ok(())
}

/// The Transfer Syntax UID from the file meta group, if present and readable.
fn find_transfer_syntax(bytes: &[u8]) -> Option<String> {
    let mut pos = 132;
    while let Some(h) = bytes.get(pos..pos + 8) {
        let group = u16::from_le_bytes([h[0], h[1]]);
        let elem = u16::from_le_bytes([h[2], h[3]]);
        if group != 0x0002 {
            return None;
        }
        let (hl, len) = match &h[4..6] {
            b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" => {
                let l = bytes.get(pos + 8..pos + 12)?;
                (12, u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            }
            _ => (8, u16::from_le_bytes([h[6], h[7]]) as usize),
        };
        if elem == 0x0010 {
            let v = bytes.get(pos + hl..pos + hl + len)?;
            return Some(
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        pos = pos.checked_add(hl + len)?;
    }
    None
}
