//! A frame of spot WEPL allocates nothing once the tracer is warm (STYLE: prove it with a
//! counting allocator). The only test in its binary, so no other test allocates meanwhile.

mod alloc_support;

use ionguide::geometry::Grid;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::Hlut;
use ionguide::units::{Ion, PointMm};
use ionguide::volume::CtVolume;

#[global_allocator]
static GLOBAL: alloc_support::Counting = alloc_support::Counting;

#[test]
fn a_warm_spot_tracer_frame_allocates_nothing() {
    alloc_support::count_this_thread();
    let grid = Grid::axis_aligned([60, 60, 40], PointMm::new(-59.0, -59.0, -39.0), [2.0; 3]).unwrap();
    let mut ct = CtVolume::filled(grid, 20);
    for (n, v) in ct.as_slice_mut().iter_mut().enumerate() {
        *v = ((n * 7919) % 1500) as i16 - 700;
    }
    let hlut = Hlut::default();
    let rsp = hlut.convert(&ct);
    let spots: Vec<Spot> = (0..25)
        .map(|n| Spot {
            x_mm: (n % 5) as f64 * 4.0 - 8.0,
            y_mm: (n / 5) as f64 * 4.0 - 8.0,
            weight: 1.0,
        })
        .collect();
    let beam = |number: i32, gantry: f64| IonBeam {
        number,
        name: format!("B{number}"),
        radiation_type: "ION".into(),
        ion: Ion::CARBON12,
        gantry_angle_deg: gantry,
        couch_angle_deg: 0.0,
        isocenter_mm: PointMm::origin(),
        patient_position: Some("HFS".into()),
        virtual_sad_mm: None,
        range_shifters: vec![],
        primary_dosimeter_unit: None,
        layers: [150.0, 250.0]
            .iter()
            .map(|&e| EnergyLayer {
                energy_mev_u: e,
                spots: spots.clone(),
            })
            .collect(),
    };
    let plan = IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "p".into(),
        label: "t".into(),
        beams: vec![beam(1, 0.0), beam(2, 90.0)],
    };
    // The profile store is empty until the warm-up frame sizes it.
    let opts = SpotTracerOptions::new([f64::INFINITY; 2]);
    let mut tracer = SpotTracer::new(&plan, &opts).unwrap();
    tracer.trace_frame(&rsp);
    tracer.trace_frame_ct(&ct, &hlut);
    // the counter works: setting up allocated on this thread
    assert!(alloc_support::allocations() > 0);
    let before = alloc_support::allocations();
    for _ in 0..3 {
        tracer.trace_frame(&rsp);
        tracer.trace_frame_ct(&ct, &hlut);
    }
    let after = alloc_support::allocations();
    assert!(tracer.target_t_mm().iter().any(|t| t.is_some()));
    assert_eq!(after - before, 0, "allocations in 6 warm frames");
}
