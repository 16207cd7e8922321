//! A warm pipeline moves frames from ingest to the wire without allocating: a counting
//! allocator counts every allocation made on the register, range, adapt and link stage
//! threads while corrected and held frames of the real STS_001 CT go through the whole chain
//! (real UDP link, controller, audit file).
//!
//! The boundary: ingest decodes DICOM with dicom-rs, which allocates per object, so the
//! ingest thread (and the sources, the controller and the test itself) are not counted; the
//! allocation-free path starts where a decoded frame leaves ingest.

// A GlobalAlloc impl is unsafe by definition; it only forwards to the system allocator.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ionguide::correction::HoldReason;
use ionguide::pipeline::Outcome;
use support::dicom_edit::{frame_bytes, load_objects, Edit};
use support::rig::{data, Rig, RigOptions};

/// The stage threads counted, by name; their index is the thread's class minus one.
const COUNTED: [&str; 4] = [
    "ionguide-register",
    "ionguide-range",
    "ionguide-adapt",
    "ionguide-link",
];
const UNKNOWN: u8 = 0;
const NOT_COUNTED: u8 = u8::MAX;

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
/// Size of the last counted allocation per thread, to say what it was when one slips in.
static LAST_SIZE: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

thread_local! {
    // Const-initialised with no destructor: safe to touch from inside the allocator.
    static CLASS: Cell<u8> = const { Cell::new(UNKNOWN) };
}

/// The calling thread's class, found once per thread. Looking at the thread's name may
/// itself allocate, so the thread is marked "not counted" first: a nested call made while
/// classifying is neither counted nor classified again.
fn class() -> u8 {
    let c = CLASS.try_with(Cell::get).unwrap_or(NOT_COUNTED);
    if c != UNKNOWN {
        return c;
    }
    let _ = CLASS.try_with(|c| c.set(NOT_COUNTED));
    let found = std::thread::current()
        .name()
        .and_then(|n| COUNTED.iter().position(|c| *c == n))
        .map_or(NOT_COUNTED, |i| i as u8 + 1);
    let _ = CLASS.try_with(|c| c.set(found));
    found
}

fn count(size: usize) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    let c = class();
    if c != NOT_COUNTED && c != UNKNOWN {
        let i = usize::from(c - 1);
        ALLOCATIONS[i].fetch_add(1, Ordering::Relaxed);
        LAST_SIZE[i].store(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A frame and the outcome it must have.
struct Step {
    edit: Edit,
    expect: Outcome,
}

fn steps() -> Vec<Step> {
    let corrected = |x: f64| Step {
        edit: Edit {
            shift_mm: [x, -0.5 * x, 0.5],
            ..Edit::default()
        },
        expect: Outcome::Corrected,
    };
    // A featureless frame fails registration: held, and the next frame registers cold.
    let held = Step {
        edit: Edit {
            flat_pixels: Some(1000),
            ..Edit::default()
        },
        expect: Outcome::Held(HoldReason::RegistrationFailed),
    };
    vec![
        corrected(0.0),
        corrected(0.8),
        held,
        corrected(-0.6),
        corrected(0.4),
    ]
}

fn run(rig: &Rig, objects: &[dicom_object::DefaultDicomObject], first_frame: u32) {
    for (i, step) in steps().into_iter().enumerate() {
        let frame = first_frame + i as u32;
        rig.push(frame_bytes(objects, frame, &step.edit));
        let ev = rig.next_event();
        assert_eq!(ev.ticket.outcome, step.expect, "frame {frame}");
    }
}

#[test]
fn a_warm_pipeline_does_not_allocate_between_ingest_and_the_wire() {
    // the counter itself must see an allocation on a thread with a counted name
    COUNTING.store(true, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(COUNTED[1].into())
        .spawn(|| std::hint::black_box(Vec::<u64>::with_capacity(16)).capacity())
        .unwrap()
        .join()
        .unwrap();
    COUNTING.store(false, Ordering::Relaxed);
    assert!(
        ALLOCATIONS[1].load(Ordering::Relaxed) > 0,
        "the counting allocator counts"
    );
    let mut rig = Rig::start(RigOptions::default());
    let objects = load_objects(&data("STS_001/image"));
    // warm up: every path once (cold and warm registration, corrected and held frames)
    run(&rig, &objects, 1);
    for a in &ALLOCATIONS {
        a.store(0, Ordering::Relaxed);
    }
    COUNTING.store(true, Ordering::Relaxed);
    run(&rig, &objects, 101);
    COUNTING.store(false, Ordering::Relaxed);
    let counts: Vec<(&str, usize, usize)> = COUNTED
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                *name,
                ALLOCATIONS[i].load(Ordering::Relaxed),
                LAST_SIZE[i].load(Ordering::Relaxed),
            )
        })
        .collect();
    let records = rig.stop();
    assert!(records.len() >= 10, "both runs are on record");
    assert!(
        counts.iter().all(|(_, n, _)| *n == 0),
        "allocations on stage threads (thread, count, last size in bytes): {counts:?}"
    );
}
