//! The live console of `ionguide run --console`: served from the daemon over real loopback
//! HTTP while a real session runs (STS_001 CT and plan, frames sent by dcmtk's `storescu`),
//! viewing open to all, operator actions refused without the 0600 token and audited with
//! the operator's name; and the page itself driven in a real browser (Debian's headless
//! Chromium through chromedriver's WebDriver protocol): it sees the frame counts move, a
//! hold appear within 1 s of its cause, performs the restart and sees tracking resume.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ionguide::audit::{AuditReader, AuditRecord};
use ionguide::pipeline::OPERATOR_ACTION_CODE;
use serde_json::{json, Value};
use support::daemon::{Daemon, FrameSender, SessionDir, SCP_59};
use support::dicom_edit::Edit;

const TOKEN: &str = "0123456789abcdef-operator-token";
/// Tight jump limit, relaxed timing: a 6 mm move holds until an operator restarts tracking.
const TIMING: &str = "[timing]\nbudget_ms = 3000\nvalidity_ms = 20000\n[limits]\nmax_jump_mm = 3.0\n";

/// One HTTP/1.1 request on a fresh connection; the status and the body (chunked or not).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    // a browser starting on 2 busy cores can take a while to answer a new WebDriver session
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes())?;
    // read to the end of the message, not of the connection: a WebDriver server may keep it
    // open whatever the request says
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| rest.len() >= len)
                || head.contains("transfer-encoding: chunked") && rest.ends_with("0\r\n\r\n")
            {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out += &after[..n];
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn state(addr: SocketAddr) -> Value {
    let (code, body) = http(addr, "GET", "/api/state", &[], "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn console_addr(d: &Daemon) -> SocketAddr {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(rest) = d.stderr().split("console on http://").nth(1) {
            return rest.split('/').next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < end, "no console line:\n{}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_token(dir: &Path, mode: u32) -> std::path::PathBuf {
    let p = dir.join(format!("console-{mode:o}.token"));
    std::fs::write(&p, TOKEN).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    p
}

fn operator_records(audit: &Path) -> Vec<String> {
    AuditReader::open(audit)
        .unwrap()
        .filter_map(|r| match r {
            AuditRecord::Link { code, detail, .. } if code == OPERATOR_ACTION_CODE => Some(detail),
            _ => None,
        })
        .collect()
}

fn shifted(x_mm: f64) -> Edit {
    Edit {
        shift_mm: [x_mm, 0.0, 0.0],
        ..Edit::default()
    }
}

#[test]
fn a_token_others_may_read_is_refused_before_the_session_starts() {
    let s = SessionDir::new();
    let controller = s.controller(Duration::from_secs(30));
    let config = s.write_config(controller.local_addr(), SCP_59, TIMING);
    let token = write_token(s.path(), 0o644);
    let err = match Daemon::start_with(
        &config,
        &[
            "--console",
            "127.0.0.1:0",
            "--console-token",
            token.to_str().unwrap(),
        ],
    ) {
        Ok(_) => panic!("a world-readable token must be refused"),
        Err((_, stderr)) => stderr,
    };
    assert!(err.contains("lets others read it; chmod 600 it"), "{err}");
}

/// A session folder, its controller, the daemon with its console and an operator token
/// (0600), and where the console listens.
fn session_with_console() -> (
    SessionDir,
    ionguide_sim::delivery::controller::ControllerHandle,
    Daemon,
    SocketAddr,
) {
    let s = SessionDir::new();
    let controller = s.controller(Duration::from_secs(30));
    let config = s.write_config(controller.local_addr(), SCP_59, TIMING);
    let token = write_token(s.path(), 0o600);
    let d = Daemon::start_with(
        &config,
        &[
            "--console",
            "127.0.0.1:0",
            "--console-token",
            token.to_str().unwrap(),
        ],
    )
    .unwrap();
    let addr = console_addr(&d);
    (s, controller, d, addr)
}

#[test]
fn viewing_is_open_actions_need_the_token_and_each_is_audited_by_name() {
    let (s, _controller, d, addr) = session_with_console();
    let (code, page) = http(addr, "GET", "/", &[], "");
    assert_eq!(code, 200);
    assert!(page.contains("<title>ionguide console</title>"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );

    let frames = FrameSender::new();
    assert!(frames.send(d.scp, 1, &shifted(0.0)));
    let end = Instant::now() + Duration::from_secs(30);
    while state(addr)["corrected"] != 1 {
        assert!(Instant::now() < end, "{}", state(addr));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(addr)["beam"], "on");

    let act = |auth: Option<&str>, action: &str| {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        http(
            addr,
            "POST",
            "/api/action",
            &headers,
            &json!({ "action": action, "operator": "Dr. Ada" }).to_string(),
        )
    };
    assert_eq!(act(None, "acknowledge_hold").0, 401);
    assert_eq!(
        act(Some("0123456789abcdef-operator-tokeX"), "acknowledge_hold").0,
        401
    );
    assert_eq!(act(Some(TOKEN), "launch").0, 400);
    let (code, body) = act(Some(TOKEN), "acknowledge_hold");
    assert_eq!(code, 200, "{body}");
    let (code, body) = act(Some(TOKEN), "end_session");
    assert_eq!(code, 200, "{body}");
    // an operator's end is a clean stop, on record as such
    let (status, stderr) = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let audit = s.audit_path();
    assert_eq!(
        operator_records(&audit),
        [
            "operator \"Dr. Ada\": acknowledge hold",
            "operator \"Dr. Ada\": end session"
        ],
        "the refused attempts are not actions"
    );
    let ended = AuditReader::open(&audit)
        .unwrap()
        .find_map(|r| match r {
            AuditRecord::Shutdown { reason, .. } => Some(reason),
            _ => None,
        })
        .unwrap();
    assert_eq!(ended, "ended by an operator at the console");
}

/// A minimal WebDriver client (W3C protocol over chromedriver's loopback HTTP).
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    fn start() -> Option<Browser> {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"]
        }}}});
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let v = b.call("POST", "/session", &caps);
        b.session = v["sessionId"].as_str().expect("a WebDriver session").to_owned();
        Some(b)
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let path = if path == "/session" {
            path.to_owned()
        } else {
            format!("/session/{}{path}", self.session)
        };
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (_, text) = http(
            self.addr,
            method,
            &path,
            &[("Content-Type", "application/json")],
            &body,
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("WebDriver said: {text}"));
        assert!(v["value"]["error"].is_null(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element")
            .to_owned()
    }

    fn text(&self, css: &str) -> String {
        let e = self.element(css);
        self.call("GET", &format!("/element/{e}/text"), &Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/value"), &json!({ "text": text }));
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), &json!({}));
    }

    /// Waits until `css`'s text satisfies `pred`; returns how long it took.
    fn wait_text(&self, css: &str, within: Duration, pred: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let t = self.text(css);
            if pred(&t) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{css} still {t:?} after {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", &Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = try_http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_console_in_a_real_browser_follows_the_session_and_restarts_tracking() {
    let Some(browser) = Browser::start() else {
        eprintln!("NOT RUN: chromedriver is not installed (Debian: chromium chromium-driver; .ci/run installs them)");
        return;
    };
    let (s, _controller, d, addr) = session_with_console();
    browser.call("POST", "/url", &json!({ "url": format!("http://{addr}/") }));
    let frames = FrameSender::new();
    for n in 1..=2 {
        assert!(frames.send(d.scp, n, &shifted(0.0)));
    }
    browser.wait_text("#corrected", Duration::from_secs(30), |t| t == "2");
    browser.wait_text("#beam", Duration::from_secs(5), |t| t == "BEAM ON");
    // the patient moves 6 mm at once: the frame is held by the jump limit; the page shows it
    // within 1 s of the frame's last slice
    assert!(frames.send(d.scp, 3, &shifted(6.0)));
    browser.wait_text("#beam", Duration::from_secs(30), |t| t == "HELD");
    let seen_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3;
    let decided_unix_ms = state(addr)["holds"][0]["from_unix_ms"].as_f64().unwrap();
    let after_ms = seen_unix_ms - decided_unix_ms;
    assert!(
        (0.0..1000.0).contains(&after_ms),
        "the page showed the hold {after_ms:.0} ms after the pipeline decided it"
    );
    eprintln!("the page showed the hold {after_ms:.0} ms after the pipeline decided it");
    assert!(
        browser.text("#why").contains("JumpOverLimit"),
        "{}",
        browser.text("#why")
    );
    // without the token the restart is refused, on the page
    browser.type_into("#operator", "Dr. Ada");
    browser.type_into("#token", "not-the-token-at-all");
    browser.click("button[data-action=restart_tracking]");
    browser.wait_text("#message", Duration::from_secs(5), |t| t.contains("refused"));
    // with it: on record, and the next frame at the new position is corrected
    let e = browser.element("#token");
    browser.call("POST", &format!("/element/{e}/clear"), &json!({}));
    browser.type_into("#token", TOKEN);
    browser.click("button[data-action=restart_tracking]");
    browser.wait_text("#message", Duration::from_secs(5), |t| {
        t.contains("restart tracking by Dr. Ada")
    });
    assert!(frames.send(d.scp, 4, &shifted(6.0)));
    browser.wait_text("#beam", Duration::from_secs(30), |t| t == "BEAM ON");
    browser.wait_text("#corrected", Duration::from_secs(5), |t| t == "3");
    if let Ok(dir) = std::env::var("IONGUIDE_CONSOLE_SCREENSHOT") {
        browser.screenshot(Path::new(&dir));
    }
    let (status, stderr) = d.terminate();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        operator_records(&s.audit_path()),
        ["operator \"Dr. Ada\": restart tracking"]
    );
}
