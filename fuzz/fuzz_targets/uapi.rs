//! Fuzz target `uapi`: see `wgagent::fuzzing::uapi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::uapi(data));
