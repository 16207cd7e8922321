//! Appending records: one whole record per `write`, on a file opened for append, with the
//! fsync policy of [`AuditOptions`]; each chained to the one before, and with a key, an HMAC
//! checkpoint every N records and at close.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::format::{encode_checkpoint_head, encode_frame, encode_record, header_bytes, Body};
use super::{io_err, AuditError, AuditKey, AuditReader, AuditRecord, FrameRecord, TailStatus};
use super::{CHECKPOINT_MAC_LABEL, HEADER_LEN, MAX_RECORD_BYTES, VERSION};

/// When the writer asks the OS to put records on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never (the OS decides; a power loss may lose recent records, a process crash not).
    Never,
    /// After every record.
    EveryRecord,
    /// After a record when this long has passed since the last sync.
    Interval(Duration),
}

/// Writer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditOptions {
    /// fsync policy.
    pub fsync: Fsync,
    /// Keep full correction lists (`false`: only their SHA-256).
    pub full_corrections: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            fsync: Fsync::Interval(Duration::from_millis(100)),
            full_corrections: true,
        }
    }
}

impl AuditOptions {
    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }
    /// Keeps full correction lists (`true`) or only their digest.
    pub fn with_full_corrections(mut self, full: bool) -> Self {
        self.full_corrections = full;
        self
    }
}

/// Appends records to an audit log.
///
/// With a key ([`AuditWriter::sign_with`]) it writes a checkpoint every N records and a
/// closing one from [`AuditWriter::close`], or, failing that, when dropped: a process that
/// dies without unwinding leaves the log unclosed, which [`super::verify`] reports.
#[derive(Debug)]
pub struct AuditWriter {
    path: PathBuf,
    file: File,
    options: AuditOptions,
    buf: Vec<u8>,
    offset: u64,
    last_sync: Instant,
    /// Sequence number of the next record.
    seq: u64,
    /// SHA-256 of the last record written (of the header before the first).
    prev_sha256: [u8; 32],
    signer: Option<Signer>,
    closed: bool,
    /// Records after the last checkpoint of an appended-to log, for the first signer.
    since_checkpoint: u32,
}

#[derive(Debug)]
struct Signer {
    key: AuditKey,
    every: u32,
    /// Records since the last checkpoint.
    since: u32,
}

