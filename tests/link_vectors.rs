//! The wire bytes against `docs/protocol.md`, written here by hand field by field, with the
//! HMAC computed by the hmac crate over the hand-written bytes: the decoder must read them
//! as the expected values and the encoder must produce exactly them. Then random message
//! bodies signed with the test key, so the body parser (not only the MAC check) is
//! exercised: every one is refused with a typed error or decodes to values that encode back
//! to the same bytes.

mod doc_example;

use hmac::{Hmac, Mac};
use ionguide::correction::{CorrectionSet, DeliveredSpot, HoldReason, RangeMode, SpotCorrection};
use ionguide::link::protocol::{Ack, AckStatus, Body, DecodeError, Decoder, Encoder, Header, MessageType};
use ionguide::link::LinkKey;
use proptest::prelude::*;

/// The doc's example key: 32 bytes of 0x42.
const KEY: [u8; 32] = [0x42; 32];
/// The doc's example sender session.
const SESSION: u64 = 0x0123_4567_89ab_cdef;
/// The doc's example send time, ns (0x18493fba6c4acd15).
const SENT_NS: u64 = 1_750_000_000_123_456_789;

/// Appends HMAC-SHA256 (key [`KEY`]) over `body`, as docs/protocol.md "Authentication" says.
fn signed(mut body: Vec<u8>) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&KEY).unwrap();
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    body
}

fn key() -> LinkKey {
    LinkKey::from_bytes(&KEY).unwrap()
}

/// HOLD, sequence 1, reason 11 link_silent, frame 42 (the doc's example).
fn hold_bytes() -> Vec<u8> {
    signed(vec![
        0x49, 0x47, 0x4c, 0x4b, //                         magic "IGLK"
        0x01, //                                           version 1
        0x02, //                                           type 2 HOLD
        0x00, 0x00, //                                     reserved
        0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // session id
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 1
        0x15, 0xcd, 0x4a, 0x6c, 0xba, 0x3f, 0x49, 0x18, // sent_unix_ns
        0x0a, 0x00, 0x00, 0x00, //                         payload_len 10
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame_id 42
        0x0b, 0x00, //                                     reason 11 link_silent
    ])
}

/// CORRECTIONS, sequence 2: frame 42, valid until sent + 100 ms, the whole two-spot set in
/// one part, Energy mode, tumor shift (1.5, −2, 0.25) mm (the doc's example).
fn corrections_bytes() -> Vec<u8> {
    signed(vec![
        0x49, 0x47, 0x4c, 0x4b, //                         magic "IGLK"
        0x01, //                                           version 1
        0x01, //                                           type 1 CORRECTIONS
        0x00, 0x00, //                                     reserved
        0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // session id
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 2
        0x15, 0xcd, 0x4a, 0x6c, 0xba, 0x3f, 0x49, 0x18, // sent_unix_ns
        0x54, 0x00, 0x00, 0x00, //                         payload_len 84 = 44 + 2 × 20
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame_id 42
        0x15, 0xae, 0x40, 0x72, 0xba, 0x3f, 0x49, 0x18, // valid_until = sent + 100 000 000
        0x02, 0x00, 0x00, 0x00, //                         total_spots 2
        0x00, 0x00, 0x00, 0x00, //                         first_spot 0
        0x00, 0x00, //                                     part_index 0
        0x01, 0x00, //                                     part_count 1
        0x02, 0x00, //                                     n 2
        0x00, //                                           mode 0 Energy
        0x00, //                                           reserved
        0x00, 0x00, 0xc0, 0x3f, //                         shift x 1.5
        0x00, 0x00, 0x00, 0xc0, //                         shift y -2.0
        0x00, 0x00, 0x80, 0x3e, //                         shift z 0.25
        0x00, 0x00, 0x00, 0x00, //                         spot 0: index 0
        0x00, 0x00, 0x20, 0x41, //                           x 10.0
        0x00, 0x00, 0xa0, 0xc0, //                           y -5.0
        0x00, 0x00, 0x7a, 0x43, //                           energy 250.0
        0x00, 0x00, 0x00, 0x00, //                           range shifter 0.0
        0x01, 0x00, 0x00, 0x00, //                         spot 1: index 1
        0x00, 0x00, 0x48, 0x41, //                           x 12.5
        0x00, 0x00, 0xa0, 0xc0, //                           y -5.0
        0x00, 0x80, 0x78, 0x43, //                           energy 248.5
        0x00, 0x00, 0x00, 0x00, //                           range shifter 0.0
    ])
}

