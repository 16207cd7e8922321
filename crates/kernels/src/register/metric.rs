//! The mean-squared-difference metric, its Gauss–Newton normal equations, and NCC.
//!
//! For fixed samples `x` (positions relative to the rotation centre `c`, values `F(x)`) and
//! the current transform `T`, each sample contributes the residual `e = M(T(x)) − F(x)` and
//! the Jacobian row of a left-composed increment `Δ(y) = exp(δω)·(y − T(c)) + T(c) + δt`:
//!
//! ```text
//! ∂M(Δ(T(x)))/∂(δω, δt) at 0 = ( (R·x) × ∇M(y) ,  ∇M(y) ),   y = T(x), R·x = y − T(c)
//! ```
//!
//! `∇M` is the exact gradient of the trilinear interpolant (from the same eight voxels as
//! the value), so the normal equations are those of the very function being minimised and no
//! gradient volume has to be built per frame. Samples whose mapped point leaves the moving
//! volume do not count; the mean is over the samples that do.
//!
//! # Speed
//!
//! This sum is where registration spends its time. Samples are stored structure-of-arrays
//! and processed [`LANES`] at a time: map and bounds-test all lanes, gather their eight
//! voxels, then interpolate, form the Jacobian and accumulate the 21 unique `JᵀJ` terms on
//! whole lanes, which the compiler turns into SIMD. Outside samples stay in the lane with
//! weight 0 (their voxel index clamped) instead of branching. Per-sample maths is `f32`
//! (positions ≤ a few hundred mm, HU ≤ 4 digits: rounding ~1e-5 mm); the lane sums are
//! `f32` over [`BLOCK_STEPS`] steps and `f64` beyond, so rounding does not grow with the
//! sample count.

use nalgebra::{Matrix3, Matrix6, Vector6};
use std::sync::atomic::{AtomicUsize, Ordering};

use wide::{f32x8, CmpGe, CmpLe};

use crate::geometry::{Grid, RigidTransform};
use crate::units::PointMm;

/// Samples per kernel step: the per-sample maths runs on arrays of this many lanes so the
/// compiler can keep it in SIMD registers.
pub(crate) const LANES: usize = 8;

/// Kernel steps summed in `f32` before the partial sums go into the `f64` totals; short
/// enough that `f32` rounding stays far below the noise of the sums (≤ 64 terms a lane).
const BLOCK_STEPS: usize = 64;

/// Fixed-image samples of one pyramid level, structure-of-arrays in whole lanes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    /// Patient position minus the rotation centre, mm, one array per axis.
    x_mm: Vec<f32x8>,
    y_mm: Vec<f32x8>,
    z_mm: Vec<f32x8>,
    /// Fixed intensity, HU.
    value: Vec<f32x8>,
    /// 1 for a real sample, 0 for the padding after the last one.
    weight: Vec<f32x8>,
    len: usize,
}

impl Samples {
    /// Samples from (position relative to the rotation centre in mm, fixed value) pairs.
    pub(crate) fn new(points: impl IntoIterator<Item = ([f32; 3], f32)>) -> Self {
        let mut s = Samples::default();
        let mut lane = [[0f32; LANES]; 5];
        let mut l = 0;
        let flush = |s: &mut Samples, lane: &[[f32; LANES]; 5]| {
            s.x_mm.push(f32x8::from(lane[0]));
            s.y_mm.push(f32x8::from(lane[1]));
            s.z_mm.push(f32x8::from(lane[2]));
            s.value.push(f32x8::from(lane[3]));
            s.weight.push(f32x8::from(lane[4]));
        };
        for (rel_mm, value) in points {
            lane[0][l] = rel_mm[0];
            lane[1][l] = rel_mm[1];
            lane[2][l] = rel_mm[2];
            lane[3][l] = value;
            lane[4][l] = 1.0;
            s.len += 1;
            l += 1;
            if l == LANES {
                flush(&mut s, &lane);
                l = 0;
            }
        }
        if l > 0 {
            // padding: the centre, weight 0
            for v in &mut lane {
                v[l..].fill(0.0);
            }
            flush(&mut s, &lane);
        }
        s
    }

