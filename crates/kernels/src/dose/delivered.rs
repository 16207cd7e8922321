//! The dose of delivered spots: any subset of a plan's spots, each at its own (corrected)
//! position, energy, range-shifter thickness and particle count, added into a caller's grid.
//! [`compute_dose`](super::compute_dose) is this path with the plan's own spots.
//!
//! A [`DoseEngine`] owns the machines and a cache of prepared kernels (one per tabulated
//! energy, built when first asked for); each [`DoseEngine::add_dose`] traces only the rays
//! its spots need (spots of a beam at the same position share one), on the CT it is given,
//! and adds their dose into the caller's accumulator, so the dose of a 4D delivery is one
//! call per motion sample on that sample's CT.

use super::grid::{add_rays, RaySpot};
use super::machine::IonMachine;
use super::pencil::PencilKernel;
use super::{DoseError, DoseOptions, SpotWeightUnit};
use crate::correction::CorrectionSet;
use crate::geometry::Grid;
use crate::plan::{EnergyLayer, IonBeam, IonPlan, Spot, SpotFault};
use crate::range::{Hlut, SpotTracer, SpotTracerOptions};
use crate::units::MmWe;
use crate::volume::CtVolume;

/// How a spot's energy finds its kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum EnergyMatch {
    /// The machine's nearest tabulated energy, if within `tolerance_mev_u`; else
    /// [`DoseError::EnergyNotInMachine`]. What a plan's dose uses: nothing is interpolated.
    Exact {
        /// How far from a tabulated energy, MeV/u.
        tolerance_mev_u: f64,
    },
    /// Any energy from the machine's lowest to its highest (give or take f32 rounding):
    /// between two tabulated energies `E₀ < E < E₁`, the kernel of `E₁` with every depth
    /// taken `P(E₁) − P(E)` deeper, `P` the Bragg-peak position (matRad's `peakPos +
    /// offset`), `P(E)` interpolated between the neighbours as a power law
    /// (`P = P₀ (P₁/P₀)^(ln(E/E₀)/ln(E₁/E₀))`, exact for the Bragg–Kleeman rule `R ∝ E^p`).
    /// Up to [`BELOW_LOWEST_MM`] of range below the lowest energy: the lowest kernel read that
    /// much shallower. Further out: [`DoseError::EnergyOutsideMachine`].
    ///
    /// Why a shift of the higher energy's curve: a beam of `E₁` that has crossed `Δ` mm of
    /// water is a beam of about `E` whose curve continues from there, so its depth dose,
    /// lateral spread and halo at depth `d + Δ` stand in for `E`'s at `d`, with the
    /// entrance stopping power of `E`, not of `E₁`. It is never evaluated before its first
    /// tabulated depth, and needs no new kernel. What it gets slightly wrong over `Δ` (the
    /// neighbours' peak spacing, ~2 mm for matRad's generic carbon): the primaries `E₁`
    /// lost to nuclear reactions (~1 %/cm), its extra range straggling and its sigma's
    /// growth in water, all by a fraction of `Δ` over the whole range.
    Interpolate,
}

/// How far below a machine's lowest energy, in mm of Bragg-peak depth, an
/// [`EnergyMatch::Interpolate`] energy is still dosed (with the lowest kernel read that much
/// shallower).
pub const BELOW_LOWEST_MM: f64 = 5.0;

/// The patient position the range engine assumes for a beam that states none.
const ASSUMED_PATIENT_POSITION: &str = "HFS";

/// One delivered spot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveredSpot {
    /// The spot's place in plan order (beams, then layers, then spots), as
    /// [`SpotTracer::spots`] and [`crate::correction::SpotCorrection::spot_index`] number
    /// them: it gives the beam (geometry, ion, range shifters).
    pub index: usize,
    /// Position in the isocenter plane, beam's-eye-view x, mm.
    pub x_mm: f64,
    /// Position in the isocenter plane, beam's-eye-view y, mm.
    pub y_mm: f64,
    /// Energy delivered, MeV/u (any value when [`EnergyMatch::Interpolate`]).
    pub energy_mev_u: f64,
    /// Ions delivered (≥ 0).
    pub particles: f64,
    /// Water-equivalent range-shifter thickness added for this spot, mm (on top of the
    /// beam's own shifters; negative pulls back).
    pub range_shifter_mm_we: f64,
}

