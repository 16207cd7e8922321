//! The kernels' speed budgets: criterion's latest estimate of each bench named in
//! `benches/budgets.toml` (`[benches]`) against its limit.
//!
//! Criterion writes, for a bench `group/function` (or a bare `function`), its latest run's
//! statistics to `<criterion dir>/group/function/new/estimates.json`: `mean`, `median`, …,
//! each with a `point_estimate` in nanoseconds. The budget names the statistic it limits
//! (median by default: one slow sample moves a median least) and the limit in ms. A bench
//! that has no estimate is a breach, not a pass: a budget nobody measured promises nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::GateLine;

/// Which of criterion's statistics a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// The median of the samples' per-iteration times.
    #[default]
    Median,
    /// Their mean.
    Mean,
}

impl Statistic {
    fn key(self) -> &'static str {
        match self {
            Statistic::Median => "median",
            Statistic::Mean => "mean",
        }
    }
}

/// One bench's budget.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BenchBudget {
    /// At most this, ms.
    pub max_ms: f64,
    /// The statistic limited (`median` when absent).
    #[serde(default)]
    pub statistic: Statistic,
    /// What the budget stands for (the issue or promise it comes from).
    #[serde(default)]
    pub why: String,
}

/// Why a bench's estimate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// No estimate file: the bench was not run (or under another name).
    #[error("{path}: no estimate (run `cargo bench` for this bench first)")]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not criterion's estimates.
    #[error("{path}: not criterion estimates: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Criterion's latest estimate of `statistic` for bench `id`, ms.
pub fn read_estimate_ms(criterion_dir: &Path, id: &str, statistic: Statistic) -> Result<f64, EstimateError> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EstimateError::Missing { path }),
        Err(source) => return Err(EstimateError::Io { path, source }),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| EstimateError::Malformed {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let ns = json
        .get(statistic.key())
        .and_then(|s| s.get("point_estimate"))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| EstimateError::Malformed {
            path: path.clone(),
            reason: format!("no {}.point_estimate", statistic.key()),
        })?;
    if !(ns.is_finite() && ns >= 0.0) {
        return Err(EstimateError::Malformed {
            path,
            reason: format!("{}.point_estimate is {ns}", statistic.key()),
        });
    }
    Ok(ns / 1e6)
}

/// One line per budget, in the budgets' order; a bench without a readable estimate is a
/// failed line with `measured` NaN and the reason in `errors`.
pub fn check_benches(
    budgets: &BTreeMap<String, BenchBudget>,
    criterion_dir: &Path,
) -> (Vec<GateLine>, Vec<EstimateError>) {
    let mut lines = Vec::with_capacity(budgets.len());
    let mut errors = Vec::new();
    for (id, budget) in budgets {
        let quantity = format!("{id} ({} ms)", budget.statistic.key());
        match read_estimate_ms(criterion_dir, id, budget.statistic) {
            Ok(measured) => lines.push(GateLine {
                quantity,
                budget: budget.max_ms,
                measured,
                ratio: measured / budget.max_ms,
                pass: measured <= budget.max_ms,
            }),
            Err(e) => {
                lines.push(GateLine {
                    quantity,
                    budget: budget.max_ms,
                    measured: f64::NAN,
                    ratio: f64::NAN,
                    pass: false,
                });
                errors.push(e);
            }
        }
    }
    (lines, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimates(dir: &Path, id: &str, mean_ns: f64, median_ns: f64) {
        let d = dir.join(id).join("new");
        std::fs::create_dir_all(&d).unwrap();
        // The shape criterion 0.5 writes (fields it has that the check ignores included).
        let json = format!(
            r#"{{"mean":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},"point_estimate":{mean_ns},"standard_error":1.0}},"median":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},"point_estimate":{median_ns},"standard_error":1.0}},"median_abs_dev":null,"slope":null,"std_dev":null}}"#
        );
        std::fs::write(d.join("estimates.json"), json).unwrap();
    }

    #[test]
    fn budgets_pass_fail_and_a_missing_estimate_fails() {
        let dir = tempfile::tempdir().unwrap();
        estimates(dir.path(), "dose/plan", 520e6, 480e6);
        estimates(dir.path(), "register_warm", 2.5e6, 2.4e6);
        let budgets: BTreeMap<String, BenchBudget> = toml::from_str(
            r#"
            "dose/plan" = { max_ms = 500.0 }
            "dose/plan_mean" = { max_ms = 500.0, statistic = "mean" }
            "register_warm" = { max_ms = 2.0, statistic = "mean" }
            "#,
        )
        .unwrap();
        let (lines, errors) = check_benches(&budgets, dir.path());
        let by = |q: &str| lines.iter().find(|l| l.quantity.starts_with(q)).unwrap().clone();
        // The median 480 ms is within 500; the same bench's mean (520) would not be.
        assert!(by("dose/plan (median").pass);
        assert!((by("dose/plan (median").measured - 480.0).abs() < 1e-9);
        assert!(!by("register_warm").pass);
        assert!((by("register_warm").ratio - 1.25).abs() < 1e-9);
        // No estimate under that name: failed, and said why.
        assert!(!by("dose/plan_mean").pass);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("dose/plan_mean"), "{}", errors[0]);
    }

    #[test]
    fn a_file_that_is_not_criterion_estimates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("b").join("new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("estimates.json"), r#"{"mean":{"point_estimate":"fast"}}"#).unwrap();
        let e = read_estimate_ms(dir.path(), "b", Statistic::Mean).unwrap_err();
        assert!(matches!(e, EstimateError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("mean.point_estimate"), "{e}");
        std::fs::write(d.join("estimates.json"), "not json").unwrap();
        assert!(matches!(
            read_estimate_ms(dir.path(), "b", Statistic::Mean),
            Err(EstimateError::Malformed { .. })
        ));
    }

    #[test]
    fn the_repository_budgets_name_benches_that_exist() {
        // Every [benches] id must be one a bench in benches/ defines, or the gate could only
        // ever fail on it: the bench sources are searched for its function name.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let budgets = super::super::Budgets::load(&root.join("benches/budgets.toml")).unwrap();
        assert!(!budgets.benches.is_empty());
        let mut sources = String::new();
        for dir in ["benches", "sim/benches"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let p = entry.unwrap().path();
                if p.extension().is_some_and(|e| e == "rs") {
                    sources.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        // String literals of the sources, `{…}` placeholders as wildcards (ids built with
        // format!, e.g. `register_warm_…_roi{roi_mm}mm_t{threads}`).
        let literals: Vec<Vec<&str>> = sources
            .split('"')
            .skip(1)
            .step_by(2)
            .map(|lit| {
                let mut parts = Vec::new();
                let mut rest = lit;
                while let Some(open) = rest.find('{') {
                    parts.push(&rest[..open]);
                    rest = rest[open..]
                        .find('}')
                        .map_or("", |close| &rest[open + close + 1..]);
                }
                parts.push(rest);
                parts
            })
            .collect();
        let matches = |name: &str, parts: &[&str]| {
            let (first, last) = (parts[0], parts[parts.len() - 1]);
            if parts.len() == 1 {
                return name == first;
            }
            if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
                return false;
            }
            let mut rest = &name[first.len()..name.len() - last.len()];
            for part in &parts[1..parts.len() - 1] {
                match rest.find(part) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
            true
        };
        for id in budgets.benches.keys() {
            for name in id.split('/') {
                assert!(
                    literals.iter().any(|parts| matches(name, parts)),
                    "budget {id}: no bench in benches/ or sim/benches/ is named {name}"
                );
            }
            assert!(budgets.benches[id].max_ms > 0.0);
        }
    }
}
