//! The C-STORE receiver against a third-party sender: dcmtk's `storescu` / `echoscu`, run as
//! subprocesses on loopback. Frames must decode to the same voxels as the folder they were
//! sent from, read by the file ingest path.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod dcmtk_support;
use dcmtk_support::dcmtk;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ionguide::correction::RejectReason;
use ionguide::dicom::ct::{read_series_dir, read_series_files, IngestOptions, SeriesDecoder};
use ionguide::geometry::Grid;
use ionguide::source::{
    scp, AssemblerConfig, FrameKey, ObjectBytes, RawFrame, ScpConfig, ScpHandle, SourceEvent,
};
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;

/// Long enough for a loaded CI machine; only a bound on waiting, never a speed assertion.
const EVENT_WAIT: Duration = Duration::from_secs(120);

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

/// Runs a dcmtk tool; a missing tool fails the test with what to install.
fn storescu(handle: &ScpHandle, extra: &[&str], files: &[PathBuf]) -> Output {
    let addr = handle.local_addr();
    let mut args: Vec<String> = ["-aet", "SCANNER", "-aec", "IONGUIDE"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.push(addr.ip().to_string());
    args.push(addr.port().to_string());
    args.extend(files.iter().map(|f| f.display().to_string()));
    dcmtk("storescu", &args)
}

fn start(expected_slices: usize, timeout: Duration) -> (ScpHandle, Receiver<SourceEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = ScpConfig {
        assembler: AssemblerConfig {
            expected_slices: Some(expected_slices),
            assembly_timeout: timeout,
            ..AssemblerConfig::default()
        },
        ..ScpConfig::default()
    };
    (scp::start(config, tx).unwrap(), rx)
}

/// The next frame or rejection, and the objects announced before it (early-decoding hints).
fn next_event_and_hints(rx: &Receiver<SourceEvent>) -> (Vec<(FrameKey, ObjectBytes)>, SourceEvent) {
    let mut hints = Vec::new();
    loop {
        match rx.recv_timeout(EVENT_WAIT) {
            Ok(SourceEvent::Object { key, object }) => hints.push((key, object)),
            Ok(e) => return (hints, e),
            Err(RecvTimeoutError::Timeout) => panic!("no source event within {EVENT_WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("source channel closed"),
        }
    }
}

fn next_event(rx: &Receiver<SourceEvent>) -> SourceEvent {
    next_event_and_hints(rx).1
}

/// The next frame, and how many of its objects were announced before it (each announced
/// object of its key must be one of its objects, the same bytes).
fn next_frame_announced(rx: &Receiver<SourceEvent>) -> (RawFrame, usize) {
    match next_event_and_hints(rx) {
        (hints, SourceEvent::Frame(f)) => {
            let mine: Vec<_> = hints.iter().filter(|(key, _)| *key == f.key).collect();
            for (_, object) in &mine {
                assert!(f.objects.iter().any(|o| std::sync::Arc::ptr_eq(o, object)));
            }
            let n = mine.len();
            (f, n)
        }
        (_, other) => panic!("expected a frame, got {other:?}"),
    }
}

fn next_frame(rx: &Receiver<SourceEvent>) -> RawFrame {
    next_frame_announced(rx).0
}

fn decode(frame: &RawFrame) -> CtVolume {
    let slices: Vec<&[u8]> = frame.objects.iter().map(|o| o.as_slice()).collect();
    // decode_into replaces the grid; a 1-voxel placeholder is enough.
    let grid = Grid::axis_aligned([1, 1, 1], PointMm::origin(), [1.0; 3]).unwrap();
    let mut volume = CtVolume::filled(grid, 0);
    SeriesDecoder::new(IngestOptions::default())
        .decode_into(&slices, &mut volume)
        .unwrap();
    volume
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "storescu failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn storescu_slices_arrive_as_one_frame_that_decodes_like_the_folder() {
    let dir = data("STS_001/image");
    let files = dcm_files(&dir);
    let (scp, rx) = start(files.len(), Duration::from_secs(600));
    let out = storescu(&scp, &[], &files);
    assert_success(&out);
    let (frame, announced) = next_frame_announced(&rx);
    assert_eq!(frame.objects.len(), files.len());
    assert_eq!(
        announced,
        files.len() - 1,
        "every object but the last announced first"
    );
    assert!(
        frame.origin.starts_with("scp:SCANNER@127.0.0.1:"),
        "{}",
        frame.origin
    );
    assert_eq!(frame.key.acquisition_number, Some(1));
    assert_eq!(decode(&frame), read_series_dir(&dir).unwrap().volume);
    assert!(rx.try_recv().is_err(), "exactly one event expected");
    scp.shutdown();
}

#[test]
fn compressed_slices_are_negotiated_and_decode_losslessly() {
    // dcmtk re-encoded slices 10..=21 of STS_002; both must give the original voxels.
    let original: Vec<PathBuf> = (10..=21)
        .map(|i| data(&format!("STS_002/image/{i:06}.dcm")))
        .collect();
    let truth = read_series_files(&original).unwrap().volume;
    for (folder, propose) in [("encoded/STS_002_rle", "-xr"), ("encoded/STS_002_jpegll", "-xs")] {
        let files = dcm_files(&data(folder));
        let (scp, rx) = start(files.len(), Duration::from_secs(600));
        // -R: propose only the file's own SOP class, with its compressed syntax first.
        let out = storescu(&scp, &[propose, "-R"], &files);
        assert_success(&out);
        let frame = next_frame(&rx);
        assert_eq!(frame.objects.len(), 12, "{folder}");
        let ts = ionguide::dicom::ct::read_series_bytes(
            &frame.objects.iter().map(|o| o.as_slice()).collect::<Vec<_>>(),
        )
        .unwrap()
        .meta
        .transfer_syntax_uid;
        let expected_ts = if propose == "-xr" {
            "1.2.840.10008.1.2.5"
        } else {
            "1.2.840.10008.1.2.4.70"
        };
        assert_eq!(ts, expected_ts, "{folder} must arrive compressed, not converted");
        assert_eq!(decode(&frame), truth, "{folder}");
        scp.shutdown();
    }
}

#[test]
fn two_acquisitions_of_the_same_series_become_two_frames() {
    let dir = data("STS_001/image");
    let files = dcm_files(&dir);
    // A second acquisition: copies with Acquisition Number 2 and new SOP Instance UIDs.
    let copy_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("source_scp_acq2");
    let _ = std::fs::remove_dir_all(&copy_dir);
    std::fs::create_dir_all(&copy_dir).unwrap();
    let mut copies = Vec::new();
    for f in &files {
        let to = copy_dir.join(f.file_name().unwrap());
        std::fs::copy(f, &to).unwrap();
        copies.push(to);
    }
    let mut args: Vec<String> = ["-nb", "-gin", "-m", "(0020,0012)=2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(copies.iter().map(|p| p.display().to_string()));
    let out = dcmtk("dcmodify", &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (scp, rx) = start(files.len(), Duration::from_secs(600));
    // Interleaved, as two acquisitions in flight would be.
    let interleaved: Vec<PathBuf> = files
        .iter()
        .zip(&copies)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let out = storescu(&scp, &[], &interleaved);
    assert_success(&out);
    let mut frames = [next_frame(&rx), next_frame(&rx)];
    frames.sort_by_key(|f| f.key.acquisition_number);
    assert_eq!(frames[0].key.acquisition_number, Some(1));
    assert_eq!(frames[1].key.acquisition_number, Some(2));
    assert_eq!(
        frames[0].key.series_instance_uid,
        frames[1].key.series_instance_uid
    );
    let truth = read_series_dir(&dir).unwrap().volume;
    for f in &frames {
        assert_eq!(f.objects.len(), files.len());
        assert_eq!(decode(f), truth);
    }
    scp.shutdown();
}

#[test]
fn an_incomplete_frame_is_rejected_after_its_timeout() {
    let files = dcm_files(&data("STS_001/image"));
    let (scp, rx) = start(files.len(), Duration::from_millis(500));
    let out = storescu(&scp, &[], &files[..10]);
    assert_success(&out);
    match next_event(&rx) {
        SourceEvent::Rejected {
            origin,
            key,
            why,
            reason,
            ..
        } => {
            assert_eq!(why, RejectReason::AssemblyTimeout);
            assert!(origin.starts_with("scp:SCANNER@"), "{origin}");
            assert_eq!(key.unwrap().acquisition_number, Some(1));
            assert!(reason.contains(&format!("10 of {}", files.len())), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    scp.shutdown();
}

#[test]
fn a_structure_set_is_refused_with_a_failure_status_and_reported() {
    let (scp, rx) = start(59, Duration::from_secs(600));
    let out = storescu(&scp, &["-v"], &[data("STS_001/mask/RS.dcm")]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // dcmtk names status 0x0122 "Refused: SOPClassNotSupported".
    assert!(
        log.contains("0x0122") || log.contains("SOPClassNotSupported"),
        "storescu did not report the refusal:\n{log}"
    );
    match next_event(&rx) {
        SourceEvent::Rejected { key, why, reason, .. } => {
            assert!(key.is_none());
            assert_eq!(why, RejectReason::NotCt);
            assert!(
                reason.contains("1.2.840.10008.5.1.4.1.1.481.3 (RT Structure Set Storage)"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    scp.shutdown();
}

#[test]
fn echo_is_answered_and_a_wrong_called_ae_title_is_refused() {
    let (scp, _rx) = start(59, Duration::from_secs(600));
    let addr = scp.local_addr();
    let echo = |called: &str| {
        dcmtk(
            "echoscu",
            &[
                "-aet".into(),
                "SCANNER".into(),
                "-aec".into(),
                called.into(),
                addr.ip().to_string(),
                addr.port().to_string(),
            ],
        )
    };
    assert_success(&echo("IONGUIDE"));
    assert!(!echo("SOMEONE_ELSE").status.success());
    scp.shutdown();
}
