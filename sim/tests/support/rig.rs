//! A whole chain on loopback for end-to-end and fault tests: a session from the real
//! STS_001 CT, target and proton plan (loaded through a TOML configuration, as the daemon
//! does), the pipeline, a real UDP link with a key file, the controller simulator on its own
//! socket, and an audit log in a temporary folder — built by the pipeline's one chain
//! builder, as the daemon, the replay and the gate build theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ionguide::audit::{AuditOptions, AuditReader, AuditRecord, TailStatus};
use ionguide::link::{LinkKey, LinkOptions, LinkReceiver};
use ionguide::pipeline::{AuditStart, Chain, ChainBuilder, FrameEvent, LinkTiming, Pipeline, Session};
use ionguide::source::SourceEvent;
use ionguide_sim::delivery::controller::{spawn, ControllerConfig, ControllerHandle, DeliveryModel};

/// The repository's test data.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

/// Writes a session folder (config, key) and returns the config path. `planning_toml` adds
/// keys to the `[planning]` table.
pub fn write_session(dir: &Path, planning_toml: &str, extra_toml: &str, source_toml: &str) -> PathBuf {
    write_session_with(
        dir,
        [
            &data("STS_001/image"),
            &data("STS_001/mask/RS.dcm"),
            &data("plans/STS_001/RPSTS001G0G90.dcm"),
        ],
        planning_toml,
        extra_toml,
        source_toml,
    )
}

