//! Patient geometry: voxel grids in DICOM LPS millimetres and rigid transforms.
//!
//! A [`Grid`] maps a continuous voxel index `(i, j, k)` — `i` along a row (column index),
//! `j` down the columns (row index), `k` across slices — to a patient point:
//!
//! ```text
//! p = origin + D · diag(spacing) · (i, j, k)
//! ```
//!
//! where the columns of `D` are the unit direction cosines of the three index axes
//! (DICOM Image Orientation Patient gives the first two; the third is the slice normal in the
//! direction slices were sorted). Nothing here assumes `D` is the identity.
//!
//! ```
//! use ionguide_core::geometry::Grid;
//! use ionguide_core::units::PointMm;
//! use nalgebra::Matrix3;
//! let grid = Grid::new([4, 3, 2], PointMm::new(-10.0, 5.0, 0.0), [1.0, 2.0, 3.0], Matrix3::identity()).unwrap();
//! let p = grid.index_to_patient([1.0, 1.0, 1.0]);
//! assert_eq!(p, PointMm::new(-9.0, 7.0, 3.0));
//! assert_eq!(grid.patient_to_index(&p), [1.0, 1.0, 1.0]);
//! ```

use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use serde::{Deserialize, Serialize};

use crate::units::{PointMm, VectorMm};

/// Orthonormality tolerance for direction cosines (DICOM writers round to ~6 digits).
pub const DIRECTION_TOLERANCE: f64 = 1e-4;

/// Why a grid cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// A dimension is zero.
    #[error("grid has an empty dimension: {dims:?} voxels")]
    EmptyDimension {
        /// The offending dimensions.
        dims: [usize; 3],
    },
    /// A spacing is not finite and positive.
    #[error("voxel spacing must be finite and > 0 mm, got {spacing_mm:?}")]
    BadSpacing {
        /// The offending spacing.
        spacing_mm: [f64; 3],
    },
    /// The direction cosines are not an orthonormal basis.
    #[error("direction cosines are not orthonormal within {DIRECTION_TOLERANCE}: {direction:?}")]
    NotOrthonormal {
        /// Column-major direction matrix.
        direction: [f64; 9],
    },
    /// The origin is not finite.
    #[error("grid origin is not finite: {origin_mm:?}")]
    BadOrigin {
        /// The offending origin.
        origin_mm: [f64; 3],
    },
}

/// A regular voxel grid placed in patient space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Voxel counts along `(i, j, k)`: columns, rows, slices.
    dims: [usize; 3],
    /// Patient position of voxel `(0, 0, 0)`'s centre, mm.
    origin_mm: PointMm,
    /// Centre-to-centre spacing along `(i, j, k)`, mm.
    spacing_mm: [f64; 3],
    /// Columns are the unit directions of the `i`, `j`, `k` axes in LPS.
    direction: Matrix3<f64>,
    /// Cached `D · diag(spacing)` and its inverse.
    #[serde(skip)]
    index_to_patient: Matrix3<f64>,
    #[serde(skip)]
    patient_to_index: Matrix3<f64>,
}

