//! A facility's energy ↔ Bragg-peak depth table and snapping to deliverable energies.
//!
//! CSV format (matRad's machine export, as in
//! `tests/data/physics/carbon_bragg_peak_depth_matRad_generic.csv`): one row per deliverable
//! energy, first column energy in MeV/u, second the Bragg-peak depth in water in mm; further
//! columns are ignored; lines starting with `#` (including a commented header) are skipped,
//! and a plain-text header row is allowed. Energies and depths must be finite and strictly
//! increasing.

use std::path::{Path, PathBuf};

use super::range_energy::interp;
use super::RangeError;
use crate::units::MmWe;

/// Deliverable energies and their Bragg-peak depths in water.
#[derive(Debug, Clone, PartialEq)]
pub struct FacilityTable {
    source: PathBuf,
    energy_mev_u: Vec<f64>,
    depth_mm: Vec<f64>,
}

/// A requested depth snapped to a deliverable energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapped {
    /// Index of the deliverable energy in the table.
    pub index: usize,
    /// The deliverable energy, MeV/u.
    pub energy_mev_u: f64,
    /// Its Bragg-peak depth in water.
    pub depth: MmWe,
    /// Snapped depth minus requested depth (the range error snapping introduces).
    pub residual: MmWe,
}

impl FacilityTable {
    /// Reads a table from CSV.
    pub fn from_file(path: &Path) -> Result<Self, RangeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RangeError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_csv_str(&text, path)
    }

    /// Parses CSV text; `source` names it in errors.
    pub fn from_csv_str(text: &str, source: &Path) -> Result<Self, RangeError> {
        let bad = |row: usize, reason: String| RangeError::BadTable {
            path: source.to_path_buf(),
            row,
            reason,
        };
        let mut energy = Vec::new();
        let mut depth = Vec::new();
        let mut first_data = true;
        for (n, line) in text.lines().enumerate() {
            let row = n + 1;
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            if cols.len() < 2 {
                return Err(bad(
                    row,
                    format!("expected ≥ 2 columns (energy, depth), got {}", cols.len()),
                ));
            }
            let (e, d) = match (cols[0].parse::<f64>(), cols[1].parse::<f64>()) {
                (Ok(e), Ok(d)) => (e, d),
                _ if first_data && cols[0].parse::<f64>().is_err() => {
                    first_data = false;
                    continue; // a header row
                }
                _ => return Err(bad(row, format!("not numbers: {:?}, {:?}", cols[0], cols[1]))),
            };
            first_data = false;
            if !e.is_finite() || !d.is_finite() || e <= 0.0 || d <= 0.0 {
                return Err(bad(
                    row,
                    format!("energy {e} and depth {d} must be finite and > 0"),
                ));
            }
            if let (Some(&pe), Some(&pd)) = (energy.last(), depth.last()) {
                if e <= pe || d <= pd {
                    return Err(bad(
                        row,
                        format!("energy {e} / depth {d} not strictly above previous {pe} / {pd}"),
                    ));
                }
            }
            energy.push(e);
            depth.push(d);
        }
        if energy.len() < 2 {
            return Err(bad(0, format!("needs at least 2 energies, got {}", energy.len())));
        }
        Ok(FacilityTable {
            source: source.to_path_buf(),
            energy_mev_u: energy,
            depth_mm: depth,
        })
    }

    /// Deliverable energies, MeV/u, ascending.
    pub fn energies_mev_u(&self) -> &[f64] {
        &self.energy_mev_u
    }
    /// Bragg-peak depths, mm, ascending.
    pub fn depths_mm(&self) -> &[f64] {
        &self.depth_mm
    }

    fn what(&self) -> String {
        format!("facility {}", self.source.display())
    }

    /// Bragg-peak depth at any energy inside the table (linear interpolation).
    pub fn depth_mm(&self, energy_mev_u: f64) -> Result<MmWe, RangeError> {
        let (lo, hi) = (
            self.energy_mev_u[0],
            self.energy_mev_u[self.energy_mev_u.len() - 1],
        );
        if !(energy_mev_u >= lo && energy_mev_u <= hi) {
            return Err(RangeError::EnergyOutOfTable {
                what: self.what(),
                energy_mev_u,
                min_mev_u: lo,
                max_mev_u: hi,
            });
        }
        Ok(MmWe(interp(&self.energy_mev_u, &self.depth_mm, energy_mev_u)))
    }

    /// Energy for a Bragg-peak depth inside the table (linear interpolation).
    pub fn energy_mev_u(&self, depth: MmWe) -> Result<f64, RangeError> {
        let depth_mm = depth.get();
        self.check_depth(depth_mm)?;
        Ok(interp(&self.depth_mm, &self.energy_mev_u, depth_mm))
    }

    fn check_depth(&self, depth_mm: f64) -> Result<(), RangeError> {
        let (lo, hi) = (self.depth_mm[0], self.depth_mm[self.depth_mm.len() - 1]);
        if !(depth_mm >= lo && depth_mm <= hi) {
            return Err(RangeError::DepthOutOfTable {
                what: self.what(),
                depth_mm,
                min_mm: lo,
                max_mm: hi,
            });
        }
        Ok(())
    }

    /// The deliverable energy whose depth is nearest `depth` (ties go to the lower
    /// energy). Depths beyond the table by more than half an energy step are an error.
    pub fn snap_depth(&self, depth: MmWe) -> Result<Snapped, RangeError> {
        let depth_mm = depth.get();
        let d = &self.depth_mm;
        let n = d.len();
        let lo = d[0] - 0.5 * (d[1] - d[0]);
        let hi = d[n - 1] + 0.5 * (d[n - 1] - d[n - 2]);
        if !(depth_mm >= lo && depth_mm <= hi) {
            return Err(RangeError::DepthOutOfTable {
                what: self.what(),
                depth_mm,
                min_mm: d[0],
                max_mm: d[n - 1],
            });
        }
        let k = d.partition_point(|&x| x < depth_mm);
        let index = if k == 0 {
            0
        } else if k >= n {
            n - 1
        } else if depth_mm - d[k - 1] <= d[k] - depth_mm {
            k - 1
        } else {
            k
        };
        Ok(Snapped {
            index,
            energy_mev_u: self.energy_mev_u[index],
            depth: MmWe(d[index]),
            residual: MmWe(d[index] - depth_mm),
        })
    }

    /// Snaps a requested energy: to the deliverable energy whose depth is nearest the
    /// requested energy's depth.
    pub fn snap_energy(&self, energy_mev_u: f64) -> Result<Snapped, RangeError> {
        let depth = self.depth_mm(energy_mev_u)?;
        self.snap_depth(depth)
    }
}
