//! Replay set-ups: the built-in demo (thorax phantom planned with carbon, a bundled real
//! breathing trace) and a user's own CT + structure set + plan. Both are written out as a
//! session folder — DICOM files, a TOML configuration, a link key — and loaded back through
//! the same configuration and DICOM readers a clinic's files go through.

use std::path::{Path, PathBuf};

use ionguide::volume::CtVolume;

use ionguide::dicom::ct::CtSliceTemplate;
use ionguide::dicom::spatial_registration::{write_room_setup_bytes, RegistrationIds};
use ionguide::geometry::{RigidTransform, RoomSetup};

use crate::frames::{
    planning_ids, write_ct_series, write_structure_set, FrameOptions, FrameSynth, SeriesIds,
};
use crate::motion::{read_csv_trace, read_extmarker, Trace, TumorMotionModel};
use crate::phantom::{Phantom, PhantomSpec};
use crate::planner::{plan, plan_bytes, PlannerOptions};
use crate::replay::{FrameSource, ReplayError};
use crate::uid::uid_from_seed;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReplayError> {
    std::fs::write(path, bytes).map_err(io_err(path))
}

/// The bundled demo trace (real ExtMarker recording; attribution in `sim/data/traces/README.md`).
pub fn bundled_trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/traces/201205101522-UCC-1-N-138-6.csv")
}

/// Tumor displacements at `rate_hz` from a trace file: the ExtMarker format (`;`-separated)
/// goes through the breathing model (surface marker → tumor); a plain `t_s,x_mm,y_mm,z_mm`
/// CSV is taken as the tumor's own displacement.
pub fn displacements(
    path: &Path,
    rate_hz: f64,
    model: &TumorMotionModel,
    frames: Option<usize>,
) -> Result<(Vec<f64>, Vec<[f64; 3]>), ReplayError> {
    let head = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |e: crate::motion::MotionError| ReplayError::Session(format!("trace {}: {e}", path.display()));
    let extmarker = head.lines().next().is_some_and(|l| l.contains(';'));
    let trace: Trace = if extmarker {
        read_extmarker(path).map_err(bad)?
    } else {
        read_csv_trace(path).map_err(bad)?
    };
    let trace = trace.resample(rate_hz).map_err(bad)?;
    let mut d = if extmarker {
        model.displacements_mm(&trace).map_err(bad)?
    } else {
        trace.pos_mm.clone()
    };
    let mut t = trace.t_s.clone();
    if let Some(n) = frames {
        d.truncate(n);
        t.truncate(n);
    }
    Ok((t, d))
}

/// The session TOML of a replay (the source section is required by the schema; replays feed
/// frames through the in-process source instead).
fn session_toml(
    ct: &Path,
    rs: &Path,
    roi: &str,
    plan: &Path,
    margin_mm: f64,
    budget_ms: f64,
    setup_registration: Option<&Path>,
) -> String {
    format!(
        r#"# written by ionguide-sim for a replay
[planning]
ct = "{}"
structures = "{}"
roi = "{roi}"
plan = "{}"
{}

[source]
kind = "scp"
bind = "127.0.0.1:0"

[link]
key_file = "link.key"

[audit]
path = "audit/replay.audit"

[timing]
budget_ms = {budget_ms}
validity_ms = {}

[registration]
margin_mm = {margin_mm}

# Spots at a lung tumor's edge see the tumor slide in and out of their path: tens of mm of
# water-equivalent change for a few mm of motion is real physics there, so the range limit
# is set above it (the clinical default of 10 mm would hold those frames).
[limits]
max_range_mm = 30.0
"#,
        ct.display(),
        rs.display(),
        plan.display(),
        setup_registration
            .map(|p| format!("setup_registration = \"{}\"", p.display()))
            .unwrap_or_default(),
        (budget_ms * 2.0).max(250.0)
    )
}

