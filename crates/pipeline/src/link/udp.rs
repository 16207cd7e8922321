//! UDP endpoints: [`LinkSender`] on the pipeline side, [`LinkReceiver`] on the controller side.
//! All buffers are allocated at construction; sending and receiving allocate nothing.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::correction::{CorrectionSet, DeliveredSpot, HoldReason};

use super::key::{KeyError, LinkKey};
use super::protocol::{
    unix_now_ns, Ack, Body, DecodeError, Decoder, DeliveredPart, EncodeError, Encoder, Header, MessageType,
    DEFAULT_MAX_DATAGRAM, MAX_UDP_PAYLOAD,
};
use super::reassembly::{PartOutcome, Reassembler, ReassemblyError};
use super::replay::{Admission, ReplayError, ReplayGuard};

/// Errors of the UDP endpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A socket operation failed.
    #[error("link socket: {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A message could not be encoded.
    #[error("link encode")]
    Encode(#[from] EncodeError),
    /// The key could not be loaded.
    #[error("link key")]
    Key(#[from] KeyError),
    /// The OS random generator failed while drawing a session id.
    #[error("cannot draw a random session id: {0}")]
    Random(getrandom::Error),
}

pub(super) fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> LinkError {
    move |source| LinkError::Io { context, source }
}

/// Options shared by both endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkOptions {
    /// Largest datagram sent or accepted, bytes (default 1400; at most 65507).
    pub max_datagram: usize,
    /// Oldest acceptable message, by the receiver's clock, ns (default 500 ms).
    pub max_age_ns: u64,
    /// Furthest a message may be in the receiver's future, ns (default 50 ms): clock skew.
    pub max_future_ns: u64,
    /// Largest correction set the receiver accepts, spots (default 1,000,000).
    pub max_spots: u32,
    /// Spots the receiver reserves room for at start (default 20,000).
    pub capacity_spots: usize,
    /// Kernel receive buffer asked for, bytes (default 4 MiB; the kernel may cap it).
    pub recv_buffer_bytes: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            max_datagram: DEFAULT_MAX_DATAGRAM,
            max_age_ns: 500_000_000,
            max_future_ns: 50_000_000,
            max_spots: 1_000_000,
            capacity_spots: 20_000,
            recv_buffer_bytes: 4 << 20,
        }
    }
}

impl LinkOptions {
    /// Sets the largest datagram.
    pub fn with_max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = bytes;
        self
    }
    /// Sets the freshness limits.
    pub fn with_freshness_ns(mut self, max_age_ns: u64, max_future_ns: u64) -> Self {
        self.max_age_ns = max_age_ns;
        self.max_future_ns = max_future_ns;
        self
    }
    /// Sets the largest accepted set and the room reserved at start.
    pub fn with_spots(mut self, max_spots: u32, capacity_spots: usize) -> Self {
        self.max_spots = max_spots;
        self.capacity_spots = capacity_spots;
        self
    }
}

/// What one send call put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendStats {
    /// Datagrams sent (including an opening HEARTBEAT, see [`LinkSender`]).
    pub datagrams: u32,
    /// Bytes sent, UDP payload.
    pub bytes: usize,
}

pub(super) fn udp_socket(bind: SocketAddr, recv_buffer_bytes: usize) -> Result<UdpSocket, LinkError> {
    let domain = socket2::Domain::for_address(bind);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(io_err("create UDP socket"))?;
    // Best effort: a capped buffer still works, it only drops bursts sooner.
    let _ = socket.set_recv_buffer_size(recv_buffer_bytes);
    socket.bind(&bind.into()).map_err(io_err("bind UDP socket"))?;
    Ok(socket.into())
}

