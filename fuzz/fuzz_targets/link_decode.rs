//! The wire-protocol decoder on arbitrary datagrams: with the right key (so fuzzed bytes can
//! reach the payload parsers once libFuzzer learns a valid MAC is out of reach, it still
//! exercises every header check) and after re-signing the body with the key, so the payload
//! parsers see attacker-shaped fields behind a valid HMAC.
#![no_main]

use hmac::{Hmac, Mac};
use ionguide::link::{Decoder, LinkKey};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: [u8; 32] = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    let key = LinkKey::from_bytes(&KEY).expect("a 32-byte key");
    let decoder = Decoder::new(&key, 65_507);
    // 1. as received: header checks, length checks, MAC check
    let _ = decoder.decode(data);
    // 2. re-signed: the payload parsers behind a valid MAC
    if data.len() > 32 {
        let mut signed = data.to_vec();
        let body = signed.len() - 32;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&KEY).expect("any key length");
        mac.update(&signed[..body]);
        signed[body..].copy_from_slice(&mac.finalize().into_bytes());
        let _ = decoder.decode(&signed);
    }
});
