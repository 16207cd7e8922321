//! The link end to end on loopback: a real `LinkSender` against the controller simulator.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ionguide::correction::{CorrectionSet, HoldReason, RangeMode, SpotCorrection};
use ionguide::link::protocol::unix_now_ns;
use ionguide::link::{AckStatus, DecodeError, LinkKey, LinkOptions, LinkReceiver, LinkSender, Rejection};
use ionguide_sim::delivery::controller::{
    spawn, BeamState, Cause, Controller, ControllerConfig, ControllerHandle,
};

const WAIT: Duration = Duration::from_secs(10);

fn key() -> LinkKey {
    LinkKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn controller(watchdog: Duration) -> ControllerHandle {
    let rx = LinkReceiver::bind(any_port(), &key(), &LinkOptions::default()).unwrap();
    spawn(rx, ControllerConfig::default().with_watchdog(watchdog), |_| {}).unwrap()
}

fn big_set(frame_id: u64, n: u32, valid_for: Duration) -> CorrectionSet {
    CorrectionSet {
        frame_id,
        valid_until_unix_ns: unix_now_ns() + valid_for.as_nanos() as u64,
        mode: Some(RangeMode::Energy),
        tumor_shift_mm: [0.5, -1.25, 3.0],
        spots: (0..n)
            .map(|i| SpotCorrection {
                spot_index: i * 3 + 1,
                x_mm: (i as f32).sin() * 50.0,
                y_mm: (i as f32).cos() * 50.0,
                energy_mev_u: 100.0 + (i % 400) as f32 * 0.5,
                range_shifter_mm_we: 0.0,
            })
            .collect(),
    }
}

fn last_cause(c: &Controller) -> Cause {
    c.events().last().unwrap().cause
}

/// Sends `set` (bumping its frame id on retry: UDP may drop a datagram under load) until the
/// controller ACKs it applied; returns the applied frame id.
fn deliver(tx: &mut LinkSender, set: &mut CorrectionSet) -> u64 {
    for _ in 0..20 {
        let stats = tx.send_corrections(set).unwrap();
        assert!(stats.datagrams as usize >= set.spots.len().div_ceil(64));
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            match tx.poll_ack().unwrap() {
                Some(a) if a.frame_id == set.frame_id && a.status == AckStatus::Applied => {
                    assert!(a.beam_on);
                    return set.frame_id;
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        set.frame_id += 1;
        set.valid_until_unix_ns = unix_now_ns() + 5_000_000_000;
    }
    panic!("set never applied");
}

#[test]
fn a_10k_spot_set_is_reassembled_exactly_and_acked() {
    // A long watchdog: this test is about reassembly, not liveness.
    let ctl = controller(Duration::from_secs(30));
    let mut tx = LinkSender::new(any_port(), ctl.local_addr(), &key(), &LinkOptions::default()).unwrap();
    let mut set = big_set(1, 10_000, Duration::from_secs(5));
    let frame = deliver(&mut tx, &mut set);
    let c = ctl.stop().unwrap();
    assert_eq!(c.state(), BeamState::BeamOn);
    assert_eq!(c.applied(), Some(&set));
    assert_eq!(last_cause(&c), Cause::Applied { frame_id: frame });
    assert!(c.counters().applied_sets >= 1);
    assert_eq!(c.counters().rejected_forged + c.counters().rejected_replayed, 0);
}

#[test]
fn silence_trips_the_watchdog() {
    let ctl = controller(Duration::from_millis(30));
    let mut tx = LinkSender::new(any_port(), ctl.local_addr(), &key(), &LinkOptions::default()).unwrap();
    let mut set = big_set(1, 10, Duration::from_secs(60));
    deliver(&mut tx, &mut set);
    // Now say nothing.
    assert!(ctl.wait_until(WAIT, |c| c.state() == BeamState::Held));
    let c = ctl.stop().unwrap();
    let ev = c.events().last().unwrap();
    assert_eq!(
        (ev.from, ev.to, ev.cause),
        (BeamState::BeamOn, BeamState::Held, Cause::Watchdog)
    );
    assert_eq!(ev.cause.hold_reason(), Some(HoldReason::LinkSilent));
}

#[test]
fn an_expired_set_is_not_applied() {
    let ctl = controller(Duration::from_secs(30));
    let mut tx = LinkSender::new(any_port(), ctl.local_addr(), &key(), &LinkOptions::default()).unwrap();
    let mut good = big_set(1, 100, Duration::from_secs(60));
    deliver(&mut tx, &mut good);
    let mut old = big_set(1000, 100, Duration::ZERO);
    old.valid_until_unix_ns = unix_now_ns() - 1;
    old.spots[0].x_mm = 999.0;
    tx.send_corrections(&old).unwrap();
    assert!(ctl.wait_until(WAIT, |c| c.counters().expired_sets == 1));
    let c = ctl.stop().unwrap();
    assert_eq!(c.state(), BeamState::Held);
    assert_eq!(last_cause(&c), Cause::ExpiredOnArrival { frame_id: 1000 });
    assert_eq!(
        c.applied(),
        Some(&good),
        "the expired set must not replace the applied one"
    );
}

#[test]
fn hold_and_resume_are_obeyed() {
    let ctl = controller(Duration::from_secs(30));
    let mut tx = LinkSender::new(any_port(), ctl.local_addr(), &key(), &LinkOptions::default()).unwrap();
    let mut set = big_set(1, 100, Duration::from_secs(60));
    deliver(&mut tx, &mut set);
    tx.send_hold(HoldReason::RangeOverLimit, 7).unwrap();
    assert!(ctl.wait_until(WAIT, |c| c.state() == BeamState::Held));
    assert!(ctl.with(|c| last_cause(c)
        == Cause::Commanded {
            reason: HoldReason::RangeOverLimit,
            frame_id: 7
        }));
    tx.send_resume().unwrap();
    assert!(ctl.wait_until(WAIT, |c| c.state() == BeamState::BeamOn));
    assert_eq!(ctl.with(last_cause), Cause::Resumed);
    ctl.stop().unwrap();
}

/// A raw socket that records what the sender puts on the wire, then replays or forges it.
#[test]
fn forged_and_replayed_datagrams_are_counted_and_hold_the_beam() {
    let ctl = controller(Duration::from_secs(30));
    let tap = UdpSocket::bind(any_port()).unwrap();
    tap.set_read_timeout(Some(WAIT)).unwrap();
    // A sender whose traffic goes to the tap; the test forwards it.
    let mut tx = LinkSender::new(
        any_port(),
        tap.local_addr().unwrap(),
        &key(),
        &LinkOptions::default(),
    )
    .unwrap();
    let mut captured = Vec::new();
    let mut buf = [0u8; 2000];
    tx.send_heartbeat().unwrap();
    let set = big_set(1, 10, Duration::from_secs(60));
    tx.send_corrections(&set).unwrap(); // heartbeat + 1 part (no ACK seen yet)
    for _ in 0..3 {
        let (n, _) = tap.recv_from(&mut buf).unwrap();
        captured.push(buf[..n].to_vec());
    }
    let fwd = UdpSocket::bind(any_port()).unwrap();
    for d in &captured {
        fwd.send_to(d, ctl.local_addr()).unwrap();
    }
    assert!(ctl.wait_until(WAIT, |c| c.state() == BeamState::BeamOn));
    // One flipped bit in the corrections part (inside the payload's frame id): BadMac.
    let mut forged = captured[2].clone();
    forged[40] ^= 0x01;
    fwd.send_to(&forged, ctl.local_addr()).unwrap();
    assert!(ctl.wait_until(WAIT, |c| c.counters().rejected_forged == 1));
    assert_eq!(
        ctl.with(|c| (c.state(), last_cause(c))),
        (
            BeamState::Held,
            Cause::Rejected(Rejection::Decode(DecodeError::BadMac))
        )
    );
    // A fresh genuine set turns the beam back on.
    let mut next = set.clone();
    next.frame_id = 2;
    next.spots[0].x_mm = -7.0;
    tx.send_corrections(&next).unwrap();
    for _ in 0..2 {
        let (n, _) = tap.recv_from(&mut buf).unwrap();
        fwd.send_to(&buf[..n], ctl.local_addr()).unwrap();
    }
    assert!(ctl.wait_until(WAIT, |c| c.state() == BeamState::BeamOn));
    assert_eq!(ctl.with(|c| c.applied().cloned()), Some(next.clone()));
    // Replay the first set's part: rejected, counted, beam held, applied set unchanged.
    fwd.send_to(&captured[2], ctl.local_addr()).unwrap();
    assert!(ctl.wait_until(WAIT, |c| c.counters().rejected_replayed == 1));
    let c = ctl.stop().unwrap();
    assert_eq!(c.state(), BeamState::Held);
    assert!(matches!(last_cause(&c), Cause::Rejected(Rejection::Replay(_))));
    assert_eq!(
        c.applied(),
        Some(&next),
        "neither replay nor forgery changed the applied set"
    );
}

#[test]
fn a_new_session_cannot_start_with_corrections_and_an_old_session_replay_is_refused() {
    let ctl = controller(Duration::from_secs(30));
    let tap = UdpSocket::bind(any_port()).unwrap();
    tap.set_read_timeout(Some(WAIT)).unwrap();
    let fwd = UdpSocket::bind(any_port()).unwrap();
    let mut buf = [0u8; 2000];
    let mut old = LinkSender::new(
        any_port(),
        tap.local_addr().unwrap(),
        &key(),
        &LinkOptions::default(),
    )
    .unwrap();
    let set = big_set(1, 10, Duration::from_secs(60));
    old.send_corrections(&set).unwrap(); // heartbeat + part
    let mut cap = Vec::new();
    for _ in 0..2 {
        let (n, _) = tap.recv_from(&mut buf).unwrap();
        cap.push(buf[..n].to_vec());
    }
    // Corrections alone, without the opening heartbeat: not admitted.
    fwd.send_to(&cap[1], ctl.local_addr()).unwrap();
    assert!(ctl.wait_until(WAIT, |c| c.counters().rejected_replayed == 1));
    assert!(ctl.with(|c| c.applied().is_none()));
    // A restarted sender (new session) takes over.
    let mut new = LinkSender::new(any_port(), ctl.local_addr(), &key(), &LinkOptions::default()).unwrap();
    let mut s2 = big_set(50, 10, Duration::from_secs(60));
    deliver(&mut new, &mut s2);
    // The old session's capture replayed in order: its heartbeat predates the new session.
    for d in &cap {
        fwd.send_to(d, ctl.local_addr()).unwrap();
    }
    assert!(ctl.wait_until(WAIT, |c| c.counters().rejected_replayed == 3));
    let c = ctl.stop().unwrap();
    assert_eq!(c.applied(), Some(&s2));
    assert_eq!(c.state(), BeamState::Held);
}
