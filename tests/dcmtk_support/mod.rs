//! dcmtk, the independent DICOM toolkit the tests check our output and our receiver against.
//! The tests need it and must not skip without it (CI installs it).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// Runs a dcmtk tool; a missing tool fails the test, saying how to install it.
#[allow(dead_code)] // each test binary uses what it needs
pub fn dcmtk<S: AsRef<OsStr>>(tool: &str, args: &[S]) -> Output {
    match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{tool}` is not on PATH: install dcmtk (e.g. `apt-get install dcmtk`; CI installs it). \
             These tests need a third-party DICOM tool and must not be skipped."
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// `dcmdump -E` of a file (stop on, and report, any damage instead of printing what it could
/// parse): fails the test unless it reads the whole file with nothing on stderr; returns the dump.
#[allow(dead_code)]
pub fn dcmdump_clean(path: &Path) -> String {
    let out = dcmtk("dcmdump", &[OsStr::new("-E"), path.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "dcmdump {}: {err}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
