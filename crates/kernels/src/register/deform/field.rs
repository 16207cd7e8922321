//! The displacement field: an axis-aligned isotropic grid of vectors in patient mm, with
//! trilinear sampling, its Jacobian determinant, and its inverse.

use crate::units::{PointMm, VectorMm};

/// An axis-aligned isotropic grid in patient coordinates (the field's and the level images'
/// support). Voxel `(i, j, k)` sits at `origin_mm + spacing_mm · (i, j, k)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldGrid {
    /// Centre of voxel (0, 0, 0), patient mm.
    pub origin_mm: [f64; 3],
    /// Voxel side, mm.
    pub spacing_mm: f64,
    /// Voxels along x, y, z.
    pub dims: [usize; 3],
}

impl FieldGrid {
    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
    /// Whether the grid holds no voxel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Patient position of a voxel centre.
    #[inline]
    pub fn point(&self, i: usize, j: usize, k: usize) -> PointMm {
        let h = self.spacing_mm;
        PointMm::new(
            self.origin_mm[0] + h * i as f64,
            self.origin_mm[1] + h * j as f64,
            self.origin_mm[2] + h * k as f64,
        )
    }
    /// Continuous index of a patient point.
    #[inline]
    pub fn index_of(&self, p: &PointMm) -> [f64; 3] {
        [0, 1, 2].map(|a| (p[a] - self.origin_mm[a]) / self.spacing_mm)
    }
    /// The grid coarsened by 2×2×2 block averaging (a trailing odd voxel is dropped): the
    /// coarse voxel centre is the centroid of its block, so a patient point means the same
    /// place on both.
    pub(crate) fn halved(&self) -> FieldGrid {
        FieldGrid {
            origin_mm: self.origin_mm.map(|o| o + self.spacing_mm / 2.0),
            spacing_mm: 2.0 * self.spacing_mm,
            dims: self.dims.map(|n| n / 2),
        }
    }
}

/// The trilinear cell of continuous index `p` on `dims`, the index clamped to the grid: the
/// flat offset of its lowest corner, the offsets to its +x, +y and +z neighbours (0 along a
/// single-voxel axis) and the fractions within it. Shared by every clamped sampler here.
#[inline]
fn clamped_cell(dims: [usize; 3], p: [f32; 3]) -> (usize, [usize; 3], [f32; 3]) {
    let mut base = [0usize; 3];
    let mut frac = [0f32; 3];
    for a in 0..3 {
        let n = dims[a];
        let x = p[a].clamp(0.0, (n - 1) as f32);
        let b = (x as usize).min(n.saturating_sub(2));
        base[a] = b;
        frac[a] = x - b as f32;
    }
    let [nx, ny, nz] = dims;
    let step = [
        usize::from(nx > 1),
        if ny > 1 { nx } else { 0 },
        if nz > 1 { nx * ny } else { 0 },
    ];
    ((base[2] * ny + base[1]) * nx + base[0], step, frac)
}

/// Trilinear sample of a scalar image on `dims` at continuous index `p`, the index clamped
/// to the grid (constant extension beyond the outer voxel centres).
#[inline]
pub(crate) fn sample_clamped(data: &[f32], dims: [usize; 3], p: [f32; 3]) -> f32 {
    let (o, [dx, dy, dz], [fx, fy, fz]) = clamped_cell(dims, p);
    let c00 = data[o] + (data[o + dx] - data[o]) * fx;
    let c10 = data[o + dy] + (data[o + dy + dx] - data[o + dy]) * fx;
    let c01 = data[o + dz] + (data[o + dz + dx] - data[o + dz]) * fx;
    let c11 = data[o + dz + dy] + (data[o + dz + dy + dx] - data[o + dz + dy]) * fx;
    let c0 = c00 + (c10 - c00) * fy;
    let c1 = c01 + (c11 - c01) * fy;
    c0 + (c1 - c0) * fz
}

