//! Fuzzes replay's file parser: recorded deliveries and API Gateway v2 events.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = valuestream::replay::parse_bytes(std::path::Path::new("fuzz.json"), data);
});
