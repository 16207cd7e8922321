//! The host under the gate: how fast it is in this run (a frame-sized copy, a fixed compute
//! kernel, touching idle pages) and how long each of the process's threads waited for a CPU
//! (`/proc/self/task/*/schedstat`) and the hypervisor took from the guest (`steal` in
//! `/proc/stat`). A deadline missed while every stage was fast is time a thread spent waiting
//! to run; these name which thread and whether the host or our own threads took the CPU.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What this host charges, measured in the same run as the workload: a gate's stage times
/// move with the host's speed from hour to hour, and these say by how much without the
/// pipeline in the loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HostFloor {
    /// Copying a frame-sized buffer (2 bytes per voxel), median of 21, ms.
    pub frame_copy_ms: f64,
    /// A fixed scalar compute kernel (2^20 dependent multiply-adds), median of 21, ms.
    pub compute_ms: f64,
    /// Reading one byte of each of 2,048 pages after they sat idle for 100 ms (the frame
    /// period), median of 5, µs per page: what a host charges for touching idle memory.
    pub idle_touch_us_per_page: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures the host floor for frames of `frame_voxels` voxels (about 0.6 s).
pub fn measure_host_floor(frame_voxels: usize) -> HostFloor {
    use std::hint::black_box;
    let src: Vec<u8> = (0..frame_voxels * 2).map(|i| i as u8).collect();
    let mut dst = vec![0u8; src.len()];
    let frame_copy_ms = median(
        (0..21)
            .map(|_| {
                let t = Instant::now();
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    let compute_ms = median(
        (0..21)
            .map(|_| {
                let t = Instant::now();
                let mut x = black_box(1.000_000_1f64);
                for _ in 0..(1 << 20) {
                    x = x.mul_add(0.999_999_9, 1e-9);
                }
                black_box(x);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    const PAGE: usize = 4096;
    const PAGES: usize = 2048;
    let pages: Vec<u8> = (0..PAGE * PAGES).map(|i| (i / PAGE) as u8).collect();
    let idle_touch_us_per_page = median(
        (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                let t = Instant::now();
                let sum: u64 = black_box(&pages)
                    .iter()
                    .step_by(PAGE)
                    .map(|&b| u64::from(b))
                    .sum();
                black_box(sum);
                t.elapsed().as_secs_f64() * 1e6 / PAGES as f64
            })
            .collect(),
    );
    HostFloor {
        frame_copy_ms,
        compute_ms,
        idle_touch_us_per_page,
    }
}

/// One thread's scheduler account over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadSched {
    /// The thread's name (`comm`).
    pub name: String,
    /// Time on a CPU, ms.
    pub cpu_ms: f64,
    /// Time runnable but waiting for a CPU, ms.
    pub runqueue_wait_ms: f64,
    /// Times it was put on a CPU.
    pub timeslices: u64,
    /// Its scheduling policy at the end (`other`, `fifo`, `rr`, `batch`, `idle`, `deadline`;
    /// empty where `/proc` does not say).
    pub policy: String,
    /// Its real-time priority at the end (0 for a time-shared thread).
    pub rt_priority: u32,
}

/// The scheduling policy and real-time priority in a `/proc/…/stat` line (fields 41 and 40).
fn policy_of(stat: &str) -> Option<(String, u32)> {
    // The command name in field 2 may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let rt_priority = fields.get(37)?.parse().ok()?;
    let policy = match fields.get(38)?.parse::<u32>().ok()? {
        0 => "other",
        1 => "fifo",
        2 => "rr",
        3 => "batch",
        5 => "idle",
        6 => "deadline",
        _ => "unknown",
    };
    Some((policy.to_owned(), rt_priority))
}

/// A thread's name, its schedstat counters (CPU ns, run-queue wait ns, timeslices) and its
/// policy with its real-time priority.
type ThreadCounters = (String, [u64; 3], Option<(String, u32)>);

/// The scheduler counters of every thread of this process and the host's steal time, at
/// one instant (empty where `/proc` does not have them).
#[derive(Debug, Clone, Default)]
pub struct SchedSnapshot {
    threads: std::collections::BTreeMap<u64, ThreadCounters>,
    steal_ticks: Option<u64>,
}

impl SchedSnapshot {
    /// Reads `/proc/self/task/*/{comm,schedstat}` and `/proc/stat`.
    pub fn now() -> SchedSnapshot {
        let mut threads = std::collections::BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else {
                    continue;
                };
                let path = entry.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
                    continue;
                };
                let v: Vec<u64> = stat.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                let policy = std::fs::read_to_string(path.join("stat"))
                    .ok()
                    .and_then(|s| policy_of(&s));
                if let [cpu_ns, wait_ns, slices] = v[..] {
                    threads.insert(tid, (name.trim().to_owned(), [cpu_ns, wait_ns, slices], policy));
                }
            }
        }
        // cpu  user nice system idle iowait irq softirq steal …, in USER_HZ ticks
        let steal_ticks = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8).and_then(|v| v.parse().ok()))
        });
        SchedSnapshot { threads, steal_ticks }
    }

    /// Per thread, what changed since `earlier` (threads alive at both instants, busiest
    /// waiters first).
    pub fn threads_since(&self, earlier: &SchedSnapshot) -> Vec<ThreadSched> {
        let mut out: Vec<ThreadSched> = self
            .threads
            .iter()
            .filter_map(|(tid, (name, now, policy))| {
                let (_, then, _) = earlier.threads.get(tid)?;
                let (policy, rt_priority) = policy.clone().unwrap_or_default();
                Some(ThreadSched {
                    name: name.clone(),
                    cpu_ms: now[0].saturating_sub(then[0]) as f64 / 1e6,
                    runqueue_wait_ms: now[1].saturating_sub(then[1]) as f64 / 1e6,
                    timeslices: now[2].saturating_sub(then[2]),
                    policy,
                    rt_priority,
                })
            })
            .collect();
        out.sort_by(|a, b| b.runqueue_wait_ms.total_cmp(&a.runqueue_wait_ms));
        out
    }

    /// CPU time the hypervisor took from this guest (all CPUs) since `earlier`, ms
    /// (`None` where `/proc/stat` has no steal column). Ticks are USER_HZ = 100 on Linux.
    pub fn steal_ms_since(&self, earlier: &SchedSnapshot) -> Option<f64> {
        Some(self.steal_ticks?.saturating_sub(earlier.steal_ticks?) as f64 * 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // A real line of a FIFO thread at priority 20 (fields 40 and 41), its name odd on purpose.
        let line = "4242 (ionguide (x) 1) S 1 4242 4242 0 -1 4194624 100 0 0 0 5 3 0 0 -21 0 9 0 \
                    123 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 20 1 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(policy_of(line), Some(("fifo".to_owned(), 20)));
        assert_eq!(policy_of("no parenthesis here"), None);
        // This thread: time-shared unless the harness runs under a real-time policy.
        let own = std::fs::read_to_string("/proc/thread-self/stat").ok();
        if let Some(own) = own {
            let (policy, prio) = policy_of(&own).unwrap();
            assert!(policy == "other" || prio > 0, "{policy} {prio}");
        }
    }

    #[test]
    fn a_busy_thread_shows_its_cpu_time_and_a_sleeping_one_none() {
        let before = SchedSnapshot::now();
        if before.threads.is_empty() {
            eprintln!("NOT MEASURED: /proc/self/task/*/schedstat is not readable here");
            return;
        }
        let busy = std::thread::Builder::new()
            .name("gate-test-busy".into())
            .spawn(|| {
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(60) {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
                std::thread::sleep(Duration::from_millis(200));
                x
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let after = SchedSnapshot::now();
        busy.join().unwrap();
        // the thread was born after `before`: only threads alive at both instants count
        let threads = after.threads_since(&before);
        assert!(threads.iter().all(|t| t.name != "gate-test-busy"));
        let mid = SchedSnapshot::now();
        let me = mid.threads_since(&after);
        assert!(!me.is_empty());
        // a thread runnable for 60 ms of wall time spent them running or waiting for a CPU
        // (on a loaded host mostly waiting), and ran no longer than it was runnable
        let [cpu_ns, wait_ns, _] = after
            .threads
            .values()
            .find(|(n, _, _)| n == "gate-test-busy")
            .map(|(_, v, _)| *v)
            .expect("the busy thread is alive at `after`");
        assert!(
            cpu_ns + wait_ns >= 55_000_000,
            "cpu {cpu_ns} ns + wait {wait_ns} ns"
        );
        assert!(cpu_ns <= 90_000_000, "cpu {cpu_ns} ns");
    }
}
