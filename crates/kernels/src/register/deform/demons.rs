//! The demons iteration on one pyramid level, and the level images it runs on.
//!
//! Cost: an iteration is three passes over z-slabs (on up to `threads` scoped threads):
//! (1) the warp, its gradient and the per-voxel step, each slice's step then blurred in x
//! and y while it is in cache; (2) the step's z blur added to the field, the sum blurred in
//! x and y; (3) the sum's z blur written back as the field, extrapolated by the momentum
//! (the iterate itself kept in a third set of buffers). Blurs run row by row over
//! contiguous memory (the compiler vectorises them) with a padded row instead of a clamp
//! per tap, and no buffer is allocated per iteration beyond a slice or two per slab.

use super::field::{sample_clamped_gradient, sample_gradient_interior, FieldGrid};

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

/// [`par_z`] with read-only slab work: `f` gets the slab's slice range only.
pub(crate) fn par_z_read<T: Send>(
    threads: usize,
    nz: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    par_z(threads, nz, 0, [], |ks, []| f(ks))
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

/// Values accumulated per chunk in registers or L1 rather than read and written back to
/// the output once per kernel tap.
const CHUNK: usize = 128;

/// `dst[i] = init[i] + Σ_t kernel[t] · src(t)[i]`, chunk by chunk (`src(t)` is the tap's
/// input, as long as `dst`).
#[inline]
fn taps_into<'a>(dst: &mut [f32], init: Option<&[f32]>, kernel: &[f32], src: impl Fn(usize) -> &'a [f32]) {
    let mut at = 0;
    while at < dst.len() {
        let len = CHUNK.min(dst.len() - at);
        let mut buf = [0f32; CHUNK];
        let acc = &mut buf[..len];
        if let Some(a) = init {
            acc.copy_from_slice(&a[at..at + len]);
        }
        for (t, &w) in kernel.iter().enumerate() {
            for (a, v) in acc.iter_mut().zip(&src(t)[at..at + len]) {
                *a += w * v;
            }
        }
        dst[at..at + len].copy_from_slice(acc);
        at += len;
    }
}

/// Blurs one `nx × ny` slice in x then y, in place (replicated borders). `tmp` holds a
/// slice, `pad` a row plus the kernel.
fn blur_slice_xy(
    slice: &mut [f32],
    nx: usize,
    ny: usize,
    kernel: &[f32],
    tmp: &mut Vec<f32>,
    pad: &mut Vec<f32>,
) {
    let r = kernel.len() / 2;
    tmp.resize(nx * ny, 0.0);
    for (src, dst) in slice.chunks_exact(nx).zip(tmp.chunks_exact_mut(nx)) {
        if nx > 2 * r {
            // interior: shifted windows of the row itself; the ends clamp
            taps_into(&mut dst[r..nx - r], None, kernel, |t| &src[t..t + nx - 2 * r]);
            for i in (0..r).chain(nx - r..nx) {
                dst[i] = kernel
                    .iter()
                    .enumerate()
                    .map(|(t, w)| w * src[(i + t).saturating_sub(r).min(nx - 1)])
                    .sum();
            }
        } else {
            pad.resize(nx + 2 * r, 0.0);
            pad[..r].fill(src[0]);
            pad[r..r + nx].copy_from_slice(src);
            pad[r + nx..].fill(src[nx - 1]);
            let pad = &pad[..];
            taps_into(dst, None, kernel, |t| &pad[t..t + nx]);
        }
    }
    let tmp = &tmp[..];
    for (j, drow) in slice.chunks_exact_mut(nx).enumerate() {
        taps_into(drow, None, kernel, |t| {
            let jj = (j + t).saturating_sub(r).min(ny - 1);
            &tmp[jj * nx..(jj + 1) * nx]
        });
    }
}

/// `dst = add + (src blurred along z)` at slice `k` (replicated borders).
fn blur_z_slice(
    src: &[f32],
    add: Option<&[f32]>,
    k: usize,
    nz: usize,
    slice: usize,
    kernel: &[f32],
    dst: &mut [f32],
) {
    let r = kernel.len() / 2;
    taps_into(dst, add.map(|a| &a[k * slice..(k + 1) * slice]), kernel, |t| {
        let kk = (k + t).saturating_sub(r).min(nz - 1);
        &src[kk * slice..(kk + 1) * slice]
    });
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
    let [nx, ny, nz] = dims;
    let slice = nx * ny;
    par_z(threads, nz, slice, [&mut data[..]], |ks, [d]| {
        let (mut t, mut pad) = (Vec::new(), Vec::new());
        for s in d.chunks_exact_mut(slice).take(ks.len()) {
            blur_slice_xy(s, nx, ny, kernel, &mut t, &mut pad);
        }
    });
    tmp.resize(data.len(), 0.0);
    let src = &data[..];
    par_z(threads, nz, slice, [&mut tmp[..]], |ks, [d]| {
        for (k, s) in ks.zip(d.chunks_exact_mut(slice)) {
            blur_z_slice(src, None, k, nz, slice, kernel, s);
        }
    });
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
    /// [`STALL_WINDOW`] iterations (checked once half the cap has run); 0 = never.
    pub(crate) stall_fraction: f64,
    pub(crate) threads: usize,
    /// Added to the force's denominator, (HU/mm)².
    pub(crate) gradient_floor2: f32,
    /// Momentum β of the field update (0 = plain demons).
    pub(crate) momentum: f32,
}

