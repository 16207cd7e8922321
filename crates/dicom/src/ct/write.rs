//! Writing a [`CtVolume`] as a classic CT series (one Part 10 CT Image Storage object per
//! slice), and re-writing a CT slice moved rigidly.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use crate::datetime::{format_datetime, UtcOffset};
use crate::geometry::Grid;
use crate::uids::CT_SOP_CLASS;
use crate::volume::CtVolume;
use crate::write::elements::{ds, ds_strs, int_s, meta, ow, part10, text, us};
use crate::write::{check_uid, Producer, WriteError};

/// Stored value = HU − this; −1024 keeps air at 0 as most scanners do.
const RESCALE_INTERCEPT: f64 = -1024.0;

/// The identity a CT series is written with: patient, study, series, Frame of Reference, and
/// the per-acquisition facts (number, temporal position, date and time).
#[derive(Debug, Clone, PartialEq)]
pub struct CtSeriesIds {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Patient's Name (0010,0010), DICOM PN form.
    pub patient_name: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: String,
    /// Series Number.
    pub series_number: u32,
    /// Acquisition Number (one per in-room frame).
    pub acquisition_number: u32,
    /// Temporal Position Identifier (one per in-room frame), if any.
    pub temporal_position: Option<u32>,
    /// Slice `k` gets SOP Instance UID `{sop_instance_uid_root}.{k + 1}`.
    pub sop_instance_uid_root: String,
    /// Study, series, acquisition and content date (DA, `YYYYMMDD`).
    pub date: String,
    /// Study, series, acquisition and content time (TM, `HHMMSS`).
    pub time: String,
    /// When the slices were acquired, as written in their acquisition and content date and
    /// time.
    pub acquired: Acquired,
}

/// When a written series was acquired: what its Acquisition and Content Date and Time say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The series' `date` and `time` (a planning CT: its moment matters to no reader).
    SeriesDateTime,
    /// At this instant, ns since the UNIX epoch: Acquisition DateTime (0008,002A) to the
    /// microsecond with offset `+0000`, the Acquisition and Content Date and Time of the same
    /// instant in UTC, and Timezone Offset From UTC (0008,0201) `+0000`.
    At {
        /// ns since the UNIX epoch.
        unix_ns: i64,
    },
    /// Acquisition and Content Date and Time written empty (both are type 2 or 3 in a CT
    /// image): a reader cannot tell when the slices were acquired.
    Unstated,
}

impl Acquired {
    /// Puts the acquisition and content date and time (and for an instant, Acquisition
    /// DateTime and the offset) into `o`.
    fn put(self, o: &mut InMemDicomObject, date: &str, time: &str) {
        let (date, time) = match self {
            Acquired::SeriesDateTime => (date.to_owned(), time.to_owned()),
            Acquired::Unstated => (String::new(), String::new()),
            Acquired::At { unix_ns } => {
                let dt = format_datetime(unix_ns, UtcOffset::UTC);
                o.put(text(tags::ACQUISITION_DATE_TIME, VR::DT, &dt));
                o.put(text(
                    tags::TIMEZONE_OFFSET_FROM_UTC,
                    VR::SH,
                    &UtcOffset::UTC.to_string(),
                ));
                // YYYYMMDD | HHMMSS.FFFFFF | +0000
                (dt[..8].to_owned(), dt[8..21].to_owned())
            }
        };
        o.put(text(tags::ACQUISITION_DATE, VR::DA, &date));
        o.put(text(tags::CONTENT_DATE, VR::DA, &date));
        o.put(text(tags::ACQUISITION_TIME, VR::TM, &time));
        o.put(text(tags::CONTENT_TIME, VR::TM, &time));
    }
}

impl CtSeriesIds {
    /// SOP Instance UID of slice `k`.
    pub fn sop_instance_uid(&self, k: usize) -> String {
        format!("{}.{}", self.sop_instance_uid_root, k + 1)
    }

    /// Checks every UID is one, and short enough (56 characters) that slice suffixes and the
    /// structure set's series suffix still fit in 64.
    pub fn validate(&self) -> Result<(), WriteError> {
        for (name, uid) in [
            ("Study Instance UID", &self.study_instance_uid),
            ("Series Instance UID", &self.series_instance_uid),
            ("Frame of Reference UID", &self.frame_of_reference_uid),
            ("SOP Instance UID root", &self.sop_instance_uid_root),
        ] {
            check_uid(name, uid, 56)?;
        }
        Ok(())
    }