/// The controller's session in the ACK example.
const CONTROLLER_SESSION: u64 = 0xfedc_ba98_7654_3210;

/// ACK, controller session, sequence 1: the sender's sequence 2 (the set of frame 42)
/// applied, beam on.
fn ack_bytes() -> Vec<u8> {
    signed(vec![
        0x49, 0x47, 0x4c, 0x4b, //                         magic "IGLK"
        0x01, //                                           version 1
        0x05, //                                           type 5 ACK
        0x00, 0x00, //                                     reserved
        0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, // session id (the controller's)
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 1
        0x15, 0xcd, 0x4a, 0x6c, 0xba, 0x3f, 0x49, 0x18, // sent_unix_ns
        0x1c, 0x00, 0x00, 0x00, //                         payload_len 28
        0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // acked_session_id
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // acked_sequence 2
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame_id 42
        0x01, //                                           status 1 applied
        0x01, //                                           beam_on 1
        0x00, 0x00, //                                     reserved
    ])
}

/// DELIVERED, controller session, sequence 2: spot 0 of the sender's session delivered at
/// (1.5, −2) mm, 150 MeV/u, no range shifter, meterset 0.5, under frame 42, at SENT_NS; the
/// first entry (ordinal 7) of the controller's delivery log this part carries.
fn delivered_bytes() -> Vec<u8> {
    signed(vec![
        0x49, 0x47, 0x4c, 0x4b, //                         magic "IGLK"
        0x01, //                                           version 1
        0x06, //                                           type 6 DELIVERED
        0x00, 0x00, //                                     reserved
        0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, // session id (the controller's)
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 2
        0x15, 0xcd, 0x4a, 0x6c, 0xba, 0x3f, 0x49, 0x18, // sent_unix_ns
        0x44, 0x00, 0x00, 0x00, //                         payload_len 68 = 24 + 44
        0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // sender_session_id
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_ordinal 7
        0x01, 0x00, //                                     n = 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //             reserved
        0x00, 0x00, 0x00, 0x00, //                         spot_index 0
        0x00, 0x00, 0xc0, 0x3f, //                         x_mm 1.5
        0x00, 0x00, 0x00, 0xc0, //                         y_mm -2.0
        0x00, 0x00, 0x16, 0x43, //                         energy 150.0 MeV/u
        0x00, 0x00, 0x00, 0x00, //                         range shifter 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, // meterset 0.5 (f64)
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // frame_id 42
        0x15, 0xcd, 0x4a, 0x6c, 0xba, 0x3f, 0x49, 0x18, // delivered_unix_ns
    ])
}

fn example_set() -> CorrectionSet {
    CorrectionSet {
        frame_id: 42,
        valid_until_unix_ns: SENT_NS + 100_000_000,
        mode: Some(RangeMode::Energy),
        tumor_shift_mm: [1.5, -2.0, 0.25],
        spots: doc_example::two_spots(),
    }
}

fn header(message_type: MessageType, session_id: u64, sequence: u64) -> Header {
    Header {
        message_type,
        session_id,
        sequence,
        sent_unix_ns: SENT_NS,
    }
}

