//! The demons iteration on one pyramid level, and the level images it runs on.

use super::field::{sample_clamped, sample_clamped_gradient, FieldGrid};

/// A level image (fixed or moving) on a [`FieldGrid`], `(k, j, i)` row-major.
#[derive(Debug, Clone)]
pub(crate) struct LevelImage {
    pub(crate) grid: FieldGrid,
    pub(crate) data: Vec<f32>,
}

impl LevelImage {
    /// The image block-averaged 2×2×2 onto `self.grid.halved()`.
    pub(crate) fn halved(&self) -> LevelImage {
        let grid = self.grid.halved();
        let [nx, ny, _] = self.grid.dims;
        let [mx, my, mz] = grid.dims;
        let mut data = vec![0f32; grid.len()];
        for k in 0..mz {
            for j in 0..my {
                for i in 0..mx {
                    let mut s = 0f32;
                    for dk in 0..2 {
                        for dj in 0..2 {
                            let row = ((2 * k + dk) * ny + 2 * j + dj) * nx + 2 * i;
                            s += self.data[row] + self.data[row + 1];
                        }
                    }
                    data[(k * my + j) * mx + i] = s / 8.0;
                }
            }
        }
        LevelImage { grid, data }
    }
}

/// Runs `f` on z-slabs of the outputs `outs` (each `nz` slices of `slice` values) over up
/// to `threads` scoped threads; `f` gets the slab's slice range and its parts of the outputs.
pub(crate) fn par_z<const N: usize, T: Send>(
    threads: usize,
    nz: usize,
    slice: usize,
    outs: [&mut [f32]; N],
    f: impl Fn(std::ops::Range<usize>, [&mut [f32]; N]) -> T + Sync,
) -> Vec<T> {
    let t = threads.clamp(1, nz.max(1));
    if t == 1 {
        return vec![f(0..nz, outs)];
    }
    let per = nz.div_ceil(t);
    let mut iters = outs.map(|o| o.chunks_mut(per * slice));
    let mut parts = Vec::with_capacity(t);
    for c in 0..t {
        let k0 = c * per;
        if k0 >= nz {
            break;
        }
        let arr: [&mut [f32]; N] = std::array::from_fn(|i| iters[i].next().expect("one chunk per slab"));
        parts.push((k0..(k0 + per).min(nz), arr));
    }
    let f = &f;
    std::thread::scope(|scope| {
        let mut rest = parts.into_iter();
        let (r0, a0) = rest.next().expect("at least one slab");
        let handles: Vec<_> = rest.map(|(r, a)| scope.spawn(move || f(r, a))).collect();
        let mut out = vec![f(r0, a0)];
        out.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("slab thread panicked")),
        );
        out
    })
}

/// Normalised Gaussian weights for `sigma` voxels, radius ⌈3σ⌉.
pub(crate) fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let r = (3.0 * sigma).ceil() as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| (v / s) as f32).collect()
}

/// Separable Gaussian blur of `data` (replicated borders); `tmp` is scratch and the two
/// vectors may trade buffers.
pub(crate) fn blur(
    data: &mut Vec<f32>,
    dims: [usize; 3],
    kernel: &[f32],
    tmp: &mut Vec<f32>,
    threads: usize,
) {
    if kernel.len() == 1 {
        return;
    }
    let r = kernel.len() / 2;
    let [nx, ny, nz] = dims;
    let slice = nx * ny;
    tmp.clear();
    tmp.resize(data.len(), 0.0);
    // x: along each row, the borders clamped, the interior without
    {
        let src = &data[..];
        par_z(threads, nz, slice, [&mut tmp[..]], |ks, [dst]| {
            let base = ks.start * slice;
            for row in ks.start * ny..ks.end * ny {
                let s = &src[row * nx..(row + 1) * nx];
                let d = &mut dst[row * nx - base..(row + 1) * nx - base];
                for (i, dv) in d.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    if i >= r && i + r < nx {
                        for (w, v) in kernel.iter().zip(&s[i - r..=i + r]) {
                            acc += w * v;
                        }
                    } else {
                        for (t, w) in kernel.iter().enumerate() {
                            let x = (i + t).saturating_sub(r).min(nx - 1);
                            acc += w * s[x];
                        }
                    }
                    *dv = acc;
                }
            }
        });
    }
    // y: whole rows at a time, so the inner loop runs over contiguous x
    {
        let src = &tmp[..];
        par_z(threads, nz, slice, [&mut data[..]], |ks, [dst]| {
            let base = ks.start * slice;
            for k in ks {
                for j in 0..ny {
                    let d0 = k * slice + j * nx - base;
                    let drow = &mut dst[d0..d0 + nx];
                    drow.fill(0.0);
                    for (t, w) in kernel.iter().enumerate() {
                        let jj = (j + t).saturating_sub(r).min(ny - 1);
                        let s0 = k * slice + jj * nx;
                        for (d, v) in drow.iter_mut().zip(&src[s0..s0 + nx]) {
                            *d += w * v;
                        }
                    }
                }
            }
        });
    }
    // z: whole slices at a time
    {
        let src = &data[..];
        par_z(threads, nz, slice, [&mut tmp[..]], |ks, [dst]| {
            let base = ks.start * slice;
            for k in ks {
                let d0 = k * slice - base;
                let dslice = &mut dst[d0..d0 + slice];
                dslice.fill(0.0);
                for (t, w) in kernel.iter().enumerate() {
                    let kk = (k + t).saturating_sub(r).min(nz - 1);
                    for (d, v) in dslice.iter_mut().zip(&src[kk * slice..(kk + 1) * slice]) {
                        *d += w * v;
                    }
                }
            }
        });
    }
    std::mem::swap(data, tmp);
}

