//! Registration on real CT (Soft-tissue-Sarcoma STS_001..STS_004, TCIA, CC BY 3.0) with
//! known applied transforms, and failure detection on unrelated anatomy.
//!
//! Frames are the planning CT moved by a known rigid transform (translations up to 15 mm,
//! rotations up to 4° about the tumor centroid; `resample(planning, T⁻¹)`) plus seeded
//! 20 HU Gaussian noise, either whole or as a slab of 30% of the slices centred on the
//! tumor. The ROI is the GTV_Mass_CT contour rasterized on the planning CT, bounding box
//! plus 20 mm (targets of 53, 80, 296 and 365 cc: regions from 96×78×92 to 107×117×213 mm),
//! or, for the two large targets, a 150 mm cube on the target (the region a 500–600 cc
//! target gives). The error is the mean over the tumor mask's voxels of
//! |T_est(x) − T_true(x)|.

mod register_support;

use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::geometry::RigidTransform;
use ionguide::register::{
    resample, BoxMm, FixedContext, RegisterOptions, Registrar, Registration, Roi, DEFAULT_MARGIN_MM,
};
use ionguide::volume::{CtVolume, MaskVolume};
use proptest::prelude::*;
use register_support::{make_frame, random_transform, slab_grid, target_registration_error, Rng};
use std::sync::OnceLock;

/// Tolerance on the mean target registration error, mm.
const TRE_LIMIT_MM: f64 = 0.2;
/// Per-case bound in the property test (the 0.2 mm limit holds for ≥95% of cases).
const CASE_LIMIT_MM: f64 = 0.5;
const PATIENTS: [&str; 4] = ["STS_001", "STS_002", "STS_003", "STS_004"];

struct Patient {
    ct: CtVolume,
    tumor: MaskVolume,
    centroid: ionguide::units::PointMm,
    fixed: FixedContext,
    /// A 150 mm cube on the target (built for the large targets only).
    fixed_150mm: Option<FixedContext>,
}

/// Side of the large-region case, mm (the registration bench's large case).
const LARGE_REGION_MM: f64 = 150.0;
/// The patients whose CT holds a 150 mm cube around the target (the others are cropped
/// 5 cm around smaller tumors).
const LARGE: [usize; 2] = [0, 3];

fn patient(index: usize) -> &'static Patient {
    static P: [OnceLock<Patient>; 4] = [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    P[index].get_or_init(|| {
        let name = PATIENTS[index];
        let ct = read_series_dir(format!("tests/data/{name}/image"))
            .unwrap()
            .volume;
        let (_, roi) = read_roi(format!("tests/data/{name}/mask/RS.dcm"), "GTV_Mass_CT").unwrap();
        let raster = roi.rasterize(ct.grid());
        let region = Roi::from_mask(&raster.mask, DEFAULT_MARGIN_MM).unwrap();
        let fixed = FixedContext::new(&ct, region, &RegisterOptions::default()).unwrap();
        let centroid = raster.centroid_mm.unwrap();
        let fixed_150mm = LARGE.contains(&index).then(|| {
            let cube = Roi {
                box_mm: BoxMm::cube(centroid, LARGE_REGION_MM).unwrap(),
                target_mm: centroid,
            };
            FixedContext::new(&ct, cube, &RegisterOptions::default()).unwrap()
        });
        Patient {
            centroid,
            tumor: raster.mask,
            ct,
            fixed,
            fixed_150mm,
        }
    })
}

fn run_case(index: usize, rng: &mut Rng, slab: bool) -> (f64, Registration) {
    run_case_on(index, rng, slab, false)
}

/// One case on the target-mask region, or (`large`) on the 150 mm cube.
fn run_case_on(index: usize, rng: &mut Rng, slab: bool, large: bool) -> (f64, Registration) {
    let p = patient(index);
    let fixed = if large {
        p.fixed_150mm.as_ref().expect("a large-target patient")
    } else {
        &p.fixed
    };
    let truth = random_transform(rng, p.centroid, 15.0, 4.0);
    let grid = if slab {
        slab_grid(p.ct.grid(), 0.3, &truth.apply(&p.centroid))
    } else {
        p.ct.grid().clone()
    };
    let frame = make_frame(&p.ct, &truth, &grid, 20.0, rng);
    let r = Registrar::new(RegisterOptions::default())
        .register(fixed, &frame, &RigidTransform::identity())
        .unwrap();
    (target_registration_error(&p.tumor, &r.transform, &truth), r)
}

#[test]
fn rasterized_target_matches_the_reference_mask_centroid() {
    // sanity of the fixture against reference.json (SimpleITK on the dataset's own mask)
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/reference.json").unwrap()).unwrap();
    for (i, name) in PATIENTS.iter().enumerate() {
        let c = &reference[name]["reference_mask"]["mask_centroid_mm"];
        let want = ionguide::units::PointMm::new(
            c[0].as_f64().unwrap(),
            c[1].as_f64().unwrap(),
            c[2].as_f64().unwrap(),
        );
        let got = patient(i).fixed.roi().target_mm;
        assert!(
            (got - want).norm() < 2.0,
            "{name}: target {got:?} vs reference centroid {want:?}"
        );
    }
}

