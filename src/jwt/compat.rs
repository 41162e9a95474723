//! Claim and header shapes jwt-simple's `verify_token` refused and this crate's own rules
//! (`token`, `claims`) did not: kept when signatures came to be verified directly, and
//! applied on every path (the host's `verify_signature` and pure Rust alike), so one token
//! gets one verdict on Envoy and on Kong. A header that breaks them is `BadHeader`, a payload
//! `BadPayload`.

use super::Alg;
use crate::json::Object;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Longest base64url header jwt-simple read.
const MAX_HEADER_B64: usize = 8192;

/// The header rules: not over 8192 base64url characters; `cty`, `jku`, `jwk`, `x5u`, `x5t`,
/// `x5t#S256` and `salt` strings (or null), `x5c` an array of strings (or null); no `salt`
/// string with an HS algorithm, and only canonical base64url in one with any other.
pub fn header_ok(b64_len: usize, header: &Map<String, Value>, alg: Alg) -> bool {
    if b64_len > MAX_HEADER_B64 {
        return false;
    }
    let string_or_null = |name: &&str| {
        matches!(
            header.get(*name),
            None | Some(Value::Null) | Some(Value::String(_))
        )
    };
    let strings = ["cty", "jku", "jwk", "x5u", "x5t", "x5t#S256", "salt"];
    if !strings.iter().all(string_or_null) {
        return false;
    }
    match header.get("x5c") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return false,
    }
    match header.get("salt") {
        Some(Value::String(salt)) => !alg.is_symmetric() && URL_SAFE_NO_PAD.decode(salt).is_ok(),
        _ => true,
    }
}

/// The payload rules: `sub`, `jti` and `nonce` strings (or null); `aud` a string or an array
/// of strings; and the clock at least `leeway` seconds past the
/// epoch (jwt-simple subtracted the leeway from it to check `exp`).
pub fn claims_ok(claims: &Object, now_s: u64, leeway: u64) -> bool {
    let string_or_null = |name: &&str| {
        claims
            .get(name)
            .is_none_or(|v| v.is_null() || v.is_string())
    };
    if !["sub", "jti", "nonce"].iter().all(string_or_null) {
        return false;
    }
    match claims.get("aud") {
        None => {}
        Some(aud) if aud.is_string() => {}
        Some(aud) => match aud.items() {
            Some(items) if items.iter().all(|v| v.is_string()) => {}
            _ => return false,
        },
    }
    // (Its JSON depth limit, serde_json's, is the one `json::parse_strict` meets first.)
    now_s >= leeway
}
