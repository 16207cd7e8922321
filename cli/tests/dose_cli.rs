//! `ionguide dose` end to end on a water phantom written with ionguide's own CT, structure
//! set and plan writers: one carbon beam of 9×9 spots 3 mm apart at 115.23 MeV/u (matRad's Bragg peak
//! at 29.8 mm). The JSON carries every figure; D50 of a box in the entrance plateau matches
//! the kernel's own grid at the box centre; the RT Dose bytes are the same on a rerun.

use std::path::Path;
use std::process::Command;

use ionguide::dicom::ct::{read_series_dir, write_ct_series, CtSeriesIds};
use ionguide::dicom::rtplan::{read_plan, write_plan};
use ionguide::dicom::rtstruct::{write_structure_set, StructureSetIds};
use ionguide::dicom::write::Producer;
use ionguide::dose::{compute_dose, dose_grid_like, DoseOptions, IonMachine};
use ionguide::geometry::Grid;
use ionguide::plan::{DosimeterUnit, EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::Hlut;
use ionguide::structure::{Contour, Roi, StructureSet};
use ionguide::units::{Ion, PointMm};
use ionguide::volume::CtVolume;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const PRODUCER: Producer = Producer {
    manufacturer: "ionguide-test",
    implementation_class_uid: "2.25.1234567",
    implementation_version_name: "IONGUIDE_TEST",
};

fn ct_ids() -> CtSeriesIds {
    CtSeriesIds {
        patient_id: "WATER".into(),
        patient_name: "Water^Phantom".into(),
        study_instance_uid: "2.25.500".into(),
        series_instance_uid: "2.25.501".into(),
        frame_of_reference_uid: "2.25.502".into(),
        series_number: 1,
        acquisition_number: 1,
        temporal_position: None,
        sop_instance_uid_root: "2.25.503".into(),
        date: "20260102".into(),
        time: "093000".into(),
        acquired: ionguide::dicom::ct::Acquired::SeriesDateTime,
    }
}

/// Water, 60 × 80 × 60 mm at 2 mm; the anterior surface at y = −40 mm.
fn phantom() -> CtVolume {
    let grid = Grid::axis_aligned([30, 40, 30], PointMm::new(-29.0, -39.0, -29.0), [2.0; 3]).unwrap();
    CtVolume::filled(grid, 0)
}

fn plan() -> IonPlan {
    let spots = (-4..=4)
        .flat_map(|a| (-4..=4).map(move |b| (a, b)))
        .map(|(a, b)| Spot {
            x_mm: 3.0 * f64::from(a),
            y_mm: 3.0 * f64::from(b),
            weight: 1e7,
        })
        .collect();
    IonPlan {
        sop_instance_uid: "2.25.600".into(),
        frame_of_reference_uid: "2.25.502".into(),
        patient_id: "WATER".into(),
        label: "carbon".into(),
        beams: vec![IonBeam {
            number: 1,
            name: "AP".into(),
            radiation_type: "ION".into(),
            ion: Ion::CARBON12,
            gantry_angle_deg: 0.0,
            couch_angle_deg: 0.0,
            isocenter_mm: PointMm::new(0.0, 0.0, 0.0),
            patient_position: Some("HFS".into()),
            virtual_sad_mm: None,
            range_shifters: vec![],
            primary_dosimeter_unit: Some(DosimeterUnit::Particles),
            layers: vec![EnergyLayer {
                energy_mev_u: 115.23,
                spots,
            }],
        }],
    }
}

/// A box x, z ∈ [−4, 4] mm, y ∈ [−34, −28] mm (6–12 mm deep: the entrance plateau), one
/// contour per CT slice plane; and BODY, x, z ∈ [−20, 20] mm, y ∈ [−40, 30] mm.
fn structures() -> StructureSet {
    let boxes = |x: f64, y: [f64; 2], zs: &[f64]| -> Vec<Contour> {
        zs.iter()
            .map(|&z| {
                Contour::new(vec![
                    PointMm::new(-x, y[0], z),
                    PointMm::new(x, y[0], z),
                    PointMm::new(x, y[1], z),
                    PointMm::new(-x, y[1], z),
                ])
            })
            .collect()
    };
    let body_zs: Vec<f64> = (-10..10).map(|k| 2.0 * f64::from(k) + 1.0).collect();
    StructureSet {
        frame_of_reference_uid: "2.25.502".into(),
        rois: vec![
            Roi {
                number: 1,
                name: "PTV".into(),
                contours: boxes(4.0, [-34.0, -28.0], &[-3.0, -1.0, 1.0, 3.0]),
            },
            Roi {
                number: 2,
                name: "BODY".into(),
                contours: boxes(20.0, [-40.0, 30.0], &body_zs),
            },
        ],
    }
}

fn write_case(dir: &Path) {
    write_case_with(dir, &plan());
}

fn write_case_with(dir: &Path, plan: &IonPlan) {
    let ct_dir = dir.join("ct");
    std::fs::create_dir(&ct_dir).unwrap();
    let ct = phantom();
    for (k, bytes) in write_ct_series(&ct, &ct_ids(), &PRODUCER)
        .unwrap()
        .iter()
        .enumerate()
    {
        std::fs::write(ct_dir.join(format!("CT{k:03}.dcm")), bytes).unwrap();
    }
    let rs = write_structure_set(
        &structures(),
        &ct_ids(),
        30,
        &StructureSetIds {
            sop_instance_uid: "2.25.700".into(),
            series_instance_uid: "2.25.701".into(),
            series_number: 2,
            label: "RS".into(),
        },
        &PRODUCER,
    )
    .unwrap();
    std::fs::write(dir.join("RS.dcm"), rs).unwrap();
    write_plan(plan, dir.join("RP.dcm")).unwrap();
}

fn ionguide_dose(dir: &Path, out: &str) -> serde_json::Value {
    serde_json::from_slice(&run_dose(dir, out, true).stdout).unwrap()
}

fn run_dose(dir: &Path, out: &str, json: bool) -> std::process::Output {
    let o = dose_command(dir, out, json, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn dose_command(dir: &Path, out: &str, json: bool, extra: &[&str]) -> std::process::Output {
    let machine = Path::new(ROOT).join("tests/data/matrad/carbon_Generic");
    Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .arg("dose")
        .arg("--ct")
        .arg(dir.join("ct"))
        .arg("--plan")
        .arg(dir.join("RP.dcm"))
        .arg("--structures")
        .arg(dir.join("RS.dcm"))
        .arg("--out")
        .arg(dir.join(out))
        .arg("--machine-dir")
        .arg(machine)
        .args(if json { &["--json"][..] } else { &[][..] })
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn dose_of_a_carbon_beam_in_water() {
    let dir = tempfile::tempdir().unwrap();
    write_case(dir.path());
    let v = ionguide_dose(dir.path(), "RD.dcm");
    for key in [
        "rt_dose",
        "dims",
        "spacing_mm",
        "max_gy",
        "seconds",
        "v95_reference_gy",
        "v95_reference",
        "v50_outside_cc",
        "v50_outside",
        "rois",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    assert_eq!(v["dims"], serde_json::json!([20, 27, 20]), "{v}");
    assert_eq!(v["v95_reference"], "D50 of PTV");
    let roi = &v["rois"][0];
    assert_eq!(roi["name"], "PTV");
    for key in [
        "voxels",
        "volume_cc",
        "d98_gy",
        "d95_gy",
        "d50_gy",
        "d2_gy",
        "mean_gy",
        "v95_percent",
        "homogeneity_index",
    ] {
        assert!(roi[key].is_number(), "{key}: {roi}");
    }
    assert_eq!(v["rois"][1]["name"], "BODY");
    let f = |k: &str| roi[k].as_f64().unwrap();
    assert!(
        f("d98_gy") <= f("d95_gy") && f("d95_gy") <= f("d50_gy") && f("d50_gy") <= f("d2_gy"),
        "{roi}"
    );
    assert!(f("d2_gy") <= v["max_gy"].as_f64().unwrap());
    assert_eq!(f("d50_gy"), v["v95_reference_gy"].as_f64().unwrap());
    assert!((f("homogeneity_index") - (f("d2_gy") - f("d98_gy")) / f("d50_gy")).abs() < 1e-12);

    // The DVH: 100 % at 0 Gy, never rising, 0 % past the maximum, and ≥ 50 % of the ROI at
    // the bins up to D50 (the definition of D50), < 50 % past it.
    let bin = roi["dvh"]["bin_gy"].as_f64().unwrap();
    let vol: Vec<f64> = roi["dvh"]["volume_percent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(vol[0], 100.0);
    assert!(vol.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(*vol.last().unwrap(), 0.0);
    for (i, p) in vol.iter().enumerate() {
        let d = i as f64 * bin;
        if d <= f("d50_gy") {
            assert!(*p >= 50.0, "{d} Gy: {p} %");
        } else {
            assert!(*p < 50.0, "{d} Gy: {p} %");
        }
    }

    // Outside the PTV, inside BODY, at ≥ 50 % of the reference: the plateau around the box
    // and the Bragg peak behind it (both above half the plateau dose), no more than the
    // body less the box.
    let v50 = v["v50_outside_cc"].as_f64().unwrap();
    let body_cc = v["rois"][1]["volume_cc"].as_f64().unwrap();
    assert!(v50 > 1.0 && v50 <= body_cc - f("volume_cc"), "{v50} cc");
    let what = v["v50_outside"].as_str().unwrap();
    assert!(
        what.contains("outside PTV") && what.contains("inside BODY"),
        "{what}"
    );

    // The kernel on its own grid, at the box centre (plateau, field centre).
    let series = read_series_dir(dir.path().join("ct")).unwrap();
    let (plan, _) = read_plan(dir.path().join("RP.dcm")).unwrap();
    let machine = IonMachine::from_dir(&Path::new(ROOT).join("tests/data/matrad/carbon_Generic")).unwrap();
    let grid = dose_grid_like(series.volume.grid(), [3.0; 3]).unwrap();
    let dose = compute_dose(
        &plan,
        &series.volume,
        &Hlut::default(),
        &[machine],
        &grid,
        &DoseOptions::new([f64::INFINITY; 2]),
    )
    .unwrap();
    let centre = f64::from(dose.sample_linear(&PointMm::new(0.0, -31.0, 0.0)).unwrap());
    assert!(centre > 0.0);
    let d50 = f("d50_gy");
    assert!(
        (d50 - centre).abs() < 0.05 * centre,
        "D50 {d50} Gy vs kernel {centre} Gy at the centre"
    );

    // The CT's patient, study and Frame of Reference; the plan referenced.
    let rd = std::fs::read(dir.path().join("RD.dcm")).unwrap();
    let text = String::from_utf8_lossy(&rd);
    for s in ["Water^Phantom", "WATER", "2.25.500", "2.25.502", "2.25.600"] {
        assert!(text.contains(s), "{s} missing from the RT Dose");
    }
    eprintln!("ionguide dose took {} s", v["seconds"]);

    // Run to run: the same RT Dose bytes; the table names the reference and the ROI.
    let table = String::from_utf8(run_dose(dir.path(), "RD2.dcm", false).stdout).unwrap();
    assert!(
        table.contains("(D50 of PTV)")
            && table.contains("D50 Gy")
            && table.contains("\nPTV ")
            && table.contains("V50 outside the target"),
        "{table}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("RD.dcm")).unwrap(),
        std::fs::read(dir.path().join("RD2.dcm")).unwrap()
    );
}

#[test]
fn dvh_svg_has_every_roi_axes_and_the_prescription() {
    let dir = tempfile::tempdir().unwrap();
    write_case(dir.path());
    let svg = dir.path().join("dvh.svg");
    let o = dose_command(
        dir.path(),
        "RD.dcm",
        true,
        &["--prescription-gy", "0.5", "--dvh-svg", svg.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    for s in [
        "PTV",
        "BODY",
        "Dose (Gy)",
        "Volume (%)",
        "prescription 0.5 Gy",
        "<polyline",
    ] {
        assert!(text.contains(s), "{s} missing from the SVG");
    }
    // Two DVH curves and the dashed prescription line.
    assert!(text.matches("<polyline").count() >= 2);
    // Without --structures there is nothing to draw.
    let o = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["dose", "--ct"])
        .arg(dir.path().join("ct"))
        .arg("--plan")
        .arg(dir.path().join("RP.dcm"))
        .arg("--out")
        .arg(dir.path().join("RD3.dcm"))
        .arg("--machine-dir")
        .arg(Path::new(ROOT).join("tests/data/matrad/carbon_Generic"))
        .arg("--dvh-svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--structures"));
}

#[test]
fn primary_dosimeter_unit_decides_what_weights_count() {
    let max_of = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["max_gy"]
            .as_f64()
            .unwrap()
    };
    let np = tempfile::tempdir().unwrap();
    write_case(np.path());
    let particles = max_of(&dose_command(np.path(), "RD.dcm", true, &[]));

    // MU: refused without the calibration, naming the beam and the flag; with it, each
    // weight is that many particles per MU: 0.5 halves the dose.
    let mut p = plan();
    p.beams[0].primary_dosimeter_unit = Some(DosimeterUnit::MonitorUnits);
    let mu = tempfile::tempdir().unwrap();
    write_case_with(mu.path(), &p);
    let o = dose_command(mu.path(), "RD.dcm", true, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("\"AP\"") && err.contains("--particles-per-mu") && err.contains("MU"),
        "{err}"
    );
    let half = max_of(&dose_command(
        mu.path(),
        "RD.dcm",
        true,
        &["--particles-per-mu", "0.5"],
    ));
    assert!(
        (half - 0.5 * particles).abs() <= 1e-6 * particles,
        "{half} vs {particles}"
    );

    // No unit in the file: particles, with a warning naming the beam.
    let rp = mu.path().join("RP.dcm");
    let mut obj = dicom_object::open_file(&rp).unwrap();
    let beams: Vec<_> = obj
        .element(dicom_dictionary_std::tags::ION_BEAM_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .cloned()
        .map(|mut b| {
            b.remove_element(dicom_dictionary_std::tags::PRIMARY_DOSIMETER_UNIT);
            b
        })
        .collect();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::ION_BEAM_SEQUENCE,
        dicom_core::VR::SQ,
        dicom_core::value::DataSetSequence::from(beams),
    ));
    obj.write_to_file(&rp).unwrap();
    let o = dose_command(mu.path(), "RD.dcm", true, &[]);
    assert_eq!(max_of(&o), particles);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("\"AP\"") && err.contains("Primary Dosimeter Unit"),
        "{err}"
    );
}
