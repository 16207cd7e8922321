//! The per-frame shortcuts of the range engine change no result: rays stopped past their
//! deepest planned depth, tracing straight from CT + HLUT, and 2 tracing threads all give
//! bit-identical targets to a plain whole-ray trace of the converted RSP volume; and the CT
//! ingest gives the same volume on 1 or 2 threads.

use std::path::Path;

use ionguide::dicom::ct::{read_series_dir, read_series_dir_with, IngestOptions};
use ionguide::geometry::Grid;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::{Hlut, RangeEnergyTable};
use ionguide::units::{Ion, MmWe, PointMm};
use ionguide::volume::CtVolume;

/// 80 × 70 × 60 voxels of 2 × 2 × 2.5 mm with pseudo-random HU in −1000…1999 (every voxel
/// differs from its neighbours, so any dropped, repeated or misplaced voxel shows).
fn random_ct() -> CtVolume {
    let grid = Grid::axis_aligned([80, 70, 60], PointMm::new(-79.0, -69.0, -73.75), [2.0, 2.0, 2.5]).unwrap();
    let mut ct = CtVolume::filled(grid, 0);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for v in ct.as_slice_mut() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *v = ((x >> 33) % 3000) as i16 - 1000;
    }
    ct
}

fn plan() -> IonPlan {
    let c = RangeEnergyTable::new(Ion::CARBON12).unwrap();
    let beam = |number: i32, gantry: f64, couch: f64, depths: &[f64]| IonBeam {
        number,
        name: format!("B{number}"),
        radiation_type: "ION".into(),
        ion: Ion::CARBON12,
        gantry_angle_deg: gantry,
        couch_angle_deg: couch,
        isocenter_mm: PointMm::new(3.0, -2.0, 1.0),
        patient_position: Some("HFS".into()),
        virtual_sad_mm: Some([6500.0, 7200.0]),
        range_shifters: vec![],
        primary_dosimeter_unit: None,
        layers: depths
            .iter()
            .map(|&d| EnergyLayer {
                energy_mev_u: c.energy_mev_u(MmWe(d)).unwrap(),
                spots: (0..9)
                    .flat_map(|a| (0..7).map(move |b| (a, b)))
                    .map(|(a, b)| Spot {
                        x_mm: (a as f64 - 4.0) * 7.3,
                        y_mm: (b as f64 - 3.0) * 6.1,
                        weight: 1.0,
                    })
                    .collect(),
            })
            .collect(),
    };
    IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "p".into(),
        label: "t".into(),
        // Shallow and deep layers; the deep ones leave the volume on most rays.
        beams: vec![
            beam(1, 30.0, 10.0, &[20.0, 45.0, 70.0]),
            beam(2, 260.0, 0.0, &[30.0, 280.0]),
        ],
    }
}

#[test]
fn stopped_ct_and_threaded_traces_match_whole_ray_traces_bit_for_bit() {
    let ct = random_ct();
    let hlut = Hlut::default();
    let rsp = hlut.convert(&ct);
    let plan = plan();
    let opts = SpotTracerOptions::new([f64::INFINITY; 2]);
    let mut whole = SpotTracer::new(&plan, &opts.clone().with_wepl_margin(MmWe(f64::INFINITY))).unwrap();
    whole.trace_frame(&rsp);
    let reached = whole.target_t_mm().iter().filter(|t| t.is_some()).count();
    assert!(reached > 100 && reached < whole.spots().len(), "{reached}");

    let variants = [
        opts.clone(),
        opts.clone().with_wepl_margin(MmWe(0.0)),
        opts.clone().with_threads(2),
        opts.clone().with_wepl_margin(MmWe(5.0)).with_threads(2),
    ];
    let mut truncated_seen = 0;
    for o in &variants {
        for from_ct in [false, true] {
            let mut t = SpotTracer::new(&plan, o).unwrap();
            // Twice, so reused buffers are exercised too.
            for _ in 0..2 {
                if from_ct {
                    t.trace_frame_ct(&ct, &hlut);
                } else {
                    t.trace_frame(&rsp);
                }
            }
            assert_eq!(t.target_t_mm(), whole.target_t_mm(), "{o:?} from_ct={from_ct}");
            for r in 0..t.rays().len() {
                let (p, full) = (t.profile(r).unwrap(), whole.profile(r).unwrap());
                let n = p.t_mm().len();
                assert_eq!(p.t_mm(), &full.t_mm()[..n]);
                assert_eq!(p.wepl_mm(), &full.wepl_mm()[..n]);
                if p.is_truncated() {
                    truncated_seen += 1;
                    assert!(n < full.t_mm().len());
                } else {
                    assert_eq!(n, full.t_mm().len());
                }
            }
            // WEPL at a parameter: the same where traced, `None` past a stopped trace.
            for (n, s) in t.spots().iter().enumerate() {
                let p = t.profile(s.ray).unwrap();
                let Some(end) = p.exit_t_mm() else { continue };
                let inside = end - 0.5;
                assert_eq!(t.wepl_at_t_mm(n, inside), whole.wepl_at_t_mm(n, inside));
                if p.is_truncated() {
                    assert_eq!(t.wepl_at_t_mm(n, end + 1.0), None);
                }
            }
        }
    }
    assert!(truncated_seen > 100, "{truncated_seen}");
    assert!(SpotTracer::new(&plan, &opts.with_wepl_margin(MmWe(f64::NAN))).is_err());
}

#[test]
fn ingest_on_one_or_two_threads_gives_the_same_series() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/STS_002/image");
    let two = read_series_dir(&dir).unwrap();
    let one = read_series_dir_with(
        &dir,
        &IngestOptions {
            threads: 1,
            ..IngestOptions::default()
        },
    )
    .unwrap();
    assert_eq!(two.volume.grid(), one.volume.grid());
    assert_eq!(two.volume.as_slice(), one.volume.as_slice());
    assert_eq!(two.meta, one.meta);
}

/// The tracer packs every ray's samples into one store; each ray's profile must still be
/// exactly what tracing that ray alone gives, after the store grew for a larger grid and in
/// a clone (the range stage works on a clone of the session's tracer).
#[test]
fn packed_profiles_equal_single_ray_traces_after_growth_and_clone() {
    use ionguide::range::raytrace::{trace_into, RayProfile};
    use ionguide::volume::Volume;
    let rsp = Hlut::default().convert(&random_ct());
    let plan = plan();
    let opts = SpotTracerOptions::new([f64::INFINITY; 2]).with_wepl_margin(MmWe(f64::INFINITY));
    let mut tracer = SpotTracer::new(&plan, &opts).unwrap();
    // First a coarser grid over the same box (a smaller sample bound), then the real one.
    let coarse =
        Grid::axis_aligned([20, 14, 12], PointMm::new(-76.0, -64.0, -70.0), [8.0, 10.0, 12.5]).unwrap();
    tracer.trace_frame(&Volume::filled(coarse, 1.0f32));
    tracer.trace_frame(&rsp);
    let copy = tracer.clone();
    let mut alone = RayProfile::default();
    let mut samples = 0;
    for (r, ray) in tracer.rays().iter().enumerate() {
        trace_into(&rsp, ray, f64::INFINITY, &mut alone);
        for packed in [tracer.profile(r).unwrap(), copy.profile(r).unwrap()] {
            assert_eq!(packed, alone.view(), "ray {r}");
        }
        samples += alone.view().t_mm().len();
    }
    assert!(samples > 10 * tracer.rays().len(), "{samples} samples");
    assert_eq!(copy.target_t_mm(), tracer.target_t_mm());
}
