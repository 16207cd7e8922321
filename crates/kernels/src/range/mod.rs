//! Range engine: HU → relative stopping power, exact ray tracing, WEPL and range ↔ energy.
//!
//! - [`hlut`]: the HU → RSP calibration curve and the dense `i16 → f32` lookup that turns a
//!   CT frame into an RSP volume once per frame.
//! - [`raytrace`]: exact voxel walk (Amanatides–Woo with exact parametric plane crossings)
//!   through an oriented grid, returning the cumulative WEPL profile of a ray.
//! - [`range_energy`]: CSDA range in water ↔ energy per nucleon for 1H, 4He, 12C, 16O, 20Ne.
//! - [`facility`]: a facility's energy ↔ Bragg-peak depth table and energy snapping.
//! - [`beam`]: IEC 61217 beam geometry (source, beam's-eye-view axes, spot rays).
//! - [`spots`]: per-frame spot WEPL with reusable buffers ([`SpotTracer`]).
//!
//! ```
//! use ionguide_core::geometry::Grid;
//! use ionguide_core::units::PointMm;
//! use ionguide_core::volume::Volume;
//! use ionguide_kernels::range::raytrace::{Ray, wepl_between};
//! let grid = Grid::axis_aligned([10, 10, 10], PointMm::origin(), [1.0; 3]).unwrap();
//! let water = Volume::<f32>::filled(grid, 1.0);
//! let w = wepl_between(&water, &PointMm::new(-100.0, 4.0, 4.0), &PointMm::new(100.0, 4.0, 4.0));
//! assert!((w.wepl_mm - 10.0).abs() < 1e-9);
//! # let _ = Ray::new(PointMm::origin(), ionguide_core::units::VectorMm::x());
//! ```

pub mod beam;
pub mod facility;
pub mod hlut;
pub mod range_energy;
pub mod raytrace;
pub mod spots;

pub use beam::{BeamGeometry, PatientPosition};
pub use facility::FacilityTable;
pub use hlut::Hlut;
pub use range_energy::RangeEnergyTable;
pub use raytrace::{ProfileView, Ray, RayProfile};
pub use spots::{SpotTracer, SpotTracerOptions};

use std::path::PathBuf;

use crate::units::Ion;

/// Why a range-engine operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// A table file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error, as text (io::Error is not `Clone`).
        message: String,
    },
    /// A table file is malformed or violates a constraint.
    #[error("{path}: row {row}: {reason}")]
    BadTable {
        /// The file (or `<memory>` for in-memory tables).
        path: PathBuf,
        /// 1-based line (CSV) or point (TOML) number; 0 for whole-table problems.
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// The ion has no range–energy data.
    #[error("no range–energy data for ion {ion}: supported are 1H, 4He, 12C, 16O, 20Ne")]
    UnsupportedIon {
        /// The ion.
        ion: Ion,
    },
    /// An energy outside the table.
    #[error("energy {energy_mev_u} MeV/u outside the {what} table [{min_mev_u}, {max_mev_u}] MeV/u")]
    EnergyOutOfTable {
        /// Which table.
        what: String,
        /// Requested energy.
        energy_mev_u: f64,
        /// Table minimum.
        min_mev_u: f64,
        /// Table maximum.
        max_mev_u: f64,
    },
    /// A range or depth outside the table.
    #[error("depth {depth_mm} mm outside the {what} table [{min_mm}, {max_mm}] mm")]
    DepthOutOfTable {
        /// Which table.
        what: String,
        /// Requested depth.
        depth_mm: f64,
        /// Table minimum.
        min_mm: f64,
        /// Table maximum.
        max_mm: f64,
    },
    /// The plan's patient position is not one the beam geometry can handle.
    #[error("beam {beam}: unsupported patient position {position:?}: supported are HFS, HFP, FFS, FFP")]
    UnsupportedPatientPosition {
        /// Beam number.
        beam: i32,
        /// The position as written.
        position: String,
    },
    /// Non-finite or non-positive geometry input.
    #[error("beam {beam}: {reason}")]
    BadBeamGeometry {
        /// Beam number.
        beam: i32,
        /// What is wrong.
        reason: String,
    },
}
