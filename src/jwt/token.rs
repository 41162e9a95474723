//! Compact JWS parsing: three canonical base64url segments, a JSON header we understand, a
//! JSON object payload. Nothing here trusts the token; it only refuses what is malformed.

use super::{Alg, TokenError};
use crate::json::{self, Object};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// Longest `kid` accepted: it is only ever a map key, but an unbounded one is a free
/// allocation for an attacker.
const MAX_KID_LEN: usize = 256;

/// A token that is well-formed. Its claims are not yet trusted.
#[derive(Debug, Clone)]
pub struct ParsedToken {
    /// The token as received: ASCII (three base64url segments and two dots).
    raw: Box<[u8]>,
    /// Where the signature's segment starts, less its dot: the signed part is `raw[..this]`.
    signed_len: usize,
    pub alg: Alg,
    pub kid: Option<Rc<str>>,
    /// `typ` is `at+jwt` or `application/at+jwt`: a JWT access token by RFC 9068.
    pub at_jwt: bool,
    pub claims: Rc<Object>,
    /// The decoded signature segment.
    pub signature: Vec<u8>,
}

/// What a well-formed JOSE header says.
#[derive(Debug, Clone)]
struct JoseHeader {
    alg: Alg,
    kid: Option<Rc<str>>,
    at_jwt: bool,
}

/// JOSE headers already read, by their base64url text. An issuer's tokens share one header
/// (same `alg`, `typ` and `kid`), so a stream of new tokens decodes and checks it once, not
/// per token. A few are kept (an IdP signs with one key at a time, two while it rotates),
/// looked through in turn: the one nearly every token has is found without hashing, and a
/// token with a header not kept costs what it would with no memo. Only well-formed headers
/// are kept; the oldest makes way.
#[derive(Debug, Default)]
pub struct HeaderMemo(RefCell<RecentHeaders>);

#[derive(Debug, Default)]
struct RecentHeaders {
    kept: Vec<(Box<[u8]>, JoseHeader)>,
    /// Where the next header goes once all are taken.
    next: usize,
}

const HEADERS_KEPT: usize = 8;

impl HeaderMemo {
    fn get(&self, segment: &[u8]) -> Option<JoseHeader> {
        let recent = self.0.borrow();
        let (_, header) = recent.kept.iter().find(|(s, _)| **s == *segment)?;
        Some(header.clone())
    }

    fn remember(&self, segment: &[u8], header: JoseHeader) {
        let mut recent = self.0.borrow_mut();
        if recent.kept.len() < HEADERS_KEPT {
            recent.kept.push((segment.into(), header));
            return;
        }
        let at = recent.next % HEADERS_KEPT;
        if let Some(slot) = recent.kept.get_mut(at) {
            *slot = (segment.into(), header);
        }
        recent.next = at.saturating_add(1);
    }

    #[cfg(test)]
    pub fn knows(&self, segment: &str) -> bool {
        self.get(segment.as_bytes()).is_some()
    }
}

impl ParsedToken {
    pub fn parse(
        token: &(impl AsRef<[u8]> + ?Sized),
        max_json_depth: usize,
    ) -> Result<ParsedToken, TokenError> {
        ParsedToken::parse_with(token, max_json_depth, &HeaderMemo::default())
    }

    /// As `parse`, with headers read before remembered in `memo`. Bytes: a token that
    /// parses is ASCII, whatever it was read as.
    #[inline]
    pub fn parse_with(
        token: &(impl AsRef<[u8]> + ?Sized),
        max_json_depth: usize,
        memo: &HeaderMemo,
    ) -> Result<ParsedToken, TokenError> {
        ParsedToken::parse_bytes(token.as_ref(), max_json_depth, memo)
    }

    /// `parse_with`, once in the module whatever the token was read as.
    fn parse_bytes(
        token: &[u8],
        max_json_depth: usize,
        memo: &HeaderMemo,
    ) -> Result<ParsedToken, TokenError> {
        let Some((header, rest)) = split_at_dot(token) else {
            return Err(TokenError::NotCompactJws);
        };
        let Some((payload, signature)) = split_at_dot(rest) else {
            return Err(TokenError::NotCompactJws);
        };
        // More segments than three show as dots in `signature`. No base64url text has one,
        // so they are counted only for a refusal (not for every valid token): the number of
        // segments is said before anything else (five: an encrypted token).
        let shape = |refusal: TokenError| match signature.iter().filter(|b| **b == b'.').count() {
            0 => refusal,
            2 => TokenError::Encrypted,
            _ => TokenError::NotCompactJws,
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(shape(TokenError::NotCompactJws));
        }
        // Refusals keep their order whether the header is known or not: the segments'
        // encoding first, then the header's content (a known header has none to refuse).
        let known = memo.get(header);
        let header_json = match known {
            Some(_) => None,
            None => Some(decode(header).map_err(shape)?),
        };
        let payload = decode(payload).map_err(shape)?;
        let signature_len = signature.len();
        let signature = decode(signature).map_err(shape)?;
        let JoseHeader { alg, kid, at_jwt } = match known {
            Some(known) => known,
            None => read_new_header(header, header_json.as_deref().unwrap_or_default(), memo)?,
        };
        let claims = Object::parse(payload, max_json_depth).map_err(|_| TokenError::BadPayload)?;
        Ok(ParsedToken {
            raw: token.into(),
            signed_len: token.len().saturating_sub(signature_len).saturating_sub(1),
            alg,
            kid,
            at_jwt,
            claims: Rc::new(claims),
            signature,
        })
    }

