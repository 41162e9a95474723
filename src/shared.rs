//! Key state shared by every VM of one proxy (Envoy runs one VM per worker thread): the
//! issuer's last good discovery + key set, and a compare-and-swap lease so that one VM
//! fetches while the others wait for its result.
//!
//! Per issuer there are exactly three keys, whatever the traffic (Envoy cannot delete
//! shared data): `…/lease`, `…/version` and `…/keys`.

use crate::cache::set_before_a_step_back;
use crate::json;
use crate::oidc::{Discovery, Url};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;

/// The host's shared key/value store with compare-and-swap (proxy-wasm shared data).
pub trait SharedStore: std::fmt::Debug {
    /// The value and its CAS token, `None` if the key was never set.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Sets the value if `cas` still matches (`None`: unconditionally). `false` on a CAS
    /// mismatch or any other refusal.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// A store inside one VM: what a host without shared data gets, and the test double.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut data = self.data.borrow_mut();
        let current = data.get(key).map(|(_, c)| *c);
        if let (Some(want), Some(have)) = (cas, current) {
            if want != have {
                return false;
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        data.insert(key.to_owned(), (value.to_vec(), next));
        true
    }
}

/// The three shared-data keys of an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    pub lease: String,
    pub version: String,
    pub keys: String,
}

impl Slots {
    pub fn for_issuer(issuer: &str) -> Slots {
        let id = crate::engine::sha256_hex(issuer.as_bytes());
        let id = id.get(..16).unwrap_or_default();
        Slots {
            lease: format!("app-auth-filter/{id}/lease"),
            version: format!("app-auth-filter/{id}/version"),
            keys: format!("app-auth-filter/{id}/keys"),
        }
    }
}

/// A CAS token no stored value carries: `set` with it only creates a missing key.
const CREATE_ONLY: u32 = u32::MAX;

/// The longest a fetch holds the lease: two callouts (discovery, then keys) of the longest
/// timeout, and a second (what the engine asks for, from the issuer's own timeout).
const MAX_HOLD_MS: u64 = crate::config::MAX_TIMEOUT_MS * 2 + 1_000;

/// Who may fetch an issuer's keys, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// A fetch is under way until then (a lost fetcher's lease simply runs out).
    pub held_until_ms: u64,
    /// When the fetch under way took the lease.
    pub held_from_ms: u64,
    /// After a failed fetch, nobody fetches again before then (shared backoff).
    pub retry_at_ms: u64,
    /// The last fetch caused by an unknown `kid` (shared cooldown).
    pub last_forced_ms: u64,
    /// Fetches failed in a row, by whichever VM: the shared backoff doubles with each.
    pub failures: u32,
}

/// How the fetch that held the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A good key set came in: the failures in a row are over.
    Fetched,
    /// It failed at `now_ms`: every VM backs off, twice as long as after the failure before.
    Failed { now_ms: u64 },
    /// It was dropped unanswered, or never sent: nothing was learnt.
    Dropped,
}

