//! Deformable tracking in the pipeline (`[deformable]`, off by default): the register stage
//! runs a demons registration of the frame on top of the rigid answer, carries the planning
//! target into the frame and holds when the result is implausible or the target's volume
//! changed beyond the limit; the range and adapt stages move every spot through
//! rigid ∘ deformation ([`FullMotion`]); the adapt stage counts the spots whose mapped Bragg
//! point falls outside the frame's target plus a margin ([`FrameTarget::switch_off`]); the
//! link stage writes a frame-target record (audit kind 9) and puts it in the telemetry.
//!
//! Spots switched off are recorded (audit, telemetry), not withheld from the wire: a
//! correction set carries one entry per planned spot and `SpotCorrection` has no weight or
//! on/off flag (`docs/protocol.md`), so the controller cannot be told without a protocol
//! change.

use crate::audit::TargetRecord;
use crate::correction::HoldReason;
use crate::geometry::{Grid, PointMap, RigidTransform};
use crate::register::deform::{DeformError, DeformFailure};
use crate::register::{
    BoxMm, DeformFixed, DeformOptions, DeformVerdict, DeformableRegistrar, DeformableRegistration,
    DisplacementField, PropagatedTarget,
};
use crate::units::PointMm;
use crate::volume::{CtVolume, MaskVolume};

/// Deformable tracking's settings for a session (from `[deformable]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeformSettings {
    /// The kernel's options, its quality limits included (field size, Jacobian, inverse
    /// consistency, similarity).
    pub options: DeformOptions,
    /// Largest |volume change from the plan|, %: beyond it, `target_volume_changed`.
    pub max_volume_change_pct: f64,
    /// A spot whose mapped Bragg point lies farther than this from the frame's target is
    /// switched off, mm.
    pub spot_off_margin_mm: f64,
    /// Start from the previous accepted frame's field.
    pub warm_start: bool,
}

impl DeformSettings {
    /// The settings of a `[deformable]` table (validated by the configuration's loader).
    pub fn from_config(c: &crate::config::DeformableConfig) -> Self {
        let mut options = DeformOptions::default().with_spacing_mm(c.spacing_mm);
        options.max_field_mm = c.max_field_mm;
        options.min_jacobian = c.min_jacobian;
        options.max_inverse_error_mm = c.max_inverse_error_mm;
        options.min_similarity = c.min_similarity;
        DeformSettings {
            options,
            max_volume_change_pct: c.max_volume_change_pct,
            spot_off_margin_mm: c.spot_off_margin_mm,
            warm_start: c.warm_start,
        }
    }
}

/// The planning side of deformable tracking, prepared once per session.
#[derive(Debug, Clone)]
pub struct DeformSession {
    /// The planning CT's pyramid over the region.
    pub fixed: DeformFixed,
    /// The planning target, on the planning CT's grid.
    pub planning_mask: MaskVolume,
    /// Settings.
    pub settings: DeformSettings,
}

impl DeformSession {
    /// Prepares the planning side over `region` (the rigid registration's region).
    pub fn new(
        planning_ct: &CtVolume,
        region: BoxMm,
        planning_mask: MaskVolume,
        settings: DeformSettings,
    ) -> Result<Self, DeformError> {
        let fixed = DeformFixed::new(planning_ct, region, settings.options.clone())?;
        Ok(DeformSession {
            fixed,
            planning_mask,
            settings,
        })
    }

    /// Registers `frame` on top of `rigid` and carries the target into it, on an
    /// axis-aligned grid at the frame's voxel spacing covering the region (grown by the
    /// field's largest allowed size) as the rigid transform places it — not the whole frame,
    /// whose mask would cost tens of megabytes per frame for the same answer.
    pub fn register(
        &self,
        registrar: &mut DeformableRegistrar,
        frame: &CtVolume,
        rigid: &RigidTransform,
        warm: Option<&DisplacementField>,
    ) -> Result<FrameTarget, DeformError> {
        let registration = registrar.register(&self.fixed, frame, rigid, warm)?;
        // (a grid that cannot be built — non-finite corners — falls back to the frame's own)
        let grid = self
            .target_grid(frame.grid(), rigid)
            .unwrap_or_else(|| frame.grid().clone());
        let target = registration.propagate(&self.planning_mask, &grid);
        Ok(FrameTarget {
            registration,
            target,
            spots_off: Vec::new(),
            spots_total: 0,
        })
    }

