//! The replay report: `report.json` (the keys the release gate and a physicist read), a
//! per-frame CSV, SVG plots (trajectory, residual error, latency histogram, beam timeline)
//! and a one-page HTML summary that links them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::delivery::timeline::SynchrotronModel;
use crate::imaging::model::ImagingModel;
use crate::motion::track::TrackUse;
use crate::scoring::deliveries::DeliverySummary;
use crate::scoring::dose_figures::DoseFigures;
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
    /// Acquisition (the instant the frame shows) → corrections on the wire, over corrected
    /// frames: what the beam sees; `latency_ms` is the part this software adds.
    pub latency_from_acquisition_ms: Quantiles,
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
    /// How the in-room CT imaged.
    pub imaging: ImagingModel,
    /// The spot-by-spot deliveries, when the replay delivered on a timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
    /// The 4D dose of each delivery, when computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dose: Option<DoseReport>,
}

/// The deliveries of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryReport {
    /// The synchrotron preset's name.
    pub preset: String,
    /// Its timing.
    pub synchrotron: SynchrotronModel,
    /// The motion the deliveries saw.
    pub motion: TrackUse,
    /// Each delivery (`tracked`, `untracked`, `gated`).
    pub deliveries: std::collections::BTreeMap<&'static str, DeliverySummary>,
}

/// Dose figures of the static, tracked, untracked and gated deliveries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoseReport {
    /// The target ROI.
    pub target_roi: String,
    /// The prescription the percentages refer to: the static dose's target median, Gy.
    pub prescription_gy: f64,
    /// The dose grid's spacing, mm.
    pub grid_spacing_mm: [f64; 3],
    /// The plan on the still planning CT.
    #[serde(rename = "static")]
    pub static_dose: DoseFigures,
    /// Tracked (absent without correction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked: Option<DoseFigures>,
    /// The plan as written on the moving anatomy.
    pub untracked: DoseFigures,
    /// Gated to end-exhale.
    pub gated: DoseFigures,
}

/// What the dose plots draw: each delivery's target DVH and an axial slice through the
/// target of each delivery's dose minus the static one.
#[derive(Debug, Clone, PartialEq)]
pub struct DosePlots {
    /// (delivery, target DVH: (dose Gy, volume %) points).
    pub dvh: Vec<(&'static str, Vec<(f64, f64)>)>,
    /// Prescription, Gy.
    pub prescription_gy: f64,
    /// (delivery, slice of dose − static, Gy, row-major `[row][column]`), the slice's
    /// columns and rows spacing in mm.
    pub difference_slices: Vec<(&'static str, Vec<Vec<f64>>)>,
    /// Pixel size of the slices, mm (column, row).
    pub slice_spacing_mm: [f64; 2],
}

/// Writes `report.json`, `frames.csv`, the plots and `index.html` into `dir`; returns the
/// paths written. `baseline` is the same replay without correction, when it was run.
pub fn write_report(
    dir: &Path,
    report: &Report,
    frames: &[FrameScore],
    latency_ms: &[f64],
    baseline: Option<(&Report, &[FrameScore])>,
    dose_plots: Option<&DosePlots>,
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
    if let Some(d) = dose_plots {
        let p = dir.join("dvh.svg");
        plots::dvh(&p, d).map_err(plot_err)?;
        written.push(p);
        let p = dir.join("dose_difference.svg");
        plots::dose_difference(&p, d).map_err(plot_err)?;
        written.push(p);
    }
    let p = dir.join("index.html");
    std::fs::write(&p, html::page(report, baseline.map(|b| b.0)))?;
    written.push(p);
    Ok(written)
}
