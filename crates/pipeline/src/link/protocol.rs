//! The wire format: a fixed little-endian header, a typed payload and a trailing
//! HMAC-SHA256, encoded into caller buffers and decoded into borrowed views, all without heap
//! allocation. `docs/protocol.md` documents every byte; keep the two in step.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::correction::{
    CorrectionSet, DeliveredSpot, HoldReason, RangeMode, SpotCorrection, DELIVERED_SPOT_BYTES,
};

use super::key::LinkKey;

/// `b"IGLK"`: the first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"IGLK";
/// The protocol version this build speaks. A receiver rejects every other version.
pub const VERSION: u8 = 1;
/// Header bytes before the payload.
pub const HEADER_LEN: usize = 36;
/// HMAC-SHA256 tag bytes after the payload.
pub const MAC_LEN: usize = 32;
/// Fixed CORRECTIONS payload bytes before the spots.
pub const CORRECTIONS_FIXED_LEN: usize = 44;
/// Bytes per spot in a CORRECTIONS payload: the shared encoding of
/// [`SpotCorrection::to_le_bytes`], the same bytes the audit log keeps.
pub const SPOT_LEN: usize = crate::correction::SPOT_BYTES;
/// HOLD payload bytes.
pub const HOLD_LEN: usize = 10;
/// ACK payload bytes.
pub const ACK_LEN: usize = 28;
/// Fixed SURROGATE payload bytes before the marker coordinates.
pub const SURROGATE_FIXED_LEN: usize = 20;
/// Most markers one SURROGATE sample carries.
pub const MAX_SURROGATE_MARKERS: usize = 3;
/// Fixed DELIVERED payload bytes before the spots.
pub const DELIVERED_FIXED_LEN: usize = 24;
/// Bytes per spot in a DELIVERED payload: [`DeliveredSpot::to_le_bytes`], the same bytes
/// the audit log's delivered-spots record keeps.
pub const DELIVERED_LEN: usize = DELIVERED_SPOT_BYTES;
/// Default largest datagram: fits a 1500-byte Ethernet MTU with IPv4/IPv6 and UDP headers,
/// so no datagram is ever IP-fragmented (a lost fragment would lose the whole datagram).
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;
/// Largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65507;
/// Smallest allowed datagram: the largest of one spot per CORRECTIONS part, one spot per
/// DELIVERED part and a three-marker SURROGATE sample, so that every message fits (a
/// DELIVERED spot is the largest: 136 bytes).
pub const MIN_MAX_DATAGRAM: usize = HEADER_LEN + max_body(CORRECTIONS_FIXED_LEN + SPOT_LEN) + MAC_LEN;

/// The larger of `corrections` and the DELIVERED and SURROGATE bodies' smallest useful sizes.
const fn max_body(corrections: usize) -> usize {
    let delivered = DELIVERED_FIXED_LEN + DELIVERED_LEN;
    let surrogate = SURROGATE_FIXED_LEN + 12 * MAX_SURROGATE_MARKERS;
    let mut m = corrections;
    if delivered > m {
        m = delivered;
    }
    if surrogate > m {
        m = surrogate;
    }
    m
}

type HmacSha256 = Hmac<Sha256>;

/// The message types (header byte 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// One part of one frame's corrections.
    Corrections,
    /// Hold the beam.
    Hold,
    /// Lift a hold: the controller may deliver again with its current (still valid) set.
    Resume,
    /// The sender is alive; feeds the controller's watchdog.
    Heartbeat,
    /// Controller → sender acknowledgement.
    Ack,
    /// Tracking system → ionguide: one external surrogate sample (type 7).
    Surrogate,
    /// Controller → sender: spots delivered (type 6).
    Delivered,
}

impl MessageType {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Corrections => 1,
            MessageType::Hold => 2,
            MessageType::Resume => 3,
            MessageType::Heartbeat => 4,
            MessageType::Ack => 5,
            MessageType::Surrogate => 7,
            MessageType::Delivered => 6,
        }
    }
    /// From a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(MessageType::Corrections),
            2 => Some(MessageType::Hold),
            3 => Some(MessageType::Resume),
            4 => Some(MessageType::Heartbeat),
            5 => Some(MessageType::Ack),
            7 => Some(MessageType::Surrogate),
            6 => Some(MessageType::Delivered),
            _ => None,
        }
    }
}

