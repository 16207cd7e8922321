//! A gantry-controller simulator: the receiving end of the link, as a state machine (pure,
//! time injected) and a thread runner around a [`LinkReceiver`].
//!
//! The beam is on only while the controller holds a complete, unexpired correction set and
//! hears valid traffic. It holds:
//! - at start, until the first valid set arrives;
//! - when a new sender session appears (a restarted sender starts from held);
//! - on a HOLD (the sender's reason is kept);
//! - when no valid message arrives within the watchdog period ([`HoldReason::LinkSilent`]);
//! - when a set arrives already past its `valid_until`, or the applied set runs out;
//! - on any rejected datagram (forged, replayed, stale, malformed), when
//!   [`ControllerConfig::hold_on_rejected`] is set (the default). The message itself is
//!   never acted on; the hold is there because a dedicated link carrying a forgery or a
//!   replay is not a link to deliver by. The cost is that a stray datagram interrupts
//!   delivery until the next valid set, typically one frame.
//!
//! A valid set, or a RESUME while the applied set is still valid, turns the beam back on.
//!
//! **Delivery** (when [`ControllerConfig::delivery`] is given, [`DeliveryModel`]): while the
//! beam is on the controller delivers the plan's spots in plan order (beams, layers, spots),
//! each at the position, energy and range shifter of the applied set's correction for it.
//! The time model is simple and documented on [`DeliveryModel`]: a spot costs a scan move
//! (or an energy/beam switch) then a dwell of `meterset / rate`; both advance only while the
//! beam is on. A hold during a dwell ends the spot's first *piece* there (its delivered
//! fraction of the meterset is logged); on resume the dwell continues and the rest of the
//! meterset is logged as a second piece when it ends. Every piece is kept in the
//! controller's own log ([`Controller::delivery_log`]) and reported to the sender as
//! DELIVERED datagrams, sent before the ACK of the message that held the beam (so a
//! sender that waits for that ACK has every piece). After the last spot the beam holds
//! ([`Cause::TreatmentComplete`]) and stays held.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ionguide::correction::{CorrectionSet, DeliveredSpot, HoldReason, SpotCorrection};
use ionguide::plan::IonPlan;

use super::timeline::{spot_requests, SynchrotronModel, TimelineError};
use ionguide::link::protocol::unix_now_ns;
use ionguide::link::{Ack, AckStatus, DecodeError, Event, Incoming, LinkError, LinkReceiver, Rejection};

/// The beam state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BeamState {
    /// Delivering with the applied set.
    BeamOn,
    /// Not delivering.
    Held,
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// The controller started (held).
    Startup,
    /// A new sender session was admitted.
    NewSession {
        /// Its id.
        session_id: u64,
    },
    /// The sender sent HOLD.
    Commanded {
        /// The sender's reason.
        reason: HoldReason,
        /// Frame concerned.
        frame_id: u64,
    },
    /// Nothing valid within the watchdog period.
    Watchdog,
    /// A complete set arrived already expired.
    ExpiredOnArrival {
        /// Its frame.
        frame_id: u64,
    },
    /// The applied set passed its `valid_until` with no successor.
    AppliedSetExpired {
        /// Its frame.
        frame_id: u64,
    },
    /// A datagram was rejected.
    Rejected(Rejection),
    /// A valid set was applied.
    Applied {
        /// Its frame.
        frame_id: u64,
    },
    /// RESUME with a still-valid applied set.
    Resumed,
    /// Every spot of the plan was delivered.
    TreatmentComplete,
    /// The applied set carries no correction for the next spot to deliver.
    SpotNotInSet {
        /// The spot (plan order).
        spot_index: u32,
        /// The applied set's frame.
        frame_id: u64,
    },
}