pub(super) fn random_session_id() -> Result<u64, LinkError> {
    // 0 is kept out so that "no session" never collides with a real one.
    loop {
        let id = getrandom::u64().map_err(LinkError::Random)?;
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The pipeline's end: signs and sends corrections, holds, resumes and heartbeats to one
/// controller, and collects its ACKs without blocking.
///
/// A session starts with a HEARTBEAT (the controller admits a new session only on a
/// HEARTBEAT or HOLD): until an ACK of this session has been seen by [`LinkSender::poll_ack`],
/// every CORRECTIONS or RESUME send is preceded by a HEARTBEAT, so a lost opening message
/// does not lock the session out.
#[derive(Debug)]
pub struct LinkSender {
    socket: UdpSocket,
    dest: SocketAddr,
    encoder: Encoder,
    decoder: Decoder,
    ack_guard: ReplayGuard,
    buf: Vec<u8>,
    ack_buf: Vec<u8>,
    acked: bool,
    rejected_acks: u64,
}

impl LinkSender {
    /// A sender bound to `bind` (port 0: any), sending to `dest`, with a fresh random session.
    pub fn new(
        bind: SocketAddr,
        dest: SocketAddr,
        key: &LinkKey,
        options: &LinkOptions,
    ) -> Result<Self, LinkError> {
        let socket = udp_socket(bind, options.recv_buffer_bytes)?;
        socket
            .set_nonblocking(true)
            .map_err(io_err("set sender socket non-blocking"))?;
        let encoder = Encoder::new(key, random_session_id()?, options.max_datagram)?;
        Ok(LinkSender {
            socket,
            dest,
            encoder,
            decoder: Decoder::new(key, MAX_UDP_PAYLOAD),
            ack_guard: ReplayGuard::for_sender(options.max_age_ns, options.max_future_ns),
            buf: vec![0; options.max_datagram],
            ack_buf: vec![0; MAX_UDP_PAYLOAD + 1],
            acked: false,
            rejected_acks: 0,
        })
    }

    /// This session's id.
    pub fn session_id(&self) -> u64 {
        self.encoder.session_id()
    }

    /// The sequence number the next message of this session will carry.
    pub fn next_sequence(&self) -> u64 {
        self.encoder.next_sequence()
    }

    /// The local socket address (to learn the port picked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        self.socket.local_addr().map_err(io_err("local address"))
    }

    /// ACK datagrams refused (bad HMAC, replayed, malformed) so far.
    pub fn rejected_acks(&self) -> u64 {
        self.rejected_acks
    }

    fn send_buf(&mut self, len: usize, stats: &mut SendStats) -> Result<(), LinkError> {
        let sent = self
            .socket
            .send_to(&self.buf[..len], self.dest)
            .map_err(io_err("send datagram"))?;
        stats.datagrams += 1;
        stats.bytes += sent;
        Ok(())
    }

    fn open_session(&mut self, now: u64, stats: &mut SendStats) -> Result<(), LinkError> {
        if !self.acked {
            let len = self.encoder.encode_heartbeat(&mut self.buf, now)?;
            self.send_buf(len, stats)?;
        }
        Ok(())
    }

    /// Sends every part of `set`, stamped now.
    pub fn send_corrections(&mut self, set: &CorrectionSet) -> Result<SendStats, LinkError> {
        let now = unix_now_ns();
        let mut stats = SendStats::default();
        let parts = self.encoder.part_count(set.spots.len())?;
        // Refuse a bad set before anything goes out, so no partial set is ever sent.
        if set.mode.is_none() {
            return Err(EncodeError::MissingMode {
                frame_id: set.frame_id,
            }
            .into());
        }
        self.open_session(now, &mut stats)?;
        for part in 0..parts {
            let len = self
                .encoder
                .encode_corrections_part(&mut self.buf, now, set, part)?;
            self.send_buf(len, &mut stats)?;
        }
        Ok(stats)
    }

    /// Sends a HOLD.
    pub fn send_hold(&mut self, reason: HoldReason, frame_id: u64) -> Result<SendStats, LinkError> {
        let mut stats = SendStats::default();
        let len = self
            .encoder
            .encode_hold(&mut self.buf, unix_now_ns(), reason, frame_id)?;
        self.send_buf(len, &mut stats)?;
        Ok(stats)
    }

    /// Sends a RESUME.
    pub fn send_resume(&mut self) -> Result<SendStats, LinkError> {
        let now = unix_now_ns();
        let mut stats = SendStats::default();
        self.open_session(now, &mut stats)?;
        let len = self.encoder.encode_resume(&mut self.buf, now)?;
        self.send_buf(len, &mut stats)?;
        Ok(stats)
    }

    /// Sends a HEARTBEAT.
    pub fn send_heartbeat(&mut self) -> Result<SendStats, LinkError> {
        let mut stats = SendStats::default();
        let len = self.encoder.encode_heartbeat(&mut self.buf, unix_now_ns())?;
        self.send_buf(len, &mut stats)?;
        Ok(stats)
    }

    /// The next pending ACK for this session, without blocking (`None`: nothing pending).
    /// Datagrams that fail verification, or acknowledge another session, are counted and
    /// skipped; so are DELIVERED reports (use [`LinkSender::poll`] to see those).
    pub fn poll_ack(&mut self) -> Result<Option<Ack>, LinkError> {
        loop {
            match self.poll()? {
                None => return Ok(None),
                Some(FromController::Ack(ack)) => return Ok(Some(ack)),
                Some(FromController::Delivered(_)) => {}
            }
        }
    }

    /// The next pending controller message for this session, ACK or DELIVERED, without
    /// blocking (`None`: nothing pending). Datagrams that fail verification or the replay
    /// rules, or concern another sender session, are counted and skipped.
    pub fn poll(&mut self) -> Result<Option<FromController<'_>>, LinkError> {
        let len = loop {
            let len = match self.socket.recv_from(&mut self.ack_buf) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // A previous send to a closed port reports ICMP unreachable here; not an ACK.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(None),
                Err(e) => return Err(io_err("receive ACK")(e)),
            };
            let session = self.encoder.session_id();
            let ok = match self.decoder.decode(&self.ack_buf[..len]) {
                Ok(m) => {
                    let ours = match m.body {
                        Body::Ack(ack) => ack.acked_session_id == session,
                        Body::Delivered(d) => d.sender_session_id == session,
                        _ => false,
                    };
                    ours && self.ack_guard.check(&m.header, unix_now_ns()).is_ok()
                }
                Err(_) => false,
            };
            if ok {
                break len;
            }
            self.rejected_acks += 1;
        };
        // Decoded a second time (one more HMAC of a small datagram) so the loop above does
        // not hold the buffer's borrow across its iterations.
        let m = self
            .decoder
            .decode(&self.ack_buf[..len])
            .map_err(|_| io_err("re-decode controller message")(io::Error::other("changed")))?;
        Ok(match m.body {
            Body::Ack(ack) => {
                self.acked = true;
                Some(FromController::Ack(ack))
            }
            Body::Delivered(d) => Some(FromController::Delivered(d)),
            _ => None,
        })
    }
}

