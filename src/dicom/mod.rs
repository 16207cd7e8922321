//! DICOM in and out: the only module that knows DICOM.
//!
//! - [`ct`]: a CT series (one file per slice, or one Enhanced CT object) → HU [`Volume`](crate::volume::Volume).
//! - [`rtstruct`]: RT Structure Set → [`StructureSet`](crate::structure::StructureSet).
//! - [`rtplan`]: RT Ion Plan ↔ [`IonPlan`](crate::plan::IonPlan).

pub mod attr;
pub mod attrs;
pub mod ct;
pub mod rtplan;
pub mod rtstruct;
