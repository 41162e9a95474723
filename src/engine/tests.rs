// Test code only: the parent module declares this file behind #[cfg(test)].
//! Engine behaviour with an injected clock and a scripted IdP: every outcome a request can
//! have, and the callouts it causes.

use super::*;
use crate::jwt::fixtures::*;
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

fn headers<'a>(list: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
    list.iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
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
        max_age_s: None,
    }
}

fn discovery_doc() -> String {
    json!({"issuer": ISS, "jwks_uri": "https://idp.example.com/jwks", "token_endpoint": "https://idp.example.com/token",
           "introspection_endpoint": "https://idp.example.com/token/introspection"}).to_string()
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

/// As [`warm`], with counters the test reads.
fn warm_counted() -> (Engine, Rc<crate::metrics::Recording>) {
    let (config, _) = Config::parse(config_value().to_string().as_bytes()).unwrap();
    let counters = Rc::new(crate::metrics::Recording::default());
    let store = Rc::new(crate::shared::MemoryStore::default());
    let mut e = Engine::with_host(Rc::new(config), 1, store, counters.clone());
    let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
    assert_eq!(serve_keys(&mut e, &callout(&first), &jwks(), T0).len(), 1);
    (e, counters)
}

/// An engine for `config` that shares `store` with others (one Envoy VM among several).
fn vm_sharing(config: &Value, store: &Rc<crate::shared::MemoryStore>) -> Engine {
    let (config, _) = Config::parse(config.to_string().as_bytes()).unwrap();
    let store: Rc<dyn crate::shared::SharedStore> = store.clone();
    Engine::with_host(
        Rc::new(config),
        1,
        store,
        Rc::new(crate::metrics::NoCounters),
    )
}

fn allowed(step: &Step) -> Allow {
    match step {
        Step::Done(_, Outcome::Allow(a)) => Allow::clone(a),
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
        CalloutResponse { status: Some(500), body: discovery_doc().into_bytes(), failure: None, max_age_s: None },
        ok("<html>hello</html>"),
        ok(&json!({"issuer": "https://evil.example.com", "jwks_uri": "https://idp.example.com/jwks"}).to_string()),
        // An https issuer's keys named at a plain http URL off this machine.
        ok(&json!({"issuer": ISS, "jwks_uri": "http://idp.example.com/jwks"}).to_string()),
        ok(&discovery_doc()[..20]),
        CalloutResponse { status: Some(200), body: discovery_doc().into_bytes(), failure: Some("dispatch failed: timeout".into()), max_age_s: None },
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
    let rotated = rotated_jwks();
    let new_token = rotated_token(&claims());
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
fn a_token_without_kid_that_the_key_does_not_verify_looks_for_a_rotated_key_once_per_cooldown() {
    // An IdP that names no kid and rotates its one key: its new tokens carry nothing that
    // says the set is stale, so a signature the current key does not verify looks again
    // (as an unknown kid does), under the same cooldown.
    let mut e = warm();
    let new_token = rotated_token_without_kid(&claims());
    let c = callout(&bearer(&mut e, 2, &new_token, T0 + 1_000));
    assert_eq!(c.path, "/jwks");
    let p = e.on_callout_response(c.id, ok(&rotated_jwks_without_kid()), T0 + 1_100);
    assert!(
        matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
        "{p:?}"
    );
    allowed(&bearer(&mut e, 3, &new_token, T0 + 1_200));
    // A signature no key verifies, within the cooldown: refused without a fetch, for what
    // it is.
    let forged = rotated_token_without_kid(&claims_with(json!({"sub": "admin"})));
    let (signed, _) = forged.rsplit_once('.').unwrap();
    let (_, signature) = new_token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{signature}");
    assert_eq!(
        denied(&bearer(&mut e, 4, &forged, T0 + 2_000)),
        Denial::InvalidToken(TokenError::BadSignature)
    );
    // After the cooldown (30 s): one more look, and the same answer refuses it.
    let c = callout(&bearer(&mut e, 5, &forged, T0 + 31_001));
    let p = e.on_callout_response(c.id, ok(&rotated_jwks_without_kid()), T0 + 31_100);
    let [(5, _, Outcome::Deny(d))] = p.settled.as_slice() else {
        panic!("{p:?}")
    };
    assert_eq!(d.denial, Denial::InvalidToken(TokenError::BadSignature));
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
            "header and query, the name encoded",
            request_on(
                &mut e,
                1,
                ROUTE,
                "/orders?access%5Ftoken=abc",
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
    h[0].1 = b"Bearer \xe9t\xe9";
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

/// Kong's openid-connect forwards whatever a claim holds (`headers.get`: a string as it is,
/// anything else rendered) and never refuses a token for the shape of a claim it only
/// forwards: here an empty claim leaves the header unset, and never turns a valid token into
/// a 401. A value that could split the header is still refused.
#[test]
fn a_forwarded_claim_that_is_empty_is_not_a_reason_to_refuse_the_token() {
    let mut config = config_value();
    let oidc = &mut config["policies"]["orders-v1"]["strategies"][0]["configs"]["openid-connect"];
    oidc["upstream_headers_claims"] = json!(["sub", "groups"]);
    oidc["upstream_headers_names"] = json!(["X-Subject", "X-Groups"]);
    let mut e = engine_with(config);
    let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
    assert_eq!(serve_keys(&mut e, &callout(&first), &jwks(), T0).len(), 1);

    for groups in [json!([]), json!("")] {
        let token = rs_token(&claims_with(json!({ "groups": groups })));
        let a = allowed(&bearer(&mut e, 2, &token, T0));
        assert_eq!(header(&a, "x-application-id"), Some("app-1"), "{groups}");
        assert_eq!(header(&a, "x-groups"), None, "{groups}: nothing to forward");
        assert!(
            a.removes("x-groups"),
            "{groups}: the client's copy still goes"
        );
    }
    let token = rs_token(&claims_with(json!({ "groups": ["a", "b"] })));
    assert_eq!(
        header(&allowed(&bearer(&mut e, 3, &token, T0)), "x-groups"),
        Some("a,b")
    );
    for split in [
        json!("a\r\nx-application-id: app-2"),
        json!(["a", "b\nc"]),
        json!("\u{0}"),
    ] {
        let token = rs_token(&claims_with(json!({ "groups": split })));
        assert_eq!(
            denied(&bearer(&mut e, 4, &token, T0)),
            Denial::InvalidToken(TokenError::BadForwardedClaim),
            "{split}"
        );
    }
}

/// RFC 9110 §5.5: a field value has no leading or trailing whitespace, and whatever reads a
/// header upstream strips it. A claim value with a space at either end cannot be forwarded
/// as it is: without a registry, a credential claim " client-1" would reach the upstream as
/// `x-credential-identifier: client-1`, another client's identifier, and a forwarded claim
/// " alice" as alice's. Refused as a control character is; a space inside is kept.
#[test]
fn a_claim_with_a_space_at_either_end_is_never_forwarded() {
    let mut c = config_value();
    c.as_object_mut().unwrap().remove("applications");
    for policy in ["orders-v1", "other-v1"] {
        c["policies"][policy]
            .as_object_mut()
            .unwrap()
            .remove("scope");
    }
    c["policies"]["orders-v1"]["strategies"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let mut e = engine_with(c);
    let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
    let settled = serve_keys(&mut e, &callout(&first), &jwks(), T0);
    let [(1, _, Outcome::Allow(a))] = settled.as_slice() else {
        panic!("{settled:?}")
    };
    assert_eq!(header(a, "x-credential-identifier"), Some("client-1"));
    for value in [" client-1", "client-1 ", " "] {
        let token = rs_token(&claims_with(json!({ "client_id": value })));
        assert_eq!(
            denied(&bearer(&mut e, 2, &token, T0)),
            Denial::InvalidToken(TokenError::BadCredentialClaim),
            "{value:?}"
        );
    }
    for value in [" alice", "alice ", " "] {
        let token = rs_token(&claims_with(json!({ "sub": value })));
        assert_eq!(
            denied(&bearer(&mut e, 3, &token, T0)),
            Denial::InvalidToken(TokenError::BadForwardedClaim),
            "{value:?}"
        );
    }
    let token = rs_token(&claims_with(json!({ "sub": "alice smith" })));
    let a = allowed(&bearer(&mut e, 4, &token, T0));
    assert_eq!(header(&a, "x-subject"), Some("alice smith"));
}

/// konnect-application-auth finds the application before the openid-connect check runs
/// (REFERENCE §2): a token naming no application is a 401 `Unauthorized` whatever its scopes,
/// and one of an application not approved for the API is "You cannot consume this service".
#[test]
fn the_application_is_found_before_the_scopes_are_checked() {
    let mut e = warm();
    let t = |c: Value| rs_token(&claims_with(c));
    let cases = [
        (
            json!({"client_id": "nobody", "scope": "other"}),
            Denial::UnknownApplication,
        ),
        (
            json!({"client_id": "client-2", "scope": "other"}),
            Denial::NotApproved,
        ),
        (
            json!({"client_id": "client-3", "scope": "other"}),
            Denial::WrongStrategy,
        ),
        (
            json!({"client_id": "client-1", "scope": "other"}),
            Denial::InsufficientScope,
        ),
    ];
    for (claims, want) in cases {
        assert_eq!(
            denied(&bearer(&mut e, 1, &t(claims.clone()), T0)),
            want,
            "{claims}"
        );
    }
}

/// Two strategies of one issuer on a route: the application named by the credential claim
/// picks the strategy, whether the claim is a string or an array of strings (both are
/// credential claims the check takes, as `aud` usually is an array).
#[test]
fn an_array_credential_claim_picks_its_applications_strategy() {
    let mut c = config_value();
    c["policies"]["orders-v1"]["strategies"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "s-oidc-b", "strategy_type": "openid_connect",
            "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                "scopes": [], "auth_methods": ["bearer"], "timeout": 2000, "cache_ttl": 300}}}));
    c["applications"][1]["auth_strategy_id"] = json!("s-oidc-b");
    c["applications"][1]["scopes"] = json!(["orders-v1"]);
    let mut e = engine_with(c);
    let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
    assert_eq!(serve_keys(&mut e, &callout(&step), &jwks(), T0).len(), 1);
    for client_id in [
        json!("client-2"),
        json!(["client-2"]),
        json!(["nobody", "client-2"]),
    ] {
        let token = rs_token(&claims_with(json!({ "client_id": client_id.clone() })));
        let a = allowed(&bearer(&mut e, 2, &token, T0 + 1));
        assert_eq!(header(&a, "x-application-id"), Some("app-2"), "{client_id}");
    }
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

/// A token its strategy refused is denied under that strategy and the token's short hash
/// (what the deny log line correlates by), never the token itself.
#[test]
fn a_refused_token_names_its_strategy_and_its_short_hash() {
    let mut e = engine();
    let token = rs_token(&claims_with(json!({"exp": NOW - 5})));
    let step = bearer(&mut e, 1, &token, T0);
    let Step::Done(Method::Bearer, Outcome::Deny(d)) = &step else {
        panic!("{step:?}")
    };
    assert_eq!(d.strategy_id.as_deref(), Some("s-oidc"));
    assert_eq!(d.credential_hash, Some(short_hash(&token)));
    assert_eq!(short_hash(&token), sha256_hex(token.as_bytes())[..8]);
}

#[test]
fn an_issuer_given_by_its_discovery_url_may_call_itself_with_a_trailing_slash() {
    // Auth0's issuers end with a slash; the strategy gives the discovery URL.
    let slash = format!("{ISS}/");
    let mut c = config_value();
    for policy in ["orders-v1", "other-v1"] {
        c["policies"][policy]["strategies"][0]["configs"]["openid-connect"]["issuer"] =
            json!(format!("{ISS}/.well-known/openid-configuration"));
    }
    let mut e = engine_with(c);
    let token = rs_token(&claims_with(json!({"iss": slash})));
    let step = bearer(&mut e, 1, &token, T0);
    let discovery = callout(&step);
    assert_eq!(discovery.path, "/.well-known/openid-configuration");
    let doc = json!({"issuer": slash, "jwks_uri": "https://idp.example.com/jwks"}).to_string();
    let p = e.on_callout_response(discovery.id, ok(&doc), T0);
    let [jwks_callout] = p.callouts.as_slice() else {
        panic!("{p:?}")
    };
    let settled = e
        .on_callout_response(jwks_callout.id, ok(&jwks()), T0)
        .settled;
    assert!(
        matches!(settled.as_slice(), [(1, Method::Bearer, Outcome::Allow(_))]),
        "{settled:?}"
    );
    // Without the slash too; another issuer's name is still refused.
    allowed(&bearer(&mut e, 2, &rs_token(&claims()), T0));
    let other = rs_token(&claims_with(json!({"iss": format!("{ISS}//")})));
    assert_eq!(
        denied(&bearer(&mut e, 3, &other, T0)),
        Denial::InvalidToken(TokenError::WrongIssuer)
    );
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
fn a_remembered_token_is_hidden_wherever_the_request_carries_it() {
    // Seen first in the query string, then in the header, then in the query again: each
    // answer from the cache hides the token where that request has it.
    let (mut e, counters) = warm_counted();
    let hits = || counters.get(metrics::CACHE_VERIFIED_HIT);

    let token = rs_token(&claims_with(json!({"client_id": "client-3"})));
    let auth = format!("Bearer {token}");
    let in_query = format!("/o?access_token={token}&b=2");
    let a = allowed(&request_on(&mut e, 2, "other", &in_query, &[], T0));
    assert_eq!(a.path.as_deref(), Some("/o?b=2"));
    assert_eq!(hits(), 0);
    let a = allowed(&request_on(
        &mut e,
        3,
        "other",
        "/o",
        &[("authorization", &auth)],
        T0 + 1,
    ));
    assert_eq!(hits(), 1, "answered from the cache");
    assert!(
        a.remove_headers.iter().any(|h| h == "authorization"),
        "{a:?}"
    );
    assert_eq!(a.path, None);
    assert_eq!(header(&a, "x-application-id"), Some("app-3"));
    let a = allowed(&request_on(&mut e, 4, "other", &in_query, &[], T0 + 2));
    assert_eq!(hits(), 2);
    assert_eq!(a.path.as_deref(), Some("/o?b=2"));
    // The other order, header first, is hide_credentials_strips_header_and_query.
}

/// A token remembered from a header that the allow already strips is answered with that
/// same allow: `authorization` is removed once, not once more on every hit.
#[test]
fn a_token_remembered_from_a_header_is_stripped_once_per_hit() {
    let mut e = warm();
    let token = rs_token(&claims_with(json!({"client_id": "client-3"})));
    let auth = format!("Bearer {token}");
    for (ctx, at) in [(1, T0), (2, T0 + 1), (3, T0 + 2)] {
        let a = allowed(&request_on(
            &mut e,
            ctx,
            "other",
            "/o",
            &[("authorization", &auth)],
            at,
        ));
        let stripped = a
            .remove_headers
            .iter()
            .filter(|h| h.eq_ignore_ascii_case("authorization"))
            .count();
        assert_eq!(stripped, 1, "request {ctx}: {a:?}");
    }
}

/// The orders route with a second key_auth strategy, `s-key-b`, reading `key_name`, and its
/// application `app-key-b` (key `key-b`).
fn with_key_strategy_b(key_name: &str) -> Value {
    let mut c = config_value();
    c["policies"]["orders-v1"]["strategies"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "s-key-b", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": [key_name]}}}));
    c["applications"].as_array_mut().unwrap().push(
        json!({"id": "app-key-b", "client_id": sha256_hex(b"key-b"), "auth_strategy_id": "s-key-b", "scopes": ["orders-v1"]}),
    );
    c
}

/// Konnect's key_auth strategies all default to `key_names: ["apikey"]`: a product version
/// offered under two of them reads the same header for both. The key's application names its
/// strategy (as a JWT's does among bearer strategies): the first strategy that finds the key
/// does not refuse the second one's applications.
#[test]
fn two_key_auth_strategies_reading_one_key_name_each_serve_their_own_applications() {
    let c = with_key_strategy_b("apikey");
    let mut e = engine_with(c);
    for (key, app) in [("secret-key-1", "app-key"), ("key-b", "app-key-b")] {
        let a = allowed(&request_on(
            &mut e,
            1,
            ROUTE,
            "/orders",
            &[("apikey", key)],
            T0,
        ));
        assert_eq!(header(&a, "x-application-id"), Some(app));
    }
}

/// Two key_auth strategies reading different key names: a request with a key under each is
/// a duplicate, as two keys under one strategy's names are. Taken by the first strategy's key,
/// the second key went upstream unchecked (and, with hide_credentials, unstripped).
#[test]
fn keys_under_two_strategies_names_are_a_duplicate() {
    let mut c = with_key_strategy_b("x-key-b");
    c["policies"]["orders-v1"]["hide_credentials"] = json!(true);
    let mut e = engine_with(c);
    for (path, headers) in [
        (
            "/orders",
            &[("apikey", "secret-key-1"), ("x-key-b", "key-b")][..],
        ),
        ("/orders?x-key-b=key-b", &[("apikey", "secret-key-1")][..]),
        ("/orders?x-key-b=other", &[("apikey", "secret-key-1")][..]),
        (
            "/orders",
            &[("apikey", "secret-key-1"), ("x-key-b", "secret-key-1")][..],
        ),
    ] {
        assert_eq!(
            denied(&request_on(&mut e, 1, ROUTE, path, headers, T0)),
            Denial::DuplicateApiKey,
            "{path} {headers:?}"
        );
    }
    // One key under either strategy's name: its own application.
    for (name, key, app) in [
        ("apikey", "secret-key-1", "app-key"),
        ("x-key-b", "key-b", "app-key-b"),
    ] {
        let a = allowed(&request_on(&mut e, 1, ROUTE, "/orders", &[(name, key)], T0));
        assert_eq!(header(&a, "x-application-id"), Some(app));
        assert!(a.removes(name), "{a:?}");
    }
}

/// A key is taken by the strategy that reads it under the name it came by: an application's
/// key presented under another key_auth strategy's name (on the same route) is refused, not
/// allowed as if it had come under its own strategy's name.
#[test]
fn a_key_under_another_strategys_name_is_not_its_own_strategys() {
    let c = with_key_strategy_b("x-key-b");
    let mut e = engine_with(c);
    for (name, key) in [("x-key-b", "secret-key-1"), ("apikey", "key-b")] {
        let step = request_on(&mut e, 1, ROUTE, "/orders", &[(name, key)], T0);
        assert_eq!(denied(&step), Denial::WrongStrategy, "{name}: {step:?}");
    }
    for (name, key, app) in [
        ("apikey", "secret-key-1", "app-key"),
        ("x-key-b", "key-b", "app-key-b"),
    ] {
        let a = allowed(&request_on(&mut e, 2, ROUTE, "/orders", &[(name, key)], T0));
        assert_eq!(header(&a, "x-application-id"), Some(app));
    }
}

/// Key names that differ only in case name one header (header names are case-insensitive):
/// a single header is one key, not a duplicate; in the query string they are two parameters.
#[test]
fn key_names_that_differ_in_case_read_one_header_once() {
    let mut c = config_value();
    c["policies"]["orders-v1"]["strategies"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "s-key-b", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["ApiKey"]}}}));
    let mut e = engine_with(c);
    let a = allowed(&request_on(
        &mut e,
        1,
        ROUTE,
        "/orders",
        &[("apikey", "secret-key-1")],
        T0,
    ));
    assert_eq!(header(&a, "x-application-id"), Some("app-key"));
    assert_eq!(
        denied(&request_on(
            &mut e,
            2,
            ROUTE,
            "/orders?apikey=secret-key-1&ApiKey=secret-key-1",
            &[],
            T0
        )),
        Denial::DuplicateApiKey
    );
}

/// With hide_credentials, a key read from a header leaves the path alone, whatever its query
/// string looks like: a `:path` rewrite is refused on Kong (it forwards the query it
/// received), so a request whose query merely had an empty segment (`/orders?`, a trailing
/// `&`, `&&`) was refused there with a 500, though it carried nothing to strip.
#[test]
fn a_hidden_key_from_a_header_leaves_any_query_string_alone() {
    let mut c = config_value();
    c["policies"]["orders-v1"]["hide_credentials"] = json!(true);
    let mut e = engine_with(c);
    let key = [("apikey", "secret-key-1")];
    for path in [
        "/orders?",
        "/orders?page=1&",
        "/orders?a=1&&b=2",
        "/orders?&",
    ] {
        let a = allowed(&request_on(&mut e, 1, ROUTE, path, &key, T0));
        assert_eq!(header(&a, "x-application-id"), Some("app-key"), "{path}");
        assert!(a.removes("apikey"), "{path}: {a:?}");
        assert_eq!(a.path, None, "{path}");
    }
    // A key in the query string is stripped from it (and the path rewritten).
    let a = allowed(&request_on(
        &mut e,
        2,
        ROUTE,
        "/orders?page=1&apikey=secret-key-1&",
        &[],
        T0,
    ));
    assert_eq!(a.path.as_deref(), Some("/orders?page=1"));
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

/// A registered key is hashed once, then looked up (by the whole key); a key no
/// application has is never kept, so a stream of wrong keys evicts nothing.
#[test]
fn a_registered_keys_hash_is_looked_up_and_a_wrong_keys_never_kept() {
    let mut e = engine();
    let with_key =
        |e: &mut Engine, key: &str| request_on(e, 1, ROUTE, "/orders", &[("apikey", key)], T0);
    let a = allowed(&with_key(&mut e, "secret-key-1"));
    assert_eq!(header(&a, "x-application-id"), Some("app-key"));
    assert_eq!(e.digests.len(), 1);
    for n in 0..50 {
        let wrong = format!("secret-key-{n}x");
        assert_eq!(
            denied(&with_key(&mut e, &wrong)),
            Denial::UnknownApplication
        );
    }
    for wrong in [
        "secret-key-",
        "secret-key-11",
        "Secret-key-1",
        "ecret-key-1",
    ] {
        assert_eq!(denied(&with_key(&mut e, wrong)), Denial::UnknownApplication);
    }
    assert_eq!(e.digests.len(), 1, "wrong keys kept");
    let a = allowed(&with_key(&mut e, "secret-key-1"));
    assert_eq!(header(&a, "x-application-id"), Some("app-key"));
    // What is kept is what is used: a key whose kept digest names app-key is app-key's.
    e.digests
        .insert(b"planted", sha256_hex(b"secret-key-1"), u64::MAX, T0);
    let a = allowed(&with_key(&mut e, "planted"));
    assert_eq!(header(&a, "x-application-id"), Some("app-key"));
}

#[test]
fn a_key_auth_request_cannot_bring_a_header_another_strategy_forwards_a_claim_under() {
    // orders-v1's s-oidc forwards `sub` as X-Subject: the upstream reads it as a verified
    // subject, so a request let in by s-key must not carry the client's own.
    let mut e = engine();
    let a = allowed(&request_on(
        &mut e,
        1,
        ROUTE,
        "/orders",
        &[("apikey", "secret-key-1"), ("X-Subject", "admin")],
        T0,
    ));
    assert_eq!(header(&a, "x-application-id"), Some("app-key"));
    assert!(a.removes("x-subject"), "{a:?}");
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
    assert!(
        e.on_tick(T0 + 6_999).settled.is_empty(),
        "two callouts' time (2 x 2 s) plus 2 s"
    );
    let p = e.on_tick(T0 + 7_000);
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

/// A verification is remembered until the token's `exp`, but never past the staleness bound
/// of the keys that made it: once those are gone (the IdP unreachable for longer than
/// `keys_max_stale`), a remembered token is checked like a new one.
#[test]
fn a_remembered_token_is_not_allowed_past_the_keys_staleness_bound() {
    let (mut e, counters) = warm_counted();
    let hits = || counters.get(metrics::CACHE_VERIFIED_HIT);
    let token = rs_token(&claims_with(json!({"exp": NOW + 100_000})));
    allowed(&bearer(&mut e, 2, &token, T0 + 1));
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
    allowed(&bearer(&mut e, 3, &token, later + 1));
    assert_eq!(hits(), 1, "stale keys still back what they verified");
    let too_late = T0 + 300_000 + crate::cache::MAX_STALE_MS + 1;
    let step = bearer(&mut e, 4, &token, too_late);
    assert!(matches!(step, Step::Wait(Some(_))), "{step:?}");
    assert_eq!(hits(), 1, "not answered from the cache");
}

/// `hide_credentials` set on the strategy (not the policy) hides the token too: in the
/// header, in the query string, and when the allow comes from the cache.
#[test]
fn a_strategys_own_hide_credentials_hides_the_token_wherever_it_is() {
    let mut c = config_value();
    c["policies"]["orders-v1"]["strategies"][0]["configs"]["openid-connect"]["hide_credentials"] =
        json!(true);
    let mut e = engine_with(c);
    let token = rs_token(&claims());
    let first = bearer(&mut e, 1, &token, T0);
    let settled = serve_keys(&mut e, &callout(&first), &jwks(), T0);
    let [(1, _, Outcome::Allow(a))] = settled.as_slice() else {
        panic!("{settled:?}");
    };
    assert!(a.removes("authorization"), "{a:?}");
    // The same token, now remembered, in the query string.
    let in_query = format!("/orders/1?access_token={token}&b=2");
    let a = allowed(&request_on(&mut e, 2, ROUTE, &in_query, &[], T0 + 1));
    assert_eq!(a.path.as_deref(), Some("/orders/1?b=2"));
    // A token first seen in the query string.
    let other = rs_token(&claims_with(json!({"jti": "second"})));
    let in_query = format!("/orders/1?access_token={other}&b=2");
    let a = allowed(&request_on(&mut e, 3, ROUTE, &in_query, &[], T0 + 2));
    assert_eq!(a.path.as_deref(), Some("/orders/1?b=2"));
}

mod methods {
    //! client_credentials, introspection, several strategies on one route.
    use super::*;

    pub(super) fn config() -> Value {
        let mut c = config_value();
        c["policies"]["cc-v1"] = json!({
            "scope": "cc-v1",
            "strategies": [
                {"id": "s-key2", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["x-api-key"]}}},
                {"id": "s-cc", "strategy_type": "openid_connect",
                 "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                    "scopes": ["orders:read", "email"], "auth_methods": ["client_credentials", "bearer", "introspection"],
                    "scopes_required": ["orders:read"], "audience_required": [AUD],
                    "client_id": ["rs-client", "ignored"], "client_secret": "rs-secret",
                    "timeout": 2000, "cache_ttl": 300, "enable_hs_signatures": true}}}],
        });
        c["routes"]["cc"] = json!("cc-v1");
        c["applications"].as_array_mut().unwrap().extend([
            json!({"id": "app-cc", "client_id": "client-1", "auth_strategy_id": "s-cc", "scopes": ["cc-v1"]}),
            json!({"id": "app-key2", "client_id": sha256_hex(b"k2"), "auth_strategy_id": "s-key2", "scopes": ["cc-v1"]}),
        ]);
        // client-1 now belongs to s-cc; the orders route's app is client-9.
        c["applications"][0]["client_id"] = json!("client-9");
        c
    }

    /// An engine with keys loaded (through a cc-route bearer request).
    pub(super) fn warm_cc() -> Engine {
        warm_cc_with(config())
    }

    /// As [`warm_cc`], for a variant of [`config`].
    pub(super) fn warm_cc_with(config: Value) -> Engine {
        let mut e = engine_with(config);
        let step = request_on(
            &mut e,
            1,
            "cc",
            "/cc",
            &[("authorization", &format!("Bearer {}", rs_token(&claims())))],
            T0,
        );
        let settled = serve_keys(&mut e, &callout(&step), &jwks(), T0);
        assert!(
            matches!(settled.as_slice(), [(1, Method::Bearer, Outcome::Allow(_))]),
            "{settled:?}"
        );
        e
    }

    pub(super) fn basic(e: &mut Engine, ctx: u32, value: &str, now: u64) -> Step {
        request_on(e, ctx, "cc", "/cc", &[("authorization", value)], now)
    }

    pub(super) fn token_answer(token: &str) -> CalloutResponse {
        ok(&json!({"access_token": token, "token_type": "Bearer", "expires_in": 600}).to_string())
    }

    /// A cold client-credentials request makes three callouts in a row (discovery, keys,
    /// the exchange), as a cold introspection does: the tick gives up on it after three
    /// callouts' time plus 2 s, not two. An IdP answering each within its timeout (2 s
    /// here) is waited for.
    #[test]
    fn a_slow_idp_answering_each_callout_in_time_is_waited_for() {
        let mut e = engine_with(config());
        let c = callout(&basic(&mut e, 1, "Basic client-1:s3cret", T0));
        assert_eq!(c.path, "/.well-known/openid-configuration");
        let p = e.on_callout_response(c.id, ok(&discovery_doc()), T0 + 1_900);
        let keys = p.callouts[0].clone();
        assert_eq!(keys.path, "/jwks");
        let p = e.on_callout_response(keys.id, ok(&jwks()), T0 + 3_800);
        assert!(p.settled.is_empty(), "{p:?}");
        let [exchange] = p.callouts.as_slice() else {
            panic!("{p:?}")
        };
        // 6.1 s after the request, 2.3 s into the exchange (timeout 2 s, plus the 2 s slack).
        let p = e.on_tick(T0 + 6_100);
        assert!(p.settled.is_empty(), "given up during the exchange: {p:?}");
        let token = rs_token(&claims());
        let p = e.on_callout_response(exchange.id, token_answer(&token), T0 + 5_700);
        assert!(
            matches!(p.settled.as_slice(), [(1, _, Outcome::Allow(_))]),
            "{p:?}"
        );
        // An exchange not answered by then is given up on.
        let mut e = engine_with(config());
        let c = callout(&basic(&mut e, 1, "Basic client-1:s3cret", T0));
        let p = e.on_callout_response(c.id, ok(&discovery_doc()), T0 + 1_900);
        let p = e.on_callout_response(p.callouts[0].id, ok(&jwks()), T0 + 3_800);
        assert_eq!(p.callouts.len(), 1);
        assert!(e.on_tick(T0 + 7_999).settled.is_empty());
        let p = e.on_tick(T0 + 8_000);
        let [(1, _, Outcome::Deny(d))] = p.settled.as_slice() else {
            panic!("{p:?}")
        };
        assert_eq!(d.reply.status, 503);
    }

    #[test]
    fn client_credentials_go_upstream_as_the_client_that_presented_them() {
        // The IdP answers client-1's exchange with a token naming another approved client
        // of the same strategy: the request is still client-1's application.
        let mut c = config();
        c["applications"].as_array_mut().unwrap().push(json!({
            "id": "app-other", "client_id": "client-b", "auth_strategy_id": "s-cc",
            "scopes": ["cc-v1"], "organization_id": "org-b"}));
        let mut e = warm_cc_with(c);
        let co = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        let token = rs_token(&claims_with(
            json!({"client_id": "client-b", "sub": "client-b"}),
        ));
        let p = e.on_callout_response(co.id, token_answer(&token), T0 + 10);
        let [(2, Method::ClientCredentials, Outcome::Allow(a))] = p.settled.as_slice() else {
            panic!("{:?}", p.settled)
        };
        assert_eq!(header(a, "x-application-id"), Some("app-cc"));
        assert_eq!(header(a, "x-credential-identifier"), Some("client-1"));
        assert_eq!(header(a, "x-application-org-id"), None);
        // And from the cache.
        let a = allowed(&basic(&mut e, 3, "Basic client-1:s3cret", T0 + 20));
        assert_eq!(header(&a, "x-application-id"), Some("app-cc"));
    }

    #[test]
    fn client_credentials_exchange_verify_forward_and_cache() {
        let mut e = warm_cc();
        // "client-1:s3cret" in base64
        let step = basic(&mut e, 2, "Basic Y2xpZW50LTE6czNjcmV0", T0);
        let c = callout(&step);
        assert_eq!(
            (c.method, c.path.as_str(), c.upstream.as_str()),
            ("POST", "/token", "idp")
        );
        assert_eq!(
            String::from_utf8(c.body.clone().unwrap()).unwrap(),
            "grant_type=client_credentials&scope=orders%3Aread+email"
        );
        assert!(c
            .headers
            .contains(&("authorization".into(), "Basic Y2xpZW50LTE6czNjcmV0".into())));
        // A second request with the same credentials shares the exchange.
        assert_eq!(
            basic(&mut e, 3, "Basic client-1:s3cret", T0),
            Step::Wait(None),
            "raw pair form, same client"
        );
        let token = rs_token(&claims_with(json!({"exp": NOW + 60})));
        let p = e.on_callout_response(c.id, token_answer(&token), T0 + 10);
        assert_eq!(p.settled.len(), 2);
        for (_, method, outcome) in &p.settled {
            assert_eq!(*method, Method::ClientCredentials);
            let Outcome::Allow(a) = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(
                header(a, "authorization"),
                Some(format!("Bearer {token}").as_str()),
                "Basic replaced by the token"
            );
            assert_eq!(header(a, "x-application-id"), Some("app-cc"));
        }
        // Cached: no callout until shortly before exp (exp = NOW+60; margin: a tenth of the
        // life, at most 5 s).
        allowed(&basic(&mut e, 4, "Basic Y2xpZW50LTE6czNjcmV0", T0 + 54_999));
        assert!(matches!(
            basic(&mut e, 5, "Basic Y2xpZW50LTE6czNjcmV0", T0 + 55_000),
            Step::Wait(Some(_))
        ));
        // A wrong secret is never served from the cache.
        assert!(matches!(
            basic(&mut e, 6, "Basic client-1:wrong", T0 + 20),
            Step::Wait(Some(_))
        ));
    }

    /// A cached exchange's key is hashed once, then looked up: kept once its token is in
    /// the cache, never for a secret that got none (a wrong secret evicts nothing).
    #[test]
    fn a_cached_exchanges_key_is_hashed_once_and_a_wrong_secrets_never_kept() {
        let mut e = warm_cc();
        let c = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        assert_eq!(e.digests.len(), 0, "nothing exchanged yet");
        let token = rs_token(&claims_with(json!({"exp": NOW + 60})));
        e.on_callout_response(c.id, token_answer(&token), T0 + 10);
        allowed(&basic(&mut e, 3, "Basic client-1:s3cret", T0 + 20));
        assert_eq!(e.digests.len(), 1);
        for (ctx, secret) in (4..).zip(["wrong", "s3cre", "s3cret1", "S3CRET"]) {
            let step = basic(&mut e, ctx, &format!("Basic client-1:{secret}"), T0 + 30);
            assert!(matches!(step, Step::Wait(Some(_))), "{secret:?}: {step:?}");
        }
        assert_eq!(e.digests.len(), 1, "wrong secrets kept");
        let a = allowed(&basic(&mut e, 9, "Basic client-1:s3cret", T0 + 40));
        assert_eq!(header(&a, "x-application-id"), Some("app-cc"));
    }

    /// The token an exchange got is remembered for that exchange: the same client and
    /// secret again are answered from what was remembered, its signature not checked again.
    #[test]
    fn a_cached_exchanges_token_is_answered_without_verifying_it_again() {
        let (mut e, counters) = counted(config());
        let c = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        let token = rs_token(&claims_with(json!({"exp": NOW + 60})));
        let p = e.on_callout_response(c.id, token_answer(&token), T0 + 10);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
            "{p:?}"
        );
        let checked = counters.get(metrics::SIGNATURES_CHECKED);
        for (ctx, at) in [(3, T0 + 20), (4, T0 + 30)] {
            let a = allowed(&basic(&mut e, ctx, "Basic client-1:s3cret", at));
            assert_eq!(header(&a, "x-application-id"), Some("app-cc"));
        }
        assert_eq!(
            counters.get(metrics::SIGNATURES_CHECKED),
            checked,
            "verified again"
        );
    }

    /// Sends `sent` (context 2, at T0) and answers its exchange with a token good for a
    /// minute: the request is allowed, the token cached and remembered for the exchange.
    fn exchanged(e: &mut Engine, sent: &str) -> String {
        let c = callout(&basic(e, 2, sent, T0));
        let token = rs_token(&claims_with(json!({"exp": NOW + 60})));
        let p = e.on_callout_response(c.id, token_answer(&token), T0 + 10);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
            "{p:?}"
        );
        token
    }

    /// The `Authorization` value of client credentials whose exchange allowed a request is
    /// remembered as sent: the same value again is answered before it is decoded or its
    /// exchange's key looked up (nothing is hashed for it); another spelling of the same
    /// client and secret is read by the rules, and allowed as well.
    #[test]
    fn a_basic_value_that_was_allowed_is_answered_before_it_is_decoded() {
        let (mut e, counters) = counted(config());
        let sent = "Basic client-1:s3cret";
        let token = exchanged(&mut e, sent);
        assert_eq!(e.verified.len(), 1, "the exchanged token");
        allowed(&basic(&mut e, 3, sent, T0 + 20));
        assert_eq!(e.verified.len(), 2, "and the value it was allowed with");
        // Nothing is hashed for a remembered value: the digest memo, emptied, stays empty.
        e.digests = TtlCache::new(MAX_DIGESTS);
        let hits = counters.get(metrics::CACHE_TOKEN_HIT);
        for (ctx, at) in [(4, T0 + 30), (5, T0 + 40)] {
            let a = allowed(&basic(&mut e, ctx, sent, at));
            assert_eq!(header(&a, "x-application-id"), Some("app-cc"));
            let forwarded = format!("Bearer {token}");
            assert_eq!(header(&a, "authorization"), Some(forwarded.as_str()));
        }
        assert_eq!(e.digests.len(), 0, "decoded and hashed");
        assert_eq!(counters.get(metrics::CACHE_TOKEN_HIT), hits + 2);
        // The same credentials base64-encoded are another value: read by the rules.
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "client-1:s3cret",
        );
        let a = allowed(&basic(&mut e, 6, &format!("Basic {encoded}"), T0 + 50));
        assert_eq!(header(&a, "x-application-id"), Some("app-cc"));
        assert_eq!(e.digests.len(), 1);
    }

    /// Only the plain spelling of client credentials is remembered: the scheme as `Basic`
    /// and one space, nothing form-encoded. A client holding one valid secret has many
    /// other spellings of it (`%2D` or `%2d`, `basic`, ...) that end alike, so would share
    /// their hash in the cache (which hashes a key's tail) and make every lookup among them
    /// compare them all. Each is allowed, decoded every time, and remembered never.
    #[test]
    fn only_the_plain_spelling_of_client_credentials_is_remembered() {
        let (mut e, counters) = counted(config());
        let b64 =
            |pair: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair);
        exchanged(&mut e, &format!("Basic {}", b64("client-1:s3cret")));
        assert_eq!(e.verified.len(), 1, "the exchanged token");
        // Every spelling of `client-1` with `-`, `l` and `n` percent-encoded in either case,
        // and the scheme in other cases.
        let mut spellings = Vec::new();
        for case in 0..8u8 {
            let hex = |c: &str, bit: u8| {
                if case & bit == 0 {
                    c.to_owned()
                } else {
                    c.to_lowercase()
                }
            };
            let id = format!("c%6{}i%65%6{}t%2{}1", hex("C", 1), hex("E", 2), hex("D", 4));
            spellings.push(format!("Basic {}", b64(&format!("{id}:s3cret"))));
        }
        spellings.push(format!("basic {}", b64("client-1:s3cret")));
        spellings.push(format!("BASIC {}", b64("client-1:s3cret")));
        let hits = counters.get(metrics::CACHE_TOKEN_HIT);
        let mut ctx = 3;
        for sent in &spellings {
            for _ in 0..2 {
                ctx += 1;
                let a = allowed(&basic(&mut e, ctx, sent, T0 + 20));
                assert_eq!(header(&a, "x-application-id"), Some("app-cc"), "{sent}");
            }
        }
        assert_eq!(
            e.verified.len(),
            1,
            "no spelling but the plain one is remembered"
        );
        // Each was answered from the exchange's cached token (hashed, decoded), none from
        // a remembered value.
        assert_eq!(counters.get(metrics::CACHE_TOKEN_HIT) - hits, 2 * 10);
        // The plain spelling is.
        let plain = format!("Basic {}", b64("client-1:s3cret"));
        allowed(&basic(&mut e, 40, &plain, T0 + 30));
        assert_eq!(e.verified.len(), 2, "the plain spelling");
    }

    /// A remembered Basic value decides nothing the rules would not: not where the request
    /// could carry more (a query string, a second `Authorization`), not on another route,
    /// not as a bearer token of those bytes, and not past a key change (the exchanged token
    /// is checked again, as it would be without the value remembered).
    #[test]
    fn a_remembered_basic_value_is_only_that_value_alone_on_its_route_with_its_keys() {
        let (mut e, counters) = counted(config());
        let sent = "Basic client-1:s3cret";
        exchanged(&mut e, sent);
        allowed(&basic(&mut e, 3, sent, T0 + 20));
        let both = [("authorization", sent)];
        let twice = [("authorization", sent), ("Authorization", sent)];
        let as_bearer = [("authorization", "Bearer Basic client-1:s3cret")];
        let malformed = [
            (4, "/cc?access_token=abc", both.as_slice()),
            (5, "/cc", twice.as_slice()),
            (7, "/cc", as_bearer.as_slice()),
        ];
        for (ctx, path, headers) in malformed {
            let step = request_on(&mut e, ctx, "cc", path, headers, T0 + 30);
            assert!(
                matches!(denied(&step), Denial::InvalidRequest(_)),
                "{path} {headers:?}: {step:?}"
            );
        }
        let step = request_on(&mut e, 6, "orders", "/orders", &both, T0 + 30);
        assert!(matches!(step, Step::Done(_, Outcome::Deny(_))), "{step:?}");
        // A new key set voids what the old one verified: the token is checked again.
        let checked = counters.get(metrics::SIGNATURES_CHECKED);
        e.verified_generation += 1;
        allowed(&basic(&mut e, 8, sent, T0 + 40));
        assert_eq!(counters.get(metrics::SIGNATURES_CHECKED), checked + 1);
        allowed(&basic(&mut e, 9, sent, T0 + 50));
        assert_eq!(counters.get(metrics::SIGNATURES_CHECKED), checked + 1);
    }

    /// A token answer is read up to `limits.max_response_bytes` and no further: one byte
    /// over (however well-formed) is a failed exchange, a 503; exactly that many is read.
    #[test]
    fn a_token_answer_over_max_response_bytes_is_a_failed_exchange() {
        let mut c = config();
        c["limits"] = json!({"max_response_bytes": 2048});
        let body = json!({"access_token": rs_token(&claims()), "token_type": "Bearer",
            "expires_in": 600})
        .to_string();
        assert!(body.len() < 2048);
        for (ctx, size, allows) in [(2, 2048, true), (3, 2049, false)] {
            let mut e = warm_cc_with(c.clone());
            let co = callout(&basic(&mut e, ctx, "Basic client-1:s3cret", T0));
            // JSON may carry any amount of trailing whitespace.
            let padded = format!("{body}{}", " ".repeat(size - body.len()));
            let p = e.on_callout_response(co.id, ok(&padded), T0 + 10);
            let [(_, Method::ClientCredentials, outcome)] = p.settled.as_slice() else {
                panic!("{size}: {p:?}")
            };
            match outcome {
                Outcome::Allow(_) => assert!(allows, "{size} bytes read"),
                Outcome::Deny(d) => {
                    assert!(!allows, "{size}: {d:?}");
                    assert_eq!(
                        d.denial,
                        Denial::IdpUnavailable("token endpoint unavailable")
                    );
                }
            }
        }
    }

    /// An exchanged token is used until a tenth of its life before it expires (at most 5 s
    /// before): a token with 20 s to live, until 2 s before its `exp`.
    #[test]
    fn a_short_lived_exchanged_token_is_used_until_a_tenth_of_its_life_remains() {
        let mut e = warm_cc();
        let co = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        let token = rs_token(&claims_with(json!({"exp": NOW + 20})));
        let p = e.on_callout_response(co.id, token_answer(&token), T0);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
            "{p:?}"
        );
        allowed(&basic(&mut e, 3, "Basic client-1:s3cret", T0 + 17_999));
        assert!(matches!(
            basic(&mut e, 4, "Basic client-1:s3cret", T0 + 18_000),
            Step::Wait(Some(_))
        ));
    }

    /// An introspection answer is read up to `limits.max_response_bytes` and no further:
    /// one byte over (however well-formed) is a failed introspection; exactly that many is
    /// read.
    #[test]
    fn an_introspection_answer_over_max_response_bytes_is_a_failed_introspection() {
        let mut c = config();
        c["limits"] = json!({"max_response_bytes": 1024});
        let active = json!({"active": true, "client_id": "client-1", "scope": "orders:read",
            "aud": AUD, "iss": ISS, "exp": NOW + 60})
        .to_string();
        for (ctx, size, allows) in [(2, 1024, true), (3, 1025, false)] {
            let mut e = warm_cc_with(c.clone());
            let auth = [("authorization", "Bearer opaque-1")];
            let co = callout(&request_on(&mut e, ctx, "cc", "/cc", &auth, T0));
            assert_eq!(co.path, "/token/introspection");
            // JSON may carry any amount of trailing whitespace.
            let padded = format!("{active}{}", " ".repeat(size - active.len()));
            let p = e.on_callout_response(co.id, ok(&padded), T0 + 10);
            let [(_, Method::Introspection, outcome)] = p.settled.as_slice() else {
                panic!("{size}: {p:?}")
            };
            assert_eq!(
                matches!(outcome, Outcome::Allow(_)),
                allows,
                "{size}: {outcome:?}"
            );
        }
    }

    /// An engine on `config`, counting, with keys loaded through the orders route.
    fn counted(config: Value) -> (Engine, Rc<crate::metrics::Recording>) {
        let (parsed, _) = Config::parse(config.to_string().as_bytes()).unwrap();
        let counters = Rc::new(crate::metrics::Recording::default());
        let store = Rc::new(crate::shared::MemoryStore::default());
        let mut e = Engine::with_host(Rc::new(parsed), 1, store, counters.clone());
        let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
        assert_eq!(serve_keys(&mut e, &callout(&first), &jwks(), T0).len(), 1);
        (e, counters)
    }

    #[test]
    fn an_exchanged_token_is_no_bearer_credential_where_bearer_is_not_allowed() {
        let mut c = config();
        c["policies"]["cc-v1"]["strategies"][1]["configs"]["openid-connect"]["auth_methods"] =
            json!(["client_credentials"]);
        let (mut e, _) = counted(c);
        let c = callout(&basic(&mut e, 2, "Basic Y2xpZW50LTE6czNjcmV0", T0));
        let token = rs_token(&claims());
        let p = e.on_callout_response(c.id, token_answer(&token), T0 + 10);
        assert!(matches!(
            p.settled.as_slice(),
            [(2, Method::ClientCredentials, Outcome::Allow(_))]
        ));
        // The filter remembers the token it got; the client presenting it is still held to
        // the strategy's methods.
        let as_bearer = format!("Bearer {token}");
        let step = request_on(
            &mut e,
            3,
            "cc",
            "/cc",
            &[("authorization", &as_bearer)],
            T0 + 20,
        );
        assert!(
            !matches!(step, Step::Done(_, Outcome::Allow(_))),
            "{step:?}"
        );
        allowed(&basic(&mut e, 4, "Basic Y2xpZW50LTE6czNjcmV0", T0 + 30));
    }

    /// README, Denials: "a scheme no strategy takes" is a 401 with a bare `Bearer realm`
    /// challenge (RFC 6750 §3.1: no error code for an unsupported authentication method),
    /// counted as `missing_credential`, as a Basic header is where no strategy exchanges
    /// client credentials. A bearer token (JWT or opaque, header or query) on a route whose
    /// strategies neither verify nor introspect bearer tokens is such a scheme, not an
    /// `invalid_token` "token issuer is not accepted" of an issuer the route does accept.
    #[test]
    fn a_bearer_token_where_no_strategy_takes_bearer_tokens_is_an_unsupported_credential() {
        let mut c = config();
        c["policies"]["cc-v1"]["strategies"][1]["configs"]["openid-connect"]["auth_methods"] =
            json!(["client_credentials"]);
        let (mut e, _) = counted(c);
        let jwt = format!("Bearer {}", rs_token(&claims()));
        let cases = [
            ("/cc", jwt.as_str()),
            ("/cc", "Bearer opaque-1"),
            ("/cc", "Bearer not.a.jwt"),
        ];
        for (ctx, (path, auth)) in (10..).zip(cases) {
            let step = request_on(&mut e, ctx, "cc", path, &[("authorization", auth)], T0);
            let Step::Done(_, Outcome::Deny(d)) = &step else {
                panic!("{auth}: {step:?}")
            };
            assert_eq!(d.denial, Denial::UnsupportedCredential, "{auth}");
            assert_eq!(
                metrics::denial_counter(d.denial),
                metrics::DENIED_MISSING_CREDENTIAL
            );
            let challenge = d
                .reply
                .headers
                .iter()
                .find(|(n, _)| n == "www-authenticate");
            assert_eq!(
                challenge.map(|(_, v)| v.as_str()),
                Some(r#"Bearer realm="api.example.com""#),
                "{auth}"
            );
        }
        let query = format!("/cc?access_token={}", rs_token(&claims()));
        let step = request_on(&mut e, 20, "cc", &query, &[], T0);
        assert_eq!(denied(&step), Denial::UnsupportedCredential);
    }

    #[test]
    fn an_exchange_never_takes_the_decision_made_for_the_same_token_as_a_bearer() {
        let (mut e, _) = counted(config());
        let token = rs_token(&claims());
        let as_bearer = format!("Bearer {token}");
        let first = request_on(&mut e, 2, "cc", "/cc", &[("authorization", &as_bearer)], T0);
        assert_eq!(header(&allowed(&first), "authorization"), None);
        // The IdP hands out that same token for the client's credentials: the client's
        // Basic header must still be replaced, never forwarded.
        let c = callout(&basic(&mut e, 3, "Basic Y2xpZW50LTE6czNjcmV0", T0 + 10));
        let p = e.on_callout_response(c.id, token_answer(&token), T0 + 20);
        let [(3, Method::ClientCredentials, Outcome::Allow(a))] = p.settled.as_slice() else {
            panic!("{:?}", p.settled)
        };
        assert_eq!(header(a, "authorization"), Some(as_bearer.as_str()));
        let again = allowed(&basic(&mut e, 4, "Basic Y2xpZW50LTE6czNjcmV0", T0 + 30));
        assert_eq!(header(&again, "authorization"), Some(as_bearer.as_str()));
    }

    #[test]
    fn an_introspected_token_is_remembered_while_its_answer_is_cached() {
        let (mut e, counters) = counted(config());
        let opaque = [("authorization", "Bearer opaque-1")];
        let c = callout(&request_on(&mut e, 2, "cc", "/cc", &opaque, T0));
        // exp beyond the strategy's cache_ttl (300 s): the answer is cached for 300 s.
        let active = json!({"active": true, "client_id": "client-1", "scope": "orders:read",
                            "aud": AUD, "iss": ISS, "exp": NOW + 600});
        assert_eq!(
            e.on_callout_response(c.id, ok(&active.to_string()), T0)
                .settled
                .len(),
            1
        );
        let hits = || {
            (
                counters.get(metrics::CACHE_VERIFIED_HIT),
                counters.get(metrics::CACHE_INTROSPECTION_HIT),
            )
        };
        let before = hits();
        let step = request_on(&mut e, 3, "cc", "/cc", &opaque, T0 + 1);
        let Step::Done(Method::Introspection, Outcome::Allow(a)) = &step else {
            panic!("{step:?}")
        };
        assert_eq!(header(a, "x-application-id"), Some("app-cc"));
        assert_eq!(
            hits(),
            (before.0 + 1, before.1 + 1),
            "answered from the remembered decision"
        );
        // Not on another policy, and not once the answer has expired.
        let other = request_on(&mut e, 4, ROUTE, "/orders/1", &opaque, T0 + 2);
        assert!(
            !matches!(other, Step::Done(_, Outcome::Allow(_))),
            "{other:?}"
        );
        allowed(&request_on(&mut e, 5, "cc", "/cc", &opaque, T0 + 299_999));
        assert!(matches!(
            request_on(&mut e, 6, "cc", "/cc", &opaque, T0 + 300_000),
            Step::Wait(Some(_))
        ));
    }

    #[test]
    fn client_credentials_failures() {
        let mut e = warm_cc();
        let c = callout(&basic(&mut e, 2, "Basic client-1:bad", T0));
        let p = e.on_callout_response(
            c.id,
            CalloutResponse {
                status: Some(401),
                body: br#"{"error":"invalid_client"}"#.to_vec(),
                failure: None,
                max_age_s: None,
            },
            T0,
        );
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.denial == Denial::InvalidClient && d.reply.status == 401)
        );
        // The refusal is remembered for 5 s: the same wrong secret again is refused with no
        // callout (a client retrying in a loop costs the IdP one exchange per 5 s); another
        // secret of the same client is still asked about.
        for (id, at) in [(3, T0 + 1), (3, T0 + 4_999)] {
            assert_eq!(
                denied(&basic(&mut e, id, "Basic client-1:bad", at)),
                Denial::InvalidClient
            );
        }
        let c = callout(&basic(&mut e, 7, "Basic client-1:other", T0 + 1));
        let p = e.on_callout_response(
            c.id,
            CalloutResponse {
                status: Some(400),
                body: br#"{"error":"invalid_client"}"#.to_vec(),
                ..CalloutResponse::default()
            },
            T0 + 2,
        );
        assert!(
            matches!(p.settled.as_slice(), [(7, _, Outcome::Deny(d))] if d.denial == Denial::InvalidClient)
        );
        // Then asked again; an IdP failure is never remembered: the next try asks again.
        let c = callout(&basic(&mut e, 3, "Basic client-1:bad", T0 + 5_000));
        let p = e.on_callout_response(
            c.id,
            CalloutResponse {
                status: Some(502),
                ..CalloutResponse::default()
            },
            T0 + 5_001,
        );
        assert!(
            matches!(p.settled.as_slice(), [(3, _, Outcome::Deny(d))] if d.reply.status == 503)
        );
        let c = callout(&basic(&mut e, 4, "Basic client-1:bad", T0 + 5_002));
        let p = e.on_callout_response(c.id, CalloutResponse::default(), T0 + 5_003);
        assert!(
            matches!(p.settled.as_slice(), [(4, _, Outcome::Deny(d))] if d.reply.status == 503),
            "timeout"
        );
        // Unknown applications never reach the IdP.
        assert_eq!(
            denied(&basic(&mut e, 5, "Basic nobody:x", T0)),
            Denial::UnknownApplication
        );
        assert_eq!(
            denied(&basic(&mut e, 5, "Basic client-2:x", T0)),
            Denial::WrongStrategy
        );
        assert!(matches!(
            denied(&basic(&mut e, 5, "Basic a:b:c", T0)),
            Denial::InvalidRequest(_)
        ));
    }

    #[test]
    fn an_exchanged_token_that_fails_verification_is_fetched_once_more() {
        let mut e = warm_cc();
        let c = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        // Signed by a key the issuer does not have (kid rs-1): bad signature.
        let p = e.on_callout_response(c.id, token_answer(&foreign_token(&claims())), T0);
        let again = p.callouts.first().expect("refetched once");
        assert_eq!(again.path, "/token");
        let p = e.on_callout_response(again.id, token_answer(&foreign_token(&claims())), T0);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.denial == Denial::InvalidToken(TokenError::BadSignature))
        );
        // Expired at issue: likewise refused, never allowed.
        let c = callout(&basic(&mut e, 3, "Basic client-1:s3cret", T0));
        let expired = rs_token(&claims_with(json!({"exp": NOW - 1})));
        let p = e.on_callout_response(c.id, token_answer(&expired), T0);
        assert!(p.settled.is_empty());
        let again = p.callouts.first().expect("refetched once");
        let p = e.on_callout_response(again.id, token_answer(&expired), T0);
        assert!(
            matches!(p.settled.as_slice(), [(3, _, Outcome::Deny(d))] if d.denial == Denial::InvalidToken(TokenError::Expired))
        );
    }

    #[test]
    fn introspection_of_opaque_tokens() {
        let mut e = warm_cc();
        let step = request_on(
            &mut e,
            2,
            "cc",
            "/cc",
            &[("authorization", "Bearer opaque-1")],
            T0,
        );
        let c = callout(&step);
        assert_eq!(
            (c.method, c.path.as_str()),
            ("POST", "/token/introspection")
        );
        assert_eq!(
            String::from_utf8(c.body.clone().unwrap()).unwrap(),
            "token=opaque-1&token_type_hint=access_token"
        );
        assert!(
            c.headers.contains(&(
                "authorization".into(),
                "Basic cnMtY2xpZW50OnJzLXNlY3JldA==".into()
            )),
            "first client_id of the array"
        );
        assert_eq!(
            request_on(
                &mut e,
                3,
                "cc",
                "/cc",
                &[("authorization", "Bearer opaque-1")],
                T0
            ),
            Step::Wait(None),
            "shared"
        );
        let active = json!({"active": true, "client_id": "client-1", "scope": "orders:read", "aud": AUD, "iss": ISS, "exp": NOW + 60});
        let p = e.on_callout_response(c.id, ok(&active.to_string()), T0);
        assert_eq!(p.settled.len(), 2);
        assert!(p
            .settled
            .iter()
            .all(|(_, m, o)| *m == Method::Introspection && matches!(o, Outcome::Allow(_))));
        // Cached until exp.
        allowed(&request_on(
            &mut e,
            4,
            "cc",
            "/cc",
            &[("authorization", "Bearer opaque-1")],
            T0 + 59_000,
        ));
        assert!(matches!(
            request_on(
                &mut e,
                5,
                "cc",
                "/cc",
                &[("authorization", "Bearer opaque-1")],
                T0 + 60_000
            ),
            Step::Wait(Some(_))
        ));
    }

    #[test]
    fn introspection_refusals() {
        let cases = [
            (
                json!({"active": false}),
                Some(Denial::InvalidToken(TokenError::Inactive)),
            ),
            (
                json!({"active": "true", "client_id": "client-1", "scope": "orders:read", "aud": AUD}),
                Some(Denial::InvalidToken(TokenError::Inactive)),
            ),
            (
                json!({"client_id": "client-1"}),
                Some(Denial::InvalidToken(TokenError::Inactive)),
            ),
            (
                json!({"active": true, "client_id": "client-1", "scope": "orders:read", "aud": AUD, "exp": NOW - 1}),
                Some(Denial::InvalidToken(TokenError::Expired)),
            ),
            (
                json!({"active": true, "client_id": "client-1", "scope": "orders:read", "aud": AUD, "iss": "https://evil"}),
                Some(Denial::InvalidToken(TokenError::WrongIssuer)),
            ),
            (
                json!({"active": true, "client_id": "client-1", "scope": "orders:read", "aud": "x"}),
                Some(Denial::InvalidToken(TokenError::WrongAudience)),
            ),
            (
                json!({"active": true, "client_id": "client-1", "scope": "email", "aud": AUD}),
                Some(Denial::InsufficientScope),
            ),
            (
                json!({"active": true, "client_id": "nobody", "scope": "orders:read", "aud": AUD}),
                Some(Denial::UnknownApplication),
            ),
            (
                json!({"active": true, "client_id": "client-1", "scope": "orders:read", "aud": AUD, "exp": "soon"}),
                Some(Denial::InvalidToken(TokenError::BadTimeClaim)),
            ),
        ];
        for (i, (answer, want)) in cases.into_iter().enumerate() {
            let mut e = warm_cc();
            let c = callout(&request_on(
                &mut e,
                2,
                "cc",
                "/cc",
                &[("authorization", "Bearer opaque-1")],
                T0,
            ));
            let p = e.on_callout_response(c.id, ok(&answer.to_string()), T0);
            let [(2, _, Outcome::Deny(d))] = p.settled.as_slice() else {
                panic!("case {i}: {:?}", p.settled)
            };
            assert_eq!(Some(d.denial), want, "case {i}");
        }
        for bad in [
            CalloutResponse::default(),
            CalloutResponse {
                status: Some(500),
                ..Default::default()
            },
            ok("<html>"),
            ok("[true]"),
            CalloutResponse {
                status: Some(401),
                body: br#"{"active":true}"#.to_vec(),
                failure: None,
                max_age_s: None,
            },
        ] {
            let mut e = warm_cc();
            let c = callout(&request_on(
                &mut e,
                2,
                "cc",
                "/cc",
                &[("authorization", "Bearer opaque-1")],
                T0,
            ));
            let p = e.on_callout_response(c.id, bad.clone(), T0);
            assert!(
                matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.reply.status == 503),
                "{bad:?}"
            );
            // Errors are not cached: the next request asks again.
            assert!(matches!(
                request_on(
                    &mut e,
                    3,
                    "cc",
                    "/cc",
                    &[("authorization", "Bearer opaque-1")],
                    T0
                ),
                Step::Wait(Some(_))
            ));
        }
    }

    /// REFERENCE §8 on the introspection path: an active answer whose `exp`, `nbf` or `iat`
    /// is of the wrong type (string, bool, null, huge, negative), or whose `aud`, `sub`,
    /// `jti` or `nonce` is not of its RFC 7662 / RFC 7519 type (`aud` a string or an array
    /// of strings), is refused as a JWT's would be, 401 invalid_token: a broken answer never
    /// allows (`aud: [7, AUD]` names the audience, and is still refused).
    #[test]
    fn introspection_answers_with_malformed_claims_are_refused() {
        let time = TokenError::BadTimeClaim;
        let shape = TokenError::BadPayload;
        for (claim, bad, error) in [
            ("exp", json!("1800000600"), time),
            ("exp", json!(true), time),
            ("exp", json!(null), time),
            ("exp", json!(1e20), time),
            ("exp", json!(-1), time),
            ("nbf", json!("0"), time),
            ("nbf", json!(false), time),
            ("nbf", json!(null), time),
            ("nbf", json!(100_000_000_001u64), time),
            ("nbf", json!(-5), time),
            ("iat", json!("0"), time),
            ("iat", json!(true), time),
            ("iat", json!(null), time),
            ("iat", json!(1e300), time),
            ("iat", json!(-1), time),
            ("aud", json!([7, AUD]), shape),
            ("aud", json!([AUD, null]), shape),
            ("aud", json!(5), shape),
            ("aud", json!({"aud": AUD}), shape),
            ("sub", json!(5), shape),
            ("jti", json!(["a"]), shape),
            ("nonce", json!({}), shape),
        ] {
            let mut answer = json!({"active": true, "client_id": "client-1",
                "scope": "orders:read", "aud": AUD, "iss": ISS, "exp": NOW + 60});
            answer[claim] = bad.clone();
            let mut e = warm_cc();
            let opaque = [("authorization", "Bearer opaque-1")];
            let c = callout(&request_on(&mut e, 2, "cc", "/cc", &opaque, T0));
            let p = e.on_callout_response(c.id, ok(&answer.to_string()), T0);
            let [(2, _, Outcome::Deny(d))] = p.settled.as_slice() else {
                panic!("{claim} {bad}: {:?}", p.settled)
            };
            assert_eq!(d.denial, Denial::InvalidToken(error), "{claim} {bad}");
            assert_eq!(d.reply.status, 401);
            // And from the cached answer: refused again, never allowed.
            let again = request_on(&mut e, 3, "cc", "/cc", &opaque, T0 + 1);
            assert_eq!(
                denied(&again),
                Denial::InvalidToken(error),
                "{claim} {bad} cached"
            );
        }
    }

    /// REFERENCE §8 on the client-credentials path: the token the IdP returns is held to the
    /// bearer rules. A malformed one (alg none, two, four or five segments, padding, a set
    /// trailing bit, exp of the wrong type) is dropped and fetched once more, then refused with the
    /// reason, 401 invalid_token; never allowed, never served from the cache.
    #[test]
    fn a_malformed_token_from_the_exchange_is_refused() {
        let good = rs_token(&claims());
        let (input, sig) = good.rsplit_once('.').unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        assert_eq!(
            sig.len() % 4,
            2,
            "256 bytes: the last character has 4 unused bits"
        );
        let last = alphabet.find(sig.chars().last().unwrap()).unwrap();
        let bent = format!(
            "{input}.{}{}",
            &sig[..sig.len() - 1],
            alphabet.as_bytes()[last | 1] as char
        );
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            input.split_once('.').unwrap().1
        );
        let mut bad_exp = claims();
        bad_exp["exp"] = json!("1800000600");
        for (name, token, why) in [
            ("alg none", none, TokenError::NotCompactJws),
            ("two segments", input.to_owned(), TokenError::NotCompactJws),
            (
                "four segments",
                format!("{good}.x"),
                TokenError::NotCompactJws,
            ),
            (
                "five segments (JWE)",
                format!("{good}.x.y"),
                TokenError::Encrypted,
            ),
            ("padding", format!("{good}="), TokenError::BadEncoding),
            ("trailing bits", bent, TokenError::BadEncoding),
            ("exp a string", rs_token(&bad_exp), TokenError::BadTimeClaim),
        ] {
            let mut e = warm_cc();
            let c = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
            let p = e.on_callout_response(c.id, token_answer(&token), T0);
            assert!(p.settled.is_empty(), "{name}: {:?}", p.settled);
            let again = p.callouts.first().expect("fetched once more");
            assert_eq!(again.path, "/token", "{name}");
            let p = e.on_callout_response(again.id, token_answer(&token), T0);
            let [(2, Method::ClientCredentials, Outcome::Deny(d))] = p.settled.as_slice() else {
                panic!("{name}: {:?}", p.settled)
            };
            assert_eq!(d.denial, Denial::InvalidToken(why), "{name}");
            assert_eq!(d.reply.status, 401, "{name}");
            assert!(
                matches!(
                    basic(&mut e, 3, "Basic client-1:s3cret", T0 + 1),
                    Step::Wait(Some(_))
                ),
                "{name}: not cached"
            );
        }
    }

    #[test]
    fn key_auth_comes_first_on_a_route_with_several_strategies() {
        let mut e = warm_cc();
        let a = allowed(&request_on(
            &mut e,
            1,
            "cc",
            "/cc",
            &[("x-api-key", "k2"), ("authorization", "Bearer whatever")],
            T0,
        ));
        assert_eq!(header(&a, "x-application-id"), Some("app-key2"));
        // A JWT on the same route goes to the bearer strategy.
        allowed(&request_on(
            &mut e,
            2,
            "cc",
            "/cc",
            &[("authorization", &format!("Bearer {}", es_token(&claims())))],
            T0,
        ));
        // The orders route's key strategy does not accept this route's key.
        assert_eq!(
            denied(&request_on(
                &mut e,
                3,
                ROUTE,
                "/orders",
                &[("apikey", "k2")],
                T0
            )),
            Denial::WrongStrategy
        );
    }

    /// An exchanged token whose `kid` the issuer's set does not hold: one key fetch (the
    /// IdP may have rotated), then a refusal; never a fetch per answer.
    #[test]
    fn an_exchanged_token_with_an_unknown_kid_fetches_keys_once() {
        let mut e = warm_cc();
        let c = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        let token = unknown_kid_token(&claims());
        let mut p = e.on_callout_response(c.id, token_answer(&token), T0 + 10);
        let (mut fetches, mut exchanges) = (0, 0);
        while p.settled.is_empty() && fetches + exchanges < 8 {
            let [next] = p.callouts.as_slice() else {
                panic!("{p:?}")
            };
            let now = T0 + 20 + fetches + exchanges;
            p = match next.path.as_str() {
                "/jwks" => {
                    fetches += 1;
                    e.on_callout_response(next.id, ok(&jwks()), now)
                }
                // The exchange is retried once when its token does not verify.
                _ => {
                    exchanges += 1;
                    e.on_callout_response(next.id, token_answer(&token), now)
                }
            };
        }
        assert_eq!(
            fetches, 1,
            "one key fetch for an unknown kid, not one per answer"
        );
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.denial == Denial::InvalidToken(TokenError::UnknownKid)),
            "{:?}",
            p.settled
        );
    }

    /// REFERENCE §8 (RFC 9068 §4): where a strategy requires `at+jwt`, an ID token (typ
    /// JWT) or a JWT without `typ` is refused whichever way the strategy checks it: sent to
    /// introspection (the strategy introspects JWTs, or takes them by introspection only)
    /// it is refused before any callout, as on the bearer path; the IdP's `active` says the
    /// token is live, not that it is an access token. An at+jwt token is still introspected.
    #[test]
    fn a_jwt_that_is_not_at_jwt_is_refused_before_introspection_where_at_jwt_is_required() {
        for methods in [json!(["bearer", "introspection"]), json!(["introspection"])] {
            let mut c = config();
            let o = &mut c["policies"]["cc-v1"]["strategies"][1]["configs"]["openid-connect"];
            o["require_at_jwt"] = json!(true);
            o["introspect_jwt_tokens"] = json!(true);
            o["auth_methods"] = methods.clone();
            for (name, token) in [
                ("typ JWT", rs_token(&claims())),
                ("no typ", hs_with_header(r#"{"alg":"HS256","kid":"hs-1"}"#)),
                // Types the parser refuses (WrongType), and a JWT typ on a header it refuses
                // for another reason: still JWTs of the issuer, and still no access tokens.
                (
                    "typ dpop+jwt",
                    hs_with_header(r#"{"alg":"HS256","kid":"hs-1","typ":"dpop+jwt"}"#),
                ),
                (
                    "typ application/jwt",
                    hs_with_header(r#"{"alg":"HS256","kid":"hs-1","typ":"application/jwt"}"#),
                ),
                (
                    "typ JWT, unknown crit",
                    hs_with_header(r#"{"alg":"HS256","kid":"hs-1","typ":"JWT","crit":["x"]}"#),
                ),
            ] {
                let mut e = engine_with(c.clone());
                let auth = format!("Bearer {token}");
                let step = request_on(&mut e, 1, "cc", "/cc", &[("authorization", &auth)], T0);
                let Step::Done(_, Outcome::Deny(d)) = &step else {
                    panic!("{methods} {name}: {step:?}")
                };
                assert_eq!(
                    d.denial,
                    Denial::InvalidToken(TokenError::NotAtJwt),
                    "{methods} {name}"
                );
                assert_eq!(d.reply.status, 401);
            }
            let mut e = engine_with(c.clone());
            let auth = format!("Bearer {}", rs_at_jwt(&claims()));
            let co = callout(&request_on(
                &mut e,
                2,
                "cc",
                "/cc",
                &[("authorization", &auth)],
                T0,
            ));
            assert_eq!(co.path, "/.well-known/openid-configuration", "{methods}");
            // An opaque token has no typ to refuse: introspected as before.
            let mut e = engine_with(c.clone());
            let opaque = [("authorization", "Bearer opaque-1")];
            let co = callout(&request_on(&mut e, 3, "cc", "/cc", &opaque, T0));
            assert_eq!(co.path, "/.well-known/openid-configuration", "{methods}");
        }
    }

    /// The orders route with a bearer strategy of ISS and a strategy that introspects any
    /// token, JWTs too, at `introspecting_issuer`.
    fn bearer_and_jwt_introspection(introspecting_issuer: &str) -> Value {
        let mut c = config_value();
        c["policies"]["orders-v1"]["strategies"] = json!([
            {"id": "s-oidc", "strategy_type": "openid_connect",
             "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                "scopes": [], "auth_methods": ["bearer"], "timeout": 2000, "cache_ttl": 300}}},
            {"id": "s-intro", "strategy_type": "openid_connect",
             "configs": {"openid-connect": {"issuer": introspecting_issuer, "credential_claim": ["client_id"],
                "scopes": [], "auth_methods": ["introspection"], "introspect_jwt_tokens": true,
                "client_id": "rs", "client_secret": "x", "timeout": 2000, "cache_ttl": 300}}},
            {"id": "s-key", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["apikey"]}}}]);
        c
    }

    /// A JWT of ISS, whose application is the bearer strategy's, is that strategy's to check
    /// (Kong picks the strategy by the application), never sent to another IdP's
    /// introspection endpoint.
    #[test]
    fn a_jwt_of_a_bearer_issuer_is_not_introspected_at_another_idp() {
        let mut e = engine_with(bearer_and_jwt_introspection("https://other.example.com"));
        let co = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
        assert_eq!(
            co.authority, "idp.example.com",
            "the token's own issuer: {co:?}"
        );
    }

    /// One IdP, two strategies: bearer for one application, introspection of JWTs for
    /// another. Each application's JWT goes to its own strategy.
    #[test]
    fn each_application_jwt_goes_to_its_own_strategy() {
        let mut c = bearer_and_jwt_introspection(ISS);
        c["applications"][1]["auth_strategy_id"] = json!("s-intro");
        c["applications"][1]["scopes"] = json!(["orders-v1"]);
        let mut e = engine_with(c);
        // client-1 (s-oidc): discovery then keys, then allowed.
        let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
        let settled = serve_keys(&mut e, &callout(&step), &jwks(), T0);
        assert!(
            matches!(settled.as_slice(), [(1, Method::Bearer, Outcome::Allow(_))]),
            "{settled:?}"
        );
        // client-2 (s-intro): introspected.
        let token = rs_token(&claims_with(json!({"client_id": "client-2"})));
        let co = callout(&bearer(&mut e, 2, &token, T0 + 1));
        assert_eq!(co.path, "/token/introspection", "{co:?}");
    }
}

mod shared_keys {
    //! Several VMs (Envoy workers) sharing one store: one fetch per issuer for all of them.
    use super::*;
    use crate::metrics::{self, Recording};
    use crate::shared::MemoryStore;

    fn vm(store: &Rc<MemoryStore>) -> (Engine, Rc<Recording>) {
        vm_with(store, config_value())
    }

    fn vm_with(store: &Rc<MemoryStore>, config: Value) -> (Engine, Rc<Recording>) {
        let (config, _) = Config::parse(config.to_string().as_bytes()).unwrap();
        let counters = Rc::new(Recording::default());
        let store: Rc<dyn crate::shared::SharedStore> = store.clone();
        (
            Engine::with_host(Rc::new(config), 1, store, counters.clone()),
            counters,
        )
    }

    /// A loaded by its warm-up tick, B idle.
    fn two_vms() -> (Engine, Engine, Rc<Recording>) {
        let store = Rc::new(MemoryStore::default());
        let (mut a, _) = vm(&store);
        let (mut b, b_counters) = vm(&store);
        let c = a.on_tick(T0).callouts.remove(0);
        assert!(b.on_tick(T0).callouts.is_empty(), "A holds the lease");
        serve_keys(&mut a, &c, &jwks(), T0 + 10);
        (a, b, b_counters)
    }

    #[test]
    fn one_fetch_for_all_vms_and_the_others_adopt_it() {
        let (_a, mut b, counters) = two_vms();
        let p = b.on_tick(T0 + 200);
        assert!(p.callouts.is_empty());
        assert_eq!(counters.get(metrics::KEYS_FROM_SHARED_DATA), 1);
        allowed(&bearer(&mut b, 1, &rs_token(&claims()), T0 + 300));
        // Nobody refreshes before 90% of cache_ttl (300 s), then exactly one VM does.
    }

    #[test]
    fn a_key_set_adopted_from_another_vm_voids_remembered_verifications() {
        let (mut a, mut b, _) = two_vms();
        b.on_tick(T0 + 200);
        let old = rs_token(&claims());
        allowed(&bearer(&mut b, 1, &old, T0 + 300));
        allowed(&bearer(&mut b, 2, &old, T0 + 310)); // remembered
                                                     // The IdP drops rs-1; A learns it (an unknown kid forces a fetch) and publishes.
        let c = callout(&bearer(&mut a, 3, &rotated_token(&claims()), T0 + 400));
        let only_new = json!({"keys": [rsa_jwk(&keys().rs_other, "rs-2", Some("RS256"))]});
        let p = a.on_callout_response(c.id, ok(&only_new.to_string()), T0 + 410);
        assert!(matches!(p.settled.as_slice(), [(3, _, Outcome::Allow(_))]));
        // B adopts the new set at its tick: what rs-1 verified there is void too.
        b.on_tick(T0 + 600);
        let step = bearer(&mut b, 4, &old, T0 + 700);
        assert!(
            !matches!(step, Step::Done(_, Outcome::Allow(_))),
            "a token of a dropped key is still allowed by another VM: {step:?}"
        );
    }

    /// A VM waits for the fetch another holds, and adopts its result at a tick.
    /// `app_auth.keys.lease_wait` counts requests that waited: one request waiting through
    /// several ticks (each re-runs it, and finds the lease still held) is one wait.
    #[test]
    fn a_vm_waits_for_the_fetch_another_holds() {
        let store = Rc::new(MemoryStore::default());
        let (mut a, _) = vm(&store);
        let (mut b, counters) = vm(&store);
        let c = callout(&bearer(&mut a, 1, &rs_token(&claims()), T0));
        assert_eq!(
            bearer(&mut b, 2, &rs_token(&claims()), T0 + 1),
            Step::Wait(None)
        );
        // A's IdP takes a second: B ticks five times meanwhile.
        for i in 1..=5 {
            assert!(b.on_tick(T0 + i * 200).settled.is_empty());
        }
        serve_keys(&mut a, &c, &jwks(), T0 + 1_000);
        let p = b.on_tick(T0 + 1_200);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
            "{:?}",
            p.settled
        );
        assert_eq!(counters.get(metrics::KEYS_LEASE_WAIT), 1);
    }

    #[test]
    fn a_failed_fetch_backs_off_every_vm() {
        let store = Rc::new(MemoryStore::default());
        let (mut a, _) = vm(&store);
        let (mut b, _) = vm(&store);
        let c = callout(&bearer(&mut a, 1, &rs_token(&claims()), T0));
        assert_eq!(
            bearer(&mut b, 2, &rs_token(&claims()), T0),
            Step::Wait(None)
        );
        a.on_callout_response(
            c.id,
            CalloutResponse {
                status: Some(500),
                ..Default::default()
            },
            T0 + 5,
        );
        let p = b.on_tick(T0 + 200);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.reply.status == 503),
            "{:?}",
            p.settled
        );
        // Within the backoff, B refuses at once and sends nothing.
        assert_eq!(
            denied(&bearer(&mut b, 3, &rs_token(&claims()), T0 + 300)).status(),
            503
        );
        assert!(b.on_tick(T0 + 400).callouts.is_empty());
        // After it, one of them tries again.
        assert!(matches!(
            bearer(&mut b, 4, &rs_token(&claims()), T0 + 1_100),
            Step::Wait(Some(_))
        ));
    }

    /// The backoff doubles with each failed fetch, whichever VM made it (README: "1 s,
    /// doubling to 10 s, for every VM"): after A's failure and then B's, nobody fetches for
    /// 2 s. Each VM counting only its own failures kept the IdP at one retry a second
    /// for as many failures as there are VMs.
    #[test]
    fn a_failure_in_another_vm_doubles_the_shared_backoff() {
        let store = Rc::new(MemoryStore::default());
        let (mut a, _) = vm(&store);
        let (mut b, _) = vm(&store);
        let down = CalloutResponse::default();
        let c = a.on_tick(T0).callouts.remove(0);
        a.on_callout_response(c.id, down.clone(), T0);
        // A's backoff (1 s) is over; B's tick fetches, and fails too.
        let c = b.on_tick(T0 + 1_000).callouts.remove(0);
        b.on_callout_response(c.id, down, T0 + 1_000);
        // The second failure in a row backs everyone off 2 s, A included.
        for vm in [&mut a, &mut b] {
            assert!(
                vm.on_tick(T0 + 2_800).callouts.is_empty(),
                "fetched 1.8 s after the second failure"
            );
        }
        assert_eq!(a.on_tick(T0 + 3_000).callouts.len(), 1);
    }

    #[test]
    fn rotation_is_fetched_once_and_cooled_down_for_all() {
        let (mut a, mut b, _) = two_vms();
        b.on_tick(T0 + 100);
        let rotated = rotated_jwks();
        let new_token = rotated_token(&claims());
        let c = callout(&bearer(&mut b, 1, &new_token, T0 + 1_000));
        assert_eq!(c.path, "/jwks", "discovery is still good: keys only");
        assert_eq!(
            bearer(&mut a, 2, &new_token, T0 + 1_001),
            Step::Wait(None),
            "A joins B's fetch"
        );
        let p = b.on_callout_response(c.id, ok(&rotated), T0 + 1_050);
        assert!(matches!(p.settled.as_slice(), [(1, _, Outcome::Allow(_))]));
        let p = a.on_tick(T0 + 1_200);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
            "{:?}",
            p.settled
        );
        // Another unknown kid, on A, within B's cooldown: refused without a fetch.
        let unknown = hs_with_header(r#"{"alg":"HS256","kid":"nope"}"#);
        assert_eq!(
            denied(&bearer(&mut a, 3, &unknown, T0 + 2_000)),
            Denial::InvalidToken(TokenError::UnknownKid)
        );
    }

    #[test]
    fn garbage_never_replaces_a_good_set() {
        let (mut a, mut b, _) = two_vms();
        b.on_tick(T0 + 100);
        // Refresh time (90% of 300 s): A's tick takes the lease; the IdP answers garbage.
        let refresh_at = T0 + 271_000;
        let mut callouts = a.on_tick(refresh_at).callouts;
        callouts.extend(b.on_tick(refresh_at).callouts);
        assert_eq!(callouts.len(), 1, "one VM refreshes");
        let c = callouts.remove(0);
        let p = a.on_callout_response(c.id, ok(&discovery_doc()), refresh_at);
        let jwks_call = p.callouts.first().cloned().unwrap_or(c);
        a.on_callout_response(
            jwks_call.id,
            ok(r#"{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}"#),
            refresh_at + 10,
        );
        for vm in [&mut a, &mut b] {
            allowed(&bearer(
                vm,
                9,
                &rs_token(&claims_with(json!({"jti": "fresh"}))),
                refresh_at + 20,
            ));
        }
        assert!(b.on_tick(refresh_at + 200).settled.is_empty());
    }

    #[test]
    fn verified_tokens_are_remembered_until_the_keys_change() {
        let store = Rc::new(MemoryStore::default());
        let (mut e, counters) = vm(&store);
        let token = rs_token(&claims());
        let c = callout(&bearer(&mut e, 1, &token, T0));
        serve_keys(&mut e, &c, &jwks(), T0);
        allowed(&bearer(&mut e, 2, &token, T0 + 1));
        assert_eq!(counters.get(metrics::CACHE_VERIFIED_HIT), 1);
        // Never past exp.
        assert_eq!(
            denied(&bearer(&mut e, 3, &token, (NOW + 600) * 1000)),
            Denial::InvalidToken(TokenError::Expired)
        );
        // A new key set (rotation) voids what was remembered.
        let unknown = hs_with_header(r#"{"alg":"HS256","kid":"new"}"#);
        let c = callout(&bearer(&mut e, 4, &unknown, T0 + 2));
        e.on_callout_response(c.id, ok(&jwks()), T0 + 3);
        let hits = counters.get(metrics::CACHE_VERIFIED_HIT);
        allowed(&bearer(&mut e, 5, &token, T0 + 4));
        assert_eq!(
            counters.get(metrics::CACHE_VERIFIED_HIT),
            hits,
            "re-verified"
        );
    }

    #[test]
    fn memory_stays_flat_under_distinct_tokens() {
        let mut c = config_value();
        c["limits"] = json!({"max_cache_entries": 100});
        let mut e = engine_with(c);
        let first = callout(&bearer(
            &mut e,
            1,
            &hs_with_payload(&claims().to_string()),
            T0,
        ));
        serve_keys(&mut e, &first, &jwks(), T0);
        for i in 0..2_000 {
            let t = hs_with_payload(&claims_with(json!({"jti": format!("t{i}")})).to_string());
            allowed(&bearer(&mut e, 2, &t, T0 + 1));
        }
        assert!(e.verified.len() <= 100, "{}", e.verified.len());
    }

    /// Once the cache is full, tokens used once each do not push out a token in use: a new
    /// token takes a place at its second use.
    #[test]
    fn a_full_cache_keeps_its_tokens_through_a_stream_of_new_ones() {
        let mut c = config_value();
        c["limits"] = json!({"max_cache_entries": 10});
        let store = Rc::new(MemoryStore::default());
        let (mut e, counters) = vm_with(&store, c);
        let token =
            |i: usize| hs_with_payload(&claims_with(json!({"jti": format!("t{i}")})).to_string());
        let first = callout(&bearer(&mut e, 1, &token(0), T0));
        serve_keys(&mut e, &first, &jwks(), T0);
        for i in 0..10 {
            allowed(&bearer(&mut e, 2, &token(i), T0 + 1));
        }
        assert_eq!(e.verified.len(), 10);
        for i in 10..1_000 {
            allowed(&bearer(&mut e, 2, &token(i), T0 + 1));
        }
        let hits = counters.get(metrics::CACHE_VERIFIED_HIT);
        for i in 0..10 {
            allowed(&bearer(&mut e, 2, &token(i), T0 + 2));
        }
        assert_eq!(
            counters.get(metrics::CACHE_VERIFIED_HIT),
            hits + 10,
            "all ten kept"
        );
        // A new token, used again, is remembered from its second use.
        let new = token(5_000);
        allowed(&bearer(&mut e, 2, &new, T0 + 3));
        allowed(&bearer(&mut e, 2, &new, T0 + 3));
        let hits = counters.get(metrics::CACHE_VERIFIED_HIT);
        allowed(&bearer(&mut e, 2, &new, T0 + 3));
        assert_eq!(counters.get(metrics::CACHE_VERIFIED_HIT), hits + 1);
        assert_eq!(e.verified.len(), 10);
    }
}

mod kong {
    //! What differs when Kong (ngx_wasm_module) is the host.
    use super::*;

    #[test]
    fn without_an_upstreams_entry_the_callout_targets_host_and_port_over_tls() {
        let mut c = config_value();
        c.as_object_mut().unwrap().remove("upstreams");
        let mut e = engine_with(c);
        let call = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
        // Kong resolves `host[:port]` itself; `https` makes the adapter send `:scheme: https`.
        assert_eq!(
            (call.upstream.as_str(), call.authority.as_str(), call.https),
            ("idp.example.com", "idp.example.com", true)
        );
    }

    #[test]
    fn a_dispatch_status_is_a_failed_callout_never_an_answer() {
        for status in [
            "timeout",
            "broken connection",
            "tls handshake failure",
            "resolver failure",
        ] {
            let mut e2 = engine();
            let c2 = callout(&bearer(&mut e2, 1, &rs_token(&claims()), T0));
            // Kong hands over (0, 0, 0) plus `:dispatch_status`; the adapter turns that into
            // a failure even if a status or body were somehow present.
            let response = CalloutResponse {
                status: Some(200),
                body: discovery_doc().into_bytes(),
                failure: Some(format!("dispatch failed: {status}")),
                max_age_s: None,
            };
            let p = e2.on_callout_response(c2.id, response, T0);
            assert!(
                matches!(p.settled.as_slice(), [(1, _, Outcome::Deny(d))] if d.reply.status == 503),
                "{status}"
            );
        }
    }

    #[test]
    fn the_single_policy_form_needs_no_route_name() {
        let mut c = config_value();
        let policy = c["policies"]["orders-v1"].clone();
        let obj = c.as_object_mut().unwrap();
        obj.remove("policies");
        obj.remove("routes");
        obj.insert("policy".into(), policy);
        obj.insert("applications".into(), json!([{"id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-oidc", "scopes": ["orders-v1"]},
            {"id": "app-key", "client_id": sha256_hex(b"secret-key-1"), "auth_strategy_id": "s-key", "scopes": ["orders-v1"]}]));
        let mut e = engine_with(c);
        assert!(!e.config().chooses_by_route());
        let h = headers(&[("apikey", "secret-key-1")]);
        let req = Request {
            route: None,
            authority: "kong",
            path: "/",
            headers: &h,
        };
        assert!(matches!(
            e.on_request(1, &req, T0),
            Step::Done(Method::KeyAuth, Outcome::Allow(_))
        ));
    }

    /// Kong resumes a request only from its own callouts' answers (its
    /// `set_effective_context` switches nothing): no request joins another's callout, and an
    /// answer settles only the request that sent it.
    mod own_callouts {
        use super::super::methods::{basic, token_answer, warm_cc};
        use super::*;

        /// Two approved applications on the orders route.
        fn own_engine() -> Engine {
            let mut c = config_value();
            c["applications"].as_array_mut().unwrap().push(json!(
                {"id": "app-4", "client_id": "client-4", "auth_strategy_id": "s-oidc", "scopes": ["orders-v1"]}));
            let mut e = engine_with(c);
            e.set_own_callouts();
            e
        }

        fn only(p: &Progress, ctx: u32) -> Allow {
            match p.settled.as_slice() {
                [(id, _, Outcome::Allow(a))] if *id == ctx => Allow::clone(a),
                other => panic!("expected only request {ctx} allowed, got {other:?}"),
            }
        }

        #[test]
        fn each_request_waiting_for_keys_fetches_them_and_gets_its_own_identity() {
            let mut e = own_engine();
            let app4 = rs_token(&claims_with(
                json!({"client_id": "client-4", "sub": "client-4"}),
            ));
            let d1 = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
            // Envoy would have request 2 join request 1's fetch (`Wait(None)`).
            let d2 = callout(&bearer(&mut e, 2, &app4, T0 + 1));
            assert_eq!((d2.path.as_str(), d2.id), (d1.path.as_str(), d1.id));
            let p = e.on_request_callout_response(1, d1.id, ok(&discovery_doc()), T0 + 5);
            assert!(p.settled.is_empty());
            let j1 = p.callouts[0].clone();
            let p = e.on_request_callout_response(1, j1.id, ok(&jwks()), T0 + 6);
            // Request 2 waits too, but only its own callout can resume it: this answer
            // settles request 1 alone, with its own application.
            assert_eq!(header(&only(&p, 1), "x-application-id"), Some("app-1"));
            assert!(e.is_waiting(2));
            // Nor does the tick, even past the bound (the host times the callout out).
            assert!(e.on_tick(T0 + 60_000).settled.is_empty());
            assert!(e.is_waiting(2));
            // Request 2's copy of the discovery comes back second: not needed any more, and
            // request 2 is decided with the keys now in.
            let p = e.on_request_callout_response(2, d2.id, ok(&discovery_doc()), T0 + 60_001);
            assert!(p.callouts.is_empty());
            assert_eq!(header(&only(&p, 2), "x-application-id"), Some("app-4"));
            assert!(!e.is_waiting(2));
        }

        #[test]
        fn the_copy_that_answers_first_is_used_and_the_other_request_asks_again() {
            let mut e = own_engine();
            let d1 = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
            let d2 = callout(&bearer(&mut e, 2, &rs_token(&claims()), T0 + 1));
            // Request 2's discovery answers first: it goes on to the key set itself.
            let p = e.on_request_callout_response(2, d2.id, ok(&discovery_doc()), T0 + 5);
            assert!(p.settled.is_empty());
            let j2 = p.callouts[0].clone();
            // Request 1's discovery is no longer needed; the keys are still under way, so
            // request 1 sends its own copy of that fetch.
            let p = e.on_request_callout_response(1, d1.id, ok(&discovery_doc()), T0 + 6);
            assert!(p.settled.is_empty());
            assert_eq!(p.callouts.len(), 1);
            let j1 = p.callouts[0].clone();
            assert_eq!((j1.path.as_str(), j1.id), (j2.path.as_str(), j2.id));
            only(
                &e.on_request_callout_response(2, j2.id, ok(&jwks()), T0 + 7),
                2,
            );
            only(
                &e.on_request_callout_response(1, j1.id, ok(&jwks()), T0 + 8),
                1,
            );
        }

        #[test]
        fn each_request_exchanging_the_same_credentials_sends_its_own_exchange() {
            let mut e = warm_cc();
            e.set_own_callouts();
            let c2 = callout(&basic(&mut e, 2, "Basic Y2xpZW50LTE6czNjcmV0", T0));
            let c3 = callout(&basic(&mut e, 3, "Basic client-1:s3cret", T0));
            assert_ne!(c2.id, c3.id, "two exchanges");
            let token = rs_token(&claims());
            only(
                &e.on_request_callout_response(3, c3.id, token_answer(&token), T0 + 10),
                3,
            );
            assert!(e.is_waiting(2));
            // A failed answer refuses its own request only.
            let p = e.on_request_callout_response(2, c2.id, CalloutResponse::default(), T0 + 20);
            assert!(
                matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.reply.status == 503)
            );
            assert!(allowed(&basic(&mut e, 4, "Basic client-1:s3cret", T0 + 30))
                .application_id
                .is_some());
        }

        #[test]
        fn another_vms_fetch_is_not_waited_for() {
            let store = Rc::new(crate::shared::MemoryStore::default());
            let vm = |own: bool| {
                let (config, _) = Config::parse(config_value().to_string().as_bytes()).unwrap();
                let store: Rc<dyn crate::shared::SharedStore> = store.clone();
                let mut e =
                    Engine::with_host(Rc::new(config), 1, store, Rc::new(metrics::NoCounters));
                if own {
                    e.set_own_callouts();
                }
                e
            };
            let mut a = vm(true);
            callout(&bearer(&mut a, 1, &rs_token(&claims()), T0));
            // A holds the fetch lease. Envoy's VM B would wait for A's result (its tick
            // adopts it); on Kong, B's request fetches as well.
            assert_eq!(
                bearer(&mut vm(false), 1, &rs_token(&claims()), T0 + 1),
                Step::Wait(None)
            );
            callout(&bearer(&mut vm(true), 1, &rs_token(&claims()), T0 + 1));
        }
    }
}

#[test]
fn a_short_max_age_does_not_refetch_on_every_tick() {
    let mut e = engine();
    let c = e.on_tick(T0).callouts.remove(0);
    let p = e.on_callout_response(c.id, ok(&discovery_doc()), T0);
    let jwks_call = p.callouts[0].clone();
    // `Cache-Control: no-store` (max-age 0) is held for the 30 s floor, refreshed at 27 s.
    let answer = CalloutResponse {
        max_age_s: Some(0),
        ..ok(&jwks())
    };
    e.on_callout_response(jwks_call.id, answer, T0);
    for s in [1, 5, 10, 20, 26] {
        assert!(
            e.on_tick(T0 + s * 1000).callouts.is_empty(),
            "refetch at {s} s"
        );
    }
    assert_eq!(e.on_tick(T0 + 27_000).callouts.len(), 1);
}

#[test]
fn more_headers_than_the_limit_is_431_before_any_credential_is_read() {
    let mut doc = config_value();
    doc["limits"] = json!({"max_request_headers": 5});
    let mut e = engine_with(doc);
    let token = rs_token(&claims());
    let auth = format!("Bearer {token}");
    let pseudo = [
        (":method", "GET"),
        (":path", "/orders/1"),
        (":authority", "api.example.com"),
    ];
    let fillers: Vec<(String, String)> = (0..5).map(|i| (format!("x-f{i}"), "1".into())).collect();
    let mut list: Vec<(&str, &str)> = pseudo.to_vec();
    list.push(("authorization", &auth));
    // At the limit (pseudo-headers not counted): read as usual, here a key fetch.
    list.extend(
        fillers
            .iter()
            .take(4)
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let step = request_on(&mut e, 1, ROUTE, "/orders/1", &list, T0);
    assert!(matches!(step, Step::Wait(Some(_))), "{step:?}");
    // One more: refused at once, whatever the credential, with no callout.
    list.push(("x-f4", "1"));
    let step = request_on(&mut e, 2, ROUTE, "/orders/1", &list, T0);
    assert_eq!(denied(&step), Denial::TooManyHeaders);
    let Step::Done(Method::None, Outcome::Deny(d)) = &step else {
        panic!("{step:?}")
    };
    assert_eq!(d.reply.status, 431);
    assert_eq!(
        d.reply.body,
        r#"{"message":"Request Header Fields Too Large"}"#
    );
    // Even on a route without a policy, and with no credential at all.
    let mut many: Vec<(&str, &str)> = fillers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    many.push(("x-f5", "1"));
    let step = request_on(&mut e, 3, "nowhere", "/x", &many, T0);
    assert_eq!(denied(&step), Denial::TooManyHeaders);
    // The default leaves room for Envoy's own limit of 100.
    assert_eq!(crate::config::Limits::default().max_request_headers, 100);
}

#[test]
fn require_at_jwt_refuses_id_tokens_and_allows_access_tokens() {
    let mut doc = config_value();
    doc["policies"]["orders-v1"]["strategies"][0]["configs"]["openid-connect"]["require_at_jwt"] =
        json!(true);
    let mut e = engine_with(doc);
    // An ID-token-shaped JWT (typ JWT, same issuer, same claims): refused before any fetch.
    let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
    assert_eq!(denied(&step), Denial::InvalidToken(TokenError::NotAtJwt));
    let Step::Done(_, Outcome::Deny(d)) = &step else {
        panic!("{step:?}")
    };
    assert_eq!(d.reply.status, 401);
    assert!(d.reply.headers.iter().any(|(n, v)| n == "www-authenticate"
        && v.contains(r#"error="invalid_token", error_description="token type is not at+jwt""#)));
    // The same claims as an RFC 9068 access token: fetched keys, allowed.
    let step = bearer(&mut e, 2, &rs_at_jwt(&claims()), T0);
    let settled = serve_keys(&mut e, &callout(&step), &jwks(), T0);
    assert!(
        matches!(settled.as_slice(), [(2, Method::Bearer, Outcome::Allow(_))]),
        "{settled:?}"
    );
    // Keys in hand, the typ rule still refuses; a remembered at+jwt allow stays one.
    let step = bearer(&mut e, 3, &es_token(&claims()), T0 + 1);
    assert_eq!(denied(&step), Denial::InvalidToken(TokenError::NotAtJwt));
    allowed(&bearer(&mut e, 4, &rs_at_jwt(&claims()), T0 + 2));
    // The other policy does not require it: a JWT-typed token passes there.
    let token = rs_token(&claims_with(json!({"client_id": "client-3"})));
    let auth = format!("Bearer {token}");
    allowed(&request_on(
        &mut e,
        5,
        "other",
        "/other",
        &[("authorization", &auth)],
        T0 + 3,
    ));
}

#[test]
fn a_remembered_token_is_found_before_it_is_validated_but_never_past_the_rules() {
    let (mut e, counters) = warm_counted();
    let token = rs_token(&claims());
    let hits = || counters.get(metrics::CACHE_VERIFIED_HIT);

    let a = allowed(&bearer(&mut e, 2, &token, T0 + 1));
    assert_eq!(header(&a, "x-application-id"), Some("app-1"));
    let spaced = format!("bearer   {token}  ");
    let on = |e: &mut Engine, path: &str, list: &[(&str, &str)]| {
        request_on(e, 3, ROUTE, path, list, T0 + 2)
    };
    allowed(&on(&mut e, "/orders/1", &[("authorization", &spaced)]));
    assert_eq!(hits(), 2);

    // Whatever the cache holds, a request the rules refuse is refused.
    let auth = format!("Bearer {token}");
    let tabbed = format!("Bearer \t{token}");
    let refused: [(&str, Vec<(&str, &str)>); 3] = [
        ("/orders/1?access_token=x", vec![("authorization", &auth)]),
        (
            "/orders/1",
            vec![("authorization", &auth), ("Authorization", &auth)],
        ),
        ("/orders/1", vec![("authorization", &tabbed)]),
    ];
    for (path, list) in &refused {
        let d = denied(&on(&mut e, path, list));
        assert!(matches!(d, Denial::InvalidRequest(_)), "{path} {d:?}");
    }
    assert_eq!(hits(), 2, "none of those was answered from the cache");
}

/// REFERENCE §8, keys of one issuer used for another: two issuers on one route, each with
/// a key under kid `rs-1`. A token verifies only with the keys of the issuer its strategy
/// names, whatever key the other issuer publishes under the same kid.
#[test]
fn a_token_is_verified_with_its_own_issuers_keys_only() {
    const OTHER: &str = "https://other.example.com";
    let oidc = |id: &str, issuer: &str| {
        json!({"id": id, "strategy_type": "openid_connect",
            "configs": {"openid-connect": {"issuer": issuer, "credential_claim": ["client_id"],
                "scopes": [], "auth_methods": ["bearer"], "timeout": 2000, "cache_ttl": 300}}})
    };
    let mut c = config_value();
    c["policies"]["orders-v1"]["strategies"] = json!([oidc("s-oidc", ISS), oidc("s-other", OTHER),
        {"id": "s-key", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["apikey"]}}}]);
    c["applications"].as_array_mut().unwrap().push(json!(
        {"id": "app-b", "client_id": "client-b", "auth_strategy_id": "s-other", "scopes": ["orders-v1"]}));
    c["upstreams"]["other.example.com"] = json!("idp2");
    let mut e = engine_with(c);
    // ISS publishes keys().rs under rs-1; OTHER publishes keys().rs_other under rs-1.
    let of_iss = rs_token(&claims());
    let first = callout(&bearer(&mut e, 1, &of_iss, T0));
    let settled = serve_keys(&mut e, &first, &jwks(), T0);
    assert!(
        matches!(settled.as_slice(), [(1, _, Outcome::Allow(_))]),
        "{settled:?}"
    );
    let b_claims = claims_with(json!({"iss": OTHER, "client_id": "client-b", "sub": "client-b"}));
    let of_other = foreign_token(&b_claims);
    let discovery = callout(&bearer(&mut e, 2, &of_other, T0));
    assert_eq!(discovery.authority, "other.example.com");
    let doc = json!({"issuer": OTHER, "jwks_uri": format!("{OTHER}/jwks")}).to_string();
    let p = e.on_callout_response(discovery.id, ok(&doc), T0);
    let other_keys = json!({"keys": [rsa_jwk(&keys().rs_other, "rs-1", Some("RS256"))]});
    let p = e.on_callout_response(p.callouts[0].id, ok(&other_keys.to_string()), T0);
    assert!(
        matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]),
        "control: OTHER's own token: {:?}",
        p.settled
    );
    // Each issuer's key, under the kid both use, on a token naming the other issuer.
    for (name, token) in [
        ("OTHER's key, iss ISS", foreign_token(&claims())),
        ("ISS's key, iss OTHER", rs_token(&b_claims)),
    ] {
        let step = bearer(&mut e, 3, &token, T0 + 1);
        assert_eq!(
            denied(&step),
            Denial::InvalidToken(TokenError::BadSignature),
            "{name}"
        );
    }
}

/// REFERENCE §8 and the verified-token cache: other spellings of a token the cache holds
/// (padding, a set trailing bit, `+` for `-`, whitespace) are other strings, never answered
/// from it, and refused as verification refuses them.
#[test]
fn no_other_spelling_of_a_remembered_token_is_answered_from_the_cache() {
    let (mut e, counters) = warm_counted();
    let token = rs_token(&claims());
    allowed(&bearer(&mut e, 2, &token, T0 + 1));
    let hits = counters.get(metrics::CACHE_VERIFIED_HIT);
    let (input, sig) = token.rsplit_once('.').unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(sig.chars().last().unwrap()).unwrap();
    assert_eq!(sig.len() % 4, 2);
    let bent = format!(
        "{input}.{}{}",
        &sig[..sig.len() - 1],
        alphabet.as_bytes()[last | 1] as char
    );
    assert!(token.contains('-'), "the fixture token has a '-' to swap");
    for (name, t, want) in [
        (
            "padding",
            format!("{token}="),
            Denial::InvalidToken(TokenError::BadEncoding),
        ),
        (
            "trailing bit",
            bent,
            Denial::InvalidToken(TokenError::BadEncoding),
        ),
        (
            "'+' for '-'",
            token.replace('-', "+"),
            Denial::InvalidToken(TokenError::BadEncoding),
        ),
        (
            "space inside",
            format!("{} {}", &token[..20], &token[20..]),
            Denial::InvalidRequest("bearer token is not a token68 string"),
        ),
    ] {
        let step = bearer(&mut e, 3, &t, T0 + 2);
        assert_eq!(denied(&step), want, "{name}");
        let Step::Done(_, Outcome::Deny(d)) = &step else {
            unreachable!()
        };
        let code = match want {
            Denial::InvalidRequest(_) => (400, "invalid_request"),
            _ => (401, "invalid_token"),
        };
        assert_eq!(d.reply.status, code.0, "{name}");
        assert!(
            d.reply
                .headers
                .iter()
                .any(|(n, v)| n == "www-authenticate"
                    && v.contains(&format!("error=\"{}\"", code.1))),
            "{name}: {:?}",
            d.reply.headers
        );
    }
    assert_eq!(counters.get(metrics::CACHE_VERIFIED_HIT), hits);
    allowed(&bearer(&mut e, 4, &token, T0 + 3));
}

#[test]
fn an_application_forwards_one_shared_identity() {
    let mut e = warm();
    let mut by_key = |ctx: u32| match request_on(
        &mut e,
        ctx,
        ROUTE,
        "/orders",
        &[("apikey", "secret-key-1")],
        T0,
    ) {
        Step::Done(_, Outcome::Allow(a)) => a,
        other => panic!("{other:?}"),
    };
    let (one, two) = (by_key(1), by_key(2));
    assert!(Rc::ptr_eq(&one, &two), "built once, not per request");
    assert_eq!(header(&one, "x-application-id"), Some("app-key"));
    // What a strategy adds to it (here: a claim as a header) is the request's own.
    let a = allowed(&bearer(&mut e, 3, &rs_token(&claims()), T0));
    assert_eq!(header(&a, "x-application-id"), Some("app-1"));
    assert_eq!(header(&a, "x-subject"), Some("client-1"));
}

/// A verified token whose strategy adds nothing to the application's identity (no claim
/// headers, nothing hidden) forwards that shared identity itself, not a copy per token.
#[test]
fn a_token_that_adds_nothing_forwards_the_shared_identity() {
    let mut c = config_value();
    let oidc = &mut c["policies"]["orders-v1"]["strategies"][0]["configs"]["openid-connect"];
    oidc["upstream_headers_claims"] = json!([]);
    oidc["upstream_headers_names"] = json!([]);
    let mut e = engine_with(c);
    let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
    let settled = serve_keys(&mut e, &callout(&first), &jwks(), T0);
    let [(1, _, Outcome::Allow(one))] = settled.as_slice() else {
        panic!("{settled:?}")
    };
    let other = rs_token(&claims_with(json!({"jti": "second"})));
    let Step::Done(_, Outcome::Allow(two)) = bearer(&mut e, 2, &other, T0) else {
        panic!("not allowed")
    };
    assert_eq!(header(one, "x-application-id"), Some("app-1"));
    assert!(Rc::ptr_eq(one, &two), "copied per token: {two:?}");
}

/// The requests still waiting are the ones the host must settle when it replaces the
/// engine: each waiting one, and none decided.
#[test]
fn waiting_contexts_are_the_requests_still_undecided() {
    let mut e = engine();
    assert!(e.waiting_contexts().is_empty());
    let first = bearer(&mut e, 7, &rs_token(&claims()), T0);
    assert_eq!(
        bearer(&mut e, 9, &rs_token(&claims()), T0),
        Step::Wait(None)
    );
    let mut waiting = e.waiting_contexts();
    waiting.sort_unstable();
    assert_eq!(waiting, [7, 9]);
    assert_eq!(serve_keys(&mut e, &callout(&first), &jwks(), T0).len(), 2);
    assert!(e.waiting_contexts().is_empty());
}

/// A host's `verify_signature` that gives one verdict on every signature.
#[derive(Debug)]
struct HostVerdict(bool);

impl crate::jwt::native::SignatureBackend for HostVerdict {
    fn verify(&self, _: &'static str, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
        Some(self.0)
    }
}

/// The host's signature backend, once set, is the one that decides the signatures it can
/// check: a host that finds every signature bad refuses a token the pure-Rust path accepts.
#[test]
fn the_hosts_signature_backend_decides_what_it_checks() {
    let mut e = warm();
    allowed(&bearer(
        &mut e,
        2,
        &rs_token(&claims_with(json!({"jti": "a"}))),
        T0,
    ));
    e.set_signature_backend(Rc::new(HostVerdict(false)));
    let step = bearer(&mut e, 3, &rs_token(&claims_with(json!({"jti": "b"}))), T0);
    assert_eq!(
        denied(&step),
        Denial::InvalidToken(TokenError::BadSignature)
    );
}

/// The names deny (and allow) log lines give each method (`method=`).
#[test]
fn methods_are_named_in_log_lines_by_their_auth_method() {
    let names = [
        Method::None,
        Method::Bearer,
        Method::ClientCredentials,
        Method::Introspection,
        Method::KeyAuth,
    ]
    .map(Method::name);
    assert_eq!(
        names,
        [
            "none",
            "bearer",
            "client_credentials",
            "introspection",
            "key_auth"
        ]
    );
}

/// A key set is read up to `limits.max_response_bytes`: exactly that many bytes is taken,
/// one more is a failed fetch.
#[test]
fn a_key_set_of_exactly_max_response_bytes_is_read() {
    let keys = jwks();
    let limit = keys.len().max(1024);
    for (size, allows) in [(limit, true), (limit + 1, false)] {
        let mut c = config_value();
        c["limits"] = json!({"max_response_bytes": limit});
        let mut e = engine_with(c);
        let first = bearer(&mut e, 1, &rs_token(&claims()), T0);
        // JSON may carry any amount of trailing whitespace.
        let padded = format!("{keys}{}", " ".repeat(size - keys.len()));
        let settled = serve_keys(&mut e, &callout(&first), &padded, T0);
        let [(1, _, outcome)] = settled.as_slice() else {
            panic!("{size}: {settled:?}")
        };
        assert_eq!(
            matches!(outcome, Outcome::Allow(_)),
            allows,
            "{size}: {outcome:?}"
        );
    }
}

#[test]
fn sha256_hex_is_the_lowercase_hex_of_the_digest() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // In parts, whatever the cut: the same digest as of the whole.
    let whole = b"https://idp.example/token\nclient-1\ns3cret, and a secret longer than one block";
    for cut in [0, 1, 25, 26, 63, 64, 65, whole.len()] {
        let (a, b) = whole.split_at(cut);
        assert_eq!(sha256_hex_of(&[a, b]), sha256_hex(whole), "cut at {cut}");
        assert_eq!(sha256_hex_of(&[a, b"", b]), sha256_hex(whole));
    }
    assert_eq!(sha256_hex_of(&[]), sha256_hex(b""));
}

