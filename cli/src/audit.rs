//! `ionguide audit LOG`: what a session's audit log says — the session and its room setup,
//! every frame's outcome counted by reason, latencies, link events, how the session ended,
//! and whether the file ends cleanly, was cut by a crash (torn last record) or is damaged.
//! `--frames` lists every frame; `--json` prints the same as one JSON object; `--plot FILE.svg`
//! draws every frame's latency over the session. `--verify [--key FILE]` checks the log's
//! chain and signed checkpoints instead: what was removed, moved, inserted or edited, where,
//! and through which record the log is proven (exit 1 unless proven whole).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use ionguide::audit::{
    AuditKey, AuditReader, AuditRecord, AuditSummary, Corrections, FrameRecord, SetupRecord, TailStatus,
    TargetRecord, Verification,
};
use ionguide::geometry::RigidTransform;
use nalgebra::{Matrix3, Rotation3, Vector3};
use serde_json::{json, Value};

/// Arguments of `ionguide audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The audit log (`audit.path` of the session's configuration).
    #[arg(value_name = "LOG")]
    path: PathBuf,
    /// Also list every frame: id, outcome, reason, latency, tumor shift, NCC, spots sent.
    #[arg(long)]
    frames: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also draw every frame's latency over the session (SVG): corrected frames as dots,
    /// held, rejected and dropped ones marked along the bottom in red.
    #[arg(long, value_name = "SVG")]
    plot: Option<PathBuf>,
    /// Check the log's integrity instead: the hash chain between records and the HMAC
    /// checkpoints; names every removed, moved, inserted or edited record and says through
    /// which record the log is proven. Exit 1 unless the whole log is proven.
    #[arg(long)]
    verify: bool,
    /// The checkpoints' key file (`audit.key_file`, else the link's `link.key_file`; owner-only
    /// permissions). Without it only the chain is checked, and nothing is proven.
    #[arg(long, value_name = "FILE", requires = "verify")]
    key: Option<PathBuf>,
}

/// Reads the log; fails (after printing what is intact) when the log is damaged, so a script
/// notices. A torn last record — a crash mid-write — is reported but is not a failure.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.verify {
        return verify(&args);
    }
    let mut reader =
        AuditReader::open(&args.path).with_context(|| format!("reading {}", args.path.display()))?;
    let version = reader.header().version;
    let records: Vec<AuditRecord> = reader.by_ref().collect();
    let tail = reader.status().cloned().unwrap_or(TailStatus::Clean);
    let report = Report::new(&records);
    if args.json {
        let mut v = report.json(&tail, version);
        if args.frames {
            v["frames"] = Value::Array(report.frames.iter().map(|f| frame_json(f)).collect());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.text(&args.path, &tail, version));
        if version >= ionguide::audit::CHAIN_VERSION {
            println!(
                "integrity {} signed checkpoint(s); `ionguide audit --verify LOG --key FILE` checks the chain and them",
                reader.checkpoints()
            );
        }
        if args.frames {
            println!(
                "\n{:>10}  {:<9}  {:<28}  {:>9}  {:>26}  {:>6}  {:>6}",
                "frame", "outcome", "reason", "latency", "tumor shift (mm)", "NCC", "spots"
            );
            for f in &report.frames {
                println!("{}", frame_line(f));
            }
        }
    }
    if let Some(svg) = &args.plot {
        plot_latency(svg, &report.frames).map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
        if !args.json {
            println!("plot      {}", svg.display());
        }
    }
    match tail {
        TailStatus::Corrupt { offset, why } => {
            anyhow::bail!(
                "{}: damaged at byte {offset}: {why}; the records before it are listed above",
                args.path.display()
            )
        }
        TailStatus::Clean | TailStatus::TornTail { .. } => Ok(()),
    }
}

struct Report<'a> {
    counts: AuditSummary,
    session: Option<&'a AuditRecord>,
    setups: Vec<&'a SetupRecord>,
    frames: Vec<&'a FrameRecord>,
    targets: Vec<&'a TargetRecord>,
    links: Vec<&'a AuditRecord>,
    shutdown: Option<&'a AuditRecord>,
}

