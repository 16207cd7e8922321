//! The facility: its treatment rooms, what each can deliver, and the check of a plan against
//! the room it is to be delivered in (`facility.toml`, validated like a session
//! configuration).
//!
//! A room is a rotating gantry (any gantry angle in its range) or a fixed beam line with
//! ports. A fixed port gives exactly its gantry angle (within [`ANGLE_TOLERANCE_DEG`]): the
//! beam cannot turn, so only the couch (within the room's couch range) orients the patient.
//! Everything the room's session needs to run — in-room scanner (receiver address, AE
//! title), controller address and key, limits, audit log — is in the room's session
//! configuration, named by `session`; the facility adds what a plan must match and checks
//! that no two rooms share a receiver, a controller, a key or an audit log.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, ConfigError, SourceConfig};
use crate::dicom::identity::BeamMachine;
use crate::plan::{IonBeam, IonPlan};
use crate::units::Ion;

/// How far a planned gantry or couch angle may be from what a room gives, degrees (DICOM
/// angles are stored to a tenth of a degree or finer).
pub const ANGLE_TOLERANCE_DEG: f64 = 0.5;

/// `facility.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilityConfig {
    /// The facility's name (reports, console).
    pub name: String,
    /// Its treatment rooms (`[[room]]`).
    #[serde(rename = "room")]
    pub rooms: Vec<RoomConfig>,
}

/// One treatment room.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// Its name, unique in the facility.
    pub name: String,
    /// The Treatment Machine Name (300A,00B2) a plan for this room carries on every beam.
    pub machine: String,
    /// The beam line: a rotating gantry or fixed ports.
    pub beam_line: BeamLine,
    /// Couch (patient support) angles the room reaches, degrees, `[from, to]` through 0
    /// (IEC 61217; default `[-90, 90]`).
    #[serde(default = "default_couch_range")]
    pub couch_range_deg: [f64; 2],
    /// Virtual source-axis distances of the scanning magnets (x, y), mm.
    pub virtual_sad_mm: [f64; 2],
    /// The ions the room offers, by symbol (`"12C"`, `"4He"`, `"1H"`, `"16O"`, `"20Ne"`), each
    /// with its energy table.
    pub ions: BTreeMap<String, EnergyTable>,
    /// The room's session configuration (scanner, controller, key, limits, audit log).
    pub session: PathBuf,
}

fn default_couch_range() -> [f64; 2] {
    [-90.0, 90.0]
}

/// What a room's beam line can do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BeamLine {
    /// A rotating gantry.
    Gantry {
        /// Gantry angles it reaches, degrees, `[from, to]` going up from `from` (default
        /// `[0, 360]`: all of them; `[180, 540]` style ranges are not needed: `[270, 90]`
        /// means 270 → 360/0 → 90).
        #[serde(default = "default_gantry_range")]
        gantry_range_deg: [f64; 2],
    },
    /// A fixed beam line with one or more ports.
    Fixed {
        /// Its ports.
        ports: Vec<FixedPort>,
    },
}

fn default_gantry_range() -> [f64; 2] {
    [0.0, 360.0]
}

/// A fixed beam port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedPort {
    /// Its name (`horizontal`, `vertical`, …).
    pub name: String,
    /// The one gantry angle it gives, degrees (IEC 61217: 90 or 270 horizontal, 0 vertical
    /// from above).
    pub gantry_deg: f64,
}

/// The energies a room delivers for one ion, MeV/u.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum EnergyTable {
    /// A synchrotron's discrete energies: a planned energy must be one of them within
    /// `tolerance_mev_u`.
    Discrete {
        /// The energies, MeV/u.
        energies_mev_u: Vec<f64>,
        /// How close a planned energy must be to one of them, MeV/u (default 0.1).
        #[serde(default = "default_energy_tolerance")]
        tolerance_mev_u: f64,
    },
    /// Any energy in a band (a degrader line, or a synchrotron with fine steps).
    Band {
        /// Lowest, MeV/u.
        min_mev_u: f64,
        /// Highest, MeV/u.
        max_mev_u: f64,
    },
}

fn default_energy_tolerance() -> f64 {
    0.1
}