mod dropped_callouts {
    //! Envoy cancels a request's callouts, unanswered, when its stream ends: requests that
    //! waited on them are re-run at the next tick, with callouts of the root's.
    use super::methods::{basic, token_answer, warm_cc};
    use super::*;

    #[test]
    fn waiters_on_a_dropped_key_fetch_fetch_again_at_the_next_tick() {
        let mut e = engine();
        let d1 = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
        assert_eq!(
            bearer(&mut e, 2, &rs_token(&claims()), T0 + 1),
            Step::Wait(None)
        );
        // Request 1's client hangs up; its context and its callout are gone.
        e.forget(1);
        e.abandon(d1.id, T0 + 2);
        let p = e.on_tick(T0 + 200);
        assert!(p.settled.is_empty());
        let again = match p.callouts.as_slice() {
            [c] => c.clone(),
            other => panic!("expected one new fetch, got {other:?}"),
        };
        assert_eq!(again.path, d1.path);
        let settled = serve_keys(&mut e, &again, &jwks(), T0 + 300);
        assert!(
            matches!(settled.as_slice(), [(2, _, Outcome::Allow(_))]),
            "{settled:?}"
        );
    }

    #[test]
    fn waiters_on_a_dropped_exchange_exchange_again_at_the_next_tick() {
        let mut e = warm_cc();
        let c2 = callout(&basic(&mut e, 2, "Basic Y2xpZW50LTE6czNjcmV0", T0));
        assert_eq!(
            basic(&mut e, 3, "Basic client-1:s3cret", T0),
            Step::Wait(None)
        );
        e.forget(2);
        e.abandon(c2.id, T0 + 1);
        // A late answer to the dropped callout (it cannot come, but if it did) is ignored.
        let late = e.on_callout_response(c2.id, token_answer(&rs_token(&claims())), T0 + 2);
        assert!(late.settled.is_empty() && late.callouts.is_empty());
        let p = e.on_tick(T0 + 200);
        let again = match p.callouts.as_slice() {
            [c] => c.clone(),
            other => panic!("expected one new exchange, got {other:?}"),
        };
        assert_ne!(again.id, c2.id);
        let p = e.on_callout_response(again.id, token_answer(&rs_token(&claims())), T0 + 300);
        assert!(
            matches!(p.settled.as_slice(), [(3, _, Outcome::Allow(_))]),
            "{:?}",
            p.settled
        );
        // Nobody waited: nothing to do at the tick after.
        assert!(e.on_tick(T0 + 400).callouts.is_empty());
    }