impl Grid {
    /// Builds a grid, checking dimensions, spacing and orthonormal direction cosines.
    /// A left-handed basis (slice normal opposite to row × column) is allowed: it is how a
    /// series sorted head-first along −z looks.
    pub fn new(
        dims: [usize; 3],
        origin_mm: PointMm,
        spacing_mm: [f64; 3],
        direction: Matrix3<f64>,
    ) -> Result<Self, GeometryError> {
        if dims.contains(&0) {
            return Err(GeometryError::EmptyDimension { dims });
        }
        if spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(GeometryError::BadSpacing { spacing_mm });
        }
        if !origin_mm.iter().all(|v| v.is_finite()) {
            return Err(GeometryError::BadOrigin {
                origin_mm: [origin_mm.x, origin_mm.y, origin_mm.z],
            });
        }
        let gram = direction.transpose() * direction;
        if !direction.iter().all(|v| v.is_finite())
            || (gram - Matrix3::identity()).abs().max() > DIRECTION_TOLERANCE
        {
            let mut d = [0.0; 9];
            d.copy_from_slice(direction.as_slice());
            return Err(GeometryError::NotOrthonormal { direction: d });
        }
        let index_to_patient = direction * Matrix3::from_diagonal(&Vector3::from(spacing_mm));
        // Orthonormal D: inverse is diag(1/s) · Dᵀ, exact and cheap.
        let inv_spacing = Vector3::new(1.0 / spacing_mm[0], 1.0 / spacing_mm[1], 1.0 / spacing_mm[2]);
        let patient_to_index = Matrix3::from_diagonal(&inv_spacing) * direction.transpose();
        Ok(Grid {
            dims,
            origin_mm,
            spacing_mm,
            direction,
            index_to_patient,
            patient_to_index,
        })
    }

    /// An axis-aligned grid (identity direction cosines); for phantoms and tests.
    pub fn axis_aligned(
        dims: [usize; 3],
        origin_mm: PointMm,
        spacing_mm: [f64; 3],
    ) -> Result<Self, GeometryError> {
        Grid::new(dims, origin_mm, spacing_mm, Matrix3::identity())
    }

    /// Re-derives the cached matrices (after deserialization).
    pub fn revalidated(self) -> Result<Self, GeometryError> {
        Grid::new(self.dims, self.origin_mm, self.spacing_mm, self.direction)
    }

    /// Voxel counts `(columns, rows, slices)`.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }
    /// Centre of voxel `(0,0,0)`, mm.
    pub fn origin_mm(&self) -> PointMm {
        self.origin_mm
    }
    /// Spacing along `(i, j, k)`, mm.
    pub fn spacing_mm(&self) -> [f64; 3] {
        self.spacing_mm
    }
    /// Direction cosines, one column per index axis.
    pub fn direction(&self) -> &Matrix3<f64> {
        &self.direction
    }
    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
    /// Never true for a valid grid; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Volume of one voxel, mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.spacing_mm[0] * self.spacing_mm[1] * self.spacing_mm[2]
    }
    /// `D · diag(spacing)`: index-space vector → patient-space vector.
    pub fn index_to_patient_matrix(&self) -> &Matrix3<f64> {
        &self.index_to_patient
    }
    /// Patient-space vector → index-space vector.
    pub fn patient_to_index_matrix(&self) -> &Matrix3<f64> {
        &self.patient_to_index
    }

    /// Patient point of a continuous index `(i, j, k)`.
    #[inline]
    pub fn index_to_patient(&self, ijk: [f64; 3]) -> PointMm {
        self.origin_mm + self.index_to_patient * Vector3::from(ijk)
    }

    /// Continuous index `(i, j, k)` of a patient point (voxel centres are integers).
    #[inline]
    pub fn patient_to_index(&self, p: &PointMm) -> [f64; 3] {
        let v = self.patient_to_index * (p - self.origin_mm);
        [v.x, v.y, v.z]
    }

    /// Whether a continuous index lies inside the grid's voxel-centre box `[0, n-1]`.
    #[inline]
    pub fn contains_index(&self, ijk: [f64; 3]) -> bool {
        (0..3).all(|a| ijk[a] >= 0.0 && ijk[a] <= (self.dims[a] - 1) as f64)
    }

    /// Row-major offset of voxel `(i, j, k)` in an `ndarray` of shape `(slices, rows, columns)`.
    #[inline]
    pub fn offset(&self, i: usize, j: usize, k: usize) -> usize {
        (k * self.dims[1] + j) * self.dims[0] + i
    }

    /// Unit normal of the slice planes (direction of increasing `k`).
    pub fn slice_normal(&self) -> VectorMm {
        self.direction.column(2).into_owned()
    }

    /// Patient-space axis-aligned bounding box of the grid's outer voxel faces.
    pub fn bounds_mm(&self) -> (PointMm, PointMm) {
        let mut lo = PointMm::new(f64::INFINITY, f64::INFINITY, f64::INFINITY);
        let mut hi = PointMm::new(f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for c in 0..8 {
            let ijk = [0usize, 1, 2].map(|a| {
                if c & (1 << a) != 0 {
                    self.dims[a] as f64 - 0.5
                } else {
                    -0.5
                }
            });
            let p = self.index_to_patient(ijk);
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        (lo, hi)
    }

    /// Patient point of the grid's centre.
    pub fn center_mm(&self) -> PointMm {
        self.index_to_patient([0, 1, 2].map(|a| (self.dims[a] as f64 - 1.0) / 2.0))
    }

    /// The same voxels placed in the coordinates `t` maps into: every voxel centre `p` of
    /// this grid is `t(p)` in the result (the direction cosines turn with `t`).
    pub fn mapped(&self, t: &RigidTransform) -> Grid {
        // A rotation keeps the basis orthonormal, so the checks of `new` hold unchanged.
        let direction = t.rotation.matrix() * self.direction;
        let index_to_patient = direction * Matrix3::from_diagonal(&Vector3::from(self.spacing_mm));
        let patient_to_index =
            Matrix3::from_diagonal(&Vector3::from(self.spacing_mm.map(|s| 1.0 / s))) * direction.transpose();
        Grid {
            dims: self.dims,
            origin_mm: t.apply(&self.origin_mm),
            spacing_mm: self.spacing_mm,
            direction,
            index_to_patient,
            patient_to_index,
        }
    }
}

/// A rigid transform `p ↦ R·p + t` in patient space (mm).
///
/// Convention (ITK's): a registration result maps a point of the planning CT (fixed) to the
/// same anatomical point in the frame (moving).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RigidTransform {
    /// Rotation.
    pub rotation: Rotation3<f64>,
    /// Translation, mm.
    pub translation_mm: VectorMm,
}

