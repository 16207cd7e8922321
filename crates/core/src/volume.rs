//! Voxel volumes: an `ndarray::Array3` placed on a [`Grid`].
//!
//! The array's shape is `(slices, rows, columns)` = `(k, j, i)`, so the innermost, contiguous
//! axis is the image row as stored in DICOM. Index it with [`Volume::get`] in grid order
//! `(i, j, k)` to avoid mixing the two conventions.
//!
//! ```
//! use ionguide_core::geometry::Grid;
//! use ionguide_core::units::PointMm;
//! use ionguide_core::volume::Volume;
//! let grid = Grid::axis_aligned([2, 2, 2], PointMm::origin(), [1.0; 3]).unwrap();
//! let mut v = Volume::<f32>::filled(grid, 0.0);
//! *v.get_mut(1, 0, 0).unwrap() = 10.0;
//! assert_eq!(v.sample_linear(&PointMm::new(0.5, 0.0, 0.0)), Some(5.0));
//! ```

use ndarray::Array3;

use crate::geometry::Grid;
use crate::units::{Hu, PointMm};

/// A CT volume in Hounsfield units.
pub type CtVolume = Volume<Hu>;
/// A binary mask (0 or 1 per voxel).
pub type MaskVolume = Volume<u8>;

/// Why a volume cannot be built from an array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("array shape {array_shape:?} does not match grid (slices, rows, columns) {grid_shape:?}")]
pub struct ShapeMismatch {
    /// Shape of the array handed in.
    pub array_shape: [usize; 3],
    /// Shape the grid requires.
    pub grid_shape: [usize; 3],
}

/// Voxel data on a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    grid: Grid,
    data: Array3<T>,
}

/// Conversion of a voxel value to `f32` for interpolation.
pub trait Voxel: Copy {
    /// The value as `f32`.
    fn to_f32(self) -> f32;
}
impl Voxel for i16 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
impl Voxel for u8 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
impl Voxel for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl<T> Volume<T> {
    /// Wraps an array of shape `(slices, rows, columns)`.
    pub fn from_array(grid: Grid, data: Array3<T>) -> Result<Self, ShapeMismatch> {
        let [nx, ny, nz] = grid.dims();
        let s = data.shape();
        if s != [nz, ny, nx] {
            return Err(ShapeMismatch {
                array_shape: [s[0], s[1], s[2]],
                grid_shape: [nz, ny, nx],
            });
        }
        Ok(Volume { grid, data })
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
    /// The array, shape `(slices, rows, columns)`.
    pub fn data(&self) -> &Array3<T> {
        &self.data
    }
    /// Mutable array access.
    pub fn data_mut(&mut self) -> &mut Array3<T> {
        &mut self.data
    }
    /// Places the same voxels in the coordinates `t` maps into (see [`Grid::mapped`]).
    pub fn map_patient_space(&mut self, t: &crate::geometry::RigidTransform) {
        self.grid = self.grid.mapped(t);
    }
    /// Splits into grid and array.
    pub fn into_parts(self) -> (Grid, Array3<T>) {
        (self.grid, self.data)
    }
    /// Contiguous voxel slice in `(k, j, i)` row-major order.
    pub fn as_slice(&self) -> &[T] {
        self.data
            .as_slice()
            .expect("volumes are built from standard-layout arrays")
    }
    /// Mutable contiguous voxel slice.
    pub fn as_slice_mut(&mut self) -> &mut [T] {
        self.data
            .as_slice_mut()
            .expect("volumes are built from standard-layout arrays")
    }

    /// Voxel at grid index `(i, j, k)`.
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<&T> {
        self.data.get((k, j, i))
    }
    /// Mutable voxel at grid index `(i, j, k)`.
    #[inline]
    pub fn get_mut(&mut self, i: usize, j: usize, k: usize) -> Option<&mut T> {
        self.data.get_mut((k, j, i))
    }
}

impl<T: Clone> Volume<T> {
    /// A volume with every voxel set to `value`.
    pub fn filled(grid: Grid, value: T) -> Self {
        let [nx, ny, nz] = grid.dims();
        Volume {
            data: Array3::from_elem((nz, ny, nx), value),
            grid,
        }
    }
}

impl<T: Voxel> Volume<T> {
    /// Trilinear interpolation at a patient point; `None` outside the voxel-centre box.
    #[inline]
    pub fn sample_linear(&self, p: &PointMm) -> Option<f32> {
        self.sample_index_linear(self.grid.patient_to_index(p))
    }

