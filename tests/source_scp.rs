//! The C-STORE receiver against a third-party sender: dcmtk's `storescu` / `echoscu`, run as
//! subprocesses on loopback. Frames must decode to the same voxels as the folder they were
//! sent from, read by the file ingest path.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod dcmtk_support;
mod pki_support;
use dcmtk_support::dcmtk;
use pki_support::test_pki;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ionguide::correction::RejectReason;
use ionguide::dicom::ct::{read_series_dir, read_series_files, IngestOptions, SeriesDecoder};
use ionguide::geometry::Grid;
use ionguide::source::{
    scp, scp::ScpOptions, AssemblerConfig, FrameKey, ObjectBytes, RawFrame, ScpConfig, ScpHandle, SourceEvent,
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
    start_with(expected_slices, timeout, ScpOptions::default())
}

fn start_with(
    expected_slices: usize,
    timeout: Duration,
    network: ScpOptions,
) -> (ScpHandle, Receiver<SourceEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = ScpConfig {
        network,
        assembler: AssemblerConfig {
            expected_slices: Some(expected_slices),
            assembly_timeout: timeout,
            ..AssemblerConfig::default()
        },
    };
    (scp::start(config, tx).unwrap(), rx)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The next event must be a refusal at association time (`peer_refused`); returns its
/// origin and reason.
fn next_peer_refusal(rx: &Receiver<SourceEvent>) -> (String, String) {
    match next_event(rx) {
        SourceEvent::Rejected {
            origin,
            key,
            why,
            reason,
            ..
        } => {
            assert!(key.is_none());
            assert_eq!(why, RejectReason::PeerRefused, "{reason}");
            (origin, reason)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
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

/// With `refuse_other_classes_by_status` (the behaviour before negotiation refused them) a
/// structure set is accepted at negotiation and refused by C-STORE status.
#[test]
fn a_structure_set_is_refused_with_a_failure_status_and_reported() {
    let (scp, rx) = start_with(
        59,
        Duration::from_secs(600),
        ScpOptions {
            refuse_other_classes_by_status: true,
            ..ScpOptions::default()
        },
    );
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

/// By default a SOP class the pipeline does not read (an RT Ion Plan) is rejected in the
/// association's answer ("abstract syntax not supported"): storescu has no context to send
/// it on, and the refusal is reported, naming the SOP class, without holding the beam.
#[test]
fn a_non_image_sop_class_is_refused_at_negotiation_and_reported() {
    let (scp, rx) = start(59, Duration::from_secs(600));
    // -R: propose only the classes of the files sent, as a planning system pushing a plan would
    let out = storescu(
        &scp,
        &["-v", "-R"],
        &[data("plans/STS_001/RPSTS001G0G90_normalized.dcm")],
    );
    let log = output_text(&out);
    assert!(!out.status.success(), "storescu delivered a plan:\n{log}");
    assert!(
        log.contains("No Acceptable Presentation Contexts"),
        "storescu did not see the context rejected:\n{log}"
    );
    let (origin, reason) = next_peer_refusal(&rx);
    assert!(origin.starts_with("scp:SCANNER@127.0.0.1:"), "{origin}");
    assert!(
        reason.contains("1.2.840.10008.5.1.4.1.1.481.8 (RT Ion Plan Storage)")
            && reason.contains("AbstractSyntaxNotSupported"),
        "{reason}"
    );
    assert!(!RejectReason::PeerRefused.holds_beam());
    scp.shutdown();
}

/// The allow-lists: the listed scanner at the listed address delivers; another calling AE
/// title is refused at association (A-ASSOCIATE-RJ, calling AE title not recognized),
/// before any object, and reported; so is a listed title from an address not on the list.
#[test]
fn only_allowed_callers_may_send() {
    let files = dcm_files(&data("STS_001/image"));
    let allowed = ScpOptions {
        allowed_calling_ae_titles: vec!["SCANNER".into()],
        allowed_peers: vec!["127.0.0.1".parse().unwrap()],
        ..ScpOptions::default()
    };
    let (scp, rx) = start_with(files.len(), Duration::from_secs(600), allowed.clone());
    assert_success(&storescu(&scp, &[], &files));
    assert_eq!(next_frame(&rx).objects.len(), files.len());

    let addr = scp.local_addr();
    let stranger = dcmtk(
        "storescu",
        &[
            "-v".to_string(),
            "-aet".into(),
            "STRANGER".into(),
            "-aec".into(),
            "IONGUIDE".into(),
            addr.ip().to_string(),
            addr.port().to_string(),
            files[0].display().to_string(),
        ],
    );
    let log = output_text(&stranger);
    assert!(!stranger.status.success(), "{log}");
    assert!(
        log.contains("Calling AE Title Not Recognized"),
        "storescu:\n{log}"
    );
    let (origin, reason) = next_peer_refusal(&rx);
    assert!(origin.starts_with("scp:STRANGER@127.0.0.1:"), "{origin}");
    assert!(
        reason.contains("calling AE title \"STRANGER\" is not on the allow-list")
            && reason.contains("CallingAETitleNotRecognized"),
        "{reason}"
    );
    assert!(
        rx.try_recv().is_err(),
        "nothing of the stranger's reached the assembler"
    );
    scp.shutdown();

    // the right title from an address not on the list
    let elsewhere = ScpOptions {
        allowed_peers: vec!["10.9.8.7".parse().unwrap()],
        ..allowed
    };
    let (scp, rx) = start_with(files.len(), Duration::from_secs(600), elsewhere);
    let out = storescu(&scp, &["-v"], &files[..1]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let (_, reason) = next_peer_refusal(&rx);
    assert!(
        reason.contains("peer address 127.0.0.1 is not on the allow-list"),
        "{reason}"
    );
    scp.shutdown();
}

/// DICOM TLS: storescu with `+tls` and the scanner's CA-signed certificate delivers a frame;
/// the same without TLS, and with a certificate from another CA, fail the handshake and are
/// refused and reported; a receiver key others may read is refused at start.
#[test]
fn tls_delivers_with_a_trusted_client_certificate_and_refuses_plain_and_untrusted() {
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    test_pki(d);
    let files = dcm_files(&data("STS_001/image"));
    let tls = ScpOptions {
        tls: Some(scp::TlsFiles {
            cert_pem: d.join("scp.crt"),
            key_pem: d.join("scp.key"),
            ca_pem: d.join("ca.crt"),
        }),
        ..ScpOptions::default()
    };
    let (scp, rx) = start_with(files.len(), Duration::from_secs(600), tls.clone());
    let p = |f: &str| d.join(f).display().to_string();
    let with_cert = |key: &str, crt: &str, files: &[PathBuf]| {
        storescu(&scp, &["+tls", &p(key), &p(crt), "+cf", &p("ca.crt")], files)
    };
    assert_success(&with_cert("scanner.key", "scanner.crt", &files));
    let frame = next_frame(&rx);
    assert_eq!(frame.objects.len(), files.len());
    assert_eq!(
        decode(&frame),
        read_series_dir(data("STS_001/image")).unwrap().volume
    );

    let plain = storescu(&scp, &[], &files[..1]);
    assert!(!plain.status.success(), "{}", output_text(&plain));
    let (_, reason) = next_peer_refusal(&rx);
    assert!(
        reason.contains("DICOM TLS handshake failed") && reason.contains("InvalidContentType"),
        "{reason}"
    );

    let untrusted = with_cert("rogue.key", "rogue.crt", &files[..1]);
    assert!(!untrusted.status.success(), "{}", output_text(&untrusted));
    let (_, reason) = next_peer_refusal(&rx);
    assert!(
        reason.contains("DICOM TLS handshake failed") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    assert!(
        rx.try_recv().is_err(),
        "nothing of the refused peers reached the assembler"
    );
    scp.shutdown();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("scp.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let (tx, _rx) = crossbeam_channel::unbounded();
        let err = scp::start(
            ScpConfig {
                network: tls,
                ..ScpConfig::default()
            },
            tx,
        )
        .expect_err("a world-readable TLS key");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
