//! The gantry link: a versioned, authenticated binary protocol over UDP between the
//! pipeline ([`LinkSender`]) and the gantry controller ([`LinkReceiver`]).
//!
//! - [`protocol`]: byte layout, HMAC-SHA256, allocation-free encode and decode.
//! - [`key`]: the shared key, from an owner-only file.
//! - [`replay`]: strict per-session sequence, freshness and session-admission rules.
//! - [`reassembly`]: a frame's CORRECTIONS parts back into one [`crate::correction::CorrectionSet`].
//! - [`udp`]: the two socket endpoints.
//! - [`surrogate`]: the tracking system's SURROGATE stream (its sender and the pipeline's receiver).
//!
//! `docs/protocol.md` is the byte-by-byte specification.
//!
//! ```no_run
//! use ionguide_pipeline::link::{LinkKey, LinkOptions, LinkSender};
//! let key = LinkKey::from_file("/etc/ionguide/link.key")?;
//! let mut tx = LinkSender::new("0.0.0.0:0".parse()?, "10.0.0.2:7400".parse()?, &key, &LinkOptions::default())?;
//! tx.send_heartbeat()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod key;
pub mod protocol;
pub mod reassembly;
pub mod replay;
pub mod surrogate;
pub mod udp;

pub use key::{check_private_file, KeyError, LinkKey};
pub use protocol::{
    Ack, AckStatus, DecodeError, Decoder, DeliveredPart, EncodeError, Encoder, Message, MessageType,
};
pub use udp::{
    Event, FromController, Incoming, LinkError, LinkOptions, LinkReceiver, LinkSender, ReceiverStats,
    Rejection, SendStats,
};
