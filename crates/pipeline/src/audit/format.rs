//! The byte layout of the header and of each record kind (`docs/audit-log.md`): encoding
//! into a buffer, and decoding a payload whose checksum already matched.

use sha2::{Digest, Sha256};

use super::TargetRecord;
use super::{
    AckOutcome, AuditError, AuditRecord, ChainLink, Checkpoint, Corrections, FrameRecord, Outcome,
    SetupRecord, ACQUIRED_VERSION, CHAIN_VERSION, HEADER_LEN, KIND_ACK, KIND_CHECKPOINT, KIND_DELIVERED,
    KIND_FRAME, KIND_LINK, KIND_SESSION, KIND_SETUP, KIND_SHUTDOWN, KIND_TARGET, MAGIC, NONE_U64,
    PLAN_WARNINGS_VERSION, REJECT_REASON_VERSION, SPOT_BYTES, TARGET_VERSION, VERSION,
};
use crate::correction::{
    DeliveredSpot, HoldReason, RangeMode, RejectReason, SpotCorrection, DELIVERED_SPOT_BYTES,
};

/// SHA-256 of the spots' 20-byte encoding ([`SpotCorrection::to_le_bytes`], what a
/// digest-only record keeps).
pub fn corrections_digest(spots: &[SpotCorrection]) -> [u8; 32] {
    let mut h = Sha256::new();
    for s in spots {
        h.update(s.to_le_bytes());
    }
    h.finalize().into()
}

pub(super) fn header_bytes(session_start_unix_ns: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&session_start_unix_ns.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn put_str(b: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), AuditError> {
    let len = u16::try_from(s.len()).map_err(|_| AuditError::FieldTooLong {
        field,
        len: s.len(),
        max: u16::MAX as usize,
    })?;
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt_u64(b: &mut Vec<u8>, v: Option<u64>) {
    b.extend_from_slice(&v.unwrap_or(NONE_U64).to_le_bytes());
}

fn mode_code(m: Option<RangeMode>) -> u8 {
    m.map_or(0xFF, RangeMode::code)
}

pub(super) fn encode_frame(b: &mut Vec<u8>, f: &FrameRecord, full: bool) -> Result<(), AuditError> {
    b.push(KIND_FRAME);
    b.extend_from_slice(&f.frame_id.to_le_bytes());
    put_str(b, "origin", &f.origin)?;
    b.push(f.outcome.map_or(0xFF, Outcome::code));
    b.extend_from_slice(&f.hold_reason.map_or(0, HoldReason::code).to_le_bytes());
    b.extend_from_slice(&f.reject_reason.map_or(0, RejectReason::code).to_le_bytes());
    put_str(b, "detail", &f.detail)?;
    b.extend_from_slice(&f.arrival_unix_ns.to_le_bytes());
    b.extend_from_slice(&f.complete_unix_ns.to_le_bytes());
    put_opt_u64(b, f.acquired_unix_ns);
    put_opt_u64(b, f.latency_ns);
    for s in f.stage_ns {
        put_opt_u64(b, s);
    }
    let flags = u8::from(f.tumor_shift_mm.is_some()) | (u8::from(f.ncc.is_some()) << 1);
    b.push(flags);
    for v in f.tumor_shift_mm.unwrap_or_default() {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&f.ncc.unwrap_or(0.0).to_le_bytes());
    match &f.corrections {
        Corrections::None => b.push(0),
        Corrections::Full {
            mode,
            valid_until_unix_ns,
            spots,
        } => {
            let count = u32::try_from(spots.len()).map_err(|_| AuditError::FieldTooLong {
                field: "spots",
                len: spots.len(),
                max: u32::MAX as usize,
            })?;
            b.push(if full { 1 } else { 2 });
            b.push(mode_code(*mode));
            b.extend_from_slice(&valid_until_unix_ns.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            if full {
                for s in spots {
                    b.extend_from_slice(&s.to_le_bytes());
                }
            } else {
                b.extend_from_slice(&corrections_digest(spots));
            }
        }
        Corrections::Digest {
            mode,
            valid_until_unix_ns,
            count,
            sha256,
        } => {
            b.push(2);
            b.push(mode_code(*mode));
            b.extend_from_slice(&valid_until_unix_ns.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(sha256);
        }
    }
    Ok(())
}

/// A bounds-checked little-endian reader over a payload; `None` when it runs out.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(a)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.arr()?))
    }
    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes(self.arr()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.arr()?))
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        let v = self.u64()?;
        Some((v != NONE_U64).then_some(v))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn mode(&mut self) -> Option<Option<RangeMode>> {
        match self.u8()? {
            0xFF => Some(None),
            c => RangeMode::from_code(c).map(Some),
        }
    }
}

/// What a payload holds: an event record, or (version 5) a checkpoint.
// One per record read, moved once into the caller: boxing the common variant would cost an
// allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Body {
    /// An event record.
    Record(AuditRecord),
    /// An HMAC checkpoint.
    Checkpoint(Checkpoint),
}

