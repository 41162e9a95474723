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

    /// `len` bytes from `next`: one draw in `one_in` any byte at all, the others `common` of
    /// the draw's upper bits (an alphabet, a range).
    pub fn mostly(
        next: &mut impl FnMut() -> u64,
        len: usize,
        one_in: u64,
        common: impl Fn(u64) -> u8,
    ) -> Vec<u8> {
        (0..len)
            .map(|_| {
                let r = next();
                if r % one_in == 0 {
                    (r >> 8) as u8
                } else {
                    common(r >> 8)
                }
            })
            .collect()
    }
}
