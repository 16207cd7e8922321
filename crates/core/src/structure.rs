//! Contours and regions of interest, free of DICOM: what an RT Structure Set describes.
//!
//! An ROI is a stack of closed planar polygons in patient LPS mm. [`Roi::rasterize`] turns
//! it into a voxel mask on any [`Grid`], oblique ones included: contour points are mapped
//! into the grid's continuous index space, where a contour lying in a slice plane has a
//! constant `k`. Each slice is filled by the even-odd rule over all contours that fall on
//! it (so holes and several islands need no special handling), and a voxel is inside when
//! its centre is. The fill is a scanline pass: every polygon edge deposits one crossing per
//! voxel row it spans, crossings are sorted per row, and runs between pairs are set.
//!
//! ```
//! use ionguide_core::geometry::Grid;
//! use ionguide_core::structure::{Contour, Roi};
//! use ionguide_core::units::PointMm;
//! let grid = Grid::axis_aligned([10, 10, 1], PointMm::origin(), [1.0; 3]).unwrap();
//! let square = Contour::new(vec![
//!     PointMm::new(1.5, 1.5, 0.0),
//!     PointMm::new(5.5, 1.5, 0.0),
//!     PointMm::new(5.5, 5.5, 0.0),
//!     PointMm::new(1.5, 5.5, 0.0),
//! ]);
//! let roi = Roi { number: 1, name: "box".into(), contours: vec![square] };
//! let m = roi.rasterize(&grid);
//! assert_eq!(m.voxels, 16);
//! ```

use serde::Serialize;

use crate::geometry::Grid;
use crate::units::PointMm;
use crate::volume::MaskVolume;

/// Default tolerance for a contour's flatness and for its distance to a slice plane, mm.
/// DICOM writers round coordinates to ~0.01 mm; anything beyond this is a different plane.
pub const DEFAULT_PLANE_TOLERANCE_MM: f64 = 0.1;

/// Why a structure-set query fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StructureError {
    /// No ROI of that name.
    #[error("ROI {name:?} not found; the structure set has {available:?}")]
    RoiNotFound {
        /// The requested name.
        name: String,
        /// Names of the ROIs that exist.
        available: Vec<String>,
    },
}

/// All ROIs of one structure set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructureSet {
    /// Frame of Reference UID the contours are expressed in.
    pub frame_of_reference_uid: String,
    /// Regions of interest in file order.
    pub rois: Vec<Roi>,
}

impl StructureSet {
    /// The ROI of that exact name.
    pub fn roi(&self, name: &str) -> Result<&Roi, StructureError> {
        self.rois
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| StructureError::RoiNotFound {
                name: name.to_string(),
                available: self.names(),
            })
    }

    /// ROI names in file order.
    pub fn names(&self) -> Vec<String> {
        self.rois.iter().map(|r| r.name.clone()).collect()
    }
}

/// One region of interest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Roi {
    /// ROI Number as written.
    pub number: i32,
    /// ROI Name.
    pub name: String,
    /// Closed planar contours.
    pub contours: Vec<Contour>,
}

/// One closed planar polygon (DICOM CLOSED_PLANAR); the last point connects to the first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contour {
    /// Vertices in patient LPS mm.
    pub points_mm: Vec<PointMm>,
}

impl Contour {
    /// A contour from its vertices.
    pub fn new(points_mm: Vec<PointMm>) -> Self {
        Contour { points_mm }
    }
}

/// Why a contour was left out of a rasterization.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub enum ContourSkipReason {
    /// Fewer than three vertices enclose nothing.
    TooFewPoints {
        /// Vertex count.
        points: usize,
    },
    /// A coordinate is NaN or infinite.
    NonFinite,
    /// The vertices do not lie in one plane parallel to the grid's slices.
    NotPlanar {
        /// Spread of the vertices along the slice normal, mm.
        spread_mm: f64,
    },
    /// The contour's plane lies between slice planes of this grid.
    OffSlice {
        /// Distance to the nearest slice plane, mm.
        distance_mm: f64,
    },
    /// The contour's plane lies outside the grid's slice range.
    OutsideGrid {
        /// Continuous slice index of the plane.
        k: f64,
    },
}

