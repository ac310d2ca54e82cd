//! The /signal frame decoder on arbitrary text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tallow_signaling::protocol::decode(text);
    }
});
