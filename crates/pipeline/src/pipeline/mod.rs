//! The real-time pipeline: ingest → register → range → adapt → link, one thread per stage.
//!
//! ```text
//! sources ─crossbeam─► ingest ─rtrb─► register ─rtrb─► range ─rtrb─► adapt ─rtrb─► link ─UDP─► controller
//!                        │  ▲            │               │              │           │  ├─► audit log
//!                        │  └────────────┴── pool (work buffers back) ──┴───────────┘  └─► telemetry
//!                        └──────── retire (decided early: held / rejected / dropped) ──► link
//! ```
//!
//! - Frames carry their completion time; each stage checks the budget before and after its
//!   work, and a late frame can only end in a hold ([`work::Ticket::deadline`]). The link
//!   checks once more right before the send, so no correction leaves after its deadline.
//! - Work buffers (volume, per-spot depths, corrections) come from a fixed pool and go back
//!   after the link, so a warm pipeline does not allocate between ingest and link.
//! - A stage that falls behind takes only the newest waiting frame; the rest are retired as
//!   dropped, counted and audited.
//! - Every frame that entered ends in exactly one audit record.

pub mod adapt_stage;
pub mod chain;
pub mod deform;
pub mod hop;
pub mod ingest_stage;
pub mod link_stage;
pub mod operator;
pub mod range_stage;
pub mod realtime;
pub mod register_stage;
pub mod session;
pub mod stages;
pub mod surrogate_stage;
pub mod telemetry;
pub mod work;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::audit::{AuditError, AuditWriter};
use crate::link::LinkSender;
use crate::source::SourceEvent;
pub use link_stage::LinkTiming;
use stages::{PoolRx, PoolTx, RetireTx, StageIo};
use work::Work;

pub use chain::{AuditStart, Chain, ChainBuilder, ChainError, OpenChain};
pub use operator::{Operator, OperatorAction, OperatorError, OperatorRecord, OPERATOR_ACTION_CODE};
pub use session::{Input, InputMismatch, Session, SessionError, SessionOptions};
pub use telemetry::{Counters, FrameEvent, Stats};
pub use work::{Outcome, Stage, Ticket};

/// State every stage shares: the stop flag, counters, and the fault-injection hooks.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set to stop the stages (the link drains last).
    pub stop: AtomicBool,
    /// Lock-free counters.
    pub counters: Counters,
    /// Artificial per-stage delay, µs — a fault-injection hook for tests and the simulator
    /// (a stage slowed past the budget). Zero in service.
    stage_delay_us: [AtomicU64; 5],
    /// Operator actions: queued for the audit log, jump resets for the adapt stage.
    pub(crate) operator: operator::OperatorState,
}

