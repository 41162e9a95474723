//! The filter's JSON Schema against the filter's own parser.
//!
//! `filter-config/app_auth_filter.schema.json` (draft 4) describes the configuration that
//! `Config::parse` accepts; `app_auth_filter.meta.json` carries the same schema as Kong's filter
//! metadata (`config_schema`), which Kong uses to validate filter chains at its admin API.
//! These tests hold the two descriptions together:
//!
//! - every example in `filter-config/` and the configurations embedded in the Kong and
//!   docker-compose files are accepted by both;
//! - valid variations are accepted by both;
//! - invalid configurations (each a small mutation of a valid one, named by the rule it
//!   breaks) are refused by both;
//! - the rules that only the parser can check (cross-references, duplicates, strict JSON) are
//!   listed apart: the parser refuses them, the schema accepts them. That is the known gap,
//!   also listed in the schema's top-level `description`.

use app_auth_filter::config::Config;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema = read_json("filter-config/app_auth_filter.schema.json");
        // Also checks the schema itself against the draft 4 meta-schema.
        jsonschema::draft4::new(&schema).unwrap_or_else(|e| panic!("the schema is invalid: {e}"))
    })
}

/// The schema's verdict: `Err` with every error (instance path and message).
fn schema_verdict(doc: &Value) -> Result<(), Vec<String>> {
    let errors: Vec<String> = validator()
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The filter's verdict: `Ok` with its warnings, `Err` with its errors.
fn rust_verdict(bytes: &[u8]) -> Result<Vec<String>, Vec<String>> {
    let show = |ps: Vec<app_auth_filter::config::Problem>| -> Vec<String> {
        ps.iter().map(ToString::to_string).collect()
    };
    match Config::parse(bytes) {
        Ok((_, warnings)) => Ok(show(warnings)),
        Err(errors) => Err(show(errors)),
    }
}

/// The schema's verdict and the filter's.
type Verdicts = (Result<(), Vec<String>>, Result<Vec<String>, Vec<String>>);

fn verdicts(doc: &Value) -> Verdicts {
    let bytes = serde_json::to_vec(doc).expect("serialize");
    (schema_verdict(doc), rust_verdict(&bytes))
}

// ---------------------------------------------------------------- valid bases

/// Where the openid-connect object sits in [`multi`] (a JSON pointer).
const OIDC: &str = "/policies/orders-v1/strategies/0/configs/openid-connect";
/// Where it sits in [`single`].
const SOIDC: &str = "/policy/strategies/0/configs/openid-connect";
/// Where the key-auth object sits in [`keyauth`].
const KA: &str = "/policy/strategies/0/configs/key-auth";

fn oidc() -> Value {
    json!({
        "issuer": "http://127.0.0.1:3000",
        "credential_claim": ["client_id"],
        "scopes": ["orders:read"],
        "auth_methods": ["bearer"],
        "scopes_required": ["orders:read"],
        "audience_required": ["https://api.example.com"],
        "leeway": 0
    })
}

/// Multi-policy form with an application registry (the README's example).
fn multi() -> Value {
    json!({
        "policies": {
            "orders-v1": {
                "scope": "orders-v1",
                "strategies": [{
                    "id": "s-oidc", "name": "demo", "display_name": "Demo IdP",
                    "strategy_type": "openid_connect",
                    "configs": {"openid-connect": oidc()},
                    "dcr_provider_id": "b1e3a0f4-0a55-4d6c-9a33-4a7c1c7bb8a2",
                    "labels": {}
                }],
                "hide_credentials": false
            }
        },
        "routes": {"orders": "orders-v1"},
        "default_policy": null,
        "applications": [{
            "id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-oidc",
            "scopes": ["orders-v1"], "developer_id": "dev-1", "portal_id": "portal-1",
            "organization_id": "org-1"
        }],
        "upstreams": {"127.0.0.1:3000": "idp"}
    })
}

/// Single-policy form (Kong filter chains), OpenID Connect, no application registry.
fn single() -> Value {
    json!({
        "policy": {
            "strategies": [{
                "id": "s-oidc", "strategy_type": "openid_connect",
                "configs": {"openid-connect": oidc()}
            }]
        }
    })
}

/// Single-policy form with a key_auth strategy and its application.
fn keyauth() -> Value {
    json!({
        "policy": {
            "scope": "catalog-v1",
            "strategies": [{
                "id": "s-key", "strategy_type": "key_auth",
                "configs": {"key-auth": {"key_names": ["apikey"]}}
            }]
        },
        "applications": [{
            "id": "app-key",
            "client_id": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "auth_strategy_id": "s-key", "scopes": ["catalog-v1"]
        }]
    })
}

/// `multi()` with an introspection strategy and its client.
fn introspection() -> Value {
    let mut v = multi();
    let o = v.pointer_mut(OIDC).expect("oidc");
    o["auth_methods"] = json!(["introspection", "bearer"]);
    o["client_id"] = json!("resource-server");
    o["client_secret"] = json!("rs-secret");
    v
}

// ---------------------------------------------------------------- editing helpers

/// `base` with the member (or array element) at `pointer` set to `new`, or removed if `None`.
fn edit(mut base: Value, pointer: &str, new: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let key = key.replace("~1", "/").replace("~0", "~");
    let target = base
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the document"));
    match (target, new) {
        (Value::Object(map), Some(v)) => {
            map.insert(key, v);
        }
        (Value::Object(map), None) => {
            map.remove(&key).unwrap_or_else(|| panic!("no {pointer}"));
        }
        (Value::Array(items), new) => {
            let i: usize = key.parse().expect("an array index");
            match new {
                Some(v) if i == items.len() => items.push(v),
                Some(v) => items[i] = v,
                None => {
                    items.remove(i);
                }
            }
        }
        (other, _) => panic!("{parent} is {other}, not a container"),
    }
    base
}

fn set(base: Value, pointer: &str, new: Value) -> Value {
    edit(base, pointer, Some(new))
}

fn del(base: Value, pointer: &str) -> Value {
    edit(base, pointer, None)
}

fn at(prefix: &str, rest: &str) -> String {
    format!("{prefix}/{rest}")
}

// ---------------------------------------------------------------- the cases

/// Configurations both must accept: (what it shows, document).
fn valid_cases() -> Vec<(&'static str, Value)> {
    let mut multi_two = multi();
    multi_two["policies"]["public-v1"] = json!({
        "strategies": [{"id": "s-oidc", "name": "demo", "display_name": "Demo IdP",
            "strategy_type": "openid_connect", "configs": {"openid-connect": oidc()},
            "dcr_provider_id": "b1e3a0f4-0a55-4d6c-9a33-4a7c1c7bb8a2", "labels": {}}],
        "scope": "public-v1"
    });
    multi_two["routes"]["public"] = json!("public-v1");
    multi_two["default_policy"] = json!("public-v1");
    vec![
        ("the multi-policy base", multi()),
        ("the single-policy base", single()),
        ("the key_auth base", keyauth()),
        ("an introspection strategy with its client", introspection()),
        (
            "single-policy form with applications and scope",
            set(
                set(single(), "/policy/scope", json!("orders-v1")),
                "/applications",
                json!([{"id": "a", "client_id": "c", "auth_strategy_id": "s-oidc", "scopes": ["orders-v1"]}]),
            ),
        ),
        (
            "single-policy form, issuer as discovery URL, an unknown field",
            set(
                set(
                    single(),
                    &at(SOIDC, "issuer"),
                    json!("http://127.0.0.1:3000/.well-known/openid-configuration"),
                ),
                &at(SOIDC, "claims_to_verify"),
                json!(["exp"]),
            ),
        ),
        (
            "issuer given as its discovery URL",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://idp.example.com/oauth2/default/.well-known/openid-configuration"),
            ),
        ),
        (
            "issuer with a trailing slash",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("http://127.0.0.1:3000/"),
            ),
        ),
        (
            "issuer with a path",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://idp.example.com/realms/a"),
            ),
        ),
        (
            "unknown openid-connect fields are accepted (with warnings)",
            set(
                set(
                    set(multi(), &at(OIDC, "session_secret"), json!("s3cr3t")),
                    &at(OIDC, "redirect_uri"),
                    json!(["https://app.example.com/cb"]),
                ),
                &at(OIDC, "display_errors"),
                json!(true),
            ),
        ),
        (
            "client_id and client_secret as arrays (the first entry is used)",
            set(
                set(
                    introspection(),
                    &at(OIDC, "client_id"),
                    json!(["rs-1", "rs-2"]),
                ),
                &at(OIDC, "client_secret"),
                json!(["secret-1", "secret-2"]),
            ),
        ),
        (
            "client_credentials with the strategy's own client",
            set(
                set(
                    set(
                        multi(),
                        &at(OIDC, "auth_methods"),
                        json!(["client_credentials", "bearer"]),
                    ),
                    &at(OIDC, "client_id"),
                    json!("gw"),
                ),
                &at(OIDC, "client_secret"),
                json!("gw-secret"),
            ),
        ),
        (
            "param types that include what the filter reads",
            set(
                set(
                    multi(),
                    &at(OIDC, "bearer_token_param_type"),
                    json!(["body", "query", "header"]),
                ),
                &at(OIDC, "client_credentials_param_type"),
                json!(["header", "body"]),
            ),
        ),
        (
            "param types null",
            set(
                set(multi(), &at(OIDC, "bearer_token_param_type"), Value::Null),
                &at(OIDC, "client_credentials_param_type"),
                Value::Null,
            ),
        ),
        (
            "key_auth with the default key_names",
            del(keyauth(), &at(KA, "key_names")),
        ),
        (
            "key_auth with key_names null",
            set(keyauth(), &at(KA, "key_names"), Value::Null),
        ),
        (
            "key_auth with ttl (ignored)",
            set(keyauth(), &at(KA, "ttl"), json!(30)),
        ),
        (
            "key_auth with several key names",
            set(
                keyauth(),
                &at(KA, "key_names"),
                json!(["apikey", "x-api-key", "X_Key.v2"]),
            ),
        ),
        (
            "auth methods that do not apply to a gateway ride along (warnings)",
            set(
                multi(),
                &at(OIDC, "auth_methods"),
                json!(["bearer", "session", "password", "authorization_code"]),
            ),
        ),
        (
            "verify_signature and verify_claims true, ignore_signature empty",
            set(
                set(
                    set(multi(), &at(OIDC, "verify_signature"), json!(true)),
                    &at(OIDC, "verify_claims"),
                    json!(true),
                ),
                &at(OIDC, "ignore_signature"),
                json!([]),
            ),
        ),
        (
            "null members count as absent",
            set(
                set(
                    set(
                        set(multi(), "/limits", Value::Null),
                        &at(OIDC, "leeway"),
                        Value::Null,
                    ),
                    "/applications/0/developer_id",
                    Value::Null,
                ),
                "/policies/orders-v1/hide_credentials",
                Value::Null,
            ),
        ),
        (
            "single-policy form with policies, routes, default_policy null",
            set(
                set(
                    set(single(), "/policies", Value::Null),
                    "/routes",
                    Value::Null,
                ),
                "/default_policy",
                Value::Null,
            ),
        ),
        (
            "no applications: plain OIDC validation, scope optional",
            del(del(multi(), "/applications"), "/policies/orders-v1/scope"),
        ),
        (
            "an empty application registry",
            set(multi(), "/applications", json!([])),
        ),
        (
            "Konnect metadata on strategies and applications",
            set(
                set(
                    set(
                        set(
                            multi(),
                            "/policies/orders-v1/strategies/0/active",
                            json!(true),
                        ),
                        "/policies/orders-v1/strategies/0/created_at",
                        json!(1_700_000_000),
                    ),
                    "/policies/orders-v1/strategies/0/dcr_provider",
                    json!({"id": "p", "provider_type": "curity"}),
                ),
                "/applications/0/consumer_groups",
                json!(["gold"]),
            ),
        ),
        (
            "every limit at its lowest",
            set(
                multi(),
                "/limits",
                json!({"max_token_bytes": 256, "max_json_depth": 4, "max_response_bytes": 1024,
                       "max_jwks_keys": 1, "max_cache_entries": 1, "max_request_headers": 1}),
            ),
        ),
        (
            "every limit at its highest",
            set(
                multi(),
                "/limits",
                json!({"max_token_bytes": 1_048_576, "max_json_depth": 128,
                       "max_response_bytes": 16_777_216, "max_jwks_keys": 1024,
                       "max_cache_entries": 1_000_000, "max_request_headers": 10_000}),
            ),
        ),
        (
            "RFC 9068 access tokens required",
            set(multi(), &at(OIDC, "require_at_jwt"), json!(true)),
        ),
        (
            "openid-connect numbers at their bounds",
            set(
                set(
                    set(
                        set(multi(), &at(OIDC, "leeway"), json!(3600)),
                        &at(OIDC, "timeout"),
                        json!(600_000),
                    ),
                    &at(OIDC, "cache_ttl"),
                    json!(604_800),
                ),
                &at(OIDC, "rediscovery_lifetime"),
                json!(0),
            ),
        ),
        (
            "keys_max_stale at its lowest",
            set(multi(), &at(OIDC, "keys_max_stale"), json!(0)),
        ),
        (
            "keys_max_stale at its highest",
            set(multi(), &at(OIDC, "keys_max_stale"), json!(604_800)),
        ),
        (
            "openid-connect numbers at their other bounds",
            set(
                set(
                    set(multi(), &at(OIDC, "timeout"), json!(1)),
                    &at(OIDC, "cache_ttl"),
                    json!(1),
                ),
                &at(OIDC, "rediscovery_lifetime"),
                json!(86_400),
            ),
        ),
        (
            "scope alternatives, claims, audience, upstream headers",
            set(
                set(
                    set(
                        set(
                            multi(),
                            &at(OIDC, "scopes_required"),
                            json!(["orders:read orders:write", "orders:admin"]),
                        ),
                        &at(OIDC, "scopes_claim"),
                        json!(["scp"]),
                    ),
                    &at(OIDC, "upstream_headers_claims"),
                    json!(["sub", "email"]),
                ),
                &at(OIDC, "upstream_headers_names"),
                json!(["X-Subject", "x-email"]),
            ),
        ),
        (
            "issuers_allowed, HS signatures, hide_credentials, endpoints",
            set(
                set(
                    set(
                        set(
                            multi(),
                            &at(OIDC, "issuers_allowed"),
                            json!(["http://127.0.0.1:3000", "http://localhost:3000"]),
                        ),
                        &at(OIDC, "enable_hs_signatures"),
                        json!(true),
                    ),
                    &at(OIDC, "token_endpoint"),
                    json!("https://idp.example.com/token"),
                ),
                &at(OIDC, "introspection_endpoint"),
                json!("https://idp.example.com/token/introspection"),
            ),
        ),
        (
            "two policies, routes and a default policy; one strategy reused as is",
            multi_two,
        ),
        (
            "upstreams with an IPv6 authority",
            set(
                multi(),
                "/upstreams",
                json!({"[::1]:3000": "idp", "idp.example.com": "idp2"}),
            ),
        ),
    ]
}

