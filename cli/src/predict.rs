//! `ionguide predict`: causal online forecast of breathing-marker traces over a horizon, and
//! the published evaluation protocol over a directory of ExtMarker sessions.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ionguide::predict::evaluate::{self, HorizonScore, Session, HORIZONS};
use ionguide::predict::{
    AnalogConfig, AnalogPredictor, EnsemblePredictor, Hold, OnlinePredictor, RidgeConfig, RidgePredictor,
    RlsBaseline, StackPredictor,
};
use ionguide_sim::motion::trace::{read_csv_trace_checked, read_extmarker_checked, LoadedTrace};

/// Forecast marker positions a horizon ahead, each from the samples up to it only.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Marker trace (ExtMarker or CSV `t_s,x_mm,y_mm,z_mm`); repeat for the markers of one
    /// session (same sample times).
    #[arg(long, required_unless_present_any = ["evaluate", "correlate"], conflicts_with = "evaluate")]
    trace: Vec<PathBuf>,
    /// Horizon, ms (rounded to whole samples at the median sample interval of the first 5 s).
    #[arg(long, required_unless_present_any = ["evaluate", "correlate"])]
    horizon_ms: Option<f64>,
    /// Method: ensemble (the default: ridge + RLS + analog, weighted online), stack (four
    /// members weighted on displacements, the variant selected on the tuning parts), ridge,
    /// analog, rls (the causal linear baseline), hold (no prediction).
    #[arg(long, default_value = "ensemble")]
    method: Method,
    /// Print every forecast as CSV instead of a summary.
    #[arg(long)]
    csv: bool,
    /// Run the published protocol (Pohl et al. 2022) over the ExtMarker sessions in DIR
    /// (files grouped by the timestamp before their first '-') and print the table.
    #[arg(long, value_name = "DIR")]
    evaluate: Option<PathBuf>,
    /// Tracking between CT frames on the ExtMarker sessions in DIR: each session's first
    /// marker is the tumor (scaled to 10 mm peak to peak), its second the surrogate; CT frames
    /// at 0.5, 1, 2 and 4 Hz, 0.5 s from acquisition to image, the surrogate 0.2 s from sample
    /// to beam. Prints the delivery-time tumor error p95 of no tracking, CT only, CT +
    /// correlation model and CT + model + prediction, with the model's duty cycle.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["evaluate", "trace"])]
    correlate: Option<PathBuf>,
    /// With `--correlate`: each strategy's dose too — the demo's small thorax phantom and its
    /// flattened 2-beam carbon plan delivered once from 60 s on the fast synchrotron, every spot
    /// off by the strategy's steering error when it starts (static dose cloud): target V95 and
    /// gamma 2 %/2 mm against the static dose (`ionguide_sim::scoring::tracking_dose`).
    #[arg(long, requires = "correlate")]
    dose: bool,
    /// With `--correlate`: where the tumor comes from — `markers` (marker 1 of the recording,
    /// scaled) or `designed` (marker 2's breathing signal through the simulator's designed
    /// relation: 10/4/2 mm SI/AP/LR, 0.2 s lag, 2 mm hysteresis, 1 mm/min drift, one breath in
    /// ten 1.5× deeper; `ionguide_sim::motion::relation`).
    #[arg(long, value_enum, default_value = "markers", requires = "correlate")]
    relation: Relation,
}

/// Where `--correlate`'s tumor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Relation {
    /// Another marker of the same recording.
    Markers,
    /// The surrogate through the designed relation.
    Designed,
}

impl Relation {
    fn source(self) -> ionguide_sim::motion::surrogate::TumorSource {
        use ionguide_sim::motion::surrogate::TumorSource;
        match self {
            Relation::Markers => TumorSource::Marker(0),
            Relation::Designed => TumorSource::Designed(Default::default()),
        }
    }
}

/// A prediction method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Ridge, RLS and analog combined with weights fitted online.
    Ensemble,
    /// Huber ridge, RLS and two analogs stacked on displacements (selected on 30–60 s).
    Stack,
    /// Nearest-neighbour (analog) forecasting over the last minute.
    Analog,
    /// Ridge regression on a 4 s history with forgetting.
    Ridge,
    /// Recursive least squares per coordinate on the last 12 samples.
    Rls,
    /// No prediction.
    Hold,
}

