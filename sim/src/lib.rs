//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! Started empty by the foundation issue; motion replay, phantoms, frame synthesis, the
//! controller simulator and reports land here with the simulator issue.
pub mod report;
