//! Bearer JWTs through a real Envoy, against the real oidc-provider IdP fixture, with
//! applications registered by dynamic client registration.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn filter_config(issuer: &str, idp_port: u16, apps: Value) -> Value {
    json!({
        "policies": {
            "orders-v1": {
                "scope": "orders-v1",
                "strategies": [{
                    "id": "s-oidc", "name": "fixture", "display_name": "Fixture IdP",
                    "strategy_type": "openid_connect",
                    "configs": {"openid-connect": {
                        "issuer": issuer, "credential_claim": ["client_id"], "scopes": ["orders:read"],
                        "auth_methods": ["bearer"], "scopes_required": ["orders:read"],
                        "audience_required": ["https://api.example.com"], "leeway": 0, "timeout": 3000}}
                }],
                "hide_credentials": false
            }
        },
        "routes": {"orders": "orders-v1"},
        "applications": apps,
        "upstreams": {format!("127.0.0.1:{idp_port}"): "idp"}
    })
}

fn app(id: &str, client_id: &str, scopes: &[&str]) -> Value {
    json!({"id": id, "client_id": client_id, "auth_strategy_id": "s-oidc", "scopes": scopes,
           "developer_id": format!("dev-{id}"), "portal_id": "portal-1", "organization_id": "org-1"})
}

fn client(idp: &Idp, extra: Value) -> (String, String) {
    let mut meta = json!({"client_name": "e2e", "grant_types": ["client_credentials"], "response_types": [],
        "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic", "scope": "orders:read orders:write"});
    if let (Some(m), Value::Object(extra)) = (meta.as_object_mut(), extra) {
        m.extend(extra);
    }
    idp.register(meta)
}