/// Why a lease was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another VM is fetching: wait for its result.
    Held,
    /// A fetch failed recently: the IdP is given time.
    Backoff,
    /// An unknown `kid` already caused a fetch within the cooldown.
    Cooldown,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{};{};{};{};{}",
            self.held_until_ms,
            self.retry_at_ms,
            self.last_forced_ms,
            self.held_from_ms,
            self.failures
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Lease {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let mut parts = text.split(';').map(|p| p.parse::<u64>().unwrap_or(0));
        Lease {
            held_until_ms: parts.next().unwrap_or(0),
            retry_at_ms: parts.next().unwrap_or(0),
            last_forced_ms: parts.next().unwrap_or(0),
            held_from_ms: parts.next().unwrap_or(0),
            failures: parts
                .next()
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }

    pub fn read(store: &dyn SharedStore, key: &str) -> Lease {
        store
            .get(key)
            .map(|(v, _)| Lease::decode(&v))
            .unwrap_or_default()
    }

    /// Tries to take the lease for a fetch lasting at most `hold_ms`. `forced`: the fetch is
    /// for an unknown `kid`, allowed once per `cooldown_ms`.
    pub fn acquire(
        store: &dyn SharedStore,
        key: &str,
        now_ms: u64,
        hold_ms: u64,
        forced: bool,
        cooldown_ms: u64,
    ) -> Result<(), Refusal> {
        // Two attempts: the first may only create the key (a fresh key has no CAS to match).
        for _ in 0..2 {
            let Some((value, cas)) = store.get(key) else {
                // Create only if still absent: a CAS that can never match refuses to
                // overwrite a lease another VM created (and took) meanwhile, while a missing
                // key is created whatever the CAS (proxy-wasm shared data semantics).
                store.set(key, &Lease::default().encode(), Some(CREATE_ONLY));
                continue;
            };
            let lease = Lease::decode(&value);
            // Taken ahead of the clock, or held further ahead than any fetch holds it: taken
            // before the clock was stepped back (by a holder since gone, or it would have
            // released it), or not by a fetch at all.
            if lease.held_until_ms > now_ms
                && !set_before_a_step_back(lease.held_from_ms, now_ms)
                && !set_before_a_step_back(lease.held_until_ms, now_ms.saturating_add(MAX_HOLD_MS))
            {
                return Err(Refusal::Held);
            }
            // A retry time further ahead than the longest backoff, or a forced fetch ahead
            // of the clock, were set before the clock was stepped back: they are over.
            if lease.retry_at_ms > now_ms
                && !set_before_a_step_back(
                    lease.retry_at_ms,
                    now_ms.saturating_add(crate::cache::MAX_BACKOFF_MS),
                )
            {
                return Err(Refusal::Backoff);
            }
            if forced
                && lease.last_forced_ms > 0
                && !set_before_a_step_back(lease.last_forced_ms, now_ms)
                && now_ms < lease.last_forced_ms.saturating_add(cooldown_ms)
            {
                return Err(Refusal::Cooldown);
            }
            let next = Lease {
                held_until_ms: now_ms.saturating_add(hold_ms),
                held_from_ms: now_ms,
                retry_at_ms: 0,
                last_forced_ms: if forced { now_ms } else { lease.last_forced_ms },
                failures: lease.failures,
            };
            return if store.set(key, &next.encode(), Some(cas)) {
                Ok(())
            } else {
                Err(Refusal::Held)
            };
        }
        Err(Refusal::Held)
    }

    /// Ends the holder's fetch.
    pub fn release(store: &dyn SharedStore, key: &str, end: Ended) {
        let held = Lease::read(store, key);
        let (retry_at_ms, failures) = match end {
            Ended::Fetched => (0, 0),
            Ended::Failed { now_ms } => {
                let failures = held.failures.saturating_add(1);
                let backoff = crate::cache::backoff_ms(failures);
                (now_ms.saturating_add(backoff), failures)
            }
            Ended::Dropped => (0, held.failures),
        };
        let lease = Lease {
            held_until_ms: 0,
            held_from_ms: 0,
            retry_at_ms,
            last_forced_ms: held.last_forced_ms,
            failures,
        };
        store.set(key, &lease.encode(), None);
    }
}

/// An issuer's last good discovery and key set, as published by the VM that fetched them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub version: u64,
    pub fetched_ms: u64,
    pub expires_ms: u64,
    pub discovery: Discovery,
    /// The key set document exactly as the IdP served it: each VM parses it itself.
    pub jwks: String,
}

