//! Per-issuer key state with an injected clock: the discovery document and the JWK set, how
//! long each is trusted, which fetch is under way, and when the next may start.

use crate::jwt::KeySet;
use crate::oidc::Discovery;
use std::rc::Rc;

/// How long past its expiry a key set keeps serving while refreshes fail, by default.
pub const MAX_STALE_MS: u64 = 3_600_000;
/// Backoff after a failed fetch: doubles from the first value up to the second.
const BACKOFF_MS: (u64, u64) = (1_000, 10_000);
/// The longest backoff: a retry time further ahead than this was set before the clock
/// (wall-clock time, as hosts give it) was stepped back, and is over.
pub const MAX_BACKOFF_MS: u64 = BACKOFF_MS.1;
/// How far ahead of the clock a time may be and still be taken as it is: another VM may
/// stamp what it did a moment after this one read the clock. Further ahead, the clock was
/// stepped back since.
pub const CLOCK_SLACK_MS: u64 = 5_000;

/// The backoff after `failures` failed fetches in a row (at least one).
pub fn backoff_ms(failures: u32) -> u64 {
    let shift = failures.saturating_sub(1).min(10);
    (BACKOFF_MS.0 << shift).min(BACKOFF_MS.1)
}

/// Whether `t`, set earlier, is ahead of the clock now by more than the slack: the clock
/// was stepped back since it was set.
pub fn set_before_a_step_back(t: u64, now_ms: u64) -> bool {
    now_ms.saturating_add(CLOCK_SLACK_MS) < t
}

/// Which document a fetch is getting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Discovery,
    Jwks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    stage: Stage,
    /// After this, the fetch is presumed lost (its callout was cancelled with the context
    /// that sent it) and another may start.
    deadline_ms: u64,
}

/// Key state of one issuer.
#[derive(Debug, Default)]
pub struct IssuerKeys {
    discovery: Option<(Discovery, u64)>,
    keys: Option<(Rc<KeySet>, u64)>,
    in_flight: Option<InFlight>,
    /// When the last fetch triggered by an unknown `kid` started (cooldown).
    last_forced_ms: Option<u64>,
    failures: u32,
    retry_at_ms: u64,
    /// The last failure, for the log and for the denial it causes.
    pub last_error: Option<String>,
    /// The version of the shared record these keys came from (0: none).
    pub shared_version: u64,
    /// When to refresh: a tenth of the lifetime these keys were granted before they expire
    /// (the granted lifetime, not cache_ttl: an IdP's short max-age must not make every
    /// tick look due).
    refresh_at_ms: u64,
    /// When these keys were fetched (by this VM or the one that published them). A time
    /// ahead of the clock means the clock was stepped back since: their lifetime, counted
    /// from then, would stretch by the step ([`IssuerKeys::expire_after_a_step_back`]).
    fetched_ms: u64,
}

impl IssuerKeys {
    /// Keys that may verify a token now: fresh ones, or expired ones within the staleness
    /// bound (served while a refresh is tried).
    pub fn keys(&self, now_ms: u64, max_stale_ms: u64) -> Option<Rc<KeySet>> {
        let (keys, expires_ms) = self.keys.as_ref()?;
        (now_ms < expires_ms.saturating_add(max_stale_ms)).then(|| Rc::clone(keys))
    }

