//! The replay report: `report.json` (the keys the release gate and a physicist read), a
//! per-frame CSV, SVG plots (trajectory, residual error, latency histogram, beam timeline)
//! and a one-page HTML summary that links them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

/// One frame of a replay, scored against the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameScore {
    /// Pipeline frame id.
    pub frame: u64,
    /// Replay time of the frame (trace time), s.
    pub t_s: f64,
    /// True tumor displacement, mm (patient LPS).
    pub true_shift_mm: [f64; 3],
    /// Estimated tumor shift, mm, when the frame was registered.
    pub est_shift_mm: Option<[f64; 3]>,
    /// `corrected`, `held`, `rejected` or `dropped`.
    pub outcome: &'static str,
    /// Hold reason, when held or rejected.
    pub reason: Option<&'static str>,
    /// Complete → on the wire, ms.
    pub latency_ms: Option<f64>,
    /// Whether the controller had the beam on after this frame.
    pub beam_on: bool,
    /// |estimated − true| tumor shift at delivery time, mm.
    pub tumor_error_mm: Option<f64>,
    /// Largest delivered-spot position error in this frame, mm.
    pub spot_error_max_mm: Option<f64>,
    /// Largest range error in this frame, mm.
    pub range_error_max_mm: Option<f64>,
}

/// Quantiles of an error or a latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile (absent for latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    /// 99th percentile (latency only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Largest.
    pub max: f64,
}

/// Error accumulator in µm (HDR histogram: exact counts, 3 significant digits).
#[derive(Debug, Clone)]
pub struct ErrorHistogram(Histogram<u64>);

impl Default for ErrorHistogram {
    fn default() -> Self {
        ErrorHistogram(Histogram::new_with_bounds(1, 10_000_000, 3).expect("constant bounds"))
    }
}

impl ErrorHistogram {
    /// Records an error, mm.
    pub fn record_mm(&mut self, mm: f64) {
        if mm.is_finite() {
            self.0
                .saturating_record(((mm.abs() * 1000.0).round() as u64).max(1));
        }
    }
    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// p50 / p95 / max in mm (zeros when empty).
    pub fn errors(&self) -> Quantiles {
        let q = |p: f64| {
            if self.0.is_empty() {
                0.0
            } else {
                self.0.value_at_quantile(p) as f64 / 1000.0
            }
        };
        Quantiles {
            p50: q(0.5),
            p95: Some(q(0.95)),
            p99: None,
            max: if self.0.is_empty() {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
        }
    }
    /// p50 / p99 / max (for latencies recorded in µs as "mm" × 1000 = ms).
    pub fn latencies(&self) -> Quantiles {
        let e = self.errors();
        Quantiles {
            p50: e.p50,
            p95: None,
            p99: Some(if self.0.is_empty() {
                0.0
            } else {
                self.0.value_at_quantile(0.99) as f64 / 1000.0
            }),
            max: e.max,
        }
    }
}

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
    plot_trajectory(&p, frames).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("residual.svg");
    plot_residual(&p, frames, baseline.map(|b| b.1)).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("latency.svg");
    plot_latency(&p, latency_ms, report.budget_ms).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("beam.svg");
    plot_beam(&p, frames).map_err(plot_err)?;
    written.push(p);
    let p = dir.join("index.html");
    std::fs::write(&p, html(report, baseline.map(|b| b.0)))?;
    written.push(p);
    Ok(written)
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(0.5);
    (lo - pad, hi + pad)
}

fn time_span(frames: &[FrameScore]) -> (f64, f64) {
    let end = frames.last().map(|f| f.t_s).unwrap_or(1.0);
    (frames.first().map(|f| f.t_s).unwrap_or(0.0), end.max(1e-3))
}

