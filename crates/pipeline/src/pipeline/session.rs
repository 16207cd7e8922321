//! A session's fixed inputs, loaded once before the beam: planning CT, target, plan, HLUT,
//! and what every stage precomputes from them. Stages read it through an `Arc`; nothing in it
//! changes while frames flow (the adjustable parts — limits — sit behind a lock in
//! [`super::Shared`]).
//!
//! [`Session::load`] is the one place every entry point (the daemon, the replay, the gate,
//! the tests) turns a configuration into a session, so its checks ([`checks`]) hold for all
//! of them: the structure set and the plan share the CT's Frame of Reference, the plan's
//! referenced structure set is the one given, Patient IDs agree, isocenters lie in the CT and
//! spot maps are sane.

mod checks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::adapt::{AdaptError, AdaptOptions, AdaptPlan, EnergyModel, SafetyLimits};
use crate::config::Config;
use crate::correction::RangeMode;
use crate::dicom::ct::{read_series_dir, CtError};
use crate::dicom::identity::{read_identity, IdentityError};
use crate::dicom::rtplan::{read_plan, PlanError, PlanWarning};
use crate::dicom::rtstruct::{read_roi, RtStructError};
use crate::dicom::spatial_registration::{read_room_setup_bytes, RegistrationError};
use crate::dicom::OpenError;
use crate::geometry::RoomSetup;
use crate::plan::IonPlan;
use crate::range::{FacilityTable, Hlut, RangeError, SpotTracer, SpotTracerOptions};
use crate::register::{FixedContext, RegisterError, RegisterOptions, Roi};
use crate::units::MmWe;
use crate::volume::CtVolume;
use sha2::{Digest, Sha256};

