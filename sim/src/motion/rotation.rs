//! The tumor region's rotation per frame: angles that follow the breathing phase plus a slow
//! drift, and the rigid transform a frame shows (rotation about the tumor centre, then the
//! tumor's displacement) — the truth the scoring maps each spot's target through.

use ionguide::geometry::RigidTransform;
use ionguide::units::{PointMm, VectorMm};
use nalgebra::Rotation3;

use super::trace::MotionError;

/// Rotation of the anatomy about the tumor centre, per patient axis (LPS x, y, z), degrees.
///
/// Frame `n` rotates by `phase_n · inhale_deg + drift_deg_per_min · minutes_n`, with
/// `phase_n` the breathing phase of [`TumorMotionModel::breathing_signal`]
/// (0 at end-exhale, 1 at end-inhale, or centred on the mid-position) — so the anatomy tilts
/// as it moves, as a lung tumor's surroundings do — and the three angles combined as
/// `R = Rz·Ry·Rx` ([`RigidTransform::from_xyz_deg`]).
///
/// [`TumorMotionModel::breathing_signal`]: super::tumor::TumorMotionModel::breathing_signal
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RotationModel {
    /// Rotation at end-inhale relative to end-exhale, degrees about x, y, z.
    pub inhale_deg: [f64; 3],
    /// Slow drift, degrees per minute about x, y, z.
    pub drift_deg_per_min: [f64; 3],
}

impl RotationModel {
    /// Angles `[x, y, z]` (degrees) per frame from the breathing phase and frame times.
    pub fn angles_deg(&self, phase: &[f64], t_s: &[f64]) -> Result<Vec<[f64; 3]>, MotionError> {
        for (name, v) in [
            ("rotation inhale_deg", self.inhale_deg),
            ("rotation drift_deg_per_min", self.drift_deg_per_min),
        ] {
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(MotionError::BadParameter {
                    name,
                    value: *bad,
                    reason: "must be finite",
                });
            }
        }
        let t0 = t_s.first().copied().unwrap_or(0.0);
        Ok(phase
            .iter()
            .zip(t_s)
            .map(|(f, t)| {
                let minutes = (t - t0) / 60.0;
                std::array::from_fn(|a| f * self.inhale_deg[a] + self.drift_deg_per_min[a] * minutes)
            })
            .collect())
    }
}

/// What a frame shows of a planning point `q`: rotated by `angles_deg` about the planning
/// tumor centre, then moved by the tumor's displacement — `T(q) = R·(q − c) + c + d`. The
/// tumor centre goes to `c + d` whatever the rotation.
pub fn frame_transform(
    tumor_center_mm: [f64; 3],
    displacement_mm: [f64; 3],
    angles_deg: [f64; 3],
) -> RigidTransform {
    let r = RigidTransform::from_xyz_deg(angles_deg, VectorMm::zeros()).rotation;
    RigidTransform::about_center(r, PointMm::from(tumor_center_mm), VectorMm::from(displacement_mm))
}

/// The rotation angle (about its axis) of `angles_deg`, degrees.
pub fn angle_deg(angles_deg: [f64; 3]) -> f64 {
    let [a, b, c] = angles_deg.map(f64::to_radians);
    Rotation3::from_euler_angles(a, b, c).angle().to_degrees()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angles_follow_the_phase_and_drift() {
        let m = RotationModel {
            inhale_deg: [2.0, 0.0, -4.0],
            drift_deg_per_min: [0.0, 1.0, 0.0],
        };
        let a = m.angles_deg(&[0.0, 0.5, 1.0], &[0.0, 30.0, 60.0]).unwrap();
        assert_eq!(a, vec![[0.0, 0.0, 0.0], [1.0, 0.5, -2.0], [2.0, 1.0, -4.0]]);
        assert!(RotationModel {
            inhale_deg: [f64::NAN, 0.0, 0.0],
            ..m
        }
        .angles_deg(&[0.0], &[0.0])
        .is_err());
    }

    #[test]
    fn the_frame_transform_keeps_the_moved_centre_and_rotates_about_it() {
        let c = [10.0, -20.0, 5.0];
        let t = frame_transform(c, [1.0, 2.0, 3.0], [0.0, 0.0, 90.0]);
        let centre = t.apply(&PointMm::from(c));
        assert!((centre - PointMm::new(11.0, -18.0, 8.0)).norm() < 1e-12);
        // 10 mm along +x from the centre ends 10 mm along +y from the moved centre
        let q = t.apply(&PointMm::new(20.0, -20.0, 5.0));
        assert!((q - PointMm::new(11.0, -8.0, 8.0)).norm() < 1e-12, "{q:?}");
        assert!((angle_deg([3.0, 0.0, 4.0]) - 5.0).abs() < 0.01);
    }
}