/// [`sample_clamped`] and the exact gradient of the same trilinear interpolant (per index
/// step; zero along an axis where the index was clamped). On a voxel boundary the gradient is
/// the one-sided slope of the cell the point falls in.
#[inline]
pub(crate) fn sample_clamped_gradient(data: &[f32], dims: [usize; 3], p: [f32; 3]) -> (f32, [f32; 3]) {
    let mut live = [1f32; 3];
    for a in 0..3 {
        if !(p[a] > 0.0 && p[a] < (dims[a] - 1) as f32) {
            live[a] = 0.0;
        }
    }
    let (o, [dx, dy, dz], [fx, fy, fz]) = clamped_cell(dims, p);
    let v000 = data[o];
    let v100 = data[o + dx];
    let v010 = data[o + dy];
    let v110 = data[o + dy + dx];
    let v001 = data[o + dz];
    let v101 = data[o + dz + dx];
    let v011 = data[o + dz + dy];
    let v111 = data[o + dz + dy + dx];
    let c00 = v000 + (v100 - v000) * fx;
    let c10 = v010 + (v110 - v010) * fx;
    let c01 = v001 + (v101 - v001) * fx;
    let c11 = v011 + (v111 - v011) * fx;
    let c0 = c00 + (c10 - c00) * fy;
    let c1 = c01 + (c11 - c01) * fy;
    let v = c0 + (c1 - c0) * fz;
    let gz = c1 - c0;
    let gy = (c10 - c00) * (1.0 - fz) + (c11 - c01) * fz;
    let dx0 = (v100 - v000) * (1.0 - fy) + (v110 - v010) * fy;
    let dx1 = (v101 - v001) * (1.0 - fy) + (v111 - v011) * fy;
    let gx = dx0 * (1.0 - fz) + dx1 * fz;
    (v, [gx * live[0], gy * live[1], gz * live[2]])
}

/// [`sample_clamped_gradient`] for a point strictly inside the grid on every axis
/// (`0 < p < n − 1`), where no clamp applies and every axis is live: the demons' common case,
/// without the per-axis clamps. `nx` and `slice` are the row and slice strides.
#[inline]
pub(crate) fn sample_gradient_interior(
    data: &[f32],
    nx: usize,
    slice: usize,
    p: [f32; 3],
) -> (f32, [f32; 3]) {
    let b = p.map(|v| v as usize);
    let [fx, fy, fz] = [0, 1, 2].map(|a| p[a] - b[a] as f32);
    let o = (b[2] * slice) + b[1] * nx + b[0];
    let c = &data[o..o + slice + nx + 2];
    let (v000, v100) = (c[0], c[1]);
    let (v010, v110) = (c[nx], c[nx + 1]);
    let (v001, v101) = (c[slice], c[slice + 1]);
    let (v011, v111) = (c[slice + nx], c[slice + nx + 1]);
    let c00 = v000 + (v100 - v000) * fx;
    let c10 = v010 + (v110 - v010) * fx;
    let c01 = v001 + (v101 - v001) * fx;
    let c11 = v011 + (v111 - v011) * fx;
    let c0 = c00 + (c10 - c00) * fy;
    let c1 = c01 + (c11 - c01) * fy;
    let v = c0 + (c1 - c0) * fz;
    let gz = c1 - c0;
    let gy = (c10 - c00) * (1.0 - fz) + (c11 - c01) * fz;
    let dx0 = (v100 - v000) * (1.0 - fy) + (v110 - v010) * fy;
    let dx1 = (v101 - v001) * (1.0 - fy) + (v111 - v011) * fy;
    let gx = dx0 * (1.0 - fz) + dx1 * fz;
    (v, [gx, gy, gz])
}

/// A displacement field `u` on a [`FieldGrid`]: the planning-CT point `x` moves to `x + u(x)`
/// (before the rigid transform, see [`DeformableRegistration`](super::DeformableRegistration)).
/// Beyond the grid the outer vectors extend unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacementField {
    grid: FieldGrid,
    /// Components along x, y, z, mm, each in `(k, j, i)` row-major order.
    u_mm: [Vec<f32>; 3],
}

impl DisplacementField {
    /// The zero field on `grid`.
    pub fn zeros(grid: FieldGrid) -> Self {
        let n = grid.len();
        DisplacementField {
            grid,
            u_mm: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
        }
    }

