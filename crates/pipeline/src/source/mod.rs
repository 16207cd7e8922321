//! Frame sources: how CT frames from the in-room scanner reach the pipeline.
//!
//! A *frame* is one CT volume, pushed either as a set of classic CT slices or as one
//! Enhanced CT object. Every source turns what it receives into [`SourceEvent`]s on a
//! `crossbeam_channel` the ingest stage reads:
//!
//! - [`scp`]: a DICOM C-STORE receiver (Storage SCP, plus C-ECHO) on a TCP port.
//! - [`spool`]: a watched folder, for scanners or gateways that write files.
//! - [`InProcessSource`]: a cloneable handle that pushes whole frames (the simulator).
//!
//! The network and spool sources feed a [`FrameAssembler`](assemble::FrameAssembler), which
//! groups objects by series and acquisition and emits a frame once the expected number of
//! objects arrived. Every source stamps [`RawFrame::complete_at`] when the last object of
//! the frame arrived: that instant starts the latency clock.
//!
//! While a frame is still being assembled, each object it takes is also announced as a
//! [`SourceEvent::Object`], sharing the same bytes: the ingest stage decodes it early, so
//! that when the frame completes little more than its last object is left to decode. The
//! announcement is only a hint: a source drops it rather than wait for room in the channel,
//! and the [`SourceEvent::Frame`] stays the authority on what the frame holds.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::correction::RejectReason;

pub mod assemble;
pub mod scp;
pub mod spool;

pub use assemble::{AssembleError, AssemblerConfig, FrameAssembler, Offer};
pub use scp::{ScpConfig, ScpError, ScpHandle};
pub use spool::{PollSummary, SpoolConfig, SpoolError, SpoolHandle, SpoolWatcher};

/// What identifies one frame among the objects a scanner sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameKey {
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Acquisition Number (0020,0012), when present.
    pub acquisition_number: Option<i64>,
    /// Temporal Position Identifier (0020,0100), when present (4D CT phase).
    pub temporal_position_identifier: Option<i64>,
    /// For an Enhanced CT object, its SOP Instance UID: each such object is a frame by
    /// itself, so two of them never share a group even with equal series and acquisition.
    pub enhanced_sop_instance_uid: Option<String>,
}

impl fmt::Display for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "series {}", self.series_instance_uid)?;
        if let Some(n) = self.acquisition_number {
            write!(f, " acquisition {n}")?;
        }
        if let Some(t) = self.temporal_position_identifier {
            write!(f, " temporal position {t}")?;
        }
        if let Some(uid) = &self.enhanced_sop_instance_uid {
            write!(f, " enhanced object {uid}")?;
        }
        Ok(())
    }
}

/// The DICOM Part 10 bytes (file meta included) of one received object, shared between its
/// early-decode announcement and its frame.
pub type ObjectBytes = Arc<Vec<u8>>;

/// One complete frame, as received: the Part 10 bytes of its objects, undecoded.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// Every object, in arrival order; feed them to
    /// [`SeriesDecoder::decode_into`](crate::dicom::ct::SeriesDecoder::decode_into).
    pub objects: Vec<ObjectBytes>,
    /// When the last object of the frame arrived: the start of the latency clock.
    pub complete_at: Instant,
    /// Where the frame came from, e.g. `scp:SCANNER@127.0.0.1:40112`, `spool:/data/in`,
    /// `inproc:sim`. With objects from several origins, the one of the last object.
    pub origin: String,
    /// Which frame this is.
    pub key: FrameKey,
}

/// What a source tells the pipeline.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A complete frame.
    Frame(RawFrame),
    /// An object taken into a frame that is not complete yet (a hint for early decoding; see
    /// the module documentation). Its frame's [`SourceEvent::Frame`] carries it again.
    Object {
        /// The frame it belongs to.
        key: FrameKey,
        /// Its bytes (the same allocation the frame will hold).
        object: ObjectBytes,
    },
    /// An object or a partial frame was dropped: unparseable, not CT, over a limit, or a
    /// frame that did not complete within its timeout.
    Rejected {
        /// Where the refused data came from.
        origin: String,
        /// The frame it belonged to, when known.
        key: Option<FrameKey>,
        /// Why, typed (the audit log records it).
        why: RejectReason,
        /// Why, for the operator and the audit log's detail.
        reason: String,
        /// When it was refused.
        at: Instant,
    },
}

