//! The session configuration (`ionguide run --config FILE`): TOML, validated on load. An
//! unknown key, a wrong type, a missing file or an out-of-range value is an error that names
//! the key and the reason; nothing is silently defaulted except where a default is
//! documented here.
//!
//! Relative paths are resolved against the configuration file's folder, so a session folder
//! can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::correction::RangeMode;
use crate::units::{Mm, MmWe};

/// Everything a session needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The planning inputs.
    pub planning: PlanningConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// The gantry link.
    pub link: LinkConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Timing.
    #[serde(default)]
    pub timing: TimingConfig,
    /// Safety limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Registration.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Resource limits on input.
    #[serde(default)]
    pub resources: ResourceConfig,
    /// Scheduling of the stage threads.
    #[serde(default)]
    pub realtime: RealtimeConfig,
    /// Surrogate-driven corrections between CT frames (off by default).
    #[serde(default)]
    pub surrogate: SurrogateConfig,
    /// Deformable tracking of the target after the rigid registration (off by default).
    #[serde(default)]
    pub deformable: DeformableConfig,
}

/// `[deformable]`: a demons registration of every frame on top of the rigid one, in the
/// registration region (the target's bounding box plus `registration.margin_mm`); the
/// planning target carried into the frame (its volume, change from the plan, centroid); the
/// spots moved through rigid ∘ deformation; spots whose mapped Bragg point falls outside
/// the frame's target plus `spot_off_margin_mm` counted as switched off. Off by default:
/// with it off nothing changes. With it on, a rigid answer that fails only its
/// residual-deformation check (hold 14) is not held: the deformation is what describes the
/// frame, and its own checks decide.
///
/// The kernel took about 0.5 s for a cold frame when this was written (warm frames are
/// faster); the pipeline's deadline (`timing.budget_ms`) applies unchanged, so a session
/// with it on needs a budget that covers it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeformableConfig {
    /// Whether every frame is registered deformably after the rigid registration.
    #[serde(default)]
    pub enabled: bool,
    /// Grid spacing of the field, mm (default 2).
    #[serde(default = "default_deform_spacing")]
    pub spacing_mm: f64,
    /// Largest |change of the target's volume from the plan|, % (default 25): beyond it the
    /// frame is held, `target_volume_changed` (re-plan needed).
    #[serde(default = "default_deform_volume_change")]
    pub max_volume_change_pct: f64,
    /// Largest displacement of the field, mm (default 20): beyond it,
    /// `deformation_implausible`.
    #[serde(default = "default_deform_field")]
    pub max_field_mm: f64,
    /// Smallest Jacobian determinant of the field, in [0, 1) (default 0.2): at or below it the
    /// field (nearly) folds, `deformation_implausible`.
    #[serde(default = "default_deform_jacobian")]
    pub min_jacobian: f64,
    /// Largest inverse-consistency error of the field, mm (default 1).
    #[serde(default = "default_deform_inverse")]
    pub max_inverse_error_mm: f64,
    /// Smallest NCC over the region after deformation, in (0, 1] (default 0.85).
    #[serde(default = "default_min_ncc")]
    pub min_similarity: f64,
    /// A spot whose mapped Bragg point lies farther than this from the frame's target is
    /// switched off, mm (default 5).
    #[serde(default = "default_deform_spot_margin")]
    pub spot_off_margin_mm: f64,
    /// Start each frame from the previous accepted frame's field (the kernel's warm start:
    /// finest level only, a few iterations); a frame after a held one starts cold. Default
    /// false: measured on STS_001 (`sim/tests/pipeline_deformable.rs` with it on), a frame
    /// whose target shrank 19 % since the frame before was warm-started from that frame's
    /// field, under-recovered (−7.8 % audited) and passed every check — a wrong answer
    /// corrected. Cold costs about twice the time (2.6 against 1.3 s there).
    #[serde(default)]
    pub warm_start: bool,
}

impl Default for DeformableConfig {
    fn default() -> Self {
        DeformableConfig {
            enabled: false,
            spacing_mm: default_deform_spacing(),
            max_volume_change_pct: default_deform_volume_change(),
            max_field_mm: default_deform_field(),
            min_jacobian: default_deform_jacobian(),
            max_inverse_error_mm: default_deform_inverse(),
            min_similarity: default_min_ncc(),
            spot_off_margin_mm: default_deform_spot_margin(),
            warm_start: false,
        }
    }
}

