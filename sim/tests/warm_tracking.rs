//! Warm registration along a breathing cycle of the phantom, whose lung (and tumor) moves
//! while the chest wall and spine stay put: the motion inside the registration ROI is not
//! rigid. The tracked target must follow the truth, and no frame may need a long run of
//! steps (each costs a full-resolution pass inside the latency budget).

use ionguide::dicom::ct::read_series_bytes;
use ionguide::geometry::RigidTransform;
use ionguide::register::Registrar;
use ionguide::units::VectorMm;
use ionguide_sim::gate::Workload;
use ionguide_sim::imaging::sources::FrameSource;
use ionguide_sim::motion::tumor::{displacements, TumorMotionModel};
use ionguide_sim::planning::PlannerOptions;
use ionguide_sim::replay::load_session;
use ionguide_sim::scenario::{bundled_trace, write_phantom_session};

#[test]
fn warm_tracking_of_non_rigid_breathing_converges_in_few_steps_on_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_phantom_session(
        dir.path(),
        &Workload::Small.phantom(),
        &PlannerOptions::default(),
        50.0,
        None,
    )
    .unwrap();
    let (_, truth) = displacements(&bundled_trace(), 10.0, &TumorMotionModel::default(), Some(40)).unwrap();
    let mut frames = scenario.frames(10.0, 3).unwrap();
    let (_, session) = load_session(&scenario.config).unwrap();
    let mut registrar = Registrar::new(session.options.register.clone());
    let mut previous = RigidTransform::identity();
    let (mut worst_error_mm, mut most_iterations) = (0.0f64, 0u32);
    let mut worst_cold_error_mm = 0.0f64;
    for (i, d) in truth.iter().enumerate() {
        let objects = frames.frame(i, *d).unwrap();
        let slices: Vec<&[u8]> = objects.iter().map(|o| o.as_slice()).collect();
        let frame = read_series_bytes(&slices).unwrap().volume;
        // every fifth frame also cold, from the setup (what a session's first frame gets)
        if i % 5 == 0 {
            let cold = registrar
                .register(&session.fixed, &frame, &RigidTransform::identity())
                .unwrap();
            assert!(cold.is_usable(), "frame {i} cold: {:?}", cold.verdict);
            let error = (cold.tumor_shift_mm - VectorMm::new(d[0], d[1], d[2])).norm();
            worst_cold_error_mm = worst_cold_error_mm.max(error);
        }
        let reg = if i == 0 {
            registrar.register(&session.fixed, &frame, &previous).unwrap()
        } else {
            registrar
                .register_warm(&session.fixed, &frame, &previous)
                .unwrap()
        };
        assert!(reg.is_usable(), "frame {i}: {:?}", reg.verdict);
        let error = (reg.tumor_shift_mm - VectorMm::new(d[0], d[1], d[2])).norm();
        worst_error_mm = worst_error_mm.max(error);
        if i > 0 {
            most_iterations = most_iterations.max(reg.iterations);
        }
        previous = reg.transform;
    }
    // measured: 0.09 mm, 13 steps (preview included); stopping on a 0.01° rotation step as
    // before, the same cycle needed up to 44 steps
    assert!(
        worst_error_mm < 0.15,
        "worst tumor shift error {worst_error_mm:.3} mm"
    );
    assert!(
        worst_cold_error_mm < 0.15,
        "worst cold tumor shift error {worst_cold_error_mm:.3} mm"
    );
    assert!(
        most_iterations <= 20,
        "a warm registration took {most_iterations} steps"
    );
}