    /// The part of the frame's own voxel lattice (same spacing, orientation and voxel
    /// centres, so the target is measured on the voxels the scanner acquired) that covers the
    /// region, grown by the pad and the largest allowed field, as `rigid` places it; it may
    /// reach past the frame's edges.
    fn target_grid(&self, frame_grid: &Grid, rigid: &RigidTransform) -> Option<Grid> {
        let reach_mm = self.settings.options.pad_mm + self.settings.options.max_field_mm;
        let r = self.fixed.region();
        let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        for c in 0..8 {
            let p = PointMm::new(
                if c & 1 != 0 {
                    r.hi_mm.x + reach_mm
                } else {
                    r.lo_mm.x - reach_mm
                },
                if c & 2 != 0 {
                    r.hi_mm.y + reach_mm
                } else {
                    r.lo_mm.y - reach_mm
                },
                if c & 4 != 0 {
                    r.hi_mm.z + reach_mm
                } else {
                    r.lo_mm.z - reach_mm
                },
            );
            let ijk = frame_grid.patient_to_index(&rigid.apply(&p));
            for a in 0..3 {
                lo[a] = lo[a].min(ijk[a].floor());
                hi[a] = hi[a].max(ijk[a].ceil());
            }
        }
        if !lo.iter().chain(&hi).all(|v| v.is_finite()) {
            return None;
        }
        let dims = [0, 1, 2].map(|a| (hi[a] - lo[a]) as usize + 1);
        Grid::new(
            dims,
            frame_grid.index_to_patient(lo),
            frame_grid.spacing_mm(),
            *frame_grid.direction(),
        )
        .ok()
    }
}

/// The target in one frame: the deformable registration and the planning target carried
/// through it.
#[derive(Debug, Clone)]
pub struct FrameTarget {
    /// The registration (its rigid transform, field, inverse, checks).
    pub registration: DeformableRegistration,
    /// The target in the frame (mask, volume, change, centroid).
    pub target: PropagatedTarget,
    /// Plan-order indices of the spots switched off (filled by the adapt stage).
    pub spots_off: Vec<u32>,
    /// Spots checked (0 until the adapt stage ran).
    pub spots_total: u32,
}

/// Why a frame's deformable result holds the beam, and the detail to audit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetHold {
    /// The registration failed one of its checks.
    Implausible(DeformFailure),
    /// The target's volume changed beyond the limit.
    VolumeChanged {
        /// Change, %.
        change_pct: f64,
        /// Limit, %.
        limit_pct: f64,
    },
}

impl TargetHold {
    /// The hold code.
    pub fn reason(&self) -> HoldReason {
        match self {
            TargetHold::Implausible(_) => HoldReason::DeformationImplausible,
            TargetHold::VolumeChanged { .. } => HoldReason::TargetVolumeChanged,
        }
    }
}

impl FrameTarget {
    /// The checks in hold order: the registration's own verdict (field size, folding,
    /// inverse consistency, similarity), then the volume change.
    pub fn check(&self, max_volume_change_pct: f64) -> Result<(), TargetHold> {
        if let DeformVerdict::Reject(why) = self.registration.verdict {
            return Err(TargetHold::Implausible(why));
        }
        let change_pct = self.target.volume_change_pct;
        // NaN (an empty planning target cannot happen: the session refuses it) holds too
        if change_pct.is_nan() || change_pct.abs() > max_volume_change_pct {
            return Err(TargetHold::VolumeChanged {
                change_pct,
                limit_pct: max_volume_change_pct,
            });
        }
        Ok(())
    }

