//! Pass 2's byte work: finding native Pixel Data in place, guarding RLE frames before the
//! decoder sees them, and converting stored values to HU.

use std::borrow::Cow;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_pixeldata::PixelDecoder;

use super::decoder::InputHeader;
use super::header::parse;
use super::{CtError, IngestOptions};
use crate::uids::{EXPLICIT_VR_LE, IMPLICIT_VR_LE, RLE_LOSSLESS};

/// The raw pixel bytes of one input (all `frames` of it): straight out of the buffer for a
/// native syntax when [`native_pixel_bytes`] finds them there, else parsed (and decoded, for
/// a compressed syntax). At least `frames × frame_len` samples, or an error.
pub(super) fn input_pixels<'a>(
    bytes: &'a [u8],
    ih: &InputHeader,
    frame_len: usize,
    frames: usize,
    path: &Path,
) -> Result<Cow<'a, [u8]>, CtError> {
    let total = frame_len * usize::from(ih.bits_allocated / 8) * frames;
    let native = ih.ts == IMPLICIT_VR_LE || ih.ts == EXPLICIT_VR_LE;
    let fast = if native {
        native_pixel_bytes(bytes, total, ih.ts == EXPLICIT_VR_LE)
    } else {
        None
    };
    let raw = match fast {
        Some(raw) => Cow::Borrowed(raw),
        None => Cow::Owned(parsed_pixels(bytes, ih, frame_len, native, path)?),
    };
    if raw.len() < total {
        return Err(CtError::PixelDataLength {
            path: path.to_owned(),
            expected: total,
            found: raw.len(),
        });
    }
    Ok(raw)
}

/// Pixel Data through the full parser: a native value as stored, a compressed one decoded
/// (RLE fragments checked first, see [`check_rle_fragments`]).
fn parsed_pixels(
    bytes: &[u8],
    ih: &InputHeader,
    frame_len: usize,
    native: bool,
    path: &Path,
) -> Result<Vec<u8>, CtError> {
    let obj = parse(bytes, path, false)?;
    let Some(pixel_data) = obj.get(tags::PIXEL_DATA) else {
        return Err(CtError::NoPixelData {
            path: path.to_owned(),
        });
    };
    if native {
        return Ok(pixel_data
            .to_bytes()
            .map_err(|err| CtError::InvalidAttribute {
                path: path.to_owned(),
                tag_name: "PixelData",
                reason: err.to_string(),
            })?
            .into_owned());
    }
    if dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(&ih.ts)
        .is_none_or(|t| !t.can_decode_all())
    {
        return Err(CtError::UnsupportedTransferSyntax {
            path: path.to_owned(),
            ts: ih.ts.clone(),
        });
    }
    if ih.ts == RLE_LOSSLESS {
        let fragments = pixel_data.value().fragments().unwrap_or_default();
        check_rle_fragments(fragments, frame_len, usize::from(ih.bits_allocated / 8)).map_err(|reason| {
            CtError::InvalidAttribute {
                path: path.to_owned(),
                tag_name: "PixelData",
                reason,
            }
        })?;
    }
    Ok(obj
        .decode_pixel_data()
        .map_err(|source| CtError::Decode {
            path: path.to_owned(),
            ts: ih.ts.clone(),
            source: Box::new(source),
        })?
        .data()
        .to_vec())
}