    /// Real samples (without padding).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The samples split by octant of their position about the rotation centre (index bit 0:
    /// x ≥ 0, bit 1: y ≥ 0, bit 2: z ≥ 0), each with its mean relative position, mm.
    pub(crate) fn octants(&self) -> Vec<(Samples, [f64; 3])> {
        let mut parts: Vec<Vec<([f32; 3], f32)>> = vec![Vec::new(); 8];
        for step in 0..self.steps() {
            let (x, y, z) = (
                self.x_mm[step].to_array(),
                self.y_mm[step].to_array(),
                self.z_mm[step].to_array(),
            );
            let (v, w) = (self.value[step].to_array(), self.weight[step].to_array());
            for l in 0..LANES {
                if w[l] > 0.0 {
                    let o = usize::from(x[l] >= 0.0)
                        | usize::from(y[l] >= 0.0) << 1
                        | usize::from(z[l] >= 0.0) << 2;
                    parts[o].push(([x[l], y[l], z[l]], v[l]));
                }
            }
        }
        parts
            .into_iter()
            .map(|p| {
                let n = p.len().max(1) as f64;
                let mean = p.iter().fold([0.0; 3], |m, (r, _)| {
                    [
                        m[0] + f64::from(r[0]),
                        m[1] + f64::from(r[1]),
                        m[2] + f64::from(r[2]),
                    ]
                });
                let mean = mean.map(|v| v / n);
                (Samples::new(p), mean)
            })
            .collect()
    }

    /// Kernel steps of [`LANES`] samples.
    fn steps(&self) -> usize {
        self.value.len()
    }
}

/// Sums over the overlapping samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accum {
    /// Upper triangle of JᵀJ, row-major.
    h: [f64; 21],
    g: [f64; 6],
    pub(crate) ssd: f64,
    pub(crate) n: usize,
    sf: f64,
    sm: f64,
    sff: f64,
    smm: f64,
    sfm: f64,
    /// Rotation of the transform evaluated.
    rotation: Matrix3<f64>,
}

impl Default for Accum {
    fn default() -> Self {
        Accum {
            h: [0.0; 21],
            g: [0.0; 6],
            ssd: 0.0,
            n: 0,
            sf: 0.0,
            sm: 0.0,
            sff: 0.0,
            smm: 0.0,
            sfm: 0.0,
            rotation: Matrix3::identity(),
        }
    }
}

impl Accum {
    /// JᵀJ and Jᵀe in patient axes (rotation block first).
    pub(crate) fn normal_equations(&self) -> (Matrix6<f64>, Vector6<f64>) {
        let (h, g) = self.normal_equations_fixed_frame();
        let mut b = Matrix6::zeros();
        b.fixed_view_mut::<3, 3>(0, 0).copy_from(&self.rotation);
        b.fixed_view_mut::<3, 3>(3, 3).copy_from(&self.rotation);
        (b * h * b.transpose(), b * g)
    }

    fn merge(&mut self, o: &Accum) {
        for (a, b) in self.h.iter_mut().zip(o.h.iter()) {
            *a += b;
        }
        for (a, b) in self.g.iter_mut().zip(o.g.iter()) {
            *a += b;
        }
        self.ssd += o.ssd;
        self.n += o.n;
        self.sf += o.sf;
        self.sm += o.sm;
        self.sff += o.sff;
        self.smm += o.smm;
        self.sfm += o.sfm;
    }

    /// Mean squared difference, HU²; infinite when nothing overlaps.
    pub(crate) fn mse(&self) -> f64 {
        if self.n == 0 {
            f64::INFINITY
        } else {
            self.ssd / self.n as f64
        }
    }

    /// Normalized cross-correlation of fixed and moving over the overlap; 0 when either is flat.
    pub(crate) fn ncc(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let n = self.n as f64;
        let cov = self.sfm - self.sf * self.sm / n;
        let vf = self.sff - self.sf * self.sf / n;
        let vm = self.smm - self.sm * self.sm / n;
        if vf <= 0.0 || vm <= 0.0 {
            return 0.0;
        }
        (cov / (vf * vm).sqrt()).clamp(-1.0, 1.0)
    }

