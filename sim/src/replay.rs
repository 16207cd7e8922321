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
use ionguide::correction::{unix_now_ns, CorrectionSet};
use ionguide::link::{LinkKey, LinkOptions, LinkReceiver};
use ionguide::pipeline::{chain, AuditStart, ChainBuilder, ChainError, Outcome, Session, Stats};
use ionguide::source::InProcessSource;
use ionguide::units::VectorMm;

use crate::delivery::controller::{spawn, BeamState, ControllerConfig};
use crate::imaging::model::ImagingModel;
use crate::imaging::sources::{FrameSource, SourceError};
use crate::motion::track::MotionTrack;
use crate::report::{DeliveryReport, DosePlots, DoseReport, Report};
use crate::scoring::deliveries::{deliver, Delivered, DeliverySetup, DoseSetup, FrameRecord};
use crate::scoring::dose_figures::{as_volume, DoseRegions, FiguresError};
use crate::scoring::histogram::{ErrorHistogram, Quantiles};
use crate::scoring::spots::{tumor_error_mm, SpotScorer};
use crate::scoring::FrameScore;

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
    /// The geometric planner refused the CT or target (what and why in the message).
    #[error("planning: {0}")]
    Plan(#[from] crate::planning::PlannerError),
    /// Reading the motion trace.
    #[error("trace: {0}")]
    Motion(#[from] crate::motion::trace::MotionError),
    /// Writing files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl From<SourceError> for ReplayError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Setup(reason) => ReplayError::Session(reason),
            SourceError::Frame { index, reason } => ReplayError::Frame { index, reason },
            SourceError::Io { path, source } => ReplayError::Io { path, source },
        }
    }
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
    /// How the in-room CT images (default: the idealised 10 Hz, instantaneous frames).
    pub imaging: ImagingModel,
    /// Motion samples per second the truth is taken at (default: the given samples' own rate).
    pub motion_rate_hz: Option<f64>,
    /// At most this many frames.
    pub max_frames: Option<usize>,
    /// Deliver the plan spot by spot on a synchrotron's timeline and score each spot at its
    /// own delivery time (tracked, untracked and gated). Without it each frame is scored at
    /// one instant (frame time + latency), as the release gate's workloads are.
    pub delivery: Option<DeliverySetup>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            realtime: false,
            correction: true,
            progress: false,
            watchdog: Duration::from_millis(100),
            imaging: ImagingModel::ideal_10hz(),
            motion_rate_hz: None,
            max_frames: None,
            delivery: None,
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
    /// The static dose (no motion) and each delivery, when delivered spot by spot.
    pub deliveries: Option<(Option<Vec<f64>>, Vec<Delivered>)>,
    /// What the dose plots draw, when the 4D dose was computed.
    pub dose_plots: Option<DosePlots>,
}

/// Loads the session a configuration names, with every load check (the chain's own loader).
pub fn load_session(config_path: &Path) -> Result<(Config, Session), ReplayError> {
    chain::load_session(config_path).map_err(|e| ReplayError::Session(e.to_string()))
}

/// Replays the motion `displacements_mm` (samples at `times_s`) through the chain of the
/// session `config_path` names, imaging it as `options.imaging` says, scoring against the
/// truth.
pub fn run(
    scenario: &str,
    config_path: &Path,
    source: &mut dyn FrameSource,
    times_s: &[f64],
    displacements_mm: &[[f64; 3]],
    options: &ReplayOptions,
) -> Result<ReplayResult, ReplayError> {
    run_with_dose(
        scenario,
        config_path,
        source,
        times_s,
        displacements_mm,
        options,
        None,
    )
}