impl KeyRecord {
    fn encode(&self) -> Vec<u8> {
        let url = |u: &Option<Url>| {
            u.as_ref()
                .map(|u| format!("{}://{}{}", u.scheme(), u.authority, u.path))
        };
        let d = &self.discovery;
        json!({
            "version": self.version,
            "fetched_ms": self.fetched_ms,
            "expires_ms": self.expires_ms,
            "jwks_uri": url(&Some(d.jwks_uri.clone())),
            "token_endpoint": url(&d.token_endpoint),
            "introspection_endpoint": url(&d.introspection_endpoint),
            "jwks": self.jwks,
        })
        .to_string()
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<KeyRecord> {
        let v = json::parse_strict(bytes, 8).ok()?;
        let url = |name: &str| -> Option<Option<Url>> {
            match v.get(name) {
                None | Some(Value::Null) => Some(None),
                Some(Value::String(s)) => Url::parse(s).ok().map(Some),
                _ => None,
            }
        };
        Some(KeyRecord {
            version: v.get("version")?.as_u64()?,
            fetched_ms: v.get("fetched_ms")?.as_u64()?,
            expires_ms: v.get("expires_ms")?.as_u64()?,
            discovery: Discovery {
                jwks_uri: url("jwks_uri")??,
                token_endpoint: url("token_endpoint")?,
                introspection_endpoint: url("introspection_endpoint")?,
            },
            jwks: v.get("jwks")?.as_str()?.to_owned(),
        })
    }

    /// The published version (cheap: a few bytes), 0 if none.
    pub fn version(store: &dyn SharedStore, keys: &Slots) -> u64 {
        store
            .get(&keys.version)
            .and_then(|(v, _)| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn read(store: &dyn SharedStore, keys: &Slots) -> Option<KeyRecord> {
        KeyRecord::decode(&store.get(&keys.keys)?.0)
    }

    /// Publishes a new record (the caller holds the lease), one version above the last.
    pub fn publish(
        store: &dyn SharedStore,
        keys: &Slots,
        fetched_ms: u64,
        expires_ms: u64,
        discovery: &Discovery,
        jwks: &str,
    ) -> u64 {
        let version = KeyRecord::version(store, keys).saturating_add(1);
        let record = KeyRecord {
            version,
            fetched_ms,
            expires_ms,
            discovery: discovery.clone(),
            jwks: jwks.to_owned(),
        };
        store.set(&keys.keys, &record.encode(), None);
        store.set(&keys.version, version.to_string().as_bytes(), None);
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let s = MemoryStore::default();
        let k = "l";
        assert_eq!(Lease::acquire(&s, k, 0, 1_000, false, 30_000), Ok(()));
        assert_eq!(
            Lease::acquire(&s, k, 10, 1_000, false, 30_000),
            Err(Refusal::Held)
        );
        // A lost holder's lease runs out.
        assert_eq!(Lease::acquire(&s, k, 1_000, 1_000, false, 30_000), Ok(()));
        Lease::release(&s, k, Ended::Dropped);
        assert_eq!(Lease::acquire(&s, k, 1_001, 1_000, false, 30_000), Ok(()));
    }

    #[test]
    fn failures_back_off_for_everyone_and_kid_fetches_cool_down() {
        let s = MemoryStore::default();
        assert_eq!(Lease::acquire(&s, "l", 0, 1_000, false, 30_000), Ok(()));
        Lease::release(&s, "l", Ended::Failed { now_ms: 4_000 });
        assert_eq!(
            Lease::acquire(&s, "l", 4_999, 1_000, false, 30_000),
            Err(Refusal::Backoff)
        );
        assert_eq!(Lease::acquire(&s, "l", 5_000, 1_000, true, 30_000), Ok(()));
        Lease::release(&s, "l", Ended::Fetched);
        assert_eq!(
            Lease::acquire(&s, "l", 6_000, 1_000, true, 30_000),
            Err(Refusal::Cooldown)
        );
        assert_eq!(
            Lease::acquire(&s, "l", 6_000, 1_000, false, 30_000),
            Ok(()),
            "scheduled refreshes are not cooled down"
        );
        Lease::release(&s, "l", Ended::Fetched);
        assert_eq!(Lease::acquire(&s, "l", 35_000, 1_000, true, 30_000), Ok(()));
    }

    #[test]
    fn the_backoff_doubles_with_each_failure_in_a_row_until_a_set_comes_in() {
        let s = MemoryStore::default();
        let try_at = |t: u64| Lease::acquire(&s, "l", t, 1_000, false, 30_000);
        assert_eq!(try_at(0), Ok(()));
        Lease::release(&s, "l", Ended::Failed { now_ms: 0 });
        assert_eq!(try_at(1_000), Ok(()), "1 s after the first failure");
        Lease::release(&s, "l", Ended::Failed { now_ms: 1_000 });
        assert_eq!(try_at(2_999), Err(Refusal::Backoff), "2 s after the second");
        assert_eq!(try_at(3_000), Ok(()));
        // A fetch dropped unanswered learnt nothing: the next failure is the third.
        Lease::release(&s, "l", Ended::Dropped);
        assert_eq!(try_at(3_000), Ok(()));
        Lease::release(&s, "l", Ended::Failed { now_ms: 3_000 });
        assert_eq!(try_at(6_999), Err(Refusal::Backoff));
        assert_eq!(try_at(7_000), Ok(()));
        // A good set ends the run: the next failure backs off 1 s again.
        Lease::release(&s, "l", Ended::Fetched);
        assert_eq!(try_at(8_000), Ok(()));
        Lease::release(&s, "l", Ended::Failed { now_ms: 8_000 });
        assert_eq!(try_at(9_000), Ok(()));
    }

    #[test]
    fn creating_the_lease_never_wipes_one_taken_meanwhile() {
        let s = MemoryStore::default();
        // VM A takes the lease; VM B, which saw no key a moment ago, now "creates" it.
        assert_eq!(Lease::acquire(&s, "l", 0, 1_000, false, 30_000), Ok(()));
        assert!(!s.set("l", &Lease::default().encode(), Some(CREATE_ONLY)));
        assert_eq!(
            Lease::acquire(&s, "l", 10, 1_000, false, 30_000),
            Err(Refusal::Held)
        );
    }

    /// Any Wasm module of the process under the same vm_id can write these keys: a lease
    /// "held" further ahead than any fetch holds one (the longest timeout, twice, and a
    /// second) was not written by a fetch under way, and keeps nobody from fetching.
    #[test]
    fn a_lease_held_further_ahead_than_any_fetch_holds_one_is_over() {
        let s = MemoryStore::default();
        s.set("l", format!("{};0;0", u64::MAX).as_bytes(), None);
        assert_eq!(Lease::acquire(&s, "l", 1_000, 5_000, false, 30_000), Ok(()));
    }

    #[test]
    fn compare_and_swap_decides_a_race() {
        let s = MemoryStore::default();
        s.set("l", &Lease::default().encode(), None);
        let (_, cas) = s.get("l").unwrap();
        assert!(s.set("l", b"x", Some(cas)));
        assert!(!s.set("l", b"y", Some(cas)), "a stale cas loses");
    }

    #[test]
    fn records_round_trip_and_versions_grow() {
        let s = MemoryStore::default();
        let keys = Slots::for_issuer("https://idp");
        assert_eq!(KeyRecord::version(&s, &keys), 0);
        let d = Discovery {
            jwks_uri: Url::parse("https://idp/jwks").unwrap(),
            token_endpoint: Some(Url::parse("https://idp/token").unwrap()),
            introspection_endpoint: None,
        };
        assert_eq!(KeyRecord::publish(&s, &keys, 9, 99, &d, "{\"keys\":[]}"), 1);
        assert_eq!(
            KeyRecord::publish(&s, &keys, 10, 100, &d, "{\"keys\":[1]}"),
            2
        );
        let r = KeyRecord::read(&s, &keys).unwrap();
        assert_eq!(
            (r.version, r.expires_ms, r.jwks.as_str()),
            (2, 100, "{\"keys\":[1]}")
        );
        assert_eq!(r.discovery, d);
        s.set(&keys.keys, b"garbage", None);
        assert_eq!(KeyRecord::read(&s, &keys), None);
        assert_eq!(
            Slots::for_issuer("https://idp").lease.len(),
            "app-auth-filter/0123456789abcdef/lease".len()
        );
    }
}