/// A contour that was skipped, with its index in the ROI and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ContourSkip {
    /// Index of the contour in [`Roi::contours`].
    pub contour_index: usize,
    /// Why.
    pub reason: ContourSkipReason,
}

/// Inclusive voxel-index box and its patient-space extent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MaskBounds {
    /// Lowest `(i, j, k)` of a set voxel.
    pub min_index: [usize; 3],
    /// Highest `(i, j, k)` of a set voxel.
    pub max_index: [usize; 3],
    /// Patient-space axis-aligned box of the set voxels' centres: lower corner, mm.
    pub min_mm: PointMm,
    /// Upper corner, mm.
    pub max_mm: PointMm,
}

/// A rasterized ROI.
#[derive(Debug, Clone)]
pub struct RoiMask {
    /// 1 inside, 0 outside, on the grid rasterized onto.
    pub mask: MaskVolume,
    /// Number of voxels set.
    pub voxels: usize,
    /// Volume in cm³ (voxels × voxel volume).
    pub volume_cc: f64,
    /// Mean of the set voxels' centres, mm (`None` for an empty mask).
    pub centroid_mm: Option<PointMm>,
    /// Bounding box (`None` for an empty mask).
    pub bbox: Option<MaskBounds>,
    /// Contours left out, with reasons (also logged as warnings).
    pub skipped: Vec<ContourSkip>,
}

/// Tolerances for [`Roi::rasterize_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RasterOptions {
    /// Largest allowed spread of a contour along the slice normal, mm.
    pub planar_tolerance_mm: f64,
    /// Largest allowed distance of a contour plane to the nearest slice plane, mm.
    pub slice_tolerance_mm: f64,
}

impl Default for RasterOptions {
    fn default() -> Self {
        RasterOptions {
            planar_tolerance_mm: DEFAULT_PLANE_TOLERANCE_MM,
            slice_tolerance_mm: DEFAULT_PLANE_TOLERANCE_MM,
        }
    }
}

impl RasterOptions {
    /// Sets the flatness tolerance.
    pub fn with_planar_tolerance_mm(mut self, mm: f64) -> Self {
        self.planar_tolerance_mm = mm;
        self
    }
    /// Sets the slice-plane tolerance.
    pub fn with_slice_tolerance_mm(mut self, mm: f64) -> Self {
        self.slice_tolerance_mm = mm;
        self
    }
}

