//! `ionguide demo` and `ionguide replay`: recorded breathing through the whole chain —
//! pipeline, UDP link, controller — scored against the truth, with a report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ionguide::range::PatientPosition;
use ionguide_sim::anatomy::phantom::PhantomSpec;
use ionguide_sim::delivery::gating::GatingWindow;
use ionguide_sim::delivery::timeline::SynchrotronModel;
use ionguide_sim::imaging::model::ImagingModel;
use ionguide_sim::imaging::sources::{FrameSource, RealCtFrames};
use ionguide_sim::motion::tumor::{displacements, TumorMotionModel};
use ionguide_sim::planning::ct::CtPlannerOptions;
use ionguide_sim::planning::PlannerOptions;
use ionguide_sim::replay::{self, ReplayOptions, ReplayResult};
use ionguide_sim::report::write_report;
use ionguide_sim::scenario;
use ionguide_sim::scoring::deliveries::{DeliverySetup, DoseSetup};
use ionguide_sim::scoring::histogram::Quantiles;

/// The built-in demo: a thorax phantom planned with carbon, driven by a real breathing trace.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Output folder (session files, audit log, report).
    #[arg(long, default_value = "ionguide-demo")]
    out: PathBuf,
    /// At most this many frames (default: as many as the deliveries take).
    #[arg(long)]
    frames: Option<usize>,
    /// The small CI phantom (128×128×24) instead of the reference one (256×256×48).
    #[arg(long)]
    small: bool,
    /// Pace frames in real time instead of as fast as the chain takes them.
    #[arg(long)]
    realtime: bool,
    /// Latency budget, ms.
    #[arg(long, default_value_t = 50.0)]
    budget_ms: f64,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// How the replay images, delivers and doses.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// In-room CT: `slab-2hz` (2 frames/s, 250 ms acquisition, 300 ms reconstruction) or
    /// `ideal-10hz` (10 instantaneous frames/s, for comparison).
    #[arg(long, default_value = "slab-2hz")]
    imaging: String,
    /// Synchrotron timing: `fast` (a multi-energy carbon synchrotron of today) or `matrad`
    /// (the constants matRad's 4D dose uses).
    #[arg(long, default_value = "fast")]
    synchrotron: String,
    /// Ions per unit of spot weight.
    #[arg(long, default_value_t = 1e6)]
    pub(crate) particles_per_weight: f64,
    /// Gating window: the beam is on while the tumor is within this distance of its planned
    /// (mid-)position along its main axis of motion, mm.
    #[arg(long, default_value_t = 2.0)]
    gating_window_mm: f64,
    /// Skip the 4D dose (errors only).
    #[arg(long)]
    no_dose: bool,
    /// Dose grid spacing, mm.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) dose_grid_mm: f64,
    /// Motion samples per second for the truth (at least 20 per breathing cycle).
    #[arg(long, default_value_t = 10.0)]
    motion_rate_hz: f64,
    /// matRad machine data folder per ion (default: the bundled generic machines).
    #[arg(long)]
    pub(crate) machine_dir: Vec<PathBuf>,
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
    /// RT Ion Plan; without one, the geometric planner plans the CT for the target ROI (the
    /// planner options below).
    #[arg(long)]
    plan: Option<PathBuf>,
    #[command(flatten)]
    planner: PlannerArgs,
    /// Also write the plan made without --plan to this file (RT Ion Plan).
    #[arg(long, conflicts_with = "plan")]
    save_plan: Option<PathBuf>,
    /// Motion trace: ExtMarker (`;`-separated) or CSV `t_s,x_mm,y_mm,z_mm` (tumor displacement).
    #[arg(long)]
    trace: PathBuf,
    /// At most this many frames (default: as many as the deliveries take).
    #[arg(long)]
    frames: Option<usize>,
    /// Pace frames in real time.
    #[arg(long)]
    realtime: bool,
    /// Latency budget, ms.
    #[arg(long, default_value_t = 100.0)]
    budget_ms: f64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// The geometric planner's options (`ionguide plan`, and `ionguide replay` without `--plan`).