#[test]
fn hand_written_hold_decodes_and_is_what_the_encoder_writes() {
    let bytes = hold_bytes();
    assert_eq!(bytes.len(), 36 + 10 + 32);
    let m = Decoder::new(&key(), 1400).decode(&bytes).unwrap();
    assert_eq!(m.header, header(MessageType::Hold, SESSION, 1));
    assert_eq!(
        m.body,
        Body::Hold {
            reason: HoldReason::LinkSilent,
            frame_id: 42
        }
    );
    let mut enc = Encoder::new(&key(), SESSION, 1400).unwrap();
    let mut buf = [0u8; 1400];
    let n = enc
        .encode_hold(&mut buf, SENT_NS, HoldReason::LinkSilent, 42)
        .unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
}

#[test]
fn hand_written_corrections_decode_and_are_what_the_encoder_writes() {
    let bytes = corrections_bytes();
    assert_eq!(bytes.len(), 36 + 44 + 2 * 20 + 32);
    let m = Decoder::new(&key(), 1400).decode(&bytes).unwrap();
    assert_eq!(m.header, header(MessageType::Corrections, SESSION, 2));
    let Body::Corrections(p) = m.body else {
        panic!("not CORRECTIONS: {:?}", m.body)
    };
    let set = example_set();
    assert_eq!(
        (p.frame_id, p.valid_until_unix_ns, p.total_spots, p.first_spot),
        (42, SENT_NS + 100_000_000, 2, 0)
    );
    assert_eq!((p.part_index, p.part_count, p.mode), (0, 1, RangeMode::Energy));
    assert_eq!(p.tumor_shift_mm, [1.5, -2.0, 0.25]);
    assert_eq!(p.spots.iter().collect::<Vec<_>>(), set.spots);
    // the sequence-2 message of a session, as in the doc: a HOLD first
    let mut enc = Encoder::new(&key(), SESSION, 1400).unwrap();
    let mut buf = [0u8; 1400];
    enc.encode_hold(&mut buf, SENT_NS, HoldReason::LinkSilent, 42)
        .unwrap();
    let n = enc.encode_corrections_part(&mut buf, SENT_NS, &set, 0).unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
}

#[test]
fn hand_written_ack_decodes_and_is_what_the_encoder_writes() {
    let bytes = ack_bytes();
    assert_eq!(bytes.len(), 36 + 28 + 32);
    let m = Decoder::new(&key(), 1400).decode(&bytes).unwrap();
    assert_eq!(m.header, header(MessageType::Ack, CONTROLLER_SESSION, 1));
    let ack = Ack {
        acked_session_id: SESSION,
        acked_sequence: 2,
        frame_id: 42,
        status: AckStatus::Applied,
        beam_on: true,
    };
    assert_eq!(m.body, Body::Ack(ack));
    let mut enc = Encoder::new(&key(), CONTROLLER_SESSION, 1400).unwrap();
    let mut buf = [0u8; 1400];
    let n = enc.encode_ack(&mut buf, SENT_NS, &ack).unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
}

#[test]
fn hand_written_delivered_decodes_and_is_what_the_encoder_writes() {
    let bytes = delivered_bytes();
    assert_eq!(bytes.len(), 36 + 24 + 44 + 32);
    let m = Decoder::new(&key(), 1400).decode(&bytes).unwrap();
    assert_eq!(m.header, header(MessageType::Delivered, CONTROLLER_SESSION, 2));
    let Body::Delivered(d) = m.body else {
        panic!("not DELIVERED: {:?}", m.body)
    };
    let spot = DeliveredSpot {
        spot: SpotCorrection {
            spot_index: 0,
            x_mm: 1.5,
            y_mm: -2.0,
            energy_mev_u: 150.0,
            range_shifter_mm_we: 0.0,
        },
        meterset: 0.5,
        frame_id: 42,
        delivered_unix_ns: SENT_NS,
    };
    assert_eq!((d.sender_session_id, d.first_ordinal), (SESSION, 7));
    assert_eq!(d.spots.iter().collect::<Vec<_>>(), vec![spot]);
    let mut enc = Encoder::new(&key(), CONTROLLER_SESSION, 1400).unwrap();
    let mut buf = [0u8; 1400];
    let ack = Ack {
        acked_session_id: SESSION,
        acked_sequence: 2,
        frame_id: 42,
        status: AckStatus::Applied,
        beam_on: true,
    };
    enc.encode_ack(&mut buf, SENT_NS, &ack).unwrap();
    let n = enc
        .encode_delivered(&mut buf, SENT_NS, SESSION, 7, &[spot])
        .unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
}

