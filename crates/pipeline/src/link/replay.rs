//! Receiver-side replay, reordering and freshness guard, applied to authenticated headers.
//!
//! Rules (see `docs/protocol.md`, "Replay rules"):
//! - Freshness: a message sent more than `max_age_ns` before the receiver's clock, or more
//!   than `max_future_ns` after it, is rejected. This bounds what a captured message is
//!   worth even to a receiver that just restarted and remembers nothing.
//! - Within the current session the sequence number must strictly increase. No window:
//!   the link is loopback or a dedicated segment where reordering is rare, and a reordered
//!   correction is stale by the time it arrives; accepting it could re-apply an older frame.
//! - A different session id is admitted only (a) by a message type that cannot turn the
//!   beam on (HEARTBEAT or HOLD towards the controller; ACK towards the sender), and (b)
//!   when that message was sent after the latest message of the current session. A replay
//!   of an older session's capture therefore fails (b) while the current session lives,
//!   and the freshness rule once the receiver restarted.

use super::protocol::{Header, MessageType};

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Sent too long ago.
    #[error(
        "message from session {session_id:#x} seq {sequence} is {age_ns} ns old (limit {max_age_ns} ns)"
    )]
    Stale {
        /// Session.
        session_id: u64,
        /// Sequence.
        sequence: u64,
        /// How old.
        age_ns: u64,
        /// The limit.
        max_age_ns: u64,
    },
    /// Sent in the future by the receiver's clock: clocks disagree beyond the limit.
    #[error("message from session {session_id:#x} seq {sequence} is {ahead_ns} ns in the future (limit {max_future_ns} ns); check clock sync")]
    FromFuture {
        /// Session.
        session_id: u64,
        /// Sequence.
        sequence: u64,
        /// How far ahead.
        ahead_ns: u64,
        /// The limit.
        max_future_ns: u64,
    },
    /// Sequence not above the highest seen in this session: replayed or reordered.
    #[error(
        "session {session_id:#x}: sequence {sequence} is not above {highest} (replayed or out of order)"
    )]
    Replayed {
        /// Session.
        session_id: u64,
        /// Sequence received.
        sequence: u64,
        /// Highest accepted.
        highest: u64,
    },
    /// A new session tried to start with a message type that may not start one.
    #[error("session {session_id:#x} cannot start with {message_type:?}")]
    NotAdmitted {
        /// Session.
        session_id: u64,
        /// The type.
        message_type: MessageType,
    },
    /// A different session whose message predates the current session's latest: an old
    /// session's capture, or a lagging predecessor.
    #[error("session {session_id:#x} sent at {sent_unix_ns} ns predates current session's latest ({current_latest_ns} ns)")]
    OldSession {
        /// Session.
        session_id: u64,
        /// Its send time.
        sent_unix_ns: u64,
        /// The current session's latest send time.
        current_latest_ns: u64,
    },
}

/// What the guard did with an accepted header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The current session continues.
    Continued,
    /// A new session replaced `previous` (None: the first session heard).
    NewSession {
        /// The session replaced.
        previous: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Session {
    id: u64,
    highest_sequence: u64,
    latest_sent_ns: u64,
}

/// The guard. Holds one session; allocation-free.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    current: Option<Session>,
    max_age_ns: u64,
    max_future_ns: u64,
    admit_mask: u8,
}

impl ReplayGuard {
    /// The controller's guard: sessions start with HEARTBEAT or HOLD.
    pub fn for_controller(max_age_ns: u64, max_future_ns: u64) -> Self {
        Self::admitting(
            &[MessageType::Heartbeat, MessageType::Hold],
            max_age_ns,
            max_future_ns,
        )
    }

    /// The sender's guard on ACKs: controller sessions start with ACK.
    pub fn for_sender(max_age_ns: u64, max_future_ns: u64) -> Self {
        Self::admitting(&[MessageType::Ack], max_age_ns, max_future_ns)
    }

    /// The pipeline's guard on the tracking system's surrogate stream: its sessions start
    /// (and continue) with SURROGATE samples.
    pub fn for_surrogate(max_age_ns: u64, max_future_ns: u64) -> Self {
        Self::admitting(&[MessageType::Surrogate], max_age_ns, max_future_ns)
    }