/// Per-level demons settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelSettings {
    pub(crate) iterations: u32,
    /// Largest update per iteration, mm.
    pub(crate) max_step_mm: f32,
    pub(crate) fluid_kernel_sigma_vox: f64,
    pub(crate) diffusion_kernel_sigma_vox: f64,
    /// Stop when the mean squared difference fell by less than this fraction over the last
    /// [`STALL_WINDOW`] iterations (checked once half the cap has run).
    pub(crate) stall_fraction: f64,
    pub(crate) threads: usize,
    /// Added to the force's denominator, (HU/mm)².
    pub(crate) gradient_floor2: f32,
}

/// Iterations over which progress is judged.
const STALL_WINDOW: usize = 4;

/// Scratch buffers reused over iterations and frames.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    warped: Vec<f32>,
    grad_w: [Vec<f32>; 3],
    du: [Vec<f32>; 3],
    tmp: Vec<f32>,
}

/// Runs symmetric-forces demons on one level: `u` (mm, on `fixed.grid`) is refined so that
/// `moving(x + u(x)) ≈ fixed(x)`. Returns the iterations run and the final mean squared
/// difference.
pub(crate) fn run_level(
    fixed: &LevelImage,
    moving: &LevelImage,
    u: &mut [Vec<f32>; 3],
    settings: &LevelSettings,
    s: &mut Scratch,
) -> (u32, f64) {
    let grid = fixed.grid;
    let n = grid.len();
    let h = grid.spacing_mm as f32;
    let inv_h = 1.0 / h;
    // ITK's normaliser: the mean squared voxel size makes diff²/K and |∇|² the same units
    let inv_k = 1.0 / (h * h);
    let threads = settings.threads;
    let fluid = gaussian_kernel(settings.fluid_kernel_sigma_vox);
    let diffusion = gaussian_kernel(settings.diffusion_kernel_sigma_vox);
    for d in s.du.iter_mut() {
        d.clear();
        d.resize(n, 0.0);
    }
    let [nx, ny, nz] = grid.dims;
    let slice = nx * ny;
    let max2 = settings.max_step_mm * settings.max_step_mm;
    let floor2 = settings.gradient_floor2;
    let mut history: Vec<f64> = Vec::new();
    let mut iterations = 0;
    for _ in 0..settings.iterations {
        warp_with_gradient(moving, u, inv_h, grid.dims, &mut s.warped, &mut s.grad_w, threads);
        let warped = &s.warped;
        let grad_w = &s.grad_w;
        let [dx, dy, dz] = &mut s.du;
        let sse: f64 = par_z(
            threads,
            nz,
            slice,
            [&mut dx[..], &mut dy[..], &mut dz[..]],
            |ks, du| {
                let base = ks.start * slice;
                let [ux, uy, uz] = du;
                let mut sse = 0f64;
                for o in ks.start * slice..ks.end * slice {
                    let diff = warped[o] - fixed.data[o];
                    sse += (diff * diff) as f64;
                    let g = [grad_w[0][o], grad_w[1][o], grad_w[2][o]];
                    let g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2];
                    let denom = g2 + diff * diff * inv_k + floor2;
                    let scale = if denom < 1e-6 { 0.0 } else { -diff / denom };
                    let mut d = g.map(|v| v * scale);
                    let m2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                    if m2 > max2 {
                        let f = (max2 / m2).sqrt();
                        d = d.map(|v| v * f);
                    }
                    ux[o - base] = d[0];
                    uy[o - base] = d[1];
                    uz[o - base] = d[2];
                }
                sse
            },
        )
        .into_iter()
        .sum();
        iterations += 1;
        let mse = sse / n as f64;
        history.push(mse);
        for (ua, du) in u.iter_mut().zip(s.du.iter_mut()) {
            blur(du, grid.dims, &fluid, &mut s.tmp, threads);
            for (uo, d) in ua.iter_mut().zip(du.iter()) {
                *uo += d;
            }
            blur(ua, grid.dims, &diffusion, &mut s.tmp, threads);
        }
        // the first half of the cap always runs: with noise the difference can rise for an
        // iteration or two while the field is still far from its end
        if history.len() > STALL_WINDOW && 2 * iterations >= settings.iterations {
            let before = history[history.len() - 1 - STALL_WINDOW];
            if before - mse < settings.stall_fraction * before {
                break;
            }
        }
    }
    warp(moving, u, inv_h, grid.dims, &mut s.warped, threads);
    let sse: f64 = s
        .warped
        .iter()
        .zip(&fixed.data)
        .map(|(w, f)| ((w - f) * (w - f)) as f64)
        .sum();
    (iterations, sse / n.max(1) as f64)
}