/// Why an encode failed. Small and `Copy`: it is returned on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The caller's buffer is smaller than the message.
    #[error("output buffer holds {capacity} bytes, message needs {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
    /// The configured largest datagram is outside the allowed range.
    #[error("max datagram {bytes} bytes is outside {MIN_MAX_DATAGRAM}..={MAX_UDP_PAYLOAD}")]
    BadMaxDatagram {
        /// The size asked for.
        bytes: usize,
    },
    /// The set has more spots than the wire can number (u32) or split (u16 parts).
    #[error("correction set of {spots} spots needs more than 65535 parts or 2^32 spots")]
    TooManySpots {
        /// Spots in the set.
        spots: usize,
    },
    /// The set has no range mode; the controller would not know how to apply it.
    #[error("correction set for frame {frame_id} has no range mode")]
    MissingMode {
        /// The frame.
        frame_id: u64,
    },
    /// A spot or the tumor shift holds NaN or infinity.
    #[error("correction set for frame {frame_id} has a non-finite value at spot position {position}")]
    NonFinite {
        /// The frame.
        frame_id: u64,
        /// Position in the set (`u32::MAX` for the tumor shift).
        position: u32,
    },
    /// `part_index` is not below the set's part count.
    #[error("part {part_index} requested of a set split into {part_count} parts")]
    NoSuchPart {
        /// Asked for.
        part_index: u16,
        /// Available.
        part_count: u16,
    },
    /// A SURROGATE sample must carry 1 to 3 markers.
    #[error("surrogate sample with {markers} markers (1..=3 allowed)")]
    BadMarkerCount {
        /// Markers asked for.
        markers: u8,
    },
    /// The sequence number space of this session is exhausted (2^64 messages).
    #[error("sequence numbers exhausted for this session")]
    SequenceExhausted,
}

/// Why a datagram was rejected. Small and `Copy`: the receiver counts these per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than a header plus a tag.
    #[error("datagram of {len} bytes is shorter than header + HMAC ({min})")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Least possible.
        min: usize,
    },
    /// Longer than the receiver's largest datagram.
    #[error("datagram of {len} bytes exceeds the maximum of {max}")]
    Oversize {
        /// Bytes received.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// Does not start with `IGLK`.
    #[error("bad magic {found:02x?}, expected \"IGLK\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {found} (this build speaks {VERSION})")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// A message-type code this version does not define.
    #[error("unknown message type {code}")]
    UnknownType {
        /// The type byte.
        code: u8,
    },
    /// The header's payload length disagrees with the datagram size, or with the size the
    /// type requires.
    #[error("payload length mismatch: header says {declared}, datagram/type allows {actual}")]
    LengthMismatch {
        /// Payload bytes the header declares.
        declared: usize,
        /// Payload bytes present (or required by the type).
        actual: usize,
    },
    /// The HMAC does not verify: a forged or corrupted message, or the wrong key.
    #[error("HMAC verification failed (forged, corrupted, or wrong key)")]
    BadMac,
    /// An authenticated message with a field outside its domain.
    #[error("bad field {field}")]
    BadField {
        /// Which field.
        field: &'static str,
    },
}

/// The common header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type.
    pub message_type: MessageType,
    /// Random per sender session: a restarted sender is a new session.
    pub session_id: u64,
    /// Strictly increasing within a session, from 1.
    pub sequence: u64,
    /// Sender's wall clock when encoded, ns since the UNIX epoch.
    pub sent_unix_ns: u64,
}

/// What an ACK says about the acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckStatus {
    /// Verified and accepted (HOLD, RESUME, HEARTBEAT).
    Accepted,
    /// The last part of a correction set arrived; the complete set was applied.
    Applied,
    /// The set was complete but already past its `valid_until`; not applied.
    Expired,
}

impl AckStatus {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            AckStatus::Accepted => 0,
            AckStatus::Applied => 1,
            AckStatus::Expired => 2,
        }
    }
    /// From a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(AckStatus::Accepted),
            1 => Some(AckStatus::Applied),
            2 => Some(AckStatus::Expired),
            _ => None,
        }
    }
}

