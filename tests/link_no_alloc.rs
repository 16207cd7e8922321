//! Encoding, decoding and reassembling a 10,000-spot set allocates nothing once warm
//! (STYLE: prove it with a counting allocator). The only test in its binary, so no other
//! test allocates meanwhile.

mod alloc_support;

use ionguide::correction::{CorrectionSet, HoldReason, RangeMode, SpotCorrection};
use ionguide::link::protocol::{Ack, AckStatus, Body, Decoder, Encoder};
use ionguide::link::reassembly::{PartOutcome, Reassembler};
use ionguide::link::replay::ReplayGuard;
use ionguide::link::LinkKey;

#[global_allocator]
static GLOBAL: alloc_support::Counting = alloc_support::Counting;

const NOW: u64 = 1_750_000_000_000_000_000;

/// One frame through the codec: every part encoded, verified, replay-checked, reassembled,
/// plus a HOLD, a HEARTBEAT and an ACK. Returns a checksum so nothing is optimized away.
fn frame(
    enc: &mut Encoder,
    dec: &Decoder,
    guard: &mut ReplayGuard,
    re: &mut Reassembler,
    buf: &mut [u8],
    set: &CorrectionSet,
    t: u64,
) -> u64 {
    let mut sum = 0u64;
    let parts = enc.part_count(set.spots.len()).unwrap();
    let n = enc.encode_heartbeat(buf, t).unwrap();
    guard.check(&dec.decode(&buf[..n]).unwrap().header, t).unwrap();
    for i in 0..parts {
        let n = enc.encode_corrections_part(buf, t, set, i).unwrap();
        let m = dec.decode(&buf[..n]).unwrap();
        guard.check(&m.header, t).unwrap();
        let Body::Corrections(p) = m.body else {
            panic!("not corrections")
        };
        if re.accept(&p).unwrap() == PartOutcome::Complete {
            sum += re.set().spots.len() as u64;
        }
    }
    let n = enc
        .encode_hold(buf, t, HoldReason::DeadlineMissed, set.frame_id)
        .unwrap();
    guard.check(&dec.decode(&buf[..n]).unwrap().header, t).unwrap();
    let ack = Ack {
        acked_session_id: 1,
        acked_sequence: 2,
        frame_id: set.frame_id,
        status: AckStatus::Applied,
        beam_on: true,
    };
    let n = enc.encode_ack(buf, t, &ack).unwrap();
    sum + n as u64
}

#[test]
fn a_warm_10k_spot_frame_allocates_nothing() {
    alloc_support::count_this_thread();
    let key = LinkKey::from_bytes(&[7; 32]).unwrap();
    let mut enc = Encoder::new(&key, 99, 1400).unwrap();
    let dec = Decoder::new(&key, 1400);
    let mut guard = ReplayGuard::for_controller(u64::MAX, u64::MAX);
    // Start with room for few spots, so the warm-up frame must grow the buffers.
    let mut re = Reassembler::new(1 << 20, 16);
    let mut buf = vec![0u8; 1400];
    let mut set = CorrectionSet {
        frame_id: 1,
        valid_until_unix_ns: NOW + 1,
        mode: Some(RangeMode::RangeShifter),
        tumor_shift_mm: [1.0, 2.0, 3.0],
        spots: (0..10_000u32)
            .map(|i| SpotCorrection {
                spot_index: i,
                x_mm: i as f32 * 0.1,
                y_mm: -(i as f32),
                energy_mev_u: 200.0,
                range_shifter_mm_we: 1.5,
            })
            .collect(),
    };
    // The counter works: building the set above allocated on this thread.
    assert!(alloc_support::allocations() > 0);
    let warm = frame(&mut enc, &dec, &mut guard, &mut re, &mut buf, &set, NOW);
    assert_eq!(re.set(), &set, "warm-up frame reassembled exactly");

    let before = alloc_support::allocations();
    let mut total = 0;
    for f in 2..5u64 {
        set.frame_id = f;
        total += frame(&mut enc, &dec, &mut guard, &mut re, &mut buf, &set, NOW + f);
    }
    let after = alloc_support::allocations();
    assert_eq!(after - before, 0, "allocations in 3 warm frames");
    assert_eq!(total, 3 * warm);
    assert_eq!(re.set(), &set);
}
