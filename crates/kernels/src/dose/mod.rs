//! Dose engine: matRad's analytical ion pencil beam (its `HongPB` engine) for 1H, 4He, 12C
//! and 16O from matRad's generic machine data, and 20Ne by a documented scaling.
//!
//! # The model
//!
//! A pencil beam of `N` ions of one energy puts, at a point at water-equivalent depth `d`
//! and distance `r` from its central axis,
//!
//! ```text
//! D = N · IDD(d) · G(r; d) · 1.6021766208e-2 Gy·mm² / 10⁶ ions
//! G(r; d) = Σᵢ wᵢ(d) · exp(−r² / 2σᵢ²) / (2π σᵢ²),   σᵢ² = σ_water,i(d)² + σ_initial²
//! ```
//!
//! with `IDD` in MeV·cm²/g per primary ion, each column interpolated linearly in depth
//! within that energy's table (never between energies: by default a layer energy must match
//! a tabulated one, [`EnergyMatch::Exact`]; see "Delivered spots" for other energies). Depths before the first
//! tabulated one take its values; beyond the last the beam gives nothing. The lateral models
//! ([`LateralModel`]): carbon one Gaussian; protons and helium two (`1 − w`, `w`); oxygen
//! matRad's `multipleGauss`, three sigmas with weights `1 − w₁ − w₂`, `w₁`, `w₂`, as
//! pyRadPlan 0.5.0's `_hongpb.py` combines them (its single "core" `sigma_mm` column is for
//! the single-Gaussian model and is not used).
//!
//! `d` comes from the range engine: each spot position of a beam is one ray
//! ([`SpotTracer`](crate::range::SpotTracer)), traced once through the CT and the HU → RSP
//! table; a voxel's depth is the ray's cumulative WEPL at the voxel's projection onto the
//! ray, and `r` its perpendicular distance. All energies on that ray share the trace and the
//! list of voxels near it. This is the central-axis form of the pencil beam: matRad traces
//! one ray per voxel instead, which differs only where the density changes across a pencil
//! beam's width.
//!
//! Every voxel of the dose grid near a ray gets dose, air included (mask with the body
//! contour where that matters); a voxel beside an oblique entry point that projects onto
//! the ray just before it counts as at the surface (depth 0). The per-voxel evaluation is in
//! single precision, four voxels at a time (`wide::f32x4`), on each energy's own
//! piecewise-linear table (no resampling): against [`PencilKernel::dose_gy_per_ion`], the
//! f64 reference, it differs by at most 2.4e-6 of the maximum dose (`tests/dose_kernel.rs`);
//! the exponential is a bounded base-2 one of its own (`exp2_nonpositive`, a degree-4
//! polynomial, relative error < 3e-6).
//! A ray's doses are summed per voxel in f32 (some tens of terms), then added into an f64
//! grid; the grid is returned as f32.
//!
//! **Lateral cut-off** (matRad's "integral" dosimetric cut-off): at every tabulated depth,
//! the radius that encloses [`DoseOptions::lateral_cutoff`] (default 0.995) of the lateral
//! profile's integral, found exactly from the Gaussians' closed-form enclosed fraction; the
//! radius² is interpolated in depth like the other columns, nothing is added beyond it, and
//! the dose inside is scaled by `1 / cutoff` so the integral is kept, as matRad does.
//!
//! # Delivered spots
//!
//! [`DoseEngine::add_dose`] adds the dose of any subset of a plan's spots
//! ([`DeliveredSpot`]: plan index, position in the isocenter plane, energy, particles,
//! range-shifter thickness), each where it was delivered, into a caller's accumulator:
//! per motion sample of a 4D dose, the spots of that sample on that moment's CT. Each call
//! traces only the rays its spots need; the engine keeps the machines and every kernel it
//! has prepared. [`delivered_spots`] and [`DeliveredSpot::from_correction`] give a plan's
//! spots as planned or as a [`CorrectionSet`](crate::correction::CorrectionSet) corrects
//! them. [`compute_dose`] is this path with the plan's own spots.
//!
//! - **Range shifters**: a spot's depths are taken deeper by its beam's range shifters
//!   (the water-equivalent thicknesses the plan states; the plan reader keeps one per
//!   shifter, the first stated, not per layer; a shifter with none is an error, since
//!   ignoring it would put every peak too deep) plus its own `range_shifter_mm_we`: the
//!   Bragg peak moves upstream by the sum. The shifter's extra lateral scattering (the
//!   spot's growth over the air gap to the patient) is not modelled.
//! - **Energies between the machine's** ([`EnergyMatch::Interpolate`]): the next higher
//!   tabulated energy's kernel, its depths taken deeper by the difference between its
//!   Bragg-peak position and the one interpolated (as a power law) between the two
//!   neighbours: a higher-energy beam after that much water. Tested against matRad's own
//!   kernels of energies dropped from the machine: within 2 % of the peak dose or 0.3 mm,
//!   R80 within 0.2 mm (`tests/dose_delivered.rs`). Outside the machine's span:
//!   [`DoseError::EnergyOutsideMachine`].
//!
//! # 20Ne
//!
//! No generic neon data is published with matRad or pyRadPlan. [`IonMachine::neon_from_oxygen`]
//! scales the 16O data (the nearest ion in charge and mass with data, and with the
//! multi-Gaussian halo that nuclear fragments give heavy ions) at equal energy per nucleon:
//!
//! - **Depths × s**, `s = (A/Z²)_Ne / (A/Z²)_O = (20/100)/(16/64) = 0.8`: at equal velocity
//!   the stopping power per nucleon scales with `Z²/A`, so ranges (and every depth along the
//!   curve) scale with `A/Z²`.
//! - **IDD × (Z_Ne/Z_O)² = 1.5625**: the energy an ion loses per mm at equal velocity scales
//!   with `Z²`; so the integral of the curve grows by `0.8 × 1.5625 = 1.25 = A_Ne/A_O`, the
//!   ratio of kinetic energies, as energy conservation requires.
//! - **Lateral sigmas in water × s^1.5 ≈ 0.716**: multiple Coulomb scattering per mm
//!   depends on `Z/(p·v)`, the same for both ions at equal velocity (both `Z/A = ½`); the
//!   displacement variance is ∫(d − z)² dθ²/dz dz over the path, which under `z → s·z`
//!   scales with `s³`. This drops the logarithmic term of Highland's formula.
//! - Weights of the Gaussians, the initial beam sigma (the beam line's, not the ion's) and
//!   the machine's energies are kept.
//!
//! Not modelled: neon's slightly larger nuclear reaction cross-section (Bradt–Peters: about
//! 8 % more reactions per mm in water than oxygen), over a path 20 % shorter, so the
//! fragment tail and the halo weights are oxygen's. Use it for a dose estimate, not for
//! commissioning.