/// Cases per patient on the target-mask region, and on the 150 mm cube.
const MASK_CASES: usize = 12;
const LARGE_CASES: usize = 6;

#[test]
fn known_transforms_are_recovered_on_real_ct() {
    // 60 cases across target sizes: with 24 a single case decided the 95% rate (4% a case)
    let mut rng = Rng::new(2024);
    let (mut ok, mut total) = (0, 0);
    let mut worst = Vec::new();
    let mut run = |index: usize, case: usize, large: bool, rng: &mut Rng| {
        // every third frame a slab
        let slab = case % 3 == 2;
        let (tre, r) = run_case_on(index, rng, slab, large);
        let region = if large { "150 mm cube" } else { "target+20 mm" };
        eprintln!(
            "{} {region} slab={slab}: TRE {tre:.3} mm, {} it, ncc {:.3}, rms {:.0} HU, overlap {:.2}, {:?}",
            PATIENTS[index], r.iterations, r.similarity_ncc, r.rms_hu, r.overlap_fraction, r.verdict
        );
        total += 1;
        if tre <= TRE_LIMIT_MM && r.is_usable() {
            ok += 1;
        } else {
            worst.push((PATIENTS[index], region, tre));
        }
    };
    for index in 0..PATIENTS.len() {
        for case in 0..MASK_CASES {
            run(index, case, false, &mut rng);
        }
    }
    for index in LARGE {
        for case in 0..LARGE_CASES {
            run(index, case, true, &mut rng);
        }
    }
    assert!(
        ok * 100 >= 95 * total,
        "{ok}/{total} cases within {TRE_LIMIT_MM} mm; outside: {worst:?}"
    );
}

proptest! {
    // Fixed seed: the ≥95% rate is asserted by the batch above; here every case must be
    // usable and within the per-case bound, the same cases on every run.
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x1e9),
        ..ProptestConfig::default()
    })]
    #[test]
    fn random_transforms_are_recovered_on_real_ct(index in 0usize..4, seed in any::<u64>(), slab in any::<bool>()) {
        let (tre, r) = run_case(index, &mut Rng::new(seed), slab);
        prop_assert!(r.is_usable(), "{}: {:?}", PATIENTS[index], r.verdict);
        prop_assert!(tre <= CASE_LIMIT_MM, "{}: TRE {tre} mm", PATIENTS[index]);
    }
}

#[test]
fn another_patient_is_flagged() {
    let a = patient(0);
    let b = patient(2);
    let frame = resample(&b.ct, &RigidTransform::identity(), a.ct.grid(), -1000);
    let r = Registrar::new(RegisterOptions::default())
        .register(&a.fixed, &frame, &RigidTransform::identity())
        .unwrap();
    eprintln!("STS_001 vs STS_003: {r:?}");
    assert!(!r.is_usable(), "unrelated anatomy passed: {r:?}");
}

#[test]
fn warm_start_on_real_ct_takes_fewer_iterations() {
    let p = patient(1);
    let mut rng = Rng::new(77);
    let truth = random_transform(&mut rng, p.centroid, 10.0, 3.0);
    let frame = make_frame(&p.ct, &truth, p.ct.grid(), 20.0, &mut rng);
    let mut reg = Registrar::new(RegisterOptions::default());
    let cold = reg
        .register(&p.fixed, &frame, &RigidTransform::identity())
        .unwrap();
    let previous = random_transform(&mut rng, truth.apply(&p.centroid), 2.0, 1.0).compose(&truth);
    let warm = reg.register_warm(&p.fixed, &frame, &previous).unwrap();
    assert!(
        cold.is_usable() && warm.is_usable(),
        "{:?} {:?}",
        cold.verdict,
        warm.verdict
    );
    assert!(
        warm.iterations < cold.iterations,
        "warm {} vs cold {}",
        warm.iterations,
        cold.iterations
    );
    assert!(target_registration_error(&p.tumor, &warm.transform, &truth) <= TRE_LIMIT_MM);
}

#[test]
fn warm_start_on_a_large_region_stays_on_the_target() {
    // STS_001 (365 cc) in its 150 mm cube: the per-frame case of a large target
    let p = patient(LARGE[0]);
    let fixed = p.fixed_150mm.as_ref().expect("a large-target patient");
    let mut rng = Rng::new(78);
    let truth = random_transform(&mut rng, p.centroid, 10.0, 3.0);
    let frame = make_frame(&p.ct, &truth, p.ct.grid(), 20.0, &mut rng);
    let mut reg = Registrar::new(RegisterOptions::default());
    let cold = reg.register(fixed, &frame, &RigidTransform::identity()).unwrap();
    let previous = random_transform(&mut rng, truth.apply(&p.centroid), 2.0, 1.0).compose(&truth);
    let warm = reg.register_warm(fixed, &frame, &previous).unwrap();
    assert!(
        cold.is_usable() && warm.is_usable(),
        "{:?} {:?}",
        cold.verdict,
        warm.verdict
    );
    assert!(
        warm.iterations < cold.iterations,
        "warm {} vs cold {}",
        warm.iterations,
        cold.iterations
    );
    let tre = target_registration_error(&p.tumor, &warm.transform, &truth);
    assert!(tre <= TRE_LIMIT_MM, "warm TRE {tre} mm");
}
