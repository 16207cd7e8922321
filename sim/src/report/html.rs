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
    let mut rows = String::new();
    // without correction nothing is registered, so there is no tumor estimate to be wrong:
    // its column says so instead of showing the empty histogram's zeros
    rows += &row("tumor position error (mm)", &r.tumor_error_mm, None);
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
