//! Fuzz target `http_api`: see `wgagent::fuzzing::http_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::http_api(data));