/// Surrogate-driven tracking between CT frames: the tracking system's SURROGATE stream
/// (`docs/protocol.md`), a correlation model refit on each frame, a forecast over the
/// latency, and a correction set per sample. Off by default: with it off nothing changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurrogateConfig {
    /// Whether the pipeline tracks with the surrogate (frames then feed the model and are
    /// not sent themselves).
    #[serde(default)]
    pub enabled: bool,
    /// Where SURROGATE datagrams are received.
    #[serde(default = "default_surrogate_listen")]
    pub listen: SocketAddr,
    /// The tracking system's HMAC key (its own, not the link's; owner-only file).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Which marker carries the breathing signal (0-based, of 1–3).
    #[serde(default)]
    pub marker: usize,
    /// The stream's nominal rate, Hz.
    #[serde(default = "default_surrogate_rate")]
    pub sample_rate_hz: f64,
    /// Surrogate sample → spot on the beam, ms: the forecast horizon.
    #[serde(default = "default_surrogate_latency")]
    pub latency_ms: f64,
    /// A set is void this long after its surrogate sample's acquisition, ms (≥ latency_ms).
    #[serde(default = "default_surrogate_validity")]
    pub validity_ms: f64,
    /// Sample received → set on the wire, ms; later sets are held, never sent.
    #[serde(default = "default_surrogate_budget")]
    pub budget_ms: f64,
    /// The forecast: "ensemble", "rls" or "none".
    #[serde(default = "default_surrogate_forecast")]
    pub forecast: String,
    /// CT frames the correlation model is fitted on.
    #[serde(default = "default_surrogate_window")]
    pub window: usize,
    /// CT frames before the model is used (at least 3).
    #[serde(default = "default_surrogate_min_frames")]
    pub min_frames: usize,
    /// A frame off the model by more than this holds, mm.
    #[serde(default = "default_surrogate_limit")]
    pub limit_mm: f64,
    /// Allowed forecast excursion beyond the span the model was fitted on, fraction of it.
    #[serde(default = "default_surrogate_extrapolation")]
    pub max_extrapolation: f64,
    /// Samples that fix the breathing axis.
    #[serde(default = "default_surrogate_axis_samples")]
    pub axis_samples: usize,
    /// Backward difference for the surrogate's velocity, ms.
    #[serde(default = "default_surrogate_velocity_window")]
    pub velocity_window_ms: f64,
    /// A longer step between samples is a gap: never bridged, ms.
    #[serde(default = "default_surrogate_gap")]
    pub max_gap_ms: f64,
    /// No sample, or a frozen marker, for this long → hold (surrogate_lost), ms.
    #[serde(default = "default_surrogate_stall")]
    pub stall_ms: f64,
    /// Continuous stream needed after a loss before corrections resume, ms.
    #[serde(default = "default_surrogate_resume")]
    pub resume_after_ms: f64,
    /// A marker whose coordinates all stay within this is frozen, mm.
    #[serde(default = "default_surrogate_freeze")]
    pub freeze_tolerance_mm: f64,
    /// Relative stopping power at the target, for the range change along the beam.
    #[serde(default = "default_surrogate_rsp")]
    pub rsp_at_target: f64,
    /// The newest CT frame may be at most this old when a sample is steered by it, ms
    /// (the scanner stopped → hold, `model_not_ready`).
    #[serde(default = "default_surrogate_frame_age")]
    pub max_frame_age_ms: f64,
}

impl Default for SurrogateConfig {
    fn default() -> Self {
        SurrogateConfig {
            enabled: false,
            listen: default_surrogate_listen(),
            key_file: None,
            marker: 0,
            sample_rate_hz: default_surrogate_rate(),
            latency_ms: default_surrogate_latency(),
            validity_ms: default_surrogate_validity(),
            budget_ms: default_surrogate_budget(),
            forecast: default_surrogate_forecast(),
            window: default_surrogate_window(),
            min_frames: default_surrogate_min_frames(),
            limit_mm: default_surrogate_limit(),
            max_extrapolation: default_surrogate_extrapolation(),
            axis_samples: default_surrogate_axis_samples(),
            velocity_window_ms: default_surrogate_velocity_window(),
            max_gap_ms: default_surrogate_gap(),
            stall_ms: default_surrogate_stall(),
            resume_after_ms: default_surrogate_resume(),
            freeze_tolerance_mm: default_surrogate_freeze(),
            rsp_at_target: default_surrogate_rsp(),
            max_frame_age_ms: default_surrogate_frame_age(),
        }
    }
}

impl SurrogateConfig {
    /// The tracker's options (the config validated first).
    pub fn tracker_options(&self) -> crate::tracking::TrackerOptions {
        use crate::tracking::Forecast;
        let d = crate::tracking::TrackerOptions::default();
        crate::tracking::TrackerOptions {
            marker: self.marker,
            latency_s: self.latency_ms * 1e-3,
            sample_rate_hz: self.sample_rate_hz,
            forecast: match self.forecast.as_str() {
                "none" => Forecast::None,
                "rls" => Forecast::Rls,
                _ => Forecast::Ensemble,
            },
            window: self.window,
            min_frames: self.min_frames,
            limit_mm: self.limit_mm,
            max_extrapolation: self.max_extrapolation,
            axis_samples: self.axis_samples,
            velocity_window_s: self.velocity_window_ms * 1e-3,
            live: ionguide_core::surrogate::LiveLimits {
                max_gap_s: self.max_gap_ms * 1e-3,
                ..d.live
            },
            stall_s: self.stall_ms * 1e-3,
            freeze_tolerance_mm: self.freeze_tolerance_mm,
            resume_after_s: self.resume_after_ms * 1e-3,
            max_frame_age_s: self.max_frame_age_ms * 1e-3,
        }
    }
}

/// `[realtime]`: the stage threads under `SCHED_FIFO`, ahead of everything time-shared on the
/// host (`crate::pipeline::realtime`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// `SCHED_FIFO` priority 1–99; 0 (the default): time-shared.
    #[serde(default)]
    pub priority: u8,
    /// Refuse to start when the host does not grant the priority (default: run time-shared
    /// with a warning).
    #[serde(default)]
    pub required: bool,
}

