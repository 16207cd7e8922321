//! The per-plan constants both halves share, computed once per session.

use crate::plan::IonPlan;
use crate::range::beam::BeamGeometry;
use crate::range::range_energy::RangeEnergyTable;
use crate::range::SpotTracer;
use crate::units::{MmWe, PointMm, VectorMm};

use super::limits::within;
use super::{AdaptError, AdaptOptions, EnergyModel};

/// Per-spot constants, computed once per plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SpotGeom {
    pub(super) beam: usize,
    /// Index of its ray in the tracer ([`SpotTracer::rays`]).
    pub(super) ray: usize,
    /// The planned target point (Bragg peak in the planning CT), patient mm.
    pub(super) target_mm: PointMm,
    pub(super) x_mm: f64,
    pub(super) y_mm: f64,
    /// Height of the planned target above the isocenter plane, mm.
    pub(super) d_mm: f64,
    /// Planned target's parameter on the spot's ray, mm.
    pub(super) t_target_mm: f64,
    /// The ray's unit direction.
    pub(super) dir: VectorMm,
    pub(super) energy_mev_u: f64,
    /// Planned Bragg depth, mm water (bare: read in the per-spot loop).
    pub(super) planned_depth_mm_we: f64,
    /// The planned energy's range in the energy model (CSDA range or facility depth), mm
    /// water.
    pub(super) model_range_mm_we: f64,
    /// Index into `AdaptPlan::tables` (CSDA).
    pub(super) table: usize,
}

/// Per-ray constants: the planned ray and the depth its moved copy is placed at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RayGeom {
    pub(super) origin: PointMm,
    /// Unit direction.
    pub(super) dir: VectorMm,
    /// Mid-point of its spots' target parameters (the range half moves the ray so it passes
    /// through this point's mapped position).
    pub(super) t_ref_mm: f64,
}

/// Everything about a plan the adapt stage needs, built once per session and shared by the
/// range and adapt threads (it is immutable; wrap it in an [`Arc`](std::sync::Arc)).
#[derive(Debug, Clone)]
pub struct AdaptPlan {
    pub(super) beams: Vec<BeamGeometry>,
    pub(super) spots: Vec<SpotGeom>,
    pub(super) rays: Vec<RayGeom>,
    pub(super) tables: Vec<RangeEnergyTable>,
    pub(super) options: AdaptOptions,
}