impl<'a> Report<'a> {
    fn new(records: &'a [AuditRecord]) -> Self {
        let mut r = Report {
            counts: AuditSummary::default(),
            session: None,
            setups: Vec::new(),
            frames: Vec::new(),
            targets: Vec::new(),
            links: Vec::new(),
            shutdown: None,
        };
        for rec in records {
            r.counts.count(rec);
            match rec {
                AuditRecord::SessionStart { .. } => r.session = r.session.or(Some(rec)),
                AuditRecord::Setup(s) => r.setups.push(s),
                AuditRecord::Frame(f) => r.frames.push(f),
                AuditRecord::Target(t) => r.targets.push(t),
                AuditRecord::Link { .. } => r.links.push(rec),
                AuditRecord::Shutdown { .. } => r.shutdown = Some(rec),
                // counted in `counts.acks`
                AuditRecord::ControllerAck { .. } | AuditRecord::Delivered { .. } => {}
            }
        }
        r
    }

    /// p50, p99, max of frame complete → on the wire, ms, over frames that sent something.
    fn latency_ms(&self) -> Option<[f64; 3]> {
        let mut ms: Vec<f64> = self
            .frames
            .iter()
            .filter_map(|f| f.latency_ns)
            .map(|n| n as f64 / 1e6)
            .collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Some([at(0.50), at(0.99), ms[ms.len() - 1]])
    }

    fn text(&self, path: &std::path::Path, tail: &TailStatus, version: u16) -> String {
        let mut out = format!("audit log {} (format version {version})\n", path.display());
        match self.session {
            Some(AuditRecord::SessionStart {
                unix_ns,
                config_sha256,
                plan_sop_uid,
                plan_warnings,
            }) => {
                out += &format!(
                    "session   started {}, plan {plan_sop_uid}, configuration SHA-256 {}\n",
                    utc(*unix_ns),
                    hex(config_sha256)
                );
                for w in plan_warnings {
                    out += &format!("          plan read with a warning: {w}\n");
                }
            }
            _ => out += "session   no session start record\n",
        }
        if self.setups.is_empty() {
            out += "setup     not recorded (a version 1 log, or written before the session's setup)\n";
        }
        for s in &self.setups {
            out += &format!("setup     {}\n", setup_text(s));
        }
        let (outcomes, reasons) = (&self.counts.outcomes, &self.counts.reasons);
        let list = |m: &BTreeMap<&str, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!(
            "frames    {}: {}\n",
            self.frames.len(),
            if outcomes.is_empty() {
                "none".into()
            } else {
                list(outcomes)
            }
        );
        if !reasons.is_empty() {
            out += &format!("held/rejected because {}\n", list(reasons));
        }
        if !self.counts.rejects.is_empty() {
            out += &format!("rejected  on input: {}\n", list(&self.counts.rejects));
        }
        if let Some([p50, p99, max]) = self.latency_ms() {
            out += &format!(
                "latency   frame complete → on the wire: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms\n"
            );
        }
        if !self.counts.acks.is_empty() {
            let n = |k: &str| self.counts.acks.get(k).copied().unwrap_or(0);
            out += &format!(
                "controller applied {} correction set(s), {} expired; {} beam-state change(s) otherwise\n",
                n("applied"),
                n("expired"),
                n("accepted")
            );
        }
        if self.counts.delivered_spots > 0 {
            out += &format!(
                "delivered {} spot(s) reported by the controller\n",
                self.counts.delivered_spots
            );
        }
        if let Some(text) = self.targets_text() {
            out += &text;
        }
        out += &format!("link      {} event(s)\n", self.links.len());
        for l in &self.links {
            if let AuditRecord::Link {
                unix_ns,
                code,
                detail,
            } = l
            {
                out += &format!("          {} code {code}: {detail}\n", utc(*unix_ns));
            }
        }
        match self.shutdown {
            Some(AuditRecord::Shutdown { unix_ns, reason }) => {
                out += &format!("ended     {} ({reason})\n", utc(*unix_ns))
            }
            _ => {
                out +=
                    "ended     no shutdown record: the session is running, or ended without one (a crash)\n"
            }
        }
        out += &format!("file      {}\n", tail_text(tail));
        out
    }