#[derive(Debug, Clone, clap::Args)]
pub struct PlannerArgs {
    /// Ion: 1H (p), 4He, 12C, 16O, 20Ne.
    #[arg(long, default_value = "12C")]
    ion: ionguide::units::Ion,
    /// Gantry angles, degrees, comma-separated (default: two
    /// chosen between −90° and 90°, clear of the couch, entering on the target's side).
    #[arg(long, value_delimiter = ',')]
    gantry: Vec<f64>,
    /// Margin around the target ROI the spots cover, mm.
    #[arg(long, default_value_t = 3.0)]
    margin_mm: f64,
    /// Spot spacing, mm (default: 1.5 mm, widened with the layer spacing to keep the plan
    /// within --max-spots).
    #[arg(long)]
    spot_spacing_mm: Option<f64>,
    /// Energy layer spacing, mm of water (default: 2 mm, widened as the spot spacing).
    #[arg(long)]
    layer_spacing_mm: Option<f64>,
    /// Spot budget of the automatic spacings.
    #[arg(long, default_value_t = 10_000)]
    max_spots: usize,
    /// Lowest energy the machine delivers, MeV/u (default: the range table's).
    #[arg(long)]
    min_energy_mev_u: Option<f64>,
    /// Highest energy the machine delivers, MeV/u (default: the range table's).
    #[arg(long)]
    max_energy_mev_u: Option<f64>,
    /// Patient position (HFS, HFP, FFS, FFP; default: the CT's, else HFS).
    #[arg(long)]
    patient_position: Option<String>,
}

impl PlannerArgs {
    /// The planner options these arguments give.
    pub fn options(&self) -> anyhow::Result<CtPlannerOptions> {
        let mut o = CtPlannerOptions {
            ion: self.ion,
            margin_mm: self.margin_mm,
            spot_spacing_mm: self.spot_spacing_mm,
            layer_spacing_mm: self.layer_spacing_mm,
            max_spots: self.max_spots,
            ..CtPlannerOptions::default()
        };
        if !self.gantry.is_empty() {
            o.gantry_angles_deg = Some(self.gantry.clone());
        }
        if let Some(code) = &self.patient_position {
            o.patient_position = Some(
                PatientPosition::from_code(code)
                    .with_context(|| format!("--patient-position {code:?}: one of HFS, HFP, FFS, FFP"))?,
            );
        }
        if self.min_energy_mev_u.is_some() || self.max_energy_mev_u.is_some() {
            let (lo, hi) = ionguide::range::RangeEnergyTable::new(self.ion)?.energy_span_mev_u();
            o.energy_limits_mev_u = Some([
                self.min_energy_mev_u.unwrap_or(lo),
                self.max_energy_mev_u.unwrap_or(hi),
            ]);
        }
        Ok(o)
    }

    /// Whether any option differs from its default.
    fn is_set(&self) -> bool {
        self.ion != ionguide::units::Ion::CARBON12
            || !self.gantry.is_empty()
            || self.margin_mm != 3.0
            || self.spot_spacing_mm.is_some()
            || self.layer_spacing_mm.is_some()
            || self.max_spots != 10_000
            || self.min_energy_mev_u.is_some()
            || self.max_energy_mev_u.is_some()
            || self.patient_position.is_some()
    }
}

/// Gives the demo plan's spots the weights of a flat 2 Gy target dose (the geometric
/// planner weighs all spots alike) and rewrites its RT Ion Plan.
pub(crate) fn flatten_demo_plan(
    config: &Path,
    args: &DeliveryArgs,
    inside: impl Fn(&ionguide::units::PointMm) -> bool,
) -> anyhow::Result<()> {
    eprintln!("weighting the spots for a flat 2 Gy target dose (matRad pencil beams) …");
    let mut dose = scenario::dose_setup(
        config,
        &args.machine_dir,
        args.particles_per_weight,
        args.dose_grid_mm,
    )?;
    let (cfg, session) = replay::load_session(config)?;
    let mut plan = session.plan.clone();
    let f = ionguide_sim::planning::optimize::flatten_weights(
        &mut plan,
        &session.planned,
        &session.planning_ct,
        &session.hlut,
        &mut dose.engine,
        &dose.grid,
        2.0,
        16,
        inside,
    )?;
    eprintln!(
        "  dose at the spots' Bragg peaks: (p95 − p5)/median = {:.1}% after {} iterations",
        100.0 * f.peak_dose_spread,
        f.iterations
    );
    let bytes = ionguide_sim::planning::plan_bytes(&plan)?;
    std::fs::write(&cfg.planning.plan, bytes)
        .with_context(|| format!("writing {}", cfg.planning.plan.display()))?;
    Ok(())
}