/// A verified message from the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FromController<'a> {
    /// An acknowledgement.
    Ack(Ack),
    /// Spots the controller delivered.
    Delivered(DeliveredPart<'a>),
}

/// Why the receiver refused a datagram. It was counted and not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Malformed or not authentic.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// Authentic but replayed, reordered, stale or from a session not admitted.
    #[error("replay guard: {0}")]
    Replay(#[from] ReplayError),
    /// Authentic part that does not fit its set.
    #[error("reassembly: {0}")]
    Reassembly(#[from] ReassemblyError),
    /// Authentic but of a type the controller never receives (ACK).
    #[error("unexpected message type {0:?}")]
    UnexpectedType(MessageType),
}

impl Rejection {
    /// True for failures of authenticity or freshness (forged, replayed, reordered, stale):
    /// the ones a conservative controller treats as a threat.
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            Rejection::Decode(DecodeError::BadMac) | Rejection::Replay(_)
        )
    }
}

/// What arrived, after verification, replay check and reassembly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// A valid part of a set that is not complete yet.
    PartPending {
        /// Its frame.
        frame_id: u64,
    },
    /// A complete set, still valid at arrival.
    Corrections(&'a CorrectionSet),
    /// A complete set already past its `valid_until` at arrival; not to be applied.
    Expired {
        /// Its frame.
        frame_id: u64,
        /// When it became void.
        valid_until_unix_ns: u64,
    },
    /// HOLD.
    Hold {
        /// Why.
        reason: HoldReason,
        /// Frame concerned.
        frame_id: u64,
    },
    /// RESUME.
    Resume,
    /// HEARTBEAT.
    Heartbeat,
}