impl EnergyTable {
    fn delivers(&self, energy_mev_u: f64) -> bool {
        match self {
            EnergyTable::Discrete {
                energies_mev_u,
                tolerance_mev_u,
            } => energies_mev_u
                .iter()
                .any(|e| (e - energy_mev_u).abs() <= *tolerance_mev_u),
            EnergyTable::Band { min_mev_u, max_mev_u } => (*min_mev_u..=*max_mev_u).contains(&energy_mev_u),
        }
    }

    fn describe(&self) -> String {
        match self {
            EnergyTable::Discrete { energies_mev_u, .. } => {
                let lo = energies_mev_u.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = energies_mev_u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{} discrete energies {lo:.2}–{hi:.2} MeV/u", energies_mev_u.len())
            }
            EnergyTable::Band { min_mev_u, max_mev_u } => format!("{min_mev_u:.2}–{max_mev_u:.2} MeV/u"),
        }
    }
}

/// Why a facility configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FacilityError {
    /// The file could not be read.
    #[error("cannot read facility configuration {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a wrong type.
    #[error("facility configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (key, line and column).
        message: String,
    },
    /// A value out of range, or two rooms in each other's way.
    #[error("facility configuration {path}: room {room:?}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The room (empty for the facility itself).
        room: String,
        /// What is wrong.
        reason: String,
    },
    /// A room's session configuration is not usable.
    #[error("facility configuration {path}: room {room:?}: {source}")]
    Session {
        /// The file.
        path: PathBuf,
        /// The room.
        room: String,
        /// Why.
        #[source]
        source: ConfigError,
    },
}

/// A room with its loaded session configuration.
#[derive(Debug, Clone)]
pub struct Room {
    /// The room as configured.
    pub config: RoomConfig,
    /// Its session configuration, loaded and validated.
    pub session: Config,
    /// Offered ions, parsed.
    pub ions: Vec<(Ion, EnergyTable)>,
}

/// A loaded, validated facility.
#[derive(Debug, Clone)]
pub struct Facility {
    /// Its name.
    pub name: String,
    /// Its rooms, in file order.
    pub rooms: Vec<Room>,
}

