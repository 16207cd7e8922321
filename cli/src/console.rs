//! The live console: a web page served by the daemon (`ionguide run --console ADDR`) for the
//! people beside the delivery console — beam state (on / held and why), frame outcomes, the
//! tumor's estimated trajectory, latency and a hold timeline, updated live over server-sent
//! events — and the operator actions (acknowledge a hold, reset the jump reference, restart
//! tracking, end the session), each authorised by a token read from a 0600 file and written
//! to the audit log by the pipeline with the operator's name.
//!
//! The console is a client of the pipeline's telemetry, never a participant in the frame
//! path: the daemon's own loop, which already drains the telemetry channel for its status
//! line, copies each finished frame into [`ConsoleState`] under a lock no pipeline thread
//! takes; the HTTP server runs on its own threads. Assets are embedded in the binary (no
//! external network): one HTML page whose small script draws its charts as SVG.
//!
//! HTTP: tiny_http, a small synchronous server — the daemon has no async runtime, and a page,
//! one event stream per viewer and a POST are all the console serves.

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ionguide::pipeline::{FrameEvent, Operator, OperatorAction, Outcome};
use parking_lot::Mutex;
use serde::Serialize;

/// Frames kept for the trajectory chart.
const RECENT_FRAMES: usize = 300;
/// Hold intervals kept for the timeline.
const RECENT_HOLDS: usize = 50;
/// tiny_http's chunk size for a body of unknown length (chunked_transfer's default).
const STREAM_CHUNK: usize = 8192;
/// How often a viewer's event stream gets a snapshot.
const PUSH_PERIOD: Duration = Duration::from_millis(250);

/// One finished frame, as the console shows it.
#[derive(Debug, Clone, Serialize)]
struct FramePoint {
    id: u64,
    /// Seconds since the session started.
    t_s: f64,
    outcome: &'static str,
    reason: Option<String>,
    shift_mm: [f32; 3],
    latency_ms: Option<f64>,
}

/// The target in the newest frame tracked deformably.
#[derive(Debug, Clone, Serialize)]
struct TargetPoint {
    frame_id: u64,
    volume_cc: f64,
    volume_change_pct: f64,
    field_max_mm: f64,
    jacobian_min: f64,
    spots_off: u32,
    spots_total: u32,
}

/// A time the beam was held.
#[derive(Debug, Clone, Serialize)]
struct HoldSpan {
    /// When the frame that started it was decided, ms since the UNIX epoch.
    from_unix_ms: f64,
    from_s: f64,
    to_s: Option<f64>,
    reason: String,
}

/// What a viewer sees.
#[derive(Debug, Clone, Serialize, Default)]
struct Snapshot {
    title: String,
    uptime_s: f64,
    beam: &'static str,
    hold_reason: Option<String>,
    corrected: u64,
    held: u64,
    rejected: u64,
    dropped: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    recent: VecDeque<FramePoint>,
    holds: VecDeque<HoldSpan>,
    /// The newest frame's target, with deformable tracking on.
    target: Option<TargetPoint>,
    actions_enabled: bool,
    ended: bool,
}

/// The console's copy of the session, fed by the daemon's telemetry loop.
pub struct ConsoleState {
    started: Instant,
    snapshot: Mutex<Snapshot>,
    latencies_ms: Mutex<hdrhistogram::Histogram<u64>>,
}

impl ConsoleState {
    fn new(title: String, actions_enabled: bool) -> ConsoleState {
        ConsoleState {
            started: Instant::now(),
            snapshot: Mutex::new(Snapshot {
                title,
                beam: "held",
                hold_reason: Some("no frame corrected yet".into()),
                actions_enabled,
                ..Snapshot::default()
            }),
            latencies_ms: Mutex::new(hdrhistogram::Histogram::new(3).expect("constant precision")),
        }
    }

