//! `ionguide-controller`: a simulated gantry controller on a UDP port. Prints every beam
//! state change, one line each, until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ionguide::link::{LinkKey, LinkOptions, LinkReceiver};
use ionguide_sim::delivery::controller::{spawn, BeamState, ControllerConfig, DeliveryModel};
use ionguide_sim::delivery::timeline::SynchrotronModel;

/// A simulated gantry controller: verifies link messages, holds the beam on silence, HOLD,
/// expiry or any rejected datagram, and ACKs the sender.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:7400.
    #[arg(long)]
    bind: SocketAddr,
    /// Shared key file (raw bytes or hex, at least 32 bytes, mode 600).
    #[arg(long)]
    key: PathBuf,
    /// Watchdog period, ms.
    #[arg(long, default_value_t = 100)]
    watchdog_ms: u64,
    /// Do not hold the beam on rejected (forged, replayed, malformed) datagrams.
    #[arg(long)]
    no_hold_on_rejected: bool,
    /// RT Ion Plan to deliver: while the beam is on, its spots are delivered in plan order
    /// and reported to the sender (DELIVERED). Without it the controller only tracks the
    /// beam state.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Particles per unit of Scan Spot Meterset Weight (1 when the plan's meterset is NP).
    #[arg(long, default_value_t = 1.0)]
    particles_per_weight: f64,
    /// The machine's timing: `matrad` or `fast` (a fast multi-energy synchrotron).
    #[arg(long, default_value = "fast")]
    machine: String,
}

fn main() -> std::process::ExitCode {
    // One line with the cause chain and exit 1, like the ionguide CLI: no backtrace dump.
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let key = LinkKey::from_file(&args.key)?;
    let receiver = LinkReceiver::bind(args.bind, &key, &LinkOptions::default())
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let mut config = ControllerConfig::default()
        .with_watchdog(Duration::from_millis(args.watchdog_ms))
        .with_hold_on_rejected(!args.no_hold_on_rejected);
    if let Some(path) = &args.plan {
        let machine = match args.machine.as_str() {
            "matrad" => SynchrotronModel::matrad(),
            "fast" => SynchrotronModel::fast_multi_energy(),
            other => anyhow::bail!("unknown machine {other:?} (matrad or fast)"),
        };
        let (plan, _) = ionguide::dicom::rtplan::read_plan(path)
            .with_context(|| format!("cannot read the plan {}", path.display()))?;
        let model = DeliveryModel::from_plan(&plan, &machine, args.particles_per_weight)
            .context("cannot time the plan's delivery")?;
        println!(
            "delivering {} spots, {:.1} s of beam-on time",
            model.spots().len(),
            model.total_s()
        );
        config = config.with_delivery(model);
    }
    let handle = spawn(receiver, config, |e| {
        let state = match e.to {
            BeamState::BeamOn => "BEAM_ON",
            BeamState::Held => "HELD",
        };
        let reason = e.cause.hold_reason().map_or("-", |r| r.name());
        println!(
            "{:>10.3} ms  {state:<7}  reason={reason}  cause={:?}",
            e.since_start.as_secs_f64() * 1e3,
            e.cause
        );
    })?;
    println!("listening on {}", handle.local_addr());
    while handle.is_running() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = handle.stop().context("controller stopped")?;
    println!("delivered {} spot piece(s)", c.delivery_log().len());
    Ok(())
}