/// `out(x) = moving(x + u(x))` and its exact gradient with respect to `u(x)`, per mm.
pub(crate) fn warp_with_gradient(
    moving: &LevelImage,
    u: &[Vec<f32>; 3],
    inv_h: f32,
    dims: [usize; 3],
    out: &mut Vec<f32>,
    grad: &mut [Vec<f32>; 3],
    threads: usize,
) {
    let [nx, ny, nz] = dims;
    let n = nx * ny * nz;
    out.resize(n, 0.0);
    for g in grad.iter_mut() {
        g.resize(n, 0.0);
    }
    let [gx, gy, gz] = grad;
    par_z(
        threads,
        nz,
        nx * ny,
        [&mut out[..], &mut gx[..], &mut gy[..], &mut gz[..]],
        |ks, outs| {
            let [dst, gx, gy, gz] = outs;
            let base = ks.start * nx * ny;
            for k in ks {
                for j in 0..ny {
                    for i in 0..nx {
                        let o = (k * ny + j) * nx + i;
                        let p = [
                            i as f32 + u[0][o] * inv_h,
                            j as f32 + u[1][o] * inv_h,
                            k as f32 + u[2][o] * inv_h,
                        ];
                        let (v, g) = sample_clamped_gradient(&moving.data, dims, p);
                        dst[o - base] = v;
                        gx[o - base] = g[0] * inv_h;
                        gy[o - base] = g[1] * inv_h;
                        gz[o - base] = g[2] * inv_h;
                    }
                }
            }
        },
    );
}

/// `out(x) = moving(x + u(x))` on the level grid.
pub(crate) fn warp(
    moving: &LevelImage,
    u: &[Vec<f32>; 3],
    inv_h: f32,
    dims: [usize; 3],
    out: &mut Vec<f32>,
    threads: usize,
) {
    let [nx, ny, nz] = dims;
    out.resize(nx * ny * nz, 0.0);
    par_z(threads, nz, nx * ny, [&mut out[..]], |ks, [dst]| {
        let base = ks.start * nx * ny;
        for k in ks {
            for j in 0..ny {
                for i in 0..nx {
                    let o = (k * ny + j) * nx + i;
                    let p = [
                        i as f32 + u[0][o] * inv_h,
                        j as f32 + u[1][o] * inv_h,
                        k as f32 + u[2][o] * inv_h,
                    ];
                    dst[o - base] = sample_clamped(&moving.data, dims, p);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_a_constant_and_spreads_a_spike_as_a_gaussian() {
        let dims = [9, 9, 9];
        let k = gaussian_kernel(1.0);
        let mut tmp = Vec::new();
        let mut c = vec![3.0f32; 729];
        blur(&mut c, dims, &k, &mut tmp, 2);
        assert!(c.iter().all(|v| (v - 3.0).abs() < 1e-5));
        let mut spike = vec![0f32; 729];
        spike[4 * 81 + 4 * 9 + 4] = 1.0;
        blur(&mut spike, dims, &k, &mut tmp, 1);
        let centre = spike[4 * 81 + 4 * 9 + 4];
        let side = spike[4 * 81 + 4 * 9 + 5];
        // separable unit Gaussian: ratio of neighbour to centre is e^{-1/2}
        assert!((side / centre - (-0.5f32).exp()).abs() < 1e-3);
        assert!((spike.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
}