    /// JᵀJ and Jᵀe as nalgebra types (rotation block first), in the fixed frame; the patient
    /// frame's are `B·H·Bᵀ` and `B·g` with `B = diag(R, R)`.
    pub(crate) fn normal_equations_fixed_frame(&self) -> (Matrix6<f64>, Vector6<f64>) {
        let mut h = Matrix6::zeros();
        let mut o = 0;
        for r in 0..6 {
            for c in r..6 {
                h[(r, c)] = self.h[o];
                h[(c, r)] = self.h[o];
                o += 1;
            }
        }
        (h, Vector6::from_column_slice(&self.g))
    }
}

/// The per-evaluation geometry: everything that depends on `T` but not on the sample.
struct Mapping {
    /// `P·R`, row-major: relative fixed position → moving index displacement.
    a: [[f32x8; 3]; 3],
    /// Moving index of `T(c)`.
    b: [f32x8; 3],
    /// Largest valid continuous index per axis (`n − 1`).
    max: [f32x8; 3],
    /// Largest base voxel per axis (`n − 2`), so the 2×2×2 neighbourhood stays inside.
    max_base: [f32x8; 3],
    /// Voxel strides of the moving image along j and k.
    stride_y: usize,
    stride_z: usize,
}

impl Mapping {
    fn new(t: &RigidTransform, centre_mm: &PointMm, moving: &Grid) -> Self {
        let p = moving.patient_to_index_matrix();
        let a = p * t.rotation.matrix();
        let b = p * (t.apply(centre_mm) - moving.origin_mm());
        let dims = moving.dims();
        Mapping {
            a: [0, 1, 2].map(|r| [0, 1, 2].map(|c| f32x8::splat(a[(r, c)] as f32))),
            b: [0, 1, 2].map(|r| f32x8::splat(b[r] as f32)),
            max: dims.map(|n| f32x8::splat(n as f32 - 1.0)),
            max_base: dims.map(|n| f32x8::splat(n as f32 - 2.0)),
            stride_y: dims[0],
            stride_z: dims[0] * dims[1],
        }
    }
}

/// Per-lane `f32` partial sums of one block.
struct Lanes {
    h: [f32x8; 21],
    g: [f32x8; 6],
    /// n, ssd, sf, sm, sff, smm, sfm
    s: [f32x8; 7],
}

impl Lanes {
    fn zero() -> Self {
        Lanes {
            h: [f32x8::ZERO; 21],
            g: [f32x8::ZERO; 6],
            s: [f32x8::ZERO; 7],
        }
    }

    /// Adds the lanes into `acc` in `f64` and clears them.
    fn flush(&mut self, acc: &mut Accum) {
        let sum = |v: &f32x8| v.to_array().iter().map(|&x| x as f64).sum::<f64>();
        for (a, l) in acc.h.iter_mut().zip(&self.h) {
            *a += sum(l);
        }
        for (a, l) in acc.g.iter_mut().zip(&self.g) {
            *a += sum(l);
        }
        let s = self.s.each_ref().map(sum);
        acc.n += s[0].round() as usize;
        acc.ssd += s[1];
        acc.sf += s[2];
        acc.sm += s[3];
        acc.sff += s[4];
        acc.smm += s[5];
        acc.sfm += s[6];
        *self = Lanes::zero();
    }
}

