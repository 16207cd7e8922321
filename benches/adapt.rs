//! Adapt stage benches on the range bench's phantom (256³, 1 mm) and 2-beam carbon plan
//! (10 240 spots on 2 048 rays; layers 90–130 mm of water deep so every planned target lies
//! inside the phantom): the range half (every ray moved, traced from the CT frame, every
//! spot's depth read) for a pure shift and for a 3° rotation with a shift, and the adapt
//! half (corrections) for the rotation. Phantom and beams are copied from `range.rs`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use ionguide::adapt::{AdaptOptions, AdaptPlan, Adapter, FrameStamp, FrameWepl, SafetyLimits};
use ionguide::correction::CorrectionSet;
use ionguide::geometry::{Grid, RigidTransform};
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::{Hlut, RangeEnergyTable};
use ionguide::register::{Registration, Verdict};
use ionguide::units::{Ion, Mm, MmWe, PointMm, VectorMm};
use ionguide::volume::CtVolume;

const LAYERS_MM: [f64; 5] = [90.0, 100.0, 110.0, 120.0, 130.0];

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
    // 32 × 32 spot positions, 3 mm apart, 5 layers: 1 024 rays, 5 120 spots.
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
        layers: LAYERS_MM
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
    let plan = IonPlan {
        sop_instance_uid: "bench".into(),
        frame_of_reference_uid: "bench".into(),
        patient_id: "bench".into(),
        label: "bench".into(),
        beams: vec![carbon_beam(1, 0.0), carbon_beam(2, 90.0)],
    };
    let sad = [f64::INFINITY; 2];
    let mut planned = SpotTracer::new(&plan, &SpotTracerOptions::new(sad)).unwrap_or_else(|e| panic!("{e}"));
    planned.trace_frame_ct(&ct, &hlut);
    let limits = SafetyLimits {
        max_lateral: Mm(50.0),
        max_range: MmWe(50.0),
        max_jump: Mm(100.0),
        min_ncc: 0.5,
        max_rotation_deg: 10.0,
    };
    let adapt_plan = Arc::new(
        AdaptPlan::new(
            &plan,
            &planned,
            AdaptOptions::new(limits, sad).with_follow_rotation(true),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut frame = planned.without_profiles();
    let mut wepl = FrameWepl::for_plan(&adapt_plan);
    let shift = VectorMm::new(2.0, -1.5, 3.0);
    c.bench_function("adapt_range_half_shift_10k_spots_from_ct", |b| {
        b.iter(|| {
            adapt_plan
                .measure_ct(&mut frame, &ct, &hlut, &shift, &mut wepl)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    let target = PointMm::origin();
    let registration = |t: RigidTransform| Registration {
        transform: t,
        converged: true,
        iterations: 6,
        similarity_ncc: 0.98,
        rms_hu: 12.0,
        overlap_fraction: 1.0,
        verdict: Verdict::Accept,
        residual_mm: 0.0,
        target_planned_mm: target,
        target_mm: t.apply(&target),
        tumor_shift_mm: t.apply(&target) - target,
    };
    let mut adapter = Adapter::new(adapt_plan.clone());
    let mut out = CorrectionSet::default();
    let stamp = FrameStamp::default();
    let reg = registration(RigidTransform::from_rotation_vector(VectorMm::zeros(), shift));
    c.bench_function("adapt_half_shift_10k_spots", |b| {
        b.iter(|| {
            adapter.reset_jump_reference();
            adapter.adapt(stamp, &reg, &wepl, &mut out).is_ok()
        })
    });
    // 3° about an oblique axis through the isocenter, then the shift
    let rotated = RigidTransform::from_rotation_vector(
        VectorMm::new(0.3, 0.5, 0.8).normalize() * 3f64.to_radians(),
        shift,
    );
    c.bench_function("adapt_range_half_rigid_3deg_10k_spots_from_ct", |b| {
        b.iter(|| {
            adapt_plan
                .measure_ct(&mut frame, &ct, &hlut, &rotated, &mut wepl)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    let reg = registration(rotated);
    if let Err(h) = adapter.adapt(stamp, &reg, &wepl, &mut out) {
        panic!("the bench frame is held: {h}");
    }
    eprintln!(
        "{} spots corrected; largest depth read off its exact point: {:.2} mm",
        out.spots.len(),
        wepl.max_ray_miss_mm
    );
    c.bench_function("adapt_half_rigid_3deg_10k_spots", |b| {
        b.iter(|| {
            adapter.reset_jump_reference();
            adapter.adapt(stamp, &reg, &wepl, &mut out).is_ok()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
