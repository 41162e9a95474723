//! `header_map::parse`: the host's serialized header map (Envoy's or Kong's buffer, read in
//! place on every request). Never panics; what it accepts serializes back to the start of
//! the buffer (the count, the lengths, each name and value with its NUL).
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
    let mut again = Vec::new();
    again.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in &pairs {
        again.extend_from_slice(&(name.len() as u32).to_le_bytes());
        again.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in &pairs {
        again.extend_from_slice(name);
        again.push(0);
        again.extend_from_slice(value);
        again.push(0);
    }
    assert!(data.starts_with(&again), "accepted pairs are not what the buffer says");
});
