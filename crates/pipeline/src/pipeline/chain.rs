//! One chain: a configuration turned into the running session, pipeline, link and audit log.
//!
//! The daemon (`ionguide run`), the replay, the release gate and soak, and the tests all build
//! the chain here, so what is checked before the beam (the session's load checks) and how the
//! link and the audit log are opened is written once. The callers differ only in the knobs
//! below: where the link sends (the configured controller, or a simulator's socket), how the
//! audit log is opened, whether the session-start records are written.
//!
//! Three steps, each opening more, so that a refusal comes before anything listens or sends:
//!
//! 1. [`ChainBuilder::load`] / [`ChainBuilder::new`]: the checked [`Session`]; nothing is
//!    opened. A caller can still read the session (the replay scores against it) and decide
//!    where the link goes (a simulator's controller bound after the load).
//! 2. [`ChainBuilder::open`]: the link socket and the audit log (with the session-start
//!    records, when asked). The caller starts its frame source on [`OpenChain::events`].
//! 3. [`OpenChain::start`]: the pipeline's stage threads, ready for frames.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::surrogate_stage::{SurrogateIo, SurrogateStageOptions};
use super::{LinkTiming, Pipeline, PipelineError, PipelineIo, Session, SessionError};
use crate::audit::{AuditError, AuditOptions, AuditRecord, AuditWriter, Fsync, SetupRecord};
use crate::config::{Config, ConfigError};
use crate::link::surrogate::SurrogateReceiver;
use crate::link::{KeyError, LinkError, LinkKey, LinkOptions, LinkSender};
use crate::source::SourceEvent;

