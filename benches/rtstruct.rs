//! ROI rasterization speed: the STS_001 GTV (117k voxels, 59 slices) on its CT grid.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use ionguide::dicom::rtstruct;
use ionguide::geometry::Grid;
use ionguide::units::PointMm;

fn bench(c: &mut Criterion) {
    // STS_001 CT geometry as recorded in tests/data/reference.json.
    let grid = Grid::axis_aligned(
        [198, 202, 59],
        PointMm::new(-23.437616, -86.914146, -881.32),
        [0.976562, 0.976562, 3.27],
    )
    .unwrap();
    let ss = rtstruct::read_structure_set("tests/data/STS_001/mask/RS.dcm").unwrap();
    let roi = ss.roi("GTV_Mass_CT").unwrap().clone();
    c.bench_function("rasterize_sts001_gtv", |b| b.iter(|| roi.rasterize(&grid).voxels));
    c.bench_function("read_rtstruct_sts001", |b| {
        b.iter(|| {
            rtstruct::read_structure_set("tests/data/STS_001/mask/RS.dcm")
                .unwrap()
                .rois
                .len()
        })
    });
    c.bench_function("read_rtplan_sts001", |b| {
        b.iter(|| {
            ionguide::dicom::rtplan::read_plan("tests/data/plans/STS_001/RPSTS001G0G90_normalized.dcm")
                .unwrap()
                .0
                .spot_count()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
