//! The reusable [`SeriesDecoder`] and its two passes: headers (read, checked against the
//! first input, sorted along the slice normal, checked as a stack) and pixels (each input's
//! frames stored in their sorted slots as HU).

use std::path::PathBuf;

use nalgebra::{Matrix3, Vector3};

use super::early::{storage_of, EarlyObject, EarlyTarget};
use super::header::{
    check_consistent, parse, read_header, series_meta, trim_uid, FirstHeader, Header, IOP,
    SPACING_BETWEEN_SLICES,
};
use super::pixels::{input_pixels, native_pixel_bytes, store_frame};
use super::{CtError, IngestOptions, SeriesMeta};
use crate::geometry::Grid;
use crate::uids::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::units::{PointMm, VectorMm};
use crate::volume::CtVolume;

/// Names input `i` in errors: its file, or `<memory>/slice-i`. Shared with the header
/// thread, hence `Sync`.
pub(super) type Label<'a> = dyn Fn(usize) -> PathBuf + Sync + 'a;

/// What pass 1 reads from one input: its transfer syntax, header and (input 0 only) the
/// series metadata.
type InputRead = Result<(String, Header, Option<SeriesMeta>), CtError>;

/// One slice (a classic CT file, or one frame of an Enhanced CT object) after pass 1.
#[derive(Debug, Clone)]
pub(super) struct SliceHeader {
    pub(super) input: usize,
    pub(super) frame: usize,
    pub(super) frames_in_input: usize,
    pub(super) ipp: Vector3<f64>,
    pub(super) position_mm: f64,
    pub(super) slope: f64,
    pub(super) intercept: f64,
}

/// Per-input facts shared by its frames.
#[derive(Debug, Clone)]
pub(super) struct InputHeader {
    pub(super) ts: String,
    pub(super) bits_allocated: u16,
    pub(super) bits_stored: u16,
    pub(super) signed: bool,
    /// The volume slot this input's pixels were already stored in by early decoding.
    pub(super) early_slot: Option<usize>,
    /// When it was acquired, ns since the UNIX epoch.
    pub(super) acquired_unix_ns: Option<i64>,
}

/// Reusable series decoder: keeps its scratch buffers between calls so a pipeline decoding a
/// frame every few hundred milliseconds does not allocate per frame.
///
/// It can also decode a frame's objects *as they arrive* ([`begin_early`](Self::begin_early),
/// [`decode_early`](Self::decode_early)): each object's header is read and its pixels stored
/// in the slot the last decoded series' grid predicts for it. [`decode_into`](Self::decode_into)
/// on the completed frame then re-checks everything as usual and only stores the slots early
/// decoding did not fill correctly — the result is the same as decoding from scratch.
#[derive(Debug, Default)]
pub struct SeriesDecoder {
    pub(super) options: IngestOptions,
    pub(super) slices: Vec<SliceHeader>,
    pub(super) inputs: Vec<InputHeader>,
    /// Grid of the last series decoded without error: the layout early decoding predicts.
    pub(super) last_grid: Option<Grid>,
    pub(super) early: Vec<EarlyObject>,
    pub(super) early_target: Option<EarlyTarget>,
    pub(super) last_early_slices: usize,
}

impl SeriesDecoder {
    /// A decoder with the given options.
    pub fn new(options: IngestOptions) -> Self {
        SeriesDecoder {
            options,
            ..SeriesDecoder::default()
        }
    }

    /// Decodes in-memory slices into `volume`, reusing its storage when the voxel count
    /// matches (its grid is replaced by the series' grid). On error `volume` keeps its
    /// previous grid but its voxels are unspecified.
    pub fn decode_into(&mut self, slices: &[&[u8]], volume: &mut CtVolume) -> Result<SeriesMeta, CtError> {
        self.last_early_slices = 0;
        let result = self.decode_labeled(slices, None, volume);
        self.end_early();
        result
    }

    /// The span of the inputs' acquisition instants, if any input has one.
    fn acquisition_span(&self) -> Option<super::AcquisitionSpan> {
        let mut times = self.inputs.iter().filter_map(|i| i.acquired_unix_ns);
        let first = times.next()?;
        let (mut earliest, mut latest, mut timed) = (first, first, 1);
        for t in times {
            earliest = earliest.min(t);
            latest = latest.max(t);
            timed += 1;
        }
        Some(super::AcquisitionSpan {
            earliest_unix_ns: earliest,
            latest_unix_ns: latest,
            inputs_timed: timed,
            inputs: self.inputs.len(),
        })
    }

