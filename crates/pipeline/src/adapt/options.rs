//! The adapt stage's options: how range changes are delivered, and within what.

use crate::correction::RangeMode;
use crate::range::facility::FacilityTable;
use crate::units::MmWe;

use super::SafetyLimits;

/// How a new range becomes an energy in [`RangeMode::Energy`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EnergyModel {
    /// Continuous energies from the ion's CSDA range–energy relation.
    Csda,
    /// Snapped to the nearest deliverable energy of a facility table (the range error this
    /// introduces is reported in [`AdaptSummary::max_abs_snap_residual_mm`]).
    FacilitySnap(FacilityTable),
}

/// Options of the adapt stage.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdaptOptions {
    /// How range changes are delivered.
    pub mode: RangeMode,
    /// Energy model for [`RangeMode::Energy`].
    pub energy_model: EnergyModel,
    /// Safety limits.
    pub limits: SafetyLimits,
    /// Room virtual SADs `[x, y]` for beams whose plan gives none, mm — the same as the
    /// tracer's (checked).
    pub default_sad_mm: [f64; 2],
    /// Deliverable energies `[min, max]`, MeV/u ([`RangeMode::Energy`]; default: the table's).
    pub energy_span_mev_u: [f64; 2],
    /// Deliverable range-shifter settings `[min, max]`, mm water ([`RangeMode::RangeShifter`];
    /// default `[-∞, ∞]`; a facility that cannot pull back sets `min = 0`).
    pub range_shifter_span: [MmWe; 2],
    /// `true`: spots follow the registration's full rigid transform, rotation included.
    /// `false` (the default, see `planning.follow_rotation`): only its translation at the
    /// target (every spot moved by the tumor shift), which leaves a rotation's error.
    pub follow_rotation: bool,
}

impl AdaptOptions {
    /// Energy mode with CSDA energies and the given limits and room SADs.
    pub fn new(limits: SafetyLimits, default_sad_mm: [f64; 2]) -> Self {
        AdaptOptions {
            mode: RangeMode::Energy,
            energy_model: EnergyModel::Csda,
            limits,
            default_sad_mm,
            energy_span_mev_u: [0.0, f64::INFINITY],
            range_shifter_span: [MmWe(f64::NEG_INFINITY), MmWe(f64::INFINITY)],
            follow_rotation: false,
        }
    }
    /// Sets [`Self::follow_rotation`].
    pub fn with_follow_rotation(mut self, follow: bool) -> Self {
        self.follow_rotation = follow;
        self
    }
    /// Sets the range mode.
    pub fn with_mode(mut self, mode: RangeMode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the energy model.
    pub fn with_energy_model(mut self, model: EnergyModel) -> Self {
        self.energy_model = model;
        self
    }
    /// Sets the deliverable energy span, MeV/u.
    pub fn with_energy_span_mev_u(mut self, span: [f64; 2]) -> Self {
        self.energy_span_mev_u = span;
        self
    }
    /// Sets the deliverable range-shifter span.
    pub fn with_range_shifter_span(mut self, span: [MmWe; 2]) -> Self {
        self.range_shifter_span = span;
        self
    }
}
