//! The stage threads. Each stage takes the newest frame waiting for it (older ones are
//! retired as dropped: freshest frame wins), checks the budget before and after its work,
//! and either passes the frame on or retires it, decided, straight to the link stage —
//! so a held frame never waits behind work it no longer needs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::hop::{HopRx, HopTx, Waker};
use super::telemetry::Counters;
use super::work::{Outcome, Stage, Ticket, Work};
use super::Shared;
use crate::correction::HoldReason;

/// A frame leaving the stage chain early, or a frame the source refused before it had a
/// work buffer.
pub enum Retired {
    /// A frame with its buffers (decided: held, rejected or dropped).
    Work(Box<Work>),
    /// A source-level event: a frame refused before decoding (incomplete, not CT) or
    /// overtaken before it got a buffer.
    Bare {
        /// Its ticket (outcome decided; boxed: this path already allocates its texts, and
        /// the ticket would triple the size of every `Retired`).
        ticket: Box<super::work::Ticket>,
        /// Where it came from.
        origin: String,
        /// Why.
        detail: String,
    },
}

/// The way into the link stage for frames that leave early.
#[derive(Clone)]
pub struct RetireTx {
    tx: Sender<Retired>,
    waker: Waker,
}

impl RetireTx {
    /// A retire path into the consumer `waker` wakes.
    pub fn new(tx: Sender<Retired>, waker: Waker) -> Self {
        RetireTx { tx, waker }
    }
    /// Sends a retired frame to the link stage. The channel holds every work buffer, so it
    /// cannot be full while the link stage runs; if the link stage is gone the frame is lost
    /// with the pipeline, which is then stopping.
    pub fn send(&self, r: Retired) {
        let _ = self.tx.try_send(r);
        self.waker.wake();
    }
}

/// The plumbing every middle stage shares.
pub struct StageIo {
    /// Frames in.
    pub input: HopRx<Box<Work>>,
    /// Frames out, to the next stage.
    pub output: HopTx<Box<Work>>,
    /// Early exits.
    pub retire: RetireTx,
    /// Stop flag, counters, fault hooks.
    pub shared: Arc<Shared>,
    /// Which stage this is.
    pub stage: Stage,
    /// Whether the calling thread has registered to be woken by pushes.
    pub registered: bool,
    /// Told once, when the stage has finished its set-up and waits for its first frame.
    pub ready: Option<Sender<()>>,
}

/// Tells `Pipeline::start` (once) that a stage thread has finished its set-up.
pub(super) fn say_ready(ready: &mut Option<Sender<()>>, shared: &Shared) {
    if let Some(ready) = ready.take() {
        Counters::bump(&shared.counters.stages_ready);
        let _ = ready.send(());
    }
}

/// How long an idle stage sleeps between checks of the stop flag. A push wakes it at once and
/// shutdown unparks it, so this is only a fallback; it was 5 ms, and on 2 cores the six chain
/// threads' 1,200 idle wake-ups a second queued behind each other for the CPU (ingest alone
/// waited 950 ms for a CPU over a 15 s small gate, in ~4,500 time slices).
pub(super) const IDLE_WAIT: Duration = Duration::from_millis(50);

impl StageIo {
    /// Says (once) that the stage has finished its set-up; `Pipeline::start` waits for every
    /// stage's. [`next_frame`](Self::next_frame) says it on its first call.
    pub fn set_up(&mut self) {
        say_ready(&mut self.ready, &self.shared);
    }

    /// Waits for the newest frame; older waiting ones are retired as dropped. `None` when the
    /// pipeline stops.
    pub fn next_frame(&mut self) -> Option<Box<Work>> {
        // the first call comes after the stage's own set-up (tracer copy, buffers)
        self.set_up();
        if !self.registered {
            // the producer's push unparks this thread from now on (else it would only notice
            // new frames when its idle wait times out)
            self.input.register_current();
            self.registered = true;
        }
        loop {
            if let Some(mut w) = self.input.try_pop() {
                while let Some(newer) = self.input.try_pop() {
                    w.decide(
                        Outcome::Dropped,
                        format_args!(
                            "overtaken by frame {} before {}",
                            newer.ticket.frame_id,
                            self.stage.name()
                        ),
                    );
                    Counters::bump(&self.shared.counters.dropped);
                    self.retire.send(Retired::Work(w));
                    w = newer;
                }
                return Some(w);
            }
            if self.shared.stop.load(Ordering::Acquire) || self.input.is_closed() {
                // nothing lost: frames still waiting are held and audited on the way out
                while let Some(mut w) = self.input.try_pop() {
                    w.decide(
                        Outcome::Held(HoldReason::Shutdown),
                        format_args!("pipeline stopped before {}", self.stage.name()),
                    );
                    self.retire.send(Retired::Work(w));
                }
                return None;
            }
            self.input.wait(IDLE_WAIT);
        }
    }

    /// Runs `work` on a frame unless it is already late, timing it; afterwards a late frame
    /// is held. Decided frames are retired; the rest go on.
    pub fn process(&mut self, mut w: Box<Work>, work: impl FnOnce(&mut Work)) {
        let start = Instant::now();
        if w.ticket.is_late(start) {
            let stage = self.stage.name();
            let until_ns = start.saturating_duration_since(w.ticket.complete_at).as_nanos() as u64;
            let ticket = w.ticket;
            let timeline = Timeline(&ticket, until_ns);
            w.decide(
                Outcome::Held(HoldReason::DeadlineMissed),
                format_args!("deadline passed before {stage}: {timeline}"),
            );
        } else {
            w.ticket.mark_start(self.stage, start);
            self.shared.inject_delay(self.stage);
            work(&mut w);
            let end = Instant::now();
            w.ticket.stage_ns[self.stage.index()] = end.duration_since(start).as_nanos() as u64;
            if w.ticket.is_late(end) {
                let stage = self.stage.name();
                let over_us = end.duration_since(w.ticket.deadline).as_micros();
                let until_ns = end.saturating_duration_since(w.ticket.complete_at).as_nanos() as u64;
                let ticket = w.ticket;
                let timeline = Timeline(&ticket, until_ns);
                w.decide(
                    Outcome::Held(HoldReason::DeadlineMissed),
                    format_args!("deadline passed in {stage} (by {over_us} µs): {timeline}"),
                );
            }
        }
        self.forward(w);
    }

    /// Passes a frame on, or retires it when decided (or when the next stage cannot take it).
    pub fn forward(&mut self, w: Box<Work>) {
        if w.ticket.outcome.is_decided() {
            self.retire.send(Retired::Work(w));
            return;
        }
        if let Err(mut w) = self.output.push(w) {
            w.decide(
                Outcome::Dropped,
                format_args!("next stage after {} full", self.stage.name()),
            );
            Counters::bump(&self.shared.counters.dropped);
            self.retire.send(Retired::Work(w));
        }
    }
}

/// Returns work buffers to the pool (a bounded MPMC channel sized to hold them all).
#[derive(Clone)]
pub struct PoolTx(pub Sender<Box<Work>>);

/// Takes work buffers from the pool.
pub struct PoolRx(pub Receiver<Box<Work>>);

impl PoolTx {
    /// Gives a buffer back.
    pub fn give(&self, w: Box<Work>) {
        let _ = self.0.try_send(w);
    }
}

/// A ticket's timeline up to an instant, formatted without allocating (into the detail's
/// bounded buffer).
pub(super) struct Timeline<'a>(pub(super) &'a Ticket, pub(super) u64);

impl std::fmt::Display for Timeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.write_timeline(f, self.1)
    }
}
