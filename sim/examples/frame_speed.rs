//! Times the simulator's inputs: phantom, plan, and 200 frames (render + noise + DICOM
//! encode), full volume and a 16-slice slab. `cargo run --release -p ionguide-sim --example
//! frame_speed` (a measurement, not a test: no timing is asserted anywhere).

use std::time::Instant;

use ionguide_sim::frames::{FrameOptions, FrameSynth, SeriesIds};
use ionguide_sim::motion::{read_extmarker, TumorMotionModel};
use ionguide_sim::phantom::{Phantom, PhantomSpec};
use ionguide_sim::planner::{plan, plan_bytes, PlannerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let ph = Phantom::thorax(&PhantomSpec::default())?;
    println!("phantom 256×256×48: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let ids = SeriesIds::planning(&ph);
    let t = Instant::now();
    let p = plan(&ph, &ids, &PlannerOptions::default())?;
    let bytes = plan_bytes(&p)?;
    println!(
        "plan: {} spots, {} bytes, {:.0} ms",
        p.spot_count(),
        bytes.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let trace = read_extmarker(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/traces/201205101522-UCC-1-N-138-6.csv"
    ))?
    .resample(10.0)?;
    let disp = TumorMotionModel::default().displacements_mm(&trace)?;
    for slab in [None, Some(16)] {
        let mut synth = FrameSynth::new(
            &ph,
            &ids,
            FrameOptions {
                slab_slices: slab,
                ..FrameOptions::default()
            },
        )?;
        let t = Instant::now();
        let mut total = 0usize;
        for (i, d) in disp.iter().take(200).enumerate() {
            total += synth.frame(i, *d)?.slices.iter().map(Vec::len).sum::<usize>();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "200 frames ({:?} slices): {:.2} s, {:.1} ms/frame, {} MB encoded",
            slab.unwrap_or(48),
            s,
            s * 1e3 / 200.0,
            total / 1_000_000
        );
    }
    Ok(())
}