/// Configurations both must refuse: (the rule broken, document).
fn invalid_cases() -> Vec<(&'static str, Value)> {
    vec![
        // Lists that must not be empty, and arrays checked entry by entry.
        (
            "credential_claim names a claim",
            set(multi(), &at(OIDC, "credential_claim"), json!([])),
        ),
        (
            "scopes_claim names a claim",
            set(multi(), &at(OIDC, "scopes_claim"), json!([])),
        ),
        (
            "audience_claim names a claim",
            set(multi(), &at(OIDC, "audience_claim"), json!([])),
        ),
        (
            "issuers_allowed names an issuer",
            set(multi(), &at(OIDC, "issuers_allowed"), json!([])),
        ),
        (
            "every client_id entry is a string",
            set(introspection(), &at(OIDC, "client_id"), json!(["rs-1", 5])),
        ),
        (
            "every client_secret entry is non-empty",
            set(
                set(introspection(), &at(OIDC, "client_id"), json!(["rs-1"])),
                &at(OIDC, "client_secret"),
                json!(["secret", ""]),
            ),
        ),
        // Shape of the document.
        ("the document is an object", json!([multi()])),
        (
            "one of policy or policies is required",
            del(multi(), "/policies"),
        ),
        (
            "not both policy and policies",
            set(multi(), "/policy", single()["policy"].clone()),
        ),
        (
            "routes only with policies",
            set(single(), "/routes", json!({"orders": "x"})),
        ),
        (
            "default_policy only with policies",
            set(single(), "/default_policy", json!("x")),
        ),
        (
            "unknown top-level field",
            set(multi(), "/polices", json!({})),
        ),
        (
            "policies names at least one policy",
            set(multi(), "/policies", json!({})),
        ),
        (
            "policies is an object",
            set(multi(), "/policies", json!([])),
        ),
        (
            "a policy is an object, not null",
            set(multi(), "/policies/orders-v1", Value::Null),
        ),
        (
            "routes is an object",
            set(multi(), "/routes", json!(["orders"])),
        ),
        (
            "a route names a policy by a string",
            set(multi(), "/routes/orders", Value::Null),
        ),
        (
            "default_policy is a string",
            set(multi(), "/default_policy", json!(0)),
        ),
        // Policies.
        (
            "a policy lists strategies",
            del(multi(), "/policies/orders-v1/strategies"),
        ),
        (
            "at least one strategy",
            set(multi(), "/policies/orders-v1/strategies", json!([])),
        ),
        (
            "unknown policy field",
            set(multi(), "/policies/orders-v1/scopes", json!(["x"])),
        ),
        (
            "hide_credentials is a boolean",
            set(
                multi(),
                "/policies/orders-v1/hide_credentials",
                json!("yes"),
            ),
        ),
        (
            "scope is not empty",
            set(multi(), "/policies/orders-v1/scope", json!("")),
        ),
        (
            "strings have no control characters",
            set(multi(), "/policies/orders-v1/scope", json!("orders\nv1")),
        ),
        // Strategy objects.
        (
            // PCRE (Kong's validator) lets "$" match before a final newline: the schema
            // must not rely on anchors for this.
            "strings have no trailing newline",
            set(multi(), "/policies/orders-v1/scope", json!("orders-v1\n")),
        ),
        (
            "URLs have no trailing newline",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("http://127.0.0.1:3000\n"),
            ),
        ),
        (
            "header names have no trailing newline",
            set(keyauth(), &at(KA, "key_names"), json!(["apikey\n"])),
        ),
        (
            "strategy_type is openid_connect or key_auth",
            set(
                multi(),
                "/policies/orders-v1/strategies/0/strategy_type",
                json!("oauth2"),
            ),
        ),
        (
            "a strategy has an id",
            del(multi(), "/policies/orders-v1/strategies/0/id"),
        ),
        (
            "a strategy id is not empty",
            set(multi(), "/policies/orders-v1/strategies/0/id", json!("")),
        ),
        (
            "unknown strategy field",
            set(
                multi(),
                "/policies/orders-v1/strategies/0/config",
                json!({}),
            ),
        ),
        (
            "a strategy has configs",
            del(multi(), "/policies/orders-v1/strategies/0/configs"),
        ),
        (
            "openid_connect needs configs[\"openid-connect\"]",
            set(
                multi(),
                "/policies/orders-v1/strategies/0/configs",
                json!({"key-auth": {}}),
            ),
        ),
        (
            "configs holds only the strategy's own object",
            set(
                multi(),
                "/policies/orders-v1/strategies/0/configs/key-auth",
                json!({}),
            ),
        ),
        (
            "configs[\"openid-connect\"] is an object",
            set(multi(), OIDC, json!("issuer=x")),
        ),
        // openid-connect.
        ("issuer is required", del(multi(), &at(OIDC, "issuer"))),
        (
            "issuer is an http(s) URL",
            set(multi(), &at(OIDC, "issuer"), json!("idp.example.com")),
        ),
        (
            "issuer has no fragment",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://idp.example.com/#x"),
            ),
        ),
        (
            "issuer has no query",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://idp.example.com/realms/a?x=1"),
            ),
        ),
        (
            "issuer has no user info",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://user@idp.example.com"),
            ),
        ),
        (
            "issuer has no spaces",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://idp.example.com/a b"),
            ),
        ),
        (
            "issuer's host is a name or an address",
            set(
                multi(),
                &at(OIDC, "issuer"),
                json!("https://idp.example.com\u{a0}"),
            ),
        ),
        (
            "issuer has a host",
            set(multi(), &at(OIDC, "issuer"), json!("https:///realm")),
        ),
        (
            "credential_claim is an array",
            set(multi(), &at(OIDC, "credential_claim"), json!("client_id")),
        ),
        ("scopes is required", del(multi(), &at(OIDC, "scopes"))),
        (
            "scopes entries are strings",
            set(multi(), &at(OIDC, "scopes"), json!(["a", 1])),
        ),
        (
            "auth_methods is required",
            del(multi(), &at(OIDC, "auth_methods")),
        ),
        (
            "auth_methods names known methods",
            set(multi(), &at(OIDC, "auth_methods"), json!(["bearer", "jwt"])),
        ),
        (
            "auth_methods names an enforced method",
            set(multi(), &at(OIDC, "auth_methods"), json!(["session"])),
        ),
        (
            "auth_methods is not empty",
            set(multi(), &at(OIDC, "auth_methods"), json!([])),
        ),
        (
            "leeway at most 3600",
            set(multi(), &at(OIDC, "leeway"), json!(3601)),
        ),
        (
            "leeway not negative",
            set(multi(), &at(OIDC, "leeway"), json!(-1)),
        ),
        (
            "leeway is a number",
            set(multi(), &at(OIDC, "leeway"), json!("30")),
        ),
        (
            "leeway is a whole number",
            set(multi(), &at(OIDC, "leeway"), json!(1.5)),
        ),
        (
            "whole numbers have no fraction part",
            set(multi(), &at(OIDC, "leeway"), json!(30.0)),
        ),
        (
            "timeout at least 1",
            set(multi(), &at(OIDC, "timeout"), json!(0)),
        ),
        (
            "timeout at most 600000",
            set(multi(), &at(OIDC, "timeout"), json!(600_001)),
        ),
        (
            "cache_ttl at least 1",
            set(multi(), &at(OIDC, "cache_ttl"), json!(0)),
        ),
        (
            "cache_ttl at most 604800",
            set(multi(), &at(OIDC, "cache_ttl"), json!(604_801)),
        ),
        (
            "rediscovery_lifetime at most 86400",
            set(multi(), &at(OIDC, "rediscovery_lifetime"), json!(86_401)),
        ),
        (
            "keys_max_stale at most 604800",
            set(multi(), &at(OIDC, "keys_max_stale"), json!(604_801)),
        ),
        (
            "keys_max_stale is a whole number",
            set(multi(), &at(OIDC, "keys_max_stale"), json!("1h")),
        ),
        (
            "verify_signature must not be false",
            set(multi(), &at(OIDC, "verify_signature"), json!(false)),
        ),
        (
            "verify_signature must not be false (single-policy form)",
            set(single(), &at(SOIDC, "verify_signature"), json!(false)),
        ),
        (
            "verify_claims must not be false",
            set(multi(), &at(OIDC, "verify_claims"), json!(false)),
        ),
        (
            "verify_signature is a boolean",
            set(multi(), &at(OIDC, "verify_signature"), json!("true")),
        ),
        (
            "ignore_signature must be empty",
            set(multi(), &at(OIDC, "ignore_signature"), json!(["bearer"])),
        ),
        (
            "ignore_signature is an array",
            set(multi(), &at(OIDC, "ignore_signature"), json!(false)),
        ),
        (
            "enable_hs_signatures is a boolean",
            set(multi(), &at(OIDC, "enable_hs_signatures"), json!("false")),
        ),
        (
            "require_at_jwt is a boolean",
            set(multi(), &at(OIDC, "require_at_jwt"), json!("true")),
        ),
        (
            "client_id goes with client_secret",
            set(multi(), &at(OIDC, "client_id"), json!("gw")),
        ),
        (
            "client_secret goes with client_id",
            set(multi(), &at(OIDC, "client_secret"), json!("s")),
        ),
        (
            "client_id and client_secret go together (null is absent)",
            set(
                set(multi(), &at(OIDC, "client_id"), Value::Null),
                &at(OIDC, "client_secret"),
                json!("s"),
            ),
        ),
        (
            "client_id as an array is not empty",
            set(introspection(), &at(OIDC, "client_id"), json!([])),
        ),
        (
            "client_id is a string or an array",
            set(introspection(), &at(OIDC, "client_id"), json!(42)),
        ),
        (
            "client_id is not empty",
            set(introspection(), &at(OIDC, "client_id"), json!("")),
        ),
        (
            "the introspection method needs client_id and client_secret",
            set(multi(), &at(OIDC, "auth_methods"), json!(["introspection"])),
        ),
        (
            "scopes_required entries name a scope",
            set(multi(), &at(OIDC, "scopes_required"), json!(["  "])),
        ),
        (
            "scopes_required entries are not empty",
            set(multi(), &at(OIDC, "scopes_required"), json!([""])),
        ),
        (
            "audience_required entries name an audience",
            set(multi(), &at(OIDC, "audience_required"), json!([" "])),
        ),
        (
            "upstream header names are header names",
            set(
                set(
                    multi(),
                    &at(OIDC, "upstream_headers_claims"),
                    json!(["sub"]),
                ),
                &at(OIDC, "upstream_headers_names"),
                json!(["X Subject"]),
            ),
        ),
        (
            "token_endpoint is an http(s) URL",
            set(
                multi(),
                &at(OIDC, "token_endpoint"),
                json!("ftp://idp/token"),
            ),
        ),
        (
            "introspection_endpoint is a URL string",
            set(multi(), &at(OIDC, "introspection_endpoint"), json!(true)),
        ),
        // Requirements the filter does not check are refused, not ignored (Kong validates
        // with the schema: a chain it accepts and the filter refuses answers every request
        // with 500).
        (
            "groups_required is refused unless empty",
            set(multi(), &at(OIDC, "groups_required"), json!(["admin"])),
        ),
        (
            "claims_forbidden is refused unless empty",
            set(multi(), &at(OIDC, "claims_forbidden"), json!(["act"])),
        ),
        (
            "bearer_token_param_type includes header",
            set(
                multi(),
                &at(OIDC, "bearer_token_param_type"),
                json!(["query", "body"]),
            ),
        ),
        (
            "bearer_token_param_type includes query",
            set(
                multi(),
                &at(OIDC, "bearer_token_param_type"),
                json!(["header"]),
            ),
        ),
        (
            "bearer_token_param_type is not empty",
            set(multi(), &at(OIDC, "bearer_token_param_type"), json!([])),
        ),
        (
            "client_credentials_param_type includes header",
            set(
                multi(),
                &at(OIDC, "client_credentials_param_type"),
                json!(["body"]),
            ),
        ),
        (
            "client_credentials_param_type is not empty",
            set(
                multi(),
                &at(OIDC, "client_credentials_param_type"),
                json!([]),
            ),
        ),
        // key-auth.
        (
            "key_names names at least one key",
            set(keyauth(), &at(KA, "key_names"), json!([])),
        ),
        (
            "key names are header names",
            set(keyauth(), &at(KA, "key_names"), json!(["api key"])),
        ),
        (
            "key names are not repeated",
            set(keyauth(), &at(KA, "key_names"), json!(["apikey", "apikey"])),
        ),
        (
            "key-auth has no other fields",
            set(keyauth(), &at(KA, "hide_credentials"), json!(true)),
        ),
        (
            "key_auth needs configs[\"key-auth\"]",
            set(
                keyauth(),
                "/policy/strategies/0/configs",
                json!({"openid-connect": oidc()}),
            ),
        ),
        (
            "a key_auth strategy needs applications",
            del(keyauth(), "/applications"),
        ),
        (
            "a key_auth strategy needs applications (null is absent)",
            set(keyauth(), "/applications", Value::Null),
        ),
        // Applications.
        (
            "scope is required when applications are listed",
            del(multi(), "/policies/orders-v1/scope"),
        ),
        (
            "scope is required when applications are listed (single)",
            del(keyauth(), "/policy/scope"),
        ),
        (
            "applications is an array",
            set(multi(), "/applications", json!({"app-1": {}})),
        ),
        (
            "an application is an object",
            set(multi(), "/applications/0", Value::Null),
        ),
        (
            "an application has a client_id",
            del(multi(), "/applications/0/client_id"),
        ),
        (
            "an application has scopes",
            del(multi(), "/applications/0/scopes"),
        ),
        (
            "application scopes is an array",
            set(multi(), "/applications/0/scopes", json!("orders-v1")),
        ),
        (
            "unknown application field",
            set(multi(), "/applications/0/secret", json!("x")),
        ),
        (
            "developer_id is not empty",
            set(multi(), "/applications/0/developer_id", json!("")),
        ),
        (
            "an application id has no space at its start",
            set(multi(), "/applications/0/id", json!(" app-1")),
        ),
        (
            "a client_id has no space at its end",
            set(multi(), "/applications/0/client_id", json!("client-1 ")),
        ),
        (
            "organization_id has no space at either end",
            set(multi(), "/applications/0/organization_id", json!(" ")),
        ),
        // Upstreams and limits.
        (
            "an upstreams key is an authority, not a URL",
            set(multi(), "/upstreams", json!({"http://idp:3000": "idp"})),
        ),
        (
            "an upstreams key is not empty",
            set(multi(), "/upstreams", json!({"": "idp"})),
        ),
        (
            "an upstreams cluster is not empty",
            set(multi(), "/upstreams/127.0.0.1:3000", json!("")),
        ),
        (
            "an upstreams cluster is a string",
            set(multi(), "/upstreams/127.0.0.1:3000", Value::Null),
        ),
        ("limits is an object", set(multi(), "/limits", json!("big"))),
        (
            "unknown limit",
            set(multi(), "/limits", json!({"max_tokens": 1})),
        ),
        (
            "max_token_bytes at least 256",
            set(multi(), "/limits", json!({"max_token_bytes": 100})),
        ),
        (
            "max_json_depth at most 128",
            set(multi(), "/limits", json!({"max_json_depth": 129})),
        ),
        (
            "max_jwks_keys at least 1",
            set(multi(), "/limits", json!({"max_jwks_keys": 0})),
        ),
        (
            "max_request_headers at least 1",
            set(multi(), "/limits", json!({"max_request_headers": 0})),
        ),
        (
            "max_request_headers at most 10000",
            set(multi(), "/limits", json!({"max_request_headers": 10_001})),
        ),
    ]
}