/// [`run`], with the 4D dose of every delivery when `dose` is given (needs
/// `options.delivery`).
pub fn run_with_dose(
    scenario: &str,
    config_path: &Path,
    source: &mut dyn FrameSource,
    times_s: &[f64],
    displacements_mm: &[[f64; 3]],
    options: &ReplayOptions,
    dose: Option<&mut DoseSetup>,
) -> Result<ReplayResult, ReplayError> {
    let wall = Instant::now();
    options
        .imaging
        .validate()
        .map_err(|e| ReplayError::Session(e.to_string()))?;
    let builder = ChainBuilder::load(config_path).map_err(|e| ReplayError::Session(e.to_string()))?;
    let native_rate_hz = if times_s.len() >= 2 {
        (times_s.len() - 1) as f64 / (times_s[times_s.len() - 1] - times_s[0])
    } else {
        options.imaging.rate_hz
    };
    let track = MotionTrack::new(
        times_s,
        displacements_mm,
        options.motion_rate_hz.unwrap_or(native_rate_hz),
    )
    .map_err(|e| ReplayError::Session(e.to_string()))?;
    let t0_s = track.start_s();
    let config = builder.config().clone();
    let session = builder.session().clone();
    let default_sad = config.planning.default_sad_mm;
    let scorer = SpotScorer::new(&session, default_sad).map_err(|e| ReplayError::Session(e.to_string()))?;
    let budget_ms = config.timing.budget_ms;
    let validity_s = config.timing.validity_ms / 1e3;
    // How long frames must come: the recording, or as long as the deliveries take.
    let end_s = match &options.delivery {
        None => t0_s + track.recording_s() + 0.5 / options.imaging.rate_hz,
        Some(setup) => {
            let requests =
                crate::delivery::timeline::spot_requests(&session.plan, setup.particles_per_weight)
                    .map_err(|e| ReplayError::Session(e.to_string()))?;
            let untracked = crate::delivery::timeline::schedule_spots(
                &requests,
                &setup.synchrotron,
                &crate::delivery::timeline::BeamPermit::always(),
            )
            .map_err(|e| ReplayError::Session(e.to_string()))?;
            // Holds stretch a tracked delivery; a fifth more and 10 s cover the usual few.
            t0_s + 1.2 * untracked.totals.treatment_s + 10.0 + options.imaging.age_on_arrival_s()
        }
    };
    let mut frame_times = options.imaging.frames(t0_s, end_s);
    if let Some(n) = options.max_frames {
        frame_times.truncate(n);
    }
    let mut records: Vec<FrameRecord> = Vec::with_capacity(frame_times.len());

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
        let b = indicatif::ProgressBar::new(frame_times.len() as u64);
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
    let mut frames = Vec::with_capacity(frame_times.len());
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
    for (index, timing) in frame_times.iter().enumerate() {
        let t_s = timing.depicts_s;
        let d = track.at(t_s);
        if options.realtime {
            let due = Duration::from_secs_f64((timing.available_s - t0_s).max(0.0));
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
            // acquired as long ago as the imaging model says: mid-acquisition plus
            // reconstruction before the frame is complete here
            let age_ns = ((timing.available_s - timing.depicts_s) * 1e9).round() as u64;
            let acquired = unix_now_ns().saturating_sub(age_ns);
            let objects = source.frame_acquired(index, d, Some(acquired))?;
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
                // the truth at delivery time: the motion when the corrections arrive
                delivery_shift = track.at(timing.available_s + l / 1e3);
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
        records.push(FrameRecord {
            depicts_s: t_s,
            // The controller has the set by the end of the budget: the measured latency
            // (far below it, reported above) varies run to run, and the deliveries must not.
            arrival_s: score.latency_ms.map(|_| timing.available_s + budget_ms / 1e3),
            est_shift_mm: score.est_shift_mm,
            set: delivered.clone(),
        });
        if let Some(est) = score.est_shift_mm {
            // scored per spot at delivery time below when delivering spot by spot; here,
            // against the instant the frame shows (the registration's own error)
            let at = if options.delivery.is_some() {
                d
            } else {
                delivery_shift
            };
            let e = tumor_error_mm(est, at);
            score.tumor_error_mm = Some(e);
            if options.delivery.is_none() {
                tumor_h.record_mm(e);
            }
        }
        let passthrough = pipeline.is_none();
        if options.delivery.is_none() && (passthrough || delivered.is_some()) {
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
            let worst = scorer.score_frame(
                delivered.as_ref(),
                &dv,
                &truth_wepl.wepl_mm,
                &mut spot_h,
                &mut range_h,
            );
            score.spot_error_max_mm = Some(worst.spot_max_mm);
            score.range_error_max_mm = Some(worst.range_max_mm);
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
    let dose_setup_view = dose.as_deref().map(|ds| {
        (
            ds.grid.clone(),
            ds.regions.clone(),
            ds.regions.target_name().to_string(),
        )
    });
    let deliveries = match &options.delivery {
        None => None,
        Some(setup) => {
            let bar = options.progress.then(|| {
                let b = indicatif::ProgressBar::new(1);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} spots {msg}")
                        .expect("constant template")
                        .progress_chars("=> "),
                );
                b.set_prefix(if dose.is_some() {
                    "delivering + 4D dose"
                } else {
                    "delivering"
                });
                b
            });
            let result = deliver(
                &session,
                &scorer,
                &track,
                options.correction.then_some(records.as_slice()),
                validity_s,
                setup,
                source,
                dose,
                |done, total| {
                    if let Some(b) = &bar {
                        b.set_length(total);
                        b.set_position(done);
                    }
                },
            )
            .map_err(|e| ReplayError::Pipeline(format!("delivery: {e}")))?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            Some(result)
        }
    };
    if let Some((_, list)) = &deliveries {
        // the headline errors: the tracked delivery's (untracked without correction), per
        // spot at its delivery time
        let name = if options.correction {
            "tracked"
        } else {
            "untracked"
        };
        if let Some(main) = list.iter().find(|d| d.name == name) {
            tumor_h = main.tumor_error.clone();
            spot_h = main.spot_error.clone();
            range_h = main.range_error.clone();
        }
    }
    let (delivery_report, dose_report, dose_plots) = match (&options.delivery, &deliveries) {
        (Some(setup), Some((static_dose, list))) => {
            let delivery_report = DeliveryReport {
                preset: setup.preset.clone(),
                synchrotron: setup.synchrotron.clone(),
                motion: track.usage(
                    t0_s + list
                        .iter()
                        .map(|d| d.timeline.totals.treatment_s)
                        .fold(0.0, f64::max),
                ),
                deliveries: list.iter().map(|d| (d.name, d.summary())).collect(),
            };
            let (dose_report, plots) = match (static_dose, dose_setup_view) {
                (Some(static_dose), Some((grid, regions, target_roi))) => {
                    let (r, p) = dose_figures_of(&grid, &regions, &target_roi, static_dose, list)
                        .map_err(|e| ReplayError::Pipeline(e.to_string()))?;
                    (Some(r), Some(p))
                }
                _ => (None, None),
            };
            (Some(delivery_report), dose_report, plots)
        }
        _ => (None, None, None),
    };
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
        latency_from_acquisition_ms: {
            let h = &stats.acquisition_latency_us;
            let q = |p: f64| {
                if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(p) as f64 / 1000.0
                }
            };
            Quantiles {
                p50: q(0.5),
                p95: None,
                p99: Some(q(0.99)),
                max: if h.is_empty() {
                    0.0
                } else {
                    h.max() as f64 / 1000.0
                },
            }
        },
        stage_ms_p50,
        tumor_error_mm: tumor_h.errors(),
        spot_error_mm: spot_h.errors(),
        range_error_mm: range_h.errors(),
        duty_cycle: match &deliveries {
            Some((_, list)) => list.first().map_or(0.0, |d| d.summary().duty_cycle),
            None if n == 0 => 0.0,
            None => beam_on_frames as f64 / n as f64,
        },
        corrections_sha256: corrections_digest(&applied_sets),
        wall_s: wall.elapsed().as_secs_f64(),
        imaging: options.imaging.clone(),
        delivery: delivery_report,
        dose: dose_report,
    };
    Ok(ReplayResult {
        report,
        frames,
        latency_ms,
        applied: applied_sets,
        deliveries,
        dose_plots,
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

/// The dose figures and plots of the static dose and every delivery: the prescription is
/// the static dose's target median; gamma of each delivery against the static dose.
fn dose_figures_of(
    grid: &ionguide::geometry::Grid,
    regions: &DoseRegions,
    target_roi: &str,
    static_dose: &[f64],
    list: &[Delivered],
) -> Result<(DoseReport, DosePlots), FiguresError> {
    let static_volume = as_volume(grid, static_dose)?;
    let prescription_gy = regions
        .target_d50_gy(&static_volume)
        .filter(|d| *d > 0.0)
        .ok_or_else(|| FiguresError("the static dose gives the target nothing".into()))?;
    let static_figures = regions.figures(&static_volume, None, prescription_gy)?;
    let mut figures = std::collections::BTreeMap::new();
    let mut dvh = vec![(
        "static",
        regions
            .target_dvh(&static_volume, prescription_gy)?
            .points()
            .collect::<Vec<_>>(),
    )];
    let mut difference_slices = Vec::new();
    // the axial slice through the target's centre
    let [ni, nj, nk] = grid.dims();
    let k = regions
        .target_centroid_mm()
        .map(|c| grid.patient_to_index(&c)[2].round().clamp(0.0, (nk - 1) as f64) as usize)
        .unwrap_or(nk / 2);
    for d in list {
        let Some(dose) = &d.dose_gy else { continue };
        let volume = as_volume(grid, dose)?;
        let mut f = regions.figures(&volume, Some(&static_volume), prescription_gy)?;
        if d.name == "gated" {
            f.duty_cycle = Some(d.summary().duty_cycle);
        }
        figures.insert(d.name, f);
        dvh.push((
            d.name,
            regions.target_dvh(&volume, prescription_gy)?.points().collect(),
        ));
        let slice = (0..nj)
            .map(|j| {
                (0..ni)
                    .map(|i| {
                        let n = grid.offset(i, j, k);
                        dose[n] - static_dose[n]
                    })
                    .collect()
            })
            .collect();
        difference_slices.push((d.name, slice));
    }
    let take = |name: &str| figures.get(name).cloned();
    let missing = |name: &str| FiguresError(format!("no {name} dose"));
    let sp = grid.spacing_mm();
    Ok((
        DoseReport {
            target_roi: target_roi.to_string(),
            prescription_gy,
            grid_spacing_mm: sp,
            static_dose: static_figures,
            tracked: take("tracked"),
            untracked: take("untracked").ok_or_else(|| missing("untracked"))?,
            gated: take("gated").ok_or_else(|| missing("gated"))?,
        },
        DosePlots {
            dvh,
            prescription_gy,
            difference_slices,
            slice_spacing_mm: [sp[0], sp[1]],
        },
    ))
}
