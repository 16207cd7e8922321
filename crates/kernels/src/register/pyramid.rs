//! Multi-resolution pyramid: block averages that coarsen the finest axes first.
//!
//! CT voxels are anisotropic (≈1 × 1 × 3.27 mm). Halving every axis would smear the already
//! coarse slice axis, so each level halves only the axes notably finer than twice the
//! current finest spacing: 1 × 1 × 3.27 → 2 × 2 × 3.27 → 4 × 4 × 3.27 → 8 × 8 × 6.54.
//! The coarse grid's voxel centres sit at the centroids of the averaged blocks, so a patient
//! point means the same anatomy on every level.

use crate::geometry::Grid;
use crate::volume::Voxel;

use super::RegisterError;

/// One coarsened image: a grid and its voxels in `(k, j, i)` row-major order.
#[derive(Debug, Clone)]
pub(crate) struct LevelImage {
    pub(crate) grid: Grid,
    pub(crate) data: Vec<f32>,
}

/// Per-axis block factors (1 or 2) that take a grid of `spacing_mm` one level coarser.
pub(crate) fn step_factors(spacing_mm: [f64; 3]) -> [usize; 3] {
    let finest = spacing_mm.iter().copied().fold(f64::INFINITY, f64::min);
    let target = 2.0 * finest;
    spacing_mm.map(|s| if s < 0.75 * target { 2 } else { 1 })
}

/// Block-averages `src` (on `grid`) by `factors` into `out`, reusing `out`'s allocation.
/// A trailing partial block is dropped; an axis never shrinks below one voxel.
pub(crate) fn downsample_into<T: Voxel>(
    grid: &Grid,
    src: &[T],
    factors: [usize; 3],
    out: &mut LevelImage,
) -> Result<(), RegisterError> {
    let [nx, ny, nz] = grid.dims();
    let f = factors.map(|f| f.max(1));
    let f = [0, 1, 2].map(|a| f[a].min(grid.dims()[a]));
    let dims = [nx / f[0], ny / f[1], nz / f[2]];
    let spacing = grid.spacing_mm();
    let origin = grid.index_to_patient([0, 1, 2].map(|a| (f[a] as f64 - 1.0) / 2.0));
    let new_grid = Grid::new(
        dims,
        origin,
        [0, 1, 2].map(|a| spacing[a] * f[a] as f64),
        *grid.direction(),
    )
    .map_err(|source| RegisterError::Geometry { source })?;
    out.data.clear();
    out.data.resize(new_grid.len(), 0.0);
    let norm = 1.0 / (f[0] * f[1] * f[2]) as f32;
    let [mx, my, mz] = dims;
    for k in 0..mz {
        for j in 0..my {
            let orow = (k * my + j) * mx;
            for dk in 0..f[2] {
                for dj in 0..f[1] {
                    let srow = ((k * f[2] + dk) * ny + j * f[1] + dj) * nx;
                    let src_row = &src[srow..srow + mx * f[0]];
                    let dst = &mut out.data[orow..orow + mx];
                    if f[0] == 2 {
                        for (d, pair) in dst.iter_mut().zip(src_row.chunks_exact(2)) {
                            *d += pair[0].to_f32() + pair[1].to_f32();
                        }
                    } else {
                        for (d, s) in dst.iter_mut().zip(src_row.chunks_exact(f[0])) {
                            *d += s.iter().map(|v| v.to_f32()).sum::<f32>();
                        }
                    }
                }
            }
            for d in &mut out.data[orow..orow + mx] {
                *d *= norm;
            }
        }
    }
    out.grid = new_grid;
    Ok(())
}

