//! A frame depicts the anatomy at its acquisition time, not at its arrival: through the whole
//! chain (real STS_001 CT, target and plan; real UDP link, controller and audit file), a
//! frame's corrections are valid for `timing.validity_ms` from when its slices say they were
//! acquired, the pipeline reports acquisition → wire beside complete → wire, and a frame
//! whose corrections would be void by the time they reach the wire is held, never sent.

mod support;

use std::cell::Cell;
use std::time::{Duration, Instant};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use ionguide::audit::{self, AuditRecord};
use ionguide::correction::{unix_now_ns, HoldReason, RejectReason};
use ionguide::pipeline::{FrameEvent, Outcome, Stats};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::dicom_edit::{frame_bytes, load_objects, Edit, Stamp};
use support::rig::{data, Rig, RigOptions};

const MS: u64 = 1_000_000;

/// Now, to the microsecond below (what the writer keeps of an instant).
fn now_us_ns() -> u64 {
    unix_now_ns() / 1000 * 1000
}

fn stamped(objects: &[dicom_object::DefaultDicomObject], frame: u32, acquired: Stamp) -> Vec<Vec<u8>> {
    frame_bytes(
        objects,
        frame,
        &Edit {
            acquired,
            ..Edit::default()
        },
    )
}

fn frame_record(records: &[AuditRecord], id: u64) -> audit::FrameRecord {
    records
        .iter()
        .find_map(|r| match r {
            AuditRecord::Frame(f) if f.frame_id == id => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("frame {id} audited"))
}

#[test]
fn validity_counts_from_acquisition_and_latency_is_reported_from_both_clocks() {
    const VALIDITY_MS: u64 = 3000;
    let mut rig = Rig::start(RigOptions {
        extra_toml: format!("[timing]\nbudget_ms = 1500\nvalidity_ms = {VALIDITY_MS}\n"),
        ..RigOptions::default()
    });
    let objects = load_objects(&data("STS_001/image"));
    let mut stats = Stats::new();

    // 1. acquired 300 ms (and the encoding) before it is complete
    let acquired = now_us_ns() - 300 * MS;
    rig.push(stamped(&objects, 1, Stamp::At(acquired)));
    let ev = rig.next_event();
    stats.record(&ev);
    let t = ev.ticket;
    assert_eq!(t.outcome, Outcome::Corrected);
    assert_eq!(
        t.acquired_unix_ns,
        Some(acquired),
        "every slice says the same instant"
    );
    assert!(t.complete_unix_ns >= acquired + 300 * MS);
    let from_acquisition = t.acquisition_latency_ns().unwrap();
    assert!(from_acquisition >= 300 * MS, "{from_acquisition} ns");
    // complete → wire does not hold the scanner's 300 ms: it is what the pipeline took
    assert!(t.latency_ns() < 1500 * MS, "{} ns", t.latency_ns());
    assert!(from_acquisition >= t.latency_ns() + 300 * MS);
    assert!(
        stats.acquisition_latency_ms(0.5) >= 300.0,
        "{}",
        stats.status_line()
    );
    assert!(stats.latency_ms(0.5) < 1500.0);
    // on the wire and applied: valid for the validity from acquisition, not from completion
    let set = rig.applied_set(t.frame_id);
    assert_eq!(set.valid_until_unix_ns, acquired + VALIDITY_MS * MS);
    let first = t.frame_id;

    // 2. a frame whose slices carry no time: validity from completion, and counted
    rig.push(stamped(&objects, 2, Stamp::Unstated));
    let ev = rig.next_event();
    stats.record(&ev);
    let t = ev.ticket;
    assert_eq!((t.outcome, t.acquired_unix_ns), (Outcome::Corrected, None));
    let set = rig.applied_set(t.frame_id);
    assert_eq!(set.valid_until_unix_ns, t.complete_unix_ns + VALIDITY_MS * MS);
    assert_eq!(stats.corrected_untimed, 1);
    assert!(stats
        .status_line()
        .contains("1 corrected without acquisition time"));
    let untimed = t.frame_id;

    // 3. acquired longer ago than the validity: held, never sent
    let old = now_us_ns() - (VALIDITY_MS + 500) * MS;
    rig.push(stamped(&objects, 3, Stamp::At(old)));
    let ev = rig.next_event();
    stats.record(&ev);
    let stale = ev.ticket.frame_id;
    assert_eq!(ev.ticket.outcome, Outcome::Held(HoldReason::DeadlineMissed));
    assert_eq!(ev.spots_sent, 0);
    assert_eq!(stats.stale_corrections, 0);
    assert!(rig.controller().wait_until(Duration::from_secs(10), |c| c
        .applied()
        .is_none_or(|a| a.frame_id != stale)
        && c.state() == ionguide_sim::delivery::controller::BeamState::Held));

    // 4. slices acquired 6 s apart are not one moment of the anatomy
    let now = now_us_ns();
    let mut spread = stamped(&objects, 4, Stamp::At(now));
    let early = stamped(&objects, 4, Stamp::At(now - 6000 * MS));
    spread[..10].clone_from_slice(&early[..10]);
    rig.push(spread);
    let ev = rig.next_event();
    assert_eq!(
        ev.ticket.outcome,
        Outcome::Rejected(RejectReason::InconsistentFrame)
    );
    let apart = ev.ticket.frame_id;

    // 5. some slices timed, others not: the frame's time is unknown
    let mut partly = stamped(&objects, 5, Stamp::Now);
    partly[..3].clone_from_slice(&stamped(&objects, 5, Stamp::Unstated)[..3]);
    rig.push(partly);
    let ev = rig.next_event();
    assert_eq!(
        ev.ticket.outcome,
        Outcome::Rejected(RejectReason::InconsistentFrame)
    );
    let partly_id = ev.ticket.frame_id;

    // 6. a malformed acquisition time: unparseable, named
    let mut malformed = stamped(&objects, 6, Stamp::Now);
    let mut obj = dicom_object::from_reader(&malformed[7][128..]).unwrap();
    obj.put(DataElement::new(
        tags::ACQUISITION_DATE_TIME,
        VR::DT,
        PrimitiveValue::from("20261302095301"),
    ));
    malformed[7].clear();
    obj.write_all(&mut malformed[7]).unwrap();
    rig.push(malformed);
    let ev = rig.next_event();
    assert_eq!(ev.ticket.outcome, Outcome::Rejected(RejectReason::Unparseable));
    let malformed_id = ev.ticket.frame_id;

    // 7. unmarked local time one hour east of UTC reads as acquired in the future: refused,
    //    never valid for an hour longer than the anatomy
    rig.push(stamped(&objects, 7, Stamp::At(now_us_ns() + 3600 * 1000 * MS)));
    let ev = rig.next_event();
    assert_eq!(ev.ticket.outcome, Outcome::Rejected(RejectReason::Unparseable));
    let ahead = ev.ticket.frame_id;

    let records = rig.stop();
    let r = frame_record(&records, first);
    assert_eq!(r.acquired_unix_ns, Some(acquired));
    match &r.corrections {
        audit::Corrections::Full {
            valid_until_unix_ns, ..
        } => assert_eq!(*valid_until_unix_ns, acquired + VALIDITY_MS * MS),
        other => panic!("{other:?}"),
    }
    assert_eq!(frame_record(&records, untimed).acquired_unix_ns, None);
    let r = frame_record(&records, stale);
    assert_eq!(r.acquired_unix_ns, Some(old));
    assert_eq!(r.outcome, Some(audit::Outcome::Held));
    assert!(r.detail.contains("void"), "{}", r.detail);
    assert!(
        match &r.corrections {
            audit::Corrections::None => true,
            audit::Corrections::Full { spots, .. } => spots.is_empty(),
            other => panic!("{other:?}"),
        },
        "nothing sent for the stale frame"
    );
    let r = frame_record(&records, apart);
    assert!(r.detail.contains("6.000 s apart"), "{}", r.detail);
    let r = frame_record(&records, partly_id);
    assert!(r.detail.contains("56 of the frame's 59"), "{}", r.detail);
    let r = frame_record(&records, malformed_id);
    for want in ["AcquisitionDateTime", "20261302095301", "month 13"] {
        assert!(r.detail.contains(want), "{want} in {}", r.detail);
    }
    let r = frame_record(&records, ahead);
    assert!(r.detail.contains("after the frame was complete"), "{}", r.detail);
}

/// Frames of random age, up to twice the validity, through random stage delays: no
/// correction ever leaves with its `valid_until` at or before its send time, every sent set's
/// `valid_until` is its acquisition + the validity, and a frame already older than the
/// validity when pushed is never corrected.
#[test]
fn no_correction_ever_leaves_void() {
    const BUDGET_MS: u64 = 300;
    const VALIDITY_MS: u64 = 600;
    const FRAMES_PER_CASE: usize = 4;
    let rig = Rig::start(RigOptions {
        extra_toml: format!("[timing]\nbudget_ms = {BUDGET_MS}\nvalidity_ms = {VALIDITY_MS}\n"),
        ..RigOptions::default()
    });
    let objects = load_objects(&data("STS_001/image"));
    let mut runner = TestRunner::new(Config {
        cases: 6,
        failure_persistence: None,
        // one rig for every case: report the failing case as it is
        max_shrink_iters: 0,
        ..Config::default()
    });
    let frame = Cell::new(0u32);
    let corrected = Cell::new(0u64);
    let held_old = Cell::new(0u64);
    let strategy = (
        vec(0u64..2 * VALIDITY_MS, FRAMES_PER_CASE),
        vec(0u64..BUDGET_MS, FRAMES_PER_CASE),
    );
    let result = runner.run(&strategy, |(ages_ms, delays_ms)| {
        for i in 0..FRAMES_PER_CASE {
            frame.set(frame.get() + 1);
            let shared = rig.pipeline.as_ref().unwrap().shared();
            shared.set_stage_delay(
                ionguide::pipeline::Stage::Adapt,
                Duration::from_millis(delays_ms[i]),
            );
            let acquired = now_us_ns() - ages_ms[i] * MS;
            let bytes = stamped(&objects, frame.get(), Stamp::At(acquired));
            let pushed_at = Instant::now();
            let age_at_push_ns = unix_now_ns() - acquired;
            rig.push(bytes);
            let e: FrameEvent = rig.next_event();
            let k = &e.ticket;
            prop_assert!(k.complete_at >= pushed_at);
            prop_assert_eq!(k.acquired_unix_ns, Some(acquired));
            prop_assert_eq!(k.valid_until_unix_ns, acquired + VALIDITY_MS * MS);
            if k.outcome == Outcome::Corrected {
                corrected.set(corrected.get() + 1);
                let sent = k.sent_at.expect("a corrected frame has a send time");
                prop_assert!(
                    k.unix_ns_at(sent) < k.valid_until_unix_ns,
                    "frame {} sent {} ns after its corrections were void",
                    k.frame_id,
                    k.unix_ns_at(sent) - k.valid_until_unix_ns
                );
                prop_assert!(sent <= k.deadline);
            }
            if age_at_push_ns >= VALIDITY_MS * MS {
                prop_assert_ne!(
                    k.outcome,
                    Outcome::Corrected,
                    "a frame {} ms old was sent",
                    age_at_push_ns / MS
                );
                held_old.set(held_old.get() + 1);
            }
        }
        Ok(())
    });
    rig.pipeline
        .as_ref()
        .unwrap()
        .shared()
        .set_stage_delay(ionguide::pipeline::Stage::Adapt, Duration::ZERO);
    if let Err(e) = result {
        panic!("{e}");
    }
    let (frame, corrected, held_old) = (frame.get(), corrected.get(), held_old.get());
    eprintln!("{frame} frames: {corrected} corrected, {held_old} pushed older than the validity");
    assert!(corrected > 0 && held_old > 0, "both kinds of frame were seen");
    // the controller applied or refused as expired (in transit past valid_until) every set
    let settled = rig.controller().wait_until(Duration::from_secs(10), |c| {
        c.counters().applied_sets + c.counters().expired_sets >= corrected
    });
    let counters = rig.controller().with(|c| c.counters());
    assert!(settled, "{counters:?}");
    assert_eq!(counters.applied_sets + counters.expired_sets, corrected);
}
