//! The replay: recorded motion through the whole chain. Frames of the moving anatomy go
//! through the in-process source into the real pipeline; corrections cross the real UDP link
//! to the controller simulator; every applied set is scored against the truth at delivery
//! time — where the tumor really was and the water depth of the true (noise-free) frame.
//!
//! Without correction (`ReplayOptions::correction = false`) the pipeline is not run: the
//! planned spots are delivered unchanged with the beam on, so the same scoring shows what
//! motion does to an untracked delivery.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ionguide::adapt::FrameWepl;
use ionguide::config::Config;
use ionguide::correction::{unix_now_ns, CorrectionSet, RangeMode};
use ionguide::link::{LinkKey, LinkOptions, LinkReceiver};
use ionguide::pipeline::{chain, AuditStart, ChainBuilder, ChainError, Outcome, Session, Stats};
use ionguide::range::{BeamGeometry, RangeEnergyTable};
use ionguide::source::InProcessSource;
use ionguide::units::{MmWe, PointMm, VectorMm};
use ionguide::volume::CtVolume;

use crate::controller::{spawn, BeamState, ControllerConfig};
use crate::report::{ErrorHistogram, FrameScore, Report};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Setting up the session (configuration, DICOM, plan).
    #[error("session: {0}")]
    Session(String),
    /// Making a frame.
    #[error("frame {index}: {reason}")]
    Frame {
        /// Which frame.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The link or controller.
    #[error("link: {0}")]
    Link(String),
    /// The pipeline.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// Writing files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Makes frames and tells the truth about them.
pub trait FrameSource {
    /// A short description for the report.
    fn describe(&self) -> String;
    /// The DICOM objects of frame `index` with the anatomy displaced by `displacement_mm`.
    fn frame(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<Vec<Vec<u8>>, ReplayError>;
    /// [`frame`](Self::frame), saying it was acquired at `acquired_unix_ns` (ns since the UNIX
    /// epoch) when given: the pipeline reckons a correction's validity from that instant.
    /// The default ignores the time (for sources whose frames carry their own, or none).
    fn frame_acquired(
        &mut self,
        index: usize,
        displacement_mm: [f64; 3],
        acquired_unix_ns: Option<u64>,
    ) -> Result<Vec<Vec<u8>>, ReplayError> {
        let _ = acquired_unix_ns;
        self.frame(index, displacement_mm)
    }
    /// The noise-free truth of the same frame, for range scoring.
    fn truth(&mut self, index: usize, displacement_mm: [f64; 3]) -> Result<&CtVolume, ReplayError>;
}

/// Replay knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Pace frames at the trace's times (else as fast as the chain takes them, one at a time).
    pub realtime: bool,
    /// Track (true) or deliver the plan unchanged (false).
    pub correction: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Controller watchdog.
    pub watchdog: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            realtime: false,
            correction: true,
            progress: false,
            watchdog: Duration::from_millis(100),
        }
    }
}

/// What a replay produced.
#[derive(Debug, Clone)]
pub struct ReplayResult {
    /// The summary (`report.json`).
    pub report: Report,
    /// Per frame.
    pub frames: Vec<FrameScore>,
    /// Latency of every frame that reached the wire, ms.
    pub latency_ms: Vec<f64>,
    /// Every correction set the controller applied, in order.
    pub applied: Vec<CorrectionSet>,
}

/// Per-spot geometry the scorer needs (independent of the adapt stage's own arithmetic).
struct SpotTruth {
    beam: usize,
    target_mm: Option<PointMm>,
    x_plan_mm: f64,
    y_plan_mm: f64,
    energy_mev_u: f64,
    planned_depth_mm: f64,
}

/// Where the ray from each scanning magnet's virtual source through `q` crosses the
/// isocenter plane (beam's-eye view x, y), mm.
fn iso_plane_xy(g: &BeamGeometry, q: &PointMm) -> (f64, f64) {
    let r = q - g.isocenter_mm;
    let d = r.dot(&g.to_source);
    let (a, b) = (r.dot(&g.bev_x), r.dot(&g.bev_y));
    let mag = |sad: f64| if sad.is_finite() { sad / (sad - d) } else { 1.0 };
    (a * mag(g.sad_mm[0]), b * mag(g.sad_mm[1]))
}

