//! What the people at the delivery desk may do to a running session: acknowledge a hold,
//! reset the jump reference (after a real jump the limit holds every frame until someone
//! who has looked at the patient says the new position is the reference), restart tracking
//! (both), end the session. Every action is written to the audit log by the link stage,
//! which owns it, with the time and the operator's name; the adapt stage picks a reset up
//! at its next frame from one atomic counter, so the frame path takes no lock and no
//! allocation for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// The audit log's link-event code for an operator action (codes below 100 are the hold
/// reasons and 0 the link's own notes).
pub const OPERATOR_ACTION_CODE: u16 = 200;

/// An operator's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// The operator has seen the hold (on record; the beam stays held until a frame is
    /// corrected).
    AcknowledgeHold,
    /// The next frame is not checked for a jump against the last corrected one.
    ResetJumpReference,
    /// Acknowledge and reset the jump reference: tracking resumes with the next good frame.
    RestartTracking,
    /// End the session cleanly (final HOLD, audit log closed), as SIGTERM does.
    EndSession,
}

impl OperatorAction {
    /// Its name on the console and in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            OperatorAction::AcknowledgeHold => "acknowledge hold",
            OperatorAction::ResetJumpReference => "reset jump reference",
            OperatorAction::RestartTracking => "restart tracking",
            OperatorAction::EndSession => "end session",
        }
    }

    /// Parses `acknowledge_hold`, `reset_jump_reference`, `restart_tracking`, `end_session`.
    pub fn parse(s: &str) -> Option<OperatorAction> {
        Some(match s {
            "acknowledge_hold" => OperatorAction::AcknowledgeHold,
            "reset_jump_reference" => OperatorAction::ResetJumpReference,
            "restart_tracking" => OperatorAction::RestartTracking,
            "end_session" => OperatorAction::EndSession,
            _ => return None,
        })
    }
}

/// An action on its way to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    /// When it was taken, ns since the UNIX epoch.
    pub unix_ns: u64,
    /// What.
    pub action: OperatorAction,
    /// Who (the name given at login).
    pub operator: String,
}

/// Why an action was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperatorError {
    /// The operator name is empty or not printable.
    #[error("an operator name (printable, 1–64 characters) is required")]
    BadName,
    /// Actions arrive faster than the link stage audits them.
    #[error("too many actions waiting to be audited; try again")]
    Busy,
    /// The session is over.
    #[error("the session has ended")]
    Ended,
}

/// Shared between the handles, the adapt stage and the link stage.
#[derive(Debug)]
pub(crate) struct OperatorState {
    reset_jump: AtomicU64,
    end_requested: AtomicBool,
    tx: Sender<OperatorRecord>,
    pub(crate) rx: Receiver<OperatorRecord>,
}

impl Default for OperatorState {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(64);
        OperatorState {
            reset_jump: AtomicU64::new(0),
            end_requested: AtomicBool::new(false),
            tx,
            rx,
        }
    }
}

impl OperatorState {
    /// How many jump-reference resets were asked for so far.
    pub(crate) fn jump_resets(&self) -> u64 {
        self.reset_jump.load(Ordering::Acquire)
    }
}

/// A handle for the console (cloneable; any thread).
#[derive(Debug, Clone)]
pub struct Operator {
    pub(crate) state: Arc<super::Shared>,
}

impl Operator {
    /// Takes `action` for `operator`: queued for the audit log, then applied.
    pub fn act(&self, action: OperatorAction, operator: &str) -> Result<(), OperatorError> {
        let name = operator.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(OperatorError::BadName);
        }
        let s = &self.state;
        if s.stop.load(Ordering::Acquire) {
            return Err(OperatorError::Ended);
        }
        let record = OperatorRecord {
            unix_ns: crate::link::protocol::unix_now_ns(),
            action,
            operator: name.to_owned(),
        };
        // on record first: an action that cannot be audited is not taken
        s.operator.tx.try_send(record).map_err(|e| match e {
            TrySendError::Full(_) => OperatorError::Busy,
            TrySendError::Disconnected(_) => OperatorError::Ended,
        })?;
        match action {
            OperatorAction::ResetJumpReference | OperatorAction::RestartTracking => {
                s.operator.reset_jump.fetch_add(1, Ordering::AcqRel);
            }
            OperatorAction::EndSession => s.operator.end_requested.store(true, Ordering::Release),
            OperatorAction::AcknowledgeHold => {}
        }
        Ok(())
    }

    /// Whether an operator asked to end the session (the daemon's loop stops on it).
    pub fn end_requested(&self) -> bool {
        self.state.operator.end_requested.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_by_name_and_names_are_checked() {
        for a in [
            OperatorAction::AcknowledgeHold,
            OperatorAction::ResetJumpReference,
            OperatorAction::RestartTracking,
            OperatorAction::EndSession,
        ] {
            assert_eq!(OperatorAction::parse(&a.name().replace(' ', "_")), Some(a));
        }
        assert_eq!(OperatorAction::parse("fire"), None);
        let op = Operator {
            state: Arc::new(super::super::Shared::default()),
        };
        assert_eq!(
            op.act(OperatorAction::AcknowledgeHold, "  "),
            Err(OperatorError::BadName)
        );
        assert_eq!(
            op.act(OperatorAction::AcknowledgeHold, "a\nb"),
            Err(OperatorError::BadName)
        );
        op.act(OperatorAction::RestartTracking, "Dr. Ada").unwrap();
        assert_eq!(op.state.operator.jump_resets(), 1);
        let r = op.state.operator.rx.try_recv().unwrap();
        assert_eq!(
            (r.action, r.operator.as_str()),
            (OperatorAction::RestartTracking, "Dr. Ada")
        );
        assert!(!op.end_requested());
        op.act(OperatorAction::EndSession, "Dr. Ada").unwrap();
        assert!(op.end_requested());
    }
}