impl AdaptPlan {
    /// Builds the per-spot constants from `plan` and `planned`, a [`SpotTracer`] of the same
    /// plan that has traced the planning CT (its target points are the planned ones).
    pub fn new(plan: &IonPlan, planned: &SpotTracer, options: AdaptOptions) -> Result<Self, AdaptError> {
        options.limits.validate()?;
        let [e_lo, e_hi] = options.energy_span_mev_u;
        if e_lo.is_nan() || e_hi.is_nan() || e_lo > e_hi {
            return Err(AdaptError::BadOption {
                name: "energy_span_mev_u",
                value: e_lo,
                why: "must be an ordered [min, max]",
            });
        }
        let [MmWe(r_lo), MmWe(r_hi)] = options.range_shifter_span;
        if r_lo.is_nan() || r_hi.is_nan() || r_lo > r_hi {
            return Err(AdaptError::BadOption {
                name: "range_shifter_span",
                value: r_lo,
                why: "must be an ordered [min, max]",
            });
        }
        if planned.beam_count() != plan.beams.len() {
            return Err(AdaptError::TracerMismatch {
                what: "beams",
                tracer: planned.beam_count(),
                plan: plan.beams.len(),
            });
        }
        if planned.spots().len() != plan.spot_count() {
            return Err(AdaptError::TracerMismatch {
                what: "spots",
                tracer: planned.spots().len(),
                plan: plan.spot_count(),
            });
        }
        let mut beams = Vec::with_capacity(plan.beams.len());
        let mut tables: Vec<RangeEnergyTable> = Vec::new();
        let mut beam_table = Vec::with_capacity(plan.beams.len());
        for beam in &plan.beams {
            beams.push(BeamGeometry::from_beam(beam, options.default_sad_mm)?);
            let t = match tables.iter().position(|t| t.ion() == beam.ion) {
                Some(t) => t,
                None => {
                    tables.push(RangeEnergyTable::new(beam.ion)?);
                    tables.len() - 1
                }
            };
            beam_table.push(t);
        }
        let mut spots = Vec::with_capacity(planned.spots().len());
        for (index, s) in planned.spots().iter().enumerate() {
            let beam = &plan.beams[s.beam];
            let spot = beam.layers.get(s.layer).and_then(|l| l.spots.get(s.spot)).ok_or(
                AdaptError::TracerMismatch {
                    what: "spot positions",
                    tracer: index,
                    plan: plan.spot_count(),
                },
            )?;
            let no_target = AdaptError::NoPlannedTarget {
                index,
                beam: s.beam,
                layer: s.layer,
                spot: s.spot,
            };
            let t_target_mm = planned
                .target_t_mm()
                .get(index)
                .copied()
                .flatten()
                .ok_or_else(|| no_target.clone())?;
            let p = planned.target_point_mm(index).ok_or(no_target)?;
            let geo = &beams[s.beam];
            let ray = planned.rays()[s.ray];
            // The target must lie on the geometry's ray of this spot, or the lateral formula
            // would correct a different ray than the one traced.
            let g = geo.spot_ray(spot.x_mm, spot.y_mm, 1000.0);
            let v = p - g.origin;
            let off_mm = (v - g.direction * v.dot(&g.direction)).norm();
            if !within(off_mm, 1e-6 * (1.0 + v.norm())) {
                return Err(AdaptError::GeometryMismatch { index, off_mm });
            }
            let model_range = match &options.energy_model {
                EnergyModel::Csda => tables[beam_table[s.beam]].range_mm(s.energy_mev_u)?,
                EnergyModel::FacilitySnap(f) => f.depth_mm(s.energy_mev_u)?,
            };
            spots.push(SpotGeom {
                beam: s.beam,
                ray: s.ray,
                target_mm: p,
                x_mm: spot.x_mm,
                y_mm: spot.y_mm,
                d_mm: (p - geo.isocenter_mm).dot(&geo.to_source),
                t_target_mm,
                dir: ray.direction,
                energy_mev_u: s.energy_mev_u,
                planned_depth_mm_we: s.planned_depth.get(),
                model_range_mm_we: model_range.get(),
                table: beam_table[s.beam],
            });
        }
        // Each ray's reference depth: the middle of its spots' target parameters, which
        // halves the worst distance of a spot's target from it (the range-half error bound).
        let mut t_lo = vec![f64::INFINITY; planned.rays().len()];
        let mut t_hi = vec![f64::NEG_INFINITY; planned.rays().len()];
        for g in &spots {
            t_lo[g.ray] = t_lo[g.ray].min(g.t_target_mm);
            t_hi[g.ray] = t_hi[g.ray].max(g.t_target_mm);
        }
        let rays = planned
            .rays()
            .iter()
            .zip(t_lo.iter().zip(&t_hi))
            .map(|(r, (&lo, &hi))| RayGeom {
                origin: r.origin,
                dir: r.direction,
                // a ray every spot of which lies elsewhere cannot occur (each ray was made for
                // a spot); 0 keeps it finite regardless
                t_ref_mm: if lo <= hi { 0.5 * (lo + hi) } else { 0.0 },
            })
            .collect();
        Ok(AdaptPlan {
            beams,
            spots,
            rays,
            tables,
            options,
        })
    }

    /// Number of planned spots.
    pub fn spot_count(&self) -> usize {
        self.spots.len()
    }
    /// Every spot's planned target point (its Bragg peak in the planning CT), plan order.
    pub fn spot_targets_mm(&self) -> impl Iterator<Item = PointMm> + '_ {
        self.spots.iter().map(|g| g.target_mm)
    }
    /// Number of beams.
    pub fn beam_count(&self) -> usize {
        self.beams.len()
    }
    /// The beams' geometry.
    pub fn beams(&self) -> &[BeamGeometry] {
        &self.beams
    }
    /// The options.
    pub fn options(&self) -> &AdaptOptions {
        &self.options
    }
}
