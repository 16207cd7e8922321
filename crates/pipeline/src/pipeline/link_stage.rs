//! The link stage: the last word on every frame. A corrected frame still inside its
//! deadline goes on the wire (RESUME first when the beam was held); anything else sends a
//! HOLD. Every frame — from the adapt hop or retired early — gets one audit record and one
//! telemetry event, and its buffers go back to the pool. Between frames it sends
//! heartbeats and watches the controller's acknowledgements: silence while corrections
//! flow is itself a hold.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::hop::HopRx;
use super::stages::{PoolTx, Retired};
use super::telemetry::{Counters, FrameEvent};
use super::work::{Outcome, Stage, Ticket, Work};
use super::Shared;
use crate::audit::{self, AuditWriter, Corrections, FrameRecord};
use crate::correction::{DeliveredSpot, HoldReason, SpotCorrection};
use crate::link::{AckStatus, FromController, LinkSender};

/// Link-stage timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkTiming {
    /// Heartbeat period while idle.
    pub heartbeat: Duration,
    /// No acknowledgement for this long after a send → hold (controller silent).
    pub ack_timeout: Duration,
}

/// The link stage's inputs and outputs.
pub struct LinkStage {
    /// Frames from the adapt stage.
    pub input: HopRx<Box<Work>>,
    /// Frames retired early.
    pub retired: Receiver<Retired>,
    /// Buffers back to ingest.
    pub pool: PoolTx,
    /// The wire.
    pub link: LinkSender,
    /// The audit log.
    pub audit: AuditWriter,
    /// Whether the audit log keeps every spot (else a digest).
    pub telemetry: Sender<FrameEvent>,
    /// Stop flag, counters.
    pub shared: Arc<Shared>,
    /// Timing.
    pub timing: LinkTiming,
    /// Set when every other stage has ended: drain and stop.
    pub drain: Arc<std::sync::atomic::AtomicBool>,
    /// Told once the stage is set up.
    pub ready: Option<Sender<()>>,
    /// Surrogate-driven sets (when `surrogate.enabled`): frames then only feed the model and
    /// are audited, not sent.
    pub surrogate: Option<super::surrogate_stage::SurrogateLinkEnd>,
}

/// The beam as we last told the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Nothing,
    Held,
    Corrections,
}

struct State {
    told: Told,
    /// Last acknowledgement seen, and the first unacknowledged send after it.
    last_ack: Instant,
    unacked_since: Option<Instant>,
    silent: bool,
    /// The controller's beam state from its last acknowledgement.
    controller_on: bool,
    last_sent: Instant,
    record: FrameRecord,
    /// The newest finished frame's hold (surrogate mode: no surrogate set is sent while the
    /// newest frame ended in a hold — a frame's hold is never lifted by the surrogate).
    frame_hold: Option<HoldReason>,
    /// Reused for the delivered-spots records.
    delivered: Vec<DeliveredSpot>,
}

