//! The region of the planning CT that drives the registration.
//!
//! A region is a patient-space axis-aligned box. From a target mask it is the mask's bounding
//! box (outer voxel faces) grown by a margin on every side — not a dilation of the mask: the
//! box keeps the surrounding anatomy (bone edges, skin, air) that pins the rigid motion,
//! and it costs nothing to build per plan.

use crate::units::{PointMm, VectorMm};
use crate::volume::MaskVolume;

use super::RegisterError;

/// Default margin around a target mask, mm.
pub const DEFAULT_MARGIN_MM: f64 = 20.0;

/// A patient-space axis-aligned box, mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxMm {
    /// Lower corner.
    pub lo_mm: PointMm,
    /// Upper corner.
    pub hi_mm: PointMm,
}

impl BoxMm {
    /// A box from two opposite corners in any order; rejects non-finite or empty boxes.
    pub fn new(a_mm: PointMm, b_mm: PointMm) -> Result<Self, RegisterError> {
        let lo = PointMm::new(a_mm.x.min(b_mm.x), a_mm.y.min(b_mm.y), a_mm.z.min(b_mm.z));
        let hi = PointMm::new(a_mm.x.max(b_mm.x), a_mm.y.max(b_mm.y), a_mm.z.max(b_mm.z));
        let finite = lo.iter().chain(hi.iter()).all(|v| v.is_finite());
        if !finite || (0..3).any(|a| hi[a] <= lo[a]) {
            return Err(RegisterError::EmptyBox {
                lo_mm: [a_mm.x, a_mm.y, a_mm.z],
                hi_mm: [b_mm.x, b_mm.y, b_mm.z],
            });
        }
        Ok(BoxMm { lo_mm: lo, hi_mm: hi })
    }

    /// A cube of side `side_mm` centred on `center_mm`.
    pub fn cube(center_mm: PointMm, side_mm: f64) -> Result<Self, RegisterError> {
        let h = VectorMm::repeat(side_mm / 2.0);
        BoxMm::new(center_mm - h, center_mm + h)
    }

    /// Whether a point lies inside (faces included).
    #[inline]
    pub fn contains(&self, p: &PointMm) -> bool {
        (0..3).all(|a| p[a] >= self.lo_mm[a] && p[a] <= self.hi_mm[a])
    }

    /// Centre of the box.
    pub fn center_mm(&self) -> PointMm {
        nalgebra::center(&self.lo_mm, &self.hi_mm)
    }

    /// The box grown by `margin_mm` on every side.
    pub fn grown(&self, margin_mm: f64) -> Result<Self, RegisterError> {
        let m = VectorMm::repeat(margin_mm);
        BoxMm::new(self.lo_mm - m, self.hi_mm + m)
    }
}

/// The region of interest plus the target point whose motion is reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    /// Fixed-image voxels whose centres fall inside drive the metric.
    pub box_mm: BoxMm,
    /// The planned target position (mask centroid, or the box centre), mm.
    pub target_mm: PointMm,
}

impl Roi {
    /// A box region; the target is its centre.
    pub fn from_box(box_mm: BoxMm) -> Self {
        Roi {
            box_mm,
            target_mm: box_mm.center_mm(),
        }
    }

    /// A target mask's bounding box grown by `margin_mm`; the target is the mask's centroid.
    pub fn from_mask(mask: &MaskVolume, margin_mm: f64) -> Result<Self, RegisterError> {
        if !margin_mm.is_finite() || margin_mm < 0.0 {
            return Err(RegisterError::BadMargin { margin_mm });
        }
        let grid = mask.grid();
        let [nx, ny, _] = grid.dims();
        let mut lo = PointMm::new(f64::INFINITY, f64::INFINITY, f64::INFINITY);
        let mut hi = -lo;
        let mut sum = VectorMm::zeros();
        let mut n = 0usize;
        for (o, &v) in mask.as_slice().iter().enumerate() {
            if v == 0 {
                continue;
            }
            let (i, j, k) = (o % nx, (o / nx) % ny, o / (nx * ny));
            let c = grid.index_to_patient([i as f64, j as f64, k as f64]);
            sum += c.coords;
            n += 1;
            // outer faces of the voxel, so a one-voxel mask still has a finite box
            for corner in 0..8 {
                let ijk = [i, j, k].map(|x| x as f64);
                let ijk = [0, 1, 2].map(|a| ijk[a] + if corner & (1 << a) != 0 { 0.5 } else { -0.5 });
                let p = grid.index_to_patient(ijk);
                for a in 0..3 {
                    lo[a] = lo[a].min(p[a]);
                    hi[a] = hi[a].max(p[a]);
                }
            }
        }
        if n == 0 {
            return Err(RegisterError::EmptyMask);
        }
        let box_mm = BoxMm::new(lo, hi)?.grown(margin_mm)?;
        Ok(Roi {
            box_mm,
            target_mm: PointMm::from(sum / n as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Grid;

    #[test]
    fn mask_box_is_faces_plus_margin_and_target_is_centroid() {
        let grid = Grid::axis_aligned([10, 10, 5], PointMm::new(0.0, 0.0, 0.0), [1.0, 1.0, 3.0]).unwrap();
        let mut m = MaskVolume::filled(grid, 0);
        *m.get_mut(2, 3, 1).unwrap() = 1;
        *m.get_mut(4, 3, 2).unwrap() = 1;
        let roi = Roi::from_mask(&m, 5.0).unwrap();
        assert_eq!(roi.box_mm.lo_mm, PointMm::new(1.5 - 5.0, 2.5 - 5.0, 1.5 - 5.0));
        assert_eq!(roi.box_mm.hi_mm, PointMm::new(4.5 + 5.0, 3.5 + 5.0, 7.5 + 5.0));
        assert_eq!(roi.target_mm, PointMm::new(3.0, 3.0, 4.5));
        let empty = MaskVolume::filled(m.grid().clone(), 0);
        assert!(matches!(
            Roi::from_mask(&empty, 5.0),
            Err(RegisterError::EmptyMask)
        ));
    }
}