impl Method {
    fn build(self, dim: usize, horizon: usize) -> anyhow::Result<Box<dyn OnlinePredictor>> {
        Ok(match self {
            Self::Ensemble => Box::new(EnsemblePredictor::new(dim, horizon)?),
            Self::Stack => Box::new(StackPredictor::selected(dim, horizon)?),
            Self::Analog => Box::new(AnalogPredictor::new(dim, horizon, AnalogConfig::default())?),
            Self::Ridge => Box::new(RidgePredictor::new(dim, horizon, RidgeConfig::default())?),
            Self::Rls => Box::new(RlsBaseline::new(dim, horizon)?),
            Self::Hold => Box::new(Hold::new(dim, horizon)),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Self::Ensemble => "ensemble (default)",
            Self::Stack => "stack (tuning-sel.)",
            Self::Analog => "analog",
            Self::Ridge => "ridge",
            Self::Rls => "RLS-12 baseline",
            Self::Hold => "no prediction",
        }
    }
}

/// Reads a marker trace, ExtMarker (`;`-separated) or CSV, with the repair rules.
pub fn load(path: &Path) -> anyhow::Result<LoadedTrace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let extmarker = text.lines().next().is_some_and(|l| l.contains(';'));
    Ok(if extmarker {
        read_extmarker_checked(path)?
    } else {
        read_csv_trace_checked(path)?
    })
}

/// Entry point.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.evaluate {
        return evaluate_dir(dir);
    }
    if let Some(dir) = &args.correlate {
        correlate_dir(dir, args.relation)?;
        if args.dose {
            correlate_dose(dir, args.relation)?;
        }
        return Ok(());
    }
    let horizon_ms = args.horizon_ms.context("--horizon-ms is required with --trace")?;
    if !(horizon_ms.is_finite() && horizon_ms > 0.0) {
        bail!("--horizon-ms must be > 0, got {horizon_ms}");
    }
    let traces: Vec<LoadedTrace> = args.trace.iter().map(|p| load(p)).collect::<Result<_, _>>()?;
    let t_s = &traces[0].trace.t_s;
    for (p, tr) in args.trace.iter().zip(&traces).skip(1) {
        let same = tr.trace.t_s.len() == t_s.len()
            && tr.trace.t_s.iter().zip(t_s).all(|(a, b)| (a - b).abs() < 1e-3);
        if !same {
            bail!(
                "{}: sample times differ from {}'s: the markers of one session are needed",
                p.display(),
                args.trace[0].display()
            );
        }
    }
    // The sample interval from the first 5 s only (50 steps at 10 Hz), to 0.1 ms: the
    // horizon in samples must not depend on samples not yet seen.
    let mut steps: Vec<f64> = t_s.windows(2).take(50).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let step_s = (steps[steps.len() / 2] * 1e4).round() / 1e4;
    if step_s <= 0.0 {
        bail!("sample interval {step_s} s: the trace's times do not advance");
    }
    let horizon = ((horizon_ms / 1000.0 / step_s).round() as usize).max(1);
    if horizon >= t_s.len() {
        bail!(
            "--horizon-ms {horizon_ms}: {horizon} samples ahead, but the trace has {} samples",
            t_s.len()
        );
    }
    let markers = traces.len();
    let dim = 3 * markers;
    let mut predictor = args.method.build(dim, horizon)?;
    let mut sample = vec![0.0; dim];
    let mut out = vec![0.0; dim];
    let mut preds = Vec::with_capacity(t_s.len());
    for k in 0..t_s.len() {
        for (m, tr) in traces.iter().enumerate() {
            sample[3 * m..3 * m + 3].copy_from_slice(&tr.trace.pos_mm[k]);
        }
        predictor.step(&sample, &mut out);
        preds.push(out.clone());
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if args.csv {
        write!(w, "t_s,predicted_for_t_s")?;
        for m in 0..markers {
            write!(w, ",m{m}_x_mm,m{m}_y_mm,m{m}_z_mm")?;
        }
        writeln!(w)?;
        for (k, p) in preds.iter().enumerate() {
            write!(w, "{},{}", t_s[k], t_s[k] + horizon as f64 * step_s)?;
            for v in p {
                write!(w, ",{v}")?;
            }
            writeln!(w)?;
        }
        return Ok(());
    }
    // Summary: forecasts against the samples that came `horizon` later, beside holding.
    let (mut se, mut se_hold, mut n) = (0.0, 0.0, 0usize);
    for (k, pred) in preds.iter().enumerate().take(t_s.len().saturating_sub(horizon)) {
        for (m, tr) in traces.iter().enumerate() {
            let truth = tr.trace.pos_mm[k + horizon];
            let now = tr.trace.pos_mm[k];
            se += (0..3).map(|c| (pred[3 * m + c] - truth[c]).powi(2)).sum::<f64>();
            se_hold += (0..3).map(|c| (now[c] - truth[c]).powi(2)).sum::<f64>();
            n += 1;
        }
    }
    let repairs: usize = traces.iter().map(|t| t.warnings.len()).sum();
    writeln!(
        w,
        "{} samples × {markers} marker(s), step {:.1} ms, horizon {horizon} samples ({:.0} ms), method {}; {repairs} timestamp repair(s)/drop(s) (logged as warnings)",
        t_s.len(),
        step_s * 1000.0,
        horizon as f64 * step_s * 1000.0,
        args.method.name()
    )?;
    if n > 0 {
        writeln!(
            w,
            "RMSE over the whole trace (3-D, per marker): {:.3} mm predicted, {:.3} mm without prediction",
            (se / n as f64).sqrt(),
            (se_hold / n as f64).sqrt()
        )?;
    }
    Ok(())
}

