//! `ionguide surrogate-send`: the tracking system's end for tests and demos. Replays 1–3
//! recorded marker traces (ExtMarker or CSV, the markers of one recording, aligned by
//! sample) as a SURROGATE stream over UDP in real time (or `--rate-x` times faster), signed
//! with the surrogate key, each sample stamped with the instant it is sent as its
//! acquisition instant.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ionguide::correction::unix_now_ns;
use ionguide::link::protocol::SurrogateSample;
use ionguide::link::surrogate::SurrogateSender;
use ionguide::link::LinkKey;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Marker trace (ExtMarker or CSV `t_s,x_mm,y_mm,z_mm`); repeat for up to 3 markers of
    /// one recording.
    #[arg(long, required = true)]
    trace: Vec<PathBuf>,
    /// The pipeline's `surrogate.listen` address.
    #[arg(long)]
    to: SocketAddr,
    /// The surrogate key file (hex or raw, owner-only).
    #[arg(long)]
    key: PathBuf,
    /// Replay this many times faster than recorded.
    #[arg(long, default_value_t = 1.0)]
    rate_x: f64,
    /// Stop after this many seconds of the recording.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Local address to send from.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
}

/// Entry point.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.trace.len() > 3 {
        bail!("at most 3 markers per sample, got {} traces", args.trace.len());
    }
    if !(args.rate_x.is_finite() && args.rate_x > 0.0) {
        bail!("--rate-x must be a positive number, got {}", args.rate_x);
    }
    let traces = args
        .trace
        .iter()
        .map(|p| super::predict::load(p).map(|t| t.trace))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = traces.iter().map(|t| t.t_s.len()).min().unwrap_or(0);
    let key =
        LinkKey::from_file(&args.key).with_context(|| format!("surrogate key {}", args.key.display()))?;
    let mut tx = SurrogateSender::new(args.bind, args.to, &key).context("surrogate socket")?;
    let t0 = traces[0].t_s[0];
    let start = Instant::now();
    let mut sent = 0u64;
    for k in 0..n {
        let rec_s = traces[0].t_s[k] - t0;
        if args.duration_s.is_some_and(|d| rec_s > d) {
            break;
        }
        let due = start + Duration::from_secs_f64(rec_s / args.rate_x);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut pos_mm = [[0.0f32; 3]; 3];
        for (m, t) in traces.iter().enumerate() {
            pos_mm[m] = t.pos_mm[k].map(|v| v as f32);
        }
        let sample = SurrogateSample {
            sample: k as u64,
            acquired_unix_ns: unix_now_ns(),
            markers: traces.len() as u8,
            pos_mm,
        };
        tx.send(&sample)
            .with_context(|| format!("sending sample {k} to {}", args.to))?;
        sent += 1;
    }
    eprintln!(
        "sent {sent} samples of {} marker(s) to {} in {:.1} s (session {:#018x})",
        traces.len(),
        args.to,
        start.elapsed().as_secs_f64(),
        tx.session_id()
    );
    Ok(())
}
