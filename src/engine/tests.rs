//! Engine behaviour with an injected clock and a scripted IdP: every outcome a request can
//! have, and the callouts it causes.

use super::*;
use crate::jwt::fixtures::*;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

const T0: u64 = NOW * 1000;
const ROUTE: &str = "orders";

fn config_value() -> Value {
    json!({
        "policies": {
            "orders-v1": {
                "scope": "orders-v1",
                "strategies": [{"id": "s-oidc", "strategy_type": "openid_connect",
                    "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                        "scopes": ["orders:read"], "auth_methods": ["bearer"],
                        "scopes_required": ["orders:read"], "audience_required": [AUD],
                        "upstream_headers_claims": ["sub"], "upstream_headers_names": ["X-Subject"],
                        "timeout": 2000, "cache_ttl": 300, "enable_hs_signatures": true}}},
                    {"id": "s-key", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["apikey"]}}}],
            },
            "other-v1": {
                "scope": "other-v1",
                "strategies": [{"id": "s-oidc2", "strategy_type": "openid_connect",
                    "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                        "scopes": [], "auth_methods": ["bearer"], "timeout": 2000, "cache_ttl": 300,
                        "enable_hs_signatures": true}}}],
                "hide_credentials": true,
            }
        },
        "routes": {"orders": "orders-v1", "other": "other-v1"},
        "applications": [
            {"id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-oidc", "scopes": ["orders-v1"],
             "developer_id": "dev-1", "portal_id": "portal-1", "organization_id": "org-1"},
            {"id": "app-2", "client_id": "client-2", "auth_strategy_id": "s-oidc", "scopes": ["billing-v1"]},
            {"id": "app-3", "client_id": "client-3", "auth_strategy_id": "s-oidc2", "scopes": ["other-v1"]},
            {"id": "app-key", "client_id": sha256_hex(b"secret-key-1"), "auth_strategy_id": "s-key", "scopes": ["orders-v1"]},
        ],
        "upstreams": {"idp.example.com": "idp"},
    })
}

