//! Fuzz target `rest_json`: see `spear_sms::fuzzing::rest_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spear_sms::fuzzing::rest_json(data));