    /// Input indices in sorted slice order (after a successful decode).
    pub(super) fn sorted_inputs(&self) -> impl Iterator<Item = usize> + '_ {
        self.slices.iter().map(|s| s.input)
    }

    pub(super) fn decode_labeled(
        &mut self,
        slices: &[&[u8]],
        files: Option<&[PathBuf]>,
        volume: &mut CtVolume,
    ) -> Result<SeriesMeta, CtError> {
        let label = |i: usize| -> PathBuf {
            match files {
                Some(f) => f[i].clone(),
                None => PathBuf::from(format!("<memory>/slice-{i}")),
            }
        };
        if slices.is_empty() {
            return Err(CtError::EmptySeries {
                path: PathBuf::from(if files.is_some() { "<no files>" } else { "<memory>" }),
            });
        }
        self.slices.clear();
        self.inputs.clear();

        let first = self.read_headers(slices, &label)?;
        let h0 = &first.h;
        let (row, col, normal) = self.sort_along_normal(&first)?;
        let n = self.slices.len();
        let (slice_spacing_mm, max_dev) = self.check_stack(&normal, &label, h0)?;
        let grid = self.series_grid(&first, [row, col, normal], slice_spacing_mm)?;
        // Early decoding filled this very storage on this very grid: its placed slots stand
        // wherever the sorted order put the same object (the bytes are held unchanged).
        let early_valid = self
            .early_target
            .as_ref()
            .is_some_and(|t| t.grid == grid && volume.grid() == &grid && storage_of(volume) == t.storage);
        let kept_early = (0..n).filter(|&k| self.kept_from_early(k, early_valid)).count();
        let frame_len = grid.dims()[0] * grid.dims()[1];
        prepare_volume(volume, grid.clone());
        self.last_grid = Some(grid);

        self.store_pixels(
            slices,
            volume.as_slice_mut(),
            frame_len,
            early_valid,
            kept_early > 0,
            &label,
        )?;

        self.last_early_slices = kept_early;
        let mut meta = first.meta;
        meta.transfer_syntax_uid = self.inputs[self.slices[0].input].ts.clone();
        meta.slices = n;
        meta.slice_spacing_mm = slice_spacing_mm;
        meta.max_spacing_deviation_mm = max_dev;
        meta.acquisition = self.acquisition_span();
        Ok(meta)
    }

    /// Pass 1: every input's header, checked against the first in input order. With 2
    /// threads the second half is parsed on a helper thread while this one parses (and
    /// checks) the first; its results are then checked in input order, so the first error in
    /// input order is the one returned, as sequentially.
    fn read_headers(&mut self, slices: &[&[u8]], label: &Label) -> Result<FirstHeader, CtError> {
        let (options, early) = (&self.options, &self.early);
        let header_of = |i: usize| read_input(slices, i, label, options, early);
        // (with early-decoded headers most of pass 1 is a lookup: no helper thread)
        let mid = if self.options.threads >= 2 && self.early.is_empty() {
            slices.len().div_ceil(2)
        } else {
            slices.len()
        };
        let mut first: Option<FirstHeader> = None;
        let (inputs, headers) = (&mut self.inputs, &mut self.slices);
        let mut accept = |i: usize, r: InputRead| -> Result<(), CtError> {
            let early_slot = early_of(early, slices[i]).and_then(|e| e.slot);
            accept_input(i, r, early_slot, &mut first, label, inputs, headers)
        };
        std::thread::scope(|scope| -> Result<(), CtError> {
            let second = (mid < slices.len())
                .then(|| scope.spawn(|| (mid..slices.len()).map(header_of).collect::<Vec<_>>()));
            for i in 0..mid {
                accept(i, header_of(i))?;
            }
            if let Some(handle) = second {
                let results = handle
                    .join()
                    .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
                for (i, r) in (mid..).zip(results) {
                    accept(i, r)?;
                }
            }
            Ok(())
        })?;
        Ok(first.unwrap_or_else(|| unreachable!("slices is non-empty")))
    }

    /// Sorts the slices along the normal `row × column` of the first input's orientation
    /// (never by file name or Instance Number); returns the unit (row, column, normal).
    fn sort_along_normal(&mut self, first: &FirstHeader) -> Result<(VectorMm, VectorMm, VectorMm), CtError> {
        let h0 = &first.h;
        let row = Vector3::new(h0.iop[0], h0.iop[1], h0.iop[2]);
        let col = Vector3::new(h0.iop[3], h0.iop[4], h0.iop[5]);
        let normal = row.cross(&col);
        if !(normal.norm() > 0.99 && normal.norm() < 1.01 && row.dot(&col).abs() < 1e-3) {
            return Err(CtError::InvalidAttribute {
                path: first.path.clone(),
                tag_name: IOP.name,
                reason: format!("row and column cosines {:?} are not orthonormal", h0.iop),
            });
        }
        let normal = normal.normalize();
        for s in &mut self.slices {
            s.position_mm = s.ipp.dot(&normal);
        }
        self.slices
            .sort_by(|a, b| a.position_mm.total_cmp(&b.position_mm));
        Ok((row.normalize(), col.normalize(), normal))
    }

    /// The series' grid: first sorted slice at the origin, axes (row, column, normal).
    fn series_grid(
        &self,
        first: &FirstHeader,
        axes: [VectorMm; 3],
        slice_spacing_mm: f64,
    ) -> Result<Grid, CtError> {
        let h0 = &first.h;
        let origin = self.slices[0].ipp;
        let direction = Matrix3::from_columns(&axes);
        let spacing = [h0.pixel_spacing[1], h0.pixel_spacing[0], slice_spacing_mm];
        let dims = [h0.columns as usize, h0.rows as usize, self.slices.len()];
        Grid::new(dims, PointMm::from(origin), spacing, direction).map_err(|source| CtError::Grid {
            path: first.path.clone(),
            source,
        })
    }

    /// Whether sorted slot `slot` already holds its pixels from early decoding.
    fn kept_from_early(&self, slot: usize, early_valid: bool) -> bool {
        let s = &self.slices[slot];
        early_valid && s.frames_in_input == 1 && self.inputs[s.input].early_slot == Some(slot)
    }

    /// Pass 2: every input's frames into their sorted slots of `out`, each input parsed once;
    /// slots early decoding filled are kept.
    fn store_pixels(
        &self,
        slices: &[&[u8]],
        out: &mut [i16],
        frame_len: usize,
        early_valid: bool,
        any_early: bool,
        label: &Label,
    ) -> Result<(), CtError> {
        if !any_early && self.store_native_split(slices, out, frame_len, label)? {
            return Ok(());
        }
        // (input, frame, sorted slot), grouped per input.
        let mut order: Vec<(usize, usize, usize)> = self
            .slices
            .iter()
            .enumerate()
            .map(|(k, s)| (s.input, s.frame, k))
            .collect();
        order.sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            if group.len() == 1 && self.kept_from_early(group[0].2, early_valid) {
                continue;
            }
            self.store_input(slices, group, out, frame_len, label)?;
        }
        Ok(())
    }

    /// Stores the frames of one input (`group`: its (input, frame, slot) triples).
    fn store_input(
        &self,
        slices: &[&[u8]],
        group: &[(usize, usize, usize)],
        out: &mut [i16],
        frame_len: usize,
        label: &Label,
    ) -> Result<(), CtError> {
        let input = group[0].0;
        let path = label(input);
        let ih = &self.inputs[input];
        let frames_in_input = self.slices[group[0].2].frames_in_input;
        let bytes_per = usize::from(ih.bits_allocated / 8);
        let raw = input_pixels(slices[input], ih, frame_len, frames_in_input, &path)?;
        for &(_, frame, k) in group {
            let s = &self.slices[k];
            let src = &raw[frame * frame_len * bytes_per..(frame + 1) * frame_len * bytes_per];
            let dst = &mut out[k * frame_len..(k + 1) * frame_len];
            store_frame(src, ih, s.slope, s.intercept, dst, &self.options).map_err(|(min, max)| {
                CtError::HuOutOfRange {
                    path: path.clone(),
                    min,
                    max,
                    allowed_min: self.options.hu_min,
                    allowed_max: self.options.hu_max,
                }
            })?;
        }
        Ok(())
    }

    /// The common case, one native frame per input found by [`native_pixel_bytes`]: the HU
    /// pass over slots split between two threads (each writes its own half of `out`).
    /// Returns `Ok(false)` (nothing written) when some input needs the general path. The
    /// error is the one the sequential input-order loop would report first.
    fn store_native_split(
        &self,
        slices: &[&[u8]],
        out: &mut [i16],
        frame_len: usize,
        label: &Label,
    ) -> Result<bool, CtError> {
        let raw_of = |s: &SliceHeader| -> Option<&[u8]> {
            let ih = &self.inputs[s.input];
            let native = ih.ts == IMPLICIT_VR_LE || ih.ts == EXPLICIT_VR_LE;
            let total = frame_len * usize::from(ih.bits_allocated / 8);
            if !native || s.frames_in_input != 1 {
                return None;
            }
            native_pixel_bytes(slices[s.input], total, ih.ts == EXPLICIT_VR_LE)
        };
        if self.options.threads < 2 || !self.slices.iter().all(|s| raw_of(s).is_some()) {
            return Ok(false);
        }
        // First failing slot of a run by input index: (input, (min, max)).
        let run = |headers: &[SliceHeader], out: &mut [i16]| -> Option<(usize, (f64, f64))> {
            let mut worst: Option<(usize, (f64, f64))> = None;
            for (s, dst) in headers.iter().zip(out.chunks_exact_mut(frame_len)) {
                let raw = raw_of(s)?;
                let ih = &self.inputs[s.input];
                if let Err(range) = store_frame(raw, ih, s.slope, s.intercept, dst, &self.options) {
                    if worst.is_none_or(|(i, _)| s.input < i) {
                        worst = Some((s.input, range));
                    }
                }
            }
            worst
        };
        let mid = self.slices.len() / 2;
        let (h0, h1) = self.slices.split_at(mid);
        let (o0, o1) = out.split_at_mut(mid * frame_len);
        let (e0, e1) = std::thread::scope(|scope| {
            let second = scope.spawn(|| run(h1, o1));
            let e0 = run(h0, o0);
            let e1 = second
                .join()
                .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
            (e0, e1)
        });
        let worst = match (e0, e1) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        match worst {
            None => Ok(true),
            Some((input, (min, max))) => Err(CtError::HuOutOfRange {
                path: label(input),
                min,
                max,
                allowed_min: self.options.hu_min,
                allowed_max: self.options.hu_max,
            }),
        }
    }

    /// Checks duplicates, tilt, missing slices and uniform spacing of the sorted stack;
    /// returns (mean spacing, max deviation).
    fn check_stack(&self, normal: &VectorMm, label: &Label, h0: &Header) -> Result<(f64, f64), CtError> {
        let n = self.slices.len();
        let o = &self.slices;
        if n == 1 {
            let s = h0
                .spacing_between_slices
                .or(h0.slice_thickness)
                .filter(|s| *s > 0.0)
                .ok_or_else(|| CtError::MissingAttribute {
                    path: label(o[0].input),
                    tag_name: SPACING_BETWEEN_SLICES.name,
                })?;
            return Ok((s, 0.0));
        }
        self.check_distinct_and_untilted(normal, label)?;
        // Expected spacing: the median gap, robust to a missing slice.
        let mut gaps: Vec<f64> = o
            .windows(2)
            .map(|w| w[1].position_mm - w[0].position_mm)
            .collect();
        gaps.sort_by(f64::total_cmp);
        let median = gaps[gaps.len() / 2];
        for w in o.windows(2) {
            let gap = w[1].position_mm - w[0].position_mm;
            if gap > 1.5 * median {
                return Err(CtError::MissingSlice {
                    path: label(w[1].input),
                    position_mm: w[0].position_mm + median,
                    gap_mm: gap,
                    spacing_mm: median,
                });
            }
        }
        let span = o[n - 1].position_mm - o[0].position_mm;
        let mean = span / (n - 1) as f64;
        let tol = (self.options.spacing_tolerance_rel * mean).max(self.options.spacing_tolerance_mm);
        let dev = |w: &[SliceHeader]| (w[1].position_mm - w[0].position_mm - mean).abs();
        let max_dev = o.windows(2).map(dev).fold(0.0f64, f64::max);
        // Name the first slice (in sorted order) whose gap is out of tolerance.
        if let Some(w) = o.windows(2).find(|w| dev(w) > tol) {
            return Err(CtError::UnevenSpacing {
                path: label(w[1].input),
                max_deviation_mm: max_dev,
                spacing_mm: mean,
                tolerance_mm: tol,
            });
        }
        Ok((mean, max_dev))
    }

    /// No two sorted slices at one position, and every position on the normal through the
    /// first slice (a tilted gantry shears the stack sideways).
    fn check_distinct_and_untilted(&self, normal: &VectorMm, label: &Label) -> Result<(), CtError> {
        let o = &self.slices;
        for w in o.windows(2) {
            if w[1].position_mm - w[0].position_mm < 1e-3 {
                return Err(CtError::DuplicateSlice {
                    path: label(w[1].input),
                    other: label(w[0].input),
                    position_mm: w[1].position_mm,
                });
            }
        }
        let p0 = o[0].ipp;
        for s in o.iter() {
            let d = s.ipp - p0;
            let along = d.dot(normal);
            let off = (d - normal * along).norm();
            let tol = self.options.spacing_tolerance_mm.max(1e-3);
            if off > tol {
                return Err(CtError::GantryTilt {
                    path: label(s.input),
                    tilt_deg: off.atan2(along.abs()).to_degrees(),
                    off_normal_mm: off,
                });
            }
        }
        Ok(())
    }
}