fn engine_with(config: Value) -> Engine {
    let (config, _) =
        Config::parse(config.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    Engine::new(Rc::new(config), 1)
}

fn engine() -> Engine {
    engine_with(config_value())
}

fn headers(list: &[(&str, &str)]) -> Vec<Header> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn request_on(
    e: &mut Engine,
    ctx: u32,
    route: &str,
    path: &str,
    list: &[(&str, &str)],
    now_ms: u64,
) -> Step {
    let h = headers(list);
    let req = Request {
        route: Some(route),
        authority: "api.example.com",
        path,
        headers: &h,
    };
    e.on_request(ctx, &req, now_ms)
}

fn bearer(e: &mut Engine, ctx: u32, token: &str, now_ms: u64) -> Step {
    let auth = format!("Bearer {token}");
    request_on(
        e,
        ctx,
        ROUTE,
        "/orders/1",
        &[("authorization", &auth)],
        now_ms,
    )
}

fn ok(body: &str) -> CalloutResponse {
    CalloutResponse {
        status: Some(200),
        body: body.as_bytes().to_vec(),
        failure: None,
    }
}

fn discovery_doc() -> String {
    json!({"issuer": ISS, "jwks_uri": "https://idp.example.com/jwks", "token_endpoint": "https://idp.example.com/token"}).to_string()
}

fn callout(step: &Step) -> Callout {
    match step {
        Step::Wait(Some(c)) => c.clone(),
        other => panic!("expected a callout, got {other:?}"),
    }
}

/// Answers discovery then JWKS; returns what the JWKS answer settled.
fn serve_keys(
    e: &mut Engine,
    discovery: &Callout,
    jwks: &str,
    now_ms: u64,
) -> Vec<(u32, Method, Outcome)> {
    let p = e.on_callout_response(discovery.id, ok(&discovery_doc()), now_ms);
    assert!(p.settled.is_empty());
    assert_eq!(p.callouts.len(), 1, "key set fetch follows discovery");
    let jwks_callout = &p.callouts[0];
    assert_eq!(jwks_callout.path, "/jwks");
    e.on_callout_response(jwks_callout.id, ok(jwks), now_ms)
        .settled
}

/// An engine whose keys are loaded.
fn warm() -> Engine {
    let mut e = engine();
    let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
    let settled = serve_keys(&mut e, &callout(&step), &jwks(), T0);
    assert_eq!(settled.len(), 1);
    e
}

fn allowed(step: &Step) -> Allow {
    match step {
        Step::Done(_, Outcome::Allow(a)) => a.clone(),
        other => panic!("expected allow, got {other:?}"),
    }
}

fn denied(step: &Step) -> Denial {
    match step {
        Step::Done(_, Outcome::Deny(d)) => d.denial,
        other => panic!("expected deny, got {other:?}"),
    }
}

fn header<'a>(a: &'a Allow, name: &str) -> Option<&'a str> {
    a.set_headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn first_request_fetches_discovery_then_keys_then_is_allowed() {
    let mut e = engine();
    let step = bearer(&mut e, 7, &rs_at_jwt(&claims()), T0);
    let c = callout(&step);
    assert_eq!(
        (c.upstream.as_str(), c.authority.as_str(), c.https),
        ("idp", "idp.example.com", true)
    );
    assert_eq!(
        (c.method, c.path.as_str(), c.timeout_ms),
        ("GET", "/.well-known/openid-configuration", 2000)
    );
    let settled = serve_keys(&mut e, &c, &jwks(), T0 + 5);
    let [(ctx, method, Outcome::Allow(a))] = settled.as_slice() else {
        panic!("{settled:?}")
    };
    assert_eq!((*ctx, *method), (7, Method::Bearer));
    assert_eq!(header(a, "x-application-id"), Some("app-1"));
    assert_eq!(header(a, "x-application-developer-id"), Some("dev-1"));
    assert_eq!(header(a, "x-application-portal-id"), Some("portal-1"));
    assert_eq!(header(a, "x-application-org-id"), Some("org-1"));
    assert_eq!(header(a, "x-credential-identifier"), Some("client-1"));
    assert_eq!(header(a, "x-subject"), Some("client-1"));
    for spoofable in APPLICATION_HEADERS.iter().chain(["x-subject"].iter()) {
        assert!(
            a.remove_headers.iter().any(|h| h == spoofable),
            "{spoofable} is cleared first"
        );
    }
    assert!(
        !a.remove_headers.iter().any(|h| h == "authorization"),
        "kept without hide_credentials"
    );
    // Cached: the next request is decided at once, with no callout.
    allowed(&bearer(&mut e, 8, &es_token(&claims()), T0 + 10));
    allowed(&bearer(&mut e, 9, &ed_token(&claims()), T0 + 10));
}

#[test]
fn concurrent_requests_share_one_fetch() {
    let mut e = engine();
    let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
    for ctx in 2..=5 {
        assert_eq!(
            bearer(&mut e, ctx, &es_token(&claims()), T0 + 1),
            Step::Wait(None)
        );
    }
    let mut settled = serve_keys(&mut e, &callout(&first), &jwks(), T0 + 2);
    settled.sort_by_key(|(id, _, _)| *id);
    assert_eq!(
        settled.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(settled
        .iter()
        .all(|(_, _, o)| matches!(o, Outcome::Allow(_))));
}

#[test]
fn idp_down_at_start_is_503_then_backs_off_then_recovers() {
    let mut e = engine();
    let c = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
    assert_eq!(
        bearer(&mut e, 2, &rs_token(&claims()), T0),
        Step::Wait(None)
    );
    let p = e.on_callout_response(c.id, CalloutResponse::default(), T0 + 10);
    assert_eq!(p.settled.len(), 2);
    for (_, _, o) in &p.settled {
        let Outcome::Deny(d) = o else { panic!() };
        assert_eq!(d.reply.status, 503);
    }
    assert!(p.callouts.is_empty());
    // Within the backoff: refused at once, no new callout.
    assert_eq!(
        denied(&bearer(&mut e, 3, &rs_token(&claims()), T0 + 500)).status(),
        503
    );
    // After it: tried again, and the IdP is back.
    let c = callout(&bearer(&mut e, 4, &rs_token(&claims()), T0 + 1_100));
    let settled = serve_keys(&mut e, &c, &jwks(), T0 + 1_200);
    assert!(matches!(settled.as_slice(), [(4, _, Outcome::Allow(_))]));
}

#[test]
fn broken_idp_answers_are_never_cached_and_never_allow() {
    let bad_discovery = [
        CalloutResponse { status: Some(500), body: discovery_doc().into_bytes(), failure: None },
        ok("<html>hello</html>"),
        ok(&json!({"issuer": "https://evil.example.com", "jwks_uri": "https://idp.example.com/jwks"}).to_string()),
        ok(&discovery_doc()[..20]),
        CalloutResponse { status: Some(200), body: discovery_doc().into_bytes(), failure: Some("dispatch failed: timeout".into()) },
        ok(&format!("{}{}", discovery_doc(), " ".repeat(300 * 1024))),
    ];
    for (i, response) in bad_discovery.into_iter().enumerate() {
        let mut e = engine();
        let c = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
        let p = e.on_callout_response(c.id, response, T0);
        assert!(p.callouts.is_empty(), "case {i}");
        let [(_, _, Outcome::Deny(d))] = p.settled.as_slice() else {
            panic!("case {i}: {:?}", p.settled)
        };
        assert_eq!(d.reply.status, 503, "case {i}");
    }
    for (i, body) in [
        "<html>",
        "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":1}]}",
        "{\"keys\":",
    ]
    .iter()
    .enumerate()
    {
        let mut e = engine();
        let c = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
        let p = e.on_callout_response(c.id, ok(&discovery_doc()), T0);
        let p = e.on_callout_response(p.callouts[0].id, ok(body), T0);
        let [(_, _, Outcome::Deny(d))] = p.settled.as_slice() else {
            panic!("jwks case {i}")
        };
        assert_eq!(d.reply.status, 503, "jwks case {i}");
    }
}

