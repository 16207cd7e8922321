//! The report's one-page HTML summary, linking the raw numbers and the plots.

use super::Report;
use crate::scoring::histogram::Quantiles;

pub(super) fn page(r: &Report, baseline: Option<&Report>) -> String {
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
    // With spot-by-spot deliveries the untracked delivery of the same replay is the
    // comparison; otherwise a separate replay without correction, when one was run.
    let untracked = r.delivery.as_ref().and_then(|d| d.deliveries.get("untracked"));
    let base_spot = untracked
        .map(|u| &u.spot_error_mm)
        .or(baseline.map(|b| &b.spot_error_mm));
    let base_range = untracked
        .map(|u| &u.range_error_mm)
        .or(baseline.map(|b| &b.range_error_mm));
    let mut rows = String::new();
    // without correction nothing is registered, so there is no tumor estimate to be wrong:
    // its column says so instead of showing the empty histogram's zeros
    rows += &row("tumor position error (mm)", &r.tumor_error_mm, None);
    rows += &row("delivered-spot position error (mm)", &r.spot_error_mm, base_spot);
    rows += &row("range error (mm)", &r.range_error_mm, base_range);
    rows += &row("latency, complete → wire (ms)", &r.latency_ms, None);
    rows += &row(
        "latency, acquisition → wire (ms)",
        &r.latency_from_acquisition_ms,
        None,
    );
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
{imaging}
{deliveries}
{dose}
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
        imaging = imaging(r),
        deliveries = deliveries(r),
        dose = dose(r),
    )
}

fn imaging(r: &Report) -> String {
    let m = &r.imaging;
    format!(
        "<p>Imaging: <b>{}</b> — {} frames/s, {:.0} ms acquisition, {:.0} ms reconstruction: a frame is {:.0} ms old when complete.</p>",
        escape(&m.name),
        m.rate_hz,
        m.acquisition_s * 1e3,
        m.reconstruction_s * 1e3,
        m.age_on_arrival_s() * 1e3
    )
}

fn deliveries(r: &Report) -> String {
    let Some(d) = &r.delivery else {
        return String::new();
    };
    let q = |x: &Quantiles| format!("{:.2} / {:.2}", x.p50, x.p95.unwrap_or(x.max));
    let mut rows = String::new();
    for (name, s) in &d.deliveries {
        rows += &format!(
            "<tr><td>{name}</td><td>{}/{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            s.spots_delivered,
            s.spots_planned,
            s.treatment_s,
            s.beam_on_s,
            s.duty_cycle * 100.0,
            s.tumor_error_mm.as_ref().map(q).unwrap_or_else(|| "–".into()),
            q(&s.spot_error_mm),
            q(&s.range_error_mm),
        );
    }
    format!(
        r#"<h2>Deliveries (every spot scored at its own delivery time)</h2>
<p>Synchrotron <b>{preset}</b>; motion sampled at {rate} Hz ({spc:.0} samples per {period:.1} s breathing cycle), recording used {passes:.2}× (played back and forth past its end).</p>
<table><tr><th>delivery</th><th>spots</th><th>treatment (s)</th><th>beam on (s)</th><th>duty</th><th>tumor error p50 / p95 (mm)</th><th>spot error p50 / p95 (mm)</th><th>range error p50 / p95 (mm)</th></tr>
{rows}</table>"#,
        preset = escape(&d.preset),
        rate = d.motion.rate_hz,
        spc = d.motion.samples_per_cycle,
        period = d.motion.period_s,
        passes = d.motion.passes,
    )
}

fn dose(r: &Report) -> String {
    let Some(d) = &r.dose else {
        return String::new();
    };
    let opt = |x: Option<f64>| x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into());
    let row = |name: &str, f: &crate::scoring::dose_figures::DoseFigures| {
        format!(
            "<tr><td>{name}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.1}</td><td>{:.3}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>\n",
            f.d98_gy,
            f.d95_gy,
            f.d50_gy,
            f.d2_gy,
            f.v95_pct,
            f.homogeneity_index,
            f.v50_outside_cc,
            opt(f.gamma_3pct_3mm_pct),
            opt(f.gamma_2pct_2mm_pct),
        )
    };
    let mut rows = row("static", &d.static_dose);
    if let Some(t) = &d.tracked {
        rows += &row("tracked", t);
    }
    rows += &row("untracked", &d.untracked);
    rows += &row(
        &format!(
            "gated (duty {:.0}%)",
            d.gated.duty_cycle.unwrap_or(f64::NAN) * 100.0
        ),
        &d.gated,
    );
    format!(
        r#"<h2>Dose (4D: each spot on the anatomy of its instant, mapped back to the planning CT)</h2>
<p>Target {roi}; prescription {rx:.3} Gy (the static dose's target median); dose grid {g0}×{g1}×{g2} mm; gamma global, 10% low-dose threshold, against the static dose.</p>
<table><tr><th>delivery</th><th>D98 (Gy)</th><th>D95 (Gy)</th><th>D50 (Gy)</th><th>D2 (Gy)</th><th>V95 (%)</th><th>HI</th><th>V50 outside (cm³)</th><th>γ 3%/3mm (%)</th><th>γ 2%/2mm (%)</th></tr>
{rows}</table>
<h3>Target DVH</h3><img src="dvh.svg" alt="target dose-volume histograms">
<h3>Dose difference through the target</h3><img src="dose_difference.svg" alt="dose minus static on the axial slice through the target">"#,
        roi = escape(&d.target_roi),
        rx = d.prescription_gy,
        g0 = d.grid_spacing_mm[0],
        g1 = d.grid_spacing_mm[1],
        g2 = d.grid_spacing_mm[2],
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
