//! Dose delivered on the moving anatomy, carried back to the planning CT.
//!
//! Each motion sample's spots deposit their dose on the anatomy of that instant, on a grid
//! identical to the planning dose grid (the moved anatomy's own coordinates). The dose a
//! planning voxel `q` received is the dose at `φ(q)`, where `φ` is where the tissue at `q`
//! was at that instant — the simulator knows it exactly (the phantom's analytic
//! deformation; for a rigidly moved CT a translation). The moved-frame dose is read there
//! by trilinear interpolation, over the box of voxels the instant's dose touched, grown by
//! the largest displacement.

use ionguide::geometry::Grid;
use ionguide::units::PointMm;

/// A scratch dose on the moved anatomy of one instant plus the planning-frame sum.
pub struct Accumulator {
    grid: Grid,
    /// The instant's dose on the moved anatomy, Gy.
    pub scratch: Vec<f64>,
    /// Sum over instants, mapped back, Gy.
    pub total: Vec<f64>,
}

impl Accumulator {
    /// Empty, on `grid`.
    pub fn new(grid: &Grid) -> Self {
        Accumulator {
            grid: grid.clone(),
            scratch: vec![0.0; grid.len()],
            total: vec![0.0; grid.len()],
        }
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Adds the scratch dose to the total through `moved_point` (planning point → where that
    /// tissue was when the scratch dose was deposited; `max_shift_mm` bounds its distance from
    /// the planning point), then clears the scratch. With `moved_point` the identity the
    /// scratch is added voxel for voxel, exactly.
    pub fn fold_in(&mut self, max_shift_mm: f64, identity: bool, moved_point: impl Fn(PointMm) -> PointMm) {
        let [nx, ny, nz] = self.grid.dims();
        if identity {
            for (t, s) in self.total.iter_mut().zip(self.scratch.iter_mut()) {
                *t += *s;
                *s = 0.0;
            }
            return;
        }
        // Box of touched voxels.
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        for k in 0..nz {
            for j in 0..ny {
                let row = &self.scratch[(k * ny + j) * nx..(k * ny + j + 1) * nx];
                let Some(first) = row.iter().position(|&v| v != 0.0) else {
                    continue;
                };
                let last = row.iter().rposition(|&v| v != 0.0).unwrap_or(first);
                lo = [lo[0].min(first), lo[1].min(j), lo[2].min(k)];
                hi = [hi[0].max(last), hi[1].max(j), hi[2].max(k)];
            }
        }
        if lo[0] == usize::MAX {
            return;
        }
        let sp = self.grid.spacing_mm();
        let dims = [nx, ny, nz];
        for a in 0..3 {
            let grow = (max_shift_mm / sp[a]).ceil() as usize + 1;
            lo[a] = lo[a].saturating_sub(grow);
            hi[a] = (hi[a] + grow).min(dims[a] - 1);
        }
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                for i in lo[0]..=hi[0] {
                    let q = self.grid.index_to_patient([i as f64, j as f64, k as f64]);
                    let p = moved_point(q);
                    let u = self.grid.patient_to_index(&p);
                    self.total[(k * ny + j) * nx + i] += trilinear(&self.scratch, dims, u);
                }
            }
        }
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                let row = (k * ny + j) * nx;
                self.scratch[row + lo[0]..=row + hi[0]].fill(0.0);
            }
        }
        // Anything outside the grown box was zero already.
    }
}

/// Trilinear interpolation of `v` (x fastest) at fractional index `u`; 0 outside the grid.
pub fn trilinear(v: &[f64], dims: [usize; 3], u: [f64; 3]) -> f64 {
    let mut base = [0usize; 3];
    let mut f = [0.0f64; 3];
    for a in 0..3 {
        if !(u[a] >= 0.0 && u[a] <= (dims[a] - 1) as f64) {
            return 0.0;
        }
        let b = (u[a].floor() as usize).min(dims[a].saturating_sub(2));
        base[a] = b;
        f[a] = u[a] - b as f64;
    }
    let at = |i: usize, j: usize, k: usize| -> f64 {
        let (i, j, k) = (
            (base[0] + i).min(dims[0] - 1),
            (base[1] + j).min(dims[1] - 1),
            (base[2] + k).min(dims[2] - 1),
        );
        v[(k * dims[1] + j) * dims[0] + i]
    };
    let mut out = 0.0;
    for (dk, wk) in [(0, 1.0 - f[2]), (1, f[2])] {
        for (dj, wj) in [(0, 1.0 - f[1]), (1, f[1])] {
            for (di, wi) in [(0, 1.0 - f[0]), (1, f[0])] {
                let w = wi * wj * wk;
                if w != 0.0 {
                    out += w * at(di, dj, dk);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::axis_aligned([20, 16, 12], PointMm::new(-30.0, -24.0, -18.0), [3.0; 3]).unwrap()
    }

    /// A dose deposited on anatomy moved rigidly by a whole number of voxels comes back
    /// shifted by exactly that many voxels.
    #[test]
    fn a_rigid_shift_of_whole_voxels_maps_back_exactly() {
        let g = grid();
        let mut acc = Accumulator::new(&g);
        // Tissue at planning q sits at q + (6, 0, −3) mm: dose at moved voxel (10, 8, 5)
        // belongs to planning voxel (8, 8, 6).
        acc.scratch[g.offset(10, 8, 5)] = 2.0;
        let shift = ionguide::units::VectorMm::new(6.0, 0.0, -3.0);
        acc.fold_in(7.0, false, |q| q + shift);
        assert!((acc.total[g.offset(8, 8, 6)] - 2.0).abs() < 1e-12);
        assert!((acc.total.iter().sum::<f64>() - 2.0).abs() < 1e-12);
        assert!(acc.scratch.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_identity_map_adds_voxel_for_voxel() {
        let g = grid();
        let mut acc = Accumulator::new(&g);
        for (n, v) in acc.scratch.iter_mut().enumerate() {
            *v = (n % 7) as f64;
        }
        let want: Vec<f64> = acc.scratch.clone();
        acc.fold_in(0.0, true, |q| q);
        assert_eq!(acc.total, want);
    }

    #[test]
    fn trilinear_is_exact_for_a_linear_field_and_zero_outside() {
        let dims = [5, 4, 3];
        let v: Vec<f64> = (0..60)
            .map(|n| {
                let (i, j, k) = (n % 5, (n / 5) % 4, n / 20);
                1.0 + 2.0 * i as f64 - 0.5 * j as f64 + 3.0 * k as f64
            })
            .collect();
        let u = [2.3, 1.7, 0.4];
        let want = 1.0 + 2.0 * 2.3 - 0.5 * 1.7 + 3.0 * 0.4;
        assert!((trilinear(&v, dims, u) - want).abs() < 1e-12);
        assert!((trilinear(&v, dims, [4.0, 3.0, 2.0]) - (1.0 + 8.0 - 1.5 + 6.0)).abs() < 1e-12);
        assert_eq!(trilinear(&v, dims, [-0.1, 0.0, 0.0]), 0.0);
    }
}
