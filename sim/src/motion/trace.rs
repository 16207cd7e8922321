//! Breathing traces: reading recorded marker motion, resampling it to a frame rate and
//! mapping it to a tumor displacement per frame.
//!
//! Two input formats: the ExtMarker recordings (`"Frame";"Timestamp";"x";"y";"z"`,
//! `;`-separated, comma decimals, milliseconds, a trailing all-zero end row) and a plain CSV
//! `t_s,x_mm,y_mm,z_mm` with a header. A surface marker moves mostly along one direction
//! that is not the tumor's, so the tumor model keeps only the breathing signal — the
//! projection on the principal axis of the marker positions — and scales it per patient
//! axis ([`super::tumor::TumorMotionModel`]).
//!
//! Recorded timestamps glitch (a row whose time falls back while the frame counter goes on):
//! every file is checked and repaired by the rules of [`ionguide::surrogate`] — the same the
//! live surrogate stream uses — and each repair, drop or gap is a [`TraceWarning`] naming its
//! line, logged with `tracing::warn!` and returned by the `*_checked` readers. Only a mostly
//! broken file is refused.

use std::fmt;
use std::path::{Path, PathBuf};

use ionguide::surrogate::{self, RepairLimits, SurrogateError, SurrogateSample, SurrogateWarning};
use nalgebra::{Matrix3, SymmetricEigen, Vector3};

/// Why a trace cannot be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MotionError {
    /// The file cannot be read.
    #[error("{path}: cannot read", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The header line is missing or not the expected one.
    #[error("{path}:{line}: expected header {expected}, found {found:?}", path = path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the header should look like.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A data row is malformed.
    #[error("{path}:{line}: {reason}", path = path.display())]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Time does not increase from one row to the next.
    #[error("{path}:{line}: time {t_s} s does not increase after {previous_t_s} s", path = path.display())]
    NonMonotonicTime {
        /// The file (`<memory>` for a trace built in code).
        path: PathBuf,
        /// 1-based line number (sample index + 1 for a trace built in code).
        line: usize,
        /// Time of this row, s.
        t_s: f64,
        /// Time of the previous row, s.
        previous_t_s: f64,
    },
    /// Too few samples for what was asked.
    #[error("trace has {samples} samples, {needed} needed: {what}")]
    TooShort {
        /// Samples in the trace.
        samples: usize,
        /// Samples needed.
        needed: usize,
        /// What needed them.
        what: &'static str,
    },
    /// A parameter is out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    BadParameter {
        /// Parameter name.
        name: &'static str,
        /// Its value.
        value: f64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Too many rows had to be repaired or dropped (or too few were left) to trust the file.
    #[error("{path}: {source}", path = path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What the repair rules found.
        #[source]
        source: SurrogateError,
    },
    /// Time and position vectors differ in length.
    #[error("trace has {times} times but {positions} positions")]
    LengthMismatch {
        /// Number of times.
        times: usize,
        /// Number of positions.
        positions: usize,
    },
}

/// A sampled 3D marker (or tumor) trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Sample times, s, strictly increasing.
    pub t_s: Vec<f64>,
    /// Positions, mm, one per time.
    pub pos_mm: Vec<[f64; 3]>,
}

const MEMORY: &str = "<memory>";

/// A repair, drop or gap in a trace file, with the line it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceWarning {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number of the row.
    pub line: usize,
    /// What was done or found.
    pub warning: SurrogateWarning,
}

impl fmt::Display for TraceWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.warning)
    }
}

/// A trace read from a file, with what its reader repaired or found.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTrace {
    /// The usable trace (times strictly increasing).
    pub trace: Trace,
    /// Every repair, drop and gap, in file order.
    pub warnings: Vec<TraceWarning>,
}

/// Runs the repair rules over parsed rows (`lines[k]` is sample k's line), logs each warning
/// and builds the trace.
fn checked(samples: &[SurrogateSample], lines: &[usize], source: &Path) -> Result<LoadedTrace, MotionError> {
    let repaired = surrogate::repair(samples, &RepairLimits::default()).map_err(|e| match e {
        SurrogateError::TooShort { usable, .. } => MotionError::TooShort {
            samples: usable,
            needed: 2,
            what: "a recording",
        },
        e => MotionError::Unusable {
            path: source.to_path_buf(),
            source: e,
        },
    })?;
    let warnings: Vec<TraceWarning> = repaired
        .warnings
        .into_iter()
        .map(|warning| TraceWarning {
            path: source.to_path_buf(),
            line: lines[warning.index()],
            warning,
        })
        .collect();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(LoadedTrace {
        trace: Trace {
            t_s: repaired.samples.iter().map(|s| s.t_s).collect(),
            pos_mm: repaired.samples.iter().map(|s| s.pos_mm).collect(),
        },
        warnings,
    })
}

