//! HU → relative stopping power (RSP) calibration.
//!
//! A piecewise-linear curve through `(hu, rsp)` points, clamped outside its end points, read
//! from CSV (`hu,rsp` header, one point a line, `#` comments allowed) or TOML:
//!
//! ```toml
//! [[point]]
//! hu = -1024
//! rsp = 0.001
//! [[point]]
//! hu = 3000
//! rsp = 2.505
//! ```
//!
//! The default is matRad's generic table. For the hot path the curve is expanded once into a
//! dense `i16 → f32` lookup (65 536 entries, 256 kB), so a CT frame becomes an RSP volume with
//! one table load per voxel.

use std::path::Path;

use serde::Deserialize;

use super::RangeError;
use crate::units::Hu;
use crate::volume::{CtVolume, Volume};

/// matRad's generic HU → RSP points (`matRad_default.hlut`).
pub const MATRAD_GENERIC: [(f64, f64); 8] = [
    (-1024.0, 0.001),
    (-999.0, 0.001),
    (-90.0, 0.95),
    (-45.0, 0.99),
    (0.0, 1.0),
    (100.0, 1.095),
    (350.0, 1.199),
    (3000.0, 2.505),
];

/// The HU span every calibration must cover.
pub const REQUIRED_HU_SPAN: (f64, f64) = (-1024.0, 3000.0);

/// A validated HU → RSP curve with its dense lookup.
#[derive(Debug, Clone)]
pub struct Hlut {
    points: Vec<(f64, f64)>,
    /// `lut[hu as i32 + 32768]`.
    lut: Vec<f32>,
}

impl PartialEq for Hlut {
    fn eq(&self, other: &Self) -> bool {
        self.points == other.points
    }
}

