//! The report's SVG plots (plotters): tumor trajectory, residual error, latency histogram
//! and beam timeline.

use std::path::Path;

use plotters::prelude::*;

use crate::scoring::FrameScore;

pub(super) type PlotResult = Result<(), Box<dyn std::error::Error>>;

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

/// How a legend entry shows its series.
#[derive(Clone, Copy)]
enum Swatch {
    Line(RGBColor),
    Dot(RGBColor),
}

/// Height of the legend strip above a plot, px.
const LEGEND_PX: u32 = 26;

/// Draws a legend in its own strip above the plot, entries left to right, so it never
/// covers a curve (plotters' built-in legend sits inside the plotting area).
fn legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    entries: &[(&str, Swatch)],
) -> PlotResult {
    let style = TextStyle::from(("sans-serif", 14)).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Left,
        plotters::style::text_anchor::VPos::Center,
    ));
    let y = (LEGEND_PX / 2) as i32;
    let mut x = 56i32;
    for &(label, swatch) in entries {
        match swatch {
            Swatch::Line(c) => area.draw(&PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)))?,
            Swatch::Dot(c) => area.draw(&Circle::new((x + 10, y), 3, c.filled()))?,
        }
        area.draw(&Text::new(label.to_string(), (x + 26, y), style.clone()))?;
        let (w, _) = area.estimate_text_size(label, &style)?;
        x += 26 + w as i32 + 28;
    }
    Ok(())
}

pub(super) fn trajectory(path: &Path, frames: &[FrameScore]) -> PlotResult {
    let root = SVGBackend::new(path, (960, 720 + LEGEND_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let (key, plots) = root.split_vertically(LEGEND_PX);
    legend(
        &key,
        &[
            ("truth", Swatch::Line(BLACK)),
            ("estimated (registration)", Swatch::Dot(RED)),
        ],
    )?;
    let panels = plots.split_evenly((3, 1));
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
        chart.draw_series(LineSeries::new(
            frames.iter().map(|f| (f.t_s, f.true_shift_mm[axis])),
            &BLACK,
        ))?;
        chart.draw_series(frames.iter().filter_map(|f| {
            f.est_shift_mm
                .map(|e| Circle::new((f.t_s, e[axis]), 2, RED.filled()))
        }))?;
    }
    root.present()?;
    Ok(())
}

pub(super) fn residual(path: &Path, frames: &[FrameScore], baseline: Option<&[FrameScore]>) -> PlotResult {
    let root = SVGBackend::new(path, (960, 400 + LEGEND_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let grey = RGBColor(140, 140, 140);
    let (key, plot) = root.split_vertically(LEGEND_PX);
    let mut entries = vec![
        ("tumor position error (tracking)", Swatch::Line(BLUE)),
        ("largest spot position error (tracking)", Swatch::Line(RED)),
    ];
    if baseline.is_some() {
        entries.push(("largest spot position error (no correction)", Swatch::Line(grey)));
    }
    legend(&key, &entries)?;
    let (t0, t1) = time_span(frames);
    let all = frames
        .iter()
        .chain(baseline.unwrap_or(&[]))
        .flat_map(|f| [f.tumor_error_mm, f.spot_error_max_mm])
        .flatten();
    let (_, hi) = span(all);
    let mut chart = ChartBuilder::on(&plot)
        .caption("residual error at delivery time, mm", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(t0..t1, 0.0..hi.max(1.0))?;
    chart.configure_mesh().x_desc("time (s)").y_desc("mm").draw()?;
    chart.draw_series(LineSeries::new(
        frames.iter().filter_map(|f| f.tumor_error_mm.map(|e| (f.t_s, e))),
        &BLUE,
    ))?;
    chart.draw_series(LineSeries::new(
        frames
            .iter()
            .filter_map(|f| f.spot_error_max_mm.map(|e| (f.t_s, e))),
        &RED,
    ))?;
    if let Some(b) = baseline {
        chart.draw_series(LineSeries::new(
            b.iter().filter_map(|f| f.spot_error_max_mm.map(|e| (f.t_s, e))),
            &grey,
        ))?;
    }
    root.present()?;
    Ok(())
}

pub(super) fn latency(path: &Path, latency_ms: &[f64], budget_ms: f64) -> PlotResult {
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

pub(super) fn beam(path: &Path, frames: &[FrameScore]) -> PlotResult {
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

/// Each delivery's target DVH, with the prescription marked.
pub(super) fn dvh(path: &Path, plots: &super::DosePlots) -> PlotResult {
    let root = SVGBackend::new(path, (960, 560 + LEGEND_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let (key, area) = root.split_vertically(LEGEND_PX);
    let colors = [BLACK, RED, BLUE, RGBColor(0, 140, 0)];
    let entries: Vec<(&str, Swatch)> = plots
        .dvh
        .iter()
        .zip(colors.iter().cycle())
        .map(|((name, _), c)| (*name, Swatch::Line(*c)))
        .collect();
    legend(&key, &entries)?;
    let x_max = 1.3 * plots.prescription_gy;
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..102.0)?;
    chart
        .configure_mesh()
        .x_desc("dose (Gy)")
        .y_desc("target volume (%)")
        .draw()?;
    chart.draw_series(LineSeries::new(
        vec![(plots.prescription_gy, 0.0), (plots.prescription_gy, 102.0)],
        RGBColor(150, 150, 150).stroke_width(1),
    ))?;
    for ((_, points), c) in plots.dvh.iter().zip(colors.iter().cycle()) {
        chart.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

/// Each delivery's dose minus the static one on the axial slice through the target, as a
/// blue (cold) – white – red (hot) map, ±20 % of the prescription at full colour.
pub(super) fn dose_difference(path: &Path, plots: &super::DosePlots) -> PlotResult {
    let n = plots.difference_slices.len().max(1) as u32;
    let panel = 320u32;
    let root = SVGBackend::new(path, (panel * n, panel + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let full = 0.2 * plots.prescription_gy;
    let panels = root.split_evenly((1, n as usize));
    for ((name, slice), area) in plots.difference_slices.iter().zip(panels.iter()) {
        let rows = slice.len();
        let cols = slice.first().map_or(0, |r| r.len());
        if rows == 0 || cols == 0 {
            continue;
        }
        let (w, h) = (
            cols as f64 * plots.slice_spacing_mm[0],
            rows as f64 * plots.slice_spacing_mm[1],
        );
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{name} − static (±{full:.2} Gy)"), ("sans-serif", 15))
            .margin(6)
            .build_cartesian_2d(0.0..w, h..0.0)?;
        chart.draw_series(slice.iter().enumerate().flat_map(|(j, row)| {
            row.iter().enumerate().map(move |(i, v)| {
                let f = (v / full).clamp(-1.0, 1.0);
                let fade = (255.0 * (1.0 - f.abs())) as u8;
                let color = if f >= 0.0 {
                    RGBColor(255, fade, fade)
                } else {
                    RGBColor(fade, fade, 255)
                };
                let (x0, y0) = (
                    i as f64 * plots.slice_spacing_mm[0],
                    j as f64 * plots.slice_spacing_mm[1],
                );
                Rectangle::new(
                    [
                        (x0, y0),
                        (x0 + plots.slice_spacing_mm[0], y0 + plots.slice_spacing_mm[1]),
                    ],
                    color.filled(),
                )
            })
        }))?;
    }
    root.present()?;
    Ok(())
}