    /// Deformable tracking's frame targets: how many, the volume change's range and the
    /// last frame's target (kind 9 records; `None` without any).
    fn targets_text(&self) -> Option<String> {
        let last = self.targets.last()?;
        let (lo, hi) = self
            .targets
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
                (lo.min(t.volume_change_pct), hi.max(t.volume_change_pct))
            });
        let rejected = self.targets.iter().filter(|t| !t.accepted).count();
        let centroid = last.centroid_mm.map_or("none".into(), |c| {
            format!("({:.1}, {:.1}, {:.1}) mm", c[0], c[1], c[2])
        });
        Some(format!(
            "target    {} frame(s) tracked deformably ({rejected} rejected), volume change {lo:+.1}…{hi:+.1}% from plan, {} spot-frame(s) switched off\n          \
             last: frame {}: {:.2} cc ({:+.1}% from {:.2} cc), centroid {centroid}, J min {:.3}, |u| max {:.1} mm, {}/{} spots off\n",
            self.targets.len(),
            self.counts.spots_off,
            last.frame_id,
            last.volume_cc,
            last.volume_change_pct,
            last.planned_volume_cc,
            last.jacobian_min,
            last.field_max_mm,
            last.spots_off.len(),
            last.spots_total,
        ))
    }

    fn json(&self, tail: &TailStatus, version: u16) -> Value {
        let (outcomes, reasons) = (&self.counts.outcomes, &self.counts.reasons);
        let session = match self.session {
            Some(AuditRecord::SessionStart {
                unix_ns,
                config_sha256,
                plan_sop_uid,
                plan_warnings,
            }) => {
                json!({"unix_ns": unix_ns, "utc": utc(*unix_ns), "plan_sop_instance_uid": plan_sop_uid, "config_sha256": hex(config_sha256), "plan_warnings": plan_warnings})
            }
            _ => Value::Null,
        };
        let setups: Vec<Value> = self
            .setups
            .iter()
            .map(|s| {
                json!({
                    "unix_ns": s.unix_ns,
                    "planning_frame_of_reference_uid": s.planning_frame_of_reference_uid,
                    "room_frame_of_reference_uid": s.room_frame_of_reference_uid,
                    "planning_to_room_rotation_row_major": &s.planning_to_room[..9],
                    "planning_to_room_translation_mm": &s.planning_to_room[9..],
                    "registration_sha256": s.registration_sha256.as_ref().map(|h| hex(h)),
                })
            })
            .collect();
        let links: Vec<Value> = self
            .links
            .iter()
            .filter_map(|l| match l {
                AuditRecord::Link {
                    unix_ns,
                    code,
                    detail,
                } => Some(json!({"unix_ns": unix_ns, "code": code, "detail": detail})),
                _ => None,
            })
            .collect();
        let shutdown = match self.shutdown {
            Some(AuditRecord::Shutdown { unix_ns, reason }) => json!({"unix_ns": unix_ns, "reason": reason}),
            _ => Value::Null,
        };
        let latency = self
            .latency_ms()
            .map(|[p50, p99, max]| json!({"p50_ms": p50, "p99_ms": p99, "max_ms": max}));
        let tail = match tail {
            TailStatus::Clean => json!({"status": "clean"}),
            TailStatus::TornTail { offset, bytes } => {
                json!({"status": "torn_tail", "offset": offset, "bytes": bytes})
            }
            TailStatus::Corrupt { offset, why } => json!({"status": "corrupt", "offset": offset, "why": why}),
        };
        json!({
            "format_version": version,
            "session": session,
            "setups": setups,
            "frame_count": self.frames.len(),
            "outcomes": outcomes,
            "hold_reasons": reasons,
            "reject_reasons": self.counts.rejects,
            "latency": latency,
            "link_events": links,
            "controller_acks": &self.counts.acks,
            "delivered_spots": self.counts.delivered_spots,
            "targets": self.targets.iter().map(|t| target_json(t)).collect::<Vec<_>>(),
            "shutdown": shutdown,
            "tail": tail,
        })
    }
}

fn target_json(t: &TargetRecord) -> Value {
    json!({
        "frame_id": t.frame_id,
        "accepted": t.accepted,
        "volume_cc": t.volume_cc,
        "planned_volume_cc": t.planned_volume_cc,
        "volume_change_pct": t.volume_change_pct,
        "centroid_mm": t.centroid_mm,
        "jacobian_min": t.jacobian_min,
        "field_max_mm": t.field_max_mm,
        "inverse_error_mm": t.inverse_error_mm,
        "similarity_ncc": t.similarity_ncc,
        "spots_off": t.spots_off,
        "spots_total": t.spots_total,
    })
}

