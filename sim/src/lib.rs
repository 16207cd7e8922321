//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! - [`controller`]: the gantry-controller simulator, the receiving end of the link
//!   (state machine + thread runner; binary `ionguide-controller`).
//!
//! Motion replay, phantoms, frame synthesis and reports land here with the simulator issue.

pub mod controller;
pub mod report;