impl Default for RigidTransform {
    fn default() -> Self {
        RigidTransform::identity()
    }
}

impl RigidTransform {
    /// The identity.
    pub fn identity() -> Self {
        RigidTransform {
            rotation: Rotation3::identity(),
            translation_mm: VectorMm::zeros(),
        }
    }

    /// From a rotation vector (axis × angle in radians) and a translation, both applied
    /// about the patient origin: `p ↦ R·p + t`.
    pub fn from_rotation_vector(rotation_vector_rad: VectorMm, translation_mm: VectorMm) -> Self {
        RigidTransform {
            rotation: Rotation3::new(rotation_vector_rad),
            translation_mm,
        }
    }

    /// A rotation about `center_mm` followed by a translation: `p ↦ R·(p − c) + c + t`.
    pub fn about_center(rotation: Rotation3<f64>, center_mm: PointMm, translation_mm: VectorMm) -> Self {
        let c = center_mm.coords;
        RigidTransform {
            rotation,
            translation_mm: c - rotation * c + translation_mm,
        }
    }

    /// Applies the transform to a point.
    #[inline]
    pub fn apply(&self, p: &PointMm) -> PointMm {
        self.rotation * p + self.translation_mm
    }

    /// Applies the rotation only (to a direction).
    #[inline]
    pub fn apply_vector(&self, v: &VectorMm) -> VectorMm {
        self.rotation * v
    }

    /// The inverse transform.
    pub fn inverse(&self) -> Self {
        let r_inv = self.rotation.inverse();
        RigidTransform {
            rotation: r_inv,
            translation_mm: -(r_inv * self.translation_mm),
        }
    }

    /// `self ∘ other`: first `other`, then `self`.
    pub fn compose(&self, other: &RigidTransform) -> Self {
        RigidTransform {
            rotation: self.rotation * other.rotation,
            translation_mm: self.rotation * other.translation_mm + self.translation_mm,
        }
    }

    /// Rotation vector (axis × angle, radians).
    pub fn rotation_vector(&self) -> VectorMm {
        self.rotation.scaled_axis()
    }

    /// Rotation as x-y-z angles in degrees: `R = Rz(γ)·Ry(β)·Rx(α)`, returned `[α, β, γ]`.
    pub fn rotation_xyz_deg(&self) -> [f64; 3] {
        let (roll, pitch, yaw) = self.rotation.euler_angles();
        [roll.to_degrees(), pitch.to_degrees(), yaw.to_degrees()]
    }

    /// From x-y-z angles in degrees (`R = Rz·Ry·Rx`) and a translation.
    pub fn from_xyz_deg(angles_deg: [f64; 3], translation_mm: VectorMm) -> Self {
        RigidTransform {
            rotation: Rotation3::from_euler_angles(
                angles_deg[0].to_radians(),
                angles_deg[1].to_radians(),
                angles_deg[2].to_radians(),
            ),
            translation_mm,
        }
    }

