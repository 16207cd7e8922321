//! ionguide's compute kernels: pure functions of volumes and plans.
//!
//! - [`range`]: HU → relative stopping power, exact voxel ray tracing, WEPL, range ↔ energy.
//! - [`dose`]: analytical ion pencil-beam dose (matRad's HongPB) on a grid.
//! - [`register`]: rigid intensity registration of a frame against the planning CT.
//! - [`predict`]: causal online prediction of a breathing surrogate, and the published
//!   protocol that scores it.
//!
//! Kernels keep no threads of their own and know nothing of the pipeline; one may split one
//! call's work over `std::thread::scope` when its options ask (ARCHITECTURE.md, "Threads in
//! kernels").

pub mod dose;
pub mod predict;
pub mod range;
pub mod register;

// The shared types, named through `crate::` paths as in one crate.
pub(crate) use ionguide_core::{correction, geometry, plan, units, volume};
