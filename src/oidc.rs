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

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
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

/// Parses a discovery document. The `issuer` it names must be exactly the configured one
/// (OpenID Connect Discovery §4.3): a document that names another issuer is refused, so a
/// misrouted callout cannot swap one IdP's keys for another's.
pub fn parse_discovery(body: &[u8], issuer: &str, max_depth: usize) -> Result<Discovery, String> {
    let doc = json::parse_strict(body, max_depth).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(doc) = doc else {
        return Err("not a JSON object".into());
    };
    match doc.get("issuer") {
        Some(Value::String(s)) if s == issuer => {}
        Some(Value::String(s)) => {
            return Err(format!("names issuer {s:?}, expected {issuer:?}"));
        }
        _ => return Err("has no issuer string".into()),
    }
    let url = |name: &str| -> Result<Option<Url>, String> {
        match doc.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Url::parse(s).map(Some).map_err(|e| format!("{name} {e}")),
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
    fn discovery_must_name_the_configured_issuer() {
        let doc = br#"{"issuer":"http://a","jwks_uri":"http://a/jwks","token_endpoint":"http://a/token"}"#;
        let d = parse_discovery(doc, "http://a", 16).unwrap();
        assert_eq!(d.jwks_uri.path, "/jwks");
        assert_eq!(d.token_endpoint.unwrap().path, "/token");
        assert!(parse_discovery(doc, "http://a/", 16)
            .unwrap_err()
            .contains("expected"));
        assert!(parse_discovery(br#"{"issuer":"http://a"}"#, "http://a", 16).is_err());
        assert!(parse_discovery(br#"{"issuer":"http://a","jwks_uri":7}"#, "http://a", 16).is_err());
        assert!(parse_discovery(b"<html>", "http://a", 16).is_err());
        assert!(parse_discovery(b"[]", "http://a", 16).is_err());
    }
}