    /// Homogeneous 4×4 matrix.
    pub fn matrix(&self) -> Matrix4<f64> {
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(self.rotation.matrix());
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&self.translation_mm);
        m
    }

    /// Rotation angle, degrees. Never NaN for a finite rotation: `Rotation3::angle` takes
    /// `acos((trace − 1)/2)`, whose argument rounding can push past 1 near the identity
    /// (a limit compared against NaN would silently pass or fail).
    pub fn angle_deg(&self) -> f64 {
        let c = 0.5 * (self.rotation.matrix().trace() - 1.0);
        if c.is_nan() {
            return f64::NAN;
        }
        c.clamp(-1.0, 1.0).acos().to_degrees()
    }
}

/// Where the anatomy at a planning-CT point is in a frame: the target's motion, as the adapt
/// stage consumes it. A rigid registration answer is one ([`RigidTransform`]); a pure shift
/// is another (`VectorMm`: every point moves by it); a deformable field can be one as well.
///
/// Implementations must be deterministic (the same point gives bit-identical answers): the
/// adapt stage checks that the range half measured depths for the very points it corrects.
pub trait PointMap {
    /// The frame position of the anatomy at planning point `p`, mm.
    fn map_mm(&self, p: PointMm) -> PointMm;
}

impl PointMap for RigidTransform {
    #[inline]
    fn map_mm(&self, p: PointMm) -> PointMm {
        self.apply(&p)
    }
}

/// A pure translation: every point moves by the vector.
impl PointMap for VectorMm {
    #[inline]
    fn map_mm(&self, p: PointMm) -> PointMm {
        p + self
    }
}

impl<M: PointMap + ?Sized> PointMap for &M {
    #[inline]
    fn map_mm(&self, p: PointMm) -> PointMm {
        (**self).map_mm(p)
    }
}

/// How the in-room scanner's patient coordinates relate to the planning CT's: two Frames of
/// Reference and the rigid map between them (from a DICOM Spatial Registration object).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSetup {
    /// Maps a planning-CT point to the same point in in-room scanner coordinates.
    pub planning_to_room: RigidTransform,
    /// The planning CT's Frame of Reference UID.
    pub planning_frame_of_reference_uid: String,
    /// The in-room scanner's Frame of Reference UID: every frame of the session carries it.
    pub room_frame_of_reference_uid: String,
}