pub use checks::{Input, InputMismatch};

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The planning CT.
    #[error("planning CT {path}: {source}")]
    Ct {
        /// Folder.
        path: PathBuf,
        /// Cause.
        source: CtError,
    },
    /// The structure set or target.
    #[error("target {roi:?} in {path}: {source}")]
    Structures {
        /// File.
        path: PathBuf,
        /// ROI name.
        roi: String,
        /// Cause.
        source: RtStructError,
    },
    /// The target has no voxel on the planning CT.
    #[error("target {roi:?} covers no voxel of the planning CT")]
    EmptyTarget {
        /// ROI name.
        roi: String,
    },
    /// The plan.
    #[error("plan {path}: {source}")]
    Plan {
        /// File.
        path: PathBuf,
        /// Cause.
        source: PlanError,
    },
    /// The planning inputs do not belong together (another scan, patient or structure set).
    #[error(transparent)]
    Mismatch(#[from] InputMismatch),
    /// A file's identifying attributes (SOP Instance UID, Patient ID) are unreadable.
    #[error("{0}")]
    Identity(#[from] IdentityError),
    /// HLUT, facility table or beam geometry.
    #[error("{what}: {source}")]
    Range {
        /// Which input.
        what: String,
        /// Cause.
        source: RangeError,
    },
    /// The setup registration (in-room → planning Frame of Reference).
    #[error("setup registration: {0}")]
    SetupRegistration(#[from] RegistrationError),
    /// Corrections setup (limits, plan geometry).
    #[error("corrections setup: {0}")]
    Adapt(#[from] AdaptError),
    /// Registration setup.
    #[error("registration setup: {0}")]
    Register(#[from] RegisterError),
    /// Deformable tracking setup (`[deformable]`).
    #[error("deformable tracking setup: {0}")]
    Deform(#[from] crate::register::deform::DeformError),
    /// A resource limit.
    #[error("{what} is {value}, over the limit of {limit} (resources.{key})")]
    OverLimit {
        /// What.
        what: &'static str,
        /// Config key.
        key: &'static str,
        /// Found.
        value: usize,
        /// Allowed.
        limit: usize,
    },
}

/// The per-session knobs the stages need (from the configuration, or set by the simulator).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Frame complete → on the wire, at most.
    pub budget: Duration,
    /// Corrections void this long after the frame was complete.
    pub validity: Duration,
    /// Patient ID every frame must carry.
    pub patient_id: String,
    /// How range is corrected.
    pub range_mode: RangeMode,
    /// Spots follow the registration's rotation too ([`AdaptOptions::follow_rotation`]).
    pub follow_rotation: bool,
    /// Registration options.
    pub register: RegisterOptions,
    /// Safety limits.
    pub limits: SafetyLimits,
    /// Virtual source distances for beams whose plan gives none, mm.
    pub default_sad_mm: [f64; 2],
    /// Work items in flight (the buffer pool's size).
    pub pool_size: usize,
    /// Most voxels in a frame.
    pub max_frame_voxels: usize,
    /// The in-room scanner's coordinates relative to the planning CT's, when a setup
    /// registration gives them: frames must carry its in-room Frame of Reference and are
    /// placed in planning coordinates on ingest. `None`: frames are taken as they come.
    pub room_setup: Option<RoomSetup>,
    /// SHA-256 of the Spatial Registration file `room_setup` was parsed from (the very bytes
    /// parsed), for the audit log.
    pub room_setup_sha256: Option<[u8; 32]>,
    /// How the stage threads are scheduled.
    pub realtime: super::realtime::RealtimePolicy,
    /// Deformable tracking (`None`: off, the default).
    pub deformable: Option<super::deform::DeformSettings>,
}

/// Everything loaded before the first frame.
pub struct Session {
    /// The plan.
    pub plan: IonPlan,
    /// Planning CT.
    pub planning_ct: CtVolume,
    /// Registration's fixed side (planning CT pyramid sampled over the target region).
    pub fixed: FixedContext,
    /// HU → RSP.
    pub hlut: Hlut,
    /// The plan's spot rays, traced in the planning CT (planned WEPL and target points); the
    /// range stage traces frames with a clone.
    pub planned: SpotTracer,
    /// Per-spot geometry, planned depths and limits, shared by the range and adapt halves.
    pub adapt_plan: Arc<AdaptPlan>,
    /// Knobs.
    pub options: SessionOptions,
    /// What the plan reader accepted with a warning (already logged); the daemon puts them
    /// in the audit log's session-start record.
    pub plan_warnings: Vec<PlanWarning>,
    /// Deformable tracking's planning side (`None`: off).
    pub deform: Option<super::deform::DeformSession>,
}

impl Session {
    /// Loads a session's inputs from the files a configuration names.
    // Set-up time only, once per session: the error's size costs nothing here.
    #[allow(clippy::result_large_err)]
    pub fn load(config: &Config) -> Result<Session, SessionError> {
        let p = &config.planning;
        let series = read_series_dir(&p.ct).map_err(|source| SessionError::Ct {
            path: p.ct.clone(),
            source,
        })?;
        let (room_setup, room_setup_sha256) = match &p.setup_registration {
            Some(path) => {
                // Read once: the audit log's hash is of exactly the bytes parsed.
                let bytes = std::fs::read(path).map_err(|e| RegistrationError::Open {
                    path: path.clone(),
                    source: OpenError::Io(e),
                })?;
                let setup = read_room_setup_bytes(&bytes, path, &series.meta.frame_of_reference_uid)?;
                (Some(setup), Some(Sha256::digest(&bytes).into()))
            }
            None => (None, None),
        };
        let ct = &series.volume;
        let (structures_for, roi) =
            read_roi(&p.structures, &p.roi).map_err(|source| SessionError::Structures {
                path: p.structures.clone(),
                roi: p.roi.clone(),
                source,
            })?;
        let (plan, plan_warnings) = read_plan(&p.plan).map_err(|source| SessionError::Plan {
            path: p.plan.clone(),
            source,
        })?;
        checks::check(&checks::Inputs {
            ct_dir: &p.ct,
            ct_frame_of_reference_uid: &series.meta.frame_of_reference_uid,
            ct_patient_id: series.meta.patient_id.as_deref(),
            ct_grid: ct.grid(),
            structures: &p.structures,
            structures_frame_of_reference_uid: &structures_for,
            structures_identity: &read_identity(&p.structures)?,
            plan_path: &p.plan,
            plan: &plan,
            plan_identity: &read_identity(&p.plan)?,
            configured_patient_id: p.patient_id.as_deref(),
        })?;
        let hlut = match &p.hlut {
            Some(path) => Hlut::from_file(path).map_err(|source| SessionError::Range {
                what: format!("HLUT {}", path.display()),
                source,
            })?,
            None => Hlut::matrad_generic(),
        };
        let facility = match &p.facility_table {
            Some(path) => Some(
                FacilityTable::from_file(path).map_err(|source| SessionError::Range {
                    what: format!("facility table {}", path.display()),
                    source,
                })?,
            ),
            None => None,
        };
        let raster = roi.rasterize(ct.grid());
        if raster.voxels == 0 {
            return Err(SessionError::EmptyTarget { roi: p.roi.clone() });
        }
        let region = Roi::from_mask(&raster.mask, config.registration.margin_mm)?;
        let options = SessionOptions {
            budget: Duration::from_secs_f64(config.timing.budget_ms / 1e3),
            validity: Duration::from_secs_f64(config.timing.validity_ms / 1e3),
            patient_id: p.patient_id.clone().unwrap_or_else(|| plan.patient_id.clone()),
            range_mode: p.range_mode,
            follow_rotation: p.follow_rotation,
            limits: SafetyLimits {
                max_lateral: config.limits.max_lateral_mm,
                max_range: config.limits.max_range_mm,
                max_jump: config.limits.max_jump_mm,
                min_ncc: config.limits.min_ncc,
                max_rotation_deg: config.limits.max_rotation_deg,
            },
            default_sad_mm: p.default_sad_mm,
            register: RegisterOptions::default()
                .with_threads(config.registration.threads)
                .with_min_similarity(config.limits.min_ncc),
            pool_size: 6,
            max_frame_voxels: config.resources.max_frame_voxels,
            room_setup,
            room_setup_sha256,
            realtime: super::realtime::RealtimePolicy {
                priority: config.realtime.priority,
                required: config.realtime.required,
            },
            deformable: config
                .deformable
                .enabled
                .then(|| super::deform::DeformSettings::from_config(&config.deformable)),
        };
        let spots: usize = plan
            .beams
            .iter()
            .flat_map(|b| &b.layers)
            .map(|l| l.spots.len())
            .sum();
        if spots > config.resources.max_plan_spots {
            return Err(SessionError::OverLimit {
                what: "the plan's spot count",
                key: "max_plan_spots",
                value: spots,
                limit: config.resources.max_plan_spots,
            });
        }
        let deform_region = region.box_mm;
        let mut session = Session::new(plan, &p.plan, series.volume, region, hlut, facility, options)?;
        session.plan_warnings = plan_warnings;
        if let Some(settings) = session.options.deformable.clone() {
            session.deform = Some(super::deform::DeformSession::new(
                &session.planning_ct,
                deform_region,
                raster.mask,
                settings,
            )?);
        }
        Ok(session)
    }

    /// A session from inputs already in memory (the simulator, tests).
    #[allow(clippy::too_many_arguments, clippy::result_large_err)]
    pub fn new(
        plan: IonPlan,
        plan_path: &Path,
        planning_ct: CtVolume,
        region: Roi,
        hlut: Hlut,
        facility: Option<FacilityTable>,
        options: SessionOptions,
    ) -> Result<Session, SessionError> {
        let fixed = FixedContext::new(&planning_ct, region, &options.register)?;
        // The frame trace must reach past the deepest target by more than the range limit, so
        // a target that moved deeper holds as "over limit", not "unavailable".
        let tracer_options = SpotTracerOptions::new(options.default_sad_mm)
            .with_wepl_margin(MmWe((options.limits.max_range.get() + 10.0).clamp(20.0, 200.0)));
        let mut planned = SpotTracer::new(&plan, &tracer_options).map_err(|source| SessionError::Range {
            what: format!("beam geometry of {}", plan_path.display()),
            source,
        })?;
        planned.trace_frame_ct(&planning_ct, &hlut);
        let mut adapt_options = AdaptOptions::new(options.limits, options.default_sad_mm)
            .with_mode(options.range_mode)
            .with_follow_rotation(options.follow_rotation);
        if let Some(table) = facility {
            adapt_options = adapt_options.with_energy_model(EnergyModel::FacilitySnap(table));
        }
        let adapt_plan = Arc::new(AdaptPlan::new(&plan, &planned, adapt_options)?);
        Ok(Session {
            plan,
            planning_ct,
            fixed,
            hlut,
            planned,
            adapt_plan,
            options,
            plan_warnings: Vec::new(),
            deform: None,
        })
    }

    /// Spots in the plan.
    pub fn spot_count(&self) -> usize {
        self.planned.spots().len()
    }
}
