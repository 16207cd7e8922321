//! The simulator's CT series and structure set identities (written through `ionguide::dicom`), and the in-room frame synthesizer.
//!
//! Everything is deterministic: UIDs come from a seed and a label ([`uid_from_seed`]), noise
//! from a seed per frame, dates are fixed. The same inputs give byte-identical output.

use std::f64::consts::PI;

use ionguide::dicom::ct::{self as dicom_ct, Acquired, CtSeriesIds};
use ionguide::dicom::rtstruct::{self as dicom_rtstruct, StructureSetIds};
use ionguide::dicom::write::{Producer, WriteError};
use ionguide::geometry::{Grid, RigidTransform, RoomSetup};
use ionguide::register::resample;
use ionguide::structure::StructureSet;
use ionguide::units::{Hu, PointMm, VectorMm};
use ionguide::volume::CtVolume;

use crate::anatomy::phantom::{Phantom, PhantomError};
use crate::rng::{derive_seed, SplitMix64};
use crate::uid::uid_from_seed;

/// Fixed dates keep output byte-identical between runs.
const FIXED_DATE: &str = "20260101";
const FIXED_TIME: &str = "120000";

/// The simulator as the writer of its objects (Manufacturer, file meta implementation).
pub const SIM_PRODUCER: Producer = Producer {
    manufacturer: "ionguide-sim",
    implementation_class_uid: "2.25.133380963425137375563702155347418419371",
    implementation_version_name: "IONGUIDE_SIM",
};