    /// A guard whose sessions may start with any of `types`.
    pub fn admitting(types: &[MessageType], max_age_ns: u64, max_future_ns: u64) -> Self {
        let admit_mask = types.iter().fold(0u8, |m, t| m | 1 << t.code());
        ReplayGuard {
            current: None,
            max_age_ns,
            max_future_ns,
            admit_mask,
        }
    }

    /// The current session id, if any.
    pub fn current_session(&self) -> Option<u64> {
        self.current.map(|s| s.id)
    }

    /// Checks `header` (already authenticated) against the rules at receiver time
    /// `now_unix_ns`; on success records it.
    pub fn check(&mut self, header: &Header, now_unix_ns: u64) -> Result<Admission, ReplayError> {
        let (session_id, sequence, sent) = (header.session_id, header.sequence, header.sent_unix_ns);
        if now_unix_ns > sent && now_unix_ns - sent > self.max_age_ns {
            return Err(ReplayError::Stale {
                session_id,
                sequence,
                age_ns: now_unix_ns - sent,
                max_age_ns: self.max_age_ns,
            });
        }
        if sent > now_unix_ns && sent - now_unix_ns > self.max_future_ns {
            return Err(ReplayError::FromFuture {
                session_id,
                sequence,
                ahead_ns: sent - now_unix_ns,
                max_future_ns: self.max_future_ns,
            });
        }
        match &mut self.current {
            Some(s) if s.id == session_id => {
                if sequence <= s.highest_sequence {
                    return Err(ReplayError::Replayed {
                        session_id,
                        sequence,
                        highest: s.highest_sequence,
                    });
                }
                s.highest_sequence = sequence;
                s.latest_sent_ns = s.latest_sent_ns.max(sent);
                Ok(Admission::Continued)
            }
            current => {
                if self.admit_mask & (1 << header.message_type.code()) == 0 {
                    return Err(ReplayError::NotAdmitted {
                        session_id,
                        message_type: header.message_type,
                    });
                }
                let previous = current.map(|s| s.id);
                if let Some(s) = current {
                    if sent <= s.latest_sent_ns {
                        return Err(ReplayError::OldSession {
                            session_id,
                            sent_unix_ns: sent,
                            current_latest_ns: s.latest_sent_ns,
                        });
                    }
                }
                *current = Some(Session {
                    id: session_id,
                    highest_sequence: sequence,
                    latest_sent_ns: sent,
                });
                Ok(Admission::NewSession { previous })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ty: MessageType, session_id: u64, sequence: u64, sent_unix_ns: u64) -> Header {
        Header {
            message_type: ty,
            session_id,
            sequence,
            sent_unix_ns,
        }
    }

    #[test]
    fn rules_table() {
        use MessageType::*;
        let now = 1_000_000_000_000;
        let mut g = ReplayGuard::for_controller(500_000_000, 50_000_000);
        // (header, expected ok?) applied in order to one guard.
        let steps: [(Header, Result<Admission, &str>); 10] = [
            (h(Corrections, 1, 1, now), Err("NotAdmitted")),
            (h(Heartbeat, 1, 1, now - 600_000_000), Err("Stale")),
            (h(Heartbeat, 1, 1, now + 60_000_000), Err("FromFuture")),
            (
                h(Heartbeat, 1, 1, now),
                Ok(Admission::NewSession { previous: None }),
            ),
            (h(Corrections, 1, 2, now + 1), Ok(Admission::Continued)),
            (h(Corrections, 1, 2, now + 2), Err("Replayed")),
            (h(Corrections, 1, 1, now + 3), Err("Replayed")),
            (h(Heartbeat, 2, 1, now), Err("OldSession")),
            (h(Resume, 2, 1, now + 10), Err("NotAdmitted")),
            (
                h(Hold, 2, 1, now + 10),
                Ok(Admission::NewSession { previous: Some(1) }),
            ),
        ];
        for (k, (hdr, want)) in steps.iter().enumerate() {
            let got = g.check(hdr, now);
            match (got, want) {
                (Ok(a), Ok(b)) => assert_eq!(a, *b, "step {k}"),
                (Err(e), Err(name)) => assert!(format!("{e:?}").starts_with(name), "step {k}: {e:?}"),
                (got, want) => panic!("step {k}: got {got:?}, want {want:?}"),
            }
        }
        // The old session is gone for good.
        assert!(matches!(
            g.check(&h(Corrections, 1, 99, now + 20), now),
            Err(ReplayError::NotAdmitted { .. })
        ));
    }
}
