//! The DICOM layer's CT series and RT Structure Set writers: what they write reads back
//! through the project's readers unchanged (voxels, geometry, contours), and dcmtk's
//! `dcmdump` (an independent parser) reads a written slice.

mod dcmtk_support;
use dcmtk_support::dcmdump_clean;

use ionguide::dicom::ct::{
    read_series_bytes, read_series_dir, write_ct_series, write_ct_series_placed, CtSeriesIds, CtSliceTemplate,
};
use ionguide::dicom::rtstruct::{read_structure_set_bytes, write_structure_set, StructureSetIds};
use ionguide::dicom::write::{Producer, WriteError};
use ionguide::geometry::{Grid, RigidTransform};
use ionguide::structure::{Contour, Roi, StructureSet};
use ionguide::units::{PointMm, VectorMm};
use ionguide::volume::CtVolume;

const PRODUCER: Producer = Producer {
    manufacturer: "ionguide-test",
    implementation_class_uid: "2.25.1234567",
    implementation_version_name: "IONGUIDE_TEST",
};

fn ids() -> CtSeriesIds {
    CtSeriesIds {
        patient_id: "P1".into(),
        patient_name: "Test^Patient".into(),
        study_instance_uid: "2.25.100".into(),
        series_instance_uid: "2.25.101".into(),
        frame_of_reference_uid: "2.25.102".into(),
        series_number: 3,
        acquisition_number: 7,
        temporal_position: Some(7),
        sop_instance_uid_root: "2.25.103".into(),
        date: "20260102".into(),
        time: "093000".into(),
        acquired: ionguide::dicom::ct::Acquired::SeriesDateTime,
    }
}

/// A 5×4×3 volume whose every voxel differs (HU = 100·k + 10·j + i − 1000), plus the two
/// ends: the lowest HU the reader accepts (−4096) and one above 31 743, the highest HU
/// that intercept −1024 can store, which clamps to it.
fn volume(grid: Grid) -> CtVolume {
    let mut v = CtVolume::filled(grid, 0);
    for (n, x) in v.as_slice_mut().iter_mut().enumerate() {
        let (i, j, k) = (n % 5, (n / 5) % 4, n / 20);
        *x = (100 * k + 10 * j + i) as i16 - 1000;
    }
    v.as_slice_mut()[0] = 32_000;
    v.as_slice_mut()[1] = -4096;
    v
}

/// What reads back: every voxel, but the one above the storable range clamped.
fn expected_hu(ct: &CtVolume) -> Vec<i16> {
    let mut v = ct.as_slice().to_vec();
    v[0] = 31_743;
    v
}