impl Cause {
    /// The audit hold code for a cause that holds the beam (`None` for a beam-on cause and
    /// for the end of the plan).
    pub fn hold_reason(&self) -> Option<HoldReason> {
        match self {
            Cause::Startup | Cause::NewSession { .. } => Some(HoldReason::NotReady),
            Cause::Commanded { reason, .. } => Some(*reason),
            Cause::Watchdog => Some(HoldReason::LinkSilent),
            Cause::ExpiredOnArrival { .. } | Cause::AppliedSetExpired { .. } => {
                Some(HoldReason::DeadlineMissed)
            }
            // No wire code says "link rejected": the closest is a frame that could not be decoded.
            Cause::Rejected(_) => Some(HoldReason::CorruptFrame),
            Cause::SpotNotInSet { .. } => Some(HoldReason::InternalFault),
            Cause::Applied { .. } | Cause::Resumed | Cause::TreatmentComplete => None,
        }
    }
}

/// One state change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerEvent {
    /// Since the controller started (monotonic clock).
    pub since_start: Duration,
    /// Wall clock, ns since the UNIX epoch.
    pub unix_ns: u64,
    /// State before.
    pub from: BeamState,
    /// State after.
    pub to: BeamState,
    /// Why.
    pub cause: Cause,
}

/// One spot the controller will deliver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedSpot {
    /// Beam index in the plan (0-based).
    pub beam: usize,
    /// Meterset, the plan's Scan Spot Meterset Weight units.
    pub meterset: f64,
    /// Beam-on time before the dwell: scan move and settling, or an energy or beam switch, s.
    pub pre_s: f64,
    /// Dwell, s.
    pub dwell_s: f64,
}

/// What the controller delivers and how long each spot takes: the plan's spots in plan
/// order, timed from a [`SynchrotronModel`] without its spill structure (no recharge, no
/// flat-top limit: a simplification for a controller test double):
/// - before each spot, within a layer, the magnets' move ([`SynchrotronModel::travel_s`])
///   plus `spot_settle_s`; at a new layer the longer of that move and `energy_switch_s`; at
///   a new beam `beam_switch_s`; none before the first spot;
/// - the dwell is `weight · particles_per_weight / particle_rate_per_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryModel {
    spots: Vec<PlannedSpot>,
}

impl DeliveryModel {
    /// The plan's spots timed by `machine`; weights × `particles_per_weight` are particles.
    pub fn from_plan(
        plan: &IonPlan,
        machine: &SynchrotronModel,
        particles_per_weight: f64,
    ) -> Result<Self, TimelineError> {
        machine.validate()?;
        let requests = spot_requests(plan, particles_per_weight)?;
        let mut spots = Vec::with_capacity(requests.len());
        let mut prev: Option<&super::timeline::SpotRequest> = None;
        for r in &requests {
            let pre_s = match prev {
                None => 0.0,
                Some(p) if p.beam != r.beam => machine.beam_switch_s,
                Some(p) => {
                    let travel = machine.travel_s([p.x_mm, p.y_mm], [r.x_mm, r.y_mm]);
                    if p.layer != r.layer {
                        travel.max(machine.energy_switch_s)
                    } else {
                        travel + machine.spot_settle_s
                    }
                }
            };
            spots.push(PlannedSpot {
                beam: r.beam,
                meterset: r.particles / particles_per_weight,
                pre_s,
                dwell_s: r.particles / machine.particle_rate_per_s,
            });
            prev = Some(r);
        }
        Ok(DeliveryModel { spots })
    }

    /// A model of the given spots (plan order), e.g. for tests with round numbers.
    pub fn from_spots(spots: Vec<PlannedSpot>) -> Self {
        DeliveryModel { spots }
    }

    /// The spots in delivery order.
    pub fn spots(&self) -> &[PlannedSpot] {
        &self.spots
    }

    /// Beam-on time to deliver everything, s.
    pub fn total_s(&self) -> f64 {
        self.spots.iter().map(|s| s.pre_s + s.dwell_s).sum()
    }
}

/// Controller settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// Hold when nothing valid arrives for this long (default 100 ms).
    pub watchdog: Duration,
    /// Hold on any rejected datagram (default true).
    pub hold_on_rejected: bool,
    /// What to deliver while the beam is on (default none: the controller only tracks the
    /// beam state).
    pub delivery: Option<Arc<DeliveryModel>>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            watchdog: Duration::from_millis(100),
            hold_on_rejected: true,
            delivery: None,
        }
    }
}

