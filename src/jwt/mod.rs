//! JSON Web Tokens: strict parsing (`token`), key sets (`jwks`), claim rules (`claims`), and
//! the one function that turns a parsed token into [`VerifiedClaims`].

mod base64url;
pub mod claims;
mod compat;
mod ecdsa;
pub mod jwks;
pub mod native;
mod pkcs1;
pub mod token;

pub use claims::{ClaimRules, VerifiedClaims};
pub use jwks::KeySet;
pub use token::{HeaderMemo, ParsedToken};

use std::fmt;
use std::rc::Rc;

/// Signature algorithms this filter verifies (`alg` header values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// The `alg` header value, matched exactly (RFC 7515 names are case-sensitive, so
    /// `none`, `None` and `NONE` are all simply unknown).
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    pub fn is_symmetric(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// Why a token is not accepted. Every variant is a 401 `invalid_token` except where the
/// engine says otherwise; the text is the `error_description` (static: never token data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url segments (two, four, empty ones...).
    NotCompactJws,
    /// Five segments: an encrypted token (JWE) where a signed one (JWS) is expected.
    Encrypted,
    /// A segment is not canonical unpadded base64url.
    BadEncoding,
    /// The header is not a JSON object with a string `alg`.
    BadHeader,
    /// `alg` is not one this filter verifies (includes `none`).
    UnsupportedAlg,
    /// `alg` is HS* and the strategy did not enable HS signatures.
    SymmetricAlgNotEnabled,
    /// `typ` is neither `JWT` nor `at+jwt`.
    WrongType,
    /// The strategy requires RFC 9068 access tokens and `typ` is not `at+jwt` (an ID token,
    /// a plain JWT, or no `typ`).
    NotAtJwt,
    /// `crit` names extensions (none are understood).
    UnknownCritical,
    /// `kid` is not a string.
    BadKid,
    /// The payload is not a JSON object (or has duplicate members, or is too deep).
    BadPayload,
    /// A time claim (`exp`, `nbf`, `iat`) is not a whole number of seconds in range.
    BadTimeClaim,
    /// No `exp`.
    MissingExp,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `iss` missing or not an accepted issuer.
    WrongIssuer,
    /// `aud` does not satisfy `audience_required`.
    WrongAudience,
    /// The token's `kid` is not in the issuer's key set.
    UnknownKid,
    /// No `kid`, and several keys of the set could verify this `alg`.
    AmbiguousKey,
    /// The key named by `kid` (or every key) does not allow this `alg`.
    KeyAlgMismatch,
    /// The signature does not verify.
    BadSignature,
    /// The credential claim is missing, not a string (or array of strings), or has control
    /// characters.
    BadCredentialClaim,
    /// A claim forwarded upstream has control characters or is not a scalar.
    BadForwardedClaim,
    /// The IdP says the token is not active (introspection), or did not say it is.
    Inactive,
    /// A client-credentials exchange returned something that is not a JWT access token.
    NotAJwt,
}

