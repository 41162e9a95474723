//! Per-issuer key state with an injected clock: the discovery document and the JWK set, how
//! long each is trusted, which fetch is under way, and when the next may start.

use crate::jwt::KeySet;
use crate::oidc::Discovery;
use std::rc::Rc;

/// How long past its expiry a key set keeps serving while refreshes fail.
pub const MAX_STALE_MS: u64 = 3_600_000;
/// Backoff after a failed fetch: doubles from the first value up to the second.
const BACKOFF_MS: (u64, u64) = (1_000, 10_000);

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
}

impl IssuerKeys {
    /// Keys that may verify a token now: fresh ones, or expired ones within the staleness
    /// bound (served while a refresh is tried).
    pub fn keys(&self, now_ms: u64) -> Option<Rc<KeySet>> {
        let (keys, expires_ms) = self.keys.as_ref()?;
        (now_ms < expires_ms.saturating_add(MAX_STALE_MS)).then(|| Rc::clone(keys))
    }

    /// Whether keys are missing, expired, or within the last tenth of their lifetime.
    pub fn wants_refresh(&self, now_ms: u64, ttl_ms: u64) -> bool {
        match &self.keys {
            None => true,
            Some((_, expires_ms)) => now_ms.saturating_add(ttl_ms / 10) >= *expires_ms,
        }
    }

    pub fn in_flight(&self, now_ms: u64) -> bool {
        self.in_flight.is_some_and(|f| now_ms < f.deadline_ms)
    }

    pub fn in_backoff(&self, now_ms: u64) -> bool {
        self.failures > 0 && now_ms < self.retry_at_ms
    }

    /// Whether an unknown `kid` may trigger a fetch now (once per cooldown).
    pub fn may_force(&self, now_ms: u64, cooldown_ms: u64) -> bool {
        self.last_forced_ms
            .is_none_or(|t| now_ms >= t.saturating_add(cooldown_ms))
    }

    /// Starts a fetch if none is under way and the backoff allows; returns what to fetch.
    /// `forced`: triggered by an unknown `kid` (starts the cooldown, skips the backoff wait
    /// only if there was no failure).
    pub fn start(&mut self, now_ms: u64, timeout_ms: u64, forced: bool) -> Option<Stage> {
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
        self.keys = Some((Rc::new(keys), now_ms.saturating_add(ttl_ms)));
        self.in_flight = None;
        self.failures = 0;
        self.last_error = None;
    }

    /// A fetch failed: nothing it returned is kept, the previous keys stay, and the next
    /// attempt waits out a growing backoff.
    pub fn failed(&mut self, now_ms: u64, error: String) {
        self.in_flight = None;
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(10);
        let backoff = (BACKOFF_MS.0 << shift).min(BACKOFF_MS.1);
        self.retry_at_ms = now_ms.saturating_add(backoff);
        // A discovery document that led to a failed key fetch is suspect too.
        if self.keys.is_none() {
            self.discovery = None;
        }
        self.last_error = Some(error);
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
    fn keys_expire_then_serve_stale_for_a_bounded_time() {
        let mut k = IssuerKeys::default();
        k.start(0, 1_000, false);
        k.discovered(discovery(), 0, 10_000, 1_000);
        assert_eq!(k.stage(1), Some(Stage::Jwks));
        k.keys_fetched(KeySet::default(), 0, 10_000);
        assert!(k.keys(9_999).is_some());
        assert!(!k.wants_refresh(8_999, 10_000));
        assert!(k.wants_refresh(9_000, 10_000));
        assert!(k.keys(10_000 + MAX_STALE_MS - 1).is_some());
        assert!(k.keys(10_000 + MAX_STALE_MS).is_none());
        // Discovery still valid: the next fetch is the key set only.
        assert_eq!(k.start(5_000, 1_000, false), Some(Stage::Jwks));
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