    /// Whether the keys are past their expiry (served stale, if at all).
    pub fn stale(&self, now_ms: u64) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|(_, expires_ms)| now_ms >= *expires_ms)
    }

    /// Takes keys another VM fetched and published. Our own fetch, if any, goes on; its
    /// result will simply be newer.
    pub fn adopt(
        &mut self,
        discovery: Discovery,
        keys: KeySet,
        fetched_ms: u64,
        expires_ms: u64,
        version: u64,
    ) {
        self.discovery = Some((discovery, expires_ms));
        self.replace_keys(keys, expires_ms);
        self.refresh_at_ms = refresh_at(fetched_ms, expires_ms);
        self.fetched_ms = fetched_ms;
        self.failures = 0;
        self.last_error = None;
        self.shared_version = version;
    }

    /// The new set in place of the old one, taking over what the old one worked out for
    /// the keys both hold.
    fn replace_keys(&mut self, keys: KeySet, expires_ms: u64) {
        if let Some((older, _)) = &self.keys {
            keys.inherit(older);
        }
        self.keys = Some((Rc::new(keys), expires_ms));
    }

    /// Whether keys are missing, expired, or within the last tenth of their lifetime.
    pub fn wants_refresh(&self, now_ms: u64) -> bool {
        self.keys.is_none() || now_ms >= self.refresh_at_ms
    }

    pub fn in_flight(&self, now_ms: u64) -> bool {
        self.in_flight.is_some_and(|f| now_ms < f.deadline_ms)
    }

    pub fn in_backoff(&self, now_ms: u64) -> bool {
        self.failures > 0
            && now_ms < self.retry_at_ms
            && !set_before_a_step_back(self.retry_at_ms, now_ms.saturating_add(MAX_BACKOFF_MS))
    }

    /// Whether an unknown `kid` may trigger a fetch now (once per cooldown).
    pub fn may_force(&self, now_ms: u64, cooldown_ms: u64) -> bool {
        self.last_forced_ms.is_none_or(|t| {
            now_ms >= t.saturating_add(cooldown_ms) || set_before_a_step_back(t, now_ms)
        })
    }

    /// Keys fetched ahead of the clock: it was stepped back since, by an unknown step, so
    /// how long ago they were fetched is unknown. They count as expired from now (served
    /// stale within the bound while a refresh is tried), never until their own expiry, which
    /// is ahead by the step.
    pub fn expire_after_a_step_back(&mut self, now_ms: u64) {
        if !set_before_a_step_back(self.fetched_ms, now_ms) {
            return;
        }
        if let Some((_, expires_ms)) = &mut self.keys {
            *expires_ms = (*expires_ms).min(now_ms);
        }
        if let Some((_, expires_ms)) = &mut self.discovery {
            *expires_ms = (*expires_ms).min(now_ms);
        }
        self.refresh_at_ms = now_ms;
        self.fetched_ms = now_ms;
    }

    /// Starts a fetch if none is under way and the backoff allows; returns what to fetch.
    /// `forced`: triggered by an unknown `kid` (starts the cooldown, skips the backoff wait
    /// only if there was no failure).
    pub fn start(&mut self, now_ms: u64, timeout_ms: u64, forced: bool) -> Option<Stage> {
        self.expire_after_a_step_back(now_ms);
        if self.in_flight(now_ms) || self.in_backoff(now_ms) {
            return None;
        }
        if forced {
            self.last_forced_ms = Some(now_ms);
        }
        let stage = match &self.discovery {
            Some((_, expires_ms)) if now_ms < *expires_ms => Stage::Jwks,
            _ => Stage::Discovery,
        };
        self.in_flight = Some(InFlight {
            stage,
            deadline_ms: now_ms.saturating_add(timeout_ms).saturating_add(1_000),
        });
        Some(stage)
    }

    /// The discovery document arrived and parsed; the key set is next.
    pub fn discovered(&mut self, discovery: Discovery, now_ms: u64, ttl_ms: u64, timeout_ms: u64) {
        self.discovery = Some((discovery, now_ms.saturating_add(ttl_ms)));
        self.in_flight = Some(InFlight {
            stage: Stage::Jwks,
            deadline_ms: now_ms.saturating_add(timeout_ms).saturating_add(1_000),
        });
    }

    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref().map(|(d, _)| d)
    }

    /// A new key set replaces the old one whole (never merged).
    pub fn keys_fetched(&mut self, keys: KeySet, now_ms: u64, ttl_ms: u64) {
        self.replace_keys(keys, now_ms.saturating_add(ttl_ms));
        self.refresh_at_ms = refresh_at(now_ms, now_ms.saturating_add(ttl_ms));
        self.fetched_ms = now_ms;
        if let Some((_, expires_ms)) = &mut self.discovery {
            *expires_ms = now_ms.saturating_add(ttl_ms);
        }
        self.in_flight = None;
        self.failures = 0;
        self.last_error = None;
    }

    /// A fetch failed: nothing it returned is kept, the previous keys stay, and the next
    /// attempt waits out a growing backoff.
    pub fn failed(&mut self, now_ms: u64, error: String) {
        self.in_flight = None;
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(backoff_ms(self.failures));
        // A discovery document that led to a failed key fetch is suspect too: the next
        // fetch starts from discovery again. Its endpoints (validated: it named the issuer)
        // stay usable meanwhile: introspection needs no signing key, and an IdP that issues
        // only opaque tokens may publish none.
        if self.keys.is_none() {
            if let Some((_, expires_ms)) = &mut self.discovery {
                *expires_ms = now_ms;
            }
        }
        self.last_error = Some(error);
    }

    /// The fetch under way will never be answered (the host dropped it): none is under way
    /// any more, and nothing failed.
    pub fn abandoned(&mut self) {
        self.in_flight = None;
    }

    /// Which stage is under way, if any.
    pub fn stage(&self, now_ms: u64) -> Option<Stage> {
        self.in_flight
            .filter(|f| now_ms < f.deadline_ms)
            .map(|f| f.stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::Url;

    fn discovery() -> Discovery {
        Discovery {
            jwks_uri: Url::parse("http://idp/jwks").unwrap(),
            token_endpoint: None,
            introspection_endpoint: None,
        }
    }

    #[test]
    fn one_fetch_at_a_time_until_its_deadline() {
        let mut k = IssuerKeys::default();
        assert_eq!(k.start(0, 1_000, false), Some(Stage::Discovery));
        assert_eq!(k.start(500, 1_000, false), None);
        assert!(k.in_flight(1_999));
        // Lost fetch: after timeout + 1 s another may start.
        assert_eq!(k.start(2_000, 1_000, false), Some(Stage::Discovery));
    }

    #[test]
    fn a_key_set_fetched_or_adopted_again_keeps_what_the_last_one_worked_out() {
        let set = || {
            let jwks = crate::jwt::fixtures::jwks_value().to_string();
            KeySet::parse(jwks.as_bytes(), 8, 16).unwrap().0
        };
        let mut k = IssuerKeys::default();
        k.keys_fetched(set(), 0, 10_000);
        k.keys(0, 0).unwrap().make_ecdsa_multiples();
        k.keys_fetched(set(), 1_000, 10_000);
        assert_eq!(k.keys(1_000, 0).unwrap().ecdsa_multiples_made(), 1);
        k.adopt(discovery(), set(), 2_000, 12_000, 2);
        assert_eq!(k.keys(2_000, 0).unwrap().ecdsa_multiples_made(), 1);
    }

    #[test]
    fn keys_expire_then_serve_stale_for_a_bounded_time() {
        let mut k = IssuerKeys::default();
        k.start(0, 1_000, false);
        k.discovered(discovery(), 0, 10_000, 1_000);
        assert_eq!(k.stage(1), Some(Stage::Jwks));
        k.keys_fetched(KeySet::default(), 0, 10_000);
        assert!(k.keys(9_999, MAX_STALE_MS).is_some());
        assert!(!k.wants_refresh(8_999));
        assert!(k.wants_refresh(9_000));
        assert!(k.keys(10_000 + MAX_STALE_MS - 1, MAX_STALE_MS).is_some());
        assert!(k.keys(10_000 + MAX_STALE_MS, MAX_STALE_MS).is_none());
        // Discovery still valid: the next fetch is the key set only.
        assert_eq!(k.start(5_000, 1_000, false), Some(Stage::Jwks));
    }

    #[test]
    fn a_short_granted_lifetime_is_refreshed_by_its_own_clock() {
        // An IdP's max-age of 30 s with a cache_ttl of an hour: due at 27 s, not every tick.
        let mut k = IssuerKeys::default();
        k.start(0, 1_000, false);
        k.discovered(discovery(), 0, 30_000, 1_000);
        k.keys_fetched(KeySet::default(), 0, 30_000);
        assert!(!k.wants_refresh(1_000));
        assert!(!k.wants_refresh(26_999));
        assert!(k.wants_refresh(27_000));
        let mut adopted = IssuerKeys::default();
        adopted.adopt(discovery(), KeySet::default(), 100_000, 130_000, 1);
        assert!(!adopted.wants_refresh(126_999));
        assert!(adopted.wants_refresh(127_000));
    }

    #[test]
    fn failures_back_off_and_keep_old_keys() {
        let mut k = IssuerKeys::default();
        k.start(0, 1_000, false);
        k.failed(0, "down".into());
        assert!(k.in_backoff(999));
        assert_eq!(k.start(999, 1_000, false), None);
        assert_eq!(k.start(1_000, 1_000, false), Some(Stage::Discovery));
        k.failed(1_000, "down".into());
        assert!(k.in_backoff(2_999));
        assert!(!k.in_backoff(3_000));
        for i in 0..20 {
            k.failed(10_000 * i, "down".into());
        }
        assert!(!k.in_backoff(190_000 + 10_000), "backoff is capped");
        assert_eq!(k.last_error.as_deref(), Some("down"));
    }

    /// A clock stepped back a day after a fetch, with the IdP down since: the step is seen
    /// at once (the refresh it triggers fails), and two hours later keys fetched with a
    /// cache_ttl of 300 s must not verify any more (a forward clock trusts them 300 s, then
    /// MAX_STALE_MS stale). Their own expiry, a day ahead, must not count.
    #[test]
    fn a_clock_stepped_back_does_not_stretch_the_keys_lifetime_while_the_idp_is_down() {
        const DAY: u64 = 86_400_000;
        let fetched = 10 * DAY;
        let mut k = IssuerKeys::default();
        k.start(fetched, 1_000, false);
        k.discovered(discovery(), fetched, 300_000, 1_000);
        k.keys_fetched(KeySet::default(), fetched, 300_000);
        // Stepped back a day (seen at the next tick): due for a refresh at once, which fails.
        let stepped = fetched - DAY;
        k.expire_after_a_step_back(stepped);
        assert!(k.wants_refresh(stepped));
        assert!(k.start(stepped, 1_000, false).is_some());
        k.failed(stepped, "down".into());
        let later = stepped + 2 * 3_600_000;
        assert!(
            k.keys(later, MAX_STALE_MS).is_none(),
            "keys fetched 2 h ago (cache_ttl 300 s, stale for at most 1 h) still verify"
        );
    }

    #[test]
    fn unknown_kid_fetches_once_per_cooldown() {
        let mut k = IssuerKeys::default();
        assert!(k.may_force(0, 30_000));
        k.start(0, 1_000, true);
        k.discovered(discovery(), 0, 60_000, 1_000);
        k.keys_fetched(KeySet::default(), 0, 60_000);
        assert!(!k.may_force(29_999, 30_000));
        assert!(k.may_force(30_000, 30_000));
    }
}

/// A tenth of the lifetime before expiry.
fn refresh_at(fetched_ms: u64, expires_ms: u64) -> u64 {
    expires_ms.saturating_sub(expires_ms.saturating_sub(fetched_ms) / 10)
}

/// Hashes the last [`TailHash::BYTES`] bytes of a key and its length, with foldhash keyed
/// once per cache from the standard library's random keys (on wasm32-wasip1, the host's
/// `random_get`). The keys here are tokens, a kilobyte long, whose tails are signatures (or
/// random strings, or SHA-256 digests): hashing the tail spreads them as well as hashing all
/// of it, at a fraction of the cost on every request. Equality still compares whole keys, so
/// two tokens that share a tail are never confused; and only tokens that passed verification
/// are ever inserted, so their tails are not the client's to choose (nor are a client's
/// credentials: a Basic value is kept in its plain spelling only, `credential::plain_basic`,
/// not in the many that end alike). So the hash need not be a cryptographic one, and
/// foldhash is much the cheaper: measured natively against SipHash, 305 fewer instructions
/// per repeated token (a quarter of the engine's work on one) and 1,460 per new one.
#[derive(Debug, Clone, Default)]
pub struct TailHash(Keyed);

impl TailHash {
    pub const BYTES: usize = 32;
}

/// foldhash keyed once per table from the standard library's random keys: the hash of the
/// engine's lookup tables (applications by `client_id`, keys by `kid`, routes, the memos),
/// in place of std's SipHash, which cost about 1,350 native instructions per new token over
/// those lookups (a twentieth of the engine's work on one). Their keys come from the
/// configuration or the IdP, or sit in a memo that is emptied at 64 entries, and a random
/// key per table keeps any collision out of a client's reach.
#[derive(Debug, Clone)]
pub struct Keyed(foldhash::fast::FixedState);

impl Default for Keyed {
    fn default() -> Keyed {
        use std::hash::BuildHasher as _;
        let key = std::collections::hash_map::RandomState::new().hash_one(0_u8);
        Keyed(foldhash::fast::FixedState::with_seed(key))
    }
}

impl std::hash::BuildHasher for Keyed {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A `HashMap` with the [`Keyed`] hash.
pub type KeyedMap<K, V> = std::collections::HashMap<K, V, Keyed>;

impl std::hash::BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher {
            key: (self.0).0.clone(),
            hash: 0,
        }
    }
}