    #[test]
    fn a_dropped_exchange_nobody_waits_on_is_only_forgotten() {
        let mut e = warm_cc();
        let c2 = callout(&basic(&mut e, 2, "Basic Y2xpZW50LTE6czNjcmV0", T0));
        e.forget(2);
        e.abandon(c2.id, T0 + 1);
        assert!(e.dropped.is_empty());
        assert!(e.on_tick(T0 + 200).callouts.is_empty());
        // The next request with those credentials exchanges them anew, at once.
        let again = callout(&basic(&mut e, 3, "Basic Y2xpZW50LTE6czNjcmV0", T0 + 300));
        assert_ne!(again.id, c2.id);
    }

    #[test]
    fn a_dropped_fetch_of_a_replaced_configuration_changes_nothing() {
        let mut e = engine();
        let d1 = callout(&bearer(&mut e, 1, &rs_token(&claims()), T0));
        let stale = FetchId {
            generation: d1.id.generation + 1,
            ..d1.id
        };
        e.abandon(stale, T0 + 1);
        assert_eq!(
            bearer(&mut e, 2, &rs_token(&claims()), T0 + 2),
            Step::Wait(None),
            "still under way"
        );
    }
}

mod waiting_simulation {
    //! Random interleavings of requests, callout answers (some failing), clients hanging up
    //! and ticks, under Envoy's rules (a request may be settled from any callback; a
    //! request's callouts die with it) and Kong's (a request is resumed only from its own
    //! callouts' answers). Whatever the order: every request is decided at most once, and
    //! none is left waiting once the IdP has answered everything and the bound has passed;
    //! an allow carries the request's own application; a client the filter does not know is
    //! never allowed; and under Kong's rules a decision only comes from the request's own
    //! callback.
    use super::methods::{config, token_answer};
    use super::*;
    use base64::Engine as _;

