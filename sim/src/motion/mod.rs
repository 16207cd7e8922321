//! Motion: recorded breathing traces read and resampled, and the model that turns a surface
//! marker's trace into the tumor's displacement per frame, and the rotation that can go with
//! it. Depends on no other part of the simulator.

pub mod relation;
pub mod rotation;
pub mod surrogate;
pub mod trace;
pub mod track;
pub mod tumor;