/// A key's hash is its last write's (a slice's length, written first, is in it anyway).
pub struct TailHasher {
    key: foldhash::fast::FixedState,
    hash: u64,
}

impl std::hash::Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.hash = tail_hash(&self.key, bytes);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// One copy in the module, not one inlined into each cache's lookup and insert (3 KB of
/// `.wasm`).
#[inline(never)]
fn tail_hash(key: &foldhash::fast::FixedState, bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let tail = bytes
        .get(bytes.len().saturating_sub(TailHash::BYTES)..)
        .unwrap_or(bytes);
    let mut hasher = key.build_hasher();
    hasher.write(tail);
    hasher.write_usize(bytes.len());
    hasher.finish()
}

/// A [`TtlCache`] value and what decides how long it is kept.
#[derive(Debug)]
struct Entry<V> {
    value: V,
    until_ms: u64,
    /// Its position in the insertion order.
    serial: u64,
    /// An entry inserted ahead of the clock was kept from before a step back: its lifetime,
    /// counted from then, would stretch by the step.
    inserted_ms: u64,
}

/// A bounded map whose entries expire. When full, an insert evicts the oldest entry (first
/// in, first out: O(1), so a stream of distinct keys costs the same per insert as a hit),
/// and memory stays flat whatever the keys.
#[derive(Debug)]
pub struct TtlCache<V> {
    /// Keys are shared with `order`: one copy of each (tokens are a kilobyte or so). Bytes:
    /// a lookup compares bytes, and a token read from a request need not be checked to be
    /// text first (only text is ever inserted, so only text can match).
    entries: std::collections::HashMap<Rc<[u8]>, Entry<V>, TailHash>,
    /// Insertion order: (key, serial). A key overwritten later has a newer serial; its old
    /// position is skipped when it comes up.
    order: std::collections::VecDeque<(Rc<[u8]>, u64)>,
    serial: u64,
    capacity: usize,
    /// Whether the map and the queue have been given their full size (done once, when the
    /// cache first fills).
    full_size: bool,
    /// Who may take a full cache's room ([`TtlCache::with_doorkeeper`]); `None`: any key.
    doorkeeper: Option<Doorkeeper>,
}

