//! Fuzzes every registered source's credential check and translation (and the time rule): the
//! first byte picks the source, then headers and the body (`valuestream_fuzz::deliver`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = valuestream_fuzz::deliver(data);
});