/// The controller's acknowledgement of one sender message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The sender session acknowledged (so a restarted sender ignores ACKs meant for its
    /// predecessor).
    pub acked_session_id: u64,
    /// The sequence number acknowledged (for a set: its last-arriving part).
    pub acked_sequence: u64,
    /// The frame concerned (0 when the message had none).
    pub frame_id: u64,
    /// What happened to it.
    pub status: AckStatus,
    /// The controller's beam state after handling it.
    pub beam_on: bool,
}

/// One external surrogate sample as the tracking system sent it: 1–3 markers, 3 coordinates
/// each (the tracking system's frame, mm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurrogateSample {
    /// The tracking system's sample counter (its camera frame): the witness that orders
    /// samples and says which of two disagreeing clocks is wrong.
    pub sample: u64,
    /// When the sample was acquired, tracking system's wall clock, ns since the UNIX epoch.
    pub acquired_unix_ns: u64,
    /// Markers present (1..=3); `pos_mm` beyond them is zero.
    pub markers: u8,
    /// Marker positions, mm.
    pub pos_mm: [[f32; 3]; MAX_SURROGATE_MARKERS],
}

/// One CORRECTIONS datagram, decoded, with its spots still in the datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorrectionsPart<'a> {
    /// The frame.
    pub frame_id: u64,
    /// Wall-clock ns after which the whole set is void.
    pub valid_until_unix_ns: u64,
    /// Spots in the whole set.
    pub total_spots: u32,
    /// Position in the set of this part's first spot.
    pub first_spot: u32,
    /// Index of this part, below `part_count`.
    pub part_index: u16,
    /// Parts in the set (at least 1).
    pub part_count: u16,
    /// How range changes are expressed.
    pub mode: RangeMode,
    /// Tumor shift (patient LPS), mm.
    pub tumor_shift_mm: [f32; 3],
    /// This part's spots.
    pub spots: SpotsView<'a>,
}

/// The spots of one CORRECTIONS datagram, read on demand (already checked finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpotsView<'a> {
    bytes: &'a [u8],
}

impl<'a> SpotsView<'a> {
    /// Number of spots.
    pub fn len(&self) -> usize {
        self.bytes.len() / SPOT_LEN
    }
    /// True when the part carries no spot (an empty set).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The spot at `i`, if `i < len()`.
    pub fn get(&self, i: usize) -> Option<SpotCorrection> {
        let b = self.bytes.get(i * SPOT_LEN..(i + 1) * SPOT_LEN)?;
        Some(read_spot(b))
    }
    /// The spots in order.
    pub fn iter(&self) -> impl Iterator<Item = SpotCorrection> + 'a {
        self.bytes.chunks_exact(SPOT_LEN).map(read_spot)
    }
}

/// One DELIVERED datagram, decoded, with its spots still in the datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveredPart<'a> {
    /// The sender session whose correction sets these spots were delivered under (0: none).
    pub sender_session_id: u64,
    /// Position in the controller's delivery log of this part's first spot (0-based): the
    /// positions of a session's parts follow each other, so a lost part shows as a gap.
    pub first_ordinal: u64,
    /// This part's spots.
    pub spots: DeliveredView<'a>,
}

/// The spots of one DELIVERED datagram, read on demand (already checked sane).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveredView<'a> {
    bytes: &'a [u8],
}

impl<'a> DeliveredView<'a> {
    /// Number of spots (at least 1).
    pub fn len(&self) -> usize {
        self.bytes.len() / DELIVERED_LEN
    }
    /// Never true for a decoded part (a DELIVERED carries at least one spot).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The spots in order.
    pub fn iter(&self) -> impl Iterator<Item = DeliveredSpot> + 'a {
        self.bytes.chunks_exact(DELIVERED_LEN).map(|c| {
            let mut a = [0u8; DELIVERED_LEN];
            a.copy_from_slice(c);
            DeliveredSpot::from_le_bytes(&a)
        })
    }
}