impl Roi {
    /// The ROI outlining a mask: per slice, the closed polygons that separate set voxel
    /// centres from unset ones, by marching squares on the slice with crossings at the
    /// midpoints between centres (so [`Roi::rasterize`] on the same grid gives the mask
    /// back). The two ambiguous saddle cells are split so that diagonal neighbours stay
    /// apart. Hand-written (some 60 lines) because no contouring crate is vendored.
    pub fn from_mask(number: i32, name: &str, mask: &MaskVolume) -> Roi {
        let grid = mask.grid();
        let [nx, ny, nz] = grid.dims();
        let mut contours = Vec::new();
        // padded index (pi, pj) = (i + 1, j + 1); outside the mask counts as unset
        let at = |i: isize, j: isize, k: usize| -> bool {
            i >= 1
                && j >= 1
                && (i as usize) <= nx
                && (j as usize) <= ny
                && mask
                    .get(i as usize - 1, j as usize - 1, k)
                    .is_some_and(|&v| v != 0)
        };
        for k in 0..nz {
            // segments between edge ids: an edge is (horizontal?, i, j) in padded indices
            type Edge = (bool, isize, isize);
            let mut next: std::collections::HashMap<Edge, Edge> = std::collections::HashMap::new();
            for j in 0..=ny as isize {
                for i in 0..=nx as isize {
                    // cell corners: a (i,j) b (i+1,j) c (i+1,j+1) d (i,j+1)
                    let (a, b, c, d) = (at(i, j, k), at(i + 1, j, k), at(i + 1, j + 1, k), at(i, j + 1, k));
                    let bottom: Edge = (true, i, j);
                    let right: Edge = (false, i + 1, j);
                    let top: Edge = (true, i, j + 1);
                    let left: Edge = (false, i, j);
                    // segments oriented with the set side on the left
                    let segs: &[(Edge, Edge)] = match (a, b, c, d) {
                        (false, false, false, false) | (true, true, true, true) => &[],
                        (true, false, false, false) => &[(bottom, left)],
                        (false, true, false, false) => &[(right, bottom)],
                        (false, false, true, false) => &[(top, right)],
                        (false, false, false, true) => &[(left, top)],
                        (true, true, false, false) => &[(right, left)],
                        (false, true, true, false) => &[(top, bottom)],
                        (false, false, true, true) => &[(left, right)],
                        (true, false, false, true) => &[(bottom, top)],
                        (true, false, true, false) => &[(bottom, left), (top, right)],
                        (false, true, false, true) => &[(right, bottom), (left, top)],
                        (false, true, true, true) => &[(left, bottom)],
                        (true, false, true, true) => &[(bottom, right)],
                        (true, true, false, true) => &[(right, top)],
                        (true, true, true, false) => &[(top, left)],
                    };
                    for &(from, to) in segs {
                        next.insert(from, to);
                    }
                }
            }
            let point = |e: Edge| {
                let (h, i, j) = e;
                let (x, y) = if h {
                    (i as f64 + 0.5 - 1.0, j as f64 - 1.0)
                } else {
                    (i as f64 - 1.0, j as f64 + 0.5 - 1.0)
                };
                grid.index_to_patient([x, y, k as f64])
            };
            let mut starts: Vec<Edge> = next.keys().copied().collect();
            starts.sort_unstable();
            for start in starts {
                if !next.contains_key(&start) {
                    continue;
                }
                let mut points = Vec::new();
                let mut e = start;
                while let Some(n) = next.remove(&e) {
                    points.push(point(e));
                    e = n;
                }
                if points.len() >= 3 {
                    contours.push(Contour::new(points));
                }
            }
        }
        Roi {
            number,
            name: name.to_string(),
            contours,
        }
    }

    /// Rasterizes with the default tolerances.
    pub fn rasterize(&self, grid: &Grid) -> RoiMask {
        self.rasterize_with(grid, RasterOptions::default())
    }

