//! app-auth-filter: enforces developer-portal application auth strategies (Konnect
//! `openid_connect` and `key_auth`) in Envoy and Kong Gateway, as a proxy-wasm filter.
//!
//! The decision engine ([`engine`]) is plain Rust with no proxy-wasm calls; the host adapter
//! (`host`, compiled for wasm32 only) moves headers and callouts between the proxy and it.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod alloc;
pub mod apps;
pub mod bytes;
pub mod cache;
pub mod config;
pub mod credential;
pub mod engine;
pub mod header_map;
pub mod json;
pub mod jwt;
pub mod metrics;
pub mod oidc;
pub mod response;
pub mod shared;

#[cfg(target_arch = "wasm32")]
mod host;

/// Helpers shared by the unit tests.
#[cfg(test)]
mod testing {
    /// A xorshift64 stream from `seed` (not 0): the same inputs on every run.
    pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }
}