fn assert_challenge(r: &Response, error: Option<&str>) {
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no challenge: {r:?}"));
    assert!(challenge.starts_with("Bearer realm=\""), "{challenge}");
    match error {
        Some(e) => assert!(challenge.contains(&format!("error=\"{e}\"")), "{challenge}"),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
}

#[test]
fn bearer_tokens_end_to_end() {
    let dir = scratch();
    let idp = Idp::start(&dir);
    let upstream = Upstream::start(&dir);

    let approved = client(&idp, json!({}));
    let approved_es = client(&idp, json!({"access_token_alg": "ES256"}));
    let approved_ps = client(&idp, json!({"access_token_alg": "PS256"}));
    let not_approved = client(&idp, json!({}));
    let unregistered = client(&idp, json!({}));
    let short_lived = client(&idp, json!({"access_token_ttl": 1}));
    let apps = json!([
        app("app-1", &approved.0, &["orders-v1"]),
        app("app-es", &approved_es.0, &["orders-v1"]),
        app("app-ps", &approved_ps.0, &["orders-v1"]),
        app("app-billing", &not_approved.0, &["billing-v1"]),
        app("app-short", &short_lived.0, &["orders-v1"]),
    ]);
    let envoy = Envoy::start(
        &dir,
        &filter_config(&idp.issuer(), idp.port, apps),
        upstream.port,
        idp.port,
        2,
    );

    // Allowed, with the application's identity forwarded and spoofed copies replaced.
    let token = idp.token(&approved, Some("orders:read"));
    let auth = format!("Bearer {token}");
    let r = envoy.get(
        "/orders/42",
        &[
            ("authorization", auth.as_bytes()),
            ("x-application-id", b"spoofed"),
            ("x-credential-identifier", b"spoofed"),
            // The same names with `_`, which many upstreams read as `-` (Envoy forwards
            // them by default).
            ("x_application_portal_id", b"spoofed"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &r.json()["headers"];
    assert_eq!(seen.get("x_application_portal_id"), None, "{seen}");
    assert_eq!(seen["x-application-id"], "app-1");
    assert_eq!(seen["x-application-developer-id"], "dev-app-1");
    assert_eq!(seen["x-application-portal-id"], "portal-1");
    assert_eq!(seen["x-application-org-id"], "org-1");
    assert_eq!(seen["x-credential-identifier"], approved.0.as_str());
    assert_eq!(
        seen["authorization"],
        auth.as_str(),
        "kept: hide_credentials is off"
    );
    // Again, answered at once (the token remembered): spoofed spellings go too.
    let r = envoy.get(
        "/orders/43",
        &[
            ("authorization", auth.as_bytes()),
            ("X_Application_Id", b"spoofed"),
            ("x_application_org_id", b"spoofed"),
            ("x_credential-identifier", b"spoofed"),
            ("x_other_header", b"kept"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-application-id"], "app-1");
    assert_eq!(seen["x-application-org-id"], "org-1");
    for alias in [
        "x_application_id",
        "x_application_org_id",
        "x_credential-identifier",
    ] {
        assert_eq!(seen.get(alias), None, "{alias}: {seen}");
    }
    assert_eq!(seen["x_other_header"], "kept");

    // ES256 and PS256 tokens too.
    let r = envoy.bearer("/orders/1", &idp.token(&approved_es, Some("orders:read")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-application-id"], "app-es");
    let ps_token = idp.token(&approved_ps, Some("orders:read"));
    assert_eq!(jose_header(&ps_token)["alg"], "PS256");
    let r = envoy.bearer("/orders/1", &ps_token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-application-id"], "app-ps");
    // The same token with its signature damaged.
    let mut damaged = ps_token.clone().into_bytes();
    let at = damaged.len() - 10;
    damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
    let r = envoy.bearer("/orders/2", std::str::from_utf8(&damaged).unwrap());
    assert_eq!(r.status, 401, "{}", r.text());

    let before = upstream.count();

    // No token.
    let r = envoy.get("/orders/1", &[]);
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"message": "Unauthorized"}))
    );
    assert_challenge(&r, None);

    // Registered at the IdP, unknown to the portal.
    let r = envoy.bearer("/orders/1", &idp.token(&unregistered, Some("orders:read")));
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"message": "Unauthorized"}))
    );

    // Known, but not approved for this API.
    let r = envoy.bearer("/orders/1", &idp.token(&not_approved, Some("orders:read")));
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"message": "You cannot consume this service"}))
    );

    // Valid token without the required scope.
    let r = envoy.bearer("/orders/1", &idp.token(&approved, Some("orders:write")));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_challenge(&r, Some("insufficient_scope"));

    // Wrong audience (resource indicator for another API).
    let r = {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", approved.0, approved.1));
        let auth = format!("Basic {basic}");
        let t = http(idp.port, "POST", "/token", &[("authorization", auth.as_bytes()), ("content-type", b"application/x-www-form-urlencoded")],
            b"grant_type=client_credentials&scope=orders:read&resource=https%3A%2F%2Fother.example.com");
        assert_eq!(t.status, 200, "{}", t.text());
        envoy.bearer("/orders/1", t.json()["access_token"].as_str().unwrap())
    };
    assert_eq!(r.status, 401);
    assert_challenge(&r, Some("invalid_token"));
    assert!(r.header("www-authenticate").unwrap().contains("audience"));

    // Expired.
    let short = idp.token(&short_lived, Some("orders:read"));
    std::thread::sleep(Duration::from_millis(2_100));
    let r = envoy.bearer("/orders/1", &short);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error_description=\"token has expired\""));

    // Tampered signature.
    let mut forged = token.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    assert_eq!(envoy.bearer("/orders/1", &forged).status, 401);

    // Two Authorization headers (Envoy joins them with a comma), and token in header + query.
    let r = envoy.get(
        "/orders/1",
        &[
            ("authorization", auth.as_bytes()),
            ("authorization", auth.as_bytes()),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_challenge(&r, Some("invalid_request"));
    let r = envoy.get(
        &format!("/orders/1?access_token={token}"),
        &[("authorization", auth.as_bytes())],
    );
    assert_eq!(r.status, 400);

    // Bytes that are not UTF-8 in a header: a clean 400, and the VM keeps serving.
    let r = envoy.get("/orders/1", &[("authorization", b"Bearer \xe9\xe9")]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = envoy.get(
        "/orders/1",
        &[("x-other", b"caf\xe9"), ("authorization", auth.as_bytes())],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A route without a policy is closed.
    assert_eq!(envoy.bearer("/elsewhere", &token).status, 403);

    // None of the denied requests reached the upstream (the one allowed above did).
    assert_eq!(upstream.count(), before + 1);

    // Query-string tokens work too.
    let r = envoy.get(&format!("/orders/1?access_token={token}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());

    // Discovery and keys were fetched once for the whole proxy (main thread + 2 workers),
    // not per worker and not per request: one VM held the lease, the others adopted its
    // keys from shared data.
    let stats = idp.stats();
    assert_eq!(stats["jwks"], 1, "{stats}");
    assert_eq!(stats["discovery"], 1, "{stats}");

    // Counters in Envoy's own stats, summed over the workers.
    // Each worker's counters reach the proxy's stats at its next tick (200 ms): wait until
    // every worker's have.
    let expected: [(&str, u64); 7] = [
        ("app_auth_allowed_bearer", 6),
        ("app_auth_denied_missing_credential", 1),
        ("app_auth_denied_unknown_application", 1),
        ("app_auth_denied_not_approved", 1),
        ("app_auth_denied_insufficient_scope", 1),
        ("app_auth_denied_bad_request", 3),
        ("app_auth_denied_no_policy", 1),
    ];
    let value = |prometheus: &str, name: &str| -> Option<u64> {
        prometheus
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split(['{', ' ']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let mut prometheus = String::new();
    let flushed = eventually(Duration::from_secs(5), || {
        prometheus = http(envoy.admin_port, "GET", "/stats/prometheus", &[], b"").text();
        expected
            .iter()
            .all(|(name, n)| value(&prometheus, name) == Some(*n))
    });
    let ours: Vec<&str> = prometheus
        .lines()
        .filter(|l| l.contains("app_auth") && !l.starts_with('#'))
        .collect();
    assert!(
        flushed,
        "counters not as expected {expected:?}:\n{}",
        ours.join("\n")
    );
    let metric = |name: &str| -> u64 {
        value(&prometheus, name)
            .unwrap_or_else(|| panic!("{name} not in /stats/prometheus:\n{}", ours.join("\n")))
    };
    assert!(metric("app_auth_denied_invalid_token") >= 3);
    assert_eq!(metric("app_auth_callout_jwks_success"), 1);
    assert!(metric("app_auth_cache_verified_token_hit") >= 1);
    assert!(
        prometheus.contains("app_auth_callout_latency_ms_bucket"),
        "latency histogram"
    );
    // Envoy verifies RS256 and ES256 natively (BoringSSL through verify_signature): every
    // signature check of this run went there but the two PS256 ones, which its
    // verify_signature cannot do (PKCS1-v1_5 only): those were verified in Wasm.
    let checked = metric("app_auth_signature_checked");
    assert!(checked >= 5, "{checked}");
    assert_eq!(metric("app_auth_signature_native"), checked - 2);

    let failures = envoy.vm_failures();
    assert!(
        failures.is_empty(),
        "VM failures in Envoy's log:\n{}",
        failures.join("\n")
    );
}

#[test]
fn idp_down_at_start_is_503_never_allowed() {
    let dir = scratch();
    let upstream = Upstream::start(&dir);
    // Nothing listens on this port: discovery cannot succeed.
    let dead_port = free_port();
    let issuer = format!("http://127.0.0.1:{dead_port}");
    let config = filter_config(
        &issuer,
        dead_port,
        json!([app("app-1", "client-1", &["orders-v1"])]),
    );
    let envoy = Envoy::start(&dir, &config, upstream.port, dead_port, 1);

    // A well-formed token from that issuer (signature cannot be checked: no keys).
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": issuer, "aud": "https://api.example.com", "exp": now + 600, "iat": now,
        "client_id": "client-1", "scope": "orders:read"});
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"rs-1","typ":"at+jwt"}"#),
        b64(&claims.to_string()),
        b64("sig")
    );
    for _ in 0..3 {
        let r = envoy.bearer("/orders/1", &token);
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json(), json!({"message": "Service Unavailable"}));
    }
    assert_eq!(upstream.count(), 0);

    // The IdP comes up on that port: service resumes after the backoff, with real tokens.
    let idp = Idp::start_on(&dir, dead_port);
    // The configured client_id is "client-1", so a real token is refused as unknown (401),
    // which proves keys were fetched and verification ran.
    let real = idp.token(&client(&idp, json!({})), Some("orders:read"));
    let recovered = eventually(Duration::from_secs(15), || {
        envoy.bearer("/orders/1", &real).status == 401
    });
    assert!(recovered, "no recovery after the IdP came up");
    assert!(envoy.vm_failures().is_empty());
}