/// Copies voxels `lo..hi` (index ranges per axis, `hi` exclusive) of `src` into `out` as
/// `f32`, smoothed across slices with the binomial kernel `[1, 4, 6, 4, 1] / 16` (edge slices repeated).
///
/// Why the smoothing: with 3.27 mm slices, linear interpolation between slices blurs the
/// frame by an amount that depends on where a sample falls between two slices, and the SSD
/// minimum is pulled towards slice-aligned positions (interpolation artefact, several tenths
/// of a millimetre along z). Smoothing both images across slices removes most of the
/// high-frequency content that artefact feeds on; the fixed samples get the same kernel
/// ([`blur_z_at`]).
pub(crate) fn crop_blur_z_into<T: Voxel + Sync>(
    grid: &Grid,
    src: &[T],
    lo: [usize; 3],
    hi: [usize; 3],
    out: &mut LevelImage,
    threads: usize,
) -> Result<(), RegisterError> {
    let [nx, ny, nz] = grid.dims();
    let dims = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let origin = grid.index_to_patient(lo.map(|v| v as f64));
    out.grid = Grid::new(dims, origin, grid.spacing_mm(), *grid.direction())
        .map_err(|source| RegisterError::Geometry { source })?;
    let width = dims[0];
    let plane = dims[0] * dims[1];
    // every voxel is written below, so a reused buffer of the right size needs no clearing
    out.data.resize(plane * dims[2], 0.0);
    if plane == 0 {
        return Ok(());
    }
    // one pass per output row over its five source rows (one write per voxel), in the same
    // order of operations as `blur_z_at` so fixed and moving values agree bit for bit
    let blur_plane = |k: usize, dst: &mut [f32]| {
        let ks = z_taps(k, nz);
        for (j, row) in (lo[1]..hi[1]).zip(dst.chunks_exact_mut(width)) {
            let rows = ks.map(|kk| {
                let o = (kk * ny + j) * nx + lo[0];
                src.get(o..o + width).unwrap_or(&[])
            });
            let [r0, r1, r2, r3, r4] = rows;
            if rows.iter().any(|r| r.len() != width) {
                row.fill(0.0); // cannot happen: lo..hi lies inside the grid
                continue;
            }
            // zipped rather than indexed: no bounds check per tap, so the loop vectorizes
            let taps = r0.iter().zip(r1).zip(r2).zip(r3).zip(r4);
            for (d, ((((v0, v1), v2), v3), v4)) in row.iter_mut().zip(taps) {
                let mut acc = 0.0;
                acc += Z_KERNEL[0] * v0.to_f32();
                acc += Z_KERNEL[1] * v1.to_f32();
                acc += Z_KERNEL[2] * v2.to_f32();
                acc += Z_KERNEL[3] * v3.to_f32();
                acc += Z_KERNEL[4] * v4.to_f32();
                *d = acc;
            }
        }
    };
    let threads = threads.clamp(1, 16).min(dims[2]);
    if threads == 1 {
        for (k, dst) in (lo[2]..hi[2]).zip(out.data.chunks_exact_mut(plane)) {
            blur_plane(k, dst);
        }
        return Ok(());
    }
    let per = dims[2].div_ceil(threads);
    std::thread::scope(|scope| {
        let blur_plane = &blur_plane;
        for (c, part) in out.data.chunks_mut(per * plane).enumerate() {
            scope.spawn(move || {
                let k0 = lo[2] + c * per;
                for (k, dst) in (k0..hi[2]).zip(part.chunks_exact_mut(plane)) {
                    blur_plane(k, dst);
                }
            });
        }
    });
    Ok(())
}

/// The value [`crop_blur_z_into`] gives voxel `(i, j, k)`.
pub(crate) fn blur_z_at<T: Voxel>(grid: &Grid, src: &[T], i: usize, j: usize, k: usize) -> f32 {
    z_taps(k, grid.dims()[2])
        .iter()
        .zip(Z_KERNEL)
        .map(|(&kk, w)| w * src[grid.offset(i, j, kk)].to_f32())
        .sum()
}

/// Binomial smoothing across slices (σ = 1 slice).
const Z_KERNEL: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Slices on either side of the kernel's centre.
pub(crate) const Z_HALO: usize = 1;

/// Slice indices under the kernel centred on `k`, edge slices repeated.
fn z_taps(k: usize, nz: usize) -> [usize; 5] {
    [0, 1, 2, 3, 4].map(|t| (k + t).saturating_sub(2).min(nz - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::PointMm;

    #[test]
    fn factors_coarsen_the_fine_axes_first() {
        assert_eq!(step_factors([0.977, 0.977, 3.27]), [2, 2, 1]);
        assert_eq!(step_factors([1.953, 1.953, 3.27]), [2, 2, 1]);
        assert_eq!(step_factors([3.906, 3.906, 3.27]), [2, 2, 2]);
        assert_eq!(step_factors([2.0, 2.0, 2.0]), [2, 2, 2]);
    }

    #[test]
    fn block_average_of_a_linear_ramp_is_the_ramp_at_block_centres() {
        let grid = Grid::axis_aligned([7, 4, 3], PointMm::new(10.0, 20.0, 30.0), [1.0, 1.5, 3.0]).unwrap();
        let mut src = vec![0f32; grid.len()];
        for k in 0..3 {
            for j in 0..4 {
                for i in 0..7 {
                    let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                    src[grid.offset(i, j, k)] = (2.0 * p.x - p.y + 0.5 * p.z) as f32;
                }
            }
        }
        let mut out = LevelImage {
            grid: grid.clone(),
            data: Vec::new(),
        };
        downsample_into(&grid, &src, [2, 2, 1], &mut out).unwrap();
        assert_eq!(out.grid.dims(), [3, 2, 3]);
        for k in 0..3 {
            for j in 0..2 {
                for i in 0..3 {
                    let p = out.grid.index_to_patient([i as f64, j as f64, k as f64]);
                    let want = (2.0 * p.x - p.y + 0.5 * p.z) as f32;
                    approx::assert_relative_eq!(out.data[out.grid.offset(i, j, k)], want, epsilon = 1e-4);
                }
            }
        }
    }
}
