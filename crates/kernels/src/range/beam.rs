//! IEC 61217 beam geometry: source position, beam's-eye-view axes and spot rays in patient
//! (DICOM LPS) coordinates.
//!
//! Derivation (IEC 61217; DICOM PS3.3 C.8.8.25.6.1–.6.3 "Gantry Angle", "Patient Support
//! Angle"; the same matrices as CERR's `collimator2Scan.m`):
//!
//! - Fixed system `f`: `X_f` to the right seen from the foot of the couch facing the gantry,
//!   `Y_f` from isocenter toward the gantry, `Z_f` up.
//! - Gantry system `g`: rotated by the gantry angle θ about `Y_f`. Its `Z_g` points from
//!   isocenter to the source: `Z_g = (sin θ, 0, cos θ)_f`, `X_g = (cos θ, 0, −sin θ)_f`,
//!   `Y_g = Y_f`. Gantry 90° puts the source on `+X_f`.
//! - Patient support system `s`: rotated by the couch angle φ about `Z_f`, counter-clockwise
//!   seen from above for φ > 0: `v_f = R_z(φ) · v_s`, so `v_s = R_z(−φ) · v_f`. The patient
//!   lies on the support and turns with it.
//! - Patient position (DICOM C.7.3.1.1.2) maps support axes to LPS:
//!   HFS `X_s → +x (L)`, `Y_s → +z (S)`, `Z_s → −y (A)`;
//!   HFP `X_s → −x`, `Y_s → +z`, `Z_s → +y` (prone: posterior up, patient's left on −X_s);
//!   FFS `X_s → −x`, `Y_s → −z`, `Z_s → −y`; FFP `X_s → +x`, `Y_s → −z`, `Z_s → +y`.
//!
//! So for HFS at couch 0, gantry 0 puts the source anterior (−y), gantry 90 on the patient's
//! left (+x), 180 posterior, 270 right; couch 90 with gantry 90 puts the source toward the
//! patient's feet.
//!
//! Spot rays: a spot at `(x, y)` in the isocenter plane (`X_g`, `Y_g`) diverges from two
//! virtual sources at distances `SAD_x`, `SAD_y` upstream. In gantry coordinates with `z`
//! toward the source the ray is `(x(1 − z/SAD_x), y(1 − z/SAD_y), z)`, a straight line;
//! infinite SADs give a parallel beam.

use super::raytrace::Ray;
use super::RangeError;
use crate::plan::IonBeam;
use crate::units::{PointMm, VectorMm};
use nalgebra::Matrix3;

/// How the patient lies on the support (DICOM Patient Position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatientPosition {
    /// Head first, supine.
    Hfs,
    /// Head first, prone.
    Hfp,
    /// Feet first, supine.
    Ffs,
    /// Feet first, prone.
    Ffp,
}

impl PatientPosition {
    /// Parses a DICOM code; `None` for anything not supported.
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim().to_ascii_uppercase().as_str() {
            "HFS" => Some(Self::Hfs),
            "HFP" => Some(Self::Hfp),
            "FFS" => Some(Self::Ffs),
            "FFP" => Some(Self::Ffp),
            _ => None,
        }
    }

    /// Columns: the LPS images of the support axes `X_s`, `Y_s`, `Z_s`.
    fn support_to_lps(self) -> Matrix3<f64> {
        let (x, y, z) = match self {
            Self::Hfs => ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]),
            Self::Hfp => ([-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]),
            Self::Ffs => ([-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]),
            Self::Ffp => ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]),
        };
        Matrix3::from_columns(&[x.into(), y.into(), z.into()])
    }
}

/// One beam's geometry in patient LPS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamGeometry {
    /// Isocenter, mm.
    pub isocenter_mm: PointMm,
    /// Unit vector from isocenter toward the source (`Z_g`).
    pub to_source: VectorMm,
    /// Beam's-eye-view X axis (`X_g`) in LPS.
    pub bev_x: VectorMm,
    /// Beam's-eye-view Y axis (`Y_g`) in LPS.
    pub bev_y: VectorMm,
    /// Virtual source-axis distances `[SAD_x, SAD_y]`, mm (infinite: parallel).
    pub sad_mm: [f64; 2],
}