    /// xorshift64*: a fixed sequence per seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const CLIENTS: [(&str, Option<&str>); 4] = [
        ("client-1", Some("app-cc")),
        ("client-4", Some("app-4")),
        ("client-5", Some("app-5")),
        ("client-x", None),
    ];

    /// Three tokens per client, signed once (RSA signing is slow in a debug build).
    fn token_of(client: &str, which: usize) -> String {
        static TOKENS: std::sync::OnceLock<Vec<(String, Vec<String>)>> = std::sync::OnceLock::new();
        let all = TOKENS.get_or_init(|| {
            CLIENTS
                .iter()
                .map(|(c, _)| {
                    let tokens = (0..3)
                        .map(|jti| {
                            rs_token(&claims_with(json!({"client_id": c, "sub": c, "jti": jti})))
                        })
                        .collect();
                    ((*c).to_owned(), tokens)
                })
                .collect()
        });
        let (_, tokens) = all
            .iter()
            .find(|(c, _)| c == client)
            .expect("a known client");
        tokens[which].clone()
    }

    struct Sent {
        owner: Option<u32>,
        callout: Callout,
    }

    struct World {
        e: Engine,
        own: bool,
        now: u64,
        pending: Vec<Sent>,
        /// Live requests: context -> (client, decided?).
        live: HashMap<u32, (&'static str, Option<Option<String>>)>,
        decided: usize,
    }

    impl World {
        fn new(own: bool) -> World {
            let mut c = config();
            for (id, client) in [("app-4", "client-4"), ("app-5", "client-5")] {
                c["applications"].as_array_mut().unwrap().push(json!(
                    {"id": id, "client_id": client, "auth_strategy_id": "s-cc", "scopes": ["cc-v1"]}));
            }
            let mut e = engine_with(c);
            if own {
                e.set_own_callouts();
            }
            World {
                e,
                own,
                now: T0,
                pending: Vec::new(),
                live: HashMap::new(),
                decided: 0,
            }
        }

        /// What a callback's progress does: decisions applied, callouts sent from it.
        fn take(&mut self, p: Progress, callback: Option<u32>, what: &str) {
            for (ctx, _, outcome) in p.settled {
                if self.own {
                    assert_eq!(
                        Some(ctx),
                        callback,
                        "{what}: request {ctx} decided from another's callback"
                    );
                }
                let entry = self
                    .live
                    .get_mut(&ctx)
                    .unwrap_or_else(|| panic!("{what}: a request that is gone ({ctx}) decided"));
                assert!(entry.1.is_none(), "{what}: request {ctx} decided twice");
                let app = match &outcome {
                    Outcome::Allow(a) => Some(
                        header(a, "x-application-id")
                            .map(str::to_owned)
                            .unwrap_or_default(),
                    ),
                    Outcome::Deny(d) => {
                        // The refusal that stands in for a request nothing would resume.
                        assert_ne!(
                            d.denial,
                            Denial::IdpUnavailable("no callout of its own to wait for"),
                            "{what}: request {ctx} had to wait without a callout of its own"
                        );
                        None
                    }
                };
                let client = entry.0;
                let expected = CLIENTS
                    .iter()
                    .find(|(c, _)| *c == client)
                    .and_then(|(_, a)| *a);
                match (&app, expected) {
                    (Some(got), Some(want)) => {
                        assert_eq!(got, want, "{what}: request {ctx} of {client}")
                    }
                    (Some(got), None) => panic!("{what}: unknown {client} allowed as {got}"),
                    (None, _) => {}
                }
                entry.1 = Some(app);
                self.decided += 1;
                // Answered: its stream ends, and with it the callouts it sent.
                self.end(ctx);
            }
            for callout in p.callouts {
                self.pending.push(Sent {
                    owner: callback,
                    callout,
                });
            }
        }

        /// A request's context goes (answered or hung up): Envoy and Kong drop its callouts.
        fn end(&mut self, ctx: u32) {
            self.e.forget(ctx);
            let (mine, rest): (Vec<Sent>, Vec<Sent>) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|s| s.owner == Some(ctx));
            self.pending = rest;
            for s in mine {
                if !self.pending.iter().any(|o| o.callout.id == s.callout.id) {
                    self.e.abandon(s.callout.id, self.now);
                }
            }
        }

        fn request(&mut self, ctx: u32, rng: &mut Rng) {
            let (client, _) = CLIENTS[rng.below(CLIENTS.len())];
            let auth = if rng.below(2) == 0 {
                format!("Bearer {}", token_of(client, rng.below(3)))
            } else {
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{client}:s3cret"));
                format!("Basic {pair}")
            };
            self.live.insert(ctx, (client, None));
            let step = request_on(
                &mut self.e,
                ctx,
                "cc",
                "/cc",
                &[("authorization", &auth)],
                self.now,
            );
            let p = match step {
                Step::Done(m, o) => Progress {
                    settled: vec![(ctx, m, o)],
                    ..Progress::default()
                },
                Step::Wait(c) => Progress {
                    callouts: c.into_iter().collect(),
                    ..Progress::default()
                },
            };
            self.take(p, Some(ctx), "on_request");
        }

        fn answer(&mut self, index: usize, fail: bool) {
            let sent = self.pending.remove(index);
            let response = if fail {
                CalloutResponse::default()
            } else {
                match sent.callout.path.as_str() {
                    "/.well-known/openid-configuration" => ok(&discovery_doc()),
                    "/jwks" => ok(&jwks()),
                    "/token" => {
                        let basic = sent
                            .callout
                            .headers
                            .iter()
                            .find(|(n, _)| n == "authorization")
                            .map(|(_, v)| v.trim_start_matches("Basic ").to_owned())
                            .unwrap_or_default();
                        let pair = base64::engine::general_purpose::STANDARD
                            .decode(basic)
                            .unwrap();
                        let client = String::from_utf8(pair)
                            .unwrap()
                            .split(':')
                            .next()
                            .unwrap()
                            .to_owned();
                        token_answer(&rs_token(&claims_with(
                            json!({"client_id": client, "sub": client}),
                        )))
                    }
                    other => panic!("unexpected callout to {other}"),
                }
            };
            let p = match sent.owner {
                Some(owner) => {
                    self.e
                        .on_request_callout_response(owner, sent.callout.id, response, self.now)
                }
                None => self
                    .e
                    .on_callout_response(sent.callout.id, response, self.now),
            };
            self.take(p, sent.owner, "answer");
        }

        fn tick(&mut self) {
            self.now += 200;
            let p = self.e.on_tick(self.now);
            if self.own {
                assert!(p.settled.is_empty(), "a tick decided under Kong's rules");
            }
            self.take(p, None, "tick");
        }
    }

    fn run(seed: u64, own: bool) {
        let mut rng = Rng(seed | 1);
        let mut w = World::new(own);
        let mut next_ctx = 10;
        for _ in 0..40 {
            w.now += rng.below(60) as u64;
            match rng.below(10) {
                0..=3 => {
                    w.request(next_ctx, &mut rng);
                    next_ctx += 1;
                }
                4..=6 if !w.pending.is_empty() => {
                    let i = rng.below(w.pending.len());
                    let fail = rng.below(8) == 0;
                    w.answer(i, fail);
                }
                8 if rng.below(4) == 0 => {
                    // The IdP is slow: time passes every bound before anything answers.
                    w.now += 8_000;
                    w.tick();
                }
                7 => {
                    let waiting: Vec<u32> = w
                        .live
                        .iter()
                        .filter(|(_, (_, d))| d.is_none())
                        .map(|(c, _)| *c)
                        .collect();
                    if !waiting.is_empty() {
                        let ctx = waiting[rng.below(waiting.len())];
                        w.live.remove(&ctx);
                        w.end(ctx);
                    }
                }
                _ => w.tick(),
            }
        }
        // The IdP answers everything, and time passes the bound: nobody is left waiting.
        for _ in 0..200 {
            if w.pending.is_empty() {
                w.tick();
                if w.pending.is_empty() {
                    break;
                }
            }
            if !w.pending.is_empty() {
                let i = rng.below(w.pending.len());
                w.answer(i, false);
            }
        }
        for _ in 0..40 {
            w.tick();
            while !w.pending.is_empty() {
                w.answer(0, false);
            }
        }
        let hanging: Vec<_> = w.live.iter().filter(|(_, (_, d))| d.is_none()).collect();
        assert!(
            hanging.is_empty(),
            "seed {seed} own {own}: left waiting {hanging:?}"
        );
        assert!(
            !w.e.waiting.keys().any(|k| w.live.contains_key(k)),
            "seed {seed}: still tracked"
        );
        assert!(w.decided > 0 || w.live.is_empty());
    }

    #[test]
    fn every_request_is_decided_once_with_its_own_identity_whatever_the_order() {
        for seed in 1..=150u64 {
            run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), false);
            run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), true);
        }
    }
}

