//! A warm frame of both adapt halves, rotated or not — moved-ray trace + WEPL lookup, then corrections —
//! allocates nothing, corrected or held (STYLE: prove it with a counting allocator). The
//! only test in its binary, so no other test allocates meanwhile.

mod adapt_support;
mod alloc_support;

use adapt_support::*;
use ionguide::adapt::{AdaptOptions, Adapter, FrameStamp, FrameWepl, SafetyLimits};
use ionguide::correction::CorrectionSet;
use ionguide::geometry::RigidTransform;
use ionguide::units::{Mm, MmWe, VectorMm};

#[global_allocator]
static GLOBAL: alloc_support::Counting = alloc_support::Counting;

#[test]
fn warm_adapt_frames_allocate_nothing() {
    alloc_support::count_this_thread();
    let mut s = setup();
    let ct = water_ct(0);
    let rsp = s.hlut.convert(&ct);
    let plan = adapt_plan(
        &s,
        AdaptOptions::new(
            SafetyLimits {
                max_lateral: Mm(5.0),
                max_range: MmWe(5.0),
                max_jump: Mm(3.0),
                min_ncc: 0.5,
                max_rotation_deg: 90.0,
            },
            SAD_MM,
        )
        .with_follow_rotation(true),
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
            // every other frame also rotates (2° about an oblique axis): per-ray moves
            let mut reg = registration(shift);
            if n % 4 < 2 {
                let r = RigidTransform::from_rotation_vector(VectorMm::new(0.02, 0.01, 0.025), shift);
                reg.transform = r;
                reg.target_mm = r.apply(&reg.target_planned_mm);
                reg.tumor_shift_mm = reg.target_mm - reg.target_planned_mm;
            }
            let motion = plan.motion_of(&reg);
            if n % 2 == 0 {
                plan.measure_ct(&mut s.frame, &ct, &s.hlut, &motion, wepl)
                    .unwrap();
            } else {
                plan.measure_rsp(&mut s.frame, &rsp, &motion, wepl).unwrap();
            }
            adapter.adapt(stamp, &reg, wepl, out).is_ok()
        };
    for n in 0..shifts.len() * 2 {
        frame(&mut s, &mut wepl, &mut adapter, &mut out, n);
    }
    // the counter works: setting up allocated on this thread
    assert!(alloc_support::allocations() > 0);
    let before = alloc_support::allocations();
    let mut corrected = 0;
    let mut held = 0;
    for n in 0..shifts.len() * 2 {
        if frame(&mut s, &mut wepl, &mut adapter, &mut out, n) {
            corrected += 1;
        } else {
            held += 1;
        }
    }
    let after = alloc_support::allocations();
    assert!(corrected >= 2 && held >= 3, "{corrected} corrected, {held} held");
    assert_eq!(
        after - before,
        0,
        "allocations in {} warm frames",
        shifts.len() * 2
    );
}
