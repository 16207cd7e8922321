//! One classic CT slice from the network: an error or a series, never a panic, a hang or a
//! huge allocation (the declared-length guard must hold).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(series) = ionguide::dicom::ct::read_series_bytes(&[data]) {
        // An accepted slice must describe itself consistently.
        assert_eq!(series.meta.slices, series.volume.grid().dims()[2]);
        assert_eq!(series.volume.as_slice().len(), series.volume.grid().len());
    }
});