/// Appends a checkpoint's kind and fields up to (not including) its MAC.
pub(super) fn encode_checkpoint_head(b: &mut Vec<u8>, interval_records: u32, closing: bool, key_id: [u8; 8]) {
    b.push(KIND_CHECKPOINT);
    b.extend_from_slice(&interval_records.to_le_bytes());
    b.push(u8::from(closing));
    b.extend_from_slice(&key_id);
}

/// Decodes a payload of a log of format `version` (frame and session-start records grew a
/// field each in 3, frame records another in 4; every payload starts with its chain link
/// from 5, and checkpoints exist from 5).
pub(super) fn decode(payload: &[u8], version: u16) -> Option<(Option<ChainLink>, Body)> {
    let mut d = Dec(payload);
    let link = if version >= CHAIN_VERSION {
        Some(ChainLink {
            seq: d.u64()?,
            prev_sha256: d.arr()?,
        })
    } else {
        None
    };
    let rec = match d.u8()? {
        KIND_CHECKPOINT if version >= CHAIN_VERSION => {
            let interval_records = d.u32()?;
            let closing = match d.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let cp = Checkpoint {
                interval_records,
                closing,
                key_id: d.arr()?,
                mac: d.arr()?,
            };
            return d.0.is_empty().then_some((link, Body::Checkpoint(cp)));
        }
        KIND_SESSION => AuditRecord::SessionStart {
            unix_ns: d.u64()?,
            config_sha256: d.arr()?,
            plan_sop_uid: d.string()?,
            plan_warnings: if version >= PLAN_WARNINGS_VERSION {
                let n = d.u16()?;
                (0..n).map(|_| d.string()).collect::<Option<_>>()?
            } else {
                Vec::new()
            },
        },
        KIND_ACK if version >= CHAIN_VERSION => AuditRecord::ControllerAck {
            unix_ns: d.u64()?,
            frame_id: d.u64()?,
            acked_sequence: d.u64()?,
            status: AckOutcome::from_code(d.u8()?)?,
            beam_on: match d.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        },
        KIND_DELIVERED if version >= CHAIN_VERSION => {
            let unix_ns = d.u64()?;
            let first_ordinal = d.u64()?;
            let n = d.u32()? as usize;
            // the count is checked against the bytes present before anything is reserved
            let raw = d.take(n.checked_mul(DELIVERED_SPOT_BYTES)?)?;
            let mut spots = Vec::with_capacity(n);
            for c in raw.chunks_exact(DELIVERED_SPOT_BYTES) {
                let mut a = [0u8; DELIVERED_SPOT_BYTES];
                a.copy_from_slice(c);
                let s = DeliveredSpot::from_le_bytes(&a);
                if !s.is_sane() {
                    return None;
                }
                spots.push(s);
            }
            AuditRecord::Delivered {
                unix_ns,
                first_ordinal,
                spots,
            }
        }
        KIND_TARGET if version >= TARGET_VERSION => {
            let frame_id = d.u64()?;
            let flags = d.u8()?;
            if flags & !3 != 0 {
                return None;
            }
            let volume_cc = d.f64()?;
            let planned_volume_cc = d.f64()?;
            let volume_change_pct = d.f64()?;
            let centroid = [d.f64()?, d.f64()?, d.f64()?];
            AuditRecord::Target(TargetRecord {
                frame_id,
                accepted: flags & 1 != 0,
                volume_cc,
                planned_volume_cc,
                volume_change_pct,
                centroid_mm: (flags & 2 != 0).then_some(centroid),
                jacobian_min: d.f64()?,
                field_max_mm: d.f64()?,
                inverse_error_mm: d.f64()?,
                similarity_ncc: d.f64()?,
                spots_total: d.u32()?,
                spots_off: {
                    let n = d.u32()? as usize;
                    // the count is checked against the bytes present before anything is reserved
                    let raw = d.take(n.checked_mul(4)?)?;
                    raw.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                },
            })
        }
        KIND_LINK => AuditRecord::Link {
            unix_ns: d.u64()?,
            code: d.u16()?,
            detail: d.string()?,
        },
        KIND_SHUTDOWN => AuditRecord::Shutdown {
            unix_ns: d.u64()?,
            reason: d.string()?,
        },
        KIND_SETUP => {
            let unix_ns = d.u64()?;
            let planning_frame_of_reference_uid = d.string()?;
            let room_frame_of_reference_uid = d.string()?;
            let mut planning_to_room = [0.0; 12];
            for v in &mut planning_to_room {
                *v = d.f64()?;
            }
            let has_sha = match d.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let sha: [u8; 32] = d.arr()?;
            AuditRecord::Setup(SetupRecord {
                unix_ns,
                planning_frame_of_reference_uid,
                room_frame_of_reference_uid,
                planning_to_room,
                registration_sha256: has_sha.then_some(sha),
            })
        }
        KIND_FRAME => {
            let frame_id = d.u64()?;
            let origin = d.string()?;
            let outcome = match d.u8()? {
                0xFF => None,
                c => Some(Outcome::from_code(c)?),
            };
            let hold_reason = match d.u16()? {
                0 => None,
                c => Some(HoldReason::from_code(c)?),
            };
            let reject_reason = if version >= REJECT_REASON_VERSION {
                match d.u16()? {
                    0 => None,
                    c => Some(RejectReason::from_code(c)?),
                }
            } else {
                None
            };
            let detail = d.string()?;
            let arrival_unix_ns = d.u64()?;
            let complete_unix_ns = d.u64()?;
            let acquired_unix_ns = if version >= ACQUIRED_VERSION {
                d.opt_u64()?
            } else {
                None
            };
            let latency_ns = d.opt_u64()?;
            let mut stage_ns = [None; 5];
            for s in &mut stage_ns {
                *s = d.opt_u64()?;
            }
            let flags = d.u8()?;
            let shift = [d.f32()?, d.f32()?, d.f32()?];
            let ncc = d.f64()?;
            let corrections = match d.u8()? {
                0 => Corrections::None,
                tag @ (1 | 2) => {
                    let mode = d.mode()?;
                    let valid_until_unix_ns = d.u64()?;
                    let count = d.u32()?;
                    if tag == 1 {
                        let bytes = d.take((count as usize).checked_mul(SPOT_BYTES)?)?;
                        let spots = bytes
                            .chunks_exact(SPOT_BYTES)
                            .map(|c| c.try_into().map(SpotCorrection::from_le_bytes))
                            .collect::<Result<Vec<_>, _>>()
                            .ok()?;
                        Corrections::Full {
                            mode,
                            valid_until_unix_ns,
                            spots,
                        }
                    } else {
                        Corrections::Digest {
                            mode,
                            valid_until_unix_ns,
                            count,
                            sha256: d.arr()?,
                        }
                    }
                }
                _ => return None,
            };
            AuditRecord::Frame(FrameRecord {
                frame_id,
                origin,
                outcome,
                hold_reason,
                reject_reason,
                detail,
                arrival_unix_ns,
                complete_unix_ns,
                acquired_unix_ns,
                latency_ns,
                stage_ns,
                tumor_shift_mm: (flags & 1 != 0).then_some(shift),
                ncc: (flags & 2 != 0).then_some(ncc),
                corrections,
            })
        }
        _ => return None,
    };
    // Trailing bytes mean the writer and reader disagree on the layout.
    d.0.is_empty().then_some((link, Body::Record(rec)))
}

