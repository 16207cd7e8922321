//! The surrogate stage (on when `surrogate.enabled`): one thread that receives the tracking
//! system's SURROGATE stream, keeps the newest CT frame's evidence (its registration and
//! per-spot WEPL, handed over by the adapt stage), and turns every sample into a correction
//! set — the newest frame moved by the shift the [`Tracker`] predicts at delivery time —
//! or a hold with its reason. Sets go to the link stage like frames do.
//!
//! ```text
//! tracking system ─UDP (SURROGATE)─► surrogate ─crossbeam─► link ─UDP─► controller
//!                    adapt ─evidence (registration, WEPL)─┘   ▲
//!                                          set buffers back ──┘
//! ```
//!
//! - **Frame ids.** A surrogate set's `frame_id` is [`SURROGATE_FRAME_BIT`] | n, n counting
//!   the stage's sets from 1: CT frame ids count from 1 without that bit, so the two never
//!   meet on the wire or in the audit log.
//! - **Clocks.** A set's ticket starts when its sample was received: the deadline is that +
//!   `surrogate.budget_ms`; its validity runs from the sample's acquisition instant (the
//!   tracking system's clock) + `surrogate.validity_ms`.
//! - **Holds.** A change of the tracker's hold state is one set with the hold reason and the
//!   cause as its detail: the link sends the HOLD and audits it. While the tracker holds,
//!   samples produce nothing more (the controller is held; heartbeats go on).
//! - **No allocation when warm**: the evidence and the sets are fixed pools of reused
//!   buffers (the ensemble forecast's ridge refit is the exception, see [`Tracker`]).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::hop::Waker;
use super::telemetry::Counters;
use super::work::{Outcome, Ticket};
use super::Shared;
use crate::adapt::{AdaptPlan, Adapter, FrameStamp, FrameWepl};
use crate::correction::{unix_now_ns, CorrectionSet, HoldReason};
use crate::link::surrogate::{SurrogateIncoming, SurrogateReceiver};
use crate::register::Registration;
use crate::tracking::{Steer, Tracker, TrackerOptions, Transition};
use crate::units::VectorMm;

/// The bit that marks a surrogate-driven set's `frame_id`.
pub const SURROGATE_FRAME_BIT: u64 = 1 << 63;

/// Set buffers in flight between the surrogate and link stages.
pub const SET_POOL: usize = 4;
/// Frame-evidence buffers (the stage keeps one, one can be in the channel, one filling).
pub const EVIDENCE_POOL: usize = 3;

/// A corrected CT frame's evidence for the model and the range.
#[derive(Debug, Clone)]
pub struct FrameEvidence {
    /// The frame.
    pub frame_id: u64,
    /// Its acquisition instant, ns since the UNIX epoch (the scanner's clock).
    pub acquired_unix_ns: u64,
    /// Its registration (`None` only in an unused pool buffer).
    pub registration: Option<Registration>,
    /// Per spot, plan order: WEPL to the target at the registered shift.
    pub wepl_mm: Vec<f32>,
}

/// One surrogate-driven set (or announced hold) on its way to the link stage.
#[derive(Debug, Clone)]
pub struct SurrogateSet {
    /// Identity, clocks and fate (frame id in the surrogate namespace).
    pub ticket: Ticket,
    /// The corrections (empty for a hold).
    pub corrections: CorrectionSet,
    /// What it is (audit detail).
    pub detail: String,
    /// The predicted tumor shift, patient mm.
    pub tumor_shift_mm: Option<[f32; 3]>,
}

impl SurrogateSet {
    fn empty(spots: usize) -> Box<Self> {
        let mut corrections = CorrectionSet::default();
        corrections.spots.reserve(spots);
        let now = Instant::now();
        Box::new(SurrogateSet {
            ticket: Ticket::new(0, now, 0, Duration::ZERO, Duration::ZERO),
            corrections,
            detail: String::with_capacity(256),
            tumor_shift_mm: None,
        })
    }
}