mod delivered;
pub mod evaluate;
mod grid;
pub mod machine;
pub mod pencil;

pub use delivered::{delivered_spots, DeliveredSpot, DoseEngine, EnergyMatch, BELOW_LOWEST_MM};
pub use grid::{compute_dose, dose_grid_like, dose_volume, DoseOptions, SpotWeightUnit};
pub use machine::{EnergyKernel, IonMachine, LateralModel, MachineError};
pub use pencil::{PencilKernel, GY_MM2_PER_MEGA_ION};

use crate::plan::SpotFault;
use crate::range::RangeError;
use crate::units::Ion;

/// Why a dose could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DoseError {
    /// Machine data could not be loaded.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The range engine refused the plan's geometry.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// The dose grid is not a valid grid.
    #[error("dose grid: {0}")]
    Grid(#[from] crate::geometry::GeometryError),
    /// No machine data for a beam's ion.
    #[error("beam {beam}: no machine data for {ion}")]
    NoMachine {
        /// Beam number.
        beam: i32,
        /// The ion.
        ion: Ion,
    },
    /// A layer energy matches none of the machine's.
    #[error("beam {beam}, layer {layer}: {energy_mev_u} MeV/u is not an energy of {machine}")]
    EnergyNotInMachine {
        /// Beam number.
        beam: i32,
        /// Layer index in the beam.
        layer: usize,
        /// The layer energy.
        energy_mev_u: f64,
        /// The machine's data source.
        machine: String,
    },
    /// A spot cannot be delivered as written.
    #[error("beam {beam}, layer {layer}, spot {spot}: {fault}")]
    BadSpot {
        /// Beam number.
        beam: i32,
        /// Layer index.
        layer: usize,
        /// Spot index in the layer.
        spot: usize,
        /// What is wrong.
        fault: SpotFault,
    },
    /// A delivered spot's index is beyond the plan's spots.
    #[error("spot index {index}: the plan has {spots} spots")]
    SpotOutOfPlan {
        /// The index (plan order: beams, layers, spots).
        index: usize,
        /// How many spots the plan has.
        spots: usize,
    },
    /// A correction set has no entry for a spot.
    #[error("spot index {index}: no correction in the set of frame {frame_id}")]
    NoCorrection {
        /// The spot's index in plan order.
        index: usize,
        /// The set's frame.
        frame_id: u64,
    },
    /// A delivered energy lies outside the machine's energies (with
    /// [`EnergyMatch::Interpolate`]).
    #[error(
        "beam {beam}, spot index {spot}: {energy_mev_u} MeV/u is outside {machine}'s {lowest_mev_u}–{highest_mev_u} MeV/u"
    )]
    EnergyOutsideMachine {
        /// Beam number.
        beam: i32,
        /// The spot's index in plan order.
        spot: usize,
        /// The energy asked for.
        energy_mev_u: f64,
        /// The machine's lowest energy.
        lowest_mev_u: f64,
        /// The machine's highest energy.
        highest_mev_u: f64,
        /// The machine's data source.
        machine: String,
    },
    /// A beam's range shifter states no water-equivalent thickness, so its dose would put
    /// every Bragg peak too deep.
    #[error("beam {beam}: range shifter {range_shifter} has no water-equivalent thickness")]
    RangeShifterThicknessUnknown {
        /// Beam number.
        beam: i32,
        /// Range Shifter Number.
        range_shifter: i32,
    },
    /// An option is out of range.
    #[error("dose options: {reason}")]
    BadOption {
        /// What is wrong.
        reason: String,
    },
}
