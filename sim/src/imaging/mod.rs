//! Imaging: the in-room frames the pipeline sees — the simulator's CT series and structure
//! set identities, written through `ionguide::dicom`, and the synthesizer of noisy moved
//! frames. Depends on [`crate::anatomy`] (what is imaged) and the leaves.

pub mod frames;
pub mod model;
pub mod sources;
