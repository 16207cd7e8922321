//! The wire codec, keys and replay rules, without sockets.

mod doc_example;

use ionguide::correction::{CorrectionSet, DeliveredSpot, HoldReason, RangeMode, SpotCorrection};
use ionguide::link::protocol::{
    Ack, AckStatus, Body, DecodeError, Decoder, EncodeError, Encoder, MessageType, SurrogateSample,
    HEADER_LEN, MAC_LEN, MAX_UDP_PAYLOAD, MIN_MAX_DATAGRAM, SURROGATE_FIXED_LEN,
};
use ionguide::link::reassembly::{PartOutcome, Reassembler};
use ionguide::link::replay::{ReplayError, ReplayGuard};
use ionguide::link::{KeyError, LinkKey};
use proptest::prelude::*;

const NOW: u64 = 1_750_000_000_000_000_000;

fn key(b: u8) -> LinkKey {
    LinkKey::from_bytes(&[b; 32]).unwrap()
}

fn finite() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL | prop::num::f32::ZERO | prop::num::f32::SUBNORMAL
}

fn spot() -> impl Strategy<Value = SpotCorrection> {
    (any::<u32>(), finite(), finite(), finite(), finite()).prop_map(|(spot_index, x, y, e, r)| {
        SpotCorrection {
            spot_index,
            x_mm: x,
            y_mm: y,
            energy_mev_u: e,
            range_shifter_mm_we: r,
        }
    })
}

fn delivered() -> impl Strategy<Value = DeliveredSpot> {
    (
        spot(),
        prop::num::f64::POSITIVE | prop::num::f64::ZERO,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(spot, meterset, frame_id, at)| DeliveredSpot {
            spot,
            meterset,
            frame_id,
            delivered_unix_ns: at,
        })
}

fn set() -> impl Strategy<Value = CorrectionSet> {
    (
        any::<u64>(),
        any::<u64>(),
        prop::bool::ANY,
        [finite(), finite(), finite()],
        prop::collection::vec(spot(), 0..400),
    )
        .prop_map(|(frame_id, valid, rs, shift, spots)| CorrectionSet {
            frame_id,
            valid_until_unix_ns: valid,
            mode: Some(if rs {
                RangeMode::RangeShifter
            } else {
                RangeMode::Energy
            }),
            tumor_shift_mm: shift,
            spots,
        })
}

