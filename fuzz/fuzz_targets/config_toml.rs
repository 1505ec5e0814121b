//! Fuzz target `config_toml`: see `spear_sms::fuzzing::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spear_sms::fuzzing::config_toml(data));