    /// A field sampled from `f` at every voxel centre.
    pub fn from_fn(grid: FieldGrid, mut f: impl FnMut(&PointMm) -> VectorMm) -> Self {
        let mut field = DisplacementField::zeros(grid);
        let [nx, ny, nz] = grid.dims;
        let mut o = 0;
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let v = f(&grid.point(i, j, k));
                    for a in 0..3 {
                        field.u_mm[a][o] = v[a] as f32;
                    }
                    o += 1;
                }
            }
        }
        field
    }

    /// The grid.
    pub fn grid(&self) -> &FieldGrid {
        &self.grid
    }

    /// The components (x, y, z), mm, in `(k, j, i)` row-major order.
    pub fn components_mm(&self) -> &[Vec<f32>; 3] {
        &self.u_mm
    }

    pub(crate) fn components_mut(&mut self) -> &mut [Vec<f32>; 3] {
        &mut self.u_mm
    }

    /// The displacement at a patient point (trilinear; constant beyond the grid), mm.
    pub fn displace_mm(&self, p: &PointMm) -> VectorMm {
        let idx = self.grid.index_of(p).map(|v| v as f32);
        let u = [0, 1, 2].map(|a| sample_clamped(&self.u_mm[a], self.grid.dims, idx) as f64);
        VectorMm::new(u[0], u[1], u[2])
    }

    /// `p + u(p)`.
    pub fn map_mm(&self, p: &PointMm) -> PointMm {
        p + self.displace_mm(p)
    }

    /// Largest displacement, mm.
    pub fn max_norm_mm(&self) -> f64 {
        let [ux, uy, uz] = &self.u_mm;
        let mut m = 0f32;
        for o in 0..ux.len() {
            m = m.max(ux[o] * ux[o] + uy[o] * uy[o] + uz[o] * uz[o]);
        }
        (m as f64).sqrt()
    }

    /// Smallest and largest Jacobian determinant of `x ↦ x + u(x)` over the grid (central
    /// differences inside, one-sided on the faces). A value ≤ 0 means the map folds.
    pub fn jacobian_range(&self) -> (f64, f64) {
        self.jacobian_range_threads(1)
    }

    /// [`DisplacementField::jacobian_range`] over z-slabs on up to `threads` scoped threads.
    pub fn jacobian_range_threads(&self, threads: usize) -> (f64, f64) {
        let [nx, ny, nz] = self.grid.dims;
        let h = self.grid.spacing_mm as f32;
        let stride = [1, nx, nx * ny];
        let n = [nx, ny, nz];
        // per axis and position: offsets of the difference's ends and 1 / its span
        let ends = |b: usize, i: usize| -> (usize, usize, f32) {
            if n[b] < 2 {
                (0, 0, 0.0)
            } else if i == 0 {
                (0, stride[b], 1.0 / h)
            } else if i + 1 == n[b] {
                (stride[b], 0, 1.0 / h)
            } else {
                (stride[b], stride[b], 0.5 / h)
            }
        };
        let [ux, uy, uz] = &self.u_mm;
        let parts = super::demons::par_z_read(threads, nz, |ks| {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            let mut nan = false;
            for k in ks {
                let ez = ends(2, k);
                for j in 0..ny {
                    let ey = ends(1, j);
                    let row = (k * ny + j) * nx;
                    // ∂u/∂y and ∂u/∂z at voxel o; ∂u/∂x passed in
                    let det = |o: usize, cx: [f32; 3]| {
                        let col = |(m, p, s): (usize, usize, f32)| {
                            [
                                (ux[o + p] - ux[o - m]) * s,
                                (uy[o + p] - uy[o - m]) * s,
                                (uz[o + p] - uz[o - m]) * s,
                            ]
                        };
                        let (cy, cz) = (col(ey), col(ez));
                        let d = [
                            [cx[0] + 1.0, cy[0], cz[0]],
                            [cx[1], cy[1] + 1.0, cz[1]],
                            [cx[2], cy[2], cz[2] + 1.0],
                        ];
                        d[0][0] * (d[1][1] * d[2][2] - d[1][2] * d[2][1])
                            - d[0][1] * (d[1][0] * d[2][2] - d[1][2] * d[2][0])
                            + d[0][2] * (d[1][0] * d[2][1] - d[1][1] * d[2][0])
                    };
                    let mut take = |v: f32| {
                        lo = lo.min(v);
                        hi = hi.max(v);
                        nan |= v.is_nan();
                    };
                    for i in [0, nx - 1] {
                        let (m, p, s) = ends(0, i);
                        let o = row + i;
                        take(det(
                            o,
                            [
                                (ux[o + p] - ux[o - m]) * s,
                                (uy[o + p] - uy[o - m]) * s,
                                (uz[o + p] - uz[o - m]) * s,
                            ],
                        ));
                    }
                    // the interior of the row: central differences along x, no branches
                    let sx = 0.5 / h;
                    for o in row + 1..row + nx.saturating_sub(1) {
                        take(det(
                            o,
                            [
                                (ux[o + 1] - ux[o - 1]) * sx,
                                (uy[o + 1] - uy[o - 1]) * sx,
                                (uz[o + 1] - uz[o - 1]) * sx,
                            ],
                        ));
                    }
                }
            }
            if nan {
                (f32::NAN, f32::NAN)
            } else {
                (lo, hi)
            }
        });
        let mut out = (f64::INFINITY, f64::NEG_INFINITY);
        for (lo, hi) in parts {
            if lo.is_nan() {
                return (f64::NAN, f64::NAN);
            }
            out = (out.0.min(lo as f64), out.1.max(hi as f64));
        }
        out
    }

    /// The inverse field `v` on the same grid, `v(y) = −u(y + v(y))`, by up to `iterations`
    /// of that fixed point (it converges where |∇u| < 1, which the Jacobian check demands of
    /// an accepted field; each iteration shrinks the error by about max |∇u|).
    pub fn inverse(&self, iterations: usize) -> DisplacementField {
        self.inverse_threads(iterations, 1)
    }

    /// [`DisplacementField::inverse`] over z-slabs on up to `threads` scoped threads.
    ///
    /// The fixed point is per voxel (`v(y)` depends on `v` at `y` only), so each voxel
    /// iterates on its own and stops once a step moves it less than
    /// [`INVERSE_TOLERANCE_MM`]: far from the deformation that is one or two steps, where
    /// the field bends it is up to `iterations`, and the answer is that of `iterations`
    /// whole-grid sweeps to within the tolerance.
    pub fn inverse_threads(&self, iterations: usize, threads: usize) -> DisplacementField {
        let mut v = DisplacementField::zeros(self.grid);
        let inv_h = 1.0 / self.grid.spacing_mm as f32;
        let dims = self.grid.dims;
        let [nx, ny, nz] = dims;
        let slice = nx * ny;
        let tol2 = INVERSE_TOLERANCE_MM * INVERSE_TOLERANCE_MM;
        let u = [&self.u_mm[0][..], &self.u_mm[1][..], &self.u_mm[2][..]];
        let [vx, vy, vz] = &mut v.u_mm;
        super::demons::par_z(
            threads,
            nz,
            slice,
            [&mut vx[..], &mut vy[..], &mut vz[..]],
            |ks, out| {
                let base = ks.start * slice;
                let [ox, oy, oz] = out;
                for k in ks {
                    for j in 0..ny {
                        for i in 0..nx {
                            let o = (k * ny + j) * nx + i;
                            let y = [i as f32, j as f32, k as f32];
                            let mut w = [-u[0][o], -u[1][o], -u[2][o]];
                            for _ in 0..iterations {
                                let p = [0, 1, 2].map(|a| y[a] + w[a] * inv_h);
                                let s = sample3_clamped(u, dims, p);
                                let next = s.map(|c| -c);
                                let step2 = (0..3).map(|a| (next[a] - w[a]) * (next[a] - w[a])).sum::<f32>();
                                w = next;
                                if step2 < tol2 {
                                    break;
                                }
                            }
                            ox[o - base] = w[0];
                            oy[o - base] = w[1];
                            oz[o - base] = w[2];
                        }
                    }
                }
            },
        );
        v
    }

    /// Largest `|u(x) + v(x + u(x))|` over voxels at least `border` voxels inside the grid
    /// whose image `x + u(x)` stays that far inside too: how far `v` is from `u`'s inverse, mm.
    pub fn inverse_error_mm(&self, v: &DisplacementField, border: usize) -> f64 {
        self.inverse_error_mm_threads(v, border, 1)
    }

    /// [`DisplacementField::inverse_error_mm`] over z-slabs on up to `threads` threads.
    pub fn inverse_error_mm_threads(&self, v: &DisplacementField, border: usize, threads: usize) -> f64 {
        let [nx, ny, nz] = self.grid.dims;
        let inv_h = 1.0 / self.grid.spacing_mm as f32;
        let b = border as f32;
        let top = [nx, ny, nz].map(|n| n as f32 - 1.0 - b);
        let vs = [&v.u_mm[0][..], &v.u_mm[1][..], &v.u_mm[2][..]];
        let parts = super::demons::par_z_read(threads, nz, |ks| {
            let mut worst = 0f32;
            for k in ks.start.max(border)..ks.end.min(nz.saturating_sub(border)) {
                for j in border..ny.saturating_sub(border) {
                    for i in border..nx.saturating_sub(border) {
                        let o = (k * ny + j) * nx + i;
                        let u = [0, 1, 2].map(|a| self.u_mm[a][o]);
                        let p = [
                            i as f32 + u[0] * inv_h,
                            j as f32 + u[1] * inv_h,
                            k as f32 + u[2] * inv_h,
                        ];
                        if (0..3).any(|a| p[a] < b || p[a] > top[a]) {
                            continue;
                        }
                        let s = sample3_clamped(vs, v.grid.dims, p);
                        let r2 = (0..3).map(|a| (u[a] + s[a]) * (u[a] + s[a])).sum::<f32>();
                        // NaN must win: `max` would drop it
                        if r2 > worst || r2.is_nan() {
                            worst = r2;
                        }
                    }
                }
            }
            worst
        });
        let worst = parts
            .into_iter()
            .fold(0f32, |a, b| if b > a || b.is_nan() { b } else { a });
        (worst as f64).sqrt()
    }

    /// This field resampled onto `grid` (trilinear, constant beyond this field's grid).
    pub fn resampled(&self, grid: FieldGrid) -> DisplacementField {
        self.resampled_threads(grid, 1)
    }

    /// [`DisplacementField::resampled`] over z-slabs on up to `threads` scoped threads.
    pub fn resampled_threads(&self, grid: FieldGrid, threads: usize) -> DisplacementField {
        let mut out = DisplacementField::zeros(grid);
        let [nx, ny, nz] = grid.dims;
        let slice = nx * ny;
        // the source index is affine in the target's
        let scale = (grid.spacing_mm / self.grid.spacing_mm) as f32;
        let offset =
            [0, 1, 2].map(|a| ((grid.origin_mm[a] - self.grid.origin_mm[a]) / self.grid.spacing_mm) as f32);
        let src = [&self.u_mm[0][..], &self.u_mm[1][..], &self.u_mm[2][..]];
        let dims = self.grid.dims;
        let [ox, oy, oz] = &mut out.u_mm;
        super::demons::par_z(
            threads,
            nz,
            slice,
            [&mut ox[..], &mut oy[..], &mut oz[..]],
            |ks, dst| {
                let base = ks.start * slice;
                let [dx, dy, dz] = dst;
                for k in ks {
                    for j in 0..ny {
                        for i in 0..nx {
                            let o = (k * ny + j) * nx + i;
                            let p = [
                                offset[0] + scale * i as f32,
                                offset[1] + scale * j as f32,
                                offset[2] + scale * k as f32,
                            ];
                            let s = sample3_clamped(src, dims, p);
                            dx[o - base] = s[0];
                            dy[o - base] = s[1];
                            dz[o - base] = s[2];
                        }
                    }
                }
            },
        );
        out
    }
}

