//! `ionguide gate` (release gate: measured latencies against `benches/budgets.toml`, non-zero
//! exit on any breach) and `ionguide soak` (a long flat-out run: memory, latency stability
//! and every frame accounted for in the audit log).

use std::path::PathBuf;

use anyhow::Context;
use ionguide_sim::gate::{
    check, run_workload, run_workload_observed, Budgets, Delivery, Workload, WorkloadResult,
};

/// Gate a release on latency budgets.
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// `small` (what CI affords) or `reference` (512×512×48, ~10,000 spots; for releases).
    #[arg(long, value_enum, default_value = "small")]
    workload: WorkloadArg,
    /// Budgets file.
    #[arg(long, default_value = "benches/budgets.toml")]
    budgets: PathBuf,
    /// Override the budgets file's frame count.
    #[arg(long)]
    frames: Option<u64>,
    /// Override the budgets file's slice delivery: `stream` (slices arrive over the frame
    /// period, as from a scanner) or `burst` (every slice at once when the frame is due).
    #[arg(long, value_enum)]
    delivery: Option<DeliveryArg>,
    /// Working folder (session files, audit log).
    #[arg(long, default_value = "target/gate")]
    out: PathBuf,
    /// Also write the measurements as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of running a workload, check the kernels' criterion benches (`[benches]` in
    /// the budgets file) against criterion's latest estimates; run `cargo bench` first.
    #[arg(long, conflicts_with_all = ["workload", "frames", "delivery", "console", "realtime_priority"])]
    benches: bool,
    /// Run the stage threads under SCHED_FIFO at this priority (1–99; needs CAP_SYS_NICE),
    /// as a session's `[realtime] priority` does: the figures then say what the chain costs
    /// with the rest of the host (a browser on the console, a build) behind it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=99))]
    realtime_priority: u8,
    /// Where criterion wrote its estimates (with `--benches`).
    #[arg(long, default_value = "target/criterion", requires = "benches")]
    criterion_dir: PathBuf,
    /// Serve the live console (view-only) here while the workload runs: what the console
    /// costs the chain is then in the figures.
    #[arg(long)]
    console: Option<std::net::SocketAddr>,
}

/// The gate's console: started with the chain, fed each finished frame.
struct GateConsole {
    addr: std::net::SocketAddr,
    console: Option<crate::console::Console>,
    error: Option<anyhow::Error>,
}

impl ionguide_sim::gate::Observer for GateConsole {
    fn started(&mut self, pipeline: &ionguide::pipeline::Pipeline) {
        match crate::console::start(self.addr, "release gate".into(), None, pipeline.operator()) {
            Ok(c) => {
                eprintln!("console on http://{}/", c.addr);
                self.console = Some(c);
            }
            Err(e) => self.error = Some(e),
        }
    }
    fn frame(&mut self, event: &ionguide::pipeline::FrameEvent) {
        if let Some(c) = &self.console {
            c.state.record(event);
        }
    }
}

/// Run the pipeline flat out for a long time and account for every frame.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Frames.
    #[arg(long, default_value_t = 100_000)]
    frames: u64,
    /// Workload.
    #[arg(long, value_enum, default_value = "small")]
    workload: WorkloadArg,
    /// Working folder.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DeliveryArg {
    Stream,
    Burst,
}

