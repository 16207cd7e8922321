//! The release gate must be able to fail: on budgets set too tight it prints the breaches
//! and exits non-zero; the repository's own budgets file parses and names both workloads.

use std::process::Command;

#[test]
fn the_gate_fails_on_budgets_set_too_tight() {
    let dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let real = std::fs::read_to_string(format!("{root}/benches/budgets.toml")).unwrap();
    // the repository's budgets with the small workload's end-to-end median squeezed to 1 µs
    let tight = real.replacen("end_to_end = { p50 = 15.0", "end_to_end = { p50 = 0.001", 1);
    assert_ne!(
        tight, real,
        "the budgets file still has the line this test tightens"
    );
    let budgets = dir.path().join("tight.toml");
    std::fs::write(&budgets, tight).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["gate", "--workload", "small", "--frames", "12", "--budgets"])
        .arg(&budgets)
        .arg("--out")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a breached gate must fail\n{stdout}\n{stderr}"
    );
    let breach = stdout
        .lines()
        .find(|l| l.starts_with("end to end p50"))
        .unwrap_or_else(|| panic!("no end-to-end line in\n{stdout}"));
    assert!(breach.ends_with("BREACH"), "{breach}");
    assert!(
        stderr.contains("budget(s) breached on the small workload"),
        "{stderr}"
    );
    // every frame was still accounted for
    assert!(stdout.contains("frames not in the audit log"), "{stdout}");
    // where the time went is on the report: waits per stage and the host's floor
    assert!(
        stdout.contains("waiting for a thread before each stage"),
        "{stdout}"
    );
    assert!(stdout.contains("host floor before the run"), "{stdout}");
    // and the gate's audit log reads like a daemon's: session start, setup, shutdown
    let log = dir.path().join("work/audit/replay.audit");
    let audit = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .arg("audit")
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{text}");
    assert!(text.contains("session   started"), "{text}");
    assert!(text.contains("setup     planning"), "{text}");
    assert!(text.contains("release gate workload finished"), "{text}");
}

#[test]
fn a_budgets_file_with_an_unknown_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let real = std::fs::read_to_string(format!("{root}/benches/budgets.toml")).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, real.replacen("max_rss_growth_mib", "max_rss_growht_mib", 1)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args(["gate", "--budgets"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_rss_growht_mib"), "{stderr}");
}

#[test]
fn the_gate_runs_the_stages_real_time_when_asked_or_says_why_it_cannot() {
    // Loose budgets: this checks scheduling, not speed (a debug build under test).
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let loose = std::fs::read_to_string(format!("{root}/../benches/budgets.toml"))
        .unwrap()
        .replace("deadline_ms = 50.0", "deadline_ms = 5000.0");
    let budgets = dir.path().join("budgets.toml");
    std::fs::write(&budgets, loose).unwrap();
    let json = dir.path().join("gate.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ionguide"))
        .args([
            "gate",
            "--workload",
            "small",
            "--frames",
            "12",
            "--realtime-priority",
            "7",
            "--budgets",
        ])
        .arg(&budgets)
        .arg("--out")
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Ok(text) = std::fs::read_to_string(&json) else {
        // Not permitted here (no CAP_SYS_NICE): the gate must refuse, not measure time-shared.
        assert!(!out.status.success());
        assert!(
            stderr.contains("SCHED_FIFO") && stderr.contains("realtime.priority = 0"),
            "{stderr}"
        );
        eprintln!("NOT MEASURED: real-time scheduling is not permitted here");
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let threads = v[0]["threads"].as_array().unwrap();
    for stage in [
        "ionguide-ingest",
        "ionguide-regist",
        "ionguide-range",
        "ionguide-adapt",
        "ionguide-link",
    ] {
        let t = threads
            .iter()
            .find(|t| t["name"].as_str().is_some_and(|n| n.starts_with(stage)))
            .unwrap_or_else(|| panic!("{stage} not in {threads:?}"));
        assert_eq!(
            (t["policy"].as_str(), t["rt_priority"].as_u64()),
            (Some("fifo"), Some(7)),
            "{t}"
        );
    }
    // The session the gate ran says so, as a user's would.
    let session = std::fs::read_to_string(dir.path().join("run/session.toml")).unwrap();
    assert!(
        session.contains("[realtime]\npriority = 7\nrequired = true"),
        "{session}"
    );
}