    /// Patient and General Study modules, shared by every object of the study.
    pub(crate) fn put_patient_study(&self, o: &mut InMemDicomObject) {
        o.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
        o.put(text(tags::STUDY_DATE, VR::DA, &self.date));
        o.put(text(tags::STUDY_TIME, VR::TM, &self.time));
        o.put(text(tags::ACCESSION_NUMBER, VR::SH, ""));
        o.put(text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""));
        o.put(text(tags::PATIENT_NAME, VR::PN, &self.patient_name));
        o.put(text(tags::PATIENT_ID, VR::LO, &self.patient_id));
        o.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, ""));
        o.put(text(tags::PATIENT_SEX, VR::CS, "O"));
        o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_instance_uid));
        o.put(text(tags::STUDY_ID, VR::SH, "1"));
    }
}

/// The file meta group of `producer`'s objects.
pub(crate) fn producer_meta(
    producer: &Producer,
    sop_class: &str,
    sop_instance_uid: &str,
) -> dicom_object::FileMetaTableBuilder {
    meta(sop_class, sop_instance_uid)
        .implementation_class_uid(producer.implementation_class_uid)
        .implementation_version_name(producer.implementation_version_name)
}

/// Writes a CT volume as a classic CT series: one Part 10 CT Image Storage object per slice,
/// Explicit VR Little Endian, 16-bit signed stored values with rescale (intercept −1024,
/// slope 1), so every HU from −33 792 to 31 743 round-trips exactly (values outside are
/// clamped).
pub fn write_ct_series(
    ct: &CtVolume,
    ids: &CtSeriesIds,
    producer: &Producer,
) -> Result<Vec<Vec<u8>>, WriteError> {
    write_ct_series_placed(ct, ct.grid(), ids, producer)
}

/// [`write_ct_series`] with the voxels placed on `grid` (same dimensions as the volume's):
/// how another scanner, with its own coordinates, would describe the same images.
pub fn write_ct_series_placed(
    ct: &CtVolume,
    grid: &Grid,
    ids: &CtSeriesIds,
    producer: &Producer,
) -> Result<Vec<Vec<u8>>, WriteError> {
    ids.validate()?;
    if grid.dims() != ct.grid().dims() {
        return Err(WriteError::BadParameter {
            name: "placement grid",
            reason: format!(
                "dimensions {:?} are not the volume's {:?}",
                grid.dims(),
                ct.grid().dims()
            ),
        });
    }
    let [nx, ny, nz] = grid.dims();
    let (rows, cols) = match (u16::try_from(ny), u16::try_from(nx)) {
        (Ok(r), Ok(c)) => (r, c),
        _ => {
            return Err(WriteError::BadParameter {
                name: "image size",
                reason: format!("{nx}×{ny} exceeds 65535"),
            })
        }
    };
    let plane = nx * ny;
    let data = ct.as_slice();
    (0..nz)
        .map(|k| {
            let sop_uid = ids.sop_instance_uid(k);
            let mut o = InMemDicomObject::new_empty();
            ids.put_patient_study(&mut o);
            put_slice_identity(&mut o, ids, producer, &sop_uid, k);
            put_slice_geometry(&mut o, grid, ids, k);
            put_pixels(&mut o, rows, cols, &data[k * plane..(k + 1) * plane]);
            let meta = producer_meta(producer, CT_SOP_CLASS, &sop_uid);
            part10(o, meta, &format!("CT slice {k}"))
        })
        .collect()
}

/// General Series, General Equipment, General Image and the acquisition facts of slice `k`.
fn put_slice_identity(
    o: &mut InMemDicomObject,
    ids: &CtSeriesIds,
    producer: &Producer,
    sop_uid: &str,
    k: usize,
) {
    o.put(text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"));
    o.put(text(tags::SOP_CLASS_UID, VR::UI, CT_SOP_CLASS));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop_uid));
    o.put(text(tags::SERIES_DATE, VR::DA, &ids.date));
    o.put(text(tags::SERIES_TIME, VR::TM, &ids.time));
    ids.acquired.put(o, &ids.date, &ids.time);
    o.put(text(tags::MODALITY, VR::CS, "CT"));
    o.put(text(tags::MANUFACTURER, VR::LO, producer.manufacturer));
    o.put(text(tags::KVP, VR::DS, "120"));
    o.put(text(tags::PATIENT_POSITION, VR::CS, "HFS"));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_instance_uid));
    o.put(int_s(tags::SERIES_NUMBER, ids.series_number.into()));
    o.put(int_s(tags::ACQUISITION_NUMBER, ids.acquisition_number.into()));
    o.put(int_s(tags::INSTANCE_NUMBER, k as i64 + 1));
    if let Some(t) = ids.temporal_position {
        o.put(int_s(tags::TEMPORAL_POSITION_IDENTIFIER, t.into()));
    }
}

