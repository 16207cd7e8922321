//! The geometric planner on a CT with a target ROI, on a water cylinder in air whose answers
//! are known by hand: the layer depths are distances in water from the cylinder's surface
//! to the target sphere; the layer energies are the CSDA ranges of libamtrack 0.14
//! (`tests/data/physics`); the default beams take the shortest way in from the target's
//! side and go round a dense bar outside the body; and what cannot be planned is refused
//! with the reason.

use std::path::Path;

use ionguide::dicom::ct::{CtSeries, SeriesMeta};
use ionguide::geometry::Grid;
use ionguide::structure::{Contour, Roi, StructureSet};
use ionguide::units::{Ion, PointMm};
use ionguide::volume::Volume;
use ionguide_sim::planning::body::BodySource;
use ionguide_sim::planning::ct::{plan_ct, CtPlannerOptions};
use ionguide_sim::planning::PlannerError;

/// Voxel size and the cylinder's radius, mm.
const VOXEL_MM: f64 = 2.0;
const BODY_RADIUS_MM: f64 = 70.0;
const FOR_UID: &str = "2.25.4242";

fn meta() -> SeriesMeta {
    SeriesMeta {
        series_instance_uid: Some("2.25.4243".into()),
        study_instance_uid: Some("2.25.4244".into()),
        frame_of_reference_uid: FOR_UID.into(),
        patient_id: Some("WATER".into()),
        modality: "CT".into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        acquisition_date: None,
        acquisition_time: None,
        content_date: None,
        content_time: None,
        patient_position: Some("HFS".into()),
        temporal_position: None,
        acquisition: None,
        slices: 40,
        slice_spacing_mm: VOXEL_MM,
        max_spacing_deviation_mm: 0.0,
        files: Vec::new(),
    }
}

/// 100 × 100 × 40 voxels of 2 mm centred on the origin: a water cylinder (0 HU) of radius
/// 70 mm along z in air (−1000 HU), and, when `bar`, a bone-dense bar (1000 HU) on the
/// patient's right (LPS −x), x ∈ [−96, −84] mm, y ∈ [−40, 20] mm, clear of the cylinder.
fn water_cylinder(bar: bool) -> CtSeries {
    let grid = Grid::axis_aligned([100, 100, 40], PointMm::new(-99.0, -99.0, -39.0), [VOXEL_MM; 3]).unwrap();
    let mut ct = Volume::filled(grid.clone(), -1000i16);
    for k in 0..40 {
        for j in 0..100 {
            for i in 0..100 {
                let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                let v = if p.x.hypot(p.y) <= BODY_RADIUS_MM {
                    0
                } else if bar && (-96.0..=-84.0).contains(&p.x) && (-40.0..=20.0).contains(&p.y) {
                    1000
                } else {
                    continue;
                };
                *ct.get_mut(i, j, k).unwrap() = v;
            }
        }
    }
    CtSeries {
        volume: ct,
        meta: meta(),
    }
}

/// A sphere as one circle per CT slice plane it crosses.
fn sphere(name: &str, number: i32, c: [f64; 3], r_mm: f64) -> Roi {
    let mut contours = Vec::new();
    for k in -40..=80 {
        let z = -39.0 + VOXEL_MM * k as f64;
        let dz = z - c[2];
        if dz.abs() >= r_mm {
            continue;
        }
        let rr = (r_mm * r_mm - dz * dz).sqrt();
        let points = (0..48)
            .map(|n| {
                let a = n as f64 * std::f64::consts::TAU / 48.0;
                PointMm::new(c[0] + rr * a.cos(), c[1] + rr * a.sin(), z)
            })
            .collect();
        contours.push(Contour::new(points));
    }
    Roi {
        number,
        name: name.into(),
        contours,
    }
}

fn structures(rois: Vec<Roi>) -> StructureSet {
    StructureSet {
        frame_of_reference_uid: FOR_UID.into(),
        rois,
    }
}

/// libamtrack's CSDA range of `ion` at `energy_mev_u`, log-log between its 50 MeV/u steps.
fn libamtrack_range_mm(ion: &str, energy_mev_u: f64) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/physics/ion_csda_range_water_libamtrack.csv");
    let rows: Vec<(f64, f64)> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 3 && f[0] == ion).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect();
    let k = rows
        .partition_point(|r| r.0 < energy_mev_u)
        .clamp(1, rows.len() - 1);
    let ((e0, r0), (e1, r1)) = (rows[k - 1], rows[k]);
    assert!(
        (e0..=e1).contains(&energy_mev_u),
        "{energy_mev_u} MeV/u outside libamtrack's rows"
    );
    (r0.ln() + (r1 / r0).ln() * (energy_mev_u / e0).ln() / (e1 / e0).ln()).exp()
}

