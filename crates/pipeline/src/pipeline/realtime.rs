//! Real-time scheduling of the stage threads.
//!
//! On a general-purpose host the pipeline shares its cores with everything else: a browser
//! showing the console, a compile, a backup. Under the default time-sharing scheduler any of
//! them can preempt a stage for a whole scheduler slice (tens of ms, measured: a range stage
//! preempted for 39.9 ms by headless Chromium rendering the console on the same two cores),
//! which is the latency budget. A stage thread under `SCHED_FIFO` runs as soon as it is
//! ready and until it blocks, ahead of every time-shared thread, so other work on the host
//! takes only what the stages leave. The stages block between frames (channel waits, parks),
//! so they do not starve the host; and Linux caps real-time threads at 95 % of each second
//! by default (`/proc/sys/kernel/sched_rt_runtime_us`).
//!
//! Threads a stage starts (a registration's worker threads) inherit its policy.
//!
//! Setting it needs `CAP_SYS_NICE` (root, or an `rtprio` limit in `limits.conf`). With
//! `required = false` a refusal is logged and the stages run time-shared; with `required =
//! true` the pipeline does not start.

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadPriority,
    ThreadPriorityValue, ThreadSchedulePolicy,
};

/// How the stage threads are scheduled (`[realtime]` in the session configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RealtimePolicy {
    /// `SCHED_FIFO` priority, 1–99; 0: time-shared (the default).
    pub priority: u8,
    /// Refuse to start when the priority cannot be set.
    pub required: bool,
}

/// The stage threads could not be given their real-time priority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SCHED_FIFO priority {priority} for the {stage} thread refused: {reason} (needs CAP_SYS_NICE or an rtprio limit; set realtime.priority = 0 to run time-shared)"
)]
pub struct RealtimeError {
    /// The thread.
    pub stage: &'static str,
    /// The priority asked for.
    pub priority: u8,
    /// What the system said.
    pub reason: String,
}

impl RealtimePolicy {
    /// Whether the policy asks for real-time scheduling at all.
    pub fn is_realtime(&self) -> bool {
        self.priority > 0
    }

    /// The same policy `steps` priorities higher (at most 99); time-shared stays time-shared.
    /// With surrogate tracking the surrogate stage and the link run one step above the frame
    /// stages: a set that steers the beam between CT frames must not queue behind a frame's
    /// registration or ray tracing, which take both cores for milliseconds and can wait.
    pub fn raised(self, steps: u8) -> RealtimePolicy {
        if !self.is_realtime() {
            return self;
        }
        RealtimePolicy {
            priority: self.priority.saturating_add(steps).min(99),
            ..self
        }
    }

    /// Applies the policy to the calling thread (`stage` names it in the error). A
    /// time-shared policy changes nothing.
    pub fn apply_to_current_thread(&self, stage: &'static str) -> Result<(), RealtimeError> {
        if !self.is_realtime() {
            return Ok(());
        }
        let err = |reason: String| RealtimeError {
            stage,
            priority: self.priority,
            reason,
        };
        let value = ThreadPriorityValue::try_from(self.priority).map_err(err)?;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(value),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| err(e.to_string()))
    }
}

/// Whether the calling thread runs under `SCHED_FIFO`, and at which priority.
pub fn current_thread_fifo_priority() -> Option<u8> {
    let policy = thread_priority::thread_schedule_policy().ok()?;
    if policy != ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo) {
        return None;
    }
    match thread_priority::get_current_thread_priority().ok()? {
        ThreadPriority::Crossplatform(v) => Some(u8::from(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_shared_changes_nothing() {
        let before = thread_priority::thread_schedule_policy().unwrap();
        RealtimePolicy::default().apply_to_current_thread("test").unwrap();
        assert_eq!(thread_priority::thread_schedule_policy().unwrap(), before);
    }

    #[test]
    fn raising_keeps_time_sharing_and_caps_at_99() {
        assert_eq!(RealtimePolicy::default().raised(1), RealtimePolicy::default());
        let p = RealtimePolicy {
            priority: 10,
            required: true,
        };
        assert_eq!(p.raised(1).priority, 11);
        assert!(p.raised(1).required);
        assert_eq!(RealtimePolicy { priority: 99, ..p }.raised(1).priority, 99);
    }

    #[test]
    fn fifo_is_set_or_refused_with_the_reason() {
        // On a thread of its own: the policy must not leak into the test harness.
        let got = std::thread::spawn(|| {
            let r = RealtimePolicy {
                priority: 10,
                required: true,
            }
            .apply_to_current_thread("range");
            (r, current_thread_fifo_priority())
        })
        .join()
        .unwrap();
        match got {
            // Permitted (root, CAP_SYS_NICE): the thread now runs under FIFO at 10.
            (Ok(()), fifo) => assert_eq!(fifo, Some(10)),
            // Not permitted: refused, naming the thread and the way out, and nothing changed.
            (Err(e), fifo) => {
                assert_eq!(fifo, None);
                let text = e.to_string();
                assert!(
                    text.contains("range") && text.contains("realtime.priority = 0"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn out_of_range_priority_is_refused() {
        let e = std::thread::spawn(|| {
            RealtimePolicy {
                priority: 120,
                required: true,
            }
            .apply_to_current_thread("adapt")
        })
        .join()
        .unwrap()
        .unwrap_err();
        assert_eq!(e.priority, 120);
    }
}
