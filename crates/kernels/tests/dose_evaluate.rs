//! Dose evaluation against truths from outside the code: the gamma index of a linear dose
//! ramp (constant gradient) shifted or scaled has a closed form (the minimum of a quadratic,
//! Low et al. 1998's definition); D_x/V95/HI of the doses 1..N follow from counting; the
//! volume of a box of known dose outside a known target from voxel counts.

use ionguide_core::geometry::Grid;
use ionguide_core::structure::{Contour, Roi};
use ionguide_core::units::PointMm;
use ionguide_core::volume::{MaskVolume, Volume};
use ionguide_kernels::dose::evaluate::{
    cumulative_dvh, dose_at_volume_percent, dose_stats, gamma_index, sample_roi, volume_above_outside_cc,
    volume_percent_at_dose, EvaluateError, GammaOptions,
};

fn volume(grid: Grid, f: impl Fn(PointMm) -> f64) -> Volume<f32> {
    let mut v = Volume::<f32>::filled(grid.clone(), 0.0);
    let [nx, ny, nz] = grid.dims();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                *v.get_mut(i, j, k).unwrap() = f(p) as f32;
            }
        }
    }
    v
}

/// 0..200 mm along x at 2 mm, 5 voxels across y and z.
fn ramp_grid() -> Grid {
    Grid::axis_aligned([101, 5, 5], PointMm::new(0.0, -4.0, -4.0), [2.0; 3]).unwrap()
}

const G_GY_PER_MM: f64 = 0.01;

/// Every evaluated voxel's γ against `expected(x)`, within 0.02; pass/fail must agree
/// wherever the closed form is not within 0.02 of 1. Voxels beyond `x_max_mm` are left
/// out: their minimiser lies past the end of the grid, where the closed form does not hold.
fn check_ramp(
    reference: &Volume<f32>,
    evaluated: &Volume<f32>,
    opts: &GammaOptions,
    x_max_mm: f64,
    expected: impl Fn(f64) -> f64,
) {
    let r = gamma_index(reference, evaluated, opts).unwrap();
    let grid = reference.grid();
    let mut checked = 0;
    for k in 0..5 {
        for j in 0..5 {
            for i in 0..101 {
                let g = *r.gamma.get(i, j, k).unwrap();
                let x = grid.index_to_patient([i as f64, 0.0, 0.0]).x;
                let d = G_GY_PER_MM * x;
                if d < 0.1 * 2.0 {
                    assert!(g.is_nan(), "x {x}: below the 10 % threshold yet evaluated");
                    continue;
                }
                checked += 1;
                if x > x_max_mm {
                    continue;
                }
                let want = expected(x);
                assert!(
                    (f64::from(g) - want).abs() < 0.02,
                    "x {x} mm (j {j}, k {k}): γ {g} vs closed form {want}"
                );
                if (want - 1.0).abs() > 0.02 {
                    assert_eq!(g <= 1.0, want <= 1.0, "x {x}: γ {g} vs {want}");
                }
            }
        }
    }
    assert_eq!(checked, r.evaluated_voxels);
}

#[test]
fn identical_doses_pass_everywhere_with_gamma_zero() {
    let grid = Grid::axis_aligned([31, 31, 31], PointMm::new(-30.0, -30.0, -30.0), [2.0; 3]).unwrap();
    let d = volume(grid, |p| 2.0 * (-(p.coords.norm_squared()) / (2.0 * 100.0)).exp());
    let r = gamma_index(&d, &d, &GammaOptions::new(3.0, 3.0)).unwrap();
    assert_eq!(r.pass_rate_percent, 100.0);
    assert_eq!(r.max_gamma, 0.0);
    assert!(r.evaluated_voxels > 1000, "{}", r.evaluated_voxels);
    // 10 % of the 2 Gy maximum.
    assert!((r.threshold_gy - 0.2).abs() < 1e-6);
}