/// Particles per unit of Scan Spot Meterset Weight.
fn particles_per_weight(unit: SpotWeightUnit) -> Result<f64, DoseError> {
    match unit {
        SpotWeightUnit::Particles => Ok(1.0),
        SpotWeightUnit::MonitorUnits { particles_per_mu } => {
            if particles_per_mu.is_finite() && particles_per_mu > 0.0 {
                Ok(particles_per_mu)
            } else {
                Err(DoseError::BadOption {
                    reason: format!("particles per MU must be finite and > 0, got {particles_per_mu}"),
                })
            }
        }
    }
}

/// Plan spot `index` as `(beam, layer, spot in layer)`, walking the plan.
fn locate(plan: &IonPlan, index: usize) -> Option<(usize, usize, usize)> {
    let mut first = 0;
    for (b, beam) in plan.beams.iter().enumerate() {
        for (l, layer) in beam.layers.iter().enumerate() {
            if index < first + layer.spots.len() {
                return Some((b, l, index - first));
            }
            first += layer.spots.len();
        }
    }
    None
}

/// A wire value (f32) that is the plan's value rounded takes the plan's value, so an
/// uncorrected spot is the planned one bit for bit.
fn unrounded(wire: f32, planned: f64) -> f64 {
    if wire == planned as f32 {
        planned
    } else {
        f64::from(wire)
    }
}

impl DeliveredSpot {
    /// Plan spot `index` as planned, its weight counted in `weight_unit`.
    pub fn planned(plan: &IonPlan, index: usize, weight_unit: SpotWeightUnit) -> Result<Self, DoseError> {
        let per_weight = particles_per_weight(weight_unit)?;
        let (b, l, s) = locate(plan, index).ok_or(DoseError::SpotOutOfPlan {
            index,
            spots: plan.spot_count(),
        })?;
        let layer = &plan.beams[b].layers[l];
        Ok(Self::from_plan_spot(index, layer, &layer.spots[s], per_weight))
    }

    fn from_plan_spot(index: usize, layer: &EnergyLayer, spot: &Spot, per_weight: f64) -> Self {
        DeliveredSpot {
            index,
            x_mm: spot.x_mm,
            y_mm: spot.y_mm,
            energy_mev_u: layer.energy_mev_u,
            particles: spot.weight * per_weight,
            range_shifter_mm_we: 0.0,
        }
    }

    /// Plan spot `index` as `set` corrects it: position, energy and range-shifter thickness
    /// from its [`SpotCorrection`](crate::correction::SpotCorrection) (found by
    /// `spot_index`), particles from the plan's weight in `weight_unit`. Values equal to the
    /// plan's rounded to f32 (the wire's precision) take the plan's exact value.
    pub fn from_correction(
        plan: &IonPlan,
        set: &CorrectionSet,
        index: usize,
        weight_unit: SpotWeightUnit,
    ) -> Result<Self, DoseError> {
        let planned = Self::planned(plan, index, weight_unit)?;
        Self::corrected(planned, set)
    }

    fn corrected(planned: Self, set: &CorrectionSet) -> Result<Self, DoseError> {
        let index = planned.index;
        let c = set
            .spots
            .get(index)
            .filter(|c| c.spot_index as usize == index)
            .or_else(|| set.spots.iter().find(|c| c.spot_index as usize == index))
            .ok_or(DoseError::NoCorrection {
                index,
                frame_id: set.frame_id,
            })?;
        Ok(DeliveredSpot {
            x_mm: unrounded(c.x_mm, planned.x_mm),
            y_mm: unrounded(c.y_mm, planned.y_mm),
            energy_mev_u: unrounded(c.energy_mev_u, planned.energy_mev_u),
            range_shifter_mm_we: f64::from(c.range_shifter_mm_we),
            ..planned
        })
    }
}