/// Rules only the filter checks: it refuses these, the schema (draft 4) cannot see why.
/// Each is listed in the schema's top-level `description`.
fn rust_only_cases() -> Vec<(&'static str, Value)> {
    let mut two_meanings = multi();
    two_meanings["policies"]["other-v1"] = json!({
        "scope": "other-v1",
        "strategies": [{"id": "s-oidc", "strategy_type": "openid_connect",
            "configs": {"openid-connect": set(oidc(), "/leeway", json!(5))}}]
    });
    let mut shared_issuer = multi();
    shared_issuer["policies"]["other-v1"] = json!({
        "scope": "other-v1",
        "strategies": [{"id": "s-other", "strategy_type": "openid_connect",
            "configs": {"openid-connect": set(oidc(), "/timeout", json!(2000))}}]
    });
    vec![
        (
            "routes name a policy in policies",
            set(multi(), "/routes/orders", json!("orders-v2")),
        ),
        (
            "default_policy names a policy in policies",
            set(multi(), "/default_policy", json!("nope")),
        ),
        (
            "an application's auth_strategy_id names a configured strategy",
            set(
                multi(),
                "/applications/0/auth_strategy_id",
                json!("s-unknown"),
            ),
        ),
        (
            "no two applications with one client_id",
            set(
                multi(),
                "/applications/1",
                set(multi()["applications"][0].clone(), "/id", json!("app-2")),
            ),
        ),
        (
            "without applications, a policy's client_credentials strategies share one issuer",
            set(
                set(
                    single(),
                    &at(SOIDC, "auth_methods"),
                    json!(["client_credentials"]),
                ),
                "/policy/strategies/1",
                json!({"id": "s-other", "strategy_type": "openid_connect",
                    "configs": {"openid-connect": set(
                        set(oidc(), "/issuer", json!("https://idp-b.example.com")),
                        "/auth_methods", json!(["client_credentials"]))}}),
            ),
        ),
        (
            "a key_auth application's client_id is the lower-case SHA-256 hex of its key",
            set(
                keyauth(),
                "/applications/0/client_id",
                json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
            ),
        ),
        (
            "no strategy id twice in one policy",
            set(
                multi(),
                "/policies/orders-v1/strategies/1",
                multi()["policies"]["orders-v1"]["strategies"][0].clone(),
            ),
        ),
        (
            "one strategy id never names two different strategies",
            two_meanings,
        ),
        (
            "key names are compared case-insensitively",
            set(keyauth(), &at(KA, "key_names"), json!(["apikey", "APIKEY"])),
        ),
        (
            "upstream_headers_claims and upstream_headers_names have the same length",
            set(
                multi(),
                &at(OIDC, "upstream_headers_claims"),
                json!(["sub"]),
            ),
        ),
        (
            "strategies sharing an issuer share timeout, cache_ttl and rediscovery_lifetime",
            shared_issuer,
        ),
        (
            "strings have no C1 control characters",
            set(
                multi(),
                "/policies/orders-v1/scope",
                json!("orders\u{85}v1"),
            ),
        ),
    ]
}

