//! The DICOM C-STORE receiver (Storage SCP) the scanner pushes frames to: the network protocol
//! only. What becomes of a received object is the [`StoreHandler`]'s business (in ionguide, the
//! pipeline's frame assembler), so no dicom-rs type leaves this crate.
//!
//! Built on `dicom-ul` associations; one thread per association, one accept thread that
//! polls a non-blocking listener so [`ScpHandle::shutdown`] can stop it. What is received:
//!
//! - Who may send: with [`ScpOptions::allowed_calling_ae_titles`] and
//!   [`ScpOptions::allowed_peers`] set, an association from another calling AE title is
//!   answered A-ASSOCIATE-RJ (rejected-permanent, service user, "calling AE title not
//!   recognized") and one from another address A-ASSOCIATE-RJ (rejected-permanent, service
//!   user, "no reason given": the standard has no reason for an address); either is reported
//!   to the handler ([`StoreHandler::on_association_refused`]) before anything is read.
//! - DICOM TLS ([`ScpOptions::tls`]): every association over TLS 1.2 or 1.3 (rustls), the
//!   peer's certificate required and verified against the configured CA; a plain connection
//!   or an untrusted certificate fails the handshake, is closed and reported to the handler.
//! - Presentation contexts: CT Image Storage, Enhanced CT Image Storage and Verification,
//!   each in Implicit or Explicit VR Little Endian or any compressed syntax the CT decoder
//!   decodes ([`accepted_transfer_syntaxes`]). Any other abstract syntax (an RT Plan, a
//!   structure set) is rejected in the association's answer ("abstract syntax not
//!   supported"); an association on which no storage context was accepted is reported to
//!   the handler, naming what was refused (a sender proposing many classes, as storescu does,
//!   is ordinary negotiation, logged only). With
//!   [`ScpOptions::refuse_other_classes_by_status`] they are accepted instead and each object
//!   refused by C-STORE status (the behaviour before the allow-list; for senders that give
//!   up on a rejected context without saying so).
//! - C-ECHO: answered Success.
//! - C-STORE: the data set fragments are joined, prefixed with a file meta group naming the
//!   negotiated transfer syntax (the data set bytes are kept as sent, not re-encoded) and
//!   offered to the handler. The response status says what happened ([`StoreStatus`]):
//!   `0x0000` accepted (also a duplicate), `0x0122` SOP class not supported (not CT), `0xA700`
//!   out of resources (a limit), `0xC000` cannot understand (unparseable, or a needed attribute
//!   unusable).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{entries, TransferSyntaxRegistry};
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociation, ServerAssociationOptions};
use parking_lot::Mutex;

use crate::ct::{CT_SOP_CLASS, ENHANCED_CT_SOP_CLASS};

pub use crate::uids::VERIFICATION_SOP_CLASS;
use crate::uids::{EXPLICIT_VR_LE, IMPLICIT_VR_LE, RLE_LOSSLESS};

/// Compressed syntaxes a CT scanner may send, in order of preference when a peer offers
/// several; only those the linked decoders decode are accepted.
const COMPRESSED_CANDIDATES: [&str; 7] = [
    RLE_LOSSLESS,
    "1.2.840.10008.1.2.4.70", // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57", // JPEG Lossless
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
];

/// The transfer syntaxes this receiver negotiates: the native little-endian ones and every
/// compressed one whose pixel decoder is compiled in, so no accepted object is undecodable.
pub fn accepted_transfer_syntaxes() -> Vec<&'static str> {
    let mut out = vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE];
    out.extend(COMPRESSED_CANDIDATES.iter().copied().filter(|uid| {
        TransferSyntaxRegistry
            .get(uid)
            .is_some_and(|ts| ts.can_decode_all())
    }));
    out
}

/// DIMSE status codes of the responses.
mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

