//! The `ionguide` command line: one subcommand per task, each in its own module.
//!
//! Each subcommand module exposes `Args` (clap) and `run(args) -> anyhow::Result<()>`.

use clap::{Parser, Subcommand};

mod audit;
mod console;
mod demo;
mod dose;
mod facility;
mod gate;
mod inspect;
mod plan;
mod predict;
mod range;
mod record;
mod register;
mod run;
mod surrogate_send;
mod wepl;

#[derive(Debug, Parser)]
#[command(
    name = "ionguide",
    version,
    about = "Real-time image-guided adaptive delivery for scanned ion-beam therapy"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ionguide=debug`.
    #[arg(long, global = true, default_value = "warn", env = "IONGUIDE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Summarize and check CT series, RT Structure Sets and RT Ion Plans (human or --json).
    Inspect(inspect::Args),
    /// CSDA range in water ↔ energy per nucleon.
    Range(range::Args),
    /// Water-equivalent path length through a CT series.
    Wepl(wepl::Args),
    /// A plan's dose on a CT (pencil-beam kernel) written as RT Dose, with D98/D95/D50/D2/mean/V95 per ROI.
    Dose(dose::Args),
    /// Rigid registration of a frame against the planning CT over a target region.
    Register(register::Args),
    /// Run the real-time pipeline (the daemon): frames in, corrections out, audit log.
    Run(run::Args),
    /// The built-in demo: a thorax phantom breathing a real trace, tracked end to end, with a report.
    Demo(demo::DemoArgs),
    /// Plan a CT for a target ROI with the geometric planner; write the RT Ion Plan.
    Plan(plan::Args),
    /// Replay a motion trace on your own CT, structures and plan (or a plan made for its target ROI), with a report.
    Replay(demo::ReplayArgs),
    /// Release gate: measure the pipeline on a workload and compare with benches/budgets.toml.
    Gate(gate::GateArgs),
    /// Soak: a long flat-out run; memory, latency stability, every frame in the audit log.
    Soak(gate::SoakArgs),
    /// Read an audit log: session, room setup, outcomes by reason, latency, how it ends.
    Audit(audit::Args),
    /// The facility: one isolated session per treatment room, each plan checked against its room.
    Facility(facility::Args),
    /// Rebuild the RT Ion Beams Treatment Record of a session from its audit log.
    Record(record::Args),
    /// Forecast breathing-marker traces a horizon ahead (causal), or score predictors with the published protocol.
    Predict(predict::Args),
    /// Replay recorded marker traces as the tracking system's authenticated SURROGATE stream (tests, demos).
    SurrogateSend(surrogate_send::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Range(args) => range::run(args),
        Command::Wepl(args) => wepl::run(args),
        Command::Dose(args) => dose::run(args),
        Command::Register(args) => register::run(args),
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::demo(args),
        Command::Plan(args) => plan::run(args),
        Command::Replay(args) => demo::replay(args),
        Command::Gate(args) => gate::gate(args),
        Command::Soak(args) => gate::soak(args),
        Command::Audit(args) => audit::run(args),
        Command::Facility(args) => facility::run(args),
        Command::Predict(args) => predict::run(args),
        Command::SurrogateSend(args) => surrogate_send::run(args),
        Command::Record(args) => record::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line, never a backtrace: the message names the
            // file and the fault, which is what the person at the console needs.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
