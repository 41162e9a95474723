//! The IdP's answers: `oidc::parse_discovery`, `oidc::parse_token_response` and
//! `oidc::parse_introspection` on one body, with an HTTP status chosen by the first byte
//! (`'0'` 200, `'1'` 400, `'2'` 401, `'3'` 403, `'4'` 500, `'5'` 503, `'6'` 302, `'7'` 204,
//! i.e. byte % 8). `oidc::Url::parse` runs on the body as text too.

#![no_main]

use app_auth_filter::oidc::{self, Introspection, TokenAnswer, Url};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://idp.example.com";
const MAX_TOKEN: usize = 16384;

fn check_url(u: &Url) {
    assert!(!u.authority.is_empty() && !u.authority.contains(['@', '/', '?', '#']));
    assert!(u.path.starts_with('/'), "path {:?}", u.path);
    assert!(!u.path.contains('#'));
    // What a callout is built from parses back to the same parts.
    let again = Url::parse(&format!("{}://{}{}", u.scheme(), u.authority, u.path))
        .expect("a parsed URL, reassembled, parses");
    assert_eq!(&again, u);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = [200u16, 400, 401, 403, 500, 503, 302, 204][usize::from(selector % 8)];

    let names = oidc::issuer_names(ISSUER);
    if let Ok(d) = oidc::parse_discovery(body, &names, 32) {
        check_url(&d.jwks_uri);
        d.token_endpoint.as_ref().map(check_url);
        d.introspection_endpoint.as_ref().map(check_url);
    }

    match oidc::parse_token_response(status, body, 32, MAX_TOKEN) {
        Ok(TokenAnswer::Issued { access_token, .. }) => {
            assert_eq!(status, 200);
            assert!(!access_token.is_empty() && access_token.len() <= MAX_TOKEN);
            assert!(access_token.bytes().all(|b| b.is_ascii_graphic()));
        }
        Ok(TokenAnswer::Refused(_)) => assert!(matches!(status, 400 | 401 | 403)),
        Err(_) => {}
    }

    match oidc::parse_introspection(status, body, 32) {
        Ok(Introspection::Active(claims)) => {
            assert_eq!(status, 200);
            assert_eq!(
                claims.get("active").and_then(app_auth_filter::json::Json::as_bool),
                Some(true)
            );
        }
        Ok(Introspection::Inactive) => assert_eq!(status, 200),
        Err(_) => {}
    }

    if let Ok(text) = std::str::from_utf8(body) {
        if let Ok(u) = Url::parse(text) {
            check_url(&u);
        }
        let (issuer, discovery) = oidc::issuer_and_discovery(text);
        assert!(discovery.ends_with(oidc::WELL_KNOWN));
        assert!(text.starts_with(&issuer));
        // The issuer's names: itself first, and at most the same with a trailing slash.
        let names = oidc::issuer_names(text);
        assert_eq!(names.first(), Some(&issuer));
        assert!(names.iter().skip(1).all(|n| *n == format!("{issuer}/")));
    }
});
