//! The treatment plan as every stage sees it: beams, energy layers and scanned spots.
//!
//! This is the DICOM-free model of an RT Ion Plan. `dicom::rtplan` reads and writes it;
//! `range` traces its spots; `adapt` corrects them. Energies are MeV per nucleon (what
//! DICOM's Nominal Beam Energy holds for ions), spot positions are millimetres in the
//! isocenter plane (Scan Spot Position Map), angles are IEC 61217 degrees.

use serde::Serialize;

use crate::units::{Ion, MmWe, PointMm};

/// A whole ion plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IonPlan {
    /// SOP Instance UID of the plan object.
    pub sop_instance_uid: String,
    /// Frame of Reference UID the isocenters are expressed in.
    pub frame_of_reference_uid: String,
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// RT Plan Label (300A,0002).
    pub label: String,
    /// Treatment beams, in plan order.
    pub beams: Vec<IonBeam>,
}

/// One treatment beam.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IonBeam {
    /// Beam Number (300A,00C0) as written (OpenTPS starts at 0).
    pub number: i32,
    /// Beam Name (300A,00C2), or "Beam N" when absent.
    pub name: String,
    /// Radiation Type (300A,00C6) as written: PROTON, ION, ...
    pub radiation_type: String,
    /// The ion species (Z, A).
    pub ion: Ion,
    /// Gantry angle, IEC 61217 degrees.
    pub gantry_angle_deg: f64,
    /// Patient support (couch) angle, IEC 61217 degrees.
    pub couch_angle_deg: f64,
    /// Isocenter in patient LPS mm.
    pub isocenter_mm: PointMm,
    /// Patient Position of the beam's patient setup (HFS, HFP, FFS, FFP, ...), if the plan
    /// states one; an empty or absent value is `None` (treated as HFS, with a warning).
    pub patient_position: Option<String>,
    /// Virtual source-axis distances [X, Y] in mm (scanning magnets), when the plan gives
    /// usable ones. `None` means the room's configured distances apply.
    pub virtual_sad_mm: Option<[f64; 2]>,
    /// Range shifters in the beam line.
    pub range_shifters: Vec<RangeShifter>,
    /// What the spot weights count: Primary Dosimeter Unit (300A,00B3) of the beam; `None`
    /// when the plan does not say (or says something else than NP or MU).
    pub primary_dosimeter_unit: Option<DosimeterUnit>,
    /// Energy layers in delivery order.
    pub layers: Vec<EnergyLayer>,
}

/// The unit of a beam's meterset, and so of its Scan Spot Meterset Weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DosimeterUnit {
    /// `NP`: number of particles.
    Particles,
    /// `MU`: monitor units (the beam line's calibration turns them into particles).
    MonitorUnits,
}

impl DosimeterUnit {
    /// The DICOM code string: `NP` or `MU`.
    pub fn code(self) -> &'static str {
        match self {
            DosimeterUnit::Particles => "NP",
            DosimeterUnit::MonitorUnits => "MU",
        }
    }
    /// The unit of a DICOM code string (`NP`, `MU`), `None` for any other.
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim() {
            "NP" => Some(DosimeterUnit::Particles),
            "MU" => Some(DosimeterUnit::MonitorUnits),
            _ => None,
        }
    }
}

/// A range shifter of the beam.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RangeShifter {
    /// Range Shifter Number (300A,0318).
    pub number: i32,
    /// Range Shifter ID (300A,0318).
    pub id: String,
    /// Water-equivalent thickness when the plan states it (from the layer settings).
    pub water_equivalent_thickness_mm: Option<MmWe>,
}

/// One energy layer: the spots delivered at one nominal energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyLayer {
    /// Nominal Beam Energy, MeV/u.
    pub energy_mev_u: f64,
    /// Spots in delivery order.
    pub spots: Vec<Spot>,
}

/// One scanned spot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spot {
    /// Position in the isocenter plane along the beam's-eye-view X axis, mm.
    pub x_mm: f64,
    /// Position in the isocenter plane along the beam's-eye-view Y axis, mm.
    pub y_mm: f64,
    /// Scan Spot Meterset Weight.
    pub weight: f64,
}

/// What is wrong with one spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[non_exhaustive]
pub enum SpotFault {
    /// Position or weight is NaN or infinite.
    #[error("non-finite position or weight")]
    NonFinite,
    /// |x| or |y| beyond the allowed field half-size.
    #[error("outside the maximum field")]
    OutsideField,
    /// Negative weight.
    #[error("negative weight")]
    NegativeWeight,
}

impl Spot {
    /// The first thing wrong with this spot, in the order non-finite, outside
    /// `±max_half_field_mm` (infinite: no field check), negative weight; `None` if it is sane.
    /// The one spot check: the plan reader and `dicom::rtplan::check_spot_maps` both use it.
    pub fn fault(&self, max_half_field_mm: f64) -> Option<SpotFault> {
        if !(self.x_mm.is_finite() && self.y_mm.is_finite() && self.weight.is_finite()) {
            Some(SpotFault::NonFinite)
        } else if self.x_mm.abs() > max_half_field_mm || self.y_mm.abs() > max_half_field_mm {
            Some(SpotFault::OutsideField)
        } else if self.weight < 0.0 {
            Some(SpotFault::NegativeWeight)
        } else {
            None
        }
    }
}

impl IonBeam {
    /// Number of spots over all layers.
    pub fn spot_count(&self) -> usize {
        self.layers.iter().map(|l| l.spots.len()).sum()
    }
    /// The virtual source-axis distances [X, Y] to use, mm: the plan's when it gives usable
    /// ones, else the room's configured distances.
    pub fn effective_virtual_sad_mm(&self, room_default_mm: [f64; 2]) -> [f64; 2] {
        self.virtual_sad_mm.unwrap_or(room_default_mm)
    }
    /// Lowest and highest layer energy, MeV/u (`None` without layers).
    pub fn energy_range_mev_u(&self) -> Option<(f64, f64)> {
        self.layers
            .iter()
            .map(|l| l.energy_mev_u)
            .fold(None, |acc, e| match acc {
                None => Some((e, e)),
                Some((lo, hi)) => Some((lo.min(e), hi.max(e))),
            })
    }
}

impl IonPlan {
    /// Number of spots over all beams.
    pub fn spot_count(&self) -> usize {
        self.beams.iter().map(IonBeam::spot_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_fault_names_the_first_thing_wrong() {
        let spot = |x_mm, y_mm, weight| Spot { x_mm, y_mm, weight };
        assert_eq!(spot(10.0, -10.0, 0.0).fault(200.0), None);
        assert_eq!(spot(f64::NAN, 0.0, 1.0).fault(200.0), Some(SpotFault::NonFinite));
        assert_eq!(
            spot(0.0, 0.0, f64::INFINITY).fault(f64::INFINITY),
            Some(SpotFault::NonFinite)
        );
        // Outside the field comes before a negative weight; an infinite field never trips.
        assert_eq!(
            spot(0.0, -200.5, -1.0).fault(200.0),
            Some(SpotFault::OutsideField)
        );
        assert_eq!(
            spot(0.0, -200.5, -1.0).fault(f64::INFINITY),
            Some(SpotFault::NegativeWeight)
        );
        assert_eq!(spot(200.0, 0.0, 1.0).fault(200.0), None);
    }
}