/// Why the in-process source refused a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InProcessError {
    /// The frame holds no object.
    #[error("frame holds no object")]
    Empty,
    /// An object is not a usable CT object.
    #[error("object {index} of the frame refused")]
    Object {
        /// Position of the object in the pushed frame.
        index: usize,
        /// Why.
        #[source]
        source: AssembleError,
    },
    /// The objects belong to more than one frame.
    #[error("object {index} belongs to {found}, not to {expected} like the first object")]
    MixedFrames {
        /// Position of the offending object.
        index: usize,
        /// Key of the first object.
        expected: Box<FrameKey>,
        /// Key of the offending object.
        found: Box<FrameKey>,
    },
    /// An Enhanced CT object must be a frame alone.
    #[error("an Enhanced CT object must be pushed alone, found {count} objects")]
    EnhancedNotAlone {
        /// Objects pushed.
        count: usize,
    },
    /// The pipeline end of the channel is gone.
    #[error("the pipeline no longer receives source events")]
    Disconnected,
}

impl InProcessError {
    /// Why, as the pipeline and the audit log classify it.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            InProcessError::Object { source, .. } => source.reject_reason(),
            InProcessError::Empty
            | InProcessError::MixedFrames { .. }
            | InProcessError::EnhancedNotAlone { .. } => RejectReason::InconsistentFrame,
            // nothing was refused: the pipeline is gone (no event reaches it anyway)
            InProcessError::Disconnected => RejectReason::Unreadable,
        }
    }
}

/// A cloneable handle that pushes whole frames into the pipeline (the simulator's source).
///
/// Objects are checked as the network sources check them (parseable Part 10, CT or Enhanced
/// CT, within `max_object_bytes`, one frame key), but not grouped: every push is one frame,
/// complete at the moment of the push.
#[derive(Debug, Clone)]
pub struct InProcessSource {
    sender: Sender<SourceEvent>,
    origin: String,
    max_object_bytes: usize,
}

impl InProcessSource {
    /// A source sending on `sender`, naming itself `inproc:{name}` in events.
    pub fn new(sender: Sender<SourceEvent>, name: &str) -> Self {
        InProcessSource {
            sender,
            origin: format!("inproc:{name}"),
            max_object_bytes: AssemblerConfig::default().max_object_bytes,
        }
    }

    /// Pushes one frame. On a refusal a [`SourceEvent::Rejected`] is sent too (the
    /// pipeline audits every drop) and the error is returned.
    pub fn push_frame(&self, objects: Vec<Vec<u8>>) -> Result<FrameKey, InProcessError> {
        self.push_shared_frame(objects.into_iter().map(Arc::new).collect())
    }

    /// Announces one object of a frame that is still arriving, the way the network sources
    /// do (a [`SourceEvent::Object`] hint, dropped when the channel is full); the frame
    /// itself follows with [`push_shared_frame`](Self::push_shared_frame), holding the same
    /// `Arc`. An object that would be refused is not announced (the frame push reports it).
    pub fn announce_object(&self, object: &ObjectBytes) -> Result<(), InProcessError> {
        let Ok(header) = assemble::read_header(object, self.max_object_bytes) else {
            return Ok(());
        };
        match self.sender.try_send(SourceEvent::Object {
            key: header.key,
            object: Arc::clone(object),
        }) {
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(InProcessError::Disconnected),
            _ => Ok(()),
        }
    }

