//! Every Konnect auth method through a real Envoy against the real IdP fixture: client
//! credentials (Basic), opaque tokens (introspection), API keys, bearer JWTs, several
//! strategies on one route, and an IdP outage mid-run.

mod support;

use base64::Engine as _;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use support::*;

const API_KEY: &str = "demo-key-7f3a9c";

fn sha256_hex(s: &str) -> String {
    app_auth_filter::engine::sha256_hex(s.as_bytes())
}

fn client(idp: &Idp, extra: Value) -> (String, String) {
    let mut meta = json!({"client_name": "e2e", "grant_types": ["client_credentials"], "response_types": [],
        "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic", "scope": "orders:read orders:write"});
    if let (Some(m), Value::Object(extra)) = (meta.as_object_mut(), extra) {
        m.extend(extra);
    }
    idp.register(meta)
}

fn basic(c: &(String, String)) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.0, c.1))
    )
}

fn signal(process: &Process, sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {} failed", process.name);
}

#[test]
fn every_auth_method_end_to_end() {
    let dir = scratch();
    let idp = Idp::start(&dir);
    let upstream = Upstream::start(&dir);

    let resource_server = client(&idp, json!({}));
    let cc = client(&idp, json!({}));
    let cc_unused = client(&idp, json!({}));
    let opaque = client(&idp, json!({"access_token_format": "opaque"}));
    let opaque_short = client(
        &idp,
        json!({"access_token_format": "opaque", "access_token_ttl": 1}),
    );
    let billing = client(&idp, json!({}));
    let app = |id: &str, client_id: &str, strategy: &str| {
        json!({"id": id, "client_id": client_id, "auth_strategy_id": strategy, "scopes": ["orders-v1"],
               "developer_id": "dev-1", "portal_id": "portal-1", "organization_id": "org-1"})
    };
    let config = json!({
        "policies": {
            "orders-v1": {
                "scope": "orders-v1",
                "hide_credentials": true,
                "strategies": [
                    {"id": "s-key", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["apikey"]}}},
                    {"id": "s-cc", "strategy_type": "openid_connect", "configs": {"openid-connect": {
                        "issuer": format!("{}/.well-known/openid-configuration", idp.issuer()),
                        "credential_claim": ["client_id"], "scopes": ["orders:read"],
                        "auth_methods": ["client_credentials", "bearer", "introspection"],
                        "scopes_required": ["orders:read"], "audience_required": ["https://api.example.com"],
                        "client_id": [resource_server.0], "client_secret": [resource_server.1],
                        "timeout": 2000}}}
                ]
            },
            "billing-v1": {
                "scope": "billing-v1",
                "strategies": [{"id": "s-billing", "strategy_type": "openid_connect", "configs": {"openid-connect": {
                    "issuer": idp.issuer(), "credential_claim": ["client_id"], "scopes": ["orders:read"],
                    "auth_methods": ["bearer", "client_credentials"], "timeout": 2000}}}]
            }
        },
        "routes": {"orders": "orders-v1"},
        "applications": [
            app("app-cc", &cc.0, "s-cc"),
            app("app-cc-unused", &cc_unused.0, "s-cc"),
            app("app-opaque", &opaque.0, "s-cc"),
            app("app-opaque-short", &opaque_short.0, "s-cc"),
            app("app-key", &sha256_hex(API_KEY), "s-key"),
            app("app-billing", &billing.0, "s-billing"),
        ],
        "upstreams": {format!("127.0.0.1:{}", idp.port): "idp"}
    });
    let envoy = Envoy::start(&dir, &config, upstream.port, idp.port, 2);

    // client_credentials, base64 form: exchanged, verified, forwarded as a bearer token.
    let r = envoy.get("/orders/1", &[("authorization", basic(&cc).as_bytes())]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json()["headers"].clone();
    assert_eq!(seen["x-application-id"], "app-cc");
    let forwarded = seen["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(forwarded.starts_with("Bearer ey"), "{forwarded}");
    // The literal form the Konnect docs print: `Basic CLIENT_ID:CLIENT_SECRET`.
    let raw = format!("Basic {}:{}", cc.0, cc.1);
    let r = envoy.get("/orders/1", &[("authorization", raw.as_bytes())]);
    assert_eq!(r.status, 200, "{}", r.text());
    let token_requests = idp.stats()["token"].as_u64().unwrap();
    // Cached per worker: more calls add at most one exchange per worker. Repeated, the
    // same Basic value is answered from what its exchange left (as sent, not decoded):
    // upstream sees the same application and a bearer token, never the client's secret.
    for _ in 0..6 {
        let r = envoy.get("/orders/1", &[("authorization", basic(&cc).as_bytes())]);
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = r.json()["headers"].clone();
        assert_eq!(seen["x-application-id"], "app-cc");
        let forwarded = seen["authorization"].as_str().unwrap_or_default();
        assert!(forwarded.starts_with("Bearer ey"), "{forwarded}");
    }
    assert!(
        idp.stats()["token"].as_u64().unwrap() <= token_requests + 2,
        "exchanges are cached"
    );

    let before = upstream.count();
    // Wrong secret: the IdP says invalid_client, and is not asked again for a while (5 s):
    // a client retrying a wrong secret costs the IdP at most one exchange per worker.
    let wrong = (cc.0.clone(), "not-the-secret".to_owned());
    let token_requests = idp.stats()["token"].as_u64().unwrap();
    for _ in 0..6 {
        let r = envoy.get("/orders/1", &[("authorization", basic(&wrong).as_bytes())]);
        assert_eq!(
            (r.status, r.json()),
            (401, json!({"message": "Unauthorized"}))
        );
    }
    assert!(
        idp.stats()["token"].as_u64().unwrap() <= token_requests + 2,
        "refusals are remembered"
    );
    // Registered for another strategy: refused before any callout.
    let r = envoy.get(
        "/orders/1",
        &[("authorization", basic(&billing).as_bytes())],
    );
    assert_eq!(r.status, 401);
    let r = envoy.bearer("/orders/1", &idp.token(&billing, Some("orders:read")));
    assert_eq!(r.status, 401);
    assert_eq!(
        upstream.count(),
        before,
        "nothing denied reached the upstream"
    );

    // Opaque tokens: introspected.
    let token = idp.token(&opaque, Some("orders:read"));
    assert!(
        !token.contains('.'),
        "the fixture issues opaque tokens for this client"
    );
    let r = envoy.bearer("/orders/1", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-application-id"], "app-opaque");
    assert!(
        r.json()["headers"].get("authorization").is_none(),
        "hide_credentials"
    );
    // Revoked before use: inactive.
    let revoked = idp.token(&opaque, Some("orders:read"));
    let auth = basic(&opaque);
    let rv = http(
        idp.port,
        "POST",
        "/token/revocation",
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/x-www-form-urlencoded"),
        ],
        format!("token={revoked}").as_bytes(),
    );
    assert_eq!(rv.status, 200, "{}", rv.text());
    let r = envoy.bearer("/orders/1", &revoked);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("token is not active"));
    // Expired.
    let short = idp.token(&opaque_short, Some("orders:read"));
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(envoy.bearer("/orders/1", &short).status, 401);
    // Unknown to the IdP.
    assert_eq!(
        envoy.bearer("/orders/1", "made-up-opaque-token").status,
        401
    );

    // API key, header and query; stripped before forwarding (hide_credentials).
    let r = envoy.get("/orders/1", &[("apikey", API_KEY.as_bytes())]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-application-id"], "app-key");
    assert!(r.json()["headers"].get("apikey").is_none());
    let r = envoy.get(&format!("/orders/1?x=1&apikey={API_KEY}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/orders/1?x=1");
    let r = envoy.get(
        &format!("/orders/1?apikey={API_KEY}"),
        &[("apikey", API_KEY.as_bytes())],
    );
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"message": "Duplicate API key found"}))
    );
    assert_eq!(
        envoy.get("/orders/1", &[("apikey", b"wrong-key")]).status,
        401
    );

    // Bearer JWT on the same route.
    let jwt = idp.token(&cc, Some("orders:read"));
    assert_eq!(envoy.bearer("/orders/1", &jwt).status, 200);

    // The IdP freezes (connections hang): uncached exchanges and introspections time out
    // to 503; JWTs keep verifying with cached keys. Then it comes back.
    let pid = idp.process_id();
    let fresh_opaque = idp.token(&opaque, Some("orders:read"));
    signal(&idp.process, "-STOP", pid);
    let r = envoy.get(
        "/orders/1",
        &[("authorization", basic(&cc_unused).as_bytes())],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let r = envoy.bearer("/orders/1", &fresh_opaque);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        envoy.bearer("/orders/1", &jwt).status,
        200,
        "cached keys keep serving"
    );
    signal(&idp.process, "-CONT", pid);
    let recovered = eventually(Duration::from_secs(15), || {
        envoy
            .get(
                "/orders/1",
                &[("authorization", basic(&cc_unused).as_bytes())],
            )
            .status
            == 200
    });
    assert!(recovered, "no recovery after the IdP came back");
    assert_eq!(envoy.bearer("/orders/1", &fresh_opaque).status, 200);

    let failures = envoy.vm_failures();
    assert!(
        failures.is_empty(),
        "VM failures in Envoy's log:\n{}",
        failures.join("\n")
    );
}

