//! How a spot's range change is delivered: a new energy (CSDA, or snapped to a facility
//! table) or a range-shifter setting, and the checks that it can be.

use crate::correction::{HoldReason, RangeMode};
use crate::units::MmWe;

use super::adapt_plan::SpotGeom;
use super::limits::{in_span, within};
use super::{AdaptPlan, EnergyModel, HoldCheck, HoldDetail};

/// One spot's delivery settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Delivery {
    /// Energy to deliver, MeV/u.
    pub(super) energy_mev_u: f64,
    /// Range-shifter setting, mm water (0 in energy mode).
    pub(super) range_shifter_mm_we: f64,
    /// Snapped minus requested depth, mm water (0 without snapping).
    pub(super) snap_residual_mm: f64,
}

/// The delivery of `delta_mm` (ΔWEPL, mm water, already within the range limit) for spot
/// `g`, or the hold of the first delivery check it fails (`at`: the spot, for the hold).
pub(super) fn deliver(
    plan: &AdaptPlan,
    g: &SpotGeom,
    delta_mm: f64,
    at: Option<usize>,
) -> Result<Delivery, HoldDetail> {
    use HoldCheck as C;
    use HoldReason as R;
    let o = &plan.options;
    match o.mode {
        RangeMode::RangeShifter => {
            let rs = -delta_mm;
            let [MmWe(lo), MmWe(hi)] = o.range_shifter_span;
            in_span(rs, lo, hi, C::ShifterOutsideSpan, at)?;
            Ok(Delivery {
                energy_mev_u: g.energy_mev_u,
                range_shifter_mm_we: rs,
                snap_residual_mm: 0.0,
            })
        }
        RangeMode::Energy => {
            let want = g.model_range_mm_we + delta_mm;
            // A table that refuses a range inside its own span (it should not) still holds.
            let outside_table =
                |want: f64, hi: f64| HoldDetail::new(R::RangeUnavailable, C::RangeOutsideTable, at, want, hi);
            let (e, snap_residual_mm) = match &o.energy_model {
                EnergyModel::Csda => {
                    let table = &plan.tables[g.table];
                    let (lo, hi) = table.range_span_mm();
                    let (lo, hi) = (lo.get(), hi.get());
                    in_span(want, lo, hi, C::RangeOutsideTable, at)?;
                    let e = table
                        .energy_mev_u(MmWe(want))
                        .map_err(|_| outside_table(want, hi))?;
                    (e, 0.0)
                }
                EnergyModel::FacilitySnap(f) => {
                    let d = f.depths_mm();
                    let (lo, hi) = (d[0], d[d.len() - 1]);
                    in_span(want, lo, hi, C::RangeOutsideTable, at)?;
                    let snapped = f.snap_depth(MmWe(want)).map_err(|_| outside_table(want, hi))?;
                    let delivered = snapped.depth.get() - g.model_range_mm_we;
                    let max_range_mm = o.limits.max_range.get();
                    if !within(delivered.abs(), max_range_mm) {
                        return Err(HoldDetail::new(
                            R::RangeOverLimit,
                            C::DeliveredRange,
                            at,
                            delivered,
                            max_range_mm,
                        ));
                    }
                    (snapped.energy_mev_u, snapped.residual.get())
                }
            };
            let [lo, hi] = o.energy_span_mev_u;
            in_span(e, lo, hi, C::EnergyOutsideSpan, at)?;
            Ok(Delivery {
                energy_mev_u: e,
                range_shifter_mm_we: 0.0,
                snap_residual_mm,
            })
        }
    }
}
