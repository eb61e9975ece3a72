//! Fuzz target `netstack_input`: see `wgagent::fuzzing::netstack_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgagent::fuzzing::netstack_input(data));