impl std::fmt::Display for RoomSetup {
    /// `planning → room: translation (x, y, z) mm, rotation x α°, y β°, z γ°`, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.planning_to_room.translation_mm;
        let [ax, ay, az] = self.planning_to_room.rotation_xyz_deg();
        write!(
            f,
            "planning → room: translation ({:.2}, {:.2}, {:.2}) mm, rotation x {ax:.3}°, y {ay:.3}°, z {az:.3}°",
            t.x, t.y, t.z
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn oblique_grid() -> Grid {
        let r = Rotation3::from_euler_angles(0.3, -0.2, 1.1);
        Grid::new(
            [5, 6, 7],
            PointMm::new(-100.0, 20.0, 300.0),
            [0.8, 1.2, 2.5],
            *r.matrix(),
        )
        .unwrap()
    }

    #[test]
    fn the_angle_of_a_near_identity_rotation_is_a_number() {
        // trace rounding past 3 made nalgebra's acos NaN for rotations this small
        let r = Rotation3::from_matrix_unchecked(nalgebra::Matrix3::new(
            1.0,
            1e-17,
            0.0,
            -1e-17,
            1.0 + 4.0 * f64::EPSILON,
            0.0,
            0.0,
            0.0,
            1.0,
        ));
        let t = RigidTransform {
            rotation: r,
            translation_mm: VectorMm::zeros(),
        };
        assert_eq!(t.angle_deg(), 0.0);
        let t = RigidTransform::from_xyz_deg([0.0, 0.0, 3.0], VectorMm::zeros());
        assert!((t.angle_deg() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn point_maps_of_a_rotation_about_a_centre_and_of_a_shift() {
        // 90° about +z through (10, 0, 0): (20, 0, 5) goes to (10, 10, 5), then +1 in z
        let r = Rotation3::from_axis_angle(&Vector3::z_axis(), std::f64::consts::FRAC_PI_2);
        let t = RigidTransform::about_center(r, PointMm::new(10.0, 0.0, 0.0), VectorMm::new(0.0, 0.0, 1.0));
        let q = t.map_mm(PointMm::new(20.0, 0.0, 5.0));
        assert_relative_eq!(q, PointMm::new(10.0, 10.0, 6.0), epsilon = 1e-12);
        // the centre only translates
        assert_relative_eq!(
            t.map_mm(PointMm::new(10.0, 0.0, 0.0)),
            PointMm::new(10.0, 0.0, 1.0),
            epsilon = 1e-12
        );
        let s = VectorMm::new(1.0, -2.0, 3.0);
        assert_eq!(
            s.map_mm(PointMm::new(1.0, 1.0, 1.0)),
            PointMm::new(2.0, -1.0, 4.0)
        );
    }

    #[test]
    fn index_patient_round_trip_on_oblique_grid() {
        let g = oblique_grid();
        for ijk in [[0.0, 0.0, 0.0], [4.0, 5.0, 6.0], [1.25, -3.5, 10.75]] {
            let back = g.patient_to_index(&g.index_to_patient(ijk));
            for a in 0..3 {
                assert_relative_eq!(back[a], ijk[a], epsilon = 1e-10);
            }
        }
        // one step along i moves spacing[0] mm along the first direction cosine
        let step = g.index_to_patient([1.0, 0.0, 0.0]) - g.origin_mm();
        assert_relative_eq!(step.norm(), 0.8, epsilon = 1e-12);
        assert_relative_eq!(step / 0.8, g.direction().column(0).into_owned(), epsilon = 1e-12);
    }

    #[test]
    fn a_mapped_grid_puts_every_voxel_where_the_transform_takes_it() {
        let g = oblique_grid();
        let t = RigidTransform::from_xyz_deg([1.5, -1.0, 3.0], VectorMm::new(-120.0, 250.0, -900.0));
        let m = g.mapped(&t);
        for ijk in [[0.0, 0.0, 0.0], [4.0, 5.0, 6.0], [1.25, -3.5, 10.75]] {
            let expected = t.apply(&g.index_to_patient(ijk));
            assert_relative_eq!(m.index_to_patient(ijk), expected, epsilon = 1e-9);
            let back = m.patient_to_index(&expected);
            for a in 0..3 {
                assert_relative_eq!(back[a], ijk[a], epsilon = 1e-9);
            }
        }
        // the cached matrices are those a fresh grid would compute
        let fresh = m.clone().revalidated().unwrap();
        assert_relative_eq!(
            m.patient_to_index_matrix(),
            fresh.patient_to_index_matrix(),
            epsilon = 1e-12
        );
        assert_eq!(m.dims(), g.dims());
        assert_eq!(m.spacing_mm(), g.spacing_mm());
    }

    #[test]
    fn rejects_bad_grids() {
        let o = PointMm::origin();
        assert!(matches!(
            Grid::axis_aligned([0, 1, 1], o, [1.0; 3]),
            Err(GeometryError::EmptyDimension { .. })
        ));
        assert!(matches!(
            Grid::axis_aligned([1, 1, 1], o, [1.0, -1.0, 1.0]),
            Err(GeometryError::BadSpacing { .. })
        ));
        let mut skew = Matrix3::identity();
        skew[(0, 1)] = 0.1;
        assert!(matches!(
            Grid::new([1, 1, 1], o, [1.0; 3], skew),
            Err(GeometryError::NotOrthonormal { .. })
        ));
    }

    #[test]
    fn rigid_inverse_and_compose() {
        let t = RigidTransform::from_xyz_deg([2.0, -3.0, 4.0], VectorMm::new(5.0, -6.0, 7.0));
        let p = PointMm::new(10.0, 20.0, -30.0);
        let back = t.inverse().apply(&t.apply(&p));
        assert_relative_eq!(back, p, epsilon = 1e-10);
        let a = t.rotation_xyz_deg();
        assert_relative_eq!(a[0], 2.0, epsilon = 1e-10);
        assert_relative_eq!(a[1], -3.0, epsilon = 1e-10);
        assert_relative_eq!(a[2], 4.0, epsilon = 1e-10);
        let m = t.matrix();
        let q = m * nalgebra::Vector4::new(p.x, p.y, p.z, 1.0);
        assert_relative_eq!(PointMm::new(q.x, q.y, q.z), t.apply(&p), epsilon = 1e-10);
        let c = PointMm::new(1.0, 2.0, 3.0);
        let about = RigidTransform::about_center(t.rotation, c, VectorMm::zeros());
        assert_relative_eq!(about.apply(&c), c, epsilon = 1e-10);
    }
}