#[test]
fn shifted_ramp_matches_the_closed_form() {
    // D_e(x) = g (x − s): γ = |s| / sqrt(DTA² + (ΔD / g)²), ΔD a % of the 2 Gy maximum.
    for (s_mm, pct, dta) in [(1.5, 3.0, 3.0), (2.0, 1.0, 1.0), (3.0, 1.0, 1.0), (1.0, 2.0, 0.5)] {
        let reference = volume(ramp_grid(), |p| G_GY_PER_MM * p.x);
        let evaluated = volume(ramp_grid(), |p| G_GY_PER_MM * (p.x - s_mm));
        let dd = pct / 100.0 * 2.0;
        let want = s_mm / (dta * dta + (dd / G_GY_PER_MM).powi(2)).sqrt();
        check_ramp(
            &reference,
            &evaluated,
            &GammaOptions::new(pct, dta),
            190.0,
            |_| want,
        );
    }
}

#[test]
fn shifted_ramp_on_another_grid_matches_the_closed_form() {
    // The evaluated dose on a finer grid offset by a fraction of a voxel: trilinear
    // interpolation reproduces a linear dose exactly, so the closed form still holds.
    let s_mm = 2.0;
    let reference = volume(ramp_grid(), |p| G_GY_PER_MM * p.x);
    let eg = Grid::axis_aligned([150, 9, 9], PointMm::new(-10.3, -6.1, -5.9), [1.5; 3]).unwrap();
    let evaluated = volume(eg, |p| G_GY_PER_MM * (p.x - s_mm));
    let (pct, dta) = (1.0, 1.0);
    let want = s_mm / (dta * dta + (pct / 100.0 * 2.0 / G_GY_PER_MM).powi(2)).sqrt();
    check_ramp(
        &reference,
        &evaluated,
        &GammaOptions::new(pct, dta),
        190.0,
        |_| want,
    );
}

#[test]
fn scaled_ramp_passes_where_a_neighbour_within_dta_agrees() {
    // D_e = 1.025 D. At 3 %/3 mm the dose difference alone (≤ 2.5 % of the maximum) passes.
    let reference = volume(ramp_grid(), |p| G_GY_PER_MM * p.x);
    let evaluated = volume(ramp_grid(), |p| 1.025 * G_GY_PER_MM * p.x);
    let r = gamma_index(&reference, &evaluated, &GammaOptions::new(3.0, 3.0)).unwrap();
    assert_eq!(r.pass_rate_percent, 100.0);

    // At 2 %/2 mm: Γ²(u) = u²/DTA² + (c + b u)², c = 0.025 g x / ΔD, b = 1.025 g / ΔD, whose
    // minimum is γ = c / sqrt(1 + b² DTA²). The dose difference alone passes up to x = 160 mm
    // (c ≤ 1); voxels from there to γ = 1 (x ≈ 180 mm) pass only through a neighbour.
    let (pct, dta) = (2.0, 2.0);
    let dd = pct / 100.0 * 2.0;
    let b = 1.025 * G_GY_PER_MM / dd;
    let expected = |x: f64| (0.025 * G_GY_PER_MM * x / dd) / (1.0 + b * b * dta * dta).sqrt();
    check_ramp(
        &reference,
        &evaluated,
        &GammaOptions::new(pct, dta),
        200.0,
        expected,
    );
    let r = gamma_index(&reference, &evaluated, &GammaOptions::new(pct, dta)).unwrap();
    let at = |x_mm: f64| *r.gamma.get((x_mm / 2.0) as usize, 2, 2).unwrap();
    assert!(
        at(170.0) <= 1.0,
        "x 170: dose differs by 2.1 % of max, a neighbour agrees"
    );
    assert!(at(190.0) > 1.0);
    assert!(
        r.pass_rate_percent < 100.0 && r.pass_rate_percent > 80.0,
        "{}",
        r.pass_rate_percent
    );
}

