//! matRad generic machine base data: per energy, the integrated depth dose (IDD) and the
//! lateral spread in water, read from the CSV export described in
//! `tests/data/matrad/README.md` (`energies.csv`, `depth_dose.csv` or `depth_dose.csv.gz`,
//! `machine.txt`).
//!
//! Columns are found by header name, so the full export (with the biological and LET
//! columns) and the repository's reduced copy read the same. Every fault names the file, the
//! 1-based line and the column.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::units::Ion;

/// Why machine data could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    /// A file could not be read (or decompressed).
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS or decoder error, as text.
        message: String,
    },
    /// A required column is missing from the header.
    #[error("{path}: line 1: no column {column:?}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column's header name.
        column: String,
    },
    /// A cell is not a number or violates a constraint.
    #[error("{path}: line {line}, column {column:?}: {reason}")]
    BadCell {
        /// The file.
        path: PathBuf,
        /// 1-based line (the header is line 1).
        line: usize,
        /// The column's header name.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A whole-table problem (an energy without depth data, depths not increasing, …).
    #[error("{path}: {reason}")]
    BadTable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The lateral model of a machine (matRad's `dataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LateralModel {
    /// One Gaussian (`singleGauss`, carbon): `sigma_mm`.
    Single,
    /// Two Gaussians (`doubleGauss`, protons and helium): `sigma1_mm`, `sigma2_mm` and the
    /// broad one's weight `weight2`.
    Double,
    /// matRad's `multipleGauss` (oxygen): three sigmas `sigma_multi{1,2,3}_mm`, weights
    /// `1 − w1 − w2`, `weight_multi1`, `weight_multi2`, as pyRadPlan's HongPB combines them.
    Multi,
}

impl LateralModel {
    /// Number of Gaussian components.
    pub fn components(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Double => 2,
            Self::Multi => 3,
        }
    }
}

/// One energy's pencil-beam kernel, as tabulated.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyKernel {
    /// Energy per nucleon, MeV/u.
    pub energy_mev_u: f64,
    /// Bragg-peak position in water as the machine states it, mm.
    pub peak_pos_mm: f64,
    /// matRad's depth offset, mm (added to the tabulated depths).
    pub offset_mm: f64,
    /// Initial beam sigma at the isocenter, mm (constant along the beam in this data).
    pub sigma_initial_mm: f64,
    /// Depths in water, mm, strictly increasing.
    pub depths_mm: Vec<f64>,
    /// Integrated depth dose per primary ion, MeV·cm²/g, at each depth.
    pub idd_mev_cm2_per_g: Vec<f64>,
    /// Per component `c`, the sigma in water at each depth, mm (`sigma_water_mm[c][n]`).
    pub sigma_water_mm: Vec<Vec<f64>>,
    /// Per component after the first, its weight at each depth (the first takes the rest).
    pub weights: Vec<Vec<f64>>,
}