/// Loads the session a configuration names, with every load check (the chain's own loader).
pub fn load_session(config_path: &Path) -> Result<(Config, Session), ReplayError> {
    chain::load_session(config_path).map_err(|e| ReplayError::Session(e.to_string()))
}

/// Replays `displacements_mm` (one per frame at `times_s`) through the chain of the
/// session `config_path` names, scoring against the truth.
pub fn run(
    scenario: &str,
    config_path: &Path,
    source: &mut dyn FrameSource,
    times_s: &[f64],
    displacements_mm: &[[f64; 3]],
    options: &ReplayOptions,
) -> Result<ReplayResult, ReplayError> {
    let wall = Instant::now();
    let builder = ChainBuilder::load(config_path).map_err(|e| ReplayError::Session(e.to_string()))?;
    let config = builder.config().clone();
    let session = builder.session().clone();
    let default_sad = config.planning.default_sad_mm;
    let geoms: Vec<BeamGeometry> = session
        .plan
        .beams
        .iter()
        .map(|b| BeamGeometry::from_beam(b, default_sad))
        .collect::<Result<_, _>>()
        .map_err(|e| ReplayError::Session(e.to_string()))?;
    let tables: Vec<RangeEnergyTable> = session
        .plan
        .beams
        .iter()
        .map(|b| RangeEnergyTable::new(b.ion))
        .collect::<Result<_, _>>()
        .map_err(|e| ReplayError::Session(e.to_string()))?;
    let spots: Vec<SpotTruth> = session
        .planned
        .spots()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let spot = &session.plan.beams[s.beam].layers[s.layer].spots[s.spot];
            SpotTruth {
                beam: s.beam,
                target_mm: session.planned.target_point_mm(i),
                x_plan_mm: spot.x_mm,
                y_plan_mm: spot.y_mm,
                energy_mev_u: s.energy_mev_u,
                planned_depth_mm: s.planned_depth.get(),
            }
        })
        .collect();
    let budget_ms = config.timing.budget_ms;

    // the chain: controller, link, pipeline
    let key = LinkKey::from_file(&config.link.key_file).map_err(|e| ReplayError::Link(e.to_string()))?;
    let receiver = LinkReceiver::bind(
        "127.0.0.1:0".parse().expect("literal address"),
        &key,
        &LinkOptions::default(),
    )
    .map_err(|e| ReplayError::Link(e.to_string()))?;
    let controller = spawn(
        receiver,
        ControllerConfig::default().with_watchdog(options.watchdog),
        |_| {},
    )
    .map_err(|e| ReplayError::Link(e.to_string()))?;
    let (pipeline, events_tx) = if options.correction {
        let chain = builder
            .destination(controller.local_addr())
            .local("127.0.0.1:0".parse().expect("literal address"))
            .audit_start(AuditStart::Replace)
            .audit_options(ionguide::audit::AuditOptions::default())
            .event_capacity(16)
            .start()
            .map_err(|e| match e {
                ChainError::Key(_) | ChainError::Link { .. } => ReplayError::Link(e.to_string()),
                ChainError::AuditDir { path, source } => ReplayError::Io { path, source },
                e => ReplayError::Pipeline(e.to_string()),
            })?;
        (Some(chain.pipeline), chain.events)
    } else {
        // no pipeline: frames are never pushed, the sender only keeps the source's type
        (None, crossbeam_channel::bounded(1).0)
    };
    let inproc = InProcessSource::new(events_tx, "sim");

    let bar = options.progress.then(|| {
        let b = indicatif::ProgressBar::new(displacements_mm.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} frames {msg}")
                .expect("constant template")
                .progress_chars("=> "),
        );
        b.set_prefix(if options.correction {
            "tracking"
        } else {
            "no correction"
        });
        b
    });

    let mut stats = Stats::new();
    let mut frames = Vec::with_capacity(displacements_mm.len());
    let mut latency_ms = Vec::new();
    let mut applied_sets = Vec::new();
    let (mut tumor_h, mut spot_h, mut range_h) = (
        ErrorHistogram::default(),
        ErrorHistogram::default(),
        ErrorHistogram::default(),
    );
    let mut tracer = session.planned.clone();
    let mut truth_wepl = FrameWepl::for_plan(&session.adapt_plan);
    let mut beam_on_frames = 0u64;
    let t0 = Instant::now();
    let trace_t0 = times_s.first().copied().unwrap_or(0.0);
    for (index, (&t_s, &d)) in times_s.iter().zip(displacements_mm).enumerate() {
        if options.realtime {
            let due = Duration::from_secs_f64((t_s - trace_t0).max(0.0));
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut score = FrameScore {
            frame: index as u64 + 1,
            t_s,
            true_shift_mm: d,
            est_shift_mm: None,
            outcome: "corrected",
            reason: None,
            latency_ms: None,
            beam_on: true,
            tumor_error_mm: None,
            spot_error_max_mm: None,
            range_error_max_mm: None,
        };
        // what the controller delivers for this frame: the planned spots, or the applied set
        let mut delivered: Option<CorrectionSet> = None;
        let mut delivery_shift = d;
        if let Some(p) = &pipeline {
            // acquired now, as the frame is pushed: a replay has no scanner delay of its own
            let objects = source.frame_acquired(index, d, Some(unix_now_ns()))?;
            inproc.push_frame(objects).map_err(|e| ReplayError::Frame {
                index,
                reason: e.to_string(),
            })?;
            let ev = p
                .telemetry()
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| ReplayError::Pipeline(format!("frame {index} did not finish within 30 s")))?;
            stats.record(&ev);
            if std::env::var_os("IONGUIDE_DEBUG_TIMING").is_some() {
                eprintln!(
                    "frame {} latency {:.2} ms stages {:?}",
                    ev.ticket.frame_id,
                    ev.ticket.latency_ns() as f64 / 1e6,
                    ev.ticket.stage_ns.map(|n| n / 1000)
                );
            }
            score.frame = ev.ticket.frame_id;
            score.outcome = ev.ticket.outcome.kind();
            score.reason = ev.ticket.outcome.reason().map(|r| r.name());
            if ev.ticket.sent_at.is_some() {
                let l = ev.ticket.latency_ns() as f64 / 1e6;
                score.latency_ms = Some(l);
                latency_ms.push(l);
                // the truth at delivery time: the trace interpolated at frame time + latency
                delivery_shift = interpolate(times_s, displacements_mm, t_s + l / 1e3);
            }
            if ev.ncc.is_finite() {
                let s = ev.tumor_shift_mm;
                score.est_shift_mm = Some([s[0] as f64, s[1] as f64, s[2] as f64]);
            }
            if ev.ticket.outcome == Outcome::Corrected {
                let id = ev.ticket.frame_id;
                let got = controller.wait_until(Duration::from_secs(5), |c| {
                    c.applied().is_some_and(|a| a.frame_id == id) && c.state() == BeamState::BeamOn
                });
                if got {
                    delivered = controller.with(|c| c.applied().cloned());
                }
            }
            score.beam_on = delivered.is_some();
        }
        if let Some(est) = score.est_shift_mm {
            let e = ((est[0] - delivery_shift[0]).powi(2)
                + (est[1] - delivery_shift[1]).powi(2)
                + (est[2] - delivery_shift[2]).powi(2))
            .sqrt();
            score.tumor_error_mm = Some(e);
            tumor_h.record_mm(e);
        }
        let passthrough = pipeline.is_none();
        if passthrough || delivered.is_some() {
            beam_on_frames += 1;
            // true water depth of every spot's moved target in the noise-free frame
            let truth_ct = source.truth(index, delivery_shift)?;
            let dv = VectorMm::from(delivery_shift);
            session
                .adapt_plan
                .measure_ct(&mut tracer, truth_ct, &session.hlut, &dv, &mut truth_wepl)
                .map_err(|e| ReplayError::Frame {
                    index,
                    reason: format!("truth WEPL: {e}"),
                })?;
            let (mut spot_max, mut range_max) = (0.0f64, 0.0f64);
            for (i, s) in spots.iter().enumerate() {
                let Some(p) = s.target_mm else { continue };
                let g = &geoms[s.beam];
                let (xp, yp) = iso_plane_xy(g, &p);
                let (xq, yq) = iso_plane_xy(g, &(p + dv));
                let (x_need, y_need) = (s.x_plan_mm + xq - xp, s.y_plan_mm + yq - yp);
                let table = &tables[s.beam];
                let (x_got, y_got, range_shift_got) = match &delivered {
                    Some(set) => {
                        let c = set.spots.get(i).copied().unwrap_or_default();
                        let shift = match set.mode {
                            Some(RangeMode::RangeShifter) => -(c.range_shifter_mm_we as f64),
                            _ => {
                                let range = |e: f64| table.range_mm(e).map_or(f64::NAN, MmWe::get);
                                range(c.energy_mev_u as f64) - range(s.energy_mev_u)
                            }
                        };
                        (c.x_mm as f64, c.y_mm as f64, shift)
                    }
                    None => (s.x_plan_mm, s.y_plan_mm, 0.0),
                };
                let spot_err = ((x_got - x_need).powi(2) + (y_got - y_need).powi(2)).sqrt();
                spot_h.record_mm(spot_err);
                spot_max = spot_max.max(spot_err);
                let need = truth_wepl.wepl_mm.get(i).copied().unwrap_or(f32::NAN) as f64 - s.planned_depth_mm;
                let range_err = range_shift_got - need;
                if range_err.is_finite() {
                    range_h.record_mm(range_err);
                    range_max = range_max.max(range_err.abs());
                }
            }
            score.spot_error_max_mm = Some(spot_max);
            score.range_error_max_mm = Some(range_max);
        }
        if let Some(set) = delivered {
            applied_sets.push(set);
        }
        frames.push(score);
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let controller_state = controller.with(|c| c.counters());
    if let Some(p) = pipeline {
        p.shutdown().map_err(|e| ReplayError::Pipeline(e.to_string()))?;
    }
    let _ = controller.stop();
    let n = frames.len() as u64;
    let mut lat_h = ErrorHistogram::default();
    for f in frames.iter().filter(|f| f.outcome == "corrected") {
        if let Some(l) = f.latency_ms {
            lat_h.record_mm(l);
        }
    }
    let stage_ms_p50 = ionguide::pipeline::Stage::ALL
        .iter()
        .map(|s| {
            let h = &stats.stage_us[s.index()];
            (
                s.name(),
                if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.5) as f64 / 1000.0
                },
            )
        })
        .collect();
    let report = Report {
        scenario: format!("{scenario} ({})", source.describe()),
        mode: if options.correction {
            "tracking"
        } else {
            "no_correction"
        },
        frames: n,
        corrected: if options.correction { stats.corrected } else { 0 },
        held: stats.held,
        rejected: stats.rejected,
        dropped: stats.dropped,
        stale_corrections: stats.stale_corrections,
        controller_expired_sets: controller_state.expired_sets,
        budget_ms,
        latency_ms: lat_h.latencies(),
        stage_ms_p50,
        tumor_error_mm: tumor_h.errors(),
        spot_error_mm: spot_h.errors(),
        range_error_mm: range_h.errors(),
        duty_cycle: if n == 0 {
            0.0
        } else {
            beam_on_frames as f64 / n as f64
        },
        corrections_sha256: corrections_digest(&applied_sets),
        wall_s: wall.elapsed().as_secs_f64(),
    };
    Ok(ReplayResult {
        report,
        frames,
        latency_ms,
        applied: applied_sets,
    })
}