/// The door of a full cache (TinyLFU's "doorkeeper", Einziger, Friedman and Manes, 2017):
/// a new key takes the oldest key's place only at its second offer. A stream of keys each
/// offered once (new tokens used for one request each) then costs no insert and evicts
/// nothing, and the keys in use stay. The first offer is remembered as a 32-bit fingerprint
/// of the key's hash (the cache's keyed one) in a slot picked by the rest of the hash; a later
/// key landing there takes the slot. Two to four slots (four bytes each) for each entry the
/// cache holds (twice its capacity, up to a power of two), taken when the cache first fills.
#[derive(Debug, Default)]
struct Doorkeeper {
    slots: Vec<u32>,
}

impl Doorkeeper {
    /// Whether the key of `hash` was offered before (its slot is then free again); if not,
    /// it is remembered now.
    fn second_offer(&mut self, hash: u64, capacity: usize) -> bool {
        if self.slots.is_empty() {
            let slots = capacity.saturating_mul(2).clamp(64, 1 << 20);
            self.slots = vec![0; slots.next_power_of_two()];
        }
        let index = (hash >> 32) as usize & self.slots.len().wrapping_sub(1);
        // Never 0, which is an empty slot's.
        let fingerprint = hash as u32 | 1;
        let Some(slot) = self.slots.get_mut(index) else {
            return true;
        };
        if *slot == fingerprint {
            *slot = 0;
            true
        } else {
            *slot = fingerprint;
            false
        }
    }
}

