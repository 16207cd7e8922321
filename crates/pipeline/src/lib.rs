//! ionguide's real-time chain: a frame in, corrections or HOLD out, everything audited.
//!
//! - [`source`]: frame sources (DICOM C-STORE receiver, spool folder, in-process) and frame assembly.
//! - [`config`]: the session configuration, every key validated.
//! - [`facility`]: the treatment rooms (`facility.toml`) and the check of a plan against its room.
//! - [`pipeline`]: the session (planning data loaded and checked), the stage threads and their rings.
//! - [`adapt`]: per-spot corrections from the tumor shift and the frame's WEPL, safety limits.
//! - [`link`]: the authenticated UDP protocol to the gantry controller (spec: `docs/protocol.md`).
//! - [`tracking`]: surrogate-driven corrections between CT frames (correlation model, forecast, holds).
//! - [`audit`]: the append-only, checksummed audit log of every frame and session event.

pub mod adapt;
pub mod audit;
pub mod config;
pub mod facility;
pub mod link;
pub mod pipeline;
pub mod source;
pub mod tracking;
pub mod treatment;

// The layers below, named through `crate::` paths as in one crate.
pub(crate) use ionguide_core::{correction, geometry, plan, units, volume};
pub(crate) use ionguide_dicom as dicom;
pub(crate) use ionguide_kernels::{range, register};