/// Encodes every part and reassembles them via the decoder, returning the rebuilt set.
fn through_wire(set: &CorrectionSet, max_datagram: usize, enc_key: &LinkKey) -> CorrectionSet {
    let mut enc = Encoder::new(enc_key, 7, max_datagram).unwrap();
    let dec = Decoder::new(&key(1), max_datagram);
    let mut re = Reassembler::new(1 << 20, 0);
    let mut buf = vec![0u8; max_datagram];
    let parts = enc.part_count(set.spots.len()).unwrap();
    for i in 0..parts {
        let seq = enc.next_sequence();
        let n = enc.encode_corrections_part(&mut buf, NOW, set, i).unwrap();
        assert!(n <= max_datagram);
        let m = dec.decode(&buf[..n]).unwrap();
        assert_eq!(m.header.message_type, MessageType::Corrections);
        assert_eq!(
            (m.header.session_id, m.header.sequence, m.header.sent_unix_ns),
            (7, seq, NOW)
        );
        let Body::Corrections(p) = m.body else {
            panic!("not corrections")
        };
        let want = if i + 1 == parts {
            PartOutcome::Complete
        } else {
            PartOutcome::Pending
        };
        assert_eq!(re.accept(&p).unwrap(), want);
    }
    re.set().clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn corrections_round_trip(s in set(), max_datagram in MIN_MAX_DATAGRAM..4000usize) {
        let got = through_wire(&s, max_datagram, &key(1));
        // Bitwise float equality: the wire carries the IEEE bits unchanged.
        prop_assert_eq!(got.frame_id, s.frame_id);
        prop_assert_eq!(got.valid_until_unix_ns, s.valid_until_unix_ns);
        prop_assert_eq!(got.mode, s.mode);
        prop_assert_eq!(got.tumor_shift_mm.map(f32::to_bits), s.tumor_shift_mm.map(f32::to_bits));
        prop_assert_eq!(got.spots.len(), s.spots.len());
        for (a, b) in got.spots.iter().zip(&s.spots) {
            prop_assert_eq!(a.spot_index, b.spot_index);
            prop_assert_eq!(
                [a.x_mm, a.y_mm, a.energy_mev_u, a.range_shifter_mm_we].map(f32::to_bits),
                [b.x_mm, b.y_mm, b.energy_mev_u, b.range_shifter_mm_we].map(f32::to_bits)
            );
        }
    }

    #[test]
    fn control_messages_round_trip(
        session in any::<u64>(), sent in any::<u64>(), frame in any::<u64>(), reason_k in 0..HoldReason::ALL.len(),
        acked_session in any::<u64>(), acked_seq in any::<u64>(), status_k in 0u8..3, beam_on in any::<bool>(),
    ) {
        let mut enc = Encoder::new(&key(1), session, 1400).unwrap();
        let dec = Decoder::new(&key(1), 1400);
        let mut buf = [0u8; 1400];
        let reason = HoldReason::ALL[reason_k];
        let ack = Ack { acked_session_id: acked_session, acked_sequence: acked_seq, frame_id: frame,
            status: AckStatus::from_code(status_k).unwrap(), beam_on };
        let n = enc.encode_hold(&mut buf, sent, reason, frame).unwrap();
        prop_assert_eq!(dec.decode(&buf[..n]).unwrap().body, Body::Hold { reason, frame_id: frame });
        let n = enc.encode_resume(&mut buf, sent).unwrap();
        prop_assert_eq!(dec.decode(&buf[..n]).unwrap().body, Body::Resume);
        let n = enc.encode_heartbeat(&mut buf, sent).unwrap();
        let m = dec.decode(&buf[..n]).unwrap();
        prop_assert_eq!(m.body, Body::Heartbeat);
        prop_assert_eq!((m.header.session_id, m.header.sequence, m.header.sent_unix_ns), (session, 3, sent));
        let n = enc.encode_ack(&mut buf, sent, &ack).unwrap();
        prop_assert_eq!(dec.decode(&buf[..n]).unwrap().body, Body::Ack(ack));
    }

    #[test]
    fn surrogate_round_trips(
        session in any::<u64>(), sent in any::<u64>(), sample in any::<u64>(), acquired in any::<u64>(),
        markers in 1u8..=3, coords in proptest::array::uniform9(finite()),
    ) {
        let mut enc = Encoder::new(&key(1), session, 1400).unwrap();
        let dec = Decoder::new(&key(1), 1400);
        let mut buf = [0u8; 1400];
        let mut pos_mm = [[0.0f32; 3]; 3];
        for m in 0..markers as usize {
            pos_mm[m].copy_from_slice(&coords[3 * m..3 * m + 3]);
        }
        let x = SurrogateSample { sample, acquired_unix_ns: acquired, markers, pos_mm };
        let n = enc.encode_surrogate(&mut buf, sent, &x).unwrap();
        // the documented size: header + 20 + 12 per marker + tag
        prop_assert_eq!(n, HEADER_LEN + SURROGATE_FIXED_LEN + 12 * markers as usize + MAC_LEN);
        let m = dec.decode(&buf[..n]).unwrap();
        prop_assert_eq!(m.header.message_type, MessageType::Surrogate);
        prop_assert_eq!(buf[5], 7);
        let Body::Surrogate(got) = m.body else { panic!("{:?}", m.body) };
        prop_assert_eq!(got.sample, sample);
        prop_assert_eq!(got.acquired_unix_ns, acquired);
        prop_assert_eq!(got.markers, markers);
        prop_assert_eq!(got.pos_mm.map(|p| p.map(f32::to_bits)), pos_mm.map(|p| p.map(f32::to_bits)));
    }

    #[test]
    fn delivered_round_trip(
        spots in prop::collection::vec(delivered(), 1..300),
        max_datagram in MIN_MAX_DATAGRAM..4000usize,
        session in any::<u64>(),
        first in 0u64..1 << 40,
    ) {
        let mut enc = Encoder::new(&key(1), 9, max_datagram).unwrap();
        let dec = Decoder::new(&key(1), max_datagram);
        let per = enc.delivered_per_part();
        prop_assert!(per >= 1, "the smallest datagram still carries one delivered spot");
        let mut buf = vec![0u8; max_datagram];
        let mut got: Vec<DeliveredSpot> = Vec::new();
        for (k, chunk) in spots.chunks(per).enumerate() {
            let ordinal = first + (k * per) as u64;
            let n = enc.encode_delivered(&mut buf, NOW, session, ordinal, chunk).unwrap();
            prop_assert!(n <= max_datagram);
            let m = dec.decode(&buf[..n]).unwrap();
            prop_assert_eq!(m.header.message_type, MessageType::Delivered);
            let Body::Delivered(d) = m.body else { panic!("not DELIVERED: {:?}", m.body) };
            prop_assert_eq!((d.sender_session_id, d.first_ordinal, d.spots.len()), (session, ordinal, chunk.len()));
            got.extend(d.spots.iter());
        }
        // bitwise: the wire carries the IEEE bits unchanged
        prop_assert_eq!(got.len(), spots.len());
        for (a, b) in got.iter().zip(&spots) {
            prop_assert_eq!(a.to_le_bytes(), b.to_le_bytes());
        }
    }

    #[test]
    fn decode_never_panics(bytes in any::<Vec<u8>>()) {
        let _ = Decoder::new(&key(1), MAX_UDP_PAYLOAD).decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_headers(tail in any::<Vec<u8>>(), ty in any::<u8>(), len in any::<u32>()) {
        // Random bytes rarely pass the magic check; start from a valid prefix to reach deeper.
        let mut d = b"IGLK\x01".to_vec();
        d.push(ty);
        d.extend_from_slice(&[0; 26]);
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&tail);
        let _ = Decoder::new(&key(1), MAX_UDP_PAYLOAD).decode(&d);
    }

    #[test]
    fn any_flipped_bit_is_rejected(s in set(), bit in any::<prop::sample::Index>()) {
        let mut enc = Encoder::new(&key(1), 9, 1400).unwrap();
        let mut buf = [0u8; 1400];
        let n = enc.encode_corrections_part(&mut buf, NOW, &s, 0).unwrap();
        let b = bit.index(n * 8);
        buf[b / 8] ^= 1 << (b % 8);
        prop_assert!(Decoder::new(&key(1), 1400).decode(&buf[..n]).is_err());
    }
}

