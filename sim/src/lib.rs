//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! - Inputs: real breathing traces turned into tumor motion ([`motion`]), an analytic
//!   thorax phantom whose moved anatomy is rendered exactly ([`anatomy`]), a geometric
//!   ion-beam planner on it ([`planning`]), and in-room CT frames encoded as DICOM ([`imaging`]).
//! - [`delivery`]: the gantry-controller simulator, the receiving end of the link
//!   (state machine + thread runner; binary `ionguide-controller`).
//! - [`replay`]: frames through the real pipeline and link, scored against the truth;
//!   [`scenario`] sets up the built-in demo and replays of a user's data; [`report`] writes
//!   `report.json`, plots and an HTML summary.
//! - [`rng`] and [`uid`]: the seeded generator and deterministic UIDs every part above draws from.

pub mod anatomy;
pub mod delivery;
pub mod gate;
pub mod imaging;
pub mod motion;
pub mod planning;
pub mod replay;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod uid;
