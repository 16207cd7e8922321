//! Range–energy against libamtrack, facility tables, HLUT loading, and IEC 61217 beam
//! geometry against the convention's stated directions.

use std::path::Path;

use ionguide::geometry::Grid;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::beam::{BeamGeometry, PatientPosition};
use ionguide::range::facility::FacilityTable;
use ionguide::range::range_energy::RangeEnergyTable;
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::{Hlut, RangeError};
use ionguide::units::{Ion, MmWe, PointMm, VectorMm};
use ionguide::volume::{CtVolume, Volume};
use proptest::prelude::*;

fn clinical_span(ion: Ion) -> (f64, f64) {
    match (ion.z, ion.a) {
        (2, 4) => (50.0, 250.0),
        (6, 12) => (80.0, 430.0),
        _ => (100.0, 500.0),
    }
}

/// Rows `(ion, energy, range_mm)` of a CSV whose first columns are ion, energy, range.
fn libamtrack_rows() -> Vec<(Ion, f64, f64)> {
    let mut rows = Vec::new();
    let text = std::fs::read_to_string("tests/data/physics/ion_csda_range_water_libamtrack.csv").unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("ion"))
    {
        let c: Vec<&str> = line.split(',').collect();
        rows.push((
            c[0].parse().unwrap(),
            c[1].parse().unwrap(),
            c[2].parse().unwrap(),
        ));
    }
    // The 4-code carbon table adds libamtrack at 80 and 430 MeV/u (the clinical ends).
    let text = std::fs::read_to_string("tests/data/physics/carbon_water_csda_ranges_4codes.csv").unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let c: Vec<&str> = line.split(',').collect();
        rows.push((Ion::CARBON12, c[0].parse().unwrap(), c[1].parse().unwrap()));
    }
    rows
}