impl ControllerConfig {
    /// Sets the watchdog period.
    pub fn with_watchdog(mut self, watchdog: Duration) -> Self {
        self.watchdog = watchdog;
        self
    }
    /// Sets whether a rejected datagram holds the beam.
    pub fn with_hold_on_rejected(mut self, hold: bool) -> Self {
        self.hold_on_rejected = hold;
        self
    }
    /// Delivers `model`'s spots while the beam is on.
    pub fn with_delivery(mut self, model: DeliveryModel) -> Self {
        self.delivery = Some(Arc::new(model));
        self
    }
}

/// Counters of what the controller heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControllerCounters {
    /// Sets applied.
    pub applied_sets: u64,
    /// Complete sets refused as expired on arrival.
    pub expired_sets: u64,
    /// Datagrams with a bad HMAC (forged, corrupted, wrong key).
    pub rejected_forged: u64,
    /// Datagrams refused by the replay guard (replayed, reordered, stale, not admitted).
    pub rejected_replayed: u64,
    /// Other refused datagrams.
    pub rejected_other: u64,
}

/// The controller state machine. Time is passed in, so tests and the simulator drive it.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    state: BeamState,
    started: Instant,
    last_valid: Instant,
    applied: Option<CorrectionSet>,
    events: Vec<ControllerEvent>,
    counters: ControllerCounters,
    /// Sender session of the applied set.
    applied_session: u64,
    /// Delivery: next spot, beam-on time spent on it, meterset already logged for it.
    cursor: usize,
    progress_s: f64,
    piece_done: f64,
    last_advance: Instant,
    complete: bool,
    log: Vec<DeliveredSpot>,
    reported: usize,
}

impl Controller {
    /// A held controller, started at `now`.
    pub fn new(config: ControllerConfig, now: Instant, now_unix_ns: u64) -> Self {
        Controller {
            config,
            state: BeamState::Held,
            started: now,
            last_valid: now,
            applied: None,
            events: vec![ControllerEvent {
                since_start: Duration::ZERO,
                unix_ns: now_unix_ns,
                from: BeamState::Held,
                to: BeamState::Held,
                cause: Cause::Startup,
            }],
            counters: ControllerCounters::default(),
            applied_session: 0,
            cursor: 0,
            progress_s: 0.0,
            piece_done: 0.0,
            last_advance: now,
            complete: false,
            log: Vec::new(),
            reported: 0,
        }
    }

    /// Every spot (piece) delivered so far, in delivery order: the controller's own record.
    pub fn delivery_log(&self) -> &[DeliveredSpot] {
        &self.log
    }

    /// True once every planned spot was delivered.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The pieces not yet reported, their first position in the log, and the sender session
    /// they belong to; marks them reported.
    pub fn take_unreported(&mut self) -> Option<(u64, u64, Vec<DeliveredSpot>)> {
        if self.reported == self.log.len() {
            return None;
        }
        let first = self.reported;
        self.reported = self.log.len();
        Some((self.applied_session, first as u64, self.log[first..].to_vec()))
    }

    fn correction_for(&self, index: usize) -> Option<SpotCorrection> {
        let set = self.applied.as_ref()?;
        let want = u32::try_from(index).ok()?;
        // the pipeline sends every spot in plan order; search only when that does not hold
        match set.spots.get(index) {
            Some(s) if s.spot_index == want => Some(*s),
            _ => set.spots.iter().find(|s| s.spot_index == want).copied(),
        }
    }

    fn log_piece(&mut self, meterset: f64, at_unix_ns: u64) -> bool {
        let Some(spot) = self.correction_for(self.cursor) else {
            return false;
        };
        self.log.push(DeliveredSpot {
            spot,
            meterset,
            frame_id: self.applied.as_ref().map_or(0, |s| s.frame_id),
            delivered_unix_ns: at_unix_ns,
        });
        true
    }

