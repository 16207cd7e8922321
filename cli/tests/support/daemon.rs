//! The daemon as an operator runs it: `ionguide run --config FILE` in a child process, a
//! session folder written from the real STS_001 CT, target and proton plan, the controller
//! simulator on its own loopback UDP socket (in this process), and frames sent by dcmtk's
//! `storescu` over real DICOM associations.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dicom_object::DefaultDicomObject;
use ionguide::link::{LinkKey, LinkOptions, LinkReceiver};
use ionguide_sim::delivery::controller::{spawn, ControllerConfig, ControllerEvent, ControllerHandle};

use super::dicom_edit::{frame_bytes, load_objects, Edit};

/// The repository's test data.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

/// Generous timing: these tests check behaviour on 2 shared cores, not speed.
pub const RELAXED_TIMING: &str = "[timing]\nbudget_ms = 3000\nvalidity_ms = 20000\n";

/// The SCP source on a port the OS picks, 59 slices per frame (the STS_001 series).
pub const SCP_59: &str = "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\nexpected_slices = 59\n";

/// The planning files a session names.
#[derive(Debug, Clone)]
pub struct Planning {
    /// CT folder.
    pub ct: PathBuf,
    /// RT Structure Set.
    pub structures: PathBuf,
    /// RT Ion Plan.
    pub plan: PathBuf,
}

impl Default for Planning {
    /// The real STS_001 CT, its structure set and the OpenTPS proton plan made on them.
    fn default() -> Self {
        Planning {
            ct: data("STS_001/image"),
            structures: data("STS_001/mask/RS.dcm"),
            plan: data("plans/STS_001/RPSTS001G0G90.dcm"),
        }
    }
}

/// A session folder: the key (mode 0600) and the configuration. The key file is written
/// first so a controller can be bound with it before the configuration names its address.
pub struct SessionDir {
    /// The folder (removed on drop).
    pub dir: tempfile::TempDir,
}