    /// Records which spots are switched off: those whose planned Bragg point (`planned`,
    /// plan order), mapped through rigid ∘ deformation, lies farther than `margin_mm` from
    /// every voxel centre of the frame's target and not inside it (trilinear mask value
    /// below ½ there).
    pub fn switch_off(&mut self, planned: impl Iterator<Item = PointMm>, margin_mm: f64) {
        self.spots_off.clear();
        self.spots_total = 0;
        let mask = &self.target.mask;
        let g = mask.grid();
        let spacing = g.spacing_mm();
        let dims = g.dims();
        let reach = [0, 1, 2].map(|a| (margin_mm / spacing[a]).ceil() as isize + 1);
        let margin2 = margin_mm * margin_mm;
        for (n, p) in planned.enumerate() {
            let q = self.registration.map_mm(&p);
            self.spots_total += 1;
            if mask.sample_linear(&q).is_some_and(|v| v >= 0.5) {
                continue;
            }
            let c = g.patient_to_index(&q);
            let centre = [0, 1, 2].map(|a| c[a].round() as isize);
            let range = |a: usize| {
                let lo = (centre[a] - reach[a]).max(0);
                let hi = (centre[a] + reach[a]).min(dims[a] as isize - 1);
                lo..=hi
            };
            let mut near = false;
            'search: for k in range(2) {
                for j in range(1) {
                    for i in range(0) {
                        let (i, j, k) = (i as usize, j as usize, k as usize);
                        if mask.get(i, j, k).is_some_and(|&v| v != 0)
                            && (g.index_to_patient([i as f64, j as f64, k as f64]) - q).norm_squared()
                                <= margin2
                        {
                            near = true;
                            break 'search;
                        }
                    }
                }
            }
            if !near {
                self.spots_off.push(n as u32);
            }
        }
    }

    /// The audit record of this frame's target.
    pub fn record(&self, frame_id: u64) -> TargetRecord {
        let r = &self.registration;
        let t = &self.target;
        TargetRecord {
            frame_id,
            accepted: r.verdict.is_accept(),
            volume_cc: t.volume_cc,
            planned_volume_cc: t.planned_volume_cc,
            volume_change_pct: t.volume_change_pct,
            centroid_mm: t.centroid_mm.map(|c| [c.x, c.y, c.z]),
            jacobian_min: r.jacobian_min,
            field_max_mm: r.field_max_mm,
            inverse_error_mm: r.inverse_error_mm,
            similarity_ncc: r.similarity_ncc,
            spots_total: self.spots_total,
            spots_off: self.spots_off.clone(),
        }
    }
}

/// The target in a frame as the telemetry carries it: [`TargetRecord`]'s numbers, the
/// switched-off spots counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetSummary {
    /// The deformable registration passed its checks.
    pub accepted: bool,
    /// Volume in the frame, cm³.
    pub volume_cc: f64,
    /// Change from the plan, %.
    pub volume_change_pct: f64,
    /// Centroid in the frame, patient mm.
    pub centroid_mm: Option<[f64; 3]>,
    /// Smallest Jacobian determinant of the field.
    pub jacobian_min: f64,
    /// Largest displacement, mm.
    pub field_max_mm: f64,
    /// Spots switched off.
    pub spots_off: u32,
    /// Spots checked.
    pub spots_total: u32,
}

impl From<&TargetRecord> for TargetSummary {
    fn from(t: &TargetRecord) -> Self {
        TargetSummary {
            accepted: t.accepted,
            volume_cc: t.volume_cc,
            volume_change_pct: t.volume_change_pct,
            centroid_mm: t.centroid_mm,
            jacobian_min: t.jacobian_min,
            field_max_mm: t.field_max_mm,
            spots_off: t.spots_off.len() as u32,
            spots_total: t.spots_total,
        }
    }
}

