//! The ingest stage: the newest complete frame from the sources is decoded into a pooled
//! volume and checked against the session (patient, Frame of Reference, size); with a setup
//! registration it is then placed in the planning CT's coordinates. Decoding
//! uses dicom-rs, which allocates per object; the allocation-free path starts when a
//! decoded frame leaves this stage.
//!
//! Objects the sources announce before their frame is complete ([`SourceEvent::Object`])
//! are decoded early into a pooled buffer set aside for that frame, in the layout of the
//! last decoded frame; when the frame completes, the full decode re-checks every header and
//! stores only what early decoding did not place. The latency clock starts at completion,
//! so early decoding takes most of a frame's decode off the clock.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::session::Session;
use super::stages::{PoolRx, Retired, StageIo};
use super::telemetry::Counters;
use super::work::{Outcome, Ticket, Work};
use crate::correction::{HoldReason, RejectReason};
use crate::dicom::ct::{AcquisitionSpan, CtError, IngestOptions, SeriesDecoder};
use crate::source::{FrameKey, ObjectBytes, RawFrame, SourceEvent};

/// A frame being decoded early: its key and the work buffer set aside for it.
struct Early {
    key: FrameKey,
    work: Box<Work>,
}

/// Wall-clock ns since the UNIX epoch of a monotonic instant in the past (one clock for
/// the pipeline, the link and the audit log: see [`crate::correction::unix_ns_of`]).
pub use crate::correction::unix_ns_of;

/// How a frame that does not decode is classified: a header of another modality is not a
/// CT; objects disagreeing with each other are an inconsistent frame; the rest is corrupt.
fn reject_reason_of(e: &CtError) -> RejectReason {
    match e {
        CtError::WrongModality { .. } => RejectReason::NotCt,
        CtError::MixedSeries { .. }
        | CtError::MixedFrameOfReference { .. }
        | CtError::MixedOrientation { .. }
        | CtError::MixedGeometry { .. }
        | CtError::DuplicateSlice { .. }
        | CtError::MissingSlice { .. }
        | CtError::UnevenSpacing { .. }
        | CtError::EmptySeries { .. } => RejectReason::InconsistentFrame,
        _ => RejectReason::Unparseable,
    }
}

/// Largest spread of a frame's slice acquisition instants: a volume is acquired over an
/// interval (an in-room CT takes well under a second per frame), but slices seconds apart
/// are not one moment of the anatomy.
pub const MAX_ACQUISITION_SPREAD: Duration = Duration::from_secs(5);

/// How far a frame's acquisition may lie after its completion on our clock (clocks of two
/// NTP-synchronised machines differ by milliseconds). Further is a wrong clock or a local
/// time read as UTC: such a frame would look young and its corrections outlive the anatomy.
pub const MAX_ACQUISITION_AHEAD: Duration = Duration::from_secs(1);

/// Sets the ticket's acquisition instant from its slices' (the mean of the earliest and the
/// latest: the middle of the interval the volume was acquired over), and with it how long
/// its corrections are valid; never later than the frame's completion (a frame cannot be
/// acquired after it arrived, so clock skew never lengthens validity). A frame whose slices
/// say nothing keeps validity from completion. Refuses (with why) a frame where only some
/// slices carry a time, whose slices lie more than [`MAX_ACQUISITION_SPREAD`] apart, or
/// that was acquired more than [`MAX_ACQUISITION_AHEAD`] after its completion.
fn stamp_acquisition(
    ticket: &mut Ticket,
    span: Option<AcquisitionSpan>,
    validity: Duration,
) -> Result<(), AcquisitionFault> {
    let Some(span) = span else { return Ok(()) };
    if span.inputs_timed < span.inputs {
        return Err(AcquisitionFault::PartlyTimed {
            timed: span.inputs_timed,
            inputs: span.inputs,
        });
    }
    let spread_ns = span.latest_unix_ns.abs_diff(span.earliest_unix_ns);
    if spread_ns > MAX_ACQUISITION_SPREAD.as_nanos() as u64 {
        return Err(AcquisitionFault::Spread { spread_ns });
    }
    let mid = span.earliest_unix_ns.saturating_add((spread_ns / 2) as i64);
    // an instant before 1970 is older than any validity: 0 says as much
    let mid = u64::try_from(mid).unwrap_or(0);
    let ahead_ns = mid.saturating_sub(ticket.complete_unix_ns);
    if ahead_ns > MAX_ACQUISITION_AHEAD.as_nanos() as u64 {
        return Err(AcquisitionFault::Ahead { ahead_ns });
    }
    ticket.set_acquired(mid.min(ticket.complete_unix_ns), validity);
    Ok(())
}