#[test]
fn gaussian_shifted_2_mm_passes_3_3_but_not_2_1() {
    let grid = Grid::axis_aligned([41, 41, 41], PointMm::new(-40.0, -40.0, -40.0), [2.0; 3]).unwrap();
    let blob = |c: [f64; 3]| {
        move |p: PointMm| {
            let r2 = (p.x - c[0]).powi(2) + (p.y - c[1]).powi(2) + (p.z - c[2]).powi(2);
            (-r2 / (2.0 * 10.0 * 10.0)).exp()
        }
    };
    let reference = volume(grid.clone(), blob([0.0; 3]));
    let evaluated = volume(grid, blob([2.0, 0.0, 0.0]));
    let r = gamma_index(&reference, &evaluated, &GammaOptions::new(3.0, 3.0)).unwrap();
    assert_eq!(r.pass_rate_percent, 100.0);
    // A pure 2 mm translation: γ ≤ 2/3 everywhere.
    assert!(r.max_gamma <= 2.0 / 3.0 + 0.01, "{}", r.max_gamma);
    let r = gamma_index(&reference, &evaluated, &GammaOptions::new(2.0, 1.0)).unwrap();
    // Steepest gradient e^(−½)/σ = 0.061 Gy/mm: γ = 2/sqrt(1 + (0.02/0.061)²) ≈ 1.9 there.
    assert!(r.pass_rate_percent < 100.0, "{}", r.pass_rate_percent);
    assert!((r.max_gamma - 1.9).abs() < 0.05, "{}", r.max_gamma);

    // Threads share slices; each voxel's γ is the same computation.
    let t = gamma_index(
        &reference,
        &volume(reference.grid().clone(), blob([2.0, 0.0, 0.0])),
        &GammaOptions::new(2.0, 1.0).with_threads(3),
    )
    .unwrap();
    assert_eq!(t.passed_voxels, r.passed_voxels);
    assert!(t
        .gamma
        .as_slice()
        .iter()
        .zip(r.gamma.as_slice())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn gamma_rejects_bad_criteria_and_an_empty_reference() {
    let grid = Grid::axis_aligned([3, 3, 3], PointMm::origin(), [1.0; 3]).unwrap();
    let z = Volume::<f32>::filled(grid.clone(), 0.0);
    assert_eq!(
        gamma_index(&z, &z, &GammaOptions::new(3.0, 3.0)),
        Err(EvaluateError::EmptyReference)
    );
    let one = Volume::<f32>::filled(grid, 1.0);
    assert!(matches!(
        gamma_index(&one, &one, &GammaOptions::new(3.0, 0.0)),
        Err(EvaluateError::BadParameter { .. })
    ));
    assert!(matches!(
        gamma_index(&one, &one, &GammaOptions::new(f64::NAN, 3.0)),
        Err(EvaluateError::BadParameter { .. })
    ));
}

/// D_x by its definition: the highest dose of the set that ≥ x % of the voxels receive.
fn d_by_counting(doses: &[f32], x: f64) -> f64 {
    let n = doses.len() as f64;
    doses
        .iter()
        .filter(|d| doses.iter().filter(|e| *e >= *d).count() as f64 >= x / 100.0 * n)
        .map(|d| f64::from(*d))
        .fold(f64::NEG_INFINITY, f64::max)
}

#[test]
fn dose_figures_of_1_to_n() {
    for n in [101usize, 100, 7, 1] {
        let mut doses: Vec<f32> = (1..=n).map(|d| d as f32).collect();
        doses.sort_by(|a, b| b.total_cmp(a));
        let s = dose_stats(&doses, Some(80.0)).unwrap();
        for (x, got) in [
            (98.0, s.d98_gy),
            (95.0, s.d95_gy),
            (50.0, s.d50_gy),
            (2.0, s.d2_gy),
        ] {
            assert_eq!(got, d_by_counting(&doses, x), "n {n}: D{x}");
        }
        assert!((s.mean_gy - (n as f64 + 1.0) / 2.0).abs() < 1e-9);
        // V95 of 80 Gy: doses ≥ 76.
        let above = (1..=n).filter(|d| *d as f64 >= 76.0).count() as f64;
        assert!((s.v95_percent.unwrap() - 100.0 * above / n as f64).abs() < 1e-9);
        let hi = (s.d2_gy - s.d98_gy) / s.d50_gy;
        assert_eq!(s.homogeneity_index, Some(hi));
    }
    // Odd count: D50 is the median.
    let doses: Vec<f32> = (1..=101).rev().map(|d| d as f32).collect();
    assert_eq!(dose_at_volume_percent(&doses, 50.0), Some(51.0));
    assert_eq!(
        dose_stats(&doses, None).unwrap().homogeneity_index,
        Some((99.0 - 3.0) / 51.0)
    );
    assert_eq!(dose_stats(&[], None), None);
    assert_eq!(volume_percent_at_dose(&[], 1.0), 0.0);
    // Uniform dose: HI 0.
    assert_eq!(dose_stats(&[2.0; 10], None).unwrap().homogeneity_index, Some(0.0));
}

#[test]
fn dvh_is_cumulative() {
    let doses: Vec<f32> = (0..1000).rev().map(|d| (d as f32) * 0.01).collect();
    let dvh = cumulative_dvh(&doses, 0.05, 220).unwrap();
    assert_eq!(dvh.volume_percent[0], 100.0);
    assert!(dvh.volume_percent.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(*dvh.volume_percent.last().unwrap(), 0.0);
    // 5 Gy: doses 5.00..9.99, half of them.
    let (d, v) = dvh.points().nth(100).unwrap();
    assert!((d - 5.0).abs() < 1e-12 && (v - 50.0).abs() < 1e-9, "{d} {v}");
    assert!(cumulative_dvh(&doses, 0.0, 10).is_err());
}

#[test]
fn roi_doses_sample_a_linear_dose_exactly() {
    // Dose 2 mm grid, ramp in x; ROI a box x ∈ [10, 30] mm on a 1 mm grid. Trilinear
    // interpolation of a linear dose is exact, so the mean is the ramp at the voxels' mean x.
    let dose = volume(ramp_grid(), |p| G_GY_PER_MM * p.x);
    let fine = Grid::axis_aligned([60, 8, 5], PointMm::new(0.0, -4.0, -2.0), [1.0; 3]).unwrap();
    let contours = [-2.0, -1.0, 0.0, 1.0, 2.0]
        .iter()
        .map(|&z| {
            Contour::new(vec![
                PointMm::new(10.0, -3.5, z),
                PointMm::new(30.0, -3.5, z),
                PointMm::new(30.0, 3.5, z),
                PointMm::new(10.0, 3.5, z),
            ])
        })
        .collect();
    let roi = Roi {
        number: 1,
        name: "BOX".into(),
        contours,
    };
    let (doses, mask) = sample_roi(&roi, &fine, &dose);
    assert_eq!(doses.voxels, mask.voxels);
    assert_eq!(doses.doses_desc_gy.len(), mask.voxels);
    // x centres 10..29 (half-open fill): mean x 19.5 mm.
    let s = doses.stats(None).unwrap();
    assert!((s.mean_gy - G_GY_PER_MM * 19.5).abs() < 1e-6, "{}", s.mean_gy);
    assert!((f64::from(doses.doses_desc_gy[0]) - 0.29).abs() < 1e-6);
}

#[test]
fn volume_above_outside_a_target() {
    // 10³ voxels of 2 mm (8 mm³): 2 Gy where i < 5, 0 elsewhere. Target i < 3, body j < 5.
    let grid = Grid::axis_aligned([10, 10, 10], PointMm::origin(), [2.0; 3]).unwrap();
    let dose = volume(grid.clone(), |p| if p.x < 9.0 { 2.0 } else { 0.0 });
    let mask = |f: &dyn Fn(usize, usize) -> bool| {
        let mut m = MaskVolume::filled(grid.clone(), 0);
        for k in 0..10 {
            for j in 0..10 {
                for i in 0..10 {
                    *m.get_mut(i, j, k).unwrap() = u8::from(f(i, j));
                }
            }
        }
        m
    };
    let target = mask(&|i, _| i < 3);
    let body = mask(&|_, j| j < 5);
    // Outside the target at ≥ 1 Gy: i ∈ {3, 4}, 200 voxels = 1.6 cc; 100 in the body.
    let whole = volume_above_outside_cc(&dose, &target, None, 1.0).unwrap();
    assert!((whole - 1.6).abs() < 1e-9, "{whole}");
    let in_body = volume_above_outside_cc(&dose, &target, Some(&body), 1.0).unwrap();
    assert!((in_body - 0.8).abs() < 1e-9, "{in_body}");
    let other = MaskVolume::filled(
        Grid::axis_aligned([5, 5, 5], PointMm::origin(), [2.0; 3]).unwrap(),
        1,
    );
    assert!(matches!(
        volume_above_outside_cc(&dose, &target, Some(&other), 1.0),
        Err(EvaluateError::GridMismatch { .. })
    ));
}
