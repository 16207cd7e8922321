//! DICOM in and out: the only module that knows DICOM.
//!
//! - [`ct`]: a CT series (one file per slice, or one Enhanced CT object) → HU [`Volume`](crate::volume::Volume).
//! - [`rtstruct`]: RT Structure Set → [`StructureSet`](crate::structure::StructureSet).
//! - [`rtplan`]: RT Ion Plan ↔ [`IonPlan`](crate::plan::IonPlan).
//! - [`spatial_registration`]: Spatial Registration ↔ [`RoomSetup`](crate::geometry::RoomSetup), the in-room → planning Frame of Reference map.
//! - [`identity`]: SOP Instance UID, Patient ID and a plan's referenced structure set, for the session's load checks.
//! - [`classify`]: sorts a folder of files into CT series, structure sets and plans.
//! - [`attrs`]: opening Part 10 data (with a corrupt-length guard) and typed attribute reads, shared by the readers above.

pub mod attrs;
pub mod classify;
pub mod ct;
pub mod identity;
pub mod rtplan;
pub mod rtstruct;
pub mod spatial_registration;
