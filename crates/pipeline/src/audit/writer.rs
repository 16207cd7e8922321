//! Appending records: one whole record per `write`, on a file opened for append, with the
//! fsync policy of [`AuditOptions`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format::{encode_frame, encode_record, header_bytes};
use super::{io_err, AuditError, AuditReader, AuditRecord, FrameRecord, TailStatus};
use super::{HEADER_LEN, MAX_RECORD_BYTES, VERSION};

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
#[derive(Debug)]
pub struct AuditWriter {
    path: PathBuf,
    file: File,
    options: AuditOptions,
    buf: Vec<u8>,
    offset: u64,
    last_sync: Instant,
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
        file.write_all(&header_bytes(session_start_unix_ns))
            .map_err(|e| io_err(path, e))?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        Ok(AuditWriter {
            path: path.to_path_buf(),
            file,
            options,
            buf: Vec::with_capacity(4096),
            offset: HEADER_LEN as u64,
            last_sync: Instant::now(),
        })
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
        for _ in reader.by_ref() {}
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
        })
    }

    /// Byte offset where the next record goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends a frame record.
    pub fn write_frame(&mut self, frame: &FrameRecord) -> Result<(), AuditError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        encode_frame(&mut self.buf, frame, self.options.full_corrections)?;
        self.commit()
    }

    /// Appends any record.
    pub fn write(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        encode_record(&mut self.buf, record, self.options.full_corrections)?;
        self.commit()
    }

    /// Frames `buf[8..]` with length and CRC and writes it in one call.
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