/// A decoded message's payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body<'a> {
    /// One part of a correction set.
    Corrections(CorrectionsPart<'a>),
    /// Hold the beam.
    Hold {
        /// Why.
        reason: HoldReason,
        /// The frame that caused it (0 when none).
        frame_id: u64,
    },
    /// Lift a hold.
    Resume,
    /// Liveness.
    Heartbeat,
    /// Controller → sender acknowledgement.
    Ack(Ack),
    /// Tracking system → ionguide: one surrogate sample.
    Surrogate(SurrogateSample),
    /// Controller → sender: spots delivered.
    Delivered(DeliveredPart<'a>),
}

/// An authenticated, decoded message borrowing from its datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Message<'a> {
    /// The header.
    pub header: Header,
    /// The payload.
    pub body: Body<'a>,
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_bits(read_u32(b, at))
}
fn read_spot(b: &[u8]) -> SpotCorrection {
    let mut a = [0u8; SPOT_LEN];
    a.copy_from_slice(&b[..SPOT_LEN]);
    SpotCorrection::from_le_bytes(&a)
}
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Signs and encodes one sender session's messages. Holds the pre-keyed HMAC (cloned per
/// message: a clone copies the hash state, it does not allocate) and the next sequence number.
#[derive(Clone)]
pub struct Encoder {
    mac: HmacSha256,
    session_id: u64,
    next_sequence: u64,
    max_datagram: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keyed state stays out of logs.
        f.debug_struct("Encoder")
            .field("session_id", &self.session_id)
            .field("next_sequence", &self.next_sequence)
            .field("max_datagram", &self.max_datagram)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder for session `session_id`, whose datagrams never exceed `max_datagram` bytes.
    pub fn new(key: &LinkKey, session_id: u64, max_datagram: usize) -> Result<Self, EncodeError> {
        if !(MIN_MAX_DATAGRAM..=MAX_UDP_PAYLOAD).contains(&max_datagram) {
            return Err(EncodeError::BadMaxDatagram { bytes: max_datagram });
        }
        Ok(Encoder {
            mac: key.mac(),
            session_id,
            next_sequence: 1,
            max_datagram,
        })
    }

    /// The session id in every header.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The sequence number the next message will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The largest datagram this encoder produces.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Spots per CORRECTIONS part at this datagram size.
    pub fn spots_per_part(&self) -> usize {
        (self.max_datagram - HEADER_LEN - CORRECTIONS_FIXED_LEN - MAC_LEN) / SPOT_LEN
    }

    /// Parts a set of `n_spots` spots is split into (1 for an empty set).
    pub fn part_count(&self, n_spots: usize) -> Result<u16, EncodeError> {
        if n_spots > u32::MAX as usize {
            return Err(EncodeError::TooManySpots { spots: n_spots });
        }
        let parts = n_spots.div_ceil(self.spots_per_part()).max(1);
        u16::try_from(parts).map_err(|_| EncodeError::TooManySpots { spots: n_spots })
    }

    fn begin(
        &mut self,
        out: &mut [u8],
        ty: MessageType,
        sent_unix_ns: u64,
        payload_len: usize,
    ) -> Result<usize, EncodeError> {
        let total = HEADER_LEN + payload_len + MAC_LEN;
        if out.len() < total {
            return Err(EncodeError::BufferTooSmall {
                needed: total,
                capacity: out.len(),
            });
        }
        if self.next_sequence == u64::MAX {
            return Err(EncodeError::SequenceExhausted);
        }
        put(out, 0, &MAGIC);
        out[4] = VERSION;
        out[5] = ty.code();
        put(out, 6, &0u16.to_le_bytes());
        put(out, 8, &self.session_id.to_le_bytes());
        put(out, 16, &self.next_sequence.to_le_bytes());
        put(out, 24, &sent_unix_ns.to_le_bytes());
        // payload_len < max_datagram <= 65507, so it fits u32.
        put(out, 32, &(payload_len as u32).to_le_bytes());
        self.next_sequence += 1;
        Ok(total)
    }

    fn seal(&self, out: &mut [u8], total: usize) -> usize {
        let body = total - MAC_LEN;
        let mut mac = self.mac.clone();
        mac.update(&out[..body]);
        let tag = mac.finalize().into_bytes();
        out[body..total].copy_from_slice(&tag);
        total
    }