    /// Records one finished frame.
    pub fn record(&self, e: &FrameEvent) {
        let t_s = self.started.elapsed().as_secs_f64();
        let t = &e.ticket;
        let latency_ms = t.sent_at.map(|_| t.latency_ns() as f64 / 1e6);
        let mut s = self.snapshot.lock();
        let reason = t.outcome.reason().map(|r| format!("{r:?}"));
        match t.outcome {
            Outcome::Corrected => {
                s.corrected += 1;
                if let Some(ms) = latency_ms {
                    let mut h = self.latencies_ms.lock();
                    let _ = h.record((ms * 1000.0).max(1.0) as u64);
                    s.latency_p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0;
                    s.latency_p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
                }
                if s.beam == "held" {
                    if let Some(h) = s.holds.back_mut().filter(|h| h.to_s.is_none()) {
                        h.to_s = Some(t_s);
                    }
                }
                s.beam = "on";
                s.hold_reason = None;
            }
            Outcome::Held(_) | Outcome::Rejected(_) => {
                if matches!(t.outcome, Outcome::Held(_)) {
                    s.held += 1;
                } else {
                    s.rejected += 1;
                }
                let why = reason.clone().unwrap_or_default();
                if s.beam != "held" || s.holds.back().is_none_or(|h| h.to_s.is_some()) {
                    let decided = t.sent_at.unwrap_or_else(Instant::now);
                    s.holds.push_back(HoldSpan {
                        from_unix_ms: t.unix_ns_at(decided) as f64 / 1e6,
                        from_s: t_s,
                        to_s: None,
                        reason: why.clone(),
                    });
                    if s.holds.len() > RECENT_HOLDS {
                        s.holds.pop_front();
                    }
                }
                s.beam = "held";
                s.hold_reason = Some(why);
            }
            Outcome::Dropped => s.dropped += 1,
            Outcome::Pending => {}
        }
        if let Some(g) = &e.target {
            s.target = Some(TargetPoint {
                frame_id: t.frame_id,
                volume_cc: g.volume_cc,
                volume_change_pct: g.volume_change_pct,
                field_max_mm: g.field_max_mm,
                jacobian_min: g.jacobian_min,
                spots_off: g.spots_off,
                spots_total: g.spots_total,
            });
        }
        s.recent.push_back(FramePoint {
            id: t.frame_id,
            t_s,
            outcome: t.outcome.kind(),
            reason,
            shift_mm: e.tumor_shift_mm,
            latency_ms,
        });
        if s.recent.len() > RECENT_FRAMES {
            s.recent.pop_front();
        }
    }

    /// Marks the session over (viewers see it end).
    pub fn end(&self) {
        let mut s = self.snapshot.lock();
        s.ended = true;
        s.beam = "held";
        s.hold_reason = Some("session ended".into());
    }

    fn json(&self) -> String {
        let mut s = self.snapshot.lock();
        s.uptime_s = self.started.elapsed().as_secs_f64();
        serde_json::to_string(&*s).unwrap_or_else(|_| "{}".into())
    }
}

/// A running console.
pub struct Console {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Fed by the daemon's loop.
    pub state: Arc<ConsoleState>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.state.end();
        self.server.unblock();
    }
}

/// Reads the operator token from `path`, refusing a file that others may read.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("console token {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "console token {}: mode {:o} lets others read it; chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading console token {}", path.display()))?
        .trim()
        .to_owned();
    if token.len() < 16 {
        anyhow::bail!(
            "console token {}: {} characters; at least 16 are required",
            path.display(),
            token.len()
        );
    }
    Ok(token)
}

/// Starts the console on `addr` for the session titled `title`; operator actions need
/// `token` (none: the console is view-only).
pub fn start(
    addr: SocketAddr,
    title: String,
    token: Option<String>,
    operator: Operator,
) -> anyhow::Result<Console> {
    let server = Arc::new(
        tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("console: cannot listen on {addr}: {e}"))?,
    );
    let addr = server
        .server_addr()
        .to_ip()
        .context("console: not listening on an IP address")?;
    let state = Arc::new(ConsoleState::new(title, token.is_some()));
    let token = Arc::new(token);
    // one thread accepts; each request gets its own, since an event stream holds its thread
    // for as long as its viewer stays
    {
        let (server, state, token) = (server.clone(), state.clone(), token.clone());
        std::thread::Builder::new()
            .name("ionguide-console".into())
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    let (state, token, operator) = (state.clone(), token.clone(), operator.clone());
                    let _ = std::thread::Builder::new()
                        .name("ionguide-console-req".into())
                        .spawn(move || serve(request, &state, token.as_deref(), &operator));
                }
            })
            .context("console: starting its thread")?;
    }
    Ok(Console { addr, state, server })
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant header")
}