    /// Delivers what the beam-on time since the last call allows.
    fn advance(&mut self, now: Instant, now_unix_ns: u64) {
        let dt_s = now.saturating_duration_since(self.last_advance).as_secs_f64();
        self.last_advance = now;
        let Some(model) = self.config.delivery.clone() else {
            return;
        };
        if self.state != BeamState::BeamOn || self.complete {
            return;
        }
        let mut used_s = 0.0;
        while let Some(sp) = model.spots.get(self.cursor) {
            let need_s = sp.pre_s + sp.dwell_s - self.progress_s;
            if dt_s - used_s < need_s {
                self.progress_s += dt_s - used_s;
                break;
            }
            used_s += need_s;
            let at = now_unix_ns.saturating_sub(((dt_s - used_s) * 1e9) as u64);
            let rest = (sp.meterset - self.piece_done).max(0.0);
            if !self.log_piece(rest, at) {
                let spot_index = self.cursor as u32;
                let frame_id = self.applied.as_ref().map_or(0, |s| s.frame_id);
                self.go(
                    BeamState::Held,
                    Cause::SpotNotInSet { spot_index, frame_id },
                    now,
                    now_unix_ns,
                );
                return;
            }
            self.cursor += 1;
            self.progress_s = 0.0;
            self.piece_done = 0.0;
        }
        if self.cursor >= model.spots.len() {
            self.complete = true;
            self.go(BeamState::Held, Cause::TreatmentComplete, now, now_unix_ns);
        }
    }

    /// The beam stops in the middle of a dwell: the fraction delivered so far is a piece.
    fn interrupt(&mut self, now_unix_ns: u64) {
        let Some(model) = self.config.delivery.clone() else {
            return;
        };
        let Some(sp) = model.spots.get(self.cursor) else {
            return;
        };
        let into_dwell_s = self.progress_s - sp.pre_s;
        if into_dwell_s <= 0.0 || sp.dwell_s <= 0.0 {
            return;
        }
        let done = sp.meterset * (into_dwell_s / sp.dwell_s).min(1.0);
        let piece = done - self.piece_done;
        if piece > 0.0 && self.log_piece(piece, now_unix_ns) {
            self.piece_done = done;
        }
    }

    /// The beam state.
    pub fn state(&self) -> BeamState {
        self.state
    }

    /// State changes so far, oldest first (the first is [`Cause::Startup`]).
    pub fn events(&self) -> &[ControllerEvent] {
        &self.events
    }

    /// The last applied set.
    pub fn applied(&self) -> Option<&CorrectionSet> {
        self.applied.as_ref()
    }

    /// Counters.
    pub fn counters(&self) -> ControllerCounters {
        self.counters
    }