    /// Rasterizes onto `grid`: even-odd fill per slice, voxel centres decide.
    pub fn rasterize_with(&self, grid: &Grid, opts: RasterOptions) -> RoiMask {
        let [nx, ny, nz] = grid.dims();
        let spacing_k = grid.spacing_mm()[2];
        // Per slice: the polygons (in (i, j) index space) that lie on it.
        let mut per_slice: Vec<Vec<Vec<[f64; 2]>>> = vec![Vec::new(); nz];
        let mut skipped = Vec::new();
        for (ci, contour) in self.contours.iter().enumerate() {
            match place_contour(grid, contour, opts, spacing_k, nz) {
                Ok((k, poly)) => per_slice[k].push(poly),
                Err(reason) => {
                    tracing::warn!(
                        roi = %self.name,
                        contour_index = ci,
                        ?reason,
                        "contour skipped in rasterization"
                    );
                    skipped.push(ContourSkip {
                        contour_index: ci,
                        reason,
                    });
                }
            }
        }

        let mut mask = MaskVolume::filled(grid.clone(), 0);
        let data = mask.as_slice_mut();
        let mut rows: Vec<Vec<f64>> = vec![Vec::new(); ny];
        let mut count = 0usize;
        let mut sum = [0f64; 3];
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        for (k, polys) in per_slice.iter().enumerate() {
            if polys.is_empty() {
                continue;
            }
            rows.iter_mut().for_each(Vec::clear);
            for poly in polys {
                deposit_crossings(poly, &mut rows);
            }
            for (j, xs) in rows.iter_mut().enumerate() {
                if xs.len() < 2 {
                    continue;
                }
                xs.sort_unstable_by(f64::total_cmp);
                for pair in xs.chunks_exact(2) {
                    // Centre i is inside when x0 <= i < x1 (half-open, so shared edges of
                    // abutting polygons never double-count).
                    let i0 = pair[0].ceil().max(0.0);
                    let i1 = (pair[1].ceil() - 1.0).min(nx as f64 - 1.0);
                    if i1 < i0 {
                        continue;
                    }
                    let (i0, i1) = (i0 as usize, i1 as usize);
                    let row = (k * ny + j) * nx;
                    for v in &mut data[row + i0..=row + i1] {
                        // Even-odd across pairs is already resolved by the pairing; a voxel
                        // is touched at most once per row.
                        *v = 1;
                    }
                    let n = i1 - i0 + 1;
                    count += n;
                    sum[0] += (i0 + i1) as f64 * n as f64 / 2.0;
                    sum[1] += (j * n) as f64;
                    sum[2] += (k * n) as f64;
                    lo = [lo[0].min(i0), lo[1].min(j), lo[2].min(k)];
                    hi = [hi[0].max(i1), hi[1].max(j), hi[2].max(k)];
                }
            }
        }

        let (centroid_mm, bbox) = if count == 0 {
            (None, None)
        } else {
            let c = grid.index_to_patient(sum.map(|s| s / count as f64));
            let mut min_mm = PointMm::new(f64::INFINITY, f64::INFINITY, f64::INFINITY);
            let mut max_mm = -min_mm;
            for corner in 0..8 {
                let ijk = [0, 1, 2].map(|a| {
                    if corner & (1 << a) != 0 {
                        hi[a] as f64
                    } else {
                        lo[a] as f64
                    }
                });
                let p = grid.index_to_patient(ijk);
                for a in 0..3 {
                    min_mm[a] = min_mm[a].min(p[a]);
                    max_mm[a] = max_mm[a].max(p[a]);
                }
            }
            (
                Some(c),
                Some(MaskBounds {
                    min_index: lo,
                    max_index: hi,
                    min_mm,
                    max_mm,
                }),
            )
        };
        RoiMask {
            mask,
            voxels: count,
            volume_cc: count as f64 * grid.voxel_volume_mm3() / 1000.0,
            centroid_mm,
            bbox,
            skipped,
        }
    }
}