    /// Encodes part `part_index` of `set` into `out`; returns the datagram length.
    pub fn encode_corrections_part(
        &mut self,
        out: &mut [u8],
        sent_unix_ns: u64,
        set: &CorrectionSet,
        part_index: u16,
    ) -> Result<usize, EncodeError> {
        let part_count = self.part_count(set.spots.len())?;
        if part_index >= part_count {
            return Err(EncodeError::NoSuchPart {
                part_index,
                part_count,
            });
        }
        let mode = set.mode.ok_or(EncodeError::MissingMode {
            frame_id: set.frame_id,
        })?;
        if set.tumor_shift_mm.iter().any(|v| !v.is_finite()) {
            return Err(EncodeError::NonFinite {
                frame_id: set.frame_id,
                position: u32::MAX,
            });
        }
        let per = self.spots_per_part();
        let first = part_index as usize * per;
        let end = (first + per).min(set.spots.len());
        let spots = set.spots.get(first..end).unwrap_or(&[]);
        for (k, s) in spots.iter().enumerate() {
            if ![s.x_mm, s.y_mm, s.energy_mev_u, s.range_shifter_mm_we]
                .iter()
                .all(|v| v.is_finite())
            {
                return Err(EncodeError::NonFinite {
                    frame_id: set.frame_id,
                    position: (first + k) as u32,
                });
            }
        }
        let payload_len = CORRECTIONS_FIXED_LEN + spots.len() * SPOT_LEN;
        let total = self.begin(out, MessageType::Corrections, sent_unix_ns, payload_len)?;
        let p = &mut out[HEADER_LEN..HEADER_LEN + payload_len];
        put(p, 0, &set.frame_id.to_le_bytes());
        put(p, 8, &set.valid_until_unix_ns.to_le_bytes());
        put(p, 16, &(set.spots.len() as u32).to_le_bytes());
        put(p, 20, &(first as u32).to_le_bytes());
        put(p, 24, &part_index.to_le_bytes());
        put(p, 26, &part_count.to_le_bytes());
        put(p, 28, &(spots.len() as u16).to_le_bytes());
        p[30] = mode.code();
        p[31] = 0;
        for (k, v) in set.tumor_shift_mm.iter().enumerate() {
            put(p, 32 + 4 * k, &v.to_le_bytes());
        }
        for (k, s) in spots.iter().enumerate() {
            put(p, CORRECTIONS_FIXED_LEN + k * SPOT_LEN, &s.to_le_bytes());
        }
        Ok(self.seal(out, total))
    }

    /// Encodes a HOLD.
    pub fn encode_hold(
        &mut self,
        out: &mut [u8],
        sent_unix_ns: u64,
        reason: HoldReason,
        frame_id: u64,
    ) -> Result<usize, EncodeError> {
        let total = self.begin(out, MessageType::Hold, sent_unix_ns, HOLD_LEN)?;
        put(out, HEADER_LEN, &frame_id.to_le_bytes());
        put(out, HEADER_LEN + 8, &reason.code().to_le_bytes());
        Ok(self.seal(out, total))
    }

    /// Encodes a RESUME.
    pub fn encode_resume(&mut self, out: &mut [u8], sent_unix_ns: u64) -> Result<usize, EncodeError> {
        let total = self.begin(out, MessageType::Resume, sent_unix_ns, 0)?;
        Ok(self.seal(out, total))
    }

    /// Encodes a HEARTBEAT.
    pub fn encode_heartbeat(&mut self, out: &mut [u8], sent_unix_ns: u64) -> Result<usize, EncodeError> {
        let total = self.begin(out, MessageType::Heartbeat, sent_unix_ns, 0)?;
        Ok(self.seal(out, total))
    }

    /// Encodes a SURROGATE sample (tracking-system side). Refuses a marker count outside
    /// 1..=3 and non-finite coordinates (as [`EncodeError::NonFinite`] with the sample
    /// counter as `frame_id` and the marker as `position`).
    pub fn encode_surrogate(
        &mut self,
        out: &mut [u8],
        sent_unix_ns: u64,
        sample: &SurrogateSample,
    ) -> Result<usize, EncodeError> {
        let n = sample.markers as usize;
        if !(1..=MAX_SURROGATE_MARKERS).contains(&n) {
            return Err(EncodeError::BadMarkerCount {
                markers: sample.markers,
            });
        }
        if let Some(m) = sample.pos_mm[..n]
            .iter()
            .position(|p| p.iter().any(|v| !v.is_finite()))
        {
            return Err(EncodeError::NonFinite {
                frame_id: sample.sample,
                position: m as u32,
            });
        }
        let payload_len = SURROGATE_FIXED_LEN + 12 * n;
        let total = self.begin(out, MessageType::Surrogate, sent_unix_ns, payload_len)?;
        let p = &mut out[HEADER_LEN..HEADER_LEN + payload_len];
        put(p, 0, &sample.sample.to_le_bytes());
        put(p, 8, &sample.acquired_unix_ns.to_le_bytes());
        p[16] = sample.markers;
        p[17..20].fill(0);
        for (m, xyz) in sample.pos_mm[..n].iter().enumerate() {
            for (i, v) in xyz.iter().enumerate() {
                put(p, SURROGATE_FIXED_LEN + 12 * m + 4 * i, &v.to_le_bytes());
            }
        }
        Ok(self.seal(out, total))
    }