impl Shared {
    /// Slows a stage by `delay` on every frame (fault injection; zero to clear).
    pub fn set_stage_delay(&self, stage: Stage, delay: Duration) {
        self.stage_delay_us[stage.index()].store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Applies a stage's injected delay, if any.
    pub fn inject_delay(&self, stage: Stage) {
        let us = self.stage_delay_us[stage.index()].load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

/// Why the pipeline could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage thread could not be spawned.
    #[error("cannot start the {stage} thread: {source}")]
    Spawn {
        /// Which.
        stage: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// A stage thread did not finish its set-up in time (or died in it).
    #[error("only {ready} of {stages} stage threads were ready after {waited:?}")]
    NotReady {
        /// Stages that were.
        ready: usize,
        /// Stages started.
        stages: usize,
        /// How long start waited.
        waited: Duration,
    },
    /// A stage thread panicked (a bug; the beam was held by the controller's watchdog).
    #[error("the {stage} stage panicked")]
    Panicked {
        /// Which.
        stage: &'static str,
    },
    /// The audit log failed.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// `realtime.required` and the stage threads could not be given their priority.
    #[error(transparent)]
    Realtime(#[from] realtime::RealtimeError),
}

/// The scheduling the stage threads get: `asked` if the host grants it to a probe thread;
/// otherwise an error when it is required, or time-shared with a warning.
fn effective_realtime(asked: realtime::RealtimePolicy) -> Result<realtime::RealtimePolicy, PipelineError> {
    if !asked.is_realtime() {
        return Ok(asked);
    }
    let probe = std::thread::Builder::new()
        .name("ionguide-rt-probe".into())
        .spawn(move || asked.apply_to_current_thread("probe"))
        .map_err(|source| PipelineError::Spawn {
            stage: "probe",
            source,
        })?
        .join()
        .map_err(|_| PipelineError::Panicked { stage: "probe" })?;
    match probe {
        Ok(()) => {
            tracing::info!(
                "stage threads run under SCHED_FIFO at priority {}",
                asked.priority
            );
            Ok(asked)
        }
        Err(e) if asked.required => Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}; the stages run time-shared");
            Ok(realtime::RealtimePolicy::default())
        }
    }
}

/// What the pipeline is connected to.
pub struct PipelineIo {
    /// Frames from the sources (closing every sender stops the pipeline after a drain).
    pub events: Receiver<SourceEvent>,
    /// The wire to the gantry controller.
    pub link: LinkSender,
    /// The audit log.
    pub audit: AuditWriter,
    /// Link timing.
    pub timing: LinkTiming,
    /// The surrogate stream and its stage's options (`None`: frame-driven only).
    pub surrogate: Option<surrogate_stage::SurrogateIo>,
}

/// A running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    drain: Arc<AtomicBool>,
    stages: Vec<(&'static str, JoinHandle<()>)>,
    link: Option<JoinHandle<Result<AuditWriter, AuditError>>>,
    telemetry: Receiver<FrameEvent>,
}

/// Frames a stage hop holds: enough that a stage never blocks on the next one (a full hop
/// drops the frame, counted and audited).
const HOP_CAPACITY: usize = 4;

/// Stage threads `Pipeline::start` waits for: ingest, register, range, adapt, link.
const STAGES: usize = Stage::ALL.len();

/// How long `Pipeline::start` waits for the stages' set-up (the register stage's warm-up registration, a tracer copy).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Pipeline {
    /// Starts the five stage threads and returns once each has finished its set-up.
    pub fn start(session: Arc<Session>, io: PipelineIo) -> Result<Pipeline, PipelineError> {
        let shared = Arc::new(Shared::default());
        let drain = Arc::new(AtomicBool::new(false));
        let pool_size = session.options.pool_size.max(2);
        let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Box<Work>>(pool_size);
        for _ in 0..pool_size {
            let _ = pool_tx.try_send(Box::new(Work::new(&session.planning_ct, &session.adapt_plan)));
        }
        // every buffer can be retired at once, plus bare source events
        let (retire_tx, retire_rx) = crossbeam_channel::bounded(pool_size + 1024);
        let (telemetry_tx, telemetry_rx) = crossbeam_channel::bounded(4096);
        let (to_register, register_in) = hop::hop(HOP_CAPACITY);
        let (to_range, range_in) = hop::hop(HOP_CAPACITY);
        let (to_adapt, adapt_in) = hop::hop(HOP_CAPACITY);
        let (to_link, link_in) = hop::hop(HOP_CAPACITY);
        let retire = RetireTx::new(retire_tx, link_in.waker());
        // Each stage says when its own set-up is done, so a frame sent right after `start`
        // returns does not wait behind a thread still cloning its tracer.
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(STAGES + 1);
        let io_for = |stage: Stage, input, output| StageIo {
            input,
            output,
            retire: retire.clone(),
            shared: shared.clone(),
            stage,
            registered: false,
            ready: Some(ready_tx.clone()),
        };
        // Ingest has no hop in: its input is the source channel; a dummy hop keeps StageIo uniform.
        let (_unused_tx, ingest_in) = hop::hop(1);
        let ingest_io = io_for(Stage::Ingest, ingest_in, to_register);
        let register_io = io_for(Stage::Register, register_in, to_range);
        let range_io = io_for(Stage::Range, range_in, to_adapt);
        let adapt_io = io_for(Stage::Adapt, adapt_in, to_link);
        let surrogate_waker = link_in.waker();
        let surrogate = io.surrogate.map(|g| {
            (
                g,
                surrogate_stage::wiring(session.adapt_plan.spot_count(), shared.clone()),
            )
        });
        let (tap, surrogate_link, surrogate_run) = match surrogate {
            Some((g, w)) => (Some(w.tap), Some(w.link), Some((g, w.stage))),
            None => (None, None, None),
        };
        let link = link_stage::LinkStage {
            input: link_in,
            retired: retire_rx,
            pool: PoolTx(pool_tx),
            link: io.link,
            audit: io.audit,
            telemetry: telemetry_tx,
            shared: shared.clone(),
            timing: io.timing,
            drain: drain.clone(),
            ready: Some(ready_tx.clone()),
            surrogate: surrogate_link,
        };
        let surrogate_ready = surrogate_run.as_ref().map(|_| ready_tx.clone());
        drop(ready_tx);
        let realtime = effective_realtime(session.options.realtime)?;
        // with surrogate tracking, the path of its sets (stage and link) one step above the
        // frame stages (`RealtimePolicy::raised`)
        let fast_path = if surrogate_run.is_some() {
            realtime.raised(1)
        } else {
            realtime
        };
        let spawn = |name: &'static str, policy: realtime::RealtimePolicy, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("ionguide-{name}"))
                .spawn(move || {
                    // The probe in `effective_realtime` was granted the same, so a refusal
                    // here is the host changing its mind: run time-shared, say so.
                    if let Err(e) = policy.apply_to_current_thread(name) {
                        tracing::warn!("{e}");
                        // a host that grants N but not N + 1: the frame stages' priority
                        if policy != realtime {
                            let _ = realtime.apply_to_current_thread(name);
                        }
                    }
                    f()
                })
                .map_err(|source| PipelineError::Spawn { stage: name, source })
        };
        let link = std::thread::Builder::new()
            .name("ionguide-link".into())
            .spawn(move || {
                if let Err(e) = fast_path.apply_to_current_thread("link") {
                    tracing::warn!("{e}");
                    if fast_path != realtime {
                        let _ = realtime.apply_to_current_thread("link");
                    }
                }
                link_stage::run(link)
            })
            .map_err(|source| PipelineError::Spawn {
                stage: "link",
                source,
            })?;
        let mut stages = Vec::new();
        let (s1, s2, s3, s4, s5) = (
            session.clone(),
            session.clone(),
            session.clone(),
            session.clone(),
            session,
        );
        let events = io.events;
        stages.push((
            "ingest",
            spawn(
                "ingest",
                realtime,
                Box::new(move || ingest_stage::run(ingest_io, events, PoolRx(pool_rx), s1)),
            )?,
        ));
        stages.push((
            "register",
            spawn(
                "register",
                realtime,
                Box::new(move || register_stage::run(register_io, s2)),
            )?,
        ));
        stages.push((
            "range",
            spawn(
                "range",
                realtime,
                Box::new(move || range_stage::run(range_io, s3)),
            )?,
        ));
        stages.push((
            "adapt",
            spawn(
                "adapt",
                realtime,
                Box::new(move || adapt_stage::run(adapt_io, s4, tap)),
            )?,
        ));
        let expected = STAGES + usize::from(surrogate_run.is_some());
        if let Some((g, end)) = surrogate_run {
            let shared = shared.clone();
            stages.push((
                "surrogate",
                spawn(
                    "surrogate",
                    fast_path,
                    Box::new(move || {
                        surrogate_stage::run(
                            g.receiver,
                            end,
                            surrogate_waker,
                            shared,
                            s5.adapt_plan.clone(),
                            g.options,
                            surrogate_ready,
                        )
                    }),
                )?,
            ));
        }
        let pipeline = Pipeline {
            shared,
            drain,
            stages,
            link: Some(link),
            telemetry: telemetry_rx,
        };
        let waiting_since = Instant::now();
        for ready in 0..expected {
            let left = READY_TIMEOUT.saturating_sub(waiting_since.elapsed());
            if ready_rx.recv_timeout(left).is_err() {
                // dropping the pipeline stops the threads that did start
                return Err(PipelineError::NotReady {
                    ready,
                    stages: expected,
                    waited: waiting_since.elapsed(),
                });
            }
        }
        Ok(pipeline)
    }