impl<V> TtlCache<V> {
    pub fn new(capacity: usize) -> TtlCache<V> {
        TtlCache {
            entries: std::collections::HashMap::default(),
            order: std::collections::VecDeque::new(),
            serial: 0,
            capacity: capacity.max(1),
            full_size: false,
            doorkeeper: None,
        }
    }

    /// A cache that, once full, takes a new key only at its second offer (TinyLFU's
    /// doorkeeper, `Doorkeeper` below): for values that are cheap to work out again once, such
    /// as a signature verified natively, and not for answers that cost a callout.
    pub fn with_doorkeeper(capacity: usize) -> TtlCache<V> {
        TtlCache {
            doorkeeper: Some(Doorkeeper::default()),
            ..TtlCache::new(capacity)
        }
    }

    /// Whether a key not in the cache may take a full cache's room now.
    fn admits(&mut self, key: &[u8]) -> bool {
        use std::hash::BuildHasher as _;
        match &mut self.doorkeeper {
            None => true,
            Some(door) => door.second_offer(self.entries.hasher().hash_one(key), self.capacity),
        }
    }

    /// Sizes the map and the queue, once, for a full cache evicting for ever: the map with
    /// room for twice its entries (a hash map that evicts leaves tombstones behind; with
    /// that room it clears them in place instead of growing, once, at some later insert), the
    /// queue for its bound. So the memory a full cache holds is the memory it holds when it
    /// first fills, however many keys pass through it.
    fn size_for_eviction(&mut self) {
        if self.full_size {
            return;
        }
        self.full_size = true;
        self.entries.reserve(
            self.capacity
                .saturating_sub(self.entries.len())
                .saturating_add(self.capacity),
        );
        let bound = self.capacity.saturating_mul(2);
        self.order.reserve(bound.saturating_sub(self.order.len()));
    }

