//! CT series ingest against external truth: `tests/data/reference.json` (pydicom/SimpleITK),
//! dcmtk-encoded RLE and JPEG-lossless copies, and real slices edited into bad inputs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use ionguide::dicom::ct::{
    read_series_bytes, read_series_dir, read_series_files, CtError, CtSeries, IngestOptions, SeriesDecoder,
};
use ionguide::dicom::OpenError;
use ionguide::volume::CtVolume;
use proptest::prelude::*;
use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| serde_json::from_str(&std::fs::read_to_string(data("reference.json")).unwrap()).unwrap())
}

fn sorted_dcm(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    v.sort();
    v
}

fn hu_stats(v: &CtVolume) -> (i16, i16, i64) {
    let s = v.as_slice();
    let min = *s.iter().min().unwrap();
    let max = *s.iter().max().unwrap();
    let sum = s.iter().map(|&x| i64::from(x)).sum();
    (min, max, sum)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn check_against_reference(name: &str, series: &CtSeries) {
    check_fields(name, &reference()[name], series);
}

fn check_fields(name: &str, r: &Value, series: &CtSeries) {
    let grid = series.volume.grid();
    let dims = grid.dims();
    assert_eq!(dims[0] as u64, r["columns"].as_u64().unwrap(), "{name} columns");
    assert_eq!(dims[1] as u64, r["rows"].as_u64().unwrap(), "{name} rows");
    assert_eq!(dims[2] as u64, r["slices"].as_u64().unwrap(), "{name} slices");
    let sp = grid.spacing_mm();
    let ps = &r["pixel_spacing_mm"];
    // reference pixel_spacing_mm is DICOM order [row spacing, column spacing].
    assert!(
        (sp[0] - f(&ps[1])).abs() < 1e-9,
        "{name} column spacing {}",
        sp[0]
    );
    assert!((sp[1] - f(&ps[0])).abs() < 1e-9, "{name} row spacing {}", sp[1]);
    assert!(
        (sp[2] - f(&r["slice_spacing_mm"])).abs() < 1e-6,
        "{name} slice spacing {}",
        sp[2]
    );
    assert!((series.meta.slice_spacing_mm - sp[2]).abs() < 1e-12);
    assert!(series.meta.max_spacing_deviation_mm < 1e-3);
    let o = grid.origin_mm();
    for a in 0..3 {
        assert!((o[a] - f(&r["origin_mm"][a])).abs() < 1e-6, "{name} origin {o:?}");
    }
    let d = grid.direction();
    for a in 0..3 {
        assert!(
            (d[(a, 0)] - f(&r["orientation"][a])).abs() < 1e-9,
            "{name} row cosine"
        );
        assert!(
            (d[(a, 1)] - f(&r["orientation"][a + 3])).abs() < 1e-9,
            "{name} col cosine"
        );
    }
    assert_eq!(
        series.meta.transfer_syntax_uid,
        r["transfer_syntax"].as_str().unwrap()
    );
    assert_eq!(
        series.meta.frame_of_reference_uid,
        r["frame_of_reference_uid"].as_str().unwrap()
    );
    assert_eq!(series.meta.modality, "CT");
    let (min, max, sum) = hu_stats(&series.volume);
    assert_eq!(f64::from(min), f(&r["hu_min"]), "{name} min");
    assert_eq!(f64::from(max), f(&r["hu_max"]), "{name} max");
    assert_eq!(sum as f64, f(&r["hu_sum"]), "{name} HU sum must be exact");
    let mean = sum as f64 / grid.len() as f64;
    assert!((mean - f(&r["hu_mean"])).abs() < 1e-9, "{name} mean {mean}");
}

#[test]
fn sts_series_match_reference() {
    for name in ["STS_001", "STS_002", "STS_003", "STS_004"] {
        let series = read_series_dir(data(&format!("{name}/image"))).unwrap();
        check_against_reference(name, &series);
        assert_eq!(series.meta.files.len(), series.volume.grid().dims()[2]);
    }
}

#[test]
fn jpeg2000_series_decodes_and_matches_reference() {
    // The directory also holds a license file, which must be skipped, not refused.
    let series = read_series_dir(data("totalseg_j2k")).unwrap();
    check_against_reference("totalseg_j2k", &series);
}

#[test]
fn sorted_files_follow_the_slice_normal() {
    let series = read_series_dir(data("STS_002/image")).unwrap();
    let z: Vec<f64> = series
        .meta
        .files
        .iter()
        .map(|p| {
            let o = open_file(p).unwrap();
            o.element(tags::IMAGE_POSITION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap()[2]
        })
        .collect();
    assert!(z.windows(2).all(|w| w[1] > w[0]), "{z:?}");
}

fn sts002_subset() -> Vec<PathBuf> {
    (10..=21)
        .map(|i| data(&format!("STS_002/image/{i:06}.dcm")))
        .collect()
}

#[test]
fn dcmtk_rle_and_jpeg_lossless_decode_to_the_native_hu() {
    let native = read_series_files(&sts002_subset()).unwrap();
    assert_eq!(native.volume.grid().dims(), [161, 143, 12]);
    for (dir, ts) in [
        ("encoded/STS_002_rle", "1.2.840.10008.1.2.5"),
        ("encoded/STS_002_jpegll", "1.2.840.10008.1.2.4.70"),
    ] {
        let enc = read_series_dir(data(dir)).unwrap();
        assert_eq!(enc.meta.transfer_syntax_uid, ts);
        assert_eq!(enc.volume.grid(), native.volume.grid(), "{dir}");
        assert!(enc.volume.data() == native.volume.data(), "{dir}: HU differ");
    }
}

#[test]
fn decode_into_reuses_a_preallocated_volume() {
    let bufs: Vec<Vec<u8>> = sorted_dcm(&data("STS_003/image"))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
    let reference = read_series_dir(data("STS_003/image")).unwrap();
    let mut vol = CtVolume::filled(reference.volume.grid().clone(), 1234);
    let ptr = vol.as_slice().as_ptr();
    let mut dec = SeriesDecoder::new(IngestOptions::default());
    let meta = dec.decode_into(&slices, &mut vol).unwrap();
    assert_eq!(vol.as_slice().as_ptr(), ptr, "storage was reallocated");
    assert!(vol == reference.volume);
    assert_eq!(meta.series_instance_uid, reference.meta.series_instance_uid);
    assert!(meta.files.is_empty());
    // A second decode of a different series into the same decoder works too.
    let again = dec.decode_into(&slices[..10], &mut vol).unwrap();
    assert_eq!(again.slices, 10);
}

// ---------------------------------------------------------------- bad input

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ionguide-ct-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the 12-slice STS_002 subset into a temp dir, editing slice `edit_index` with `edit`.
fn edited_copy(
    tag: &str,
    edit_index: usize,
    edit: impl FnOnce(&mut DefaultDicomObject),
) -> (TempDir, Vec<PathBuf>, PathBuf) {
    let tmp = TempDir::new(tag);
    let mut out = Vec::new();
    let mut edited = PathBuf::new();
    let mut edit = Some(edit);
    for (i, src) in sts002_subset().iter().enumerate() {
        let dst = tmp.0.join(src.file_name().unwrap());
        if i == edit_index {
            let mut obj = open_file(src).unwrap();
            (edit.take().unwrap())(&mut obj);
            obj.write_to_file(&dst).unwrap();
            edited = dst.clone();
        } else {
            std::fs::copy(src, &dst).unwrap();
        }
        out.push(dst);
    }
    (tmp, out, edited)
}

fn put_str(obj: &mut DefaultDicomObject, tag: dicom_core::Tag, vr: VR, s: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
}

fn shift_ipp(obj: &mut DefaultDicomObject, d: [f64; 3]) {
    let p = obj
        .element(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_multi_float64()
        .unwrap();
    let s = format!("{}\\{}\\{}", p[0] + d[0], p[1] + d[1], p[2] + d[2]);
    put_str(obj, tags::IMAGE_POSITION_PATIENT, VR::DS, &s);
}

fn assert_names(err: &CtError, file: &Path) {
    let msg = err.to_string();
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "message {msg:?} does not name {name}");
    assert!(!msg.ends_with('.'), "message ends with a period: {msg:?}");
}

#[test]
fn truncated_file_is_reported() {
    let tmp = TempDir::new("trunc");
    let src = std::fs::read(data("STS_002/image/000010.dcm")).unwrap();
    for cut in [200, src.len() / 2, src.len() - 1] {
        let p = tmp.0.join(format!("cut{cut}.dcm"));
        std::fs::write(&p, &src[..cut]).unwrap();
        let err = read_series_files(std::slice::from_ref(&p)).unwrap_err();
        assert!(matches!(err, CtError::Truncated { .. }), "cut at {cut}: {err:?}");
        assert_names(&err, &p);
    }
}

#[test]
fn corrupt_length_is_refused_naming_the_file_before_allocation() {
    let tmp = TempDir::new("corrupt");
    let src = std::fs::read(data("STS_002/image/000010.dcm")).unwrap();
    // The data set's SOP Instance UID (0008,0018); the meta group's is (0002,0003).
    let at = src
        .windows(4)
        .position(|w| w == [0x08, 0x00, 0x18, 0x00])
        .unwrap();
    let claimed = 0x7FFF_FFF0u32.to_le_bytes();
    let mut bytes = src[..at + 4].to_vec();
    if &src[at + 4..at + 6] == b"UI" {
        // explicit VR: a 16-bit length cannot run past the end; rewrite the header as UN
        bytes.extend_from_slice(b"UN\0\0");
        bytes.extend_from_slice(&claimed);
        bytes.extend_from_slice(&src[at + 8..]);
    } else {
        bytes.extend_from_slice(&claimed);
        bytes.extend_from_slice(&src[at + 8..]);
    }
    let p = tmp.0.join("corrupt-length.dcm");
    std::fs::write(&p, &bytes).unwrap();
    let mut files = sts002_subset();
    files[4] = p.clone();

    // Refused by the length walk, before the decoder allocates the claimed 2 GiB (a decoder
    // that allocated would report a truncation by the parser, not this element).
    let err = read_series_files(&files).unwrap_err();

    match &err {
        CtError::Truncated {
            source: OpenError::LengthBeyondEnd { tag, length, .. },
            ..
        } => {
            assert_eq!(*tag, tags::SOP_INSTANCE_UID);
            assert_eq!(*length, 0x7FFF_FFF0);
        }
        other => panic!("expected a refused length, got {other:?}"),
    }
    assert_names(&err, &p);
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("(0008,0018)"), "{chain}");
}

#[test]
fn not_dicom_is_reported() {
    let tmp = TempDir::new("notdicom");
    let p = tmp.0.join("notes.dcm");
    std::fs::write(&p, b"this is a text file, not a CT slice").unwrap();
    let mut files = sts002_subset();
    files.push(p.clone());
    let err = read_series_files(&files).unwrap_err();
    assert!(matches!(err, CtError::NotDicom { .. }), "{err:?}");
    assert_names(&err, &p);
}

#[test]
fn wrong_modality_is_reported() {
    let rs = data("STS_002/mask/RS.dcm");
    let mut files = sts002_subset();
    files.insert(3, rs.clone());
    let err = read_series_files(&files).unwrap_err();
    assert!(
        matches!(&err, CtError::WrongModality { found, .. } if found == "RTSTRUCT"),
        "{err:?}"
    );
    assert_names(&err, &rs);
}

#[test]
fn missing_pixel_data_is_reported() {
    let (_t, files, edited) = edited_copy("nopix", 4, |o| {
        o.remove_element(tags::PIXEL_DATA);
    });
    let err = read_series_files(&files).unwrap_err();
    assert!(matches!(err, CtError::NoPixelData { .. }), "{err:?}");
    assert_names(&err, &edited);
}

#[test]
fn mixed_series_is_reported() {
    let (_t, files, edited) = edited_copy("mixser", 5, |o| {
        put_str(o, tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4.5");
    });
    let err = read_series_files(&files).unwrap_err();
    assert!(
        matches!(&err, CtError::MixedSeries { found, .. } if found == "1.2.3.4.5"),
        "{err:?}"
    );
    assert_names(&err, &edited);
}

#[test]
fn mixed_frame_of_reference_is_reported() {
    let (_t, files, edited) = edited_copy("mixfor", 7, |o| {
        put_str(o, tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.3.4.6");
    });
    let err = read_series_files(&files).unwrap_err();
    assert!(matches!(err, CtError::MixedFrameOfReference { .. }), "{err:?}");
    assert_names(&err, &edited);
}

#[test]
fn missing_slice_is_reported_at_its_position() {
    let mut files = sts002_subset();
    let removed = files.remove(6); // z = −609.42 + 6·3.27 = −589.80 mm
    assert!(removed.ends_with("000016.dcm"));
    let err = read_series_files(&files).unwrap_err();
    match &err {
        CtError::MissingSlice {
            position_mm,
            spacing_mm,
            path,
            ..
        } => {
            assert!((position_mm - (-576.72)).abs() < 1e-6, "{position_mm}");
            assert!((spacing_mm - 3.27).abs() < 1e-6);
            assert!(path.ends_with("000017.dcm"));
        }
        other => panic!("expected MissingSlice, got {other:?}"),
    }
    assert_names(&err, &data("STS_002/image/000017.dcm"));
}

#[test]
fn uneven_spacing_is_reported_and_tolerance_is_configurable() {
    let (_t, files, edited) = edited_copy("uneven", 5, |o| shift_ipp(o, [0.0, 0.0, 0.3]));
    let err = read_series_files(&files).unwrap_err();
    match &err {
        CtError::UnevenSpacing { max_deviation_mm, .. } => {
            assert!((max_deviation_mm - 0.3).abs() < 0.01, "{max_deviation_mm}")
        }
        other => panic!("expected UnevenSpacing, got {other:?}"),
    }
    assert_names(&err, &edited);
    // 0.3 mm on 3.27 mm is 9 %: a 10 % tolerance accepts it and reports the deviation.
    let loose = IngestOptions {
        spacing_tolerance_rel: 0.10,
        ..IngestOptions::default()
    };
    let s = ionguide::dicom::ct::read_series_files_with(&files, &loose).unwrap();
    assert!((s.meta.max_spacing_deviation_mm - 0.3).abs() < 0.01);
}

#[test]
fn gantry_tilt_tag_is_refused() {
    let (_t, files, edited) = edited_copy("tilt", 2, |o| {
        put_str(o, tags::GANTRY_DETECTOR_TILT, VR::DS, "15");
    });
    let err = read_series_files(&files).unwrap_err();
    assert!(
        matches!(&err, CtError::GantryTilt { tilt_deg, .. } if *tilt_deg == 15.0),
        "{err:?}"
    );
    assert_names(&err, &edited);
}

#[test]
fn positions_off_the_normal_are_refused_as_tilt() {
    // Shear every slice along y as a 10° tilted acquisition would.
    let tmp = TempDir::new("shear");
    let mut files = Vec::new();
    for (i, src) in sts002_subset().iter().enumerate() {
        let mut obj = open_file(src).unwrap();
        let dy = i as f64 * 3.27 * 10f64.to_radians().tan();
        shift_ipp(&mut obj, [0.0, dy, 0.0]);
        let dst = tmp.0.join(src.file_name().unwrap());
        obj.write_to_file(&dst).unwrap();
        files.push(dst);
    }
    let err = read_series_files(&files).unwrap_err();
    match &err {
        CtError::GantryTilt { tilt_deg, .. } => assert!((tilt_deg - 10.0).abs() < 0.01, "{tilt_deg}"),
        other => panic!("expected GantryTilt, got {other:?}"),
    }
    // The first slice after the reference one is already off the normal.
    assert_names(&err, &files[1]);
}

#[test]
fn empty_input_is_reported() {
    let err = read_series_bytes(&[]).unwrap_err();
    assert!(matches!(err, CtError::EmptySeries { .. }));
    let tmp = TempDir::new("empty");
    let err = read_series_dir(&tmp.0).unwrap_err();
    assert!(matches!(err, CtError::EmptySeries { .. }));
    assert!(err.to_string().contains(tmp.0.to_str().unwrap()));
}

// ---------------------------------------------------------------- order invariance

fn sts002_bytes() -> &'static (Vec<Vec<u8>>, CtSeries) {
    static B: OnceLock<(Vec<Vec<u8>>, CtSeries)> = OnceLock::new();
    B.get_or_init(|| {
        let bufs: Vec<Vec<u8>> = sorted_dcm(&data("STS_002/image"))
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let s = read_series_bytes(&slices).unwrap();
        (bufs, s)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn slice_order_does_not_change_the_volume(perm in Just((0..48usize).collect::<Vec<_>>()).prop_shuffle()) {
        let (bufs, reference) = sts002_bytes();
        let slices: Vec<&[u8]> = perm.iter().map(|&i| bufs[i].as_slice()).collect();
        let s = read_series_bytes(&slices).unwrap();
        prop_assert!(s.volume == reference.volume);
        prop_assert_eq!(&s.meta, &reference.meta);
    }
}

// ---------------------------------------------------------------- Enhanced CT (multi-frame)

/// Builds an Enhanced CT object from the STS_001 slices: shared Pixel Measures and Plane
/// Orientation, per-frame Plane Position and Pixel Value Transformation, frames stored in
/// reverse order, and every odd frame's stored values shifted by +8 with intercept −8 (same
/// HU) so a reader that ignores per-frame rescale fails.
fn enhanced_ct_from_sts001() -> Vec<u8> {
    use dicom_core::value::DataSetSequence;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let el = |tag, vr, s: &str| DataElement::new(tag, vr, PrimitiveValue::from(s));
    let item = |els: Vec<DataElement<InMemDicomObject>>| InMemDicomObject::from_element_iter(els);
    let seq = |tag, items: Vec<InMemDicomObject>| DataElement::new(tag, VR::SQ, DataSetSequence::from(items));
    let mut files = sorted_dcm(&data("STS_001/image"));
    files.reverse();
    let first = open_file(&files[0]).unwrap();
    let s = |tag| first.element(tag).unwrap().to_str().unwrap().trim().to_owned();
    let signed = first
        .element(tags::PIXEL_REPRESENTATION)
        .unwrap()
        .to_int::<u16>()
        .unwrap()
        == 1;
    let mut pixels = Vec::new();
    let mut per_frame = Vec::new();
    for (f, p) in files.iter().enumerate() {
        let o = open_file(p).unwrap();
        let ipp = o
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_str()
            .unwrap()
            .into_owned();
        let slope = o.element(tags::RESCALE_SLOPE).unwrap().to_float64().unwrap();
        let mut icpt = o.element(tags::RESCALE_INTERCEPT).unwrap().to_float64().unwrap();
        let raw = o
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .into_owned();
        assert_eq!(slope, 1.0);
        let shift = if f % 2 == 1 { 8 } else { 0 };
        icpt -= f64::from(shift);
        for c in raw.chunks_exact(2) {
            let v = u16::from_le_bytes([c[0], c[1]]);
            let v = if signed {
                (v as i16).checked_add(shift as i16).unwrap() as u16
            } else {
                v.checked_add(shift).unwrap()
            };
            pixels.extend_from_slice(&v.to_le_bytes());
        }
        per_frame.push(item(vec![
            seq(
                tags::PLANE_POSITION_SEQUENCE,
                vec![item(vec![el(tags::IMAGE_POSITION_PATIENT, VR::DS, &ipp)])],
            ),
            seq(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                vec![item(vec![
                    el(tags::RESCALE_INTERCEPT, VR::DS, &format!("{icpt}")),
                    el(tags::RESCALE_SLOPE, VR::DS, "1"),
                    el(tags::RESCALE_TYPE, VR::LO, "HU"),
                ])],
            ),
        ]));
    }
    let shared = item(vec![
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                el(tags::PIXEL_SPACING, VR::DS, &s(tags::PIXEL_SPACING)),
                el(tags::SLICE_THICKNESS, VR::DS, &s(tags::SLICE_THICKNESS)),
            ])],
        ),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![el(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                &s(tags::IMAGE_ORIENTATION_PATIENT),
            )])],
        ),
    ]);
    let copy = |tag| first.element(tag).unwrap().clone();
    let mut obj = InMemDicomObject::from_element_iter([
        el(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2.1"),
        el(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1234567890"),
        el(tags::MODALITY, VR::CS, "CT"),
        copy(tags::STUDY_INSTANCE_UID),
        copy(tags::SERIES_INSTANCE_UID),
        copy(tags::FRAME_OF_REFERENCE_UID),
        copy(tags::ROWS),
        copy(tags::COLUMNS),
        copy(tags::BITS_ALLOCATED),
        copy(tags::BITS_STORED),
        copy(tags::HIGH_BIT),
        copy(tags::PIXEL_REPRESENTATION),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::NUMBER_OF_FRAMES, VR::IS, &files.len().to_string()),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
    ]);
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    ));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

#[test]
fn enhanced_ct_multiframe_matches_the_sts001_reference() {
    let bytes = enhanced_ct_from_sts001();
    let s = read_series_bytes(&[&bytes]).unwrap();
    assert_eq!(s.meta.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2.1");
    assert_eq!(s.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    // Same checks as the classic series except the transfer syntax, which we chose.
    let mut r = reference()["STS_001"].clone();
    r["transfer_syntax"] = Value::from("1.2.840.10008.1.2.1");
    check_fields("STS_001 as Enhanced CT", &r, &s);
    let classic = read_series_dir(data("STS_001/image")).unwrap();
    assert!(s.volume == classic.volume);
}