/// Appends `record`'s payload (kind byte and fields) to `b`.
pub(super) fn encode_record(b: &mut Vec<u8>, record: &AuditRecord, full: bool) -> Result<(), AuditError> {
    match record {
        AuditRecord::Frame(f) => encode_frame(b, f, full)?,
        AuditRecord::SessionStart {
            unix_ns,
            config_sha256,
            plan_sop_uid,
            plan_warnings,
        } => {
            b.push(KIND_SESSION);
            b.extend_from_slice(&unix_ns.to_le_bytes());
            b.extend_from_slice(config_sha256);
            put_str(b, "plan_sop_uid", plan_sop_uid)?;
            let count = u16::try_from(plan_warnings.len()).map_err(|_| AuditError::FieldTooLong {
                field: "plan_warnings",
                len: plan_warnings.len(),
                max: u16::MAX as usize,
            })?;
            b.extend_from_slice(&count.to_le_bytes());
            for w in plan_warnings {
                put_str(b, "plan_warning", w)?;
            }
        }
        AuditRecord::Link {
            unix_ns,
            code,
            detail,
        } => {
            b.push(KIND_LINK);
            b.extend_from_slice(&unix_ns.to_le_bytes());
            b.extend_from_slice(&code.to_le_bytes());
            put_str(b, "detail", detail)?;
        }
        AuditRecord::Setup(r) => {
            b.push(KIND_SETUP);
            b.extend_from_slice(&r.unix_ns.to_le_bytes());
            put_str(
                b,
                "planning_frame_of_reference_uid",
                &r.planning_frame_of_reference_uid,
            )?;
            put_str(b, "room_frame_of_reference_uid", &r.room_frame_of_reference_uid)?;
            for v in r.planning_to_room {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.push(u8::from(r.registration_sha256.is_some()));
            b.extend_from_slice(&r.registration_sha256.unwrap_or([0; 32]));
        }
        AuditRecord::ControllerAck {
            unix_ns,
            frame_id,
            acked_sequence,
            status,
            beam_on,
        } => {
            b.push(KIND_ACK);
            b.extend_from_slice(&unix_ns.to_le_bytes());
            b.extend_from_slice(&frame_id.to_le_bytes());
            b.extend_from_slice(&acked_sequence.to_le_bytes());
            b.push(status.code());
            b.push(u8::from(*beam_on));
        }
        AuditRecord::Delivered {
            unix_ns,
            first_ordinal,
            spots,
        } => {
            b.push(KIND_DELIVERED);
            b.extend_from_slice(&unix_ns.to_le_bytes());
            b.extend_from_slice(&first_ordinal.to_le_bytes());
            let n = u32::try_from(spots.len()).map_err(|_| AuditError::FieldTooLong {
                field: "delivered spots",
                len: spots.len(),
                max: u32::MAX as usize,
            })?;
            b.extend_from_slice(&n.to_le_bytes());
            for d in spots {
                b.extend_from_slice(&d.to_le_bytes());
            }
        }
        AuditRecord::Target(t) => {
            b.push(KIND_TARGET);
            b.extend_from_slice(&t.frame_id.to_le_bytes());
            b.push(u8::from(t.accepted) | (u8::from(t.centroid_mm.is_some()) << 1));
            for v in [t.volume_cc, t.planned_volume_cc, t.volume_change_pct] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for v in t.centroid_mm.unwrap_or_default() {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for v in [
                t.jacobian_min,
                t.field_max_mm,
                t.inverse_error_mm,
                t.similarity_ncc,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&t.spots_total.to_le_bytes());
            let n = u32::try_from(t.spots_off.len()).map_err(|_| AuditError::FieldTooLong {
                field: "spots switched off",
                len: t.spots_off.len(),
                max: u32::MAX as usize,
            })?;
            b.extend_from_slice(&n.to_le_bytes());
            for i in &t.spots_off {
                b.extend_from_slice(&i.to_le_bytes());
            }
        }
        AuditRecord::Shutdown { unix_ns, reason } => {
            b.push(KIND_SHUTDOWN);
            b.extend_from_slice(&unix_ns.to_le_bytes());
            put_str(b, "reason", reason)?;
        }
    }
    Ok(())
}
