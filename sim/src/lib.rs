//! The ionguide simulator: replays recorded patient motion through the whole chain.
//!
//! Building blocks: real breathing traces turned into tumor motion ([`motion`]), an
//! analytic thorax phantom whose moved anatomy is rendered exactly ([`phantom`]), a
//! geometric ion-beam planner on it ([`planner`]), and in-room CT frames encoded as DICOM
//! ([`frames`]).

pub mod frames;
pub mod motion;
pub mod phantom;
pub mod planner;
