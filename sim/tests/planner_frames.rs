//! The planner's spots stop inside the target when traced by the project's own range engine,
//! the plan and frames survive the project's DICOM readers, and output is deterministic.

use ionguide::dicom::ct::read_series_bytes;
use ionguide::dicom::rtplan::read_plan_bytes;
use ionguide::range::{SpotTracer, SpotTracerOptions};
use ionguide_sim::anatomy::phantom::{Phantom, PhantomSpec};
use ionguide_sim::imaging::frames::{planning_ids, FrameOptions, FrameSynth};
use ionguide_sim::planning::{plan, plan_bytes, PlannerOptions};

#[test]
fn default_plan_spot_count_and_every_bragg_peak_inside_the_target() {
    let ph = Phantom::thorax(&PhantomSpec::default()).unwrap();
    let ids = planning_ids(&ph);
    let opts = PlannerOptions::default();
    let p = plan(&ph, &ids, &opts).unwrap();
    assert_eq!(p.beams.len(), 2);
    let n = p.spot_count();
    eprintln!(
        "spots {n}: {:?}, layers {:?}",
        p.beams.iter().map(|b| b.spot_count()).collect::<Vec<_>>(),
        p.beams.iter().map(|b| b.layers.len()).collect::<Vec<_>>()
    );
    // Default knobs on the default phantom: the ~10,000-spot reference workload (10,028 here).
    assert!((9_000..=11_000).contains(&n), "{n} spots");
    assert_eq!(p.frame_of_reference_uid, ph.spec.frame_of_reference_uid);

    // Trace with the project's tracer (CSDA depths, the plan's own SADs) through the planning CT.
    let mut tracer = SpotTracer::new(&p, &SpotTracerOptions::new([f64::INFINITY; 2])).unwrap();
    tracer.trace_frame_ct(&ph.ct, &opts.hlut);
    let mut worst = 0.0f64;
    for s in 0..tracer.spots().len() {
        let t = tracer.target_point_mm(s).expect("every spot reaches its depth");
        let r = (t - ionguide::units::PointMm::from(ph.tumor_center_mm)).norm();
        worst = worst.max(r - ph.ptv_radius_mm);
        assert!(
            ph.in_ptv(&t, opts.lateral_margin_mm + 0.1),
            "spot {s} peaks at {t:?}, {r} mm from centre"
        );
    }
    eprintln!("deepest excursion beyond the PTV: {worst:.2} mm");

    // Energies are carbon therapy energies and the plan round-trips through DICOM.
    for b in &p.beams {
        let (lo, hi) = b.energy_range_mev_u().unwrap();
        assert!(lo > 80.0 && hi < 430.0, "{lo}..{hi} MeV/u");
    }
    let bytes = plan_bytes(&p).unwrap();
    let (back, _warnings) = read_plan_bytes(&bytes, "<memory>/RP").unwrap();
    assert_eq!(back.spot_count(), n);
    assert_eq!(back.patient_id, ids.patient_id);
    assert_eq!(
        plan_bytes(&plan(&ph, &ids, &opts).unwrap()).unwrap(),
        bytes,
        "deterministic"
    );
}

#[test]
fn frames_read_back_with_their_numbers_truth_and_noise() {
    let ph = Phantom::thorax(&PhantomSpec::small()).unwrap();
    let ids = planning_ids(&ph);
    let mut synth = FrameSynth::new(
        &ph,
        &ids,
        FrameOptions {
            slab_slices: Some(10),
            ..FrameOptions::default()
        },
    )
    .unwrap();
    let d = [0.0, -1.0, -4.0];
    let f = synth.frame(6, d).unwrap();
    assert_eq!(f.slices.len(), 10);
    let s = read_series_bytes(&f.slices.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    assert_eq!(s.meta.frame_of_reference_uid, ids.frame_of_reference_uid);
    assert_eq!(s.meta.patient_id.as_deref(), Some(ids.patient_id.as_str()));
    assert_eq!(s.meta.temporal_position, Some(7));
    assert_eq!(s.volume.as_slice(), synth.volume().as_slice());
    assert_eq!(f.tumor_center_mm, [-75.0, -11.0, -4.0]);

    // Noise: the frame minus the noiseless render has σ ≈ 10 HU and mean ≈ 0.
    let mut clean = s.volume.clone();
    ph.render_moved(d, &mut clean).unwrap();
    let diff: Vec<f64> = s
        .volume
        .as_slice()
        .iter()
        .zip(clean.as_slice())
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect();
    let n = diff.len() as f64;
    let mean = diff.iter().sum::<f64>() / n;
    let sd = (diff.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    // Rounding to whole HU adds 1/12 HU² of variance.
    assert!(
        mean.abs() < 0.1 && (sd - (100.0f64 + 1.0 / 12.0).sqrt()).abs() < 0.1,
        "mean {mean}, sd {sd}"
    );

    // New SOP instances per frame; different frames differ, the same frame is identical.
    let g = synth.frame(7, d).unwrap();
    assert_ne!(f.slices[0], g.slices[0]);
    let mut again = FrameSynth::new(
        &ph,
        &ids,
        FrameOptions {
            slab_slices: Some(10),
            ..FrameOptions::default()
        },
    )
    .unwrap();
    assert_eq!(again.frame(6, d).unwrap(), f, "same seed, byte-identical frame");

    // Fault-test overrides.
    let mut other = FrameSynth::new(
        &ph,
        &ids,
        FrameOptions {
            slab_slices: Some(4),
            patient_id_override: Some("SOMEONE-ELSE".into()),
            frame_of_reference_override: Some("1.2.3.4".into()),
            ..FrameOptions::default()
        },
    )
    .unwrap();
    let o = other.frame(0, [0.0; 3]).unwrap();
    let s = read_series_bytes(&o.slices.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    assert_eq!(s.meta.patient_id.as_deref(), Some("SOMEONE-ELSE"));
    assert_eq!(s.meta.frame_of_reference_uid, "1.2.3.4");
}