/// One received datagram's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Incoming<'a> {
    /// Accepted.
    Message {
        /// Its header.
        header: Header,
        /// Where it came from (send ACKs there).
        peer: SocketAddr,
        /// It opened a new sender session.
        new_session: bool,
        /// What it means.
        event: Event<'a>,
    },
    /// Refused and counted.
    Rejected {
        /// Where it came from.
        peer: SocketAddr,
        /// Why.
        reason: Rejection,
    },
}

/// Counters of a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiverStats {
    /// Datagrams accepted.
    pub accepted: u64,
    /// Refused for a bad HMAC.
    pub bad_mac: u64,
    /// Refused as malformed otherwise.
    pub malformed: u64,
    /// Refused by the replay guard.
    pub replayed: u64,
    /// Refused by reassembly.
    pub reassembly: u64,
    /// Sets discarded incomplete.
    pub incomplete_sets: u64,
    /// Complete sets that had already expired.
    pub expired_sets: u64,
}

/// The controller's end: receives, verifies, replay-checks and reassembles; sends ACKs.
#[derive(Debug)]
pub struct LinkReceiver {
    socket: UdpSocket,
    decoder: Decoder,
    guard: ReplayGuard,
    reassembler: Reassembler,
    ack_encoder: Encoder,
    buf: Vec<u8>,
    ack_buf: Vec<u8>,
    timeout: Option<Duration>,
    stats: ReceiverStats,
}

impl LinkReceiver {
    /// A receiver bound to `bind` (port 0: any).
    pub fn bind(bind: SocketAddr, key: &LinkKey, options: &LinkOptions) -> Result<Self, LinkError> {
        let socket = udp_socket(bind, options.recv_buffer_bytes)?;
        Ok(LinkReceiver {
            socket,
            decoder: Decoder::new(key, options.max_datagram),
            guard: ReplayGuard::for_controller(options.max_age_ns, options.max_future_ns),
            reassembler: Reassembler::new(options.max_spots, options.capacity_spots),
            ack_encoder: Encoder::new(key, random_session_id()?, DEFAULT_MAX_DATAGRAM)?,
            // One byte more than accepted, so an oversize datagram is seen as such, not truncated.
            buf: vec![0; options.max_datagram.min(MAX_UDP_PAYLOAD) + 1],
            ack_buf: vec![0; DEFAULT_MAX_DATAGRAM],
            timeout: None,
            stats: ReceiverStats::default(),
        })
    }

