//! Compact JWS parsing: three canonical base64url segments, a JSON header we understand, a
//! JSON object payload. Nothing here trusts the token; it only refuses what is malformed.

use super::{Alg, TokenError};
use crate::json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::rc::Rc;

/// Longest `kid` accepted: it is only ever a map key, but an unbounded one is a free
/// allocation for an attacker.
const MAX_KID_LEN: usize = 256;

/// A token that is well-formed. Its claims are not yet trusted.
#[derive(Debug, Clone)]
pub struct ParsedToken {
    raw: String,
    pub alg: Alg,
    pub kid: Option<String>,
    /// `typ` is `at+jwt` or `application/at+jwt`: a JWT access token by RFC 9068.
    pub at_jwt: bool,
    pub claims: Rc<Map<String, Value>>,
    /// The decoded signature segment.
    pub signature: Vec<u8>,
}

impl ParsedToken {
    pub fn parse(token: &str, max_json_depth: usize) -> Result<ParsedToken, TokenError> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature)) =
            (segments.next(), segments.next(), segments.next())
        else {
            return Err(TokenError::NotCompactJws);
        };
        match segments.count() {
            0 => {}
            2 => return Err(TokenError::Encrypted),
            _ => return Err(TokenError::NotCompactJws),
        }
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(TokenError::NotCompactJws);
        }
        let header_b64_len = header.len();
        let header = decode(header)?;
        let payload = decode(payload)?;
        let signature = decode(signature)?;

        let Ok(Value::Object(header)) = json::parse_strict(&header, 4) else {
            return Err(TokenError::BadHeader);
        };
        let alg = match header.get("alg") {
            Some(Value::String(name)) => Alg::from_name(name).ok_or(TokenError::UnsupportedAlg)?,
            _ => return Err(TokenError::BadHeader),
        };
        let at_jwt = match header.get("typ") {
            None => false,
            Some(Value::String(typ)) if is_access_token_type(typ) => is_at_jwt(typ),
            Some(_) => return Err(TokenError::WrongType),
        };
        match header.get("crit") {
            None => {}
            // RFC 7515 §4.1.11: we understand no extension, so any listed one is fatal, and
            // an empty or non-array `crit` is malformed.
            Some(_) => return Err(TokenError::UnknownCritical),
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => {
                Some(kid.clone())
            }
            Some(_) => return Err(TokenError::BadKid),
        };
        if !super::compat::header_ok(header_b64_len, &header, alg) {
            return Err(TokenError::BadHeader);
        }
        let Ok(Value::Object(claims)) = json::parse_strict(&payload, max_json_depth) else {
            return Err(TokenError::BadPayload);
        };
        Ok(ParsedToken {
            raw: token.to_owned(),
            alg,
            kid,
            at_jwt,
            claims: Rc::new(claims),
            signature,
        })
    }

    /// The token as received, for the signature check.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The signed part: the first two segments, as received.
    pub fn signed(&self) -> &[u8] {
        let end = self.raw.rfind('.').unwrap_or(0);
        self.raw.as_bytes().get(..end).unwrap_or_default()
    }
}

/// `JWT` (RFC 7519) or `at+jwt` (RFC 9068, with or without the `application/` prefix),
/// compared case-insensitively as media types are.
fn is_access_token_type(typ: &str) -> bool {
    // `application/jwt` is refused on purpose: the pure-Rust path refused it (through
    // jwt-simple), and one token must get one verdict whichever path checks its signature.
    let t = typ.to_ascii_lowercase();
    t == "jwt" || t == "at+jwt" || t == "application/at+jwt"
}

/// RFC 9068 §4: "at+jwt" or "application/at+jwt" (media types: any case).
fn is_at_jwt(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// Canonical unpadded base64url only: no `=`, no `+` or `/`, no whitespace, no stray
/// trailing bits (so one token has exactly one spelling).
fn decode(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::BadEncoding)
}