fn write_key(dir: &Path) -> Result<(), ReplayError> {
    let key = dir.join("link.key");
    // a fresh key per session folder, from the OS generator
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ReplayError::Session(format!("random key: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write(&key, hex.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(io_err(&key))?;
    }
    Ok(())
}

/// Where the demo's in-room scanner puts a planning point: its own origin 1.25 m along the
/// table and off to the side, the patient set up turned 1.5° about the table's axis of yaw and
/// 0.4° of pitch — the kind of map a setup registration between a CT-on-rails and the
/// planning CT holds.
pub fn in_room_scanner() -> RigidTransform {
    RigidTransform::from_xyz_deg(
        [0.4, 0.0, 1.5],
        ionguide::units::VectorMm::new(35.0, -180.0, 1250.0),
    )
}

/// The demo's phantom session, written under `dir`.
pub struct PhantomScenario {
    /// The phantom.
    pub phantom: Phantom,
    /// Its planning series identifiers.
    pub ids: SeriesIds,
    /// The session configuration written.
    pub config: PathBuf,
    /// Spots in the plan.
    pub spots: usize,
    /// The in-room scanner's coordinates, when frames come in their own Frame of Reference
    /// (the session then holds its setup registration, `REG.dcm`).
    pub room: Option<RoomSetup>,
}

/// Removes the `CT{n:04}.dcm` files this module wrote in `ct_dir`, from number `first` on.
fn remove_slices_from(ct_dir: &Path, first: usize) -> Result<(), ReplayError> {
    let entries = std::fs::read_dir(ct_dir).map_err(io_err(ct_dir))?;
    for entry in entries {
        let path = entry.map_err(io_err(ct_dir))?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("CT")?.strip_suffix(".dcm"))
            .filter(|d| d.len() == 4)
            .and_then(|d| d.parse::<usize>().ok());
        if number.is_some_and(|n| n >= first) {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Builds the phantom, plans it, and writes planning CT, RT Structure Set, RT Ion Plan,
/// configuration and key into `dir`. With `planning_to_room`, frames come from an in-room
/// scanner with its own Frame of Reference, placed by that map, and the session gets a
/// setup registration (`REG.dcm`, a DICOM Spatial Registration) saying so.
pub fn write_phantom_session(
    dir: &Path,
    spec: &PhantomSpec,
    planner: &PlannerOptions,
    budget_ms: f64,
    planning_to_room: Option<RigidTransform>,
) -> Result<PhantomScenario, ReplayError> {
    let err = |e: &dyn std::fmt::Display| ReplayError::Session(e.to_string());
    let phantom = Phantom::thorax(spec).map_err(|e| err(&e))?;
    let ids = planning_ids(&phantom);
    let ct_dir = dir.join("ct");
    std::fs::create_dir_all(&ct_dir).map_err(io_err(&ct_dir))?;
    let slices = write_ct_series(&phantom.ct, &ids).map_err(|e| err(&e))?;
    // slices an earlier, longer session left here would join this series
    remove_slices_from(&ct_dir, slices.len() + 1)?;
    for (k, s) in slices.iter().enumerate() {
        write(&ct_dir.join(format!("CT{:04}.dcm", k + 1)), s)?;
    }
    let rs = write_structure_set(
        &phantom.structures,
        &ids,
        slices.len(),
        &format!("{}.9", ids.study_instance_uid),
    )
    .map_err(|e| err(&e))?;
    write(&dir.join("RS.dcm"), &rs)?;
    let plan = plan(&phantom, &ids, planner).map_err(|e| err(&e))?;
    let spots = plan
        .beams
        .iter()
        .flat_map(|b| &b.layers)
        .map(|l| l.spots.len())
        .sum();
    write(&dir.join("RP.dcm"), &plan_bytes(&plan).map_err(|e| err(&e))?)?;
    let registration = dir.join("REG.dcm");
    let room = planning_to_room.map(|t| RoomSetup {
        planning_to_room: t,
        planning_frame_of_reference_uid: ids.frame_of_reference_uid.clone(),
        room_frame_of_reference_uid: uid_from_seed(spec.seed, "in-room-frame-of-reference", 0),
    });
    match &room {
        Some(room) => {
            let reg_ids = RegistrationIds {
                patient_id: ids.patient_id.clone(),
                patient_name: ids.patient_name.clone(),
                study_instance_uid: ids.study_instance_uid.clone(),
                series_instance_uid: uid_from_seed(spec.seed, "setup-registration-series", 0),
                sop_instance_uid: uid_from_seed(spec.seed, "setup-registration-sop", 0),
                content_date: "20260101".into(),
                content_time: "080000".into(),
            };
            write(
                &registration,
                &write_room_setup_bytes(room, &reg_ids).map_err(|e| err(&e))?,
            )?;
        }
        // a registration an earlier session left here must not be mistaken for this one's
        None if registration.exists() => {
            std::fs::remove_file(&registration).map_err(io_err(&registration))?
        }
        None => {}
    }
    write_key(dir)?;
    let config = dir.join("session.toml");
    write(
        &config,
        session_toml(
            Path::new("ct"),
            Path::new("RS.dcm"),
            "GTV",
            Path::new("RP.dcm"),
            20.0,
            budget_ms,
            room.is_some().then_some(Path::new("REG.dcm")),
        )
        .as_bytes(),
    )?;
    Ok(PhantomScenario {
        phantom,
        ids,
        config,
        spots,
        room,
    })
}

/// Frames of the moving phantom: noisy frames for the pipeline, noise-free ones as truth.
pub struct PhantomFrames {
    synth: FrameSynth,
    truth: FrameSynth,
}

impl PhantomFrames {
    /// Frame makers for a phantom scenario.
    pub fn new(s: &PhantomScenario, noise_sigma_hu: f64, seed: u64) -> Result<Self, ReplayError> {
        let err = |e: crate::frames::FrameError| ReplayError::Session(e.to_string());
        let synth = FrameSynth::new(
            &s.phantom,
            &s.ids,
            FrameOptions {
                noise_sigma_hu,
                seed,
                room: s.room.clone(),
                ..FrameOptions::default()
            },
        )
        .map_err(err)?;
        // the truth stays in planning coordinates: what the pipeline's answers are in
        let truth = FrameSynth::new(
            &s.phantom,
            &s.ids,
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
    fn frame(&mut self, index: usize, d: [f64; 3]) -> Result<Vec<Vec<u8>>, ReplayError> {
        self.frame_acquired(index, d, None)
    }
    fn frame_acquired(
        &mut self,
        index: usize,
        d: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, ReplayError> {
        self.synth
            .frame_acquired(index, d, acquired_unix_ns)
            .map(|f| f.slices)
            .map_err(|e| ReplayError::Frame {
                index,
                reason: e.to_string(),
            })
    }
    fn truth(&mut self, index: usize, d: [f64; 3]) -> Result<&CtVolume, ReplayError> {
        self.truth.render(index, d).map_err(|e| ReplayError::Frame {
            index,
            reason: e.to_string(),
        })
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
    pub fn load(dir: &Path) -> Result<Self, ReplayError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
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
            return Err(ReplayError::Session(format!("no CT slices in {}", dir.display())));
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
    fn frame(&mut self, index: usize, d: [f64; 3]) -> Result<Vec<Vec<u8>>, ReplayError> {
        self.frame_acquired(index, d, None)
    }
    /// Without `acquired_unix_ns` the slices keep the times they were read with (a real CT's
    /// are its scan's, long past: a pipeline holds such frames as stale).
    fn frame_acquired(
        &mut self,
        index: usize,
        d: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, ReplayError> {
        let fail = |reason: String| ReplayError::Frame { index, reason };
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
    fn truth(&mut self, index: usize, d: [f64; 3]) -> Result<&CtVolume, ReplayError> {
        let bytes = self.frame(index, d)?;
        let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
        let series = ionguide::dicom::ct::read_series_bytes(&refs).map_err(|e| ReplayError::Frame {
            index,
            reason: e.to_string(),
        })?;
        Ok(self.truth.insert(series.volume))
    }
}

/// Writes the session folder for a user's CT, structure set, ROI and plan.
pub fn write_user_session(
    dir: &Path,
    ct: &Path,
    structures: &Path,
    roi: &str,
    plan: &Path,
    budget_ms: f64,
) -> Result<PathBuf, ReplayError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let abs = |p: &Path| std::fs::canonicalize(p).map_err(io_err(p));
    write_key(dir)?;
    let config = dir.join("session.toml");
    write(
        &config,
        session_toml(
            &abs(ct)?,
            &abs(structures)?,
            roi,
            &abs(plan)?,
            10.0,
            budget_ms,
            None,
        )
        .as_bytes(),
    )?;
    Ok(config)
}
