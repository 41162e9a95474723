//! Counters: a fixed list of names, behind a small interface that does nothing in tests
//! unless a test records it. The host defines each once (`define_metric`), so every worker's
//! counts add up in one proxy stat.

use crate::engine::{Method, Outcome};
use crate::response::Denial;
use std::cell::RefCell;
use std::collections::BTreeMap;

pub trait Counters: std::fmt::Debug {
    fn add(&self, counter: Counter);
}

/// Counts nothing.
#[derive(Debug, Default)]
pub struct NoCounters;

impl Counters for NoCounters {
    fn add(&self, _counter: Counter) {}
}

/// Counts in memory (tests, the CLI).
#[derive(Debug, Default)]
pub struct Recording(RefCell<BTreeMap<Counter, u64>>);

impl Counters for Recording {
    fn add(&self, counter: Counter) {
        let mut counts = self.0.borrow_mut();
        let count = counts.entry(counter).or_default();
        *count = count.saturating_add(1);
    }
}

impl Recording {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0.borrow().get(&counter).copied().unwrap_or(0)
    }
}

/// A counter: one of a fixed list, numbered so that counting is an array index (a request
/// adds to two or three of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Counter(u8);

impl Counter {
    /// Its name in the proxy's stats.
    pub fn name(self) -> &'static str {
        NAMES
            .get(self.index())
            .copied()
            .unwrap_or("app_auth.unknown")
    }

    /// Its position in [`ALL`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

macro_rules! counters {
    ($($konst:ident = $name:literal,)*) => {
        /// Numbers the counters in the order they are listed.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(u8)]
        enum Numbered { $($konst),* }
        $(pub const $konst: Counter = Counter(Numbered::$konst as u8);)*
        /// Every counter, for the host to define at start.
        pub const ALL: &[Counter] = &[$($konst),*];
        const NAMES: &[&str] = &[$($name),*];
    };
}

counters! {
    ALLOWED_BEARER = "app_auth.allowed.bearer",
    ALLOWED_CLIENT_CREDENTIALS = "app_auth.allowed.client_credentials",
    ALLOWED_INTROSPECTION = "app_auth.allowed.introspection",
    ALLOWED_KEY_AUTH = "app_auth.allowed.key_auth",
    DENIED_MISSING_CREDENTIAL = "app_auth.denied.missing_credential",
    DENIED_BAD_REQUEST = "app_auth.denied.bad_request",
    DENIED_INVALID_TOKEN = "app_auth.denied.invalid_token",
    DENIED_INSUFFICIENT_SCOPE = "app_auth.denied.insufficient_scope",
    DENIED_UNKNOWN_APPLICATION = "app_auth.denied.unknown_application",
    DENIED_NOT_APPROVED = "app_auth.denied.not_approved",
    DENIED_IDP_UNAVAILABLE = "app_auth.denied.idp_unavailable",
    DENIED_NO_POLICY = "app_auth.denied.no_policy",
    DENIED_TOO_MANY_HEADERS = "app_auth.denied.too_many_headers",
    CALLOUT_DISCOVERY_OK = "app_auth.callout.discovery.success",
    CALLOUT_DISCOVERY_FAILED = "app_auth.callout.discovery.failure",
    CALLOUT_JWKS_OK = "app_auth.callout.jwks.success",
    CALLOUT_JWKS_FAILED = "app_auth.callout.jwks.failure",
    CALLOUT_TOKEN_OK = "app_auth.callout.token.success",
    CALLOUT_TOKEN_FAILED = "app_auth.callout.token.failure",
    CALLOUT_INTROSPECTION_OK = "app_auth.callout.introspection.success",
    CALLOUT_INTROSPECTION_FAILED = "app_auth.callout.introspection.failure",
    CACHE_VERIFIED_HIT = "app_auth.cache.verified_token.hit",
    CACHE_VERIFIED_MISS = "app_auth.cache.verified_token.miss",
    CACHE_TOKEN_HIT = "app_auth.cache.exchanged_token.hit",
    CACHE_TOKEN_MISS = "app_auth.cache.exchanged_token.miss",
    CACHE_INTROSPECTION_HIT = "app_auth.cache.introspection.hit",
    CACHE_INTROSPECTION_MISS = "app_auth.cache.introspection.miss",
    SIGNATURES_CHECKED = "app_auth.signature.checked",
    SIGNATURES_NATIVE = "app_auth.signature.native",
    KEYS_STALE_SERVE = "app_auth.keys.stale_serve",
    KEYS_LEASE_WAIT = "app_auth.keys.lease_wait",
    KEYS_FROM_SHARED_DATA = "app_auth.keys.from_shared_data",
}

/// Histogram of callout latency, in milliseconds (recorded by the host).
pub const CALLOUT_LATENCY_MS: &str = "app_auth.callout.latency_ms";

/// Gauge of the filter VM's linear memory, in bytes, set from the tick when it changes. One
/// VM per worker, one gauge: the value is the last one a VM set (with one worker, its VM's).
pub const VM_MEMORY_BYTES: &str = "app_auth.vm.memory_bytes";

/// The counter an outcome adds to: allowed by method, denied by reason.
pub fn outcome_counter(method: Method, outcome: &Outcome) -> Counter {
    match outcome {
        Outcome::Allow(_) => match method {
            Method::ClientCredentials => ALLOWED_CLIENT_CREDENTIALS,
            Method::Introspection => ALLOWED_INTROSPECTION,
            Method::KeyAuth => ALLOWED_KEY_AUTH,
            Method::Bearer | Method::None => ALLOWED_BEARER,
        },
        Outcome::Deny(d) => denial_counter(d.denial),
    }
}

pub fn denial_counter(denial: Denial) -> Counter {
    match denial {
        Denial::NoPolicy => DENIED_NO_POLICY,
        Denial::MissingCredential | Denial::UnsupportedCredential => DENIED_MISSING_CREDENTIAL,
        Denial::InvalidRequest(_) => DENIED_BAD_REQUEST,
        Denial::InvalidToken(_) | Denial::TokenTooLarge => DENIED_INVALID_TOKEN,
        Denial::InsufficientScope => DENIED_INSUFFICIENT_SCOPE,
        Denial::UnknownApplication
        | Denial::WrongStrategy
        | Denial::DuplicateApiKey
        | Denial::InvalidClient => DENIED_UNKNOWN_APPLICATION,
        Denial::NotApproved => DENIED_NOT_APPROVED,
        Denial::IdpUnavailable(_) => DENIED_IDP_UNAVAILABLE,
        Denial::TooManyHeaders => DENIED_TOO_MANY_HEADERS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for (i, counter) in ALL.iter().enumerate() {
            assert_eq!(counter.index(), i, "numbered in order");
            let name = counter.name();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.starts_with("app_auth.")
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{name}"
            );
        }
    }
}