#[test]
fn rotation_refetches_once_per_cooldown() {
    let mut e = warm();
    let k = keys();
    let rotated = json!({"keys": [rsa_jwk(&k.rs_other, "rs-2", Some("RS256")), rsa_jwk(&k.rs, "rs-1", Some("RS256"))]}).to_string();
    let new_token = k
        .rs_other
        .clone()
        .with_key_id("rs-2")
        .sign(JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: claims().as_object().cloned().unwrap(),
        })
        .unwrap();
    // Unknown kid: the key set (not discovery, still valid) is fetched again.
    let c = callout(&bearer(&mut e, 2, &new_token, T0 + 1_000));
    assert_eq!(c.path, "/jwks");
    let p = e.on_callout_response(c.id, ok(&rotated), T0 + 1_100);
    assert!(matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]));
    allowed(&bearer(&mut e, 3, &new_token, T0 + 1_200));
    // Another unknown kid within the cooldown: refused without a fetch.
    let unknown = hs_with_header(r#"{"alg":"HS256","kid":"nope"}"#);
    assert_eq!(
        denied(&bearer(&mut e, 4, &unknown, T0 + 2_000)),
        Denial::InvalidToken(TokenError::UnknownKid)
    );
    // After the cooldown (30 s): one more look.
    assert!(matches!(
        bearer(&mut e, 5, &unknown, T0 + 31_001),
        Step::Wait(Some(_))
    ));
}

