//! RT Structure Set reading and ROI rasterization against external truth: the dataset's
//! own NIfTI reference masks, `reference.json` figures, and analytic shapes.

use std::io::Read;

use ionguide::dicom::rtstruct::{self, RtStructError};
use ionguide::geometry::Grid;
use ionguide::structure::{Contour, Roi};
use ionguide::units::PointMm;
use nalgebra::{Matrix3, Rotation3, Vector3};

fn reference() -> serde_json::Value {
    let s = std::fs::read_to_string("tests/data/reference.json").unwrap();
    serde_json::from_str(&s).unwrap()
}

/// The CT grid of a case, from `reference.json` (external truth, not our CT reader).
fn ct_grid(case: &str) -> Grid {
    let r = &reference()[case];
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let o = r["orientation"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect::<Vec<_>>();
    let row = Vector3::new(o[0], o[1], o[2]);
    let col = Vector3::new(o[3], o[4], o[5]);
    let dir = Matrix3::from_columns(&[row, col, row.cross(&col)]);
    let ps = r["pixel_spacing_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect::<Vec<_>>();
    let og = r["origin_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect::<Vec<_>>();
    Grid::new(
        [
            r["columns"].as_u64().unwrap() as usize,
            r["rows"].as_u64().unwrap() as usize,
            r["slices"].as_u64().unwrap() as usize,
        ],
        PointMm::new(og[0], og[1], og[2]),
        [ps[1], ps[0], f(&r["slice_spacing_mm"])],
        dir,
    )
    .unwrap()
}

/// Set voxels of a NIfTI-1 mask, as LPS points (NIfTI sform is RAS: x and y flip sign).
fn nifti_mask_points(path: &str) -> Vec<PointMm> {
    let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut b = Vec::new();
    gz.read_to_end(&mut b).unwrap();
    let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]);
    let f32_at = |o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as f64;
    assert_eq!(
        i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        348,
        "little-endian NIfTI-1"
    );
    let dims = [i16_at(42) as usize, i16_at(44) as usize, i16_at(46) as usize];
    let datatype = i16_at(70);
    let bitpix = i16_at(72) as usize / 8;
    let vox_offset = f32_at(108) as usize;
    // These files carry a qform only (sform_code 0): quaternion rotation, pixdim, qfac.
    let srow: Vec<[f64; 4]> = if i16_at(254) > 0 {
        (0..3)
            .map(|r| [0, 1, 2, 3].map(|c| f32_at(280 + 16 * r + 4 * c)))
            .collect()
    } else {
        assert!(i16_at(252) > 0, "qform present");
        let (qb, qc, qd) = (f32_at(256), f32_at(260), f32_at(264));
        let qa = (1.0 - (qb * qb + qc * qc + qd * qd)).max(0.0).sqrt();
        let off = [f32_at(268), f32_at(272), f32_at(276)];
        let qfac = if f32_at(76) < 0.0 { -1.0 } else { 1.0 };
        let pix = [f32_at(80), f32_at(84), f32_at(88) * qfac];
        let r = [
            [
                qa * qa + qb * qb - qc * qc - qd * qd,
                2.0 * (qb * qc - qa * qd),
                2.0 * (qb * qd + qa * qc),
            ],
            [
                2.0 * (qb * qc + qa * qd),
                qa * qa + qc * qc - qb * qb - qd * qd,
                2.0 * (qc * qd - qa * qb),
            ],
            [
                2.0 * (qb * qd - qa * qc),
                2.0 * (qc * qd + qa * qb),
                qa * qa + qd * qd - qc * qc - qb * qb,
            ],
        ];
        (0..3)
            .map(|row| {
                [
                    r[row][0] * pix[0],
                    r[row][1] * pix[1],
                    r[row][2] * pix[2],
                    off[row],
                ]
            })
            .collect()
    };
    let mut pts = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let n = (k * dims[1] + j) * dims[0] + i;
                let o = vox_offset + n * bitpix;
                let set = match datatype {
                    2 | 256 => b[o] != 0,
                    4 | 512 => i16_at(o) != 0,
                    16 => f32_at(o) != 0.0,
                    8 | 768 => i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) != 0,
                    d => panic!("NIfTI datatype {d} not handled in this test"),
                };
                if set {
                    let v = [i as f64, j as f64, k as f64];
                    let ras =
                        |r: usize| srow[r][0] * v[0] + srow[r][1] * v[1] + srow[r][2] * v[2] + srow[r][3];
                    pts.push(PointMm::new(-ras(0), -ras(1), ras(2)));
                }
            }
        }
    }
    pts
}