impl AuditWriter {
    /// Creates a new log with its header; refuses an existing file.
    pub fn create(
        path: &Path,
        session_start_unix_ns: u64,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => AuditError::Exists {
                    path: path.to_path_buf(),
                },
                _ => io_err(path, e),
            })?;
        let header = header_bytes(session_start_unix_ns);
        file.write_all(&header).map_err(|e| io_err(path, e))?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        Ok(AuditWriter {
            path: path.to_path_buf(),
            file,
            options,
            buf: Vec::with_capacity(4096),
            offset: HEADER_LEN as u64,
            last_sync: Instant::now(),
            seq: 0,
            prev_sha256: Sha256::digest(header).into(),
            signer: None,
            closed: false,
            since_checkpoint: 0,
        })
    }

    /// Signs the log from here on: a checkpoint after every `every_records` records (at
    /// least 1) and a closing one at [`AuditWriter::close`].
    pub fn sign_with(mut self, key: AuditKey, every_records: u32) -> Self {
        self.signer = Some(Signer {
            key,
            every: every_records.max(1),
            since: self.since_checkpoint,
        });
        self
    }

    /// Opens an existing log for append, only if it reads [`TailStatus::Clean`].
    pub fn open_append(path: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        let mut reader = AuditReader::open(path)?;
        if reader.header().version != VERSION {
            return Err(AuditError::AppendOldVersion {
                path: path.to_path_buf(),
                version: reader.header().version,
            });
        }
        // The chain continues from the last record (of the header when there is none).
        let mut last = None;
        let mut seq = 0;
        let mut since_checkpoint = 0u32;
        while let Some(e) = reader.next_raw() {
            seq = e.link.map_or(0, |l| l.seq + 1);
            last = Some(e.offset..e.end);
            since_checkpoint = match e.body {
                Body::Checkpoint(_) => 0,
                Body::Record(_) => since_checkpoint.saturating_add(1),
            };
        }
        let prev_sha256: [u8; 32] = match last {
            Some(r) => Sha256::digest(&reader.data()[r]).into(),
            None => Sha256::digest(&reader.data()[..HEADER_LEN]).into(),
        };
        let status = reader.status().cloned().unwrap_or(TailStatus::Clean);
        if status != TailStatus::Clean {
            return Err(AuditError::NotClean {
                path: path.to_path_buf(),
                status,
            });
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let offset = file.metadata().map_err(|e| io_err(path, e))?.len();
        Ok(AuditWriter {
            path: path.to_path_buf(),
            file,
            options,
            buf: Vec::with_capacity(4096),
            offset,
            last_sync: Instant::now(),
            seq,
            prev_sha256,
            signer: None,
            closed: false,
            since_checkpoint,
        })
    }

    /// Byte offset where the next record goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Appends a frame record.
    pub fn write_frame(&mut self, frame: &FrameRecord) -> Result<(), AuditError> {
        self.begin();
        encode_frame(&mut self.buf, frame, self.options.full_corrections)?;
        self.commit()?;
        self.checkpoint_if_due()
    }

    /// Appends any record.
    pub fn write(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        self.begin();
        encode_record(&mut self.buf, record, self.options.full_corrections)?;
        self.commit()?;
        self.checkpoint_if_due()
    }

    /// Writes the closing checkpoint (when signing) and puts the log on disk. Records written
    /// after it open a new stretch that needs its own close.
    pub fn close(&mut self) -> Result<(), AuditError> {
        if self.signer.is_some() {
            self.checkpoint(true)?;
        }
        self.closed = true;
        self.sync()
    }

    /// The frame (length and CRC filled in at commit) and the chain prefix.
    fn begin(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        self.buf.extend_from_slice(&self.seq.to_le_bytes());
        self.buf.extend_from_slice(&self.prev_sha256);
    }

    fn checkpoint_if_due(&mut self) -> Result<(), AuditError> {
        self.closed = false;
        let Some(s) = self.signer.as_mut() else {
            return Ok(());
        };
        s.since += 1;
        if s.since >= s.every {
            self.checkpoint(false)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, closing: bool) -> Result<(), AuditError> {
        let Some(s) = self.signer.as_mut() else {
            return Ok(());
        };
        s.since = 0;
        let (mut mac, every, key_id) = (s.key.mac(), s.every, s.key.key_id());
        self.begin();
        encode_checkpoint_head(&mut self.buf, every, closing, key_id);
        mac.update(CHECKPOINT_MAC_LABEL);
        mac.update(&self.buf[8..]);
        let tag = mac.finalize().into_bytes();
        self.buf.extend_from_slice(&tag);
        self.commit()
    }

    /// Frames `buf[8..]` with length and CRC, writes it in one call and moves the chain on.
    fn commit(&mut self) -> Result<(), AuditError> {
        let len = self.buf.len() - 8;
        if len > MAX_RECORD_BYTES as usize {
            return Err(AuditError::FieldTooLong {
                field: "record",
                len,
                max: MAX_RECORD_BYTES as usize,
            });
        }
        let len_bytes = (len as u32).to_le_bytes();
        self.buf[0..4].copy_from_slice(&len_bytes);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len_bytes);
        crc.update(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        self.file
            .write_all(&self.buf)
            .map_err(|e| io_err(&self.path, e))?;
        self.offset += self.buf.len() as u64;
        self.seq += 1;
        self.prev_sha256 = Sha256::digest(&self.buf).into();
        let sync = match self.options.fsync {
            Fsync::Never => false,
            Fsync::EveryRecord => true,
            Fsync::Interval(d) => self.last_sync.elapsed() >= d,
        };
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Hands everything written to the OS (records are written unbuffered, so this only
    /// flushes the file handle).
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.file.flush().map_err(|e| io_err(&self.path, e))
    }

    /// Puts everything written on disk (fsync).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        self.last_sync = Instant::now();
        Ok(())
    }
}

impl Drop for AuditWriter {
    /// An orderly end that forgot [`AuditWriter::close`] still closes the signed log; errors
    /// cannot be reported here, and a log left unclosed is reported by the verifier.
    fn drop(&mut self) {
        if !self.closed && self.signer.is_some() {
            let _ = self.close();
        }
    }
}
