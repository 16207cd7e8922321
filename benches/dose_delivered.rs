//! Delivered-spot dose bench: what one motion sample of a 4D dose costs. 300 carbon spots
//! (10 × 10 positions 4 mm apart, three energies with Bragg peaks near 100 mm) in a
//! 100 × 100 × 100 water cube at 2 mm, dose on the CT's grid, one thread:
//!
//! - `plan_300`: `compute_dose` of those spots as a plan (engine built per call);
//! - `delivered_300`: `DoseEngine::add_dose` of the same spots each moved by its own
//!   sub-millimetre offset, at off-grid energies and with range shifters (300 rays, kernels
//!   interpolated), on a warm engine;
//! - `delivered_1`: one such spot: the fixed cost of a call plus one ray;
//! - `delivered_300_far_grid`: the 300 spots onto a one-voxel dose grid beside the cube, so
//!   no voxel is near a ray: the per-call work besides adding dose (checks, kernel lookup,
//!   the spots' plan, 300 rays built and traced through the CT, grouping).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ionguide::dose::{compute_dose, DeliveredSpot, DoseEngine, DoseOptions, EnergyMatch, IonMachine};
use ionguide::geometry::Grid;
use ionguide::plan::{DosimeterUnit, EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::Hlut;
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;

const N: usize = 100;
const SPACING_MM: f64 = 2.0;

fn bench(c: &mut Criterion) {
    let machine =
        IonMachine::from_dir(Path::new("tests/data/matrad/carbon_Generic")).unwrap_or_else(|e| panic!("{e}"));
    let half = (N - 1) as f64 / 2.0 * SPACING_MM;
    let grid = Grid::axis_aligned([N; 3], PointMm::new(-half, -half, -half), [SPACING_MM; 3])
        .unwrap_or_else(|e| panic!("{e}"));
    let ct = CtVolume::filled(grid, 0);
    let hlut = Hlut::matrad_generic();
    // Gantry 0, HFS: rays along +y from the cube's face at y = −100 mm; isocenter 100 mm deep.
    let energies: Vec<f64> = machine
        .energies
        .iter()
        .filter(|k| (k.peak_pos_mm - 100.0).abs() <= 4.0)
        .map(|k| k.energy_mev_u)
        .take(3)
        .collect();
    assert_eq!(energies.len(), 3);
    let spots: Vec<Spot> = (0..100)
        .map(|n| Spot {
            x_mm: ((n % 10) as f64 - 4.5) * 4.0,
            y_mm: ((n / 10) as f64 - 4.5) * 4.0,
            weight: 1e6,
        })
        .collect();
    let plan = IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "bench".into(),
        label: "delivered".into(),
        beams: vec![IonBeam {
            number: 1,
            name: "G0".into(),
            radiation_type: "ION".into(),
            ion: machine.ion,
            gantry_angle_deg: 0.0,
            couch_angle_deg: 0.0,
            isocenter_mm: PointMm::origin(),
            patient_position: Some("HFS".into()),
            virtual_sad_mm: None,
            range_shifters: vec![],
            primary_dosimeter_unit: Some(DosimeterUnit::Particles),
            layers: energies
                .iter()
                .map(|&energy_mev_u| EnergyLayer {
                    energy_mev_u,
                    spots: spots.clone(),
                })
                .collect(),
        }],
    };
    let machines = [machine];
    let options = DoseOptions::new([machines[0].sad_mm; 2]).with_energy_match(EnergyMatch::Interpolate);
    let mut engine = DoseEngine::new(&machines, options.clone()).unwrap_or_else(|e| panic!("{e}"));
    let delivered: Vec<DeliveredSpot> = engine
        .delivered_spots(&plan, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|s| {
            let n = s.index as f64;
            DeliveredSpot {
                x_mm: s.x_mm + 0.37 * (n * 0.7).sin(),
                y_mm: s.y_mm - 0.41 * (n * 1.3).cos(),
                energy_mev_u: s.energy_mev_u + 0.8,
                range_shifter_mm_we: 0.5 * (n % 3.0),
                ..s
            }
        })
        .collect();
    assert_eq!(delivered.len(), 300);
    let mut accum = vec![0.0f64; ct.grid().len()];
    engine
        .add_dose(&ct, &hlut, &plan, &delivered, ct.grid(), &mut accum)
        .unwrap_or_else(|e| panic!("{e}"));

    let mut g = c.benchmark_group("dose_delivered");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("plan_300_spots_100cube_2mm", |b| {
        b.iter(|| {
            compute_dose(&plan, &ct, &hlut, &machines, ct.grid(), &options).unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.bench_function("delivered_300_spots_100cube_2mm", |b| {
        b.iter(|| {
            engine
                .add_dose(&ct, &hlut, &plan, &delivered, ct.grid(), &mut accum)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.bench_function("delivered_1_spot_100cube_2mm", |b| {
        b.iter(|| {
            engine
                .add_dose(&ct, &hlut, &plan, &delivered[..1], ct.grid(), &mut accum)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    let far = Grid::axis_aligned([1; 3], PointMm::new(500.0, 0.0, 0.0), [SPACING_MM; 3])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut one = [0.0f64];
    g.bench_function("delivered_300_spots_far_grid", |b| {
        b.iter(|| {
            engine
                .add_dose(&ct, &hlut, &plan, &delivered, &far, &mut one)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    assert_eq!(one[0], 0.0);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
