//! Random timings through the whole chain (real STS_001 CT, target and plan; real UDP link
//! and controller; real audit file): random gaps between frames and a random injected delay
//! on a random stage, changed between frames. Whatever the timing, no correction may leave
//! after its deadline, none may be applied by the controller after its `valid_until`, and
//! every frame pushed must end in exactly one audit record.

mod support;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ionguide::audit::{self, AuditRecord};
use ionguide::pipeline::{FrameEvent, Outcome, Stage};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::dicom_edit::{frame_bytes, load_objects, Edit};
use support::rig::{data, Rig, RigOptions};

const BUDGET_MS: u64 = 150;
/// Corrections stay valid for this long after the frame was complete: more than the budget,
/// so a set sent just before its deadline still has time to cross loopback to the
/// controller.
const VALIDITY_MS: u64 = 400;
const FRAMES_PER_CASE: usize = 8;
const CASES: u32 = 6;
/// Distinct pre-encoded frames (small shifts, within every limit) cycled through.
const PREPARED: usize = 4;
/// Stages whose work an injected delay slows (the link stage has no hook: it only sends).
const DELAYABLE: [Stage; 4] = [Stage::Ingest, Stage::Register, Stage::Range, Stage::Adapt];

#[derive(Debug, Default)]
struct Tally {
    pushed: u64,
    corrected: u64,
    held: u64,
    rejected: u64,
    dropped: u64,
}

fn clear_delays(rig: &Rig) {
    let shared = rig.pipeline.as_ref().unwrap().shared();
    for s in Stage::ALL {
        shared.set_stage_delay(s, Duration::ZERO);
    }
}

#[test]
fn no_correction_leaves_or_is_applied_after_its_deadline_and_every_frame_is_audited() {
    let mut rig = Rig::start(RigOptions {
        extra_toml: format!("[timing]\nbudget_ms = {BUDGET_MS}\nvalidity_ms = {VALIDITY_MS}\n"),
        ..RigOptions::default()
    });
    let budget = Duration::from_millis(BUDGET_MS);
    let objects = load_objects(&data("STS_001/image"));
    let prepared: Vec<Vec<Vec<u8>>> = (0..PREPARED)
        .map(|i| {
            let a = i as f64 * 0.4 - 0.6;
            frame_bytes(
                &objects,
                i as u32 + 1,
                &Edit {
                    shift_mm: [a, -0.5 * a, 0.3],
                    ..Edit::default()
                },
            )
        })
        .collect();
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        // one rig is shared by every case, so a shrunk case would run on a pipeline the
        // failing case left behind: report the failing case as it is
        max_shrink_iters: 0,
        ..Config::default()
    });
    let strategy = (
        vec(0u64..80, FRAMES_PER_CASE),
        vec((0usize..DELAYABLE.len(), 0u64..2 * BUDGET_MS), FRAMES_PER_CASE),
        vec(0usize..PREPARED, FRAMES_PER_CASE),
    );
    let result = runner.run(&strategy, |(gaps_ms, delays, which)| {
        for i in 0..FRAMES_PER_CASE {
            let frame = prepared[which[i]].clone();
            clear_delays(&rig);
            let (stage, delay_ms) = delays[i];
            rig.pipeline
                .as_ref()
                .unwrap()
                .shared()
                .set_stage_delay(DELAYABLE[stage], Duration::from_millis(delay_ms));
            let pushed_at = Instant::now();
            rig.push(frame);
            tally.borrow_mut().pushed += 1;
            let gap = Duration::from_millis(gaps_ms[i]);
            if let Some(rest) = gap.checked_sub(pushed_at.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        clear_delays(&rig);
        // every pushed frame finishes exactly once, as one telemetry event
        let events: Vec<FrameEvent> = (0..FRAMES_PER_CASE).map(|_| rig.next_event()).collect();
        let mut t = tally.borrow_mut();
        for e in &events {
            let k = &e.ticket;
            match k.outcome {
                Outcome::Corrected => {
                    t.corrected += 1;
                    let sent = k.sent_at.expect("a corrected frame has a send time");
                    prop_assert!(
                        sent <= k.deadline,
                        "frame {} sent {:?} after its deadline",
                        k.frame_id,
                        sent - k.deadline
                    );
                    prop_assert!(k.latency_ns() <= budget.as_nanos() as u64);
                    prop_assert_eq!(e.spots_sent as usize, rig.session.spot_count());
                }
                Outcome::Held(_) => t.held += 1,
                Outcome::Rejected(_) => t.rejected += 1,
                Outcome::Dropped => t.dropped += 1,
                Outcome::Pending => prop_assert!(false, "frame {} finished pending", k.frame_id),
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = tally.into_inner();
    eprintln!("{t:?}");
    let shared = rig.pipeline.as_ref().unwrap().shared().clone();
    assert_eq!(
        shared
            .counters
            .telemetry_lost
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(t.corrected + t.held + t.rejected + t.dropped, t.pushed);
    // let the controller take in whatever is still on the wire before reading its counters
    let settled = rig.controller().wait_until(Duration::from_secs(10), |c| {
        c.counters().applied_sets + c.counters().expired_sets >= t.corrected
    });
    let counters = rig.controller().with(|c| c.counters());
    assert!(
        settled,
        "the controller heard every corrected frame: {counters:?}, {t:?}"
    );
    assert_eq!(
        counters.expired_sets, 0,
        "no set reached the controller past its valid_until"
    );
    assert_eq!(
        counters.applied_sets, t.corrected,
        "every corrected frame was applied once"
    );
    let records = rig.stop();
    let frames: Vec<&audit::FrameRecord> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len() as u64, t.pushed, "one audit record per frame pushed");
    let mut ids: Vec<u64> = frames.iter().map(|f| f.frame_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), frames.len(), "no frame audited twice");
    let count = |o: audit::Outcome| frames.iter().filter(|f| f.outcome == Some(o)).count() as u64;
    assert_eq!(
        (
            count(audit::Outcome::Corrected),
            count(audit::Outcome::Held),
            count(audit::Outcome::Rejected),
            count(audit::Outcome::Dropped)
        ),
        (t.corrected, t.held, t.rejected, t.dropped),
        "the audit log and the telemetry agree"
    );
    for f in frames
        .iter()
        .filter(|f| f.outcome == Some(audit::Outcome::Corrected))
    {
        let latency = f.latency_ns.expect("a corrected frame has a latency");
        assert!(
            latency <= budget.as_nanos() as u64,
            "frame {} audited with latency {latency} ns over the {BUDGET_MS} ms budget",
            f.frame_id
        );
    }
}
