//! Surrogate-driven tracking between CT frames (issue 14's live half): the tracking
//! system's surrogate stream, a correlation model refit on each CT frame, and a forecast
//! over the system latency give a correction set per surrogate sample.
//!
//! - [`tracker`]: samples and frame evidence → the predicted shift since the newest frame,
//!   or a hold with its reason (no threads, no spots).
//! - The spots come from [`crate::adapt::Adapter::adapt_shifted`]; the thread is
//!   [`crate::pipeline::surrogate_stage`].

pub mod tracker;

pub use tracker::{Cause, Forecast, FrameUse, Steer, Tracker, TrackerError, TrackerOptions, Transition};