/// The imaging model, synchrotron and dose set-up the arguments name.
fn setups(
    args: &DeliveryArgs,
    config: &Path,
    budget_ms: f64,
) -> anyhow::Result<(ImagingModel, DeliverySetup, Option<DoseSetup>)> {
    let imaging = ImagingModel::preset(&args.imaging).with_context(|| {
        format!(
            "--imaging {:?}: not a preset (one of {})",
            args.imaging,
            ImagingModel::PRESETS.join(", ")
        )
    })?;
    let (preset, synchrotron) = match args.synchrotron.as_str() {
        "fast" => (
            "fast multi-energy synchrotron",
            SynchrotronModel::fast_multi_energy(),
        ),
        "matrad" => ("matRad 4D timing", SynchrotronModel::matrad()),
        other => anyhow::bail!("--synchrotron {other:?}: one of fast, matrad"),
    };
    // the session's corrections must last from one frame to the next under this imaging
    scenario::set_validity_ms(config, scenario::validity_ms_for(&imaging, budget_ms))?;
    let delivery = DeliverySetup {
        preset: preset.into(),
        synchrotron,
        particles_per_weight: args.particles_per_weight,
        // The plan is made on the planning CT, the tumor's mid-position (displacement 0): the
        // gate opens while the tumor is within ±gating_window_mm of it along its main axis.
        gating: GatingWindow::band(-args.gating_window_mm, args.gating_window_mm),
    };
    let dose = if args.no_dose {
        None
    } else {
        eprintln!("preparing the dose engine (matRad machine data) …");
        Some(scenario::dose_setup(
            config,
            &args.machine_dir,
            args.particles_per_weight,
            args.dose_grid_mm,
        )?)
    };
    Ok((imaging, delivery, dose))
}

#[allow(clippy::too_many_arguments)]
fn replay_and_report(
    name: &str,
    config: &Path,
    source: &mut dyn FrameSource,
    times: &[f64],
    disp: &[[f64; 3]],
    realtime: bool,
    max_frames: Option<usize>,
    args: &DeliveryArgs,
    budget_ms: f64,
    out: &Path,
) -> anyhow::Result<ReplayResult> {
    let (imaging, delivery, mut dose) = setups(args, config, budget_ms)?;
    let opts = ReplayOptions {
        realtime,
        progress: true,
        imaging,
        motion_rate_hz: Some(args.motion_rate_hz),
        max_frames,
        delivery: Some(delivery),
        ..ReplayOptions::default()
    };
    let tracked = replay::run_with_dose(name, config, source, times, disp, &opts, dose.as_mut())?;
    write_report(
        out,
        &tracked.report,
        &tracked.frames,
        &tracked.latency_ms,
        None,
        tracked.dose_plots.as_ref(),
    )
    .context("writing the report")?;
    Ok(tracked)
}

