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

pub mod hop;
pub mod ingest_stage;
pub mod register_stage;
pub mod session;
pub mod stages;
pub mod telemetry;
pub mod work;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub use session::{Session, SessionError, SessionOptions};
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
