//! A replay on a user's own CT with no plan: every real CT series with a contoured target
//! (STS_001 … STS_004, `tests/data`, copies of the shared data's `ct/`) is planned by the
//! geometric planner for its GTV, the plan's spots are checked against the contour they
//! were planned for, and a real breathing recording (the bundled ExtMarker trace) drives the
//! whole chain on it, tracking within the same bars as the replay with a planning system's
//! plan (`replay.rs`).

use std::path::Path;

use ionguide::dicom::rtstruct::read_structure_set;
use ionguide::geometry::Grid;
use ionguide::units::PointMm;
use ionguide_sim::imaging::sources::RealCtFrames;
use ionguide_sim::motion::tumor::{displacements, TumorMotionModel};
use ionguide_sim::planning::ct::CtPlannerOptions;
use ionguide_sim::replay::{load_session, run, ReplayOptions, ReplayResult};
use ionguide_sim::scenario;

/// Generous: these runs share 2 cores with the rest of the suite; speed is the bench's job.
const BUDGET_MS: f64 = 1000.0;

/// The bars of `replay.rs`'s real-CT replay.
fn bars(case: &str, r: &ReplayResult) {
    let rep = &r.report;
    eprintln!(
        "{case}: frames {} corrected {} | tumor p95 {:?} spot p95 {:?} range p95 {:?} latency p99 {:?}",
        rep.frames,
        rep.corrected,
        rep.tumor_error_mm.p95,
        rep.spot_error_mm.p95,
        rep.range_error_mm.p95,
        rep.latency_ms.p99
    );
    assert!(rep.frames >= 10, "{case}: {} frames", rep.frames);
    assert!(
        rep.corrected >= rep.frames - 2,
        "{case}: nearly every frame corrected: {rep:?}"
    );
    assert_eq!(rep.stale_corrections, 0, "{case}");
    assert!(
        rep.tumor_error_mm.p95.unwrap() <= 0.5,
        "{case}: tumor error {:?}",
        rep.tumor_error_mm
    );
    assert!(
        rep.spot_error_mm.p95.unwrap() <= 0.5,
        "{case}: spot error {:?}",
        rep.spot_error_mm
    );
    assert!(
        rep.range_error_mm.p95.unwrap() <= 1.0,
        "{case}: range error {:?}",
        rep.range_error_mm
    );
    assert!(rep.latency_ms.p99.unwrap() <= rep.budget_ms, "{case}");
}