    /// The value under `key` if it has not expired at `now_ms`, nor was inserted before the
    /// clock was stepped back.
    pub fn get(&self, key: &(impl AsRef<[u8]> + ?Sized), now_ms: u64) -> Option<&V> {
        self.get_until(key, now_ms).map(|(v, _)| v)
    }

    /// As [`TtlCache::get`], with when the value expires.
    pub fn get_until(&self, key: &(impl AsRef<[u8]> + ?Sized), now_ms: u64) -> Option<(&V, u64)> {
        self.get_bytes(key.as_ref(), now_ms)
    }

    // The generic methods are thin: one copy of the work per value type, not one per key
    // type too (a copy is a few KB of the module).
    fn get_bytes(&self, key: &[u8], now_ms: u64) -> Option<(&V, u64)> {
        match self.entries.get(key) {
            Some(e) if now_ms < e.until_ms && !set_before_a_step_back(e.inserted_ms, now_ms) => {
                Some((&e.value, e.until_ms))
            }
            _ => None,
        }
    }

    /// Keeps `value` under `key` until `until_ms` (the key is copied once, into the one
    /// allocation the map and the queue share); in a full cache with a doorkeeper, a new key
    /// only at its second offer.
    pub fn insert(
        &mut self,
        key: &(impl AsRef<[u8]> + ?Sized),
        value: V,
        until_ms: u64,
        now_ms: u64,
    ) {
        self.insert_bytes(key.as_ref(), value, until_ms, now_ms);
    }

