//! `ionguide run` refuses planning inputs that do not belong together before anything listens
//! or sends: a plan or structure set of another Frame of Reference, another patient's plan,
//! an isocenter outside the CT, a plan made on another structure set. The wrong inputs are
//! real DICOM files edited in one attribute. And a plan read with warnings puts them in the
//! audit log's session-start record.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use ionguide::audit::{AuditReader, AuditRecord, TailStatus};
use support::daemon::{data, run_to_exit, Daemon, Planning, SessionDir, RELAXED_TIMING, SCP_59};
use support::dicom_edit::{mismatched, Mismatch};

#[test]
fn each_mismatched_input_is_refused_before_anything_listens_or_sends() {
    for case in Mismatch::ALL {
        let s = SessionDir::new();
        let ([ct, structures, plan], [found, expected]) = mismatched(
            case,
            [
                &data("STS_001/image"),
                &data("STS_001/mask/RS.dcm"),
                &data("plans/STS_001/RPSTS001G0G90.dcm"),
            ],
            s.path(),
        );
        // the controller's address: whatever the daemon sent would land here
        let controller = UdpSocket::bind("127.0.0.1:0").unwrap();
        controller
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let config = s.write_config_with(
            controller.local_addr().unwrap(),
            SCP_59,
            RELAXED_TIMING,
            &Planning { ct, structures, plan },
        );
        let out = run_to_exit(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case:?}: {stderr}");
        assert!(
            stderr.contains(&found) && stderr.contains(&expected),
            "{case:?}: the refusal names {found} and {expected}:\n{stderr}"
        );
        assert!(
            !stderr.contains("listening for CT frames"),
            "{case:?}: the SCP never listened:\n{stderr}"
        );
        assert!(
            !s.audit_path().exists(),
            "{case:?}: no audit log for a session that never started"
        );
        let mut buf = [0u8; 2048];
        assert!(
            controller.recv_from(&mut buf).is_err(),
            "{case:?}: a datagram reached the controller"
        );
    }
}

#[test]
fn the_plans_reading_warnings_are_in_the_session_start_record() {
    // OpenTPS writes Modality "RT Ion Plan IOD": the reader accepts it with a warning.
    let plan = data("plans/STS_001/RPSTS001G0G90.dcm");
    let (_, warnings) = ionguide::dicom::rtplan::read_plan(&plan).unwrap();
    assert!(!warnings.is_empty(), "the raw OpenTPS plan reads with warnings");

    let s = SessionDir::new();
    let controller = s.controller(Duration::from_secs(2));
    let config = s.write_config(controller.local_addr(), SCP_59, RELAXED_TIMING);
    let daemon = Daemon::start(&config).unwrap_or_else(|(st, e)| panic!("{st}: {e}"));
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{stderr}");
    let (records, tail) = AuditReader::read_all(&s.audit_path()).unwrap();
    assert_eq!(tail, TailStatus::Clean);
    match records.first() {
        Some(AuditRecord::SessionStart { plan_warnings, .. }) => {
            let want: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
            assert_eq!(plan_warnings, &want);
            assert!(
                plan_warnings.iter().any(|w| w.contains("\"RT Ion Plan IOD\"")),
                "{plan_warnings:?}"
            );
        }
        other => panic!("first record {other:?}"),
    }
    let _ = controller.stop();
}