#[test]
fn wrong_key_is_bad_mac() {
    let mut enc = Encoder::new(&key(2), 9, 1400).unwrap();
    let mut buf = [0u8; 1400];
    let n = enc.encode_heartbeat(&mut buf, NOW).unwrap();
    assert_eq!(
        Decoder::new(&key(1), 1400).decode(&buf[..n]),
        Err(DecodeError::BadMac)
    );
    assert!(Decoder::new(&key(2), 1400).decode(&buf[..n]).is_ok());
}

#[test]
fn typed_errors_name_the_fault() {
    let dec = Decoder::new(&key(1), 1400);
    let mut enc = Encoder::new(&key(1), 9, 1400).unwrap();
    let mut buf = [0u8; 1500];
    let n = enc.encode_heartbeat(&mut buf, NOW).unwrap();
    let good = buf[..n].to_vec();
    let with = |at: usize, v: u8| {
        let mut d = good.clone();
        d[at] = v;
        d
    };
    assert!(matches!(
        dec.decode(&good[..10]),
        Err(DecodeError::TooShort { len: 10, .. })
    ));
    assert!(matches!(
        dec.decode(&with(0, b'X')),
        Err(DecodeError::BadMagic { .. })
    ));
    assert_eq!(
        dec.decode(&with(4, 2)),
        Err(DecodeError::UnsupportedVersion { found: 2 })
    );
    assert_eq!(dec.decode(&with(5, 9)), Err(DecodeError::UnknownType { code: 9 }));
    assert!(matches!(
        dec.decode(&with(32, 4)),
        Err(DecodeError::LengthMismatch {
            declared: 4,
            actual: 0
        })
    ));
    assert!(matches!(
        dec.decode(&[0u8; 1401]),
        Err(DecodeError::Oversize { len: 1401, max: 1400 })
    ));
    // A correctly signed HOLD with an unknown reason code: authentic, but a bad field.
    let n = enc.encode_hold(&mut buf, NOW, HoldReason::Shutdown, 3).unwrap();
    let mut d = buf[..n].to_vec();
    d[HEADER_LEN + 8] = 0xEE;
    resign(&mut d, &key(1));
    assert_eq!(
        dec.decode(&d),
        Err(DecodeError::BadField { field: "hold.reason" })
    );
    // A signed CORRECTIONS part with part_index >= part_count, a bad mode, and a NaN.
    let set = CorrectionSet {
        frame_id: 1,
        valid_until_unix_ns: NOW,
        mode: Some(RangeMode::Energy),
        tumor_shift_mm: [0.0; 3],
        spots: vec![SpotCorrection::default(); 3],
    };
    let n = enc.encode_corrections_part(&mut buf, NOW, &set, 0).unwrap();
    let part = buf[..n].to_vec();
    for (at, bytes, field) in [
        (HEADER_LEN + 24, &[1u8, 0][..], "corrections.part_index"),
        (HEADER_LEN + 30, &[7u8][..], "corrections.mode"),
        (
            HEADER_LEN + 44 + 8,
            &f32::NAN.to_le_bytes()[..],
            "corrections.spot",
        ),
        (HEADER_LEN + 20, &[1u8, 0, 0, 0][..], "corrections.first_spot"),
    ] {
        let mut d = part.clone();
        d[at..at + bytes.len()].copy_from_slice(bytes);
        resign(&mut d, &key(1));
        assert_eq!(dec.decode(&d), Err(DecodeError::BadField { field }), "{field}");
    }
    // The encoder refuses what the decoder would refuse.
    let mut bad = set.clone();
    bad.spots[2].energy_mev_u = f32::INFINITY;
    assert_eq!(
        enc.encode_corrections_part(&mut buf, NOW, &bad, 0),
        Err(EncodeError::NonFinite {
            frame_id: 1,
            position: 2
        })
    );
    bad.mode = None;
    assert_eq!(
        enc.encode_corrections_part(&mut buf, NOW, &bad, 0),
        Err(EncodeError::MissingMode { frame_id: 1 })
    );
    assert!(matches!(
        Encoder::new(&key(1), 1, 65508),
        Err(EncodeError::BadMaxDatagram { bytes: 65508 })
    ));
    assert!(matches!(
        enc.encode_heartbeat(&mut buf[..40], NOW),
        Err(EncodeError::BufferTooSmall { needed: 68, .. })
    ));
}

