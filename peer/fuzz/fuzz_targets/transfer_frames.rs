//! Arbitrary text and binary frames and clock steps into the data-channel
//! Receiver, and every name through sanitize_name.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallow_peer::fuzzing::transfer_frames(data);
});