fn axis_grid() -> Grid {
    Grid::axis_aligned([5, 4, 3], PointMm::new(-12.5, 30.25, -7.0), [0.75, 1.25, 2.5]).unwrap()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

fn assert_grid_close(a: &Grid, b: &Grid) {
    assert_eq!(a.dims(), b.dims());
    let [nx, ny, nz] = a.dims();
    for c in [
        [0.0, 0.0, 0.0],
        [nx as f64 - 1.0, ny as f64 - 1.0, nz as f64 - 1.0],
        [nx as f64 - 1.0, 0.0, 1.0],
    ] {
        let d = (a.index_to_patient(c) - b.index_to_patient(c)).norm();
        assert!(d < 1e-9, "voxel {c:?} moved {d} mm");
    }
}

#[test]
fn ct_series_reads_back_with_the_same_voxels_geometry_and_identity() {
    let ct = volume(axis_grid());
    let slices = write_ct_series(&ct, &ids(), &PRODUCER).unwrap();
    assert_eq!(slices.len(), 3);
    let series = read_series_bytes(&refs(&slices)).unwrap();
    let expected = expected_hu(&ct);
    assert_eq!(series.volume.as_slice(), expected.as_slice());
    assert_eq!(series.volume.grid(), ct.grid());
    let m = &series.meta;
    assert_eq!(m.frame_of_reference_uid, "2.25.102");
    assert_eq!(m.patient_id.as_deref(), Some("P1"));
    assert_eq!(m.series_instance_uid.as_deref(), Some("2.25.101"));
    assert_eq!(m.study_instance_uid.as_deref(), Some("2.25.100"));
    assert_eq!(m.temporal_position, Some(7));
    assert_eq!(m.acquisition_date.as_deref(), Some("20260102"));
    assert_eq!(m.acquisition_time.as_deref(), Some("093000"));
    assert_eq!(m.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert!((m.slice_spacing_mm - 2.5).abs() < 1e-12);

    // The same through files in a folder.
    let dir = tempfile::tempdir().unwrap();
    for (k, s) in slices.iter().enumerate() {
        std::fs::write(dir.path().join(format!("CT{k}.dcm")), s).unwrap();
    }
    let from_dir = read_series_dir(dir.path()).unwrap();
    assert_eq!(from_dir.volume.as_slice(), expected.as_slice());
    assert_eq!(from_dir.volume.grid(), ct.grid());
}

#[test]
fn ct_series_on_a_rotated_grid_reads_back_on_that_grid() {
    let ct = volume(axis_grid());
    let t = RigidTransform::from_xyz_deg([10.0, -4.0, 30.0], VectorMm::new(35.0, -180.0, 1250.0));
    let placed = ct.grid().mapped(&t);
    let slices = write_ct_series_placed(&ct, &placed, &ids(), &PRODUCER).unwrap();
    let series = read_series_bytes(&refs(&slices)).unwrap();
    assert_grid_close(series.volume.grid(), &placed);
    let expected = expected_hu(&ct);
    assert_eq!(series.volume.as_slice(), expected.as_slice());
}

#[test]
fn bad_identity_and_mismatched_grid_are_refused() {
    let ct = volume(axis_grid());
    let mut bad = ids();
    bad.series_instance_uid = "1.2.x".into();
    let e = write_ct_series(&ct, &bad, &PRODUCER).unwrap_err();
    assert!(
        matches!(
            e,
            WriteError::BadParameter {
                name: "Series Instance UID",
                ..
            }
        ),
        "{e}"
    );
    let other = Grid::axis_aligned([5, 4, 2], PointMm::origin(), [1.0; 3]).unwrap();
    let e = write_ct_series_placed(&ct, &other, &ids(), &PRODUCER).unwrap_err();
    assert!(
        matches!(
            e,
            WriteError::BadParameter {
                name: "placement grid",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_slice_template_moves_the_series_by_exactly_the_displacement() {
    let ct = volume(axis_grid());
    let dir = tempfile::tempdir().unwrap();
    let mut templates = Vec::new();
    for (k, s) in write_ct_series(&ct, &ids(), &PRODUCER)
        .unwrap()
        .iter()
        .enumerate()
    {
        let p = dir.path().join(format!("CT{k}.dcm"));
        std::fs::write(&p, s).unwrap();
        templates.push(CtSliceTemplate::open(&p).unwrap());
    }
    let rs = dir.path().join("RS.dcm");
    std::fs::write(
        &rs,
        write_structure_set(&structures(), &ids(), 3, &rs_ids(), &PRODUCER).unwrap(),
    )
    .unwrap();
    assert!(
        CtSliceTemplate::open(&rs).is_none(),
        "an RT Structure Set is no CT slice"
    );
    let d = [1.5, -2.25, 0.125];
    let moved: Vec<Vec<u8>> = templates
        .iter()
        .enumerate()
        .map(|(k, t)| t.moved(d, 9, &format!("2.25.300.{k}")).unwrap())
        .collect();
    let series = read_series_bytes(&refs(&moved)).unwrap();
    assert_eq!(series.volume.as_slice(), expected_hu(&ct).as_slice());
    let o = series.volume.grid().origin_mm();
    let o0 = ct.grid().origin_mm();
    for a in 0..3 {
        assert!(
            (o[a] - o0[a] - d[a]).abs() < 1e-9,
            "axis {a}: {} → {}",
            o0[a],
            o[a]
        );
    }
}

fn structures() -> StructureSet {
    let square = |z: f64, half: f64| {
        Contour::new(vec![
            PointMm::new(-half, -half, z),
            PointMm::new(half, -half, z),
            PointMm::new(half, half, z),
            PointMm::new(-half, half, z),
        ])
    };
    StructureSet {
        frame_of_reference_uid: "2.25.102".into(),
        rois: vec![
            Roi {
                number: 1,
                name: "BODY".into(),
                contours: vec![square(-7.0, 20.0), square(-4.5, 20.0), square(-2.0, 20.0)],
            },
            Roi {
                number: 4,
                name: "GTV".into(),
                // A value DS must round to 16 characters, and one it keeps exactly.
                contours: vec![Contour::new(vec![
                    PointMm::new(1.0 / 3.0, 0.1, -4.5),
                    PointMm::new(2.0, 0.1, -4.5),
                    PointMm::new(2.0, 1e-7, -4.5),
                ])],
            },
        ],
    }
}

fn rs_ids() -> StructureSetIds {
    StructureSetIds {
        sop_instance_uid: "2.25.200".into(),
        series_instance_uid: "2.25.201".into(),
        series_number: 100,
        label: "TEST".into(),
    }
}

#[test]
fn structure_set_reads_back_with_the_same_contours() {
    let ss = structures();
    let bytes = write_structure_set(&ss, &ids(), 3, &rs_ids(), &PRODUCER).unwrap();
    let read = read_structure_set_bytes(&bytes, "<memory>/RS").unwrap();
    assert_eq!(read.frame_of_reference_uid, "2.25.102");
    assert_eq!(read.names(), vec!["BODY", "GTV"]);
    assert_eq!(read.rois[0], ss.rois[0]);
    let gtv = &read.roi("GTV").unwrap().contours[0].points_mm;
    assert_eq!(gtv.len(), 3);
    for (a, b) in gtv.iter().zip(&ss.rois[1].contours[0].points_mm) {
        assert!((a - b).norm() < 1e-12, "{a:?} vs {b:?}");
    }
    assert_eq!(read.rois[1].number, 4);
}

#[test]
fn structure_set_in_another_frame_of_reference_is_refused() {
    let mut ss = structures();
    ss.frame_of_reference_uid = "2.25.999".into();
    let e = write_structure_set(&ss, &ids(), 3, &rs_ids(), &PRODUCER).unwrap_err();
    assert!(
        matches!(
            e,
            WriteError::BadParameter {
                name: "Frame of Reference UID",
                ..
            }
        ),
        "{e}"
    );
}

/// Runs a dcmtk tool; a missing tool fails the test with what to install.
#[test]
fn dcmdump_reads_a_written_slice_and_structure_set() {
    let dir = tempfile::tempdir().unwrap();
    let slice = dir.path().join("CT.dcm");
    let rs = dir.path().join("RS.dcm");
    let ct = volume(axis_grid());
    std::fs::write(&slice, &write_ct_series(&ct, &ids(), &PRODUCER).unwrap()[1]).unwrap();
    std::fs::write(
        &rs,
        write_structure_set(&structures(), &ids(), 3, &rs_ids(), &PRODUCER).unwrap(),
    )
    .unwrap();
    let text = dcmdump_clean(&slice);
    for expected in [
        "(0002,0010) UI =LittleEndianExplicit",
        "(0008,0018) UI [2.25.103.2]",
        "(0008,0070) LO [ionguide-test]",
        "(0020,0032) DS [-12.5\\30.25\\-4.5]",
        "(0028,0030) DS [1.25\\0.75]",
        "(0028,1052) DS [-1024]",
        "(7fe0,0010) OW",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    assert!(dcmdump_clean(&rs).contains("(3006,0026) LO [GTV]"));
}

/// A slice stamped with its acquisition instant says it as dcmtk reads it: Acquisition
/// DateTime to the microsecond with its offset, and the same instant's UTC date and time.
#[test]
fn dcmdump_reads_the_acquisition_instant_a_slice_is_stamped_with() {
    let dir = tempfile::tempdir().unwrap();
    let slice = dir.path().join("CT.dcm");
    // 2026-12-02T09:53:01.123456Z: `date -u -d 2026-12-02T09:53:01Z +%s` = 1796205181
    let ids = CtSeriesIds {
        acquired: ionguide::dicom::ct::Acquired::At {
            unix_ns: 1_796_205_181_123_456_789,
        },
        ..ids()
    };
    std::fs::write(
        &slice,
        &write_ct_series(&volume(axis_grid()), &ids, &PRODUCER).unwrap()[0],
    )
    .unwrap();
    let text = dcmdump_clean(&slice);
    for expected in [
        "(0008,0022) DA [20261202]",
        "(0008,0023) DA [20261202]",
        "(0008,002a) DT [20261202095301.123456+0000]",
        "(0008,0032) TM [095301.123456]",
        "(0008,0033) TM [095301.123456]",
        "(0008,0201) SH [+0000]",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
}
