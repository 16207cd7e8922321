//! `ionguide demo` and `ionguide replay`: recorded breathing through the whole chain —
//! pipeline, UDP link, controller — scored against the truth, with a report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ionguide_sim::anatomy::phantom::PhantomSpec;
use ionguide_sim::imaging::sources::{FrameSource, RealCtFrames};
use ionguide_sim::motion::tumor::{displacements, TumorMotionModel};
use ionguide_sim::planning::PlannerOptions;
use ionguide_sim::replay::{self, ReplayOptions, ReplayResult};
use ionguide_sim::report::write_report;
use ionguide_sim::scenario;
use ionguide_sim::scoring::histogram::Quantiles;

/// The built-in demo: a thorax phantom planned with carbon, driven by a real breathing trace.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Output folder (session files, audit log, report).
    #[arg(long, default_value = "ionguide-demo")]
    out: PathBuf,
    /// Frames to replay (at 10 frames/s of trace time).
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// The small CI phantom (128×128×24) instead of the reference one (256×256×48).
    #[arg(long)]
    small: bool,
    /// Pace frames in real time (10 frames/s) instead of as fast as the chain takes them.
    #[arg(long)]
    realtime: bool,
    /// Latency budget, ms.
    #[arg(long, default_value_t = 50.0)]
    budget_ms: f64,
}

/// A replay on your own data.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Planning CT series folder.
    #[arg(long)]
    ct: PathBuf,
    /// RT Structure Set.
    #[arg(long)]
    structures: PathBuf,
    /// Target ROI name.
    #[arg(long)]
    roi: String,
    /// RT Ion Plan (required: the geometric planner works on the built-in phantom only).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Motion trace: ExtMarker (`;`-separated) or CSV `t_s,x_mm,y_mm,z_mm` (tumor displacement).
    #[arg(long)]
    trace: PathBuf,
    /// Frames to replay.
    #[arg(long)]
    frames: Option<usize>,
    /// Frame rate, frames/s of trace time.
    #[arg(long, default_value_t = 10.0)]
    rate_hz: f64,
    /// Pace frames in real time.
    #[arg(long)]
    realtime: bool,
    /// Latency budget, ms.
    #[arg(long, default_value_t = 100.0)]
    budget_ms: f64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

fn tracking_and_baseline(
    name: &str,
    config: &Path,
    source: &mut dyn FrameSource,
    times: &[f64],
    disp: &[[f64; 3]],
    realtime: bool,
    out: &Path,
) -> anyhow::Result<(ReplayResult, ReplayResult)> {
    let opts = ReplayOptions {
        realtime,
        progress: true,
        ..ReplayOptions::default()
    };
    let tracked = replay::run(name, config, source, times, disp, &opts)?;
    let baseline = replay::run(
        name,
        config,
        source,
        times,
        disp,
        &ReplayOptions {
            correction: false,
            ..opts
        },
    )?;
    write_report(
        &out.join("no_correction"),
        &baseline.report,
        &baseline.frames,
        &baseline.latency_ms,
        None,
    )
    .context("writing the no-correction report")?;
    write_report(
        out,
        &tracked.report,
        &tracked.frames,
        &tracked.latency_ms,
        Some((&baseline.report, &baseline.frames)),
    )
    .context("writing the report")?;
    Ok((tracked, baseline))
}

fn summary(out: &Path, t: &ReplayResult, b: &ReplayResult) {
    let r = &t.report;
    println!();
    println!("{}", r.scenario);
    println!(
        "frames {} | corrected {} held {} rejected {} dropped {} | stale corrections {} | beam on {:.0}%",
        r.frames,
        r.corrected,
        r.held,
        r.rejected,
        r.dropped,
        r.stale_corrections,
        r.duty_cycle * 100.0
    );
    println!();
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>22}",
        "", "p50", "p95/p99", "max", "p95 without correction"
    );
    let row = |name: &str, q: &Quantiles, base: Option<&Quantiles>| {
        println!(
            "{:<32} {:>9.2} {:>9.2} {:>9.2} {:>22}",
            name,
            q.p50,
            q.p95.or(q.p99).unwrap_or(f64::NAN),
            q.max,
            base.and_then(|b| b.p95)
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "–".into())
        )
    };
    row("tumor position error (mm)", &r.tumor_error_mm, None);
    row(
        "delivered-spot error (mm)",
        &r.spot_error_mm,
        Some(&b.report.spot_error_mm),
    );
    row(
        "range error (mm)",
        &r.range_error_mm,
        Some(&b.report.range_error_mm),
    );
    row(
        &format!("latency (ms, budget {})", r.budget_ms),
        &r.latency_ms,
        None,
    );
    println!();
    println!("report: {}", out.join("index.html").display());
}

/// Runs `ionguide demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let session_dir = args.out.join("session");
    std::fs::create_dir_all(&session_dir).with_context(|| format!("creating {}", session_dir.display()))?;
    let spec = if args.small {
        PhantomSpec::small()
    } else {
        PhantomSpec::default()
    };
    eprintln!("building the thorax phantom and a 2-beam carbon plan …");
    // frames come from an in-room scanner with its own coordinates, as in a treatment room
    let s = scenario::write_phantom_session(
        &session_dir,
        &spec,
        &PlannerOptions::default(),
        args.budget_ms,
        Some(scenario::in_room_scanner()),
    )?;
    eprintln!(
        "session: {} ({} spots); trace: {}",
        session_dir.display(),
        s.spots,
        scenario::bundled_trace().display()
    );
    if let Some(room) = &s.room {
        eprintln!(
            "in-room scanner: its own Frame of Reference, mapped by the setup registration REG.dcm ({room})"
        );
    }
    let (times, disp) = displacements(
        &scenario::bundled_trace(),
        10.0,
        &TumorMotionModel::default(),
        Some(args.frames),
    )?;
    let mut frames = s.frames(10.0, 1)?;
    let (t, b) = tracking_and_baseline(
        "built-in demo: thorax phantom, real ExtMarker breathing trace",
        &s.config,
        &mut frames,
        &times,
        &disp,
        args.realtime,
        &args.out,
    )?;
    summary(&args.out, &t, &b);
    Ok(())
}

/// Runs `ionguide replay`.
pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let Some(plan) = &args.plan else {
        anyhow::bail!(
            "--plan is required for a replay on your own CT: the geometric planner works on the built-in phantom only (try `ionguide demo`)"
        );
    };
    let config = scenario::write_user_session(
        &args.out.join("session"),
        &args.ct,
        &args.structures,
        &args.roi,
        plan,
        args.budget_ms,
    )?;
    let (times, disp) = displacements(
        &args.trace,
        args.rate_hz,
        &TumorMotionModel::default(),
        args.frames,
    )?;
    let mut frames = RealCtFrames::load(&args.ct)?;
    let (t, b) = tracking_and_baseline(
        &format!("replay of {} with {}", args.ct.display(), args.trace.display()),
        &config,
        &mut frames,
        &times,
        &disp,
        args.realtime,
        &args.out,
    )?;
    summary(&args.out, &t, &b);
    Ok(())
}
