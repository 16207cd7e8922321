//! Opening DICOM Part 10 data and typed, panic-free reads of its attributes, shared by the
//! CT, RT Structure Set and RT Ion Plan readers and the folder classifier.
//!
//! Real files hold empty values, strings where numbers belong and sequences where a value was
//! expected; every accessor turns those into a typed [`AttrError`] naming the attribute and
//! its tag, and treats an empty value like an absent one, as the standard does for type 2
//! attributes. Errors carry no file: the caller knows it and wraps.
//!
//! [`open`] and [`parse`] refuse element lengths that run past the end of the data before the
//! decoder sees them: dicom-rs allocates and zero-fills a value's claimed length before
//! reading it, so one corrupt length field would otherwise cost gigabytes.

use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::{ConvertValueError, Value};
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use crate::uids;

/// A tag paired with its keyword, so errors can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The tag.
    pub tag: Tag,
    /// The DICOM keyword, for messages.
    pub name: &'static str,
}

/// `attr!(ROWS, "Rows")`: the [`Attr`] of a standard dictionary tag constant.
macro_rules! attr {
    ($tag:ident, $name:literal) => {
        $crate::attrs::Attr {
            tag: dicom_dictionary_std::tags::$tag,
            name: $name,
        }
    };
}
pub(crate) use attr;

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
        /// Values expected.
        expected: usize,
    },
    /// A number is NaN or infinite.
    #[error("{name} {tag} holds the non-finite value {value}")]
    NonFinite {
        /// Attribute keyword.
        name: &'static str,
        /// Its tag.
        tag: Tag,
        /// The value.
        value: f64,
    },
    /// An integer outside the range the reader accepts.
    #[error("{name} {tag} value {value} does not fit {expected}")]
    OutOfRange {
        /// Attribute keyword.
        name: &'static str,
        /// Its tag.
        tag: Tag,
        /// The value.
        value: i64,
        /// The accepted type.
        expected: &'static str,
    },
}

impl AttrError {
    /// The keyword of the attribute at fault.
    pub fn name(&self) -> &'static str {
        match self {
            AttrError::Missing { name, .. }
            | AttrError::NotASequence { name, .. }
            | AttrError::BadValue { name, .. }
            | AttrError::Count { name, .. }
            | AttrError::NonFinite { name, .. }
            | AttrError::OutOfRange { name, .. } => name,
        }
    }
}

/// The element when it exists and holds a value: a sequence, or a primitive that is not
/// empty or only padding and value separators.
fn present(obj: &InMemDicomObject, attr: Attr) -> Option<&InMemElement> {
    obj.get(attr.tag).filter(|e| match e.value() {
        Value::Primitive(PrimitiveValue::Empty) => false,
        Value::Primitive(PrimitiveValue::Str(s)) => !blank(s),
        Value::Primitive(PrimitiveValue::Strs(s)) => !s.iter().all(|s| blank(s)),
        Value::Primitive(p) => p.multiplicity() > 0,
        _ => true,
    })
}

fn blank(s: &str) -> bool {
    s.trim_matches(|c: char| c == '\0' || c == '\\' || c.is_whitespace())
        .is_empty()
}

/// `convert` applied to the element when present, its failure named as `expected`.
fn convert<'a, T>(
    obj: &'a InMemDicomObject,
    attr: Attr,
    expected: &'static str,
    convert: impl FnOnce(&'a InMemElement) -> Result<T, ConvertValueError>,
) -> Result<Option<T>, AttrError> {
    present(obj, attr)
        .map(convert)
        .transpose()
        .map_err(|source| AttrError::BadValue {
            name: attr.name,
            tag: attr.tag,
            expected,
            source,
        })
}

/// A trimmed string, or `None` when absent or blank.
pub fn opt_str(obj: &InMemDicomObject, attr: Attr) -> Result<Option<String>, AttrError> {
    let s = convert(obj, attr, "text", |e| e.to_str())?;
    Ok(s.and_then(|s| {
        let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!s.is_empty()).then(|| s.to_owned())
    }))
}

/// A required trimmed, non-blank string.
pub fn req_str(obj: &InMemDicomObject, attr: Attr) -> Result<String, AttrError> {
    opt_str(obj, attr)?.ok_or_else(|| missing(attr))
}

fn missing(attr: Attr) -> AttrError {
    AttrError::Missing {
        name: attr.name,
        tag: attr.tag,
    }
}