#[test]
fn gtv_matches_the_reference_masks_of_all_four_cases() {
    let reference = reference();
    for case in ["STS_001", "STS_002", "STS_003", "STS_004"] {
        let grid = ct_grid(case);
        let ss = rtstruct::read_structure_set(format!("tests/data/{case}/mask/RS.dcm")).unwrap();
        assert_eq!(
            ss.frame_of_reference_uid,
            reference[case]["frame_of_reference_uid"].as_str().unwrap(),
            "{case}"
        );
        let m = ss.roi("GTV_Mass_CT").unwrap().rasterize(&grid);
        assert!(m.skipped.is_empty(), "{case}: {:?}", m.skipped);

        let nifti = nifti_mask_points(&format!(
            "tests/data/{case}/mask/GTV_Mass_CT-reference-mask.nii.gz"
        ));
        let [nx, ny, nz] = grid.dims();
        let mut reference_mask = vec![false; nx * ny * nz];
        for p in &nifti {
            let ijk = grid.patient_to_index(p);
            let [i, j, k] = ijk.map(|v| v.round());
            for (a, v) in ijk.iter().enumerate() {
                assert!(
                    (v - v.round()).abs() < 1e-2,
                    "{case}: NIfTI voxel off our grid on axis {a}: {v}"
                );
            }
            reference_mask[grid.offset(i as usize, j as usize, k as usize)] = true;
        }
        let ours = m.mask.as_slice();
        let both = ours
            .iter()
            .zip(&reference_mask)
            .filter(|(a, b)| **a != 0 && **b)
            .count();
        let dice = 2.0 * both as f64 / (m.voxels + nifti.len()) as f64;
        let n = nifti.len() as f64;
        let nifti_centroid = nifti.iter().fold(Vector3::zeros(), |s, p| s + p.coords) / n;
        let c = m.centroid_mm.unwrap();
        let dc = (c.coords - nifti_centroid).norm();
        let vol_ratio = m.voxels as f64 / n;
        eprintln!(
            "{case}: ours {} voxels, NIfTI {} voxels, Dice {dice:.4}, centroid Δ {dc:.3} mm",
            m.voxels,
            nifti.len()
        );
        assert!(dice >= 0.97, "{case}: Dice {dice}");
        assert!(dc <= 0.5, "{case}: centroid off by {dc} mm");
        assert!(
            (vol_ratio - 1.0).abs() <= 0.03,
            "{case}: volume ratio {vol_ratio}"
        );

        // reference.json's figures for the same mask
        let rm = &reference[case]["reference_mask"];
        let ref_voxels = rm["mask_voxels"].as_f64().unwrap();
        let ref_cc = rm["mask_volume_cc"].as_f64().unwrap();
        let rc: Vec<f64> = rm["mask_centroid_mm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            ref_voxels as usize,
            nifti.len(),
            "{case}: reference.json and NIfTI agree"
        );
        assert!(
            (m.volume_cc / ref_cc - 1.0).abs() <= 0.03,
            "{case}: {} vs {ref_cc} cc",
            m.volume_cc
        );
        let drc = (c.coords - Vector3::new(rc[0], rc[1], rc[2])).norm();
        assert!(drc <= 0.5, "{case}: centroid {c:?} vs reference.json {rc:?}");
        let bb = m.bbox.unwrap();
        assert!((0..3).all(|a| bb.min_mm[a] <= c[a] && c[a] <= bb.max_mm[a]));
    }
}