/// One kernel step: the `LANES` samples of step `step` added into `lanes`.
#[inline(always)]
fn kernel_step(samples: &Samples, step: usize, data: &[f32], map: &Mapping, lanes: &mut Lanes) {
    let (Some(&x), Some(&y), Some(&z), Some(&f), Some(&w)) = (
        samples.x_mm.get(step),
        samples.y_mm.get(step),
        samples.z_mm.get(step),
        samples.value.get(step),
        samples.weight.get(step),
    ) else {
        return;
    };
    let [a0, a1, a2] = map.a;
    let u = [
        a0[0] * x + a0[1] * y + a0[2] * z + map.b[0],
        a1[0] * x + a1[1] * y + a1[2] * z + map.b[1],
        a2[0] * x + a2[1] * y + a2[2] * z + map.b[2],
    ];
    let mut inside = f32x8::splat(f32::from_bits(u32::MAX));
    let mut frac = [f32x8::ZERO; 3];
    let mut base = [[0i32; LANES]; 3];
    for a in 0..3 {
        inside &= u[a].cmp_ge(f32x8::ZERO) & u[a].cmp_le(map.max[a]);
        // clamped so an outside lane still reads valid voxels (it gets weight 0)
        let uc = u[a].fast_max(f32x8::ZERO).fast_min(map.max[a]);
        let bi = uc.fast_min(map.max_base[a]).fast_trunc_int();
        frac[a] = uc - bi.round_float();
        base[a] = bi.to_array();
    }
    let (sy, sz) = (map.stride_y, map.stride_z);
    let mut valid = [1f32; LANES];
    let cells: [&[f32]; LANES] = std::array::from_fn(|l| {
        let o = base[2][l] as usize * sz + base[1][l] as usize * sy + base[0][l] as usize;
        // in range by construction (base ≤ n − 2 per axis, data length checked by the caller)
        data.get(o..o + sz + sy + 2).unwrap_or_else(|| {
            valid[l] = 0.0;
            &[]
        })
    });
    // eight lanes built straight from the loads (no store-and-reload through memory);
    // pairs along x are adjacent, so each pair is one 8-byte load
    let pair = |d: usize| {
        let p: [[f32; 2]; LANES] = cells.map(|c| match c.get(d..d + 2) {
            Some(&[a, b]) => [a, b],
            _ => [0.0; 2],
        });
        (f32x8::from(p.map(|v| v[0])), f32x8::from(p.map(|v| v[1])))
    };
    let (c000, c100) = pair(0);
    let (c010, c110) = pair(sy);
    let (c001, c101) = pair(sz);
    let (c011, c111) = pair(sz + sy);
    let w = inside.blend(w, f32x8::ZERO) * f32x8::from(valid);
    let [fx, fy, fz] = frac;
    let dx00 = c100 - c000;
    let dx10 = c110 - c010;
    let dx01 = c101 - c001;
    let dx11 = c111 - c011;
    let e00 = c000 + dx00 * fx;
    let e10 = c010 + dx10 * fx;
    let e01 = c001 + dx01 * fx;
    let e11 = c011 + dx11 * fx;
    let f0 = e00 + (e10 - e00) * fy;
    let f1 = e01 + (e11 - e01) * fy;
    let m = f0 + (f1 - f0) * fz;
    let gz = (f1 - f0) * w;
    let gy = ((e10 - e00) + ((e11 - e01) - (e10 - e00)) * fz) * w;
    let d0 = dx00 + (dx10 - dx00) * fy;
    let d1 = dx01 + (dx11 - dx01) * fy;
    let gx = (d0 + (d1 - d0) * fz) * w;
    // In the fixed frame: (R·x) × ∇M = R·(x × Rᵀ∇M), so sum with g' = Rᵀ∇M = (P·R)ᵀ∇ᵤM
    // and rotate the sums once afterwards (`normal_equations`) instead of per sample.
    let gf = [
        a0[0] * gx + a1[0] * gy + a2[0] * gz,
        a0[1] * gx + a1[1] * gy + a2[1] * gz,
        a0[2] * gx + a1[2] * gy + a2[2] * gz,
    ];
    let j = [
        y * gf[2] - z * gf[1],
        z * gf[0] - x * gf[2],
        x * gf[1] - y * gf[0],
        gf[0],
        gf[1],
        gf[2],
    ];
    let e = m - f;
    let mut o = 0;
    for p in 0..6 {
        lanes.g[p] += j[p] * e;
        for q in p..6 {
            lanes.h[o] += j[p] * j[q];
            o += 1;
        }
    }
    let (fw, mw) = (f * w, m * w);
    let s = &mut lanes.s;
    s[0] += w;
    s[1] += e * e * w;
    s[2] += fw;
    s[3] += mw;
    s[4] += fw * f;
    s[5] += mw * m;
    s[6] += fw * m;
}

/// Sums the metric and the normal equations over kernel steps `steps`.
fn accumulate_steps(samples: &Samples, steps: std::ops::Range<usize>, data: &[f32], map: &Mapping) -> Accum {
    let mut acc = Accum::default();
    let mut lanes = Lanes::zero();
    let mut start = steps.start;
    while start < steps.end {
        let end = (start + BLOCK_STEPS).min(steps.end);
        for step in start..end {
            kernel_step(samples, step, data, map, &mut lanes);
        }
        lanes.flush(&mut acc);
        start = end;
    }
    acc
}