/// All numbers of a DS/IS/FL/FD/US… value exactly as stored (NaN and infinities included),
/// or `None` when absent or blank. For callers that report a non-finite value with more
/// context than the attribute (which spot, which contour point); others use [`opt_f64s`].
pub fn opt_f64s_as_stored(obj: &InMemDicomObject, attr: Attr) -> Result<Option<Vec<f64>>, AttrError> {
    let v = convert(obj, attr, "numbers", |e| e.to_multi_float64())?;
    Ok(v.filter(|v| !v.is_empty()))
}

/// All numbers of a value, or `None` when absent or blank; each must be finite.
pub fn opt_f64s(obj: &InMemDicomObject, attr: Attr) -> Result<Option<Vec<f64>>, AttrError> {
    let v = opt_f64s_as_stored(obj, attr)?;
    if let Some(&value) = v.iter().flatten().find(|x| !x.is_finite()) {
        return Err(AttrError::NonFinite {
            name: attr.name,
            tag: attr.tag,
            value,
        });
    }
    Ok(v)
}

/// Exactly `N` finite numbers, or `None` when absent or blank.
pub fn opt_f64_n<const N: usize>(obj: &InMemDicomObject, attr: Attr) -> Result<Option<[f64; N]>, AttrError> {
    let Some(v) = opt_f64s(obj, attr)? else {
        return Ok(None);
    };
    <[f64; N]>::try_from(v.as_slice())
        .map(Some)
        .map_err(|_| AttrError::Count {
            name: attr.name,
            tag: attr.tag,
            found: v.len(),
            expected: N,
        })
}

/// Exactly `N` finite numbers, required.
pub fn req_f64_n<const N: usize>(obj: &InMemDicomObject, attr: Attr) -> Result<[f64; N], AttrError> {
    opt_f64_n(obj, attr)?.ok_or_else(|| missing(attr))
}

/// One finite number (a second value is an error, not ignored), or `None` when absent.
pub fn opt_f64(obj: &InMemDicomObject, attr: Attr) -> Result<Option<f64>, AttrError> {
    Ok(opt_f64_n::<1>(obj, attr)?.map(|[v]| v))
}

/// One integer (IS, US, SS, UL…) that fits `T`, or `None` when absent or blank.
pub fn opt_int<T: TryFrom<i64>>(obj: &InMemDicomObject, attr: Attr) -> Result<Option<T>, AttrError> {
    let Some(value) = convert(obj, attr, "an integer", |e| e.to_int::<i64>())? else {
        return Ok(None);
    };
    T::try_from(value).map(Some).map_err(|_| AttrError::OutOfRange {
        name: attr.name,
        tag: attr.tag,
        value,
        expected: std::any::type_name::<T>(),
    })
}

/// An unsigned integer that fits `u32`, or `None` when absent.
pub fn opt_u32(obj: &InMemDicomObject, attr: Attr) -> Result<Option<u32>, AttrError> {
    opt_int(obj, attr)
}

/// A required unsigned integer that fits `u32`.
pub fn req_u32(obj: &InMemDicomObject, attr: Attr) -> Result<u32, AttrError> {
    opt_int(obj, attr)?.ok_or_else(|| missing(attr))
}

/// The items of a sequence, or `None` when absent or empty.
pub fn opt_items(obj: &InMemDicomObject, attr: Attr) -> Result<Option<&[InMemDicomObject]>, AttrError> {
    let Some(e) = obj.get(attr.tag) else {
        return Ok(None);
    };
    match e.value().items() {
        Some([]) => Ok(None),
        Some(items) => Ok(Some(items)),
        // An empty non-sequence value (zero length, read without a known VR) is absent.
        None if e.value().multiplicity() == 0 => Ok(None),
        None => Err(AttrError::NotASequence {
            name: attr.name,
            tag: attr.tag,
        }),
    }
}

/// The items of a required sequence.
pub fn req_items(obj: &InMemDicomObject, attr: Attr) -> Result<&[InMemDicomObject], AttrError> {
    opt_items(obj, attr)?.ok_or_else(|| missing(attr))
}

/// The first item of a sequence, or `None` when absent or empty.
pub fn opt_first_item(obj: &InMemDicomObject, attr: Attr) -> Result<Option<&InMemDicomObject>, AttrError> {
    Ok(opt_items(obj, attr)?.and_then(|items| items.first()))
}