/// One ion's machine: its lateral model, geometry and the kernels of every energy.
#[derive(Debug, Clone, PartialEq)]
pub struct IonMachine {
    /// The ion the kernels describe.
    pub ion: Ion,
    /// How the lateral columns combine.
    pub lateral: LateralModel,
    /// Virtual source-axis distance, mm (`SAD` in `machine.txt`).
    pub sad_mm: f64,
    /// Kernels in increasing energy.
    pub energies: Vec<EnergyKernel>,
    /// What the data is (a folder, or how it was derived), for messages and reports.
    pub source: String,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> MachineError {
    MachineError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Reads `name` in `dir`, or `name.gz` (gzip) when the plain file is absent.
fn read_text(dir: &Path, name: &str) -> Result<(PathBuf, String), MachineError> {
    let plain = dir.join(name);
    if plain.is_file() {
        let text = std::fs::read_to_string(&plain).map_err(|e| io_err(&plain, e))?;
        return Ok((plain, text));
    }
    let gz = dir.join(format!("{name}.gz"));
    let file =
        std::fs::File::open(&gz).map_err(|e| io_err(&gz, format!("{e} (nor {} found)", plain.display())))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| io_err(&gz, e))?;
    Ok((gz, text))
}

/// A parsed CSV: header names and rows of cells, with line numbers.
struct Table<'a> {
    path: &'a Path,
    header: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Table<'a> {
    fn parse(path: &'a Path, text: &'a str) -> Result<Self, MachineError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let header: Vec<&str> = match lines.next() {
            Some((_, l)) => l.split(',').map(str::trim).collect(),
            None => {
                return Err(MachineError::BadTable {
                    path: path.to_path_buf(),
                    reason: "empty file".into(),
                })
            }
        };
        let mut rows = Vec::new();
        for (n, l) in lines {
            let cells: Vec<&str> = l.split(',').map(str::trim).collect();
            if cells.len() != header.len() {
                return Err(MachineError::BadTable {
                    path: path.to_path_buf(),
                    reason: format!(
                        "line {}: {} cells, header has {}",
                        n + 1,
                        cells.len(),
                        header.len()
                    ),
                });
            }
            rows.push((n + 1, cells));
        }
        Ok(Table { path, header, rows })
    }

    fn column(&self, name: &str) -> Result<usize, MachineError> {
        self.header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| MachineError::MissingColumn {
                path: self.path.to_path_buf(),
                column: name.to_string(),
            })
    }

    /// A finite number in row `r`, column `c`, at least `min`.
    fn number(&self, r: usize, c: usize, min: f64) -> Result<f64, MachineError> {
        let (line, cells) = &self.rows[r];
        let bad = |reason: String| MachineError::BadCell {
            path: self.path.to_path_buf(),
            line: *line,
            column: self.header[c].to_string(),
            reason,
        };
        let v: f64 = cells[c]
            .parse()
            .map_err(|_| bad(format!("not a number: {:?}", cells[c])))?;
        if !v.is_finite() {
            return Err(bad(format!("not finite: {v}")));
        }
        if v < min {
            return Err(bad(format!("{v} is below {min}")));
        }
        Ok(v)
    }
}

fn ion_of_mode(mode: &str) -> Option<Ion> {
    match mode {
        "protons" => Some(Ion::PROTON),
        "helium" => Some(Ion::HELIUM4),
        "carbon" => Some(Ion::CARBON12),
        "oxygen" => Some(Ion::OXYGEN16),
        "neon" => Some(Ion::NEON20),
        _ => None,
    }
}

impl IonMachine {
    /// Loads a machine folder (`machine.txt`, `energies.csv`, `depth_dose.csv[.gz]`).
    pub fn from_dir(dir: &Path) -> Result<Self, MachineError> {
        let (mpath, mtext) = read_text(dir, "machine.txt")?;
        let (epath, etext) = read_text(dir, "energies.csv")?;
        let (dpath, dtext) = read_text(dir, "depth_dose.csv")?;
        let mut m = Self::from_texts(&mpath, &mtext, &epath, &etext, &dpath, &dtext)?;
        m.source = dir.display().to_string();
        Ok(m)
    }

