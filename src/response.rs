//! Denials: one variant per reason, and the one place that turns a reason into what goes on
//! the wire (status, JSON body, `WWW-Authenticate` per RFC 6750) and into a counter name.

use crate::jwt::TokenError;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The route has no policy and there is no default policy (fail closed).
    NoPolicy,
    /// No credential at all.
    MissingCredential,
    /// An `Authorization` scheme, or an auth method, the route's strategies do not take.
    UnsupportedCredential,
    /// RFC 6750 `invalid_request`: several credentials, unparsable header.
    InvalidRequest(&'static str),
    /// RFC 6750 `invalid_token`.
    InvalidToken(TokenError),
    /// The token is longer than `limits.max_token_bytes`.
    TokenTooLarge,
    /// The token lacks the scopes of `scopes_required`.
    InsufficientScope,
    /// No application has this credential.
    UnknownApplication,
    /// The application was registered under another auth strategy.
    WrongStrategy,
    /// The application is not approved for this API (policy `scope`).
    NotApproved,
    /// key-auth: the key appears more than once.
    DuplicateApiKey,
    /// client_credentials: the IdP refused the client id and secret (`invalid_client`).
    InvalidClient,
    /// The identity provider could not be reached or answered nonsense, and nothing valid is
    /// cached.
    IdpUnavailable(&'static str),
    /// The request carries more header fields than `limits.max_request_headers`.
    TooManyHeaders,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Denial {
    pub fn status(self) -> u16 {
        match self {
            Denial::InvalidRequest(_) => 400,
            Denial::MissingCredential
            | Denial::UnsupportedCredential
            | Denial::InvalidToken(_)
            | Denial::TokenTooLarge
            | Denial::UnknownApplication
            | Denial::WrongStrategy
            | Denial::DuplicateApiKey
            | Denial::InvalidClient => 401,
            Denial::NoPolicy | Denial::InsufficientScope | Denial::NotApproved => 403,
            Denial::IdpUnavailable(_) => 503,
            // RFC 6585 §5: Request Header Fields Too Large.
            Denial::TooManyHeaders => 431,
        }
    }

    /// The `message` of the JSON body, as Kong's plugins word it.
    pub fn message(self) -> &'static str {
        match self {
            Denial::InvalidRequest(_) => "Bad Request",
            Denial::MissingCredential
            | Denial::UnsupportedCredential
            | Denial::InvalidToken(_)
            | Denial::TokenTooLarge
            | Denial::UnknownApplication
            | Denial::WrongStrategy
            | Denial::InvalidClient => "Unauthorized",
            Denial::DuplicateApiKey => "Duplicate API key found",
            Denial::NoPolicy | Denial::InsufficientScope => "Forbidden",
            Denial::NotApproved => "You cannot consume this service",
            Denial::IdpUnavailable(_) => "Service Unavailable",
            Denial::TooManyHeaders => "Request Header Fields Too Large",
        }
    }

    /// RFC 6750 error code and description, for denials that are about the bearer token.
    fn bearer_error(self) -> Option<(&'static str, &'static str)> {
        match self {
            Denial::InvalidRequest(why) => Some(("invalid_request", why)),
            Denial::InvalidToken(e) => Some(("invalid_token", e.description())),
            Denial::TokenTooLarge => Some(("invalid_token", "token is too large")),
            Denial::InsufficientScope => {
                Some(("insufficient_scope", "token lacks the required scopes"))
            }
            _ => None,
        }
    }

    /// The short name used in counters and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::NoPolicy => "no_policy",
            Denial::MissingCredential => "missing_credential",
            Denial::UnsupportedCredential => "unsupported_credential",
            Denial::InvalidRequest(_) => "bad_request",
            Denial::InvalidToken(_) | Denial::TokenTooLarge => "invalid_token",
            Denial::InsufficientScope => "insufficient_scope",
            Denial::UnknownApplication | Denial::DuplicateApiKey => "unknown_application",
            Denial::WrongStrategy => "wrong_strategy",
            Denial::NotApproved => "not_approved",
            Denial::InvalidClient => "invalid_client",
            Denial::IdpUnavailable(_) => "idp_unavailable",
            Denial::TooManyHeaders => "too_many_headers",
        }
    }

    /// The detail for the log line (never credential data).
    pub fn detail(self) -> &'static str {
        match self {
            Denial::InvalidRequest(why) | Denial::IdpUnavailable(why) => why,
            Denial::InvalidToken(e) => e.description(),
            other => other.message(),
        }
    }

    /// The reply for this denial. `realm` is the request's host.
    pub fn reply(self, realm: &str) -> Reply {
        let mut headers = vec![(
            "content-type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        )];
        if self.status() == 401 || self.bearer_error().is_some() {
            let mut challenge = format!("Bearer realm=\"{}\"", realm_value(realm));
            if let Some((code, description)) = self.bearer_error() {
                challenge.push_str(&format!(
                    ", error=\"{code}\", error_description=\"{description}\""
                ));
            }
            headers.push(("www-authenticate".to_owned(), challenge));
        }
        let body = serde_json::json!({ "message": self.message() }).to_string();
        Reply {
            status: self.status(),
            headers,
            body,
        }
    }
}

/// The realm is the request's host; anything that could break out of the quoted string (or
/// is simply not a host) becomes a neutral name.
fn realm_value(host: &str) -> &str {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if ok {
        host
    } else {
        "api"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, so a new one cannot be added without a row here.
    fn all() -> Vec<Denial> {
        vec![
            Denial::NoPolicy,
            Denial::MissingCredential,
            Denial::UnsupportedCredential,
            Denial::InvalidRequest("x"),
            Denial::InvalidToken(TokenError::Expired),
            Denial::TokenTooLarge,
            Denial::InsufficientScope,
            Denial::UnknownApplication,
            Denial::WrongStrategy,
            Denial::NotApproved,
            Denial::DuplicateApiKey,
            Denial::InvalidClient,
            Denial::IdpUnavailable("down"),
            Denial::TooManyHeaders,
        ]
    }

    #[test]
    fn every_denial_has_a_consistent_reply() {
        for d in all() {
            // Exhaustiveness guard: adding a variant breaks this match until it is listed.
            match d {
                Denial::NoPolicy
                | Denial::MissingCredential
                | Denial::UnsupportedCredential
                | Denial::InvalidRequest(_)
                | Denial::InvalidToken(_)
                | Denial::TokenTooLarge
                | Denial::InsufficientScope
                | Denial::UnknownApplication
                | Denial::WrongStrategy
                | Denial::NotApproved
                | Denial::DuplicateApiKey
                | Denial::InvalidClient
                | Denial::IdpUnavailable(_)
                | Denial::TooManyHeaders => {}
            }
            let r = d.reply("api.example.com");
            assert_eq!(r.status, d.status());
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["message"], d.message());
            let challenge = r.headers.iter().find(|(n, _)| n == "www-authenticate");
            assert_eq!(
                challenge.is_some(),
                d.status() == 401 || d.status() == 400 || d == Denial::InsufficientScope,
                "{d:?}"
            );
            assert!(!d.reason().is_empty());
        }
    }

    #[test]
    fn rfc6750_shapes() {
        let r = Denial::MissingCredential.reply("api.example.com");
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, r#"{"message":"Unauthorized"}"#)
        );
        assert_eq!(r.headers[1].1, r#"Bearer realm="api.example.com""#);

        let r = Denial::InvalidToken(TokenError::Expired).reply("h");
        assert_eq!(
            r.headers[1].1,
            r#"Bearer realm="h", error="invalid_token", error_description="token has expired""#
        );
        let r = Denial::TokenTooLarge.reply("h");
        assert_eq!(
            (r.status, r.headers[1].1.as_str()),
            (
                401,
                r#"Bearer realm="h", error="invalid_token", error_description="token is too large""#
            )
        );
        let r = Denial::InsufficientScope.reply("h");
        assert_eq!(r.status, 403);
        assert!(r.headers[1].1.contains(r#"error="insufficient_scope""#));
        let r = Denial::InvalidRequest("more than one Authorization header").reply("h");
        assert_eq!(r.status, 400);
        assert!(r.headers[1].1.contains(r#"error="invalid_request""#));
        let r = Denial::NotApproved.reply("h");
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, r#"{"message":"You cannot consume this service"}"#)
        );
        assert_eq!(Denial::IdpUnavailable("x").reply("h").status, 503);
        let r = Denial::TooManyHeaders.reply("h");
        assert_eq!(
            (r.status, r.body.as_str()),
            (431, r#"{"message":"Request Header Fields Too Large"}"#)
        );
        assert!(r.headers.iter().all(|(n, _)| n != "www-authenticate"));
    }

    #[test]
    fn realm_cannot_inject_into_the_challenge() {
        let r = Denial::MissingCredential.reply("evil\", error=\"x");
        assert_eq!(r.headers[1].1, r#"Bearer realm="api""#);
    }
}
