//! Groups incoming DICOM objects into frames.
//!
//! Objects are keyed by Series Instance UID + Acquisition Number + Temporal Position
//! Identifier (see [`FrameKey`]); only the header is parsed here, the pixels are the ingest
//! stage's. A group is complete when the expected number of objects arrived: the configured
//! [`AssemblerConfig::expected_slices`] or, without it, Images in Acquisition (0020,1002) of
//! the group's first object. An Enhanced CT object is a complete frame by itself. A group
//! that cannot know its count, or does not reach it within
//! [`AssemblerConfig::assembly_timeout`], is rejected by [`FrameAssembler::expire`] — a
//! partial volume is never passed on as a frame.
//!
//! Everything is bounded (objects per frame, bytes per object, open groups), since the
//! sender is a network peer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dicom::ct::{CT_SOP_CLASS, ENHANCED_CT_SOP_CLASS};
use crate::dicom::object_header::{read_object_header, ObjectHeaderError};
pub use crate::dicom::uids::sop_class_name;

use super::{FrameKey, ObjectBytes, RawFrame, SourceEvent};
use crate::correction::RejectReason;

/// Frames remembered after completion, so a re-sent object of a just-completed frame is
/// counted as a duplicate instead of opening a group that can only time out.
const RECENT_FRAMES: usize = 8;

/// Assembly rules and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct AssemblerConfig {
    /// Objects per classic-slice frame. `None`: take Images in Acquisition (0020,1002) from
    /// the first object of each group; a group without either is rejected at its timeout.
    pub expected_slices: Option<usize>,
    /// Longest wait from the first object of a group to its completion.
    pub assembly_timeout: Duration,
    /// Largest number of objects one frame may hold.
    pub max_objects_per_frame: usize,
    /// Largest accepted object, bytes (Part 10, file meta included).
    pub max_object_bytes: usize,
    /// Largest number of frames being assembled at once.
    pub max_open_groups: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            expected_slices: None,
            assembly_timeout: Duration::from_secs(10),
            max_objects_per_frame: 2048,
            // A 512×512 16-bit slice is 0.5 MB; an Enhanced CT volume of 2048 such frames 1 GiB.
            max_object_bytes: 1 << 30,
            max_open_groups: 16,
        }
    }
}

/// Why an object was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// Larger than [`AssemblerConfig::max_object_bytes`].
    #[error("object of {bytes} bytes exceeds the limit of {max} bytes")]
    ObjectTooLarge {
        /// Object size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not parseable as DICOM Part 10, or a header attribute needed for grouping is unusable.
    #[error("object header unusable")]
    Header(#[source] ObjectHeaderError),
    /// Neither CT Image Storage nor Enhanced CT Image Storage.
    #[error(
        "SOP class {sop_class_uid} ({}) is not CT Image Storage nor Enhanced CT Image Storage",
        sop_class_name(sop_class_uid)
    )]
    NotCt {
        /// The object's SOP Class UID.
        sop_class_uid: String,
    },
    /// The frame would hold more objects than allowed.
    #[error("{key}: frame needs {count} objects, more than the limit of {max}")]
    TooManyObjects {
        /// The frame.
        key: FrameKey,
        /// Objects needed (expected count, or objects so far when unknown).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A new frame while [`AssemblerConfig::max_open_groups`] are being assembled.
    #[error("{key}: {max} frames are already being assembled")]
    TooManyOpenGroups {
        /// The frame that could not be opened.
        key: FrameKey,
        /// The limit.
        max: usize,
    },
    /// Images in Acquisition differs from the group's first object.
    #[error("{key}: Images in Acquisition is {found}, the frame's first object said {expected}")]
    CountMismatch {
        /// The frame.
        key: FrameKey,
        /// The count the group was opened with.
        expected: usize,
        /// The count this object carries.
        found: usize,
    },
}