/// Why a frame's slices give it no one acquisition instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcquisitionFault {
    /// Some objects carry a time, others none.
    PartlyTimed { timed: usize, inputs: usize },
    /// The slices lie too far apart in time.
    Spread { spread_ns: u64 },
    /// Acquired after the frame was complete, by more than clocks differ.
    Ahead { ahead_ns: u64 },
}

impl AcquisitionFault {
    /// An unknown or impossible time is a frame that does not hang together; a time in the
    /// future is an attribute whose value cannot be used.
    fn reject_reason(self) -> RejectReason {
        match self {
            AcquisitionFault::PartlyTimed { .. } | AcquisitionFault::Spread { .. } => {
                RejectReason::InconsistentFrame
            }
            AcquisitionFault::Ahead { .. } => RejectReason::Unparseable,
        }
    }
}

impl std::fmt::Display for AcquisitionFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquisitionFault::PartlyTimed { timed, inputs } => write!(
                f,
                "{timed} of the frame's {inputs} objects carry an acquisition time: the frame's is unknown"
            ),
            AcquisitionFault::Spread { spread_ns } => write!(
                f,
                "the frame's slices were acquired {:.3} s apart, over the {} s of one moment of the anatomy",
                *spread_ns as f64 / 1e9,
                MAX_ACQUISITION_SPREAD.as_secs()
            ),
            AcquisitionFault::Ahead { ahead_ns } => write!(
                f,
                "acquired {:.3} s after the frame was complete by this clock: the scanner's clock or UTC offset is wrong",
                *ahead_ns as f64 / 1e9
            ),
        }
    }
}

