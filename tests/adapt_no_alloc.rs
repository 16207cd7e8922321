//! A warm frame of both adapt halves — moved-ray trace + WEPL lookup, then corrections —
//! allocates nothing, corrected or held (STYLE: prove it with a counting allocator). The
//! only test in its binary, so no other test allocates meanwhile.

// A GlobalAlloc impl is unsafe by definition; it only forwards to the system allocator.
#![allow(unsafe_code)]

mod adapt_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use adapt_support::*;
use ionguide::adapt::{AdaptOptions, Adapter, FrameStamp, FrameWepl, SafetyLimits};
use ionguide::correction::CorrectionSet;
use ionguide::units::VectorMm;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_adapt_frames_allocate_nothing() {
    let mut s = setup();
    let ct = water_ct(0);
    let rsp = s.hlut.convert(&ct);
    let plan = adapt_plan(
        &s,
        AdaptOptions::new(SafetyLimits::new(5.0, 5.0, 3.0, 0.5), SAD_MM),
    );
    let mut wepl = FrameWepl::for_plan(&plan);
    let mut adapter = Adapter::new(plan.clone());
    let mut out = CorrectionSet::default();
    let stamp = FrameStamp::default();
    // Shifts that correct, trip the lateral limit, the range limit and the jump limit.
    let shifts = [
        VectorMm::new(1.0, 0.5, -1.0),
        VectorMm::new(1.5, 1.0, -0.5),
        VectorMm::new(6.0, 0.0, 0.0),
        VectorMm::new(1.5, 6.0, 0.0),
        VectorMm::new(-3.0, 0.0, 0.0),
    ];
    let frame =
        |s: &mut Setup, wepl: &mut FrameWepl, adapter: &mut Adapter, out: &mut CorrectionSet, n: usize| {
            let shift = shifts[n % shifts.len()];
            if n % 2 == 0 {
                plan.measure_ct(&mut s.frame, &ct, &s.hlut, &shift, wepl).unwrap();
            } else {
                plan.measure_rsp(&mut s.frame, &rsp, &shift, wepl).unwrap();
            }
            adapter.adapt(stamp, &registration(shift), wepl, out).is_ok()
        };
    for n in 0..shifts.len() * 2 {
        frame(&mut s, &mut wepl, &mut adapter, &mut out, n);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut corrected = 0;
    let mut held = 0;
    for n in 0..shifts.len() * 2 {
        if frame(&mut s, &mut wepl, &mut adapter, &mut out, n) {
            corrected += 1;
        } else {
            held += 1;
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(corrected >= 2 && held >= 3, "{corrected} corrected, {held} held");
    assert_eq!(
        after - before,
        0,
        "allocations in {} warm frames",
        shifts.len() * 2
    );
}
