//! The in-process source the simulator pushes frames through.

use std::path::{Path, PathBuf};

use ionguide::correction::RejectReason;
use ionguide::dicom::ct::{read_series_bytes, read_series_dir};
use ionguide::source::{InProcessError, InProcessSource, SourceEvent};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn objects(rel: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn pushed_frames_arrive_whole_from_every_clone() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let source = InProcessSource::new(tx, "sim");
    let clone = source.clone();
    let sts1 = objects("STS_001/image");
    let key = clone.push_frame(sts1.clone()).unwrap();
    assert_eq!(key.acquisition_number, Some(1));
    let frame = match rx.try_recv().unwrap() {
        SourceEvent::Frame(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(frame.origin, "inproc:sim");
    assert_eq!(frame.key, key);
    assert!(frame
        .objects
        .iter()
        .map(|o| o.as_slice())
        .eq(sts1.iter().map(|o| o.as_slice())));
    let slices: Vec<&[u8]> = frame.objects.iter().map(|o| o.as_slice()).collect();
    assert_eq!(
        read_series_bytes(&slices).unwrap().volume,
        read_series_dir(data("STS_001/image")).unwrap().volume
    );
}

#[test]
fn mixed_empty_or_non_ct_frames_are_refused_and_reported() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let source = InProcessSource::new(tx, "sim");
    let mut mixed = objects("STS_001/image");
    mixed.push(objects("STS_002/image").swap_remove(0));
    let n = mixed.len();
    assert!(matches!(
        source.push_frame(mixed),
        Err(InProcessError::MixedFrames { index, .. }) if index == n - 1
    ));
    assert!(matches!(
        rx.try_recv().unwrap(),
        SourceEvent::Rejected { reason, why: RejectReason::InconsistentFrame, .. } if reason.contains("belongs to")
    ));
    assert!(matches!(
        source.push_frame(Vec::new()),
        Err(InProcessError::Empty)
    ));
    let rs = std::fs::read(data("STS_001/mask/RS.dcm")).unwrap();
    assert!(matches!(
        source.push_frame(vec![rs]),
        Err(InProcessError::Object { index: 0, .. })
    ));
    // One rejection event per refused push.
    assert_eq!(rx.try_iter().count(), 2);
}

#[test]
fn a_closed_pipeline_is_reported_to_the_pusher() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let source = InProcessSource::new(tx, "sim");
    drop(rx);
    assert!(matches!(
        source.push_frame(objects("STS_001/image")),
        Err(InProcessError::Disconnected)
    ));
}

#[test]
fn announced_objects_share_their_bytes_with_the_frame_and_refused_ones_are_not_announced() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let source = InProcessSource::new(tx, "sim");
    let sts1: Vec<std::sync::Arc<Vec<u8>>> = objects("STS_001/image")
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    for o in &sts1[..3] {
        source.announce_object(o).unwrap();
    }
    // not DICOM: nothing to announce (the frame push would report it)
    source
        .announce_object(&std::sync::Arc::new(b"not dicom".to_vec()))
        .unwrap();
    let key = source.push_shared_frame(sts1.clone()).unwrap();
    for o in &sts1[..3] {
        match rx.try_recv().unwrap() {
            SourceEvent::Object { key: k, object } => {
                assert_eq!(k, key);
                assert!(std::sync::Arc::ptr_eq(&object, o));
            }
            other => panic!("{other:?}"),
        }
    }
    match rx.try_recv().unwrap() {
        SourceEvent::Frame(f) => assert!(f
            .objects
            .iter()
            .zip(&sts1)
            .all(|(a, b)| std::sync::Arc::ptr_eq(a, b))),
        other => panic!("{other:?}"),
    }
    assert!(rx.try_recv().is_err());
}

#[test]
fn announcements_never_wait_for_room() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let source = InProcessSource::new(tx, "sim");
    let o = std::sync::Arc::new(objects("STS_001/image").swap_remove(0));
    source.announce_object(&o).unwrap();
    // the channel is full: the hint is dropped, not waited on
    source.announce_object(&o).unwrap();
    assert_eq!(rx.len(), 1);
    drop(rx);
    assert!(matches!(
        source.announce_object(&o),
        Err(InProcessError::Disconnected)
    ));
}