/// The doc's hex dump is the hand-written bytes (tag included): the doc and this test
/// agree independently of the encoder.
#[test]
fn the_docs_hex_dump_is_the_hand_written_bytes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
    for (title, bytes) in [("HOLD", hold_bytes()), ("CORRECTIONS", corrections_bytes())] {
        let start = doc
            .find(&format!("{title} ({} bytes, key = 32 × 0x42)\n", bytes.len()))
            .unwrap_or_else(|| panic!("docs/protocol.md has no {title} dump"));
        let dumped: Vec<u8> = doc[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.len() > 6 && l[..4].chars().all(|c| c.is_ascii_hexdigit()))
            .flat_map(|l| {
                l[6..]
                    .split_whitespace()
                    .map(|h| u8::from_str_radix(h, 16).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(dumped, bytes, "{title}");
    }
}

// ---- random bodies past the MAC ----

/// A CORRECTIONS payload from fields drawn near and across their limits.
#[derive(Debug, Clone)]
struct Fields {
    frame_id: u64,
    valid_until: u64,
    total_spots: u32,
    first_spot: u32,
    part_index: u16,
    part_count: u16,
    mode: u8,
    reserved: u8,
    shift_bits: [u32; 3],
    spot_words: Vec<[u32; 5]>,
}

impl Fields {
    fn payload(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&self.frame_id.to_le_bytes());
        p.extend_from_slice(&self.valid_until.to_le_bytes());
        p.extend_from_slice(&self.total_spots.to_le_bytes());
        p.extend_from_slice(&self.first_spot.to_le_bytes());
        p.extend_from_slice(&self.part_index.to_le_bytes());
        p.extend_from_slice(&self.part_count.to_le_bytes());
        p.extend_from_slice(&(self.spot_words.len() as u16).to_le_bytes());
        p.push(self.mode);
        p.push(self.reserved);
        for b in self.shift_bits {
            p.extend_from_slice(&b.to_le_bytes());
        }
        for s in &self.spot_words {
            for w in s {
                p.extend_from_slice(&w.to_le_bytes());
            }
        }
        p
    }
}

/// f32 bit patterns: mostly ordinary numbers, now and then NaN, ±∞, −0, subnormal or any
/// bits (rare per value, so that a message of a hundred values still often passes).
fn f32_bits() -> impl Strategy<Value = u32> {
    prop_oneof![
        300 => (-1.0e4f32..1.0e4).prop_map(f32::to_bits),
        1 => prop::sample::select(vec![
            f32::NAN.to_bits(),
            f32::INFINITY.to_bits(),
            f32::NEG_INFINITY.to_bits(),
            (-0.0f32).to_bits(),
            1,
            0x7fc0_0001,
        ]),
        1 => any::<u32>(),
    ]
}

fn small_or_any_u16() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 0u16..4, 1 => any::<u16>()]
}

fn small_or_any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..100, 1 => any::<u32>()]
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        (any::<u64>(), any::<u64>(), small_or_any_u32(), small_or_any_u32()),
        (small_or_any_u16(), small_or_any_u16()),
        (
            prop_oneof![4 => 0u8..2, 1 => any::<u8>()],
            prop_oneof![6 => Just(0u8), 1 => any::<u8>()],
        ),
        [f32_bits(), f32_bits(), f32_bits()],
        prop::collection::vec(
            (any::<u32>(), f32_bits(), f32_bits(), f32_bits(), f32_bits()),
            0..70,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(
                (frame_id, valid_until, total_spots, first_spot),
                (part_index, part_count),
                (mode, reserved),
                shift_bits,
                spots,
                whole,
            )| {
                let mut f = Fields {
                    frame_id,
                    valid_until,
                    total_spots,
                    first_spot,
                    part_index,
                    part_count,
                    mode,
                    reserved,
                    shift_bits,
                    spot_words: spots.into_iter().map(|(a, b, c, d, e)| [a, b, c, d, e]).collect(),
                };
                if whole {
                    // a whole set in one part, the shape the encoder writes for small sets
                    (f.total_spots, f.first_spot) = (f.spot_words.len() as u32, 0);
                    (f.part_index, f.part_count) = (0, 1);
                }
                f
            },
        )
}

