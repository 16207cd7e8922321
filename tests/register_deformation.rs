//! The rigid registration's residual-deformation check on real CT (STS_001..STS_004, TCIA,
//! CC BY 3.0): frames the rigid answer cannot describe are rejected, rigid ones still pass.
//!
//! - Deformed frames: the planning CT pulled back through a smooth field (one plane wave of
//!   wavelength 200–300 mm, amplitude up to 8 mm (uniform) in a random direction) with the GTV shrunk by
//!   30% in volume (a radial field about its centroid: 1 inside the GTV's equivalent
//!   sphere, falling to 0 by 2.5 radii), after a small rigid move (≤ 5 mm, ≤ 2°), plus
//!   20 HU noise. Each must be held; those that pass every other check must be caught as
//!   `ResidualDeformation`.
//! - Rigid frames: the planning CT moved by a random rigid transform (≤ 15 mm, ≤ 4° about
//!   the tumor), plus 20 HU noise. Each must pass every check.

mod register_support;

use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::geometry::RigidTransform;
use ionguide::register::{
    FixedContext, QualityFailure, RegisterOptions, Registrar, Roi, Verdict, DEFAULT_MARGIN_MM,
};
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;
use register_support::{make_frame, random_transform, Rng};

const PATIENTS: [&str; 4] = ["STS_001", "STS_002", "STS_003", "STS_004"];
const RIGID_CASES: usize = 4;
const DEFORMED_CASES: usize = 4;

/// Trilinear sample of `ct` at patient point `p` (−1000 HU outside).
fn sample(ct: &CtVolume, p: &PointMm) -> f64 {
    let g = ct.grid();
    let [nx, ny, nz] = g.dims();
    let u = g.patient_to_index(p);
    if !(0..3).all(|a| u[a] >= 0.0 && u[a] <= ([nx, ny, nz][a] - 1) as f64) {
        return -1000.0;
    }
    let base = u.map(|v| v.floor() as usize);
    let b = [0, 1, 2].map(|a| base[a].min([nx, ny, nz][a].saturating_sub(2)));
    let f = [0, 1, 2].map(|a| u[a] - b[a] as f64);
    let data = ct.as_slice();
    let at = |i: usize, j: usize, k: usize| f64::from(data[(k * ny + j) * nx + i]);
    let mut v = 0.0;
    for (dk, wk) in [(0, 1.0 - f[2]), (1, f[2])] {
        for (dj, wj) in [(0, 1.0 - f[1]), (1, f[1])] {
            for (di, wi) in [(0, 1.0 - f[0]), (1, f[0])] {
                v += wi * wj * wk * at(b[0] + di, b[1] + dj, b[2] + dk);
            }
        }
    }
    v
}

