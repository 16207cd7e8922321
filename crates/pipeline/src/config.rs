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
    /// Spots follow the registration's full rigid transform, rotation included (default
    /// `true`); `false` moves every spot by the tumor shift only (translation-only
    /// correction, which leaves a rotation's error: for comparison).
    #[serde(default = "yes")]
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
fn yes() -> bool {
    true
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
