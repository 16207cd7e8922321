//! Resampling a CT volume through a rigid transform onto another grid.
//!
//! Output voxel `x` (a patient point of the output grid) receives `moving(T(x))`, sampled
//! trilinearly; points that fall outside the moving volume's voxel-centre box get `fill`.
//! This is the same direction as a registration result: with `T` the fixed→moving
//! transform, `resample(frame, T, planning_grid)` brings the frame onto the planning CT, and a
//! frame that shows the planning anatomy moved by `T` is `resample(planning, T⁻¹, grid)`.

use crate::geometry::{Grid, RigidTransform};
use crate::units::Hu;
use crate::volume::CtVolume;

/// Resamples `moving` through `transform` onto `grid`; see the module docs for the direction.
///
/// Values are rounded to the nearest HU and clamped to the `i16` range.
pub fn resample(moving: &CtVolume, transform: &RigidTransform, grid: &Grid, fill: Hu) -> CtVolume {
    let mut out = CtVolume::filled(grid.clone(), fill);
    let [nx, ny, nz] = grid.dims();
    // Walk the output grid in index space: T(x(i,j,k)) is affine in (i,j,k), so each step
    // along i adds a constant vector in the moving image's index space.
    let m_grid = moving.grid();
    let p2i = m_grid.patient_to_index_matrix();
    let step = p2i * transform.rotation.matrix() * grid.index_to_patient_matrix();
    let origin = p2i * (transform.apply(&grid.origin_mm()) - m_grid.origin_mm());
    let data = out.as_slice_mut();
    let mut o = 0usize;
    for k in 0..nz {
        for j in 0..ny {
            let row = origin + step.column(1) * j as f64 + step.column(2) * k as f64;
            for i in 0..nx {
                let ijk = row + step.column(0) * i as f64;
                if let Some(v) = moving.sample_index_linear([ijk.x, ijk.y, ijk.z]) {
                    data[o] = v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
                }
                o += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{PointMm, VectorMm};

    fn ramp() -> CtVolume {
        let grid =
            Grid::axis_aligned([20, 18, 10], PointMm::new(-10.0, -9.0, -15.0), [1.0, 1.0, 3.0]).unwrap();
        let mut v = CtVolume::filled(grid, 0);
        for k in 0..10 {
            for j in 0..18 {
                for i in 0..20 {
                    *v.get_mut(i, j, k).unwrap() = (10 * i + 3 * j + 7 * k) as i16;
                }
            }
        }
        v
    }

    #[test]
    fn translation_moves_content_in_the_documented_direction() {
        // moving(x) = 10·i + …; T(x) = x + (2, 0, 0) mm, so out(x) = moving(x + 2 mm) = in(x) + 20
        let m = ramp();
        let t = RigidTransform::from_rotation_vector(VectorMm::zeros(), VectorMm::new(2.0, 0.0, 0.0));
        let out = resample(&m, &t, m.grid(), -1000);
        assert_eq!(*out.get(3, 4, 5).unwrap(), *m.get(5, 4, 5).unwrap());
        // the last two columns map outside the moving volume
        assert_eq!(*out.get(18, 4, 5).unwrap(), -1000);
        assert_eq!(*out.get(17, 4, 5).unwrap(), *m.get(19, 4, 5).unwrap());
    }

    #[test]
    fn rotation_about_an_axis_matches_direct_sampling() {
        let m = ramp();
        let t = RigidTransform::from_xyz_deg([0.0, 0.0, 5.0], VectorMm::new(0.3, -0.2, 1.0));
        let out = resample(&m, &t, m.grid(), -1000);
        for (i, j, k) in [(5, 5, 5), (10, 3, 2), (12, 12, 7)] {
            let x = m.grid().index_to_patient([i as f64, j as f64, k as f64]);
            let want = m.sample_linear(&t.apply(&x)).unwrap().round() as i16;
            assert_eq!(*out.get(i, j, k).unwrap(), want);
        }
    }
}