    /// Encodes an ACK (controller side).
    pub fn encode_ack(&mut self, out: &mut [u8], sent_unix_ns: u64, ack: &Ack) -> Result<usize, EncodeError> {
        let total = self.begin(out, MessageType::Ack, sent_unix_ns, ACK_LEN)?;
        let p = &mut out[HEADER_LEN..HEADER_LEN + ACK_LEN];
        put(p, 0, &ack.acked_session_id.to_le_bytes());
        put(p, 8, &ack.acked_sequence.to_le_bytes());
        put(p, 16, &ack.frame_id.to_le_bytes());
        p[24] = ack.status.code();
        p[25] = u8::from(ack.beam_on);
        put(p, 26, &0u16.to_le_bytes());
        Ok(self.seal(out, total))
    }
}

impl Encoder {
    /// Spots per DELIVERED part at this datagram size.
    pub fn delivered_per_part(&self) -> usize {
        (self.max_datagram - HEADER_LEN - DELIVERED_FIXED_LEN - MAC_LEN) / DELIVERED_LEN
    }

    /// Encodes one DELIVERED part (controller side) carrying `spots` (1 ..=
    /// [`Encoder::delivered_per_part`] of them, every value finite, metersets ≥ 0).
    pub fn encode_delivered(
        &mut self,
        out: &mut [u8],
        sent_unix_ns: u64,
        sender_session_id: u64,
        first_ordinal: u64,
        spots: &[DeliveredSpot],
    ) -> Result<usize, EncodeError> {
        if spots.is_empty() || spots.len() > self.delivered_per_part() {
            return Err(EncodeError::TooManySpots { spots: spots.len() });
        }
        if let Some(k) = spots.iter().position(|d| !d.is_sane()) {
            return Err(EncodeError::NonFinite {
                frame_id: spots[k].frame_id,
                position: k as u32,
            });
        }
        let payload_len = DELIVERED_FIXED_LEN + spots.len() * DELIVERED_LEN;
        let total = self.begin(out, MessageType::Delivered, sent_unix_ns, payload_len)?;
        let p = &mut out[HEADER_LEN..HEADER_LEN + payload_len];
        put(p, 0, &sender_session_id.to_le_bytes());
        put(p, 8, &first_ordinal.to_le_bytes());
        // len <= delivered_per_part < 65507 / 44, so it fits u16
        put(p, 16, &(spots.len() as u16).to_le_bytes());
        put(p, 18, &[0u8; 6]);
        for (k, d) in spots.iter().enumerate() {
            put(p, DELIVERED_FIXED_LEN + k * DELIVERED_LEN, &d.to_le_bytes());
        }
        Ok(self.seal(out, total))
    }
}

/// Verifies and decodes datagrams signed with one key.
#[derive(Clone)]
pub struct Decoder {
    mac: HmacSha256,
    max_datagram: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("max_datagram", &self.max_datagram)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder that accepts datagrams up to `max_datagram` bytes (clamped to the UDP limit).
    pub fn new(key: &LinkKey, max_datagram: usize) -> Self {
        Decoder {
            mac: key.mac(),
            max_datagram: max_datagram.min(MAX_UDP_PAYLOAD),
        }
    }