impl AssembleError {
    /// Why, as the pipeline and the audit log classify it.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            AssembleError::NotCt { .. } => RejectReason::NotCt,
            AssembleError::Header(_) => RejectReason::Unparseable,
            AssembleError::ObjectTooLarge { .. }
            | AssembleError::TooManyObjects { .. }
            | AssembleError::TooManyOpenGroups { .. } => RejectReason::OverLimit,
            AssembleError::CountMismatch { .. } => RejectReason::InconsistentFrame,
        }
    }

    /// The frame the refused object belonged to, when known.
    pub fn key(&self) -> Option<&FrameKey> {
        match self {
            AssembleError::TooManyObjects { key, .. }
            | AssembleError::TooManyOpenGroups { key, .. }
            | AssembleError::CountMismatch { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What became of an accepted object.
#[derive(Debug)]
pub enum Offer {
    /// Added to a frame still waiting for objects.
    Pending {
        /// The frame.
        key: FrameKey,
        /// The object, as the frame holds it.
        object: ObjectBytes,
        /// Objects received for it so far.
        received: usize,
        /// Objects it needs, when known.
        expected: Option<usize>,
    },
    /// Its SOP Instance UID was already received for this frame; ignored.
    Duplicate {
        /// The frame.
        key: FrameKey,
    },
    /// It completed a frame.
    Complete(RawFrame),
}

/// The header facts the assembler needs.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) key: FrameKey,
    pub(crate) sop_instance_uid: Option<String>,
    pub(crate) images_in_acquisition: Option<usize>,
}

/// Parses the header of a CT or Enhanced CT object (nothing past Pixel Data).
pub(crate) fn read_header(bytes: &[u8], max_object_bytes: usize) -> Result<Header, AssembleError> {
    if bytes.len() > max_object_bytes {
        return Err(AssembleError::ObjectTooLarge {
            bytes: bytes.len(),
            max: max_object_bytes,
        });
    }
    let object = read_object_header(bytes).map_err(AssembleError::Header)?;
    let enhanced = match object.sop_class_uid.as_str() {
        CT_SOP_CLASS => false,
        ENHANCED_CT_SOP_CLASS => true,
        _ => {
            return Err(AssembleError::NotCt {
                sop_class_uid: object.sop_class_uid,
            })
        }
    };
    // An Enhanced CT object is a whole frame: its own instance UID tells frames apart.
    // (the header reader requires it of an Enhanced CT object)
    let enhanced_sop_instance_uid = if enhanced {
        object.sop_instance_uid.clone()
    } else {
        None
    };
    let key = FrameKey {
        series_instance_uid: object.series_instance_uid,
        acquisition_number: object.acquisition_number,
        temporal_position_identifier: object.temporal_position_identifier,
        enhanced_sop_instance_uid,
    };
    Ok(Header {
        key,
        sop_instance_uid: object.sop_instance_uid,
        images_in_acquisition: object.images_in_acquisition,
    })
}

#[derive(Debug)]
struct Group {
    objects: Vec<ObjectBytes>,
    sop_instance_uids: HashSet<String>,
    expected: Option<usize>,
    opened_at: Instant,
    origin: String,
}

/// Groups objects into frames (see the module documentation). Pure logic: time is passed
/// in, so it is tested without sleeping.
#[derive(Debug)]
pub struct FrameAssembler {
    config: AssemblerConfig,
    groups: HashMap<FrameKey, Group>,
    recent: VecDeque<(FrameKey, HashSet<String>)>,
    duplicates: u64,
}

impl FrameAssembler {
    /// An assembler with the given rules.
    pub fn new(config: AssemblerConfig) -> Self {
        FrameAssembler {
            config,
            groups: HashMap::new(),
            recent: VecDeque::with_capacity(RECENT_FRAMES),
            duplicates: 0,
        }
    }

    /// The rules in force.
    pub fn config(&self) -> &AssemblerConfig {
        &self.config
    }

    /// Objects ignored so far because their SOP Instance UID was already received.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Frames currently being assembled.
    pub fn open_groups(&self) -> usize {
        self.groups.len()
    }

    /// Adds one object (Part 10 bytes) that arrived at `at` from `origin`.
    pub fn offer(&mut self, bytes: Vec<u8>, origin: &str, at: Instant) -> Result<Offer, AssembleError> {
        let header = read_header(&bytes, self.config.max_object_bytes)?;
        let key = header.key;
        if key.enhanced_sop_instance_uid.is_some() {
            return Ok(Offer::Complete(RawFrame {
                objects: vec![Arc::new(bytes)],
                complete_at: at,
                origin: origin.to_owned(),
                key,
            }));
        }
        let uid = header.sop_instance_uid;
        if let Some(uid) = &uid {
            let seen = self
                .recent
                .iter()
                .any(|(k, uids)| *k == key && uids.contains(uid))
                || self
                    .groups
                    .get(&key)
                    .is_some_and(|g| g.sop_instance_uids.contains(uid));
            if seen {
                self.duplicates += 1;
                return Ok(Offer::Duplicate { key });
            }
        }
        let max = self.config.max_objects_per_frame;
        let group = match self.groups.get_mut(&key) {
            Some(group) => {
                if let (Some(expected), Some(found), None) = (
                    group.expected,
                    header.images_in_acquisition,
                    self.config.expected_slices,
                ) {
                    if found != expected {
                        return Err(AssembleError::CountMismatch { key, expected, found });
                    }
                }
                if group.objects.len() >= max {
                    // Only reachable with an unknown count: the group can no longer complete.
                    let count = group.objects.len() + 1;
                    self.groups.remove(&key);
                    return Err(AssembleError::TooManyObjects { key, count, max });
                }
                group
            }
            None => {
                let expected = self.config.expected_slices.or(header.images_in_acquisition);
                if let Some(count) = expected.filter(|&n| n > max) {
                    return Err(AssembleError::TooManyObjects { key, count, max });
                }
                if self.groups.len() >= self.config.max_open_groups {
                    return Err(AssembleError::TooManyOpenGroups {
                        key,
                        max: self.config.max_open_groups,
                    });
                }
                self.groups.entry(key.clone()).or_insert(Group {
                    objects: Vec::with_capacity(expected.unwrap_or(0)),
                    sop_instance_uids: HashSet::new(),
                    expected,
                    opened_at: at,
                    origin: String::new(),
                })
            }
        };
        let object = Arc::new(bytes);
        group.objects.push(Arc::clone(&object));
        if let Some(uid) = uid {
            group.sop_instance_uids.insert(uid);
        }
        origin.clone_into(&mut group.origin);
        let received = group.objects.len();
        let expected = group.expected;
        if expected.is_some_and(|n| received >= n) {
            let Some(group) = self.groups.remove(&key) else {
                unreachable!("the group was just updated")
            };
            if self.recent.len() == RECENT_FRAMES {
                self.recent.pop_front();
            }
            self.recent.push_back((key.clone(), group.sop_instance_uids));
            return Ok(Offer::Complete(RawFrame {
                objects: group.objects,
                complete_at: at,
                origin: group.origin,
                key,
            }));
        }
        Ok(Offer::Pending {
            key,
            object,
            received,
            expected,
        })
    }

    /// Removes the groups opened more than `assembly_timeout` before `now` and returns one
    /// [`SourceEvent::Rejected`] for each.
    pub fn expire(&mut self, now: Instant) -> Vec<SourceEvent> {
        let timeout = self.config.assembly_timeout;
        let expired: Vec<FrameKey> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.opened_at) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|key| {
                let group = self.groups.remove(&key)?;
                let expected = match group.expected {
                    Some(n) => n.to_string(),
                    None => "an unknown number (no expected_slices configured and no Images in \
                             Acquisition in the objects)"
                        .to_owned(),
                };
                Some(SourceEvent::Rejected {
                    origin: group.origin,
                    why: RejectReason::AssemblyTimeout,
                    reason: format!(
                        "{key}: incomplete frame, {} of {expected} objects after {:.3} s",
                        group.objects.len(),
                        timeout.as_secs_f64()
                    ),
                    key: Some(key),
                    at: now,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::OpenError;
    use std::path::Path;

    fn data(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data")
            .join(rel)
    }

    fn slices(rel: &str) -> Vec<Vec<u8>> {
        let mut paths: Vec<_> = std::fs::read_dir(data(rel))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .collect();
        paths.sort();
        paths.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    fn config(expected: Option<usize>) -> AssemblerConfig {
        AssemblerConfig {
            expected_slices: expected,
            assembly_timeout: Duration::from_secs(5),
            ..AssemblerConfig::default()
        }
    }

    #[test]
    fn a_series_completes_on_its_last_slice_and_duplicates_are_ignored() {
        let objects = slices("STS_001/image");
        let n = objects.len();
        let mut asm = FrameAssembler::new(config(Some(n)));
        let t0 = Instant::now();
        // The first slice twice: the duplicate must not count towards completion.
        match asm.offer(objects[0].clone(), "test", t0).unwrap() {
            Offer::Pending {
                received: 1,
                expected: Some(e),
                key,
                object,
            } => {
                assert_eq!(*object, objects[0], "the announced object is the one offered");
                assert_eq!(e, n);
                assert_eq!(key.acquisition_number, Some(1));
                assert!(key.series_instance_uid.starts_with("1.3.6.1.4.1.14519"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            asm.offer(objects[0].clone(), "test", t0).unwrap(),
            Offer::Duplicate { .. }
        ));
        assert_eq!(asm.duplicates(), 1);
        let mut complete = None;
        for (i, o) in objects.iter().enumerate().skip(1) {
            let at = t0 + Duration::from_millis(i as u64);
            match asm.offer(o.clone(), "last", at).unwrap() {
                Offer::Pending { received, .. } => assert_eq!(received, i + 1),
                Offer::Complete(frame) => {
                    assert_eq!(i, n - 1);
                    assert_eq!(frame.complete_at, at);
                    complete = Some(frame);
                }
                other => panic!("{other:?}"),
            }
        }
        let frame = complete.expect("the last slice completes the frame");
        assert_eq!(frame.objects.len(), n);
        assert_eq!(frame.origin, "last");
        assert_eq!(asm.open_groups(), 0);
        // The frame's objects are the input bytes: ingest decodes them like the folder.
        let from_frame = crate::dicom::ct::read_series_bytes(
            &frame.objects.iter().map(|o| o.as_slice()).collect::<Vec<_>>(),
        )
        .unwrap();
        let from_dir = crate::dicom::ct::read_series_dir(data("STS_001/image")).unwrap();
        assert_eq!(from_frame.volume, from_dir.volume);
        // A re-sent slice of the completed frame is a duplicate, not a new group.
        assert!(matches!(
            asm.offer(objects[3].clone(), "test", t0).unwrap(),
            Offer::Duplicate { .. }
        ));
        assert_eq!(asm.open_groups(), 0);
    }

    #[test]
    fn incomplete_groups_are_rejected_at_their_timeout_only() {
        let objects = slices("STS_001/image");
        let mut asm = FrameAssembler::new(config(Some(objects.len())));
        let t0 = Instant::now();
        for o in &objects[..10] {
            asm.offer(o.clone(), "scanner", t0).unwrap();
        }
        assert!(asm.expire(t0 + Duration::from_millis(4999)).is_empty());
        let events = asm.expire(t0 + Duration::from_secs(5));
        assert_eq!(events.len(), 1);
        match &events[0] {
            SourceEvent::Rejected {
                origin,
                key,
                why,
                reason,
                ..
            } => {
                assert_eq!(*why, RejectReason::AssemblyTimeout);
                assert_eq!(origin, "scanner");
                assert!(key.is_some());
                assert!(reason.contains(&format!("10 of {}", objects.len())), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(asm.open_groups(), 0);
    }

    #[test]
    fn without_a_count_the_group_waits_for_images_in_acquisition_or_times_out() {
        // STS files carry no Images in Acquisition (0020,1002).
        let objects = slices("STS_001/image");
        let mut asm = FrameAssembler::new(config(None));
        let t0 = Instant::now();
        for o in &objects {
            assert!(matches!(
                asm.offer(o.clone(), "s", t0).unwrap(),
                Offer::Pending { expected: None, .. }
            ));
        }
        let events = asm.expire(t0 + Duration::from_secs(6));
        assert!(
            matches!(&events[..], [SourceEvent::Rejected { reason, .. }] if reason.contains("unknown number"))
        );
    }

    #[test]
    fn different_series_are_different_frames() {
        let a = slices("STS_001/image");
        let b = slices("STS_002/image");
        let mut asm = FrameAssembler::new(config(Some(1000)));
        let t0 = Instant::now();
        asm.offer(a[0].clone(), "s", t0).unwrap();
        asm.offer(b[0].clone(), "s", t0).unwrap();
        assert_eq!(asm.open_groups(), 2);
    }

    #[test]
    fn limits_and_non_ct_objects_are_refused_with_their_reason() {
        let objects = slices("STS_001/image");
        let t0 = Instant::now();
        let rs = std::fs::read(data("STS_001/mask/RS.dcm")).unwrap();
        let mut asm = FrameAssembler::new(config(Some(59)));
        match asm.offer(rs, "s", t0) {
            Err(e @ AssembleError::NotCt { .. }) => {
                assert_eq!(e.reject_reason(), RejectReason::NotCt);
                // the operator reads what was sent, not only its UID
                let text = e.to_string();
                assert!(
                    text.contains("1.2.840.10008.5.1.4.1.1.481.3 (RT Structure Set Storage)"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        match asm.offer(b"not dicom at all".to_vec(), "s", t0) {
            Err(e @ AssembleError::Header(ObjectHeaderError::Unreadable(OpenError::NotDicom))) => {
                assert_eq!(e.reject_reason(), RejectReason::Unparseable)
            }
            other => panic!("{other:?}"),
        }
        let mut small = FrameAssembler::new(AssemblerConfig {
            max_object_bytes: objects[0].len() - 1,
            ..config(Some(59))
        });
        assert!(matches!(
            small.offer(objects[0].clone(), "s", t0),
            Err(e @ AssembleError::ObjectTooLarge { .. }) if e.reject_reason() == RejectReason::OverLimit
        ));
        let mut few = FrameAssembler::new(AssemblerConfig {
            max_objects_per_frame: 10,
            ..config(Some(59))
        });
        assert!(matches!(
            few.offer(objects[0].clone(), "s", t0),
            Err(AssembleError::TooManyObjects {
                count: 59,
                max: 10,
                ..
            })
        ));
        let mut one_group = FrameAssembler::new(AssemblerConfig {
            max_open_groups: 1,
            ..config(Some(59))
        });
        one_group.offer(objects[0].clone(), "s", t0).unwrap();
        let other = slices("STS_002/image").swap_remove(0);
        assert!(matches!(
            one_group.offer(other, "s", t0),
            Err(AssembleError::TooManyOpenGroups { max: 1, .. })
        ));
        // Unknown count: the group is dropped once it exceeds the object limit.
        let mut unknown = FrameAssembler::new(AssemblerConfig {
            max_objects_per_frame: 3,
            ..config(None)
        });
        for o in &objects[..3] {
            unknown.offer(o.clone(), "s", t0).unwrap();
        }
        assert!(matches!(
            unknown.offer(objects[3].clone(), "s", t0),
            Err(AssembleError::TooManyObjects { count: 4, max: 3, .. })
        ));
        assert_eq!(unknown.open_groups(), 0);
    }
}