impl From<DeliveryArg> for Delivery {
    fn from(d: DeliveryArg) -> Self {
        match d {
            DeliveryArg::Stream => Delivery::Stream,
            DeliveryArg::Burst => Delivery::Burst,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorkloadArg {
    Small,
    Reference,
}

impl From<WorkloadArg> for Workload {
    fn from(w: WorkloadArg) -> Self {
        match w {
            WorkloadArg::Small => Workload::Small,
            WorkloadArg::Reference => Workload::Reference,
        }
    }
}

fn describe(r: &WorkloadResult) {
    println!(
        "workload {}: {} frames at {} Hz ({} delivery), {} voxels/frame, {} spots; corrected {} held {} (deadline {}) rejected {} dropped {}; stale corrections {}",
        r.workload.name(),
        r.frames,
        r.rate_hz,
        r.delivery.name(),
        r.frame_voxels,
        r.spots,
        r.corrected,
        r.held,
        r.deadline_misses,
        r.rejected,
        r.dropped,
        r.stale_corrections
    );
    println!(
        "resident memory: {:.1} MiB after warm-up, {:.1} MiB at the end, peak {:.1} MiB; wall {:.1} s",
        r.rss_mib_start, r.rss_mib_end, r.rss_mib_peak, r.wall_s
    );
    let waits: Vec<String> = r
        .wait_ms
        .iter()
        .map(|(stage, l)| format!("{stage} {:.2}/{:.2}", l.p50, l.p99))
        .collect();
    println!(
        "waiting for a thread before each stage, p50/p99 ms: {}",
        waits.join(", ")
    );
    for (when, f) in ["before", "after"].iter().zip(&r.host_floor) {
        println!(
            "host floor {when} the run: frame copy {:.3} ms, compute kernel {:.3} ms, idle page touch {:.2} µs/page",
            f.frame_copy_ms, f.compute_ms, f.idle_touch_us_per_page
        );
    }
    let steal = r
        .steal_ms
        .map_or("not measured".to_owned(), |ms| format!("{ms:.0} ms"));
    println!("CPU taken by the host (steal) over the run: {steal}; threads waiting for a CPU (ms waiting / ms running):");
    for t in r
        .threads
        .iter()
        .filter(|t| t.cpu_ms > 1.0 || t.runqueue_wait_ms > 1.0)
    {
        let policy = match (t.policy.as_str(), t.rt_priority) {
            ("fifo" | "rr", p) => format!(", {} {p}", t.policy),
            _ => String::new(),
        };
        println!(
            "  {:<20} {:>8.1} / {:>8.1}  ({} timeslices{policy})",
            t.name, t.runqueue_wait_ms, t.cpu_ms, t.timeslices
        );
    }
    for t in &r.deadline_miss_timelines {
        println!("deadline missed, {t}");
    }
}

/// Runs `ionguide gate`.
pub fn gate(args: GateArgs) -> anyhow::Result<()> {
    let budgets = Budgets::load(&args.budgets).map_err(anyhow::Error::msg)?;
    if args.benches {
        return gate_benches(&budgets, &args);
    }
    let workload: Workload = args.workload.into();
    let b = budgets.of(workload);
    let frames = args.frames.unwrap_or(b.frames);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let delivery = args.delivery.map_or(b.delivery, Delivery::from);
    let mut console = args.console.map(|addr| GateConsole {
        addr,
        console: None,
        error: None,
    });
    let r = run_workload_observed(
        workload,
        &args.out,
        frames,
        b.rate_hz,
        delivery,
        b.deadline_ms,
        args.realtime_priority,
        true,
        console
            .as_mut()
            .map(|c| c as &mut dyn ionguide_sim::gate::Observer),
    )?;
    if let Some(e) = console.and_then(|c| c.error) {
        return Err(e.context("the gate's console"));
    }
    describe(&r);
    let lines = check(&r, b);
    print_lines(&lines, 34);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&(&r, &lines))? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let breaches = lines.iter().filter(|l| !l.pass).count();
    if breaches > 0 {
        anyhow::bail!(
            "{breaches} budget(s) breached on the {} workload ({})",
            workload.name(),
            args.budgets.display()
        );
    }
    println!(
        "\ngate passed: every budget of the {} workload held",
        workload.name()
    );
    Ok(())
}

/// Runs `ionguide soak`.
pub fn soak(args: SoakArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let r = run_workload(
        args.workload.into(),
        &args.out,
        args.frames,
        0.0,
        Delivery::Burst,
        1000.0,
        true,
    )?;
    describe(&r);
    let audited: u64 = r.audited.values().sum();
    println!(
        "end to end ms: whole run p50 {:.2} p99 {:.2} max {:.2}; first tenth p99 {:.2}; last tenth p99 {:.2}",
        r.end_to_end_ms.p50,
        r.end_to_end_ms.p99,
        r.end_to_end_ms.max,
        r.end_to_end_first_tenth_ms.p99,
        r.end_to_end_last_tenth_ms.p99
    );
    println!(
        "audit log: {audited} frames accounted for ({:?}) of {} sent",
        r.audited, r.frames
    );
    if audited != r.frames {
        anyhow::bail!(
            "{} frame(s) missing from the audit log",
            r.frames.abs_diff(audited)
        );
    }
    Ok(())
}

/// The budget table: one line per quantity.
fn print_lines(lines: &[ionguide_sim::gate::GateLine], width: usize) {
    println!();
    println!(
        "{:<width$} {:>10} {:>10} {:>7}  verdict",
        "quantity", "budget", "measured", "ratio"
    );
    for l in lines {
        println!(
            "{:<width$} {:>10.2} {:>10.2} {:>7.2}  {}",
            l.quantity,
            l.budget,
            l.measured,
            l.ratio,
            if l.pass { "ok" } else { "BREACH" }
        );
    }
}

/// `ionguide gate --benches`: criterion's latest estimates against `[benches]`.
fn gate_benches(budgets: &Budgets, args: &GateArgs) -> anyhow::Result<()> {
    if budgets.benches.is_empty() {
        anyhow::bail!("{}: no [benches] budgets", args.budgets.display());
    }
    let (lines, errors) = ionguide_sim::gate::benches::check_benches(&budgets.benches, &args.criterion_dir);
    let width = lines.iter().map(|l| l.quantity.len()).max().unwrap_or(8).max(8);
    print_lines(&lines, width);
    for e in &errors {
        eprintln!("{e}");
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&lines)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let breaches = lines.iter().filter(|l| !l.pass).count();
    if breaches > 0 {
        anyhow::bail!(
            "{breaches} bench budget(s) breached or not measured ({})",
            args.budgets.display()
        );
    }
    println!("\ngate passed: every bench budget held");
    Ok(())
}