fn serve(mut request: tiny_http::Request, state: &ConsoleState, token: Option<&str>, operator: &Operator) {
    let url = request.url().to_owned();
    let method = request.method().clone();
    let respond = |request: tiny_http::Request, code: u16, kind: &str, body: String| {
        let _ = request.respond(
            tiny_http::Response::from_string(body)
                .with_status_code(code)
                .with_header(header("Content-Type", kind))
                .with_header(header("Cache-Control", "no-store")),
        );
    };
    match (method, url.as_str()) {
        (tiny_http::Method::Get, "/") => respond(request, 200, "text/html; charset=utf-8", PAGE.to_owned()),
        (tiny_http::Method::Get, "/api/state") => respond(request, 200, "application/json", state.json()),
        (tiny_http::Method::Get, "/events") => {
            let stream = EventStream {
                state,
                next: Instant::now(),
                buf: Vec::new(),
                at: 0,
            };
            let response = tiny_http::Response::new(
                tiny_http::StatusCode(200),
                vec![
                    header("Content-Type", "text/event-stream"),
                    header("Cache-Control", "no-store"),
                ],
                stream,
                None,
                None,
            );
            let _ = request.respond(response);
        }
        (tiny_http::Method::Post, "/api/action") => {
            let mut body = String::new();
            let _ = request.as_reader().take(4096).read_to_string(&mut body);
            let given = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.as_str().trim_start_matches("Bearer ").to_owned());
            let (code, text) = match action(&body, token, given.as_deref(), operator) {
                Ok(done) => (200, done),
                Err((code, why)) => (code, why),
            };
            respond(
                request,
                code,
                "application/json",
                serde_json::json!({ "message": text }).to_string(),
            );
        }
        _ => respond(request, 404, "text/plain", "not found".into()),
    }
}

/// Checks the token and takes the action; `Err((status, why))` when refused.
fn action(
    body: &str,
    token: Option<&str>,
    given: Option<&str>,
    operator: &Operator,
) -> Result<String, (u16, String)> {
    let Some(token) = token else {
        return Err((403, "this console is view-only (no --console-token)".into()));
    };
    // compared in constant time: the token guards the beam
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !ok {
        tracing::warn!("console: an operator action was refused: wrong or missing token");
        return Err((401, "refused: wrong or missing operator token".into()));
    }
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| (400, format!("the request is not JSON: {e}")))?;
    let name = v["action"].as_str().unwrap_or_default();
    let Some(act) = OperatorAction::parse(name) else {
        return Err((400, format!("unknown action {name:?}")));
    };
    let who = v["operator"].as_str().unwrap_or_default();
    operator.act(act, who).map_err(|e| (409, e.to_string()))?;
    Ok(format!("{} by {who}: on record", act.name()))
}

/// A never-ending body: one `data:` line with a snapshot every [`PUSH_PERIOD`]; ends when
/// the session does (or the viewer goes: the write fails).
struct EventStream<'a> {
    state: &'a ConsoleState,
    next: Instant,
    buf: Vec<u8>,
    at: usize,
}

impl Read for EventStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.state.snapshot.lock().ended && !self.buf.is_empty() {
                return Ok(0);
            }
            if let Some(wait) = self.next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.next = Instant::now() + PUSH_PERIOD;
            let mut event = format!("data: {}\n\n", self.state.json());
            // tiny_http sends a streamed body through an 8 KiB chunk buffer and flushes only
            // full chunks: an event padded to whole chunks (with an SSE comment line, which
            // the browser ignores) leaves at once instead of seconds later
            let padded = (event.len() + 2).div_ceil(STREAM_CHUNK) * STREAM_CHUNK;
            event.push(':');
            event.extend(std::iter::repeat_n(' ', padded - event.len() - 1));
            event.push('\n');
            debug_assert_eq!(event.len() % STREAM_CHUNK, 0);
            self.buf = event.into_bytes();
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The page: embedded, no external assets.
const PAGE: &str = include_str!("console.html");
