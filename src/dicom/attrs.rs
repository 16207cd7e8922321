//! Typed reads of DICOM attributes from an in-memory data set.
//!
//! Kept free of any one IOD so the CT, RT Structure Set and RT Plan readers can share it.
//! Errors here carry the attribute's keyword but no file: the caller knows the file and wraps.

use dicom_core::PrimitiveValue;
use dicom_core::Tag;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

/// Why an attribute could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// The attribute is absent or empty.
    #[error("missing attribute {name}")]
    Missing {
        /// DICOM keyword of the attribute.
        name: &'static str,
    },
    /// The attribute is present but its value cannot be used.
    #[error("attribute {name} has an unusable value: {reason}")]
    Invalid {
        /// DICOM keyword of the attribute.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A tag paired with its keyword, so errors can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The tag.
    pub tag: Tag,
    /// The DICOM keyword, for messages.
    pub name: &'static str,
}

/// The element when it exists and carries a value (a sequence, or a non-empty primitive).
fn present(obj: &InMemDicomObject, attr: Attr) -> Option<&InMemElement> {
    obj.get(attr.tag).filter(|e| match e.value() {
        dicom_core::value::Value::Primitive(p) => !matches!(p, PrimitiveValue::Empty),
        _ => true,
    })
}

/// A trimmed string, or `None` when absent or empty.
pub fn opt_str(obj: &InMemDicomObject, attr: Attr) -> Result<Option<String>, AttrError> {
    let Some(e) = present(obj, attr) else {
        return Ok(None);
    };
    let s = e.to_str().map_err(|err| AttrError::Invalid {
        name: attr.name,
        reason: err.to_string(),
    })?;
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

/// A required trimmed, non-empty string.
pub fn req_str(obj: &InMemDicomObject, attr: Attr) -> Result<String, AttrError> {
    opt_str(obj, attr)?.ok_or(AttrError::Missing { name: attr.name })
}

/// All numeric values (DS, IS, FD, US…) as `f64`, or `None` when absent; each must be finite.
pub fn opt_f64s(obj: &InMemDicomObject, attr: Attr) -> Result<Option<Vec<f64>>, AttrError> {
    let Some(e) = present(obj, attr) else {
        return Ok(None);
    };
    let v = e.to_multi_float64().map_err(|err| AttrError::Invalid {
        name: attr.name,
        reason: err.to_string(),
    })?;
    if v.is_empty() {
        return Ok(None);
    }
    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
        return Err(AttrError::Invalid {
            name: attr.name,
            reason: format!("non-finite value {bad}"),
        });
    }
    Ok(Some(v))
}

/// Exactly `N` numeric values.
pub fn req_f64_n<const N: usize>(obj: &InMemDicomObject, attr: Attr) -> Result<[f64; N], AttrError> {
    let v = opt_f64s(obj, attr)?.ok_or(AttrError::Missing { name: attr.name })?;
    <[f64; N]>::try_from(v.as_slice()).map_err(|_| AttrError::Invalid {
        name: attr.name,
        reason: format!("expected {N} values, found {}", v.len()),
    })
}

/// The first numeric value, or `None` when absent.
pub fn opt_f64(obj: &InMemDicomObject, attr: Attr) -> Result<Option<f64>, AttrError> {
    Ok(opt_f64s(obj, attr)?.map(|v| v[0]))
}

/// A required unsigned integer (US, IS…) that fits `u32`.
pub fn req_u32(obj: &InMemDicomObject, attr: Attr) -> Result<u32, AttrError> {
    opt_u32(obj, attr)?.ok_or(AttrError::Missing { name: attr.name })
}

/// An unsigned integer that fits `u32`, or `None` when absent.
pub fn opt_u32(obj: &InMemDicomObject, attr: Attr) -> Result<Option<u32>, AttrError> {
    let Some(e) = present(obj, attr) else {
        return Ok(None);
    };
    e.to_int::<u32>().map(Some).map_err(|err| AttrError::Invalid {
        name: attr.name,
        reason: err.to_string(),
    })
}

/// The items of a sequence, or `None` when absent or empty.
pub fn opt_items(obj: &InMemDicomObject, attr: Attr) -> Option<&[InMemDicomObject]> {
    obj.get(attr.tag)
        .and_then(|e| e.items())
        .filter(|items| !items.is_empty())
}

/// The first item of a sequence, or `None`.
pub fn opt_first_item(obj: &InMemDicomObject, attr: Attr) -> Option<&InMemDicomObject> {
    opt_items(obj, attr).and_then(|items| items.first())
}
