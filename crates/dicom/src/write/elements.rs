//! Element builders and the Part 10 encoder: one place decides how a value becomes a DICOM
//! element, so every writer spells DS, IS and sequences the same way.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::WriteError;
use crate::uids::EXPLICIT_VR_LE;

/// An element of this crate's in-memory objects.
pub(crate) type Element = DataElement<InMemDicomObject>;

/// Formats a value as a DICOM decimal string of at most 16 characters: the shortest
/// decimal that parses back to the same `f64` when one fits, else the closest that fits.
pub fn format_ds(v: f64) -> String {
    if v == 0.0 {
        return "0".into(); // also folds -0.0, which no DS reader distinguishes
    }
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    let exp = format!("{v:E}");
    if exp.len() <= 16 {
        return exp;
    }
    // Needs rounding: most significant digits that fit, in either form.
    for digits in (1..=16usize).rev() {
        let e = format!("{:.*E}", digits - 1, v);
        let p = format!("{}", e.parse::<f64>().unwrap_or(v));
        if p.len() <= 16 {
            return p;
        }
        if e.len() <= 16 {
            return e;
        }
    }
    format!("{v:.0}")
}

/// A text element (CS, DA, TM, LO, PN, SH, UI, …) with one value.
pub(crate) fn text(tag: Tag, vr: VR, s: &str) -> Element {
    DataElement::new(tag, vr, PrimitiveValue::from(s.to_string()))
}

/// A DS element, each value by [`format_ds`].
pub(crate) fn ds(tag: Tag, values: &[f64]) -> Element {
    let strs: Vec<String> = values.iter().map(|v| format_ds(*v)).collect();
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(strs.into()))
}

/// A DS element of values already formatted (edits that keep a source's precision).
pub(crate) fn ds_strs(tag: Tag, values: Vec<String>) -> Element {
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(values.into_iter().collect()))
}

/// An FL element.
pub(crate) fn fl(tag: Tag, values: &[f64]) -> Element {
    let v: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    DataElement::new(tag, VR::FL, PrimitiveValue::F32(v.into()))
}

/// An IS element with one value.
pub(crate) fn int_s(tag: Tag, v: i64) -> Element {
    DataElement::new(tag, VR::IS, PrimitiveValue::from(v.to_string()))
}

/// An IS element with several values.
pub(crate) fn int_s_multi(tag: Tag, values: &[i64]) -> Element {
    DataElement::new(
        tag,
        VR::IS,
        PrimitiveValue::Strs(values.iter().map(|v| v.to_string()).collect()),
    )
}

/// An SS element.
pub(crate) fn ss(tag: Tag, v: i16) -> Element {
    DataElement::new(tag, VR::SS, PrimitiveValue::from(v))
}

/// A US element.
pub(crate) fn us(tag: Tag, v: u16) -> Element {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

/// An OW element.
pub(crate) fn ow(tag: Tag, bytes: Vec<u8>) -> Element {
    DataElement::new(tag, VR::OW, PrimitiveValue::from(bytes))
}

/// A sequence of `items`.
pub(crate) fn sq(tag: Tag, items: Vec<InMemDicomObject>) -> Element {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// The file meta group of an explicit VR little endian object; callers add their
/// implementation identity where they have one.
pub(crate) fn meta(sop_class: &str, sop_instance_uid: &str) -> FileMetaTableBuilder {
    FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(EXPLICIT_VR_LE)
}

/// Encodes `obj` with the file meta group `meta` as a Part 10 byte stream; `what` names the
/// object in errors.
pub(crate) fn part10(
    obj: InMemDicomObject,
    meta: FileMetaTableBuilder,
    what: &str,
) -> Result<Vec<u8>, WriteError> {
    let meta = meta.build().map_err(|e| WriteError::Meta {
        what: what.to_string(),
        source: Box::new(e),
    })?;
    let mut out = Vec::new();
    obj.with_exact_meta(meta)
        .write_all(&mut out)
        .map_err(|e| WriteError::Write {
            what: what.to_string(),
            source: Box::new(e),
        })?;
    Ok(out)
}