/// Loads the sessions of a directory (`ionguide_sim::motion::surrogate::load_sessions`).
pub fn load_sessions(dir: &Path) -> anyhow::Result<Vec<(String, Session)>> {
    ionguide_sim::motion::surrogate::load_sessions(dir)
        .with_context(|| format!("recordings in {}", dir.display()))
}

/// One horizon's scores: (tuning part, scored part).
type Parts = (HorizonScore, HorizonScore);
/// Per method, per session, per horizon (1..=21) scores.
type Table = Vec<(Method, Vec<Vec<Parts>>)>;

fn evaluate_dir(dir: &Path) -> anyhow::Result<()> {
    let sessions = load_sessions(dir)?;
    if sessions.is_empty() {
        bail!("{}: no .csv recordings", dir.display());
    }
    let methods = [
        Method::Hold,
        Method::Rls,
        Method::Ridge,
        Method::Analog,
        Method::Ensemble,
        Method::Stack,
    ];
    let mut table: Table = Vec::new();
    for m in methods {
        let mut per_session = Vec::new();
        for (key, s) in &sessions {
            let mut scores = Vec::new();
            for h in HORIZONS {
                let (tune, scored) = evaluate::run_parts(s, h, |d, h| {
                    m.build(d, h)
                        .unwrap_or_else(|e| panic!("built-in configuration: {e}"))
                });
                let both = tune
                    .zip(scored)
                    .with_context(|| format!("session {key}: shorter than 60 s or motionless in a part"))?;
                scores.push(both);
            }
            per_session.push(scores);
        }
        table.push((m, per_session));
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    writeln!(
        w,
        "{} sessions ({}), 10 Hz, scored from 60 s; RMSE mm / nRMSE averaged over sessions",
        sessions.len(),
        sessions
            .iter()
            .map(|(k, s)| format!("{k}×{}", s.markers))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    write!(w, "{:>16}", "horizon")?;
    for (m, _) in &table {
        write!(w, " | {:>20}", m.name())?;
    }
    writeln!(w)?;
    let mean = |per_session: &[Vec<Parts>], pick: &dyn Fn(&[Parts]) -> (f64, f64)| {
        let n = per_session.len() as f64;
        per_session.iter().fold((0.0, 0.0), |acc, s| {
            let (a, b) = pick(s);
            (acc.0 + a / n, acc.1 + b / n)
        })
    };
    // Horizon-averaged (RMSE, nRMSE) of one session, tuning part or scored part.
    let avg = |s: &[Parts], tuning: bool| {
        let k = s.len() as f64;
        let part = |x: &Parts| if tuning { x.0 } else { x.1 };
        (
            s.iter().map(|x| part(x).rmse_mm).sum::<f64>() / k,
            s.iter().map(|x| part(x).nrmse).sum::<f64>() / k,
        )
    };
    for h in [1usize, 3, 5, 10, 20] {
        write!(w, "{:>16}", format!("{:.1} s", h as f64 / 10.0))?;
        for (_, per_session) in &table {
            let (r, n) = mean(per_session, &|s| (s[h - 1].1.rmse_mm, s[h - 1].1.nrmse));
            write!(w, " | {:>7.3} mm / {:>6.3}", r, n)?;
        }
        writeln!(w)?;
    }
    write!(w, "{:>16}", "mean 0.1-2.1 s")?;
    for (_, per_session) in &table {
        let (r, n) = mean(per_session, &|s| avg(s, false));
        write!(w, " | {:>7.3} mm / {:>6.3}", r, n)?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "tuning part (targets 30-60 s; where variants may be compared):"
    )?;
    write!(w, "{:>16}", "0.5 s")?;
    for (_, per_session) in &table {
        let (r, n) = mean(per_session, &|s| (s[4].0.rmse_mm, s[4].0.nrmse));
        write!(w, " | {:>7.3} mm / {:>6.3}", r, n)?;
    }
    writeln!(w)?;
    write!(w, "{:>16}", "mean 0.1-2.1 s")?;
    for (_, per_session) in &table {
        let (r, n) = mean(per_session, &|s| avg(s, true));
        write!(w, " | {:>7.3} mm / {:>6.3}", r, n)?;
    }
    writeln!(w)?;
    writeln!(w, "per session, scored part, nRMSE averaged over horizons:")?;
    for (i, (key, _)) in sessions.iter().enumerate() {
        write!(w, "{key:>16}")?;
        for (_, per_session) in &table {
            write!(w, " | {:>20.3}", avg(&per_session[i], false).1)?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// `--correlate DIR`: surrogate-driven tracking between CT frames on real recordings.
fn correlate_dir(dir: &Path, relation: Relation) -> anyhow::Result<()> {
    use ionguide_sim::motion::surrogate::{simulate_from, SurrogateTracking};
    let sessions = load_sessions(dir)?;
    match relation {
        Relation::Markers => println!(
            "delivery-time tumor error p95, mm (tumor = marker 1 scaled to 10 mm peak to peak, surrogate = marker 2;"
        ),
        Relation::Designed => println!(
            "delivery-time tumor error p95, mm (tumor = marker 2 through the designed relation, surrogate = marker 2;"
        ),
    }
    println!(
        "image 0.5 s after acquisition, surrogate 0.2 s to the beam; model duty cycle and holds in brackets)"
    );
    println!(
        "{:<14} {:>7} {:>8} {:>8} {:>20} {:>22}",
        "session", "CT Hz", "none", "CT only", "CT + model", "CT + model + predict"
    );
    for (name, session) in &sessions {
        if session.markers < 2 {
            println!("{name:<14} skipped: one marker");
            continue;
        }
        for rate in [0.5, 1.0, 2.0, 4.0] {
            let cfg = SurrogateTracking {
                ct_rate_hz: rate,
                ..SurrogateTracking::default()
            };
            match simulate_from(session, relation.source(), 1, &cfg).map(|(r, _)| r) {
                Ok(r) => println!(
                    "{name:<14} {rate:>7.1} {:>8.2} {:>8.2} {:>9.2} ({:>3.0}%, {:>2}) {:>9.2} ({:>3.0}%)",
                    r.none.p95_mm,
                    r.ct_only.p95_mm,
                    r.model.p95_mm,
                    100.0 * r.model.duty_cycle,
                    r.disagreements,
                    r.predicted.p95_mm,
                    100.0 * r.predicted.duty_cycle
                ),
                Err(e) => println!("{name:<14} {rate:>7.1} not simulated: {e}"),
            }
        }
    }
    Ok(())
}

/// `--correlate DIR --dose`: the strategies of [`correlate_dir`] scored in dose.
fn correlate_dose(dir: &Path, relation: Relation) -> anyhow::Result<()> {
    use clap::Parser;
    use ionguide_sim::anatomy::phantom::PhantomSpec;
    use ionguide_sim::delivery::timeline::SynchrotronModel;
    use ionguide_sim::motion::surrogate::{simulate_from, SurrogateTracking};
    use ionguide_sim::planning::PlannerOptions;
    use ionguide_sim::scenario;
    use ionguide_sim::scoring::tracking_dose::TrackingDoseScene;

    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        delivery: crate::demo::DeliveryArgs,
    }
    let delivery = Defaults::parse_from(["ionguide"]).delivery;
    let work = tempfile::tempdir()?;
    eprintln!("building the small thorax phantom and its 2-beam carbon plan …");
    let spec = PhantomSpec::small();
    let s = scenario::write_phantom_session(work.path(), &spec, &PlannerOptions::default(), 50.0, None)?;
    let phantom = s.phantom.clone();
    crate::demo::flatten_demo_plan(&s.config, &delivery, move |p| phantom.in_ptv(p, 0.0))?;
    let (_, session) = ionguide_sim::replay::load_session(&s.config)?;
    let setup = scenario::dose_setup(
        &s.config,
        &delivery.machine_dir,
        delivery.particles_per_weight,
        delivery.dose_grid_mm,
    )?;
    // both beams back to back: the recordings after 60 s last 1-4 minutes
    let synchrotron = SynchrotronModel {
        beam_switch_s: 0.0,
        ..SynchrotronModel::fast_multi_energy()
    };
    let mut scene = TrackingDoseScene::new(&session, setup, synchrotron, delivery.particles_per_weight)?;
    let st = scene.static_figures()?;
    println!();
    println!(
        "target V95 % / gamma 2%/2mm pass % against the static dose (static: V95 {:.1} %, D50 {:.2} Gy; {} spots from 60 s on, static dose cloud)",
        st.v95_pct,
        scene.prescription_gy(),
        session.plan.spot_count()
    );
    println!(
        "{:<14} {:>7} {:>14} {:>14} {:>14} {:>20}",
        "session", "CT Hz", "none", "CT only", "CT + model", "CT + model + predict"
    );
    let sessions = load_sessions(dir)?;
    let cell = |d: &ionguide_sim::scoring::tracking_dose::StrategyDose| {
        let g = d.figures.gamma_2pct_2mm_pct.unwrap_or(f64::NAN);
        if d.delivered_fraction < 1.0 {
            format!("{:.1}/{:.1}*", d.figures.v95_pct, g)
        } else {
            format!("{:.1}/{:.1}", d.figures.v95_pct, g)
        }
    };
    let mut partial = false;
    for (name, session) in &sessions {
        if session.markers < 2 {
            continue;
        }
        for rate in [0.5, 1.0, 2.0, 4.0] {
            let cfg = SurrogateTracking {
                ct_rate_hz: rate,
                ..SurrogateTracking::default()
            };
            let (_, series) = match simulate_from(session, relation.source(), 1, &cfg) {
                Ok(r) => r,
                Err(e) => {
                    println!("{name:<14} {rate:>7.1} not simulated: {e}");
                    continue;
                }
            };
            let always = |v: &[[f64; 3]]| v.iter().copied().map(Some).collect::<Vec<_>>();
            let doses = [
                scene.score(&always(&series.none), series.dt_s)?,
                scene.score(&always(&series.ct_only), series.dt_s)?,
                scene.score(&series.model, series.dt_s)?,
                scene.score(&series.predicted, series.dt_s)?,
            ];
            partial |= doses.iter().any(|d| d.delivered_fraction < 1.0);
            println!(
                "{name:<14} {rate:>7.1} {:>14} {:>14} {:>14} {:>20}",
                cell(&doses[0]),
                cell(&doses[1]),
                cell(&doses[2]),
                cell(&doses[3])
            );
        }
    }
    if partial {
        println!(
            "* the recording ended before the plan was delivered: the figures are of the spots delivered"
        );
    }
    Ok(())
}