    /// Trilinear interpolation at a continuous index; `None` outside `[0, n-1]` on any axis.
    #[inline]
    pub fn sample_index_linear(&self, ijk: [f64; 3]) -> Option<f32> {
        let [nx, ny, nz] = self.grid.dims();
        let mut base = [0usize; 3];
        let mut frac = [0f32; 3];
        for a in 0..3 {
            let n = [nx, ny, nz][a];
            let x = ijk[a];
            if !(x >= 0.0 && x <= (n - 1) as f64) {
                return None;
            }
            // Clamp the base so the +1 neighbour exists; a single-voxel axis has weight 0 on it.
            let b = (x.floor() as usize).min(n.saturating_sub(2));
            base[a] = b;
            frac[a] = (x - b as f64) as f32;
        }
        let data = self.as_slice();
        let sx = 1usize;
        let sy = nx;
        let sz = nx * ny;
        let step = |a: usize, s: usize| if [nx, ny, nz][a] > 1 { s } else { 0 };
        let (dx, dy, dz) = (step(0, sx), step(1, sy), step(2, sz));
        let o = base[2] * sz + base[1] * sy + base[0];
        let v = |off: usize| data[off].to_f32();
        let [fx, fy, fz] = frac;
        let c00 = v(o) * (1.0 - fx) + v(o + dx) * fx;
        let c10 = v(o + dy) * (1.0 - fx) + v(o + dy + dx) * fx;
        let c01 = v(o + dz) * (1.0 - fx) + v(o + dz + dx) * fx;
        let c11 = v(o + dz + dy) * (1.0 - fx) + v(o + dz + dy + dx) * fx;
        let c0 = c00 * (1.0 - fy) + c10 * fy;
        let c1 = c01 * (1.0 - fy) + c11 * fy;
        Some(c0 * (1.0 - fz) + c1 * fz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Rotation3;

    #[test]
    fn trilinear_reproduces_a_linear_field_on_an_oblique_grid() {
        let r = Rotation3::from_euler_angles(0.2, 0.4, -0.7);
        let grid = Grid::new(
            [6, 5, 4],
            PointMm::new(3.0, -2.0, 50.0),
            [1.5, 0.9, 2.0],
            *r.matrix(),
        )
        .unwrap();
        let f = |p: &PointMm| (0.5 * p.x - 0.25 * p.y + 2.0 * p.z) as f32;
        let mut vol = Volume::<f32>::filled(grid.clone(), 0.0);
        for k in 0..4 {
            for j in 0..5 {
                for i in 0..6 {
                    *vol.get_mut(i, j, k).unwrap() =
                        f(&grid.index_to_patient([i as f64, j as f64, k as f64]));
                }
            }
        }
        let p = grid.index_to_patient([2.3, 1.7, 2.9]);
        let got = vol.sample_linear(&p).unwrap();
        assert!((got - f(&p)).abs() < 1e-3, "{got} vs {}", f(&p));
        assert_eq!(
            vol.sample_index_linear([5.0, 4.0, 3.0]),
            Some(*vol.get(5, 4, 3).unwrap())
        );
        assert_eq!(vol.sample_index_linear([-0.01, 0.0, 0.0]), None);
        assert_eq!(vol.sample_index_linear([0.0, 0.0, 3.01]), None);
    }

    #[test]
    fn from_array_checks_shape() {
        let grid = Grid::axis_aligned([3, 2, 1], PointMm::origin(), [1.0; 3]).unwrap();
        assert!(Volume::from_array(grid.clone(), Array3::<i16>::zeros((1, 2, 3))).is_ok());
        assert!(Volume::from_array(grid, Array3::<i16>::zeros((3, 2, 1))).is_err());
    }
}
