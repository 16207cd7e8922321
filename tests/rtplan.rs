//! RT Ion Plan reading (real OpenTPS files, raw and normalized), checks, bad input, and
//! the write → read round trip.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use ionguide::dicom::rtplan::{self, PlanError, PlanWarning, SpotFault};
use ionguide::geometry::Grid;
use ionguide::plan::{DosimeterUnit, EnergyLayer, IonBeam, IonPlan, RangeShifter, Spot};
use ionguide::units::{Ion, MmWe, PointMm};
use proptest::prelude::*;

const STS_RAW: &str = "tests/data/plans/STS_001/RPSTS001G0G90.dcm";
const STS_NORM: &str = "tests/data/plans/STS_001/RPSTS001G0G90_normalized.dcm";
const LUNG_RAW: &str = "tests/data/plans/lung_synth/RPLUNGSYNG30G90.dcm";
const LUNG_NORM: &str = "tests/data/plans/lung_synth/RPLUNGSYNG30G90_normalized.dcm";

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string("tests/data/reference.json").unwrap()).unwrap()
}

/// Axis-aligned CT grid of an STS case from `reference.json`.
fn sts_grid(case: &str) -> Grid {
    let r = &reference()[case];
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let o: Vec<f64> = r["origin_mm"].as_array().unwrap().iter().map(f).collect();
    let ps: Vec<f64> = r["pixel_spacing_mm"].as_array().unwrap().iter().map(f).collect();
    Grid::axis_aligned(
        [
            r["columns"].as_u64().unwrap() as usize,
            r["rows"].as_u64().unwrap() as usize,
            r["slices"].as_u64().unwrap() as usize,
        ],
        PointMm::new(o[0], o[1], o[2]),
        [ps[1], ps[0], f(&r["slice_spacing_mm"])],
    )
    .unwrap()
}

fn check_shape(plan: &IonPlan, layers: usize, spots: [usize; 2], gantry: [f64; 2], iso: [f64; 3]) {
    assert_eq!(plan.beams.len(), 2);
    for (b, beam) in plan.beams.iter().enumerate() {
        assert_eq!(beam.layers.len(), layers, "beam {b}");
        assert_eq!(beam.spot_count(), spots[b], "beam {b}");
        assert!((beam.gantry_angle_deg - gantry[b]).abs() < 1e-9);
        assert_eq!(beam.ion, Ion::PROTON);
        for (got, want) in beam.isocenter_mm.iter().zip(iso) {
            assert!((got - want).abs() <= 0.01, "beam {b} iso {:?}", beam.isocenter_mm);
        }
    }
}

fn has(w: &[PlanWarning], f: impl Fn(&PlanWarning) -> bool) -> bool {
    w.iter().any(f)
}

#[test]
fn sts001_raw_and_normalized_read_alike() {
    let (raw, wr) = rtplan::read_plan(STS_RAW).unwrap();
    let (norm, wn) = rtplan::read_plan(STS_NORM).unwrap();
    for p in [&raw, &norm] {
        check_shape(p, 21, [1779, 1777], [0.0, 90.0], [69.71, 12.00, -791.18]);
        let (lo, hi) = p
            .beams
            .iter()
            .filter_map(|b| b.energy_range_mev_u())
            .fold((f64::MAX, f64::MIN), |(l, h), (a, b)| (l.min(a), h.max(b)));
        assert!(
            (lo - 69.9).abs() < 0.05 && (hi - 152.6).abs() < 0.05,
            "{lo}–{hi} MeV"
        );
        rtplan::check_frame_of_reference(
            p,
            reference()["STS_001"]["frame_of_reference_uid"].as_str().unwrap(),
        )
        .unwrap();
        rtplan::check_isocenters_inside(p, &sts_grid("STS_001")).unwrap();
        rtplan::check_spot_maps(p, rtplan::DEFAULT_MAX_FIELD_HALF_SIZE_MM).unwrap();
        // parallel-beam planner: no usable SAD, so the room's apply
        assert_eq!(
            p.beams[0].effective_virtual_sad_mm([2000.0, 1800.0]),
            [2000.0, 1800.0]
        );
    }
    // same spots either way (positions and weights are FL in both files)
    for (a, b) in raw.beams.iter().zip(&norm.beams) {
        for (la, lb) in a.layers.iter().zip(&b.layers) {
            assert!((la.energy_mev_u - lb.energy_mev_u).abs() < 1e-9);
            assert_eq!(la.spots, lb.spots);
        }
    }
    assert!(
        has(&wr, |w| matches!(w, PlanWarning::NonStandardModality { .. })),
        "{wr:?}"
    );
    assert!(has(&wr, |w| matches!(w, PlanWarning::NoUsableVirtualSad { .. })));
    assert!(has(&wr, |w| matches!(
        w,
        PlanWarning::SingleControlPointLayers { .. }
    )));
    assert!(has(&wr, |w| matches!(
        w,
        PlanWarning::EmptyCumulativeMetersetWeight { .. }
    )));
    assert!(has(&wr, |w| matches!(
        w,
        PlanWarning::OverlongDecimalString { .. }
    )));
    assert!(wn.len() < wr.len(), "normalized {wn:?} vs raw {wr:?}");
    assert!(!has(&wn, |w| matches!(
        w,
        PlanWarning::NonStandardModality { .. }
    )));
    eprintln!("raw warnings: {wr:?}\nnormalized warnings: {wn:?}");
}

