//! OpenID Connect documents: where the IdP lives (URLs), and the discovery document.
//! Request builders and response parsers only; no I/O.

use crate::json;
use serde_json::Value;

/// The part of the discovery document the filter relies on.
pub const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// An absolute `http`/`https` URL, split the way a callout needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// `host[:port]` exactly as written (the `:authority` of the callout).
    pub authority: String,
    /// Path and query, never empty (at least `/`).
    pub path: String,
}

impl Url {
    /// Parses an absolute URL. Refuses user info, fragments, whitespace and other schemes.
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("must be an http:// or https:// URL".into());
        };
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("must not contain spaces or control characters".into());
        }
        if s.contains('#') {
            return Err("must not contain a fragment".into());
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err("has no host".into());
        }
        if authority.contains('@') {
            return Err("must not contain user information".into());
        }
        check_authority(authority)?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Url {
            https,
            authority: authority.to_owned(),
            path,
        })
    }

    /// Whether the host is this machine: `localhost`, an IPv4 loopback address (127.0.0.0/8,
    /// in dotted decimal) or `[::1]` (as written so; another spelling of it is taken for
    /// another host, which refuses more, never less). Plain http is acceptable there only.
    /// (By hand: the standard library's address parser is 5 KB of the module.)
    pub fn is_loopback(&self) -> bool {
        if let Some(rest) = self.authority.strip_prefix('[') {
            return rest.split(']').next() == Some("::1");
        }
        let host = self.authority.split(':').next().unwrap_or_default();
        let octets: Vec<&str> = host.split('.').collect();
        let ipv4_loopback = octets.len() == 4
            && octets.first() == Some(&"127")
            && octets.iter().all(|o| {
                (1..=3).contains(&o.len())
                    && o.bytes().all(|b| b.is_ascii_digit())
                    && o.parse::<u8>().is_ok()
            });
        host.eq_ignore_ascii_case("localhost") || ipv4_loopback
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// `host[:port]` as a proxy can dial it: a host (a bracketed IPv6 address or a name), and a
/// port of 1 to 65535 if one is given. Kong parses it inside `dispatch_http_call`, where an
/// authority it refuses traps the VM rather than failing the call.
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (address, after) = rest.split_once(']').ok_or("has an unclosed IPv6 address")?;
            if address.is_empty()
                || !address
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err("has an invalid IPv6 address".into());
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("has an invalid port")?),
            };
            (address, port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    // A name or an IPv4 address: letters, digits, `-`, `.`, `_` and `~` (RFC 3986's
    // unreserved characters). Unicode whitespace, `,` or `%` would load and never be dialable.
    let bracketed = authority.starts_with('[');
    if !bracketed
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err("has an invalid host".into());
    }
    if let Some(port) = port {
        // Digits only (`parse` would take a `+`), 1 to 65535.
        let valid =
            port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err("has an invalid port".into());
        }
    }
    Ok(())
}

/// What the filter takes from an issuer's discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub jwks_uri: Url,
    pub token_endpoint: Option<Url>,
    pub introspection_endpoint: Option<Url>,
}

/// Splits a configured `issuer`, which Konnect lets users give either as the issuer itself or
/// as its discovery URL, into (issuer, discovery URL).
pub fn issuer_and_discovery(configured: &str) -> (String, String) {
    match configured.strip_suffix(WELL_KNOWN) {
        Some(issuer) => (issuer.to_owned(), configured.to_owned()),
        None => (
            configured.to_owned(),
            format!("{}{WELL_KNOWN}", configured.trim_end_matches('/')),
        ),
    }
}

/// The names an issuer configured as `configured` may go by, in its discovery document and
/// in its tokens' `iss`: given as the issuer itself, exactly that; given as its discovery
/// URL, the URL's prefix with or without a trailing slash (the document at
/// `https://idp/.well-known/openid-configuration` belongs to issuer `https://idp` or
/// `https://idp/` alike, and Auth0's issuers end with a slash).
pub fn issuer_names(configured: &str) -> Vec<String> {
    match configured.strip_suffix(WELL_KNOWN) {
        Some(issuer) if !issuer.ends_with('/') => vec![issuer.to_owned(), format!("{issuer}/")],
        Some(issuer) => vec![issuer.to_owned()],
        None => vec![configured.to_owned()],
    }
}