impl Default for Hlut {
    fn default() -> Self {
        // The built-in table satisfies every check, so this cannot fail.
        Hlut::from_points(MATRAD_GENERIC.to_vec(), Path::new("<matRad generic>"))
            .unwrap_or_else(|_| unreachable!("built-in table is valid"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlHlut {
    point: Vec<TomlPoint>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlPoint {
    hu: f64,
    rsp: f64,
}

impl Hlut {
    /// matRad's generic table.
    pub fn matrad_generic() -> Self {
        Hlut::default()
    }

    /// Validates points (`source` names them in errors): finite, HU strictly increasing,
    /// RSP ≥ 0, covering HU −1024…3000.
    pub fn from_points(points: Vec<(f64, f64)>, source: &Path) -> Result<Self, RangeError> {
        let bad = |row: usize, reason: String| RangeError::BadTable {
            path: source.to_path_buf(),
            row,
            reason,
        };
        if points.len() < 2 {
            return Err(bad(0, format!("needs at least 2 points, got {}", points.len())));
        }
        for (n, &(hu, rsp)) in points.iter().enumerate() {
            let row = n + 1;
            if !hu.is_finite() || !rsp.is_finite() {
                return Err(bad(row, format!("non-finite point hu={hu} rsp={rsp}")));
            }
            if rsp < 0.0 {
                return Err(bad(row, format!("negative RSP {rsp} at HU {hu}")));
            }
            if n > 0 && hu <= points[n - 1].0 {
                return Err(bad(
                    row,
                    format!("HU {hu} not strictly greater than previous {}", points[n - 1].0),
                ));
            }
        }
        let (lo, hi) = (points[0].0, points[points.len() - 1].0);
        if lo > REQUIRED_HU_SPAN.0 || hi < REQUIRED_HU_SPAN.1 {
            return Err(bad(
                0,
                format!(
                    "covers HU {lo}…{hi}, must cover {}…{}",
                    REQUIRED_HU_SPAN.0, REQUIRED_HU_SPAN.1
                ),
            ));
        }
        let mut h = Hlut {
            points,
            lut: Vec::new(),
        };
        h.lut = (i16::MIN as i32..=i16::MAX as i32)
            .map(|hu| h.rsp(hu as f64) as f32)
            .collect();
        Ok(h)
    }

    /// Reads a CSV (`.csv`, or anything not `.toml`) or TOML (`.toml`) table.
    pub fn from_file(path: &Path) -> Result<Self, RangeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RangeError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            Self::from_toml_str(&text, path)
        } else {
            Self::from_csv_str(&text, path)
        }
    }

    /// Parses TOML text (`[[point]] hu = .. rsp = ..`).
    pub fn from_toml_str(text: &str, source: &Path) -> Result<Self, RangeError> {
        let t: TomlHlut = toml::from_str(text).map_err(|e| RangeError::BadTable {
            path: source.to_path_buf(),
            row: 0,
            reason: format!("TOML: {}", e.message()),
        })?;
        Self::from_points(t.point.into_iter().map(|p| (p.hu, p.rsp)).collect(), source)
    }

    /// Parses CSV text with a `hu,rsp` header; `#` lines and blank lines are skipped.
    /// Row numbers in errors are file line numbers.
    pub fn from_csv_str(text: &str, source: &Path) -> Result<Self, RangeError> {
        let bad = |row: usize, reason: String| RangeError::BadTable {
            path: source.to_path_buf(),
            row,
            reason,
        };
        let mut points = Vec::new();
        let mut header_seen = false;
        let mut lines = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if !header_seen {
                let cols: Vec<String> = l.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
                if cols.len() != 2 || cols[0] != "hu" || cols[1] != "rsp" {
                    return Err(bad(n + 1, format!("expected header `hu,rsp`, got {l:?}")));
                }
                header_seen = true;
                continue;
            }
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            if cols.len() != 2 {
                return Err(bad(n + 1, format!("expected 2 columns, got {}", cols.len())));
            }
            let parse = |s: &str, what: &str| {
                s.parse::<f64>()
                    .map_err(|e| bad(n + 1, format!("{what} {s:?} is not a number: {e}")))
            };
            points.push((parse(cols[0], "hu")?, parse(cols[1], "rsp")?));
            lines.push(n + 1);
        }
        if !header_seen {
            return Err(bad(0, "empty table: expected header `hu,rsp`".into()));
        }
        // Re-map point-index errors to file lines.
        Self::from_points(points, source).map_err(|e| match e {
            RangeError::BadTable { path, row, reason } if row > 0 => RangeError::BadTable {
                path,
                row: lines.get(row - 1).copied().unwrap_or(row),
                reason,
            },
            other => other,
        })
    }

    /// The calibration points.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// RSP at a (possibly fractional) HU: linear between points, clamped outside.
    pub fn rsp(&self, hu: f64) -> f64 {
        let p = &self.points;
        if hu <= p[0].0 {
            return p[0].1;
        }
        let last = p[p.len() - 1];
        if hu >= last.0 {
            return last.1;
        }
        let k = p.partition_point(|q| q.0 <= hu);
        let (a, b) = (p[k - 1], p[k]);
        a.1 + (b.1 - a.1) * (hu - a.0) / (b.0 - a.0)
    }

    /// The dense lookup, indexed by `hu + 32768` (equivalently `hu as u16 ^ 0x8000`).
    pub(crate) fn dense_lut(&self) -> &[f32; 65536] {
        self.lut
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("built with one entry per i16"))
    }

    /// RSP of an integer HU from the dense lookup.
    #[inline]
    pub fn rsp_of(&self, hu: Hu) -> f32 {
        self.lut[(hu as i32 + 32768) as usize]
    }

    /// Converts a CT frame into an RSP volume on the same grid.
    pub fn convert(&self, ct: &CtVolume) -> Volume<f32> {
        let mut out = Volume::filled(ct.grid().clone(), 0.0f32);
        self.convert_into(ct, &mut out);
        out
    }

    /// Converts into a preallocated volume (reused per frame). `out`'s grid is replaced by
    /// `ct`'s if their dims differ the buffer is reallocated once.
    pub fn convert_into(&self, ct: &CtVolume, out: &mut Volume<f32>) {
        if out.grid() != ct.grid() {
            *out = Volume::filled(ct.grid().clone(), 0.0f32);
        }
        // A fixed-size table indexed by a u16 needs no bounds check per voxel.
        let lut = self.dense_lut();
        for (o, &hu) in out.as_slice_mut().iter_mut().zip(ct.as_slice()) {
            *o = lut[usize::from(hu as u16 ^ 0x8000)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_matrad_points_and_interpolates() {
        let h = Hlut::default();
        assert_eq!(h.rsp(0.0), 1.0);
        assert_eq!(h.rsp(-2000.0), 0.001);
        assert_eq!(h.rsp(5000.0), 2.505);
        assert!((h.rsp(50.0) - 1.0475).abs() < 1e-12);
        assert!((h.rsp_of(-45) - 0.99).abs() < 1e-6);
        assert!((h.rsp_of(i16::MAX) - 2.505).abs() < 1e-6);
    }

    #[test]
    fn csv_and_toml_round_trip_and_errors_name_the_row() {
        let p = Path::new("t.csv");
        let ok = "# c\nhu,rsp\n-1024,0.001\n0,1\n3000,2.5\n";
        let h = Hlut::from_csv_str(ok, p).unwrap();
        assert_eq!(h.points().len(), 3);
        let dup = "hu,rsp\n-1024,0.001\n0,1\n0,1.1\n3000,2.5\n";
        match Hlut::from_csv_str(dup, p) {
            Err(RangeError::BadTable { row, .. }) => assert_eq!(row, 4),
            other => panic!("{other:?}"),
        }
        let neg = "hu,rsp\n-1024,-0.1\n3000,2.5\n";
        assert!(matches!(
            Hlut::from_csv_str(neg, p),
            Err(RangeError::BadTable { row: 2, .. })
        ));
        let short = "hu,rsp\n-1000,0.001\n3000,2.5\n";
        assert!(matches!(
            Hlut::from_csv_str(short, p),
            Err(RangeError::BadTable { row: 0, .. })
        ));
        let nan = "hu,rsp\n-1024,NaN\n3000,2.5\n";
        assert!(Hlut::from_csv_str(nan, p).is_err());
        let toml = "[[point]]\nhu = -1024\nrsp = 0.001\n[[point]]\nhu = 3000\nrsp = 2.505\n";
        let t = Hlut::from_toml_str(toml, Path::new("t.toml")).unwrap();
        assert!((t.rsp(988.0) - (0.001 + 2.504 * 0.5)).abs() < 1e-12);
    }
}