/// A header (type code, reserved, session, sequence, sent) and a payload, signed.
fn datagram(ty: u8, reserved: u16, session: u64, sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = b"IGLK".to_vec();
    d.push(1);
    d.push(ty);
    d.extend_from_slice(&reserved.to_le_bytes());
    d.extend_from_slice(&session.to_le_bytes());
    d.extend_from_slice(&sequence.to_le_bytes());
    d.extend_from_slice(&SENT_NS.to_le_bytes());
    d.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    d.extend_from_slice(payload);
    signed(d)
}

/// Re-encodes a decoded message with the crate's encoder. The encoder numbers its messages
/// itself from 1, so the sequence is set afterwards and the tag recomputed; everything else
/// is the encoder's. `None` for a CORRECTIONS part the encoder would not split that way.
fn re_encode(d: &[u8], header: &Header, body: &Body<'_>) -> Option<Vec<u8>> {
    let mut enc = Encoder::new(&key(), header.session_id, 1400).unwrap();
    let mut buf = vec![0u8; 1400];
    let t = header.sent_unix_ns;
    let n = match body {
        Body::Hold { reason, frame_id } => enc.encode_hold(&mut buf, t, *reason, *frame_id),
        Body::Resume => enc.encode_resume(&mut buf, t),
        Body::Heartbeat => enc.encode_heartbeat(&mut buf, t),
        Body::Ack(a) => enc.encode_ack(&mut buf, t, a),
        Body::Surrogate(x) => enc.encode_surrogate(&mut buf, t, x),
        Body::Delivered(p) => {
            if p.spots.len() > enc.delivered_per_part() {
                return None;
            }
            let spots: Vec<_> = p.spots.iter().collect();
            enc.encode_delivered(&mut buf, t, p.sender_session_id, p.first_ordinal, &spots)
        }
        Body::Corrections(p) => {
            // a whole set in one part is what the encoder writes at 1400 bytes (≤ 64 spots)
            if !(p.part_count == 1
                && p.first_spot == 0
                && p.spots.len() as u32 == p.total_spots
                && p.spots.len() <= enc.spots_per_part())
            {
                return None;
            }
            let set = CorrectionSet {
                frame_id: p.frame_id,
                valid_until_unix_ns: p.valid_until_unix_ns,
                mode: Some(p.mode),
                tumor_shift_mm: p.tumor_shift_mm,
                spots: p.spots.iter().collect(),
            };
            enc.encode_corrections_part(&mut buf, t, &set, 0)
        }
    }
    .unwrap();
    buf.truncate(n);
    buf[16..24].copy_from_slice(&header.sequence.to_le_bytes());
    buf.truncate(n - 32);
    let out = signed(buf);
    assert_eq!(out.len(), d.len());
    Some(out)
}

