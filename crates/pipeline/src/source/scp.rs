//! The C-STORE receiver as a frame source: the DICOM network service
//! ([`ionguide_dicom::scp`]) with the frame assembler as its handler.
//!
//! Each received object is offered to the [`FrameAssembler`]; a completed frame, and every
//! refusal with its reason, becomes a [`SourceEvent`]. The peer is told the outcome by the
//! C-STORE status: a non-CT object gets "SOP class not supported", a limit "out of
//! resources", anything unparseable "cannot understand".

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

pub use crate::dicom::scp::{
    accepted_transfer_syntaxes, ScpError, ScpHandle, ScpOptions, TlsFiles, VERIFICATION_SOP_CLASS,
};
use crate::dicom::scp::{Refusal, StoreHandler, StoreStatus};

use crate::correction::RejectReason;

use super::{error_chain, AssembleError, AssemblerConfig, Collector, FrameAssembler, SourceEvent};

/// Configuration of the receiver: the network service and the frame assembly behind it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScpConfig {
    /// Address, AE title, PDU size, timeouts and association limits.
    pub network: ScpOptions,
    /// Frame assembly rules and limits.
    pub assembler: AssemblerConfig,
}

/// Starts the receiver; frames and refusals go to `events`.
pub fn start(config: ScpConfig, events: Sender<SourceEvent>) -> Result<ScpHandle, ScpError> {
    // The TLS private key gets the check every key file gets.
    if let Some(t) = &config.network.tls {
        crate::link::check_private_file(&t.key_pem).map_err(|e| ScpError::Tls {
            path: t.key_pem.clone(),
            why: e.to_string(),
        })?;
    }
    let collector = Collector::new(FrameAssembler::new(config.assembler), events);
    crate::dicom::scp::start(config.network, Arc::new(collector))
}

impl StoreHandler for Collector {
    fn max_object_bytes(&self) -> usize {
        Collector::max_object_bytes(self)
    }

    fn on_object(&self, part10: Vec<u8>, origin: &str, at: Instant) -> Result<(), Refusal> {
        self.offer(part10, origin, at).map_err(|e| Refusal {
            status: match e {
                AssembleError::NotCt { .. } => StoreStatus::SopClassNotSupported,
                AssembleError::ObjectTooLarge { .. }
                | AssembleError::TooManyObjects { .. }
                | AssembleError::TooManyOpenGroups { .. } => StoreStatus::OutOfResources,
                _ => StoreStatus::CannotUnderstand,
            },
            reason: error_chain(&e),
        })
    }

    fn on_refused(&self, origin: &str, refusal: &Refusal, at: Instant) {
        let why = match refusal.status {
            StoreStatus::OutOfResources => RejectReason::OverLimit,
            StoreStatus::SopClassNotSupported => RejectReason::NotCt,
            _ => RejectReason::Unparseable,
        };
        self.reject(origin, why, refusal.reason.clone(), at);
    }

    fn on_poll(&self, now: Instant) {
        self.expire(now);
    }

    fn on_association_refused(&self, origin: &str, why: &str, at: Instant) {
        self.reject(origin, RejectReason::PeerRefused, why.to_owned(), at);
    }
}
