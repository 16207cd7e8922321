//! The release gate's workloads and the soak: the phantom chain (pipeline, UDP link,
//! controller, audit log) driven at a fixed frame rate or flat out, measured per stage and
//! end to end with HDR histograms, with resident memory sampled from `/proc`. Budgets live in
//! the repository (`benches/budgets.toml`); [`check`] compares and lists every breach.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ionguide::link::{LinkKey, LinkOptions, LinkReceiver};
use ionguide::pipeline::{
    AuditStart, Chain as PipelineChain, ChainBuilder, ChainError, Outcome, Pipeline, Stage,
};
use ionguide::source::InProcessSource;
use serde::{Deserialize, Serialize};

use crate::anatomy::phantom::PhantomSpec;
use crate::delivery::controller::{spawn, ControllerConfig};
use crate::motion::tumor::{displacements, TumorMotionModel};
use crate::planning::PlannerOptions;
use crate::replay::ReplayError;
use crate::scenario::{bundled_trace, in_room_scanner, write_phantom_session};

pub mod benches;
pub mod host;
pub use host::{measure_host_floor, HostFloor, SchedSnapshot, ThreadSched};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// What CI affords: 128×128×24 frames, the same ~10,000-spot carbon plan.
    Small,
    /// The release workload: 512×512×48 frames, 2-beam carbon plan of ~10,000 spots, 80 mm ROI.
    Reference,
}

impl Workload {
    /// The phantom of this workload.
    pub fn phantom(self) -> PhantomSpec {
        match self {
            Workload::Small => PhantomSpec::small(),
            Workload::Reference => PhantomSpec {
                dims: [512, 512, 48],
                spacing_mm: [0.75, 0.75, 2.5],
                ..PhantomSpec::default()
            },
        }
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Reference => "reference",
        }
    }
}

/// p50 / p99 / max, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency {
            p50: 0.0,
            p99: 0.0,
            max: 0.0,
        };
    }
    Latency {
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
    }
}

/// What a workload run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadResult {
    /// Which.
    pub workload: Workload,
    /// Frames pushed.
    pub frames: u64,
    /// Frame rate asked for (0: flat out).
    pub rate_hz: f64,
    /// How the slices arrived.
    pub delivery: Delivery,
    /// Spots in the plan.
    pub spots: usize,
    /// Frame voxels.
    pub frame_voxels: usize,
    /// Outcome counts from telemetry.
    pub corrected: u64,
    /// Held.
    pub held: u64,
    /// Held because a deadline passed.
    pub deadline_misses: u64,
    /// Rejected.
    pub rejected: u64,
    /// Dropped.
    pub dropped: u64,
    /// Corrections sent after their deadline.
    pub stale_corrections: u64,
    /// Frame complete → corrections on the wire (corrected frames).
    pub end_to_end_ms: Latency,
    /// The same over the first and the last tenth of the run (stability).
    pub end_to_end_first_tenth_ms: Latency,
    /// See `end_to_end_first_tenth_ms`.
    pub end_to_end_last_tenth_ms: Latency,
    /// Per stage.
    pub stage_ms: BTreeMap<&'static str, Latency>,
    /// Per stage, how long a corrected frame waited before the stage took it up (from the
    /// previous stage's end; for ingest, from completion): time no stage worked on it,
    /// because its thread was not running yet.
    pub wait_ms: BTreeMap<&'static str, Latency>,
    /// Where each deadline-missed frame's time went (first 20), as the audit log has it.
    pub deadline_miss_timelines: Vec<String>,
    /// The host's speed measured in the same run, before and after.
    pub host_floor: [HostFloor; 2],
    /// Each thread's CPU time and time waiting for a CPU over the frames (busiest waiter
    /// first).
    pub threads: Vec<ThreadSched>,
    /// CPU time the hypervisor took from this guest over the frames, ms (all CPUs).
    pub steal_ms: Option<f64>,
    /// Resident memory after warm-up and at the end, MiB (`/proc/self/status` VmRSS).
    pub rss_mib_start: f64,
    /// See `rss_mib_start`.
    pub rss_mib_end: f64,
    /// Peak resident memory, MiB (VmHWM).
    pub rss_mib_peak: f64,
    /// Frames in the audit log by outcome; must add up to `frames`.
    pub audited: BTreeMap<&'static str, u64>,
    /// Wall time, s.
    pub wall_s: f64,
}

