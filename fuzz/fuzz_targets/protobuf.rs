//! Fuzz target `protobuf`: see `spear_sms::fuzzing::protobuf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spear_sms::fuzzing::protobuf(data));