/// Every spot of `plan` in plan order: as planned (`set` `None`), or as `set` corrects each
/// ([`DeliveredSpot::from_correction`]); weights counted in `weight_unit`.
pub fn delivered_spots(
    plan: &IonPlan,
    set: Option<&CorrectionSet>,
    weight_unit: SpotWeightUnit,
) -> Result<Vec<DeliveredSpot>, DoseError> {
    let per_weight = particles_per_weight(weight_unit)?;
    let mut out = Vec::with_capacity(plan.spot_count());
    for layer in plan.beams.iter().flat_map(|b| &b.layers) {
        for spot in &layer.spots {
            let planned = DeliveredSpot::from_plan_spot(out.len(), layer, spot, per_weight);
            out.push(match set {
                Some(set) => DeliveredSpot::corrected(planned, set)?,
                None => planned,
            });
        }
    }
    Ok(out)
}

/// The Bragg-peak position of `machine` at `energy_mev_u` between tabulated energies `lo`
/// and `lo + 1`, mm: a power law through the two (linear if either is not positive).
fn peak_between_mm(machine: &IonMachine, lo: usize, energy_mev_u: f64) -> f64 {
    let (k0, k1) = (&machine.energies[lo], &machine.energies[lo + 1]);
    let (p0, p1) = (k0.peak_pos_mm + k0.offset_mm, k1.peak_pos_mm + k1.offset_mm);
    let (e0, e1) = (k0.energy_mev_u, k1.energy_mev_u);
    if p0 > 0.0 && p1 > 0.0 && e0 > 0.0 {
        p0 * (p1 / p0).powf((energy_mev_u / e0).ln() / (e1 / e0).ln())
    } else {
        p0 + (p1 - p0) * (energy_mev_u - e0) / (e1 - e0)
    }
}

/// Per-call buffers, kept between calls.
#[derive(Debug, Default)]
struct Scratch {
    /// Per layer of the plan in order: its first spot's plan index, beam and layer.
    layers: Vec<(usize, usize, usize)>,
    /// Per beam: the machine, once asked for.
    beam_machine: Vec<Option<usize>>,
    /// Per beam: its range shifters' water-equivalent thickness, mm.
    beam_shifter_mm: Vec<f64>,
    /// Spots with particles: beam, position, what the ray needs.
    kept: Vec<(usize, f64, f64, f64, RaySpot)>,
    ray_start: Vec<usize>,
    ray_spots: Vec<RaySpot>,
}

/// The dose engine: machines, options and prepared kernels, for any number of
/// [`Self::add_dose`] calls.
#[derive(Debug)]
pub struct DoseEngine {
    machines: Vec<IonMachine>,
    options: DoseOptions,
    /// Kernels in the order they were first needed.
    kernels: Vec<PencilKernel>,
    /// Per machine, per tabulated energy: its kernel in `kernels`, once built.
    kernel_of: Vec<Vec<Option<usize>>>,
    scratch: Scratch,
    /// Whether a beam without a patient position has been traced once (and the range
    /// engine has said it assumes HFS): later calls state HFS themselves, so a 4D dose's
    /// hundreds of calls log the assumption once, not once each.
    assumed_position_said: bool,
}

impl DoseEngine {
    /// An engine for `machines` (one per ion; the first of an ion is used) with `options`,
    /// which are checked here.
    pub fn new(machines: &[IonMachine], options: DoseOptions) -> Result<Self, DoseError> {
        if !(options.lateral_cutoff > 0.0 && options.lateral_cutoff <= 1.0) {
            return Err(DoseError::BadOption {
                reason: format!(
                    "lateral cut-off must be in (0, 1], got {}",
                    options.lateral_cutoff
                ),
            });
        }
        if let EnergyMatch::Exact { tolerance_mev_u } = options.energy_match {
            if tolerance_mev_u.is_nan() || tolerance_mev_u < 0.0 {
                return Err(DoseError::BadOption {
                    reason: format!("energy tolerance must be ≥ 0 MeV/u, got {tolerance_mev_u}"),
                });
            }
        }
        particles_per_weight(options.weight_unit)?;
        Ok(DoseEngine {
            kernel_of: machines.iter().map(|m| vec![None; m.energies.len()]).collect(),
            machines: machines.to_vec(),
            options,
            kernels: Vec::new(),
            scratch: Scratch::default(),
            assumed_position_said: false,
        })
    }

    /// The options.
    pub fn options(&self) -> &DoseOptions {
        &self.options
    }

    /// The machines.
    pub fn machines(&self) -> &[IonMachine] {
        &self.machines
    }