    /// The settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    fn go(&mut self, to: BeamState, cause: Cause, now: Instant, now_unix_ns: u64) {
        if to == BeamState::BeamOn && self.complete {
            return;
        }
        if self.state == BeamState::BeamOn && to == BeamState::Held {
            self.interrupt(now_unix_ns);
        }
        if self.state != to {
            self.events.push(ControllerEvent {
                since_start: now.saturating_duration_since(self.started),
                unix_ns: now_unix_ns,
                from: self.state,
                to,
                cause,
            });
            self.state = to;
        }
    }

    fn applied_valid(&self, now_unix_ns: u64) -> bool {
        self.applied
            .as_ref()
            .is_some_and(|s| s.valid_until_unix_ns > now_unix_ns)
    }

    /// Handles one receiver outcome; returns the ACK to send and where, if any.
    pub fn on_incoming(
        &mut self,
        incoming: &Incoming<'_>,
        now: Instant,
        now_unix_ns: u64,
    ) -> Option<(SocketAddr, Ack)> {
        self.advance(now, now_unix_ns);
        let (header, peer, new_session, event) = match incoming {
            Incoming::Rejected { reason, .. } => {
                match reason {
                    Rejection::Decode(DecodeError::BadMac) => self.counters.rejected_forged += 1,
                    Rejection::Replay(_) => self.counters.rejected_replayed += 1,
                    _ => self.counters.rejected_other += 1,
                }
                if self.config.hold_on_rejected {
                    self.go(BeamState::Held, Cause::Rejected(*reason), now, now_unix_ns);
                }
                return None;
            }
            Incoming::Message {
                header,
                peer,
                new_session,
                event,
            } => (header, *peer, *new_session, event),
        };
        self.last_valid = now;
        if new_session {
            self.go(
                BeamState::Held,
                Cause::NewSession {
                    session_id: header.session_id,
                },
                now,
                now_unix_ns,
            );
        }
        let (status, frame_id) = match *event {
            Event::PartPending { .. } => return None,
            Event::Corrections(set) => {
                match &mut self.applied {
                    Some(a) => a.clone_from(set),
                    None => self.applied = Some(set.clone()),
                }
                self.counters.applied_sets += 1;
                self.applied_session = header.session_id;
                self.go(
                    BeamState::BeamOn,
                    Cause::Applied {
                        frame_id: set.frame_id,
                    },
                    now,
                    now_unix_ns,
                );
                (AckStatus::Applied, set.frame_id)
            }
            Event::Expired { frame_id, .. } => {
                self.counters.expired_sets += 1;
                self.go(
                    BeamState::Held,
                    Cause::ExpiredOnArrival { frame_id },
                    now,
                    now_unix_ns,
                );
                (AckStatus::Expired, frame_id)
            }
            Event::Hold { reason, frame_id } => {
                self.go(
                    BeamState::Held,
                    Cause::Commanded { reason, frame_id },
                    now,
                    now_unix_ns,
                );
                (AckStatus::Accepted, frame_id)
            }
            Event::Resume => {
                if self.applied_valid(now_unix_ns) {
                    self.go(BeamState::BeamOn, Cause::Resumed, now, now_unix_ns);
                }
                (AckStatus::Accepted, 0)
            }
            Event::Heartbeat => (AckStatus::Accepted, 0),
        };
        Some((
            peer,
            Ack {
                acked_session_id: header.session_id,
                acked_sequence: header.sequence,
                frame_id,
                status,
                beam_on: self.state == BeamState::BeamOn,
            },
        ))
    }

    /// Applies the watchdog and the applied set's validity at `now`.
    pub fn tick(&mut self, now: Instant, now_unix_ns: u64) {
        self.advance(now, now_unix_ns);
        if self.state != BeamState::BeamOn {
            return;
        }
        if now.saturating_duration_since(self.last_valid) > self.config.watchdog {
            self.go(BeamState::Held, Cause::Watchdog, now, now_unix_ns);
        } else if !self.applied_valid(now_unix_ns) {
            let frame_id = self.applied.as_ref().map_or(0, |s| s.frame_id);
            self.go(
                BeamState::Held,
                Cause::AppliedSetExpired { frame_id },
                now,
                now_unix_ns,
            );
        }
    }
}

/// A controller running on its own thread.
#[derive(Debug)]
pub struct ControllerHandle {
    shared: Arc<Mutex<Controller>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), LinkError>>,
    addr: SocketAddr,
}