mod remembered_from_the_idp {
    //! How long, and for whom, what the IdP answered is remembered.
    use super::methods::{basic, config, token_answer, warm_cc_with};
    use super::*;

    /// `config()` with every strategy of the test issuer at `cache_ttl` seconds.
    fn with_cache_ttl(mut c: Value, ttl: u64) -> Value {
        for policy in c["policies"].as_object_mut().unwrap().values_mut() {
            for s in policy["strategies"].as_array_mut().unwrap() {
                if let Some(o) = s["configs"].get_mut("openid-connect") {
                    o["cache_ttl"] = json!(ttl);
                }
            }
        }
        c
    }

    /// An introspection answer is trusted for at most `cache_ttl` (10 s here), also when
    /// every request that waited for it has gone by the time it comes (Envoy: the first
    /// waiter hung up, its callout was dropped, the tick re-sent it from the root; then the
    /// second hung up too).
    #[test]
    fn an_introspection_answer_nobody_waits_for_is_cached_no_longer_than_cache_ttl() {
        let mut e = engine_with(with_cache_ttl(config(), 10));
        let opaque = [("authorization", "Bearer opaque-1")];
        // Discovery and keys first (the introspection endpoint comes from discovery).
        let d = callout(&request_on(&mut e, 1, "cc", "/cc", &opaque, T0));
        let p = e.on_callout_response(d.id, ok(&discovery_doc()), T0);
        let jw = p.callouts[0].clone();
        let p = e.on_callout_response(jw.id, ok(&jwks()), T0);
        let c1 = p.callouts[0].clone();
        assert_eq!(c1.path, "/token/introspection");
        assert_eq!(
            request_on(&mut e, 2, "cc", "/cc", &opaque, T0 + 1),
            Step::Wait(None)
        );
        // Request 1 hangs up: its callout is dropped; the tick asks again from the root.
        e.forget(1);
        e.abandon(c1.id, T0 + 2);
        let p = e.on_tick(T0 + 200);
        let c2 = p.callouts[0].clone();
        // Request 2 hangs up too, before the answer.
        e.forget(2);
        let active = json!({"active": true, "client_id": "client-1", "scope": "orders:read",
                            "aud": AUD, "iss": ISS, "exp": NOW + 600});
        e.on_callout_response(c2.id, ok(&active.to_string()), T0 + 300);
        // 30 s later (cache_ttl is 10 s): the IdP must be asked again.
        let step = request_on(&mut e, 3, "cc", "/cc", &opaque, T0 + 30_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "answered from a 30 s old introspection with cache_ttl 10 s: {step:?}"
        );
    }