/// Why a C-STORE was refused: the failure status its response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreStatus {
    /// `0x0122`: the SOP class is not one this receiver stores (a structure set sent to the frame port).
    SopClassNotSupported,
    /// `0xA700`: over a size or count limit.
    OutOfResources,
    /// `0xC000`: unparseable, or an attribute needed is unusable.
    CannotUnderstand,
}

impl StoreStatus {
    /// The DIMSE status code.
    pub fn code(self) -> u16 {
        match self {
            StoreStatus::SopClassNotSupported => 0x0122,
            StoreStatus::OutOfResources => 0xA700,
            StoreStatus::CannotUnderstand => 0xC000,
        }
    }
}

/// A refused object: the status for the peer and the reason for the log and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the C-STORE response says.
    pub status: StoreStatus,
    /// Why, in words (the first 64 characters go back to the peer as Error Comment).
    pub reason: String,
}

/// What the receiver does with what it receives. Called from the association threads (one
/// per peer) and the accept thread, concurrently.
pub trait StoreHandler: Send + Sync + 'static {
    /// Largest data set kept; a larger one is drained and refused with out-of-resources.
    fn max_object_bytes(&self) -> usize;
    /// A received object as Part 10 bytes (preamble, file meta, data set as sent), from
    /// `origin` (`scp:CALLING@peer`) at `at`. `Err` refuses it with that status.
    fn on_object(&self, part10: Vec<u8>, origin: &str, at: Instant) -> Result<(), Refusal>;
    /// An object refused before it could be offered (too large, unaccepted presentation
    /// context, unusable meta); the peer gets `refusal.status`.
    fn on_refused(&self, origin: &str, refusal: &Refusal, at: Instant);
    /// Called by the accept thread at every poll interval (for timeouts).
    fn on_poll(&self, now: Instant);
    /// An association refused at negotiation (a calling AE title or address not on the
    /// allow-list), or a presentation context of it rejected (an abstract syntax this
    /// receiver does not take): `origin` is `scp:CALLING@peer`, `why` says which and what.
    fn on_association_refused(&self, origin: &str, why: &str, at: Instant) {
        let _ = at;
        tracing::warn!(%origin, %why, "association refused");
    }
}
const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

/// Configuration of the receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct ScpOptions {
    /// Address to listen on; port 0 lets the OS pick (see [`ScpHandle::local_addr`]).
    pub bind_addr: SocketAddr,
    /// This receiver's AE title (1–16 characters, no backslash or control characters).
    pub ae_title: String,
    /// Refuse associations whose called AE title is not [`Self::ae_title`].
    pub require_called_ae_title: bool,
    /// Accept every storage abstract syntax at negotiation so non-CT objects are refused by
    /// C-STORE status instead of in the association's answer (default `false`: rejected at
    /// negotiation and reported then).
    pub refuse_other_classes_by_status: bool,
    /// Calling AE titles that may associate (compared without padding); empty: any.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Peer addresses that may associate; empty: any.
    pub allowed_peers: Vec<IpAddr>,
    /// DICOM TLS (the secure transport connection profile): TLS 1.2 or 1.3, this receiver's
    /// certificate, and the peer's certificate required and checked against the CA. With it,
    /// a plain connection fails the handshake and is refused. `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    /// Largest PDU this receiver accepts, bytes.
    pub max_pdu_length: u32,
    /// An association idle this long is dropped (a stalled or vanished peer).
    pub read_timeout: Duration,
    /// How often the accept loop checks for connections, shutdown and assembly timeouts.
    pub poll_interval: Duration,
    /// Largest number of simultaneous associations; more are closed on connect.
    pub max_associations: usize,
}

impl Default for ScpOptions {
    fn default() -> Self {
        ScpOptions {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ae_title: "IONGUIDE".to_owned(),
            require_called_ae_title: true,
            refuse_other_classes_by_status: false,
            allowed_calling_ae_titles: Vec::new(),
            allowed_peers: Vec::new(),
            tls: None,
            max_pdu_length: 128 * 1024,
            read_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(20),
            max_associations: 8,
        }
    }
}

