//! Delivery: the receiving end of the link — the gantry-controller simulator (state machine
//! and thread runner; binary `ionguide-controller`). Depends on no other part of the
//! simulator, only on the library's link and correction types.

pub mod controller;