/// Raw documents the filter refuses as JSON (strict parsing); the schema sees them through a
/// lenient parser and accepts them.
fn rust_only_raw_cases() -> Vec<(&'static str, String)> {
    let text = serde_json::to_string(&multi()).expect("serialize");
    let duplicate = text.replacen("\"routes\":", "\"routes\":{},\"routes\":", 1);
    let deep = set(
        multi(),
        "/policies/orders-v1/strategies/0/labels",
        (0..70).fold(json!("x"), |v, _| json!([v])),
    );
    vec![
        ("no duplicate member names", duplicate),
        (
            "at most 64 levels of nesting",
            serde_json::to_string(&deep).expect("serialize"),
        ),
    ]
}

// ---------------------------------------------------------------- tests

#[test]
fn schema_is_draft4_and_the_kong_metadata_carries_the_same_schema() {
    let schema = read_json("filter-config/app_auth_filter.schema.json");
    assert_eq!(
        schema["$schema"],
        json!("http://json-schema.org/draft-04/schema#")
    );
    let _ = validator();
    let meta = read_json("filter-config/app_auth_filter.meta.json");
    let keys: Vec<&String> = meta
        .as_object()
        .expect("meta.json is an object")
        .keys()
        .collect();
    assert_eq!(
        keys,
        ["config_schema"],
        "Kong reads only config_schema from <filter>.meta.json"
    );
    assert_eq!(
        meta["config_schema"], schema,
        "app_auth_filter.meta.json's config_schema must be exactly app_auth_filter.schema.json"
    );
    // Kong compiles patterns with PCRE (ngx.re, no UTF-8 mode): keep to escapes every engine
    // reads the same way.
    let text = read("filter-config/app_auth_filter.schema.json");
    for forbidden in ["\\\\u", "\\\\p{", "\\\\d", "\\\\s", "\\\\w", "\"format\""] {
        assert!(!text.contains(forbidden), "the schema uses {forbidden}");
    }
}