/// The early-decoded object holding these very bytes, if any.
fn early_of<'e>(early: &'e [EarlyObject], bytes: &[u8]) -> Option<&'e EarlyObject> {
    early
        .iter()
        .find(|e| e.object.as_ptr() == bytes.as_ptr() && e.object.len() == bytes.len())
}

/// Pass 1 on input `i`. An input early decoding already read is looked up, not parsed again
/// (except input 0, whose metadata is read here).
fn read_input(
    slices: &[&[u8]],
    i: usize,
    label: &Label,
    options: &IngestOptions,
    early: &[EarlyObject],
) -> InputRead {
    if i > 0 {
        if let Some(e) = early_of(early, slices[i]) {
            return Ok((e.ts.clone(), e.header.clone(), None));
        }
    }
    let path = label(i);
    let obj = parse(slices[i], &path, true)?;
    let ts = trim_uid(obj.meta().transfer_syntax());
    let h = read_header(&obj, &path, options)?;
    let meta = if i == 0 {
        Some(series_meta(&obj, &path, &h, &ts)?)
    } else {
        None
    };
    Ok((ts, h, meta))
}

/// Takes input `i`'s pass-1 result, in input order: input 0 becomes the first header, every
/// later one is checked against it; the input and its frames are recorded.
fn accept_input(
    i: usize,
    read: InputRead,
    early_slot: Option<usize>,
    first: &mut Option<FirstHeader>,
    label: &Label,
    inputs: &mut Vec<InputHeader>,
    headers: &mut Vec<SliceHeader>,
) -> Result<(), CtError> {
    let (ts, h, meta) = read?;
    match (&*first, meta) {
        (None, Some(meta)) => {
            *first = Some(FirstHeader {
                path: label(i),
                meta,
                h: h.clone(),
            })
        }
        (Some(f), _) => check_consistent(f, &h, &label(i))?,
        (None, None) => unreachable!("input 0 is accepted first and carries the meta"),
    }
    inputs.push(InputHeader {
        ts,
        bits_allocated: h.bits_allocated,
        bits_stored: h.bits_stored,
        signed: h.signed,
        early_slot,
        acquired_unix_ns: h.acquired_unix_ns,
    });
    for (frame, fr) in h.frames.iter().enumerate() {
        headers.push(SliceHeader {
            input: i,
            frame,
            frames_in_input: h.frames.len(),
            ipp: fr.ipp,
            position_mm: 0.0,
            slope: fr.slope,
            intercept: fr.intercept,
        });
    }
    Ok(())
}

/// Gives `volume` the new grid, reusing its allocation when the voxel count matches.
pub(super) fn prepare_volume(volume: &mut CtVolume, grid: Grid) {
    let [nx, ny, nz] = grid.dims();
    let data = std::mem::replace(volume.data_mut(), ndarray::Array3::zeros((0, 0, 0)));
    let data = if data.len() == grid.len() {
        data.into_shape_with_order((nz, ny, nx))
            .unwrap_or_else(|_| ndarray::Array3::zeros((nz, ny, nx)))
    } else {
        ndarray::Array3::zeros((nz, ny, nx))
    };
    *volume = CtVolume::from_array(grid, data)
        .unwrap_or_else(|_| unreachable!("array shaped from the grid's own dims"));
}