fn setup_text(s: &SetupRecord) -> String {
    let identity = s.planning_to_room == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    if s.room_frame_of_reference_uid.is_empty() && identity && s.registration_sha256.is_none() {
        return format!(
            "no setup registration: frames used in their own coordinates (planning Frame of Reference {})",
            s.planning_frame_of_reference_uid
        );
    }
    let m = &s.planning_to_room;
    let rotation = Matrix3::new(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]);
    let map = RigidTransform {
        rotation: Rotation3::from_matrix_unchecked(rotation),
        translation_mm: Vector3::new(m[9], m[10], m[11]),
    };
    let [ax, ay, az] = map.rotation_xyz_deg();
    format!(
        "planning Frame of Reference {} → room {}: translation ({:.2}, {:.2}, {:.2}) mm, rotation x {ax:.3}°, y {ay:.3}°, z {az:.3}°; registration file SHA-256 {}",
        s.planning_frame_of_reference_uid,
        s.room_frame_of_reference_uid,
        m[9],
        m[10],
        m[11],
        s.registration_sha256.as_ref().map_or("(none)".into(), |h| hex(h))
    )
}

fn tail_text(tail: &TailStatus) -> String {
    match tail {
        TailStatus::Clean => "ends cleanly: every byte belongs to a valid record".into(),
        TailStatus::TornTail { offset, bytes } => format!(
            "the last record, at byte {offset}, is incomplete ({bytes} bytes): a crash mid-write; everything before it is intact"
        ),
        TailStatus::Corrupt { offset, why } => {
            format!("DAMAGED at byte {offset}: {why}; records before it are intact, nothing after it is trusted")
        }
    }
}

fn frame_line(f: &FrameRecord) -> String {
    let latency = f
        .latency_ns
        .map_or("–".into(), |n| format!("{:.2} ms", n as f64 / 1e6));
    let shift = f
        .tumor_shift_mm
        .map_or("–".into(), |[x, y, z]| format!("({x:.2}, {y:.2}, {z:.2})"));
    let ncc = f.ncc.map_or("–".into(), |v| format!("{v:.3}"));
    // a rejected frame shows why it was refused (not_ct, …) rather than the hold the
    // controller was told of, and the detail naming what was found
    let reason = match f.reject_reason {
        Some(r) => r.name(),
        None => f.hold_reason.map_or("", |h| h.name()),
    };
    let mut line = format!(
        "{:>10}  {:<9}  {:<28}  {:>9}  {:>26}  {:>6}  {:>6}",
        f.frame_id,
        f.outcome.map_or("unknown", |o| o.name()),
        reason,
        latency,
        shift,
        ncc,
        spots_sent(f).map_or("–".into(), |n| n.to_string())
    );
    if f.reject_reason.is_some() && !f.detail.is_empty() {
        line += "  ";
        line += &f.detail;
    }
    line
}

fn spots_sent(f: &FrameRecord) -> Option<usize> {
    match &f.corrections {
        Corrections::None => None,
        Corrections::Full { spots, .. } => Some(spots.len()),
        Corrections::Digest { count, .. } => Some(*count as usize),
    }
}