#[test]
fn every_example_is_accepted_by_the_schema_and_the_filter() {
    let dir = root().join("filter-config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("filter-config/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !name.ends_with(".json")
            || name.ends_with(".schema.json")
            || name.ends_with(".meta.json")
        {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let doc: Value = serde_json::from_slice(&bytes).expect("JSON");
        if let Err(e) = schema_verdict(&doc) {
            panic!("{name}: refused by the schema: {e:#?}");
        }
        match Config::parse(&bytes) {
            Ok((config, warnings)) => {
                assert!(
                    warnings.is_empty(),
                    "{name}: unexpected warnings {warnings:?}"
                );
                assert!(!config.policies.is_empty(), "{name}");
            }
            Err(errors) => panic!("{name}: refused by the filter: {errors:#?}"),
        }
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the example configurations, found {seen}"
    );
    println!("examples: {seen} accepted by both");
}

#[test]
fn valid_variations_are_accepted_by_both() {
    let cases = valid_cases();
    let mut failures = Vec::new();
    for (what, doc) in &cases {
        match verdicts(doc) {
            (Ok(()), Ok(_)) => {}
            (schema, rust) => {
                failures.push(format!("{what}:\n  schema: {schema:?}\n  filter: {rust:?}"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid cases refused:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Unknown openid-connect fields and non-gateway auth methods load with warnings.
    let (_, rust) = verdicts(
        &cases
            .iter()
            .find(|(w, _)| w.starts_with("unknown openid-connect"))
            .expect("case")
            .1,
    );
    assert_eq!(
        rust.expect("accepted").len(),
        3,
        "one warning per unknown field"
    );
    println!("valid: {} cases, both accept", cases.len());
}

#[test]
fn invalid_configs_are_refused_by_both() {
    let cases = invalid_cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (rule, doc) in &cases {
        match verdicts(doc) {
            (Err(_), Err(_)) => {}
            (schema, rust) => failures.push(format!(
                "{rule}:\n  document: {doc}\n  schema: {}\n  filter: {}",
                if schema.is_ok() { "accepts" } else { "refuses" },
                if rust.is_ok() { "accepts" } else { "refuses" },
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid cases not refused by both:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("invalid: {} cases, both refuse", cases.len());
}

#[test]
fn rules_only_the_filter_checks_are_the_documented_gap() {
    let description = read_json("filter-config/app_auth_filter.schema.json")["description"]
        .as_str()
        .expect("description")
        .to_owned();
    let mut failures = Vec::new();
    let cases = rust_only_cases();
    for (rule, doc) in &cases {
        match verdicts(doc) {
            (Ok(()), Err(_)) => {}
            (schema, rust) => failures.push(format!("{rule}: schema {schema:?}, filter {rust:?}")),
        }
    }
    let raw = rust_only_raw_cases();
    for (rule, text) in &raw {
        let lenient: Value = serde_json::from_str(text).expect("lenient JSON");
        match (schema_verdict(&lenient), rust_verdict(text.as_bytes())) {
            (Ok(()), Err(_)) => {}
            (schema, rust) => failures.push(format!("{rule}: schema {schema:?}, filter {rust:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "expected: the filter refuses, the schema accepts (if the schema now refuses too, move the case to invalid_cases):\n{}",
        failures.join("\n")
    );
    for needle in [
        "routes and default_policy must name a policy",
        "auth_strategy_id must name a configured strategy",
        "no two applications with one client_id",
        "lower-case SHA-256 hex of its key",
        "client_credentials strategies share one issuer",
        "no strategy id twice",
        "case-insensitively",
        "same length",
        "share an issuer",
        "C1 control characters",
        "duplicate member names",
    ] {
        assert!(
            description.contains(needle),
            "the schema's description does not list: {needle}"
        );
    }
    println!(
        "filter only: {} cases, the filter refuses and the schema accepts",
        cases.len() + raw.len()
    );
}

/// The configuration embedded between `BEGIN app_auth_filter config` and
/// `END app_auth_filter config` marker lines of a file (JSON, possibly after `config:`).
fn embedded_config(rel: &str) -> Value {
    let text = read(rel);
    let mut inside = false;
    let mut json_text = String::new();
    for line in text.lines() {
        if line.contains("END app_auth_filter config") {
            inside = false;
        } else if inside {
            let line = line.trim_start();
            if line == "value: |" {
                continue;
            }
            json_text.push_str(line.strip_prefix("config:").unwrap_or(line));
            json_text.push('\n');
        } else if line.contains("BEGIN app_auth_filter config") {
            inside = true;
        }
    }
    assert!(
        !json_text.is_empty(),
        "{rel}: no embedded filter configuration"
    );
    serde_json::from_str(&json_text)
        .unwrap_or_else(|e| panic!("{rel}: embedded config: {e}\n{json_text}"))
}

#[test]
fn kong_and_compose_configurations_are_accepted_by_both() {
    for rel in ["envoy-test/kong/kong.yaml", "envoy-test/envoy-compose.yaml"] {
        let doc = embedded_config(rel);
        let (schema, rust) = verdicts(&doc);
        assert!(schema.is_ok(), "{rel}: refused by the schema: {schema:?}");
        assert!(rust.is_ok(), "{rel}: refused by the filter: {rust:?}");
        assert_eq!(rust.expect("ok"), Vec::<String>::new(), "{rel}: warnings");
    }
    // Kong attaches one filter per route: its configuration is the single-policy form, and
    // callouts go to the URL's authority itself, so it needs no upstreams map.
    let kong = embedded_config("envoy-test/kong/kong.yaml");
    assert!(kong.get("policy").is_some() && kong.get("upstreams").is_none());
}

/// The field names `src/config/mod.rs` reads (as `(p, "name"`, `(p, &mut f, "name"`,
/// `.get("name"`, the `ignore(&[...])` lists, `DANGEROUS` and `UNENFORCED`).
fn names_the_parser_reads(source: &str) -> std::collections::BTreeSet<String> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    let mut names = std::collections::BTreeSet::new();
    let mut take_quoted = |text: &str| {
        for (i, part) in text.split('"').enumerate() {
            if i % 2 == 1 && is_name(part) {
                names.insert(part.to_owned());
            }
        }
    };
    for opener in ["(p, \"", "(p, &mut f, \"", ".get(\""] {
        for (i, rest) in source.split(opener).enumerate() {
            if i > 0 {
                if let Some(end) = rest.find('"') {
                    take_quoted(&format!("\"{}\"", &rest[..end]));
                }
            }
        }
    }
    for opener in ["ignore(&[", "const DANGEROUS", "const UNENFORCED"] {
        for (i, rest) in source.split(opener).enumerate() {
            if i > 0 {
                // The list ends at whichever closing comes first.
                let end = [rest.find("];"), rest.find("])")]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(rest.len());
                // DANGEROUS and UNENFORCED pair a name with a message or a rule: only the
                // first string of each pair.
                for line in rest[..end].lines() {
                    let line = line.trim_start();
                    let pairs = opener != "ignore(&[";
                    if pairs && !line.starts_with("(\"") {
                        continue;
                    }
                    if let Some(first) = line.split('"').nth(1) {
                        take_quoted(&format!("\"{first}\""));
                    }
                    if !pairs {
                        take_quoted(line);
                    }
                }
            }
        }
    }
    names
}

/// Every member name under any `properties` of the schema.
fn names_the_schema_describes(schema: &Value, out: &mut std::collections::BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "properties" {
                    if let Value::Object(props) = v {
                        out.extend(props.keys().cloned());
                    }
                }
                names_the_schema_describes(v, out);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| names_the_schema_describes(v, out)),
        _ => {}
    }
}

/// A drift alarm: a field the parser starts reading must be added to the schema, and a field
/// the schema lists must be one the parser reads (or accepts as metadata).
#[test]
fn the_schema_and_the_parser_know_the_same_field_names() {
    let source = read("src/config/mod.rs");
    let read_names = names_the_parser_reads(&source);
    assert!(
        read_names.contains("issuer") && read_names.contains("dcr_provider_id"),
        "the scan of src/config/mod.rs found too little: {read_names:?}"
    );
    let mut described = std::collections::BTreeSet::new();
    names_the_schema_describes(
        &read_json("filter-config/app_auth_filter.schema.json"),
        &mut described,
    );
    let missing: Vec<&String> = read_names.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "src/config/mod.rs reads fields the schema does not describe: {missing:?}"
    );
    let unread: Vec<&String> = described
        .iter()
        .filter(|n| !source.contains(&format!("\"{n}\"")))
        .collect();
    assert!(
        unread.is_empty(),
        "the schema describes fields src/config/mod.rs never names: {unread:?}"
    );
}

/// `cargo test --test schema -- --ignored --nocapture`: every case with each side's first
/// reason, to review that both refuse a case for the same rule.
#[test]
#[ignore]
fn print_verdict_table() {
    let filter = |r: Result<Vec<String>, Vec<String>>| match r {
        Ok(w) => format!("accepts ({} warnings)", w.len()),
        Err(e) => format!("refuses: {}", e[0]),
    };
    let schema = |r: Result<(), Vec<String>>| match r {
        Ok(()) => "accepts".to_owned(),
        Err(e) => format!("refuses: {}", e[0]),
    };
    for (list, cases) in [
        ("valid", valid_cases()),
        ("invalid", invalid_cases()),
        ("filter only", rust_only_cases()),
    ] {
        println!("== {list} ({})", cases.len());
        for (what, doc) in cases {
            let (s, r) = verdicts(&doc);
            println!(
                "- {what}\n    schema: {}\n    filter: {}",
                schema(s),
                filter(r)
            );
        }
    }
}