/// A voxel of the inverse field stops iterating once a step moves it less than this, mm
/// (the error left is about the step times max |∇u| / (1 − max |∇u|), below the step
/// for any field the Jacobian check accepts): a hundredth of the 1 mm inverse check and
/// of the finest voxel.
pub const INVERSE_TOLERANCE_MM: f32 = 0.01;

/// [`sample_clamped`] of three images on the same grid at the same point (the weights
/// computed once).
#[inline]
pub(crate) fn sample3_clamped(data: [&[f32]; 3], dims: [usize; 3], p: [f32; 3]) -> [f32; 3] {
    let [nx, ny, nz] = dims;
    if nx > 1 && ny > 1 && nz > 1 && (0..3).all(|a| p[a] >= 0.0 && p[a] < (dims[a] - 1) as f32) {
        // inside: no clamp, and one bounds check per image
        let b = p.map(|v| v as usize);
        let [fx, fy, fz] = [0, 1, 2].map(|a| p[a] - b[a] as f32);
        let slice = nx * ny;
        let o = b[2] * slice + b[1] * nx + b[0];
        return data.map(|d| {
            let c = &d[o..o + slice + nx + 2];
            let c00 = c[0] + (c[1] - c[0]) * fx;
            let c10 = c[nx] + (c[nx + 1] - c[nx]) * fx;
            let c01 = c[slice] + (c[slice + 1] - c[slice]) * fx;
            let c11 = c[slice + nx] + (c[slice + nx + 1] - c[slice + nx]) * fx;
            let c0 = c00 + (c10 - c00) * fy;
            let c1 = c01 + (c11 - c01) * fy;
            c0 + (c1 - c0) * fz
        });
    }
    let (o, [dx, dy, dz], [fx, fy, fz]) = clamped_cell(dims, p);
    let w = [
        (1.0 - fx) * (1.0 - fy) * (1.0 - fz),
        fx * (1.0 - fy) * (1.0 - fz),
        (1.0 - fx) * fy * (1.0 - fz),
        fx * fy * (1.0 - fz),
        (1.0 - fx) * (1.0 - fy) * fz,
        fx * (1.0 - fy) * fz,
        (1.0 - fx) * fy * fz,
        fx * fy * fz,
    ];
    let offs = [
        o,
        o + dx,
        o + dy,
        o + dy + dx,
        o + dz,
        o + dz + dx,
        o + dz + dy,
        o + dz + dy + dx,
    ];
    data.map(|d| {
        let mut s = 0f32;
        for (wc, &oc) in w.iter().zip(&offs) {
            s += wc * d[oc];
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> FieldGrid {
        FieldGrid {
            origin_mm: [-20.0, -20.0, -20.0],
            spacing_mm: 2.0,
            dims: [21, 21, 21],
        }
    }

    #[test]
    fn jacobian_of_a_uniform_scaling_is_its_cube() {
        // u(x) = s·x gives x ↦ (1+s)·x, Jacobian (1+s)³ everywhere
        let f = DisplacementField::from_fn(grid(), |p| p.coords * -0.2);
        let (lo, hi) = f.jacobian_range();
        assert!(
            (lo - 0.512).abs() < 1e-4 && (hi - 0.512).abs() < 1e-4,
            "{lo} {hi}"
        );
        // a field that reverses an axis folds
        let g = DisplacementField::from_fn(grid(), |p| VectorMm::new(-2.0 * p.x, 0.0, 0.0));
        assert!(g.jacobian_range().0 < 0.0);
    }

    #[test]
    fn inverse_of_a_smooth_field_undoes_it() {
        let c = PointMm::new(3.0, -2.0, 1.0);
        let u = DisplacementField::from_fn(grid(), |p| {
            let d = p - c;
            VectorMm::new(4.0, -2.0, 1.0) * (-d.norm_squared() / (2.0 * 100.0)).exp()
        });
        let v = u.inverse(20);
        // analytic check at a point: y = x + u(x) must map back to x
        let x = PointMm::new(1.0, 0.5, -1.5);
        let y = u.map_mm(&x);
        assert!((v.map_mm(&y) - x).norm() < 0.15, "{}", (v.map_mm(&y) - x).norm());
        assert!(u.inverse_error_mm(&v, 2) < 0.15);
    }
}