fn frame_json(f: &FrameRecord) -> Value {
    json!({
        "frame_id": f.frame_id,
        "origin": f.origin,
        "outcome": f.outcome.map(|o| o.name()),
        "hold_reason": f.hold_reason.map(|h| h.name()),
        "reject_reason": f.reject_reason.map(|r| r.name()),
        "detail": f.detail,
        "arrival_unix_ns": f.arrival_unix_ns,
        "complete_unix_ns": f.complete_unix_ns,
        "acquired_unix_ns": f.acquired_unix_ns,
        "latency_ns": f.latency_ns,
        "stage_ns": f.stage_ns,
        "tumor_shift_mm": f.tumor_shift_mm,
        "ncc": f.ncc,
        "spots_sent": spots_sent(f),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `2026-11-29 12:00:00.123 UTC` from ns since the UNIX epoch.
fn utc(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let nanos = (unix_ns % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos).map_or_else(
        || format!("{unix_ns} ns since the UNIX epoch"),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

/// Latency of every frame against the time its last slice arrived (s since the first frame).
fn plot_latency(path: &std::path::Path, frames: &[&FrameRecord]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let t0 = frames.iter().map(|f| f.complete_unix_ns).min().unwrap_or(0);
    let t_s = |f: &FrameRecord| f.complete_unix_ns.saturating_sub(t0) as f64 / 1e9;
    let sent: Vec<(f64, f64)> = frames
        .iter()
        .filter_map(|f| f.latency_ns.map(|n| (t_s(f), n as f64 / 1e6)))
        .collect();
    let not_corrected: Vec<f64> = frames
        .iter()
        .filter(|f| f.outcome != Some(ionguide::audit::Outcome::Corrected))
        .map(|f| t_s(f))
        .collect();
    let t_end = frames.iter().map(|f| t_s(f)).fold(1.0, f64::max);
    let top = sent.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} frames: latency, frame complete → corrections on the wire ({} not corrected)",
                frames.len(),
                not_corrected.len()
            ),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..t_end * 1.02, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time since the first frame (s)")
        .y_desc("ms")
        .draw()?;
    chart
        .draw_series(sent.iter().map(|&p| Circle::new(p, 2, BLUE.mix(0.6).filled())))?
        .label("corrected: latency")
        .legend(|(x, y)| Circle::new((x + 8, y), 3, BLUE.filled()));
    chart
        .draw_series(
            not_corrected
                .iter()
                .map(|&t| Cross::new((t, top * 0.02), 4, RED.stroke_width(2))),
        )?
        .label("held, rejected or dropped")
        .legend(|(x, y)| Cross::new((x + 8, y), 4, RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `--verify`: the chain and checkpoints, printed; an error unless the log is proven whole.
fn verify(args: &Args) -> anyhow::Result<()> {
    let key = args
        .key
        .as_ref()
        .map(AuditKey::from_file)
        .transpose()
        .context("the checkpoint key")?;
    let v = ionguide::audit::verify(&args.path, key.as_ref())
        .with_context(|| format!("reading {}", args.path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verification_json(&v))?);
    } else {
        print!("{}", verification_text(&args.path, &v));
    }
    if v.is_proven_whole() {
        Ok(())
    } else if v.findings.is_empty() {
        anyhow::bail!(
            "{}: the chain is intact but nothing is proven without the key (--key FILE)",
            args.path.display()
        )
    } else {
        anyhow::bail!(
            "{}: {} finding(s); the first at byte {}",
            args.path.display(),
            v.findings.len(),
            v.findings[0].offset
        )
    }
}

fn proven_text(v: &Verification) -> String {
    match (&v.proven, v.key_given) {
        (_, false) => "nothing proven: no key given (--key FILE); the chain alone can be rebuilt by whoever rewrites the log".into(),
        (None, true) => "nothing proven: no checkpoint verified before the first finding".into(),
        (Some(p), true) => format!(
            "from the header through record {} ({} checkpoint at byte {}; bytes 0..{} of the file){}",
            p.seq,
            if p.closing { "closing" } else { "periodic" },
            p.offset,
            p.end,
            if p.seq + 1 < v.records {
                format!("; the {} record(s) after it are not proven", v.records - p.seq - 1)
            } else {
                String::new()
            }
        ),
    }
}

fn verification_text(path: &std::path::Path, v: &Verification) -> String {
    let mut out = format!(
        "audit log {} (format version {}): {} records, {} checkpoints{}\n",
        path.display(),
        v.version,
        v.records,
        v.checkpoints,
        if v.key_given {
            format!(", {} verified with the key", v.checkpoints_verified)
        } else {
            String::new()
        }
    );
    out += &format!("proven    {}\n", proven_text(v));
    if v.findings.is_empty() {
        out += "findings  none\n";
    } else {
        out += &format!("findings  {}\n", v.findings.len());
        for f in &v.findings {
            let at = match f.seq {
                Some(s) => format!("byte {}, record {s}", f.offset),
                None => format!("byte {}", f.offset),
            };
            out += &format!("  {at:<28} {}\n", f.kind);
        }
    }
    out += &format!(
        "verdict   {}\n",
        if v.is_proven_whole() {
            "INTACT: every record proven, closed by a signed checkpoint"
        } else if v.findings.is_empty() {
            "chain intact, not proven (no key)"
        } else {
            "NOT INTACT"
        }
    );
    out
}

fn verification_json(v: &Verification) -> Value {
    json!({
        "version": v.version,
        "records": v.records,
        "checkpoints": v.checkpoints,
        "checkpoints_verified": v.checkpoints_verified,
        "key_given": v.key_given,
        "proven": v.proven.map(|p| json!({"seq": p.seq, "offset": p.offset, "end": p.end, "closing": p.closing})),
        "proven_whole": v.is_proven_whole(),
        "findings": v.findings.iter().map(|f| json!({
            "offset": f.offset,
            "seq": f.seq,
            "what": f.kind.to_string(),
        })).collect::<Vec<_>>(),
    })
}