/// What the doc says a decoder must accept in a CORRECTIONS payload built from `f`.
fn acceptable(f: &Fields) -> bool {
    let finite = |b: u32| f32::from_bits(b).is_finite();
    f.part_count >= 1
        && f.part_index < f.part_count
        && u64::from(f.first_spot) + f.spot_words.len() as u64 <= u64::from(f.total_spots)
        && f.mode <= 1
        && f.reserved == 0
        && f.shift_bits.iter().all(|&b| finite(b))
        && f.spot_words.iter().all(|s| s[1..].iter().all(|&b| finite(b)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Field-shaped CORRECTIONS payloads, signed: accepted exactly when the doc's rules
    /// allow, and then read as the fields that were written.
    #[test]
    fn signed_corrections_payloads_parse_by_the_docs_rules(f in fields(), sequence in 1u64..u64::MAX) {
        let d = datagram(1, 0, SESSION, sequence, &f.payload());
        let dec = Decoder::new(&key(), ionguide::link::protocol::MAX_UDP_PAYLOAD);
        match dec.decode(&d) {
            Ok(m) => {
                prop_assert!(acceptable(&f), "accepted {f:?}");
                let Body::Corrections(p) = m.body else { panic!("{:?}", m.body) };
                prop_assert_eq!(m.header, Header { message_type: MessageType::Corrections, session_id: SESSION, sequence, sent_unix_ns: SENT_NS });
                prop_assert_eq!((p.frame_id, p.valid_until_unix_ns, p.total_spots, p.first_spot), (f.frame_id, f.valid_until, f.total_spots, f.first_spot));
                prop_assert_eq!((p.part_index, p.part_count, p.mode.code()), (f.part_index, f.part_count, f.mode));
                prop_assert_eq!(p.tumor_shift_mm.map(f32::to_bits), f.shift_bits);
                let got: Vec<[u32; 5]> = p.spots.iter().map(|s| [s.spot_index, s.x_mm.to_bits(), s.y_mm.to_bits(), s.energy_mev_u.to_bits(), s.range_shifter_mm_we.to_bits()]).collect();
                prop_assert_eq!(&got, &f.spot_words);
                if let Some(again) = re_encode(&d, &m.header, &m.body) {
                    prop_assert_eq!(again, d);
                }
            }
            Err(e) => {
                prop_assert!(!acceptable(&f), "refused {f:?}: {e}");
                prop_assert!(matches!(e, DecodeError::BadField { .. }), "{e:?}");
            }
        }
    }

    /// Any type code, reserved field, session, sequence and payload bytes, signed: no panic;
    /// a typed error, or a message the encoder writes back byte for byte.
    #[test]
    fn signed_random_bodies_are_refused_or_re_encode_exactly(
        ty in prop_oneof![4 => 1u8..=5, 1 => any::<u8>()],
        reserved in prop_oneof![6 => Just(0u16), 1 => any::<u16>()],
        session in any::<u64>(),
        sequence in prop_oneof![1 => Just(0u64), 8 => 1u64..u64::MAX],
        exact in any::<bool>(),
        any_len in 0usize..200,
        spots in 0usize..4,
        fill in prop::collection::vec(any::<u8>(), 200),
        small in prop::collection::vec(0u8..2, 200),
        use_small in any::<bool>(),
    ) {
        // half the time the length the type's payload must have, so the fields get parsed
        let len = match (exact, ty) {
            (true, 1) => 44 + 20 * spots,
            (true, 2) => 10,
            (true, 5) => 28,
            (true, _) => 0,
            (false, _) => any_len,
        };
        // small bytes make enum codes, flags and reserved fields valid often enough to pass
        let payload = if use_small { &small[..len] } else { &fill[..len] };
        let d = datagram(ty, reserved, session, sequence, payload);
        let dec = Decoder::new(&key(), ionguide::link::protocol::MAX_UDP_PAYLOAD);
        match dec.decode(&d) {
            Ok(m) => {
                prop_assert_eq!(m.header.message_type.code(), ty);
                prop_assert_eq!((m.header.session_id, m.header.sequence), (session, sequence));
                if let Some(again) = re_encode(&d, &m.header, &m.body) {
                    prop_assert_eq!(again, d);
                } else {
                    prop_assert!(matches!(m.body, Body::Corrections(_)));
                }
            }
            Err(e) => {
                // authenticated: only the body's and header fields' rules may refuse it
                prop_assert!(
                    matches!(e, DecodeError::BadField { .. } | DecodeError::LengthMismatch { .. } | DecodeError::UnknownType { .. }),
                    "{e:?}"
                );
            }
        }
    }
}
