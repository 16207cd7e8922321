//! An RT Structure Set from outside, then its first ROI rasterized: the rasterizer sees
//! attacker-controlled contours (NaN, huge or degenerate polygons, many points).
#![no_main]

use ionguide::geometry::Grid;
use ionguide::units::VectorMm;
use libfuzzer_sys::fuzz_target;

/// A small grid keeps each run cheap; it is centred on the first vertex so the fuzzed
/// contours actually land on it instead of missing it entirely.
const DIMS: [usize; 3] = [24, 24, 6];
const SPACING_MM: [f64; 3] = [2.0, 2.0, 3.0];

fuzz_target!(|data: &[u8]| {
    let Ok(set) = ionguide::dicom::rtstruct::read_structure_set_bytes(data, "fuzz.dcm") else {
        return;
    };
    let Some(roi) = set.rois.first() else {
        return;
    };
    let Some(centre) = roi.contours.iter().find_map(|c| c.points_mm.first()) else {
        return;
    };
    let half = VectorMm::new(
        DIMS[0] as f64 * SPACING_MM[0] / 2.0,
        DIMS[1] as f64 * SPACING_MM[1] / 2.0,
        DIMS[2] as f64 * SPACING_MM[2] / 2.0,
    );
    // A non-finite vertex makes no grid; the reader should have refused it, but the grid
    // check is the one that decides here.
    let Ok(grid) = Grid::axis_aligned(DIMS, centre - half, SPACING_MM) else {
        return;
    };
    let m = roi.rasterize(&grid);
    let set_voxels = m.mask.as_slice().iter().filter(|&&v| v != 0).count();
    assert_eq!(m.voxels, set_voxels, "voxel count disagrees with the mask");
    assert!(m.mask.as_slice().iter().all(|&v| v <= 1), "mask holds values other than 0/1");
    assert!(m.volume_cc.is_finite() && m.volume_cc >= 0.0);
    assert_eq!(m.centroid_mm.is_some(), set_voxels > 0);
    assert!(m.skipped.len() <= roi.contours.len());
});