/// Why the chain could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Loading or checking the session's inputs.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The link key.
    #[error("link key: {0}")]
    Key(#[from] KeyError),
    /// The link socket.
    #[error("opening the link to {destination}: {source}")]
    Link {
        /// Where it was to send.
        destination: SocketAddr,
        /// Cause.
        source: LinkError,
    },
    /// The audit log's folder.
    #[error("creating {}: {source}", path.display())]
    AuditDir {
        /// Folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The audit log.
    #[error("audit log {}: {source}", path.display())]
    Audit {
        /// File.
        path: PathBuf,
        /// Cause.
        source: AuditError,
    },
    /// The surrogate stream's socket.
    #[error("opening the surrogate receiver on {listen}: {source}")]
    Surrogate {
        /// Where it was to listen.
        listen: SocketAddr,
        /// Cause.
        source: LinkError,
    },
    /// Starting the pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// How the audit log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStart {
    /// A new log, or appended to when one exists and ends cleanly (the daemon: a damaged log
    /// is kept as evidence and refused).
    CreateOrAppend,
    /// Whatever is at the path is removed and a new log started (the replay and the gate,
    /// which run again into the same folder).
    Replace,
    /// A new log; an existing file is an error.
    New,
}

/// The configuration and checked session, and how the rest of the chain will be opened.
pub struct ChainBuilder {
    config: Config,
    session: Arc<Session>,
    destination: SocketAddr,
    local: SocketAddr,
    link_options: LinkOptions,
    timing: LinkTiming,
    audit_start: AuditStart,
    audit_options: AuditOptions,
    config_sha256: Option<[u8; 32]>,
    event_capacity: usize,
    surrogate_listen: SocketAddr,
}

/// Reads the configuration and loads its session, with every load check. Nothing is opened.
// Set-up time only, once per session: the error's size costs nothing here.
#[allow(clippy::result_large_err)]
pub fn load_session(config_path: &Path) -> Result<(Config, Session), ChainError> {
    let config = Config::load(config_path)?;
    let session = Session::load(&config)?;
    Ok((config, session))
}

impl ChainBuilder {
    /// [`load_session`], then a builder with every knob from the configuration.
    #[allow(clippy::result_large_err)]
    pub fn load(config_path: &Path) -> Result<ChainBuilder, ChainError> {
        let (config, session) = load_session(config_path)?;
        Ok(ChainBuilder::with_session(config, Arc::new(session)))
    }

    /// Loads the configuration's session (with every load check); every knob from the
    /// configuration.
    #[allow(clippy::result_large_err)]
    pub fn new(config: Config) -> Result<ChainBuilder, ChainError> {
        let session = Session::load(&config)?;
        Ok(ChainBuilder::with_session(config, Arc::new(session)))
    }

    fn with_session(config: Config, session: Arc<Session>) -> ChainBuilder {
        let link = &config.link;
        let audit_options = AuditOptions::default()
            .with_fsync(if config.audit.fsync == "every_record" {
                Fsync::EveryRecord
            } else {
                Fsync::Never
            })
            .with_full_corrections(config.audit.corrections == "full");
        ChainBuilder {
            destination: link.destination,
            local: link.local,
            link_options: LinkOptions::default().with_max_datagram(link.max_datagram_bytes),
            timing: LinkTiming {
                heartbeat: Duration::from_millis(link.heartbeat_ms),
                ack_timeout: Duration::from_millis(link.ack_timeout_ms),
            },
            audit_start: AuditStart::CreateOrAppend,
            audit_options,
            config_sha256: None,
            event_capacity: 64,
            surrogate_listen: config.surrogate.listen,
            config,
            session,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The checked session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Sends to `addr` instead of the configured destination (a simulator's controller).
    pub fn destination(mut self, addr: SocketAddr) -> Self {
        self.destination = addr;
        self
    }

    /// Binds the link's socket to `addr` instead of the configured local address.
    pub fn local(mut self, addr: SocketAddr) -> Self {
        self.local = addr;
        self
    }

    /// Link options instead of the configured ones.
    pub fn link_options(mut self, options: LinkOptions) -> Self {
        self.link_options = options;
        self
    }

    /// Link timing instead of the configured one.
    pub fn timing(mut self, timing: LinkTiming) -> Self {
        self.timing = timing;
        self
    }

    /// How the audit log is opened (default: [`AuditStart::CreateOrAppend`]).
    pub fn audit_start(mut self, start: AuditStart) -> Self {
        self.audit_start = start;
        self
    }

    /// Audit options instead of the configured ones.
    pub fn audit_options(mut self, options: AuditOptions) -> Self {
        self.audit_options = options;
        self
    }

    /// Writes the session-start record (with this configuration hash and the plan's reading
    /// warnings) and the setup record when the log is opened, as the daemon does.
    pub fn session_records(mut self, config_sha256: [u8; 32]) -> Self {
        self.config_sha256 = Some(config_sha256);
        self
    }

    /// Receives the surrogate stream on `addr` instead of the configured `surrogate.listen`
    /// (port 0: any; [`OpenChain::surrogate_addr`] says which).
    pub fn surrogate_listen(mut self, addr: SocketAddr) -> Self {
        self.surrogate_listen = addr;
        self
    }

    /// Frames the source may queue ahead of the ingest stage (default 64).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Opens the link socket and the audit log (writing the session-start records when
    /// asked). Nothing receives frames yet.
    #[allow(clippy::result_large_err)]
    pub fn open(self) -> Result<OpenChain, ChainError> {
        let key = LinkKey::from_file(&self.config.link.key_file)?;
        let link =
            LinkSender::new(self.local, self.destination, &key, &self.link_options).map_err(|source| {
                ChainError::Link {
                    destination: self.destination,
                    source,
                }
            })?;
        let path = self.config.audit.path.clone();
        let audit_err = |source| ChainError::Audit {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ChainError::AuditDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let now_ns = crate::link::protocol::unix_now_ns();
        let audit = match self.audit_start {
            AuditStart::CreateOrAppend if path.exists() => {
                AuditWriter::open_append(&path, self.audit_options)
            }
            AuditStart::Replace => {
                let _ = std::fs::remove_file(&path);
                AuditWriter::create(&path, now_ns, self.audit_options)
            }
            _ => AuditWriter::create(&path, now_ns, self.audit_options),
        }
        .map_err(audit_err)?;
        // The checkpoints' key: its own file when configured, else the link's (already
        // checked above), read through the same owner-only check.
        let audit_key = match &self.config.audit.key_file {
            Some(k) => LinkKey::from_file(k)?,
            None => key,
        };
        let mut audit = audit.sign_with(audit_key, self.config.audit.checkpoint_every);
        if let Some(config_sha256) = self.config_sha256 {
            let s = &self.session;
            audit
                .write(&AuditRecord::SessionStart {
                    unix_ns: now_ns,
                    config_sha256,
                    plan_sop_uid: s.plan.sop_instance_uid.clone(),
                    plan_warnings: s.plan_warnings.iter().map(|w| w.to_string()).collect(),
                })
                .map_err(audit_err)?;
            audit
                .write(&AuditRecord::Setup(SetupRecord::new(
                    now_ns,
                    &s.plan.frame_of_reference_uid,
                    s.options.room_setup.as_ref(),
                    s.options.room_setup_sha256,
                )))
                .map_err(audit_err)?;
            audit.flush().map_err(audit_err)?;
        }
        let surrogate = match &self.config.surrogate {
            g if g.enabled => {
                let key_file = g.key_file.as_ref().ok_or_else(|| ConfigError::Invalid {
                    path: PathBuf::new(),
                    key: "surrogate.key_file",
                    reason: "is required when surrogate.enabled".into(),
                })?;
                let key = LinkKey::from_file(key_file)?;
                let receiver = SurrogateReceiver::bind(self.surrogate_listen, &key, &LinkOptions::default())
                    .map_err(|source| ChainError::Surrogate {
                        listen: self.surrogate_listen,
                        source,
                    })?;
                Some(SurrogateIo {
                    receiver,
                    options: SurrogateStageOptions {
                        tracker: g.tracker_options(),
                        budget: Duration::from_secs_f64(g.budget_ms * 1e-3),
                        validity: Duration::from_secs_f64(g.validity_ms * 1e-3),
                        rsp_at_target: g.rsp_at_target,
                    },
                })
            }
            _ => None,
        };
        let surrogate_addr = surrogate.as_ref().and_then(|g| g.receiver.local_addr().ok());
        let (events_tx, events_rx) = crossbeam_channel::bounded(self.event_capacity);
        Ok(OpenChain {
            surrogate,
            surrogate_addr,
            session: self.session,
            events_tx,
            events_rx,
            link,
            audit,
            audit_path: path,
            timing: self.timing,
        })
    }

    /// [`ChainBuilder::open`] then [`OpenChain::start`].
    #[allow(clippy::result_large_err)]
    pub fn start(self) -> Result<Chain, ChainError> {
        self.open()?.start()
    }
}

/// The link and the audit log open, the pipeline not yet started.
pub struct OpenChain {
    session: Arc<Session>,
    events_tx: Sender<SourceEvent>,
    events_rx: Receiver<SourceEvent>,
    link: LinkSender,
    audit: AuditWriter,
    audit_path: PathBuf,
    timing: LinkTiming,
    surrogate: Option<SurrogateIo>,
    surrogate_addr: Option<SocketAddr>,
}

impl OpenChain {
    /// Where the surrogate stream is received (`None`: surrogate tracking off).
    pub fn surrogate_addr(&self) -> Option<SocketAddr> {
        self.surrogate_addr
    }

    /// Where a frame source sends (frames wait until [`OpenChain::start`]).
    pub fn events(&self) -> Sender<SourceEvent> {
        self.events_tx.clone()
    }

    /// Starts the pipeline's stages; returns once each is ready.
    #[allow(clippy::result_large_err)]
    pub fn start(self) -> Result<Chain, ChainError> {
        let pipeline = Pipeline::start(
            self.session.clone(),
            PipelineIo {
                events: self.events_rx,
                link: self.link,
                audit: self.audit,
                timing: self.timing,
                surrogate: self.surrogate,
            },
        )?;
        Ok(Chain {
            surrogate_addr: self.surrogate_addr,
            pipeline,
            events: self.events_tx,
            session: self.session,
            audit_path: self.audit_path,
        })
    }
}

/// The running chain.
pub struct Chain {
    /// The pipeline (telemetry, counters, shutdown).
    pub pipeline: Pipeline,
    /// Where frames go in (every sender dropped: the pipeline drains and stops).
    pub events: Sender<SourceEvent>,
    /// The session it runs.
    pub session: Arc<Session>,
    /// The audit log.
    pub audit_path: PathBuf,
    /// Where the surrogate stream is received (`None`: surrogate tracking off).
    pub surrogate_addr: Option<SocketAddr>,
}