#[test]
fn missing_roi_lists_the_available_names() {
    let err = rtstruct::read_roi("tests/data/STS_001/mask/RS.dcm", "PTV").unwrap_err();
    match &err {
        RtStructError::RoiNotFound {
            path,
            name,
            available,
        } => {
            assert!(path.ends_with("RS.dcm"));
            assert_eq!(name, "PTV");
            assert_eq!(available, &vec!["GTV_Mass_CT".to_string()]);
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("GTV_Mass_CT"));
    let (for_uid, roi) = rtstruct::read_roi("tests/data/STS_001/mask/RS.dcm", "GTV_Mass_CT").unwrap();
    assert!(!for_uid.is_empty() && !roi.contours.is_empty());
}

#[test]
fn bad_files_are_typed_errors_naming_the_file() {
    let e = rtstruct::read_structure_set("tests/data/reference.json").unwrap_err();
    assert!(matches!(e, RtStructError::NotDicom { .. }), "{e:?}");
    assert!(e.to_string().contains("reference.json"));
    let e = rtstruct::read_structure_set("tests/data/STS_001/image/000000.dcm").unwrap_err();
    assert!(matches!(e, RtStructError::WrongSopClass { .. }), "{e:?}");
    // A valid JPEG 2000 (encapsulated pixel data) file passes the length pre-check and
    // is refused for what it is.
    let j2k = std::fs::read_dir("tests/data/totalseg_j2k")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("CT."))
        .unwrap();
    let e = rtstruct::read_structure_set(&j2k).unwrap_err();
    assert!(matches!(e, RtStructError::WrongSopClass { .. }), "{e:?}");
    let bytes = std::fs::read("tests/data/STS_002/mask/RS.dcm").unwrap();
    for cut in [140, 600, bytes.len() / 2] {
        // Truncation must never panic; it is an error (or, cut at an element boundary, a
        // readable prefix).
        let _ = rtstruct::read_structure_set_bytes(&bytes[..cut], "cut.dcm");
    }
    assert!(rtstruct::read_structure_set_bytes(&bytes[..140], "cut.dcm").is_err());
}

/// A slice-plane polygon given in index coordinates `(i, j)` on slice `k`.
fn poly(grid: &Grid, k: f64, pts: &[[f64; 2]]) -> Contour {
    Contour::new(
        pts.iter()
            .map(|p| grid.index_to_patient([p[0], p[1], k]))
            .collect(),
    )
}

fn rect(grid: &Grid, k: f64, a: [f64; 2], b: [f64; 2]) -> Contour {
    poly(grid, k, &[[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]])
}

#[test]
fn analytic_shapes_on_an_oblique_grid() {
    let r = Rotation3::from_euler_angles(0.4, -0.3, 0.9);
    let grid = Grid::new(
        [120, 110, 4],
        PointMm::new(-30.0, 12.0, 100.0),
        [0.5, 0.7, 2.5],
        *r.matrix(),
    )
    .unwrap();
    // slice 0: 40×40 square with a 20×20 hole; slice 1: two islands; slice 2: circle r = 30 voxels
    let mut contours = vec![
        rect(&grid, 0.0, [10.5, 10.5], [50.5, 50.5]),
        rect(&grid, 0.0, [20.5, 20.5], [40.5, 40.5]),
        rect(&grid, 1.0, [5.5, 5.5], [15.5, 25.5]),
        rect(&grid, 1.0, [60.5, 70.5], [90.5, 75.5]),
    ];
    let (cx, cy, rad) = (60.3, 50.2, 30.0);
    let circle: Vec<[f64; 2]> = (0..2000)
        .map(|t| {
            let a = t as f64 / 2000.0 * std::f64::consts::TAU;
            [cx + rad * a.cos(), cy + rad * a.sin()]
        })
        .collect();
    contours.push(poly(&grid, 2.0, &circle));
    let roi = Roi {
        number: 1,
        name: "shapes".into(),
        contours,
    };
    let m = roi.rasterize(&grid);
    assert!(m.skipped.is_empty());
    let count_slice = |k: usize| {
        let mut n = 0;
        for j in 0..110 {
            for i in 0..120 {
                n += usize::from(*m.mask.get(i, j, k).unwrap() != 0);
            }
        }
        n
    };
    assert_eq!(count_slice(0), 40 * 40 - 20 * 20);
    assert_eq!(count_slice(1), 10 * 20 + 30 * 5);
    assert_eq!(*m.mask.get(30, 30, 0).unwrap(), 0, "hole centre is outside");
    assert_eq!(*m.mask.get(15, 15, 0).unwrap(), 1);
    let circle_n = count_slice(2) as f64;
    let area = std::f64::consts::PI * rad * rad;
    assert!((circle_n / area - 1.0).abs() < 0.01, "{circle_n} vs πr² = {area}");
    assert_eq!(count_slice(3), 0);
    assert_eq!(m.voxels, 1200 + 350 + circle_n as usize);
    let voxel_mm3 = 0.5 * 0.7 * 2.5;
    assert!((m.volume_cc - m.voxels as f64 * voxel_mm3 / 1000.0).abs() < 1e-12);
}

