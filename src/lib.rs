//! ionguide: real-time image-guided adaptive delivery for scanned ion-beam therapy.
//!
//! In-room CT frames are registered against the planning CT, the water-equivalent range of
//! every pencil-beam spot is re-estimated, and corrected spots go to the gantry controller
//! within a fixed latency budget — or the beam is held.
//!
//! This crate is the facade over the layers, each its own crate so that the compiler holds the
//! boundaries (`ARCHITECTURE.md`, "Crates"). Modules follow the data flow; dependencies run one
//! way:
//!
//! - [`units`], [`geometry`], [`volume`], [`plan`], [`structure`]: the shared leaf types
//!   (quantities, patient grids, voxel volumes, the plan and contour models).
//! - [`dicom`]: the only module that knows DICOM — CT series ingest, RT Structure Set and
//!   RT Ion Plan reading and writing.
//! - [`range`]: HU → stopping power, exact ray tracing, WEPL, range ↔ energy.
//! - [`dose`]: analytical ion pencil-beam dose on a grid (matRad's HongPB).
//! - [`register`]: rigid intensity registration of a frame against the planning CT.
//! - [`predict`]: causal online prediction of the breathing surrogate over a horizon.
//! - [`correction`]: per-spot corrections and hold reasons, shared by adapt, link and audit.
//! - [`surrogate`]: breathing-surrogate samples and the rules that repair their timestamps.
//! - [`adapt`]: per-spot corrections from the tumor shift and the frame's WEPL, safety limits.
//! - [`audit`]: the append-only, checksummed audit log of every frame and session event.
//! - [`link`]: the authenticated UDP protocol to the gantry controller (spec: `docs/protocol.md`).
//!
//! ```no_run
//! let series = ionguide::dicom::ct::read_series_dir("tests/data/STS_001/image").unwrap();
//! println!("{:?} voxels", series.volume.grid().dims());
//! ```

pub use ionguide_core::{correction, geometry, plan, record, structure, surrogate, units, volume};
pub use ionguide_dicom as dicom;
pub use ionguide_kernels::{dose, predict, range, register};
pub use ionguide_pipeline::{adapt, audit, config, facility, link, pipeline, source, tracking, treatment};