/// The target's motion with deformable tracking: `φ(x) = T(x + u(x))`, the rigid transform
/// after the field (rotation included, whatever `planning.follow_rotation` says: the field
/// was fitted on top of the full rigid answer, so the two only describe the frame together).
#[derive(Debug, Clone, Copy)]
pub struct FullMotion<'a>(pub &'a DeformableRegistration);

impl PointMap for FullMotion<'_> {
    #[inline]
    fn map_mm(&self, p: PointMm) -> PointMm {
        self.0.map_mm(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::deform::DeformFailure;
    use crate::register::FieldGrid;

    /// A ball of radius 10 mm about the origin on a 1 mm grid, the identity map.
    fn ball_target(verdict: DeformVerdict, change_pct: f64) -> FrameTarget {
        let grid = Grid::axis_aligned([41, 41, 41], PointMm::new(-20.0, -20.0, -20.0), [1.0; 3]).unwrap();
        let mut mask = MaskVolume::filled(grid.clone(), 0);
        for (o, m) in mask.as_slice_mut().iter_mut().enumerate() {
            let p = grid.index_to_patient([(o % 41) as f64, ((o / 41) % 41) as f64, (o / 1681) as f64]);
            *m = u8::from(p.coords.norm() <= 10.0);
        }
        let fg = FieldGrid {
            origin_mm: [-20.0; 3],
            spacing_mm: 2.0,
            dims: [21; 3],
        };
        FrameTarget {
            registration: DeformableRegistration {
                rigid: RigidTransform::identity(),
                field: DisplacementField::zeros(fg),
                inverse: DisplacementField::zeros(fg),
                iterations: 0,
                similarity_ncc: 1.0,
                rigid_similarity_ncc: 1.0,
                jacobian_min: 1.0,
                jacobian_max: 1.0,
                field_max_mm: 0.0,
                inverse_error_mm: 0.0,
                verdict,
            },
            target: PropagatedTarget {
                mask,
                voxels: 0,
                volume_cc: 1.0,
                planned_volume_cc: 1.0,
                volume_change_pct: change_pct,
                centroid_mm: None,
                planned_centroid_mm: None,
            },
            spots_off: Vec::new(),
            spots_total: 0,
        }
    }

    #[test]
    fn spots_farther_than_the_margin_from_the_target_are_switched_off() {
        let mut t = ball_target(DeformVerdict::Accept, 0.0);
        // inside; 2 mm outside the surface; 3.9 mm outside (the nearest voxel centre, on the
        // axis at 10 mm, is 3.9 mm away); 5 mm outside; far away
        let points = [0.0, 12.0, 13.9, 15.0, 40.0].map(|x| PointMm::new(x, 0.0, 0.0));
        t.switch_off(points.into_iter(), 4.0);
        assert_eq!(t.spots_total, 5);
        assert_eq!(t.spots_off, vec![3, 4]);
        t.switch_off(points.into_iter(), 0.0);
        assert_eq!(t.spots_off, vec![1, 2, 3, 4]);
        let record = t.record(7);
        assert_eq!(
            (record.frame_id, record.spots_total, record.spots_off.len()),
            (7, 5, 4)
        );
    }

    #[test]
    fn an_implausible_field_holds_before_the_volume_is_looked_at() {
        let why = DeformFailure::Folding {
            jacobian_min: -0.1,
            limit: 0.2,
        };
        let t = ball_target(DeformVerdict::Reject(why), -40.0);
        assert_eq!(t.check(25.0), Err(TargetHold::Implausible(why)));
        assert_eq!(
            t.check(25.0).unwrap_err().reason(),
            HoldReason::DeformationImplausible
        );
        let t = ball_target(DeformVerdict::Accept, -40.0);
        let hold = t.check(25.0).unwrap_err();
        assert_eq!(hold.reason(), HoldReason::TargetVolumeChanged);
        assert_eq!(ball_target(DeformVerdict::Accept, 24.9).check(25.0), Ok(()));
        assert!(ball_target(DeformVerdict::Accept, f64::NAN).check(25.0).is_err());
    }
}
