//! What the request carries: a bearer token (header or `access_token` query parameter),
//! Basic client credentials, or an API key. Strict parsing, bytes in, no allocation beyond
//! the credential itself.
//!
//! Headers arrive as raw bytes: a client can send any byte, and a credential that is not
//! printable ASCII is malformed, never a reason to crash.

use std::borrow::Cow;

/// A request header as the host hands it over: lower-case name, raw value, both borrowed
/// from the host's buffer (see [`crate::header_map`]).
pub type Header<'a> = (&'a [u8], &'a [u8]);

/// Where a bearer token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
}

/// The one credential a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer {
        token: String,
        source: Source,
    },
    Basic {
        client_id: String,
        client_secret: String,
    },
    /// An `Authorization` scheme this filter does not take (Digest, Negotiate, ...).
    OtherScheme,
}

/// Why a request's credential could not be read. Each maps to one denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// RFC 6750 `invalid_request` (400): duplicated or unparsable credentials.
    InvalidRequest(&'static str),
    /// The token is longer than the configured limit (401 `invalid_token`).
    TooLarge,
    /// key-auth: the same key given twice (401 "Duplicate API key found", as Kong).
    DuplicateApiKey,
}

const AUTHORIZATION: &[u8] = b"authorization";
const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Reads the request's credential from its `Authorization` headers and its query string.
/// `Ok(None)`: the request carries none.
pub fn extract(
    headers: &[Header<'_>],
    path: &str,
    max_token_bytes: usize,
) -> Result<Option<Credential>, Malformed> {
    let header = authorization(headers)?;
    let query_token = query_param(path, ACCESS_TOKEN_PARAM)?;
    match (header, query_token) {
        (Some(_), Some(_)) => Err(Malformed::InvalidRequest(
            "credentials in both the Authorization header and the query string",
        )),
        (Some(value), None) => parse_authorization(value, max_token_bytes).map(Some),
        (None, Some(token)) => {
            check_token68(&token, max_token_bytes)?;
            Ok(Some(Credential::Bearer {
                token,
                source: Source::Query,
            }))
        }
        (None, None) => Ok(None),
    }
}

/// The value of the request's one `Authorization` header; two are malformed.
fn authorization<'a>(headers: &[Header<'a>]) -> Result<Option<&'a [u8]>, Malformed> {
    let mut values = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(AUTHORIZATION))
        .map(|(_, value)| *value);
    let value = values.next();
    if values.next().is_some() {
        return Err(Malformed::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    Ok(value)
}

/// Longer than any credential within the limit could make an `Authorization` value.
fn too_long(value: &[u8], max_token_bytes: usize) -> bool {
    value.len() > max_token_bytes.saturating_add(16)
}

/// The parameter of a `Bearer ` value (scheme in any case, then spaces), trimmed of spaces:
/// only spaces, as the full rules trim (a tab makes the value malformed there). `None` for
/// another scheme or no parameter.
fn bearer_param(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let rest = value.get(7..)?;
    let start = rest.iter().position(|b| *b != b' ')?;
    let end = rest.iter().rposition(|b| *b != b' ')?.checked_add(1)?;
    rest.get(start..end)
}

fn parse_authorization(value: &[u8], max_token_bytes: usize) -> Result<Credential, Malformed> {
    if too_long(value, max_token_bytes) {
        return Err(Malformed::TooLarge);
    }
    if let Some(token) = well_formed_bearer(value, max_token_bytes) {
        return Ok(Credential::Bearer {
            token,
            source: Source::Header,
        });
    }
    parse_authorization_by_rules(value, max_token_bytes)
}

/// A credential a cache may be asked about before the request is read by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate<'a> {
    /// `Bearer <token>`: the token, *not yet checked* to be a token68.
    Bearer(&'a [u8]),
    /// `Basic <credentials>`: the whole `Authorization` value as sent, not decoded, and only
    /// with the scheme spelt `Basic` and one space (as [`plain_basic`] spells the values that
    /// are ever remembered).
    Basic(&'a [u8]),
}

/// The credential of a request that can only mean `Bearer <token>` or `Basic ...` in its one
/// `Authorization` header, *not yet checked* by the rules: for a lookup among credentials
/// that already passed [`extract`] (a match is then the same bytes, which passed), so that a
/// repeated credential is not validated byte by byte on every request. `None` whenever
/// [`extract`] could read the request any other way: no or several `Authorization` headers,
/// another scheme, a query string (which may carry `access_token`), or a value past the
/// length limit. Bytes, not checked to be text either: a cache lookup compares bytes. A new
/// bearer token that parses as a JWT (and is within the token limit) is also what [`extract`]
/// would read (`Engine::on_request` takes it so; a test there holds the two side by side).
pub fn cache_candidate<'a>(
    headers: &[Header<'a>],
    path: &str,
    max_token_bytes: usize,
) -> Option<Candidate<'a>> {
    if path.contains('?') {
        return None;
    }
    let value = authorization(headers).ok()??;
    if too_long(value, max_token_bytes) {
        return None;
    }
    if let Some(token) = bearer_param(value) {
        return Some(Candidate::Bearer(token));
    }
    basic_param(value).map(|_| Candidate::Basic(value))
}

/// The parameter of a Basic value spelt `Basic`, one space, the parameter (no space at
/// either end).
fn basic_param(value: &[u8]) -> Option<&[u8]> {
    let param = value.strip_prefix(b"Basic ")?;
    let spaced = |b: Option<&u8>| b.is_none_or(|b| *b == b' ');
    (!spaced(param.first()) && !spaced(param.last())).then_some(param)
}

/// Whether a Basic value the rules accepted is its client and secret's plain spelling (base64
/// or raw: at most two for each client and secret), the only one a cache may keep as sent
/// (see `Engine::remember_basic`): the scheme as in `basic_param`, and a pair with nothing
/// form-encoded (no `%XX`, whose hex digits come in two cases, no `+` for a space), or a raw
/// `client_id:client_secret`, which is not decoded.
/// Any client holding one valid secret can spell it a thousand ways that end alike; kept, they
/// would share their hash in a cache that hashes keys by their tails
/// ([`crate::cache::TailHash`]), and each lookup among them would compare them all.
pub fn plain_basic(value: &[u8]) -> bool {
    use base64::Engine as _;
    let Some(param) = basic_param(value) else {
        return false;
    };
    match base64::engine::general_purpose::STANDARD.decode(param) {
        Ok(pair) => !pair.iter().any(|b| matches!(b, b'%' | b'+')),
        // Not base64: a raw pair, read as it is.
        Err(_) => true,
    }
}

/// Every rule in turn, each refusal with its reason. Out of line: a well-formed bearer
/// token, most requests' credential, never comes here.
#[cold]
#[inline(never)]
fn parse_authorization_by_rules(
    value: &[u8],
    max_token_bytes: usize,
) -> Result<Credential, Malformed> {
    if too_long(value, max_token_bytes) {
        return Err(Malformed::TooLarge);
    }
    // One pass over the value (it is a kilobyte on every request); the reason is only
    // looked for when the value is refused.
    if !value.iter().all(|b| class(*b) & HEADER_OK != 0) {
        if !value.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(Malformed::InvalidRequest(
                "Authorization header has bytes that are not printable ASCII",
            ));
        }
        // Envoy joins repeated headers with commas; no Bearer or Basic credential contains one.
        return Err(Malformed::InvalidRequest(
            "more than one credential in the Authorization header",
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| Malformed::InvalidRequest("Authorization header is not ASCII"))?
        .trim_matches(' ');
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let param = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") {
        if param.is_empty() {
            return Err(Malformed::InvalidRequest("Bearer scheme without a token"));
        }
        check_token68(param, max_token_bytes)?;
        Ok(Credential::Bearer {
            token: param.to_owned(),
            source: Source::Header,
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        parse_basic(param)
    } else {
        Ok(Credential::OtherScheme)
    }
}

/// The common case in one pass over the token: `Bearer <token68>` (any case, spaces around).
/// `None` for anything else, which the full rules then accept or refuse with a reason; the
/// two agree on every value this accepts (a token68 is printable and has no comma).
fn well_formed_bearer(value: &[u8], max_token_bytes: usize) -> Option<String> {
    let token = bearer_param(value)?;
    let body_end = token.iter().rposition(|b| *b != b'=')?.checked_add(1)?;
    let body = token.get(..body_end)?;
    if token.len() > max_token_bytes || !all_token68(body) {
        return None;
    }
    String::from_utf8(token.to_vec()).ok()
}

/// RFC 7235 token68: the only shape a bearer token may have.
fn check_token68(token: &str, max_token_bytes: usize) -> Result<(), Malformed> {
    if token.len() > max_token_bytes {
        return Err(Malformed::TooLarge);
    }
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty() && all_token68(body.as_bytes());
    if ok {
        Ok(())
    } else {
        Err(Malformed::InvalidRequest(
            "bearer token is not a token68 string",
        ))
    }
}

/// Byte classes, looked up once per byte of the credential.
const HEADER_OK: u8 = 1;
const TOKEN68: u8 = 2;
// Evaluated by the compiler: an index out of range would fail the build, not a request.
#[allow(clippy::indexing_slicing)]
const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0x20;
    while b < 0x7f {
        let c = b as u8;
        // Printable ASCII, and not a comma (how Envoy joins repeated headers).
        let mut class = if c == b',' { 0 } else { HEADER_OK };
        // RFC 7235 token68, without the trailing '=' padding.
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/') {
            class |= TOKEN68;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// Every byte is a token68 character (padding excluded). No early exit: a kilobyte-long
/// token is almost always valid, and the loop without a branch per byte is the faster one.
fn all_token68(bytes: &[u8]) -> bool {
    bytes.iter().fold(TOKEN68, |acc, b| acc & class(*b)) != 0
}

fn class(b: u8) -> u8 {
    CLASSES.get(usize::from(b)).copied().unwrap_or(0)
}

/// `Basic base64(client_id:client_secret)` with RFC 6749 §2.3.1 form-encoding of each part.
/// Konnect's docs print the header as the literal `Basic CLIENT_ID:CLIENT_SECRET`, so a value
/// that is not base64 but has exactly one `:` is taken as the raw pair.
fn parse_basic(param: &str) -> Result<Credential, Malformed> {
    use base64::Engine as _;
    if param.is_empty() {
        return Err(Malformed::InvalidRequest(
            "Basic scheme without credentials",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(param)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let (pair, encoded) = match decoded {
        Some(d) => (d, true),
        None if param.matches(':').count() == 1 => (param.to_owned(), false),
        None => {
            return Err(Malformed::InvalidRequest(
                "Basic credentials are neither base64 nor client_id:client_secret",
            ))
        }
    };
    let Some((id, secret)) = pair.split_once(':') else {
        return Err(Malformed::InvalidRequest("Basic credentials have no ':'"));
    };
    let (client_id, client_secret) = if encoded {
        (form_decode(id)?, form_decode(secret)?)
    } else {
        (id.to_owned(), secret.to_owned())
    };
    if client_id.is_empty() || client_secret.is_empty() {
        return Err(Malformed::InvalidRequest(
            "Basic credentials with an empty part",
        ));
    }
    if client_id
        .chars()
        .chain(client_secret.chars())
        .any(char::is_control)
    {
        return Err(Malformed::InvalidRequest(
            "Basic credentials contain control characters",
        ));
    }
    Ok(Credential::Basic {
        client_id,
        client_secret,
    })
}

/// The single value of query parameter `name` (percent-decoded), `None` if absent, an error if
/// repeated or undecodable.
pub fn query_param(path: &str, name: &str) -> Result<Option<String>, Malformed> {
    let mut found = None;
    for (key, value) in query_pairs(path) {
        if is_named(key, name) {
            if found.is_some() {
                return Err(Malformed::InvalidRequest(
                    "query parameter given more than once",
                ));
            }
            found = Some(
                percent_decode(value, false).ok_or(Malformed::InvalidRequest(
                    "query parameter is not valid percent-encoding",
                ))?,
            );
        }
    }
    Ok(found)
}

/// All values of query parameter `name`, decoded; undecodable ones are an error.
pub fn query_values(path: &str, name: &str) -> Result<Vec<String>, Malformed> {
    query_pairs(path)
        .filter(|(k, _)| is_named(k, name))
        .map(|(_, v)| {
            percent_decode(v, true).ok_or(Malformed::InvalidRequest(
                "query parameter is not valid percent-encoding",
            ))
        })
        .collect()
}

/// The query string's `name=value` pairs as sent. A path without `?` (most) is not split.
fn query_pairs(path: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = path
        .split_once('?')
        .map(|(_, q)| q.split_once('#').map_or(q, |(q, _)| q));
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Whether a query parameter's name, as sent, is `name`: compared decoded, as the upstream's
/// form decoder will read it (`access%5Ftoken` is a second `access_token`, never a stranger).
fn is_named(key: &str, name: &str) -> bool {
    if key.contains(['%', '+']) {
        percent_decode(key, true).is_some_and(|decoded| decoded == name)
    } else {
        key == name
    }
}

/// `path` without the query parameters named in `names` (for `hide_credentials`).
pub fn strip_query_params(path: &str, names: &[&str]) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_one_of(p, names))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Whether [`strip_query_params`] would take a parameter out of `path`: without one, there
/// is nothing to strip and the path stays as the client sent it (its query string is not
/// even tidied: a `:path` rewrite is refused on Kong).
pub fn has_query_params(path: &str, names: &[&str]) -> bool {
    path.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| is_one_of(p, names)))
}

/// Whether the query parameter `param` (`name=value`, as sent) is named one of `names`.
fn is_one_of(param: &str, names: &[&str]) -> bool {
    let key = param.split_once('=').map_or(param, |(k, _)| k);
    names.iter().any(|name| is_named(key, name))
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i.saturating_add(1)..i.saturating_add(3))?;
                // from_str_radix would take "+1" (a sign) as a number.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i = i.saturating_add(3);
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i = i.saturating_add(1);
            }
            _ => {
                out.push(b);
                i = i.saturating_add(1);
            }
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 6749 §2.3.1: client id and secret are `application/x-www-form-urlencoded` before
/// they are joined for Basic.
fn form_decode(s: &str) -> Result<String, Malformed> {
    percent_decode(s, true).ok_or(Malformed::InvalidRequest(
        "Basic credentials are not valid form-encoding",
    ))
}

/// key-auth: the single API key the request carries under any of `key_names` (headers
/// first, then the query string). `Ok(None)` when none is present.
pub fn extract_api_key<'n, 'h>(
    headers: &[Header<'h>],
    path: &str,
    key_names: &'n [String],
    max_token_bytes: usize,
) -> Result<Option<(&'n str, Cow<'h, str>)>, Malformed> {
    let mut found: Option<(&'n str, Cow<'h, str>)> = None;
    for (i, name) in key_names.iter().enumerate() {
        // Names that differ only in case name one header: it is read under the first of
        // them (query parameters, by contrast, are case-sensitive).
        let header_read = key_names
            .get(..i)
            .unwrap_or_default()
            .iter()
            .any(|earlier| earlier.eq_ignore_ascii_case(name));
        let from_headers = headers
            .iter()
            .filter(|(n, _)| !header_read && n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| {
                if v.len() > max_token_bytes {
                    return Err(Malformed::TooLarge);
                }
                // Borrowed, not copied; held to printable ASCII below, with the query's.
                std::str::from_utf8(v)
                    .map(Cow::Borrowed)
                    .map_err(|_| Malformed::InvalidRequest("API key is not printable ASCII"))
            });
        let from_query = query_values(path, name)?
            .into_iter()
            .map(|v| Ok(Cow::Owned(v)));
        for key in from_headers.chain(from_query) {
            let key = key?;
            if key.is_empty() {
                continue;
            }
            if key.len() > max_token_bytes {
                return Err(Malformed::TooLarge);
            }
            // One rule for header values and percent-decoded query values.
            if !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(Malformed::InvalidRequest("API key is not printable ASCII"));
            }
            if found.is_some() {
                return Err(Malformed::DuplicateApiKey);
            }
            found = Some((name.as_str(), key));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