/// Evaluates the metric over all samples, splitting the work over `threads` scoped threads.
pub(crate) fn evaluate(
    samples: &Samples,
    data: &[f32],
    grid: &Grid,
    t: &RigidTransform,
    centre_mm: &PointMm,
    threads: usize,
) -> Accum {
    let dims = grid.dims();
    if dims.iter().any(|&n| n < 2) || data.len() < dims[0] * dims[1] * dims[2] {
        // nothing overlaps a degenerate image (callers check dims; this keeps indexing valid)
        return Accum::default();
    }
    let map = Mapping::new(t, centre_mm, grid);
    let mut acc = evaluate_with(samples, data, &map, threads);
    acc.rotation = *t.rotation.matrix();
    acc
}

/// Fewest kernel steps per thread worth a spawn.
const MIN_STEPS_PER_THREAD: usize = 512;

fn evaluate_with(samples: &Samples, data: &[f32], map: &Mapping, threads: usize) -> Accum {
    let n = samples.steps();
    let threads = threads.clamp(1, 16).min(n / MIN_STEPS_PER_THREAD).max(1);
    if threads == 1 {
        return accumulate_steps(samples, 0..n, data, map);
    }
    // Threads claim blocks from a counter rather than fixed halves, so a thread the OS
    // schedules late takes less of the work. Blocks are merged in block order, which makes
    // the sums bit-identical to the single-thread ones, whatever thread did which block.
    let blocks = n.div_ceil(BLOCK_STEPS);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= blocks {
                return done;
            }
            let steps = b * BLOCK_STEPS..((b + 1) * BLOCK_STEPS).min(n);
            done.push((b, accumulate_steps(samples, steps, data, map)));
        }
    };
    let mut parts = Vec::with_capacity(blocks);
    let complete = std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        parts.extend(work());
        let mut complete = true;
        for h in handles {
            match h.join() {
                Ok(p) => parts.extend(p),
                Err(_) => complete = false,
            }
        }
        complete
    });
    if !complete || parts.len() != blocks {
        // a worker cannot panic on valid indices; fall back to a serial sum if one did
        return accumulate_steps(samples, 0..n, data, map);
    }
    parts.sort_unstable_by_key(|(b, _)| *b);
    let mut total = Accum::default();
    for (_, part) in &parts {
        total.merge(part);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::VectorMm;
    use nalgebra::Vector3;

    /// Trilinear value and index-space gradient, straightforward `f64`; `None` outside.
    fn sample_with_gradient(data: &[f32], dims: [usize; 3], u: [f64; 3]) -> Option<(f64, [f64; 3])> {
        if (0..3).any(|a| !(u[a] >= 0.0 && u[a] <= (dims[a] - 1) as f64)) {
            return None;
        }
        let at = |i: usize, j: usize, k: usize| data[(k * dims[1] + j) * dims[0] + i] as f64;
        let b = [0, 1, 2].map(|a| (u[a] as usize).min(dims[a] - 2));
        let f = [0, 1, 2].map(|a| u[a] - b[a] as f64);
        let (mut v, mut g) = (0.0, [0.0; 3]);
        for corner in 0..8 {
            let d = [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1];
            let wt = |a: usize| if d[a] == 1 { f[a] } else { 1.0 - f[a] };
            let dw = |a: usize| if d[a] == 1 { 1.0 } else { -1.0 };
            let c = at(b[0] + d[0], b[1] + d[1], b[2] + d[2]);
            v += c * wt(0) * wt(1) * wt(2);
            g[0] += c * dw(0) * wt(1) * wt(2);
            g[1] += c * wt(0) * dw(1) * wt(2);
            g[2] += c * wt(0) * wt(1) * dw(2);
        }
        Some((v, g))
    }

    #[test]
    fn reference_gradient_matches_finite_differences() {
        let dims = [4, 3, 3];
        let data: Vec<f32> = (0..36).map(|v| ((v * 37) % 11) as f32 * 10.0).collect();
        let u = [1.3, 0.6, 1.2];
        let (v, g) = sample_with_gradient(&data, dims, u).unwrap();
        let h = 1e-6;
        for a in 0..3 {
            let mut up = u;
            up[a] += h;
            let (v1, _) = sample_with_gradient(&data, dims, up).unwrap();
            approx::assert_relative_eq!((v1 - v) / h, g[a], epsilon = 1e-3);
        }
        assert!(sample_with_gradient(&data, dims, [3.01, 0.0, 0.0]).is_none());
        assert!(sample_with_gradient(&data, dims, [3.0, 2.0, 2.0]).is_some());
    }

    /// The lane kernel against a per-sample `f64` sum of the same formulas, on an oblique
    /// grid with a rotated transform and samples partly outside the image.
    #[test]
    fn lane_kernel_matches_a_per_sample_f64_sum() {
        let dims = [23, 19, 11];
        let grid = Grid::new(
            dims,
            PointMm::new(-12.0, -9.0, -16.0),
            [1.1, 0.9, 3.0],
            *nalgebra::Rotation3::from_euler_angles(0.1, -0.05, 0.2).matrix(),
        )
        .unwrap();
        let data: Vec<f32> = (0..dims[0] * dims[1] * dims[2])
            .map(|v| (((v * 7919) % 1013) as f32 - 500.0) * 1.7)
            .collect();
        let centre = PointMm::new(1.0, -2.0, 0.5);
        // 1001 samples: not a whole number of lanes, some mapped outside
        let pts: Vec<([f32; 3], f32)> = (0..1001)
            .map(|i| {
                let i = i as f32;
                let p = [
                    (i * 0.37) % 30.0 - 15.0,
                    (i * 0.61) % 24.0 - 12.0,
                    (i * 0.23) % 40.0 - 20.0,
                ];
                (p, (i * 13.0) % 900.0 - 300.0)
            })
            .collect();
        let samples = Samples::new(pts.iter().copied());
        let t = RigidTransform::about_center(
            nalgebra::Rotation3::from_euler_angles(0.03, 0.02, -0.04),
            centre,
            VectorMm::new(0.7, -0.4, 1.1),
        );
        let got = evaluate(&samples, &data, &grid, &t, &centre, 1);
        let got2 = evaluate(&samples, &data, &grid, &t, &centre, 2);
        // more than one block per thread, so the threaded path runs; it must be bit-identical
        let many = Samples::new(
            pts.iter()
                .cycle()
                .take(20 * MIN_STEPS_PER_THREAD * LANES)
                .copied(),
        );
        let one = evaluate(&many, &data, &grid, &t, &centre, 1);
        let two = evaluate(&many, &data, &grid, &t, &centre, 2);
        assert_eq!((one.h, one.g, one.ssd, one.n), (two.h, two.g, two.ssd, two.n));
        assert_eq!(
            (one.sf, one.sm, one.sff, one.smm, one.sfm),
            (two.sf, two.sm, two.sff, two.smm, two.sfm)
        );
        assert!(one.n > 0 && one.n < many.len());

        let p2i = grid.patient_to_index_matrix();
        let a = p2i * t.rotation.matrix();
        let (mut h, mut g, mut ssd, mut n) = (Matrix6::<f64>::zeros(), Vector6::<f64>::zeros(), 0.0, 0);
        let (mut sf, mut sm) = (0.0, 0.0);
        for (p, f) in &pts {
            let x = Vector3::new(p[0] as f64, p[1] as f64, p[2] as f64);
            let y = t.apply(&(centre + x));
            let u = p2i * (y - grid.origin_mm());
            let Some((m, gi)) = sample_with_gradient(&data, dims, [u.x, u.y, u.z]) else {
                continue;
            };
            let gf = a.transpose() * Vector3::from(gi);
            let jw = x.cross(&gf);
            let j = Vector6::new(jw.x, jw.y, jw.z, gf.x, gf.y, gf.z);
            let e = m - *f as f64;
            h += j * j.transpose();
            g += j * e;
            ssd += e * e;
            sf += *f as f64;
            sm += m;
            n += 1;
        }
        assert!(n > 300 && n < 1001, "{n} samples inside");
        for acc in [&got, &got2] {
            assert_eq!(acc.n, n);
            let (hh, gg) = acc.normal_equations_fixed_frame();
            approx::assert_relative_eq!(hh, h, max_relative = 1e-4);
            approx::assert_relative_eq!(gg, g, max_relative = 1e-4, epsilon = 1e-2 * g.norm());
            approx::assert_relative_eq!(acc.ssd, ssd, max_relative = 1e-5);
            approx::assert_relative_eq!(acc.sf, sf, max_relative = 1e-5);
            approx::assert_relative_eq!(acc.sm, sm, max_relative = 1e-5);
        }
    }
}
