//! The replay report: `report.json` (the keys the release gate and a physicist read), a
//! per-frame CSV, SVG plots (trajectory, residual error, latency histogram, beam timeline)
//! and a one-page HTML summary that links them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scoring::histogram::Quantiles;
use crate::scoring::FrameScore;

mod html;
mod plots;

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was replayed (phantom name or CT folder, and the trace).
    pub scenario: String,
    /// `tracking`, or `no_correction` (planned spots passed through).
    pub mode: &'static str,
    /// Frames sent into the pipeline.
    pub frames: u64,
    /// Frames that ended in corrections.
    pub corrected: u64,
    /// Frames that ended in a hold.
    pub held: u64,
    /// Frames refused on input.
    pub rejected: u64,
    /// Frames overtaken by newer ones.
    pub dropped: u64,
    /// Corrections that left after their deadline (must be 0).
    pub stale_corrections: u64,
    /// Correction sets the controller refused because they arrived past their validity.
    pub controller_expired_sets: u64,
    /// The configured budget, ms.
    pub budget_ms: f64,
    /// Frame complete → corrections on the wire, over corrected frames (holds are counted
    /// in `held`; every frame's latency is in `frames.csv` and the histogram).
    pub latency_ms: Quantiles,
    /// Median time per stage, ms: ingest, register, range, adapt, link.
    pub stage_ms_p50: std::collections::BTreeMap<&'static str, f64>,
    /// Tumor position error at delivery time.
    pub tumor_error_mm: Quantiles,
    /// Delivered-spot position error (per spot, per frame while the beam was on).
    pub spot_error_mm: Quantiles,
    /// Range error (per spot, per frame while the beam was on).
    pub range_error_mm: Quantiles,
    /// Fraction of frames the beam was on.
    pub duty_cycle: f64,
    /// SHA-256 of every applied correction, in order (deterministic replay: equal runs, equal digests).
    pub corrections_sha256: String,
    /// Wall time of the replay, s.
    pub wall_s: f64,
}

/// Writes `report.json`, `frames.csv`, the plots and `index.html` into `dir`; returns the
/// paths written. `baseline` is the same replay without correction, when it was run.
pub fn write_report(
    dir: &Path,
    report: &Report,
    frames: &[FrameScore],
    latency_ms: &[f64],
    baseline: Option<(&Report, &[FrameScore])>,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let json = dir.join("report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(report).map_err(std::io::Error::other)? + "\n",
    )?;
    written.push(json);
    let csv = dir.join("frames.csv");
    let mut text = String::from(
        "frame,t_s,true_x_mm,true_y_mm,true_z_mm,est_x_mm,est_y_mm,est_z_mm,outcome,reason,latency_ms,beam_on,tumor_error_mm,spot_error_max_mm,range_error_max_mm\n",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for f in frames {
        let e = f.est_shift_mm;
        let _ = writeln!(
            text,
            "{},{:.4},{:.4},{:.4},{:.4},{},{},{},{},{},{},{},{},{},{}",
            f.frame,
            f.t_s,
            f.true_shift_mm[0],
            f.true_shift_mm[1],
            f.true_shift_mm[2],
            opt(e.map(|e| e[0])),
            opt(e.map(|e| e[1])),
            opt(e.map(|e| e[2])),
            f.outcome,
            f.reason.unwrap_or(""),
            opt(f.latency_ms),
            f.beam_on as u8,
            opt(f.tumor_error_mm),
            opt(f.spot_error_max_mm),
            opt(f.range_error_max_mm),
        );
    }
    std::fs::write(&csv, text)?;
    written.push(csv);
    let plot_err = |e: Box<dyn std::error::Error>| std::io::Error::other(e.to_string());
    let p = dir.join("trajectory.svg");
    plots::trajectory(&p, frames).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("residual.svg");
    plots::residual(&p, frames, baseline.map(|b| b.1)).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("latency.svg");
    plots::latency(&p, latency_ms, report.budget_ms).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("beam.svg");
    plots::beam(&p, frames).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("index.html");
    std::fs::write(&p, html::page(report, baseline.map(|b| b.0)))?;
    written.push(p);
    Ok(written)
}
