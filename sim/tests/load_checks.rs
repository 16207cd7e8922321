//! The replay and the gate's chain refuse planning inputs that do not belong together before
//! anything listens or sends: a plan or structure set of another Frame of Reference, another
//! patient's plan, an isocenter outside the CT, a plan made on another structure set. The
//! wrong inputs are the real STS_001 files edited in one attribute. (`ionguide run`: see
//! cli/tests/load_checks.rs.)

mod support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ionguide::pipeline::{ChainBuilder, ChainError, InputMismatch, SessionError};
use ionguide::volume::CtVolume;
use ionguide_sim::gate::gate_chain;
use ionguide_sim::imaging::sources::{FrameSource, SourceError};
use ionguide_sim::replay::{self, ReplayError, ReplayOptions};
use support::dicom_edit::{mismatched, Mismatch};
use support::rig::{data, write_session_with};

/// A session folder whose configuration names the inputs of `case`; returns it, the config
/// and the two values the refusal must name.
fn session(case: Mismatch) -> (tempfile::TempDir, PathBuf, [String; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let (files, values) = mismatched(
        case,
        [
            &data("STS_001/image"),
            &data("STS_001/mask/RS.dcm"),
            &data("plans/STS_001/RPSTS001G0G90.dcm"),
        ],
        dir.path(),
    );
    let config = write_session_with(
        dir.path(),
        [&files[0], &files[1], &files[2]],
        "",
        "[timing]\nbudget_ms = 1500\nvalidity_ms = 3000\n",
        "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\nexpected_slices = 59\n",
    );
    (dir, config, values)
}

fn audit_log(dir: &Path) -> PathBuf {
    dir.join("audit/session.audit")
}

fn names_both(case: Mismatch, message: &str, [found, expected]: &[String; 2]) {
    assert!(
        message.contains(found.as_str()) && message.contains(expected.as_str()),
        "{case:?}: the refusal names {found} and {expected}: {message}"
    );
}

/// A frame source the replay must never ask: it is refused before the first frame.
struct Never;

impl FrameSource for Never {
    fn describe(&self) -> String {
        "never".into()
    }
    fn frame(&mut self, index: usize, _: [f64; 3]) -> Result<Vec<Vec<u8>>, SourceError> {
        panic!("frame {index} asked of a refused session")
    }
    fn truth(&mut self, index: usize, _: [f64; 3]) -> Result<&CtVolume, SourceError> {
        panic!("truth {index} asked of a refused session")
    }
}

#[test]
fn the_replay_refuses_each_mismatched_input_before_the_first_frame() {
    for case in Mismatch::ALL {
        let (dir, config, values) = session(case);
        let r = replay::run(
            "load check",
            &config,
            &mut Never,
            &[0.0],
            &[[0.0; 3]],
            &ReplayOptions::default(),
        );
        match r {
            Err(ReplayError::Session(message)) => names_both(case, &message, &values),
            Err(e) => panic!("{case:?}: refused for another reason: {e}"),
            Ok(_) => panic!("{case:?}: the replay ran"),
        }
        assert!(!audit_log(dir.path()).exists(), "{case:?}: no audit log");
    }
}

#[test]
fn the_gates_chain_refuses_each_mismatched_input_before_anything_sends() {
    for case in Mismatch::ALL {
        let (dir, config, values) = session(case);
        let controller = UdpSocket::bind("127.0.0.1:0").unwrap();
        controller
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // as the gate builds its chain: load (every check), then link, audit and pipeline
        let refused = match ChainBuilder::load(&config) {
            Err(e) => e,
            Ok(builder) => {
                let _chain = gate_chain(builder, controller.local_addr().unwrap());
                panic!("{case:?}: the gate's chain started")
            }
        };
        eprintln!("{case:?}: {refused}");
        names_both(case, &refused.to_string(), &values);
        let typed = matches!(
            (&refused, case),
            (
                ChainError::Session(SessionError::Mismatch(InputMismatch::FrameOfReference { .. })),
                Mismatch::PlanFrameOfReference | Mismatch::StructureSetFrameOfReference
            ) | (
                ChainError::Session(SessionError::Mismatch(InputMismatch::PatientId { .. })),
                Mismatch::PlanPatient
            ) | (
                ChainError::Session(SessionError::Mismatch(InputMismatch::IsocenterOutsideCt { .. })),
                Mismatch::IsocenterOutsideCt
            ) | (
                ChainError::Session(SessionError::Mismatch(InputMismatch::StructureSet { .. })),
                Mismatch::PlanStructureSet
            )
        );
        assert!(typed, "{case:?}: {refused:?}");
        assert!(!audit_log(dir.path()).exists(), "{case:?}: no audit log");
        let mut buf = [0u8; 2048];
        assert!(
            controller.recv_from(&mut buf).is_err(),
            "{case:?}: a datagram reached the controller"
        );
    }
}

/// The real inputs pass every check and the chain starts, so the refusals above are the
/// edits', not the loader's.
#[test]
fn the_untouched_inputs_pass_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::rig::write_session(
        dir.path(),
        "",
        "",
        "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\n",
    );
    let builder = ChainBuilder::load(&config).unwrap_or_else(|e| panic!("{e}"));
    assert!(!builder.session().plan_warnings.is_empty());
}

/// A configuration whose `planning.patient_id` (the patient every frame must name) is not the
/// planning data's patient is refused on load, naming both IDs.
#[test]
fn a_configured_patient_other_than_the_datas_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::rig::write_session(
        dir.path(),
        "",
        "",
        "[source]\nkind = \"scp\"\nbind = \"127.0.0.1:0\"\n",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("patient_id = \"STS_001\""), "{text}");
    std::fs::write(
        &config,
        text.replace("patient_id = \"STS_001\"", "patient_id = \"STS_999\""),
    )
    .unwrap();
    let refused = match ChainBuilder::load(&config) {
        Err(e) => e,
        Ok(_) => panic!("a session for STS_999 loaded STS_001's data"),
    };
    let message = refused.to_string();
    assert!(
        matches!(
            refused,
            ChainError::Session(SessionError::Mismatch(InputMismatch::ConfiguredPatientId { .. }))
        ),
        "{refused:?}"
    );
    assert!(
        message.contains("STS_999") && message.contains("STS_001"),
        "{message}"
    );
    assert!(!audit_log(dir.path()).exists());
}
