//! `header_map::parse`: the host's serialized header map (Envoy's or Kong's buffer, read in
//! place on every request). Never panics; what it accepts serializes back (`serialize`, the
//! form the filter hands the host its local replies' headers in) to the start of the buffer.
#![no_main]

use app_auth_filter::header_map;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(pairs) = header_map::parse(data) else {
        return;
    };
    if data.is_empty() {
        assert!(pairs.is_empty());
        return;
    }
    let again = header_map::serialize(&pairs);
    assert!(data.starts_with(&again), "accepted pairs are not what the buffer says");
});
