//! The tracking system's surrogate stream over UDP: SURROGATE messages (type 7) on the same
//! authenticated framing as the controller link, with their own key. [`SurrogateSender`] is
//! the tracking system's end (`ionguide surrogate-send` for tests and demos),
//! [`SurrogateReceiver`] the pipeline's. Both allocate only at construction.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::key::LinkKey;
use super::protocol::{unix_now_ns, Body, Decoder, Encoder, Header, MessageType, SurrogateSample};
use super::replay::{Admission, ReplayGuard};
use super::udp::{io_err, random_session_id, udp_socket, LinkError, LinkOptions, Rejection};

/// Largest SURROGATE datagram: header, 20 fixed bytes, three markers, tag.
pub const SURROGATE_DATAGRAM: usize = super::protocol::HEADER_LEN
    + super::protocol::SURROGATE_FIXED_LEN
    + 12 * super::protocol::MAX_SURROGATE_MARKERS
    + super::protocol::MAC_LEN;

/// The tracking system's end: signs and sends one sample per datagram.
#[derive(Debug)]
pub struct SurrogateSender {
    socket: UdpSocket,
    dest: SocketAddr,
    encoder: Encoder,
    buf: [u8; SURROGATE_DATAGRAM],
}

impl SurrogateSender {
    /// A sender bound to `bind` (port 0: any) sending to `dest`, with a fresh random session.
    pub fn new(bind: SocketAddr, dest: SocketAddr, key: &LinkKey) -> Result<Self, LinkError> {
        let socket = udp_socket(bind, 1 << 16)?;
        Ok(SurrogateSender {
            socket,
            dest,
            encoder: Encoder::new(key, random_session_id()?, super::protocol::DEFAULT_MAX_DATAGRAM)?,
            buf: [0; SURROGATE_DATAGRAM],
        })
    }

    /// This session's id.
    pub fn session_id(&self) -> u64 {
        self.encoder.session_id()
    }

    /// Signs and sends `sample`, stamped with the wall clock now; the bytes sent.
    pub fn send(&mut self, sample: &SurrogateSample) -> Result<usize, LinkError> {
        let len = self
            .encoder
            .encode_surrogate(&mut self.buf, unix_now_ns(), sample)?;
        self.socket
            .send_to(&self.buf[..len], self.dest)
            .map_err(io_err("send surrogate sample"))
    }
}

/// What the receiver counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SurrogateStats {
    /// Samples accepted (authentic, fresh, in order).
    pub accepted: u64,
    /// Refused: bad HMAC.
    pub bad_mac: u64,
    /// Refused: replayed, reordered, stale, or a session not admitted.
    pub replayed: u64,
    /// Refused: malformed, or another message type.
    pub malformed: u64,
}

/// One received datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SurrogateIncoming {
    /// An authentic, fresh, in-order sample.
    Sample {
        /// Its header.
        header: Header,
        /// The sample.
        sample: SurrogateSample,
        /// It opened a new tracking-system session (a restarted sender).
        new_session: bool,
        /// The receiver's wall clock when it was accepted, ns.
        received_unix_ns: u64,
    },
    /// Refused, and why.
    Rejected(Rejection),
}

/// The pipeline's end of the surrogate stream.
#[derive(Debug)]
pub struct SurrogateReceiver {
    socket: UdpSocket,
    decoder: Decoder,
    guard: ReplayGuard,
    buf: [u8; SURROGATE_DATAGRAM + 1],
    timeout: Option<Duration>,
    stats: SurrogateStats,
}

impl SurrogateReceiver {
    /// A receiver bound to `bind` (port 0: any); freshness limits from `options`.
    pub fn bind(bind: SocketAddr, key: &LinkKey, options: &LinkOptions) -> Result<Self, LinkError> {
        Ok(SurrogateReceiver {
            socket: udp_socket(bind, options.recv_buffer_bytes)?,
            // a longer datagram is no SURROGATE: refused as oversize before the HMAC
            decoder: Decoder::new(key, SURROGATE_DATAGRAM),
            guard: ReplayGuard::for_surrogate(options.max_age_ns, options.max_future_ns),
            buf: [0; SURROGATE_DATAGRAM + 1],
            timeout: None,
            stats: SurrogateStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        self.socket.local_addr().map_err(io_err("local address"))
    }

    /// Counters so far.
    pub fn stats(&self) -> SurrogateStats {
        self.stats
    }

    /// Waits up to `timeout` (at least 1 µs) for one datagram; `None` when none came.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<SurrogateIncoming>, LinkError> {
        let timeout = timeout.max(Duration::from_micros(1));
        if self.timeout != Some(timeout) {
            self.socket
                .set_read_timeout(Some(timeout))
                .map_err(io_err("set receive timeout"))?;
            self.timeout = Some(timeout);
        }
        let len = match self.socket.recv_from(&mut self.buf) {
            Ok((len, _)) => len,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) => return Err(io_err("receive surrogate datagram")(e)),
        };
        let now = unix_now_ns();
        Ok(Some(match self.handle(len, now) {
            Ok((header, sample, new_session)) => {
                self.stats.accepted += 1;
                SurrogateIncoming::Sample {
                    header,
                    sample,
                    new_session,
                    received_unix_ns: now,
                }
            }
            Err(r) => {
                match r {
                    Rejection::Decode(super::protocol::DecodeError::BadMac) => self.stats.bad_mac += 1,
                    Rejection::Replay(_) => self.stats.replayed += 1,
                    _ => self.stats.malformed += 1,
                }
                SurrogateIncoming::Rejected(r)
            }
        }))
    }

    fn handle(&mut self, len: usize, now: u64) -> Result<(Header, SurrogateSample, bool), Rejection> {
        let msg = self.decoder.decode(&self.buf[..len])?;
        let Body::Surrogate(sample) = msg.body else {
            return Err(Rejection::UnexpectedType(msg.header.message_type));
        };
        debug_assert_eq!(msg.header.message_type, MessageType::Surrogate);
        let admission = self.guard.check(&msg.header, now)?;
        Ok((
            msg.header,
            sample,
            matches!(admission, Admission::NewSession { .. }),
        ))
    }
}