/// Runs until drained after the other stages stop. Returns the audit writer (flushed) so the
/// caller can write the shutdown record.
pub fn run(mut s: LinkStage) -> Result<AuditWriter, audit::AuditError> {
    s.input.register_current();
    let now = Instant::now();
    let mut st = State {
        told: Told::Nothing,
        last_ack: now,
        unacked_since: None,
        silent: false,
        controller_on: false,
        last_sent: now,
        record: FrameRecord {
            corrections: Corrections::Full {
                mode: None,
                valid_until_unix_ns: 0,
                spots: Vec::with_capacity(s.input_capacity_hint()),
            },
            ..FrameRecord::default()
        },
        frame_hold: None,
        delivered: Vec::with_capacity(64),
    };
    // Start held: nothing may be delivered before the first corrected frame.
    send_hold(&mut s, &mut st, HoldReason::NotReady, 0);
    super::stages::say_ready(&mut s.ready, &s.shared);
    loop {
        let mut did = false;
        while let Ok(r) = s.retired.try_recv() {
            did = true;
            match r {
                Retired::Work(w) => finish(&mut s, &mut st, w)?,
                Retired::Bare {
                    ticket,
                    origin,
                    detail,
                } => finish_bare(&mut s, &mut st, *ticket, &origin, &detail)?,
            }
        }
        if let Some(w) = s.input.try_pop() {
            did = true;
            finish(&mut s, &mut st, w)?;
        }
        while let Ok(action) = s.shared.operator.rx.try_recv() {
            did = true;
            audit_operator(&mut s, &action)?;
        }
        while let Some(set) = s.surrogate.as_ref().and_then(|g| g.rx.try_recv().ok()) {
            did = true;
            finish_surrogate(&mut s, &mut st, set)?;
        }
        poll_acks(&mut s, &mut st);
        if !did {
            let drained = s.drain.load(Ordering::Acquire);
            if drained && s.input.is_empty() && s.retired.is_empty() {
                break;
            }
            if st.last_sent.elapsed() >= s.timing.heartbeat {
                if st.told == Told::Held || st.silent {
                    send_hold(&mut s, &mut st, HoldReason::NotReady, 0);
                } else {
                    heartbeat(&mut s, &mut st);
                }
            }
            // frames and retired work wake it at once; the wait paces acknowledgement polls
            // and heartbeats (10 ms against a 100 ms acknowledgement timeout: at 5 ms its 200
            // idle wake-ups a second queued for the CPU with the stages on 2 cores)
            s.input.wait(s.timing.heartbeat.min(Duration::from_millis(10)));
        }
    }
    // nothing lost: an action taken as the session ended is still on record
    while let Ok(action) = s.shared.operator.rx.try_recv() {
        audit_operator(&mut s, &action)?;
    }
    // on record: the beam is held because the session ends (a treatment record names it)
    s.audit.write(&audit::AuditRecord::Link {
        unix_ns: super::ingest_stage::unix_ns_of(Instant::now()),
        code: HoldReason::Shutdown.code(),
        detail: "HOLD sent: the session ends".into(),
    })?;
    let hold_seq = s.link.next_sequence();
    send_hold(&mut s, &mut st, HoldReason::Shutdown, 0);
    // The controller reports the spots it delivered up to a hold before it acknowledges the
    // hold: waiting for that acknowledgement (at most the ack timeout) puts the session's
    // last delivered spots on record.
    let until = Instant::now() + s.timing.ack_timeout;
    while Instant::now() < until {
        if poll_acks(&mut s, &mut st).is_some_and(|seq| seq >= hold_seq) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    s.audit.flush()?;
    Ok(s.audit)
}

impl LinkStage {
    fn input_capacity_hint(&self) -> usize {
        16_384
    }
}

/// Reads every pending controller message; returns the highest sequence acknowledged.
fn poll_acks(s: &mut LinkStage, st: &mut State) -> Option<u64> {
    let mut acked = None;
    loop {
        let ack = match s.link.poll() {
            Ok(Some(FromController::Ack(ack))) => ack,
            Ok(Some(FromController::Delivered(d))) => {
                st.delivered.clear();
                st.delivered.extend(d.spots.iter());
                let record = audit::AuditRecord::Delivered {
                    unix_ns: super::ingest_stage::unix_ns_of(Instant::now()),
                    first_ordinal: d.first_ordinal,
                    spots: std::mem::take(&mut st.delivered),
                };
                if let Err(e) = s.audit.write(&record) {
                    tracing::error!("delivered spots not audited: {e}");
                }
                if let audit::AuditRecord::Delivered { spots, .. } = record {
                    st.delivered = spots;
                }
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        acked = acked.max(Some(ack.acked_sequence));
        Counters::bump(&s.shared.counters.acks_received);
        if st.controller_on && !ack.beam_on && st.told == Told::Corrections {
            // The controller held on its own (a rejected datagram, an expired set): on record,
            // once per transition.
            tracing::info!(frame = ack.frame_id, "controller reports the beam held");
            let _ = s.audit.write(&audit::AuditRecord::Link {
                unix_ns: super::ingest_stage::unix_ns_of(Instant::now()),
                code: 0,
                detail: format!(
                    "controller reports the beam held (ack of frame {}, {:?}) while corrections flow",
                    ack.frame_id, ack.status
                ),
            });
        }
        // On record: what the controller did with every correction set, and every change of
        // its beam state (a treatment record is built from these, not from what was sent).
        let status = match ack.status {
            AckStatus::Accepted => audit::AckOutcome::Accepted,
            AckStatus::Applied => audit::AckOutcome::Applied,
            AckStatus::Expired => audit::AckOutcome::Expired,
        };
        if status != audit::AckOutcome::Accepted || ack.beam_on != st.controller_on {
            if let Err(e) = s.audit.write(&audit::AuditRecord::ControllerAck {
                unix_ns: super::ingest_stage::unix_ns_of(Instant::now()),
                frame_id: ack.frame_id,
                acked_sequence: ack.acked_sequence,
                status,
                beam_on: ack.beam_on,
            }) {
                tracing::error!("acknowledgement not audited: {e}");
            }
        }
        st.controller_on = ack.beam_on;
        st.last_ack = Instant::now();
        st.unacked_since = None;
        if st.silent {
            st.silent = false;
            tracing::warn!("controller acknowledges again");
        }
    }
    if let Some(since) = st.unacked_since {
        if !st.silent && since.elapsed() > s.timing.ack_timeout {
            st.silent = true;
            tracing::error!("controller silent for {:?}: holding", since.elapsed());
            let unix = super::ingest_stage::unix_ns_of(Instant::now());
            let _ = s.audit.write(&audit::AuditRecord::Link {
                unix_ns: unix,
                code: HoldReason::LinkSilent.code(),
                detail: format!("no acknowledgement for {} ms", since.elapsed().as_millis()),
            });
            send_hold(s, st, HoldReason::LinkSilent, 0);
        }
    }
    acked
}

/// After a hold, the RESUME follows the new set, never precedes it: the controller resumes
/// on its applied set if that is still valid, and before the new set is complete that is the
/// set in force *at the hold* — corrections for the anatomy the hold was about (a jump, a
/// failed registration). A RESUME sent first let the beam deliver under them for as long as
/// the new set took to arrive (the treatment-record test caught a spot finished under the
/// pre-jump frame's corrections). A complete set turns the beam on by itself; the RESUME
/// after it only says the hold is over.
fn resume_after_new_set(s: &mut LinkStage, st: &State) {
    if st.told != Told::Corrections {
        if let Ok(n) = s.link.send_resume() {
            s.shared
                .counters
                .datagrams_sent
                .fetch_add(n.datagrams as u64, Ordering::Relaxed);
        }
    }
}

fn note_send(st: &mut State, now: Instant) {
    st.last_sent = now;
    if st.unacked_since.is_none() {
        st.unacked_since = Some(now);
    }
}

fn heartbeat(s: &mut LinkStage, st: &mut State) {
    match s.link.send_heartbeat() {
        Ok(n) => {
            s.shared
                .counters
                .datagrams_sent
                .fetch_add(n.datagrams as u64, Ordering::Relaxed);
            note_send(st, Instant::now());
        }
        Err(e) => tracing::error!("heartbeat not sent: {e}"),
    }
}

fn send_hold(s: &mut LinkStage, st: &mut State, reason: HoldReason, frame_id: u64) {
    match s.link.send_hold(reason, frame_id) {
        Ok(n) => {
            s.shared
                .counters
                .datagrams_sent
                .fetch_add(n.datagrams as u64, Ordering::Relaxed);
            note_send(st, Instant::now());
        }
        Err(e) => tracing::error!("HOLD not sent: {e}"),
    }
    st.told = Told::Held;
}

/// Writes an operator's action to the audit log (and flushes: an action is rare and must
/// survive a crash right after it).
fn audit_operator(
    s: &mut LinkStage,
    action: &super::operator::OperatorRecord,
) -> Result<(), audit::AuditError> {
    tracing::warn!(operator = %action.operator, action = action.action.name(), "operator action");
    s.audit.write(&audit::AuditRecord::Link {
        unix_ns: action.unix_ns,
        code: super::operator::OPERATOR_ACTION_CODE,
        detail: format!("operator {:?}: {}", action.operator, action.action.name()),
    })?;
    s.audit.flush()
}

/// Ends one frame: send (or hold), audit, telemetry, buffers back.
fn finish(s: &mut LinkStage, st: &mut State, mut w: Box<Work>) -> Result<(), audit::AuditError> {
    let start = Instant::now();
    w.ticket.mark_start(Stage::Link, start);
    s.shared.inject_delay(Stage::Link);
    if w.ticket.outcome == Outcome::Pending {
        if st.silent {
            w.decide(
                Outcome::Held(HoldReason::LinkSilent),
                format_args!(
                    "controller silent: no acknowledgement within {} ms",
                    s.timing.ack_timeout.as_millis()
                ),
            );
        } else if w.corrections.spots.is_empty() || w.corrections.mode.is_none() {
            w.decide(
                Outcome::Held(HoldReason::InternalFault),
                format_args!("no corrections reached the link"),
            );
        }
    }
    if w.ticket.outcome == Outcome::Pending && s.surrogate.is_some() {
        // surrogate mode: the frame fed the correlation model (adapt stage); the surrogate
        // stage's sets carry it to the beam, a frame set would step it back to the
        // frame's acquisition instant
        w.ticket.outcome = Outcome::Corrected;
        w.corrections.spots.clear();
        let _ = std::fmt::Write::write_str(&mut w.detail, "surrogate mode: model evidence, not sent");
    }
    if w.ticket.outcome == Outcome::Pending {
        // The last check before the wire: a frame past its deadline is never sent.
        let now = Instant::now();
        if w.ticket.is_late(now) {
            let mut t = w.ticket;
            t.stage_ns[Stage::Link.index()] = now.duration_since(start).as_nanos() as u64;
            let until_ns = now.saturating_duration_since(t.complete_at).as_nanos() as u64;
            w.decide(
                Outcome::Held(HoldReason::DeadlineMissed),
                format_args!(
                    "deadline passed before the link could send: {}",
                    super::stages::Timeline(&t, until_ns)
                ),
            );
        } else if w.ticket.is_void_at(now) {
            // the anatomy it describes is older than the validity: never sent
            let t = w.ticket;
            w.decide(
                Outcome::Held(HoldReason::DeadlineMissed),
                format_args!(
                    "corrections void before the wire: valid until {} ns, now {} ns (acquired {:?} ns)",
                    t.valid_until_unix_ns,
                    t.unix_ns_at(now),
                    t.acquired_unix_ns
                ),
            );
        } else {
            w.ticket.sent_at = Some(now);
            match s.link.send_corrections(&w.corrections) {
                Ok(n) => {
                    s.shared
                        .counters
                        .datagrams_sent
                        .fetch_add(n.datagrams as u64, Ordering::Relaxed);
                    note_send(st, now);
                    resume_after_new_set(s, st);
                    st.told = Told::Corrections;
                    w.ticket.outcome = Outcome::Corrected;
                }
                Err(e) => {
                    w.ticket.sent_at = None;
                    w.decide(
                        Outcome::Held(HoldReason::InternalFault),
                        format_args!("send failed: {e}"),
                    );
                }
            }
        }
    }
    if let Some(reason) = w.ticket.outcome.reason() {
        w.ticket.sent_at = Some(Instant::now());
        send_hold(s, st, reason, w.ticket.frame_id);
    }
    w.ticket.stage_ns[Stage::Link.index()] = start.elapsed().as_nanos() as u64;
    note_frame_outcome(st, w.ticket.outcome);
    let reg = w.registration;
    let evidence = Evidence {
        tumor_shift_mm: reg.map(|g| {
            let v = g.tumor_shift_mm;
            [v.x as f32, v.y as f32, v.z as f32]
        }),
        ncc: reg.map(|g| g.similarity_ncc),
        set: Some(&w.corrections),
        target: w.target.as_ref().map(|t| t.record(w.ticket.frame_id)),
    };
    audit_frame(s, st, &w.ticket, &w.origin, &w.detail, evidence)?;
    s.pool.give(w);
    Ok(())
}

fn finish_bare(
    s: &mut LinkStage,
    st: &mut State,
    mut ticket: Ticket,
    origin: &str,
    detail: &str,
) -> Result<(), audit::AuditError> {
    if let Some(reason) = ticket.outcome.reason() {
        ticket.sent_at = Some(Instant::now());
        send_hold(s, st, reason, ticket.frame_id);
    }
    note_frame_outcome(st, ticket.outcome);
    audit_frame(s, st, &ticket, origin, detail, Evidence::default())
}

fn note_frame_outcome(st: &mut State, outcome: Outcome) {
    match outcome {
        Outcome::Corrected => st.frame_hold = None,
        Outcome::Held(r) => st.frame_hold = Some(r),
        Outcome::Rejected(_) => st.frame_hold = outcome.reason().or(Some(HoldReason::CorruptFrame)),
        // an overtaken frame says nothing about the anatomy
        Outcome::Dropped | Outcome::Pending => {}
    }
}

/// Ends one surrogate-driven set: send (or hold), audit, buffer back. The same last checks
/// as a frame's: controller silent, deadline, validity.
fn finish_surrogate(
    s: &mut LinkStage,
    st: &mut State,
    mut set: Box<super::surrogate_stage::SurrogateSet>,
) -> Result<(), audit::AuditError> {
    use std::fmt::Write as _;
    let start = Instant::now();
    if set.ticket.outcome == Outcome::Pending {
        if let Some(reason) = st.frame_hold {
            // the frame's hold is on record and told; nothing to add per sample
            Counters::bump(&s.shared.counters.surrogate_suppressed);
            tracing::trace!(frame = set.ticket.frame_id, %reason, "surrogate set not sent: frame held");
            give_back(s, set);
            return Ok(());
        }
        let now = Instant::now();
        if st.silent {
            set.ticket.outcome = Outcome::Held(HoldReason::LinkSilent);
            let _ = write!(set.detail, "; controller silent");
        } else if set.ticket.is_late(now) {
            set.ticket.outcome = Outcome::Held(HoldReason::DeadlineMissed);
            let _ = write!(
                set.detail,
                "; deadline passed before the link could send ({} µs after the sample)",
                now.saturating_duration_since(set.ticket.complete_at).as_micros()
            );
        } else if set.ticket.is_void_at(now) {
            set.ticket.outcome = Outcome::Held(HoldReason::DeadlineMissed);
            let _ = write!(set.detail, "; void before the wire");
        } else {
            set.ticket.sent_at = Some(now);
            match s.link.send_corrections(&set.corrections) {
                Ok(n) => {
                    s.shared
                        .counters
                        .datagrams_sent
                        .fetch_add(n.datagrams as u64, Ordering::Relaxed);
                    Counters::bump(&s.shared.counters.surrogate_sets_sent);
                    note_send(st, now);
                    resume_after_new_set(s, st);
                    st.told = Told::Corrections;
                    set.ticket.outcome = Outcome::Corrected;
                }
                Err(e) => {
                    set.ticket.sent_at = None;
                    set.ticket.outcome = Outcome::Held(HoldReason::InternalFault);
                    let _ = write!(set.detail, "; send failed: {e}");
                }
            }
        }
    }
    if let Some(reason) = set.ticket.outcome.reason() {
        set.ticket.sent_at.get_or_insert(Instant::now());
        send_hold(s, st, reason, set.ticket.frame_id);
    }
    set.ticket.stage_ns[Stage::Link.index()] = start.elapsed().as_nanos() as u64;
    let evidence = Evidence {
        tumor_shift_mm: set.tumor_shift_mm,
        ncc: None,
        set: Some(&set.corrections),
        target: None,
    };
    audit_record(s, st, &set.ticket, "surrogate", &set.detail, evidence)?;
    give_back(s, set);
    Ok(())
}

fn give_back(s: &LinkStage, set: Box<super::surrogate_stage::SurrogateSet>) {
    if let Some(g) = &s.surrogate {
        let _ = g.pool.try_send(set);
    }
}

/// What a record says beyond its ticket.
#[derive(Default, Clone)]
struct Evidence<'a> {
    tumor_shift_mm: Option<[f32; 3]>,
    ncc: Option<f64>,
    set: Option<&'a crate::correction::CorrectionSet>,
    /// The frame's target (deformable tracking), written as its own record after the frame's.
    target: Option<audit::TargetRecord>,
}

fn audit_frame(
    s: &mut LinkStage,
    st: &mut State,
    t: &Ticket,
    origin: &str,
    detail: &str,
    mut evidence: Evidence<'_>,
) -> Result<(), audit::AuditError> {
    let target = evidence.target.take();
    let sent = audit_record(s, st, t, origin, detail, evidence)?;
    let target = target.map(|t| {
        let summary = super::deform::TargetSummary::from(&t);
        (audit::AuditRecord::Target(t), summary)
    });
    if let Some((record, _)) = &target {
        s.audit.write(record)?;
    }
    let r = &st.record;
    let event = FrameEvent {
        ticket: *t,
        tumor_shift_mm: r.tumor_shift_mm.unwrap_or([0.0; 3]),
        ncc: r.ncc.map(|v| v as f32).unwrap_or(f32::NAN),
        spots_sent: sent,
        target: target.map(|(_, summary)| summary),
    };
    if s.telemetry.try_send(event).is_err() {
        Counters::bump(&s.shared.counters.telemetry_lost);
    }
    Ok(())
}

/// Writes one frame record (a CT frame's or a surrogate set's); the spots sent.
fn audit_record(
    s: &mut LinkStage,
    st: &mut State,
    t: &Ticket,
    origin: &str,
    detail: &str,
    evidence: Evidence<'_>,
) -> Result<u32, audit::AuditError> {
    let r = &mut st.record;
    r.frame_id = t.frame_id;
    r.origin.clear();
    r.origin.push_str(origin);
    r.outcome = Some(match t.outcome {
        Outcome::Corrected => audit::Outcome::Corrected,
        Outcome::Held(_) | Outcome::Pending => audit::Outcome::Held,
        Outcome::Rejected(_) => audit::Outcome::Rejected,
        Outcome::Dropped => audit::Outcome::Dropped,
    });
    r.hold_reason = t.outcome.reason();
    r.reject_reason = t.outcome.reject_reason();
    r.detail.clear();
    r.detail.push_str(detail);
    r.arrival_unix_ns = t.complete_unix_ns;
    r.complete_unix_ns = t.complete_unix_ns;
    r.acquired_unix_ns = t.acquired_unix_ns;
    r.latency_ns = t.sent_at.map(|_| t.latency_ns());
    r.stage_ns = t.stage_ns.map(|ns| (ns > 0).then_some(ns));
    r.tumor_shift_mm = evidence.tumor_shift_mm;
    r.ncc = evidence.ncc;
    let sent: &[SpotCorrection] = match (t.outcome, evidence.set) {
        (Outcome::Corrected, Some(c)) => &c.spots,
        _ => &[],
    };
    if let Corrections::Full {
        mode,
        valid_until_unix_ns,
        spots,
    } = &mut r.corrections
    {
        *mode = evidence.set.and_then(|c| c.mode).filter(|_| !sent.is_empty());
        *valid_until_unix_ns = if sent.is_empty() { 0 } else { t.valid_until_unix_ns };
        spots.clear();
        spots.extend_from_slice(sent);
    }
    s.audit.write_frame(r)?;
    Ok(sent.len() as u32)
}
