//! Anatomy: the analytic thorax phantom the simulator's truth comes from. Its moved tumor is
//! rendered analytically, not resampled, so every score downstream is against an exact answer.
//! Depends only on the leaves [`crate::rng`] and [`crate::uid`].

pub mod phantom;