impl Facility {
    /// Reads, parses and validates `facility.toml` and every room's session configuration
    /// (relative paths are relative to the file's folder).
    pub fn load(path: &Path) -> Result<Facility, FacilityError> {
        let text = std::fs::read_to_string(path).map_err(|source| FacilityError::Io {
            path: path.to_owned(),
            source,
        })?;
        Facility::from_toml_str(&text, path, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates TOML text; `path` names it in errors, `base` resolves paths.
    pub fn from_toml_str(text: &str, path: &Path, base: &Path) -> Result<Facility, FacilityError> {
        let config: FacilityConfig = toml::from_str(text).map_err(|e| FacilityError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |room: &str, reason: String| FacilityError::Invalid {
            path: path.to_owned(),
            room: room.to_owned(),
            reason,
        };
        if config.rooms.is_empty() {
            return Err(invalid("", "no [[room]]: a facility has at least one".into()));
        }
        let mut rooms: Vec<Room> = Vec::with_capacity(config.rooms.len());
        for mut rc in config.rooms {
            let name = rc.name.clone();
            if name.trim().is_empty() {
                return Err(invalid(&name, "`name` is empty".into()));
            }
            if rooms.iter().any(|r| r.config.name == name) {
                return Err(invalid(&name, "two rooms have this name".into()));
            }
            if rc.machine.trim().is_empty() {
                return Err(invalid(&name, "`machine` is empty".into()));
            }
            if rooms.iter().any(|r| r.config.machine == rc.machine) {
                return Err(invalid(
                    &name,
                    format!(
                        "machine {:?} is another room's too: a plan would fit both",
                        rc.machine
                    ),
                ));
            }
            validate_room(&rc).map_err(|reason| invalid(&name, reason))?;
            let mut ions = Vec::new();
            for (symbol, table) in &rc.ions {
                let ion: Ion = symbol.parse().map_err(|_| {
                    invalid(
                        &name,
                        format!(
                            "ion {symbol:?} is not one ionguide knows ({})",
                            Ion::SUPPORTED.map(|i| i.to_string()).join(", ")
                        ),
                    )
                })?;
                validate_table(table).map_err(|reason| invalid(&name, format!("ions.{symbol}: {reason}")))?;
                ions.push((ion, table.clone()));
            }
            if rc.session.is_relative() {
                rc.session = base.join(&rc.session);
            }
            let session = Config::load(&rc.session).map_err(|source| FacilityError::Session {
                path: path.to_owned(),
                room: name.clone(),
                source,
            })?;
            for other in &rooms {
                if let Some(what) = shared_resource(&session, &other.session) {
                    return Err(invalid(
                        &name,
                        format!(
                            "shares {what} with room {:?}: rooms must be isolated",
                            other.config.name
                        ),
                    ));
                }
            }
            rooms.push(Room {
                config: rc,
                session,
                ions,
            });
        }
        Ok(Facility {
            name: config.name,
            rooms,
        })
    }

    /// The room of this name.
    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.iter().find(|r| r.config.name == name)
    }
}

fn validate_room(rc: &RoomConfig) -> Result<(), String> {
    let angle_ok = |a: f64| a.is_finite() && (-360.0..=360.0).contains(&a);
    let [c0, c1] = rc.couch_range_deg;
    if !(angle_ok(c0) && angle_ok(c1) && c0 <= c1) {
        return Err(format!(
            "couch_range_deg {:?}: want [from, to] with from ≤ to, degrees",
            rc.couch_range_deg
        ));
    }
    if !rc.virtual_sad_mm.iter().all(|d| d.is_finite() && *d > 0.0) {
        return Err(format!(
            "virtual_sad_mm {:?}: both must be positive, mm",
            rc.virtual_sad_mm
        ));
    }
    if rc.ions.is_empty() {
        return Err("`ions` is empty: a room offers at least one".into());
    }
    match &rc.beam_line {
        BeamLine::Gantry { gantry_range_deg } => {
            if !gantry_range_deg
                .iter()
                .all(|a| a.is_finite() && (0.0..=360.0).contains(a))
            {
                return Err(format!(
                    "gantry_range_deg {gantry_range_deg:?}: angles in [0, 360]"
                ));
            }
        }
        BeamLine::Fixed { ports } => {
            if ports.is_empty() {
                return Err("a fixed beam line has at least one port".into());
            }
            for p in ports {
                if !(p.gantry_deg.is_finite() && (0.0..360.0).contains(&p.gantry_deg)) {
                    return Err(format!(
                        "port {:?}: gantry_deg {} not in [0, 360)",
                        p.name, p.gantry_deg
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_table(t: &EnergyTable) -> Result<(), String> {
    match t {
        EnergyTable::Discrete {
            energies_mev_u,
            tolerance_mev_u,
        } => {
            if energies_mev_u.is_empty() {
                return Err("energies_mev_u is empty".into());
            }
            if let Some(e) = energies_mev_u.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
                return Err(format!("energy {e} MeV/u is not positive"));
            }
            if !(tolerance_mev_u.is_finite() && *tolerance_mev_u >= 0.0) {
                return Err(format!("tolerance_mev_u {tolerance_mev_u} is not ≥ 0"));
            }
        }
        EnergyTable::Band { min_mev_u, max_mev_u } => {
            if !(min_mev_u.is_finite() && max_mev_u.is_finite() && *min_mev_u > 0.0 && min_mev_u <= max_mev_u)
            {
                return Err(format!("band {min_mev_u}–{max_mev_u} MeV/u: want 0 < min ≤ max"));
            }
        }
    }
    Ok(())
}

/// What two rooms' sessions would share (a receiver port, a controller, a key, an audit log).
fn shared_resource(a: &Config, b: &Config) -> Option<&'static str> {
    let listen = |c: &Config| match &c.source {
        SourceConfig::Scp { bind, .. } => Some(*bind),
        _ => None,
    };
    if let (Some(x), Some(y)) = (listen(a), listen(b)) {
        if x.port() == y.port()
            && x.port() != 0
            && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        {
            return Some("the scanner receiver's address");
        }
    }
    if let (SourceConfig::Spool { dir: x, .. }, SourceConfig::Spool { dir: y, .. }) = (&a.source, &b.source) {
        if x == y {
            return Some("the spool folder");
        }
    }
    if a.link.destination == b.link.destination {
        return Some("the controller's address");
    }
    if a.link.key_file == b.link.key_file {
        return Some("the link key file");
    }
    if a.audit.path == b.audit.path {
        return Some("the audit log");
    }
    None
}

/// One way a plan beam does not fit a room.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BeamFault {
    /// The beam names another treatment machine, or none.
    Machine {
        /// What the plan names (`None`: nothing).
        planned: Option<String>,
        /// The room's.
        room: String,
    },
    /// The room does not offer the beam's ion.
    Ion {
        /// The beam's ion.
        planned: Ion,
        /// What the room offers.
        offered: Vec<Ion>,
    },
    /// The gantry angle is out of the room's reach.
    Gantry {
        /// Planned, degrees.
        planned_deg: f64,
        /// What the room gives.
        room: String,
    },
    /// The couch angle is out of the room's range.
    Couch {
        /// Planned, degrees.
        planned_deg: f64,
        /// The room's range, degrees.
        range_deg: [f64; 2],
    },
    /// An energy layer the room cannot deliver.
    Energy {
        /// Planned, MeV/u.
        planned_mev_u: f64,
        /// What the room delivers for this ion.
        table: String,
    },
    /// The plan's virtual source distances differ from the room's by more than 1%.
    VirtualSource {
        /// Planned, mm.
        planned_mm: [f64; 2],
        /// The room's, mm.
        room_mm: [f64; 2],
    },
}

impl fmt::Display for BeamFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeamFault::Machine {
                planned: Some(p),
                room,
            } => {
                write!(f, "planned for treatment machine {p:?}; this room is {room:?}")
            }
            BeamFault::Machine { planned: None, room } => {
                write!(f, "names no treatment machine; this room is {room:?}")
            }
            BeamFault::Ion { planned, offered } => write!(
                f,
                "ion {planned} is not offered here (the room offers {})",
                offered
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            BeamFault::Gantry { planned_deg, room } => {
                write!(f, "gantry angle {planned_deg:.1}° cannot be given here ({room})")
            }
            BeamFault::Couch {
                planned_deg,
                range_deg,
            } => write!(
                f,
                "couch angle {planned_deg:.1}° is outside the room's {:.0}°…{:.0}°",
                range_deg[0], range_deg[1]
            ),
            BeamFault::Energy { planned_mev_u, table } => {
                write!(
                    f,
                    "energy {planned_mev_u:.3} MeV/u is not deliverable here ({table})"
                )
            }
            BeamFault::VirtualSource { planned_mm, room_mm } => write!(
                f,
                "virtual source distances {:.0}/{:.0} mm differ from the room's {:.0}/{:.0} mm",
                planned_mm[0], planned_mm[1], room_mm[0], room_mm[1]
            ),
        }
    }
}

/// Every way a plan does not fit a room, beam by beam.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plan {plan} cannot be delivered in room {room:?}: {}", list(.faults))]
pub struct PlanRoomMismatch {
    /// The plan (label and SOP Instance UID).
    pub plan: String,
    /// The room.
    pub room: String,
    /// Beam (number and name) and fault, in plan order.
    pub faults: Vec<(String, BeamFault)>,
}

fn list(faults: &[(String, BeamFault)]) -> String {
    faults
        .iter()
        .map(|(beam, fault)| format!("{beam}: {fault}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether `angle` lies on the arc `[from, to]` going up from `from` (degrees, mod 360).
fn on_arc(angle: f64, [from, to]: [f64; 2]) -> bool {
    let span = (to - from).rem_euclid(360.0);
    if (to - from).abs() >= 360.0 {
        return true;
    }
    let off = (angle - from).rem_euclid(360.0);
    off <= span + ANGLE_TOLERANCE_DEG || off >= 360.0 - ANGLE_TOLERANCE_DEG
}

fn angle_gap_deg(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

impl Room {
    /// Checks every beam of `plan` against this room: its treatment machine name (from
    /// `machines`, the plan's Ion Beam Sequence), ion, gantry and couch angles, energies and
    /// virtual source distances. All faults are listed, not only the first.
    pub fn check_plan(&self, plan: &IonPlan, machines: &[BeamMachine]) -> Result<(), PlanRoomMismatch> {
        let mut faults = Vec::new();
        for beam in &plan.beams {
            let name = format!("beam {} {:?}", beam.number, beam.name);
            for fault in self.beam_faults(beam, machines) {
                faults.push((name.clone(), fault));
            }
        }
        if faults.is_empty() {
            Ok(())
        } else {
            Err(PlanRoomMismatch {
                plan: format!("{:?} ({})", plan.label, plan.sop_instance_uid),
                room: self.config.name.clone(),
                faults,
            })
        }
    }

    fn beam_faults(&self, beam: &IonBeam, machines: &[BeamMachine]) -> Vec<BeamFault> {
        let rc = &self.config;
        let mut faults = Vec::new();
        let planned = machines
            .iter()
            .find(|m| m.beam_number == Some(beam.number))
            .and_then(|m| m.machine.clone());
        if planned.as_deref() != Some(rc.machine.as_str()) {
            faults.push(BeamFault::Machine {
                planned,
                room: rc.machine.clone(),
            });
        }
        match self.ions.iter().find(|(ion, _)| *ion == beam.ion) {
            None => faults.push(BeamFault::Ion {
                planned: beam.ion,
                offered: self.ions.iter().map(|(i, _)| *i).collect(),
            }),
            Some((_, table)) => {
                // one fault per distinct energy: a plan with a wrong table says so once each
                let mut seen: Vec<f64> = Vec::new();
                for layer in &beam.layers {
                    let e = layer.energy_mev_u;
                    if !table.delivers(e) && !seen.contains(&e) {
                        seen.push(e);
                        faults.push(BeamFault::Energy {
                            planned_mev_u: e,
                            table: table.describe(),
                        });
                    }
                }
            }
        }
        let gantry = beam.gantry_angle_deg;
        match &rc.beam_line {
            BeamLine::Gantry { gantry_range_deg } => {
                if !on_arc(gantry, *gantry_range_deg) {
                    faults.push(BeamFault::Gantry {
                        planned_deg: gantry,
                        room: format!(
                            "its gantry turns {:.0}°→{:.0}°",
                            gantry_range_deg[0], gantry_range_deg[1]
                        ),
                    });
                }
            }
            BeamLine::Fixed { ports } => {
                if !ports
                    .iter()
                    .any(|p| angle_gap_deg(p.gantry_deg, gantry) <= ANGLE_TOLERANCE_DEG)
                {
                    let list: Vec<String> = ports
                        .iter()
                        .map(|p| format!("{} {:.0}°", p.name, p.gantry_deg))
                        .collect();
                    faults.push(BeamFault::Gantry {
                        planned_deg: gantry,
                        room: format!("fixed ports only: {}", list.join(", ")),
                    });
                }
            }
        }
        let couch = beam.couch_angle_deg;
        // couch angles are compared on (-180, 180]
        let couch_signed = if couch > 180.0 { couch - 360.0 } else { couch };
        let [c0, c1] = rc.couch_range_deg;
        if !(c0 - ANGLE_TOLERANCE_DEG..=c1 + ANGLE_TOLERANCE_DEG).contains(&couch_signed) {
            faults.push(BeamFault::Couch {
                planned_deg: couch,
                range_deg: rc.couch_range_deg,
            });
        }
        if let Some(sad) = beam.virtual_sad_mm {
            let off = |p: f64, r: f64| (p - r).abs() > 0.01 * r;
            if off(sad[0], rc.virtual_sad_mm[0]) || off(sad[1], rc.virtual_sad_mm[1]) {
                faults.push(BeamFault::VirtualSource {
                    planned_mm: sad,
                    room_mm: rc.virtual_sad_mm,
                });
            }
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcs_wrap_through_zero_and_a_full_turn_reaches_everything() {
        assert!(on_arc(123.0, [0.0, 360.0]));
        assert!(on_arc(359.9, [0.0, 360.0]));
        assert!(on_arc(10.0, [270.0, 90.0]));
        assert!(on_arc(280.0, [270.0, 90.0]));
        assert!(!on_arc(180.0, [270.0, 90.0]));
        assert!(on_arc(90.4, [270.0, 90.0]), "within the tolerance");
        assert!(!on_arc(91.0, [270.0, 90.0]));
        assert!(on_arc(45.0, [0.0, 180.0]));
        assert!(!on_arc(200.0, [0.0, 180.0]));
        assert!((angle_gap_deg(359.8, 0.1) - 0.3).abs() < 1e-9);
        assert!(on_arc(90.2, [90.0, 90.0]) && !on_arc(91.0, [90.0, 90.0]));
    }
}