#[test]
fn layer_depths_are_the_water_depths_of_the_target_and_energies_libamtracks_ranges() {
    let ct = water_cylinder(false);
    // Target sphere of 15 mm at y = −20 mm: its near side is 35 mm of water below the
    // anterior surface (y = −70), its far side 65 mm.
    let rs = structures(vec![sphere("GTV", 1, [0.0, -20.0, 0.0], 15.0)]);
    for (ion, name) in [
        (Ion::PROTON, "1H"),
        (Ion::HELIUM4, "4He"),
        (Ion::CARBON12, "12C"),
        (Ion::OXYGEN16, "16O"),
        (Ion::NEON20, "20Ne"),
    ] {
        let options = CtPlannerOptions {
            ion,
            gantry_angles_deg: Some(vec![0.0]),
            margin_mm: 0.0,
            spot_spacing_mm: Some(3.0),
            layer_spacing_mm: Some(2.0),
            ..CtPlannerOptions::default()
        };
        let p = plan_ct(&ct, &rs, "GTV", &options).unwrap();
        let beam = &p.summary.beams[0];
        eprintln!("{name}: {beam:?}");
        assert_eq!(
            p.summary.body,
            BodySource::Threshold {
                threshold_hu: -400.0,
                empty_roi: None
            }
        );
        assert_eq!(beam.entering_at_ct_edge, 0.0, "the skin is imaged all round");
        // voxels of 2 mm: the surfaces are placed to within a voxel
        assert!((beam.depth_mm_we[0] - 35.0).abs() <= VOXEL_MM, "{beam:?}");
        assert!(
            beam.depth_mm_we[1] <= 65.0 + VOXEL_MM && beam.depth_mm_we[1] >= 65.0 - VOXEL_MM - 2.0,
            "{beam:?}"
        );
        let plan = &p.plan;
        assert_eq!(plan.beams[0].ion, ion);
        assert_eq!(plan.frame_of_reference_uid, FOR_UID);
        assert_eq!(plan.patient_id, "WATER");
        // distal layer first; consecutive layers 2 mm of water apart
        let energies: Vec<f64> = plan.beams[0].layers.iter().map(|l| l.energy_mev_u).collect();
        assert!(energies.windows(2).all(|w| w[0] > w[1]), "{energies:?}");
        if ion != Ion::PROTON {
            let depth_of = |e: f64| libamtrack_range_mm(name, e);
            let deepest = depth_of(energies[0]);
            let shallowest = depth_of(*energies.last().unwrap());
            // the range table agrees with libamtrack within 0.3 %; its 50 MeV/u rows
            // interpolated log-log add less than 1 %
            assert!(
                (deepest - beam.depth_mm_we[1]).abs() <= 0.015 * deepest,
                "{name}: {deepest}"
            );
            assert!(
                (shallowest - beam.depth_mm_we[0]).abs() <= 0.015 * shallowest,
                "{name}: {shallowest}"
            );
        }
        // the spots cover the sphere's shadow: 15 mm radius at 3 mm spacing
        let xs: Vec<f64> = plan.beams[0]
            .layers
            .iter()
            .flat_map(|l| l.spots.iter().map(|s| s.x_mm))
            .collect();
        let span = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - xs.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((span - 30.0).abs() <= 6.0, "lateral span {span} mm");
    }
}

#[test]
fn default_beams_enter_on_the_targets_side_and_go_round_dense_material_outside_the_body() {
    // Target on the patient's right-anterior, 37 mm from the cylinder's axis: the nearest
    // skin is straight out along (−35, −10), i.e. from gantry 360° − 74° = 286° (HFS: the
    // source direction is (sin g, −cos g) in LPS x, y).
    let rs = structures(vec![sphere("GTV", 1, [-35.0, -10.0, 0.0], 12.0)]);
    let options = CtPlannerOptions {
        spot_spacing_mm: Some(3.0),
        layer_spacing_mm: Some(3.0),
        ..CtPlannerOptions::default()
    };
    let free = plan_ct(&water_cylinder(false), &rs, "GTV", &options).unwrap();
    let angles: Vec<f64> = free.summary.beams.iter().map(|b| b.gantry_deg).collect();
    eprintln!("without the bar: {angles:?}");
    assert_eq!(angles.len(), 2);
    // Near the radial direction the way in is flat (±15° adds under 1 mm of water), finer
    // than the 2 mm voxels: the angle is checked to 20°, and its depth to the analytic
    // shortest, 70 − 36.4 − 12 − 3 (the margin) = 18.6 mm, to a voxel and a half.
    assert!((angles[0] - 286.0).abs() <= 20.0, "{angles:?}");
    let near = free.summary.beams[0].depth_mm_we[0];
    assert!(
        (near - 18.6).abs() <= 1.5 * VOXEL_MM,
        "first beam's shallowest layer {near} mm"
    );
    let sep = |a: f64, b: f64| {
        let d = (a - b).rem_euclid(360.0);
        d.min(360.0 - d)
    };
    assert!((60.0..=120.0).contains(&sep(angles[0], angles[1])), "{angles:?}");
    for a in &angles {
        assert!(sep(*a, 0.0) <= 90.0, "gantry {a}° comes up from below the table");
    }

    let blocked = plan_ct(&water_cylinder(true), &rs, "GTV", &options).unwrap();
    let angles: Vec<f64> = blocked.summary.beams.iter().map(|b| b.gantry_deg).collect();
    eprintln!("with the bar: {angles:?}");
    assert_eq!(angles.len(), 2);
    // the body outline found from the CT is the cylinder only
    assert_eq!(blocked.summary.target_inside_body, 1.0);
    for g in &angles {
        // the central ray from the target towards the source misses the bar
        let (s, c) = g.to_radians().sin_cos();
        let hits = (0..400).any(|n| {
            let t = n as f64 * 0.5;
            let (x, y) = (-35.0 + t * s, -10.0 - t * c);
            (-96.0..=-84.0).contains(&x) && (-40.0..=20.0).contains(&y)
        });
        assert!(!hits, "gantry {g}° passes through the bar");
    }
}

