//! Beam delivery in time: when a synchrotron delivers each spot of a plan ([`timeline`]),
//! and when a gated treatment lets it ([`gating`]).

pub mod gating;
pub mod timeline;