/// The PEM files of DICOM TLS. The caller checks the private key's permissions (ionguide's
/// pipeline refuses a key group or others may read, like every key file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This receiver's certificate chain (PEM).
    pub cert_pem: std::path::PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: std::path::PathBuf,
    /// The CA certificates a peer's certificate must chain to (PEM).
    pub ca_pem: std::path::PathBuf,
}

/// Builds the rustls server configuration: TLS 1.3 and 1.2, client certificates required
/// and verified against the CA.
fn tls_config(t: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ScpError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, why: String| ScpError::Tls {
        path: path.to_path_buf(),
        why,
    };
    let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, ScpError> {
        let list = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(path, e.to_string()))?;
        if list.is_empty() {
            return Err(bad(path, "no certificate in the file".into()));
        }
        Ok(list)
    };
    let chain = certs(&t.cert_pem)?;
    let key = PrivateKeyDer::from_pem_file(&t.key_pem).map_err(|e| bad(&t.key_pem, e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&t.ca_pem)? {
        roots.add(c).map_err(|e| bad(&t.ca_pem, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| bad(&t.ca_pem, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(&t.cert_pem, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(&t.cert_pem, e.to_string()))?;
    Ok(Arc::new(config))
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScpError {
    /// The AE title is empty, too long or holds forbidden characters.
    #[error("AE title {0:?} is invalid (1-16 characters, no backslash or control characters)")]
    InvalidAeTitle(String),
    /// A configuration value is out of range.
    #[error("invalid receiver configuration: {0}")]
    InvalidConfig(&'static str),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be configured.
    #[error("cannot configure the listening socket")]
    Socket(#[source] std::io::Error),
    /// A TLS file is unreadable or unusable.
    #[error("DICOM TLS: {path}: {why}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The accept thread could not be started.
    #[error("cannot start the receiver thread")]
    Thread(#[source] std::io::Error),
}

/// A running receiver. Dropping it stops it, as [`ScpHandle::shutdown`] does.
#[derive(Debug)]
pub struct ScpHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScpHandle {
    /// The address actually listened on (with the OS-chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes open associations and waits for every thread to end.
    /// Objects of unfinished frames are discarded without an event.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the C-STORE receiver thread panicked");
            }
        }
    }
}

impl Drop for ScpHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Who may associate: the called AE title (when required), the calling AE title and the
/// peer's address against the allow-lists. One per connection, since the address is known
/// only there; it keeps why it refused, for the handler.
#[derive(Debug, Clone)]
struct Gate {
    called_required: bool,
    allowed_ae: Arc<[String]>,
    /// Whether the connection's address is on the list (checked at accept).
    peer_allowed: bool,
    peer: Option<SocketAddr>,
    /// The calling AE title and why, once refused.
    refused: Arc<Mutex<Option<(String, String)>>>,
}

impl AccessControl for Gate {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let calling = calling_ae_title.trim();
        let (reason, why) = if !self.peer_allowed {
            (
                AssociationRJServiceUserReason::NoReasonGiven,
                format!(
                    "association refused: peer address {} is not on the allow-list (source.allowed_peers)",
                    self.peer.map_or_else(|| "?".to_owned(), |p| p.ip().to_string())
                ),
            )
        } else if !self.allowed_ae.is_empty() && !self.allowed_ae.iter().any(|a| a.trim() == calling) {
            (
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                format!(
                    "association refused: calling AE title {calling:?} is not on the allow-list (source.allowed_calling_ae_titles)"
                ),
            )
        } else if self.called_required && called_ae_title.trim() != this_ae_title.trim() {
            (
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                format!(
                    "association refused: called AE title {:?} is not this receiver's {:?}",
                    called_ae_title.trim(),
                    this_ae_title.trim()
                ),
            )
        } else {
            return Ok(());
        };
        *self.refused.lock() = Some((
            calling.to_owned(),
            format!("{why} (A-ASSOCIATE-RJ: rejected-permanent, service user, {reason:?})"),
        ));
        Err(reason)
    }
}

type Options = ServerAssociationOptions<'static, Gate, DefaultNegotiation>;

/// Starts the receiver; what it receives goes to `handler`.
pub fn start(config: ScpOptions, handler: Arc<dyn StoreHandler>) -> Result<ScpHandle, ScpError> {
    let ae = config.ae_title.trim();
    if ae.is_empty() || ae.len() > 16 || ae.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(ScpError::InvalidAeTitle(config.ae_title.clone()));
    }
    if config.max_associations == 0 {
        return Err(ScpError::InvalidConfig("max_associations must be at least 1"));
    }
    if config.poll_interval.is_zero() {
        return Err(ScpError::InvalidConfig("poll_interval must be positive"));
    }
    let listener = TcpListener::bind(config.bind_addr).map_err(|source| ScpError::Bind {
        addr: config.bind_addr,
        source,
    })?;
    listener.set_nonblocking(true).map_err(ScpError::Socket)?;
    let local_addr = listener.local_addr().map_err(ScpError::Socket)?;

    let gate = Gate {
        called_required: config.require_called_ae_title,
        allowed_ae: config
            .allowed_calling_ae_titles
            .iter()
            .map(|a| a.trim().to_owned())
            .collect(),
        peer_allowed: true,
        peer: None,
        refused: Arc::default(),
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(gate.clone())
        .ae_title(ae.to_owned())
        .max_pdu_length(config.max_pdu_length)
        .promiscuous(config.refuse_other_classes_by_status)
        .read_timeout(config.read_timeout)
        .write_timeout(config.read_timeout);
    for uid in [CT_SOP_CLASS, ENHANCED_CT_SOP_CLASS, VERIFICATION_SOP_CLASS] {
        options = options.with_abstract_syntax(uid);
    }
    for uid in accepted_transfer_syntaxes() {
        options = options.with_transfer_syntax(uid);
    }
    let tls = config.tls.is_some();
    if let Some(t) = &config.tls {
        options = options.tls_config(tls_config(t)?);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ctx = AcceptContext {
        listener,
        options: Arc::new(options),
        handler,
        stop: Arc::clone(&stop),
        poll_interval: config.poll_interval,
        max_associations: config.max_associations,
        allowed_peers: config.allowed_peers.clone(),
        gate,
        tls,
    };
    let thread = std::thread::Builder::new()
        .name(format!("scp-accept-{}", local_addr.port()))
        .spawn(move || ctx.run())
        .map_err(ScpError::Thread)?;
    tracing::info!(%local_addr, ae_title = ae, "C-STORE receiver listening");
    Ok(ScpHandle {
        local_addr,
        stop,
        thread: Some(thread),
    })
}

struct AcceptContext {
    listener: TcpListener,
    options: Arc<Options>,
    handler: Arc<dyn StoreHandler>,
    stop: Arc<AtomicBool>,
    poll_interval: Duration,
    max_associations: usize,
    allowed_peers: Vec<IpAddr>,
    /// The gate every connection's own is made from.
    gate: Gate,
    /// Whether associations run over TLS.
    tls: bool,
}

impl AcceptContext {
    fn run(self) {
        // Clones of the open association sockets, so shutdown can unblock their reads.
        let open: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let next_id = AtomicU64::new(0);
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            self.handler.on_poll(Instant::now());
            threads.retain(|t| !t.is_finished());
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if threads.len() >= self.max_associations {
                        tracing::warn!(%peer, "association refused: too many open associations");
                        let _ = stream.shutdown(Shutdown::Both);
                        continue;
                    }
                    match self.spawn_association(stream, peer, &open, next_id.fetch_add(1, Ordering::Relaxed))
                    {
                        Ok(t) => threads.push(t),
                        Err(e) => tracing::error!(%peer, error = %e, "cannot serve association"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                    std::thread::sleep(self.poll_interval);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(self.poll_interval);
                }
            }
        }
        for stream in open.lock().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for t in threads {
            if t.join().is_err() {
                tracing::error!("an association thread panicked");
            }
        }
    }

    fn spawn_association(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        open: &Arc<Mutex<HashMap<u64, TcpStream>>>,
        id: u64,
    ) -> std::io::Result<JoinHandle<()>> {
        // Accepted sockets may inherit the listener's non-blocking mode.
        stream.set_nonblocking(false)?;
        open.lock().insert(id, stream.try_clone()?);
        // This connection's gate: the shared lists, its own address verdict and refusal slot.
        let refused: Arc<Mutex<Option<(String, String)>>> = Arc::default();
        let gate = Gate {
            peer_allowed: self.allowed_peers.is_empty() || self.allowed_peers.contains(&peer.ip()),
            peer: Some(peer),
            refused: Arc::clone(&refused),
            ..self.gate.clone()
        };
        let options = (*self.options).clone().ae_access_control(gate);
        let handler = Arc::clone(&self.handler);
        let open_in_thread = Arc::clone(open);
        let tls = self.tls;
        let spawned = std::thread::Builder::new()
            .name(format!("scp-assoc-{id}"))
            .spawn(move || {
                let established = if tls {
                    options
                        .establish_tls(stream)
                        .map(|a| serve(a, peer, handler.as_ref()))
                } else {
                    options
                        .establish(stream)
                        .map(|a| serve(a, peer, handler.as_ref()))
                };
                match established {
                    Ok(()) => {}
                    // A plain connection or an untrusted certificate fails the handshake
                    // before any A-ASSOCIATE: refused, and reported.
                    Err(e) if tls && refused.lock().is_none() => {
                        let mut why = format!("association refused: DICOM TLS handshake failed: {e}");
                        let mut source = std::error::Error::source(&e);
                        while let Some(s) = source {
                            why += &format!(": {s}");
                            source = s.source();
                        }
                        tracing::warn!(%peer, %why, "association refused");
                        handler.on_association_refused(&format!("scp:?@{peer}"), &why, Instant::now());
                    }
                    Err(e) => match refused.lock().take() {
                        Some((calling, why)) => {
                            tracing::warn!(%peer, %why, "association refused");
                            handler.on_association_refused(
                                &format!("scp:{calling}@{peer}"),
                                &why,
                                Instant::now(),
                            );
                        }
                        None => tracing::warn!(%peer, error = %e, "association not established"),
                    },
                }
                open_in_thread.lock().remove(&id);
            });
        if spawned.is_err() {
            open.lock().remove(&id);
        }
        spawned
    }
}

/// A DIMSE command being received (command set parsed, data set fragments pending).
struct Pending {
    /// The request's Command Field: a data set announced by anything but C-STORE is
    /// drained and answered "unrecognized operation".
    command_field: u16,
    pc_id: u8,
    message_id: u16,
    sop_class_uid: String,
    sop_instance_uid: String,
    data: Vec<u8>,
    /// Set once the data set outgrew the object limit: the rest is drained, then refused.
    overflow: Option<usize>,
}

fn serve<S>(mut assoc: ServerAssociation<S>, peer: SocketAddr, handler: &dyn StoreHandler)
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    use dicom_ul::association::Association;
    let calling = assoc.peer_ae_title().trim().to_owned();
    let origin = format!("scp:{calling}@{peer}");
    tracing::debug!(%origin, "association established");
    // Senders propose many storage classes (storescu by default over a hundred), so a
    // rejected context is ordinary negotiation; an association on which nothing but
    // Verification was accepted, though storage was proposed, can deliver nothing: that is
    // the refusal the handler hears of, naming what was refused.
    let rejected: Vec<String> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason != PresentationContextResultReason::Acceptance)
        .map(|pc| {
            let uid = pc.abstract_syntax.trim_end_matches(['\0', ' ']);
            format!("{uid} ({}): {:?}", crate::uids::sop_class_name(uid), pc.reason)
        })
        .collect();
    let storage_accepted = assoc.presentation_contexts().iter().any(|pc| {
        pc.reason == PresentationContextResultReason::Acceptance
            && pc.abstract_syntax.trim_end_matches(['\0', ' ']) != VERIFICATION_SOP_CLASS
    });
    if !rejected.is_empty() {
        if storage_accepted {
            tracing::debug!(%origin, rejected = rejected.len(), "presentation contexts rejected at negotiation");
        } else {
            handler.on_association_refused(
                &origin,
                &format!(
                    "refused at negotiation, no storage context accepted: {}",
                    rejected.join("; ")
                ),
                Instant::now(),
            );
        }
    }
    let contexts: HashMap<u8, String> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_owned()))
        .collect();
    let max_bytes = handler.max_object_bytes();
    let mut command_buf: Vec<u8> = Vec::new();
    let mut pending: Option<Pending> = None;
    loop {
        let pdu = match assoc.receive() {
            Ok(pdu) => pdu,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "association ended without release");
                return;
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for value in data {
                    let reply = match value.value_type {
                        PDataValueType::Command => {
                            command_buf.extend_from_slice(&value.data);
                            if !value.is_last {
                                continue;
                            }
                            let command = std::mem::take(&mut command_buf);
                            on_command(value.presentation_context_id, &command, &mut pending, &origin)
                        }
                        PDataValueType::Data => {
                            let Some(p) = pending.as_mut() else {
                                tracing::warn!(%origin, "data set without a command; aborting");
                                let _ = assoc.abort();
                                return;
                            };
                            let total = p.data.len() + value.data.len();
                            if p.command_field != C_STORE_RQ {
                                // drained, not kept
                            } else if total > max_bytes || p.overflow.is_some() {
                                p.overflow = Some(p.overflow.unwrap_or(p.data.len()) + value.data.len());
                                p.data = Vec::new();
                            } else {
                                p.data.extend_from_slice(&value.data);
                            }
                            if !value.is_last {
                                continue;
                            }
                            pending
                                .take()
                                .map(|p| on_store(p, &contexts, &calling, &origin, handler))
                        }
                    };
                    if let Some((pc_id, response)) = reply {
                        let pdu = Pdu::PData {
                            data: vec![PDataValue {
                                presentation_context_id: pc_id,
                                value_type: PDataValueType::Command,
                                is_last: true,
                                data: response,
                            }],
                        };
                        if let Err(e) = assoc.send(&pdu) {
                            tracing::warn!(%origin, error = %e, "cannot send response");
                            return;
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                if let Err(e) = assoc.send(&Pdu::ReleaseRP) {
                    tracing::warn!(%origin, error = %e, "cannot confirm release");
                }
                tracing::debug!(%origin, "association released");
                return;
            }
            Pdu::AbortRQ { source } => {
                tracing::warn!(%origin, ?source, "association aborted by peer");
                return;
            }
            other => {
                tracing::warn!(%origin, pdu = %other.short_description(), "unexpected PDU; aborting");
                let _ = assoc.abort();
                return;
            }
        }
    }
}

/// Handles a complete command set: answers C-ECHO (and unknown commands) at once, or
/// starts receiving a C-STORE data set. Returns the response to send, if any now.
fn on_command(
    pc_id: u8,
    command: &[u8],
    pending: &mut Option<Pending>,
    origin: &str,
) -> Option<(u8, Vec<u8>)> {
    let cmd =
        match InMemDicomObject::read_dataset_with_ts(command, &entries::IMPLICIT_VR_LITTLE_ENDIAN.erased()) {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "unreadable command set ignored");
                return None;
            }
        };
    let int = |tag: Tag| cmd.get(tag).and_then(|e| e.to_int::<u16>().ok());
    let uid = |tag: Tag| {
        cmd.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .unwrap_or_default()
    };
    let field = int(tags::COMMAND_FIELD);
    let message_id = int(tags::MESSAGE_ID).unwrap_or(0);
    let has_data = int(tags::COMMAND_DATA_SET_TYPE).is_some_and(|t| t != NO_DATA_SET);
    let sop_class_uid = uid(tags::AFFECTED_SOP_CLASS_UID);
    match field {
        Some(field) if has_data => {
            if field != C_STORE_RQ {
                tracing::warn!(%origin, command = field, "unsupported command refused");
            }
            *pending = Some(Pending {
                command_field: field,
                pc_id,
                message_id,
                sop_class_uid,
                sop_instance_uid: uid(tags::AFFECTED_SOP_INSTANCE_UID),
                data: Vec::new(),
                overflow: None,
            });
            None
        }
        Some(C_ECHO_RQ) => Some((
            pc_id,
            response(
                C_ECHO_RSP,
                message_id,
                &sop_class_uid,
                None,
                status::SUCCESS,
                None,
            ),
        )),
        other => {
            tracing::warn!(%origin, command = ?other, "unsupported command refused");
            Some((
                pc_id,
                response(
                    other.map_or(0x8000, |f| f | 0x8000),
                    message_id,
                    &sop_class_uid,
                    None,
                    status::UNRECOGNIZED_OPERATION,
                    Some("only C-STORE and C-ECHO are served"),
                ),
            ))
        }
    }
}