/// Planning CT, target, plan, and how ranges are corrected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanningConfig {
    /// Planning CT series folder.
    pub ct: PathBuf,
    /// RT Structure Set with the target.
    pub structures: PathBuf,
    /// Target ROI name (registration region and tumor position).
    pub roi: String,
    /// RT Ion Plan.
    pub plan: PathBuf,
    /// HU → RSP table (CSV or TOML); default: the built-in matRad generic table.
    #[serde(default)]
    pub hlut: Option<PathBuf>,
    /// Facility energy table (CSV) to snap energies to deliverable ones.
    #[serde(default)]
    pub facility_table: Option<PathBuf>,
    /// `energy` (new energy per spot) or `range_shifter` (offset in mm water); any other
    /// value is refused on load, naming the key and the two allowed values.
    #[serde(default = "default_range_mode", deserialize_with = "range_mode")]
    pub range_mode: RangeMode,
    /// `true`: spots follow the registration's full rigid transform, rotation included.
    /// Default `false`: every spot moved by the tumor shift only (translation-only, which
    /// leaves a rotation's error). Off by default: where the registration region has little
    /// that turns with a rotation (the demo phantom's round tumor in faint lung), the rigid
    /// rotation is set by image noise (a still frame at 20 HU noise reads 1.0–2.7°) and
    /// spots would follow it; ARCHITECTURE.md, `adapt`, gives the measurements.
    #[serde(default)]
    pub follow_rotation: bool,
    /// Virtual source distances (x, y magnet), mm, for beams whose plan gives none.
    #[serde(default = "default_sad")]
    pub default_sad_mm: [f64; 2],
    /// Patient ID every frame must carry; default: the plan's.
    #[serde(default)]
    pub patient_id: Option<String>,
    /// DICOM Spatial Registration object mapping the in-room scanner's Frame of Reference
    /// onto the planning CT's. Every frame must then carry that in-room Frame of Reference,
    /// and is placed in planning coordinates before registration. Default: none — frames
    /// are taken to share the planning CT's coordinates closely enough for the first frame's
    /// cold registration, and the first frame's Frame of Reference is kept for the session.
    #[serde(default)]
    pub setup_registration: Option<PathBuf>,
}

/// Frame source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// DICOM C-STORE receiver.
    Scp {
        /// Listen address.
        bind: SocketAddr,
        /// Our AE title.
        #[serde(default = "default_ae")]
        ae_title: String,
        /// Slices per frame; default: Images in Acquisition from the objects.
        #[serde(default)]
        expected_slices: Option<usize>,
        /// A frame not complete this long after its first slice is rejected, ms.
        #[serde(default = "default_assembly_ms")]
        assembly_timeout_ms: u64,
        /// Calling AE titles that may send (the scanners); another is refused at association
        /// (A-ASSOCIATE-RJ, calling AE title not recognized) and audited. Empty: any.
        #[serde(default)]
        allowed_calling_ae_titles: Vec<String>,
        /// Addresses that may send; a connection from another is refused at association and
        /// audited. Empty: any.
        #[serde(default)]
        allowed_peers: Vec<std::net::IpAddr>,
        /// DICOM TLS: `{ cert = "scp.crt", key = "scp.key", ca = "ca.crt" }` (PEM). With it
        /// every association is TLS 1.2+ with a client certificate the CA signed; a plain
        /// connection or an untrusted certificate is refused and audited. The key file must
        /// not be readable by group or others.
        #[serde(default)]
        tls: Option<TlsConfig>,
    },
    /// A spool folder.
    Spool {
        /// The folder watched.
        dir: PathBuf,
        /// Slices per frame; default: Images in Acquisition from the objects.
        #[serde(default)]
        expected_slices: Option<usize>,
        /// Poll period, ms.
        #[serde(default = "default_poll_ms")]
        poll_ms: u64,
        /// A frame not complete this long after its first slice is rejected, ms.
        #[serde(default = "default_assembly_ms")]
        assembly_timeout_ms: u64,
    },
}

/// DICOM TLS files of the receiver (PEM; relative paths from the configuration's folder).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The receiver's certificate chain.
    pub cert: PathBuf,
    /// Its private key (owner-only permissions).
    pub key: PathBuf,
    /// The CA certificates the scanners' certificates must chain to.
    pub ca: PathBuf,
}

/// Link to the gantry controller.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Controller address (UDP).
    #[serde(default = "default_destination")]
    pub destination: SocketAddr,
    /// Local address to send from (and receive acknowledgements on).
    #[serde(default = "default_local")]
    pub local: SocketAddr,
    /// HMAC-SHA256 key file.
    pub key_file: PathBuf,
    /// Heartbeat period, ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// No acknowledgement for this long while corrections flow → hold (controller silent), ms.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Largest datagram, bytes.
    #[serde(default = "default_datagram")]
    pub max_datagram_bytes: usize,
}

/// Audit log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log file (appended to; created with its folder when missing).
    pub path: PathBuf,
    /// Write every spot's correction (`full`) or only their SHA-256 (`digest`).
    #[serde(default = "default_corrections")]
    pub corrections: String,
    /// `never` (the OS flushes; survives a process crash) or `every_record` (survives power loss).
    #[serde(default = "default_fsync")]
    pub fsync: String,
    /// HMAC key of the log's checkpoints (a file only its owner may read, like the link's);
    /// absent: the link's key signs them. `ionguide audit --verify LOG --key FILE` checks them.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Records between two signed checkpoints (one more is written when the session closes).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u32,
}

/// Latency budget and correction validity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Frame complete → corrections on the wire, at most, ms. Past it: hold.
    #[serde(default = "default_budget_ms")]
    pub budget_ms: f64,
    /// Corrections are void this long after the frame was *acquired*, ms: a frame depicts the
    /// anatomy at its acquisition time (the middle of its slices' Acquisition DateTime, else
    /// Acquisition Date + Time, else Content Date + Time; UTC unless the object says
    /// otherwise), not at its arrival, so the scanner's own delay counts against it. A frame
    /// without an acquisition time counts from its completion (counted in the daemon's
    /// status line); a frame already this old when it reaches the link is held
    /// (`deadline_missed`), never sent.
    #[serde(default = "default_validity_ms")]
    pub validity_ms: f64,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            budget_ms: default_budget_ms(),
            validity_ms: default_validity_ms(),
        }
    }
}