    /// The same for an exchanged token.
    #[test]
    fn an_exchanged_token_nobody_waits_for_is_cached_no_longer_than_cache_ttl() {
        let mut e = warm_cc_with(with_cache_ttl(config(), 10));
        let c1 = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        assert_eq!(
            basic(&mut e, 3, "Basic client-1:s3cret", T0 + 1),
            Step::Wait(None)
        );
        e.forget(2);
        e.abandon(c1.id, T0 + 2);
        let c2 = e.on_tick(T0 + 200).callouts[0].clone();
        e.forget(3);
        let token = rs_token(&claims_with(json!({"exp": NOW + 600})));
        e.on_callout_response(c2.id, token_answer(&token), T0 + 300);
        let step = basic(&mut e, 4, "Basic client-1:s3cret", T0 + 30_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "a 30 s old exchanged token used with cache_ttl 10 s: {step:?}"
        );
    }

    /// A VM adopts another VM's key set no longer than its own `cache_ttl`: a key dropped
    /// at the IdP stops verifying within that time here, whatever the publisher's setting.
    #[test]
    fn adopted_keys_are_refreshed_by_the_adopters_cache_ttl() {
        use crate::shared::MemoryStore;
        let store = Rc::new(MemoryStore::default());
        let vm = |ttl: u64| vm_sharing(&with_cache_ttl(config_value(), ttl), &store);
        // A trusts keys for a day; B for a minute.
        let (mut a, mut b) = (vm(86_400), vm(60));
        let c = a.on_tick(T0).callouts.remove(0);
        serve_keys(&mut a, &c, &jwks(), T0 + 10);
        assert!(b.on_tick(T0 + 200).callouts.is_empty(), "B adopts A's set");
        allowed(&bearer(&mut b, 1, &rs_token(&claims()), T0 + 300));
        // Two minutes on, B's keys are past its cache_ttl: B refreshes.
        let p = b.on_tick(T0 + 120_000);
        assert!(
            !p.callouts.is_empty(),
            "B still trusts the adopted set 120 s after it was fetched (cache_ttl 60 s)"
        );
    }