/// Maps a contour to its slice and its polygon in `(i, j)` index space.
fn place_contour(
    grid: &Grid,
    contour: &Contour,
    opts: RasterOptions,
    spacing_k: f64,
    nz: usize,
) -> Result<(usize, Vec<[f64; 2]>), ContourSkipReason> {
    let pts = &contour.points_mm;
    if pts.len() < 3 {
        return Err(ContourSkipReason::TooFewPoints { points: pts.len() });
    }
    if !pts.iter().all(|p| p.iter().all(|v| v.is_finite())) {
        return Err(ContourSkipReason::NonFinite);
    }
    let mut poly = Vec::with_capacity(pts.len());
    let (mut kmin, mut kmax, mut ksum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for p in pts {
        let [i, j, k] = grid.patient_to_index(p);
        poly.push([i, j]);
        kmin = kmin.min(k);
        kmax = kmax.max(k);
        ksum += k;
    }
    let spread_mm = (kmax - kmin) * spacing_k;
    if spread_mm > opts.planar_tolerance_mm {
        return Err(ContourSkipReason::NotPlanar { spread_mm });
    }
    let k = ksum / pts.len() as f64;
    let kr = k.round();
    if kr < 0.0 || kr > (nz - 1) as f64 {
        return Err(ContourSkipReason::OutsideGrid { k });
    }
    let distance_mm = (k - kr).abs() * spacing_k;
    if distance_mm > opts.slice_tolerance_mm {
        return Err(ContourSkipReason::OffSlice { distance_mm });
    }
    Ok((kr as usize, poly))
}

/// Adds, for every voxel row `j` an edge spans, the `i` where the edge crosses `y = j`.
fn deposit_crossings(poly: &[[f64; 2]], rows: &mut [Vec<f64>]) {
    let ny = rows.len() as f64;
    let n = poly.len();
    for e in 0..n {
        let a = poly[e];
        let b = poly[(e + 1) % n];
        if a[1] == b[1] {
            continue; // horizontal edges never cross a row line under the half-open rule
        }
        let (lo, hi) = if a[1] < b[1] { (a, b) } else { (b, a) };
        // Rows j with lo.y <= j < hi.y: each vertex counted once between its two edges.
        let j0 = lo[1].ceil().max(0.0);
        let j1 = (hi[1].ceil() - 1.0).min(ny - 1.0);
        if j1 < j0 {
            continue;
        }
        let slope = (hi[0] - lo[0]) / (hi[1] - lo[1]);
        let (j0, j1) = (j0 as usize, j1 as usize);
        for (j, row) in rows.iter_mut().enumerate().take(j1 + 1).skip(j0) {
            row.push(lo[0] + (j as f64 - lo[1]) * slope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contours_of_a_mask_rasterize_back_to_it() {
        // two blobs, a hole, diagonal-only neighbours (the saddle cells) and voxels on the
        // grid's edge, on a grid with an offset origin and anisotropic voxels
        let grid = Grid::axis_aligned([24, 20, 4], PointMm::new(-7.0, 3.0, -20.0), [0.9, 1.1, 3.0]).unwrap();
        let mut m = MaskVolume::filled(grid.clone(), 0);
        for k in 0..4 {
            for j in 0..20 {
                for i in 0..24 {
                    let (x, y) = (i as f64 - 8.0, j as f64 - 9.0);
                    let r2 = x * x + y * y;
                    let ring = (9.0..49.0).contains(&r2) && k != 3;
                    let blob = i >= 19 && j <= 4 + k;
                    let checker = k == 3 && i < 6 && j < 6 && (i + j) % 2 == 0;
                    *m.get_mut(i, j, k).unwrap() = u8::from(ring || blob || checker);
                }
            }
        }
        let roi = Roi::from_mask(7, "GTV", &m);
        assert!(roi.contours.len() >= 3 * 3 + 18);
        let back = roi.rasterize(&grid);
        assert!(back.skipped.is_empty());
        assert_eq!(back.mask.as_slice(), m.as_slice());
    }

    #[test]
    fn off_slice_and_non_planar_contours_are_skipped() {
        let grid = Grid::axis_aligned([8, 8, 3], PointMm::origin(), [1.0, 1.0, 2.0]).unwrap();
        let sq = |z1: f64, z2: f64| {
            Contour::new(vec![
                PointMm::new(1.0, 1.0, z1),
                PointMm::new(5.0, 1.0, z1),
                PointMm::new(5.0, 5.0, z2),
                PointMm::new(1.0, 5.0, z2),
            ])
        };
        let roi = Roi {
            number: 1,
            name: "x".into(),
            contours: vec![sq(2.0, 2.0), sq(3.0, 3.0), sq(2.0, 3.0), sq(10.0, 10.0)],
        };
        let m = roi.rasterize(&grid);
        assert_eq!(m.voxels, 16);
        let reasons: Vec<_> = m.skipped.iter().map(|s| s.contour_index).collect();
        assert_eq!(reasons, vec![1, 2, 3]);
        assert!(matches!(m.skipped[0].reason, ContourSkipReason::OffSlice { .. }));
        assert!(matches!(m.skipped[1].reason, ContourSkipReason::NotPlanar { .. }));
        assert!(matches!(
            m.skipped[2].reason,
            ContourSkipReason::OutsideGrid { .. }
        ));
    }
}
