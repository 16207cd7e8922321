//! DICOM in and out: the only crate that knows DICOM (dicom-rs types stay inside it).
//!
//! - [`ct`]: a CT series (one file per slice, or one Enhanced CT object) → HU [`Volume`](ionguide_core::volume::Volume).
//! - [`rtstruct`]: RT Structure Set → [`StructureSet`](ionguide_core::structure::StructureSet).
//! - [`rtplan`]: RT Ion Plan ↔ [`IonPlan`](ionguide_core::plan::IonPlan).
//! - [`rtdose`]: a dose grid (Gy) → RT Dose, 32-bit unsigned with Dose Grid Scaling.
//! - [`rtrecord`]: RT Ion Beams Treatment Record ↔ [`TreatmentRecord`](ionguide_core::record::TreatmentRecord), what a session delivered.
//! - [`spatial_registration`]: Spatial Registration ↔ [`RoomSetup`](ionguide_core::geometry::RoomSetup), the in-room → planning Frame of Reference map.
//! - [`object_header`]: the header facts frame assembly groups received objects by.
//! - [`scp`]: the C-STORE receiver (Storage SCP) a scanner pushes frames to; objects go to a handler.
//! - [`uids`]: the transfer-syntax and SOP class UIDs the project names, one constant each.
//! - [`identity`]: SOP Instance UID, Patient ID and Name and a plan's referenced structure set, for the session's load checks.
//! - [`write`](mod@write): the element builders and Part 10 encoder every writer shares, [`Producer`](write::Producer)
//!   and [`WriteError`](write::WriteError); the CT series writer is [`ct::write`], the RT Dose writer
//!   [`rtdose::write_rt_dose`], the structure set writer
//!   [`rtstruct::write`].
//! - [`classify`]: sorts a folder of files into CT series, structure sets and plans.
//! - `attrs` (private): opening Part 10 data (with a corrupt-length guard) and typed attribute
//!   reads, shared by the readers above; its errors are [`OpenError`] and [`AttrError`].

mod attrs;
pub mod classify;
pub mod ct;
pub mod datetime;
pub mod identity;
pub mod object_header;
pub mod rtdose;
pub mod rtplan;
pub mod rtrecord;
pub mod rtstruct;
pub mod scp;
pub mod spatial_registration;
pub mod uids;
pub mod write;

pub use attrs::{AttrError, OpenError};

// The readers build the shared types; they are named through `crate::` paths as in one crate.
pub(crate) use ionguide_core::{geometry, plan, structure, units, volume};