    /// The token as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The signed part: the first two segments, as received.
    pub fn signed(&self) -> &[u8] {
        self.raw.get(..self.signed_len).unwrap_or_default()
    }
}

/// The text before the first `.` and the text after it: eight bytes a turn
/// (`bytes::find_by_words`), as the dot that ends a payload is a few hundred bytes in, on
/// every new token.
fn split_at_dot(text: &[u8]) -> Option<(&[u8], &[u8])> {
    use crate::bytes::{equal, find_by_words};
    let dot = find_by_words(text, |x| equal(x, b'.'), |b| *b == b'.')?;
    Some((text.get(..dot)?, text.get(dot.checked_add(1)?..)?))
}

/// The `iss` a token's payload names, read without any of [`ParsedToken::parse`]'s checks:
/// for a token `parse` refused (an algorithm, `typ`, `crit` or `kid` the filter does not
/// take), to tell a JWT of some issuer, which no other issuer's endpoint may be shown, from
/// an opaque token. `None` when its second dot-separated segment is not a base64url JSON
/// object (an opaque token); `Some(None)` when that object names no `iss` string.
pub fn claimed_issuer(token: &[u8], max_json_depth: usize) -> Option<Option<String>> {
    let payload = token.split(|b| *b == b'.').nth(1)?;
    // Padding or not: what matters here is where the token must not go.
    let payload = URL_SAFE_NO_PAD.decode(trim_padding(payload)).ok()?;
    let Ok(Value::Object(claims)) = json::parse_strict(&payload, max_json_depth) else {
        return None;
    };
    Some(claims.get("iss").and_then(Value::as_str).map(str::to_owned))
}

/// Whether a token's JOSE header says `at+jwt`, read without any of [`ParsedToken::parse`]'s
/// checks (as [`claimed_issuer`] reads the payload): for a token `parse` refused, which a
/// strategy requiring RFC 9068 access tokens must not take from introspection either when
/// its header names another type. `None` when the token has no second segment or its first
/// is not a base64url JSON object (an opaque token).
pub fn claimed_at_jwt(token: &[u8]) -> Option<bool> {
    let mut segments = token.split(|b| *b == b'.');
    let header = segments.next()?;
    segments.next()?;
    let header = URL_SAFE_NO_PAD.decode(trim_padding(header)).ok()?;
    let Ok(Value::Object(header)) = json::parse_strict(&header, 4) else {
        return None;
    };
    Some(
        header
            .get("typ")
            .and_then(Value::as_str)
            .is_some_and(is_at_jwt),
    )
}

/// A segment without the `=` padding it may end with.
fn trim_padding(segment: &[u8]) -> &[u8] {
    let end = segment
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(0, |i| i.saturating_add(1));
    segment.get(..end).unwrap_or_default()
}

/// Checks a decoded JOSE header (`b64_len`: the length of its base64url segment).
fn read_header(json: &[u8], b64_len: usize) -> Result<JoseHeader, TokenError> {
    let Ok(Value::Object(header)) = json::parse_strict(json, 4) else {
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
            Some(Rc::from(kid.as_str()))
        }
        Some(_) => return Err(TokenError::BadKid),
    };
    if !super::compat::header_ok(b64_len, &header, alg) {
        return Err(TokenError::BadHeader);
    }
    Ok(JoseHeader { alg, kid, at_jwt })
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

/// A JOSE header not seen lately, read and remembered: out of line, as an issuer's tokens
/// share a few headers.
#[cold]
#[inline(never)]
fn read_new_header(
    segment: &[u8],
    json: &[u8],
    memo: &HeaderMemo,
) -> Result<JoseHeader, TokenError> {
    let read = read_header(json, segment.len())?;
    memo.remember(segment, read.clone());
    Ok(read)
}

/// Canonical unpadded base64url only: no `=`, no `+` or `/`, no whitespace, no stray
/// trailing bits (so one token has exactly one spelling).
fn decode(segment: &[u8]) -> Result<Vec<u8>, TokenError> {
    super::base64url::decode(segment).ok_or(TokenError::BadEncoding)
}
