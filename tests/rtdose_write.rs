//! The RT Dose writer: dcmtk's `dcmdump` (an independent parser) reads what it writes without
//! complaint; dicom-rs, read here attribute by attribute (not through a project reader),
//! gives back every voxel within half a Dose Grid Scaling quantum, the geometry of a rotated
//! grid and the frame offsets; pydicom, when installed, agrees; the bytes are the same run to
//! run.

use std::process::Command;

mod dcmtk_support;
use dcmtk_support::dcmdump_clean;

use dicom_dictionary_std::tags;
use ionguide::dicom::rtdose::{dose_grid_scaling, write_rt_dose, RtDoseError, RtDoseIds};
use ionguide::dicom::write::Producer;
use ionguide::geometry::{Grid, RigidTransform};
use ionguide::units::{PointMm, VectorMm};
use ionguide::volume::Volume;

const PRODUCER: Producer = Producer {
    manufacturer: "ionguide-test",
    implementation_class_uid: "2.25.1234567",
    implementation_version_name: "IONGUIDE_TEST",
};

fn ids() -> RtDoseIds {
    RtDoseIds {
        patient_id: "P1".into(),
        patient_name: "Test^Patient".into(),
        study_instance_uid: "2.25.100".into(),
        frame_of_reference_uid: "2.25.102".into(),
        series_instance_uid: "2.25.200".into(),
        sop_instance_uid: "2.25.201".into(),
        referenced_plan_sop_instance_uid: "2.25.300".into(),
        series_number: 5,
        date: "20260102".into(),
        time: "093000".into(),
    }
}

/// A 6×5×4 grid turned 20° about z and 10° about x: rows, columns and the frame normal all
/// off the patient axes.
fn rotated_grid() -> Grid {
    let base = Grid::axis_aligned([6, 5, 4], PointMm::new(-20.0, 10.0, -5.0), [2.0, 2.5, 3.0]).unwrap();
    base.mapped(&RigidTransform::from_xyz_deg(
        [10.0, 0.0, 20.0],
        VectorMm::new(1.0, -2.0, 0.5),
    ))
}

/// Doses that differ in every voxel, from 0 to 2.5 Gy.
fn dose(grid: Grid) -> Volume<f32> {
    let mut v = Volume::filled(grid, 0.0f32);
    let n = v.as_slice().len();
    for (m, x) in v.as_slice_mut().iter_mut().enumerate() {
        *x = 2.5 * (m as f32 / (n - 1) as f32).powf(1.3);
    }
    v
}

