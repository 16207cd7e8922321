//! `ionguide run` end to end as a process: real DICOM associations in (dcmtk's storescu),
//! real UDP out to the controller simulator, SIGTERM to stop, and the audit log read back.
//! Also the start-up refusals an operator meets: a bad configuration value, a plan over the
//! resource limit; and frames over the slice limit rejected with their reason in the log.

mod support;

use std::time::Duration;

use ionguide::audit::{AckOutcome, AuditReader, AuditRecord, Outcome, TailStatus};
use ionguide::correction::HoldReason;
use ionguide_sim::delivery::controller::{BeamState, Cause};
use sha2::Digest;

use support::daemon::{run_to_exit, Daemon, FrameSender, SessionDir, RELAXED_TIMING, SCP_59};
use support::dicom_edit::Edit;

#[test]
fn two_frames_are_corrected_and_sigterm_closes_the_log_and_holds_the_beam() {
    let s = SessionDir::new();
    let controller = s.controller(Duration::from_secs(2));
    let config = s.write_config(controller.local_addr(), SCP_59, RELAXED_TIMING);
    let daemon = Daemon::start(&config).unwrap_or_else(|(st, e)| panic!("{st}: {e}"));
    let frames = FrameSender::new();

    // One frame at a time: the pipeline lets a newer frame overtake a waiting one, and this
    // test wants both corrected.
    for (n, frame) in [(1, 101), (2, 102)] {
        assert!(
            frames.send(daemon.scp, frame, &Edit::default()),
            "storescu frame {frame}"
        );
        assert!(
            controller.wait_until(Duration::from_secs(30), |c| c.counters().applied_sets >= n),
            "controller applied {n} set(s) within 30 s; daemon:\n{}",
            daemon.stderr()
        );
    }
    assert_eq!(controller.with(|c| c.state()), BeamState::BeamOn);
    // The controller's acknowledgements are audited as they are read: wait for both
    // "applied" ones before stopping (a stop drains frames, not datagrams in flight).
    let applied = |records: &[AuditRecord]| -> Vec<u64> {
        records
            .iter()
            .filter_map(|r| match r {
                AuditRecord::ControllerAck {
                    frame_id,
                    status: AckOutcome::Applied,
                    ..
                } => Some(*frame_id),
                _ => None,
            })
            .collect()
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end
        && applied(&AuditReader::read_all(&s.audit_path()).unwrap().0).len() < 2
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert!(
        controller.wait_until(Duration::from_secs(5), |c| c.state() == BeamState::Held),
        "controller held after the daemon stopped"
    );
    let controller = controller.stop().unwrap();
    let last = controller.events().last().unwrap();
    // The daemon's final HOLD, not the watchdog: the beam stops because the sender said so.
    assert!(
        matches!(
            last.cause,
            Cause::Commanded {
                reason: HoldReason::Shutdown,
                ..
            }
        ),
        "{:?}",
        controller.events()
    );
    assert_eq!(controller.counters().applied_sets, 2);

    let (records, tail) = AuditReader::read_all(&s.audit_path()).unwrap();
    assert_eq!(tail, TailStatus::Clean);
    let config_text = std::fs::read(&config).unwrap();
    let want_sha: [u8; 32] = sha2::Sha256::digest(&config_text).into();
    match records.first() {
        Some(AuditRecord::SessionStart { config_sha256, .. }) => assert_eq!(*config_sha256, want_sha),
        other => panic!("first record {other:?}"),
    }
    // No setup registration in this session: the setup record says so, with the identity map.
    match records.get(1) {
        Some(AuditRecord::Setup(setup)) => {
            assert!(!setup.planning_frame_of_reference_uid.is_empty());
            assert_eq!(setup.room_frame_of_reference_uid, "");
            assert_eq!(setup.registration_sha256, None);
            assert_eq!(
                setup.planning_to_room,
                [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
            );
        }
        other => panic!("second record {other:?}"),
    }
    let frames: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert!(
        frames.iter().all(|f| f.outcome == Some(Outcome::Corrected)),
        "{frames:#?}"
    );
    assert!(frames[0].frame_id < frames[1].frame_id);
    // what the controller applied, by its own acknowledgement: exactly the corrected frames
    assert_eq!(
        applied(&records),
        frames.iter().map(|f| f.frame_id).collect::<Vec<_>>(),
        "{records:#?}"
    );
    // and the beam came on with the first (an acknowledgement recording the change)
    assert!(records
        .iter()
        .any(|r| matches!(r, AuditRecord::ControllerAck { beam_on: true, .. })));
    match records.last() {
        Some(AuditRecord::Shutdown { reason, .. }) => assert_eq!(reason, "signal"),
        other => panic!("last record {other:?}"),
    }
    // only one session and one shutdown
    let count = |f: fn(&AuditRecord) -> bool| records.iter().filter(|r| f(r)).count();
    assert_eq!(count(|r| matches!(r, AuditRecord::SessionStart { .. })), 1);
    assert_eq!(count(|r| matches!(r, AuditRecord::Shutdown { .. })), 1);
}

#[test]
fn a_bad_configuration_value_stops_the_daemon_naming_the_key() {
    let s = SessionDir::new();
    let config = s.write_config(
        "127.0.0.1:9".parse().unwrap(),
        SCP_59,
        "[limits]\nmax_lateral_mm = -1\n",
    );
    let out = run_to_exit(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("limits.max_lateral_mm") && stderr.contains("-1"),
        "{stderr}"
    );
    assert!(
        !s.audit_path().exists(),
        "no audit log for a session that never started"
    );
}

#[test]
fn a_plan_over_max_plan_spots_stops_the_daemon_naming_the_key() {
    let s = SessionDir::new();
    let config = s.write_config(
        "127.0.0.1:9".parse().unwrap(),
        SCP_59,
        "[resources]\nmax_plan_spots = 1\n",
    );
    let out = run_to_exit(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("resources.max_plan_spots"), "{stderr}");
    assert!(stderr.contains("over the limit of 1"), "{stderr}");
    assert!(
        !s.audit_path().exists(),
        "no audit log for a session that never started"
    );
}

#[test]
fn a_frame_over_max_slices_is_rejected_with_its_reason_in_the_audit_log() {
    let s = SessionDir::new();
    let controller = s.controller(Duration::from_secs(2));
    // No expected_slices: the count comes from Images in Acquisition, as a scanner sends it.
    let config = s.write_config(
        controller.local_addr(),
        "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\n",
        &format!("{RELAXED_TIMING}\n[resources]\nmax_slices = 10\n"),
    );
    let daemon = Daemon::start(&config).unwrap_or_else(|(st, e)| panic!("{st}: {e}"));
    let edit = Edit {
        images_in_acquisition: Some(59),
        ..Edit::default()
    };
    // storescu is told "out of resources" for each object, so it reports failure.
    let sent_ok = FrameSender::new().send(daemon.scp, 7, &edit);
    assert!(!sent_ok, "the SCP refused the objects over the limit");

    // Wait until the refusals are audited (a stop before that would audit them as held).
    let rejected = |records: &[AuditRecord]| {
        records
            .iter()
            .filter(|r| matches!(r, AuditRecord::Frame(f) if f.outcome == Some(Outcome::Rejected)))
            .count()
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end {
        let (records, _) = AuditReader::read_all(&s.audit_path()).unwrap();
        if rejected(&records) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{stderr}");

    let (records, tail) = AuditReader::read_all(&s.audit_path()).unwrap();
    assert_eq!(tail, TailStatus::Clean);
    assert!(rejected(&records) > 0, "{records:#?}");
    for r in &records {
        if let AuditRecord::Frame(f) = r {
            assert_ne!(f.outcome, Some(Outcome::Corrected), "{f:#?}");
            if f.outcome == Some(Outcome::Rejected) {
                assert!(
                    f.detail.contains("59 objects") && f.detail.contains("limit of 10"),
                    "{}",
                    f.detail
                );
            }
        }
    }
    let controller = controller.stop().unwrap();
    assert_eq!(controller.counters().applied_sets, 0);
    assert_eq!(controller.state(), BeamState::Held);
}

/// `source.allowed_calling_ae_titles`: storescu calling as STORESCU (its default) is not on
/// the list; its association is refused before any object, the refusal is in the audit log
/// as a rejected record (`peer_refused`) that did not hold the beam, and the log the daemon
/// closes on SIGTERM is proven whole by `ionguide audit --verify` with the link's key.
#[test]
fn a_caller_not_on_the_allow_list_is_refused_audited_and_the_closed_log_verifies() {
    let s = SessionDir::new();
    let controller = s.controller(Duration::from_secs(2));
    let config = s.write_config(
        controller.local_addr(),
        "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\nallowed_calling_ae_titles = [\"CT_ROOM1\"]\n",
        RELAXED_TIMING,
    );
    let daemon = Daemon::start(&config).unwrap_or_else(|(st, e)| panic!("{st}: {e}"));
    assert!(!FrameSender::new().send(daemon.scp, 3, &Edit::default()));
    let refused = |records: &[AuditRecord]| {
        records
            .iter()
            .filter_map(|r| match r {
                AuditRecord::Frame(f)
                    if f.reject_reason == Some(ionguide::correction::RejectReason::PeerRefused) =>
                {
                    Some(f.clone())
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end
        && refused(&AuditReader::read_all(&s.audit_path()).unwrap().0).is_empty()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{stderr}");
    let (records, tail) = AuditReader::read_all(&s.audit_path()).unwrap();
    assert_eq!(tail, TailStatus::Clean);
    let refused = refused(&records);
    assert!(!refused.is_empty(), "{records:#?}");
    for f in &refused {
        assert_eq!(f.outcome, Some(Outcome::Rejected));
        assert_eq!(f.hold_reason, None, "a refused caller must not hold the beam");
        assert!(f.origin.starts_with("scp:STORESCU@127.0.0.1:"), "{}", f.origin);
        assert!(f.detail.contains("CallingAETitleNotRecognized"), "{}", f.detail);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["audit", "--verify", "--key"])
        .arg(s.key_path())
        .arg(s.audit_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("INTACT"), "{text}");
    let controller = controller.stop().unwrap();
    assert_eq!(controller.counters().applied_sets, 0);
}

/// DICOM TLS end to end: the daemon configured with `source.tls` takes a frame from storescu
/// `+tls` with the scanner's CA-signed certificate and the controller applies its
/// corrections; a plain storescu is refused and audited as `peer_refused`.
#[test]
fn a_tls_frame_is_corrected_and_a_plain_sender_refused() {
    let s = SessionDir::new();
    let pki = s.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    support::pki::test_pki(&pki);
    let controller = s.controller(Duration::from_secs(2));
    let config = s.write_config(
        controller.local_addr(),
        &format!("{SCP_59}tls = {{ cert = \"pki/scp.crt\", key = \"pki/scp.key\", ca = \"pki/ca.crt\" }}\n"),
        RELAXED_TIMING,
    );
    let daemon = Daemon::start(&config).unwrap_or_else(|(st, e)| panic!("{st}: {e}"));
    let p = |f: &str| pki.join(f).display().to_string();
    let tls_args = [
        "+tls".to_string(),
        p("scanner.key"),
        p("scanner.crt"),
        "+cf".into(),
        p("ca.crt"),
    ];
    let frames = FrameSender::new();
    assert!(
        frames.send_with(daemon.scp, 5, &Edit::default(), &tls_args),
        "storescu +tls"
    );
    assert!(
        controller.wait_until(Duration::from_secs(30), |c| c.counters().applied_sets >= 1),
        "controller applied the TLS frame's set; daemon:\n{}",
        daemon.stderr()
    );
    assert!(
        !frames.send(daemon.scp, 6, &Edit::default()),
        "a plain sender is refused"
    );
    let refused = |records: &[AuditRecord]| {
        records.iter().any(|r| {
            matches!(r, AuditRecord::Frame(f)
                if f.reject_reason == Some(ionguide::correction::RejectReason::PeerRefused)
                    && f.detail.contains("DICOM TLS handshake failed"))
        })
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end && !refused(&AuditReader::read_all(&s.audit_path()).unwrap().0) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{stderr}");
    let (records, _) = AuditReader::read_all(&s.audit_path()).unwrap();
    assert!(refused(&records), "{records:#?}");
    assert!(records
        .iter()
        .any(|r| matches!(r, AuditRecord::Frame(f) if f.outcome == Some(Outcome::Corrected))));
    controller.stop().unwrap();
}

/// `--record-out`: the daemon writes the session's treatment record when it stops, and it
/// holds exactly what the controller simulator delivered (its own log), piece for piece.
#[test]
fn the_daemon_writes_the_treatment_record_of_what_the_controller_delivered() {
    use ionguide_sim::delivery::controller::{ControllerConfig, DeliveryModel};
    use ionguide_sim::delivery::timeline::{ScanAxes, SynchrotronModel};
    let s = SessionDir::new();
    let (plan, _) =
        ionguide::dicom::rtplan::read_plan(support::daemon::data("plans/STS_001/RPSTS001G0G90.dcm")).unwrap();
    // 5 ms per spot, moves instantaneous: ~18 s for the plan, longer than the test
    let machine = SynchrotronModel {
        energy_switch_s: 0.0,
        energy_switch_refills_spill: false,
        spill_recharge_s: 0.0,
        particles_per_spill: 1e12,
        max_spill_length_s: None,
        particle_rate_per_s: 0.0333 / 0.005,
        scan_speed_mm_per_s: [1e12, 1e12],
        scan_axes: ScanAxes::Simultaneous,
        spot_settle_s: 0.0,
        beam_switch_s: 0.0,
    };
    let controller = s.controller_with(
        ControllerConfig::default()
            .with_watchdog(Duration::from_secs(2))
            .with_delivery(DeliveryModel::from_plan(&plan, &machine, 1.0).unwrap()),
    );
    let config = s.write_config(controller.local_addr(), SCP_59, RELAXED_TIMING);
    let out = s.path().join("RT.dcm");
    let daemon = Daemon::start_with(&config, &["--record-out", out.to_str().unwrap()])
        .unwrap_or_else(|(st, e)| panic!("{st}: {e}"));
    let frames = FrameSender::new();
    assert!(
        frames.send(daemon.scp, 101, &Edit::default()),
        "storescu frame 101"
    );
    assert!(
        controller.wait_until(Duration::from_secs(30), |c| c.delivery_log().len() >= 20),
        "the controller delivered spots within 30 s; daemon:\n{}",
        daemon.stderr()
    );
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{stderr}");
    let controller = controller.stop().unwrap();
    let read = ionguide::dicom::rtrecord::read_treatment_record(&std::fs::read(&out).unwrap()).unwrap();
    let pieces: Vec<_> = read.record.pieces().copied().collect();
    assert_eq!(pieces, controller.delivery_log());
    assert_eq!(read.record.beams.len(), 1);
    // SIGTERM: the daemon's shutdown HOLD ended the beam
    assert_eq!(read.beams[0].termination_status, "OPERATOR");
    assert_eq!(read.beams[0].termination_code.as_deref(), Some("SHUTDOWN"));
}
