//! `hookrelay::fuzzing::claims` on arbitrary input (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookrelay::fuzzing::claims(data));