    /// Parses the three texts (`*_path` name them in errors).
    pub fn from_texts(
        machine_path: &Path,
        machine_txt: &str,
        energies_path: &Path,
        energies_csv: &str,
        depth_path: &Path,
        depth_csv: &str,
    ) -> Result<Self, MachineError> {
        let key = |k: &str| -> Option<&str> {
            machine_txt.lines().find_map(|l| {
                let (a, b) = l.split_once(':')?;
                (a.trim() == k).then(|| b.trim())
            })
        };
        let bad_machine = |reason: String| MachineError::BadTable {
            path: machine_path.to_path_buf(),
            reason,
        };
        let mode = key("radiationMode").ok_or_else(|| bad_machine("no radiationMode".into()))?;
        let ion = ion_of_mode(mode).ok_or_else(|| bad_machine(format!("unknown radiationMode {mode:?}")))?;
        let lateral = match key("dataType").ok_or_else(|| bad_machine("no dataType".into()))? {
            "singleGauss" => LateralModel::Single,
            "doubleGauss" => LateralModel::Double,
            "multipleGauss" => LateralModel::Multi,
            other => return Err(bad_machine(format!("unknown dataType {other:?}"))),
        };
        let sad_mm: f64 = key("SAD")
            .ok_or_else(|| bad_machine("no SAD".into()))?
            .parse()
            .map_err(|_| bad_machine("SAD is not a number".into()))?;
        if sad_mm.is_nan() || sad_mm <= 0.0 {
            return Err(bad_machine(format!("SAD must be > 0 mm, got {sad_mm}")));
        }

        let et = Table::parse(energies_path, energies_csv)?;
        let (ce, cp, co, cs) = (
            et.column("energy_mev_u")?,
            et.column("peak_pos_mm")?,
            et.column("offset_mm")?,
            et.column("init_focus_sigma_mm_at_iso")?,
        );
        let mut energies = Vec::with_capacity(et.rows.len());
        for r in 0..et.rows.len() {
            let energy_mev_u = et.number(r, ce, f64::MIN_POSITIVE)?;
            if let Some(prev) = energies.last().map(|k: &EnergyKernel| k.energy_mev_u) {
                if energy_mev_u <= prev {
                    return Err(MachineError::BadCell {
                        path: energies_path.to_path_buf(),
                        line: et.rows[r].0,
                        column: "energy_mev_u".into(),
                        reason: format!("{energy_mev_u} not above the previous energy {prev}"),
                    });
                }
            }
            energies.push(EnergyKernel {
                energy_mev_u,
                peak_pos_mm: et.number(r, cp, 0.0)?,
                offset_mm: et.number(r, co, f64::NEG_INFINITY)?,
                sigma_initial_mm: et.number(r, cs, 0.0)?,
                depths_mm: Vec::new(),
                idd_mev_cm2_per_g: Vec::new(),
                sigma_water_mm: vec![Vec::new(); lateral.components()],
                weights: vec![Vec::new(); lateral.components() - 1],
            });
        }

        let dt = Table::parse(depth_path, depth_csv)?;
        let (de, dd, di) = (
            dt.column("energy_mev_u")?,
            dt.column("depth_mm")?,
            dt.column("idd_mev_cm2_per_g_per_ion")?,
        );
        let (sigma_cols, weight_cols): (Vec<usize>, Vec<usize>) = match lateral {
            LateralModel::Single => (vec![dt.column("sigma_mm")?], vec![]),
            LateralModel::Double => (
                vec![dt.column("sigma1_mm")?, dt.column("sigma2_mm")?],
                vec![dt.column("weight2")?],
            ),
            LateralModel::Multi => (
                vec![
                    dt.column("sigma_multi1_mm")?,
                    dt.column("sigma_multi2_mm")?,
                    dt.column("sigma_multi3_mm")?,
                ],
                vec![dt.column("weight_multi1")?, dt.column("weight_multi2")?],
            ),
        };
        let mut current: Option<usize> = None;
        for r in 0..dt.rows.len() {
            let e = dt.number(r, de, f64::MIN_POSITIVE)?;
            let line = dt.rows[r].0;
            let k = match current {
                Some(k) if energies[k].energy_mev_u == e => k,
                _ => {
                    let k = energies.iter().position(|k| k.energy_mev_u == e).ok_or_else(|| {
                        MachineError::BadCell {
                            path: depth_path.to_path_buf(),
                            line,
                            column: "energy_mev_u".into(),
                            reason: format!("energy {e} is not in {}", energies_path.display()),
                        }
                    })?;
                    if !energies[k].depths_mm.is_empty() {
                        return Err(MachineError::BadCell {
                            path: depth_path.to_path_buf(),
                            line,
                            column: "energy_mev_u".into(),
                            reason: format!("rows of energy {e} are not contiguous"),
                        });
                    }
                    current = Some(k);
                    k
                }
            };
            let depth = dt.number(r, dd, 0.0)?;
            let kern = &mut energies[k];
            if let Some(&prev) = kern.depths_mm.last() {
                if depth <= prev {
                    return Err(MachineError::BadCell {
                        path: depth_path.to_path_buf(),
                        line,
                        column: "depth_mm".into(),
                        reason: format!("depth {depth} not above the previous {prev}"),
                    });
                }
            }
            kern.depths_mm.push(depth);
            kern.idd_mev_cm2_per_g.push(dt.number(r, di, 0.0)?);
            for (c, &col) in sigma_cols.iter().enumerate() {
                kern.sigma_water_mm[c].push(dt.number(r, col, 0.0)?);
            }
            for (c, &col) in weight_cols.iter().enumerate() {
                let w = dt.number(r, col, 0.0)?;
                if w > 1.0 {
                    return Err(MachineError::BadCell {
                        path: depth_path.to_path_buf(),
                        line,
                        column: dt.header[col].to_string(),
                        reason: format!("weight {w} above 1"),
                    });
                }
                kern.weights[c].push(w);
            }
            let total: f64 = kern.weights.iter().map(|w| w[w.len() - 1]).sum();
            if total > 1.0 {
                return Err(MachineError::BadCell {
                    path: depth_path.to_path_buf(),
                    line,
                    column: dt.header[*weight_cols.last().unwrap_or(&di)].to_string(),
                    reason: format!("weights sum to {total} > 1"),
                });
            }
        }
        if let Some(k) = energies.iter().find(|k| k.depths_mm.len() < 2) {
            return Err(MachineError::BadTable {
                path: depth_path.to_path_buf(),
                reason: format!("energy {} MeV/u has fewer than 2 depths", k.energy_mev_u),
            });
        }
        if energies.is_empty() {
            return Err(MachineError::BadTable {
                path: energies_path.to_path_buf(),
                reason: "no energies".into(),
            });
        }
        Ok(IonMachine {
            ion,
            lateral,
            sad_mm,
            energies,
            source: depth_path.display().to_string(),
        })
    }

