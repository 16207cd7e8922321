//! Session configuration text: parse and validate, an error or a config, never a panic.
//! Validation checks that named files exist; relative paths resolve into a scratch folder
//! holding the files of the sample config (`fuzz/seed.sh`), so validation runs past them.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ionguide-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ct")).expect("scratch folder");
        for f in ["RS.dcm", "RP.dcm", "link.key"] {
            std::fs::write(dir.join(f), b"x").expect("scratch file");
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ionguide::config::Config::from_toml_str(&text, Path::new("fuzz.toml"), base());
});