/// The adapt stage's way to hand over evidence (drops it when the surrogate stage is behind:
/// the newest frame is what counts).
#[derive(Clone)]
pub struct EvidenceTap {
    pool: Receiver<Box<FrameEvidence>>,
    tx: Sender<Box<FrameEvidence>>,
    shared: Arc<Shared>,
}

impl EvidenceTap {
    /// Copies a corrected frame's evidence into a pooled buffer and passes it on. A frame
    /// without an acquisition instant cannot be placed on the surrogate's time line: skipped.
    pub fn offer(&self, ticket: &Ticket, registration: &Registration, wepl: &FrameWepl) {
        let Some(acquired_unix_ns) = ticket.acquired_unix_ns else {
            Counters::bump(&self.shared.counters.surrogate_skipped);
            return;
        };
        let Ok(mut e) = self.pool.try_recv() else {
            Counters::bump(&self.shared.counters.surrogate_skipped);
            return;
        };
        e.frame_id = ticket.frame_id;
        e.acquired_unix_ns = acquired_unix_ns;
        e.registration = Some(*registration);
        e.wepl_mm.clear();
        e.wepl_mm.extend_from_slice(&wepl.wepl_mm);
        let _ = self.tx.try_send(e);
    }
}

/// The surrogate stage's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurrogateStageOptions {
    /// The tracker.
    pub tracker: TrackerOptions,
    /// Sample received → set on the wire.
    pub budget: Duration,
    /// Sample acquired → set void.
    pub validity: Duration,
    /// Relative stopping power at the target (range change along the beam).
    pub rsp_at_target: f64,
}

/// What the pipeline needs to run the surrogate stage.
pub struct SurrogateIo {
    /// The tracking system's stream.
    pub receiver: SurrogateReceiver,
    /// Options.
    pub options: SurrogateStageOptions,
}

/// The channels between the surrogate stage and the others, made by `Pipeline::start`.
pub struct SurrogateWiring {
    /// For the adapt stage.
    pub tap: EvidenceTap,
    /// For the link stage: sets in, buffers back.
    pub link: SurrogateLinkEnd,
    /// For the surrogate stage itself.
    pub stage: SurrogateStageEnd,
}

/// The link stage's end.
pub struct SurrogateLinkEnd {
    /// Sets to send.
    pub rx: Receiver<Box<SurrogateSet>>,
    /// Buffers back.
    pub pool: Sender<Box<SurrogateSet>>,
}

/// The surrogate stage's end (for [`run`]).
pub struct SurrogateStageEnd {
    evidence_rx: Receiver<Box<FrameEvidence>>,
    evidence_pool: Sender<Box<FrameEvidence>>,
    out: Sender<Box<SurrogateSet>>,
    out_pool: Receiver<Box<SurrogateSet>>,
}

/// Makes the pools and channels for a plan of `spots` spots.
pub fn wiring(spots: usize, shared: Arc<Shared>) -> SurrogateWiring {
    let (evidence_pool_tx, evidence_pool_rx) = crossbeam_channel::bounded(EVIDENCE_POOL);
    for _ in 0..EVIDENCE_POOL {
        let _ = evidence_pool_tx.try_send(Box::new(FrameEvidence {
            frame_id: 0,
            acquired_unix_ns: 0,
            registration: None,
            wepl_mm: Vec::with_capacity(spots),
        }));
    }
    let (evidence_tx, evidence_rx) = crossbeam_channel::bounded(EVIDENCE_POOL);
    let (set_pool_tx, set_pool_rx) = crossbeam_channel::bounded(SET_POOL);
    for _ in 0..SET_POOL {
        let _ = set_pool_tx.try_send(SurrogateSet::empty(spots));
    }
    let (out_tx, out_rx) = crossbeam_channel::bounded(SET_POOL);
    SurrogateWiring {
        tap: EvidenceTap {
            pool: evidence_pool_rx,
            tx: evidence_tx,
            shared,
        },
        link: SurrogateLinkEnd {
            rx: out_rx,
            pool: set_pool_tx.clone(),
        },
        stage: SurrogateStageEnd {
            evidence_rx,
            evidence_pool: evidence_pool_tx,
            out: out_tx,
            out_pool: set_pool_rx,
        },
    }
}