fn summary(out: &Path, t: &ReplayResult) {
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
    let untracked = r.delivery.as_ref().and_then(|d| d.deliveries.get("untracked"));
    row("tumor position error (mm)", &r.tumor_error_mm, None);
    row(
        "delivered-spot error (mm)",
        &r.spot_error_mm,
        untracked.map(|u| &u.spot_error_mm),
    );
    row(
        "range error (mm)",
        &r.range_error_mm,
        untracked.map(|u| &u.range_error_mm),
    );
    row(
        &format!("latency (ms, budget {})", r.budget_ms),
        &r.latency_ms,
        None,
    );
    row("from acquisition (ms)", &r.latency_from_acquisition_ms, None);
    if let Some(d) = &r.delivery {
        println!();
        println!(
            "imaging {} | synchrotron: {} | motion {:.0} Hz, {:.0} samples per {:.1} s cycle",
            r.imaging.name, d.preset, d.motion.rate_hz, d.motion.samples_per_cycle, d.motion.period_s
        );
        println!(
            "{:<10} {:>13} {:>13} {:>7} {:>22} {:>22}",
            "delivery", "spots", "treatment s", "duty", "spot err p50/p95 mm", "range err p50/p95 mm"
        );
        for (name, s) in &d.deliveries {
            println!(
                "{:<10} {:>13} {:>13.1} {:>6.0}% {:>22} {:>22}",
                name,
                format!("{}/{}", s.spots_delivered, s.spots_planned),
                s.treatment_s,
                s.duty_cycle * 100.0,
                format!(
                    "{:.2} / {:.2}",
                    s.spot_error_mm.p50,
                    s.spot_error_mm.p95.unwrap_or(f64::NAN)
                ),
                format!(
                    "{:.2} / {:.2}",
                    s.range_error_mm.p50,
                    s.range_error_mm.p95.unwrap_or(f64::NAN)
                ),
            );
        }
    }
    if let Some(d) = &r.dose {
        println!();
        println!(
            "dose, target {} (prescription {} Gy = static median)",
            d.target_roi,
            sig(d.prescription_gy)
        );
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>7} {:>6} {:>12} {:>10} {:>10}",
            "delivery", "D98 Gy", "D95 Gy", "D2 Gy", "V95 %", "HI", "V50 out cc", "γ3%/3mm", "γ2%/2mm"
        );
        let mut rows = vec![("static", &d.static_dose)];
        if let Some(t) = &d.tracked {
            rows.push(("tracked", t));
        }
        rows.push(("untracked", &d.untracked));
        rows.push(("gated", &d.gated));
        for (name, f) in rows {
            let g = |x: Option<f64>| x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into());
            println!(
                "{:<10} {:>8} {:>8} {:>8} {:>7.1} {:>6.3} {:>12.1} {:>10} {:>10}",
                name,
                sig(f.d98_gy),
                sig(f.d95_gy),
                sig(f.d2_gy),
                f.v95_pct,
                f.homogeneity_index,
                f.v50_outside_cc,
                g(f.gamma_3pct_3mm_pct),
                g(f.gamma_2pct_2mm_pct)
            );
        }
    }
    println!();
    println!("report: {}", out.join("index.html").display());
}

/// Four significant digits, whatever the scale (a plan weighted in small units doses in mGy).
fn sig(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return format!("{v}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    format!("{v:.decimals$}")
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
    if !args.delivery.no_dose {
        let phantom = s.phantom.clone();
        flatten_demo_plan(&s.config, &args.delivery, move |p| phantom.in_ptv(p, 0.0))?;
    }
    let (times, disp) = displacements(
        &scenario::bundled_trace(),
        args.delivery.motion_rate_hz,
        &TumorMotionModel::default(),
        None,
    )?;
    let mut frames = s.frames(10.0, 1)?;
    let t = replay_and_report(
        "built-in demo: thorax phantom, real ExtMarker breathing trace",
        &s.config,
        &mut frames,
        &times,
        &disp,
        args.realtime,
        args.frames,
        &args.delivery,
        args.budget_ms,
        &args.out,
    )?;
    summary(&args.out, &t);
    Ok(())
}

/// Runs `ionguide replay`.
pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let session = args.out.join("session");
    if args.plan.is_some() && args.planner.is_set() {
        anyhow::bail!(
            "the planner options (--ion, --gantry, --margin-mm, …) make a plan when --plan is not given; with --plan they have no effect"
        );
    }
    let config = match &args.plan {
        Some(plan) => scenario::write_user_session(
            &session,
            &args.ct,
            &args.structures,
            &args.roi,
            plan,
            args.budget_ms,
        )?,
        None => {
            eprintln!(
                "no --plan: planning {} for ROI {:?} with {} …",
                args.ct.display(),
                args.roi,
                args.planner.ion
            );
            let (config, planned) = scenario::write_user_session_planned(
                &session,
                &args.ct,
                &args.structures,
                &args.roi,
                &args.planner.options()?,
                args.budget_ms,
            )?;
            crate::plan::print_summary(&planned.summary);
            if let Some(to) = &args.save_plan {
                let from = session.join("RP.dcm");
                std::fs::copy(&from, to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
                eprintln!("plan written to {}", to.display());
            }
            config
        }
    };
    let (times, disp) = displacements(
        &args.trace,
        args.delivery.motion_rate_hz,
        &TumorMotionModel::default(),
        None,
    )?;
    let mut frames = RealCtFrames::load(&args.ct)?;
    let t = replay_and_report(
        &format!("replay of {} with {}", args.ct.display(), args.trace.display()),
        &config,
        &mut frames,
        &times,
        &disp,
        args.realtime,
        args.frames,
        &args.delivery,
        args.budget_ms,
        &args.out,
    )?;
    summary(&args.out, &t);
    Ok(())
}
