//! Inputs the fuzz targets (`fuzz/`, `docs/fuzzing.md`) found, kept so the fixes stay fixed.
//! Each made dicom-rs allocate gigabytes for a length the guard in `dicom::attrs` had
//! framed differently from the decoder; each must now be refused as a corrupt length before
//! the decoder runs.

use ionguide::dicom::ct::{self, CtError};
use ionguide::dicom::rtplan::{self, PlanError};
use ionguide::dicom::rtstruct::{self, RtStructError};
use ionguide::dicom::spatial_registration::{self, RegistrationError};
use ionguide::dicom::OpenError;

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

// ct_frame, 5 min in: an RLE slice whose segment expands to fewer bytes than the frame
// has pixels; dicom-pixeldata's RLE adapter indexed past its output and panicked.
#[test]
fn an_rle_segment_shorter_than_the_frame_is_an_error_not_a_panic() {
    let bytes = read("ct-rle-short-segment.dcm");
    match ct::read_series_bytes(&[&bytes]) {
        Err(CtError::InvalidAttribute { tag_name, reason, .. }) => {
            assert_eq!(tag_name, "PixelData");
            assert!(
                reason.contains("RLE frame 0 segment") && reason.contains("expected"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

// rtplan, 18 s in: a plan whose SOP Instance UID holds a letter parsed, was written, and the
// written file could not be read back (the UID goes into the file meta group, which dicom-rs
// validates). Writing now refuses it.
#[test]
fn a_plan_with_a_non_uid_sop_instance_uid_is_not_written_unreadable() {
    let (plan, _) = rtplan::read_plan_bytes(&read("rtplan-invalid-uid.dcm"), "fuzz.dcm").unwrap();
    assert!(!plan
        .sop_instance_uid
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.'));
    match rtplan::write_plan_bytes(&plan) {
        Err(PlanError::Unwritable(reason)) => assert!(reason.contains("SOP Instance UID"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // the same plan with a valid UID writes and reads back
    let mut fixed = plan.clone();
    fixed.sop_instance_uid = "1.2.826.0.1.3680043.8.498.1".into();
    let bytes = rtplan::write_plan_bytes(&fixed).unwrap();
    assert_eq!(
        rtplan::read_plan_bytes(&bytes, "w.dcm").unwrap().0.spot_count(),
        plan.spot_count()
    );
}

// rtstruct, 3 min in: an item delimiter overwritten by an empty element left an item tag
// where the decoder expects an element; dicom-rs opened a sequence there, framed the rest
// differently from the guard and reserved 4.26 GB for a length read out of a UID string.
#[test]
fn a_structure_set_with_a_stray_item_tag_is_refused_before_allocation() {
    let bytes = read("rtstruct-stray-item.dcm");
    match rtstruct::read_structure_set_bytes(&bytes, "fuzz.dcm") {
        Err(RtStructError::Corrupt {
            source: OpenError::LengthBeyondEnd {
                length, remaining, ..
            },
            ..
        }) => assert!(length > remaining as u64),
        other => panic!("{other:?}"),
    }
}

// rtplan, second 10-minute run (before the nesting fix), 6 min in: another input where the
// guard's walk and the decoder's parted ways, and dicom-rs asked for 3.0 GB.
#[test]
fn an_rt_ion_plan_the_decoder_would_misframe_is_refused_before_allocation() {
    let bytes = read("rtplan-nesting.dcm");
    match rtplan::read_plan_bytes(&bytes, "fuzz.dcm") {
        Err(PlanError::Corrupt {
            source: OpenError::LengthBeyondEnd {
                length, remaining, ..
            },
            ..
        }) => {
            assert_eq!(length, 3_017_228_768);
            assert!(remaining < bytes.len());
        }
        other => panic!("{other:?}"),
    }
}

// rtplan, third 10-minute run, 4 min in: where the guard expected an item header it found an
// element and stopped checking; dicom-rs read that element, claiming 3.8 GB.
#[test]
fn an_element_where_an_item_was_expected_is_still_length_checked() {
    let bytes = read("rtplan-element-in-sequence.dcm");
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

// ct_slice, last 10-minute run (before the numeric-VR fix): no crash, but this RLE slice made
// dicom-rs reserve 1.2 GB, under libFuzzer's 2 GB malloc limit; found by replaying the
// corpus with -malloc_limit_mb=256.
#[test]
fn a_ct_slice_claiming_1_2_gb_is_refused_before_allocation() {
    let bytes = read("ct-slice-below-malloc-limit.dcm");
    match ct::read_series_bytes(&[&bytes]) {
        Err(CtError::Truncated {
            source: OpenError::LengthBeyondEnd {
                length, remaining, ..
            },
            ..
        }) => {
            assert_eq!(length, 1_213_399_298);
            assert!(remaining < bytes.len());
        }
        other => panic!("{other:?}"),
    }
}

// spatial_registration, 7 min in: a Transfer Syntax UID ending in a form feed. dicom-rs trims
// trailing whitespace and decodes implicit VR; the guard trimmed only NUL and space, took the
// syntax for an unknown one and walked the data set as explicit VR, so it never saw the
// (0000,0000) element claiming 4 278 190 080 bytes. The plan reader shares the guard.
#[test]
fn a_transfer_syntax_with_trailing_whitespace_is_read_as_dicom_rs_reads_it() {
    let bytes = read("sro-transfer-syntax-form-feed.dcm");
    match spatial_registration::read_room_setup_bytes(&bytes, "fuzz.dcm", "1.2.826.0.1.3680043.9.7777.1") {
        Err(RegistrationError::Open {
            source: OpenError::LengthBeyondEnd {
                length, remaining, ..
            },
            ..
        }) => {
            assert_eq!(length, 4_278_190_080);
            assert!(remaining < bytes.len());
        }
        other => panic!("{other:?}"),
    }
    match rtplan::read_plan_bytes(&bytes, "fuzz.dcm") {
        Err(PlanError::Corrupt {
            source: OpenError::LengthBeyondEnd { length, .. },
            ..
        }) => assert_eq!(length, 4_278_190_080),
        other => panic!("{other:?}"),
    }
}
