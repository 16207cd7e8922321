//! An RT Ion Beams Treatment Record from outside (`dicom::rtrecord::read_treatment_record`).
//! What it accepts must hold together: every delivered piece finite with a meterset ≥ 0, one
//! summary per beam naming the same beam number, as many control-point deliveries as the
//! summary counts, and the delivered total equal to the sum of its pieces.
#![no_main]

use ionguide::dicom::rtrecord::read_treatment_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = read_treatment_record(data) else {
        return;
    };
    assert_eq!(r.beams.len(), r.record.beams.len());
    for (s, b) in r.beams.iter().zip(&r.record.beams) {
        assert_eq!(s.beam_number, b.beam_number);
        assert_eq!(s.control_points, b.control_points.len());
        let mut sum = 0.0;
        for p in b.pieces() {
            assert!(p.is_sane(), "an accepted piece is finite with a meterset ≥ 0");
            sum += p.meterset;
        }
        assert_eq!(sum, b.delivered_meterset());
    }
});
