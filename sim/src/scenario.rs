//! Replay set-ups: the built-in demo (thorax phantom planned with carbon, a bundled real
//! breathing trace) and a user's own CT + structure set + plan (or, without a plan, one the
//! geometric planner makes on that CT for its target ROI). Both are written out as a
//! session folder — DICOM files, a TOML configuration, a link key — and loaded back through
//! the same configuration and DICOM readers a clinic's files go through.

use std::path::{Path, PathBuf};

use ionguide::dicom::spatial_registration::{write_room_setup_bytes, RegistrationIds};
use ionguide::geometry::{RigidTransform, RoomSetup};

use crate::anatomy::phantom::{Phantom, PhantomSpec};
use crate::imaging::frames::{planning_ids, write_ct_series, write_structure_set, SeriesIds};
use crate::imaging::sources::PhantomFrames;
use crate::planning::ct::{plan_ct, CtPlan, CtPlannerOptions};
use crate::planning::{plan, plan_bytes, PlannerOptions};
use crate::replay::ReplayError;
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

impl PhantomScenario {
    /// The frame source of this session: noisy frames with `noise_sigma_hu` (in the in-room
    /// scanner's coordinates when the session has one) and their noise-free truth.
    pub fn frames(&self, noise_sigma_hu: f64, seed: u64) -> Result<PhantomFrames, ReplayError> {
        Ok(PhantomFrames::new(
            &self.phantom,
            &self.ids,
            self.room.clone(),
            noise_sigma_hu,
            seed,
        )?)
    }
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

/// Plans a user's CT for its target ROI `roi` with the geometric planner
/// ([`crate::planning::ct`]), writes the plan as `RP.dcm` in `dir` and the session folder
/// around it; the plan and what the planner chose come back.
pub fn write_user_session_planned(
    dir: &Path,
    ct: &Path,
    structures: &Path,
    roi: &str,
    planner: &CtPlannerOptions,
    budget_ms: f64,
) -> Result<(PathBuf, CtPlan), ReplayError> {
    let series = ionguide::dicom::ct::read_series_dir(ct)
        .map_err(|e| ReplayError::Session(format!("planning CT {}: {e}", ct.display())))?;
    let set = ionguide::dicom::rtstruct::read_structure_set(structures)
        .map_err(|e| ReplayError::Session(format!("structure set {}: {e}", structures.display())))?;
    let planned = plan_ct(&series, &set, roi, planner)?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let rp = dir.join("RP.dcm");
    write(&rp, &plan_bytes(&planned.plan)?)?;
    let config = write_user_session(dir, ct, structures, roi, &rp, budget_ms)?;
    Ok((config, planned))
}

/// matRad's generic machine data for `ion`, bundled with the repository
/// (`tests/data/matrad`, attribution there): the demo's dose engine needs no download.
pub fn bundled_machine_dir(ion: ionguide::units::Ion) -> Option<PathBuf> {
    use ionguide::units::Ion;
    let name = match ion {
        Ion::CARBON12 => "carbon_Generic",
        Ion::PROTON => "protons_Generic",
        Ion::HELIUM4 => "helium_Generic",
        Ion::OXYGEN16 | Ion::NEON20 => "oxygen_Generic",
        _ => return None,
    };
    Some(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/matrad")
            .join(name),
    )
}

/// The 4D dose set-up of a replay session: matRad machine data for each ion of the plan
/// (`machine_dirs`, else the bundled generic machines; 20Ne scaled from 16O), off-grid
/// energies allowed (corrected energies are continuous), `particles_per_weight` ions per
/// unit of spot weight, a dose grid over the planning CT at `spacing_mm`, the session's
/// target ROI and the structure set's BODY (or EXTERNAL) for the dose outside it.
pub fn dose_setup(
    config_path: &Path,
    machine_dirs: &[PathBuf],
    particles_per_weight: f64,
    spacing_mm: f64,
) -> Result<crate::scoring::deliveries::DoseSetup, ReplayError> {
    use ionguide::dose::{dose_grid_like, DoseEngine, DoseOptions, EnergyMatch, IonMachine, SpotWeightUnit};
    let err = |e: &dyn std::fmt::Display| ReplayError::Session(format!("dose set-up: {e}"));
    let (config, session) = crate::replay::load_session(config_path)?;
    let mut machines: Vec<IonMachine> = Vec::new();
    for d in machine_dirs {
        machines.push(IonMachine::from_dir(d).map_err(|e| err(&format!("{}: {e}", d.display())))?);
    }
    for beam in &session.plan.beams {
        if machines.iter().any(|m| m.ion == beam.ion) {
            continue;
        }
        if beam.ion == ionguide::units::Ion::NEON20 {
            let oxygen = match machines.iter().find(|m| m.ion == ionguide::units::Ion::OXYGEN16) {
                Some(o) => o.clone(),
                None => {
                    let dir = bundled_machine_dir(ionguide::units::Ion::OXYGEN16)
                        .ok_or_else(|| err(&"no oxygen data to scale neon from"))?;
                    IonMachine::from_dir(&dir).map_err(|e| err(&e))?
                }
            };
            machines.push(IonMachine::neon_from_oxygen(&oxygen).map_err(|e| err(&e))?);
            continue;
        }
        let dir =
            bundled_machine_dir(beam.ion).ok_or_else(|| err(&format!("no machine data for {}", beam.ion)))?;
        machines.push(IonMachine::from_dir(&dir).map_err(|e| err(&format!("{}: {e}", dir.display())))?);
    }
    let mut options =
        DoseOptions::new(config.planning.default_sad_mm).with_weight_unit(SpotWeightUnit::MonitorUnits {
            particles_per_mu: particles_per_weight,
        });
    // One thread: the 4D dose makes many small calls, and each extra thread costs a whole
    // grid of its own per call.
    options.energy_match = EnergyMatch::Interpolate;
    let engine = DoseEngine::new(&machines, options).map_err(|e| err(&e))?;
    let grid = dose_grid_like(session.planning_ct.grid(), [spacing_mm; 3]).map_err(|e| err(&e))?;
    let structures =
        ionguide::dicom::rtstruct::read_structure_set(&config.planning.structures).map_err(|e| err(&e))?;
    let target = structures
        .rois
        .iter()
        .find(|r| r.name == config.planning.roi)
        .ok_or_else(|| err(&format!("no ROI {:?} in the structure set", config.planning.roi)))?;
    let body = structures
        .rois
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case("BODY") || r.name.eq_ignore_ascii_case("EXTERNAL"));
    let regions = crate::scoring::dose_figures::DoseRegions::new(target, body, session.planning_ct.grid())
        .map_err(|e| err(&e))?;
    Ok(crate::scoring::deliveries::DoseSetup {
        engine,
        grid,
        regions,
    })
}

/// How long a correction set must stay valid, ms, for `imaging` to keep the beam on between
/// frames: the frame's age when complete, one and a half frame intervals (the next frame
/// may be held), and the latency budget — never less than the 250 ms the idealised
/// replay uses.
pub fn validity_ms_for(imaging: &crate::imaging::model::ImagingModel, budget_ms: f64) -> f64 {
    (1e3 * (imaging.age_on_arrival_s() + 1.5 / imaging.rate_hz) + budget_ms)
        .max(2.0 * budget_ms)
        .max(250.0)
}

/// Sets `timing.validity_ms` in a session configuration this module wrote.
pub fn set_validity_ms(config_path: &Path, validity_ms: f64) -> Result<(), ReplayError> {
    let text = std::fs::read_to_string(config_path).map_err(io_err(config_path))?;
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("validity_ms") {
                found = true;
                format!("validity_ms = {validity_ms}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        return Err(ReplayError::Session(format!(
            "{}: no timing.validity_ms line to set",
            config_path.display()
        )));
    }
    write(config_path, (out.join("\n") + "\n").as_bytes())
}