    /// Checks framing, then the HMAC, then every field; returns a view into `datagram`.
    ///
    /// The HMAC is verified before any payload field is interpreted, so unauthenticated bytes
    /// never reach the payload parser; the header checks before it only choose the error.
    pub fn decode<'a>(&self, datagram: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let len = datagram.len();
        let min = HEADER_LEN + MAC_LEN;
        if len < min {
            return Err(DecodeError::TooShort { len, min });
        }
        if len > self.max_datagram {
            return Err(DecodeError::Oversize {
                len,
                max: self.max_datagram,
            });
        }
        let magic = [datagram[0], datagram[1], datagram[2], datagram[3]];
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        if datagram[4] != VERSION {
            return Err(DecodeError::UnsupportedVersion { found: datagram[4] });
        }
        let ty = MessageType::from_code(datagram[5]).ok_or(DecodeError::UnknownType { code: datagram[5] })?;
        let declared = read_u32(datagram, 32) as usize;
        let actual = len - min;
        if declared != actual {
            return Err(DecodeError::LengthMismatch { declared, actual });
        }
        let body_end = len - MAC_LEN;
        let mut mac = self.mac.clone();
        mac.update(&datagram[..body_end]);
        mac.verify_slice(&datagram[body_end..])
            .map_err(|_| DecodeError::BadMac)?;

        if read_u16(datagram, 6) != 0 {
            return Err(DecodeError::BadField {
                field: "header.reserved",
            });
        }
        let header = Header {
            message_type: ty,
            session_id: read_u64(datagram, 8),
            sequence: read_u64(datagram, 16),
            sent_unix_ns: read_u64(datagram, 24),
        };
        if header.sequence == 0 {
            return Err(DecodeError::BadField {
                field: "header.sequence",
            });
        }
        let p = &datagram[HEADER_LEN..body_end];
        let exact = |need: usize| {
            if p.len() == need {
                Ok(())
            } else {
                Err(DecodeError::LengthMismatch {
                    declared: p.len(),
                    actual: need,
                })
            }
        };
        let body = match ty {
            MessageType::Corrections => Body::Corrections(decode_corrections(p)?),
            MessageType::Hold => {
                exact(HOLD_LEN)?;
                let reason = HoldReason::from_code(read_u16(p, 8))
                    .ok_or(DecodeError::BadField { field: "hold.reason" })?;
                Body::Hold {
                    reason,
                    frame_id: read_u64(p, 0),
                }
            }
            MessageType::Resume => {
                exact(0)?;
                Body::Resume
            }
            MessageType::Heartbeat => {
                exact(0)?;
                Body::Heartbeat
            }
            MessageType::Ack => {
                exact(ACK_LEN)?;
                let status =
                    AckStatus::from_code(p[24]).ok_or(DecodeError::BadField { field: "ack.status" })?;
                let beam_on = match p[25] {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadField { field: "ack.beam_on" }),
                };
                if read_u16(p, 26) != 0 {
                    return Err(DecodeError::BadField {
                        field: "ack.reserved",
                    });
                }
                Body::Ack(Ack {
                    acked_session_id: read_u64(p, 0),
                    acked_sequence: read_u64(p, 8),
                    frame_id: read_u64(p, 16),
                    status,
                    beam_on,
                })
            }
            MessageType::Surrogate => Body::Surrogate(decode_surrogate(p)?),
            MessageType::Delivered => Body::Delivered(decode_delivered(p)?),
        };
        Ok(Message { header, body })
    }
}

fn decode_surrogate(p: &[u8]) -> Result<SurrogateSample, DecodeError> {
    if p.len() < SURROGATE_FIXED_LEN {
        return Err(DecodeError::LengthMismatch {
            declared: p.len(),
            actual: SURROGATE_FIXED_LEN,
        });
    }
    let markers = p[16];
    let n = markers as usize;
    if !(1..=MAX_SURROGATE_MARKERS).contains(&n) {
        return Err(DecodeError::BadField {
            field: "surrogate.markers",
        });
    }
    let need = SURROGATE_FIXED_LEN + 12 * n;
    if p.len() != need {
        return Err(DecodeError::LengthMismatch {
            declared: p.len(),
            actual: need,
        });
    }
    if p[17..20].iter().any(|&b| b != 0) {
        return Err(DecodeError::BadField {
            field: "surrogate.reserved",
        });
    }
    let mut pos_mm = [[0.0f32; 3]; MAX_SURROGATE_MARKERS];
    for (m, xyz) in pos_mm[..n].iter_mut().enumerate() {
        for (i, v) in xyz.iter_mut().enumerate() {
            *v = read_f32(p, SURROGATE_FIXED_LEN + 12 * m + 4 * i);
            if !v.is_finite() {
                return Err(DecodeError::BadField {
                    field: "surrogate.pos_mm",
                });
            }
        }
    }
    Ok(SurrogateSample {
        sample: read_u64(p, 0),
        acquired_unix_ns: read_u64(p, 8),
        markers,
        pos_mm,
    })
}