#[test]
fn lung_synth_reads_and_ties_to_its_ct() {
    let mut slices: Vec<_> = std::fs::read_dir("tests/data/plans/lung_synth/ct")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    slices.sort();
    let ct = dicom_object::open_file(&slices[0]).unwrap();
    let ct_for = ct
        .element(tags::FRAME_OF_REFERENCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .trim()
        .to_string();
    for path in [LUNG_RAW, LUNG_NORM] {
        let (p, _) = rtplan::read_plan(path).unwrap();
        check_shape(&p, 11, [602, 596], [30.0, 90.0], [44.45, -35.42, 10.0]);
        rtplan::check_frame_of_reference(&p, &ct_for).unwrap();
        let e = rtplan::check_frame_of_reference(
            &p,
            reference()["STS_001"]["frame_of_reference_uid"].as_str().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::FrameOfReferenceMismatch { .. }), "{e:?}");
    }
}

#[test]
fn bad_files_are_typed_errors_naming_file_and_fault() {
    let e = rtplan::read_plan("tests/data/reference.json").unwrap_err();
    assert!(
        matches!(e, PlanError::NotDicom { .. }) && e.to_string().contains("reference.json"),
        "{e}"
    );

    let bytes = std::fs::read(STS_NORM).unwrap();
    let e = rtplan::read_plan_bytes(&bytes[..bytes.len() / 3], "truncated.dcm").unwrap_err();
    assert!(e.to_string().contains("truncated.dcm"), "{e}");
    for cut in (140..bytes.len()).step_by(997) {
        // never a panic, whatever the cut
        let _ = rtplan::read_plan_bytes(&bytes[..cut], "cut.dcm");
    }

    let e = rtplan::read_plan("tests/data/STS_001/image/000000.dcm").unwrap_err();
    assert!(
        matches!(&e, PlanError::WrongSopClass { found, .. } if found.starts_with("1.2.840.10008.5.1.4.1.1.2")),
        "{e:?}"
    );
    assert!(e.to_string().contains("000000.dcm"));
}

#[test]
fn corrupt_length_is_refused_before_allocation() {
    for path in [STS_RAW, LUNG_NORM] {
        let mut bytes = std::fs::read(path).unwrap();
        // the data set's SOP Instance UID (0008,0018): the meta group's (0002,0003) comes first
        let at = bytes
            .windows(4)
            .position(|w| w == [0x08, 0x00, 0x18, 0x00])
            .unwrap();
        if &bytes[at + 4..at + 6] == b"UI" {
            bytes[at + 6..at + 8].copy_from_slice(&0xFFF0u16.to_le_bytes());
        } else {
            bytes[at + 4..at + 8].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
        }
        let e = rtplan::read_plan_bytes(&bytes, "corrupt.dcm").unwrap_err();
        assert!(matches!(e, PlanError::Corrupt { .. }), "{path}: {e:?}");
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(
            chain.contains("corrupt.dcm") && chain.contains("(0008,0018)"),
            "{chain}"
        );
    }
}

