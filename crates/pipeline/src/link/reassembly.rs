//! Rebuilds a [`CorrectionSet`] from its CORRECTIONS parts into reused buffers.
//!
//! Parts of one frame may arrive in any order (the replay guard has already dropped
//! anything older than the newest message, so in practice they arrive in order). A part of
//! a different frame starts that frame and discards the unfinished one (counted): a set
//! is applied whole or not at all.

use crate::correction::CorrectionSet;

use super::protocol::CorrectionsPart;

/// Why a part was refused. The frame in progress is discarded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The set is larger than the receiver accepts.
    #[error("frame {frame_id}: {total_spots} spots exceed the receiver limit of {max_spots}")]
    TooManySpots {
        /// Frame.
        frame_id: u64,
        /// Spots announced.
        total_spots: u32,
        /// Limit.
        max_spots: u32,
    },
    /// A part disagrees with the frame's earlier parts (validity, mode, shift, counts).
    #[error("frame {frame_id}: part {part_index} disagrees with earlier parts in {field}")]
    Inconsistent {
        /// Frame.
        frame_id: u64,
        /// Part.
        part_index: u16,
        /// Which field.
        field: &'static str,
    },
    /// A part covers spots another part already covered, or came twice.
    #[error("frame {frame_id}: part {part_index} overlaps spots already received")]
    Overlap {
        /// Frame.
        frame_id: u64,
        /// Part.
        part_index: u16,
    },
}

/// What accepting a part achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOutcome {
    /// More parts are needed.
    Pending,
    /// The set is complete; read it with [`Reassembler::set`].
    Complete,
}

/// Reassembly state; buffers keep their capacity from frame to frame.
#[derive(Debug, Clone)]
pub struct Reassembler {
    set: CorrectionSet,
    in_progress: bool,
    total_spots: u32,
    part_count: u16,
    parts_received: u16,
    spots_covered: u32,
    part_seen: Vec<u64>,
    spot_seen: Vec<u64>,
    max_spots: u32,
    discarded_incomplete: u64,
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 == 1
}
fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl Reassembler {
    /// A reassembler accepting sets of up to `max_spots` spots, with room for
    /// `capacity_spots` reserved now so that warm frames do not allocate.
    pub fn new(max_spots: u32, capacity_spots: usize) -> Self {
        let cap = capacity_spots.min(max_spots as usize);
        let mut set = CorrectionSet::default();
        set.spots.reserve(cap);
        Reassembler {
            set,
            in_progress: false,
            total_spots: 0,
            part_count: 0,
            parts_received: 0,
            spots_covered: 0,
            part_seen: Vec::with_capacity(1024),
            spot_seen: Vec::with_capacity(cap.div_ceil(64)),
            max_spots,
            discarded_incomplete: 0,
        }
    }

    /// The set being (or last) assembled; complete after [`PartOutcome::Complete`].
    pub fn set(&self) -> &CorrectionSet {
        &self.set
    }

    /// Frames discarded because a later frame began (or a part was refused) before they
    /// were complete.
    pub fn discarded_incomplete(&self) -> u64 {
        self.discarded_incomplete
    }

    fn discard(&mut self) {
        if self.in_progress {
            self.discarded_incomplete += 1;
        }
        self.in_progress = false;
    }

    fn start(&mut self, p: &CorrectionsPart<'_>) {
        self.set.clear();
        self.set.frame_id = p.frame_id;
        self.set.valid_until_unix_ns = p.valid_until_unix_ns;
        self.set.mode = Some(p.mode);
        self.set.tumor_shift_mm = p.tumor_shift_mm;
        self.set.spots.resize(p.total_spots as usize, Default::default());
        self.total_spots = p.total_spots;
        self.part_count = p.part_count;
        self.parts_received = 0;
        self.spots_covered = 0;
        self.part_seen.clear();
        self.part_seen.resize((p.part_count as usize).div_ceil(64), 0);
        self.spot_seen.clear();
        self.spot_seen.resize((p.total_spots as usize).div_ceil(64), 0);
        self.in_progress = true;
    }

    /// Accepts one authenticated part.
    pub fn accept(&mut self, p: &CorrectionsPart<'_>) -> Result<PartOutcome, ReassemblyError> {
        let (frame_id, part_index) = (p.frame_id, p.part_index);
        if p.total_spots > self.max_spots {
            self.discard();
            return Err(ReassemblyError::TooManySpots {
                frame_id,
                total_spots: p.total_spots,
                max_spots: self.max_spots,
            });
        }
        if !self.in_progress || self.set.frame_id != frame_id {
            self.discard();
            self.start(p);
        }
        let field = if p.valid_until_unix_ns != self.set.valid_until_unix_ns {
            Some("valid_until_unix_ns")
        } else if Some(p.mode) != self.set.mode {
            Some("mode")
        } else if p.tumor_shift_mm.map(f32::to_bits) != self.set.tumor_shift_mm.map(f32::to_bits) {
            Some("tumor_shift_mm")
        } else if p.total_spots != self.total_spots {
            Some("total_spots")
        } else if p.part_count != self.part_count {
            Some("part_count")
        } else {
            None
        };
        if let Some(field) = field {
            self.discard();
            return Err(ReassemblyError::Inconsistent {
                frame_id,
                part_index,
                field,
            });
        }
        let first = p.first_spot as usize;
        let n = p.spots.len();
        // Decode guaranteed first + n <= total_spots.
        if bit(&self.part_seen, part_index as usize) || (first..first + n).any(|i| bit(&self.spot_seen, i)) {
            self.discard();
            return Err(ReassemblyError::Overlap { frame_id, part_index });
        }
        set_bit(&mut self.part_seen, part_index as usize);
        for (k, spot) in p.spots.iter().enumerate() {
            set_bit(&mut self.spot_seen, first + k);
            self.set.spots[first + k] = spot;
        }
        self.parts_received += 1;
        self.spots_covered += n as u32;
        if self.parts_received == self.part_count {
            self.in_progress = false;
            if self.spots_covered == self.total_spots {
                return Ok(PartOutcome::Complete);
            }
            // All parts present but spots missing: the parts were cut inconsistently.
            self.discarded_incomplete += 1;
            return Err(ReassemblyError::Inconsistent {
                frame_id,
                part_index,
                field: "spot coverage",
            });
        }
        Ok(PartOutcome::Pending)
    }
}
