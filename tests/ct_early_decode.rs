//! Early decoding (objects decoded as they arrive, before their frame is complete) must give
//! exactly what decoding the completed frame from scratch gives: the same voxels and facts,
//! or the same error — whatever subset was announced, in whatever order, whether the new
//! frame keeps the last frame's layout or not. The truth is a fresh decoder's answer on the
//! same real slices (STS_002, STS_003; edited copies for the layout and error cases).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::from_reader;
use ionguide::dicom::ct::{IngestOptions, SeriesDecoder};
use ionguide::geometry::Grid;
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;
use proptest::prelude::*;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn read_dir_bytes(rel: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Re-encodes `bytes` with `edit` applied.
fn edited(bytes: &[u8], edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) -> Vec<u8> {
    let body = &bytes[128..];
    let mut obj = from_reader(body).unwrap();
    edit(&mut obj);
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

fn put_ds(obj: &mut dicom_object::DefaultDicomObject, tag: dicom_core::Tag, s: &str) {
    obj.put(DataElement::new(tag, VR::DS, PrimitiveValue::from(s)));
}

/// The frames a case draws from: [0] is the layout early decoding predicts from.
fn frames() -> &'static Vec<Vec<Vec<u8>>> {
    static F: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    F.get_or_init(|| {
        let sts2 = read_dir_bytes("STS_002/image");
        let intercept_plus_one: Vec<Vec<u8>> = sts2
            .iter()
            .map(|b| {
                edited(b, |o| {
                    let icpt = o.element(tags::RESCALE_INTERCEPT).unwrap().to_float64().unwrap();
                    put_ds(o, tags::RESCALE_INTERCEPT, &format!("{}", icpt + 1.0));
                })
            })
            .collect();
        let shifted_half_slice: Vec<Vec<u8>> = sts2
            .iter()
            .map(|b| {
                edited(b, |o| {
                    let p = o
                        .element(tags::IMAGE_POSITION_PATIENT)
                        .unwrap()
                        .to_multi_float64()
                        .unwrap();
                    put_ds(
                        o,
                        tags::IMAGE_POSITION_PATIENT,
                        &format!("{}\\{}\\{}", p[0], p[1], p[2] + 1.5),
                    );
                })
            })
            .collect();
        let mut one_out_of_range = sts2.clone();
        one_out_of_range[7] = edited(&sts2[7], |o| put_ds(o, tags::RESCALE_INTERCEPT, "-40000"));
        vec![
            sts2.clone(),
            // same layout, other voxels
            intercept_plus_one,
            // fewer slices: another grid
            sts2[..40].to_vec(),
            // every slice between the predicted ones
            shifted_half_slice,
            // one slice outside the HU window: an error either way
            one_out_of_range,
            // another patient's series, another grid
            read_dir_bytes("STS_003/image"),
        ]
    })
}

fn placeholder() -> CtVolume {
    CtVolume::filled(
        Grid::axis_aligned([1, 1, 1], PointMm::origin(), [1.0; 3]).unwrap(),
        0,
    )
}

fn decode(
    decoder: &mut SeriesDecoder,
    objects: &[Arc<Vec<u8>>],
    volume: &mut CtVolume,
) -> Result<String, String> {
    let slices: Vec<&[u8]> = objects.iter().map(|o| o.as_slice()).collect();
    decoder
        .decode_into(&slices, volume)
        .map(|meta| format!("{meta:?}"))
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn early_decoding_then_completing_equals_decoding_from_scratch(
        next in 0usize..6,
        announce in proptest::collection::vec(any::<proptest::sample::Index>(), 0..60),
        stray in proptest::option::of(any::<proptest::sample::Index>()),
        order in any::<u64>(),
    ) {
        let all = frames();
        let shared = |f: &Vec<Vec<u8>>| -> Vec<Arc<Vec<u8>>> { f.iter().map(|b| Arc::new(b.clone())).collect() };
        let mut decoder = SeriesDecoder::new(IngestOptions::default());
        let mut volume = placeholder();
        // the previous frame sets the predicted layout
        prop_assert!(decode(&mut decoder, &shared(&all[0]), &mut volume).is_ok());

        let mut frame = shared(&all[next]);
        let n = frame.len();
        // arrival order: a rotation of the sorted order plus a deterministic shuffle
        let mut state = order | 1;
        for i in (1..n).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            frame.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert!(decoder.begin_early(&mut volume));
        // an object announced that never makes it into this frame (another frame's)
        if let Some(s) = stray {
            let other = shared(&all[(next + 1) % all.len()]);
            decoder.decode_early(&other[s.index(other.len())], &mut volume);
        }
        // any subset, repeats allowed, in any order
        for a in &announce {
            decoder.decode_early(&frame[a.index(n)], &mut volume);
        }
        let early = decode(&mut decoder, &frame, &mut volume);

        let mut fresh_decoder = SeriesDecoder::new(IngestOptions::default());
        let mut fresh = placeholder();
        let truth = decode(&mut fresh_decoder, &frame, &mut fresh);
        prop_assert_eq!(&early, &truth);
        if truth.is_ok() {
            prop_assert!(volume == fresh, "voxels differ from a decode from scratch (frame {})", next);
        }
        prop_assert_eq!(decoder.early_objects(), 0, "objects held after the frame was decoded");
    }
}

#[test]
fn early_decoding_places_the_announced_slices_of_an_unchanged_layout() {
    let frame: Vec<Arc<Vec<u8>>> = frames()[1].iter().map(|b| Arc::new(b.clone())).collect();
    let mut decoder = SeriesDecoder::new(IngestOptions::default());
    let mut volume = placeholder();
    decode(
        &mut decoder,
        &frames()[0]
            .iter()
            .map(|b| Arc::new(b.clone()))
            .collect::<Vec<_>>(),
        &mut volume,
    )
    .unwrap();
    assert!(decoder.begin_early(&mut volume));
    let placed = frame[..47]
        .iter()
        .filter(|o| decoder.decode_early(o, &mut volume))
        .count();
    assert_eq!(placed, 47, "every slice of an unchanged layout has a slot");
    assert_eq!(decoder.early_objects(), 47);
    // a repeat is not placed twice
    assert!(!decoder.decode_early(&frame[3], &mut volume));
    // another volume than the one early decoding writes into is refused
    let mut other = volume.clone();
    assert!(!decoder.decode_early(&frame[47], &mut other));
}
