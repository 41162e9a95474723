//! Claim rules: time (`exp`, `nbf`, `iat` with leeway), issuer, audience, scopes and the
//! credential claim, each on a parsed but not yet trusted token.

use super::{ParsedToken, TokenError};
use crate::json::{Json, Object};
use std::borrow::Cow;
use std::rc::Rc;

/// Largest time claim accepted (year 5138): keeps arithmetic far from overflow.
const MAX_TIME: u64 = 100_000_000_000;

/// What a strategy requires of a token's claims.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules<'a> {
    pub issuers_allowed: &'a [String],
    pub audience_required: &'a [Vec<String>],
    pub audience_claim: &'a [String],
    pub leeway: u64,
    pub enable_hs_signatures: bool,
    /// Only RFC 9068 access tokens (`typ: at+jwt`): ID tokens and other JWTs of the same
    /// issuer are refused.
    pub require_at_jwt: bool,
}

/// The time claims of a token that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Always present for a JWT; an introspection answer may omit it.
    pub exp: Option<u64>,
}

/// Where claims came from: a JWT must carry `exp` and `iss`; an introspection answer
/// (RFC 7662 §2.2) may omit them, and what it does carry is checked the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Jwt,
    Introspection,
}

/// A token whose claims passed every rule that needs no key, at one time under one set of
/// rules: what [`super::verify_passed`] takes, so the claims are checked once per token.
/// Only [`check`] makes one.
#[derive(Debug, Clone, Copy)]
pub struct Passed<'t> {
    pub(super) token: &'t ParsedToken,
    pub(super) times: Times,
}

/// Checks every claim rule that needs no key. Order: shape of the time claims, expiry,
/// validity start, issue time, issuer, audience.
pub fn check<'t>(
    token: &'t ParsedToken,
    rules: &ClaimRules<'_>,
    now_s: u64,
) -> Result<Passed<'t>, TokenError> {
    // RFC 9068 §4: a resource server that expects JWT access tokens rejects any other typ,
    // so an ID token (typ JWT) of the same issuer is not an access token here.
    if rules.require_at_jwt && !token.at_jwt {
        return Err(TokenError::NotAtJwt);
    }
    let times = check_claims(&token.claims, rules, now_s, Origin::Jwt)?;
    Ok(Passed { token, times })
}

pub fn check_claims(
    c: &Object,
    rules: &ClaimRules<'_>,
    now_s: u64,
    origin: Origin,
) -> Result<Times, TokenError> {
    let exp = time_claim(c, "exp")?;
    if exp.is_none() && origin == Origin::Jwt {
        return Err(TokenError::MissingExp);
    }
    let nbf = time_claim(c, "nbf")?;
    let iat = time_claim(c, "iat")?;
    // Expired once now reaches exp (RFC 7519 §4.1.4: "on or after"), leeway added.
    if let Some(exp) = exp {
        if now_s >= exp.saturating_add(rules.leeway) {
            return Err(TokenError::Expired);
        }
    }
    if let Some(nbf) = nbf {
        if now_s.saturating_add(rules.leeway) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iat) = iat {
        if iat > now_s.saturating_add(rules.leeway) {
            return Err(TokenError::IssuedInFuture);
        }
    }
    // Exact string equality: no prefix, suffix, case or trailing-slash tolerance.
    match (c.get("iss"), origin) {
        (Some(iss), _)
            if iss
                .as_str()
                .is_some_and(|iss| rules.issuers_allowed.iter().any(|a| *a == iss)) => {}
        (None, Origin::Introspection) => {}
        _ => return Err(TokenError::WrongIssuer),
    }
    if !rules.audience_required.is_empty() {
        let aud = claim_at(c, rules.audience_claim);
        if !satisfies(aud, rules.audience_required) {
            return Err(TokenError::WrongAudience);
        }
    }
    Ok(Times { exp })
}

/// A NumericDate: a whole, non-negative number of seconds. Strings, booleans, null,
/// fractions, negatives and absurdly large values are malformed.
fn time_claim(claims: &Object, name: &str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(n) if n.is_number() => match n.as_u64() {
            Some(t) if t <= MAX_TIME => Ok(Some(t)),
            _ => Err(TokenError::BadTimeClaim),
        },
        Some(_) => Err(TokenError::BadTimeClaim),
    }
}

/// The value at a claim path (`["realm_access", "roles"]`).
pub fn claim_at<'a>(claims: &'a Object, path: &[String]) -> Option<Json<'a>> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.get(key)?;
    }
    Some(value)
}

/// The credential claim's values: a non-empty string, or an array of them. Values with
/// control characters or a space at either end are refused: they would become header values
/// upstream. Read the same way from a token not yet verified, to choose the strategy that
/// will verify it.
pub fn credential_values<'a>(
    claims: &'a Object,
    path: &[String],
) -> Result<Values<'a>, TokenError> {
    let claim = claim_at(claims, path).ok_or(TokenError::BadCredentialClaim)?;
    let found = match claim.as_str() {
        Some(s) => Values::One(s),
        None => match claim.items() {
            Some(items) if !items.is_empty() => items
                .into_iter()
                .map(|v| v.as_str().ok_or(TokenError::BadCredentialClaim))
                .collect::<Result<Values<'_>, _>>()?,
            _ => return Err(TokenError::BadCredentialClaim),
        },
    };
    if found.iter().any(|v| !is_header_safe(v)) {
        return Err(TokenError::BadCredentialClaim);
    }
    Ok(found)
}