    /// [`delivered_spots`] with this engine's weight unit.
    pub fn delivered_spots(
        &self,
        plan: &IonPlan,
        set: Option<&CorrectionSet>,
    ) -> Result<Vec<DeliveredSpot>, DoseError> {
        delivered_spots(plan, set, self.options.weight_unit)
    }

    /// Adds the dose (Gy) of `spots`, spots of `plan`, into `accum` (`dose_grid`'s voxels in
    /// its order: i fastest), through the CT `ct` and `hlut`. Spots with no particles are
    /// skipped; the others' rays are traced once each. The same inputs add the same bits.
    ///
    /// Each spot's depths are taken deeper by its beam's range shifters (their stated
    /// water-equivalent thickness), its own `range_shifter_mm_we` and, for an off-grid
    /// energy, the shift [`EnergyMatch::Interpolate`] describes. A shifter's extra lateral
    /// scattering (the spot widening in the air gap after it) is not modelled.
    pub fn add_dose(
        &mut self,
        ct: &CtVolume,
        hlut: &Hlut,
        plan: &IonPlan,
        spots: &[DeliveredSpot],
        dose_grid: &Grid,
        accum: &mut [f64],
    ) -> Result<(), DoseError> {
        if accum.len() != dose_grid.len() {
            return Err(DoseError::BadOption {
                reason: format!(
                    "accumulator of {} values for a dose grid of {} voxels",
                    accum.len(),
                    dose_grid.len()
                ),
            });
        }
        if u32::try_from(dose_grid.len()).is_err() {
            return Err(DoseError::BadOption {
                reason: format!(
                    "the dose grid has {} voxels, more than the engine indexes (2³²)",
                    dose_grid.len()
                ),
            });
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.add_dose_with(ct, hlut, plan, spots, dose_grid, accum, &mut scratch);
        self.scratch = scratch;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn add_dose_with(
        &mut self,
        ct: &CtVolume,
        hlut: &Hlut,
        plan: &IonPlan,
        spots: &[DeliveredSpot],
        dose_grid: &Grid,
        accum: &mut [f64],
        scratch: &mut Scratch,
    ) -> Result<(), DoseError> {
        scratch.layers.clear();
        let mut first = 0;
        for (b, beam) in plan.beams.iter().enumerate() {
            for (l, layer) in beam.layers.iter().enumerate() {
                scratch.layers.push((first, b, l));
                first += layer.spots.len();
            }
        }
        let total = first;
        scratch.beam_machine.clear();
        scratch.beam_machine.resize(plan.beams.len(), None);
        scratch.beam_shifter_mm.clear();
        for beam in &plan.beams {
            let mut wet_mm = 0.0;
            for rs in &beam.range_shifters {
                wet_mm += rs
                    .water_equivalent_thickness_mm
                    .ok_or(DoseError::RangeShifterThicknessUnknown {
                        beam: beam.number,
                        range_shifter: rs.number,
                    })?
                    .get();
            }
            scratch.beam_shifter_mm.push(wet_mm);
        }

        scratch.kept.clear();
        for spot in spots {
            if spot.index >= total {
                return Err(DoseError::SpotOutOfPlan {
                    index: spot.index,
                    spots: total,
                });
            }
            let at = scratch.layers.partition_point(|&(f, _, _)| f <= spot.index) - 1;
            let (f, b, l) = scratch.layers[at];
            let beam = &plan.beams[b];
            let fault = if !(spot.x_mm.is_finite()
                && spot.y_mm.is_finite()
                && spot.particles.is_finite()
                && spot.range_shifter_mm_we.is_finite())
            {
                Some(SpotFault::NonFinite)
            } else if spot.particles < 0.0 {
                Some(SpotFault::NegativeWeight)
            } else {
                None
            };
            if let Some(fault) = fault {
                return Err(DoseError::BadSpot {
                    beam: beam.number,
                    layer: l,
                    spot: spot.index - f,
                    fault,
                });
            }
            if spot.particles == 0.0 {
                continue;
            }
            let m =
                match scratch.beam_machine[b] {
                    Some(m) => m,
                    None => {
                        let m = self.machines.iter().position(|m| m.ion == beam.ion).ok_or(
                            DoseError::NoMachine {
                                beam: beam.number,
                                ion: beam.ion,
                            },
                        )?;
                        scratch.beam_machine[b] = Some(m);
                        m
                    }
                };
            let (kernel, shift_mm) = self.kernel(m, beam.number, l, spot)?;
            scratch.kept.push((
                b,
                spot.x_mm,
                spot.y_mm,
                spot.energy_mev_u,
                RaySpot {
                    kernel,
                    particles: spot.particles,
                    depth_offset_mm: shift_mm + spot.range_shifter_mm_we + scratch.beam_shifter_mm[b],
                },
            ));
        }
        if scratch.kept.is_empty() {
            return Ok(());
        }
        // Grouped by beam, in the given order within a beam: the order the tracer numbers the
        // spots of the plan built from them.
        scratch.kept.sort_by_key(|k| k.0);

        // A plan of just these spots: one layer per beam. The layer energy only sets the
        // tracer's planned depths, which nothing reads here (whole rays are traced).
        let mut beams: Vec<IonBeam> = Vec::new();
        let mut last_beam = None;
        for &(b, x_mm, y_mm, energy_mev_u, _) in &scratch.kept {
            if last_beam != Some(b) {
                last_beam = Some(b);
                let beam = &plan.beams[b];
                beams.push(IonBeam {
                    number: beam.number,
                    name: String::new(),
                    radiation_type: String::new(),
                    ion: beam.ion,
                    gantry_angle_deg: beam.gantry_angle_deg,
                    couch_angle_deg: beam.couch_angle_deg,
                    isocenter_mm: beam.isocenter_mm,
                    patient_position: match &beam.patient_position {
                        None if self.assumed_position_said => Some(ASSUMED_PATIENT_POSITION.into()),
                        p => p.clone(),
                    },
                    virtual_sad_mm: beam.virtual_sad_mm,
                    range_shifters: Vec::new(),
                    primary_dosimeter_unit: beam.primary_dosimeter_unit,
                    layers: vec![EnergyLayer {
                        energy_mev_u,
                        spots: Vec::new(),
                    }],
                });
            }
            if let Some(nb) = beams.last_mut() {
                nb.layers[0].spots.push(Spot {
                    x_mm,
                    y_mm,
                    weight: 0.0,
                });
            }
        }
        let subset = IonPlan {
            sop_instance_uid: String::new(),
            frame_of_reference_uid: String::new(),
            patient_id: String::new(),
            label: String::new(),
            beams,
        };
        // Whole rays: the dose reaches past the Bragg peak (fragment tails).
        let tracer_options = SpotTracerOptions::new(self.options.default_sad_mm)
            .with_upstream_mm(self.options.upstream_mm)
            .with_wepl_margin(MmWe(f64::INFINITY))
            .with_threads(self.options.threads);
        let mut tracer = SpotTracer::new(&subset, &tracer_options)?;
        if subset.beams.iter().any(|b| b.patient_position.is_none()) {
            self.assumed_position_said = true;
        }
        tracer.trace_frame_ct(ct, hlut);

        // Spots grouped by ray, in the given order within a ray.
        let rays = tracer.rays().len();
        scratch.ray_start.clear();
        scratch.ray_start.resize(rays + 1, 0);
        for s in tracer.spots() {
            scratch.ray_start[s.ray + 1] += 1;
        }
        for r in 0..rays {
            scratch.ray_start[r + 1] += scratch.ray_start[r];
        }
        let mut fill = scratch.ray_start.clone();
        scratch.ray_spots.clear();
        scratch.ray_spots.resize(
            tracer.spots().len(),
            RaySpot {
                kernel: 0,
                particles: 0.0,
                depth_offset_mm: 0.0,
            },
        );
        for (s, kept) in tracer.spots().iter().zip(&scratch.kept) {
            scratch.ray_spots[fill[s.ray]] = kept.4;
            fill[s.ray] += 1;
        }
        add_rays(
            &tracer,
            &scratch.ray_start,
            &scratch.ray_spots,
            &self.kernels,
            dose_grid,
            self.options.threads,
            accum,
        );
        Ok(())
    }

    /// The kernel for `spot` on machine `m` and the depth shift that goes with it, mm w.e.
    fn kernel(
        &mut self,
        m: usize,
        beam: i32,
        layer: usize,
        spot: &DeliveredSpot,
    ) -> Result<(usize, f64), DoseError> {
        let machine = &self.machines[m];
        let energy = spot.energy_mev_u;
        let (e, shift_mm) = match self.options.energy_match {
            EnergyMatch::Exact { tolerance_mev_u } => (
                machine.energy_index(energy, tolerance_mev_u).ok_or_else(|| {
                    DoseError::EnergyNotInMachine {
                        beam,
                        layer,
                        energy_mev_u: energy,
                        machine: machine.source.clone(),
                    }
                })?,
                0.0,
            ),
            EnergyMatch::Interpolate => {
                let es = &machine.energies;
                let (lowest, highest) = match (es.first(), es.last()) {
                    (Some(a), Some(b)) => (a.energy_mev_u, b.energy_mev_u),
                    _ => (f64::NAN, f64::NAN),
                };
                // A value that crossed the wire as f32 may land just outside the span.
                let slack = 4.0 * f64::from(f32::EPSILON) * energy.abs();
                // Just below the lowest energy (a plan's most proximal layer made with
                // another range table, a correction pulling it back): the lowest kernel read
                // up to BELOW_LOWEST_MM shallower — its first tabulated depth repeats over
                // those millimetres of entrance plateau, as behind a thin range shifter.
                if energy < lowest - slack && es.len() >= 2 && energy > 0.0 {
                    let p0 = es[0].peak_pos_mm + es[0].offset_mm;
                    let below = p0 - peak_between_mm(machine, 0, energy);
                    if below.is_finite() && below > 0.0 && below <= BELOW_LOWEST_MM {
                        return self.cached(m, 0).map(|idx| (idx, -below));
                    }
                }
                if !(energy >= lowest - slack && energy <= highest + slack) {
                    return Err(DoseError::EnergyOutsideMachine {
                        beam,
                        spot: spot.index,
                        energy_mev_u: energy,
                        lowest_mev_u: lowest,
                        highest_mev_u: highest,
                        machine: machine.source.clone(),
                    });
                }
                let k = es.partition_point(|k| k.energy_mev_u < energy).min(es.len() - 1);
                if k == 0 || es[k].energy_mev_u <= energy {
                    (k, 0.0)
                } else {
                    let hi = &es[k];
                    (
                        k,
                        hi.peak_pos_mm + hi.offset_mm - peak_between_mm(machine, k - 1, energy),
                    )
                }
            }
        };
        Ok((self.cached(m, e)?, shift_mm))
    }

    /// The prepared kernel of machine `m`'s energy `e`, made on first use.
    fn cached(&mut self, m: usize, e: usize) -> Result<usize, DoseError> {
        let machine = &self.machines[m];
        Ok(match self.kernel_of[m][e] {
            Some(idx) => idx,
            None => {
                self.kernels.push(PencilKernel::new(
                    &machine.energies[e],
                    machine.lateral,
                    self.options.lateral_cutoff,
                ));
                self.kernel_of[m][e] = Some(self.kernels.len() - 1);
                self.kernels.len() - 1
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::machine::{EnergyKernel, LateralModel};
    use super::*;
    use crate::units::Ion;

    fn kernel(energy_mev_u: f64, peak_pos_mm: f64) -> EnergyKernel {
        EnergyKernel {
            energy_mev_u,
            peak_pos_mm,
            offset_mm: 0.0,
            sigma_initial_mm: 3.0,
            depths_mm: vec![0.0, 10.0, 20.0, 25.0],
            idd_mev_cm2_per_g: vec![100.0, 150.0, 400.0, 10.0],
            sigma_water_mm: vec![vec![0.0, 0.5, 1.0, 1.2]],
            weights: vec![],
        }
    }

    /// The Bragg–Kleeman rule `P = a E^p` is what the interpolation reproduces exactly.
    #[test]
    fn peak_positions_follow_a_power_law_between_neighbours() {
        let p = |e: f64| 0.022 * e.powf(1.77);
        let machine = IonMachine {
            ion: Ion::CARBON12,
            lateral: LateralModel::Single,
            sad_mm: f64::INFINITY,
            energies: vec![kernel(200.0, p(200.0)), kernel(240.0, p(240.0))],
            source: "test".into(),
        };
        for e in [200.0, 213.0, 227.5, 240.0] {
            assert!(
                (peak_between_mm(&machine, 0, e) - p(e)).abs() < 1e-9 * p(e),
                "{e}"
            );
        }
    }
}