/// Why DICOM output cannot be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The DICOM layer cannot write an object.
    #[error(transparent)]
    Dicom(#[from] WriteError),
    /// An identifier or parameter is not usable.
    #[error("invalid {name}: {reason}")]
    BadParameter {
        /// What.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The phantom cannot render the frame.
    #[error(transparent)]
    Phantom(#[from] PhantomError),
}

/// Box–Muller samples from a fixed seed, shifted and scaled to mean 0 and σ 1 exactly.
fn gaussian_table() -> Vec<f32> {
    const N: usize = 1 << 16;
    let mut rng = SplitMix64::new(0x6A09_E667_F3BC_C908);
    let mut t = Vec::with_capacity(N);
    while t.len() < N {
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * PI * u2).sin_cos();
        t.push(r * c);
        t.push(r * s);
    }
    let mean = t.iter().sum::<f64>() / N as f64;
    let sd = (t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / N as f64).sqrt();
    t.iter().map(|v| ((v - mean) / sd) as f32).collect()
}

/// Identifiers of one CT series (and the patient and study it belongs to).
pub type SeriesIds = CtSeriesIds;

/// The planning CT identifiers of a phantom: patient, study and series UIDs derived from its
/// seed, its Frame of Reference.
pub fn planning_ids(phantom: &Phantom) -> SeriesIds {
    let seed = phantom.spec.seed;
    SeriesIds {
        patient_id: "IONGUIDE-PHANTOM".into(),
        patient_name: "Phantom^Thorax".into(),
        study_instance_uid: uid_from_seed(seed, "study", 0),
        series_instance_uid: uid_from_seed(seed, "planning-ct-series", 0),
        frame_of_reference_uid: phantom.spec.frame_of_reference_uid.clone(),
        series_number: 1,
        acquisition_number: 1,
        temporal_position: None,
        sop_instance_uid_root: uid_from_seed(seed, "planning-ct-sop", 0),
        date: FIXED_DATE.into(),
        time: FIXED_TIME.into(),
        acquired: Acquired::SeriesDateTime,
    }
}

/// Writes a CT volume as a classic CT series, as the simulator: see
/// [`ionguide::dicom::ct::write_ct_series`].
pub fn write_ct_series(ct: &CtVolume, ids: &SeriesIds) -> Result<Vec<Vec<u8>>, FrameError> {
    Ok(dicom_ct::write_ct_series(ct, ids, &SIM_PRODUCER)?)
}

/// [`write_ct_series`] with the voxels placed on `grid` (same dimensions as the volume's):
/// how another scanner, with its own coordinates, would describe the same images.
pub fn write_ct_series_placed(
    ct: &CtVolume,
    grid: &Grid,
    ids: &SeriesIds,
) -> Result<Vec<Vec<u8>>, FrameError> {
    Ok(dicom_ct::write_ct_series_placed(ct, grid, ids, &SIM_PRODUCER)?)
}

/// Writes an RT Structure Set of `ss` referencing the CT series `ct_ids` (its Frame of
/// Reference, study, series and the `ct_slices` slice instances). `sop_instance_uid` names
/// the structure set; its series UID is that plus `.1`.
pub fn write_structure_set(
    ss: &StructureSet,
    ct_ids: &SeriesIds,
    ct_slices: usize,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, FrameError> {
    let ids = StructureSetIds {
        sop_instance_uid: sop_instance_uid.to_string(),
        series_instance_uid: format!("{sop_instance_uid}.1"),
        series_number: 100,
        label: "PHANTOM".into(),
    };
    Ok(dicom_rtstruct::write_structure_set(
        ss,
        ct_ids,
        ct_slices,
        &ids,
        &SIM_PRODUCER,
    )?)
}

/// How in-room frames are made.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameOptions {
    /// `Some(n)`: a slab of `n` slices centred on the planning tumor position; `None`: the
    /// whole phantom volume.
    pub slab_slices: Option<usize>,
    /// Standard deviation of the Gaussian CT noise, HU (0: none).
    pub noise_sigma_hu: f64,
    /// Seed of the noise and of the frame UIDs.
    pub seed: u64,
    /// Overrides the Patient ID (fault tests: a frame of another patient).
    pub patient_id_override: Option<String>,
    /// Overrides the Frame of Reference UID (fault tests: an unregistered frame).
    pub frame_of_reference_override: Option<String>,
    /// Frames from an in-room scanner with its own coordinates: its Frame of Reference and the
    /// map from planning points to its points. Overrides `frame_of_reference_override`.
    pub room: Option<RoomSetup>,
}

impl Default for FrameOptions {
    fn default() -> Self {
        FrameOptions {
            slab_slices: None,
            noise_sigma_hu: 10.0,
            seed: 1,
            patient_id_override: None,
            frame_of_reference_override: None,
            room: None,
        }
    }
}

/// How a frame's anatomy is posed, with the truth known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FramePose {
    /// The breathing phantom: the tumor displaced by `displacement_mm` with the lung around
    /// it following ([`Phantom::render_moved`]), then, unless zero, the whole anatomy
    /// rotated by `rotation_deg` (about x, y, z, `R = Rz·Ry·Rx`) about the moved tumor
    /// centre: the tumor shows at
    /// [`frame_transform`](crate::motion::rotation::frame_transform)`(c, d, rotation)`.
    Breathing {
        /// Tumor displacement, mm LPS.
        displacement_mm: [f64; 3],
        /// Rotation about the moved tumor centre, degrees about x, y, z.
        rotation_deg: [f64; 3],
    },
    /// The whole (unbreathing) anatomy moved rigidly: planning point `q` shows at `T(q)` —
    /// a patient who shifted and rolled on the couch.
    Rigid(RigidTransform),
}

/// One synthesized in-room frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Frame index (0-based; Acquisition Number and Temporal Position are index + 1).
    pub index: usize,
    /// Tumor displacement rendered, mm LPS (the truth).
    pub displacement_mm: [f64; 3],
    /// Tumor centre in this frame, mm LPS (the truth).
    pub tumor_center_mm: [f64; 3],
    /// Rotation of the anatomy about the tumor centre rendered, degrees about x, y, z (the
    /// truth; see [`crate::motion::rotation::frame_transform`]).
    pub rotation_deg: [f64; 3],
    /// One Part-10 CT object per slice.
    pub slices: Vec<Vec<u8>>,
}

/// Makes in-room CT frames of the moving phantom, reusing its volume buffer.
#[derive(Debug, Clone)]
pub struct FrameSynth {
    phantom: Phantom,
    options: FrameOptions,
    ids: SeriesIds,
    volume: CtVolume,
    /// The full phantom grid, for rotated frames (rendered there, then resampled).
    full: Option<CtVolume>,
    /// 65,536 standard normal samples (mean 0, σ 1 exactly): a table lookup per voxel is
    /// ~20× cheaper than Box–Muller and a frame's noise stays Gaussian to the eye and to
    /// the registration metric (tails end near ±4.5σ).
    gauss: Vec<f32>,
}