/// A frame showing `ct` deformed: each frame point `x` shows the planning point
/// `b(m⁻¹(x))`, `m` a rigid move and `b` the pull-back of the smooth field plus the GTV's
/// shrink (see the module docs), with 20 HU noise.
fn deformed_frame(ct: &CtVolume, centroid: PointMm, gtv_radius_mm: f64, rng: &mut Rng) -> CtVolume {
    let m_inv = random_transform(rng, centroid, 5.0, 2.0).inverse();
    let a = {
        let d = loop {
            let v = rng.in_ball(1.0);
            if v.norm() > 0.2 {
                break v.normalize();
            }
        };
        d * (8.0 * rng.uniform())
    };
    let k = loop {
        let v = rng.in_ball(1.0);
        if v.norm() > 0.2 {
            break v.normalize();
        }
    };
    let wavelength_mm = 200.0 + 100.0 * rng.uniform();
    let phase = std::f64::consts::TAU * rng.uniform();
    // 30% less volume: radii × 0.7^(1/3); the frame's point at r shows the planning point
    // at r / s inside the tumor
    let s = 0.7f64.cbrt();
    let (r_in, r_out) = (gtv_radius_mm, 2.5 * gtv_radius_mm);
    let pull_back = |x: PointMm| -> PointMm {
        let rel = x - centroid;
        let r = rel.norm();
        let w = if r <= r_in {
            1.0
        } else if r >= r_out {
            0.0
        } else {
            (0.5 * std::f64::consts::PI * (r - r_in) / (r_out - r_in))
                .cos()
                .powi(2)
        };
        let shrink = rel * ((1.0 / s - 1.0) * w);
        let smooth = a * (std::f64::consts::TAU * k.dot(&rel) / wavelength_mm + phase).sin();
        x + shrink + smooth
    };
    let mut frame = CtVolume::filled(ct.grid().clone(), -1000);
    let g = ct.grid().clone();
    let [nx, ny, _] = g.dims();
    for (o, v) in frame.as_slice_mut().iter_mut().enumerate() {
        let x = g.index_to_patient([(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64]);
        let hu = sample(ct, &pull_back(m_inv.apply(&x))) + 20.0 * rng.normal();
        *v = hu.round().clamp(-1024.0, 3071.0) as i16;
    }
    frame
}

#[test]
fn deformed_frames_are_held_and_rigid_ones_pass() {
    let options = RegisterOptions::default();
    let mut rng = Rng::new(1515);
    let (mut false_holds, mut false_passes) = (Vec::new(), Vec::new());
    let (mut rigid_residual, mut deformed_residual) = (Vec::new(), Vec::new());
    let mut held_by_other_checks = 0;
    for name in PATIENTS {
        let ct = read_series_dir(format!("tests/data/{name}/image"))
            .unwrap()
            .volume;
        let (_, roi) = read_roi(format!("tests/data/{name}/mask/RS.dcm"), "GTV_Mass_CT").unwrap();
        let raster = roi.rasterize(ct.grid());
        let centroid = raster.centroid_mm.unwrap();
        let volume_mm3 = raster.voxels as f64 * ct.grid().voxel_volume_mm3();
        let radius_mm = (3.0 * volume_mm3 / (4.0 * std::f64::consts::PI)).cbrt();
        let region = Roi::from_mask(&raster.mask, DEFAULT_MARGIN_MM).unwrap();
        let fixed = FixedContext::new(&ct, region, &options).unwrap();
        let mut registrar = Registrar::new(options.clone());
        for case in 0..RIGID_CASES {
            let truth = random_transform(&mut rng, centroid, 15.0, 4.0);
            let frame = make_frame(&ct, &truth, ct.grid(), 20.0, &mut rng);
            let r = registrar
                .register(&fixed, &frame, &RigidTransform::identity())
                .unwrap();
            eprintln!(
                "{name} rigid {case}: residual {:.2} mm, {:?}",
                r.residual_mm, r.verdict
            );
            rigid_residual.push(r.residual_mm);
            if !r.is_usable() {
                false_holds.push((name, case, r.verdict));
            }
        }
        for case in 0..DEFORMED_CASES {
            let frame = deformed_frame(&ct, centroid, radius_mm, &mut rng);
            let r = registrar
                .register(&fixed, &frame, &RigidTransform::identity())
                .unwrap();
            eprintln!(
                "{name} deformed {case}: residual {:.2} mm, {:?}",
                r.residual_mm, r.verdict
            );
            match r.verdict {
                Verdict::Reject(QualityFailure::ResidualDeformation { .. }) => {
                    deformed_residual.push(r.residual_mm)
                }
                Verdict::Reject(_) => held_by_other_checks += 1,
                Verdict::Accept => false_passes.push((name, case, r.residual_mm)),
            }
        }
    }
    let range = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (rigid_lo, rigid_hi) = range(&rigid_residual);
    let (def_lo, def_hi) = range(&deformed_residual);
    println!(
        "rigid: {} of {} held (residual {rigid_lo:.2}–{rigid_hi:.2} mm); deformed: {} of {} passed, \
         {} held as residual deformation ({def_lo:.2}–{def_hi:.2} mm), {held_by_other_checks} by \
         an earlier check; limit {} mm",
        false_holds.len(),
        rigid_residual.len(),
        false_passes.len(),
        PATIENTS.len() * DEFORMED_CASES,
        deformed_residual.len(),
        options.max_residual_mm
    );
    assert!(false_holds.is_empty(), "rigid frames held: {false_holds:?}");
    assert!(
        false_passes.is_empty(),
        "deformed frames passed: {false_passes:?}"
    );
    // the check is what holds most of them, not the older ones
    assert!(deformed_residual.len() * 2 > PATIENTS.len() * DEFORMED_CASES);
}

#[test]
fn the_residual_check_can_be_switched_off_and_not_below_zero() {
    assert!(RegisterOptions::default()
        .with_max_residual_mm(f64::INFINITY)
        .validate()
        .is_ok());
    for bad in [0.0, -1.0, f64::NAN] {
        assert!(
            RegisterOptions::default()
                .with_max_residual_mm(bad)
                .validate()
                .is_err(),
            "{bad}"
        );
    }
    // other limits still refuse infinity
    assert!(RegisterOptions::default()
        .with_max_jump_mm(f64::INFINITY)
        .validate()
        .is_err());
}
