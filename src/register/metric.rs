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

use nalgebra::{Matrix3, Matrix6, Vector3, Vector6};

use crate::geometry::{Grid, RigidTransform};
use crate::units::PointMm;
use crate::volume::Voxel;

/// Fixed-image samples of one pyramid level.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    /// Patient position minus the rotation centre, mm.
    pub(crate) rel_mm: Vec<[f32; 3]>,
    /// Fixed intensity, HU.
    pub(crate) value: Vec<f32>,
}

impl Samples {
    pub(crate) fn len(&self) -> usize {
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

/// Trilinear value and index-space gradient at continuous index `u`; `None` outside the
/// voxel-centre box. Every axis must have at least two voxels.
#[inline(always)]
fn sample_with_gradient<T: Voxel>(data: &[T], dims: [usize; 3], u: [f64; 3]) -> Option<(f32, [f32; 3])> {
    let [nx, ny, nz] = dims;
    if !(u[0] >= 0.0
        && u[1] >= 0.0
        && u[2] >= 0.0
        && u[0] <= (nx - 1) as f64
        && u[1] <= (ny - 1) as f64
        && u[2] <= (nz - 1) as f64)
    {
        return None;
    }
    let bx = (u[0] as usize).min(nx - 2);
    let by = (u[1] as usize).min(ny - 2);
    let bz = (u[2] as usize).min(nz - 2);
    let fx = (u[0] - bx as f64) as f32;
    let fy = (u[1] - by as f64) as f32;
    let fz = (u[2] - bz as f64) as f32;
    let sy = nx;
    let sz = nx * ny;
    let o = bz * sz + by * sy + bx;
    let c = data.get(o..o + sz + sy + 2)?;
    let c000 = c[0].to_f32();
    let c100 = c[1].to_f32();
    let c010 = c[sy].to_f32();
    let c110 = c[sy + 1].to_f32();
    let c001 = c[sz].to_f32();
    let c101 = c[sz + 1].to_f32();
    let c011 = c[sz + sy].to_f32();
    let c111 = c[sz + sy + 1].to_f32();
    // x-interpolated edges
    let e00 = c000 + (c100 - c000) * fx;
    let e10 = c010 + (c110 - c010) * fx;
    let e01 = c001 + (c101 - c001) * fx;
    let e11 = c011 + (c111 - c011) * fx;
    let f0 = e00 + (e10 - e00) * fy;
    let f1 = e01 + (e11 - e01) * fy;
    let v = f0 + (f1 - f0) * fz;
    let dz = f1 - f0;
    let dy = (e10 - e00) * (1.0 - fz) + (e11 - e01) * fz;
    let d0 = (c100 - c000) + ((c110 - c010) - (c100 - c000)) * fy;
    let d1 = (c101 - c001) + ((c111 - c011) - (c101 - c001)) * fy;
    let dx = d0 + (d1 - d0) * fz;
    Some((v, [dx, dy, dz]))
}

/// The per-evaluation geometry: everything that depends on `T` but not on the sample.
struct Mapping {
    /// `P·R`: relative fixed position → moving index displacement.
    a: Matrix3<f64>,
    /// `(P·R)ᵀ`: moving index gradient → gradient in the fixed frame, `Rᵀ·∇M`.
    at: Matrix3<f64>,
    /// Moving index of `T(c)`.
    b: Vector3<f64>,
}

impl Mapping {
    fn new(t: &RigidTransform, centre_mm: &PointMm, moving: &Grid) -> Self {
        let p = moving.patient_to_index_matrix();
        let a = p * t.rotation.matrix();
        Mapping {
            a,
            at: a.transpose(),
            b: p * (t.apply(centre_mm) - moving.origin_mm()),
        }
    }
}

/// Sums the metric (and, with `gradient`, the normal equations) over `samples[range]`.
fn accumulate_range<T: Voxel>(
    samples: &Samples,
    range: std::ops::Range<usize>,
    data: &[T],
    dims: [usize; 3],
    map: &Mapping,
    gradient: bool,
) -> Accum {
    let mut acc = Accum::default();
    let (a, b, at) = (&map.a, &map.b, &map.at);
    for s in range {
        let x = samples.rel_mm[s];
        let x = Vector3::new(x[0] as f64, x[1] as f64, x[2] as f64);
        let u = a * x + b;
        let Some((m, gi)) = sample_with_gradient(data, dims, [u.x, u.y, u.z]) else {
            continue;
        };
        let f = samples.value[s];
        let e = (m - f) as f64;
        let (f, m) = (f as f64, m as f64);
        acc.n += 1;
        acc.ssd += e * e;
        acc.sf += f;
        acc.sm += m;
        acc.sff += f * f;
        acc.smm += m * m;
        acc.sfm += f * m;
        if gradient {
            // In the fixed frame: (R·x) × ∇M = R·(x × Rᵀ∇M), so sum with g' = Rᵀ∇M and
            // rotate the sums once afterwards (`rotate_to_patient`) instead of per sample.
            let gf = at * Vector3::new(gi[0] as f64, gi[1] as f64, gi[2] as f64);
            let jw = x.cross(&gf);
            let j = [jw.x, jw.y, jw.z, gf.x, gf.y, gf.z];
            let mut o = 0;
            for p in 0..6 {
                acc.g[p] += j[p] * e;
                for q in p..6 {
                    acc.h[o] += j[p] * j[q];
                    o += 1;
                }
            }
        }
    }
    acc
}

/// Evaluates the metric over all samples, splitting the work over `threads` scoped threads.
pub(crate) fn evaluate<T: Voxel + Sync>(
    samples: &Samples,
    data: &[T],
    grid: &Grid,
    t: &RigidTransform,
    centre_mm: &PointMm,
    gradient: bool,
    threads: usize,
) -> Accum {
    let map = Mapping::new(t, centre_mm, grid);
    let mut acc = evaluate_with(samples, data, grid, &map, gradient, threads);
    acc.rotation = *t.rotation.matrix();
    acc
}

fn evaluate_with<T: Voxel + Sync>(
    samples: &Samples,
    data: &[T],
    grid: &Grid,
    map: &Mapping,
    gradient: bool,
    threads: usize,
) -> Accum {
    let dims = grid.dims();
    let n = samples.len();
    let threads = threads.clamp(1, 16);
    if threads == 1 || n < 4096 {
        return accumulate_range(samples, 0..n, data, dims, map, gradient);
    }
    let chunk = n.div_ceil(threads);
    let mut total = Accum::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                let range = (t * chunk).min(n)..((t + 1) * chunk).min(n);
                scope.spawn(move || accumulate_range(samples, range, data, dims, map, gradient))
            })
            .collect();
        total = accumulate_range(samples, 0..chunk.min(n), data, dims, map, gradient);
        for h in handles {
            // a worker cannot panic on valid indices; fall back to a serial sum if one did
            match h.join() {
                Ok(part) => total.merge(&part),
                Err(_) => {
                    total = accumulate_range(samples, 0..n, data, dims, map, gradient);
                    break;
                }
            }
        }
    });
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trilinear_gradient_matches_finite_differences() {
        let dims = [4, 3, 3];
        let data: Vec<f32> = (0..36).map(|v| ((v * 37) % 11) as f32 * 10.0).collect();
        let u = [1.3, 0.6, 1.2];
        let (v, g) = sample_with_gradient(&data, dims, u).unwrap();
        let h = 1e-3;
        for a in 0..3 {
            let mut up = u;
            up[a] += h;
            let (v1, _) = sample_with_gradient(&data, dims, up).unwrap();
            approx::assert_relative_eq!((v1 - v) / h as f32, g[a], epsilon = 0.05);
        }
        assert!(sample_with_gradient(&data, dims, [3.01, 0.0, 0.0]).is_none());
        assert!(sample_with_gradient(&data, dims, [3.0, 2.0, 2.0]).is_some());
    }
}