    fn insert_bytes(&mut self, key: &[u8], value: V, until_ms: u64, now_ms: u64) {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.capacity {
                if !self.admits(key) {
                    return;
                }
                self.size_for_eviction();
            }
            while self.entries.len() >= self.capacity {
                let Some((old, old_serial)) = self.order.pop_front() else {
                    break;
                };
                // One lookup: the position is stale if the key was overwritten since.
                if let std::collections::hash_map::Entry::Occupied(e) = self.entries.entry(old) {
                    if e.get().serial == old_serial {
                        e.remove();
                    }
                }
            }
        }
        self.serial = self.serial.wrapping_add(1);
        let serial = self.serial;
        let key: Rc<[u8]> = Rc::from(key);
        self.order.push_back((Rc::clone(&key), serial));
        let entry = Entry {
            value,
            until_ms,
            serial,
            inserted_ms: now_ms,
        };
        self.entries.insert(key, entry);
        // Overwrites leave stale positions behind; keep the queue within twice the map.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|e| e.serial == *s));
        }
    }

    pub fn remove(&mut self, key: &(impl AsRef<[u8]> + ?Sized)) {
        self.entries.remove(key.as_ref());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Values worked out from their key alone (any entry can be dropped and worked out again),
/// kept so that a hot key is worked out once. Bounded: emptied when full. Shared (`&self`),
/// as the engine's lookups are.
#[derive(Debug)]
pub struct Memo<V> {
    entries: std::cell::RefCell<KeyedMap<Box<str>, V>>,
    capacity: usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(capacity: usize) -> Memo<V> {
        Memo {
            entries: std::cell::RefCell::default(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.entries.borrow().get(key).cloned()
    }

    pub fn remember(&self, key: &str, value: V) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key.into(), value);
    }

    #[cfg(test)]
    pub fn knows(&self, key: &str) -> bool {
        self.entries.borrow().contains_key(key)
    }
}

/// Fetches under way, keyed by what they fetch, so that concurrent requests needing the same
/// token exchange or introspection share one callout.
#[derive(Debug, Default)]
pub struct Flights {
    by_key: std::collections::HashMap<String, (u64, u64)>,
    /// Each fetch's key, and the longest its answer may be cached: the shortest `cache_ttl`
    /// of the requests that started or joined it (known when the answer comes, whoever
    /// still waits for it then).
    by_serial: std::collections::HashMap<u64, (String, u64)>,
    next: u64,
}

impl Flights {
    /// Starts a fetch for `key` unless one is under way (and not past its deadline), or
    /// `again` (a second fetch of the same key, whose answer is used like the first's);
    /// returns the new fetch's serial number. `ttl_ms`: the longest the requester lets the
    /// answer be cached (a request that joins a fetch can only shorten it).
    pub fn start(
        &mut self,
        key: &str,
        now_ms: u64,
        timeout_ms: u64,
        again: bool,
        ttl_ms: u64,
    ) -> Option<u64> {
        if let Some((serial, deadline)) = self.by_key.get(key) {
            let serial = *serial;
            if now_ms < *deadline {
                if !again {
                    if let Some((_, ttl)) = self.by_serial.get_mut(&serial) {
                        *ttl = (*ttl).min(ttl_ms);
                    }
                    return None;
                }
            } else {
                self.by_serial.remove(&serial);
            }
        }
        self.next = self.next.wrapping_add(1);
        let serial = self.next;
        let deadline = now_ms.saturating_add(timeout_ms).saturating_add(1_000);
        self.by_key.insert(key.to_owned(), (serial, deadline));
        self.by_serial.insert(serial, (key.to_owned(), ttl_ms));
        Some(serial)
    }

    /// The fetch `serial` ended; returns its key and how long its answer may be cached, if
    /// it was still the current one.
    pub fn finish(&mut self, serial: u64) -> Option<(String, u64)> {
        let (key, ttl_ms) = self.by_serial.remove(&serial)?;
        if self.by_key.get(&key).is_some_and(|(s, _)| *s == serial) {
            self.by_key.remove(&key);
        }
        Some((key, ttl_ms))
    }

    pub fn in_flight(&self, key: &str, now_ms: u64) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|(_, deadline)| now_ms < *deadline)
    }
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[test]
    fn entries_expire_and_capacity_holds() {
        let mut c = TtlCache::new(3);
        c.insert("a", 1, 100, 0);
        assert_eq!(c.get("a", 99), Some(&1));
        assert_eq!(c.get("a", 100), None);
        c.insert("b", 2, 50, 0);
        c.insert("c", 3, 200, 0);
        c.insert("a", 5, 100, 0);
        c.insert("d", 4, 300, 0);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b", 0), None, "the oldest entry made room");
        assert_eq!(c.get("a", 0), Some(&5), "an overwrite counts as new");
        for i in 0..1000 {
            c.insert(&format!("k{i}"), i, 1_000 + i, 10);
            c.insert("hot", i, 5_000, 10);
        }
        assert_eq!(c.len(), 3);
        assert!(
            c.order.len() <= 6,
            "the order queue stays bounded: {}",
            c.order.len()
        );
    }

    /// The memory a full cache holds stays what it was when it first filled, however many
    /// keys pass through: the map never grows again (without room for its tombstones, it
    /// would double once, at some insert long after filling), nor does the queue.
    #[test]
    fn a_full_cache_keeps_its_size() {
        let capacity = 1_000;
        let mut c = TtlCache::new(capacity);
        let key = |i: usize| format!("header.payload.{i:064}");
        for i in 0..capacity {
            c.insert(&key(i), i, u64::MAX, 0);
        }
        // The first eviction.
        c.insert(&key(capacity), capacity, u64::MAX, 0);
        let (map, queue) = (c.entries.capacity(), c.order.capacity());
        for i in capacity + 1..capacity * 100 {
            c.insert(&key(i), i, u64::MAX, 0);
            // Every tenth key is sent again: overwrites leave stale queue positions.
            if i % 10 == 0 {
                c.insert(&key(i), i, u64::MAX, 0);
            }
            assert!(
                c.entries.capacity() <= map && c.order.capacity() <= queue,
                "grew at insert {i}: map {} (was {map}), queue {} (was {queue})",
                c.entries.capacity(),
                c.order.capacity()
            );
        }
        assert_eq!(c.len(), capacity);
        assert_eq!(
            c.get(&key(capacity * 100 - 1), 0),
            Some(&(capacity * 100 - 1))
        );
        assert_eq!(c.get(&key(0), 0), None);
    }

    #[test]
    fn a_full_cache_with_a_doorkeeper_takes_a_new_key_at_its_second_offer() {
        let mut c = TtlCache::with_doorkeeper(3);
        for k in ["a", "b", "c"] {
            c.insert(k, 1, 100, 0);
        }
        assert_eq!(c.len(), 3, "room: taken at once");
        c.insert("d", 1, 100, 0);
        assert_eq!(
            (c.get("d", 0), c.get("a", 0)),
            (None, Some(&1)),
            "first offer"
        );
        c.insert("d", 2, 100, 0);
        assert_eq!(
            (c.get("d", 0), c.get("a", 0)),
            (Some(&2), None),
            "second offer"
        );
        c.insert("d", 3, 100, 0);
        assert_eq!(
            c.get("d", 0),
            Some(&3),
            "a key in the cache is overwritten at once"
        );
        // A stream of keys offered once each leaves the cache as it was.
        for i in 0..10_000 {
            c.insert(&format!("once-{i}"), 0, 100, 0);
        }
        assert_eq!(
            (c.get("b", 0), c.get("c", 0), c.get("d", 0)),
            (Some(&1), Some(&1), Some(&3))
        );
        // Without one, the stream takes every place.
        let mut plain = TtlCache::new(3);
        for k in ["b", "c", "d", "once-0", "once-1", "once-2"] {
            plain.insert(k, 1, 100, 0);
        }
        assert_eq!((plain.get("b", 0), plain.get("d", 0)), (None, None));
    }

    /// What the doorkeeper remembers is one slot per hash; a key whose slot another key took
    /// since is a first offer again, and a second offer frees its slot.
    #[test]
    fn the_doorkeeper_remembers_a_first_offer_in_a_slot_of_its_own() {
        let mut door = Doorkeeper::default();
        let (a, b) = (0x0000_0005_1234_5678_u64, 0x0000_0005_9999_0000_u64);
        assert!(!door.second_offer(a, 3));
        assert_eq!(door.slots.len(), 64, "at least 64 slots");
        assert!(door.second_offer(a, 3));
        assert!(
            !door.second_offer(a, 3),
            "its slot was freed by the second offer"
        );
        assert!(!door.second_offer(b, 3), "the same slot: b takes it");
        assert!(!door.second_offer(a, 3), "a is new again");
        assert!(
            !door.second_offer(0, 3),
            "a zero hash is not an empty slot's"
        );
        let mut big = Doorkeeper::default();
        big.second_offer(a, 10_000);
        assert_eq!(big.slots.len(), 32_768);
    }

    #[test]
    fn keys_that_share_a_tail_stay_apart() {
        let tail = "x".repeat(TailHash::BYTES);
        let mut c = TtlCache::new(10);
        c.insert(&format!("header.payload-a.{tail}"), 1, 100, 0);
        c.insert(&format!("header.payload-b.{tail}"), 2, 100, 0);
        c.insert(&tail, 3, 100, 0);
        assert_eq!(c.get(&format!("header.payload-a.{tail}"), 0), Some(&1));
        assert_eq!(c.get(&format!("header.payload-b.{tail}"), 0), Some(&2));
        assert_eq!(c.get(&tail, 0), Some(&3));
        assert_eq!(
            c.get(&format!("header.payload-c.{tail}"), 0),
            None,
            "a forged head"
        );
        assert_eq!(c.get(&format!("y{tail}"), 0), None);
        assert_eq!(c.get("", 0), None);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn one_flight_per_key_until_it_ends_or_times_out() {
        let mut f = Flights::default();
        let s = f.start("k", 0, 1_000, false, 60_000).unwrap();
        assert_eq!(f.start("k", 10, 1_000, false, 60_000), None);
        assert!(f.in_flight("k", 10));
        assert_eq!(f.finish(s).map(|(k, _)| k).as_deref(), Some("k"));
        assert!(!f.in_flight("k", 10));
        let s1 = f.start("k", 0, 1_000, false, 60_000).unwrap();
        let s2 = f.start("k", 2_001, 1_000, false, 60_000).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(
            f.finish(s1),
            None,
            "a lost fetch's late answer is not the current one"
        );
        assert_eq!(f.finish(s2).map(|(k, _)| k).as_deref(), Some("k"));
    }

    #[test]
    fn an_answer_is_cached_no_longer_than_any_of_its_requesters_allows() {
        let mut f = Flights::default();
        let s = f.start("k", 0, 1_000, false, 300_000).unwrap();
        assert_eq!(f.start("k", 10, 1_000, false, 10_000), None);
        assert_eq!(f.start("k", 20, 1_000, false, 60_000), None);
        assert_eq!(f.finish(s), Some(("k".to_owned(), 10_000)));
    }

    #[test]
    fn a_second_flight_of_a_key_is_answered_like_the_first() {
        let mut f = Flights::default();
        let s1 = f.start("k", 0, 1_000, true, 60_000).unwrap();
        let s2 = f.start("k", 10, 1_000, true, 60_000).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(f.finish(s1).map(|(k, _)| k).as_deref(), Some("k"));
        assert!(f.in_flight("k", 20), "the second is still under way");
        assert_eq!(f.finish(s2).map(|(k, _)| k).as_deref(), Some("k"));
        assert!(!f.in_flight("k", 20));
        assert_eq!(f.finish(s2), None);
    }
}

#[cfg(test)]
mod memo_tests {
    use super::Memo;

    #[test]
    fn keeps_what_it_is_given_and_empties_when_full() {
        let m = Memo::new(2);
        assert_eq!(m.get("a"), None);
        m.remember("a", 1);
        m.remember("b", 2);
        assert_eq!((m.get("a"), m.get("b")), (Some(1), Some(2)));
        m.remember("c", 3);
        assert_eq!((m.get("a"), m.get("b"), m.get("c")), (None, None, Some(3)));
        assert!(m.knows("c") && !m.knows("a"));
    }
}
