//! `hookrelay::fuzzing::webhook` on arbitrary input (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookrelay::fuzzing::webhook(data));