    /// A VM takes another VM's key set only where it would have taken the IdP's answer
    /// itself: a configuration whose `limits.max_response_bytes` refuses a key set as
    /// oversize does not adopt it from a configuration with a larger limit.
    #[test]
    fn a_key_set_too_large_for_the_adopters_limit_is_not_adopted() {
        use crate::shared::MemoryStore;
        let vm = |max_response_bytes: u64, store: &Rc<MemoryStore>| {
            let mut c = config_value();
            c["limits"] = json!({"max_response_bytes": max_response_bytes});
            vm_sharing(&c, store)
        };
        // A reads up to 256 KiB; B refuses anything over 2 KiB.
        let store = Rc::new(MemoryStore::default());
        let (mut a, mut b) = (vm(256 * 1024, &store), vm(2048, &store));
        let mut big = jwks_value();
        big["padding"] = json!("x".repeat(4096));
        let big = big.to_string();
        let c = a.on_tick(T0).callouts.remove(0);
        serve_keys(&mut a, &c, &big, T0 + 10);
        allowed(&bearer(&mut a, 1, &rs_token(&claims()), T0 + 20));
        // What B does with that answer from the IdP itself: refused, never cached.
        let mut alone = vm(2048, &Rc::new(MemoryStore::default()));
        let step = bearer(&mut alone, 2, &rs_token(&claims()), T0 + 30);
        let p = alone.on_callout_response(callout(&step).id, ok(&discovery_doc()), T0 + 40);
        let p = alone.on_callout_response(p.callouts[0].id, ok(&big), T0 + 50);
        assert!(
            matches!(p.settled.as_slice(), [(2, _, Outcome::Deny(d))] if d.reply.status == 503),
            "{:?}",
            p.settled
        );
        // B must not take it from A either.
        b.on_tick(T0 + 200);
        let step = bearer(&mut b, 3, &rs_token(&claims()), T0 + 300);
        assert!(
            !matches!(step, Step::Done(_, Outcome::Allow(_))),
            "a key set over this VM's max_response_bytes adopted from another VM: {step:?}"
        );
    }

    /// A key set another VM published of exactly the adopter's `limits.max_response_bytes`
    /// is adopted, as that VM would have read the same answer from the IdP.
    #[test]
    fn a_key_set_of_exactly_the_adopters_limit_is_adopted() {
        use crate::shared::MemoryStore;
        let store = Rc::new(MemoryStore::default());
        let keys = jwks();
        let limit = keys.len().max(1024);
        let vm = |max_response_bytes: usize| {
            let mut c = config_value();
            c["limits"] = json!({"max_response_bytes": max_response_bytes});
            vm_sharing(&c, &store)
        };
        let (mut a, mut b) = (vm(256 * 1024), vm(limit));
        let padded = format!("{keys}{}", " ".repeat(limit - keys.len()));
        let c = a.on_tick(T0).callouts.remove(0);
        serve_keys(&mut a, &c, &padded, T0 + 10);
        allowed(&bearer(&mut a, 1, &rs_token(&claims()), T0 + 20));
        b.on_tick(T0 + 200);
        allowed(&bearer(&mut b, 2, &rs_token(&claims()), T0 + 300));
    }

    /// The token endpoint hands two clients the same access token (a misbehaving IdP, or
    /// one that returns a fixed token): each request still goes upstream as the client
    /// that presented its credentials, never as the client the token was first seen for.
    #[test]
    fn one_token_for_two_clients_keeps_each_clients_identity() {
        let mut c = config();
        c["applications"].as_array_mut().unwrap().push(json!({
            "id": "app-b", "client_id": "client-b", "auth_strategy_id": "s-cc",
            "scopes": ["cc-v1"], "organization_id": "org-b"}));
        let mut e = warm_cc_with(c);
        let token = rs_token(&claims_with(json!({"exp": NOW + 600})));
        let ca = callout(&basic(&mut e, 2, "Basic client-1:s3cret", T0));
        let p = e.on_callout_response(ca.id, token_answer(&token), T0 + 10);
        let [(2, _, Outcome::Allow(a))] = p.settled.as_slice() else {
            panic!("{:?}", p.settled)
        };
        assert_eq!(header(a, "x-application-id"), Some("app-cc"));
        let cb = callout(&basic(&mut e, 3, "Basic client-b:other-secret", T0 + 20));
        let p = e.on_callout_response(cb.id, token_answer(&token), T0 + 30);
        let [(3, _, Outcome::Allow(b))] = p.settled.as_slice() else {
            panic!("{:?}", p.settled)
        };
        assert_eq!(
            (
                header(b, "x-application-id"),
                header(b, "x-credential-identifier")
            ),
            (Some("app-b"), Some("client-b")),
            "client-b's request forwarded with client-1's identity"
        );
    }

    /// An IdP that issues only opaque tokens may publish an empty key set: introspection,
    /// which needs only the discovery document, still works.
    #[test]
    fn introspection_needs_no_signing_key() {
        let mut c = config();
        c["policies"]["cc-v1"]["strategies"][1]["configs"]["openid-connect"]["auth_methods"] =
            json!(["introspection"]);
        let mut e = engine_with(c);
        let opaque = [("authorization", "Bearer opaque-1")];
        let d = callout(&request_on(&mut e, 1, "cc", "/cc", &opaque, T0));
        let p = e.on_callout_response(d.id, ok(&discovery_doc()), T0);
        let jw = p.callouts[0].clone();
        let p = e.on_callout_response(jw.id, ok(r#"{"keys":[]}"#), T0);
        assert!(
            matches!(p.callouts.as_slice(), [c] if c.path == "/token/introspection"),
            "settled {:?}",
            p.settled
        );
    }

    /// Without a registry, one client may use two routes whose client-credentials
    /// strategies (same issuer) request different scopes: a token exchanged for one
    /// route's scopes is not the other route's token.
    #[test]
    fn an_exchange_is_for_the_scopes_its_strategy_requests() {
        let strategy = |id: &str, scope: &str| {
            json!({"id": id, "strategy_type": "openid_connect",
                "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                    "scopes": [scope], "auth_methods": ["client_credentials"],
                    "scopes_required": [scope], "timeout": 2000, "cache_ttl": 300}}})
        };
        let c = json!({
            "policies": {
                "read": {"strategies": [strategy("s-read", "orders:read")]},
                "admin": {"strategies": [strategy("s-admin", "admin")]},
            },
            "routes": {"read": "read", "admin": "admin"},
            "upstreams": {"idp.example.com": "idp"},
        });
        let mut e = engine_with(c);
        let basic_on = |e: &mut Engine, ctx: u32, route: &str, now: u64| {
            request_on(
                e,
                ctx,
                route,
                "/",
                &[("authorization", "Basic client-1:s3cret")],
                now,
            )
        };
        let d = callout(&basic_on(&mut e, 1, "admin", T0));
        let p = e.on_callout_response(d.id, ok(&discovery_doc()), T0);
        let jw = p.callouts[0].clone();
        let p = e.on_callout_response(jw.id, ok(&jwks()), T0);
        let ex = p.callouts[0].clone();
        assert!(String::from_utf8(ex.body.clone().unwrap())
            .unwrap()
            .ends_with("scope=admin"));
        let admin = rs_token(&claims_with(json!({"scope": "admin", "exp": NOW + 600})));
        let p = e.on_callout_response(ex.id, token_answer(&admin), T0 + 10);
        assert!(
            matches!(p.settled.as_slice(), [(1, _, Outcome::Allow(_))]),
            "{:?}",
            p.settled
        );
        // The same client on the read route: its strategy asks for orders:read.
        let step = basic_on(&mut e, 2, "read", T0 + 20);
        match &step {
            Step::Wait(Some(c)) => assert!(String::from_utf8(c.body.clone().unwrap())
                .unwrap()
                .ends_with("scope=orders%3Aread")),
            other => panic!("the admin route's token reused on the read route: {other:?}"),
        }
    }
}

