//! Registration against truth frames made by SimpleITK (an independent resampler), so a bug
//! shared by ionguide's `resample` and its registration cannot cancel out.
//!
//! The fixtures (`tests/data/register_truth/`, made by its `make_fixtures.py`; see its
//! README) are the STS_001 planning CT moved by known rigid motions and resampled by
//! SimpleITK with linear interpolation onto cropped slabs around the moved tumour. Each
//! frame's `motion` maps planning-CT points to frame points, the convention of ionguide's
//! registration results (ITK's); SimpleITK's `Resample` was given its inverse, since
//! Resample maps output points to input points. So the registration of a frame against the
//! planning CT must return that `motion` itself.
//!
//! A second test checks the crate's own `resample` (with which the other registration
//! tests make their frames) against SimpleITK's voxel by voxel, on the same motions.

use flate2::read::GzDecoder;
use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::geometry::{Grid, RigidTransform};
use ionguide::register::{resample, FixedContext, RegisterOptions, Registrar, Roi, DEFAULT_MARGIN_MM};
use ionguide::units::{PointMm, VectorMm};
use ionguide::volume::CtVolume;
use nalgebra::{Matrix3, Rotation3};
use serde_json::Value;
use std::io::Read;

const DIR: &str = "tests/data/register_truth";
/// Tolerance on the moved tumour centre: the recovered motion applied to the centroid vs
/// SimpleITK's, mm (a fifth of the 3.27 mm slice spacing).
const CENTRE_LIMIT_MM: f64 = 0.5;
/// Tolerance on the rotation left between the recovered and the applied motion, degrees.
const ROTATION_LIMIT_DEG: f64 = 0.3;

fn point(v: &Value) -> PointMm {
    let c = |i: usize| v[i].as_f64().unwrap();
    PointMm::new(c(0), c(1), c(2))
}

fn matrix(v: &Value) -> Matrix3<f64> {
    Matrix3::from_fn(|r, c| v[r][c].as_f64().unwrap())
}

/// The applied motion (planning → frame) as SimpleITK computed it: `x ↦ A·x + b`.
fn motion(frame: &Value) -> RigidTransform {
    let m = &frame["motion"];
    RigidTransform {
        rotation: Rotation3::from_matrix(&matrix(&m["matrix"])),
        translation_mm: point(&m["offset_mm"]).coords,
    }
}

fn load_frame(frame: &Value) -> CtVolume {
    let dims: Vec<usize> = frame["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let spacing = point(&frame["spacing_mm"]);
    let direction: Vec<f64> = frame["direction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    assert_eq!(
        direction,
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "fixtures are axis-aligned"
    );
    let grid = Grid::axis_aligned(
        [dims[0], dims[1], dims[2]],
        point(&frame["origin_mm"]),
        [spacing.x, spacing.y, spacing.z],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let file = std::fs::File::open(format!("{DIR}/{}", frame["file"].as_str().unwrap())).unwrap();
    GzDecoder::new(file).read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len(), 2 * grid.len(), "{}: voxel count", frame["file"]);
    let mut volume = CtVolume::filled(grid, 0);
    for (v, b) in volume.as_slice_mut().iter_mut().zip(bytes.chunks_exact(2)) {
        *v = i16::from_le_bytes([b[0], b[1]]);
    }
    volume
}

fn truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/truth.json")).unwrap()).unwrap()
}

/// The planning CT the fixtures were made from, read by ionguide.
fn planning_ct(truth: &Value) -> CtVolume {
    read_series_dir(truth["planning_ct"].as_str().unwrap())
        .unwrap()
        .volume
}

/// Largest difference allowed between ionguide's `resample` and SimpleITK's on any voxel,
/// HU: both interpolate trilinearly in f64 and round to whole HU, so only a sum landing on
/// either side of a half may differ.
const RESAMPLE_LIMIT_HU: i32 = 1;

#[test]
fn our_resample_agrees_with_simpleitk() {
    // The crate's `resample` is what the other registration tests make frames with; here
    // it is checked voxel by voxel against SimpleITK's on the same motion and grid.
    let truth = truth();
    let ct = planning_ct(&truth);
    for frame in truth["frames"].as_array().unwrap() {
        let name = frame["file"].as_str().unwrap();
        let theirs = load_frame(frame);
        let ours = resample(&ct, &motion(frame).inverse(), theirs.grid(), -1000);
        let diffs: Vec<i32> = ours
            .as_slice()
            .iter()
            .zip(theirs.as_slice())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let off = diffs.iter().filter(|d| **d > 0).count();
        eprintln!(
            "{name}: max |ours − SimpleITK| {max} HU, {off} of {} voxels differ",
            diffs.len()
        );
        assert!(max <= RESAMPLE_LIMIT_HU, "{name}: max difference {max} HU");
    }
}

#[test]
fn motions_applied_by_simpleitk_are_recovered() {
    let truth = truth();
    let ct = planning_ct(&truth);
    let (_, roi) = read_roi("tests/data/STS_001/mask/RS.dcm", "GTV_Mass_CT").unwrap();
    let raster = roi.rasterize(ct.grid());
    let region = Roi::from_mask(&raster.mask, DEFAULT_MARGIN_MM).unwrap();
    let fixed = FixedContext::new(&ct, region, &RegisterOptions::default()).unwrap();
    // The centre is SimpleITK's centroid of the dataset's reference mask, not ours.
    let centre = point(&truth["tumour_centroid_mm"]);
    let frames = truth["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    let mut failures = Vec::new();
    for frame in frames {
        let name = frame["file"].as_str().unwrap();
        let applied = motion(frame);
        let moved = point(&frame["moved_tumour_centroid_mm"]);
        // the JSON's matrix/offset and its moved centroid agree (both SimpleITK's)
        assert!(
            (applied.apply(&centre) - moved).norm() < 1e-6,
            "{name}: fixture inconsistent"
        );
        let r = Registrar::new(RegisterOptions::default())
            .register(&fixed, &load_frame(frame), &RigidTransform::identity())
            .unwrap();
        let centre_err: VectorMm = r.transform.apply(&centre) - moved;
        let rotation_err_deg = (r.transform.rotation.inverse() * applied.rotation)
            .angle()
            .to_degrees();
        eprintln!(
            "{name}: applied {:.2}° / centre moved {:.2} mm; centre error {:.3} mm \
             ({:.3}, {:.3}, {:.3}), rotation error {rotation_err_deg:.3}°, {} it, ncc {:.3}, \
             overlap {:.2}, {:?}",
            applied.angle_deg(),
            (moved - centre).norm(),
            centre_err.norm(),
            centre_err.x,
            centre_err.y,
            centre_err.z,
            r.iterations,
            r.similarity_ncc,
            r.overlap_fraction,
            r.verdict
        );
        if !r.is_usable() || centre_err.norm() > CENTRE_LIMIT_MM || rotation_err_deg > ROTATION_LIMIT_DEG {
            failures.push(name);
        }
    }
    assert!(
        failures.is_empty(),
        "not recovered within {CENTRE_LIMIT_MM} mm / {ROTATION_LIMIT_DEG}°: {failures:?}"
    );
}
