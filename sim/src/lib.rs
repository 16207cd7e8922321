//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! - Inputs: real breathing traces turned into tumor motion ([`motion`]), an analytic
//!   thorax phantom whose moved anatomy is rendered exactly ([`phantom`]), a geometric
//!   ion-beam planner on it ([`planner`]), and in-room CT frames encoded as DICOM ([`frames`]).
//! - [`controller`]: the gantry-controller simulator, the receiving end of the link
//!   (state machine + thread runner; binary `ionguide-controller`).
//! - [`replay`]: frames through the real pipeline and link, scored against the truth;
//!   [`scenario`] sets up the built-in demo and replays of a user's data; [`report`] writes
//!   `report.json`, plots and an HTML summary.
//! - [`delivery`]: a synchrotron's spot-by-spot delivery timeline, with respiratory gating.
//! - [`rng`] and [`uid`]: the seeded generator and deterministic UIDs every part above draws from.

pub mod controller;
pub mod delivery;
pub mod frames;
pub mod gate;
pub mod motion;
pub mod phantom;
pub mod planner;
pub mod replay;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod uid;
