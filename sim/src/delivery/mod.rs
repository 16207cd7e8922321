//! Delivery: the receiving end of the link — the gantry-controller simulator (state machine
//! and thread runner; binary `ionguide-controller`) — and beam delivery in time: when a
//! synchrotron delivers each spot of a plan ([`timeline`]), and when a gated treatment lets
//! it ([`gating`]). Depends on no other part of the simulator, only on the library's link,
//! correction and plan types.

pub mod controller;
pub mod gating;
pub mod timeline;
