//! A frame of several slices, as the pipeline decodes it: decoded once on one thread into a
//! fresh volume, once on two threads into a volume whose storage is reused, and once after
//! early decoding (every slice but the last announced first, in the layout of a previous
//! decode of the same frame). The decoder promises the same result and the same first error
//! every way, so any difference is a bug, as is a panic.
//!
//! Input layout: repeated `[u32 LE length][bytes]` records, at most `MAX_SLICES`; a length
//! past the end takes what is left. `fuzz/seed.sh` writes real frames in this layout.
#![no_main]

use std::sync::Arc;

use ionguide::dicom::ct::{IngestOptions, SeriesDecoder};
use ionguide::geometry::Grid;
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;
use libfuzzer_sys::fuzz_target;

const MAX_SLICES: usize = 8;

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut slices = Vec::new();
    while slices.len() < MAX_SLICES && data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        data = &data[4..];
        let len = len.min(data.len());
        slices.push(&data[..len]);
        data = &data[len..];
    }
    slices
}

fn unit_volume() -> CtVolume {
    let grid = Grid::axis_aligned([1, 1, 1], PointMm::origin(), [1.0; 3]).expect("a unit grid is valid");
    CtVolume::filled(grid, 0)
}

fuzz_target!(|data: &[u8]| {
    let slices = split(data);

    let single = IngestOptions {
        threads: 1,
        ..IngestOptions::default()
    };
    let mut fresh = unit_volume();
    let first = SeriesDecoder::new(single).decode_into(&slices, &mut fresh);

    let double = IngestOptions {
        threads: 2,
        ..IngestOptions::default()
    };
    // Reuse: a volume that already holds this frame's voxel count (on success) is decoded
    // into again; stale voxels must all be overwritten.
    let mut reused = fresh.clone();
    if first.is_ok() {
        reused.as_slice_mut().iter_mut().for_each(|v| *v = i16::MIN);
    }
    let second = SeriesDecoder::new(double).decode_into(&slices, &mut reused);

    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "metadata differs between 1 and 2 threads");
            assert!(fresh == reused, "voxels differ between a fresh and a reused volume");
            assert_eq!(a.slices, fresh.grid().dims()[2]);
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "first error differs by thread count"),
        _ => panic!("1 thread: {first:?}\n2 threads: {second:?}"),
    }

    // Early decoding: the frame's layout comes from a previous decode of the same bytes.
    let objects: Vec<Arc<Vec<u8>>> = slices.iter().map(|s| Arc::new(s.to_vec())).collect();
    let refs: Vec<&[u8]> = objects.iter().map(|o| o.as_slice()).collect();
    let mut early = SeriesDecoder::new(IngestOptions::default());
    let mut volume = unit_volume();
    let _ = early.decode_into(&refs, &mut volume);
    if early.begin_early(&mut volume) {
        volume.as_slice_mut().iter_mut().for_each(|v| *v = i16::MIN);
        for o in objects.iter().take(objects.len().saturating_sub(1)) {
            early.decode_early(o, &mut volume);
        }
    }
    let third = early.decode_into(&refs, &mut volume);
    match (&first, &third) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "metadata differs after early decoding");
            assert!(fresh == volume, "voxels differ after early decoding");
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "first error differs after early decoding"),
        _ => panic!("from scratch: {first:?}\nafter early decoding: {third:?}"),
    }
});