/// SHA-256 over every applied set's frame id and spots (in the shared per-spot encoding the
/// wire and the audit log use), in order: two replays agree byte for byte exactly when
/// these agree.
fn corrections_digest(sets: &[CorrectionSet]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for set in sets {
        h.update(set.frame_id.to_le_bytes());
        for c in &set.spots {
            h.update(c.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Linear interpolation of the displacement at time `t` (clamped to the trace).
fn interpolate(times: &[f64], d: &[[f64; 3]], t: f64) -> [f64; 3] {
    let i = times.partition_point(|&x| x <= t);
    if i == 0 {
        return d[0];
    }
    if i >= times.len() {
        return d[times.len() - 1];
    }
    let (t0, t1) = (times[i - 1], times[i]);
    let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
    let mut out = [0.0; 3];
    for a in 0..3 {
        out[a] = d[i - 1][a] + f * (d[i][a] - d[i - 1][a]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_is_linear_and_clamped() {
        let t = [0.0, 1.0, 2.0];
        let d = [[0.0; 3], [2.0, 0.0, -2.0], [2.0, 4.0, -2.0]];
        assert_eq!(interpolate(&t, &d, 0.5), [1.0, 0.0, -1.0]);
        assert_eq!(interpolate(&t, &d, 1.5), [2.0, 2.0, -2.0]);
        assert_eq!(interpolate(&t, &d, -1.0), d[0]);
        assert_eq!(interpolate(&t, &d, 9.0), d[2]);
    }
}
