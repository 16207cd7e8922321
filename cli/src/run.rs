//! `ionguide run --config FILE`: the daemon. Loads and checks the session (refusing inputs
//! that do not belong together before anything listens or sends), opens the link and the
//! audit log, starts the frame source and the pipeline (one chain, `pipeline::chain`),
//! prints a live status line, and on SIGINT/SIGTERM stops cleanly: every frame in flight is audited, a final HOLD is sent, and the audit log
//! is flushed and closed with a shutdown record.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ionguide::audit::{AuditError, AuditRecord, TailStatus};
use ionguide::config::{Config, SourceConfig};
use ionguide::pipeline::{ChainBuilder, ChainError, Stats};
use ionguide::source::{scp, spool, AssemblerConfig};

/// Run the real-time pipeline as configured.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Stop after this many frames (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    frames: Option<u64>,
    /// Status line period, ms.
    #[arg(long, default_value_t = 500)]
    status_ms: u64,
    /// Facility configuration: check the plan against `--room` before the session starts.
    #[arg(long, requires = "room")]
    facility: Option<PathBuf>,
    /// The treatment room this session runs in (with `--facility`).
    #[arg(long, requires = "facility")]
    room: Option<String>,
    /// Serve the live console here (a loopback address by default; e.g. 127.0.0.1:8080).
    #[arg(long)]
    console: Option<std::net::SocketAddr>,
    /// Operator token file (mode 0600, ≥ 16 characters): enables the console's actions.
    #[arg(long, requires = "console")]
    console_token: Option<PathBuf>,
    /// At the end of the session, write its RT Ion Beams Treatment Record here (as
    /// `ionguide record` would from the audit log; refused if the file exists).
    #[arg(long)]
    record_out: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    // First of all: a SIGTERM that arrives while the session loads or the source starts
    // (the SCP already accepts associations) must still end in the clean stop below (final
    // HOLD, shutdown record), not in the default action, which kills the process mid-write.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    let config = Config::load(&args.config)?;
    if let (Some(facility), Some(room)) = (&args.facility, &args.room) {
        // before anything listens or sends: a plan for another room never starts here
        let room = crate::facility::load_room(facility, room)?;
        let mut checked = room.clone();
        checked.session = config.clone();
        crate::facility::check_room(&checked)?;
        tracing::info!(room = %room.config.name, machine = %room.config.machine, "the plan fits its room");
    }
    let config_text =
        std::fs::read(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let started = Instant::now();
    // Every load check (Frame of Reference, structure set, patient, isocenters, spot maps)
    // runs here, before the link, the audit log or the source is opened.
    let chain = ChainBuilder::new(config.clone())
        .context("loading the session")?
        .session_records(sha256(&config_text));
    let session = chain.session().clone();
    tracing::info!(
        spots = session.spot_count(),
        beams = session.plan.beams.len(),
        plan_warnings = session.plan_warnings.len(),
        "session loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match &session.options.room_setup {
        Some(room) => tracing::info!(
            room_frame_of_reference = %room.room_frame_of_reference_uid,
            "setup registration: frames are mapped from the room's coordinates ({room})"
        ),
        None => tracing::info!(
            "no setup registration: the first frame's Frame of Reference is kept for the session and \
             frames are registered in their own coordinates"
        ),
    }
    // the console's token is checked with the other inputs, before anything listens
    let token = args
        .console_token
        .as_deref()
        .map(crate::console::read_token)
        .transpose()?;
    let chain = chain.open().map_err(|e| match e {
        ChainError::Audit { source, .. } => not_clean_advice(source),
        e => anyhow::Error::new(e),
    })?;
    let events_tx = chain.events();

    let assembler = |expected: Option<usize>, timeout_ms: u64| AssemblerConfig {
        expected_slices: expected,
        assembly_timeout: Duration::from_millis(timeout_ms),
        max_objects_per_frame: config.resources.max_slices,
        max_object_bytes: config.resources.max_object_bytes,
        ..AssemblerConfig::default()
    };
    enum Source {
        Scp(scp::ScpHandle),
        Spool(spool::SpoolHandle),
    }
    let source = match &config.source {
        SourceConfig::Scp {
            bind,
            ae_title,
            expected_slices,
            assembly_timeout_ms,
            allowed_calling_ae_titles,
            allowed_peers,
            tls,
        } => {
            let h = scp::start(
                scp::ScpConfig {
                    network: scp::ScpOptions {
                        bind_addr: *bind,
                        ae_title: ae_title.clone(),
                        allowed_calling_ae_titles: allowed_calling_ae_titles.clone(),
                        allowed_peers: allowed_peers.clone(),
                        tls: tls.as_ref().map(|t| scp::TlsFiles {
                            cert_pem: t.cert.clone(),
                            key_pem: t.key.clone(),
                            ca_pem: t.ca.clone(),
                        }),
                        ..scp::ScpOptions::default()
                    },
                    assembler: assembler(*expected_slices, *assembly_timeout_ms),
                },
                events_tx,
            )?;
            eprintln!("listening for CT frames on {} as {ae_title}", h.local_addr());
            Source::Scp(h)
        }
        SourceConfig::Spool {
            dir,
            expected_slices,
            poll_ms,
            assembly_timeout_ms,
        } => {
            let h = spool::start(
                spool::SpoolConfig {
                    dir: dir.clone(),
                    poll_interval: Duration::from_millis(*poll_ms),
                    assembler: assembler(*expected_slices, *assembly_timeout_ms),
                },
                events_tx,
            )?;
            eprintln!("watching {} for CT frames", dir.display());
            Source::Spool(h)
        }
    };
    drop(session);
    let chain = chain.start()?;
    let audit_path = chain.audit_path.clone();
    let pipeline = chain.pipeline;
    let operator = pipeline.operator();
    let console = match args.console {
        Some(addr) => {
            let plan = config
                .planning
                .plan
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let patient = config
                .planning
                .patient_id
                .as_deref()
                .unwrap_or("(patient not configured)");
            let title = match &args.room {
                Some(room) => format!("{room} · plan {plan} · patient {patient}"),
                None => format!("plan {plan} · patient {patient}"),
            };
            let c = crate::console::start(addr, title, token, operator.clone())?;
            eprintln!("console on http://{}/", c.addr);
            Some(c)
        }
        None => None,
    };
    eprintln!(
        "sending corrections to {}; audit log {}",
        config.link.destination,
        config.audit.path.display()
    );

    let tty = std::io::stderr().is_terminal();
    let mut stats = Stats::new();
    let mut last_status = Instant::now();
    while !stop.load(Ordering::SeqCst) && !operator.end_requested() {
        if let Ok(e) = pipeline.telemetry().recv_timeout(Duration::from_millis(50)) {
            for e in std::iter::once(e).chain(pipeline.telemetry().try_iter()) {
                stats.record(&e);
                if let Some(c) = &console {
                    c.state.record(&e);
                }
            }
        }
        if last_status.elapsed() >= Duration::from_millis(args.status_ms) {
            last_status = Instant::now();
            if tty {
                eprint!("\r\x1b[2K{}", stats.status_line());
                let _ = std::io::stderr().flush();
            } else {
                tracing::info!("{}", stats.status_line());
            }
        }
        if args.frames.is_some_and(|n| stats.frames() >= n) {
            break;
        }
    }
    if tty {
        eprintln!();
    }
    eprintln!("stopping: auditing frames in flight, holding the beam");
    match source {
        Source::Scp(h) => h.shutdown(),
        Source::Spool(h) => h.shutdown(),
    }
    let telemetry = pipeline.telemetry().clone();
    if let Some(c) = &console {
        c.state.end();
    }
    let mut audit = pipeline.shutdown()?;
    for e in telemetry.try_iter() {
        stats.record(&e);
    }
    audit.write(&AuditRecord::Shutdown {
        unix_ns: ionguide::link::protocol::unix_now_ns(),
        reason: if stop.load(Ordering::SeqCst) {
            "signal".into()
        } else if operator.end_requested() {
            "ended by an operator at the console".into()
        } else {
            "frame count reached".into()
        },
    })?;
    // The closing checkpoint: a verifier can then tell this orderly end from a cut tail.
    audit.close()?;
    if let Some(out) = &args.record_out {
        // the session is over and its log closed: a failure here loses nothing (the log
        // keeps every delivered spot; `ionguide record` rebuilds the record from it)
        match crate::record::build(&audit_path, &config.planning.plan)
            .and_then(|(r, bytes)| crate::record::write_new(out, &bytes).map(|()| r))
        {
            Ok(r) => println!(
                "treatment record {}: {} beam(s), {} delivered spot piece(s)",
                out.display(),
                r.beams.len(),
                r.pieces().count()
            ),
            Err(e) => eprintln!(
                "treatment record not written: {e:#} (rebuild it with `ionguide record --audit {} --plan {} --out {}`)",
                audit_path.display(),
                config.planning.plan.display(),
                out.display()
            ),
        }
    }
    println!("{}", stats.status_line());
    println!(
        "stale corrections (sent after their deadline): {}",
        stats.stale_corrections
    );
    Ok(())
}

/// The daemon never appends to a log that does not end cleanly (the audit module refuses: a
/// new session after the damage would bury it). The operator gets the file, the byte offset
/// and what to do, since a crash is exactly when someone reads this message under pressure.
fn not_clean_advice(e: AuditError) -> anyhow::Error {
    const AFTER: &str = "the records before it are intact and the log is left untouched; \
                         move it aside (keep it, it is the record of the crashed session) and \
                         start again: a new log is then created";
    match e {
        AuditError::NotClean {
            path,
            status: TailStatus::TornTail { offset, bytes },
        } => anyhow::anyhow!(
            "audit log {} ends in a torn record at byte offset {offset} ({bytes} bytes of an \
             incomplete record, left by a crash mid-write); {AFTER}",
            path.display()
        ),
        AuditError::NotClean {
            path,
            status: TailStatus::Corrupt { offset, why },
        } => anyhow::anyhow!(
            "audit log {} is damaged at byte offset {offset} ({why}); {AFTER}",
            path.display()
        ),
        e => anyhow::Error::new(e),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
