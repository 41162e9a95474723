//! Counters: a fixed list of names, behind a small interface that does nothing in tests
//! unless a test records it. The host defines each once (`define_metric`), so every worker's
//! counts add up in one proxy stat.

use crate::engine::{Method, Outcome};
use crate::response::Denial;
use std::cell::RefCell;
use std::collections::BTreeMap;

pub trait Counters: std::fmt::Debug {
    fn add(&self, name: &'static str);
}

/// Counts nothing.
#[derive(Debug, Default)]
pub struct NoCounters;

impl Counters for NoCounters {
    fn add(&self, _name: &'static str) {}
}

/// Counts in memory (tests, the CLI).
#[derive(Debug, Default)]
pub struct Recording(RefCell<BTreeMap<&'static str, u64>>);

impl Counters for Recording {
    fn add(&self, name: &'static str) {
        let mut counts = self.0.borrow_mut();
        let count = counts.entry(name).or_default();
        *count = count.saturating_add(1);
    }
}

impl Recording {
    pub fn get(&self, name: &str) -> u64 {
        self.0.borrow().get(name).copied().unwrap_or(0)
    }
}

pub const ALLOWED_BEARER: &str = "app_auth.allowed.bearer";
pub const ALLOWED_CLIENT_CREDENTIALS: &str = "app_auth.allowed.client_credentials";
pub const ALLOWED_INTROSPECTION: &str = "app_auth.allowed.introspection";
pub const ALLOWED_KEY_AUTH: &str = "app_auth.allowed.key_auth";

pub const DENIED_MISSING_CREDENTIAL: &str = "app_auth.denied.missing_credential";
pub const DENIED_BAD_REQUEST: &str = "app_auth.denied.bad_request";
pub const DENIED_INVALID_TOKEN: &str = "app_auth.denied.invalid_token";
pub const DENIED_INSUFFICIENT_SCOPE: &str = "app_auth.denied.insufficient_scope";
pub const DENIED_UNKNOWN_APPLICATION: &str = "app_auth.denied.unknown_application";
pub const DENIED_NOT_APPROVED: &str = "app_auth.denied.not_approved";
pub const DENIED_IDP_UNAVAILABLE: &str = "app_auth.denied.idp_unavailable";
pub const DENIED_NO_POLICY: &str = "app_auth.denied.no_policy";
pub const DENIED_TOO_MANY_HEADERS: &str = "app_auth.denied.too_many_headers";

pub const CALLOUT_DISCOVERY_OK: &str = "app_auth.callout.discovery.success";
pub const CALLOUT_DISCOVERY_FAILED: &str = "app_auth.callout.discovery.failure";
pub const CALLOUT_JWKS_OK: &str = "app_auth.callout.jwks.success";
pub const CALLOUT_JWKS_FAILED: &str = "app_auth.callout.jwks.failure";
pub const CALLOUT_TOKEN_OK: &str = "app_auth.callout.token.success";
pub const CALLOUT_TOKEN_FAILED: &str = "app_auth.callout.token.failure";
pub const CALLOUT_INTROSPECTION_OK: &str = "app_auth.callout.introspection.success";
pub const CALLOUT_INTROSPECTION_FAILED: &str = "app_auth.callout.introspection.failure";

pub const CACHE_VERIFIED_HIT: &str = "app_auth.cache.verified_token.hit";
pub const CACHE_VERIFIED_MISS: &str = "app_auth.cache.verified_token.miss";
pub const CACHE_TOKEN_HIT: &str = "app_auth.cache.exchanged_token.hit";
pub const CACHE_TOKEN_MISS: &str = "app_auth.cache.exchanged_token.miss";
pub const CACHE_INTROSPECTION_HIT: &str = "app_auth.cache.introspection.hit";
pub const CACHE_INTROSPECTION_MISS: &str = "app_auth.cache.introspection.miss";

pub const SIGNATURES_CHECKED: &str = "app_auth.signature.checked";
pub const SIGNATURES_NATIVE: &str = "app_auth.signature.native";

pub const KEYS_STALE_SERVE: &str = "app_auth.keys.stale_serve";
pub const KEYS_LEASE_WAIT: &str = "app_auth.keys.lease_wait";
pub const KEYS_FROM_SHARED_DATA: &str = "app_auth.keys.from_shared_data";

/// Every counter, for the host to define at start.
pub const ALL: &[&str] = &[
    ALLOWED_BEARER,
    ALLOWED_CLIENT_CREDENTIALS,
    ALLOWED_INTROSPECTION,
    ALLOWED_KEY_AUTH,
    DENIED_MISSING_CREDENTIAL,
    DENIED_BAD_REQUEST,
    DENIED_INVALID_TOKEN,
    DENIED_INSUFFICIENT_SCOPE,
    DENIED_UNKNOWN_APPLICATION,
    DENIED_NOT_APPROVED,
    DENIED_IDP_UNAVAILABLE,
    DENIED_NO_POLICY,
    DENIED_TOO_MANY_HEADERS,
    CALLOUT_DISCOVERY_OK,
    CALLOUT_DISCOVERY_FAILED,
    CALLOUT_JWKS_OK,
    CALLOUT_JWKS_FAILED,
    CALLOUT_TOKEN_OK,
    CALLOUT_TOKEN_FAILED,
    CALLOUT_INTROSPECTION_OK,
    CALLOUT_INTROSPECTION_FAILED,
    CACHE_VERIFIED_HIT,
    CACHE_VERIFIED_MISS,
    CACHE_TOKEN_HIT,
    CACHE_TOKEN_MISS,
    CACHE_INTROSPECTION_HIT,
    CACHE_INTROSPECTION_MISS,
    SIGNATURES_CHECKED,
    SIGNATURES_NATIVE,
    KEYS_STALE_SERVE,
    KEYS_LEASE_WAIT,
    KEYS_FROM_SHARED_DATA,
];

/// Histogram of callout latency, in milliseconds (recorded by the host).
pub const CALLOUT_LATENCY_MS: &str = "app_auth.callout.latency_ms";

/// The counter an outcome adds to: allowed by method, denied by reason.
pub fn outcome_counter(method: Method, outcome: &Outcome) -> &'static str {
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

pub fn denial_counter(denial: Denial) -> &'static str {
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
        for name in ALL {
            assert!(seen.insert(*name), "{name} twice");
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