impl BeamGeometry {
    /// Geometry from angles in degrees; `sad_mm` may be infinite.
    pub fn new(
        position: PatientPosition,
        gantry_deg: f64,
        couch_deg: f64,
        isocenter_mm: PointMm,
        sad_mm: [f64; 2],
    ) -> Self {
        let (st, ct) = gantry_deg.to_radians().sin_cos();
        let (sp, cp) = couch_deg.to_radians().sin_cos();
        // Fixed → support: R_z(−φ).
        let fixed_to_support = Matrix3::new(cp, sp, 0.0, -sp, cp, 0.0, 0.0, 0.0, 1.0);
        let m = position.support_to_lps() * fixed_to_support;
        let z_g = m * VectorMm::new(st, 0.0, ct);
        let x_g = m * VectorMm::new(ct, 0.0, -st);
        let y_g = m * VectorMm::new(0.0, 1.0, 0.0);
        BeamGeometry {
            isocenter_mm,
            to_source: z_g,
            bev_x: x_g,
            bev_y: y_g,
            sad_mm,
        }
    }

    /// Geometry of a plan beam. `default_sad_mm` applies when the plan has none; a missing
    /// patient position means HFS (with a warning).
    pub fn from_beam(beam: &IonBeam, default_sad_mm: [f64; 2]) -> Result<Self, RangeError> {
        let position = match beam.patient_position.as_deref() {
            None => {
                tracing::warn!(beam = beam.number, "no patient position in plan; assuming HFS");
                PatientPosition::Hfs
            }
            Some(code) => {
                PatientPosition::from_code(code).ok_or_else(|| RangeError::UnsupportedPatientPosition {
                    beam: beam.number,
                    position: code.to_string(),
                })?
            }
        };
        let sad = beam.virtual_sad_mm.unwrap_or(default_sad_mm);
        let bad = |reason: String| RangeError::BadBeamGeometry {
            beam: beam.number,
            reason,
        };
        if !beam.gantry_angle_deg.is_finite() || !beam.couch_angle_deg.is_finite() {
            return Err(bad(format!(
                "non-finite angles gantry {} couch {}",
                beam.gantry_angle_deg, beam.couch_angle_deg
            )));
        }
        if !beam.isocenter_mm.iter().all(|v| v.is_finite()) {
            return Err(bad(format!("non-finite isocenter {:?}", beam.isocenter_mm)));
        }
        if sad.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(bad(format!("virtual SAD must be > 0 mm, got {sad:?}")));
        }
        Ok(Self::new(
            position,
            beam.gantry_angle_deg,
            beam.couch_angle_deg,
            beam.isocenter_mm,
            sad,
        ))
    }

    /// The nominal source point (`SAD_x` along `Z_g`; `None` for a parallel beam).
    pub fn source_mm(&self) -> Option<PointMm> {
        let s = self.sad_mm[0];
        s.is_finite().then(|| self.isocenter_mm + self.to_source * s)
    }

    /// Point of the spot ray `(x, y)` at height `z_mm` above the isocenter plane (toward the
    /// source).
    pub fn spot_point(&self, x_mm: f64, y_mm: f64, z_mm: f64) -> PointMm {
        let fx = if self.sad_mm[0].is_finite() {
            1.0 - z_mm / self.sad_mm[0]
        } else {
            1.0
        };
        let fy = if self.sad_mm[1].is_finite() {
            1.0 - z_mm / self.sad_mm[1]
        } else {
            1.0
        };
        self.isocenter_mm + self.bev_x * (x_mm * fx) + self.bev_y * (y_mm * fy) + self.to_source * z_mm
    }

    /// The spot's ray, starting `upstream_mm` above the isocenter plane and travelling
    /// downstream (away from the source). `t = 0` is that start point.
    pub fn spot_ray(&self, x_mm: f64, y_mm: f64, upstream_mm: f64) -> Ray {
        let start = self.spot_point(x_mm, y_mm, upstream_mm);
        let iso_point = self.spot_point(x_mm, y_mm, 0.0);
        Ray::new(start, iso_point - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn couch_zero_axes_are_orthonormal_and_right_handed() {
        for g in [0.0, 37.0, 90.0, 211.0] {
            let b = BeamGeometry::new(
                PatientPosition::Hfs,
                g,
                15.0,
                PointMm::origin(),
                [f64::INFINITY; 2],
            );
            assert!((b.bev_x.cross(&b.bev_y) - b.to_source).norm() < 1e-12);
        }
    }
}
