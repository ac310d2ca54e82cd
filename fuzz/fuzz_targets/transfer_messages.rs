//! Hostile v2 transfer messages (control records' plaintext, arbitrary and
//! spliced into honest ones), data-frame headers, offered paths and whole
//! offers, offer paging and sealed records: never a panic, and what is
//! accepted keeps the documented promises (docs/PROTOCOL.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallow_peer::fuzzing::transfer_messages(data);
});