#[test]
fn circle_centroid_is_its_centre() {
    let r = Rotation3::from_euler_angles(-0.2, 0.5, 2.0);
    let grid = Grid::new(
        [80, 80, 1],
        PointMm::new(5.0, -7.0, 3.0),
        [1.0, 1.0, 3.0],
        *r.matrix(),
    )
    .unwrap();
    let (cx, cy, rad) = (40.2, 39.7, 25.0);
    let pts: Vec<[f64; 2]> = (0..720)
        .map(|t| {
            let a = t as f64 / 720.0 * std::f64::consts::TAU;
            [cx + rad * a.cos(), cy + rad * a.sin()]
        })
        .collect();
    let roi = Roi {
        number: 1,
        name: "c".into(),
        contours: vec![poly(&grid, 0.0, &pts)],
    };
    let m = roi.rasterize(&grid);
    let c = m.centroid_mm.unwrap();
    let truth = grid.index_to_patient([cx, cy, 0.0]);
    assert!((c - truth).norm() < 0.05, "{c:?} vs {truth:?}");
}

mod invariants {
    use super::*;
    use proptest::prelude::*;

    fn star(center: [f64; 2], radii: &[f64]) -> Vec<[f64; 2]> {
        let n = radii.len() as f64;
        radii
            .iter()
            .enumerate()
            .map(|(t, r)| {
                let a = t as f64 / n * std::f64::consts::TAU;
                [center[0] + r * a.cos(), center[1] + r * a.sin()]
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        // An integer shift in index space moves the mask without changing it; a contour listed
        // twice on a slice cancels itself under the even-odd rule.
        #[test]
        fn shift_invariance_and_even_odd_cancellation(
            radii in prop::collection::vec(2.0f64..15.0, 3..40),
            c in (16.0f64..24.0, 16.0f64..24.0),
            d in (0usize..20, 0usize..20),
            angles in (-1.0f64..1.0, -1.0f64..1.0, -1.0f64..1.0),
        ) {
            let r = Rotation3::from_euler_angles(angles.0, angles.1, angles.2);
            let grid = Grid::new([60, 60, 2], PointMm::new(1.0, 2.0, 3.0), [0.8, 1.1, 2.0], *r.matrix()).unwrap();
            let a = star([c.0, c.1], &radii);
            let b: Vec<[f64; 2]> = a.iter().map(|p| [p[0] + d.0 as f64, p[1] + d.1 as f64]).collect();
            let roi = |cs: Vec<Contour>| Roi { number: 1, name: "s".into(), contours: cs };
            let ma = roi(vec![poly(&grid, 0.0, &a)]).rasterize(&grid);
            let mb = roi(vec![poly(&grid, 1.0, &b)]).rasterize(&grid);
            prop_assert_eq!(ma.voxels, mb.voxels);
            for j in 0..60 - d.1 {
                for i in 0..60 - d.0 {
                    prop_assert_eq!(ma.mask.get(i, j, 0), mb.mask.get(i + d.0, j + d.1, 1));
                }
            }
            let twice = roi(vec![poly(&grid, 0.0, &a), poly(&grid, 0.0, &a)]).rasterize(&grid);
            prop_assert_eq!(twice.voxels, 0);
        }
    }
}