mod which_idp_sees_a_token {
    //! Which identity provider a token, or a client's secret, is sent to; and whose answer
    //! serves whom.
    use super::*;

    const OTHER: &str = "https://other.example.com";

    /// An introspection strategy of `issuer` (JWTs only with `jwts`), endpoint configured.
    fn introspecting(id: &str, issuer: &str, endpoint: &str, jwts: bool) -> Value {
        json!({"id": id, "strategy_type": "openid_connect",
            "configs": {"openid-connect": {"issuer": issuer, "credential_claim": ["client_id"],
                "scopes": [], "auth_methods": ["introspection"], "introspect_jwt_tokens": jwts,
                "introspection_endpoint": endpoint,
                "client_id": "rs", "client_secret": "x", "timeout": 2000, "cache_ttl": 300}}})
    }

    /// The orders route with an introspection strategy of OTHER first, then one of ISS;
    /// client-1's application is ISS's strategy.
    fn two_introspecting_idps(jwts: bool) -> Value {
        let mut c = config_value();
        c["policies"]["orders-v1"]["strategies"] = json!([
            introspecting(
                "s-other",
                OTHER,
                "https://other.example.com/introspect",
                jwts
            ),
            introspecting("s-iss", ISS, "https://idp.example.com/introspect", jwts),
        ]);
        c["applications"] = json!([
            {"id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-iss", "scopes": ["orders-v1"]}
        ]);
        c
    }

    /// A JWT is introspected only by a strategy that accepts its `iss`: without
    /// `introspect_jwt_tokens` no strategy takes it by issuer, and the first that introspects
    /// is not it when it belongs to another IdP.
    #[test]
    fn a_jwt_of_one_idp_is_never_introspected_at_another() {
        let mut e = engine_with(two_introspecting_idps(false));
        let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
        if let Step::Wait(Some(co)) = &step {
            assert_ne!(
                co.authority, "other.example.com",
                "ISS's JWT posted to OTHER's introspection endpoint: {co:?}"
            );
        }
    }

    /// The same for a JWT the filter does not take (an algorithm, `typ`, `crit` or `kid` it
    /// refuses): it still names its issuer in its payload, and is not an opaque token that
    /// any introspection endpoint may be shown. ISS's token must not reach OTHER's endpoint.
    #[test]
    fn a_jwt_the_filter_refuses_to_parse_is_not_introspected_at_another_idp() {
        let mut e = engine_with(two_introspecting_idps(false));
        let long_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(300));
        let headers = [
            r#"{"alg":"ES512","kid":"es-9","typ":"JWT"}"#,
            r#"{"alg":"RS256","kid":"rs-1","typ":"application/jwt"}"#,
            r#"{"alg":"RS256","kid":"rs-1","crit":["exp"]}"#,
            long_kid.as_str(),
        ];
        for (ctx, header) in (1..).zip(headers) {
            let token = hs_with_header(header);
            assert!(ParsedToken::parse(&token, 32).is_err(), "{header}");
            let step = bearer(&mut e, ctx, &token, T0);
            assert!(
                !matches!(&step, Step::Wait(Some(co)) if co.authority == "other.example.com"),
                "ISS's JWT ({header}) posted to OTHER's introspection endpoint: {step:?}"
            );
        }
    }

    /// The same for a JWT whose `iss` no strategy on the route accepts.
    #[test]
    fn a_jwt_of_an_unknown_issuer_is_not_introspected() {
        let mut c = config_value();
        c["policies"]["orders-v1"]["strategies"] = json!([introspecting(
            "s-other",
            OTHER,
            "https://other.example.com/introspect",
            true
        )]);
        c["applications"] = json!([
            {"id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-other", "scopes": ["orders-v1"]}
        ]);
        let mut e = engine_with(c);
        let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
        assert!(
            !matches!(&step, Step::Wait(Some(co)) if co.authority == "other.example.com"),
            "a JWT of {ISS} posted to {OTHER}'s introspection endpoint: {step:?}"
        );
    }

    /// Two strategies (of two issuers, so two cache_ttls) introspect at one endpoint, on two
    /// routes: an answer cached for A's hour does not serve B, whose cache_ttl is 30 s, a
    /// minute later (a revoked token would stay accepted on B's route for up to an hour).
    #[test]
    fn an_introspection_answer_is_not_trusted_past_the_readers_cache_ttl() {
        let endpoint = "https://idp.example.com/introspect";
        let strategy = |id: &str, issuer: &str, ttl: u64| {
            let mut s = introspecting(id, issuer, endpoint, false);
            s["configs"]["openid-connect"]["cache_ttl"] = json!(ttl);
            s
        };
        let c = json!({
            "policies": {
                "long": {"strategies": [strategy("s-long", ISS, 3600)]},
                "short": {"strategies": [strategy("s-short", OTHER, 30)]},
            },
            "routes": {"long": "long", "short": "short"},
            "upstreams": {"idp.example.com": "idp"},
        });
        let mut e = engine_with(c);
        let opaque = [("authorization", "Bearer opaque-1")];
        let co = callout(&request_on(&mut e, 1, "long", "/", &opaque, T0));
        let active = json!({"active": true, "client_id": "client-1", "exp": NOW + 7200});
        let p = e.on_callout_response(co.id, ok(&active.to_string()), T0 + 10);
        assert!(
            matches!(p.settled.as_slice(), [(1, _, Outcome::Allow(_))]),
            "{p:?}"
        );
        let step = request_on(&mut e, 2, "short", "/", &opaque, T0 + 60_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "a 60 s old introspection answer used by a strategy with cache_ttl 30 s: {step:?}"
        );
    }

    /// After a failed key fetch the expired discovery document is kept (for introspection),
    /// but a bearer token neither waits on it nor uses its jwks_uri without rediscovery:
    /// 503 at once, then (after the backoff) discovery again.
    #[test]
    fn a_kept_discovery_neither_holds_nor_loops_a_bearer_request() {
        let mut e = engine();
        let token = rs_token(&claims());
        let d = callout(&bearer(&mut e, 1, &token, T0));
        let p = e.on_callout_response(d.id, ok(&discovery_doc()), T0);
        let jw = p.callouts[0].clone();
        let p = e.on_callout_response(jw.id, ok(r#"{"keys":[]}"#), T0 + 1);
        assert!(
            matches!(p.settled.as_slice(), [(1, _, Outcome::Deny(d))] if d.denial.status() == 503),
            "{p:?}"
        );
        assert!(p.callouts.is_empty());
        assert_eq!(denied(&bearer(&mut e, 2, &token, T0 + 500)).status(), 503);
        let again = callout(&bearer(&mut e, 3, &token, T0 + 1_500));
        assert_eq!(again.path, "/.well-known/openid-configuration");
    }

    /// Client credentials need the issuer's keys to verify what they are exchanged for: with
    /// no key set (the fetch failed, the IdP in backoff), the kept discovery document's token
    /// endpoint does not get the client's secret for an answer that would be refused anyway.
    #[test]
    fn no_exchange_while_the_issuer_has_no_keys() {
        let mut e = engine_with(super::methods::config());
        let d = callout(&super::methods::basic(
            &mut e,
            1,
            "Basic client-1:s3cret",
            T0,
        ));
        let p = e.on_callout_response(d.id, ok(&discovery_doc()), T0);
        let jw = p.callouts[0].clone();
        let p = e.on_callout_response(jw.id, ok(r#"{"keys":[]}"#), T0 + 1);
        assert!(
            p.callouts.iter().all(|c| c.path != "/token"),
            "an exchange with no key to verify its answer: {:?}",
            p.callouts
        );
    }
}

mod clock_steps {
    //! The host's clock is wall-clock time (Envoy's `proxy_get_current_time_nanoseconds`):
    //! NTP may step it back. What was timed by the clock before the step must not stretch
    //! by the step's size.
    use super::*;

    const HOUR: u64 = 3_600_000;

    /// An engine whose keys were fetched at T0 + HOUR, before the clock is stepped back an
    /// hour.
    fn keys_fetched_before_a_step() -> Engine {
        let mut e = engine();
        let c = e.on_tick(T0 + HOUR).callouts.remove(0);
        serve_keys(&mut e, &c, &jwks(), T0 + HOUR);
        e
    }

    /// A failed fetch backs off at most 10 s: a clock stepped back an hour right after it
    /// must not keep every VM from fetching (and answering 503) for that hour.
    #[test]
    fn a_clock_stepped_back_does_not_stretch_the_backoff() {
        let mut e = engine();
        let before_step = T0 + HOUR;
        let c = e.on_tick(before_step).callouts.remove(0);
        e.on_callout_response(
            c.id,
            CalloutResponse {
                status: Some(503),
                ..CalloutResponse::default()
            },
            before_step,
        );
        // The clock is stepped back an hour; 10 s later (the longest backoff) a request
        // comes.
        let step = bearer(&mut e, 1, &rs_token(&claims()), T0 + 10_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "refused without a fetch, an hour after the IdP failed once: {step:?}"
        );
    }

    /// Keys are trusted for cache_ttl (300 s here), then refreshed: a key the IdP dropped
    /// stops verifying by then. A clock stepped back an hour after a fetch must not keep
    /// them an hour longer.
    #[test]
    fn a_clock_stepped_back_does_not_stretch_the_keys_lifetime() {
        let mut e = keys_fetched_before_a_step();
        // Stepped back an hour; cache_ttl (300 s) later the keys are due.
        let p = e.on_tick(T0 + 300_000);
        assert_eq!(
            p.callouts.len(),
            1,
            "keys fetched 300 s ago (cache_ttl 300 s) not refreshed"
        );
    }

    /// A fetch holds the shared lease for at most twice its timeout and a second (5 s
    /// here): a clock stepped back an hour while a lease was held by a VM that never
    /// releases it (its root context replaced by a new configuration, its callout cancelled
    /// unanswered) must not keep every other VM from fetching for that hour.
    #[test]
    fn a_clock_stepped_back_does_not_stretch_a_lost_holders_lease() {
        let store = Rc::new(crate::shared::MemoryStore::default());
        let vm = || vm_sharing(&config_value(), &store);
        let mut lost = vm();
        let before_step = T0 + HOUR;
        assert_eq!(
            lost.on_tick(before_step).callouts.len(),
            1,
            "takes the lease"
        );
        drop(lost);
        // Stepped back an hour; a minute later another VM ticks.
        let mut b = vm();
        let p = b.on_tick(T0 + 60_000);
        assert_eq!(
            p.callouts.len(),
            1,
            "no VM fetches a minute after a lease of 5 s was taken"
        );
    }

    /// An engine on the client-credentials config whose keys were fetched at `at`.
    fn cc_keys_fetched_at(at: u64) -> Engine {
        let mut e = engine_with(super::methods::config());
        let token = format!(
            "Bearer {}",
            rs_token(&claims_with(json!({"exp": NOW + 7_200})))
        );
        let step = request_on(&mut e, 1, "cc", "/cc", &[("authorization", &token)], at);
        assert_eq!(serve_keys(&mut e, &callout(&step), &jwks(), at).len(), 1);
        e
    }

    /// An introspection answer is trusted for cache_ttl (300 s here): a token revoked at the
    /// IdP is refused by then. A clock stepped back an hour after the answer must not keep
    /// it an hour longer.
    #[test]
    fn a_clock_stepped_back_does_not_stretch_a_cached_introspection() {
        let before_step = T0 + HOUR;
        let mut e = cc_keys_fetched_at(before_step);
        let opaque = [("authorization", "Bearer opaque-1")];
        let c = callout(&request_on(&mut e, 2, "cc", "/cc", &opaque, before_step));
        let active = json!({"active": true, "client_id": "client-1", "scope": "orders:read",
                            "aud": AUD, "iss": ISS, "exp": NOW + 7_200});
        let p = e.on_callout_response(c.id, ok(&active.to_string()), before_step);
        assert!(matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]));
        // Stepped back an hour; 400 s later (past cache_ttl) the same token.
        let step = request_on(&mut e, 3, "cc", "/cc", &opaque, T0 + 400_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "answered from an introspection 400 s old (cache_ttl 300 s): {step:?}"
        );
    }

    /// The same for a token exchanged for client credentials (cache_ttl 300 s).
    #[test]
    fn a_clock_stepped_back_does_not_stretch_a_cached_exchange() {
        use super::methods::{basic, token_answer};
        let before_step = T0 + HOUR;
        let mut e = cc_keys_fetched_at(before_step);
        let c = callout(&basic(&mut e, 2, "Basic client-1:s3cret", before_step));
        let token = rs_token(&claims_with(json!({"exp": NOW + 7_200})));
        let p = e.on_callout_response(c.id, token_answer(&token), before_step);
        assert!(matches!(p.settled.as_slice(), [(2, _, Outcome::Allow(_))]));
        // Stepped back an hour; 400 s later (past cache_ttl) the same credentials.
        let step = basic(&mut e, 3, "Basic client-1:s3cret", T0 + 400_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "a token exchanged 400 s ago (cache_ttl 300 s) used without asking the IdP: {step:?}"
        );
    }

    /// An unknown `kid` fetches once per rediscovery_lifetime (30 s): a clock stepped back an
    /// hour must not refuse a rotated key for an hour.
    #[test]
    fn a_clock_stepped_back_does_not_stretch_the_unknown_kid_cooldown() {
        let mut e = keys_fetched_before_a_step();
        let before_step = T0 + HOUR;
        let unknown = unknown_kid_token(&claims_with(json!({"exp": NOW + 7_200})));
        let c = callout(&bearer(&mut e, 1, &unknown, before_step + 1));
        e.on_callout_response(c.id, ok(&jwks()), before_step + 1);
        // Stepped back an hour; 31 s later another new kid.
        let unknown = hs_with_header(r#"{"alg":"HS256","kid":"nope"}"#);
        let step = bearer(&mut e, 2, &unknown, T0 + 31_000);
        assert!(
            matches!(step, Step::Wait(Some(_))),
            "a new kid refused without a fetch, 31 s after the last forced fetch: {step:?}"
        );
    }
}

/// The engine's work on a stream of new RS256 tokens, natively, for a profiler: the bench's
/// policy (key-auth, then OpenID Connect, no upstream claim headers), each token with its own
/// `jti` and signature, 20,000 of them (twice the verified-token cache, so that half the
/// inserts evict), the signature verdict given by the host (a backend that says yes, as
/// Envoy's `verify_signature` would). Only `profile_new_tokens_loop` is the engine's work:
///
/// ```text
/// CARGO_PROFILE_RELEASE_STRIP=false cargo test --release --lib --no-run
/// valgrind --tool=callgrind --dump-instr=yes --toggle-collect='*profile_new_tokens_loop*' \
///     target/release/deps/app_auth_filter-HASH profile_new_tokens --ignored
/// ```
#[test]
#[ignore = "a profiling harness: run by hand (see above)"]
fn profile_new_tokens() {
    let mut config = config_value();
    let strategies = config["policies"]["orders-v1"]["strategies"]
        .as_array_mut()
        .unwrap();
    strategies.reverse();
    let oidc = strategies[1]["configs"]["openid-connect"]
        .as_object_mut()
        .unwrap();
    oidc.remove("upstream_headers_claims");
    oidc.remove("upstream_headers_names");
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut e = engine_with(config);
    let step = bearer(&mut e, 1, &rs_token(&claims()), T0);
    assert_eq!(serve_keys(&mut e, &callout(&step), &jwks(), T0).len(), 1);
    e.set_signature_backend(Rc::new(HostVerdict(true)));

    let model = rs_token(&claims());
    let [header, payload, signature]: [&str; 3] =
        model.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let end = signature.len();
    let values: Vec<String> = (0..20_000u64)
        .map(|i| {
            payload["jti"] = json!(format!("jti-{i:012}"));
            // Tokens differ in their tails, as real signatures do (the cache hashes the tail).
            signature[end - 8..].copy_from_slice(&i.to_be_bytes());
            format!(
                "Bearer {header}.{}.{}",
                URL_SAFE_NO_PAD.encode(payload.to_string()),
                URL_SAFE_NO_PAD.encode(&signature)
            )
        })
        .collect();
    assert_eq!(profile_new_tokens_loop(&mut e, &values), values.len());
}

/// The requests of [`profile_new_tokens`]; how many were allowed.
#[inline(never)]
fn profile_new_tokens_loop(e: &mut Engine, authorizations: &[String]) -> usize {
    let mut allowed = 0;
    for (i, value) in authorizations.iter().enumerate() {
        let headers = [
            (":authority", "api.example.com"),
            (":path", "/orders/1"),
            (":method", "GET"),
            ("user-agent", "wrk"),
            ("x-request-id", "6d3e1b8e-1f5c-4b8a-9a4e-0c2f5d7e8a91"),
            ("authorization", value.as_str()),
        ];
        let step = request_on(e, 10 + i as u32, ROUTE, "/orders/1", &headers, T0);
        allowed += usize::from(matches!(step, Step::Done(_, Outcome::Allow(_))));
    }
    allowed
}

/// The fast path of `Engine::on_request` (`parsed_bearer`) takes a bearer token that
/// `cache_candidate` offers and that parses as a JWT without `credential::extract`: it must be
/// exactly what `extract` reads from the same request, for any Authorization value (schemes in any case, spaces,
/// padding, stray bytes anywhere, lengths around the limit).
#[test]
fn a_jwt_the_fast_path_parses_is_the_bearer_token_extract_reads() {
    use crate::credential::{self, Credential, Source};
    let model = rs_token(&claims());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/~ ,\t";
    let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
    let (mut parsed, mut not) = (0, 0);
    for round in 0..20_000u64 {
        let mut token = model.clone().into_bytes();
        // Up to three bytes changed, mostly to base64url characters (the changed token
        // often still parses: a signature's bytes are not checked here).
        for _ in 0..next() % 4 {
            let at = (next() % token.len() as u64) as usize;
            let by =
                crate::testing::mostly(&mut next, 1, 8, |r| alphabet[r as usize % alphabet.len()]);
            token[at] = by[0];
        }
        let scheme: &[u8] = [
            &b"Bearer "[..],
            b"bearer  ",
            b"BEARER ",
            b"Bearer\t",
            b"Basic ",
        ][(round % 5) as usize];
        let mut value = scheme.to_vec();
        value.extend_from_slice(&token);
        if round % 7 == 0 {
            value.extend_from_slice(b" ");
        }
        if round % 11 == 0 {
            value.extend_from_slice(b"==");
        }
        // The limit falls below, at and above the token's length.
        let max = model.len() - 2 + (round % 5) as usize;
        let headers = [(&b"authorization"[..], value.as_slice())];
        let limits = Limits {
            max_token_bytes: max,
            ..Limits::default()
        };
        let candidate = credential::cache_candidate(&headers, "/orders/1", max);
        let fast = parsed_bearer(candidate, &limits, &HeaderMemo::default());
        let extracted = credential::extract(&headers, "/orders/1", max);
        match fast {
            Some((t, Ok(_))) => {
                parsed += 1;
                let token = String::from_utf8(t.to_vec()).expect("a JWT that parses is ASCII");
                assert_eq!(
                    extracted,
                    Ok(Some(Credential::Bearer {
                        token,
                        source: Source::Header
                    })),
                    "{:?}",
                    String::from_utf8_lossy(&value)
                );
            }
            _ => not += 1,
        }
    }
    // Both sides were exercised, many times.
    assert!(parsed > 1_000 && not > 10_000, "{parsed} {not}");
}
