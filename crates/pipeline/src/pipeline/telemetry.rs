//! Telemetry from the link stage to a monitor: one small `Copy` event per finished frame
//! on a bounded crossbeam channel (the hot path never blocks on it: a full channel drops the
//! event and counts it), and the monitor's running statistics with HDR latency histograms.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use super::work::{Outcome, Stage, Ticket};

/// One finished frame, as the monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameEvent {
    /// The frame's ticket (identity, clocks, outcome, stage timings).
    pub ticket: Ticket,
    /// Tumor shift from the plan, patient mm (zero when unknown).
    pub tumor_shift_mm: [f32; 3],
    /// Registration NCC (NaN when not registered).
    pub ncc: f32,
    /// Spots whose corrections were sent.
    pub spots_sent: u32,
    /// The target in the frame, with deformable tracking on (volume, change from the plan,
    /// centroid, field checks, spots switched off): what the audit log's kind 9 record holds.
    pub target: Option<super::deform::TargetSummary>,
}

/// Counters the stages bump without locks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames that entered (from any source, including rejected ones).
    pub entered: AtomicU64,
    /// Frames overtaken by a newer one.
    pub dropped: AtomicU64,
    /// Telemetry events lost because the monitor was behind.
    pub telemetry_lost: AtomicU64,
    /// Frames turned away because every work buffer was in flight.
    pub pool_exhausted: AtomicU64,
    /// Link messages sent (datagrams).
    pub datagrams_sent: AtomicU64,
    /// Acknowledgements received from the controller.
    pub acks_received: AtomicU64,
    /// Slices whose pixels were decoded early (before their frame was complete) and kept.
    pub slices_decoded_early: AtomicU64,
    /// Stage threads done with their set-up (all five before `Pipeline::start` returns).
    pub stages_ready: AtomicU64,
    /// Surrogate samples accepted by the surrogate stage's receiver.
    pub surrogate_samples: AtomicU64,
    /// Surrogate datagrams refused (bad HMAC, replayed, stale, malformed).
    pub surrogate_refused: AtomicU64,
    /// Surrogate-driven correction sets put on the wire.
    pub surrogate_sets_sent: AtomicU64,
    /// Surrogate-driven sets held (limits, deadline, tracker holds announced).
    pub surrogate_held: AtomicU64,
    /// Surrogate-driven sets not sent because the newest frame ended in a hold.
    pub surrogate_suppressed: AtomicU64,
    /// Samples that found no free set buffer (the link stage behind) or no frame evidence.
    pub surrogate_skipped: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Running statistics over finished frames (monitor side).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Frames finished, by outcome.
    pub corrected: u64,
    /// Frames held.
    pub held: u64,
    /// Frames rejected on input.
    pub rejected: u64,
    /// Frames overtaken.
    pub dropped: u64,
    /// Corrections sent after their deadline, or void when sent (valid until no later than
    /// the send) — must stay 0.
    pub stale_corrections: u64,
    /// Corrections sent for frames without an acquisition time, whose validity was therefore
    /// reckoned from completion (the scanner's delay before completion unaccounted for).
    pub corrected_untimed: u64,
    /// Complete → on the wire, µs, for every frame that reached the link (sent or held):
    /// what this software adds.
    pub latency_us: Histogram<u64>,
    /// Acquisition → on the wire, µs, for every frame with an acquisition time that reached
    /// the link (sent or held): the age of the anatomy the beam is steered by.
    pub acquisition_latency_us: Histogram<u64>,
    /// Per stage processing time, µs.
    pub stage_us: [Histogram<u64>; 5],
    /// The newest frame's target (deformable tracking on; `None` until one).
    pub last_target: Option<super::deform::TargetSummary>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Stats {
            corrected: 0,
            held: 0,
            rejected: 0,
            dropped: 0,
            stale_corrections: 0,
            corrected_untimed: 0,
            latency_us: histogram(),
            acquisition_latency_us: histogram(),
            stage_us: [histogram(), histogram(), histogram(), histogram(), histogram()],
            last_target: None,
        }
    }

    /// Frames finished in any way.
    pub fn frames(&self) -> u64 {
        self.corrected + self.held + self.rejected + self.dropped
    }

    /// Folds one event in.
    pub fn record(&mut self, e: &FrameEvent) {
        let t = &e.ticket;
        match t.outcome {
            Outcome::Corrected => {
                self.corrected += 1;
                if t.sent_at.is_some_and(|s| s > t.deadline || t.is_void_at(s)) {
                    self.stale_corrections += 1;
                }
                if t.acquired_unix_ns.is_none() {
                    self.corrected_untimed += 1;
                }
            }
            Outcome::Held(_) => self.held += 1,
            Outcome::Rejected(_) => self.rejected += 1,
            Outcome::Dropped => self.dropped += 1,
            Outcome::Pending => {}
        }
        if t.sent_at.is_some() {
            self.latency_us.saturating_record((t.latency_ns() / 1000).max(1));
        }
        if let Some(ns) = t.acquisition_latency_ns() {
            self.acquisition_latency_us.saturating_record((ns / 1000).max(1));
        }
        if e.target.is_some() {
            self.last_target = e.target;
        }
        for s in Stage::ALL {
            let ns = t.stage_ns[s.index()];
            if ns > 0 {
                self.stage_us[s.index()].saturating_record((ns / 1000).max(1));
            }
        }
    }

    /// Latency quantile, ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Largest latency, ms.
    pub fn latency_max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }

    /// Acquisition → wire quantile, ms (0 when no frame had an acquisition time).
    pub fn acquisition_latency_ms(&self, q: f64) -> f64 {
        self.acquisition_latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// One status line: frames, outcomes, latency p50/p99/max (complete → wire), and when
    /// frames carried acquisition times, acquisition → wire p50/p99/max; corrections sent
    /// without one are counted.
    pub fn status_line(&self) -> String {
        let mut line = format!(
            "frames {} | corrected {} held {} rejected {} dropped {} | latency ms p50 {:.2} p99 {:.2} max {:.2}",
            self.frames(),
            self.corrected,
            self.held,
            self.rejected,
            self.dropped,
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.latency_max_ms()
        );
        if !self.acquisition_latency_us.is_empty() {
            line.push_str(&format!(
                " | from acquisition ms p50 {:.2} p99 {:.2} max {:.2}",
                self.acquisition_latency_ms(0.5),
                self.acquisition_latency_ms(0.99),
                self.acquisition_latency_us.max() as f64 / 1000.0
            ));
        }
        if self.corrected_untimed > 0 {
            line.push_str(&format!(
                " | {} corrected without acquisition time (valid from completion)",
                self.corrected_untimed
            ));
        }
        if let Some(t) = &self.last_target {
            line.push_str(&format!(
                " | target {:.1} cc ({:+.1}% from plan), |u| max {:.1} mm, {} of {} spots off",
                t.volume_cc, t.volume_change_pct, t.field_max_mm, t.spots_off, t.spots_total
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correction::HoldReason;
    use std::time::{Duration, Instant};

    #[test]
    fn outcomes_are_counted_and_late_corrections_are_flagged_stale() {
        let mut s = Stats::new();
        let now = Instant::now();
        let mut t = Ticket::new(1, now, 0, Duration::from_millis(10), Duration::from_millis(50));
        t.outcome = Outcome::Corrected;
        t.sent_at = Some(now + Duration::from_millis(4));
        let ev = |t| FrameEvent {
            ticket: t,
            tumor_shift_mm: [0.0; 3],
            ncc: 1.0,
            spots_sent: 0,
            target: None,
        };
        s.record(&ev(t));
        t.sent_at = Some(now + Duration::from_millis(11));
        s.record(&ev(t));
        t.outcome = Outcome::Held(HoldReason::DeadlineMissed);
        s.record(&ev(t));
        t.outcome = Outcome::Dropped;
        t.sent_at = None;
        s.record(&ev(t));
        assert_eq!(
            (s.corrected, s.held, s.dropped, s.stale_corrections),
            (2, 1, 1, 1)
        );
        assert!((s.latency_ms(0.0) - 4.0).abs() < 0.01, "{}", s.latency_ms(0.0));
        assert!((s.latency_max_ms() - 11.0).abs() < 0.02);
        assert_eq!(s.corrected_untimed, 2);
        assert!(s.acquisition_latency_us.is_empty());
    }

    #[test]
    fn acquisition_latency_is_recorded_beside_complete_to_wire_and_void_sends_are_stale() {
        let mut s = Stats::new();
        let now = Instant::now();
        let complete_unix = 5_000_000_000_000;
        let mut t = Ticket::new(
            1,
            now,
            complete_unix,
            Duration::from_millis(100),
            Duration::from_millis(1000),
        );
        // acquired 300 ms before completion, sent 4 ms after
        t.set_acquired(complete_unix - 300_000_000, Duration::from_millis(1000));
        t.outcome = Outcome::Corrected;
        t.sent_at = Some(now + Duration::from_millis(4));
        let ev = FrameEvent {
            ticket: t,
            tumor_shift_mm: [0.0; 3],
            ncc: 1.0,
            spots_sent: 0,
            target: None,
        };
        s.record(&ev);
        assert!((s.latency_ms(0.5) - 4.0).abs() < 0.01);
        assert!(
            (s.acquisition_latency_ms(0.5) - 304.0).abs() < 0.2,
            "{}",
            s.acquisition_latency_ms(0.5)
        );
        assert_eq!((s.stale_corrections, s.corrected_untimed), (0, 0));
        assert!(
            s.status_line().contains("from acquisition ms p50 304"),
            "{}",
            s.status_line()
        );
        // within its deadline but past its validity: stale
        let mut old = t;
        old.set_acquired(complete_unix - 1_000_000_000, Duration::from_millis(1000));
        s.record(&FrameEvent { ticket: old, ..ev });
        assert_eq!(s.stale_corrections, 1);
    }
}
