//! The spool folder source with real files: stability rule, temporary names, moves to
//! `done/` and `rejected/`, and frames that decode like the folder they were copied from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ionguide::correction::RejectReason;
use ionguide::dicom::ct::{read_series_bytes, read_series_dir};
use ionguide::source::spool::{self, DONE_DIR, REJECTED_DIR};
use ionguide::source::{AssemblerConfig, PollSummary, SourceEvent, SpoolConfig, SpoolWatcher};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn dcm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

/// A fresh, empty spool folder per test.
fn spool_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("source_spool_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &Path, expected: usize) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        poll_interval: Duration::from_millis(20),
        assembler: AssemblerConfig {
            expected_slices: Some(expected),
            assembly_timeout: Duration::from_secs(600),
            ..AssemblerConfig::default()
        },
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn stable_files_are_taken_once_and_form_a_frame_that_decodes_like_the_folder() {
    let src = data("STS_001/image");
    let files = dcm_files(&src);
    let dir = spool_dir("frame");
    for f in &files {
        std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watcher = SpoolWatcher::new(&config(&dir, files.len()), tx).unwrap();
    // First sight: nothing is taken until a second poll sees the same size and time.
    assert_eq!(
        watcher.poll(),
        PollSummary {
            accepted: 0,
            rejected: 0,
            waiting: files.len()
        }
    );
    assert!(rx.try_recv().is_err());
    let second = watcher.poll();
    assert_eq!(second.accepted, files.len());
    // every object but the last is announced first (for early decoding), then the frame
    let mut announced = Vec::new();
    let frame = loop {
        match rx.try_recv().unwrap() {
            SourceEvent::Object { key, object } => announced.push((key, object)),
            SourceEvent::Frame(f) => break f,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(frame.objects.len(), files.len());
    assert_eq!(announced.len(), files.len() - 1);
    for (key, object) in &announced {
        assert_eq!(*key, frame.key);
        assert!(frame.objects.iter().any(|o| std::sync::Arc::ptr_eq(o, object)));
    }
    assert!(frame.origin.starts_with("spool:"));
    let slices: Vec<&[u8]> = frame.objects.iter().map(|o| o.as_slice()).collect();
    assert_eq!(
        read_series_bytes(&slices).unwrap().volume,
        read_series_dir(&src).unwrap().volume
    );
    // Everything moved to done/, nothing left to read twice.
    assert!(names_in(&dir).is_empty());
    assert_eq!(names_in(&dir.join(DONE_DIR)).len(), files.len());
    assert_eq!(watcher.poll(), PollSummary::default());
    assert!(rx.try_recv().is_err());
}

#[test]
fn growing_and_temporary_files_wait_and_refused_files_go_to_rejected_with_a_reason() {
    let dir = spool_dir("rules");
    let rs = std::fs::read(data("STS_001/mask/RS.dcm")).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watcher = SpoolWatcher::new(&config(&dir, 59), tx).unwrap();

    // A writer without rename: half the file, then the rest.
    let growing = dir.join("rs.dcm");
    std::fs::write(&growing, &rs[..rs.len() / 2]).unwrap();
    // A writer with rename: the temporary name is never read.
    std::fs::write(dir.join("slice.dcm.part"), b"partial").unwrap();
    std::fs::write(dir.join(".hidden"), b"partial").unwrap();
    assert_eq!(watcher.poll().waiting, 1);
    std::fs::write(&growing, &rs).unwrap();
    // Size changed since the last poll: still waiting.
    assert_eq!(watcher.poll().waiting, 1);
    let summary = watcher.poll();
    assert_eq!(summary.rejected, 1, "{summary:?}");
    match rx.try_recv().unwrap() {
        SourceEvent::Rejected {
            reason, origin, why, ..
        } => {
            assert_eq!(why, RejectReason::NotCt);
            assert!(origin.ends_with("rs.dcm"), "{origin}");
            assert!(reason.contains("1.2.840.10008.5.1.4.1.1.481.3"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let rejected = dir.join(REJECTED_DIR);
    assert_eq!(names_in(&rejected), ["rs.dcm", "rs.dcm.reason.txt"]);
    // The whole file was read, not the half seen first.
    assert_eq!(std::fs::read(rejected.join("rs.dcm")).unwrap(), rs);
    assert!(std::fs::read_to_string(rejected.join("rs.dcm.reason.txt"))
        .unwrap()
        .contains("not CT"));
    assert_eq!(names_in(&dir), [".hidden", "slice.dcm.part"]);

    // Garbage under the same name again: rejected without overwriting the first.
    std::fs::write(&growing, b"not dicom").unwrap();
    watcher.poll();
    assert_eq!(watcher.poll().rejected, 1);
    assert!(
        matches!(rx.try_recv().unwrap(), SourceEvent::Rejected { reason, why: RejectReason::Unparseable, .. } if reason.contains("DICM"))
    );
    assert!(names_in(&rejected).contains(&"rs.dcm-1".to_owned()));
    assert_eq!(std::fs::read(rejected.join("rs.dcm")).unwrap(), rs);
}

#[test]
fn the_watcher_thread_delivers_renamed_files_and_stops_cleanly() {
    let src = data("encoded/STS_002_rle");
    let files = dcm_files(&src);
    let dir = spool_dir("thread");
    let (tx, rx): (_, Receiver<SourceEvent>) = crossbeam_channel::unbounded();
    let handle = spool::start(config(&dir, files.len()), tx).unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let tmp = dir.join(format!("{name}.part"));
        std::fs::copy(f, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    let frame = loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(SourceEvent::Frame(f)) => break f,
            Ok(SourceEvent::Object { .. }) => {}
            Ok(other) => panic!("{other:?}"),
            Err(RecvTimeoutError::Timeout) => panic!("no frame from the spool thread"),
            Err(e) => panic!("{e}"),
        }
    };
    let slices: Vec<&[u8]> = frame.objects.iter().map(|o| o.as_slice()).collect();
    assert_eq!(
        read_series_bytes(&slices).unwrap().volume,
        read_series_dir(&src).unwrap().volume
    );
    handle.shutdown();
    // Stopped: a new file stays where it is.
    std::fs::copy(&files[0], dir.join("late.dcm")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(dir.join("late.dcm").exists());
}

#[test]
fn a_missing_spool_folder_is_a_clear_error() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("source_spool_does_not_exist");
    let err = SpoolWatcher::new(&config(&missing, 1), tx).unwrap_err();
    assert!(err.to_string().contains("source_spool_does_not_exist"), "{err}");
}