struct Run {
    end: SurrogateStageEnd,
    link_waker: Waker,
    shared: Arc<Shared>,
    options: SurrogateStageOptions,
    next_id: u64,
    resumed_from: Option<HoldReason>,
}

impl Run {
    fn ticket(&mut self, received: Instant, received_unix_ns: u64, acquired_unix_ns: Option<u64>) -> Ticket {
        let mut t = Ticket::new(
            SURROGATE_FRAME_BIT | self.next_id,
            received,
            received_unix_ns,
            self.options.budget,
            self.options.validity,
        );
        self.next_id += 1;
        if let Some(a) = acquired_unix_ns {
            t.set_acquired(a, self.options.validity);
        }
        t
    }

    fn push(&self, set: Box<SurrogateSet>) {
        // cannot be full (it holds every buffer); if the link stage is gone the pipeline is
        // stopping and the set goes with it
        let _ = self.end.out.try_send(set);
        self.link_waker.wake();
    }

    /// Announces a hold-state change: a hold goes to the link (HOLD + audit); a resume is
    /// noted in the next set's detail.
    fn announce(&mut self, t: Transition, sample: Option<u64>) {
        match t.to {
            None => self.resumed_from = t.from,
            Some(reason) => {
                let Ok(mut set) = self.end.out_pool.try_recv() else {
                    Counters::bump(&self.shared.counters.surrogate_skipped);
                    return;
                };
                let now = Instant::now();
                set.ticket = self.ticket(now, unix_now_ns(), None);
                set.ticket.outcome = Outcome::Held(reason);
                set.corrections.clear();
                set.corrections.frame_id = set.ticket.frame_id;
                set.tumor_shift_mm = None;
                set.detail.clear();
                let _ = write!(set.detail, "surrogate tracking held: {}", t.cause);
                if let Some(n) = sample {
                    let _ = write!(set.detail, " (sample {n})");
                }
                Counters::bump(&self.shared.counters.surrogate_held);
                self.push(set);
            }
        }
    }
}

