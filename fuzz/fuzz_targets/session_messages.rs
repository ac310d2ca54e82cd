//! Hostile hello/reply/confirm/sealed messages (parsed, and altered copies of
//! honest ones) into the initiator, the responder and an established
//! session, including replayed and reordered sealed messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallow_peer::fuzzing::session_messages(data);
});