    /// The bound address (to learn the port picked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        self.socket.local_addr().map_err(io_err("local address"))
    }

    /// Counters so far.
    pub fn stats(&self) -> ReceiverStats {
        ReceiverStats {
            incomplete_sets: self.reassembler.discarded_incomplete(),
            ..self.stats
        }
    }

    /// Waits up to `timeout` (at least 1 µs) for one datagram; `None` when none came.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Incoming<'_>>, LinkError> {
        let timeout = timeout.max(Duration::from_micros(1));
        if self.timeout != Some(timeout) {
            self.socket
                .set_read_timeout(Some(timeout))
                .map_err(io_err("set receive timeout"))?;
            self.timeout = Some(timeout);
        }
        let (len, peer) = match self.socket.recv_from(&mut self.buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) => return Err(io_err("receive datagram")(e)),
        };
        let now = unix_now_ns();
        match self.handle(len, now) {
            Ok((header, new_session, event)) => {
                self.stats.accepted += 1;
                let event = match event {
                    Ev::Complete => Event::Corrections(self.reassembler.set()),
                    Ev::Other(e) => e,
                };
                Ok(Some(Incoming::Message {
                    header,
                    peer,
                    new_session,
                    event,
                }))
            }
            Err(reason) => {
                match reason {
                    Rejection::Decode(DecodeError::BadMac) => self.stats.bad_mac += 1,
                    Rejection::Decode(_) | Rejection::UnexpectedType(_) => self.stats.malformed += 1,
                    Rejection::Replay(_) => self.stats.replayed += 1,
                    Rejection::Reassembly(_) => self.stats.reassembly += 1,
                }
                Ok(Some(Incoming::Rejected { peer, reason }))
            }
        }
    }

    fn handle(&mut self, len: usize, now: u64) -> Result<(Header, bool, Ev), Rejection> {
        let msg = self.decoder.decode(&self.buf[..len])?;
        if matches!(msg.header.message_type, MessageType::Ack | MessageType::Delivered) {
            return Err(Rejection::UnexpectedType(msg.header.message_type));
        }
        let admission = self.guard.check(&msg.header, now)?;
        let new_session = matches!(admission, Admission::NewSession { .. });
        let ev = match msg.body {
            Body::Corrections(part) => match self.reassembler.accept(&part)? {
                PartOutcome::Pending => Ev::Other(Event::PartPending {
                    frame_id: part.frame_id,
                }),
                PartOutcome::Complete if part.valid_until_unix_ns <= now => {
                    self.stats.expired_sets += 1;
                    Ev::Other(Event::Expired {
                        frame_id: part.frame_id,
                        valid_until_unix_ns: part.valid_until_unix_ns,
                    })
                }
                PartOutcome::Complete => Ev::Complete,
            },
            Body::Hold { reason, frame_id } => Ev::Other(Event::Hold { reason, frame_id }),
            Body::Resume => Ev::Other(Event::Resume),
            Body::Heartbeat => Ev::Other(Event::Heartbeat),
            Body::Ack(_) => return Err(Rejection::UnexpectedType(MessageType::Ack)),
            // the tracking system's stream goes to the pipeline, never to the controller
            Body::Surrogate(_) => return Err(Rejection::UnexpectedType(MessageType::Surrogate)),
            Body::Delivered(_) => return Err(Rejection::UnexpectedType(MessageType::Delivered)),
        };
        Ok((msg.header, new_session, ev))
    }

    /// Sends `spots` to `peer` as DELIVERED parts (as many as the datagram size needs), the
    /// first numbered `first_ordinal` in the controller's delivery log; returns the parts sent.
    pub fn send_delivered(
        &mut self,
        peer: SocketAddr,
        sender_session_id: u64,
        first_ordinal: u64,
        spots: &[DeliveredSpot],
    ) -> Result<usize, LinkError> {
        let per = self.ack_encoder.delivered_per_part();
        let mut parts = 0;
        for (k, chunk) in spots.chunks(per).enumerate() {
            let len = self.ack_encoder.encode_delivered(
                &mut self.ack_buf,
                unix_now_ns(),
                sender_session_id,
                first_ordinal + (k * per) as u64,
                chunk,
            )?;
            self.socket
                .send_to(&self.ack_buf[..len], peer)
                .map_err(io_err("send DELIVERED"))?;
            parts += 1;
        }
        Ok(parts)
    }

    /// Sends `ack` to `peer`.
    pub fn send_ack(&mut self, peer: SocketAddr, ack: &Ack) -> Result<usize, LinkError> {
        let len = self
            .ack_encoder
            .encode_ack(&mut self.ack_buf, unix_now_ns(), ack)?;
        self.socket
            .send_to(&self.ack_buf[..len], peer)
            .map_err(io_err("send ACK"))
    }
}

enum Ev {
    Complete,
    Other(Event<'static>),
}