/// Safety limits: beyond any, hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest lateral correction of any spot at the isocenter plane (geometric mm).
    #[serde(default = "default_max_lateral")]
    pub max_lateral_mm: Mm,
    /// Largest range correction of any spot (mm water: the key keeps its `_mm` name, the type
    /// says water-equivalent).
    #[serde(default = "default_max_range")]
    pub max_range_mm: MmWe,
    /// Largest tumor move between consecutive frames (geometric mm).
    #[serde(default = "default_max_jump")]
    pub max_jump_mm: Mm,
    /// Poorest acceptable registration similarity (NCC).
    #[serde(default = "default_min_ncc")]
    pub min_ncc: f64,
    /// Largest rotation of the registration (angle about its axis, degrees) the spots may
    /// follow.
    #[serde(default = "default_max_rotation_deg")]
    pub max_rotation_deg: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_lateral_mm: default_max_lateral(),
            max_range_mm: default_max_range(),
            max_jump_mm: default_max_jump(),
            min_ncc: default_min_ncc(),
            max_rotation_deg: default_max_rotation_deg(),
        }
    }
}

/// Registration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Margin around the target's bounding box for the registration region, mm.
    #[serde(default = "default_margin")]
    pub margin_mm: f64,
    /// Threads per registration.
    #[serde(default = "one")]
    pub threads: usize,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            margin_mm: default_margin(),
            threads: 1,
        }
    }
}

/// Limits on what may be sent to us.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Most slices in one frame.
    #[serde(default = "default_max_slices")]
    pub max_slices: usize,
    /// Most voxels in one frame.
    #[serde(default = "default_max_voxels")]
    pub max_frame_voxels: usize,
    /// Most bytes in one DICOM object.
    #[serde(default = "default_max_object")]
    pub max_object_bytes: usize,
    /// Most spots in the plan.
    #[serde(default = "default_max_spots")]
    pub max_plan_spots: usize,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        ResourceConfig {
            max_slices: default_max_slices(),
            max_frame_voxels: default_max_voxels(),
            max_object_bytes: default_max_object(),
            max_plan_spots: default_max_spots(),
        }
    }
}

fn default_range_mode() -> RangeMode {
    RangeMode::Energy
}