/// Parses a discovery document. The `issuer` it names must be exactly one of the configured
/// issuer's `names` (OpenID Connect Discovery §4.3): a document that names another issuer is
/// refused, so a misrouted callout cannot swap one IdP's keys for another's.
pub fn parse_discovery(
    body: &[u8],
    names: &[String],
    max_depth: usize,
) -> Result<Discovery, String> {
    let doc = json::parse_strict(body, max_depth).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(doc) = doc else {
        return Err("not a JSON object".into());
    };
    // An https issuer's keys are fetched, and client secrets and tokens posted, over https
    // too (RFC 6749 §3.2, RFC 7662 §4): a plain http endpoint it names would have them read
    // or swapped on the way, unless it is on this machine.
    let https = match doc.get("issuer") {
        Some(Value::String(s)) if names.contains(s) => s.starts_with("https://"),
        Some(Value::String(s)) => {
            return Err(format!(
                "names issuer {s:?}, expected {}",
                names.join(" or ")
            ));
        }
        _ => return Err("has no issuer string".into()),
    };
    let url = |name: &str| -> Result<Option<Url>, String> {
        match doc.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match Url::parse(s) {
                Ok(u) if https && !u.https && !u.is_loopback() => Err(format!(
                    "{name} is not https (nor on this machine), for an https issuer: refused (keys, client secrets and tokens would go in the clear)"
                )),
                Ok(u) => Ok(Some(u)),
                Err(e) => Err(format!("{name} {e}")),
            },
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let jwks_uri = url("jwks_uri")?.ok_or("has no jwks_uri")?;
    Ok(Discovery {
        jwks_uri,
        token_endpoint: url("token_endpoint")?,
        introspection_endpoint: url("introspection_endpoint")?,
    })
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 appendix B).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Basic` client authentication (RFC 6749 §2.3.1: each part form-encoded first).
pub fn basic_auth(client_id: &str, client_secret: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The body of a client-credentials token request.
pub fn client_credentials_body(scopes: &[String]) -> String {
    let mut body = "grant_type=client_credentials".to_owned();
    if !scopes.is_empty() {
        body.push_str("&scope=");
        body.push_str(&form_encode(&scopes.join(" ")));
    }
    body
}

/// The body of an introspection request (RFC 7662 §2.1).
pub fn introspection_body(token: &str) -> String {
    format!("token={}&token_type_hint=access_token", form_encode(token))
}

/// What a token endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    /// An access token, and `expires_in` if given.
    Issued {
        access_token: String,
        expires_in: Option<u64>,
    },
    /// The IdP refused the client (`invalid_client`, `unauthorized_client`, ...): a 400 or
    /// 401 with an OAuth error.
    Refused(String),
}

/// Parses a token endpoint response. `Err` is an infrastructure failure (5xx, garbage).
pub fn parse_token_response(
    status: u16,
    body: &[u8],
    max_depth: usize,
    max_token: usize,
) -> Result<TokenAnswer, String> {
    let doc = json::parse_strict(body, max_depth);
    match status {
        200 => {}
        400 | 401 | 403 => {
            // The IdP's `error` goes to the log: only an RFC 6749 error code (printable
            // ASCII without `"` and a backslash, bounded), never whatever text an IdP sends.
            let error = doc
                .ok()
                .and_then(|d| d.get("error").and_then(Value::as_str).map(str::to_owned))
                .filter(|e| {
                    !e.is_empty()
                        && e.len() <= 64
                        && e.bytes()
                            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
                })
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Ok(TokenAnswer::Refused(error));
        }
        other => return Err(format!("HTTP status {other}")),
    }
    let doc = doc.map_err(|e| format!("not JSON: {e}"))?;
    let access_token = match doc.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() && t.len() <= max_token => t.clone(),
        Some(Value::String(_)) => return Err("access_token is empty or too long".into()),
        _ => return Err("has no access_token string".into()),
    };
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("access_token has characters a header cannot carry".into());
    }
    match doc.get("token_type") {
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        None => {}
        _ => return Err("token_type is not Bearer".into()),
    }
    let expires_in = match doc.get("expires_in") {
        None | Some(Value::Null) => None,
        // RFC 6749 §5.1 gives a number; Azure AD's v1 endpoint sends it as a string of
        // digits ("3599").
        Some(Value::String(digits))
            if (1..=10).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            digits.parse().ok()
        }
        Some(v) => Some(v.as_u64().ok_or("expires_in is not a whole number")?),
    };
    Ok(TokenAnswer::Issued {
        access_token,
        expires_in,
    })
}