/// Turns a received data set into Part 10 bytes, offers it, and builds the C-STORE-RSP.
fn on_store(
    p: Pending,
    contexts: &HashMap<u8, String>,
    calling: &str,
    origin: &str,
    handler: &dyn StoreHandler,
) -> (u8, Vec<u8>) {
    let at = Instant::now();
    if p.command_field != C_STORE_RQ {
        let rsp = response(
            p.command_field | 0x8000,
            p.message_id,
            &p.sop_class_uid,
            None,
            status::UNRECOGNIZED_OPERATION,
            Some("only C-STORE and C-ECHO are served"),
        );
        return (p.pc_id, rsp);
    }
    let (code, comment) = match store(&p, contexts, calling, origin, handler, at) {
        Ok(()) => (status::SUCCESS, None),
        Err(Refusal { status, reason }) => {
            tracing::warn!(%origin, sop_instance_uid = %p.sop_instance_uid, %reason, "object refused");
            (status.code(), Some(reason))
        }
    };
    let rsp = response(
        C_STORE_RSP,
        p.message_id,
        &p.sop_class_uid,
        Some(&p.sop_instance_uid),
        code,
        comment.as_deref(),
    );
    (p.pc_id, rsp)
}

fn store(
    p: &Pending,
    contexts: &HashMap<u8, String>,
    calling: &str,
    origin: &str,
    handler: &dyn StoreHandler,
    at: Instant,
) -> Result<(), Refusal> {
    // Refusals found here, before the handler sees the object, are reported to it here.
    let reject = |status: StoreStatus, reason: String| {
        let refusal = Refusal { status, reason };
        handler.on_refused(origin, &refusal, at);
        refusal
    };
    if let Some(bytes) = p.overflow {
        return Err(reject(
            StoreStatus::OutOfResources,
            format!(
                "object {} of {bytes} bytes exceeds the limit of {} bytes",
                p.sop_instance_uid,
                handler.max_object_bytes()
            ),
        ));
    }
    let Some(ts) = contexts.get(&p.pc_id) else {
        return Err(reject(
            StoreStatus::CannotUnderstand,
            format!(
                "object {} sent on unaccepted presentation context {}",
                p.sop_instance_uid, p.pc_id
            ),
        ));
    };
    let bytes = part10(p, ts, calling).map_err(|e| {
        reject(
            StoreStatus::CannotUnderstand,
            format!("cannot build file meta for {}: {e}", p.sop_instance_uid),
        )
    })?;
    handler.on_object(bytes, origin, at)
}

