//! Inputs the fuzz targets (`fuzz/`, `docs/fuzzing.md`) found, kept so the fixes stay fixed.
//! Each made dicom-rs allocate gigabytes for a length the guard in `dicom::attrs` had
//! framed differently from the decoder; each must now be refused as a corrupt length before
//! the decoder runs.

use ionguide::dicom::attrs::OpenError;
use ionguide::dicom::ct::{self, CtError};
use ionguide::dicom::rtplan::{self, PlanError};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

// ct_frame, 30 s in: a plastimatch slice whose mutated header made dicom-rs reserve
// 1 935 764 559 bytes for Series Description (0008,103E).
#[test]
fn a_ct_slice_claiming_1_9_gb_is_refused_as_truncated() {
    let bytes = read("ct-slice-unknown-vr.dcm");
    match ct::read_series_bytes(&[&bytes]) {
        Err(CtError::Truncated {
            source:
                OpenError::LengthBeyondEnd {
                    tag,
                    length,
                    remaining,
                    ..
                },
            ..
        }) => {
            assert_eq!((tag.group(), tag.element()), (0x0008, 0x103E));
            assert_eq!(length, 1_935_764_559);
            assert!(remaining < bytes.len());
        }
        other => panic!("{other:?}"),
    }
}

// rtplan, 30 s in: a mutated OpenTPS plan that made dicom-rs request 3 244 143 575 bytes.
#[test]
fn an_rt_ion_plan_with_a_misframed_length_is_refused_as_corrupt() {
    let bytes = read("rtplan-unknown-vr.dcm");
    match rtplan::read_plan_bytes(&bytes, "fuzz.dcm") {
        Err(PlanError::Corrupt {
            source: OpenError::LengthBeyondEnd {
                length, remaining, ..
            },
            ..
        }) => assert!(length > remaining as u64),
        other => panic!("{other:?}"),
    }
}