/// A claim's string values. Most claims hold one (an `aud`, a `client_id`, a scope), kept
/// without a list: a new token's claims are read several times over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl<'a> std::ops::Deref for Values<'a> {
    type Target = [Cow<'a, str>];

    fn deref(&self) -> &[Cow<'a, str>] {
        match self {
            Values::One(value) => std::slice::from_ref(value),
            Values::Many(values) => values,
        }
    }
}

impl<'a> FromIterator<Cow<'a, str>> for Values<'a> {
    fn from_iter<I: IntoIterator<Item = Cow<'a, str>>>(iter: I) -> Values<'a> {
        let mut iter = iter.into_iter();
        let Some(first) = iter.next() else {
            return Values::Many(Vec::new());
        };
        let Some(second) = iter.next() else {
            return Values::One(first);
        };
        // Extended rather than collected from a chain: the same list in less code per
        // iterator type.
        let mut all = vec![first, second];
        all.extend(iter);
        Values::Many(all)
    }
}

/// The string values of a claim that may be a string or an array of strings. With
/// `split_spaces`, a string is a space-separated list (the OAuth `scope` form).
fn values(claim: Option<Json<'_>>, split_spaces: bool) -> Values<'_> {
    let Some(claim) = claim else {
        return Values::Many(Vec::new());
    };
    match claim.as_str() {
        Some(Cow::Borrowed(s)) if split_spaces => words(s).map(Cow::Borrowed).collect(),
        Some(Cow::Owned(s)) if split_spaces => words(&s).map(|w| Cow::Owned(w.into())).collect(),
        Some(s) => Values::One(s),
        None => claim
            .items()
            .unwrap_or_default()
            .into_iter()
            .filter_map(Json::as_str)
            .collect(),
    }
}

/// The words of a space-separated list.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|v| !v.is_empty())
}

/// Whether `present` holds every value of one of the `required` sets.
fn holds_a_set(present: &[Cow<'_, str>], required: &[Vec<String>]) -> bool {
    required
        .iter()
        .any(|set| set.iter().all(|r| present.iter().any(|p| p == r)))
}

/// Kong's rule: `required` lists alternatives (OR), each a set that must all be present
/// (AND). Exact, case-sensitive matches.
fn satisfies(claim: Option<Json<'_>>, required: &[Vec<String>]) -> bool {
    holds_a_set(&values(claim, false), required)
}

/// Whether verified claims carry the scopes a strategy requires.
pub fn has_scopes(
    claims: &VerifiedClaims,
    scopes_claim: &[String],
    required: &[Vec<String>],
) -> bool {
    if required.is_empty() {
        return true;
    }
    holds_a_set(
        &values(claim_at(&claims.claims, scopes_claim), true),
        required,
    )
}

/// Claims of a token whose signature and claim rules were checked. Only
/// [`super::verify`] builds one, so whatever forwards identity upstream can only forward
/// verified identity.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    /// Shared with the parsed token they came from: no copy of the claims per token.
    claims: Rc<Object>,
    exp: u64,
}

impl VerifiedClaims {
    pub(super) fn new(claims: Rc<Object>, exp: u64) -> VerifiedClaims {
        VerifiedClaims { claims, exp }
    }

    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// The credential claim's values ([`credential_values`]).
    pub fn credential_values(&self, path: &[String]) -> Result<Values<'_>, TokenError> {
        credential_values(&self.claims, path)
    }

    /// A claim rendered as an upstream header value: strings as they are, numbers and
    /// booleans as JSON, arrays of those joined with commas. `Ok(None)` when absent or empty.
    pub fn header_value(&self, path: &[String]) -> Result<Option<String>, TokenError> {
        let scalar = |v: Json<'_>| -> Result<String, TokenError> {
            v.as_str()
                .map(Cow::into_owned)
                .or_else(|| v.number_text())
                .or_else(|| v.as_bool().map(|b| b.to_string()))
                .ok_or(TokenError::BadForwardedClaim)
        };
        let text = match claim_at(&self.claims, path) {
            None => return Ok(None),
            Some(v) if v.is_null() => return Ok(None),
            Some(v) => match v.items() {
                Some(items) => items
                    .into_iter()
                    .map(scalar)
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                None => scalar(v)?,
            },
        };
        // Nothing to forward (`""`, `[]`): the header stays unset (the client's copy is still
        // removed). Kong never refuses a token over a claim it only forwards, and an optional
        // claim's empty value is no reason to refuse a valid token.
        if text.is_empty() {
            return Ok(None);
        }
        if !is_header_safe(&text) {
            return Err(TokenError::BadForwardedClaim);
        }
        Ok(Some(text))
    }
}

/// Printable, no control characters, no space at either end: a header carries it as it is
/// (RFC 9110 §5.5: a field value has no leading or trailing whitespace, and the upstream's
/// parser strips it, so " client-1" would arrive as "client-1").
fn is_header_safe(v: &str) -> bool {
    !v.is_empty() && !v.starts_with(' ') && !v.ends_with(' ') && !v.chars().any(char::is_control)
}
