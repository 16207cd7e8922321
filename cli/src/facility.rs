//! `ionguide facility --config facility.toml`: one session per treatment room, each its own
//! `ionguide run` process, so that a crash, hang or hold in one room can never stop or slow
//! another's chain (no shared memory, threads, sockets or audit log; the configuration
//! refuses rooms that would share a receiver, controller, key or log). Every room's plan is
//! checked against its room before its session starts; a room whose plan does not fit does
//! not start, and says why. `--check` only checks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ionguide::facility::{Facility, Room};

/// Run one session per treatment room, isolated, from a facility configuration.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Facility configuration (TOML): rooms, their machines, ions, energies, angles, sessions.
    #[arg(long)]
    config: PathBuf,
    /// Only check every room's plan against its room; start nothing.
    #[arg(long)]
    check: bool,
    /// Only these rooms (repeatable; default: all).
    #[arg(long = "room")]
    rooms: Vec<String>,
    /// Stop each room's session after this many frames (default: until SIGINT/SIGTERM).
    #[arg(long)]
    frames: Option<u64>,
}

/// Checks `room`'s plan (the one its session configuration names) against the room.
pub fn check_room(room: &Room) -> anyhow::Result<()> {
    let plan_path = &room.session.planning.plan;
    let (plan, _) = ionguide::dicom::rtplan::read_plan(plan_path)
        .with_context(|| format!("room {:?}: reading its plan", room.config.name))?;
    let identity = ionguide::dicom::identity::read_identity(plan_path)
        .with_context(|| format!("room {:?}: reading its plan", room.config.name))?;
    room.check_plan(&plan, &identity.beam_machines)?;
    Ok(())
}

/// Loads a facility and the room of this name, for `ionguide run --facility F --room R`.
pub fn load_room(config: &Path, name: &str) -> anyhow::Result<Room> {
    let facility = Facility::load(config)?;
    let names: Vec<&str> = facility.rooms.iter().map(|r| r.config.name.as_str()).collect();
    facility.room(name).cloned().with_context(|| {
        format!(
            "{}: no room {name:?} (rooms: {})",
            config.display(),
            names.join(", ")
        )
    })
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let facility = Facility::load(&args.config)?;
    for wanted in &args.rooms {
        if facility.room(wanted).is_none() {
            anyhow::bail!("{}: no room {wanted:?}", args.config.display());
        }
    }
    let rooms: Vec<&Room> = facility
        .rooms
        .iter()
        .filter(|r| args.rooms.is_empty() || args.rooms.contains(&r.config.name))
        .collect();
    let mut fit = Vec::new();
    let mut unfit = 0;
    for room in &rooms {
        match check_room(room) {
            Ok(()) => {
                println!(
                    "room {:?}: the plan fits (machine {:?})",
                    room.config.name, room.config.machine
                );
                fit.push(*room);
            }
            Err(e) => {
                unfit += 1;
                eprintln!("room {:?}: NOT STARTED: {e:#}", room.config.name);
            }
        }
    }
    if args.check {
        if unfit > 0 {
            anyhow::bail!("{unfit} room(s) of {} cannot deliver their plan", rooms.len());
        }
        println!("facility {:?}: every room's plan fits its room", facility.name);
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    let exe = std::env::current_exe().context("finding the ionguide executable")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for room in &fit {
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .arg("--config")
            .arg(&room.config.session)
            .arg("--facility")
            .arg(&args.config)
            .arg("--room")
            .arg(&room.config.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = args.frames {
            cmd.arg("--frames").arg(n.to_string());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting room {:?}", room.config.name))?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let name = room.config.name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    println!("[{name}] {line}");
                }
            });
        }
        println!(
            "room {:?}: session started (pid {})",
            room.config.name,
            child.id()
        );
        children.push((room.config.name.clone(), child));
    }
    let mut failed = unfit;
    let mut signalled = false;
    while !children.is_empty() {
        if stop.load(Ordering::SeqCst) && !signalled {
            signalled = true;
            for (_, child) in &children {
                terminate(child);
            }
        }
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (name, _) = children.remove(i);
                    if status.success() {
                        println!("room {name:?}: session ended cleanly");
                    } else {
                        failed += 1;
                        eprintln!("room {name:?}: session ended with {status}; the other rooms go on");
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (name, _) = children.remove(i);
                    failed += 1;
                    eprintln!("room {name:?}: cannot wait for its session: {e}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if failed > 0 {
        anyhow::bail!("{failed} room(s) did not end cleanly");
    }
    Ok(())
}

/// Asks a room's session to stop cleanly (SIGTERM: final HOLD, audit log closed).
fn terminate(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}