#[test]
fn csda_range_within_one_percent_of_libamtrack_over_clinical_energies() {
    let mut checked = 0;
    for ion in [Ion::HELIUM4, Ion::CARBON12, Ion::OXYGEN16, Ion::NEON20] {
        let table = RangeEnergyTable::new(ion).unwrap();
        let (lo, hi) = clinical_span(ion);
        for &(_, e, want) in libamtrack_rows()
            .iter()
            .filter(|r| r.0 == ion && r.1 >= lo && r.1 <= hi)
        {
            let got = table.range_mm(e).unwrap().get();
            assert!(
                (got / want - 1.0).abs() < 0.01,
                "{ion} {e} MeV/u: {got} vs {want} mm"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} rows checked");
}

proptest! {
    #[test]
    fn range_energy_round_trips_and_is_monotonic(e in 1.0f64..1000.0, de in 0.01f64..10.0, k in 0usize..5) {
        let t = RangeEnergyTable::new(Ion::SUPPORTED[k]).unwrap();
        let r = t.range_mm(e).unwrap();
        let back = t.energy_mev_u(r).unwrap();
        prop_assert!((back / e - 1.0).abs() < 1e-9, "{e} → {r} → {back}");
        if e + de <= 1000.0 {
            prop_assert!(t.range_mm(e + de).unwrap() > r);
        }
    }
}

const MATRAD: &str = "tests/data/physics/carbon_bragg_peak_depth_matRad_generic.csv";

#[test]
fn facility_table_round_trips_and_snaps() {
    let f = FacilityTable::from_file(Path::new(MATRAD)).unwrap();
    let (e, d) = (f.energies_mev_u().to_vec(), f.depths_mm().to_vec());
    assert_eq!((e[0], d[0]), (115.23, 29.802));
    for (ei, di) in e.iter().zip(&d) {
        assert!((f.depth_mm(*ei).unwrap().get() - di).abs() < 1e-9);
        assert!((f.energy_mev_u(MmWe(*di)).unwrap() - ei).abs() < 1e-9);
    }
    let mid_e = 0.5 * (e[3] + e[4]);
    let back = f.energy_mev_u(f.depth_mm(mid_e).unwrap()).unwrap();
    assert!((back - mid_e).abs() < 1e-9);
    // A depth 30 % of the way from row 3 to row 4 snaps to row 3, residual −30 % of the gap.
    let want = d[3] + 0.3 * (d[4] - d[3]);
    let s = f.snap_depth(MmWe(want)).unwrap();
    assert_eq!(s.index, 3);
    assert!((s.residual.get() + 0.3 * (d[4] - d[3])).abs() < 1e-9);
    let s = f.snap_depth(MmWe(d[3] + 0.7 * (d[4] - d[3]))).unwrap();
    assert_eq!(s.index, 4);
    assert_eq!(f.snap_energy(e[7]).unwrap().index, 7);
    assert!(matches!(
        f.snap_depth(MmWe(1.0)),
        Err(RangeError::DepthOutOfTable { .. })
    ));
    assert!(matches!(
        f.depth_mm(1000.0),
        Err(RangeError::EnergyOutOfTable { .. })
    ));
    // Bad CSVs name the row.
    let p = Path::new("bad.csv");
    let cases = [
        ("# h\n100,20\n90,25\n", 3),
        ("100,20\n110,x\n", 2),
        ("100,20\n110,NaN\n", 2),
        ("100\n", 1),
        ("100,20\n", 0),
    ];
    for (text, row) in cases {
        match FacilityTable::from_csv_str(text, p) {
            Err(RangeError::BadTable { row: r, .. }) => assert_eq!(r, row, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn hlut_converts_a_ct_volume_and_rejects_bad_files() {
    let grid = Grid::axis_aligned([3, 1, 1], PointMm::origin(), [1.0; 3]).unwrap();
    let ct = CtVolume::from_array(
        grid,
        ndarray::Array3::from_shape_vec((1, 1, 3), vec![-1000i16, 0, 350]).unwrap(),
    )
    .unwrap();
    let rsp = Hlut::default().convert(&ct);
    assert_eq!(rsp.as_slice(), &[0.001f32, 1.0, 1.199]);
    let missing = Hlut::from_file(Path::new("tests/data/does-not-exist.csv"));
    assert!(matches!(missing, Err(RangeError::Io { .. })));
}

fn lps(v: VectorMm) -> [i32; 3] {
    [v.x.round() as i32, v.y.round() as i32, v.z.round() as i32]
}

#[test]
fn iec61217_gantry_and_couch_map_to_expected_lps_directions() {
    let iso = PointMm::new(1.0, 2.0, 3.0);
    let inf = [f64::INFINITY; 2];
    // HFS couch 0: source anterior, left, posterior, right (DICOM C.8.8.25.6.1; IEC 61217).
    for (g, src) in [
        (0.0, [0, -1, 0]),
        (90.0, [1, 0, 0]),
        (180.0, [0, 1, 0]),
        (270.0, [-1, 0, 0]),
    ] {
        let b = BeamGeometry::new(PatientPosition::Hfs, g, 0.0, iso, inf);
        assert_eq!(lps(b.to_source), src, "gantry {g}");
        assert!((b.to_source.norm() - 1.0).abs() < 1e-12);
        // Y_g is Y_f: toward the gantry, the patient's head for HFS.
        assert_eq!(lps(b.bev_y), [0, 0, 1]);
    }
    // Gantry 0: X_g = X_f = patient left.
    assert_eq!(
        lps(BeamGeometry::new(PatientPosition::Hfs, 0.0, 0.0, iso, inf).bev_x),
        [1, 0, 0]
    );
    // Couch 90 (counter-clockwise from above) turns the head to −X_f: gantry 90 then comes
    // from the feet, gantry 270 from the head; gantry 0 stays anterior.
    let c90 = |g| BeamGeometry::new(PatientPosition::Hfs, g, 90.0, iso, inf).to_source;
    assert_eq!(lps(c90(90.0)), [0, 0, -1]);
    assert_eq!(lps(c90(270.0)), [0, 0, 1]);
    assert_eq!(lps(c90(0.0)), [0, -1, 0]);
    // Other positions: prone puts the posterior up; feet-first swaps left and right.
    assert_eq!(
        lps(BeamGeometry::new(PatientPosition::Hfp, 0.0, 0.0, iso, inf).to_source),
        [0, 1, 0]
    );
    assert_eq!(
        lps(BeamGeometry::new(PatientPosition::Hfp, 90.0, 0.0, iso, inf).to_source),
        [-1, 0, 0]
    );
    assert_eq!(
        lps(BeamGeometry::new(PatientPosition::Ffs, 90.0, 0.0, iso, inf).to_source),
        [-1, 0, 0]
    );
    assert_eq!(
        lps(BeamGeometry::new(PatientPosition::Ffp, 0.0, 0.0, iso, inf).to_source),
        [0, 1, 0]
    );
}

#[test]
fn spot_rays_diverge_from_the_virtual_sources() {
    let iso = PointMm::new(0.0, 0.0, 0.0);
    let b = BeamGeometry::new(PatientPosition::Hfs, 0.0, 0.0, iso, [6000.0, 8000.0]);
    // Spot (10, 20): at the isocenter plane 10 mm left, 20 mm superior.
    let p0 = b.spot_point(10.0, 20.0, 0.0);
    assert!((p0 - PointMm::new(10.0, 0.0, 20.0)).norm() < 1e-12);
    // At the X source the X offset vanishes; at the Y source the Y offset does.
    let px = b.spot_point(10.0, 20.0, 6000.0);
    assert!(px.x.abs() < 1e-9 && (px.y + 6000.0).abs() < 1e-9);
    let py = b.spot_point(10.0, 20.0, 8000.0);
    assert!(py.z.abs() < 1e-9);
    // The ray is a straight line through both.
    let r = b.spot_ray(10.0, 20.0, 1000.0);
    let t = (p0 - r.origin).norm();
    assert!((r.at(t) - p0).norm() < 1e-9);
    assert!(
        (r.direction.y - 1.0).abs() < 1e-3,
        "beam travels posterior: {:?}",
        r.direction
    );
}

fn beam(number: i32, gantry: f64, position: Option<&str>, energies: &[f64], spots: &[(f64, f64)]) -> IonBeam {
    IonBeam {
        number,
        name: format!("B{number}"),
        radiation_type: "ION".into(),
        ion: Ion::CARBON12,
        gantry_angle_deg: gantry,
        couch_angle_deg: 0.0,
        isocenter_mm: PointMm::new(0.0, 0.0, 0.0),
        patient_position: position.map(str::to_string),
        virtual_sad_mm: None,
        range_shifters: vec![],
        primary_dosimeter_unit: None,
        layers: energies
            .iter()
            .map(|&e| EnergyLayer {
                energy_mev_u: e,
                spots: spots
                    .iter()
                    .map(|&(x, y)| Spot {
                        x_mm: x,
                        y_mm: y,
                        weight: 1.0,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[test]
fn spot_tracer_finds_target_points_in_a_water_box() {
    // 200 mm water cube centred on the isocenter, 2 mm voxels.
    let grid = Grid::axis_aligned([100, 100, 100], PointMm::new(-99.0, -99.0, -99.0), [2.0; 3]).unwrap();
    let water = Volume::filled(grid, 1.0f32);
    let plan = IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "p".into(),
        label: "t".into(),
        beams: vec![
            beam(1, 0.0, Some("HFS"), &[150.0, 200.0], &[(0.0, 0.0), (10.0, -5.0)]),
            beam(2, 90.0, None, &[400.0], &[(0.0, 0.0)]),
        ],
    };
    let mut tracer = SpotTracer::new(&plan, &SpotTracerOptions::new([f64::INFINITY; 2])).unwrap();
    assert_eq!(tracer.rays().len(), 3, "two positions in beam 1, one in beam 2");
    tracer.trace_frame(&water);
    let c = RangeEnergyTable::new(Ion::CARBON12).unwrap();
    for (n, s) in tracer.spots().iter().enumerate() {
        let want_depth = c.range_mm(s.energy_mev_u).unwrap();
        assert!((s.planned_depth - want_depth).abs().get() < 1e-12);
        // In water (RSP 1) a water-equivalent depth is a geometric one.
        let want_depth = want_depth.get();
        match tracer.target_point_mm(n) {
            Some(p) if s.beam == 0 => {
                // Beam from anterior (y = −100 face): target at y = −100 + depth.
                assert!((p.y - (-100.0 + want_depth)).abs() < 1e-9, "{p}");
            }
            None if s.beam == 1 => {
                // 400 MeV/u carbon (~270 mm) overshoots the 200 mm box.
                assert!(want_depth > 200.0);
            }
            other => panic!("spot {n}: {other:?}"),
        }
    }
    // Unsupported patient position is a typed error.
    let mut bad = plan.clone();
    bad.beams[0].patient_position = Some("HFDL".into());
    assert!(matches!(
        SpotTracer::new(&bad, &SpotTracerOptions::new([f64::INFINITY; 2])),
        Err(RangeError::UnsupportedPatientPosition { beam: 1, .. })
    ));
}
