//! The shared HMAC key, read from a file that only its owner may read. The same loader reads
//! the audit log's checkpoint key, and [`check_private_file`] is the one permission check every
//! key and certificate file goes through.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Least key length, bytes: the HMAC-SHA256 output size (RFC 2104 §3 recommends at least L).
pub const MIN_KEY_LEN: usize = 32;
/// Largest key file read, bytes (a key is small; a huge file is a mistake).
const MAX_KEY_FILE: u64 = 4096;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key (raw, or decoded from hex) is too short.
    #[error("key {path} holds {len} bytes, need at least {MIN_KEY_LEN}")]
    TooShort {
        /// The key file (empty for an in-memory key).
        path: PathBuf,
        /// Key bytes found.
        len: usize,
    },
    /// The file is larger than any key.
    #[error("key file {path} is {len} bytes, larger than {MAX_KEY_FILE}; is it the right file?")]
    TooLarge {
        /// The key file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Group or others may access the file.
    #[error("key file {path} has mode {mode:o}: group/others may access it; run `chmod 600 {path}`")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The shared secret of a link. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct LinkKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkKey({} bytes, redacted)", self.bytes.len())
    }
}

impl LinkKey {
    /// A key from raw bytes (at least [`MIN_KEY_LEN`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: PathBuf::new(),
                len: bytes.len(),
            });
        }
        Ok(LinkKey {
            bytes: bytes.to_vec(),
        })
    }

    /// Reads a key file: hex text (whitespace ignored, e.g. `openssl rand -hex 32 > key`)
    /// when the whole file is an even number of hex digits, otherwise the raw bytes
    /// (e.g. `head -c 32 /dev/urandom > key`). On unix the file must not be accessible
    /// to group or others.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = check_private_file(path)?;
        if meta.len() > MAX_KEY_FILE {
            return Err(KeyError::TooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let raw = std::fs::read(path).map_err(io)?;
        let bytes = decode_hex(&raw).unwrap_or(raw);
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(LinkKey { bytes })
    }

    /// Key length, bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a key has at least [`MIN_KEY_LEN`] bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A short public name of the key: the first 8 bytes of SHA-256 over a fixed label and
    /// the key. It tells a verifier holding the wrong key "another key" rather than "forged";
    /// it reveals nothing usable about a key of at least [`MIN_KEY_LEN`] random bytes.
    pub fn key_id(&self) -> [u8; 8] {
        use sha2::Digest;
        let mut h = Sha256::new();
        h.update(b"ionguide key id\0");
        h.update(&self.bytes);
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        id
    }

    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail; keep the fallback total anyway.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()))
    }
}

/// Checks that a secret's file (an HMAC key, a TLS private key) exists and, on unix, that
/// neither group nor others may access it; returns its metadata. Every key file the project
/// reads goes through this check, so a copied-around key with mode 0644 is refused the same
/// way wherever it is used.
pub fn check_private_file(path: &Path) -> Result<std::fs::Metadata, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(meta)
}

/// Hex digits (whitespace ignored) to bytes; `None` if anything else is present or the
/// digit count is odd.
fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return None;
    }
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits
        .chunks_exact(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_and_rejects_non_hex() {
        assert_eq!(decode_hex(b"00ff10\n"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex(b"0g"), None);
        assert_eq!(decode_hex(b"abc"), None);
    }
}
