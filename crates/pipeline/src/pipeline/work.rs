//! What travels through the pipeline: one pooled work item per frame in flight, and its
//! ticket (identity, clocks, outcome). Buffers are taken from the pool by ingest and given
//! back by the link stage, so a warm pipeline moves frames without allocating.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::adapt::{AdaptPlan, FrameWepl};
use crate::correction::{CorrectionSet, HoldReason, RejectReason};
use crate::register::Registration;
use crate::volume::CtVolume;

/// The stages, in order (shared with the audit log's stage slots, hence in the leaf).
pub use crate::correction::Stage;

/// How a frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still moving through the stages.
    Pending,
    /// Corrections were sent to the controller before the deadline.
    Corrected,
    /// The frame was processed but the beam was held (limits, registration, deadline, link).
    Held(HoldReason),
    /// The frame was refused on input (not CT, corrupt, over a limit, incomplete, wrong
    /// patient or session); the beam was held with [`RejectReason::hold_reason`].
    Rejected(RejectReason),
    /// A newer frame overtook it while a stage was behind (freshest frame wins).
    Dropped,
}

impl Outcome {
    /// `corrected`, `held`, `rejected`, `dropped` or `pending`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Corrected => "corrected",
            Outcome::Held(_) => "held",
            Outcome::Rejected(_) => "rejected",
            Outcome::Dropped => "dropped",
        }
    }
    /// The hold reason, for held and rejected frames (for a rejected frame, the one the
    /// controller is told of).
    pub fn reason(&self) -> Option<HoldReason> {
        match self {
            Outcome::Held(r) => Some(*r),
            Outcome::Rejected(r) => r.holds_beam().then(|| r.hold_reason()),
            _ => None,
        }
    }
    /// Why a rejected frame was refused.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            Outcome::Rejected(r) => Some(*r),
            _ => None,
        }
    }
    /// Whether a stage has already decided the frame's fate.
    pub fn is_decided(&self) -> bool {
        !matches!(self, Outcome::Pending)
    }
}

/// A frame's identity and clocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticket {
    /// Pipeline-assigned, strictly increasing from 1.
    pub frame_id: u64,
    /// When the frame became complete at its source (the latency clock's start).
    pub complete_at: Instant,
    /// The same moment on the wall clock, ns since the UNIX epoch.
    pub complete_unix_ns: u64,
    /// `complete_at + budget`: after this, the frame may only end in a hold.
    pub deadline: Instant,
    /// When the scanner acquired it (the mean of its slices' earliest and latest acquisition
    /// instants), ns since the UNIX epoch; `None` until decoded, or when its slices say
    /// nothing.
    pub acquired_unix_ns: Option<u64>,
    /// Wall-clock time after which its corrections are void, ns since the UNIX epoch:
    /// acquisition + validity, or completion + validity for a frame without an acquisition
    /// time. A correction describes the anatomy when the frame was acquired, not when it
    /// arrived.
    pub valid_until_unix_ns: u64,
    /// Time each stage spent on it, ns.
    pub stage_ns: [u64; 5],
    /// When each stage took it up, ns after `complete_at` (0: not reached). With
    /// `stage_ns` this says where a frame's time went: working, or waiting for a thread.
    pub stage_start_ns: [u64; 5],
    /// When the link put its message on the wire (or decided the hold).
    pub sent_at: Option<Instant>,
    /// Its fate.
    pub outcome: Outcome,
}