impl FrameSynth {
    /// A synthesizer for `phantom`; frames share `planning_ids`' patient and Frame of
    /// Reference (unless overridden) and get their own series.
    pub fn new(
        phantom: &Phantom,
        planning_ids: &SeriesIds,
        options: FrameOptions,
    ) -> Result<Self, FrameError> {
        if !(options.noise_sigma_hu.is_finite() && options.noise_sigma_hu >= 0.0) {
            return Err(FrameError::BadParameter {
                name: "noise_sigma_hu",
                reason: format!("must be finite and ≥ 0, got {}", options.noise_sigma_hu),
            });
        }
        let grid = match options.slab_slices {
            Some(n) => phantom.slab_grid(n)?,
            None => phantom.grid().clone(),
        };
        let mut ids = planning_ids.clone();
        if let Some(p) = &options.patient_id_override {
            ids.patient_id = p.clone();
        }
        if let Some(f) = &options.frame_of_reference_override {
            ids.frame_of_reference_uid = f.clone();
        }
        if let Some(room) = &options.room {
            ids.frame_of_reference_uid = room.room_frame_of_reference_uid.clone();
        }
        ids.series_instance_uid = uid_from_seed(options.seed, "in-room-series", 0);
        ids.series_number = 2;
        // an in-room frame says when it was acquired only when told (`frame_acquired`)
        ids.acquired = Acquired::Unstated;
        ids.validate()?;
        Ok(FrameSynth {
            phantom: phantom.clone(),
            options,
            ids,
            volume: CtVolume::filled(grid, 0),
            full: None,
            gauss: gaussian_table(),
        })
    }