impl SessionDir {
    /// A new folder with a key file.
    pub fn new() -> SessionDir {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("link.key");
        std::fs::write(&key, "7f".repeat(32)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        SessionDir { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.path().join("link.key")
    }

    /// The audit log the configuration names.
    pub fn audit_path(&self) -> PathBuf {
        self.path().join("audit/session.audit")
    }

    /// Writes `session.toml` sending to `controller` and returns its path.
    pub fn write_config(&self, controller: SocketAddr, source_toml: &str, extra_toml: &str) -> PathBuf {
        self.write_config_with(controller, source_toml, extra_toml, &Planning::default())
    }

    /// [`SessionDir::write_config`] with other planning files.
    pub fn write_config_with(
        &self,
        controller: SocketAddr,
        source_toml: &str,
        extra_toml: &str,
        planning: &Planning,
    ) -> PathBuf {
        let toml = format!(
            r#"
[planning]
ct = "{ct}"
structures = "{rs}"
roi = "GTV_Mass_CT"
plan = "{plan}"
patient_id = "STS_001"

{source_toml}

[link]
destination = "{controller}"
key_file = "link.key"
heartbeat_ms = 20
ack_timeout_ms = 400

[audit]
path = "audit/session.audit"

{extra_toml}
"#,
            ct = planning.ct.display(),
            rs = planning.structures.display(),
            plan = planning.plan.display(),
        );
        let path = self.path().join("session.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Starts a controller simulator with this folder's key.
    pub fn controller(&self, watchdog: Duration) -> ControllerHandle {
        self.controller_with(ControllerConfig::default().with_watchdog(watchdog))
    }

    /// Starts a controller simulator with this folder's key and `config`.
    pub fn controller_with(&self, config: ControllerConfig) -> ControllerHandle {
        let key = LinkKey::from_file(self.key_path()).unwrap();
        let receiver =
            LinkReceiver::bind("127.0.0.1:0".parse().unwrap(), &key, &LinkOptions::default()).unwrap();
        spawn(receiver, config, |_| {}).unwrap()
    }
}

/// Every state change the controller recorded so far.
pub fn controller_events(c: &ControllerHandle) -> Vec<ControllerEvent> {
    c.with(|c| c.events().to_vec())
}

/// Runs `ionguide run --config FILE` to completion (for configurations that must fail).
pub fn run_to_exit(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    /// Where its SCP listens (parsed from its "listening for CT frames on ADDR" line).
    pub scp: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon and waits until its SCP listens; on an early exit returns the exit
    /// status and everything it wrote to stderr.
    pub fn start(config: &Path) -> Result<Daemon, (ExitStatus, String)> {
        Daemon::start_with(config, &[])
    }

    /// [`Daemon::start`] with more `ionguide run` arguments.
    pub fn start_with(config: &Path, extra: &[&str]) -> Result<Daemon, (ExitStatus, String)> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ionguide"))
            .args(["run", "--config"])
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let pipe = child.stderr.take().unwrap();
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    stderr.lock().unwrap().push_str(&line);
                    stderr.lock().unwrap().push('\n');
                    let _ = tx.send(line);
                }
            });
        }
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening for CT frames on ").nth(1) {
                        let addr = rest.split(' ').next().unwrap().parse().unwrap();
                        return Ok(Daemon {
                            child: Some(child),
                            scp: addr,
                            stderr,
                        });
                    }
                }
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        // let the reader thread drain the pipe
                        std::thread::sleep(Duration::from_millis(100));
                        return Err((status, stderr.lock().unwrap().clone()));
                    }
                    assert!(Instant::now() < end, "the daemon did not listen within 60 s");
                }
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM (as an init system stops a service) and waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success(), "kill -TERM {pid} failed");
        self.wait(Duration::from_secs(30))
    }

    /// SIGKILL: the process ends at once, without running any of its code. Returns the wall
    /// clock (ns since the UNIX epoch) just before the signal was sent.
    pub fn kill(mut self) -> (u64, ExitStatus, String) {
        let before = ionguide::link::protocol::unix_now_ns();
        self.child.as_mut().unwrap().kill().unwrap();
        let (status, stderr) = self.wait(Duration::from_secs(30));
        (before, status, stderr)
    }

    /// Waits for the daemon to exit by itself (an operator ended the session).
    pub fn wait_exit(mut self, timeout: Duration) -> (ExitStatus, String) {
        self.wait(timeout)
    }

    fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let end = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("the daemon did not exit within {timeout:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.child = None;
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // a failed assertion must not leave a daemon running
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes numbered frames of the STS_001 series to disk and sends them with `storescu`.
pub struct FrameSender {
    objects: Vec<DefaultDicomObject>,
    dir: tempfile::TempDir,
}

impl Default for FrameSender {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameSender {
    /// Loads the 59 slices once.
    pub fn new() -> FrameSender {
        FrameSender {
            objects: load_objects(&data("STS_001/image")),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Sends frame number `frame` (fresh SOP Instance UIDs, Acquisition Number `frame`) to
    /// `scp`; returns whether storescu reported success for every object.
    pub fn send(&self, scp: SocketAddr, frame: u32, edit: &Edit) -> bool {
        self.send_with(scp, frame, edit, &[])
    }

    /// [`FrameSender::send`] with more storescu arguments (`+tls KEY CRT +cf CA`, `-aet`).
    pub fn send_with(&self, scp: SocketAddr, frame: u32, edit: &Edit, extra: &[String]) -> bool {
        let folder = self.dir.path().join(frame.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        let files: Vec<PathBuf> = frame_bytes(&self.objects, frame, edit)
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let p = folder.join(format!("{i:03}.dcm"));
                std::fs::write(&p, bytes).unwrap();
                p
            })
            .collect();
        let status = Command::new("storescu")
            .args(["-aec", "IONGUIDE", "-to", "20", "-ta", "20", "-td", "20"])
            .args(extra)
            .arg(scp.ip().to_string())
            .arg(scp.port().to_string())
            .args(&files)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let _ = std::fs::remove_dir_all(&folder);
        status.success()
    }
}