/// Image Plane and Frame of Reference of slice `k` on `grid`.
fn put_slice_geometry(o: &mut InMemDicomObject, grid: &Grid, ids: &CtSeriesIds, k: usize) {
    let s = grid.spacing_mm();
    let d = grid.direction();
    let iop = [d[(0, 0)], d[(1, 0)], d[(2, 0)], d[(0, 1)], d[(1, 1)], d[(2, 1)]];
    let p = grid.index_to_patient([0.0, 0.0, k as f64]);
    o.put(ds(tags::SLICE_THICKNESS, &[s[2]]));
    o.put(ds(tags::IMAGE_POSITION_PATIENT, &[p.x, p.y, p.z]));
    o.put(ds(tags::IMAGE_ORIENTATION_PATIENT, &iop));
    o.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &ids.frame_of_reference_uid,
    ));
    o.put(text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));
    o.put(ds(tags::SLICE_LOCATION, &[p.z]));
    o.put(int_s(tags::IMAGES_IN_ACQUISITION, grid.dims()[2] as i64));
    // Pixel Spacing is row spacing (along j), then column spacing (along i).
    o.put(ds(tags::PIXEL_SPACING, &[s[1], s[0]]));
}

/// Image Pixel module and rescale: `hu` (one plane, i fastest) as 16-bit signed stored values.
fn put_pixels(o: &mut InMemDicomObject, rows: u16, cols: u16, hu: &[crate::units::Hu]) {
    o.put(us(tags::SAMPLES_PER_PIXEL, 1));
    o.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    o.put(us(tags::ROWS, rows));
    o.put(us(tags::COLUMNS, cols));
    o.put(us(tags::BITS_ALLOCATED, 16));
    o.put(us(tags::BITS_STORED, 16));
    o.put(us(tags::HIGH_BIT, 15));
    o.put(us(tags::PIXEL_REPRESENTATION, 1));
    o.put(ds(tags::RESCALE_INTERCEPT, &[RESCALE_INTERCEPT]));
    o.put(ds(tags::RESCALE_SLOPE, &[1.0]));
    o.put(text(tags::RESCALE_TYPE, VR::LO, "HU"));
    let mut px = Vec::with_capacity(2 * hu.len());
    for &v in hu {
        let stored = (i32::from(v) - RESCALE_INTERCEPT as i32).clamp(i16::MIN.into(), i16::MAX.into()) as i16;
        px.extend_from_slice(&stored.to_le_bytes());
    }
    o.put(ow(tags::PIXEL_DATA, px));
}

/// A CT slice read from a file, to be written again moved: how a user's own CT becomes a
/// stream of in-room frames with an exactly known displacement.
#[derive(Debug, Clone)]
pub struct CtSliceTemplate {
    obj: DefaultDicomObject,
}

impl CtSliceTemplate {
    /// Opens `path`; `None` when it is not a readable DICOM object of Modality CT (a series
    /// folder may hold other files).
    pub fn open(path: &Path) -> Option<Self> {
        let obj = dicom_object::open_file(path).ok()?;
        let is_ct = obj
            .element(tags::MODALITY)
            .ok()
            .and_then(|e| e.to_str().ok())
            .is_some_and(|m| m.trim() == "CT");
        is_ct.then_some(CtSliceTemplate { obj })
    }

    /// The slice moved by `displacement_mm` (Image Position (Patient) shifted, to 0.1 µm),
    /// as acquisition `acquisition_number` with SOP Instance UID `sop_instance_uid`;
    /// everything else as read.
    pub fn moved(
        &self,
        displacement_mm: [f64; 3],
        acquisition_number: u64,
        sop_instance_uid: &str,
    ) -> Result<Vec<u8>, WriteError> {
        self.moved_acquired(displacement_mm, acquisition_number, sop_instance_uid, None)
    }

