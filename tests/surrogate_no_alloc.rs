//! A warm surrogate sample — live repair, RLS forecast, correlation model, and the
//! corrections moved by the predicted shift (`Adapter::adapt_shifted`) — allocates nothing,
//! and neither does a CT frame refitting the model (counting allocator; the only test in its
//! binary). The ensemble forecast is left out: its ridge member refits through a dense
//! Cholesky that allocates (documented on `Tracker`).

mod adapt_support;
mod alloc_support;

use adapt_support::*;
use ionguide::adapt::{AdaptOptions, Adapter, FrameStamp, FrameWepl};
use ionguide::correction::CorrectionSet;
use ionguide::tracking::{Forecast, Steer, Tracker, TrackerOptions};
use ionguide::units::VectorMm;

#[global_allocator]
static GLOBAL: alloc_support::Counting = alloc_support::Counting;

const T0_NS: u64 = 1_750_000_000_000_000_000;

fn s_mm(t: f64) -> f64 {
    5.0 * (2.0 * std::f64::consts::PI * t / 4.0).sin()
}

#[test]
fn warm_surrogate_samples_and_frames_allocate_nothing() {
    alloc_support::count_this_thread();
    let mut s = setup();
    let ct = water_ct(0);
    let plan = adapt_plan(&s, AdaptOptions::new(wide_limits(), SAD_MM));
    let mut wepl = FrameWepl::for_plan(&plan);
    let mut scratch = FrameWepl::for_plan(&plan);
    let mut adapter = Adapter::new(plan.clone());
    let mut out = CorrectionSet::default();
    let mut tr = Tracker::new(TrackerOptions {
        forecast: Forecast::Rls,
        ..TrackerOptions::default()
    })
    .unwrap();
    let frame_shift = VectorMm::new(0.0, 0.0, 0.8 * s_mm(1.0));
    plan.measure_ct(&mut s.frame, &ct, &s.hlut, &frame_shift, &mut wepl)
        .unwrap();
    let reg = registration(frame_shift);
    let mut step = |k: u64, out: &mut CorrectionSet, tr: &mut Tracker, adapter: &mut Adapter| -> bool {
        let t = k as f64 * 0.1;
        let ns = T0_NS + k * 100_000_000;
        // a frame every second, its image in 0.5 s later
        if k % 10 == 5 && k > 10 {
            let acq = t - 0.5;
            tr.on_frame(k, ns - 500_000_000, [0.0, 0.0, 0.8 * s_mm(acq)]);
        }
        let jitter = (k % 3) as f64 * 0.01;
        let pos = [0.6 * s_mm(t) + jitter, 0.8 * s_mm(t), 20.0 - jitter];
        let (steer, _) = tr.on_sample(6 * k, ns, &[pos]).unwrap();
        match steer {
            Steer::Shift { delta_mm, .. } => adapter
                .adapt_shifted(
                    FrameStamp::default(),
                    &reg,
                    &wepl.wepl_mm,
                    VectorMm::new(delta_mm[0], delta_mm[1], delta_mm[2]),
                    1.0,
                    &mut scratch,
                    out,
                )
                .is_ok(),
            _ => false,
        }
    };
    // warm: the axis, the model, the forecast, the history ring full
    for k in 0..2_100 {
        step(k, &mut out, &mut tr, &mut adapter);
    }
    assert!(alloc_support::allocations() > 0);
    let before = alloc_support::allocations();
    let mut corrected = 0;
    for k in 2_100..2_400 {
        corrected += usize::from(step(k, &mut out, &mut tr, &mut adapter));
    }
    let after = alloc_support::allocations();
    assert!(corrected > 250, "{corrected} of 300 samples corrected");
    assert_eq!(after - before, 0, "allocations in 300 warm samples and 30 frames");
}