/// `planning.range_mode`. Serde's derived message for a wrong value names neither the key
/// nor, for a wrong type, the allowed spellings; this one names both, whatever was written.
fn range_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RangeMode, D::Error> {
    struct Mode;
    impl serde::de::Visitor<'_> for Mode {
        type Value = RangeMode;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("\"energy\" or \"range_shifter\" for planning.range_mode")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RangeMode, E> {
            match s {
                "energy" => Ok(RangeMode::Energy),
                "range_shifter" => Ok(RangeMode::RangeShifter),
                _ => Err(E::custom(format!(
                    "planning.range_mode must be \"energy\" or \"range_shifter\", got {s:?}"
                ))),
            }
        }
    }
    d.deserialize_str(Mode)
}
fn default_sad() -> [f64; 2] {
    [6_500.0, 6_000.0]
}
fn default_ae() -> String {
    "IONGUIDE".into()
}
fn default_assembly_ms() -> u64 {
    2_000
}
fn default_poll_ms() -> u64 {
    20
}
fn default_destination() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 47_800))
}
fn default_local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_heartbeat_ms() -> u64 {
    20
}
fn default_ack_timeout_ms() -> u64 {
    100
}
fn default_datagram() -> usize {
    1_400
}
fn default_corrections() -> String {
    "full".into()
}
fn default_fsync() -> String {
    "never".into()
}
fn default_checkpoint_every() -> u32 {
    crate::audit::DEFAULT_CHECKPOINT_EVERY
}
fn default_budget_ms() -> f64 {
    50.0
}
fn default_validity_ms() -> f64 {
    100.0
}
fn default_max_lateral() -> Mm {
    Mm(10.0)
}
fn default_max_range() -> MmWe {
    MmWe(10.0)
}
fn default_max_jump() -> Mm {
    Mm(5.0)
}
fn default_min_ncc() -> f64 {
    0.85
}
fn default_max_rotation_deg() -> f64 {
    5.0
}
fn default_margin() -> f64 {
    10.0
}
fn one() -> usize {
    1
}
fn default_max_slices() -> usize {
    1_024
}
fn default_max_voxels() -> usize {
    64 * 1024 * 1024
}
fn default_max_object() -> usize {
    64 * 1024 * 1024
}
fn default_max_spots() -> usize {
    200_000
}
fn default_deform_spacing() -> f64 {
    2.0
}
fn default_deform_volume_change() -> f64 {
    25.0
}
fn default_deform_field() -> f64 {
    20.0
}
fn default_deform_jacobian() -> f64 {
    0.2
}
fn default_deform_inverse() -> f64 {
    1.0
}
fn default_deform_spot_margin() -> f64 {
    5.0
}
fn default_surrogate_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 47_810))
}
fn default_surrogate_rate() -> f64 {
    10.0
}
fn default_surrogate_latency() -> f64 {
    200.0
}
fn default_surrogate_validity() -> f64 {
    300.0
}
fn default_surrogate_budget() -> f64 {
    20.0
}
fn default_surrogate_forecast() -> String {
    "ensemble".into()
}
fn default_surrogate_window() -> usize {
    15
}
fn default_surrogate_min_frames() -> usize {
    4
}
fn default_surrogate_limit() -> f64 {
    2.0
}
fn default_surrogate_extrapolation() -> f64 {
    0.5
}
fn default_surrogate_axis_samples() -> usize {
    50
}
fn default_surrogate_velocity_window() -> f64 {
    200.0
}
fn default_surrogate_gap() -> f64 {
    500.0
}
fn default_surrogate_stall() -> f64 {
    500.0
}
fn default_surrogate_resume() -> f64 {
    1_000.0
}
fn default_surrogate_freeze() -> f64 {
    1e-3
}
fn default_surrogate_rsp() -> f64 {
    1.0
}
fn default_surrogate_frame_age() -> f64 {
    3_000.0
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a wrong type (the message names key and line).
    #[error("configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (key, line and column).
        message: String,
    },
    /// A value out of range or a missing file.
    #[error("configuration {path}: `{key}` {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key, e.g. `limits.max_lateral_mm`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads, parses and validates a configuration file; relative paths become relative to
    /// its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str(&text, path, base)
    }

    /// Parses and validates TOML text; `path` names it in errors, `base` resolves relative paths.
    pub fn from_toml_str(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        c.resolve(base);
        c.validate(path)?;
        Ok(c)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.planning.ct);
        fix(&mut self.planning.structures);
        fix(&mut self.planning.plan);
        if let Some(p) = &mut self.planning.hlut {
            fix(p);
        }
        if let Some(p) = &mut self.planning.facility_table {
            fix(p);
        }
        if let Some(p) = &mut self.planning.setup_registration {
            fix(p);
        }
        if let SourceConfig::Spool { dir, .. } = &mut self.source {
            fix(dir);
        }
        if let SourceConfig::Scp { tls: Some(t), .. } = &mut self.source {
            fix(&mut t.cert);
            fix(&mut t.key);
            fix(&mut t.ca);
        }
        fix(&mut self.link.key_file);
        if let Some(p) = &mut self.surrogate.key_file {
            fix(p);
        }
        fix(&mut self.audit.path);
        if let Some(p) = &mut self.audit.key_file {
            fix(p);
        }
    }

    /// Checks every value; the first fault is returned.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        let positive = |key: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(key, format!("must be a positive number, got {v}")))
            }
        };
        let exists = |key: &'static str, p: &Path, dir: bool| {
            let ok = if dir { p.is_dir() } else { p.is_file() };
            if ok {
                Ok(())
            } else {
                Err(bad(
                    key,
                    format!(
                        "names {} which is not an existing {}",
                        p.display(),
                        if dir { "folder" } else { "file" }
                    ),
                ))
            }
        };
        exists("planning.ct", &self.planning.ct, true)?;
        exists("planning.structures", &self.planning.structures, false)?;
        exists("planning.plan", &self.planning.plan, false)?;
        if let Some(p) = &self.planning.hlut {
            exists("planning.hlut", p, false)?;
        }
        if let Some(p) = &self.planning.facility_table {
            exists("planning.facility_table", p, false)?;
        }
        if let Some(p) = &self.planning.setup_registration {
            exists("planning.setup_registration", p, false)?;
        }
        if self.planning.roi.trim().is_empty() {
            return Err(bad("planning.roi", "must name a structure".into()));
        }
        for v in self.planning.default_sad_mm {
            positive("planning.default_sad_mm", v)?;
        }
        match &self.source {
            SourceConfig::Scp {
                ae_title,
                expected_slices,
                assembly_timeout_ms,
                allowed_calling_ae_titles,
                tls,
                ..
            } => {
                if let Some(t) = tls {
                    exists("source.tls.cert", &t.cert, false)?;
                    exists("source.tls.key", &t.key, false)?;
                    exists("source.tls.ca", &t.ca, false)?;
                    crate::link::check_private_file(&t.key)
                        .map_err(|e| bad("source.tls.key", e.to_string()))?;
                }
                if ae_title.is_empty() || ae_title.len() > 16 || !ae_title.is_ascii() {
                    return Err(bad(
                        "source.ae_title",
                        format!("must be 1–16 ASCII characters, got {ae_title:?}"),
                    ));
                }
                if let Some(a) = allowed_calling_ae_titles
                    .iter()
                    .find(|a| a.trim().is_empty() || a.len() > 16 || !a.is_ascii() || a.contains('\\'))
                {
                    return Err(bad(
                        "source.allowed_calling_ae_titles",
                        format!("each must be 1–16 ASCII characters without a backslash, got {a:?}"),
                    ));
                }
                check_slices(expected_slices, self.resources.max_slices)
                    .map_err(|r| bad("source.expected_slices", r))?;
                positive("source.assembly_timeout_ms", *assembly_timeout_ms as f64)?;
            }
            SourceConfig::Spool {
                dir,
                expected_slices,
                poll_ms,
                assembly_timeout_ms,
            } => {
                exists("source.dir", dir, true)?;
                check_slices(expected_slices, self.resources.max_slices)
                    .map_err(|r| bad("source.expected_slices", r))?;
                positive("source.poll_ms", *poll_ms as f64)?;
                positive("source.assembly_timeout_ms", *assembly_timeout_ms as f64)?;
            }
        }
        exists("link.key_file", &self.link.key_file, false)?;
        positive("link.heartbeat_ms", self.link.heartbeat_ms as f64)?;
        positive("link.ack_timeout_ms", self.link.ack_timeout_ms as f64)?;
        if !(256..=65_507).contains(&self.link.max_datagram_bytes) {
            return Err(bad(
                "link.max_datagram_bytes",
                format!(
                    "must be 256..=65507 (a UDP payload), got {}",
                    self.link.max_datagram_bytes
                ),
            ));
        }
        if self.link.heartbeat_ms >= self.link.ack_timeout_ms {
            return Err(bad(
                "link.heartbeat_ms",
                format!(
                    "must be shorter than link.ack_timeout_ms ({} ms), got {}",
                    self.link.ack_timeout_ms, self.link.heartbeat_ms
                ),
            ));
        }
        if !matches!(self.audit.corrections.as_str(), "full" | "digest") {
            return Err(bad(
                "audit.corrections",
                format!("must be \"full\" or \"digest\", got {:?}", self.audit.corrections),
            ));
        }
        if let Some(k) = &self.audit.key_file {
            exists("audit.key_file", k, false)?;
        }
        positive("audit.checkpoint_every", f64::from(self.audit.checkpoint_every))?;
        if !matches!(self.audit.fsync.as_str(), "never" | "every_record") {
            return Err(bad(
                "audit.fsync",
                format!(
                    "must be \"never\" or \"every_record\", got {:?}",
                    self.audit.fsync
                ),
            ));
        }
        positive("timing.budget_ms", self.timing.budget_ms)?;
        positive("timing.validity_ms", self.timing.validity_ms)?;
        if self.timing.validity_ms < self.timing.budget_ms {
            return Err(bad(
                "timing.validity_ms",
                format!(
                    "must be at least timing.budget_ms ({} ms), got {}: corrections would be void on arrival",
                    self.timing.budget_ms, self.timing.validity_ms
                ),
            ));
        }
        positive("limits.max_lateral_mm", self.limits.max_lateral_mm.get())?;
        positive("limits.max_range_mm", self.limits.max_range_mm.get())?;
        positive("limits.max_jump_mm", self.limits.max_jump_mm.get())?;
        positive("limits.max_rotation_deg", self.limits.max_rotation_deg)?;
        if !(self.limits.min_ncc > 0.0 && self.limits.min_ncc <= 1.0) {
            return Err(bad(
                "limits.min_ncc",
                format!("must be in (0, 1], got {}", self.limits.min_ncc),
            ));
        }
        if !(self.registration.margin_mm.is_finite() && self.registration.margin_mm >= 0.0) {
            return Err(bad(
                "registration.margin_mm",
                format!("must be ≥ 0, got {}", self.registration.margin_mm),
            ));
        }
        if !(1..=64).contains(&self.registration.threads) {
            return Err(bad(
                "registration.threads",
                format!("must be 1..=64, got {}", self.registration.threads),
            ));
        }
        for (key, v) in [
            ("resources.max_slices", self.resources.max_slices),
            ("resources.max_frame_voxels", self.resources.max_frame_voxels),
            ("resources.max_object_bytes", self.resources.max_object_bytes),
            ("resources.max_plan_spots", self.resources.max_plan_spots),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if self.realtime.priority > 99 {
            return Err(bad(
                "realtime.priority",
                format!(
                    "must be 0 (time-shared) or a SCHED_FIFO priority 1..=99, got {}",
                    self.realtime.priority
                ),
            ));
        }
        if self.realtime.required && self.realtime.priority == 0 {
            return Err(bad(
                "realtime.required",
                "is true but realtime.priority is 0: give the priority that is required".into(),
            ));
        }
        self.validate_deformable(path)?;
        self.validate_surrogate(path)
    }

    fn validate_deformable(&self, path: &Path) -> Result<(), ConfigError> {
        let g = &self.deformable;
        let bad = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        for (key, v) in [
            ("deformable.spacing_mm", g.spacing_mm),
            ("deformable.max_volume_change_pct", g.max_volume_change_pct),
            ("deformable.max_field_mm", g.max_field_mm),
            ("deformable.max_inverse_error_mm", g.max_inverse_error_mm),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(key, format!("must be a positive number, got {v}")));
            }
        }
        if !(0.5..=10.0).contains(&g.spacing_mm) {
            return Err(bad(
                "deformable.spacing_mm",
                format!("must be 0.5..=10 mm, got {}", g.spacing_mm),
            ));
        }
        if !(g.min_jacobian.is_finite() && (0.0..1.0).contains(&g.min_jacobian)) {
            return Err(bad(
                "deformable.min_jacobian",
                format!("must be in [0, 1), got {}", g.min_jacobian),
            ));
        }
        if !(g.min_similarity > 0.0 && g.min_similarity <= 1.0) {
            return Err(bad(
                "deformable.min_similarity",
                format!("must be in (0, 1], got {}", g.min_similarity),
            ));
        }
        if !(g.spot_off_margin_mm.is_finite() && g.spot_off_margin_mm >= 0.0) {
            return Err(bad(
                "deformable.spot_off_margin_mm",
                format!("must be ≥ 0, got {}", g.spot_off_margin_mm),
            ));
        }
        // Surrogate-driven sets move the spots by the frame's rigid motion plus the predicted
        // shift (`Adapter::adapt_shifted`), not through the field: together the two would
        // steer by a motion the frame's depths were not measured for.
        if g.enabled && self.surrogate.enabled {
            return Err(bad(
                "deformable.enabled",
                "cannot be on together with surrogate.enabled: surrogate-driven sets do not follow the deformation".into(),
            ));
        }
        Ok(())
    }

    fn validate_surrogate(&self, path: &Path) -> Result<(), ConfigError> {
        let g = &self.surrogate;
        let bad = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        for (key, v) in [
            ("surrogate.sample_rate_hz", g.sample_rate_hz),
            ("surrogate.latency_ms", g.latency_ms),
            ("surrogate.validity_ms", g.validity_ms),
            ("surrogate.budget_ms", g.budget_ms),
            ("surrogate.limit_mm", g.limit_mm),
            ("surrogate.max_extrapolation", g.max_extrapolation),
            ("surrogate.velocity_window_ms", g.velocity_window_ms),
            ("surrogate.max_gap_ms", g.max_gap_ms),
            ("surrogate.stall_ms", g.stall_ms),
            ("surrogate.resume_after_ms", g.resume_after_ms),
            ("surrogate.freeze_tolerance_mm", g.freeze_tolerance_mm),
            ("surrogate.rsp_at_target", g.rsp_at_target),
            ("surrogate.max_frame_age_ms", g.max_frame_age_ms),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(key, format!("must be a positive number, got {v}")));
            }
        }
        if g.validity_ms < g.latency_ms {
            return Err(bad(
                "surrogate.validity_ms",
                format!(
                    "must be at least surrogate.latency_ms ({} ms), got {}: sets would be void before delivery",
                    g.latency_ms, g.validity_ms
                ),
            ));
        }
        if g.marker > 2 {
            return Err(bad(
                "surrogate.marker",
                format!("must be 0, 1 or 2, got {}", g.marker),
            ));
        }
        if !matches!(g.forecast.as_str(), "ensemble" | "rls" | "none") {
            return Err(bad(
                "surrogate.forecast",
                format!("must be \"ensemble\", \"rls\" or \"none\", got {:?}", g.forecast),
            ));
        }
        if g.min_frames < 3 || g.window < g.min_frames || g.window > 1_000 {
            return Err(bad(
                "surrogate.window",
                format!(
                    "needs 3 ≤ min_frames ≤ window ≤ 1000, got min_frames {} window {}",
                    g.min_frames, g.window
                ),
            ));
        }
        if g.axis_samples < 3 || g.axis_samples > 100_000 {
            return Err(bad(
                "surrogate.axis_samples",
                format!("must be 3..=100000, got {}", g.axis_samples),
            ));
        }
        if g.enabled {
            let Some(k) = &g.key_file else {
                return Err(bad(
                    "surrogate.key_file",
                    "is required when surrogate.enabled".into(),
                ));
            };
            if !k.is_file() {
                return Err(bad(
                    "surrogate.key_file",
                    format!("names {} which is not an existing file", k.display()),
                ));
            }
            if *k == self.link.key_file {
                return Err(bad(
                    "surrogate.key_file",
                    "must differ from link.key_file: the tracking system must not be able to sign corrections".into(),
                ));
            }
        }
        Ok(())
    }
}