    /// [`moved`](Self::moved), and with `acquired_unix_ns` the slice says it was acquired
    /// then (as [`Acquired::At`] writes it), whatever times it was read with.
    pub fn moved_acquired(
        &self,
        displacement_mm: [f64; 3],
        acquisition_number: u64,
        sop_instance_uid: &str,
        acquired_unix_ns: Option<i64>,
    ) -> Result<Vec<u8>, WriteError> {
        let mut obj = self.obj.clone();
        if let Some(unix_ns) = acquired_unix_ns {
            Acquired::At { unix_ns }.put(&mut obj, "", "");
        }
        let ipp = obj
            .element(tags::IMAGE_POSITION_PATIENT)
            .ok()
            .and_then(|e| e.to_multi_float64().ok())
            .filter(|v| v.len() == 3)
            .ok_or(WriteError::MissingAttribute {
                what: "Image Position (Patient)",
            })?;
        let moved = (0..3)
            .map(|a| format!("{:.4}", ipp[a] + displacement_mm[a]))
            .collect();
        obj.put(ds_strs(tags::IMAGE_POSITION_PATIENT, moved));
        obj.put(text(
            tags::ACQUISITION_NUMBER,
            VR::IS,
            &acquisition_number.to_string(),
        ));
        obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid));
        obj.update_meta(|m| m.media_storage_sop_instance_uid = sop_instance_uid.to_string());
        let mut out = Vec::new();
        obj.write_all(&mut out).map_err(|e| WriteError::Write {
            what: format!("moved CT slice {sop_instance_uid}"),
            source: Box::new(e),
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, Tag};

    use super::*;
    use crate::ct::{read_series_bytes, AcquisitionSpan, CtError, IngestOptions, SeriesDecoder};
    use crate::units::PointMm;

    const PRODUCER: Producer = Producer {
        manufacturer: "ionguide-test",
        implementation_class_uid: "2.25.1",
        implementation_version_name: "IONGUIDE_TEST",
    };
    /// 2026-12-02T09:53:01.123456Z (`date -u -d 2026-12-02T09:53:01Z +%s` = 1796205181).
    const T: i64 = 1_796_205_181_123_456_000;

    fn ids(acquired: Acquired) -> CtSeriesIds {
        CtSeriesIds {
            patient_id: "P".into(),
            patient_name: "P^Q".into(),
            study_instance_uid: "2.25.11".into(),
            series_instance_uid: "2.25.12".into(),
            frame_of_reference_uid: "2.25.13".into(),
            series_number: 1,
            acquisition_number: 1,
            temporal_position: None,
            sop_instance_uid_root: "2.25.14".into(),
            date: "20190820".into(),
            time: "125257".into(),
            acquired,
        }
    }

    fn slices(acquired: Acquired) -> Vec<Vec<u8>> {
        let grid = Grid::axis_aligned([4, 3, 3], PointMm::origin(), [1.0, 1.0, 2.0]).unwrap();
        write_ct_series(&CtVolume::filled(grid, 0), &ids(acquired), &PRODUCER).unwrap()
    }

    /// Rewrites slice `bytes` with `edits` (tag, VR, text; empty text removes the element).
    fn edited(bytes: &[u8], edits: &[(Tag, VR, &str)]) -> Vec<u8> {
        let mut obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        for &(tag, vr, value) in edits {
            if value.is_empty() {
                obj.remove_element(tag);
            } else {
                obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
            }
        }
        let mut out = Vec::new();
        obj.write_all(&mut out).unwrap();
        out
    }

    fn span(slices: &[Vec<u8>], strict: bool) -> Result<Option<AcquisitionSpan>, CtError> {
        let refs: Vec<&[u8]> = slices.iter().map(|s| s.as_slice()).collect();
        let mut volume = CtVolume::filled(
            Grid::axis_aligned([1, 1, 1], PointMm::origin(), [1.0; 3]).unwrap(),
            0,
        );
        let options = IngestOptions {
            strict_acquisition_time: strict,
            ..IngestOptions::default()
        };
        SeriesDecoder::new(options)
            .decode_into(&refs, &mut volume)
            .map(|m| m.acquisition)
    }

    #[test]
    fn an_instant_written_reads_back_to_the_microsecond() {
        let s = slices(Acquired::At { unix_ns: T + 789 });
        let meta = read_series_bytes(&s.iter().map(|v| v.as_slice()).collect::<Vec<_>>())
            .unwrap()
            .meta;
        // the writer keeps microseconds: the 789 ns are dropped, never rounded up
        let want = AcquisitionSpan {
            earliest_unix_ns: T,
            latest_unix_ns: T,
            inputs_timed: 3,
            inputs: 3,
        };
        assert_eq!(meta.acquisition, Some(want));
        assert_eq!(meta.acquisition_date.as_deref(), Some("20261202"));
        assert_eq!(meta.acquisition_time.as_deref(), Some("095301.123456"));
        // the planning CT's series date and time are its acquisition: 2019-08-20 12:52:57 UTC
        // (`date -u -d 2019-08-20T12:52:57Z +%s` = 1566305577)
        let planning = span(&slices(Acquired::SeriesDateTime), true).unwrap().unwrap();
        assert_eq!(planning.earliest_unix_ns, 1_566_305_577_000_000_000);
        assert_eq!(span(&slices(Acquired::Unstated), true).unwrap(), None);
    }

    #[test]
    fn the_fallbacks_and_offsets_are_read_in_order() {
        let s = slices(Acquired::At { unix_ns: T });
        let dt = tags::ACQUISITION_DATE_TIME;
        let tz = tags::TIMEZONE_OFFSET_FROM_UTC;
        let one_h = 3_600_000_000_000;
        // slices acquired over 2 s, one with its own offset: earliest and latest
        let mut spread = s.clone();
        spread[1] = edited(&s[1], &[(dt, VR::DT, "20261202115302.123456+0200")]);
        spread[2] = edited(&s[2], &[(dt, VR::DT, "20261202095303.123456")]);
        let got = span(&spread, true).unwrap().unwrap();
        assert_eq!((got.earliest_unix_ns, got.latest_unix_ns), (T, T + 2_000_000_000));
        // a DT without an offset is at Timezone Offset From UTC
        let local = edited(
            &s[0],
            &[(dt, VR::DT, "20261202105301.123456"), (tz, VR::SH, "+0100")],
        );
        assert_eq!(span(&[local], true).unwrap().unwrap().earliest_unix_ns, T);
        // no DT: Acquisition Date + Time, at the offset
        let pair = edited(
            &s[0],
            &[
                (dt, VR::DT, ""),
                (tags::ACQUISITION_TIME, VR::TM, "085301.123456"),
                (tz, VR::SH, "-0100"),
            ],
        );
        assert_eq!(span(&[pair], true).unwrap().unwrap().earliest_unix_ns, T);
        // no acquisition time at all: Content Date + Time
        let content = edited(
            &s[0],
            &[
                (dt, VR::DT, ""),
                (tags::ACQUISITION_TIME, VR::TM, ""),
                (tags::CONTENT_TIME, VR::TM, "105301.123456"),
            ],
        );
        assert_eq!(
            span(&[content], true).unwrap().unwrap().earliest_unix_ns,
            T + one_h
        );
        // one slice without any time
        let mut partly = s.clone();
        partly[0] = edited(
            &s[0],
            &[
                (dt, VR::DT, ""),
                (tags::ACQUISITION_TIME, VR::TM, ""),
                (tags::CONTENT_TIME, VR::TM, ""),
            ],
        );
        let got = span(&partly, true).unwrap().unwrap();
        assert_eq!((got.inputs_timed, got.inputs), (2, 3));
    }

    #[test]
    fn a_malformed_time_refuses_the_frame_when_strict_and_is_unknown_otherwise() {
        let s = slices(Acquired::At { unix_ns: T });
        let mut bad = s.clone();
        bad[2] = edited(&s[2], &[(tags::ACQUISITION_DATE_TIME, VR::DT, "20261302095301")]);
        match span(&bad, true) {
            Err(e @ CtError::AcquisitionTime { .. }) => {
                let text = e.to_string();
                let cause = std::error::Error::source(&e).unwrap().to_string();
                assert!(text.contains("slice-2"), "{text}");
                assert!(
                    cause.contains("AcquisitionDateTime") && cause.contains("20261302095301"),
                    "{cause}"
                );
                assert!(cause.contains("month 13"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
        let lenient = span(&bad, false).unwrap().unwrap();
        assert_eq!((lenient.inputs_timed, lenient.inputs), (2, 3));
        // a malformed offset matters only where a value needs it
        let mut tz = s.clone();
        tz[0] = edited(&s[0], &[(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "0100")]);
        assert!(span(&tz, true).is_ok(), "the DT carries its own offset");
        tz[0] = edited(&tz[0], &[(tags::ACQUISITION_DATE_TIME, VR::DT, "20261202095301")]);
        let e = span(&tz, true).unwrap_err();
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .to_string()
                .contains("TimezoneOffsetFromUTC"),
            "{e}"
        );
    }
}