impl Trace {
    /// Checks lengths, finiteness and strictly increasing time.
    pub fn validate(&self) -> Result<(), MotionError> {
        if self.t_s.len() != self.pos_mm.len() {
            return Err(MotionError::LengthMismatch {
                times: self.t_s.len(),
                positions: self.pos_mm.len(),
            });
        }
        for (n, (t, p)) in self.t_s.iter().zip(&self.pos_mm).enumerate() {
            if !t.is_finite() || !p.iter().all(|v| v.is_finite()) {
                return Err(MotionError::BadRow {
                    path: PathBuf::from(MEMORY),
                    line: n + 1,
                    reason: format!("non-finite sample t = {t}, position = {p:?}"),
                });
            }
            if n > 0 && *t <= self.t_s[n - 1] {
                return Err(MotionError::NonMonotonicTime {
                    path: PathBuf::from(MEMORY),
                    line: n + 1,
                    t_s: *t,
                    previous_t_s: self.t_s[n - 1],
                });
            }
        }
        Ok(())
    }

    /// Duration from first to last sample, s (0 for fewer than two samples).
    pub fn duration_s(&self) -> f64 {
        match (self.t_s.first(), self.t_s.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }

    /// Resamples at `rate_hz` by linear interpolation, from the first sample to the last
    /// (times restart at 0 s). Needs at least two samples and strictly increasing time.
    pub fn resample(&self, rate_hz: f64) -> Result<Trace, MotionError> {
        if !(rate_hz.is_finite() && rate_hz > 0.0) {
            return Err(MotionError::BadParameter {
                name: "rate_hz",
                value: rate_hz,
                reason: "must be finite and > 0",
            });
        }
        self.validate()?;
        if self.t_s.len() < 2 {
            return Err(MotionError::TooShort {
                samples: self.t_s.len(),
                needed: 2,
                what: "resampling",
            });
        }
        let t0 = self.t_s[0];
        let span = self.duration_s();
        // The tiny epsilon keeps the last sample when the span is an exact multiple of the
        // period but rounding puts n·dt a hair beyond it.
        let n = (span * rate_hz + 1e-9).floor() as usize + 1;
        let mut t_s = Vec::with_capacity(n);
        let mut pos_mm = Vec::with_capacity(n);
        let mut seg = 0;
        for i in 0..n {
            let t = (t0 + i as f64 / rate_hz).min(t0 + span);
            while seg + 2 < self.t_s.len() && self.t_s[seg + 1] < t {
                seg += 1;
            }
            let (ta, tb) = (self.t_s[seg], self.t_s[seg + 1]);
            let f = ((t - ta) / (tb - ta)).clamp(0.0, 1.0);
            let (a, b) = (self.pos_mm[seg], self.pos_mm[seg + 1]);
            t_s.push(t - t0);
            pos_mm.push([
                a[0] + f * (b[0] - a[0]),
                a[1] + f * (b[1] - a[1]),
                a[2] + f * (b[2] - a[2]),
            ]);
        }
        Ok(Trace { t_s, pos_mm })
    }

    /// The breathing signal: positions projected on their principal axis (largest
    /// variance), mean removed, mm. The axis sign is chosen so that end-exhale — where
    /// breathing dwells longest, hence the side the median lies on — is the low end.
    /// Needs at least three samples.
    pub fn breathing_signal_mm(&self) -> Result<Vec<f64>, MotionError> {
        self.validate()?;
        let n = self.pos_mm.len();
        if n < 3 {
            return Err(MotionError::TooShort {
                samples: n,
                needed: 3,
                what: "principal axis",
            });
        }
        let mut mean = Vector3::zeros();
        for p in &self.pos_mm {
            mean += Vector3::from(*p);
        }
        mean /= n as f64;
        let mut cov = Matrix3::zeros();
        for p in &self.pos_mm {
            let d = Vector3::from(*p) - mean;
            cov += d * d.transpose();
        }
        cov /= n as f64;
        let eig = SymmetricEigen::new(cov);
        let mut best = 0;
        for i in 1..3 {
            if eig.eigenvalues[i] > eig.eigenvalues[best] {
                best = i;
            }
        }
        let axis = eig.eigenvectors.column(best).into_owned();
        let mut s: Vec<f64> = self
            .pos_mm
            .iter()
            .map(|p| (Vector3::from(*p) - mean).dot(&axis))
            .collect();
        let mut sorted = s.clone();
        sorted.sort_by(f64::total_cmp);
        let (lo, hi, med) = (sorted[0], sorted[n - 1], sorted[n / 2]);
        if hi - med < med - lo {
            s.iter_mut().for_each(|v| *v = -*v);
        }
        Ok(s)
    }
}

fn read_text(path: &Path) -> Result<String, MotionError> {
    std::fs::read_to_string(path).map_err(|source| MotionError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an ExtMarker recording (repairs logged, see [`read_extmarker_checked`]).
pub fn read_extmarker(path: impl AsRef<Path>) -> Result<Trace, MotionError> {
    read_extmarker_checked(path).map(|l| l.trace)
}

/// Reads an ExtMarker recording, returning the repairs with the trace.
pub fn read_extmarker_checked(path: impl AsRef<Path>) -> Result<LoadedTrace, MotionError> {
    let path = path.as_ref();
    parse_extmarker_checked(&read_text(path)?, path)
}

/// Parses ExtMarker text (repairs logged, see [`parse_extmarker_checked`]).
pub fn parse_extmarker(text: &str, source: &Path) -> Result<Trace, MotionError> {
    parse_extmarker_checked(text, source).map(|l| l.trace)
}

/// Parses ExtMarker text; `source` names it in errors and warnings. The all-zero end row is
/// skipped only as the last data row; anywhere else it is a bad row. The frame counter must
/// be a non-negative whole number: it is what repairs the timestamps.
pub fn parse_extmarker_checked(text: &str, source: &Path) -> Result<LoadedTrace, MotionError> {
    const HEADER: &str = r#""Frame";"Timestamp";"x";"y";"z""#;
    let mut lines = text.lines().enumerate();
    let bad_header = |line: usize, found: &str| MotionError::BadHeader {
        path: source.to_path_buf(),
        line,
        expected: HEADER,
        found: found.to_string(),
    };
    match lines.next() {
        Some((_, h)) if h.trim().replace(' ', "").eq_ignore_ascii_case(HEADER) => {}
        Some((_, h)) => return Err(bad_header(1, h.trim())),
        None => return Err(bad_header(1, "")),
    }
    let rows: Vec<(usize, &str)> = lines
        .map(|(n, l)| (n + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut samples = Vec::with_capacity(rows.len());
    let mut sample_lines = Vec::with_capacity(rows.len());
    for (idx, (line, row)) in rows.iter().enumerate() {
        let bad = |reason: String| MotionError::BadRow {
            path: source.to_path_buf(),
            line: *line,
            reason,
        };
        let fields: Vec<&str> = row.split(';').map(str::trim).collect();
        if fields.len() != 5 {
            return Err(bad(format!(
                "expected 5 ';'-separated fields, found {}",
                fields.len()
            )));
        }
        let mut v = [0.0f64; 5];
        for (slot, (name, f)) in v
            .iter_mut()
            .zip(["Frame", "Timestamp", "x", "y", "z"].iter().zip(&fields))
        {
            *slot = f
                .replace(',', ".")
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{name} is not a number: {f:?}")))?;
        }
        if v.iter().all(|x| *x == 0.0) {
            if idx + 1 == rows.len() {
                break;
            }
            return Err(bad("all-zero end-marker row before the end of the data".into()));
        }
        if v[0] < 0.0 || v[0].fract() != 0.0 || v[0] > u32::MAX as f64 {
            return Err(bad(format!("Frame is not a frame counter: {:?}", fields[0])));
        }
        samples.push(SurrogateSample {
            frame: Some(v[0] as u64),
            t_s: v[1] / 1000.0,
            pos_mm: [v[2], v[3], v[4]],
        });
        sample_lines.push(*line);
    }
    if samples.len() < 2 {
        return Err(MotionError::TooShort {
            samples: samples.len(),
            needed: 2,
            what: "a recording",
        });
    }
    checked(&samples, &sample_lines, source)
}

/// Reads a plain CSV trace `t_s,x_mm,y_mm,z_mm` (header required; repairs logged).
pub fn read_csv_trace(path: impl AsRef<Path>) -> Result<Trace, MotionError> {
    read_csv_trace_checked(path).map(|l| l.trace)
}

/// Reads a plain CSV trace, returning the repairs with the trace.
pub fn read_csv_trace_checked(path: impl AsRef<Path>) -> Result<LoadedTrace, MotionError> {
    let path = path.as_ref();
    parse_csv_trace_checked(&read_text(path)?, path)
}

/// Parses a plain CSV trace (repairs logged, see [`parse_csv_trace_checked`]).
pub fn parse_csv_trace(text: &str, source: &Path) -> Result<Trace, MotionError> {
    parse_csv_trace_checked(text, source).map(|l| l.trace)
}

/// Parses a plain CSV trace; `source` names it in errors and warnings. Without a frame
/// counter a glitching time cannot be rebuilt: such rows are dropped, never guessed.
pub fn parse_csv_trace_checked(text: &str, source: &Path) -> Result<LoadedTrace, MotionError> {
    const HEADER: &str = "t_s,x_mm,y_mm,z_mm";
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim().replace(' ', "") == HEADER => {}
        other => {
            return Err(MotionError::BadHeader {
                path: source.to_path_buf(),
                line: 1,
                expected: HEADER,
                found: other.map_or(String::new(), |(_, h)| h.trim().to_string()),
            })
        }
    }
    let mut samples = Vec::new();
    let mut sample_lines = Vec::new();
    for (n, row) in lines {
        let line = n + 1;
        let row = row.trim();
        if row.is_empty() {
            continue;
        }
        let bad = |reason: String| MotionError::BadRow {
            path: source.to_path_buf(),
            line,
            reason,
        };
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != 4 {
            return Err(bad(format!(
                "expected 4 ','-separated fields, found {}",
                fields.len()
            )));
        }
        let mut v = [0.0f64; 4];
        for (slot, (name, f)) in v
            .iter_mut()
            .zip(["t_s", "x_mm", "y_mm", "z_mm"].iter().zip(&fields))
        {
            *slot = f
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{name} is not a number: {f:?}")))?;
        }
        samples.push(SurrogateSample {
            frame: None,
            t_s: v[0],
            pos_mm: [v[1], v[2], v[3]],
        });
        sample_lines.push(line);
    }
    if samples.len() < 2 {
        return Err(MotionError::TooShort {
            samples: samples.len(),
            needed: 2,
            what: "a recording",
        });
    }
    checked(&samples, &sample_lines, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resample_interpolates_linearly() {
        let tr = Trace {
            t_s: vec![0.0, 1.0, 3.0],
            pos_mm: vec![[0.0; 3], [10.0, 0.0, -2.0], [30.0, 4.0, 0.0]],
        };
        let r = tr.resample(2.0).unwrap();
        assert_eq!(r.t_s, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        assert_eq!(r.pos_mm[1], [5.0, 0.0, -1.0]);
        assert_eq!(r.pos_mm[4], [20.0, 2.0, -1.0]);
        assert_eq!(r.pos_mm[6], [30.0, 4.0, 0.0]);
    }

    #[test]
    fn resample_refuses_short_and_unordered() {
        let one = Trace {
            t_s: vec![0.0],
            pos_mm: vec![[0.0; 3]],
        };
        assert!(matches!(one.resample(10.0), Err(MotionError::TooShort { .. })));
        let back = Trace {
            t_s: vec![0.0, 2.0, 1.0],
            pos_mm: vec![[0.0; 3]; 3],
        };
        assert!(matches!(
            back.resample(10.0),
            Err(MotionError::NonMonotonicTime { line: 3, .. })
        ));
        let ok = Trace {
            t_s: vec![0.0, 1.0],
            pos_mm: vec![[0.0; 3]; 2],
        };
        assert!(matches!(ok.resample(0.0), Err(MotionError::BadParameter { .. })));
    }
}