/// Why DICOM Part 10 data could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Reading the file failed.
    #[error("cannot read file")]
    Io(#[source] std::io::Error),
    /// No `DICM` magic after a 128-byte preamble (nor at the start).
    #[error("not a DICOM file (no DICM magic code at byte 128 or 0)")]
    NotDicom,
    /// An element claims more bytes than the data holds: a corrupt length field, or a cut.
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
    /// The data ends inside an element or item header.
    #[error("DICOM data is truncated")]
    Truncated(#[source] Box<dicom_object::ReadError>),
    /// DICOM parsing failed: malformed data.
    #[error("DICOM parsing failed (malformed file)")]
    Parse(#[source] Box<dicom_object::ReadError>),
}

/// SOP Class UID from the data set, else from the file meta group (anonymizers blank the
/// former).
pub fn sop_class_uid(obj: &DefaultDicomObject) -> Result<String, AttrError> {
    Ok(
        opt_str(obj, attr!(SOP_CLASS_UID, "SOPClassUID"))?.unwrap_or_else(|| {
            obj.meta()
                .media_storage_sop_class_uid()
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        }),
    )
}

/// How much of the data set to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Everything.
    Whole,
    /// Everything before Pixel Data: headers for sorting and classifying, without the
    /// cost of copying (or decoding) the pixels.
    Header,
}

/// Reads a DICOM Part 10 file.
pub(crate) fn open(path: &Path, read: Read) -> Result<DefaultDicomObject, OpenError> {
    let bytes = std::fs::read(path).map_err(OpenError::Io)?;
    parse(&bytes, read)
}

/// The data from the `DICM` magic on: after the 128-byte preamble, or the whole buffer when
/// it starts with `DICM` (network peers often send no preamble). `None` when not DICOM.
pub(crate) fn dicom_body(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.get(128..132) == Some(b"DICM") {
        Some(&bytes[128..])
    } else if bytes.get(..4) == Some(b"DICM") {
        Some(bytes)
    } else {
        None
    }
}

/// Parses DICOM Part 10 bytes (preamble optional, magic, meta group, data set).
pub(crate) fn parse(bytes: &[u8], read: Read) -> Result<DefaultDicomObject, OpenError> {
    let body = dicom_body(bytes).ok_or(OpenError::NotDicom)?;
    check_lengths(body, bytes.len() - body.len(), read)?;
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if read == Read::Header {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options.from_reader(body).map_err(|e| {
        if is_eof(&e) {
            OpenError::Truncated(Box::new(e))
        } else {
            OpenError::Parse(Box::new(e))
        }
    })
}

/// True when the error chain bottoms out in an unexpected end of input.
fn is_eof(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("unexpected end") || text.contains("failed to fill whole buffer") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Walks the element headers of `body` (the data from `DICM` on, `base` bytes into the file)
/// and refuses any defined length that runs past the end. A header read ends at Pixel Data,
/// as the decoder does: a truncated pixel payload is the pixel reader's to report. Deflated
/// data sets are left to the decoder (their lengths describe the inflated stream).
///
/// The walk must frame elements exactly as dicom-rs does, or the decoder meets lengths the
/// walk never saw: the meta group ends where its group length says, not at the first
/// element of another group, an unknown explicit VR has a 32-bit length (dicom-rs reads it
/// as UN), an implicit-VR sequence is one the data dictionary calls SQ, and item headers are
/// read only where a sequence is open. Anything the walk cannot frame is left to the
/// decoder, which then fails before it allocates. Each rule was found by fuzzing
/// (`docs/fuzzing.md`); after a dicom-rs upgrade, fuzz again.
fn check_lengths(body: &[u8], base: usize, read: Read) -> Result<(), OpenError> {
    let beyond = |e: &ElementHeader, pos: usize| OpenError::LengthBeyondEnd {
        tag: e.tag,
        offset: base + pos,
        length: e.length.into(),
        remaining: body.len().saturating_sub(pos + e.header),
    };
    let Some(meta) = walk_meta(body).map_err(|(e, pos)| beyond(&e, pos))? else {
        return Ok(()); // a meta group dicom-rs refuses by itself
    };
    let mut pos = meta.dataset_at;
    let (explicit, big_endian) = match meta.transfer_syntax.as_deref() {
        Some(uids::IMPLICIT_VR_LE) => (false, false),
        Some(uids::EXPLICIT_VR_BE) => (true, true),
        Some(uids::DEFLATED_EXPLICIT_VR_LE) | None => return Ok(()),
        _ => (true, false),
    };
    let h = Headers { body, big_endian };
    // What the decoder expects next, as dicom-rs's data set reader tracks it: elements (top
    // level or inside an item), items of a sequence, or fragments of encapsulated pixel
    // data. Defined-length sequences and items close when the walk reaches their end.
    let mut open: Vec<(Open, Option<usize>)> = Vec::new();
    while pos < body.len() {
        while let Some(&(_, Some(end))) = open.last() {
            if pos < end {
                break;
            }
            open.pop();
        }
        let context = open.last().map(|o| o.0);
        // Where the walk expects an item but finds an element, the decoder may not agree that
        // a sequence is open here: check it as an element, so no length goes unchecked.
        let item_tag = h.tag(pos).filter(|t| t.group() == 0xFFFE);
        if matches!(context, Some(Open::Sequence) | Some(Open::Fragments)) && item_tag.is_some() {
            // An item header: (FFFE,E000) with its length, or a delimiter.
            let (Some(tag), Some(length)) = (h.tag(pos), h.u32_at(pos + 4)) else {
                return Ok(());
            };
            let value_at = pos + 8;
            match (tag, context) {
                (Tag(0xFFFE, 0xE000), Some(Open::Fragments)) => {
                    // a fragment's bytes are read whole
                    if length as usize > body.len().saturating_sub(value_at) {
                        return Err(beyond(
                            &ElementHeader {
                                tag,
                                header: 8,
                                length,
                                is_sq: false,
                                vr: VR::UN,
                            },
                            pos,
                        ));
                    }
                    pos = value_at + length as usize;
                }
                (Tag(0xFFFE, 0xE000), _) => {
                    let end = if length == u32::MAX {
                        None
                    } else if length as usize > body.len().saturating_sub(value_at) {
                        return Err(beyond(
                            &ElementHeader {
                                tag,
                                header: 8,
                                length,
                                is_sq: false,
                                vr: VR::UN,
                            },
                            pos,
                        ));
                    } else {
                        Some(value_at + length as usize)
                    };
                    open.push((Open::Item, end));
                    pos = value_at;
                }
                (Tag(0xFFFE, 0xE0DD), _) | (Tag(0xFFFE, 0xE00D), _) => {
                    open.pop(); // the decoder closes the innermost open thing on either
                    pos = value_at;
                }
                // another (FFFE,xxxx) tag: the decoder refuses it as an item header
                _ => return Ok(()),
            }
            continue;
        }
        let Some(e) = h.element(pos, explicit) else {
            return Ok(()); // a truncated header: the decoder reports it
        };
        if e.tag == tags::PIXEL_DATA && read == Read::Header {
            return Ok(());
        }
        let value_at = pos + e.header;
        if e.tag == Tag(0xFFFE, 0xE00D) {
            // item end; outside any item the decoder ignores it
            if context == Some(Open::Item) {
                open.pop();
            }
            pos = value_at;
            continue;
        }
        if e.length == u32::MAX {
            // Encapsulated pixel data holds fragments; any other undefined length (an item
            // tag out of place included) opens a sequence.
            let kind = if e.tag == tags::PIXEL_DATA {
                Open::Fragments
            } else {
                Open::Sequence
            };
            open.push((kind, None));
            pos = value_at;
            continue;
        }
        if e.length as usize > body.len().saturating_sub(value_at) {
            return Err(beyond(&e, pos));
        }
        // A sequence's contents carry lengths too. In implicit VR the decoder takes the VR
        // from the dictionary, so only a tag the dictionary calls SQ opens one (a value that
        // merely starts with an item tag is read whole).
        if e.is_sq {
            open.push((Open::Sequence, Some(value_at + e.length as usize)));
            pos = value_at;
        } else {
            pos = value_at + consumed_len(e.vr, e.length as usize);
        }
    }
    Ok(())
}

/// A container the data set walk is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// A sequence: items or a sequence delimiter come next.
    Sequence,
    /// An item: elements come next.
    Item,
    /// Encapsulated pixel data: fragment items come next.
    Fragments,
}

/// VRs whose explicit-VR header holds a 16-bit length (PS3.5 table 7.1-2, as dicom-rs reads
/// it); every other VR, an unknown one included, has two reserved bytes and a 32-bit length.
fn has_short_length(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// One element header as the decoder frames it.
struct ElementHeader {
    tag: Tag,
    /// Header size in bytes (tag, VR, length).
    header: usize,
    /// Value length; `u32::MAX` is undefined.
    length: u32,
    is_sq: bool,
    /// The VR the decoder reads the value as (explicit, or from the dictionary).
    vr: VR,
}

/// Header reads in one byte order; `None` when the data ends inside the header.
struct Headers<'a> {
    body: &'a [u8],
    big_endian: bool,
}

impl Headers<'_> {
    fn u16_at(&self, o: usize) -> Option<u16> {
        let b: [u8; 2] = self.body.get(o..o.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, o: usize) -> Option<u32> {
        let b: [u8; 4] = self.body.get(o..o.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag(&self, o: usize) -> Option<Tag> {
        Some(Tag(self.u16_at(o)?, self.u16_at(o.checked_add(2)?)?))
    }

    fn element(&self, pos: usize, explicit: bool) -> Option<ElementHeader> {
        let tag = self.tag(pos)?;
        if tag.group() == 0xFFFE || !explicit {
            // items and delimiters have no VR in any syntax; implicit VR has none at all
            let vr = if tag.group() == 0xFFFE {
                VR::UN
            } else {
                implicit_vr(tag)
            };
            return Some(ElementHeader {
                tag,
                header: 8,
                length: self.u32_at(pos + 4)?,
                is_sq: vr == VR::SQ,
                vr,
            });
        }
        let vr_bytes = self.body.get(pos + 4..pos + 6)?;
        let vr = VR::from_binary([vr_bytes[0], vr_bytes[1]]).unwrap_or(VR::UN);
        Some(if has_short_length(vr_bytes) {
            ElementHeader {
                tag,
                header: 8,
                length: self.u16_at(pos + 6)?.into(),
                is_sq: false,
                vr,
            }
        } else {
            ElementHeader {
                tag,
                header: 12,
                length: self.u32_at(pos + 8)?,
                is_sq: vr_bytes == b"SQ",
                vr,
            }
        })
    }
}

/// The VR dicom-rs gives an implicit-VR element: OW for pixel and overlay data, else the
/// dictionary's, else UN.
fn implicit_vr(tag: Tag) -> VR {
    if tag == tags::PIXEL_DATA || (tag.group() >> 8 == 0x60 && tag.element() == 0x3000) {
        VR::OW
    } else {
        StandardDataDictionary
            .by_tag(tag)
            .map(|entry| entry.vr().relaxed())
            .unwrap_or(VR::UN)
    }
}

/// Bytes the decoder consumes of a defined-length value: numeric VRs are read as whole
/// numbers, so a length that is not a multiple of the number size leaves the remainder
/// unread and the next header starts there (dicom-parser 0.10).
fn consumed_len(vr: VR, length: usize) -> usize {
    let unit = match vr {
        VR::US | VR::OW | VR::SS => 2,
        VR::AT | VR::FL | VR::OF | VR::SL | VR::OL | VR::UL => 4,
        VR::FD | VR::OD | VR::SV | VR::OV | VR::UV => 8,
        _ => 1,
    };
    length - length % unit
}

/// Where the file meta group ends, as dicom-rs reads it.
struct MetaEnd {
    /// Offset of the data set's first element.
    dataset_at: usize,
    /// The last Transfer Syntax UID in the group, trimmed.
    transfer_syntax: Option<String>,
}

/// Walks the file meta group as dicom-rs reads it: File Meta Information Group Length
/// (0002,0000) first, then explicit-VR little-endian elements of any group until that many
/// bytes are consumed. `Ok(None)` when dicom-rs will refuse the group itself (before
/// allocating); the error is an element whose length runs past the end, with its header's
/// offset.
fn walk_meta(body: &[u8]) -> Result<Option<MetaEnd>, (ElementHeader, usize)> {
    let h = Headers {
        body,
        big_endian: false,
    };
    let Some(first) = h.element(4, true) else {
        return Ok(None);
    };
    if first.tag != Tag(0x0002, 0x0000) || first.length != 4 {
        return Ok(None);
    }
    let mut pos = 4 + first.header;
    let Some(group_length) = h.u32_at(pos) else {
        return Ok(None);
    };
    pos += 4;
    let mut consumed = 0u32;
    let mut ts = None;
    while consumed < group_length {
        let Some(e) = h.element(pos, true) else {
            return Ok(None);
        };
        if e.length == u32::MAX {
            return Ok(None); // dicom-rs refuses undefined lengths in the meta group
        }
        let value_at = pos + e.header;
        let Some(value) = body.get(value_at..value_at + e.length as usize) else {
            return Err((e, pos));
        };
        if e.tag == tags::TRANSFER_SYNTAX_UID {
            ts = Some(
                // trimmed exactly as dicom-rs trims it (`FileMetaTable::transfer_syntax`): a
                // syntax the guard reads differently from the decoder frames every length wrong
                String::from_utf8_lossy(value)
                    .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
            );
        }
        pos = value_at + e.length as usize;
        consumed = consumed.saturating_add(e.header as u32).saturating_add(e.length);
    }
    Ok(Some(MetaEnd {
        dataset_at: pos,
        transfer_syntax: ts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::DataElement;

    fn with(tag: Tag, vr: VR, value: PrimitiveValue) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([DataElement::new(tag, vr, value)])
    }

    #[test]
    fn blank_values_read_as_absent_and_required_ones_as_missing() {
        let ds = with(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::from(" \\ "));
        assert_eq!(opt_f64s(&ds, attr!(PIXEL_SPACING, "PixelSpacing")).unwrap(), None);
        assert!(matches!(
            req_f64_n::<2>(&ds, attr!(PIXEL_SPACING, "PixelSpacing")),
            Err(AttrError::Missing { tag, .. }) if tag == tags::PIXEL_SPACING
        ));
        assert_eq!(opt_str(&ds, attr!(MODALITY, "Modality")).unwrap(), None);
    }

    #[test]
    fn values_are_checked_for_count_finiteness_and_range() {
        let ds = with(
            tags::PIXEL_SPACING,
            VR::DS,
            PrimitiveValue::Strs(["0.5", "0.7", "0.9"].map(String::from).into_iter().collect()),
        );
        let ps = attr!(PIXEL_SPACING, "PixelSpacing");
        assert!(matches!(
            req_f64_n::<2>(&ds, ps),
            Err(AttrError::Count {
                found: 3,
                expected: 2,
                ..
            })
        ));
        assert!(matches!(opt_f64(&ds, ps), Err(AttrError::Count { found: 3, .. })));
        assert_eq!(req_f64_n::<3>(&ds, ps).unwrap(), [0.5, 0.7, 0.9]);

        let ds = with(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("NaN"));
        let th = attr!(SLICE_THICKNESS, "SliceThickness");
        assert!(matches!(opt_f64(&ds, th), Err(AttrError::NonFinite { .. })));
        assert!(opt_f64s_as_stored(&ds, th).unwrap().unwrap()[0].is_nan());

        let ds = with(tags::ROWS, VR::IS, PrimitiveValue::from("-1"));
        let rows = attr!(ROWS, "Rows");
        assert!(matches!(
            req_u32(&ds, rows),
            Err(AttrError::OutOfRange { value: -1, .. })
        ));
        assert_eq!(opt_int::<i32>(&ds, rows).unwrap(), Some(-1));
        let ds = with(tags::ROWS, VR::IS, PrimitiveValue::from("twelve"));
        assert!(matches!(req_u32(&ds, rows), Err(AttrError::BadValue { .. })));
        assert!(matches!(
            opt_items(&ds, rows),
            Err(AttrError::NotASequence { name: "Rows", .. })
        ));
    }

    #[test]
    fn data_with_or_without_preamble_parses_and_lengths_past_the_end_are_refused() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/STS_002/image/000010.dcm"
        );
        let bytes = std::fs::read(path).unwrap();
        let whole = parse(&bytes, Read::Whole).unwrap();
        assert!(whole.get(tags::PIXEL_DATA).is_some());
        let header = parse(&bytes[128..], Read::Header).unwrap();
        assert!(header.get(tags::PIXEL_DATA).is_none());
        assert!(matches!(
            parse(&bytes[..100], Read::Whole),
            Err(OpenError::NotDicom)
        ));
        // The last element is Pixel Data: one byte short and its length runs past the end,
        // which only a whole read looks at.
        let short = &bytes[..bytes.len() - 1];
        assert!(parse(short, Read::Header).is_ok());
        match parse(short, Read::Whole) {
            Err(OpenError::LengthBeyondEnd {
                tag,
                offset,
                remaining,
                ..
            }) => {
                assert_eq!(tag, tags::PIXEL_DATA);
                assert_eq!(&bytes[offset..offset + 4], &[0xE0, 0x7F, 0x10, 0x00]);
                assert_eq!(remaining, bytes.len() - 1 - offset - 8);
            }
            other => panic!("{other:?}"),
        }
    }

    /// "DICM", a meta group holding only the Transfer Syntax UID (its group length given,
    /// or the true one), any further meta bytes, then `dataset`.
    fn part10(ts: &str, group_length: Option<u32>, meta_tail: &[u8], dataset: &[u8]) -> Vec<u8> {
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut ts_elem = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
        ts_elem.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        ts_elem.extend_from_slice(&uid);
        let gl = group_length.unwrap_or((ts_elem.len() + meta_tail.len()) as u32);
        let mut out = b"DICM".to_vec();
        out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        out.extend_from_slice(&gl.to_le_bytes());
        out.extend_from_slice(&ts_elem);
        out.extend_from_slice(meta_tail);
        out.extend_from_slice(dataset);
        out
    }

    fn refused_tag(bytes: &[u8]) -> Tag {
        match parse(bytes, Read::Whole) {
            Err(OpenError::LengthBeyondEnd {
                tag,
                length,
                remaining,
                ..
            }) => {
                assert!(length > remaining as u64, "{length} <= {remaining}");
                tag
            }
            other => panic!("{other:?}"),
        }
    }

    // Found by the ct_frame and rtplan fuzz targets: dicom-rs reads an unknown explicit VR as
    // UN, with two reserved bytes and a 32-bit length, and allocated what it claimed (1.9 and
    // 3.2 GB) because the guard had read a 16-bit length there.
    #[test]
    fn an_unknown_vr_is_framed_with_a_32_bit_length_as_the_decoder_does() {
        let mut ds = vec![0x09, 0x00, 0x00, 0x10, b'Z', b'Z', 0, 0];
        ds.extend_from_slice(&0xF000_0000u32.to_le_bytes());
        ds.extend_from_slice(&[0; 64]);
        assert_eq!(
            refused_tag(&part10("1.2.840.10008.1.2.1", None, &[], &ds)),
            Tag(0x0009, 0x1000)
        );
        // and a well-formed value with an unknown VR still parses
        let mut ok = vec![0x09, 0x00, 0x00, 0x10, b'Z', b'Z', 0, 0];
        ok.extend_from_slice(&4u32.to_le_bytes());
        ok.extend_from_slice(b"abcd");
        assert!(parse(&part10("1.2.840.10008.1.2.1", None, &[], &ok), Read::Whole).is_ok());
    }

    // The decoder ends the meta group where its group length says, so an element of group
    // 0002 past that length is read in the data set's syntax: in implicit VR, "UL" and a
    // 16-bit 0xFFFF become a 32-bit length of about 4 GB.
    #[test]
    fn the_meta_group_ends_where_its_group_length_says() {
        let mut tail = vec![0x02, 0x00, 0x99, 0x00, b'U', b'L', 0xFF, 0xFF];
        tail.extend_from_slice(&vec![0; 0xFFFF]);
        let uid = "1.2.840.10008.1.2";
        let ts_elem_len = 8 + uid.len() as u32 + 1;
        let bytes = part10(uid, Some(ts_elem_len), &tail, &[]);
        assert_eq!(refused_tag(&bytes), Tag(0x0002, 0x0099));
        // With the true group length the same element is meta, and the file parses.
        let bytes = part10(uid, None, &tail, &[]);
        assert!(parse(&bytes, Read::Whole).is_ok());
    }

    #[test]
    fn big_endian_lengths_are_checked_too() {
        let mut ds = vec![0x00, 0x09, 0x10, 0x00, b'O', b'B', 0, 0];
        ds.extend_from_slice(&0xF000_0000u32.to_be_bytes());
        ds.extend_from_slice(&[0; 64]);
        assert_eq!(
            refused_tag(&part10("1.2.840.10008.1.2.2", None, &[], &ds)),
            Tag(0x0009, 0x1000)
        );
    }
}