fn floats(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Vec<f64> {
    obj.element(tag).unwrap().to_multi_float64().unwrap()
}

#[test]
fn dcmdump_reads_an_rt_dose() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("RD.dcm");
    std::fs::write(
        &path,
        write_rt_dose(&dose(rotated_grid()), &ids(), &PRODUCER).unwrap(),
    )
    .unwrap();
    let text = dcmdump_clean(&path);
    for expected in [
        "(0002,0002) UI =RTDoseStorage",
        "(0008,0060) CS [RTDOSE]",
        "(0028,0008) IS [4]",
        "(0028,0009) AT (3004,000c)",
        "(0028,0010) US 5",
        "(0028,0011) US 6",
        "(0028,0100) US 32",
        "(0028,0101) US 32",
        "(0028,0103) US 0",
        "(3004,0002) CS [GY]",
        "(3004,0004) CS [PHYSICAL]",
        "(3004,000a) CS [PLAN]",
        "(0008,1155) UI [2.25.300]",
        "(0020,0052) UI [2.25.102]",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
}

#[test]
fn dicom_rs_reads_back_every_voxel_and_the_geometry() {
    let grid = rotated_grid();
    let d = dose(grid.clone());
    let bytes = write_rt_dose(&d, &ids(), &PRODUCER).unwrap();
    let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
    let scaling = floats(&obj, tags::DOSE_GRID_SCALING)[0];
    assert!((scaling - 2.5 / f64::from(u32::MAX)).abs() < 1e-12 * scaling.abs().max(1e-30) + 1e-20);
    let px = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(px.len(), 4 * d.as_slice().len());
    let mut max_stored = 0u32;
    for (n, (chunk, &want)) in px.chunks_exact(4).zip(d.as_slice()).enumerate() {
        let stored = u32::from_le_bytes(chunk.try_into().unwrap());
        max_stored = max_stored.max(stored);
        let got = f64::from(stored) * scaling;
        // Half a quantum, plus the DS rounding of the scaling over 2³² steps.
        let tol = 0.5 * scaling + 1e-12 * got;
        assert!((got - f64::from(want)).abs() <= tol, "voxel {n}: {got} vs {want}");
    }
    assert_eq!(max_stored, u32::MAX, "the maximum uses the full range");
    // Geometry: the first voxel, the row and column directions, the spacings, and frame k at
    // offset k·3 mm along row × column.
    let ipp = floats(&obj, tags::IMAGE_POSITION_PATIENT);
    let p0 = grid.index_to_patient([0.0; 3]);
    assert!((PointMm::new(ipp[0], ipp[1], ipp[2]) - p0).norm() < 1e-9);
    let iop = floats(&obj, tags::IMAGE_ORIENTATION_PATIENT);
    let row = grid.index_to_patient([1.0, 0.0, 0.0]) - p0;
    let col = grid.index_to_patient([0.0, 1.0, 0.0]) - p0;
    for a in 0..3 {
        assert!((iop[a] - row[a] / 2.0).abs() < 1e-12);
        assert!((iop[3 + a] - col[a] / 2.5).abs() < 1e-12);
    }
    assert_eq!(floats(&obj, tags::PIXEL_SPACING), vec![2.5, 2.0]);
    let offsets = floats(&obj, tags::GRID_FRAME_OFFSET_VECTOR);
    assert_eq!(offsets.len(), 4);
    for (k, o) in offsets.iter().enumerate() {
        assert!((o - 3.0 * k as f64).abs() < 1e-9, "frame {k}: {o}");
    }
}

#[test]
fn the_same_grid_writes_the_same_bytes() {
    let a = write_rt_dose(&dose(rotated_grid()), &ids(), &PRODUCER).unwrap();
    let b = write_rt_dose(&dose(rotated_grid()), &ids(), &PRODUCER).unwrap();
    assert_eq!(a, b);
}

#[test]
fn refuses_negative_and_nan_doses_and_bad_uids() {
    let mut d = dose(rotated_grid());
    d.as_slice_mut()[6 * 5 + 2] = -0.1;
    match write_rt_dose(&d, &ids(), &PRODUCER) {
        Err(RtDoseError::BadDose { i: 2, j: 0, k: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    d.as_slice_mut()[6 * 5 + 2] = f32::NAN;
    assert!(matches!(
        write_rt_dose(&d, &ids(), &PRODUCER),
        Err(RtDoseError::BadDose { .. })
    ));
    let mut bad = ids();
    bad.referenced_plan_sop_instance_uid = "not a uid".into();
    assert!(matches!(
        write_rt_dose(&dose(rotated_grid()), &bad, &PRODUCER),
        Err(RtDoseError::Write(_))
    ));
    assert_eq!(dose_grid_scaling(0.0), 1.0);
}

/// pydicom, a third independent reader: skipped only when it is not installed.
#[test]
fn pydicom_reads_the_dose_when_installed() {
    let has = Command::new("python3")
        .args(["-c", "import pydicom, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("skipped: python3 with pydicom and numpy not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("RD.dcm");
    let d = dose(rotated_grid());
    std::fs::write(&path, write_rt_dose(&d, &ids(), &PRODUCER).unwrap()).unwrap();
    let script = "import sys, pydicom\n\
ds = pydicom.dcmread(sys.argv[1])\n\
a = ds.pixel_array.astype('float64') * float(ds.DoseGridScaling)\n\
print(ds.pixel_array.shape, ds.DoseUnits, ds.DoseSummationType)\n\
print(' '.join(repr(float(x)) for x in a.ravel()))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "(4, 5, 6) GY PLAN");
    let values: Vec<f64> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    let q = dose_grid_scaling(2.5);
    assert_eq!(values.len(), d.as_slice().len());
    for (got, want) in values.iter().zip(d.as_slice()) {
        assert!(
            (got - f64::from(*want)).abs() <= 0.5 * q + 1e-12 * got,
            "{got} vs {want}"
        );
    }
}

/// An all-zero grid (a plan that misses the grid) still writes: scaling 1, stored zeros.
#[test]
fn a_zero_dose_writes_zeros() {
    let d = Volume::filled(rotated_grid(), 0.0f32);
    let bytes = write_rt_dose(&d, &ids(), &PRODUCER).unwrap();
    let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
    assert_eq!(floats(&obj, tags::DOSE_GRID_SCALING), vec![1.0]);
    let px = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert!(px.len() == 4 * 120 && px.iter().all(|b| *b == 0));
}