impl Ticket {
    /// A fresh ticket.
    pub fn new(
        frame_id: u64,
        complete_at: Instant,
        complete_unix_ns: u64,
        budget: Duration,
        validity: Duration,
    ) -> Self {
        Ticket {
            frame_id,
            complete_at,
            complete_unix_ns,
            deadline: complete_at + budget,
            acquired_unix_ns: None,
            valid_until_unix_ns: complete_unix_ns.saturating_add(validity.as_nanos() as u64),
            stage_ns: [0; 5],
            stage_start_ns: [0; 5],
            sent_at: None,
            outcome: Outcome::Pending,
        }
    }
    /// Records when the frame was acquired; its corrections are then valid for `validity`
    /// from that instant instead of from completion.
    pub fn set_acquired(&mut self, acquired_unix_ns: u64, validity: Duration) {
        self.acquired_unix_ns = Some(acquired_unix_ns);
        self.valid_until_unix_ns = acquired_unix_ns.saturating_add(validity.as_nanos() as u64);
    }
    /// The wall-clock instant (ns since the UNIX epoch) of the monotonic instant `at`, on
    /// this frame's clock pair (completion on both clocks), saturating.
    pub fn unix_ns_at(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.complete_at).as_nanos() as u64;
        let before = self.complete_at.saturating_duration_since(at).as_nanos() as u64;
        self.complete_unix_ns.saturating_add(since).saturating_sub(before)
    }
    /// Whether its corrections would be void at the monotonic instant `at`.
    pub fn is_void_at(&self, at: Instant) -> bool {
        self.unix_ns_at(at) >= self.valid_until_unix_ns
    }
    /// Acquisition → message on the wire, ns: what the beam sees of the anatomy's age
    /// (`None` until sent, or without an acquisition time; 0 when the scanner's clock is
    /// ahead of ours).
    pub fn acquisition_latency_ns(&self) -> Option<u64> {
        let sent = self.sent_at?;
        Some(self.unix_ns_at(sent).saturating_sub(self.acquired_unix_ns?))
    }
    /// Whether the deadline has passed at `now`.
    pub fn is_late(&self, now: Instant) -> bool {
        now > self.deadline
    }
    /// Marks `stage` as taking the frame up at `now`.
    pub fn mark_start(&mut self, stage: Stage, now: Instant) {
        self.stage_start_ns[stage.index()] =
            (now.saturating_duration_since(self.complete_at).as_nanos() as u64).max(1);
    }
    /// Time the frame waited before `stage` took it up, ns: from the end of the stage before
    /// (from completion for the first) to its start. `None` when the stage never took it.
    pub fn wait_before_ns(&self, stage: Stage) -> Option<u64> {
        let i = stage.index();
        let start = self.stage_start_ns[i];
        if start == 0 {
            return None;
        }
        let ready = (0..i)
            .rev()
            .find(|&j| self.stage_start_ns[j] > 0)
            .map_or(0, |j| self.stage_start_ns[j] + self.stage_ns[j]);
        Some(start.saturating_sub(ready))
    }
    /// Where the frame's time went, stage by stage, up to `until` (ns after completion):
    /// `ingest 1.9 · wait 0.1 · register 5.2 · wait 40.3 ms` — what a deadline miss is
    /// audited with, so a held frame says whether a stage was slow or a thread was not run.
    pub fn write_timeline(&self, out: &mut impl std::fmt::Write, until_ns: u64) -> std::fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut ready = 0u64;
        let mut first = true;
        for s in Stage::ALL {
            let i = s.index();
            let start = self.stage_start_ns[i];
            if start == 0 {
                continue;
            }
            let sep = if first { "" } else { " · " };
            if start > ready {
                write!(out, "{sep}wait {:.1} · ", ms(start - ready))?;
            } else {
                out.write_str(sep)?;
            }
            write!(out, "{} {:.1}", s.name(), ms(self.stage_ns[i]))?;
            ready = start + self.stage_ns[i];
            first = false;
        }
        if until_ns > ready {
            let sep = if first { "" } else { " · " };
            write!(out, "{sep}wait {:.1}", ms(until_ns - ready))?;
        }
        out.write_str(" ms")
    }
    /// Complete → message on the wire, ns (0 until sent).
    pub fn latency_ns(&self) -> u64 {
        self.sent_at
            .map(|t| t.saturating_duration_since(self.complete_at).as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// One frame in flight with every buffer the stages fill. Pooled.
#[derive(Debug)]
pub struct Work {
    /// Identity, clocks, fate.
    pub ticket: Ticket,
    /// Where it came from (source label), reused.
    pub origin: String,
    /// Why it was held or rejected, human-readable; reused, written without allocating
    /// while it fits its capacity.
    pub detail: String,
    /// The decoded frame.
    pub volume: CtVolume,
    /// The registration result.
    pub registration: Option<Registration>,
    /// The target in the frame, with deformable tracking on (boxed: only then is it
    /// allocated, once per frame).
    pub target: Option<Box<super::deform::FrameTarget>>,
    /// Per spot: water-equivalent depth of its moved target in this frame (the range half).
    pub wepl: FrameWepl,
    /// The corrections to send.
    pub corrections: CorrectionSet,
}

/// Room kept in each reused text buffer.
const TEXT_CAPACITY: usize = 512;

impl Work {
    /// An empty work item whose buffers are sized for `plan`'s spots and a volume like
    /// `volume_like`.
    pub fn new(volume_like: &CtVolume, plan: &AdaptPlan) -> Self {
        let mut corrections = CorrectionSet::default();
        corrections.spots.reserve_exact(plan.spot_count());
        Work {
            ticket: Ticket::new(0, Instant::now(), 0, Duration::ZERO, Duration::ZERO),
            origin: String::with_capacity(TEXT_CAPACITY),
            detail: String::with_capacity(TEXT_CAPACITY),
            volume: volume_like.clone(),
            registration: None,
            target: None,
            wepl: FrameWepl::for_plan(plan),
            corrections,
        }
    }

    /// Resets for a new frame (keeps every buffer).
    pub fn reset(&mut self, ticket: Ticket, origin: &str) {
        self.ticket = ticket;
        self.origin.clear();
        push_truncated(&mut self.origin, origin);
        self.detail.clear();
        self.registration = None;
        self.target = None;
        self.corrections.clear();
    }

    /// Decides the frame's fate with a detail text (the first decision stands).
    pub fn decide(&mut self, outcome: Outcome, detail: std::fmt::Arguments<'_>) {
        if self.ticket.outcome.is_decided() {
            return;
        }
        self.ticket.outcome = outcome;
        self.detail.clear();
        let mut w = Bounded(&mut self.detail);
        let _ = w.write_fmt(detail);
    }
}

/// Appends as much of `s` as fits the buffer's capacity (on a char boundary).
fn push_truncated(buf: &mut String, s: &str) {
    let room = buf.capacity().saturating_sub(buf.len());
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.push_str(&s[..end]);
}

/// A `fmt::Write` that never grows the string past its capacity.
struct Bounded<'a>(&'a mut String);

impl std::fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_truncated(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_never_grows_past_capacity_and_first_decision_stands() {
        let mut detail = String::with_capacity(8);
        let cap = detail.capacity();
        push_truncated(&mut detail, "ééééééééééé");
        assert!(detail.len() <= cap);
        assert_eq!(detail.capacity(), cap);
        let t = Ticket::new(
            1,
            Instant::now(),
            10,
            Duration::from_millis(5),
            Duration::from_millis(7),
        );
        assert_eq!(t.valid_until_unix_ns, 10 + 7_000_000);
        assert!(!t.is_late(t.complete_at));
        assert!(t.is_late(t.deadline + Duration::from_nanos(1)));
    }

    #[test]
    fn the_timeline_splits_a_frame_into_stage_work_and_waits() {
        let at = Instant::now();
        let mut t = Ticket::new(1, at, 0, Duration::from_millis(50), Duration::from_secs(1));
        let ms = Duration::from_millis;
        // ingest 0.5..2.5 ms, register 3..8, range waits until 48 and takes 4
        t.mark_start(Stage::Ingest, at + Duration::from_micros(500));
        t.stage_ns[Stage::Ingest.index()] = 2_000_000;
        t.mark_start(Stage::Register, at + ms(3));
        t.stage_ns[Stage::Register.index()] = 5_000_000;
        t.mark_start(Stage::Range, at + ms(48));
        t.stage_ns[Stage::Range.index()] = 4_000_000;
        assert_eq!(t.wait_before_ns(Stage::Ingest), Some(500_000));
        assert_eq!(t.wait_before_ns(Stage::Register), Some(500_000));
        assert_eq!(t.wait_before_ns(Stage::Range), Some(40_000_000));
        assert_eq!(t.wait_before_ns(Stage::Adapt), None);
        let mut text = String::new();
        t.write_timeline(&mut text, 53_000_000).unwrap();
        assert_eq!(
            text,
            "wait 0.5 · ingest 2.0 · wait 0.5 · register 5.0 · wait 40.0 · range 4.0 · wait 1.0 ms"
        );
    }

    #[test]
    fn validity_counts_from_acquisition_and_latencies_from_both_clocks() {
        let at = Instant::now();
        let complete_unix = 1_000_000_000_000;
        let mut t = Ticket::new(
            1,
            at,
            complete_unix,
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        assert_eq!(t.acquisition_latency_ns(), None);
        // acquired 300 ms before the frame was complete
        t.set_acquired(complete_unix - 300_000_000, Duration::from_millis(500));
        assert_eq!(t.valid_until_unix_ns, complete_unix + 200_000_000);
        assert!(!t.is_void_at(at + Duration::from_millis(199)));
        assert!(t.is_void_at(at + Duration::from_millis(200)));
        t.sent_at = Some(at + Duration::from_millis(7));
        assert_eq!(t.latency_ns(), 7_000_000);
        assert_eq!(t.acquisition_latency_ns(), Some(307_000_000));
        // a scanner clock ahead of ours: never a negative age
        t.set_acquired(complete_unix + 50_000_000, Duration::from_millis(500));
        assert_eq!(t.acquisition_latency_ns(), Some(0));
    }
}
