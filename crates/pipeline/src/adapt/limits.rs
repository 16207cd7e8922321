//! The safety limits, and the hold a frame gets when one trips: which check, on which spot,
//! by how much.

use crate::correction::HoldReason;
use crate::register::{QualityFailure, Registration, Verdict};
use crate::units::{Mm, MmWe, VectorMm};

use super::AdaptError;

/// The safety limits (from the session configuration), checked by
/// [`AdaptPlan::new`](super::AdaptPlan::new).
///
/// Built by name, as a struct literal, and deliberately not `#[non_exhaustive]` and without
/// `Default`: four numbers in a row are easy to swap, and a limit added later must be set
/// wherever limits are made rather than defaulted silently. The lengths carry their kind in
/// the type, so a water-equivalent range limit cannot be given where a lateral one is meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SafetyLimits {
    /// Largest lateral correction `|(Δx, Δy)|` at the isocenter plane.
    pub max_lateral: Mm,
    /// Largest `|ΔWEPL|` (and delivered range change).
    pub max_range: MmWe,
    /// Largest change of the tumor shift between consecutive corrected frames.
    pub max_jump: Mm,
    /// Smallest registration NCC that may drive the beam.
    pub min_ncc: f64,
    /// Largest rotation of the registration's transform (its angle about its axis, degrees)
    /// the spots may follow; beyond it the frame is held (the patient's posture changed
    /// more than a spot correction should absorb).
    pub max_rotation_deg: f64,
}

impl SafetyLimits {
    pub(super) fn validate(&self) -> Result<(), AdaptError> {
        for (name, v) in [
            ("max_lateral", self.max_lateral.get()),
            ("max_range", self.max_range.get()),
            ("max_jump", self.max_jump.get()),
            ("max_rotation_deg", self.max_rotation_deg),
        ] {
            if v.is_nan() || v < 0.0 {
                return Err(AdaptError::BadOption {
                    name,
                    value: v,
                    why: "must be ≥ 0 (infinite: no limit)",
                });
            }
        }
        if !(-1.0..=1.0).contains(&self.min_ncc) {
            return Err(AdaptError::BadOption {
                name: "min_ncc",
                value: self.min_ncc,
                why: "must lie in [-1, 1]",
            });
        }
        Ok(())
    }

    /// The frame-level checks, in hold order: the registration is usable, its NCC at least
    /// `min_ncc`, its shift finite, and (once a frame was corrected) the shift moved at most
    /// `max_jump` since `last_shift_mm`.
    pub(super) fn check_registration(
        &self,
        reg: &Registration,
        last_shift_mm: Option<VectorMm>,
    ) -> Result<(), HoldDetail> {
        use HoldCheck as C;
        use HoldReason as R;
        let ncc = reg.similarity_ncc;
        if !reg.is_usable() {
            return Err(HoldDetail::new(
                registration_hold_reason(reg),
                C::RegistrationNotUsable,
                None,
                ncc,
                f64::NAN,
            ));
        }
        if !within(self.min_ncc, ncc) {
            return Err(HoldDetail::new(
                R::RegistrationFailed,
                C::SimilarityBelowMin,
                None,
                ncc,
                self.min_ncc,
            ));
        }
        let s = reg.tumor_shift_mm;
        if !s.iter().all(|v| v.is_finite()) {
            return Err(HoldDetail::new(
                R::RegistrationFailed,
                C::NonFiniteShift,
                None,
                f64::NAN,
                f64::NAN,
            ));
        }
        let rotation_deg = reg.transform.angle_deg();
        if !within(rotation_deg, self.max_rotation_deg) {
            return Err(HoldDetail::new(
                R::RegistrationFailed,
                C::RotationOverLimit,
                None,
                rotation_deg,
                self.max_rotation_deg,
            ));
        }
        if let Some(prev) = last_shift_mm {
            let jump = (s - prev).norm();
            if !within(jump, self.max_jump.get()) {
                return Err(HoldDetail::new(
                    R::JumpOverLimit,
                    C::Jump,
                    None,
                    jump,
                    self.max_jump.get(),
                ));
            }
        }
        Ok(())
    }
}

/// The hold code of an unusable registration: a rigid answer that cannot describe the frame
/// (its residual-deformation check failed) has its own, `residual_deformation`; every other
/// failure is `registration_failed`.
pub(crate) fn registration_hold_reason(reg: &Registration) -> HoldReason {
    match reg.verdict {
        Verdict::Reject(QualityFailure::ResidualDeformation { .. }) => HoldReason::ResidualDeformation,
        _ => HoldReason::RegistrationFailed,
    }
}

