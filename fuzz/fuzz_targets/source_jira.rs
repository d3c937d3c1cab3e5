//! Fuzzes the jira source's translation (and the time rule) with arbitrary bodies.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    valuestream_fuzz::translate("jira", None, data);
});