/// Runs until the pipeline stops (`shared.stop`). `link_waker` wakes whoever takes the sets
/// from the link end; `ready` is told once, when the stage is set up.
pub fn run(
    mut receiver: SurrogateReceiver,
    end: SurrogateStageEnd,
    link_waker: Waker,
    shared: Arc<Shared>,
    plan: Arc<AdaptPlan>,
    options: SurrogateStageOptions,
    mut ready: Option<Sender<()>>,
) {
    let mut tracker = match Tracker::new(options.tracker) {
        Ok(t) => t,
        Err(e) => {
            // the config was validated; a refusal here is a bug, and without the stage the
            // controller stays held (nothing is sent for the surrogate)
            tracing::error!("surrogate tracker not started: {e}");
            return;
        }
    };
    let mut adapter = Adapter::new(plan.clone());
    let mut scratch = FrameWepl::for_plan(&plan);
    let mut newest: Option<Box<FrameEvidence>> = None;
    let mut r = Run {
        end,
        link_waker,
        shared: shared.clone(),
        options,
        next_id: 1,
        resumed_from: None,
    };
    let poll = Duration::from_secs_f64((options.tracker.stall_s / 4.0).clamp(0.001, 0.05));
    super::stages::say_ready(&mut ready, &shared);
    while !shared.stop.load(Ordering::Acquire) {
        while let Ok(e) = r.end.evidence_rx.try_recv() {
            let Some(shift) = e.registration.map(|g| g.tumor_shift_mm) else {
                let _ = r.end.evidence_pool.try_send(e);
                continue;
            };
            let (used, t) = tracker.on_frame(e.frame_id, e.acquired_unix_ns, [shift.x, shift.y, shift.z]);
            if let Some(t) = t {
                r.announce(t, None);
            }
            let keep = matches!(used, crate::tracking::FrameUse::Added(_));
            let old = if keep { newest.replace(e) } else { Some(e) };
            if let Some(old) = old {
                let _ = r.end.evidence_pool.try_send(old);
            }
        }
        match receiver.recv(poll) {
            Ok(Some(SurrogateIncoming::Sample {
                sample,
                received_unix_ns,
                ..
            })) => {
                let received = Instant::now();
                Counters::bump(&shared.counters.surrogate_samples);
                let n = (sample.markers as usize).min(3);
                let mut m = [[0.0f64; 3]; 3];
                for (k, p) in sample.pos_mm[..n].iter().enumerate() {
                    m[k] = p.map(f64::from);
                }
                let (steer, t) = match tracker.on_sample(sample.sample, sample.acquired_unix_ns, &m[..n]) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!("surrogate tracker: {e}");
                        (Steer::Hold(HoldReason::InternalFault), None)
                    }
                };
                if let Some(t) = t {
                    r.announce(t, Some(sample.sample));
                    if t.to.is_none() {
                        // the jump check starts afresh after a hold: the tracker's own checks
                        // said the model is good again
                        adapter.reset_jump_reference();
                    }
                }
                let Steer::Shift {
                    frame_id, delta_mm, ..
                } = steer
                else {
                    continue;
                };
                let Some((ev, reg)) = newest
                    .as_deref()
                    .filter(|e| e.frame_id == frame_id)
                    .and_then(|e| Some((e, e.registration?)))
                else {
                    Counters::bump(&shared.counters.surrogate_skipped);
                    continue;
                };
                let Ok(mut set) = r.end.out_pool.try_recv() else {
                    Counters::bump(&shared.counters.surrogate_skipped);
                    continue;
                };
                set.ticket = r.ticket(received, received_unix_ns, Some(sample.acquired_unix_ns));
                let stamp = FrameStamp {
                    frame_id: set.ticket.frame_id,
                    valid_until_unix_ns: set.ticket.valid_until_unix_ns,
                };
                let delta = VectorMm::new(delta_mm[0], delta_mm[1], delta_mm[2]);
                set.detail.clear();
                let result = adapter.adapt_shifted(
                    stamp,
                    &reg,
                    &ev.wepl_mm,
                    delta,
                    options.rsp_at_target,
                    &mut scratch,
                    &mut set.corrections,
                );
                match result {
                    Ok(summary) => {
                        let v = summary.tumor_shift_mm;
                        set.tumor_shift_mm = Some([v.x as f32, v.y as f32, v.z as f32]);
                        set.ticket.outcome = Outcome::Pending;
                        let _ = write!(
                            set.detail,
                            "surrogate sample {} from frame {frame_id}: moved ({:.2}, {:.2}, {:.2}) mm since",
                            sample.sample, delta_mm[0], delta_mm[1], delta_mm[2]
                        );
                        if let Some(from) = r.resumed_from.take() {
                            let _ = write!(set.detail, "; tracking resumed after {from}");
                        }
                    }
                    Err(hold) => {
                        set.tumor_shift_mm = None;
                        set.ticket.outcome = Outcome::Held(hold.reason);
                        let _ = write!(set.detail, "surrogate sample {}: {hold}", sample.sample);
                        Counters::bump(&shared.counters.surrogate_held);
                    }
                }
                r.push(set);
            }
            Ok(Some(SurrogateIncoming::Rejected(reason))) => {
                Counters::bump(&shared.counters.surrogate_refused);
                tracing::debug!("surrogate datagram refused: {reason}");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("surrogate receiver: {e}");
                std::thread::sleep(poll);
            }
        }
        if let Some(t) = tracker.check_stall(unix_now_ns()) {
            r.announce(t, None);
        }
    }
}