impl TokenError {
    pub fn description(self) -> &'static str {
        match self {
            TokenError::NotCompactJws => "token is not a compact JWS",
            TokenError::Encrypted => "encrypted tokens (JWE) are not accepted",
            TokenError::BadEncoding => "token is not base64url encoded",
            TokenError::BadHeader => "token header is malformed",
            TokenError::UnsupportedAlg => "token algorithm is not accepted",
            TokenError::SymmetricAlgNotEnabled => "HS signatures are not enabled",
            TokenError::WrongType => "token type is not JWT or at+jwt",
            TokenError::NotAtJwt => "token type is not at+jwt",
            TokenError::UnknownCritical => "token has unknown critical header parameters",
            TokenError::BadKid => "token kid is malformed",
            TokenError::BadPayload => "token payload is malformed",
            TokenError::BadTimeClaim => "token time claims are malformed",
            TokenError::MissingExp => "token has no expiry",
            TokenError::Expired => "token has expired",
            TokenError::NotYetValid => "token is not valid yet",
            TokenError::IssuedInFuture => "token is issued in the future",
            TokenError::WrongIssuer => "token issuer is not accepted",
            TokenError::WrongAudience => "token audience is not accepted",
            TokenError::UnknownKid => "token signing key is unknown",
            TokenError::AmbiguousKey => "token has no kid and several keys match",
            TokenError::KeyAlgMismatch => "token algorithm does not match its key",
            TokenError::BadSignature => "token signature is invalid",
            TokenError::BadCredentialClaim => "token credential claim is missing or malformed",
            TokenError::BadForwardedClaim => "token claim cannot be forwarded",
            TokenError::Inactive => "token is not active",
            TokenError::NotAJwt => "issued token is not a JWT",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Verifies a parsed token: claims first (cheap, and a token that fails them need not cost a
/// signature check), then the signature with the issuer's key.
pub fn verify(
    token: &ParsedToken,
    keys: &KeySet,
    rules: &ClaimRules<'_>,
    now_s: u64,
    backend: &dyn native::SignatureBackend,
) -> Result<VerifiedClaims, TokenError> {
    if token.alg.is_symmetric() && !rules.enable_hs_signatures {
        return Err(TokenError::SymmetricAlgNotEnabled);
    }
    verify_passed(
        claims::check(token, rules, now_s)?,
        keys,
        rules,
        now_s,
        backend,
    )
}

/// [`verify`] of a token whose claims [`claims::check`] passed under the same `rules` and
/// `now_s`. Only this function builds [`VerifiedClaims`].
pub fn verify_passed(
    passed: claims::Passed<'_>,
    keys: &KeySet,
    rules: &ClaimRules<'_>,
    now_s: u64,
    backend: &dyn native::SignatureBackend,
) -> Result<VerifiedClaims, TokenError> {
    let claims::Passed { token, times } = passed;
    if token.alg.is_symmetric() && !rules.enable_hs_signatures {
        return Err(TokenError::SymmetricAlgNotEnabled);
    }
    let key = keys.select(token.kid.as_deref(), token.alg)?;
    if !compat::claims_ok(&token.claims, now_s, rules.leeway) {
        return Err(TokenError::BadPayload);
    }
    let by_host = match (native::host_hash(token.alg), key.spki) {
        (Some(hash), Some(spki)) => verify_by_host(token, hash, spki, backend)?,
        _ => None,
    };
    match by_host {
        Some(true) => {}
        Some(false) => return Err(TokenError::BadSignature),
        None => {
            if !key.verifier.verify(token.signed(), &token.signature) {
                return Err(TokenError::BadSignature);
            }
        }
    }
    Ok(VerifiedClaims::new(
        Rc::clone(&token.claims),
        times.exp.unwrap_or(0),
    ))
}

/// The host's verdict on the signature, `None` if it has no say.
fn verify_by_host(
    token: &ParsedToken,
    hash: &'static str,
    spki: &[u8],
    backend: &dyn native::SignatureBackend,
) -> Result<Option<bool>, TokenError> {
    let der;
    let signature = match token.alg {
        Alg::ES256 | Alg::ES384 => {
            der = native::ecdsa_der(token.alg, &token.signature).ok_or(TokenError::BadSignature)?;
            &der
        }
        _ => &token.signature,
    };
    Ok(backend.verify(hash, spki, token.signed(), signature))
}

/// Checks the claims of an active introspection answer (RFC 7662) with the same rules as a
/// JWT's. The IdP vouched for the token, so there is no signature to check; `inactive` and
/// anything but a JSON `true` in `active` never reach here.
pub fn introspected(
    claims: Rc<crate::json::Object>,
    rules: &ClaimRules<'_>,
    now_s: u64,
) -> Result<VerifiedClaims, TokenError> {
    // The members RFC 7662 shares with RFC 7519 have a JWT's types (`aud` a string or an
    // array of strings): an answer that breaks them is broken, whatever else it says, and
    // allows nothing. (The shape rules alone: a leeway of 0 leaves out the clock's.)
    if !compat::claims_ok(&claims, now_s, 0) {
        return Err(TokenError::BadPayload);
    }
    let times = claims::check_claims(&claims, rules, now_s, claims::Origin::Introspection)?;
    Ok(VerifiedClaims::new(claims, times.exp.unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod crosscheck;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
