//! Every STUN/TURN parser and the TURN core, on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallow_relay::fuzzing::one_input(data);
});
