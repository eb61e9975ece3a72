//! Fuzz target `shell`: see `wgagent::fuzzing::shell`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::shell(data));