    /// Finished-frame events (one per frame, in the order the link finished them).
    pub fn telemetry(&self) -> &Receiver<FrameEvent> {
        &self.telemetry
    }

    /// A handle for operator actions (the console's way in; never on the frame path).
    pub fn operator(&self) -> Operator {
        Operator {
            state: self.shared.clone(),
        }
    }

    /// Counters, stop flag and fault hooks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every stage, lets the link stage audit what is still in flight and send a final
    /// HOLD, and hands back the flushed audit writer.
    pub fn shutdown(mut self) -> Result<AuditWriter, PipelineError> {
        self.shared.stop.store(true, Ordering::Release);
        // idle stages park for up to a second's twentieth: wake them to see the flag now
        for (_, h) in &self.stages {
            h.thread().unpark();
        }
        let mut panicked = None;
        for (name, h) in self.stages.drain(..) {
            if h.join().is_err() {
                panicked.get_or_insert(name);
            }
        }
        self.drain.store(true, Ordering::Release);
        let link = self.link.take().map(|h| h.join());
        if let Some(stage) = panicked {
            return Err(PipelineError::Panicked { stage });
        }
        match link {
            Some(Ok(r)) => Ok(r?),
            _ => Err(PipelineError::Panicked { stage: "link" }),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.drain.store(true, Ordering::Release);
    }
}