#[test]
fn isocenter_outside_the_ct_names_the_beam() {
    let (p, _) = rtplan::read_plan(STS_NORM).unwrap();
    let e = rtplan::check_isocenters_inside(&p, &sts_grid("STS_002")).unwrap_err();
    match &e {
        PlanError::IsocenterOutsideCt { beam, .. } => assert_eq!(beam, &p.beams[0].name),
        e => panic!("{e:?}"),
    }
}

fn edited(path: &str, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::open_file(path).unwrap();
    edit(&mut obj);
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

#[test]
fn nan_spot_is_refused_naming_beam_layer_and_spot() {
    let bytes = edited(STS_NORM, |obj| {
        let mut beams = obj
            .element(tags::ION_BEAM_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .to_vec();
        let mut cps = beams[1]
            .element(tags::ION_CONTROL_POINT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .to_vec();
        let mut map = cps[0]
            .element(tags::SCAN_SPOT_POSITION_MAP)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        map[7] = f64::NAN; // spot 3, y
        let map: Vec<f32> = map.iter().map(|v| *v as f32).collect();
        cps[0].put(DataElement::new(
            tags::SCAN_SPOT_POSITION_MAP,
            VR::FL,
            PrimitiveValue::F32(map.into()),
        ));
        beams[1].put(DataElement::new(
            tags::ION_CONTROL_POINT_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(cps),
        ));
        obj.put(DataElement::new(
            tags::ION_BEAM_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(beams),
        ));
    });
    let e = rtplan::read_plan_bytes(&bytes, "nan.dcm").unwrap_err();
    match &e {
        PlanError::BadSpot {
            beam,
            layer,
            spot,
            fault,
            ..
        } => {
            assert_eq!((*layer, *spot, *fault), (0, 3, SpotFault::NonFinite));
            assert!(!beam.is_empty());
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn spot_outside_the_field_is_refused() {
    let (mut p, _) = rtplan::read_plan(LUNG_NORM).unwrap();
    p.beams[1].layers[2].spots[5].x_mm = 250.0;
    let e = rtplan::check_spot_maps(&p, 200.0).unwrap_err();
    assert!(
        matches!(
            &e,
            PlanError::BadSpot {
                layer: 2,
                spot: 5,
                fault: SpotFault::OutsideField,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(&p.beams[1].name));
}

#[test]
fn missing_ion_beam_sequence_is_refused() {
    let bytes = edited(STS_NORM, |obj| {
        obj.remove_element(tags::ION_BEAM_SEQUENCE);
    });
    let e = rtplan::read_plan_bytes(&bytes, "nobeams.dcm").unwrap_err();
    assert!(matches!(e, PlanError::MissingIonBeamSequence { .. }), "{e:?}");
    assert!(e.to_string().contains("nobeams.dcm") && e.to_string().contains("300A,03A2"));
}

#[test]
fn primary_dosimeter_unit_is_read_and_written() {
    // OpenTPS writes its spot weights as MU (300A,00B3 = "MU" in both files).
    for path in [STS_RAW, LUNG_RAW] {
        let (p, _) = rtplan::read_plan(path).unwrap();
        assert!(
            p.beams
                .iter()
                .all(|b| b.primary_dosimeter_unit == Some(DosimeterUnit::MonitorUnits)),
            "{path}"
        );
    }
    // NP and MU survive; a beam with no unit is written as NP; absent reads as None, an
    // unknown code as None with a warning naming the beam.
    let (mut p, _) = rtplan::read_plan(LUNG_NORM).unwrap();
    let unit_of = |bytes: &[u8]| {
        rtplan::read_plan_bytes(bytes, "u.dcm")
            .unwrap()
            .0
            .beams
            .iter()
            .map(|b| b.primary_dosimeter_unit)
            .collect::<Vec<_>>()
    };
    for (set, want) in [
        (Some(DosimeterUnit::Particles), Some(DosimeterUnit::Particles)),
        (
            Some(DosimeterUnit::MonitorUnits),
            Some(DosimeterUnit::MonitorUnits),
        ),
        (None, Some(DosimeterUnit::Particles)),
    ] {
        p.beams.iter_mut().for_each(|b| b.primary_dosimeter_unit = set);
        let bytes = rtplan::write_plan_bytes(&p).unwrap();
        assert_eq!(unit_of(&bytes), vec![want; p.beams.len()]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(want.unwrap().code()));
    }
    let edit = |value: Option<&str>| {
        edited(LUNG_NORM, |obj| {
            let beams = obj
                .element(tags::ION_BEAM_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()
                .to_vec();
            let beams = beams
                .into_iter()
                .map(|mut b| {
                    match value {
                        Some(v) => b.put(DataElement::new(
                            tags::PRIMARY_DOSIMETER_UNIT,
                            VR::CS,
                            PrimitiveValue::from(v),
                        )),
                        None => {
                            b.remove_element(tags::PRIMARY_DOSIMETER_UNIT);
                            None
                        }
                    };
                    b
                })
                .collect::<Vec<_>>();
            obj.put(DataElement::new(
                tags::ION_BEAM_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(beams),
            ));
        })
    };
    let absent = edit(None);
    assert!(unit_of(&absent).iter().all(Option::is_none));
    let minute = edit(Some("MINUTE"));
    let (p, w) = rtplan::read_plan_bytes(&minute, "minute.dcm").unwrap();
    assert!(p.beams.iter().all(|b| b.primary_dosimeter_unit.is_none()));
    assert!(has(&w, |w| matches!(
        w,
        PlanWarning::UnknownDosimeterUnit { found, .. } if found == "MINUTE"
    )));
}

#[test]
fn real_plans_survive_write_then_read() {
    for path in [STS_NORM, LUNG_NORM] {
        let (p, _) = rtplan::read_plan(path).unwrap();
        let bytes = rtplan::write_plan_bytes(&p).unwrap();
        let (back, w) = rtplan::read_plan_bytes(&bytes, "written.dcm").unwrap();
        assert_eq!(back, p, "{path}");
        assert!(
            !has(&w, |w| matches!(
                w,
                PlanWarning::NonStandardModality { .. }
                    | PlanWarning::SingleControlPointLayers { .. }
                    | PlanWarning::EmptyCumulativeMetersetWeight { .. }
                    | PlanWarning::OverlongDecimalString { .. }
            )),
            "{w:?}"
        );
    }
    // The raw file's 17-digit decimal strings cannot fit a 16-character DS: they come back
    // rounded to 15–16 significant digits, and everything else is equal.
    let (p, _) = rtplan::read_plan(STS_RAW).unwrap();
    let (back, _) = rtplan::read_plan_bytes(&rtplan::write_plan_bytes(&p).unwrap(), "w.dcm").unwrap();
    for (a, b) in p.beams.iter().zip(&back.beams) {
        assert_eq!(a.layers.len(), b.layers.len());
        for (la, lb) in a.layers.iter().zip(&b.layers) {
            assert!((la.energy_mev_u - lb.energy_mev_u).abs() <= 1e-12 * la.energy_mev_u);
            assert_eq!(la.spots, lb.spots);
        }
        assert!((a.isocenter_mm - b.isocenter_mm).norm() < 1e-10);
    }
    let dir = std::env::temp_dir().join(format!("ionguide-rtplan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("plan.dcm");
    rtplan::write_plan(&p, &f).unwrap();
    assert_eq!(rtplan::read_plan(&f).unwrap().0.spot_count(), p.spot_count());
    std::fs::remove_dir_all(&dir).unwrap();
}

// Values a DS carries exactly: decimals of few digits (the shortest repr of the parsed f64
// is the decimal itself). Spot positions, weights and WET are FL by the standard, so they
// are generated as float32 values.
fn dec(lo: i64, hi: i64, scale: f64) -> impl Strategy<Value = f64> {
    (lo..hi).prop_map(move |v| v as f64 / scale)
}
fn f32v(lo: f32, hi: f32) -> impl Strategy<Value = f64> {
    (lo..hi).prop_map(|v| v as f64)
}

fn arb_beam() -> impl Strategy<Value = IonBeam> {
    let spot = (f32v(-200.0, 200.0), f32v(-200.0, 200.0), f32v(0.001, 1000.0)).prop_map(|(x, y, w)| Spot {
        x_mm: x,
        y_mm: y,
        weight: w,
    });
    let layer = (dec(10_000, 450_000, 1000.0), prop::collection::vec(spot, 1..12)).prop_map(|(e, spots)| {
        EnergyLayer {
            energy_mev_u: e,
            spots,
        }
    });
    let shifter = (prop::option::of(f32v(0.5, 80.0)), "[A-Z0-9]{1,8}");
    (
        (
            1i32..200,
            "[A-Za-z0-9_]{1,12}",
            prop::sample::select(Ion::SUPPORTED.to_vec()),
        ),
        (
            dec(0, 360_000, 1000.0),
            dec(-90_000, 90_000, 1000.0),
            (
                dec(-50_000, 50_000, 100.0),
                dec(-50_000, 50_000, 100.0),
                dec(-150_000, 150_000, 100.0),
            ),
        ),
        (
            prop::option::of(prop::sample::select(vec!["HFS", "HFP", "FFS", "FFP"])),
            prop::option::of((dec(1000, 40_000, 10.0), dec(1000, 40_000, 10.0))),
        ),
        prop::collection::vec(shifter, 0..3),
        prop::collection::vec(layer, 1..5),
        prop::sample::select(vec![DosimeterUnit::Particles, DosimeterUnit::MonitorUnits]),
    )
        .prop_map(
            |((number, name, ion), (g, c, (x, y, z)), (pos, sad), shifters, layers, unit)| IonBeam {
                number,
                name,
                radiation_type: if ion == Ion::PROTON {
                    "PROTON".into()
                } else {
                    "ION".into()
                },
                ion,
                gantry_angle_deg: g,
                couch_angle_deg: c,
                isocenter_mm: PointMm::new(x, y, z),
                patient_position: pos.map(str::to_string),
                virtual_sad_mm: sad.map(|(a, b)| [a, b]),
                range_shifters: shifters
                    .into_iter()
                    .enumerate()
                    .map(|(i, (wet, id))| RangeShifter {
                        number: i as i32 + 1,
                        id,
                        water_equivalent_thickness_mm: wet.map(MmWe),
                    })
                    .collect(),
                primary_dosimeter_unit: Some(unit),
                layers,
            },
        )
}

fn arb_plan() -> impl Strategy<Value = IonPlan> {
    (
        "[1-9][0-9]{0,20}",
        "[1-9][0-9]{0,20}",
        "[A-Za-z0-9]{0,10}",
        "([A-Za-z0-9]{1,5}( [A-Za-z0-9]{1,5})?)?",
        prop::collection::vec(arb_beam(), 1..4),
    )
        .prop_map(|(sop, for_uid, pid, label, beams)| IonPlan {
            sop_instance_uid: format!("1.2.826.0.1.{sop}"),
            frame_of_reference_uid: format!("1.2.826.0.2.{for_uid}"),
            patient_id: pid,
            label,
            beams,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn write_then_read_is_identity(plan in arb_plan()) {
        let bytes = rtplan::write_plan_bytes(&plan).unwrap();
        let (back, _) = rtplan::read_plan_bytes(&bytes, "prop.dcm").unwrap();
        prop_assert_eq!(back, plan);
    }

    #[test]
    fn ds_values_fit_and_round_trip(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
        let s = rtplan::format_ds(v);
        prop_assert!(s.len() <= 16, "{}", s);
        let back: f64 = s.parse().unwrap();
        // Exact whenever the shortest repr fits; else as many digits as 16 characters hold:
        // at least 14 significant digits in plain form for 1 <= |v| < 1e6, at least 9 in
        // exponent form anywhere.
        let rel = if back == v { 0.0 } else { ((back - v) / v).abs() };
        let bound = if (1.0..1e6).contains(&v.abs()) { 1e-13 } else { 1e-8 };
        prop_assert!(rel <= bound, "{} -> {} (rel {})", v, s, rel);
        if format!("{v}").len() <= 16 {
            prop_assert_eq!(back, v);
        }
    }

}

proptest! {
    // Corrupt copies of a real plan: an error or a plan, never a panic or a huge allocation.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_bytes_never_panic(junk in prop::collection::vec(any::<u8>(), 0..400), at in 0usize..2000) {
        let mut bytes = std::fs::read(LUNG_NORM).unwrap();
        let at = at.min(bytes.len());
        let end = (at + junk.len()).min(bytes.len());
        bytes[at..end].copy_from_slice(&junk[..end - at]);
        let _ = rtplan::read_plan_bytes(&bytes, "junk.dcm");
    }
}