    /// 20Ne from 16O data by the scaling in the module docs: at equal energy per nucleon,
    /// depths × `s` and water sigmas × `s^1.5` with `s = (A/Z²)_Ne / (A/Z²)_O = 0.8`, IDD per
    /// ion × `(Z_Ne/Z_O)² = 1.5625`; weights, initial sigma and energies unchanged.
    pub fn neon_from_oxygen(oxygen: &IonMachine) -> Result<Self, MachineError> {
        if oxygen.ion != Ion::OXYGEN16 {
            return Err(MachineError::BadTable {
                path: PathBuf::from(&oxygen.source),
                reason: format!("neon is scaled from 16O data, got {}", oxygen.ion),
            });
        }
        let (ne, o) = (Ion::NEON20, Ion::OXYGEN16);
        let a_over_z2 = |i: Ion| f64::from(i.a) / (f64::from(i.z) * f64::from(i.z));
        let s = a_over_z2(ne) / a_over_z2(o);
        let idd = (f64::from(ne.z) / f64::from(o.z)).powi(2);
        let sig = s.powf(1.5);
        let energies = oxygen
            .energies
            .iter()
            .map(|k| EnergyKernel {
                energy_mev_u: k.energy_mev_u,
                peak_pos_mm: k.peak_pos_mm * s,
                offset_mm: k.offset_mm * s,
                sigma_initial_mm: k.sigma_initial_mm,
                depths_mm: k.depths_mm.iter().map(|d| d * s).collect(),
                idd_mev_cm2_per_g: k.idd_mev_cm2_per_g.iter().map(|v| v * idd).collect(),
                sigma_water_mm: k
                    .sigma_water_mm
                    .iter()
                    .map(|c| c.iter().map(|v| v * sig).collect())
                    .collect(),
                weights: k.weights.clone(),
            })
            .collect();
        Ok(IonMachine {
            ion: ne,
            lateral: oxygen.lateral,
            sad_mm: oxygen.sad_mm,
            energies,
            source: format!("20Ne scaled from 16O ({})", oxygen.source),
        })
    }