/// Reads a `/proc/self/status` field in kB as MiB (0 where unavailable).
pub fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds")
}

/// The chain a workload runs on: phantom session, pipeline, UDP link, controller, audit log,
/// and a cycle of pre-encoded breathing frames.
pub struct Chain {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Where frames go in.
    pub source: InProcessSource,
    /// Pre-encoded frames, cycled.
    pub encoded: Vec<Vec<Vec<u8>>>,
    /// Spots in the plan.
    pub spots: usize,
    /// Voxels per frame.
    pub frame_voxels: usize,
    audit_path: std::path::PathBuf,
    controller: crate::delivery::controller::ControllerHandle,
}

impl Chain {
    /// Builds the workload's session in `dir` and starts everything, time-shared.
    pub fn start(workload: Workload, dir: &Path, budget_ms: f64) -> Result<Chain, ReplayError> {
        Chain::start_with(workload, dir, budget_ms, 0)
    }

    /// [`Chain::start`] with the stage threads under `SCHED_FIFO` at `realtime_priority`
    /// (0: time-shared), written into the session's `[realtime]` as a user would, and
    /// required: a gate that asked for it must not measure without it.
    pub fn start_with(
        workload: Workload,
        dir: &Path,
        budget_ms: f64,
        realtime_priority: u8,
    ) -> Result<Chain, ReplayError> {
        // frames in the in-room scanner's own coordinates, as the demo and a clinic have them
        let scenario = write_phantom_session(
            dir,
            &workload.phantom(),
            &PlannerOptions::default(),
            budget_ms,
            Some(in_room_scanner()),
        )?;
        let distinct = 50usize;
        let (_, disp) = displacements(
            &bundled_trace(),
            10.0,
            &TumorMotionModel::default(),
            Some(distinct),
        )?;
        let mut synth = scenario.frames(10.0, 3)?;
        let mut encoded = Vec::with_capacity(disp.len());
        for (i, d) in disp.iter().enumerate() {
            encoded.push(crate::imaging::sources::FrameSource::frame(&mut synth, i, *d)?);
        }
        let frame_voxels = {
            let [a, b, c] = scenario.phantom.grid().dims();
            a * b * c
        };
        if realtime_priority > 0 {
            use std::io::Write;
            let io = |source| ReplayError::Io {
                path: scenario.config.clone(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&scenario.config)
                .map_err(io)?;
            write!(
                f,
                "\n[realtime]\npriority = {realtime_priority}\nrequired = true\n"
            )
            .map_err(io)?;
        }
        let builder =
            ChainBuilder::load(&scenario.config).map_err(|e| ReplayError::Session(e.to_string()))?;
        // the log reads like a daemon's: session start (configuration hash, plan) and setup
        let config_bytes = std::fs::read(&scenario.config).map_err(|source| ReplayError::Io {
            path: scenario.config.clone(),
            source,
        })?;
        let builder = {
            use sha2::Digest;
            builder.session_records(sha2::Sha256::digest(&config_bytes).into())
        };
        let link_err = |e: &dyn std::fmt::Display| ReplayError::Link(e.to_string());
        let key = LinkKey::from_file(&builder.config().link.key_file).map_err(|e| link_err(&e))?;
        let receiver = LinkReceiver::bind(
            "127.0.0.1:0".parse().expect("literal"),
            &key,
            &LinkOptions::default(),
        )
        .map_err(|e| link_err(&e))?;
        let controller = spawn(receiver, ControllerConfig::default(), |_| {}).map_err(|e| link_err(&e))?;
        let spots = builder.session().spot_count();
        let chain = gate_chain(builder, controller.local_addr())?;
        Ok(Chain {
            pipeline: chain.pipeline,
            source: InProcessSource::new(chain.events, "gate"),
            encoded,
            spots,
            frame_voxels,
            audit_path: chain.audit_path,
            controller,
        })
    }

    /// Frame `n` of the breathing cycle, played forwards then backwards so the motion never
    /// jumps when the cycle repeats (a jump would cost a long registration).
    fn cycle_frame(&self, n: u64) -> &[Vec<u8>] {
        let k = self.encoded.len();
        let period = (2 * k).saturating_sub(2).max(1);
        let i = (n as usize) % period;
        let i = if i < k { i } else { period - i };
        &self.encoded[i]
    }

    /// Pushes frame `n` whole, every slice at once (fresh copies, as received).
    pub fn push(&self, n: u64) -> Result<(), ReplayError> {
        self.source
            .push_frame(self.cycle_frame(n).to_vec())
            .map(|_| ())
            .map_err(|e| ReplayError::Pipeline(e.to_string()))
    }

    /// Delivers frame `n` the way a scanner's C-STORE stream does: its slices arrive evenly
    /// over `spread`, each announced as it lands, and the last one completes the frame at
    /// `due`. Sleeps until then.
    pub fn push_streamed(&self, n: u64, due: Instant, spread: Duration) -> Result<(), ReplayError> {
        let objects = self.cycle_frame(n);
        let last = objects.len().saturating_sub(1).max(1) as u32;
        let start = due.checked_sub(spread).unwrap_or(due);
        let err = |e: ionguide::source::InProcessError| ReplayError::Pipeline(e.to_string());
        let mut shared = Vec::with_capacity(objects.len());
        for (j, bytes) in objects.iter().enumerate() {
            sleep_until(start + spread * j as u32 / last);
            // a fresh receive buffer per slice, as from the network
            let object = Arc::new(bytes.clone());
            if j + 1 < objects.len() {
                self.source.announce_object(&object).map_err(err)?;
            }
            shared.push(object);
        }
        sleep_until(due);
        self.source.push_shared_frame(shared).map(|_| ()).map_err(err)
    }

    /// Stops everything; returns the audit log's outcome counts.
    pub fn shutdown(self) -> Result<BTreeMap<&'static str, u64>, ReplayError> {
        let mut audit = self
            .pipeline
            .shutdown()
            .map_err(|e| ReplayError::Pipeline(e.to_string()))?;
        // ends as a daemon's log does: the shutdown on record
        let _ = audit.write(&ionguide::audit::AuditRecord::Shutdown {
            unix_ns: ionguide::link::protocol::unix_now_ns(),
            reason: "release gate workload finished".into(),
        });
        let _ = audit.flush();
        drop(audit);
        let _ = self.controller.stop();
        let summary =
            ionguide::audit::summary(&self.audit_path).map_err(|e| ReplayError::Pipeline(e.to_string()))?;
        Ok(summary.outcomes)
    }
}