    /// Renders frame `index` with the tumor displaced by `displacement_mm`, adds noise
    /// (seeded by the options' seed and `index`) and encodes it, without an acquisition
    /// time (the pipeline then reckons its corrections' validity from its completion).
    pub fn frame(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<Frame, FrameError> {
        self.frame_acquired(index, displacement_mm, None)
    }

    /// [`frame`](Self::frame), saying it was acquired at `acquired_unix_ns` (ns since the
    /// UNIX epoch) when given.
    pub fn frame_acquired(
        &mut self,
        index: usize,
        displacement_mm: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Frame, FrameError> {
        let pose = FramePose::Breathing {
            displacement_mm,
            rotation_deg: [0.0; 3],
        };
        self.frame_posed(index, pose, acquired_unix_ns)
    }

    /// [`frame_acquired`](Self::frame_acquired) with the anatomy posed as `pose` says
    /// ([`render_posed`](Self::render_posed)).
    pub fn frame_posed(
        &mut self,
        index: usize,
        pose: FramePose,
        acquired_unix_ns: Option<u64>,
    ) -> Result<Frame, FrameError> {
        self.render_posed(index, pose)?;
        let c = self.phantom.tumor_center_mm;
        let (displacement_mm, rotation_deg) = match pose {
            FramePose::Breathing {
                displacement_mm,
                rotation_deg,
            } => (displacement_mm, rotation_deg),
            FramePose::Rigid(t) => {
                let d = t.apply(&PointMm::from(c)) - PointMm::from(c);
                ([d.x, d.y, d.z], t.rotation_xyz_deg())
            }
        };
        let mut ids = self.ids.clone();
        if let Some(t) = acquired_unix_ns {
            let unix_ns = i64::try_from(t).map_err(|_| FrameError::BadParameter {
                name: "acquired_unix_ns",
                reason: format!("{t} is past 2262"),
            })?;
            ids.acquired = Acquired::At { unix_ns };
        }
        let n = u32::try_from(index + 1).map_err(|_| FrameError::BadParameter {
            name: "frame index",
            reason: format!("{index} is too large"),
        })?;
        ids.acquisition_number = n;
        ids.temporal_position = Some(n);
        ids.sop_instance_uid_root = uid_from_seed(self.options.seed, "in-room-sop", index as u64);
        let slices = match &self.options.room {
            Some(room) => {
                let placed = self.volume.grid().mapped(&room.planning_to_room);
                write_ct_series_placed(&self.volume, &placed, &ids)?
            }
            None => write_ct_series(&self.volume, &ids)?,
        };
        Ok(Frame {
            index,
            displacement_mm,
            tumor_center_mm: [
                c[0] + displacement_mm[0],
                c[1] + displacement_mm[1],
                c[2] + displacement_mm[2],
            ],
            rotation_deg,
            slices,
        })
    }

    /// Renders frame `index` into the internal volume without encoding it.
    pub fn render(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<&CtVolume, FrameError> {
        let pose = FramePose::Breathing {
            displacement_mm,
            rotation_deg: [0.0; 3],
        };
        self.render_posed(index, pose)
    }

    /// Renders frame `index` posed as `pose` into the internal volume, adds noise, without
    /// encoding it. A rotated or rigid pose renders the phantom on its full grid and
    /// resamples it (trilinear) onto the frame's grid, so a slab shows anatomy that turned in
    /// from outside it too.
    pub fn render_posed(&mut self, index: usize, pose: FramePose) -> Result<&CtVolume, FrameError> {
        let (displacement_mm, after) = match pose {
            FramePose::Breathing {
                displacement_mm,
                rotation_deg,
            } => {
                if !rotation_deg.iter().all(|a| a.is_finite()) {
                    return Err(FrameError::BadParameter {
                        name: "rotation_deg",
                        reason: format!("must be finite, got {rotation_deg:?}"),
                    });
                }
                if rotation_deg == [0.0; 3] {
                    (displacement_mm, None)
                } else {
                    // the rotation about the moved centre (what
                    // `motion::rotation::frame_transform` composes with the displacement)
                    let c = self.phantom.tumor_center_mm;
                    let moved_c = PointMm::new(
                        c[0] + displacement_mm[0],
                        c[1] + displacement_mm[1],
                        c[2] + displacement_mm[2],
                    );
                    let r = RigidTransform::from_xyz_deg(rotation_deg, VectorMm::zeros()).rotation;
                    let rot = RigidTransform::about_center(r, moved_c, VectorMm::zeros());
                    (displacement_mm, Some(rot))
                }
            }
            FramePose::Rigid(t) => {
                if !t.matrix().iter().all(|v| v.is_finite()) {
                    return Err(FrameError::BadParameter {
                        name: "rigid pose",
                        reason: "the transform is not finite".into(),
                    });
                }
                ([0.0; 3], Some(t))
            }
        };
        match after {
            None => self.phantom.render_moved(displacement_mm, &mut self.volume)?,
            Some(t) => {
                let full = self
                    .full
                    .get_or_insert_with(|| CtVolume::filled(self.phantom.grid().clone(), 0));
                self.phantom.render_moved(displacement_mm, full)?;
                // out(x) = moved(t⁻¹(x)): the frame shows the moved anatomy carried by t
                let air = -1000;
                self.volume = resample(full, &t.inverse(), self.volume.grid(), air);
            }
        }
        let sigma = self.options.noise_sigma_hu;
        if sigma > 0.0 {
            let mut rng = SplitMix64::new(derive_seed(self.options.seed, "noise", index as u64));
            let table = &self.gauss;
            // One 64-bit draw gives four 16-bit table indices.
            for quad in self.volume.as_slice_mut().chunks_mut(4) {
                let mut bits = rng.next_u64();
                for v in quad {
                    let z = f64::from(table[(bits & 0xFFFF) as usize]);
                    bits >>= 16;
                    *v = (f64::from(*v) + sigma * z)
                        .round()
                        .clamp(Hu::MIN.into(), Hu::MAX.into()) as Hu;
                }
            }
        }
        Ok(&self.volume)
    }

    /// The last rendered frame volume (with noise).
    pub fn volume(&self) -> &CtVolume {
        &self.volume
    }

    /// The identifiers frames are written with (before the per-frame numbers and UIDs).
    pub fn ids(&self) -> &SeriesIds {
        &self.ids
    }

    /// The phantom.
    pub fn phantom(&self) -> &Phantom {
        &self.phantom
    }
}