/// Runs until the sources close or the pipeline stops.
pub fn run(mut io: StageIo, events: Receiver<SourceEvent>, pool: PoolRx, session: Arc<Session>) {
    // a frame's acquisition time decides how long its corrections are valid: a malformed one
    // refuses the frame
    let mut decoder = SeriesDecoder::new(IngestOptions {
        strict_acquisition_time: true,
        ..IngestOptions::default()
    });
    let mut early: Option<Early> = None;
    let mut deferred: Vec<(FrameKey, ObjectBytes)> = Vec::new();
    let mut batch: Vec<SourceEvent> = Vec::new();
    // With a setup registration the session's Frame of Reference is known before the first
    // frame, and frames are mapped from the room's coordinates into the planning CT's.
    let mut session_for: Option<String> = session
        .options
        .room_setup
        .as_ref()
        .map(|r| r.room_frame_of_reference_uid.clone());
    let room = session
        .options
        .room_setup
        .as_ref()
        .map(|r| r.planning_to_room.inverse());
    let mut next_id: u64 = 1;
    let opts = &session.options;
    let mut new_ticket = |complete_at: Instant| {
        let t = Ticket::new(
            next_id,
            complete_at,
            unix_ns_of(complete_at),
            opts.budget,
            opts.validity,
        );
        next_id += 1;
        t
    };
    io.set_up();
    loop {
        if io.shared.stop.load(Ordering::Acquire) {
            // nothing lost: frames the sources delivered but we never started are audited
            for event in events.try_iter() {
                Counters::bump(&io.shared.counters.entered);
                let (at, origin) = match event {
                    SourceEvent::Frame(f) => (f.complete_at, f.origin),
                    SourceEvent::Rejected { at, origin, .. } => (at, origin),
                    SourceEvent::Object { .. } => continue,
                };
                let mut t = new_ticket(at);
                t.outcome = Outcome::Held(HoldReason::Shutdown);
                io.retire.send(Retired::Bare {
                    ticket: Box::new(t),
                    origin,
                    detail: "pipeline stopped before ingest".into(),
                });
            }
            return;
        }
        // a frame or slice wakes the receive at once; the timeout only bounds the stop check
        let first = match events.recv_timeout(super::stages::IDLE_WAIT) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // freshest frame wins: of everything waiting, only the newest frame is decoded. An
        // announced object whose frame completes in this batch is left to that frame's decode
        // (decoding it early now would only put it on the clock one slice at a time); objects
        // announced after the newest frame are decoded early once that frame is on its way.
        batch.clear();
        batch.extend(std::iter::once(first).chain(events.try_iter()));
        let last_frame = batch.iter().rposition(|e| matches!(e, SourceEvent::Frame(_)));
        let completing: Vec<FrameKey> = batch
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Frame(f) => Some(f.key.clone()),
                _ => None,
            })
            .collect();
        let mut newest: Option<RawFrame> = None;
        for (index, event) in batch.drain(..).enumerate() {
            if let SourceEvent::Object { key, object } = event {
                if completing.contains(&key) {
                    continue;
                }
                if last_frame.is_some_and(|l| index > l) {
                    deferred.push((key, object));
                } else {
                    decode_early(&mut early, &mut decoder, &pool, key, &object);
                }
                continue;
            }
            Counters::bump(&io.shared.counters.entered);
            match event {
                SourceEvent::Frame(f) => {
                    if let Some(old) = newest.replace(f) {
                        let mut t = new_ticket(old.complete_at);
                        t.outcome = Outcome::Dropped;
                        Counters::bump(&io.shared.counters.dropped);
                        io.retire.send(Retired::Bare {
                            ticket: Box::new(t),
                            origin: old.origin,
                            detail: "overtaken by a newer frame before ingest".into(),
                        });
                    }
                }
                SourceEvent::Object { .. } => unreachable!("handled above"),
                SourceEvent::Rejected {
                    origin,
                    why,
                    reason,
                    at,
                    ..
                } => {
                    let mut t = new_ticket(at);
                    t.outcome = Outcome::Rejected(why);
                    io.retire.send(Retired::Bare {
                        ticket: Box::new(t),
                        origin,
                        detail: reason,
                    });
                }
            }
        }
        let Some(frame) = newest else { continue };
        let ticket = new_ticket(frame.complete_at);
        // the buffer decoded early for this frame, or (early work for another frame is
        // abandoned: its buffer serves this one) any buffer
        let set_aside = early.take().map(|e| {
            if e.key != frame.key {
                decoder.end_early();
            }
            Ok(e.work)
        });
        let mut w = match set_aside.unwrap_or_else(|| pool.0.recv_timeout(opts.budget)) {
            Ok(w) => w,
            Err(_) => {
                let mut t = ticket;
                t.outcome = Outcome::Held(HoldReason::InternalFault);
                Counters::bump(&io.shared.counters.pool_exhausted);
                io.retire.send(Retired::Bare {
                    ticket: Box::new(t),
                    origin: frame.origin,
                    detail: "no free frame buffer (every one in flight)".into(),
                });
                continue;
            }
        };
        w.reset(ticket, &frame.origin);
        let voxels_limit = opts.max_frame_voxels;
        let shared = Arc::clone(&io.shared);
        io.process(w, |w| {
            let slices: Vec<&[u8]> = frame.objects.iter().map(|o| o.as_slice()).collect();
            let decoded = decoder.decode_into(&slices, &mut w.volume);
            shared
                .counters
                .slices_decoded_early
                .fetch_add(decoder.last_early_slices() as u64, Ordering::Relaxed);
            match decoded {
                Err(e) => w.decide(
                    Outcome::Rejected(reject_reason_of(&e)),
                    format_args!("frame not decodable: {e}"),
                ),
                Ok(meta) => {
                    let voxels = w.volume.grid().len();
                    if voxels > voxels_limit {
                        w.decide(
                            Outcome::Rejected(RejectReason::OverLimit),
                            format_args!(
                                "frame has {voxels} voxels, over resources.max_frame_voxels ({voxels_limit})"
                            ),
                        );
                    } else if meta.patient_id.as_deref() != Some(opts.patient_id.as_str()) {
                        w.decide(
                            Outcome::Rejected(RejectReason::WrongPatient),
                            format_args!(
                                "frame Patient ID {:?} is not the plan's {:?}",
                                meta.patient_id.as_deref().unwrap_or(""),
                                opts.patient_id
                            ),
                        );
                    } else {
                        match (&session_for, &room) {
                            (Some(f), _) if *f != meta.frame_of_reference_uid => w.decide(
                                Outcome::Rejected(RejectReason::FrameOfReferenceChanged),
                                format_args!(
                                    "frame Frame of Reference {} is not this session's {f}{}",
                                    meta.frame_of_reference_uid,
                                    if room.is_some() {
                                        " (the in-room one of the setup registration)"
                                    } else {
                                        ""
                                    }
                                ),
                            ),
                            (None, _) => session_for = Some(meta.frame_of_reference_uid),
                            (Some(_), None) => {}
                            // the rest of the chain works in planning coordinates
                            (Some(_), Some(room_to_planning)) => w.volume.map_patient_space(room_to_planning),
                        }
                    }
                    // (after the identity checks: a wrong patient is the finding that matters)
                    if !w.ticket.outcome.is_decided() {
                        if let Err(why) = stamp_acquisition(&mut w.ticket, meta.acquisition, opts.validity) {
                            w.decide(Outcome::Rejected(why.reject_reason()), format_args!("{why}"));
                        }
                    }
                    let now = Instant::now();
                    if !w.ticket.outcome.is_decided() && w.ticket.is_void_at(now) {
                        let t = w.ticket;
                        let age_ms = t.unix_ns_at(now).saturating_sub(t.acquired_unix_ns.unwrap_or(0)) / 1_000_000;
                        w.decide(
                            Outcome::Held(HoldReason::DeadlineMissed),
                            format_args!(
                                "acquired {age_ms} ms before ingest: its corrections would already be void (timing.validity_ms {})",
                                opts.validity.as_millis()
                            ),
                        );
                    }
                }
            }
        });
        for (key, object) in deferred.drain(..) {
            decode_early(&mut early, &mut decoder, &pool, key, &object);
        }
    }
}