#[test]
fn new_key_set_replaces_the_old_one_whole() {
    let mut e = warm();
    let k = keys();
    let only_new = json!({"keys": [rsa_jwk(&k.rs_other, "rs-2", Some("RS256"))]}).to_string();
    let unknown = hs_with_header(r#"{"alg":"HS256","kid":"zzz"}"#);
    let c = callout(&bearer(&mut e, 2, &unknown, T0 + 1_000));
    let p = e.on_callout_response(c.id, ok(&only_new), T0 + 1_001);
    assert_eq!(p.settled.len(), 1);
    // rs-1 was removed at the IdP: its tokens stop verifying.
    assert_eq!(
        denied(&bearer(&mut e, 3, &rs_token(&claims()), T0 + 1_002)),
        Denial::InvalidToken(TokenError::UnknownKid)
    );
}

#[test]
fn every_denial_of_the_bearer_flow() {
    let mut e = warm();
    let t = |c: Value| rs_token(&claims_with(c));
    let cases: Vec<(&str, Step, Denial)> = vec![
        (
            "no credential",
            request_on(&mut e, 1, ROUTE, "/orders", &[], T0),
            Denial::MissingCredential,
        ),
        (
            "expired",
            bearer(&mut e, 1, &t(json!({"exp": NOW - 1})), T0),
            Denial::InvalidToken(TokenError::Expired),
        ),
        (
            "wrong issuer",
            bearer(&mut e, 1, &t(json!({"iss": "https://evil"})), T0),
            Denial::InvalidToken(TokenError::WrongIssuer),
        ),
        (
            "wrong audience",
            bearer(&mut e, 1, &t(json!({"aud": "https://other"})), T0),
            Denial::InvalidToken(TokenError::WrongAudience),
        ),
        (
            "missing scope",
            bearer(&mut e, 1, &t(json!({"scope": "orders:write"})), T0),
            Denial::InsufficientScope,
        ),
        (
            "unregistered app",
            bearer(&mut e, 1, &t(json!({"client_id": "nobody"})), T0),
            Denial::UnknownApplication,
        ),
        (
            "not approved",
            bearer(&mut e, 1, &t(json!({"client_id": "client-2"})), T0),
            Denial::NotApproved,
        ),
        (
            "other strategy's app",
            bearer(&mut e, 1, &t(json!({"client_id": "client-3"})), T0),
            Denial::WrongStrategy,
        ),
        (
            "forged",
            bearer(&mut e, 1, &foreign_token(&claims()), T0),
            Denial::InvalidToken(TokenError::BadSignature),
        ),
        (
            "not a JWT",
            bearer(&mut e, 1, "opaque-token-value", T0),
            Denial::InvalidToken(TokenError::NotCompactJws),
        ),
        (
            "no credential claim",
            bearer(&mut e, 1, &t(json!({"client_id": null})), T0),
            Denial::InvalidToken(TokenError::BadCredentialClaim),
        ),
        (
            "two headers",
            request_on(
                &mut e,
                1,
                ROUTE,
                "/orders",
                &[("authorization", "Bearer a"), ("Authorization", "Bearer b")],
                T0,
            ),
            Denial::InvalidRequest("more than one Authorization header"),
        ),
        (
            "joined by envoy",
            request_on(
                &mut e,
                1,
                ROUTE,
                "/orders",
                &[("authorization", "Bearer a,Bearer b")],
                T0,
            ),
            Denial::InvalidRequest("more than one credential in the Authorization header"),
        ),
        (
            "header and query",
            request_on(
                &mut e,
                1,
                ROUTE,
                "/orders?access_token=abc",
                &[("authorization", "Bearer a")],
                T0,
            ),
            Denial::InvalidRequest(
                "credentials in both the Authorization header and the query string",
            ),
        ),
        (
            "basic not enabled",
            request_on(
                &mut e,
                1,
                ROUTE,
                "/orders",
                &[("authorization", "Basic YTpi")],
                T0,
            ),
            Denial::UnsupportedCredential,
        ),
        (
            "digest",
            request_on(
                &mut e,
                1,
                ROUTE,
                "/orders",
                &[("authorization", "Digest x")],
                T0,
            ),
            Denial::UnsupportedCredential,
        ),
        (
            "no policy",
            request_on(
                &mut e,
                1,
                "elsewhere",
                "/",
                &[("authorization", "Bearer a")],
                T0,
            ),
            Denial::NoPolicy,
        ),
        (
            "huge",
            bearer(&mut e, 1, &"a".repeat(20_000), T0),
            Denial::TokenTooLarge,
        ),
    ];
    for (name, step, want) in cases {
        assert_eq!(denied(&step), want, "{name}");
    }
    let mut h = headers(&[("authorization", "Bearer x")]);
    h[0].1 = b"Bearer \xe9t\xe9".to_vec();
    let req = Request {
        route: Some(ROUTE),
        authority: "h",
        path: "/",
        headers: &h,
    };
    assert!(
        matches!(
            denied(&e.on_request(1, &req, T0)),
            Denial::InvalidRequest(_)
        ),
        "non-UTF-8 header"
    );
}

#[test]
fn expired_tokens_are_refused_before_any_fetch() {
    let mut e = engine();
    let step = bearer(
        &mut e,
        1,
        &rs_token(&claims_with(json!({"exp": NOW - 5}))),
        T0,
    );
    assert_eq!(denied(&step), Denial::InvalidToken(TokenError::Expired));
}

#[test]
fn hide_credentials_strips_header_and_query() {
    let mut e = warm();
    let token = rs_token(&claims_with(json!({"client_id": "client-3"})));
    let auth = format!("Bearer {token}");
    let a = allowed(&request_on(
        &mut e,
        1,
        "other",
        "/o",
        &[("authorization", &auth)],
        T0,
    ));
    assert!(a.remove_headers.iter().any(|h| h == "authorization"));
    assert_eq!(header(&a, "x-application-id"), Some("app-3"));
    let path = format!("/o?a=1&access_token={token}&b=2");
    let a = allowed(&request_on(&mut e, 2, "other", &path, &[], T0));
    assert_eq!(a.path.as_deref(), Some("/o?a=1&b=2"));
}

#[test]
fn key_auth_maps_the_key_hash_to_an_application() {
    let mut e = engine();
    let a = allowed(&request_on(
        &mut e,
        1,
        ROUTE,
        "/orders",
        &[("apikey", "secret-key-1")],
        T0,
    ));
    assert_eq!(header(&a, "x-application-id"), Some("app-key"));
    let a = allowed(&request_on(
        &mut e,
        1,
        ROUTE,
        "/orders?apikey=secret-key-1",
        &[],
        T0,
    ));
    assert_eq!(a.path, None, "kept without hide_credentials");
    assert_eq!(
        denied(&request_on(
            &mut e,
            1,
            ROUTE,
            "/orders?apikey=secret-key-1",
            &[("apikey", "secret-key-1")],
            T0
        )),
        Denial::DuplicateApiKey
    );
    assert_eq!(
        denied(&request_on(
            &mut e,
            1,
            ROUTE,
            "/orders",
            &[("apikey", "wrong")],
            T0
        )),
        Denial::UnknownApplication
    );
}

#[test]
fn tick_warms_keys_and_releases_stuck_requests() {
    let mut e = engine();
    let p = e.on_tick(T0);
    assert_eq!(p.callouts.len(), 1, "one issuer, one warm-up fetch");
    assert_eq!(p.callouts[0].path, "/.well-known/openid-configuration");
    assert!(
        e.on_tick(T0 + 1_000).callouts.is_empty(),
        "the fetch is under way"
    );
    // A request joins the warm-up fetch; the fetch is lost (its callout never answers).
    assert_eq!(
        bearer(&mut e, 1, &rs_token(&claims()), T0 + 1_000),
        Step::Wait(None)
    );
    let p = e.on_tick(T0 + 5_000);
    let [(1, _, Outcome::Deny(d))] = p.settled.as_slice() else {
        panic!("{:?}", p.settled)
    };
    assert_eq!(d.reply.status, 503);
    // Keys served by a tick-started fetch, then refreshed near expiry (cache_ttl 300 s).
    let mut e = engine();
    let c = e.on_tick(T0).callouts.remove(0);
    serve_keys(&mut e, &c, &jwks(), T0);
    assert!(e.on_tick(T0 + 200_000).callouts.is_empty());
    let refresh = e.on_tick(T0 + 271_000).callouts;
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].path, "/jwks");
}

