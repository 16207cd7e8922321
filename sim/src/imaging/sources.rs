//! Where the replay's frames come from: the [`FrameSource`] trait (frames and their
//! noise-free truth), the moving phantom ([`PhantomFrames`]) and a user's CT moved rigidly
//! ([`RealCtFrames`]).

use std::path::{Path, PathBuf};

use ionguide::dicom::ct::CtSliceTemplate;
use ionguide::geometry::RoomSetup;
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;

use crate::anatomy::phantom::Phantom;
use crate::imaging::frames::{FrameError, FrameOptions, FrameSynth, SeriesIds};

/// Why a frame source could not set up or make a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Setting up the source (the phantom's frame synthesizer, the user's CT slices).
    #[error("{0}")]
    Setup(String),
    /// Making a frame.
    #[error("frame {index}: {reason}")]
    Frame {
        /// Which frame.
        index: usize,
        /// Why.
        reason: String,
    },
    /// Reading the user's CT folder.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Planning point, displacement → where that tissue is (mm, patient LPS).
pub type MotionMap = std::sync::Arc<dyn Fn(PointMm, [f64; 3]) -> PointMm + Send + Sync>;

/// Makes frames and tells the truth about them.
pub trait FrameSource {
    /// A short description for the report.
    fn describe(&self) -> String;
    /// The DICOM objects of frame `index` with the anatomy displaced by `displacement_mm`.
    fn frame(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<Vec<Vec<u8>>, SourceError>;
    /// [`frame`](Self::frame), saying it was acquired at `acquired_unix_ns` (ns since the UNIX
    /// epoch) when given: the pipeline reckons a correction's validity from that instant.
    /// The default ignores the time (for sources whose frames carry their own, or none).
    fn frame_acquired(
        &mut self,
        index: usize,
        displacement_mm: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, SourceError> {
        let _ = acquired_unix_ns;
        self.frame(index, displacement_mm)
    }
    /// The noise-free truth of the same frame, for range scoring.
    fn truth(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<&CtVolume, SourceError>;
    /// Where the tissue at a planning point is when the anatomy is displaced by a
    /// displacement (`map(q_mm, displacement_mm)`) — the exact map the 4D dose carries each
    /// instant's dose back with. By default the whole anatomy translates.
    fn motion_map(&self) -> MotionMap {
        std::sync::Arc::new(|q: PointMm, d: [f64; 3]| q + ionguide::units::VectorMm::from(d))
    }
    /// Whether the motion map is a plain translation (then a displacement of zero maps
    /// every voxel onto itself exactly).
    fn moves_rigidly(&self) -> bool {
        true
    }
}

/// Frames of the moving phantom: noisy frames for the pipeline, noise-free ones as truth.
pub struct PhantomFrames {
    synth: FrameSynth,
    truth: FrameSynth,
}

impl PhantomFrames {
    /// Frame makers for `phantom`, planned under `ids`.
    /// `room` places the noisy frames in an in-room scanner's coordinates; the truth stays
    /// in planning coordinates.
    pub fn new(
        phantom: &Phantom,
        ids: &SeriesIds,
        room: Option<RoomSetup>,
        noise_sigma_hu: f64,
        seed: u64,
    ) -> Result<Self, SourceError> {
        let err = |e: FrameError| SourceError::Setup(e.to_string());
        let synth = FrameSynth::new(
            phantom,
            ids,
            FrameOptions {
                noise_sigma_hu,
                seed,
                room,
                ..FrameOptions::default()
            },
        )
        .map_err(err)?;
        // the truth stays in planning coordinates: what the pipeline's answers are in
        let truth = FrameSynth::new(
            phantom,
            ids,
            FrameOptions {
                noise_sigma_hu: 0.0,
                seed,
                ..FrameOptions::default()
            },
        )
        .map_err(err)?;
        Ok(PhantomFrames { synth, truth })
    }
}

impl FrameSource for PhantomFrames {
    fn describe(&self) -> String {
        let g = self.synth.volume().grid();
        let [nx, ny, nz] = g.dims();
        format!("thorax phantom {nx}×{ny}×{nz}")
    }
    fn frame(&mut self, index: usize, d: [f64; 3]) -> Result<Vec<Vec<u8>>, SourceError> {
        self.frame_acquired(index, d, None)
    }
    fn frame_acquired(
        &mut self,
        index: usize,
        d: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, SourceError> {
        self.synth
            .frame_acquired(index, d, acquired_unix_ns)
            .map(|f| f.slices)
            .map_err(|e| SourceError::Frame {
                index,
                reason: e.to_string(),
            })
    }
    fn truth(&mut self, index: usize, d: [f64; 3]) -> Result<&CtVolume, SourceError> {
        self.truth.render(index, d).map_err(|e| SourceError::Frame {
            index,
            reason: e.to_string(),
        })
    }
    fn motion_map(&self) -> MotionMap {
        let phantom = std::sync::Arc::new(self.truth.phantom().clone());
        std::sync::Arc::new(move |q: PointMm, d: [f64; 3]| {
            PointMm::from(phantom.moved_point([q.x, q.y, q.z], d))
        })
    }
    fn moves_rigidly(&self) -> bool {
        false
    }
}

/// A user's CT, moved rigidly by rewriting each slice's Image Position (Patient): the
/// displacement is exact, so the truth is known without resampling.
pub struct RealCtFrames {
    slices: Vec<CtSliceTemplate>,
    dir: PathBuf,
    truth: Option<CtVolume>,
}

impl RealCtFrames {
    /// Loads every DICOM file of `dir` (the CT series).
    pub fn load(dir: &Path) -> Result<Self, SourceError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| SourceError::Io {
                path: dir.to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        let mut slices = Vec::new();
        for p in &paths {
            if let Some(slice) = CtSliceTemplate::open(p) {
                slices.push(slice);
            }
        }
        if slices.is_empty() {
            return Err(SourceError::Setup(format!("no CT slices in {}", dir.display())));
        }
        Ok(RealCtFrames {
            slices,
            dir: dir.to_owned(),
            truth: None,
        })
    }
}

impl FrameSource for RealCtFrames {
    fn describe(&self) -> String {
        format!("{} slices of {}", self.slices.len(), self.dir.display())
    }
    fn frame(&mut self, index: usize, d: [f64; 3]) -> Result<Vec<Vec<u8>>, SourceError> {
        self.frame_acquired(index, d, None)
    }
    /// Without `acquired_unix_ns` the slices keep the times they were read with (a real CT's
    /// are its scan's, long past: a pipeline holds such frames as stale).
    fn frame_acquired(
        &mut self,
        index: usize,
        d: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, SourceError> {
        let fail = |reason: String| SourceError::Frame { index, reason };
        let acquired = acquired_unix_ns
            .map(i64::try_from)
            .transpose()
            .map_err(|_| fail("acquisition time past 2262".into()))?;
        self.slices
            .iter()
            .enumerate()
            .map(|(k, slice)| {
                let uid = format!("2.25.{}{:05}{:05}", 7_000_000 + index, k, index % 100_000);
                slice
                    .moved_acquired(d, index as u64 + 1, &uid, acquired)
                    .map_err(|e| fail(format!("slice {k}: {e}")))
            })
            .collect()
    }
    fn truth(&mut self, index: usize, d: [f64; 3]) -> Result<&CtVolume, SourceError> {
        let bytes = self.frame(index, d)?;
        let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
        let series = ionguide::dicom::ct::read_series_bytes(&refs).map_err(|e| SourceError::Frame {
            index,
            reason: e.to_string(),
        })?;
        Ok(self.truth.insert(series.volume))
    }
}
