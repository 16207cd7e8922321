//! CT ingest speed: a 512×512×48 native frame from memory into a pooled volume (target
//! ≤ 8 ms; the memory-copy floor is ~2–3 ms), and JPEG 2000 lossless decode per slice
//! (pydicom takes ~28 ms/slice on the same data).
//!
//! The native series is built once from the real totalseg_j2k slices: decoded, re-written as
//! Explicit VR Little Endian and tiled to 48 slices at 2 mm.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, FileMetaTableBuilder};
use dicom_pixeldata::PixelDecoder;
use ionguide::dicom::ct::{read_series_bytes, IngestOptions, SeriesDecoder};
use ionguide::dicom::uids;

fn j2k_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/totalseg_j2k");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("CT."))
        .collect();
    v.sort();
    v
}

fn native_series(n: usize) -> Vec<Vec<u8>> {
    let files = j2k_files();
    let decoded: Vec<_> = files
        .iter()
        .map(|p| {
            let o = open_file(p).unwrap();
            let px = o.decode_pixel_data().unwrap().data().to_vec();
            (o, px)
        })
        .collect();
    (0..n)
        .map(|k| {
            let (o, px) = &decoded[k % decoded.len()];
            let mut obj = o.clone().into_inner();
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(px.clone()),
            ));
            let ipp = format!("-249.51171875\\-437.51171875\\{}", -804.5 + 2.0 * k as f64);
            obj.put(DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                PrimitiveValue::from(ipp),
            ));
            obj.put(DataElement::new(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("2.25.42"),
            ));
            let file = obj
                .with_meta(
                    FileMetaTableBuilder::new()
                        .transfer_syntax(uids::EXPLICIT_VR_LE)
                        .media_storage_sop_class_uid(uids::CT_SOP_CLASS)
                        .media_storage_sop_instance_uid(format!("2.25.{}", 1000 + k)),
                )
                .unwrap();
            let mut out = Vec::new();
            file.write_all(&mut out).unwrap();
            out
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let bufs = native_series(48);
    let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
    let mut dec = SeriesDecoder::new(IngestOptions::default());
    let mut vol = read_series_bytes(&slices).unwrap().volume;
    assert_eq!(vol.grid().dims(), [512, 512, 48]);
    let mut g = c.benchmark_group("ct_ingest");
    g.sample_size(20);
    g.bench_function("native_512x512x48_from_memory_into_pooled_volume", |b| {
        b.iter(|| dec.decode_into(&slices, &mut vol).unwrap())
    });
    // The floor the issue quotes: a plain copy of the frame's 24 MB, and an i16 read → write
    // pass over it (what the HU conversion must do at least).
    let src: Vec<i16> = (0..512 * 512 * 48).map(|i| (i % 4000) as i16 - 1024).collect();
    let mut dst = vec![0i16; src.len()];
    g.bench_function("floor_memcpy_24MB", |b| {
        b.iter(|| dst.copy_from_slice(std::hint::black_box(&src)))
    });
    g.bench_function("floor_i16_read_add_write_24MB", |b| {
        b.iter(|| {
            for (o, &v) in dst.iter_mut().zip(std::hint::black_box(&src)) {
                *o = v.wrapping_add(-1024);
            }
        })
    });
    let j2k: Vec<Vec<u8>> = j2k_files()
        .iter()
        .take(1)
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    g.bench_function("jpeg2000_lossless_512x512_one_slice", |b| {
        b.iter(|| read_series_bytes(&[&j2k[0]]).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