/// Recomputes the trailing HMAC, as a key holder would: tests authenticated-but-bad fields.
fn resign(d: &mut [u8], k: &LinkKey) {
    use hmac::{Hmac, Mac};
    let _ = k; // the tests' keys are all bytes of one value
    let body = d.len() - MAC_LEN;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&[1u8; 32]).unwrap();
    mac.update(&d[..body]);
    let tag = mac.finalize().into_bytes();
    d[body..].copy_from_slice(&tag);
}

#[test]
fn replayed_out_of_order_and_old_session_messages_are_rejected() {
    let dec = Decoder::new(&key(1), 1400);
    let mut guard = ReplayGuard::for_controller(500_000_000, 50_000_000);
    let mut old = Encoder::new(&key(1), 0xA, 1400).unwrap();
    let mut new = Encoder::new(&key(1), 0xB, 1400).unwrap();
    let mut cap: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; 1400];
    let set = CorrectionSet {
        frame_id: 5,
        valid_until_unix_ns: NOW + 1,
        mode: Some(RangeMode::Energy),
        ..Default::default()
    };
    // The old session: heartbeat, two sets, all captured by an eavesdropper.
    let n = old.encode_heartbeat(&mut buf, NOW).unwrap();
    cap.push(buf[..n].to_vec());
    for t in 1..3 {
        let n = old.encode_corrections_part(&mut buf, NOW + t, &set, 0).unwrap();
        cap.push(buf[..n].to_vec());
    }
    let mut check = |d: &[u8], now: u64| guard.check(&dec.decode(d).unwrap().header, now);
    assert!(check(&cap[0], NOW).is_ok());
    assert!(check(&cap[2], NOW).is_ok());
    // Out of order: seq 2 after seq 3.
    assert!(matches!(
        check(&cap[1], NOW),
        Err(ReplayError::Replayed {
            sequence: 2,
            highest: 3,
            ..
        })
    ));
    // Replay of an accepted message.
    assert!(matches!(check(&cap[2], NOW), Err(ReplayError::Replayed { .. })));
    // The sender restarts: new session, opened by a heartbeat sent later.
    let n = new.encode_heartbeat(&mut buf, NOW + 10).unwrap();
    assert!(check(&buf[..n], NOW + 10).is_ok());
    // The old session's capture replayed, from its own opening heartbeat on: all refused.
    assert!(matches!(
        check(&cap[0], NOW + 20),
        Err(ReplayError::OldSession { .. })
    ));
    assert!(matches!(
        check(&cap[2], NOW + 20),
        Err(ReplayError::NotAdmitted { .. })
    ));
    // And against a freshly restarted receiver a second later, freshness refuses it.
    let mut fresh = ReplayGuard::for_controller(500_000_000, 50_000_000);
    let h = dec.decode(&cap[0]).unwrap().header;
    assert!(matches!(
        fresh.check(&h, NOW + 1_000_000_000),
        Err(ReplayError::Stale { .. })
    ));
}

