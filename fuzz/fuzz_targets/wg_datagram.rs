//! Fuzz target `wg_datagram`: see `wgagent::fuzzing::wg_datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::wg_datagram(data));
