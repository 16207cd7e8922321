//! Range engine benches: per-frame spot WEPL for a 2-beam carbon plan (~10 000 spots,
//! ~1 000 distinct rays per beam, layers planned 120–200 mm deep in water, so ~200 mm paths
//! through the patient) through a 256³ 1 mm water/lung/bone phantom, and the HU → RSP
//! conversion of that frame, reported separately. The WEPL is timed both from the converted
//! RSP volume and straight from the CT frame (which needs no per-frame conversion).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ionguide::geometry::{Grid, RigidTransform};
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::{Hlut, RangeEnergyTable};
use ionguide::units::{Ion, MmWe, PointMm, VectorMm};
use ionguide::volume::{CtVolume, Volume};

const N: usize = 256;

/// Water cylinder (radius 110 mm, axis along z) with a lung block and a bone rod, in air.
fn phantom() -> CtVolume {
    let c = (N as f64 - 1.0) / 2.0;
    let grid =
        Grid::axis_aligned([N; 3], PointMm::new(-c, -c, -c), [1.0; 3]).unwrap_or_else(|e| panic!("{e}"));
    let mut ct = CtVolume::filled(grid, -1000);
    for k in 0..N {
        for j in 0..N {
            for i in 0..N {
                let (x, y) = (i as f64 - c, j as f64 - c);
                let r2 = x * x + y * y;
                let hu = if r2 > 110.0 * 110.0 {
                    -1000
                } else if (x - 30.0).abs() < 35.0 && (y + 10.0).abs() < 40.0 {
                    -750
                } else if (x + 40.0).powi(2) + (y - 30.0).powi(2) < 15.0 * 15.0 {
                    1200
                } else {
                    20
                };
                if let Some(v) = ct.get_mut(i, j, k) {
                    *v = hu;
                }
            }
        }
    }
    ct
}

