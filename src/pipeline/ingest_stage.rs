//! The ingest stage: the newest complete frame from the sources is decoded into a pooled
//! volume and checked against the session (patient, Frame of Reference, size). Decoding
//! uses dicom-rs, which allocates per object; the allocation-free path starts when a
//! decoded frame leaves this stage.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::session::Session;
use super::stages::{PoolRx, Retired, StageIo};
use super::telemetry::Counters;
use super::work::{Outcome, Ticket};
use crate::correction::HoldReason;
use crate::dicom::ct::{IngestOptions, SeriesDecoder};
use crate::source::{RawFrame, SourceEvent};

/// Wall-clock ns since the UNIX epoch of a monotonic instant in the past.
pub fn unix_ns_of(at: Instant) -> u64 {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    now_unix.saturating_sub(at.elapsed().as_nanos() as u64)
}

/// Runs until the sources close or the pipeline stops.
pub fn run(mut io: StageIo, events: Receiver<SourceEvent>, pool: PoolRx, session: Arc<Session>) {
    let mut decoder = SeriesDecoder::new(IngestOptions::default());
    let mut session_for: Option<String> = None;
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
    loop {
        if io.shared.stop.load(Ordering::Acquire) {
            // nothing lost: frames the sources delivered but we never started are audited
            for event in events.try_iter() {
                Counters::bump(&io.shared.counters.entered);
                let (at, origin) = match event {
                    SourceEvent::Frame(f) => (f.complete_at, f.origin),
                    SourceEvent::Rejected { at, origin, .. } => (at, origin),
                };
                let mut t = new_ticket(at);
                t.outcome = Outcome::Held(HoldReason::Shutdown);
                io.retire.send(Retired::Bare {
                    ticket: t,
                    origin,
                    detail: "pipeline stopped before ingest".into(),
                });
            }
            return;
        }
        let first = match events.recv_timeout(Duration::from_millis(5)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // freshest frame wins: of everything waiting, only the newest frame is decoded
        let mut newest: Option<RawFrame> = None;
        for event in std::iter::once(first).chain(events.try_iter()) {
            Counters::bump(&io.shared.counters.entered);
            match event {
                SourceEvent::Frame(f) => {
                    if let Some(old) = newest.replace(f) {
                        let mut t = new_ticket(old.complete_at);
                        t.outcome = Outcome::Dropped;
                        Counters::bump(&io.shared.counters.dropped);
                        io.retire.send(Retired::Bare {
                            ticket: t,
                            origin: old.origin,
                            detail: "overtaken by a newer frame before ingest".into(),
                        });
                    }
                }
                SourceEvent::Rejected {
                    origin, reason, at, ..
                } => {
                    let mut t = new_ticket(at);
                    t.outcome = Outcome::Rejected(HoldReason::CorruptFrame);
                    io.retire.send(Retired::Bare {
                        ticket: t,
                        origin,
                        detail: reason,
                    });
                }
            }
        }
        let Some(frame) = newest else { continue };
        let ticket = new_ticket(frame.complete_at);
        let mut w = match pool.0.recv_timeout(opts.budget) {
            Ok(w) => w,
            Err(_) => {
                let mut t = ticket;
                t.outcome = Outcome::Held(HoldReason::InternalFault);
                Counters::bump(&io.shared.counters.pool_exhausted);
                io.retire.send(Retired::Bare {
                    ticket: t,
                    origin: frame.origin,
                    detail: "no free frame buffer (every one in flight)".into(),
                });
                continue;
            }
        };
        w.reset(ticket, &frame.origin);
        let voxels_limit = opts.max_frame_voxels;
        io.process(w, |w| {
            let slices: Vec<&[u8]> = frame.objects.iter().map(|o| o.as_slice()).collect();
            match decoder.decode_into(&slices, &mut w.volume) {
                Err(e) => w.decide(
                    Outcome::Rejected(HoldReason::CorruptFrame),
                    format_args!("frame not decodable: {e}"),
                ),
                Ok(meta) => {
                    let voxels = w.volume.grid().len();
                    if voxels > voxels_limit {
                        w.decide(
                            Outcome::Rejected(HoldReason::CorruptFrame),
                            format_args!(
                                "frame has {voxels} voxels, over resources.max_frame_voxels ({voxels_limit})"
                            ),
                        );
                    } else if meta.patient_id.as_deref() != Some(opts.patient_id.as_str()) {
                        w.decide(
                            Outcome::Rejected(HoldReason::WrongPatient),
                            format_args!(
                                "frame Patient ID {:?} is not the plan's {:?}",
                                meta.patient_id.as_deref().unwrap_or(""),
                                opts.patient_id
                            ),
                        );
                    } else {
                        match &session_for {
                            None => session_for = Some(meta.frame_of_reference_uid),
                            Some(f) if *f != meta.frame_of_reference_uid => w.decide(
                                Outcome::Rejected(HoldReason::FrameOfReferenceChanged),
                                format_args!(
                                    "frame Frame of Reference {} is not this session's {}",
                                    meta.frame_of_reference_uid, f
                                ),
                            ),
                            Some(_) => {}
                        }
                    }
                }
            }
        });
    }
}