/// Iterations over which progress is judged.
const STALL_WINDOW: usize = 4;

/// Scratch buffers reused over iterations and frames.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    du: [Vec<f32>; 3],
    sum: [Vec<f32>; 3],
    /// The last iterate without the momentum's extrapolation.
    prev: [Vec<f32>; 3],
}

/// Runs demons on one level: `u` (mm, on `fixed.grid`) is refined so that
/// `moving(x + u(x)) ≈ fixed(x)`. Returns the iterations run.
pub(crate) fn run_level(
    fixed: &LevelImage,
    moving: &LevelImage,
    u: &mut [Vec<f32>; 3],
    settings: &LevelSettings,
    s: &mut Scratch,
) -> u32 {
    let grid = fixed.grid;
    let n = grid.len();
    let h = grid.spacing_mm as f32;
    let inv_h = 1.0 / h;
    // ITK's normaliser: the mean squared voxel size makes diff²/K and |∇|² the same units
    let inv_k = 1.0 / (h * h);
    let threads = settings.threads;
    let fluid = gaussian_kernel(settings.fluid_kernel_sigma_vox);
    let diffusion = gaussian_kernel(settings.diffusion_kernel_sigma_vox);
    for d in s.du.iter_mut().chain(s.sum.iter_mut()) {
        d.clear();
        d.resize(n, 0.0);
    }
    for (p, c) in s.prev.iter_mut().zip(u.iter()) {
        p.clear();
        p.extend_from_slice(c);
    }
    let [nx, ny, nz] = grid.dims;
    let dims = grid.dims;
    let slice = nx * ny;
    let max2 = settings.max_step_mm * settings.max_step_mm;
    let top = dims.map(|n| (n - 1) as f32);
    let floor2 = settings.gradient_floor2;
    let mut history: Vec<f64> = Vec::new();
    let mut iterations = 0;
    for _ in 0..settings.iterations {
        // (1) the step, blurred in x and y per slice
        let uu = &*u;
        let [dx, dy, dz] = &mut s.du;
        let sse: f64 = par_z(
            threads,
            nz,
            slice,
            [&mut dx[..], &mut dy[..], &mut dz[..]],
            |ks, du| {
                let base = ks.start * slice;
                let [sx, sy, sz] = du;
                let (mut t, mut pad) = (Vec::new(), Vec::new());
                let mut sse = 0f64;
                for k in ks {
                    let mut slice_sse = 0f32;
                    for j in 0..ny {
                        let row = (k * ny + j) * nx;
                        for i in 0..nx {
                            let o = row + i;
                            let p = [
                                i as f32 + uu[0][o] * inv_h,
                                j as f32 + uu[1][o] * inv_h,
                                k as f32 + uu[2][o] * inv_h,
                            ];
                            let (w, g) = if (0..3).all(|a| p[a] > 0.0 && p[a] < top[a]) {
                                sample_gradient_interior(&moving.data, nx, slice, p)
                            } else {
                                sample_clamped_gradient(&moving.data, dims, p)
                            };
                            let g = g.map(|v| v * inv_h);
                            let diff = w - fixed.data[o];
                            slice_sse += diff * diff;
                            let g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2];
                            let denom = g2 + diff * diff * inv_k + floor2;
                            let scale = if denom < 1e-6 { 0.0 } else { -diff / denom };
                            let mut d = g.map(|v| v * scale);
                            let m2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                            if m2 > max2 {
                                let f = (max2 / m2).sqrt();
                                d = d.map(|v| v * f);
                            }
                            sx[o - base] = d[0];
                            sy[o - base] = d[1];
                            sz[o - base] = d[2];
                        }
                    }
                    sse += slice_sse as f64;
                    let at = k * slice - base;
                    for c in [&mut *sx, &mut *sy, &mut *sz] {
                        blur_slice_xy(&mut c[at..at + slice], nx, ny, &fluid, &mut t, &mut pad);
                    }
                }
                sse
            },
        )
        .into_iter()
        .sum();
        // (2) field plus the step's z blur, blurred in x and y
        let du = &s.du;
        let [ax, ay, az] = &mut s.sum;
        par_z(
            threads,
            nz,
            slice,
            [&mut ax[..], &mut ay[..], &mut az[..]],
            |ks, sums| {
                let base = ks.start * slice;
                let (mut t, mut pad) = (Vec::new(), Vec::new());
                for (c, dst) in sums.into_iter().enumerate() {
                    for k in ks.clone() {
                        let at = k * slice - base;
                        let d = &mut dst[at..at + slice];
                        blur_z_slice(&du[c], Some(&uu[c]), k, nz, slice, &fluid, d);
                        blur_slice_xy(d, nx, ny, &diffusion, &mut t, &mut pad);
                    }
                }
            },
        );
        // (3) the sum's z blur is the new iterate x; the field the next step starts from is
        // x + β(x − x_prev) (heavy-ball/Nesterov momentum), restarted (β = 0) when the
        // difference rose, so an overshoot is not carried on
        let mse_now = sse / n as f64;
        let beta = match history.last() {
            Some(&last) if mse_now <= last => settings.momentum,
            _ => 0.0,
        };
        let sum = &s.sum;
        let [ux, uy, uz] = u;
        let [px, py, pz] = &mut s.prev;
        par_z(
            threads,
            nz,
            slice,
            [
                &mut ux[..],
                &mut uy[..],
                &mut uz[..],
                &mut px[..],
                &mut py[..],
                &mut pz[..],
            ],
            |ks, outs| {
                let base = ks.start * slice;
                let [ux, uy, uz, px, py, pz] = outs;
                for (c, (dst, prev)) in [(ux, px), (uy, py), (uz, pz)].into_iter().enumerate() {
                    for k in ks.clone() {
                        let at = k * slice - base;
                        let d = &mut dst[at..at + slice];
                        blur_z_slice(&sum[c], None, k, nz, slice, &diffusion, d);
                        let p = &mut prev[at..at + slice];
                        if beta > 0.0 {
                            for (y, xp) in d.iter_mut().zip(p.iter_mut()) {
                                let x = *y;
                                *y = x + beta * (x - *xp);
                                *xp = x;
                            }
                        } else {
                            p.copy_from_slice(d);
                        }
                    }
                }
            },
        );
        iterations += 1;
        let mse = sse / n as f64;
        history.push(mse);
        // the first half of the cap always runs: with noise the difference can rise for an
        // iteration or two while the field is still far from its end
        if settings.stall_fraction > 0.0
            && history.len() > STALL_WINDOW
            && 2 * iterations >= settings.iterations
        {
            let before = history[history.len() - 1 - STALL_WINDOW];
            if before - mse < settings.stall_fraction * before {
                break;
            }
        }
    }
    // the result is the last iterate, not its extrapolation
    for (c, p) in u.iter_mut().zip(&s.prev) {
        c.copy_from_slice(p);
    }
    iterations
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

    #[test]
    fn blur_equals_the_direct_clamped_convolution() {
        // rows longer and shorter than the kernel (both x paths), odd sizes, two threads
        for dims in [[11usize, 4, 5], [3, 9, 7]] {
            let [nx, ny, nz] = dims;
            let k = gaussian_kernel(1.0);
            let r = (k.len() / 2) as i64;
            let n = nx * ny * nz;
            let data: Vec<f32> = (0..n).map(|o| ((o * 7919) % 101) as f32 - 50.0).collect();
            let mut fast = data.clone();
            blur(&mut fast, dims, &k, &mut Vec::new(), 2);
            let at = |i: i64, j: i64, kk: i64| {
                let c = |v: i64, m: usize| v.clamp(0, m as i64 - 1) as usize;
                data[(c(kk, nz) * ny + c(j, ny)) * nx + c(i, nx)] as f64
            };
            for z in 0..nz as i64 {
                for y in 0..ny as i64 {
                    for x in 0..nx as i64 {
                        let mut s = 0f64;
                        for (a, wa) in k.iter().enumerate() {
                            for (b, wb) in k.iter().enumerate() {
                                for (c, wc) in k.iter().enumerate() {
                                    let w = (*wa as f64) * (*wb as f64) * (*wc as f64);
                                    s += w * at(x + a as i64 - r, y + b as i64 - r, z + c as i64 - r);
                                }
                            }
                        }
                        let o = (z as usize * ny + y as usize) * nx + x as usize;
                        assert!(
                            (fast[o] as f64 - s).abs() < 1e-3,
                            "{dims:?} at {o}: {} vs {s}",
                            fast[o]
                        );
                    }
                }
            }
        }
    }
}