fn carbon_beam(number: i32, gantry_deg: f64) -> IonBeam {
    // 32 × 32 spot positions, 3 mm apart, 5 layers: 1 024 rays, 5 120 spots. Layers whose
    // CSDA ranges are 120…200 mm of water.
    let carbon = RangeEnergyTable::new(Ion::CARBON12).unwrap_or_else(|e| panic!("{e}"));
    let spots: Vec<Spot> = (0..32)
        .flat_map(|a| (0..32).map(move |b| (a, b)))
        .map(|(a, b)| Spot {
            x_mm: (a as f64 - 15.5) * 3.0,
            y_mm: (b as f64 - 15.5) * 3.0,
            weight: 1.0,
        })
        .collect();
    IonBeam {
        number,
        name: format!("B{number}"),
        radiation_type: "ION".into(),
        ion: Ion::CARBON12,
        gantry_angle_deg: gantry_deg,
        couch_angle_deg: 0.0,
        isocenter_mm: PointMm::origin(),
        patient_position: Some("HFS".into()),
        virtual_sad_mm: Some([6500.0, 7200.0]),
        range_shifters: vec![],
        primary_dosimeter_unit: None,
        layers: [120.0, 140.0, 160.0, 180.0, 200.0]
            .iter()
            .map(|&depth_mm| EnergyLayer {
                energy_mev_u: carbon
                    .energy_mev_u(MmWe(depth_mm))
                    .unwrap_or_else(|e| panic!("{e}")),
                spots: spots.clone(),
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let ct = phantom();
    let hlut = Hlut::default();
    let mut rsp = Volume::filled(ct.grid().clone(), 0.0f32);
    hlut.convert_into(&ct, &mut rsp);
    c.bench_function("hlut_convert_256cube", |b| {
        b.iter(|| hlut.convert_into(&ct, &mut rsp))
    });
    let plan = IonPlan {
        sop_instance_uid: "bench".into(),
        frame_of_reference_uid: "bench".into(),
        patient_id: "bench".into(),
        label: "bench".into(),
        beams: vec![carbon_beam(1, 0.0), carbon_beam(2, 90.0)],
    };
    let mut tracer =
        SpotTracer::new(&plan, &SpotTracerOptions::new([f64::INFINITY; 2])).unwrap_or_else(|e| panic!("{e}"));
    tracer.trace_frame(&rsp);
    let samples: usize = (0..tracer.rays().len())
        .filter_map(|r| tracer.profile(r))
        .map(|p| p.t_mm().len())
        .sum();
    let geometric_mm: f64 = (0..tracer.rays().len())
        .filter_map(|r| tracer.profile(r))
        .map(|p| p.geometric_mm())
        .sum();
    let reached = tracer.target_t_mm().iter().filter(|t| t.is_some()).count();
    eprintln!(
        "plan: {} spots ({reached} reach their depth), {} distinct rays, mean {:.0} voxel \
         crossings and {:.0} mm traced per ray",
        tracer.spots().len(),
        tracer.rays().len(),
        samples as f64 / tracer.rays().len() as f64,
        geometric_mm / tracer.rays().len() as f64,
    );
    c.bench_function("spot_wepl_frame_2beam_10k_spots", |b| {
        b.iter(|| tracer.trace_frame(&rsp))
    });
    c.bench_function("spot_wepl_frame_2beam_10k_spots_from_ct", |b| {
        b.iter(|| tracer.trace_frame_ct(&ct, &hlut))
    });
    // A frame from an in-room scanner turned 1.5° about z and 0.4° about x (placed in
    // planning coordinates by its setup registration): every ray now crosses planes of all
    // three axes.
    let mut oblique = ct.clone();
    oblique.map_patient_space(&RigidTransform::from_xyz_deg([0.4, 0.0, 1.5], VectorMm::zeros()));
    tracer.trace_frame_ct(&oblique, &hlut);
    let oblique_samples: usize = (0..tracer.rays().len())
        .filter_map(|r| tracer.profile(r))
        .map(|p| p.t_mm().len())
        .sum();
    eprintln!(
        "oblique frame: mean {:.0} voxel crossings per ray",
        oblique_samples as f64 / tracer.rays().len() as f64
    );
    c.bench_function("spot_wepl_frame_2beam_10k_spots_from_ct_oblique", |b| {
        b.iter(|| tracer.trace_frame_ct(&oblique, &hlut))
    });
    // The pipeline traces one frame per 100 ms, not back to back: on a virtual machine whose
    // host makes idle guest pages slow to touch again, what a frame costs then depends on how many pages it
    // touches (ARCHITECTURE.md, "Memory touched per frame").
    let mut idle = c.benchmark_group("after_idle");
    idle.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    idle.bench_function("spot_wepl_frame_2beam_10k_spots_from_ct_after_100ms_idle", |b| {
        b.iter_custom(|iters| {
            let mut busy = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(100));
                let start = Instant::now();
                tracer.trace_frame_ct(&ct, &hlut);
                busy += start.elapsed();
            }
            busy
        })
    });
    // The range stage's way: no profiles kept, each spot measured as its ray is traced.
    let mut lean = tracer.without_profiles();
    let zero_offsets = [VectorMm::zeros(); 2];
    let query_t_mm: Vec<f64> = lean.target_t_mm().iter().map(|t| t.unwrap_or(f64::NAN)).collect();
    let mut wepl_mm = Vec::with_capacity(query_t_mm.len());
    idle.bench_function(
        "spot_wepl_frame_2beam_10k_spots_from_ct_without_profiles_after_100ms_idle",
        |b| {
            b.iter_custom(|iters| {
                let mut busy = Duration::ZERO;
                for _ in 0..iters {
                    std::thread::sleep(Duration::from_millis(100));
                    let start = Instant::now();
                    lean.trace_frame_ct_moved_at(&ct, &hlut, &zero_offsets, &query_t_mm, &mut wepl_mm)
                        .unwrap_or_else(|e| panic!("{e}"));
                    busy += start.elapsed();
                }
                busy
            })
        },
    );
    idle.finish();
    let mut tracer2 = SpotTracer::new(&plan, &SpotTracerOptions::new([f64::INFINITY; 2]).with_threads(2))
        .unwrap_or_else(|e| panic!("{e}"));
    tracer2.trace_frame(&rsp);
    assert_eq!(tracer2.target_t_mm(), tracer.target_t_mm());
    c.bench_function("spot_wepl_frame_2beam_10k_spots_2threads", |b| {
        b.iter(|| tracer2.trace_frame(&rsp))
    });
    c.bench_function("spot_wepl_frame_2beam_10k_spots_from_ct_2threads", |b| {
        b.iter(|| tracer2.trace_frame_ct(&ct, &hlut))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