/// What an introspection endpoint said about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspection {
    /// `"active": true`, with the other members as claims.
    Active(json::Object),
    /// Anything else a well-formed answer can say: `false`, missing, `"true"` as a string.
    Inactive,
}

/// Parses an introspection response (RFC 7662 §2.2). Only the JSON boolean `true` is
/// active. `Err` is an infrastructure failure: not a 200, not a JSON object.
pub fn parse_introspection(
    status: u16,
    body: &[u8],
    max_depth: usize,
) -> Result<Introspection, String> {
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    let answer = json::Object::parse(body.to_vec(), max_depth)
        .map_err(|e| format!("not a JSON object: {e}"))?;
    if answer.get("active").and_then(json::Json::as_bool) == Some(true) {
        Ok(Introspection::Active(answer))
    } else {
        Ok(Introspection::Inactive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_into_callout_parts() {
        let u = Url::parse("https://idp.example.com:8443/oauth/v2/jwks?x=1").unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "idp.example.com:8443");
        assert_eq!(u.path, "/oauth/v2/jwks?x=1");
        assert_eq!(Url::parse("http://127.0.0.1:3000").unwrap().path, "/");
        assert_eq!(Url::parse("http://h?q").unwrap().path, "/?q");
        for bad in [
            "ftp://x/",
            "http://",
            "http:///x",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/#f",
            "//h/x",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    /// Kong (ngx_wasm_module) parses a callout's `host[:port]` with `ngx_parse_url` inside
    /// `dispatch_http_call`, and an authority it refuses traps the VM there (the host sets a
    /// trap message: `dispatch failed: tcp socket - invalid port`): such a URL, from the
    /// configuration or an IdP's discovery document, must be refused when read.
    #[test]
    fn refuses_authorities_the_proxy_cannot_dial() {
        for bad in [
            "http://:80/x",
            "http://h:0/x",
            "http://h:66000/x",
            "http://h:99999999999/x",
            "http://h:/x",
            "http://h:8a/x",
            "http://h:+80/x",
            "http://[::1/x",
            "http://[::1]x/x",
            "http://h:80:80/x",
            "http://unix:/tmp/s/x",
            "http://[]/x",
            "http://[fe80::1%25eth0]/x",
            "http://[::g]/x",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "http://h:1/x",
            "http://h:65535/x",
            "http://[::1]:8080/x",
            "http://[::1]/x",
            "http://[::ffff:10.0.0.1]:80/x",
            "http://idp.example.com/x",
            "http://127.0.0.1:3000",
        ] {
            assert!(Url::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn accepts_issuer_or_discovery_url() {
        assert_eq!(
            issuer_and_discovery("http://127.0.0.1:3000"),
            (
                "http://127.0.0.1:3000".into(),
                "http://127.0.0.1:3000/.well-known/openid-configuration".into()
            )
        );
        assert_eq!(
            issuer_and_discovery("https://idp/oauth/.well-known/openid-configuration"),
            (
                "https://idp/oauth".into(),
                "https://idp/oauth/.well-known/openid-configuration".into()
            )
        );
        assert_eq!(
            issuer_and_discovery("https://idp/t/").1,
            "https://idp/t/.well-known/openid-configuration"
        );
    }

    #[test]
    fn form_encoding_and_basic_auth() {
        assert_eq!(form_encode("a b:c/d%é"), "a+b%3Ac%2Fd%25%C3%A9");
        // base64("id%3A1:s+c") per RFC 6749 §2.3.1
        assert_eq!(basic_auth("id:1", "s c"), "Basic aWQlM0ExOnMrYw==");
        assert_eq!(
            client_credentials_body(&["a".into(), "b:c".into()]),
            "grant_type=client_credentials&scope=a+b%3Ac"
        );
        assert_eq!(
            client_credentials_body(&[]),
            "grant_type=client_credentials"
        );
        assert_eq!(
            introspection_body("x.y+z"),
            "token=x.y%2Bz&token_type_hint=access_token"
        );
    }

    #[test]
    fn token_responses() {
        let ok = br#"{"access_token":"abc.def.ghi","token_type":"Bearer","expires_in":600}"#;
        assert_eq!(
            parse_token_response(200, ok, 8, 100).unwrap(),
            TokenAnswer::Issued {
                access_token: "abc.def.ghi".into(),
                expires_in: Some(600)
            }
        );
        assert_eq!(
            parse_token_response(401, br#"{"error":"invalid_client"}"#, 8, 100).unwrap(),
            TokenAnswer::Refused("invalid_client".into())
        );
        assert_eq!(
            parse_token_response(400, b"<html>", 8, 100).unwrap(),
            TokenAnswer::Refused("HTTP 400".into())
        );
        // What goes to the log is an error code, not any text the IdP chose.
        let long = format!(r#"{{"error":"{}"}}"#, "a".repeat(65));
        for body in [
            &br#"{"error":"bad\nclient 200 allowed"}"#[..],
            br#"{"error":"say \"hi\""}"#,
            br#"{"error":""}"#,
            long.as_bytes(),
        ] {
            assert_eq!(
                parse_token_response(401, body, 8, 100).unwrap(),
                TokenAnswer::Refused("HTTP 401".into()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for (status, body) in [
            (500, &ok[..]),
            (200, &b"<html>"[..]),
            (200, &br#"{"token_type":"Bearer"}"#[..]),
            (200, &br#"{"access_token":7}"#[..]),
            (200, &br#"{"access_token":"a b"}"#[..]),
            (200, &br#"{"access_token":"abc","token_type":"mac"}"#[..]),
            (200, &br#"{"access_token":"abc","expires_in":"6e2"}"#[..]),
            (200, &br#"{"access_token":"abc","expires_in":"-1"}"#[..]),
            (200, &br#"{"access_token":"abc","expires_in":" 600"}"#[..]),
            (200, &br#"{"access_token":"abc","expires_in":"600.0"}"#[..]),
            (200, &br#"{"access_token":"abc","expires_in":""}"#[..]),
            (
                200,
                &br#"{"access_token":"abc","expires_in":"99999999999"}"#[..],
            ),
            (200, &br#"{"access_token":"abc","expires_in":600.5}"#[..]),
            (200, &br#"{"access_token":"abc","access_token":"def"}"#[..]),
        ] {
            assert!(
                parse_token_response(status, body, 8, 100).is_err(),
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
        // Azure AD's v1 endpoint: expires_in as a string of digits.
        assert_eq!(
            parse_token_response(
                200,
                br#"{"access_token":"abc","expires_in":"3599"}"#,
                8,
                100
            )
            .unwrap(),
            TokenAnswer::Issued {
                access_token: "abc".into(),
                expires_in: Some(3599)
            }
        );
        assert!(
            parse_token_response(200, br#"{"access_token":"aaaa"}"#, 8, 3).is_err(),
            "too long"
        );
    }

    #[test]
    fn only_a_json_true_is_active() {
        assert!(
            matches!(parse_introspection(200, br#"{"active":true,"client_id":"c"}"#, 8), Ok(Introspection::Active(m)) if m.get("client_id").and_then(json::Json::as_str).as_deref() == Some("c"))
        );
        for body in [
            &br#"{"active":false}"#[..],
            br#"{"active":"true"}"#,
            br#"{"active":1}"#,
            br#"{}"#,
            br#"{"active":null}"#,
        ] {
            assert_eq!(
                parse_introspection(200, body, 8).unwrap(),
                Introspection::Inactive,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_introspection(200, b"[true]", 8).is_err());
        assert!(parse_introspection(200, b"<html>", 8).is_err());
        assert!(parse_introspection(500, br#"{"active":true}"#, 8).is_err());
        assert!(parse_introspection(200, br#"{"active":true,"active":false}"#, 8).is_err());
    }

    fn names(issuer: &str) -> Vec<String> {
        vec![issuer.to_owned()]
    }

    #[test]
    fn an_issuer_given_by_its_discovery_url_may_end_with_a_slash() {
        assert_eq!(
            issuer_names("https://idp/t/.well-known/openid-configuration"),
            ["https://idp/t", "https://idp/t/"]
        );
        assert_eq!(
            issuer_names("https://tenant.auth0.com/.well-known/openid-configuration"),
            ["https://tenant.auth0.com", "https://tenant.auth0.com/"]
        );
        assert_eq!(issuer_names("https://idp/t"), ["https://idp/t"]);
        assert_eq!(issuer_names("https://idp/t/"), ["https://idp/t/"]);
        // A discovery URL whose issuer part already ends with a slash names that issuer only.
        assert_eq!(
            issuer_names("https://idp/t//.well-known/openid-configuration"),
            ["https://idp/t/"]
        );
        let either = issuer_names("http://a/.well-known/openid-configuration");
        for issuer in ["http://a", "http://a/"] {
            let doc = format!(r#"{{"issuer":"{issuer}","jwks_uri":"http://a/jwks"}}"#);
            assert!(
                parse_discovery(doc.as_bytes(), &either, 16).is_ok(),
                "{issuer}"
            );
        }
        let doc = br#"{"issuer":"http://a//","jwks_uri":"http://a/jwks"}"#;
        assert!(parse_discovery(doc, &either, 16).is_err());
        let doc = br#"{"issuer":"http://a/x","jwks_uri":"http://a/jwks"}"#;
        assert!(parse_discovery(doc, &either, 16).is_err());
    }

    #[test]
    fn discovery_must_name_the_configured_issuer() {
        let doc = br#"{"issuer":"http://a","jwks_uri":"http://a/jwks","token_endpoint":"http://a/token"}"#;
        let d = parse_discovery(doc, &names("http://a"), 16).unwrap();
        assert_eq!(d.jwks_uri.path, "/jwks");
        assert_eq!(d.token_endpoint.unwrap().path, "/token");
        assert!(parse_discovery(doc, &names("http://a/"), 16)
            .unwrap_err()
            .contains("expected"));
        assert!(parse_discovery(br#"{"issuer":"http://a"}"#, &names("http://a"), 16).is_err());
        assert!(parse_discovery(
            br#"{"issuer":"http://a","jwks_uri":7}"#,
            &names("http://a"),
            16
        )
        .is_err());
        assert!(parse_discovery(b"<html>", &names("http://a"), 16).is_err());
        assert!(parse_discovery(b"[]", &names("http://a"), 16).is_err());
    }

    #[test]
    fn an_https_issuer_names_no_plain_http_endpoint_off_this_machine() {
        // Keys fetched in the clear can be swapped; client secrets and tokens posted in the
        // clear can be read (RFC 6749 §3.2, RFC 7662 §4: TLS).
        for member in ["jwks_uri", "token_endpoint", "introspection_endpoint"] {
            let mut doc =
                serde_json::json!({"issuer": "https://idp", "jwks_uri": "https://idp/jwks"});
            doc[member] = serde_json::json!("http://idp/x");
            let e =
                parse_discovery(doc.to_string().as_bytes(), &names("https://idp"), 16).unwrap_err();
            assert!(e.contains(member) && e.contains("not https"), "{e}");
        }
        // On this machine, or https: taken. Names that only look like a loopback address
        // are other hosts: refused.
        for (jwks, taken) in [
            ("http://127.0.0.1:8080/jwks", true),
            ("http://127.0.0.2/jwks", true),
            ("http://LocalHost/jwks", true),
            ("http://[::1]:3000/jwks", true),
            ("https://other/jwks", true),
            ("http://127.0.0.1.evil.example/jwks", false),
            ("http://127.evil.example.com/jwks", false),
            ("http://127.a.b.c/jwks", false),
            ("http://127.0.0.0001/jwks", false),
            ("http://10.0.0.1/jwks", false),
            ("http://localhost.evil.example/jwks", false),
        ] {
            let doc = serde_json::json!({"issuer": "https://idp", "jwks_uri": jwks});
            let parsed = parse_discovery(doc.to_string().as_bytes(), &names("https://idp"), 16);
            assert_eq!(parsed.is_ok(), taken, "{jwks}");
        }
        // An issuer configured as plain http was chosen so.
        let doc = br#"{"issuer":"http://idp","jwks_uri":"http://other/jwks"}"#;
        assert!(parse_discovery(doc, &names("http://idp"), 16).is_ok());
    }
}