fn decode_delivered(p: &[u8]) -> Result<DeliveredPart<'_>, DecodeError> {
    if p.len() < DELIVERED_FIXED_LEN {
        return Err(DecodeError::LengthMismatch {
            declared: p.len(),
            actual: DELIVERED_FIXED_LEN,
        });
    }
    let n = read_u16(p, 16) as usize;
    let need = DELIVERED_FIXED_LEN + n * DELIVERED_LEN;
    if p.len() != need {
        return Err(DecodeError::LengthMismatch {
            declared: p.len(),
            actual: need,
        });
    }
    if n == 0 {
        return Err(DecodeError::BadField {
            field: "delivered.count",
        });
    }
    if p[18..24].iter().any(|&b| b != 0) {
        return Err(DecodeError::BadField {
            field: "delivered.reserved",
        });
    }
    let spots = DeliveredView {
        bytes: &p[DELIVERED_FIXED_LEN..],
    };
    if spots.iter().any(|d| !d.is_sane()) {
        return Err(DecodeError::BadField {
            field: "delivered.spot",
        });
    }
    Ok(DeliveredPart {
        sender_session_id: read_u64(p, 0),
        first_ordinal: read_u64(p, 8),
        spots,
    })
}

fn decode_corrections(p: &[u8]) -> Result<CorrectionsPart<'_>, DecodeError> {
    if p.len() < CORRECTIONS_FIXED_LEN {
        return Err(DecodeError::LengthMismatch {
            declared: p.len(),
            actual: CORRECTIONS_FIXED_LEN,
        });
    }
    let n_spots = read_u16(p, 28) as usize;
    let need = CORRECTIONS_FIXED_LEN + n_spots * SPOT_LEN;
    if p.len() != need {
        return Err(DecodeError::LengthMismatch {
            declared: p.len(),
            actual: need,
        });
    }
    let total_spots = read_u32(p, 16);
    let first_spot = read_u32(p, 20);
    let part_index = read_u16(p, 24);
    let part_count = read_u16(p, 26);
    if part_count == 0 || part_index >= part_count {
        return Err(DecodeError::BadField {
            field: "corrections.part_index",
        });
    }
    if first_spot as u64 + n_spots as u64 > total_spots as u64 {
        return Err(DecodeError::BadField {
            field: "corrections.first_spot",
        });
    }
    let mode = RangeMode::from_code(p[30]).ok_or(DecodeError::BadField {
        field: "corrections.mode",
    })?;
    if p[31] != 0 {
        return Err(DecodeError::BadField {
            field: "corrections.reserved",
        });
    }
    let tumor_shift_mm = [read_f32(p, 32), read_f32(p, 36), read_f32(p, 40)];
    if tumor_shift_mm.iter().any(|v| !v.is_finite()) {
        return Err(DecodeError::BadField {
            field: "corrections.tumor_shift_mm",
        });
    }
    let spots = &p[CORRECTIONS_FIXED_LEN..];
    for s in spots.chunks_exact(SPOT_LEN) {
        if (4..SPOT_LEN).step_by(4).any(|at| !read_f32(s, at).is_finite()) {
            return Err(DecodeError::BadField {
                field: "corrections.spot",
            });
        }
    }
    Ok(CorrectionsPart {
        frame_id: read_u64(p, 0),
        valid_until_unix_ns: read_u64(p, 8),
        total_spots,
        first_spot,
        part_index,
        part_count,
        mode,
        tumor_shift_mm,
        spots: SpotsView { bytes: spots },
    })
}

/// Wall-clock now, ns since the UNIX epoch: the one clock the pipeline, the link and the
/// audit log stamp with (saturating; see [`crate::correction::unix_now_ns`]).
pub use crate::correction::unix_now_ns;