/// Checks RLE Lossless frames (one fragment each, PS3.5 annex G) before dicom-pixeldata
/// decodes them: its RLE adapter (0.10) slices a short header and indexes a short segment's
/// output without bounds checks, and panics (found by the `ct_frame` fuzz target). Every
/// fragment must hold the 64-byte header, and each segment a frame needs (one per byte of a
/// sample, 1 sample per pixel) must expand to at least `pixels` bytes.
fn check_rle_fragments(fragments: &[Vec<u8>], pixels: usize, bytes_per_sample: usize) -> Result<(), String> {
    for (frame, fragment) in fragments.iter().enumerate() {
        let u32_at = |o: usize| {
            fragment
                .get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (Some(count), true) = (u32_at(0), fragment.len() >= 64) else {
            return Err(format!(
                "RLE frame {frame} is {} bytes, shorter than its 64-byte header",
                fragment.len()
            ));
        };
        if count < bytes_per_sample || count > 15 {
            return Err(format!(
                "RLE frame {frame} has {count} segments, {bytes_per_sample} expected"
            ));
        }
        for segment in 0..bytes_per_sample {
            let start = u32_at(4 + 4 * segment).unwrap_or(usize::MAX);
            let end = if segment + 1 < count {
                u32_at(8 + 4 * segment).unwrap_or(usize::MAX)
            } else {
                fragment.len()
            };
            let Some(data) = fragment.get(start..end) else {
                return Err(format!(
                    "RLE frame {frame} segment {segment} spans bytes {start}..{end} of {}",
                    fragment.len()
                ));
            };
            let expanded = packbits_len(data);
            if expanded < pixels {
                return Err(format!(
                    "RLE frame {frame} segment {segment} expands to {expanded} bytes, {pixels} expected"
                ));
            }
        }
    }
    Ok(())
}

/// Bytes a PackBits segment expands to, counted as the decoder reads it: a literal run cut
/// short by the segment's end yields what is there, a repeat run without its byte nothing.
fn packbits_len(data: &[u8]) -> usize {
    let (mut at, mut out) = (0usize, 0usize);
    while let Some(&h) = data.get(at) {
        let h = h as i8;
        at += 1;
        if h >= 0 {
            let n = (h as usize + 1).min(data.len() - at);
            out += n;
            at += n;
        } else if h != -128 {
            if at >= data.len() {
                break;
            }
            out += 1 + h.unsigned_abs() as usize;
            at += 1;
        }
    }
    out
}

/// Locates native Pixel Data as the last element of the buffer: its header must sit right
/// before the final `len` bytes (or `len + 1` with a pad byte). `None` sends the caller to
/// the full parser, which handles every other layout.
pub(super) fn native_pixel_bytes(bytes: &[u8], len: usize, explicit: bool) -> Option<&[u8]> {
    const TAG: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
    for padded in [len, len + 1] {
        let header = if explicit { 12 } else { 8 };
        let start = bytes.len().checked_sub(padded)?;
        let h = start.checked_sub(header)?;
        let hb = &bytes[h..start];
        if hb[..4] != TAG {
            continue;
        }
        let len_bytes = &hb[header - 4..];
        let stored = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let vr_ok = !explicit || &hb[4..6] == b"OW" || &hb[4..6] == b"OB";
        if vr_ok && usize::try_from(stored).ok() == Some(padded) {
            return Some(&bytes[start..start + len]);
        }
    }
    None
}

/// Converts one frame of stored values to HU in `out`. Integral slope 1 and intercept (every
/// CT scanner we know) take an exact integer path the compiler vectorizes; anything else is
/// computed in f64 and rounded to the nearest HU. Returns the offending (min, max) HU if the
/// result leaves the accepted range.
pub(super) fn store_frame(
    raw: &[u8],
    ih: &InputHeader,
    slope: f64,
    intercept: f64,
    out: &mut [i16],
    opt: &IngestOptions,
) -> Result<(), (f64, f64)> {
    let shift = u32::from(ih.bits_allocated - ih.bits_stored);
    let signed = ih.signed;
    let mask: u32 = (1u32 << ih.bits_stored) - 1;
    // Stored value as i32: sign-extend from BitsStored, or mask off bits above it.
    let sv16 = move |x: u16| -> i32 {
        if signed {
            i32::from(((x << shift) as i16) >> shift)
        } else {
            (u32::from(x) & mask) as i32
        }
    };
    let sv8 = move |x: u8| -> i32 {
        if signed {
            i32::from(((x << shift) as i8) >> shift)
        } else {
            (u32::from(x) & mask) as i32
        }
    };
    let integral = slope == 1.0 && intercept.fract() == 0.0 && intercept.abs() < 65536.0;
    let (lo_ok, hi_ok) = (i32::from(opt.hu_min), i32::from(opt.hu_max));
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    if integral {
        let icpt = intercept as i32;
        // Separate monomorphic loops per stored-value decoding keep the hot loop branch-free
        // so it vectorizes (this loop is most of a native ingest's time).
        (lo, hi) = match (ih.bits_allocated, signed, shift) {
            (16, _, 0) if signed => convert16(raw, out, icpt, |x| x as i16),
            // Unsigned 16-bit: `x ^ 0x8000` read as i16 is `x − 32768`, so fold 32768 into the
            // intercept when that still fits an i16 (e.g. the usual −1024), else go wide.
            (16, _, 0) if i16::try_from(icpt + 32768).is_ok() => {
                convert16(raw, out, icpt + 32768, |x| (x ^ 0x8000) as i16)
            }
            (16, _, 0) => convert16_wide(raw, out, icpt, i32::from),
            (16, true, _) => convert16(raw, out, icpt, move |x| ((x << shift) as i16) >> shift),
            // At most 15 bits stored, so the masked value fits an i16.
            (16, false, _) => convert16(raw, out, icpt, move |x| (x & mask as u16) as i16),
            _ => {
                for (o, &b) in out.iter_mut().zip(raw) {
                    let hu = sv8(b) + icpt;
                    lo = lo.min(hu);
                    hi = hi.max(hu);
                    *o = hu as i16;
                }
                (lo, hi)
            }
        };
        if lo < lo_ok || hi > hi_ok {
            return Err((f64::from(lo), f64::from(hi)));
        }
        return Ok(());
    }
    let (mut flo, mut fhi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut put = |o: &mut i16, sv: i32| {
        let hu = (slope * f64::from(sv) + intercept).round();
        flo = flo.min(hu);
        fhi = fhi.max(hu);
        *o = hu.clamp(-32768.0, 32767.0) as i16;
    };
    if ih.bits_allocated == 16 {
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
            put(o, sv16(u16::from_le_bytes([c[0], c[1]])));
        }
    } else {
        for (o, &b) in out.iter_mut().zip(raw) {
            put(o, sv8(b));
        }
    }
    if flo < f64::from(lo_ok) || fhi > f64::from(hi_ok) {
        return Err((flo, fhi));
    }
    Ok(())
}

/// Stored 16-bit little-endian values that fit an i16 → HU, returning the (min, max) HU.
///
/// Works in the i16 domain (8 lanes per SSE2 op, pmin/pmaxsw exist there, not for i32):
/// `out = sv + icpt` wraps on overflow, but the min/max of the stored values is tracked
/// exactly and the true HU range is `min + icpt ..= max + icpt` in i32. The caller rejects
/// the frame unless that range lies inside its accepted HU window (which is inside i16), and
/// whenever it does no voxel wrapped, so every stored voxel is exact.
#[inline(always)]
fn convert16(raw: &[u8], out: &mut [i16], icpt: i32, sv: impl Fn(u16) -> i16) -> (i32, i32) {
    let n = out.len().min(raw.len() / 2);
    let (raw, out) = (&raw[..2 * n], &mut out[..n]);
    // Outside i16 the intercept always pushes some voxel out of the window: use the exact
    // wide path, which reports the offending range.
    let Ok(icpt16) = i16::try_from(icpt) else {
        return convert16_wide(raw, out, icpt, |x| i32::from(sv(x)));
    };
    let (mut lo, mut hi) = (i16::MAX, i16::MIN);
    for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
        let v = sv(u16::from_le_bytes([c[0], c[1]]));
        lo = lo.min(v);
        hi = hi.max(v);
        *o = v.wrapping_add(icpt16);
    }
    if n == 0 {
        return (i32::MAX, i32::MIN);
    }
    (i32::from(lo) + icpt, i32::from(hi) + icpt)
}

