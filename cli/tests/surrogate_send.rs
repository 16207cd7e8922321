//! `ionguide surrogate-send` replays a real ExtMarker recording as an authenticated
//! SURROGATE stream: every sample arrives, in order, signed with the surrogate key, at the
//! recording's pace (here 10× faster), with the file's positions.

use std::process::Command;
use std::time::{Duration, Instant};

use ionguide::link::surrogate::{SurrogateIncoming, SurrogateReceiver};
use ionguide::link::{LinkKey, LinkOptions};

#[test]
fn replays_an_extmarker_recording_as_a_signed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("surrogate.key");
    std::fs::write(&key_path, "5a".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key = LinkKey::from_file(&key_path).unwrap();
    let mut rx =
        SurrogateReceiver::bind("127.0.0.1:0".parse().unwrap(), &key, &LinkOptions::default()).unwrap();
    let to = rx.local_addr().unwrap().to_string();
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/motion/extmarker/201205101519-LAC-1-T-222-6.csv"
    );
    // the file's first rows (60 Hz camera frames, ms, decimal commas): the first 3 s hold
    // every row up to "3017 ms"
    let text = std::fs::read_to_string(trace).unwrap();
    let rows: Vec<[f64; 4]> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l
                .split(';')
                .map(|v| v.replace(',', ".").parse().unwrap())
                .collect();
            [f[1], f[2], f[3], f[4]]
        })
        .take_while(|r| r[0] <= 3000.0)
        .collect();
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["surrogate-send", "--trace", trace, "--to", &to, "--key"])
        .arg(&key_path)
        .args(["--rate-x", "10", "--duration-s", "3", "--bind", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(m)) = rx.recv(Duration::from_secs(3)) {
        match m {
            SurrogateIncoming::Sample { sample, .. } => got.push(sample),
            SurrogateIncoming::Rejected(r) => panic!("refused: {r}"),
        }
        if got.len() == rows.len() {
            break;
        }
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(got.len(), rows.len(), "every sample of the first 3 s");
    for (k, (s, r)) in got.iter().zip(&rows).enumerate() {
        assert_eq!(s.sample, k as u64);
        assert_eq!(s.markers, 1);
        for i in 0..3 {
            assert!(
                (f64::from(s.pos_mm[0][i]) - r[i + 1]).abs() < 1e-3,
                "sample {k}: {:?} vs {r:?}",
                s.pos_mm[0]
            );
        }
    }
    // 3 s of recording at 10×: about 0.3 s (and not all at once)
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    // signed with the receiver's key: nothing refused
    assert_eq!(rx.stats().bad_mac, 0);
}
