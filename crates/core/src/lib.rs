//! ionguide's shared types: what every layer above speaks.
//!
//! - [`units`]: quantities with their unit in the type (mm, mm of water, MeV/u, degrees, ns).
//! - [`geometry`]: patient grids, rigid transforms, the room setup.
//! - [`volume`]: voxel volumes on a grid.
//! - [`plan`]: the ion plan model (beams, layers, spots).
//! - [`structure`]: contours, ROIs and their rasterization.
//! - [`correction`]: per-spot corrections and hold reasons, shared by adapt, link and audit.
//! - [`surrogate`]: external breathing-surrogate samples and the rules that check and repair
//!   their timestamps (recorded traces and live streams alike).
//!
//! Nothing here knows DICOM, threads or the pipeline.

pub mod correction;
pub mod geometry;
pub mod plan;
pub mod record;
pub mod structure;
pub mod surrogate;
pub mod units;
pub mod volume;