/// A route that matches on the filter's identity headers sees the filter's values: Envoy picks
/// the route again after the filter's header changes, so an application can be routed on (a
/// gold tier to its own route), and a client's own `x-application-id`, which may steer the
/// route Envoy picks before the filter runs, steers nothing after it.
#[test]
fn routes_see_the_filters_identity_never_the_clients() {
    let dir = scratch();
    let upstream = Upstream::start(&dir);
    let routes = "              - name: orders-gold
                match:
                  prefix: \"/orders\"
                  headers:
                  - name: x-application-id
                    string_match: { exact: app-gold }
                route: { cluster: upstream }
                request_headers_to_add:
                - header: { key: x-route, value: orders-gold }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
";
    let app = |id: &str, key: &str| json!({"id": id, "client_id": sha256_hex(key), "auth_strategy_id": "s-key", "scopes": ["orders-v1"]});
    let config = json!({
        "policies": {"orders-v1": {"scope": "orders-v1", "strategies": [
            {"id": "s-key", "strategy_type": "key_auth", "configs": {"key-auth": {"key_names": ["apikey"]}}}]}},
        "routes": {"orders": "orders-v1", "orders-gold": "orders-v1"},
        "applications": [app("app-gold", "gold-key-51c0"), app("app-basic", "basic-key-9e2d")]
    });
    // Key auth calls out to nobody: the IdP cluster points at a port nothing listens on.
    let envoy = Envoy::start_with_routes(&dir, routes, &config, upstream.port, free_port(), 1);
    let seen = |key: &str, spoofed: Option<&str>| {
        let mut headers = vec![("apikey", key.as_bytes())];
        if let Some(app) = spoofed {
            headers.push(("x-application-id", app.as_bytes()));
        }
        let r = envoy.get("/orders/1", &headers);
        assert_eq!(r.status, 200, "{}", r.text());
        let h = r.json()["headers"].clone();
        (h["x-application-id"].clone(), h["x-route"].clone())
    };

    assert_eq!(
        seen("gold-key-51c0", None),
        (json!("app-gold"), json!("orders-gold"))
    );
    assert_eq!(
        seen("basic-key-9e2d", None),
        (json!("app-basic"), Value::Null)
    );
    // Envoy's first pick for this request is orders-gold (the client's header matches it); the
    // filter replaces the header, and the request leaves by the route of its real application.
    assert_eq!(
        seen("basic-key-9e2d", Some("app-gold")),
        (json!("app-basic"), Value::Null)
    );
    assert_eq!(
        seen("gold-key-51c0", Some("app-basic")),
        (json!("app-gold"), json!("orders-gold"))
    );
    // No credential: the spoofed header reaches nothing.
    let before = upstream.count();
    let r = envoy.get("/orders/1", &[("x-application-id", b"app-gold")]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(upstream.count(), before);
}
