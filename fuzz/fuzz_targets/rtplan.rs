//! An RT Ion Plan from outside; a plan that parsed is written back and read again. Writing
//! may refuse with a typed error, but what it writes must read back with the same beams,
//! layers and spots, and a second round trip must change nothing (the first one may round
//! over-long decimal strings to 16 characters).
#![no_main]

use ionguide::dicom::rtplan::{read_plan_bytes, write_plan_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((plan, _warnings)) = read_plan_bytes(data, "fuzz.dcm") else {
        return;
    };
    let Ok(bytes) = write_plan_bytes(&plan) else {
        return;
    };
    let (back, _) = read_plan_bytes(&bytes, "written.dcm").expect("a written plan reads back");
    assert_eq!(back.beams.len(), plan.beams.len());
    assert_eq!(back.spot_count(), plan.spot_count());
    for (a, b) in plan.beams.iter().zip(&back.beams) {
        assert_eq!(a.layers.len(), b.layers.len());
    }
    let bytes2 = write_plan_bytes(&back).expect("a plan that was written once writes again");
    let (again, _) = read_plan_bytes(&bytes2, "rewritten.dcm").expect("a rewritten plan reads back");
    assert_eq!(again, back, "a second round trip changed the plan");
});
