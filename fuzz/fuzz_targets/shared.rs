//! `shared`: the key record and lease other VMs (or anything else sharing the proxy's
//! shared-data namespace) leave in the store. Whatever bytes are there, reading never
//! panics, a record that reads publishes and reads back the same, and a lease that is
//! granted is recorded.
//!
//! Input: `lease \0 version \0 keys` (the three slots' values; a missing part leaves that
//! slot unset).

#![no_main]

use app_auth_filter::shared::{Ended, KeyRecord, Lease, MemoryStore, SharedStore, Slots};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let slots = Slots::for_issuer("https://idp.example.com");
    let store = MemoryStore::default();
    let mut parts = data.splitn(3, |b| *b == 0);
    for key in [&slots.lease, &slots.version, &slots.keys] {
        if let Some(value) = parts.next() {
            store.set(key, value, None);
        }
    }

    let _ = Lease::read(&store, &slots.lease);
    let _ = KeyRecord::version(&store, &slots);
    if let Some(record) = KeyRecord::read(&store, &slots) {
        let again = MemoryStore::default();
        let v = KeyRecord::publish(
            &again,
            &slots,
            record.fetched_ms,
            record.expires_ms,
            &record.discovery,
            &record.jwks,
        );
        assert_eq!(v, 1);
        let back = KeyRecord::read(&again, &slots).expect("a published record reads back");
        assert_eq!(back.discovery, record.discovery);
        assert_eq!(back.jwks, record.jwks);
        assert_eq!(back.expires_ms, record.expires_ms);
        assert_eq!(back.fetched_ms, record.fetched_ms);
        assert_eq!(KeyRecord::version(&again, &slots), 1);
    }

    let now = 1_800_000_000_000u64;
    for forced in [false, true] {
        let before = Lease::read(&store, &slots.lease);
        match Lease::acquire(&store, &slots.lease, now, 10_000, forced, 30_000) {
            Ok(()) => {
                assert!(before.held_until_ms <= now && before.retry_at_ms <= now);
                let after = Lease::read(&store, &slots.lease);
                assert_eq!(after.held_until_ms, now + 10_000);
                Lease::release(&store, &slots.lease, Ended::Dropped);
                assert_eq!(Lease::read(&store, &slots.lease).held_until_ms, 0);
            }
            Err(_) => {}
        }
    }
});
