//! The statement classifier (`session::classify::classify`) on arbitrary
//! query text: never panics, and is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlease::session::classify::classify;

fuzz_target!(|data: &[u8]| {
    let a = classify(data);
    assert_eq!(a, classify(data));
});