/// Decodes one announced object early, setting a buffer aside for its frame first. A new
/// frame's object abandons early work on another frame; with no free buffer, or no layout to
/// predict from yet, the object waits for its frame like any other.
fn decode_early(
    early: &mut Option<Early>,
    decoder: &mut SeriesDecoder,
    pool: &PoolRx,
    key: FrameKey,
    object: &ObjectBytes,
) {
    match early {
        Some(e) if e.key == key => {}
        _ => {
            let work = match early.take() {
                Some(e) => e.work,
                None => match pool.0.try_recv() {
                    Ok(w) => w,
                    Err(_) => return,
                },
            };
            let e = early.insert(Early { key, work });
            if !decoder.begin_early(&mut e.work.volume) {
                return;
            }
        }
    }
    if let Some(e) = early {
        decoder.decode_early(object, &mut e.work.volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn span(earliest: i64, latest: i64, timed: usize, inputs: usize) -> Option<AcquisitionSpan> {
        Some(AcquisitionSpan {
            earliest_unix_ns: earliest,
            latest_unix_ns: latest,
            inputs_timed: timed,
            inputs,
        })
    }

    fn ticket(complete_unix_ns: u64) -> Ticket {
        Ticket::new(
            1,
            Instant::now(),
            complete_unix_ns,
            Duration::from_millis(50),
            Duration::from_millis(100),
        )
    }

    #[test]
    fn a_frame_is_acquired_in_the_middle_of_its_slices_and_valid_from_then() {
        let validity = Duration::from_millis(500);
        let complete = 1_000 * S;
        let mut t = ticket(complete);
        // slices over 0.4 s ending 0.1 s before completion: the middle is 0.3 s before
        let e = (complete - 500_000_000) as i64;
        stamp_acquisition(&mut t, span(e, e + 400_000_000, 40, 40), validity).unwrap();
        assert_eq!(t.acquired_unix_ns, Some(complete - 300_000_000));
        assert_eq!(t.valid_until_unix_ns, complete + 200_000_000);
        // no times at all: validity from completion, as before
        let mut t = ticket(complete);
        stamp_acquisition(&mut t, None, validity).unwrap();
        assert_eq!(
            (t.acquired_unix_ns, t.valid_until_unix_ns),
            (None, complete + 100_000_000)
        );
        // before 1970: as old as can be
        let mut t = ticket(complete);
        stamp_acquisition(&mut t, span(-5, -5, 1, 1), validity).unwrap();
        assert_eq!(t.acquired_unix_ns, Some(0));
        assert!(t.is_void_at(t.complete_at));
    }

    #[test]
    fn partly_timed_spread_out_or_future_frames_are_refused_and_skew_never_lengthens_validity() {
        let validity = Duration::from_millis(500);
        let complete = 1_000 * S;
        let c = complete as i64;
        let refuse = |s| {
            let mut t = ticket(complete);
            let e = stamp_acquisition(&mut t, s, validity).unwrap_err();
            assert_eq!(t.acquired_unix_ns, None, "a refused frame keeps no time");
            (e.reject_reason(), e.to_string())
        };
        let (why, text) = refuse(span(c, c, 3, 4));
        assert_eq!(why, RejectReason::InconsistentFrame);
        assert!(text.contains("3 of the frame's 4"), "{text}");
        let (why, text) = refuse(span(c - 6 * S as i64, c, 4, 4));
        assert_eq!(why, RejectReason::InconsistentFrame);
        assert!(text.contains("6.000 s apart"), "{text}");
        // 5 s apart is still one frame
        stamp_acquisition(&mut ticket(complete), span(c - 5 * S as i64, c, 4, 4), validity).unwrap();
        let (why, text) = refuse(span(c + 3600 * S as i64, c + 3600 * S as i64, 4, 4));
        assert_eq!(why, RejectReason::Unparseable);
        assert!(text.contains("3600.000 s after"), "{text}");
        // within the skew allowed: taken as acquired at completion, not later
        let mut t = ticket(complete);
        stamp_acquisition(&mut t, span(c + 900_000_000, c + 900_000_000, 4, 4), validity).unwrap();
        assert_eq!(t.acquired_unix_ns, Some(complete));
        assert_eq!(t.valid_until_unix_ns, complete + 500_000_000);
    }
}