    /// [`push_frame`](Self::push_frame) for objects already shared (e.g. announced earlier
    /// with [`announce_object`](Self::announce_object)).
    pub fn push_shared_frame(&self, objects: Vec<ObjectBytes>) -> Result<FrameKey, InProcessError> {
        let checked = self.check(&objects);
        let at = Instant::now();
        let event = match &checked {
            Ok(key) => SourceEvent::Frame(RawFrame {
                objects,
                complete_at: at,
                origin: self.origin.clone(),
                key: key.clone(),
            }),
            Err(e) => SourceEvent::Rejected {
                origin: self.origin.clone(),
                key: None,
                why: e.reject_reason(),
                reason: error_chain(e),
                at,
            },
        };
        self.sender
            .send(event)
            .map_err(|_| InProcessError::Disconnected)?;
        checked
    }

    fn check(&self, objects: &[ObjectBytes]) -> Result<FrameKey, InProcessError> {
        let mut first: Option<FrameKey> = None;
        for (index, bytes) in objects.iter().enumerate() {
            let header = assemble::read_header(bytes, self.max_object_bytes)
                .map_err(|source| InProcessError::Object { index, source })?;
            if header.key.enhanced_sop_instance_uid.is_some() && objects.len() > 1 {
                return Err(InProcessError::EnhancedNotAlone { count: objects.len() });
            }
            match &first {
                None => first = Some(header.key),
                Some(expected) if *expected != header.key => {
                    return Err(InProcessError::MixedFrames {
                        index,
                        expected: Box::new(expected.clone()),
                        found: Box::new(header.key),
                    })
                }
                Some(_) => {}
            }
        }
        first.ok_or(InProcessError::Empty)
    }
}

/// An error and its sources joined with `: `, for event reasons and logs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// An assembler shared by a source's threads, and the channel its results go to.
#[derive(Debug, Clone)]
pub(crate) struct Collector {
    assembler: Arc<Mutex<FrameAssembler>>,
    sender: Sender<SourceEvent>,
}

impl Collector {
    pub(crate) fn new(assembler: FrameAssembler, sender: Sender<SourceEvent>) -> Self {
        Collector {
            assembler: Arc::new(Mutex::new(assembler)),
            sender,
        }
    }

    pub(crate) fn max_object_bytes(&self) -> usize {
        self.assembler.lock().config().max_object_bytes
    }

    /// Offers one object; a completed frame or a refusal becomes an event. The refusal is
    /// also returned, so a network peer can be told.
    pub(crate) fn offer(&self, bytes: Vec<u8>, origin: &str, at: Instant) -> Result<(), AssembleError> {
        let result = self.assembler.lock().offer(bytes, origin, at);
        match result {
            Ok(Offer::Complete(frame)) => {
                self.send(SourceEvent::Frame(frame));
                Ok(())
            }
            Ok(Offer::Pending { key, object, .. }) => {
                // a hint only: never wait for room (the frame event stays the authority)
                let _ = self.sender.try_send(SourceEvent::Object { key, object });
                Ok(())
            }
            Ok(Offer::Duplicate { .. }) => Ok(()),
            Err(e) => {
                self.send(SourceEvent::Rejected {
                    origin: origin.to_owned(),
                    key: e.key().cloned(),
                    why: e.reject_reason(),
                    reason: error_chain(&e),
                    at,
                });
                Err(e)
            }
        }
    }

    /// Reports an object refused before it reached the assembler.
    pub(crate) fn reject(&self, origin: &str, why: RejectReason, reason: String, at: Instant) {
        self.send(SourceEvent::Rejected {
            origin: origin.to_owned(),
            key: None,
            why,
            reason,
            at,
        });
    }

    /// Rejects the groups whose timeout passed.
    pub(crate) fn expire(&self, now: Instant) {
        let expired = self.assembler.lock().expire(now);
        for event in expired {
            self.send(event);
        }
    }

    fn send(&self, event: SourceEvent) {
        if self.sender.send(event).is_err() {
            tracing::warn!("source event dropped: the pipeline no longer receives events");
        }
    }
}
