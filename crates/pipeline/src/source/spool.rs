//! A spool folder source: scanners or gateways that write files instead of sending them.
//!
//! # Contract for the writer
//!
//! - Write each object under a temporary name — starting with `.` or ending in `.part` or
//!   `.tmp` — and rename it into the spool folder when complete (rename is atomic on one
//!   file system). Such names are never read.
//! - A writer that cannot rename is also served: a file is taken once its size and
//!   modification time are unchanged between two consecutive polls. A writer that pauses
//!   longer than one poll interval mid-file then hands over a truncated object, which is
//!   rejected (not silently accepted): prefer the rename.
//! - Only regular files directly in the folder are read; subfolders are ignored.
//!
//! # What happens to a taken file
//!
//! It is read once and moved: to `done/` when the assembler accepted it (also a duplicate,
//! or an object of a frame that later times out — that is reported as an event), to
//! `rejected/` when refused, with a `NAME.reason.txt` beside it. A name already present in
//! the target gets a `-1`, `-2`… suffix, so nothing is overwritten. If a move fails, the file
//! stays but is remembered and not read again.
//!
//! A frame's [`complete_at`](super::RawFrame::complete_at) is the last object's modification
//! time (mapped onto the monotonic clock), not the poll that noticed it: the latency clock
//! starts when the data was there.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use super::{error_chain, AssemblerConfig, Collector, FrameAssembler, SourceEvent};
use crate::correction::RejectReason;

/// Subfolder for accepted files.
pub const DONE_DIR: &str = "done";
/// Subfolder for refused files (with their `.reason.txt`).
pub const REJECTED_DIR: &str = "rejected";

/// Configuration of a spool folder source.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// The watched folder (must exist); `done/` and `rejected/` are created inside.
    pub dir: PathBuf,
    /// Time between two polls; a file must look the same on two polls to be taken.
    pub poll_interval: Duration,
    /// Frame assembly rules and limits.
    pub assembler: AssemblerConfig,
}

