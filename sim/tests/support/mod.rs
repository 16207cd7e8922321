//! Shared by the end-to-end and fault tests.
#![allow(dead_code)]

pub mod dicom_edit;
pub mod proxy;
pub mod rig;
pub mod truth;