/// Preamble, `DICM`, file meta group, then the data set bytes as received.
fn part10(p: &Pending, ts: &str, calling: &str) -> Result<Vec<u8>, dicom_object::meta::Error> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(p.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(p.sop_instance_uid.as_str())
        .transfer_syntax(ts)
        .source_application_entity_title(calling)
        .build()?;
    let mut out = Vec::with_capacity(p.data.len() + 512);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)?;
    out.extend_from_slice(&p.data);
    Ok(out)
}

/// A response command set in Implicit VR Little Endian, with its group length.
fn response(
    field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: Option<&str>,
    status: u16,
    comment: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    let mut put = |tag: Tag, value: &[u8]| {
        body.extend_from_slice(&tag.group().to_le_bytes());
        body.extend_from_slice(&tag.element().to_le_bytes());
        body.extend_from_slice(&(value.len() as u32).to_le_bytes());
        body.extend_from_slice(value);
    };
    // Even lengths: UIDs pad with NUL, LO with a space.
    let padded = |s: &str, pad: u8| {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(pad);
        }
        v
    };
    put(tags::AFFECTED_SOP_CLASS_UID, &padded(sop_class_uid, 0));
    put(tags::COMMAND_FIELD, &field.to_le_bytes());
    put(tags::MESSAGE_ID_BEING_RESPONDED_TO, &message_id.to_le_bytes());
    put(tags::COMMAND_DATA_SET_TYPE, &NO_DATA_SET.to_le_bytes());
    put(tags::STATUS, &status.to_le_bytes());
    if let Some(comment) = comment {
        // Error Comment is LO: at most 64 characters.
        let cut: String = comment.chars().filter(|c| *c != '\\').take(64).collect();
        put(tags::ERROR_COMMENT, &padded(&cut, b' '));
    }
    if let Some(uid) = sop_instance_uid {
        put(tags::AFFECTED_SOP_INSTANCE_UID, &padded(uid, 0));
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&tags::COMMAND_GROUP_LENGTH.group().to_le_bytes());
    out.extend_from_slice(&tags::COMMAND_GROUP_LENGTH.element().to_le_bytes());
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_back_with_their_fields_in_tag_order() {
        let bytes = response(
            C_STORE_RSP,
            7,
            CT_SOP_CLASS,
            Some("1.2.3"),
            0x0122,
            Some("not CT"),
        );
        let cmd = InMemDicomObject::read_dataset_with_ts(
            bytes.as_slice(),
            &entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let u16_of = |t| cmd.get(t).unwrap().to_int::<u16>().unwrap();
        assert_eq!(u16_of(tags::COMMAND_FIELD), C_STORE_RSP);
        assert_eq!(u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO), 7);
        assert_eq!(u16_of(tags::STATUS), 0x0122);
        assert_eq!(
            cmd.get(tags::COMMAND_GROUP_LENGTH)
                .unwrap()
                .to_int::<u32>()
                .unwrap() as usize,
            bytes.len() - 12
        );
        assert_eq!(
            cmd.get(tags::AFFECTED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0'),
            "1.2.3"
        );
        // Elements must be in ascending tag order for a strict peer.
        let tags_in_order: Vec<Tag> = cmd.iter().map(|e| e.header().tag).collect();
        let mut sorted = tags_in_order.clone();
        sorted.sort();
        assert_eq!(tags_in_order, sorted);
    }

    #[test]
    fn only_decodable_syntaxes_are_negotiated() {
        let accepted = accepted_transfer_syntaxes();
        assert!(accepted.contains(&IMPLICIT_VR_LE) && accepted.contains(&EXPLICIT_VR_LE));
        // The decoder features linked in (native, openjp2) cover RLE and JPEG 2000.
        assert!(accepted.contains(&"1.2.840.10008.1.2.5"));
        assert!(accepted.contains(&"1.2.840.10008.1.2.4.90"));
    }
}
