//! Shared by the daemon tests.
#![allow(dead_code)]

pub mod daemon;
pub mod dicom_edit;