/// The pipeline's chain as the gate and the soak run it: the session a configuration names
/// (every load check), a link to `controller` from an ephemeral port, a fresh audit log that
/// keeps only the corrections' digest (a 100,000-frame soak's log stays small; the SHA-256 is
/// still on record); the session-start records come with the builder (`session_records`).
pub fn gate_chain(builder: ChainBuilder, controller: SocketAddr) -> Result<PipelineChain, ReplayError> {
    builder
        .destination(controller)
        .local("127.0.0.1:0".parse().expect("literal"))
        .link_options(LinkOptions::default())
        .audit_start(AuditStart::Replace)
        .audit_options(ionguide::audit::AuditOptions::default().with_full_corrections(false))
        .event_capacity(16)
        .start()
        .map_err(|e| match e {
            ChainError::Session(_) | ChainError::Config(_) => ReplayError::Session(e.to_string()),
            ChainError::Key(_) | ChainError::Link { .. } => ReplayError::Link(e.to_string()),
            ChainError::AuditDir { path, source } => ReplayError::Io { path, source },
            e => ReplayError::Pipeline(e.to_string()),
        })
}

fn sleep_until(at: Instant) {
    if let Some(wait) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// How a frame's slices reach the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// As a scanner sends them: one by one over most of the frame period (80%), the last
    /// one completing the frame; the pipeline decodes the announced slices early.
    #[default]
    Stream,
    /// All at once when the frame is due (the worst case for ingest: the whole frame is
    /// decoded on the clock).
    Burst,
}

