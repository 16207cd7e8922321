//! Early decoding: a frame's objects decoded *as they arrive*, each into the slot the last
//! decoded series' grid predicts for it, so the completed frame has little left to do.
//! [`SeriesDecoder::decode_into`] re-checks everything and keeps only what early decoding
//! placed exactly where the sorted series puts it.

use std::path::Path;
use std::sync::Arc;

use super::decoder::{prepare_volume, InputHeader, SeriesDecoder};
use super::header::{parse, read_header, trim_uid, Header};
use super::pixels::{native_pixel_bytes, store_frame};
use crate::geometry::Grid;
use crate::uids::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::volume::CtVolume;

/// An object decoded ahead of its frame by [`SeriesDecoder::decode_early`]. Holding the
/// `Arc` keeps the bytes alive and unchanged, so the pointer identifies them.
#[derive(Debug)]
pub(super) struct EarlyObject {
    pub(super) object: Arc<Vec<u8>>,
    pub(super) ts: String,
    pub(super) header: Header,
    /// Where its pixels went, when they could be placed.
    pub(super) slot: Option<usize>,
}

/// The volume early decoding writes into: its grid (the last decoded series') and the
/// address of its storage (only compared, to know it is the same volume).
#[derive(Debug)]
pub(super) struct EarlyTarget {
    pub(super) grid: Grid,
    pub(super) storage: usize,
}

/// The address of a volume's voxels: which volume early decoding wrote into.
pub(super) fn storage_of(volume: &CtVolume) -> usize {
    volume.as_slice().as_ptr() as usize
}

impl SeriesDecoder {
    /// Starts early decoding of the next frame into `volume`, which takes the last decoded
    /// series' grid. Forgets any earlier early decoding. Returns false (nothing to predict
    /// from) before the first successful decode.
    pub fn begin_early(&mut self, volume: &mut CtVolume) -> bool {
        self.end_early();
        let Some(grid) = self.last_grid.clone() else {
            return false;
        };
        if volume.grid() != &grid {
            prepare_volume(volume, grid.clone());
        }
        self.early_target = Some(EarlyTarget {
            grid,
            storage: storage_of(volume),
        });
        true
    }

    /// Objects held for the frame being decoded early.
    pub fn early_objects(&self) -> usize {
        self.early.len()
    }

    /// Slices the last [`decode_into`](Self::decode_into) kept from early decoding instead of
    /// decoding them again.
    pub fn last_early_slices(&self) -> usize {
        self.last_early_slices
    }

    /// Forgets early decoding (the objects it holds are released).
    pub fn end_early(&mut self) {
        self.early.clear();
        self.early_target = None;
    }

    /// Decodes one object of a frame still arriving into `volume` (the one given to
    /// [`begin_early`](Self::begin_early)); returns whether its pixels were placed. Never
    /// fails: an object that does not fit the predicted layout, or is not valid, is simply
    /// left to [`decode_into`](Self::decode_into), which decodes or reports it.
    pub fn decode_early(&mut self, object: &Arc<Vec<u8>>, volume: &mut CtVolume) -> bool {
        let Some(target) = &self.early_target else {
            return false;
        };
        if storage_of(volume) != target.storage
            || volume.grid() != &target.grid
            || self.early.iter().any(|e| Arc::ptr_eq(&e.object, object))
        {
            return false;
        }
        let path = Path::new("<memory>/early");
        let Ok(obj) = parse(object, path, true) else {
            return false;
        };
        let ts = trim_uid(obj.meta().transfer_syntax());
        let Ok(header) = read_header(&obj, path, &self.options) else {
            return false;
        };
        drop(obj);
        let slot = predicted_slot(&target.grid, &header, &ts)
            .filter(|k| !self.early.iter().any(|e| e.slot == Some(*k)))
            .filter(|&k| {
                let frame_len = target.grid.dims()[0] * target.grid.dims()[1];
                let ih = InputHeader {
                    ts: String::new(),
                    bits_allocated: header.bits_allocated,
                    bits_stored: header.bits_stored,
                    signed: header.signed,
                    early_slot: None,
                    acquired_unix_ns: None,
                };
                let total = frame_len * usize::from(header.bits_allocated / 8);
                let Some(raw) = native_pixel_bytes(object, total, ts == EXPLICIT_VR_LE) else {
                    return false;
                };
                let fr = &header.frames[0];
                let out = &mut volume.as_slice_mut()[k * frame_len..(k + 1) * frame_len];
                store_frame(raw, &ih, fr.slope, fr.intercept, out, &self.options).is_ok()
            });
        self.early.push(EarlyObject {
            object: Arc::clone(object),
            ts,
            header,
            slot,
        });
        slot.is_some()
    }
}

/// The slot of `grid` a single-frame native object belongs in, if it fits the grid exactly:
/// same size, orientation and pixel spacing, and its position on a slice of the grid.
fn predicted_slot(grid: &Grid, h: &Header, ts: &str) -> Option<usize> {
    let dims = grid.dims();
    let spacing = grid.spacing_mm();
    let d = grid.direction();
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-6;
    let fits = h.frames.len() == 1
        && (ts == IMPLICIT_VR_LE || ts == EXPLICIT_VR_LE)
        && matches!(h.bits_allocated, 8 | 16)
        && h.columns as usize == dims[0]
        && h.rows as usize == dims[1]
        && same(h.pixel_spacing[1], spacing[0])
        && same(h.pixel_spacing[0], spacing[1])
        && (0..3).all(|r| same(h.iop[r], d[(r, 0)]) && same(h.iop[3 + r], d[(r, 1)]));
    if !fits {
        return None;
    }
    let offset = h.frames[0].ipp - grid.origin_mm().coords;
    let along = offset.dot(&d.column(2)) / spacing[2];
    let k = along.round();
    let off_slot = (along - k).abs() * spacing[2];
    (off_slot <= 1e-3 && k >= 0.0 && (k as usize) < dims[2]).then_some(k as usize)
}