/// [`write_session`] with other planning files: CT folder, structure set, plan.
pub fn write_session_with(
    dir: &Path,
    [ct, rs, plan]: [&Path; 3],
    planning_toml: &str,
    extra_toml: &str,
    source_toml: &str,
) -> PathBuf {
    let key = dir.join("link.key");
    std::fs::write(&key, "7f".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let toml = format!(
        r#"
[planning]
ct = "{ct}"
structures = "{rs}"
roi = "GTV_Mass_CT"
plan = "{plan}"
patient_id = "STS_001"
{planning_toml}

{source_toml}

[link]
key_file = "link.key"

[audit]
path = "audit/session.audit"

{extra_toml}
"#,
        ct = ct.display(),
        rs = rs.display(),
        plan = plan.display(),
    );
    let path = dir.join("session.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The chain.
pub struct Rig {
    /// The running pipeline.
    pub pipeline: Option<Pipeline>,
    /// The session.
    pub session: Arc<Session>,
    /// The controller.
    pub controller: Option<ControllerHandle>,
    /// Where frames go in.
    pub events: crossbeam_channel::Sender<SourceEvent>,
    /// The audit log.
    pub audit_path: PathBuf,
    /// The capturing relay, when asked for.
    pub proxy: Option<super::proxy::Proxy>,
    /// Where the surrogate stream goes (surrogate tracking on).
    #[allow(dead_code)] // only the surrogate tests send one
    pub surrogate_addr: Option<std::net::SocketAddr>,
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
}

/// Options for a rig.
pub struct RigOptions {
    /// Extra keys of the `[planning]` table.
    pub planning_toml: String,
    /// Extra TOML (timing, limits).
    pub extra_toml: String,
    /// Controller watchdog.
    pub watchdog: Duration,
    /// Link timing.
    pub timing: LinkTiming,
    /// Relay the link through a capturing proxy.
    pub via_proxy: bool,
    /// Surrogate tracking on, with these extra keys of the `[surrogate]` table (its key
    /// file is written, its stream received on a free loopback port).
    pub surrogate_toml: Option<String>,
    /// The controller delivers these spots while the beam is on (default: it only tracks
    /// the beam state).
    pub delivery: Option<DeliveryModel>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            // generous: these tests check behaviour, not speed (2 cores, tests in parallel)
            planning_toml: String::new(),
            extra_toml: "[timing]\nbudget_ms = 1500\nvalidity_ms = 3000\n".into(),
            watchdog: Duration::from_millis(500),
            timing: LinkTiming {
                heartbeat: Duration::from_millis(20),
                ack_timeout: Duration::from_millis(400),
            },
            via_proxy: false,
            surrogate_toml: None,
            delivery: None,
        }
    }
}

impl Rig {
    /// Loads the session and starts everything; frames go into the returned sender.
    pub fn start(options: RigOptions) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut extra_toml = options.extra_toml.clone();
        if let Some(t) = &options.surrogate_toml {
            let key = dir.path().join("surrogate.key");
            std::fs::write(&key, "5a".repeat(32)).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            extra_toml.push_str(&format!(
                "\n[surrogate]\nenabled = true\nkey_file = \"surrogate.key\"\nlisten = \"127.0.0.1:0\"\n{t}\n"
            ));
        }
        let config_path = write_session(
            dir.path(),
            &options.planning_toml,
            &extra_toml,
            "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\nexpected_slices = 59\n",
        );
        let builder = ChainBuilder::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let key = LinkKey::from_file(&builder.config().link.key_file).unwrap();
        let receiver =
            LinkReceiver::bind("127.0.0.1:0".parse().unwrap(), &key, &LinkOptions::default()).unwrap();
        let mut config = ControllerConfig::default().with_watchdog(options.watchdog);
        if let Some(model) = options.delivery {
            config = config.with_delivery(model);
        }
        let controller = spawn(receiver, config, |_| {}).unwrap();
        let proxy = options
            .via_proxy
            .then(|| super::proxy::Proxy::start(controller.local_addr()));
        let chain = builder
            .destination(proxy.as_ref().map(|p| p.addr).unwrap_or(controller.local_addr()))
            .local("127.0.0.1:0".parse().unwrap())
            .link_options(LinkOptions::default())
            .timing(options.timing)
            .audit_start(AuditStart::New)
            .audit_options(AuditOptions::default())
            .start()
            .unwrap();
        let Chain {
            pipeline,
            events: tx,
            session,
            audit_path,
            surrogate_addr,
        } = chain;
        Rig {
            pipeline: Some(pipeline),
            session,
            controller: Some(controller),
            events: tx,
            audit_path,
            proxy,
            surrogate_addr,
            dir,
        }
    }

    /// Pushes one frame through the in-process source.
    pub fn push(&self, objects: Vec<Vec<u8>>) {
        let src = ionguide::source::InProcessSource::new(self.events.clone(), "test");
        src.push_frame(objects).unwrap();
    }

    /// Pushes objects the in-process source may refuse; a refusal still reaches the pipeline
    /// (as a rejected frame) and is returned.
    #[allow(dead_code)] // not every test binary that includes the rig pushes refused data
    pub fn try_push(&self, objects: Vec<Vec<u8>>) -> Result<(), ionguide::source::InProcessError> {
        let src = ionguide::source::InProcessSource::new(self.events.clone(), "test");
        src.push_frame(objects).map(|_| ())
    }

    /// Waits for the next finished frame.
    pub fn next_event(&self) -> FrameEvent {
        self.pipeline
            .as_ref()
            .unwrap()
            .telemetry()
            .recv_timeout(Duration::from_secs(60))
            .expect("a frame finished within 60 s")
    }

    /// The corrections the controller applied for frame `id` (waits up to 30 s for them).
    pub fn applied_set(&self, id: u64) -> ionguide::correction::CorrectionSet {
        let applied = self.controller().wait_until(Duration::from_secs(30), |c| {
            c.applied().is_some_and(|s| s.frame_id == id)
        });
        assert!(applied, "the controller applied frame {id}'s corrections");
        self.controller().with(|c| c.applied().cloned()).unwrap()
    }

    /// The controller.
    pub fn controller(&self) -> &ControllerHandle {
        self.controller.as_ref().unwrap()
    }

    /// Stops the pipeline and returns every audit record (the log must read back clean).
    pub fn stop(&mut self) -> Vec<AuditRecord> {
        let mut audit = self.pipeline.take().unwrap().shutdown().unwrap();
        audit.flush().unwrap();
        drop(audit);
        let mut reader = AuditReader::open(&self.audit_path).unwrap();
        let records: Vec<AuditRecord> = reader.by_ref().collect();
        assert_eq!(reader.status(), Some(&TailStatus::Clean));
        records
    }
}