#[test]
fn key_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("ionguide-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8], mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        p
    };
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    let k = LinkKey::from_file(write("hex", hex.as_bytes(), 0o600)).unwrap();
    assert_eq!(k.len(), 32);
    // Same bytes raw: the same key, so both sign identically.
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let k2 = LinkKey::from_file(write("raw", &raw, 0o600)).unwrap();
    let (mut a, mut b) = ([0u8; 100], [0u8; 100]);
    let na = Encoder::new(&k, 1, 1400)
        .unwrap()
        .encode_heartbeat(&mut a, 5)
        .unwrap();
    let nb = Encoder::new(&k2, 1, 1400)
        .unwrap()
        .encode_heartbeat(&mut b, 5)
        .unwrap();
    assert_eq!(a[..na], b[..nb]);
    assert!(!format!("{k:?}").contains("0011"), "Debug must not print the key");
    let short = write("short", b"0011223344", 0o600);
    match LinkKey::from_file(&short) {
        Err(e @ KeyError::TooShort { len: 5, .. }) => assert!(e.to_string().contains("short")),
        other => panic!("{other:?}"),
    }
    #[cfg(unix)]
    {
        let open = write("open", hex.as_bytes(), 0o644);
        match LinkKey::from_file(&open) {
            Err(e @ KeyError::Permissions { mode: 0o644, .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&open.display().to_string()) && msg.contains("group/others"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        LinkKey::from_file(dir.join("missing")),
        Err(KeyError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The hex dump in docs/protocol.md is this test's output; the test fails if they drift.
#[test]
fn protocol_doc_example_is_true() {
    let k = LinkKey::from_bytes(&[0x42; 32]).unwrap();
    let mut enc = Encoder::new(&k, 0x0123_4567_89ab_cdef, 1400).unwrap();
    let mut buf = [0u8; 1400];
    let mut dump = String::new();
    let n = enc
        .encode_hold(&mut buf, 1_750_000_000_123_456_789, HoldReason::LinkSilent, 42)
        .unwrap();
    dump.push_str(&hexdump("HOLD", &buf[..n]));
    let set = CorrectionSet {
        frame_id: 42,
        valid_until_unix_ns: 1_750_000_000_223_456_789,
        mode: Some(RangeMode::Energy),
        tumor_shift_mm: [1.5, -2.0, 0.25],
        spots: doc_example::two_spots(),
    };
    let n = enc
        .encode_corrections_part(&mut buf, 1_750_000_000_123_456_789, &set, 0)
        .unwrap();
    dump.push_str(&hexdump("CORRECTIONS", &buf[..n]));
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap_or_default();
    assert!(doc.contains(&dump), "docs/protocol.md must contain:\n{dump}");
}

fn hexdump(title: &str, b: &[u8]) -> String {
    let mut s = format!("{title} ({} bytes, key = 32 × 0x42)\n", b.len());
    for (i, row) in b.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
        s.push_str(&format!("{:04x}  {}\n", i * 16, hex.join(" ")));
    }
    s
}

/// A SURROGATE sample outside its domain is refused at both ends: no marker, four markers,
/// NaN coordinates; and a forged marker count is caught after the HMAC as a bad field.
#[test]
fn surrogate_domain_is_enforced() {
    let mut enc = Encoder::new(&key(1), 7, 1400).unwrap();
    let dec = Decoder::new(&key(1), 1400);
    let mut buf = [0u8; 1400];
    let mut x = SurrogateSample {
        sample: 1,
        acquired_unix_ns: NOW,
        markers: 0,
        pos_mm: [[1.0; 3]; 3],
    };
    assert_eq!(
        enc.encode_surrogate(&mut buf, NOW, &x),
        Err(EncodeError::BadMarkerCount { markers: 0 })
    );
    x.markers = 4;
    assert!(enc.encode_surrogate(&mut buf, NOW, &x).is_err());
    x.markers = 2;
    x.pos_mm[1][2] = f32::NAN;
    assert_eq!(
        enc.encode_surrogate(&mut buf, NOW, &x),
        Err(EncodeError::NonFinite {
            frame_id: 1,
            position: 1
        })
    );
    // a sender that signs a bad body (its own bug) is still refused by field
    x.pos_mm[1][2] = 0.0;
    let n = enc.encode_surrogate(&mut buf, NOW, &x).unwrap();
    let mut forged = buf[..n].to_vec();
    forged[HEADER_LEN + 17] = 1; // reserved byte
    let body_end = forged.len() - MAC_LEN;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&[1u8; 32]).unwrap();
    hmac::Mac::update(&mut mac, &forged[..body_end]);
    let tag = hmac::Mac::finalize(mac).into_bytes();
    forged[body_end..].copy_from_slice(&tag);
    assert_eq!(
        dec.decode(&forged),
        Err(DecodeError::BadField {
            field: "surrogate.reserved"
        })
    );
    // the controller's guard does not let a surrogate stream open a session
    let mut g = ReplayGuard::for_controller(500_000_000, 50_000_000);
    let m = dec.decode(&buf[..n]).unwrap();
    assert!(matches!(
        g.check(&m.header, NOW),
        Err(ReplayError::NotAdmitted { .. })
    ));
    let mut g = ReplayGuard::for_surrogate(500_000_000, 50_000_000);
    assert!(g.check(&m.header, NOW).is_ok());
}

#[test]
fn delivered_reports_with_bad_fields_are_refused_by_name() {
    let dec = Decoder::new(&key(1), 1400);
    let mut enc = Encoder::new(&key(1), 9, 1400).unwrap();
    let mut buf = [0u8; 1400];
    let spot = DeliveredSpot {
        spot: SpotCorrection {
            spot_index: 3,
            x_mm: 1.0,
            y_mm: -2.0,
            energy_mev_u: 150.0,
            range_shifter_mm_we: 0.0,
        },
        meterset: 0.25,
        frame_id: 42,
        delivered_unix_ns: NOW,
    };
    // the encoder refuses what the decoder would refuse
    let nan = DeliveredSpot {
        meterset: f64::NAN,
        ..spot
    };
    assert!(matches!(
        enc.encode_delivered(&mut buf, NOW, 1, 0, &[spot, nan]),
        Err(EncodeError::NonFinite { position: 1, .. })
    ));
    assert!(matches!(
        enc.encode_delivered(&mut buf, NOW, 1, 0, &[]),
        Err(EncodeError::TooManySpots { spots: 0 })
    ));
    let n = enc.encode_delivered(&mut buf, NOW, 1, 0, &[spot]).unwrap();
    let good = buf[..n].to_vec();
    let p = HEADER_LEN;
    let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut d = good.clone();
        edit(&mut d);
        resign(&mut d, &key(1));
        dec.decode(&d).map(|_| ())
    };
    // a negative meterset (bytes 20..28 of the spot, after the 24 fixed bytes)
    assert_eq!(
        bad(&|d| d[p + 24 + 20..p + 24 + 28].copy_from_slice(&(-1.0f64).to_le_bytes())),
        Err(DecodeError::BadField {
            field: "delivered.spot"
        })
    );
    assert_eq!(
        bad(&|d| d[p + 20] = 1),
        Err(DecodeError::BadField {
            field: "delivered.reserved"
        })
    );
    // a count that disagrees with the payload
    assert!(matches!(
        bad(&|d| d[p + 16] = 2),
        Err(DecodeError::LengthMismatch { .. })
    ));
    // the controller never accepts a DELIVERED as input: only the sender reads them
    assert!(matches!(dec.decode(&good).unwrap().body, Body::Delivered(_)));
}