/// Why a spool source could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool path is not an existing directory.
    #[error("spool folder {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    /// A subfolder could not be created.
    #[error("cannot create {path}")]
    CreateDir {
        /// The subfolder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The poll interval is zero.
    #[error("spool poll interval must be positive")]
    ZeroPollInterval,
    /// The watcher thread could not be started.
    #[error("cannot start the spool thread")]
    Thread(#[source] std::io::Error),
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollSummary {
    /// Files read and moved to `done/`.
    pub accepted: usize,
    /// Files read and moved to `rejected/`.
    pub rejected: usize,
    /// Files seen but not yet stable (or seen for the first time).
    pub waiting: usize,
}

/// The poll logic, without a thread: [`SpoolWatcher::poll`] is what the thread of
/// [`start`] calls every interval, usable directly for deterministic tests.
#[derive(Debug)]
pub struct SpoolWatcher {
    dir: PathBuf,
    done: PathBuf,
    rejected: PathBuf,
    collector: Collector,
    /// Size and modification time each candidate had at the previous poll.
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    /// Files read but not movable: never read again.
    stuck: HashSet<PathBuf>,
}

impl SpoolWatcher {
    /// A watcher of `config.dir` sending to `events`; creates `done/` and `rejected/`.
    pub fn new(config: &SpoolConfig, events: Sender<SourceEvent>) -> Result<Self, SpoolError> {
        if !config.dir.is_dir() {
            return Err(SpoolError::NotADirectory(config.dir.clone()));
        }
        let done = config.dir.join(DONE_DIR);
        let rejected = config.dir.join(REJECTED_DIR);
        for path in [&done, &rejected] {
            std::fs::create_dir_all(path).map_err(|source| SpoolError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        Ok(SpoolWatcher {
            dir: config.dir.clone(),
            done,
            rejected,
            collector: Collector::new(FrameAssembler::new(config.assembler.clone()), events),
            seen: HashMap::new(),
            stuck: HashSet::new(),
        })
    }

    /// One poll: takes the files that are stable since the previous poll, then rejects
    /// frames whose assembly timed out.
    pub fn poll(&mut self) -> PollSummary {
        let mut summary = PollSummary::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot list spool folder");
                return summary;
            }
        };
        let mut now_seen = HashMap::new();
        let mut stable = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_candidate(&path) || self.stuck.contains(&path) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let state = (meta.len(), meta.modified().ok());
            if self.seen.get(&path) == Some(&state) {
                stable.push((path, state.1));
            } else {
                summary.waiting += 1;
                now_seen.insert(path, state);
            }
        }
        // Forget files that vanished; keep the fresh observations for the next poll.
        self.seen = now_seen;
        stable.sort();
        for (path, modified) in stable {
            if self.take(&path, modified) {
                summary.accepted += 1;
            } else {
                summary.rejected += 1;
            }
        }
        self.collector.expire(Instant::now());
        summary
    }

    /// Reads, offers and moves one file; true when accepted.
    fn take(&mut self, path: &Path, modified: Option<SystemTime>) -> bool {
        let origin = format!("spool:{}", path.display());
        let at = arrival_instant(modified);
        let outcome = match std::fs::read(path) {
            Ok(bytes) => self
                .collector
                .offer(bytes, &origin, at)
                .map_err(|e| error_chain(&e)),
            Err(e) => {
                let reason = format!("cannot read {}: {e}", path.display());
                self.collector
                    .reject(&origin, RejectReason::Unreadable, reason.clone(), at);
                Err(reason)
            }
        };
        let accepted = outcome.is_ok();
        let target_dir = if accepted { &self.done } else { &self.rejected };
        match move_into(path, target_dir) {
            Ok(moved) => {
                if let Err(reason) = outcome {
                    let mut note = moved.into_os_string();
                    note.push(".reason.txt");
                    if let Err(e) = std::fs::write(&note, format!("{reason}\n")) {
                        tracing::warn!(error = %e, "cannot write rejection reason");
                    }
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot move taken spool file; it will not be read again");
                self.stuck.insert(path.to_owned());
            }
        }
        accepted
    }
}

/// Files the writer has finished by contract: not hidden, not a temporary name.
fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !(name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp"))
}

/// The monotonic instant matching a file's modification time (now when unknown or in the
/// future, e.g. after a clock step).
fn arrival_instant(modified: Option<SystemTime>) -> Instant {
    let now = Instant::now();
    modified
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// Moves `path` into `dir` without overwriting; returns the new path.
fn move_into(path: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let mut target = dir.join(name);
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        let mut alt = name.to_os_string();
        alt.push(format!("-{n}"));
        target = dir.join(alt);
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}

/// A running spool watcher. Dropping it stops it, as [`SpoolHandle::shutdown`] does.
#[derive(Debug)]
pub struct SpoolHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SpoolHandle {
    /// Stops polling and waits for the thread (at most one poll interval plus a poll).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the spool thread panicked");
            }
        }
    }
}

impl Drop for SpoolHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts watching `config.dir` on its own thread; events go to `events`.
pub fn start(config: SpoolConfig, events: Sender<SourceEvent>) -> Result<SpoolHandle, SpoolError> {
    if config.poll_interval.is_zero() {
        return Err(SpoolError::ZeroPollInterval);
    }
    let mut watcher = SpoolWatcher::new(&config, events)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in_thread = Arc::clone(&stop);
    let interval = config.poll_interval;
    let thread = std::thread::Builder::new()
        .name("spool".to_owned())
        .spawn(move || {
            while !stop_in_thread.load(Ordering::SeqCst) {
                watcher.poll();
                std::thread::sleep(interval);
            }
        })
        .map_err(SpoolError::Thread)?;
    Ok(SpoolHandle {
        stop,
        thread: Some(thread),
    })
}