fn plot_trajectory(path: &Path, frames: &[FrameScore]) -> PlotResult {
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let (t0, t1) = time_span(frames);
    for (axis, area) in panels.iter().enumerate() {
        let name = [
            "x (patient left-right)",
            "y (anterior-posterior)",
            "z (superior-inferior)",
        ][axis];
        let (lo, hi) = span(
            frames
                .iter()
                .flat_map(|f| std::iter::once(f.true_shift_mm[axis]).chain(f.est_shift_mm.map(|e| e[axis]))),
        );
        let mut chart = ChartBuilder::on(area)
            .caption(format!("tumor shift {name}, mm"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(t0..t1, lo..hi)?;
        chart.configure_mesh().x_desc("time (s)").y_desc("mm").draw()?;
        chart
            .draw_series(LineSeries::new(
                frames.iter().map(|f| (f.t_s, f.true_shift_mm[axis])),
                &BLACK,
            ))?
            .label("truth")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(frames.iter().filter_map(|f| {
                f.est_shift_mm
                    .map(|e| Circle::new((f.t_s, e[axis]), 2, RED.filled()))
            }))?
            .label("estimated (registration)")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn plot_residual(path: &Path, frames: &[FrameScore], baseline: Option<&[FrameScore]>) -> PlotResult {
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (t0, t1) = time_span(frames);
    let all = frames
        .iter()
        .chain(baseline.unwrap_or(&[]))
        .flat_map(|f| [f.tumor_error_mm, f.spot_error_max_mm])
        .flatten();
    let (_, hi) = span(all);
    let mut chart = ChartBuilder::on(&root)
        .caption("residual error at delivery time, mm", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(t0..t1, 0.0..hi.max(1.0))?;
    chart.configure_mesh().x_desc("time (s)").y_desc("mm").draw()?;
    chart
        .draw_series(LineSeries::new(
            frames.iter().filter_map(|f| f.tumor_error_mm.map(|e| (f.t_s, e))),
            &BLUE,
        ))?
        .label("tumor position error (tracking)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            frames
                .iter()
                .filter_map(|f| f.spot_error_max_mm.map(|e| (f.t_s, e))),
            &RED,
        ))?
        .label("largest spot position error (tracking)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    if let Some(b) = baseline {
        let grey = RGBColor(140, 140, 140);
        chart
            .draw_series(LineSeries::new(
                b.iter().filter_map(|f| f.spot_error_max_mm.map(|e| (f.t_s, e))),
                &grey,
            ))?
            .label("largest spot position error (no correction)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_latency(path: &Path, latency_ms: &[f64], budget_ms: f64) -> PlotResult {
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = latency_ms.iter().copied().fold(budget_ms, f64::max) * 1.1;
    let bins = 60usize;
    let width = top / bins as f64;
    let mut counts = vec![0u32; bins];
    for &l in latency_ms {
        counts[((l / width) as usize).min(bins - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency: frame complete → corrections on the wire",
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..top, 0u32..most + most / 10 + 1)?;
    chart.configure_mesh().x_desc("ms").y_desc("frames").draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width * 0.9, c)], BLUE.mix(0.6).filled())
    }))?;
    chart
        .draw_series(LineSeries::new([(budget_ms, 0), (budget_ms, most)], &RED))?
        .label(format!("budget {budget_ms} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_beam(path: &Path, frames: &[FrameScore]) -> PlotResult {
    let root = SVGBackend::new(path, (960, 220)).into_drawing_area();
    root.fill(&WHITE)?;
    let (t0, t1) = time_span(frames);
    let mut chart = ChartBuilder::on(&root)
        .caption("beam on / hold", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(t0..t1, 0.0..1.2)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_labels(2)
        .y_label_formatter(&|v| if *v > 0.5 { "on".into() } else { "hold".into() })
        .draw()?;
    let mut pts = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let level = if f.beam_on { 1.0 } else { 0.0 };
        let end = frames.get(i + 1).map(|n| n.t_s).unwrap_or(f.t_s);
        pts.push((f.t_s, level));
        pts.push((end, level));
    }
    chart.draw_series(LineSeries::new(pts, GREEN.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

fn html(r: &Report, baseline: Option<&Report>) -> String {
    let row = |name: &str, q: &Quantiles, b: Option<&Quantiles>| {
        let v = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into());
        format!(
            "<tr><td>{name}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>\n",
            q.p50,
            v(q.p95),
            v(q.p99),
            q.max,
            b.map(|b| format!("{:.2}", b.p95.unwrap_or(b.max)))
                .unwrap_or_else(|| "–".into())
        )
    };
    let mut rows = String::new();
    rows += &row(
        "tumor position error (mm)",
        &r.tumor_error_mm,
        baseline.map(|b| &b.tumor_error_mm),
    );
    rows += &row(
        "delivered-spot position error (mm)",
        &r.spot_error_mm,
        baseline.map(|b| &b.spot_error_mm),
    );
    rows += &row(
        "range error (mm)",
        &r.range_error_mm,
        baseline.map(|b| &b.range_error_mm),
    );
    rows += &row("latency (ms)", &r.latency_ms, None);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ionguide replay — {scenario}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}img{{max-width:100%}}</style>
</head><body>
<h1>ionguide replay</h1>
<p>{scenario} — mode <b>{mode}</b>; {frames} frames: {corrected} corrected, {held} held, {rejected} rejected, {dropped} dropped;
stale corrections {stale}; correction sets refused as expired by the controller {expired}; beam on {duty:.0}% of frames; budget {budget} ms; wall time {wall:.1} s.</p>
<table><tr><th>quantity</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>p95 without correction</th></tr>
{rows}</table>
<p>Raw numbers: <a href="report.json">report.json</a>, <a href="frames.csv">frames.csv</a>.</p>
<h2>Tumor trajectory</h2><img src="trajectory.svg" alt="true and estimated tumor shift">
<h2>Residual error</h2><img src="residual.svg" alt="residual error over time">
<h2>Latency</h2><img src="latency.svg" alt="latency histogram">
<h2>Beam</h2><img src="beam.svg" alt="beam on and hold timeline">
</body></html>
"#,
        scenario = escape(&r.scenario),
        mode = r.mode,
        frames = r.frames,
        corrected = r.corrected,
        held = r.held,
        rejected = r.rejected,
        dropped = r.dropped,
        stale = r.stale_corrections,
        expired = r.controller_expired_sets,
        duty = r.duty_cycle * 100.0,
        budget = r.budget_ms,
        wall = r.wall_s,
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