fn lock(m: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    // A panic while holding the lock leaves a consistent state machine (every update is a
    // single assignment or push), so a poisoned lock is still readable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `receiver` and a controller on a thread; `on_event` sees every state change.
pub fn spawn(
    mut receiver: LinkReceiver,
    config: ControllerConfig,
    mut on_event: impl FnMut(&ControllerEvent) + Send + 'static,
) -> Result<ControllerHandle, LinkError> {
    let addr = receiver.local_addr()?;
    // Poll often enough that the watchdog fires within a quarter period of its deadline.
    let poll = (config.watchdog / 4).clamp(Duration::from_micros(100), Duration::from_millis(10));
    let controller = Controller::new(config, Instant::now(), unix_now_ns());
    on_event(&controller.events()[0]);
    let shared = Arc::new(Mutex::new(controller));
    let stop = Arc::new(AtomicBool::new(false));
    let (shared2, stop2) = (shared.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("ionguide-controller".into())
        .spawn(move || {
            let mut last_peer: Option<SocketAddr> = None;
            while !stop2.load(Ordering::Relaxed) {
                let incoming = receiver.recv(poll)?;
                let mut c = lock(&shared2);
                let seen = c.events().len();
                let ack = match &incoming {
                    Some(i) => c.on_incoming(i, Instant::now(), unix_now_ns()),
                    None => None,
                };
                c.tick(Instant::now(), unix_now_ns());
                for e in &c.events()[seen..] {
                    on_event(e);
                }
                if let Some(Incoming::Message { peer, .. }) = &incoming {
                    last_peer = Some(*peer);
                }
                let report = c.take_unreported();
                drop(c);
                // the pieces go before the ACK, so an ACK of a hold follows every piece
                // delivered up to that hold
                if let (Some((session, first, spots)), Some(peer)) = (report, last_peer) {
                    let _ = receiver.send_delivered(peer, session, first, &spots);
                }
                if let Some((peer, ack)) = ack {
                    // An unreachable sender must not stop the controller; the sender's
                    // missing ACKs are its own signal.
                    let _ = receiver.send_ack(peer, &ack);
                }
            }
            Ok(())
        })
        .map_err(|source| LinkError::Io {
            context: "spawn controller thread",
            source,
        })?;
    Ok(ControllerHandle {
        shared,
        stop,
        thread,
        addr,
    })
}

impl ControllerHandle {
    /// The controller's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the controller's current state.
    pub fn with<R>(&self, f: impl FnOnce(&Controller) -> R) -> R {
        f(&lock(&self.shared))
    }

    /// True while the thread runs (false after a socket error ended it).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Stops the thread; returns the final controller, or the error that ended the thread.
    pub fn stop(self) -> Result<Controller, LinkError> {
        self.stop.store(true, Ordering::Relaxed);
        let result = self.thread.join().unwrap_or_else(|_| {
            Err(LinkError::Io {
                context: "controller thread panicked",
                source: std::io::Error::other("panic"),
            })
        });
        result?;
        let c = lock(&self.shared).clone();
        Ok(c)
    }

    /// Blocks until `pred` holds or `timeout` passes; returns whether it held. For tests and
    /// the simulator, which wait for an outcome rather than a time.
    pub fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&Controller) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.with(&mut pred) {
                return true;
            }
            if Instant::now() >= end || !self.is_running() {
                return self.with(&mut pred);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ionguide::correction::RangeMode;
    use ionguide::link::protocol::{Header, MessageType};

    const T0_NS: u64 = 1_750_000_000_000_000_000;

    fn set(frame_id: u64, dx_mm: f32) -> CorrectionSet {
        CorrectionSet {
            frame_id,
            valid_until_unix_ns: u64::MAX,
            mode: Some(RangeMode::Energy),
            tumor_shift_mm: [0.0; 3],
            spots: (0..3)
                .map(|i| SpotCorrection {
                    spot_index: i,
                    x_mm: i as f32 * 10.0 + dx_mm,
                    y_mm: 0.0,
                    energy_mev_u: 100.0,
                    range_shifter_mm_we: 0.0,
                })
                .collect(),
        }
    }

    fn msg<'a>(seq: u64, event: Event<'a>) -> Incoming<'a> {
        Incoming::Message {
            header: Header {
                message_type: MessageType::Corrections,
                session_id: 5,
                sequence: seq,
                sent_unix_ns: T0_NS,
            },
            peer: "127.0.0.1:9".parse().expect("literal"),
            new_session: false,
            event,
        }
    }

    /// Three spots of 1 s dwell and meterset 2, no moves: the delivery times and pieces
    /// follow from the model by hand.
    #[test]
    fn delivers_in_order_stops_at_a_hold_and_resumes_the_interrupted_spot() {
        let model = DeliveryModel::from_spots(
            (0..3)
                .map(|_| PlannedSpot {
                    beam: 0,
                    meterset: 2.0,
                    pre_s: 0.0,
                    dwell_s: 1.0,
                })
                .collect(),
        );
        let config = ControllerConfig::default()
            .with_watchdog(Duration::from_secs(3600))
            .with_delivery(model);
        let t0 = Instant::now();
        let at = |s: f64| (t0 + Duration::from_secs_f64(s), T0_NS + (s * 1e9) as u64);
        let mut c = Controller::new(config, t0, T0_NS);
        let a = set(1, 0.5);
        let (now, ns) = at(0.0);
        c.on_incoming(&msg(1, Event::Corrections(&a)), now, ns);
        assert_eq!(c.state(), BeamState::BeamOn);
        let (now, ns) = at(2.5);
        c.tick(now, ns);
        let log = c.delivery_log();
        assert_eq!(log.len(), 2, "two whole dwells fit in 2.5 s");
        assert_eq!(log[0].delivered_unix_ns, T0_NS + 1_000_000_000);
        assert_eq!(log[1].delivered_unix_ns, T0_NS + 2_000_000_000);
        assert_eq!(
            (log[1].spot.spot_index, log[1].spot.x_mm, log[1].meterset),
            (1, 10.5, 2.0)
        );
        c.on_incoming(
            &msg(
                2,
                Event::Hold {
                    reason: HoldReason::JumpOverLimit,
                    frame_id: 2,
                },
            ),
            now,
            ns,
        );
        assert_eq!(c.state(), BeamState::Held);
        // half of spot 2's dwell: half its meterset, under frame 1
        let piece = c.delivery_log()[2];
        assert_eq!(
            (piece.spot.spot_index, piece.meterset, piece.frame_id),
            (2, 1.0, 1)
        );
        assert_eq!(piece.delivered_unix_ns, T0_NS + 2_500_000_000);
        // held: time passes, nothing is delivered
        let (now, ns) = at(9.0);
        c.tick(now, ns);
        assert_eq!(c.delivery_log().len(), 3);
        // a new set at 10 s; the rest of spot 2 takes the other half dwell, under frame 3
        let b = set(3, -0.5);
        let (now, ns) = at(10.0);
        c.on_incoming(&msg(3, Event::Corrections(&b)), now, ns);
        let (now, ns) = at(10.75);
        c.tick(now, ns);
        let (now, ns) = at(11.0);
        c.tick(now, ns);
        let log = c.delivery_log();
        assert_eq!(log.len(), 4);
        assert_eq!(
            (log[3].spot.spot_index, log[3].meterset, log[3].frame_id),
            (2, 1.0, 3)
        );
        assert_eq!(log[3].spot.x_mm, 19.5);
        assert_eq!(log[3].delivered_unix_ns, T0_NS + 10_500_000_000);
        assert!(c.complete());
        assert_eq!(c.state(), BeamState::Held);
        assert_eq!(c.events().last().map(|e| e.cause), Some(Cause::TreatmentComplete));
        // and a later set does not turn the beam on again
        let (now, ns) = at(12.0);
        c.on_incoming(&msg(4, Event::Corrections(&a)), now, ns);
        assert_eq!(c.state(), BeamState::Held);
        // every piece is reported once, in order
        let (_, first, all) = c.take_unreported().expect("pieces to report");
        assert_eq!((first, all.len()), (0, 4));
        assert!(c.take_unreported().is_none());
    }

    #[test]
    fn a_set_without_the_next_spot_holds() {
        let model = DeliveryModel::from_spots(vec![
            PlannedSpot {
                beam: 0,
                meterset: 1.0,
                pre_s: 0.0,
                dwell_s: 0.1,
            };
            5
        ]);
        let config = ControllerConfig::default()
            .with_watchdog(Duration::from_secs(3600))
            .with_delivery(model);
        let t0 = Instant::now();
        let mut c = Controller::new(config, t0, T0_NS);
        let a = set(1, 0.0); // spots 0..3 only
        c.on_incoming(&msg(1, Event::Corrections(&a)), t0, T0_NS);
        c.tick(t0 + Duration::from_secs(1), T0_NS + 1_000_000_000);
        assert_eq!(c.delivery_log().len(), 3);
        assert_eq!(c.state(), BeamState::Held);
        assert_eq!(
            c.events().last().map(|e| e.cause),
            Some(Cause::SpotNotInSet {
                spot_index: 3,
                frame_id: 1
            })
        );
    }
}