#[test]
fn responses_for_a_replaced_engine_are_ignored() {
    let mut old = engine();
    let c = callout(&bearer(&mut old, 1, &rs_token(&claims()), T0));
    let mut new = engine_with(config_value());
    // Same shape, other generation.
    let mut id = c.id;
    id.generation = 2;
    let p = new.on_callout_response(id, ok(&discovery_doc()), T0);
    assert!(p.callouts.is_empty() && p.settled.is_empty());
}

#[test]
fn stale_keys_serve_while_refresh_fails_then_stop() {
    let mut e = warm();
    let later = T0 + 300_000 + 10_000; // keys expired 10 s ago
    let c = e.on_tick(later).callouts.remove(0);
    e.on_callout_response(
        c.id,
        CalloutResponse {
            status: Some(503),
            ..CalloutResponse::default()
        },
        later,
    );
    allowed(&bearer(
        &mut e,
        1,
        &rs_token(&claims_with(json!({"exp": NOW + 10_000}))),
        later + 1,
    ));
    let too_late = T0 + 300_000 + crate::cache::MAX_STALE_MS + 1;
    let step = bearer(
        &mut e,
        2,
        &rs_token(&claims_with(json!({"exp": NOW + 100_000}))),
        too_late,
    );
    // Nothing usable: a fresh fetch is attempted rather than a stale allow.
    assert!(matches!(step, Step::Wait(Some(_))));
}
