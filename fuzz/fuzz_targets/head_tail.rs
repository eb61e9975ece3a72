//! Fuzz target `head_tail`: see `wgagent::fuzzing::head_tail`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::head_tail(data));