fn check_slices(expected: &Option<usize>, max: usize) -> Result<(), String> {
    match expected {
        Some(0) => Err("must be at least 1".into()),
        Some(n) if *n > max => Err(format!("is {n}, over resources.max_slices ({max})")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    /// A throwaway folder with the files a config names (the real inputs are not needed to
    /// validate paths).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "ionguide-config-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(p.join("ct")).unwrap();
                for f in ["RS.dcm", "RP.dcm", "link.key"] {
                    std::fs::write(p.join(f), b"x").unwrap();
                }
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const GOOD: &str = r#"
[planning]
ct = "ct"
structures = "RS.dcm"
roi = "GTV"
plan = "RP.dcm"

[source]
kind = "scp"
bind = "127.0.0.1:11112"

[link]
key_file = "link.key"

[audit]
path = "audit/session.audit"
"#;

    #[test]
    fn a_minimal_config_loads_with_documented_defaults_and_resolved_paths() {
        let d = session_dir();
        let c = Config::from_toml_str(GOOD, Path::new("s.toml"), &d.0).unwrap();
        assert_eq!(c.planning.ct, d.0.join("ct"));
        assert_eq!(c.timing.budget_ms, 50.0);
        assert_eq!(c.link.destination, "127.0.0.1:47800".parse().unwrap());
        assert_eq!(c.audit.path, d.0.join("audit/session.audit"));
        assert_eq!(c.planning.range_mode, RangeMode::Energy);
        assert_eq!(c.limits.max_range_mm, MmWe(10.0));
    }

    #[test]
    fn range_mode_is_an_enum_and_a_wrong_one_names_the_key_and_the_allowed_values() {
        let d = session_dir();
        let with = |mode: &str| {
            Config::from_toml_str(
                &GOOD.replace("[planning]\n", &format!("[planning]\nrange_mode = {mode}\n")),
                Path::new("s.toml"),
                &d.0,
            )
        };
        assert_eq!(
            with("\"range_shifter\"").unwrap().planning.range_mode,
            RangeMode::RangeShifter
        );
        assert_eq!(with("\"energy\"").unwrap().planning.range_mode, RangeMode::Energy);
        for wrong in ["\"shifter\"", "\"Energy\"", "1"] {
            let e = with(wrong).unwrap_err().to_string();
            assert!(
                e.contains("range_mode") && e.contains("\"energy\"") && e.contains("\"range_shifter\""),
                "{wrong}: {e}"
            );
        }
    }

    #[test]
    fn realtime_defaults_to_time_shared_and_bad_values_name_the_key() {
        let d = session_dir();
        let load = |extra: &str| Config::from_toml_str(&format!("{GOOD}{extra}"), Path::new("s.toml"), &d.0);
        assert_eq!(load("").unwrap().realtime, RealtimeConfig::default());
        let c = load("[realtime]\npriority = 40\nrequired = true\n").unwrap();
        assert_eq!((c.realtime.priority, c.realtime.required), (40, true));
        let e = load("[realtime]\npriority = 100\n").unwrap_err().to_string();
        assert!(e.contains("realtime.priority") && e.contains("1..=99"), "{e}");
        let e = load("[realtime]\nrequired = true\n").unwrap_err().to_string();
        assert!(e.contains("realtime.required"), "{e}");
        // Not a number the OS could take at all: refused by the parser, naming the key.
        let e = load("[realtime]\npriority = -3\n").unwrap_err().to_string();
        assert!(e.contains("priority"), "{e}");
    }

    #[test]
    fn surrogate_is_off_by_default_and_its_keys_are_checked_by_name() {
        let d = session_dir();
        let load = |extra: &str| Config::from_toml_str(&format!("{GOOD}{extra}"), Path::new("s.toml"), &d.0);
        let c = load("").unwrap();
        assert!(!c.surrogate.enabled);
        assert_eq!(c.surrogate, SurrogateConfig::default());
        let key_needed = load("[surrogate]\nenabled = true\n").unwrap_err().to_string();
        assert!(
            key_needed.contains("surrogate.key_file") && key_needed.contains("required"),
            "{key_needed}"
        );
        let same_key = load("[surrogate]\nenabled = true\nkey_file = \"link.key\"\n")
            .unwrap_err()
            .to_string();
        assert!(same_key.contains("must differ from link.key_file"), "{same_key}");
        std::fs::write(d.0.join("tracker.key"), b"x").unwrap();
        let c = load(
            "[surrogate]\nenabled = true\nkey_file = \"tracker.key\"\nlatency_ms = 150\nforecast = \"rls\"\n",
        )
        .unwrap();
        assert_eq!(c.surrogate.key_file, Some(d.0.join("tracker.key")));
        let o = c.surrogate.tracker_options();
        assert_eq!(o.latency_s, 0.15);
        assert_eq!(o.forecast, crate::tracking::Forecast::Rls);
        for (extra, key) in [
            ("validity_ms = 100\nlatency_ms = 200", "surrogate.validity_ms"),
            ("forecast = \"kalman\"", "surrogate.forecast"),
            ("min_frames = 2", "surrogate.window"),
            ("window = 3\nmin_frames = 4", "surrogate.window"),
            ("marker = 3", "surrogate.marker"),
            ("stall_ms = 0", "surrogate.stall_ms"),
            ("limit_mm = -1", "surrogate.limit_mm"),
        ] {
            let e = load(&format!("[surrogate]\n{extra}\n")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn deformable_is_off_by_default_with_documented_defaults_and_its_keys_are_checked_by_name() {
        let d = session_dir();
        let load = |extra: &str| Config::from_toml_str(&format!("{GOOD}{extra}"), Path::new("s.toml"), &d.0);
        let c = load("").unwrap();
        assert!(!c.deformable.enabled);
        assert_eq!(c.deformable, DeformableConfig::default());
        assert_eq!(c.deformable.max_volume_change_pct, 25.0);
        assert_eq!(c.deformable.max_field_mm, 20.0);
        assert_eq!(c.deformable.spot_off_margin_mm, 5.0);
        assert!(!c.deformable.warm_start);
        let c = load(
            "[deformable]
enabled = true
max_volume_change_pct = 30
spot_off_margin_mm = 0
",
        )
        .unwrap();
        assert!(c.deformable.enabled);
        assert_eq!(c.deformable.max_volume_change_pct, 30.0);
        assert_eq!(c.deformable.spot_off_margin_mm, 0.0);
        for (extra, key) in [
            ("max_volume_change_pct = 0", "deformable.max_volume_change_pct"),
            ("max_field_mm = -2", "deformable.max_field_mm"),
            ("min_jacobian = 1", "deformable.min_jacobian"),
            ("min_jacobian = -0.1", "deformable.min_jacobian"),
            ("spacing_mm = 0.1", "deformable.spacing_mm"),
            ("min_similarity = 0", "deformable.min_similarity"),
            ("spot_off_margin_mm = -1", "deformable.spot_off_margin_mm"),
            ("max_inverse_error_mm = nan", "deformable.max_inverse_error_mm"),
        ] {
            let e = load(&format!("[deformable]\n{extra}\n")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        std::fs::write(d.0.join("tracker.key"), b"x").unwrap();
        let e =
            load("[deformable]\nenabled = true\n[surrogate]\nenabled = true\nkey_file = \"tracker.key\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("deformable.enabled") && e.contains("surrogate.enabled"),
            "{e}"
        );
        let e = load("[deformable]\nmax_volume_change = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field") && e.contains("max_volume_change"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let d = session_dir();
        let load = |extra: &str| Config::from_toml_str(&format!("{GOOD}{extra}"), Path::new("s.toml"), &d.0);
        let e = load("[limits]\nmax_lateral_mm = -1\n").unwrap_err().to_string();
        assert!(
            e.contains("limits.max_lateral_mm") && e.contains("positive"),
            "{e}"
        );
        let e = load("[timing]\nbudget_ms = 80\nvalidity_ms = 50\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timing.validity_ms"), "{e}");
        let e = load("[limits]\nmax_lateral = 3\n").unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("max_lateral"), "{e}");
        let e = Config::from_toml_str(&GOOD.replace("RP.dcm", "missing.dcm"), Path::new("s.toml"), &d.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("planning.plan") && e.contains("missing.dcm"), "{e}");
        let e = Config::from_toml_str(
            &GOOD.replace("[planning]\n", "[planning]\nsetup_registration = \"REG.dcm\"\n"),
            Path::new("s.toml"),
            &d.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("planning.setup_registration") && e.contains("REG.dcm"),
            "{e}"
        );
        let e = Config::from_toml_str(
            &GOOD.replace("127.0.0.1:11112", "nowhere"),
            Path::new("s.toml"),
            &d.0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bind") || e.contains("address"), "{e}");
    }
}
