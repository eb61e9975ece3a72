//! Fuzz target `config`: see `wgagent::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::config(data));