    /// The kernel index for `energy_mev_u`: the nearest tabulated energy, if within
    /// `tolerance_mev_u` (never interpolated between energies).
    pub fn energy_index(&self, energy_mev_u: f64, tolerance_mev_u: f64) -> Option<usize> {
        let k = self.energies.partition_point(|k| k.energy_mev_u < energy_mev_u);
        [k.checked_sub(1), (k < self.energies.len()).then_some(k)]
            .into_iter()
            .flatten()
            .map(|i| (i, (self.energies[i].energy_mev_u - energy_mev_u).abs()))
            .filter(|&(_, d)| d <= tolerance_mev_u)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "radiationMode: protons\ndataType: doubleGauss\nSAD: 10000\n";
    const ENERGIES: &str = "energy_mev_u,peak_pos_mm,offset_mm,init_focus_sigma_mm_at_iso\n70.0,40.0,0.0,5.0\n100.0,77.0,0.0,4.0\n";
    const DEPTHS: &str =
        "energy_mev_u,depth_mm,idd_mev_cm2_per_g_per_ion,sigma1_mm,sigma2_mm,weight2,let_kev_um\n\
        70.0,0.0,10,0,5,0.1,1\n70.0,1.0,11,0.1,5,0.1,1\n100.0,0.0,9,0,6,0.1,1\n100.0,2.0,9.5,0.1,6,0.1,1\n";

    fn load(machine: &str, energies: &str, depths: &str) -> Result<IonMachine, MachineError> {
        IonMachine::from_texts(
            Path::new("machine.txt"),
            machine,
            Path::new("energies.csv"),
            energies,
            Path::new("depth_dose.csv"),
            depths,
        )
    }

    #[test]
    fn loads_by_header_and_matches_energies_within_tolerance_only() {
        let m = load(MACHINE, ENERGIES, DEPTHS).unwrap();
        assert_eq!(
            (m.ion, m.lateral, m.sad_mm),
            (Ion::PROTON, LateralModel::Double, 10000.0)
        );
        assert_eq!(m.energies[1].depths_mm, vec![0.0, 2.0]);
        assert_eq!(m.energies[0].weights, vec![vec![0.1, 0.1]]);
        assert_eq!(m.energy_index(70.004, 0.01), Some(0));
        assert_eq!(m.energy_index(99.995, 0.01), Some(1));
        assert_eq!(m.energy_index(85.0, 0.01), None);
    }

    #[test]
    fn faults_name_file_line_and_column() {
        let e = load(
            MACHINE,
            ENERGIES,
            &DEPTHS.replace("100.0,2.0,9.5", "100.0,2.0,-1"),
        )
        .unwrap_err();
        assert!(
            matches!(&e, MachineError::BadCell { line: 5, column, .. } if column == "idd_mev_cm2_per_g_per_ion"),
            "{e}"
        );
        let e = load(MACHINE, ENERGIES, &DEPTHS.replace("sigma2_mm", "sigma_b")).unwrap_err();
        assert!(
            matches!(&e, MachineError::MissingColumn { column, .. } if column == "sigma2_mm"),
            "{e}"
        );
        let e = load(MACHINE, ENERGIES, &DEPTHS.replace("100.0,2.0", "100.0,0.0")).unwrap_err();
        assert!(
            matches!(&e, MachineError::BadCell { line: 5, column, .. } if column == "depth_mm"),
            "{e}"
        );
        let e = load(
            MACHINE,
            ENERGIES,
            &DEPTHS.replace("100.0,0.0,9,0,6,0.1", "100.0,0.0,9,0,6,1.5"),
        )
        .unwrap_err();
        assert!(
            matches!(&e, MachineError::BadCell { line: 4, column, .. } if column == "weight2"),
            "{e}"
        );
        let e = load(&MACHINE.replace("protons", "pions"), ENERGIES, DEPTHS).unwrap_err();
        assert!(e.to_string().contains("machine.txt"), "{e}");
        let e = load(MACHINE, ENERGIES, &DEPTHS.replace("100.0,2.0", "120.0,2.0")).unwrap_err();
        assert!(matches!(&e, MachineError::BadCell { line: 5, .. }), "{e}");
    }

    #[test]
    fn neon_scales_oxygen_depths_idd_and_sigmas() {
        let o = load(
            "radiationMode: oxygen\ndataType: singleGauss\nSAD: 10000\n",
            "energy_mev_u,peak_pos_mm,offset_mm,init_focus_sigma_mm_at_iso\n200.0,60.0,0.0,3.0\n",
            "energy_mev_u,depth_mm,idd_mev_cm2_per_g_per_ion,sigma_mm\n200.0,0.0,100,0\n200.0,10.0,200,1.0\n",
        )
        .unwrap();
        let ne = IonMachine::neon_from_oxygen(&o).unwrap();
        let k = &ne.energies[0];
        assert_eq!(ne.ion, Ion::NEON20);
        assert!((k.depths_mm[1] - 8.0).abs() < 1e-12 && (k.peak_pos_mm - 48.0).abs() < 1e-12);
        assert!((k.idd_mev_cm2_per_g[1] - 312.5).abs() < 1e-9);
        assert!((k.sigma_water_mm[0][1] - 0.8f64.powf(1.5)).abs() < 1e-12);
        assert_eq!(k.sigma_initial_mm, 3.0);
        assert!(IonMachine::neon_from_oxygen(&ne).is_err());
    }
}