/// Stored 16-bit little-endian values → HU in i32 with the running (min, max).
#[inline(always)]
fn convert16_wide(raw: &[u8], out: &mut [i16], icpt: i32, sv: impl Fn(u16) -> i32) -> (i32, i32) {
    let n = out.len().min(raw.len() / 2);
    let (raw, out) = (&raw[..2 * n], &mut out[..n]);
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    for i in 0..n {
        let hu = sv(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])) + icpt;
        lo = lo.min(hu);
        hi = hi.max(hu);
        out[i] = hu as i16;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::{check_rle_fragments, packbits_len};

    #[test]
    fn packbits_lengths_follow_the_tiff_example() {
        // Apple TN1023 / TIFF 6.0 section 9: this packed run unpacks to 24 bytes.
        let packed = [
            0xFE, 0xAA, 0x02, 0x80, 0x00, 0x2A, 0xFD, 0xAA, 0x03, 0x80, 0x00, 0x2A, 0x22, 0xF7, 0xAA,
        ];
        assert_eq!(packbits_len(&packed), 24);
        // a literal run cut short yields what is there; a repeat without its byte nothing
        assert_eq!(packbits_len(&[0x05, 1, 2]), 2);
        assert_eq!(packbits_len(&[0x01, 1, 2, 0xFE]), 2);
        assert_eq!(packbits_len(&[0x80, 0x80]), 0);
    }

    #[test]
    fn rle_frames_must_hold_a_header_and_full_segments() {
        // One 16-bit frame of 4 pixels: two segments (MSB, LSB), each a repeat run of 4.
        let mut frame = vec![0u8; 64];
        frame[..4].copy_from_slice(&2u32.to_le_bytes());
        frame[4..8].copy_from_slice(&64u32.to_le_bytes());
        frame[8..12].copy_from_slice(&66u32.to_le_bytes());
        frame.extend_from_slice(&[0xFD, 0x00, 0xFD, 0x07]);
        assert_eq!(check_rle_fragments(&[frame.clone()], 4, 2), Ok(()));
        let e = check_rle_fragments(&[frame.clone()], 5, 2).unwrap_err();
        assert!(e.contains("segment 0 expands to 4 bytes, 5 expected"), "{e}");
        let e = check_rle_fragments(&[frame[..40].to_vec()], 4, 2).unwrap_err();
        assert!(e.contains("shorter than its 64-byte header"), "{e}");
        let mut one = frame.clone();
        one[..4].copy_from_slice(&1u32.to_le_bytes());
        assert!(check_rle_fragments(&[one], 4, 2)
            .unwrap_err()
            .contains("1 segments, 2 expected"));
        let mut past = frame;
        past[8..12].copy_from_slice(&9_000u32.to_le_bytes());
        assert!(check_rle_fragments(&[past], 4, 2)
            .unwrap_err()
            .contains("spans bytes 64..9000"));
    }

    use super::*;
    use crate::uids::IMPLICIT_VR_LE;

    fn ih(bits_stored: u16, signed: bool) -> InputHeader {
        InputHeader {
            ts: IMPLICIT_VR_LE.into(),
            bits_allocated: 16,
            bits_stored,
            signed,
            early_slot: None,
            acquired_unix_ns: None,
        }
    }

    #[test]
    fn stored_values_are_sign_extended_or_masked_from_bits_stored() {
        // 12-bit signed 0xFFF is −1; 12-bit unsigned with overlay bits above bit 11 masks off.
        let raw = [0xFF, 0x0F, 0x00, 0xF0];
        let mut out = [0i16; 2];
        store_frame(&raw, &ih(12, true), 1.0, 0.0, &mut out, &IngestOptions::default()).unwrap();
        assert_eq!(out, [-1, 0]);
        store_frame(
            &raw,
            &ih(12, false),
            1.0,
            -1024.0,
            &mut out,
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(out, [4095 - 1024, -1024]);
    }

    #[test]
    fn non_unit_slope_is_rounded_and_range_checked() {
        let raw = 3u16.to_le_bytes();
        let mut out = [0i16; 1];
        store_frame(
            &raw,
            &ih(16, false),
            0.5,
            -1000.0,
            &mut out,
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(out, [-999]); // 1.5 − 1000 = −998.5 rounds half away from zero
        let raw = 0u16.to_le_bytes();
        let err = store_frame(
            &raw,
            &ih(16, false),
            1.0,
            -8192.0,
            &mut out,
            &IngestOptions::default(),
        );
        assert_eq!(err, Err((-8192.0, -8192.0)));
    }

    #[test]
    fn native_pixel_data_is_found_only_behind_a_matching_header() {
        let mut buf = vec![1u8, 2, 3];
        buf.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 4, 0, 0, 0]);
        buf.extend_from_slice(&[9, 9, 9, 9]);
        assert_eq!(native_pixel_bytes(&buf, 4, false), Some(&[9u8, 9, 9, 9][..]));
        assert_eq!(native_pixel_bytes(&buf, 2, false), None);
        assert_eq!(native_pixel_bytes(&buf, 4, true), None);
        assert_eq!(native_pixel_bytes(&buf[..5], 4, false), None);
    }
}