/// Whether `p` lies within `reach_mm` of a voxel of `mask` (a box search on the grid).
fn near_mask(grid: &Grid, mask: &[u8], p: &PointMm, reach_mm: f64) -> bool {
    let c = grid.patient_to_index(p);
    let sp = grid.spacing_mm();
    let dims = grid.dims();
    let r = [0, 1, 2].map(|a| (reach_mm / sp[a]).ceil() as i64);
    let c0 = c.map(|v| v.round() as i64);
    for dk in -r[2]..=r[2] {
        for dj in -r[1]..=r[1] {
            for di in -r[0]..=r[0] {
                let (i, j, k) = (c0[0] + di, c0[1] + dj, c0[2] + dk);
                if i < 0
                    || j < 0
                    || k < 0
                    || i >= dims[0] as i64
                    || j >= dims[1] as i64
                    || k >= dims[2] as i64
                {
                    continue;
                }
                if mask[grid.offset(i as usize, j as usize, k as usize)] == 0 {
                    continue;
                }
                let q = grid.index_to_patient([i as f64, j as f64, k as f64]);
                if (q - p).norm() <= reach_mm {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn every_real_ct_replays_without_a_plan_with_its_gtv_within_the_bars() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let (t, d) = displacements(
        &scenario::bundled_trace(),
        10.0,
        &TumorMotionModel::default(),
        Some(20),
    )
    .unwrap();
    let mut replayed = 0;
    for case in ["STS_001", "STS_002", "STS_003", "STS_004"] {
        let (image, rs) = (data.join(case).join("image"), data.join(case).join("mask/RS.dcm"));
        if !image.is_dir() || !rs.is_file() {
            eprintln!("NOTICE: {case} not in {}: skipped", data.display());
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let options = CtPlannerOptions::default();
        let (config, planned) =
            scenario::write_user_session_planned(dir.path(), &image, &rs, "GTV_Mass_CT", &options, BUDGET_MS)
                .unwrap();
        let s = &planned.summary;
        eprintln!("{case}: {s:?}");
        let spots: usize = s.beams.iter().map(|b| b.spots).sum();
        // the automatic spacings hold the spot budget to within the estimate's slack
        assert!(spots <= options.max_spots * 11 / 10, "{case}: {spots} spots");
        assert_eq!(s.beams.len(), 2, "{case}");
        // the beams are oriented by the CT's own Patient Position (pydicom reads FFS for
        // STS_004, HFS for the others)
        let position = if case == "STS_004" { "FFS" } else { "HFS" };
        assert_eq!(s.patient_position, position, "{case}");
        assert!(planned
            .plan
            .beams
            .iter()
            .all(|b| b.patient_position.as_deref() == Some(position)));

        // Every spot's Bragg peak, as the pipeline's own tracer places it on the planning CT
        // (where the ray's WEPL reaches the CSDA range of its energy), lies in the GTV grown
        // by the margin, give or take the planner's ray step and a voxel diagonal; and the
        // peaks fill the GTV: each of its voxels has one within a spot or layer spacing.
        let (_, session) = load_session(&config).unwrap();
        let grid = session.planning_ct.grid().clone();
        let gtv = read_structure_set(&rs)
            .unwrap()
            .roi("GTV_Mass_CT")
            .unwrap()
            .rasterize(&grid);
        let gtv_mask = gtv.mask.as_slice();
        let tracer = &session.planned;
        let peaks: Vec<PointMm> = (0..tracer.spots().len())
            .map(|i| {
                tracer
                    .target_point_mm(i)
                    .unwrap_or_else(|| panic!("{case}: spot {i} has no peak"))
            })
            .collect();
        let voxel_diag = grid.spacing_mm().iter().map(|s| s * s).sum::<f64>().sqrt();
        let outside = peaks
            .iter()
            .filter(|p| !near_mask(&grid, gtv_mask, p, options.margin_mm + voxel_diag))
            .count();
        eprintln!(
            "{case}: {outside} of {} Bragg peaks beyond the GTV + margin",
            peaks.len()
        );
        assert!(
            outside * 100 <= peaks.len(),
            "{case}: {outside} of {} Bragg peaks outside the GTV + margin",
            peaks.len()
        );
        let reach = s.spot_spacing_mm.max(s.layer_spacing_mm);
        let cell = 10.0;
        let mut buckets: std::collections::HashMap<[i64; 3], Vec<PointMm>> = Default::default();
        for p in &peaks {
            buckets
                .entry([p.x, p.y, p.z].map(|v| (v / cell).floor() as i64))
                .or_default()
                .push(*p);
        }
        let (mut uncovered, mut checked) = (0usize, 0usize);
        for (o, _) in gtv_mask.iter().enumerate().filter(|(_, &m)| m != 0).step_by(13) {
            let [nx, ny, _] = grid.dims();
            let q = grid.index_to_patient([(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64]);
            let b = [q.x, q.y, q.z].map(|v| (v / cell).floor() as i64);
            let mut hit = false;
            'search: for dx in -1..=1 {
                for dy in -1..=1 {
                    for dz in -1..=1 {
                        if let Some(v) = buckets.get(&[b[0] + dx, b[1] + dy, b[2] + dz]) {
                            if v.iter().any(|p| (p - q).norm() <= reach) {
                                hit = true;
                                break 'search;
                            }
                        }
                    }
                }
            }
            checked += 1;
            uncovered += usize::from(!hit);
        }
        eprintln!(
            "{case}: {uncovered} of {checked} GTV voxels sampled without a Bragg peak within {reach} mm"
        );
        assert!(
            uncovered * 100 <= checked,
            "{case}: {uncovered} of {checked} GTV voxels sampled have no Bragg peak within {reach} mm"
        );

        let mut frames = RealCtFrames::load(&image).unwrap();
        let r = run(case, &config, &mut frames, &t, &d, &ReplayOptions::default()).unwrap();
        bars(case, &r);
        replayed += 1;
    }
    eprintln!("{replayed} real CTs replayed without a plan");
}

/// The fifth real CT of the shared data, TotalSegmentator's 512 × 512 × 20 JPEG 2000 series,
/// has no structure set: it is planned for a 15 mm sphere at the centre of its body outline
/// (a target made here, in memory), which the rays reach through skin that is imaged, and
/// every Bragg peak the pipeline's tracer finds lies in the sphere plus the margin.
#[test]
fn the_full_width_real_ct_is_planned_through_imaged_skin_with_every_peak_in_the_target() {
    use ionguide::range::{SpotTracer, SpotTracerOptions};
    use ionguide::structure::{Contour, Roi, StructureSet};
    use ionguide_sim::planning::body::{body_from_ct, BodySource};
    use ionguide_sim::planning::ct::plan_ct;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/totalseg_j2k");
    if !dir.is_dir() {
        eprintln!("NOTICE: {} absent: skipped", dir.display());
        return;
    }
    let series = ionguide::dicom::ct::read_series_dir(&dir).unwrap();
    let grid = series.volume.grid().clone();
    let body = body_from_ct(&series.volume, -400.0);
    let [nx, ny, nz] = grid.dims();
    let mut sum = [0.0; 3];
    for (o, _) in body.mask.as_slice().iter().enumerate().filter(|(_, &m)| m != 0) {
        let p = grid.index_to_patient([(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64]);
        for a in 0..3 {
            sum[a] += p[a];
        }
    }
    let c = sum.map(|s| s / body.voxels as f64);
    let r_mm = 15.0;
    let contours = (0..nz)
        .filter_map(|k| {
            let z = grid.index_to_patient([0.0, 0.0, k as f64]).z;
            let rr = (r_mm * r_mm - (z - c[2]).powi(2)).sqrt();
            (rr.is_finite() && rr > 1.0).then(|| {
                Contour::new(
                    (0..48)
                        .map(|n| {
                            let a = n as f64 * std::f64::consts::TAU / 48.0;
                            PointMm::new(c[0] + rr * a.cos(), c[1] + rr * a.sin(), z)
                        })
                        .collect(),
                )
            })
        })
        .collect();
    let structures = StructureSet {
        frame_of_reference_uid: series.meta.frame_of_reference_uid.clone(),
        rois: vec![Roi {
            number: 1,
            name: "SPHERE".into(),
            contours,
        }],
    };
    let options = CtPlannerOptions::default();
    let planned = plan_ct(&series, &structures, "SPHERE", &options).unwrap();
    let s = &planned.summary;
    eprintln!("totalseg_j2k: body centre {c:?}, {s:?}");
    assert!(matches!(s.body, BodySource::Threshold { .. }));
    assert_eq!(s.target_inside_body, 1.0);
    assert_eq!(s.beams.len(), 2);
    for b in &s.beams {
        assert_eq!(
            b.entering_at_ct_edge, 0.0,
            "gantry {}°: the skin is in this CT",
            b.gantry_deg
        );
        assert!(b.gantry_deg <= 90.0 || b.gantry_deg >= 270.0);
    }
    let mut tracer = SpotTracer::new(&planned.plan, &SpotTracerOptions::new(options.virtual_sad_mm)).unwrap();
    tracer.trace_frame_ct(&series.volume, &options.hlut);
    let voxel_diag = grid.spacing_mm().iter().map(|s| s * s).sum::<f64>().sqrt();
    let centre = PointMm::new(c[0], c[1], c[2]);
    let mut worst: f64 = 0.0;
    for i in 0..tracer.spots().len() {
        let p = tracer.target_point_mm(i).expect("every spot has a peak");
        worst = worst.max((p - centre).norm());
    }
    eprintln!("farthest Bragg peak from the sphere's centre: {worst:.2} mm");
    assert!(worst <= r_mm + options.margin_mm + voxel_diag, "{worst} mm");
}
