//! Shared by the daemon tests.
#![allow(dead_code)]

pub mod daemon;
// one frame-rewriting helper for the whole workspace: the simulator's tests own it
#[path = "../../../sim/tests/support/dicom_edit.rs"]
pub mod dicom_edit;
// the DICOM TLS tests' certificates, shared with the receiver's tests
#[path = "../../../tests/pki_support/mod.rs"]
pub mod pki;