/// Which check a held frame failed (for the detail text; the [`HoldReason`] is the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldCheck {
    /// The registration's own verdict (not converged, poor overlap, …).
    RegistrationNotUsable,
    /// NCC below the limit.
    SimilarityBelowMin,
    /// The tumor shift is not finite.
    NonFiniteShift,
    /// The shift jumped since the last corrected frame.
    Jump,
    /// The registration's rotation is over the limit.
    RotationOverLimit,
    /// The WEPL was measured for another target motion (or not at all).
    WeplShiftMismatch,
    /// The WEPL has a different spot count than the plan.
    WeplCountMismatch,
    /// A spot's shifted target lies outside the traced frame.
    WeplUnavailable,
    /// Lateral correction over the limit.
    Lateral,
    /// Requested range change over the limit.
    Range,
    /// Delivered (snapped) range change over the limit.
    DeliveredRange,
    /// The new range has no energy in the table.
    RangeOutsideTable,
    /// The new energy is outside the deliverable span.
    EnergyOutsideSpan,
    /// The range-shifter setting is outside the deliverable span.
    ShifterOutsideSpan,
}

/// Why a frame is held: a small `Copy` value, formatted (off the hot path) by its `Display`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldDetail {
    /// The hold code.
    pub reason: HoldReason,
    /// Which check failed.
    pub check: HoldCheck,
    /// The spot (plan order) it failed on, if a spot check.
    pub spot: Option<u32>,
    /// The offending value (mm, MeV/u, NCC, or a count; NaN where none).
    pub value: f64,
    /// The limit it was held against (NaN where none).
    pub limit: f64,
}

impl HoldDetail {
    pub(super) fn new(
        reason: HoldReason,
        check: HoldCheck,
        spot: Option<usize>,
        value: f64,
        limit: f64,
    ) -> Self {
        HoldDetail {
            reason,
            check,
            spot: spot.map(|s| s as u32),
            value,
            limit,
        }
    }
}

impl std::fmt::Display for HoldDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.reason)?;
        if let Some(s) = self.spot {
            write!(f, "spot {s}: ")?;
        }
        let (v, l) = (self.value, self.limit);
        match self.check {
            HoldCheck::RegistrationNotUsable => write!(f, "registration not usable (NCC {v:.4})"),
            HoldCheck::SimilarityBelowMin => write!(f, "registration NCC {v:.4} below {l:.4}"),
            HoldCheck::NonFiniteShift => write!(f, "tumor shift is not finite"),
            HoldCheck::Jump => write!(
                f,
                "tumor shift moved {v:.2} mm since the last corrected frame, limit {l:.2} mm"
            ),
            HoldCheck::RotationOverLimit => {
                write!(f, "registration rotates {v:.2}°, limit {l:.2}°")
            }
            HoldCheck::WeplShiftMismatch => write!(
                f,
                "WEPL measured for another target motion (a target off by {v:.3} mm)"
            ),
            HoldCheck::WeplCountMismatch => write!(f, "WEPL has {v} spots, plan {l}"),
            HoldCheck::WeplUnavailable => write!(f, "shifted target outside the traced frame, no WEPL"),
            HoldCheck::Lateral => write!(f, "lateral correction {v:.2} mm over limit {l:.2} mm"),
            HoldCheck::Range => write!(f, "range change {v:.2} mm over limit {l:.2} mm"),
            HoldCheck::DeliveredRange => write!(
                f,
                "delivered (snapped) range change {v:.2} mm over limit {l:.2} mm"
            ),
            HoldCheck::RangeOutsideTable => write!(
                f,
                "new range {v:.2} mm outside the energy table (limit {l:.2} mm)"
            ),
            HoldCheck::EnergyOutsideSpan => write!(
                f,
                "new energy {v:.3} MeV/u outside the deliverable span (limit {l:.3} MeV/u)"
            ),
            HoldCheck::ShifterOutsideSpan => write!(
                f,
                "range shifter {v:.2} mm w.e. outside the deliverable span (limit {l:.2} mm)"
            ),
        }
    }
}

/// crossed.
pub(super) fn in_span(
    value: f64,
    lo: f64,
    hi: f64,
    check: HoldCheck,
    spot: Option<usize>,
) -> Result<(), HoldDetail> {
    if within(lo, value) && within(value, hi) {
        return Ok(());
    }
    let bound = if value < lo { lo } else { hi };
    Err(HoldDetail::new(
        HoldReason::RangeUnavailable,
        check,
        spot,
        value,
        bound,
    ))
}

/// `value ≤ limit`, false when either is NaN: an unmeasurable value never passes a limit.
pub(super) fn within(value: f64, limit: f64) -> bool {
    matches!(
        value.partial_cmp(&limit),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_detail_names_reason_spot_value_and_limit() {
        let h = HoldDetail::new(
            HoldReason::LateralOverLimit,
            HoldCheck::Lateral,
            Some(3),
            7.25,
            5.0,
        );
        assert_eq!(
            h.to_string(),
            "lateral_over_limit: spot 3: lateral correction 7.25 mm over limit 5.00 mm"
        );
    }
}