impl Delivery {
    /// Its name in budgets and reports.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Stream => "stream",
            Delivery::Burst => "burst",
        }
    }
}

/// The share of the frame period over which a streamed frame's slices arrive.
pub const STREAM_SPREAD: f64 = 0.8;

/// Watches a workload run from outside the frame path, as a console does: told of the
/// pipeline once it runs, then of each finished frame on the gate's own thread.
pub trait Observer {
    /// The chain is up; frames follow.
    fn started(&mut self, pipeline: &Pipeline);
    /// A frame finished (any outcome).
    fn frame(&mut self, event: &ionguide::pipeline::FrameEvent);
}

/// Runs a workload: `frames` frames at `rate_hz` (0: each frame as soon as the previous one
/// finished, delivered whole) on a [`Chain`] in `dir`.
pub fn run_workload(
    workload: Workload,
    dir: &Path,
    frames: u64,
    rate_hz: f64,
    delivery: Delivery,
    budget_ms: f64,
    progress: bool,
) -> Result<WorkloadResult, ReplayError> {
    run_workload_observed(
        workload, dir, frames, rate_hz, delivery, budget_ms, 0, progress, None,
    )
}

/// [`run_workload`] with an observer (the gate with its console open).
#[allow(clippy::too_many_arguments)]
pub fn run_workload_observed(
    workload: Workload,
    dir: &Path,
    frames: u64,
    rate_hz: f64,
    delivery: Delivery,
    budget_ms: f64,
    realtime_priority: u8,
    progress: bool,
    mut observer: Option<&mut dyn Observer>,
) -> Result<WorkloadResult, ReplayError> {
    let wall = Instant::now();
    let chain = Chain::start_with(workload, dir, budget_ms, realtime_priority)?;
    if let Some(o) = observer.as_deref_mut() {
        o.started(&chain.pipeline);
    }
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(frames);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} frames ({per_sec}, eta {eta})",
            )
            .expect("constant template")
            .progress_chars("=> "),
        );
        b.set_prefix(workload.name());
        b
    });

    let floor_before = measure_host_floor(chain.frame_voxels);
    let sched_before = SchedSnapshot::now();
    let warmup = 5u64.min(frames);
    let (mut e2e, mut first, mut last) = (hist(), hist(), hist());
    let mut stages: Vec<Histogram<u64>> = (0..5).map(|_| hist()).collect();
    let mut waits: Vec<Histogram<u64>> = (0..5).map(|_| hist()).collect();
    let mut miss_timelines = Vec::new();
    let (mut corrected, mut held, mut misses, mut rejected, mut dropped, mut stale) = (0, 0, 0, 0, 0, 0);
    let mut rss_start = 0.0;
    let tenth = (frames / 10).max(1);
    let period = if rate_hz > 0.0 {
        Some(Duration::from_secs_f64(1.0 / rate_hz))
    } else {
        None
    };
    let t0 = Instant::now();
    let mut finished = 0u64;
    let mut record = |ev: ionguide::pipeline::FrameEvent, n: u64| {
        if let Some(o) = observer.as_deref_mut() {
            o.frame(&ev);
        }
        let t = ev.ticket;
        match t.outcome {
            Outcome::Corrected => {
                corrected += 1;
                if t.sent_at.is_some_and(|s| s > t.deadline) {
                    stale += 1;
                }
                if n >= warmup {
                    let us = (t.latency_ns() / 1000).max(1);
                    e2e.saturating_record(us);
                    if n < warmup + tenth {
                        first.saturating_record(us);
                    }
                    if n + tenth >= frames {
                        last.saturating_record(us);
                    }
                    for s in Stage::ALL {
                        let ns = t.stage_ns[s.index()];
                        if ns > 0 {
                            stages[s.index()].saturating_record((ns / 1000).max(1));
                        }
                        if let Some(wait_ns) = t.wait_before_ns(s) {
                            waits[s.index()].saturating_record((wait_ns / 1000).max(1));
                        }
                    }
                }
            }
            Outcome::Held(r) => {
                held += 1;
                if r == ionguide::correction::HoldReason::DeadlineMissed {
                    misses += 1;
                    if miss_timelines.len() < 20 {
                        let mut text = format!("frame {}: ", t.frame_id);
                        let _ = t.write_timeline(&mut text, t.latency_ns());
                        miss_timelines.push(text);
                    }
                }
            }
            Outcome::Rejected(_) => rejected += 1,
            Outcome::Dropped => dropped += 1,
            Outcome::Pending => {}
        }
    };
    let delivery = if period.is_some() {
        delivery
    } else {
        Delivery::Burst
    };
    for n in 0..frames {
        if n == warmup {
            rss_start = proc_status_mib("VmRSS:");
        }
        match period {
            Some(p) => {
                let due = t0 + p * n as u32;
                match delivery {
                    Delivery::Burst => {
                        sleep_until(due);
                        chain.push(n)?;
                    }
                    Delivery::Stream => chain.push_streamed(n, due, p.mul_f64(STREAM_SPREAD))?,
                }
            }
            None => chain.push(n)?,
        }
        if period.is_none() {
            // flat out, one frame in flight: every frame is measured on an idle chain
            let ev = chain
                .pipeline
                .telemetry()
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| ReplayError::Pipeline(format!("frame {n} did not finish within 30 s")))?;
            record(ev, n);
            finished += 1;
        } else {
            for ev in chain.pipeline.telemetry().try_iter() {
                record(ev, finished);
                finished += 1;
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    let tel = chain.pipeline.telemetry().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished < frames && Instant::now() < deadline {
        if let Ok(ev) = tel.recv_timeout(Duration::from_millis(100)) {
            record(ev, finished);
            finished += 1;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let sched_after = SchedSnapshot::now();
    let rss_end = proc_status_mib("VmRSS:");
    let (spots, frame_voxels) = (chain.spots, chain.frame_voxels);
    let floor_after = measure_host_floor(frame_voxels);
    let audited = chain.shutdown()?;
    Ok(WorkloadResult {
        workload,
        frames,
        rate_hz,
        delivery,
        spots,
        frame_voxels,
        corrected,
        held,
        deadline_misses: misses,
        rejected,
        dropped,
        stale_corrections: stale,
        end_to_end_ms: latency(&e2e),
        end_to_end_first_tenth_ms: latency(&first),
        end_to_end_last_tenth_ms: latency(&last),
        stage_ms: Stage::ALL
            .iter()
            .map(|s| (s.name(), latency(&stages[s.index()])))
            .collect(),
        wait_ms: Stage::ALL
            .iter()
            .map(|s| (s.name(), latency(&waits[s.index()])))
            .collect(),
        deadline_miss_timelines: miss_timelines,
        host_floor: [floor_before, floor_after],
        threads: sched_after.threads_since(&sched_before),
        steal_ms: sched_after.steal_ms_since(&sched_before),
        rss_mib_start: rss_start,
        rss_mib_end: rss_end,
        rss_mib_peak: proc_status_mib("VmHWM:"),
        audited,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

/// One budget line: a measured quantity's limits, ms.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Median at most, ms.
    pub p50: f64,
    /// 99th percentile at most, ms.
    pub p99: f64,
    /// Largest at most, ms.
    pub max: f64,
}

/// A workload's budgets: end to end and per stage, plus the run's shape.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadBudgets {
    /// Frames to run.
    pub frames: u64,
    /// Frame rate, Hz.
    pub rate_hz: f64,
    /// How the slices arrive (`stream` when absent).
    #[serde(default)]
    pub delivery: Delivery,
    /// The pipeline's latency budget (deadline), ms.
    pub deadline_ms: f64,
    /// Frame complete → corrections on the wire.
    pub end_to_end: Budget,
    /// Per stage: ingest, register, range, adapt, link.
    pub stages: BTreeMap<String, Budget>,
    /// Most deadline misses allowed.
    pub max_deadline_misses: u64,
    /// Most growth of resident memory over the run, MiB.
    pub max_rss_growth_mib: f64,
}

/// `benches/budgets.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// The CI workload.
    pub small: WorkloadBudgets,
    /// The release workload.
    pub reference: WorkloadBudgets,
    /// The kernels' criterion benches, by criterion id (`group/function`).
    #[serde(default)]
    pub benches: BTreeMap<String, benches::BenchBudget>,
    /// Surrogate-driven corrections (`cargo bench --bench surrogate`; not run by the gate).
    #[serde(default)]
    pub surrogate: Option<SurrogateBudgets>,
}

/// The surrogate path's budget (issue 14).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SurrogateBudgets {
    /// Surrogate sample → its 10,000-spot set complete at the receiver, p99, ms.
    pub sample_to_set_on_wire_p99_ms: f64,
}

impl Budgets {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Budgets, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
    /// The budgets of a workload.
    pub fn of(&self, w: Workload) -> &WorkloadBudgets {
        match w {
            Workload::Small => &self.small,
            Workload::Reference => &self.reference,
        }
    }
}

/// One line of the gate's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateLine {
    /// What was measured.
    pub quantity: String,
    /// The limit.
    pub budget: f64,
    /// The measurement.
    pub measured: f64,
    /// measured / budget.
    pub ratio: f64,
    /// Within budget.
    pub pass: bool,
}

/// Compares a result with its budgets.
pub fn check(r: &WorkloadResult, b: &WorkloadBudgets) -> Vec<GateLine> {
    let mut lines = Vec::new();
    let mut line = |q: String, budget: f64, measured: f64| {
        lines.push(GateLine {
            quantity: q,
            budget,
            measured,
            ratio: if budget > 0.0 {
                measured / budget
            } else {
                f64::INFINITY
            },
            pass: measured <= budget,
        })
    };
    let mut lat = |name: &str, m: &Latency, b: &Budget| {
        line(format!("{name} p50 (ms)"), b.p50, m.p50);
        line(format!("{name} p99 (ms)"), b.p99, m.p99);
        line(format!("{name} max (ms)"), b.max, m.max);
    };
    lat("end to end", &r.end_to_end_ms, &b.end_to_end);
    for (stage, budget) in &b.stages {
        if let Some(m) = r.stage_ms.get(stage.as_str()) {
            lat(stage, m, budget);
        }
    }
    line(
        "deadline misses".into(),
        b.max_deadline_misses as f64,
        r.deadline_misses as f64,
    );
    line("stale corrections".into(), 0.0, r.stale_corrections as f64);
    line(
        "resident memory growth (MiB)".into(),
        b.max_rss_growth_mib,
        (r.rss_mib_end - r.rss_mib_start).max(0.0),
    );
    let audited: u64 = r.audited.values().sum();
    line(
        "frames not in the audit log".into(),
        0.0,
        r.frames.abs_diff(audited) as f64,
    );
    lines
}