#[test]
fn a_body_roi_is_the_outline_when_the_structure_set_has_one() {
    let rs = structures(vec![
        sphere("GTV", 1, [0.0, -20.0, 0.0], 15.0),
        // an outline smaller than the water: the target still inside it
        sphere("External", 2, [0.0, 0.0, 0.0], 60.0),
    ]);
    let p = plan_ct(
        &water_cylinder(false),
        &rs,
        "GTV",
        &CtPlannerOptions {
            gantry_angles_deg: Some(vec![0.0]),
            spot_spacing_mm: Some(4.0),
            layer_spacing_mm: Some(4.0),
            ..CtPlannerOptions::default()
        },
    )
    .unwrap();
    assert_eq!(p.summary.body, BodySource::Roi("External".into()));
    // the outline's sphere ends inside the water on the central slices only: rays near the
    // axis meet water before it, counted as entering at the skin — they meet no CT edge
    assert_eq!(p.summary.beams[0].entering_at_ct_edge, 0.0);
}

#[test]
fn what_cannot_be_planned_is_refused_with_the_reason() {
    let ct = water_cylinder(false);
    let opts = CtPlannerOptions {
        gantry_angles_deg: Some(vec![0.0]),
        spot_spacing_mm: Some(4.0),
        layer_spacing_mm: Some(4.0),
        ..CtPlannerOptions::default()
    };
    let rs = structures(vec![
        sphere("GTV", 1, [0.0, -20.0, 0.0], 15.0),
        // beyond the last slice (z ≤ 39 mm)
        sphere("BEYOND", 2, [0.0, 0.0, 80.0], 10.0),
        // half beyond it
        sphere("HALF", 3, [0.0, 0.0, 35.0], 10.0),
        // in the air beside the cylinder, inside the CT
        sphere("AIR", 4, [80.0, -80.0, 0.0], 8.0),
    ]);
    match plan_ct(&ct, &rs, "PTV", &opts) {
        Err(e @ PlannerError::TargetNotFound { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("\"PTV\"") && msg.contains("\"GTV\"") && msg.contains("\"AIR\""),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    for roi in ["BEYOND", "HALF"] {
        match plan_ct(&ct, &rs, roi, &opts) {
            Err(PlannerError::TargetOutsideCt { roi: r, reason }) => {
                assert_eq!(r, roi);
                eprintln!("{roi}: {reason}");
            }
            other => panic!("{roi}: {other:?}"),
        }
    }
    match plan_ct(&ct, &rs, "AIR", &opts) {
        Err(e @ PlannerError::NoPathFromSkin { .. }) => assert!(e.to_string().contains("0%"), "{e}"),
        other => panic!("{other:?}"),
    }
    // 12C reaching 65 mm of water needs about 170 MeV/u; a machine stopping at 120 cannot
    let low = CtPlannerOptions {
        energy_limits_mev_u: Some([88.0, 120.0]),
        ..opts.clone()
    };
    match plan_ct(&ct, &rs, "GTV", &low) {
        Err(PlannerError::EnergyOutOfRange {
            depth_mm_we,
            energy_mev_u,
            limits_mev_u,
            ..
        }) => {
            assert!((depth_mm_we - 65.0).abs() <= 2.0 * VOXEL_MM, "{depth_mm_we}");
            assert!(energy_mev_u > 120.0, "{energy_mev_u}");
            assert_eq!(limits_mev_u, [88.0, 120.0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_outline_found_from_the_ct_fills_the_lungs_and_leaves_out_what_is_not_the_patient() {
    // the cylinder with a "lung" of −800 HU inside (x² + y² ≤ 30²), and the bar beside it
    let mut ct = water_cylinder(true);
    let grid = ct.volume.grid().clone();
    let [nx, ny, nz] = grid.dims();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                if p.x.hypot(p.y) <= 30.0 {
                    *ct.volume.get_mut(i, j, k).unwrap() = -800;
                }
            }
        }
    }
    let body = ionguide_sim::planning::body::body_from_ct(&ct.volume, -400.0);
    let mut wrong = 0;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                let inside = *body.mask.get(i, j, k).unwrap() != 0;
                // the cylinder's voxels (lung included), nothing else — not the bar
                wrong += usize::from(inside != (p.x.hypot(p.y) <= BODY_RADIUS_MM));
            }
        }
    }
    assert_eq!(wrong, 0);
    assert_eq!(
        body.voxels,
        (0..nx * ny * nz)
            .filter(|o| body.mask.as_slice()[*o] != 0)
            .count()
    );
}
