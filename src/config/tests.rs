// Test code only: the parent module declares this file behind #[cfg(test)].
use super::*;
use serde_json::json;

/// The example configuration from the issue.
const EXAMPLE: &str = r#"{
  "policies": {
    "orders-v1": {
      "scope": "orders-v1",
      "strategies": [ { "id": "s-oidc", "strategy_type": "openid_connect",
        "configs": { "openid-connect": { "issuer": "http://127.0.0.1:3000",
          "credential_claim": ["client_id"], "scopes": ["orders:read"],
          "auth_methods": ["bearer"], "scopes_required": ["orders:read"],
          "audience_required": ["https://api.example.com"], "leeway": 0 } } } ],
      "hide_credentials": false
    }
  },
  "routes": { "orders": "orders-v1" },
  "default_policy": null,
  "applications": [ { "id": "app-1", "client_id": "abc", "auth_strategy_id": "s-oidc",
    "scopes": ["orders-v1"], "developer_id": "dev-1", "portal_id": "portal-1",
    "organization_id": "org-1" } ],
  "upstreams": { "127.0.0.1:3000": "idp" }
}"#;

/// JSON paths into the example and into the single-policy documents built below.
const EX_POLICY: &str = "$.policies[\"orders-v1\"]";
const EX_STRATEGY: &str = "$.policies[\"orders-v1\"].strategies[0]";
const EX_OIDC: &str = "$.policies[\"orders-v1\"].strategies[0].configs[\"openid-connect\"]";
const OIDC: &str = "$.policy.strategies[0].configs[\"openid-connect\"]";

const UNUSED_FIELD: &str = "openid-connect field not used by this filter; ignored";

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

/// Sets member `key` of the object at JSON pointer `at`.
fn set(doc: &mut Value, at: &str, key: &str, value: Value) {
    let object = doc
        .pointer_mut(at)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {at}"));
    object.insert(key.to_owned(), value);
}

/// Removes member `key` of the object at JSON pointer `at`.
fn remove(doc: &mut Value, at: &str, key: &str) {
    let object = doc.pointer_mut(at).and_then(Value::as_object_mut).unwrap();
    assert!(object.remove(key).is_some(), "no {key} at {at}");
}

const EX_OIDC_PTR: &str = "/policies/orders-v1/strategies/0/configs/openid-connect";

fn parse(doc: &Value) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
    Config::parse(doc.to_string().as_bytes())
}

/// A document that must load, with its warnings.
fn load_warned(doc: &Value) -> (Config, Vec<Problem>) {
    match parse(doc) {
        Ok(ok) => ok,
        Err(errors) => panic!("refused: {errors:#?}"),
    }
}

/// A document that must load without warnings.
fn load(doc: &Value) -> Config {
    let (config, warnings) = load_warned(doc);
    assert_eq!(warnings, vec![]);
    config
}

/// A document that must be refused: its errors as `path: message`.
fn errors(doc: &Value) -> Vec<String> {
    errors_of(&doc.to_string())
}

fn errors_of(text: &str) -> Vec<String> {
    match Config::parse(text.as_bytes()) {
        Ok((config, _)) => panic!("accepted: {config:#?}"),
        Err(errors) => errors.iter().map(Problem::to_string).collect(),
    }
}

fn error_paths(doc: &Value) -> Vec<String> {
    match parse(doc) {
        Ok((config, _)) => panic!("accepted: {config:#?}"),
        Err(errors) => errors.into_iter().map(|e| e.path).collect(),
    }
}

fn problem(path: &str, message: &str) -> Problem {
    Problem {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A minimal valid `openid-connect` configuration.
fn oidc_config() -> Value {
    json!({
        "issuer": "http://127.0.0.1:3000",
        "credential_claim": ["client_id"],
        "scopes": ["openid"],
        "auth_methods": ["bearer"]
    })
}

/// `oidc_config()` with `extra` members added.
fn oidc_config_with(extra: Value) -> Value {
    let mut c = oidc_config();
    for (k, v) in extra.as_object().unwrap() {
        set(&mut c, "", k, v.clone());
    }
    c
}

fn oidc_strategy(id: &str, config: Value) -> Value {
    json!({"id": id, "strategy_type": "openid_connect", "configs": {"openid-connect": config}})
}

fn key_auth_strategy(id: &str, config: Value) -> Value {
    json!({"id": id, "strategy_type": "key_auth", "configs": {"key-auth": config}})
}

/// Single-policy form with these strategies.
fn single(strategies: Value) -> Value {
    json!({"policy": {"strategies": strategies}})
}

/// Single-policy form with these strategies, a scope, and one application registered under
/// the first strategy (key_auth strategies need applications).
fn single_with_app(strategies: Value) -> Value {
    let id = strategies[0]["id"].as_str().unwrap().to_owned();
    // A key_auth application's client_id is the SHA-256 hex of its key.
    let client_id = if strategies[0]["strategy_type"] == "key_auth" {
        crate::engine::sha256_hex(b"c1")
    } else {
        "c1".to_owned()
    };
    json!({
        "policy": {"scope": "orders-v1", "strategies": strategies},
        "applications": [app("a1", &client_id, &id)],
    })
}

/// Single-policy form with one openid-connect strategy configured by `config`.
fn single_oidc(config: Value) -> Value {
    single(json!([oidc_strategy("s", config)]))
}

fn oidc(s: &Strategy) -> &OidcStrategy {
    match s {
        Strategy::OpenIdConnect(o) => o,
        other => panic!("not openid_connect: {other:?}"),
    }
}

fn key_auth_of(s: &Strategy) -> &KeyAuthStrategy {
    match s {
        Strategy::KeyAuth(k) => k,
        other => panic!("not key_auth: {other:?}"),
    }
}

/// The only strategy of a single-policy configuration.
fn only_oidc(config: &Config) -> &OidcStrategy {
    assert_eq!(config.policies.len(), 1);
    assert_eq!(config.policies[0].strategies.len(), 1);
    oidc(&config.policies[0].strategies[0])
}

/// The name of the policy guarding `route`, checking that the index names that policy.
fn routed<'a>(config: &'a Config, route: Option<&str>) -> Option<&'a str> {
    let (index, policy) = config.policy_for(route)?;
    assert!(std::ptr::eq(&config.policies[index], policy));
    Some(policy.name.as_str())
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

// ---- the example ----

#[test]
fn example_config_compiles() {
    let config = load(&example());

    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.policies.len(), 1);
    let policy = &config.policies[0];
    assert_eq!(policy.name, "orders-v1");
    assert_eq!(policy.scope.as_deref(), Some("orders-v1"));
    assert!(!policy.hide_credentials);
    assert_eq!(policy.strategies.len(), 1);

    let s = oidc(&policy.strategies[0]);
    assert_eq!(s.id, "s-oidc");
    assert_eq!(s.issuer, 0);
    assert_eq!(s.issuers_allowed, strings(&["http://127.0.0.1:3000"]));
    assert_eq!(s.credential_claim, strings(&["client_id"]));
    assert_eq!(s.scopes, strings(&["orders:read"]));
    assert_eq!(
        s.auth_methods,
        AuthMethods {
            bearer: true,
            client_credentials: false,
            introspection: false
        }
    );
    assert_eq!(s.scopes_required, vec![strings(&["orders:read"])]);
    assert_eq!(s.scopes_claim, strings(&["scope"]));
    assert_eq!(
        s.audience_required,
        vec![strings(&["https://api.example.com"])]
    );
    assert_eq!(s.audience_claim, strings(&["aud"]));
    assert_eq!(s.leeway, 0);
    assert!(!s.enable_hs_signatures);
    assert!(
        !s.require_at_jwt,
        "JWT and at+jwt both accepted by default, as Kong"
    );
    assert!(!s.hide_credentials);
    assert_eq!(s.upstream_headers, vec![]);
    assert_eq!(s.token_endpoint, None);
    assert_eq!(s.introspection_endpoint, None);
    assert_eq!(s.client, None);
    assert!(!s.introspect_jwt_tokens);
    assert_eq!(s.cache_ttl_s, 3600);

    assert_eq!(
        config.issuers,
        vec![Issuer {
            issuer: "http://127.0.0.1:3000".into(),
            names: strings(&["http://127.0.0.1:3000"]),
            discovery: Url {
                https: false,
                authority: "127.0.0.1:3000".into(),
                path: "/.well-known/openid-configuration".into(),
            },
            timeout_ms: 10_000,
            cache_ttl_s: 3600,
            rediscovery_s: 30,
            max_stale_s: 3600,
        }]
    );
    assert_eq!(config.strategy_ids().collect::<Vec<_>>(), vec!["s-oidc"]);

    let apps = config.applications.as_ref().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(
        apps.find("abc"),
        Some(&Application {
            id: "app-1".into(),
            client_id: "abc".into(),
            auth_strategy_id: "s-oidc".into(),
            scopes: strings(&["orders-v1"]),
            developer_id: Some("dev-1".into()),
            portal_id: Some("portal-1".into()),
            organization_id: Some("org-1".into()),
        })
    );
}

#[test]
fn example_config_guards_only_its_route() {
    let config = load(&example());
    assert_eq!(routed(&config, Some("orders")), Some("orders-v1"));
    assert_eq!(routed(&config, Some("Orders")), None);
    assert_eq!(routed(&config, Some("other")), None);
    assert_eq!(routed(&config, None), None);
}

#[test]
fn example_config_maps_its_idp_to_a_cluster() {
    let config = load(&example());
    let discovery = &config.issuers[0].discovery;
    assert_eq!(config.upstream_for(discovery), "idp");
    assert_eq!(
        config.upstream_for(&url("http://127.0.0.1:3000/jwks")),
        "idp"
    );
}

// ---- policies and routes ----

#[test]
fn single_policy_form_guards_every_route() {
    let config = load(&single_oidc(oidc_config()));
    assert_eq!(config.policies.len(), 1);
    assert_eq!(config.policies[0].name, "policy");
    assert_eq!(config.policies[0].scope, None);
    assert_eq!(routed(&config, None), Some("policy"));
    assert_eq!(routed(&config, Some("x")), Some("policy"));
    assert_eq!(routed(&config, Some("")), Some("policy"));
    assert_eq!(config.policy_for(Some("x")).unwrap().0, 0);
}

#[test]
fn single_policy_form_refuses_routes_and_default_policy() {
    let mut doc = single_oidc(oidc_config());
    set(&mut doc, "", "routes", json!({"r": "policy"}));
    set(&mut doc, "", "default_policy", json!("policy"));
    assert_eq!(
        errors(&doc),
        vec![
            "$.routes: only allowed with \"policies\"",
            "$.default_policy: only allowed with \"policies\"",
        ]
    );
}

#[test]
fn routes_choose_policies_and_default_policy_takes_the_rest() {
    let doc = json!({
        "policies": {
            "a": {"strategies": [oidc_strategy("s1", oidc_config())]},
            "b": {"strategies": [oidc_strategy("s2", oidc_config())], "hide_credentials": true},
        },
        "routes": {"ra": "a", "rb": "b", "ra2": "a"},
        "default_policy": "b",
    });
    let config = load(&doc);
    assert_eq!(config.policies.len(), 2);
    assert_eq!(routed(&config, Some("ra")), Some("a"));
    assert_eq!(routed(&config, Some("ra2")), Some("a"));
    assert_eq!(routed(&config, Some("rb")), Some("b"));
    assert_eq!(routed(&config, Some("unlisted")), Some("b"));
    assert_eq!(routed(&config, None), Some("b"));
    assert!(config.policy_for(Some("rb")).unwrap().1.hide_credentials);
    assert!(!config.policy_for(Some("ra")).unwrap().1.hide_credentials);
}

#[test]
fn route_without_policy_and_without_default_has_none() {
    let doc = json!({
        "policies": {"a": {"strategies": [oidc_strategy("s1", oidc_config())]}},
        "routes": {"ra": "a"},
    });
    let config = load(&doc);
    assert_eq!(routed(&config, Some("ra")), Some("a"));
    assert_eq!(routed(&config, Some("rb")), None);
    assert_eq!(routed(&config, None), None);

    // No routes at all: nothing is guarded, everything is denied.
    let doc = json!({"policies": {"a": {"strategies": [oidc_strategy("s1", oidc_config())]}}});
    let config = load(&doc);
    assert_eq!(routed(&config, Some("ra")), None);
    assert_eq!(routed(&config, None), None);
}

#[test]
fn routes_and_default_policy_must_name_a_policy() {
    let mut doc = example();
    set(&mut doc, "/routes", "my route", json!("orders-v2"));
    set(&mut doc, "", "default_policy", json!("nope"));
    assert_eq!(
        errors(&doc),
        vec![
            "$.routes[\"my route\"]: names no policy: \"orders-v2\"",
            "$.default_policy: names no policy: \"nope\"",
        ]
    );
}

#[test]
fn policy_and_policies_together_are_refused() {
    let mut doc = example();
    set(
        &mut doc,
        "",
        "policy",
        json!({"strategies": [oidc_strategy("s", oidc_config())]}),
    );
    remove(&mut doc, "", "routes");
    remove(&mut doc, "", "default_policy");
    remove(&mut doc, "", "applications");
    assert_eq!(
        errors(&doc),
        vec!["$: give either \"policy\" or \"policies\", not both"]
    );
}

#[test]
fn a_policy_is_required() {
    assert_eq!(
        errors(&json!({})),
        vec!["$: one of \"policy\" or \"policies\" is required"]
    );
    assert_eq!(
        errors(&json!({"policy": null})),
        vec!["$: one of \"policy\" or \"policies\" is required"]
    );
    assert_eq!(
        errors(&json!({"policies": {}})),
        vec!["$.policies: must name at least one policy"]
    );
}

#[test]
fn a_policy_needs_at_least_one_strategy() {
    assert_eq!(
        errors(&json!({"policy": {}})),
        vec!["$.policy.strategies: is required"]
    );
    assert_eq!(
        errors(&single(json!([]))),
        vec!["$.policy.strategies: must list at least one strategy"]
    );
}

// ---- JSON itself ----

#[test]
fn invalid_json_is_refused_at_the_root() {
    for text in ["", "{", "{\"policy\": }", "{} {}", "nope"] {
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
        assert!(
            errors[0].starts_with("$: is not valid JSON: "),
            "{text:?}: {errors:?}"
        );
    }
    match Config::parse(b"{\"policy\": \"\xe9\"}") {
        Err(errors) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].path, "$");
        }
        Ok(_) => panic!("accepted invalid UTF-8"),
    }
}

#[test]
fn duplicate_member_names_are_refused_at_the_root() {
    let policy = r#"{"strategies": [{"id": "s", "strategy_type": "key_auth", "configs": {"key-auth": {}}}]}"#;
    let errors = errors_of(&format!(r#"{{"policy": {policy}, "policy": {policy}}}"#));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("$: is not valid JSON: duplicate member name \"policy\""),
        "{errors:?}"
    );
    // Also deep inside.
    let errors = errors_of(
        r#"{"policy": {"strategies": [{"id": "s", "id": "t", "strategy_type": "key_auth", "configs": {"key-auth": {}}}]}}"#,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("$: is not valid JSON: duplicate member name \"id\""),
        "{errors:?}"
    );
}

#[test]
fn the_document_must_be_an_object() {
    assert_eq!(
        errors(&json!([])),
        vec!["$: must be an object, not an array"]
    );
    assert_eq!(
        errors(&json!("x")),
        vec!["$: must be an object, not a string"]
    );
    assert_eq!(errors(&json!(null)), vec!["$: must be an object, not null"]);
}

// ---- unknown fields ----

#[test]
fn unknown_openid_connect_fields_are_accepted_with_one_warning_each() {
    let mut doc = example();
    set(&mut doc, EX_OIDC_PTR, "some_field", json!(1));
    set(&mut doc, EX_OIDC_PTR, "session_secret", json!("x"));
    set(
        &mut doc,
        EX_OIDC_PTR,
        "redirect_uri",
        json!(["http://x/cb"]),
    );
    let (config, warnings) = load_warned(&doc);
    assert_eq!(
        warnings,
        vec![
            problem(&format!("{EX_OIDC}.redirect_uri"), UNUSED_FIELD),
            problem(&format!("{EX_OIDC}.session_secret"), UNUSED_FIELD),
            problem(&format!("{EX_OIDC}.some_field"), UNUSED_FIELD),
        ]
    );
    assert_eq!(
        warnings[2].path,
        "$.policies[\"orders-v1\"].strategies[0].configs[\"openid-connect\"].some_field"
    );
    assert_eq!(only_oidc(&config).id, "s-oidc");
}

#[test]
fn unknown_openid_connect_field_names_are_quoted_in_paths() {
    let (_, warnings) = load_warned(&single_oidc(oidc_config_with(json!({"x-y": 1}))));
    assert_eq!(
        warnings,
        vec![problem(&format!("{OIDC}[\"x-y\"]"), UNUSED_FIELD)]
    );
}

#[test]
fn null_fields_count_as_absent_and_are_not_unknown() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "leeway": null,
        "scopes_required": null,
        "verify_signature": null,
        "ignore_signature": null,
    }))));
    assert_eq!(only_oidc(&config).leeway, 0);
    assert_eq!(
        only_oidc(&config).scopes_required,
        Vec::<Vec<String>>::new()
    );
}

#[test]
fn unknown_top_level_field_is_refused() {
    let mut doc = example();
    set(&mut doc, "", "polices", json!({}));
    assert_eq!(errors(&doc), vec!["$.polices: unknown field"]);
}

#[test]
fn unknown_policy_field_is_refused() {
    let mut doc = example();
    set(&mut doc, "/policies/orders-v1", "scopes", json!(["x"]));
    assert_eq!(
        errors(&doc),
        vec![format!("{EX_POLICY}.scopes: unknown field")]
    );
}

#[test]
fn unknown_strategy_field_is_refused() {
    let mut doc = example();
    set(
        &mut doc,
        "/policies/orders-v1/strategies/0",
        "config",
        json!({}),
    );
    assert_eq!(
        errors(&doc),
        vec![format!("{EX_STRATEGY}.config: unknown field")]
    );
}

#[test]
fn unknown_configs_member_is_refused() {
    let mut doc = example();
    set(
        &mut doc,
        "/policies/orders-v1/strategies/0/configs",
        "key-auth",
        json!({}),
    );
    assert_eq!(
        errors(&doc),
        vec![format!(
            "{EX_STRATEGY}.configs[\"key-auth\"]: unknown field"
        )]
    );
}

#[test]
fn unknown_application_field_is_refused() {
    let mut doc = example();
    set(&mut doc, "/applications/0", "secret", json!("x"));
    assert_eq!(
        errors(&doc),
        vec!["$.applications[0].secret: unknown field"]
    );
}

#[test]
fn unknown_limits_field_is_refused() {
    let mut doc = example();
    set(&mut doc, "", "limits", json!({"max_token_size": 1000}));
    assert_eq!(errors(&doc), vec!["$.limits.max_token_size: unknown field"]);
}

#[test]
fn unknown_key_auth_field_is_refused() {
    let doc = single_with_app(json!([key_auth_strategy(
        "k",
        json!({"hide_credentials": true})
    )]));
    assert_eq!(
        errors(&doc),
        vec!["$.policy.strategies[0].configs[\"key-auth\"].hide_credentials: unknown field"]
    );
}

#[test]
fn konnect_metadata_is_accepted_silently() {
    let mut strategy = oidc_strategy("s", oidc_config());
    for (k, v) in [
        ("name", json!("orders oidc")),
        ("display_name", json!("Orders")),
        ("dcr_provider_id", json!("d-1")),
        (
            "dcr_provider",
            json!({"id": "d-1", "provider_type": "auth0"}),
        ),
        ("labels", json!({"team": "orders"})),
        ("active", json!(true)),
        ("created_at", json!("2024-01-01T00:00:00Z")),
        ("updated_at", json!("2024-01-02T00:00:00Z")),
    ] {
        set(&mut strategy, "", k, v);
    }
    let mut doc = single(json!([strategy]));
    set(&mut doc, "/policy", "scope", json!("orders-v1"));
    set(
        &mut doc,
        "",
        "applications",
        json!([{
            "id": "app-1", "client_id": "abc", "auth_strategy_id": "s", "scopes": ["orders-v1"],
            "name": "My app", "consumer_groups": [], "labels": {}, "created_at": "x", "updated_at": "y",
        }]),
    );
    let config = load(&doc);
    assert_eq!(only_oidc(&config).id, "s");
    assert_eq!(
        config.applications.unwrap().find("abc").unwrap().id,
        "app-1"
    );
}

// ---- wrong types ----

#[test]
fn wrong_types_are_refused_with_their_paths() {
    let mut doc = example();
    set(
        &mut doc,
        "/policies/orders-v1",
        "hide_credentials",
        json!("no"),
    );
    set(&mut doc, EX_OIDC_PTR, "scopes", json!("orders:read"));
    set(&mut doc, EX_OIDC_PTR, "credential_claim", json!([1]));
    set(&mut doc, EX_OIDC_PTR, "leeway", json!("5"));
    set(&mut doc, EX_OIDC_PTR, "enable_hs_signatures", json!(0));
    set(&mut doc, EX_OIDC_PTR, "require_at_jwt", json!("yes"));
    set(&mut doc, "/applications/0", "portal_id", json!(7));
    set(&mut doc, "", "upstreams", json!(["idp"]));
    assert_eq!(
        errors(&doc),
        vec![
            format!("{EX_POLICY}.hide_credentials: must be a boolean, not a string"),
            format!("{EX_OIDC}.credential_claim[0]: must be a string, not a number"),
            format!("{EX_OIDC}.scopes: must be an array of strings, not a string"),
            format!("{EX_OIDC}.leeway: must be a whole number, not a string"),
            format!("{EX_OIDC}.enable_hs_signatures: must be a boolean, not a number"),
            format!("{EX_OIDC}.require_at_jwt: must be a boolean, not a string"),
            "$.upstreams: must be an object mapping host:port to a cluster name".to_owned(),
            "$.applications[0].portal_id: must be a string, not a number".to_owned(),
        ]
    );
}

#[test]
fn wrong_container_types_are_refused_with_their_paths() {
    assert_eq!(
        errors(&json!({"policies": []})),
        vec!["$.policies: must be an object mapping policy names to policies"]
    );
    assert_eq!(
        errors(&json!({"policies": {"a": []}})),
        vec!["$.policies.a: must be an object, not an array"]
    );
    assert_eq!(
        errors(&json!({"policy": {"strategies": {}}})),
        vec!["$.policy.strategies: must be an array of Konnect auth strategy objects"]
    );
    assert_eq!(
        errors(&single(json!(["s"]))),
        vec!["$.policy.strategies[0]: must be an object, not a string"]
    );
    let mut doc = example();
    set(&mut doc, "", "routes", json!(["orders"]));
    set(&mut doc, "", "applications", json!({}));
    set(&mut doc, "", "limits", json!(1));
    assert_eq!(
        errors(&doc),
        vec![
            "$.limits: must be an object, not a number",
            "$.routes: must be an object mapping route names to policy names",
            "$.applications: must be an array of applications",
        ]
    );
}

#[test]
fn numbers_must_be_whole_and_non_negative() {
    for (value, shown) in [
        (json!(-1), "-1"),
        (json!(1.5), "1.5"),
        (json!(true), "a boolean"),
    ] {
        assert_eq!(
            errors(&single_oidc(oidc_config_with(json!({"leeway": value})))),
            vec![format!(
                "{OIDC}.leeway: must be a whole number, not {shown}"
            )]
        );
    }
}

#[test]
fn strings_must_be_non_empty_without_control_characters() {
    let mut doc = example();
    set(&mut doc, "/policies/orders-v1", "scope", json!(""));
    set(&mut doc, "/routes", "orders", json!("orders-v1\n"));
    remove(&mut doc, "", "applications");
    assert_eq!(
        errors(&doc),
        vec![
            format!("{EX_POLICY}.scope: must not be empty"),
            "$.routes.orders: must not contain control characters".to_owned(),
        ]
    );
}

// ---- checks that cannot be turned off ----

#[test]
fn turning_off_signature_verification_is_refused() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(
            json!({"verify_signature": false})
        ))),
        vec![format!(
            "{OIDC}.verify_signature: is refused: false would accept forged tokens"
        )]
    );
}

#[test]
fn requirements_this_filter_does_not_check_are_refused_not_ignored() {
    let asking = json!({
        "groups_required": ["admin"],
        "roles_required": ["ops"],
        "claims_forbidden": ["act"],
        "bearer_token_param_type": ["header"],
        "client_credentials_param_type": ["body"],
        "proof_of_possession_mtls": "strict",
        "proof_of_possession_dpop": "optional",
    });
    let mut found = errors(&single_oidc(oidc_config_with(asking)));
    found.sort();
    let unchecked = "is refused unless empty: this filter does not check it, so tokens that fail it would be let through";
    let pop = "is refused unless \"off\": this filter does not check proof of possession, so unbound tokens would be let through";
    let narrower = "this filter takes the credential from each of them, so a narrower list would not be enforced";
    assert_eq!(
        found,
        vec![
            format!("{OIDC}.bearer_token_param_type: is refused unless it includes header and query: {narrower}"),
            format!("{OIDC}.claims_forbidden: {unchecked}"),
            format!("{OIDC}.client_credentials_param_type: is refused unless it includes header: {narrower}"),
            format!("{OIDC}.groups_required: {unchecked}"),
            format!("{OIDC}.proof_of_possession_dpop: {pop}"),
            format!("{OIDC}.proof_of_possession_mtls: {pop}"),
            format!("{OIDC}.roles_required: {unchecked}"),
        ]
    );
    // Asking for nothing more than the filter does (as Konnect's defaults do) loads.
    let nothing_more = json!({
        "groups_required": [],
        "roles_required": null,
        "claims_forbidden": [],
        "bearer_token_param_type": ["header", "query", "body"],
        "client_credentials_param_type": ["header", "body"],
        "proof_of_possession_mtls": "off",
        "proof_of_possession_dpop": "off",
    });
    let (_, warnings) = Config::parse(
        single_oidc(oidc_config_with(nothing_more))
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        errors(&single_oidc(oidc_config_with(
            json!({"groups_required": "admin", "proof_of_possession_dpop": false})
        ))),
        vec![
            format!("{OIDC}.groups_required: must be an array"),
            format!("{OIDC}.proof_of_possession_dpop: must be a string"),
        ]
    );
}

#[test]
fn turning_off_claim_verification_is_refused() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({"verify_claims": false})))),
        vec![format!(
            "{OIDC}.verify_claims: is refused: false would accept expired tokens and tokens of other issuers"
        )]
    );
}

#[test]
fn verification_switches_must_be_booleans() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(
            json!({"verify_signature": "false", "verify_claims": 0})
        ))),
        vec![
            format!("{OIDC}.verify_signature: must be a boolean"),
            format!("{OIDC}.verify_claims: must be a boolean"),
        ]
    );
}

#[test]
fn ignoring_signatures_is_refused() {
    for value in [
        json!(["bearer"]),
        json!(["client_credentials", "session"]),
        json!("bearer"),
        json!(true),
    ] {
        assert_eq!(
            errors(&single_oidc(oidc_config_with(json!({"ignore_signature": value})))),
            vec![format!(
                "{OIDC}.ignore_signature: is refused: ignoring signatures would accept forged tokens"
            )]
        );
    }
}

#[test]
fn verification_left_on_is_accepted_silently() {
    load(&single_oidc(oidc_config_with(json!({
        "verify_signature": true,
        "verify_claims": true,
        "ignore_signature": [],
    }))));
}

// ---- several problems ----

#[test]
fn every_problem_is_reported_at_once() {
    let mut doc = example();
    set(&mut doc, "", "limits", json!({"max_token_bytes": 1}));
    set(
        &mut doc,
        "/policies/orders-v1",
        "hide_credentials",
        json!(1),
    );
    set(&mut doc, EX_OIDC_PTR, "leeway", json!(99_999));
    set(&mut doc, EX_OIDC_PTR, "verify_signature", json!(false));
    set(
        &mut doc,
        EX_OIDC_PTR,
        "auth_methods",
        json!(["bearer", "magic"]),
    );
    set(&mut doc, "/routes", "orders", json!("orders-v2"));
    remove(&mut doc, "/applications/0", "client_id");
    set(&mut doc, "", "extra", json!(true));
    assert_eq!(
        error_paths(&doc),
        vec![
            "$.limits.max_token_bytes".to_owned(),
            format!("{EX_POLICY}.hide_credentials"),
            format!("{EX_OIDC}.leeway"),
            format!("{EX_OIDC}.verify_signature"),
            format!("{EX_OIDC}.auth_methods[1]"),
            "$.routes.orders".to_owned(),
            "$.applications[0].client_id".to_owned(),
            "$.extra".to_owned(),
        ]
    );
}

#[test]
fn missing_openid_connect_fields_are_all_reported() {
    assert_eq!(
        errors(&single_oidc(json!({}))),
        vec![
            format!("{OIDC}.issuer: is required"),
            format!("{OIDC}.credential_claim: is required"),
            format!("{OIDC}.scopes: is required"),
            format!("{OIDC}.auth_methods: is required"),
        ]
    );
}

#[test]
fn missing_strategy_fields_are_all_reported() {
    assert_eq!(
        errors(&single(json!([{}]))),
        vec![
            "$.policy.strategies[0].id: is required",
            "$.policy.strategies[0].strategy_type: is required",
            "$.policy.strategies[0].configs: is required",
        ]
    );
    assert_eq!(
        errors(&single(
            json!([{"id": "s", "strategy_type": "openid_connect", "configs": {}}])
        )),
        vec!["$.policy.strategies[0].configs[\"openid-connect\"]: is required"]
    );
    assert_eq!(
        errors(&single(
            json!([{"id": "s", "strategy_type": "key_auth", "configs": {}}])
        )),
        vec!["$.policy.strategies[0].configs[\"key-auth\"]: is required"]
    );
}

// ---- issuers ----

#[test]
fn issuer_given_as_discovery_url_is_split() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "issuer": "http://127.0.0.1:3000/.well-known/openid-configuration"
    }))));
    assert_eq!(
        config.issuers,
        vec![Issuer {
            issuer: "http://127.0.0.1:3000".into(),
            names: strings(&["http://127.0.0.1:3000", "http://127.0.0.1:3000/"]),
            discovery: Url {
                https: false,
                authority: "127.0.0.1:3000".into(),
                path: "/.well-known/openid-configuration".into(),
            },
            timeout_ms: 10_000,
            cache_ttl_s: 3600,
            rediscovery_s: 30,
            max_stale_s: 3600,
        }]
    );
    // Its tokens may name the issuer with or without a trailing slash, as its discovery
    // document does.
    assert_eq!(
        only_oidc(&config).issuers_allowed,
        strings(&["http://127.0.0.1:3000", "http://127.0.0.1:3000/"])
    );
}

#[test]
fn issuer_with_a_path_keeps_it() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "issuer": "https://idp.example.com/realms/r1/.well-known/openid-configuration"
    }))));
    assert_eq!(
        config.issuers[0].issuer,
        "https://idp.example.com/realms/r1"
    );
    assert_eq!(
        config.issuers[0].discovery,
        Url {
            https: true,
            authority: "idp.example.com".into(),
            path: "/realms/r1/.well-known/openid-configuration".into(),
        }
    );

    let config = load(&single_oidc(oidc_config_with(json!({
        "issuer": "https://idp.example.com/realms/r1/"
    }))));
    assert_eq!(
        config.issuers[0].issuer,
        "https://idp.example.com/realms/r1/"
    );
    assert_eq!(
        config.issuers[0].discovery.path,
        "/realms/r1/.well-known/openid-configuration"
    );
}

#[test]
fn issuer_must_be_an_http_url() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(
            json!({"issuer": "ftp://idp"})
        ))),
        vec![format!("{OIDC}.issuer: must be an http:// or https:// URL")]
    );
    assert_eq!(
        errors(&single_oidc(oidc_config_with(
            json!({"issuer": "https://u:p@idp"})
        ))),
        vec![format!("{OIDC}.issuer: must not contain user information")]
    );
}

#[test]
fn issuer_must_not_have_a_query() {
    // An issuer has no query (OpenID Connect Discovery §2): the discovery path appended to one
    // would land inside the query, and discovery would fetch the IdP's root instead.
    for issuer in [
        "https://idp.example.com?tenant=a",
        "https://idp.example.com/realms/r1?x",
        "https://idp.example.com/.well-known/openid-configuration?tenant=a",
    ] {
        assert_eq!(
            errors(&single_oidc(oidc_config_with(json!({ "issuer": issuer })))),
            vec![format!(
                "{OIDC}.issuer: must not contain a query (an issuer is a URL without one)"
            )],
            "{issuer:?}"
        );
    }
}

#[test]
fn issuer_host_must_be_a_name_or_address() {
    // A host with Unicode whitespace or characters no resolver takes would load and send
    // every discovery to an authority the proxy cannot dial (Kong traps on one it refuses).
    for issuer in [
        "https://idp.example.com\u{a0}",
        "https://\u{3000}",
        "https://idp,example.com",
        "https://idp%20example.com",
        "https://idp\u{e9}.example.com:443",
    ] {
        assert_eq!(
            errors(&single_oidc(oidc_config_with(json!({ "issuer": issuer })))),
            vec![format!("{OIDC}.issuer: has an invalid host")],
            "{issuer:?}"
        );
    }
    for issuer in [
        "https://idp.example.com",
        "http://127.0.0.1:3000",
        "http://[::1]:3000",
        "https://idp_1.internal-zone.example:8443/realms/a",
    ] {
        assert!(parse(&single_oidc(oidc_config_with(json!({ "issuer": issuer })))).is_ok());
    }
}

#[test]
fn strategies_with_one_issuer_share_its_entry() {
    let doc = json!({
        "policies": {
            "a": {"strategies": [oidc_strategy("s1", oidc_config())]},
            "b": {"strategies": [oidc_strategy("s2", oidc_config_with(json!({
                "issuer": "http://127.0.0.1:3000/.well-known/openid-configuration",
                "scopes": ["other"],
            })))]},
            "c": {"strategies": [oidc_strategy("s3", oidc_config_with(json!({
                "issuer": "https://other.example.com",
            })))]},
        },
    });
    let config = load(&doc);
    assert_eq!(config.issuers.len(), 2);
    assert_eq!(config.issuers[0].issuer, "http://127.0.0.1:3000");
    assert_eq!(config.issuers[1].issuer, "https://other.example.com");
    let issuer_of = |route_policy: &str| {
        let p = config
            .policies
            .iter()
            .find(|p| p.name == route_policy)
            .unwrap();
        oidc(&p.strategies[0]).issuer
    };
    assert_eq!(issuer_of("a"), 0);
    assert_eq!(issuer_of("b"), 0);
    assert_eq!(issuer_of("c"), 1);
}

#[test]
fn one_issuer_with_two_fetch_settings_is_refused() {
    let doc = single(json!([
        oidc_strategy("s1", oidc_config_with(json!({"timeout": 1000}))),
        oidc_strategy("s2", oidc_config_with(json!({"timeout": 2000}))),
    ]));
    assert_eq!(
        errors(&doc),
        vec!["$.policy.strategies[1].configs[\"openid-connect\"].issuer: is used by another strategy with a different timeout, cache_ttl, rediscovery_lifetime or keys_max_stale"]
    );
}

#[test]
fn fetch_settings_are_read() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "timeout": 500,
        "cache_ttl": 60,
        "rediscovery_lifetime": 0,
    }))));
    assert_eq!(config.issuers[0].timeout_ms, 500);
    assert_eq!(config.issuers[0].cache_ttl_s, 60);
    assert_eq!(config.issuers[0].rediscovery_s, 0);
}

#[test]
fn fetch_settings_out_of_range_are_refused() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "timeout": 0,
            "cache_ttl": 0,
            "rediscovery_lifetime": 86_401,
        })))),
        vec![
            format!("{OIDC}.timeout: 0 is out of range 1..=600000"),
            format!("{OIDC}.cache_ttl: 0 is out of range 1..=604800"),
            format!("{OIDC}.rediscovery_lifetime: 86401 is out of range 0..=86400"),
        ]
    );
}

// ---- openid-connect settings ----

#[test]
fn optional_openid_connect_settings_are_read() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "issuers_allowed": ["http://127.0.0.1:3000", "http://localhost:3000"],
        "scopes_claim": ["scp"],
        "audience_claim": ["azp"],
        "credential_claim": ["app", "id"],
        "enable_hs_signatures": true,
        "hide_credentials": true,
        "leeway": 3600,
    }))));
    let s = only_oidc(&config);
    assert_eq!(
        s.issuers_allowed,
        strings(&["http://127.0.0.1:3000", "http://localhost:3000"])
    );
    assert_eq!(s.scopes_claim, strings(&["scp"]));
    assert_eq!(s.audience_claim, strings(&["azp"]));
    assert_eq!(s.credential_claim, strings(&["app", "id"]));
    assert!(s.enable_hs_signatures);
    assert!(s.hide_credentials);
    assert_eq!(s.leeway, 3600);
}

#[test]
fn leeway_out_of_range_is_refused() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({"leeway": 3601})))),
        vec![format!("{OIDC}.leeway: 3601 is out of range 0..=3600")]
    );
}

#[test]
fn scopes_required_entries_are_alternatives_of_space_separated_sets() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "scopes_required": ["a b", "c"],
        "audience_required": ["  x   y ", "z"],
    }))));
    let s = only_oidc(&config);
    assert_eq!(
        s.scopes_required,
        vec![strings(&["a", "b"]), strings(&["c"])]
    );
    assert_eq!(
        s.audience_required,
        vec![strings(&["x", "y"]), strings(&["z"])]
    );
}

#[test]
fn blank_required_entries_are_refused() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "scopes_required": ["  "],
            "audience_required": ["a", " "],
        })))),
        vec![
            format!("{OIDC}.scopes_required[0]: must name at least one value"),
            format!("{OIDC}.audience_required[1]: must name at least one value"),
        ]
    );
}

#[test]
fn empty_required_lists_require_nothing() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "scopes_required": [],
        "audience_required": [],
    }))));
    assert_eq!(
        only_oidc(&config).scopes_required,
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        only_oidc(&config).audience_required,
        Vec::<Vec<String>>::new()
    );
}

#[test]
fn upstream_headers_pair_claims_with_lower_cased_names() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "upstream_headers_claims": ["sub", "email"],
        "upstream_headers_names": ["X-Subject", "x-email"],
    }))));
    assert_eq!(
        only_oidc(&config).upstream_headers,
        vec![
            (strings(&["sub"]), "x-subject".to_owned()),
            (strings(&["email"]), "x-email".to_owned()),
        ]
    );
}

#[test]
fn a_policy_knows_every_header_its_strategies_forward() {
    // Whichever strategy lets a request in, the client's copies of these go.
    let forwarding = |id: &str, names: Value| {
        let claims: Vec<&str> = names.as_array().unwrap().iter().map(|_| "sub").collect();
        oidc_strategy(
            id,
            oidc_config_with(json!({
                "upstream_headers_claims": claims,
                "upstream_headers_names": names,
            })),
        )
    };
    let config = load(&single(json!([
        forwarding("a", json!(["X-Subject", "x-tenant"])),
        forwarding("b", json!(["x-subject", "X-Email"])),
        oidc_strategy("c", oidc_config()),
    ])));
    assert_eq!(
        config.policies[0].forwarded_headers,
        strings(&["x-subject", "x-tenant", "x-email"])
    );
}

#[test]
fn upstream_headers_of_different_lengths_are_refused() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "upstream_headers_claims": ["sub", "email"],
            "upstream_headers_names": ["x-subject"],
        })))),
        vec![format!(
            "{OIDC}.upstream_headers_names: must have one entry for each entry of upstream_headers_claims"
        )]
    );
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "upstream_headers_names": ["x-subject"],
        })))),
        vec![format!(
            "{OIDC}.upstream_headers_names: must have one entry for each entry of upstream_headers_claims"
        )]
    );
}

#[test]
fn upstream_header_names_must_be_header_names() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "upstream_headers_claims": ["sub", "email"],
            "upstream_headers_names": ["x-subject", "x email"],
        })))),
        vec![format!(
            "{OIDC}.upstream_headers_names[1]: must be a valid HTTP header name"
        )]
    );
}

/// One header, one claim: two entries naming one header (by case, or `_` for `-`, as many
/// upstreams read it) would send two values under it.
#[test]
fn two_claims_cannot_be_forwarded_under_one_header() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "upstream_headers_claims": ["sub", "email", "groups", "roles"],
            "upstream_headers_names": ["x-subject", "x-email", "X-Subject", "x_email"],
        })))),
        vec![
            format!("{OIDC}.upstream_headers_names[2]: names the same header as upstream_headers_names[0]"),
            format!("{OIDC}.upstream_headers_names[3]: names the same header as upstream_headers_names[1]"),
        ]
    );
}

#[test]
fn a_claim_cannot_be_forwarded_as_identity_credentials_or_framing() {
    let names = [
        "X-Application-ID",
        "x_credential_identifier",
        "Authorization",
        "host",
        "Content-Length",
        "transfer_encoding",
        "Proxy-Authorization",
        "proxy_authenticate",
    ];
    let claims: Vec<&str> = names.iter().map(|_| "sub").collect();
    let errors = errors(&single_oidc(oidc_config_with(json!({
        "upstream_headers_claims": claims,
        "upstream_headers_names": names,
    }))));
    let identity = "is one of the application identity headers the filter sets";
    let other = "is a header a token claim must not set (credentials, routing or framing)";
    let expected: Vec<String> = [identity, identity, other, other, other, other, other, other]
        .iter()
        .enumerate()
        .map(|(i, why)| format!("{OIDC}.upstream_headers_names[{i}]: {why}"))
        .collect();
    assert_eq!(errors, expected);
    // Names that only resemble them are fine.
    assert!(Config::parse(
        single_oidc(oidc_config_with(json!({
            "upstream_headers_claims": ["sub", "sub"],
            "upstream_headers_names": ["x-application-ids", "x-authorization-subject"],
        })))
        .to_string()
        .as_bytes()
    )
    .is_ok());
}

// ---- auth methods ----

fn with_methods(methods: Value) -> Value {
    single_oidc(oidc_config_with(json!({"auth_methods": methods})))
}

#[test]
fn unknown_auth_method_is_refused() {
    assert_eq!(
        errors(&with_methods(json!(["bearer", "magic"]))),
        vec![format!(
            "{OIDC}.auth_methods[1]: unknown auth method \"magic\""
        )]
    );
}

#[test]
fn auth_methods_naming_nothing_enforced_are_refused() {
    let nothing = format!(
        "{OIDC}.auth_methods: names no auth method this filter enforces (bearer, client_credentials, introspection)"
    );
    assert_eq!(
        errors(&with_methods(json!(["session"]))),
        vec![nothing.clone()]
    );
    assert_eq!(
        errors(&with_methods(json!(["password", "authorization_code"]))),
        vec![nothing.clone()]
    );
    assert_eq!(errors(&with_methods(json!([]))), vec![nothing]);
}

#[test]
fn ignored_auth_methods_are_warned_about() {
    let (config, warnings) =
        load_warned(&with_methods(json!(["session", "bearer", "kong_oauth2"])));
    assert_eq!(
        warnings,
        vec![
            problem(
                &format!("{OIDC}.auth_methods[0]"),
                "auth method \"session\" does not apply to an API gateway filter; ignored"
            ),
            problem(
                &format!("{OIDC}.auth_methods[2]"),
                "auth method \"kong_oauth2\" does not apply to an API gateway filter; ignored"
            ),
        ]
    );
    assert_eq!(
        only_oidc(&config).auth_methods,
        AuthMethods {
            bearer: true,
            client_credentials: false,
            introspection: false
        }
    );
}

#[test]
fn client_credentials_is_accepted() {
    let config = load(&with_methods(json!(["bearer", "client_credentials"])));
    assert_eq!(
        only_oidc(&config).auth_methods,
        AuthMethods {
            bearer: true,
            client_credentials: true,
            introspection: false
        }
    );
}

#[test]
fn introspection_needs_the_strategy_client() {
    assert_eq!(
        errors(&with_methods(json!(["introspection"]))),
        vec![format!("{OIDC}: the introspection auth method needs client_id and client_secret (they authenticate the introspection requests)")]
    );
    let config = load(&single_oidc(oidc_config_with(json!({
        "auth_methods": ["introspection"],
        "client_id": ["rs"],
        "client_secret": ["rs-secret"],
    }))));
    assert_eq!(
        only_oidc(&config).auth_methods,
        AuthMethods {
            bearer: false,
            client_credentials: false,
            introspection: true
        }
    );
    assert_eq!(
        only_oidc(&config).client,
        Some(("rs".to_owned(), "rs-secret".to_owned()))
    );
}

#[test]
fn strategy_client_and_endpoints_are_read() {
    let config = load(&single_oidc(oidc_config_with(json!({
        "client_id": "rs",
        "client_secret": "rs-secret",
        "token_endpoint": "https://idp/oauth/token",
        "introspection_endpoint": "https://idp/oauth/introspect",
        "introspect_jwt_tokens": true,
    }))));
    let s = only_oidc(&config);
    assert_eq!(s.client, Some(("rs".to_owned(), "rs-secret".to_owned())));
    assert_eq!(s.token_endpoint, Some(url("https://idp/oauth/token")));
    assert_eq!(
        s.introspection_endpoint,
        Some(url("https://idp/oauth/introspect"))
    );
    assert!(s.introspect_jwt_tokens);
}

#[test]
fn strategy_client_needs_both_parts_and_endpoints_must_be_urls() {
    assert_eq!(
        errors(&single_oidc(oidc_config_with(json!({
            "client_id": ["rs"],
            "client_secret": [],
            "token_endpoint": "idp/token",
        })))),
        vec![
            format!("{OIDC}.token_endpoint: must be an http:// or https:// URL"),
            format!("{OIDC}.client_secret: must not be empty"),
            format!("{OIDC}: client_id and client_secret go together"),
        ]
    );
}

// ---- strategies ----

#[test]
fn key_auth_defaults_to_apikey() {
    let config = load(&single_with_app(json!([key_auth_strategy("k", json!({}))])));
    let k = key_auth_of(&config.policies[0].strategies[0]);
    assert_eq!(k.id, "k");
    assert_eq!(k.key_names, strings(&["apikey"]));
    assert_eq!(config.issuers, vec![]);
}

#[test]
fn key_auth_keeps_key_names_as_given_and_ignores_ttl() {
    // Headers match them in any case; query parameters only as written.
    let config = load(&single_with_app(json!([key_auth_strategy(
        "k",
        json!({"key_names": ["X-API-Key", "apikey"], "ttl": 30})
    )])));
    assert_eq!(
        key_auth_of(&config.policies[0].strategies[0]).key_names,
        strings(&["X-API-Key", "apikey"])
    );
}

#[test]
fn key_auth_key_names_must_be_usable_names() {
    let path = "$.policy.strategies[0].configs[\"key-auth\"].key_names";
    assert_eq!(
        errors(&single_with_app(json!([key_auth_strategy(
            "k",
            json!({"key_names": []})
        )]))),
        vec![format!("{path}: must name at least one key")]
    );
    assert_eq!(
        errors(&single_with_app(json!([key_auth_strategy(
            "k",
            json!({"key_names": ["ok", "api key", "a:b"]})
        )]))),
        vec![
            format!("{path}[1]: must be usable as a header name and a query parameter"),
            format!("{path}[2]: must be usable as a header name and a query parameter"),
        ]
    );
}

#[test]
fn key_auth_key_names_must_differ_ignoring_case() {
    // Otherwise every request with the key would carry it "twice".
    let path = "$.policy.strategies[0].configs[\"key-auth\"].key_names";
    assert_eq!(
        errors(&single_with_app(json!([key_auth_strategy(
            "k",
            json!({"key_names": ["apikey", "x-key", "ApiKey", "x-key"]})
        )]))),
        vec![
            format!(
                "{path}[2]: names the same key as an earlier entry (names are case-insensitive)"
            ),
            format!(
                "{path}[3]: names the same key as an earlier entry (names are case-insensitive)"
            ),
        ]
    );
}

#[test]
fn key_auth_without_applications_is_refused() {
    let needs = "a key_auth strategy needs \"applications\": an API key is only valid as an application's credential";
    assert_eq!(
        errors(&single(json!([
            oidc_strategy("o", oidc_config()),
            key_auth_strategy("k", json!({})),
        ]))),
        vec![format!("$.policy.strategies[1]: {needs}")]
    );
    let doc = json!({
        "policies": {
            "a": {"strategies": [oidc_strategy("o", oidc_config())]},
            "b": {"strategies": [key_auth_strategy("k", json!({}))]},
        },
    });
    assert_eq!(
        errors(&doc),
        vec![format!("$.policies.b.strategies[0]: {needs}")]
    );
}

#[test]
fn key_auth_with_an_empty_application_list_is_accepted() {
    let mut doc = single(json!([key_auth_strategy("k", json!({}))]));
    set(&mut doc, "/policy", "scope", json!("orders-v1"));
    set(&mut doc, "", "applications", json!([]));
    let config = load(&doc);
    assert!(config.applications.unwrap().is_empty());
}

#[test]
fn unknown_strategy_type_is_refused() {
    assert_eq!(
        errors(&single(json!([{"id": "s", "strategy_type": "oauth2", "configs": {}}]))),
        vec!["$.policy.strategies[0].strategy_type: unknown strategy type \"oauth2\" (expected \"openid_connect\" or \"key_auth\")"]
    );
}

#[test]
fn strategy_types_mix_in_one_policy() {
    let config = load(&single_with_app(json!([
        key_auth_strategy("k", json!({})),
        oidc_strategy("o", oidc_config()),
    ])));
    assert_eq!(config.strategy_ids().collect::<Vec<_>>(), vec!["k", "o"]);
    assert_eq!(config.policies[0].strategies[0].id(), "k");
    key_auth_of(&config.policies[0].strategies[0]);
    assert_eq!(oidc(&config.policies[0].strategies[1]).id, "o");
}

#[test]
fn one_strategy_may_serve_several_policies() {
    let shared = oidc_strategy("s", oidc_config());
    let doc = json!({
        "policies": {"a": {"strategies": [shared.clone()]}, "b": {"strategies": [shared]}},
    });
    let config = load(&doc);
    assert_eq!(config.strategy_ids().collect::<Vec<_>>(), vec!["s", "s"]);
    assert_eq!(config.issuers.len(), 1);
}

#[test]
fn one_strategy_id_with_two_meanings_is_refused() {
    let doc = json!({
        "policies": {
            "a": {"strategies": [oidc_strategy("s", oidc_config())]},
            "b": {"strategies": [oidc_strategy("s", oidc_config_with(json!({"leeway": 5})))]},
        },
    });
    assert_eq!(
        errors(&doc),
        vec!["$.policies.b.strategies[0].id: \"s\" is already used by a different strategy at $.policies.a.strategies[0]"]
    );
}

#[test]
fn one_strategy_twice_in_a_policy_is_refused() {
    let s = oidc_strategy("s", oidc_config());
    assert_eq!(
        errors(&single(json!([s.clone(), s]))),
        vec!["$.policy.strategies[1]: lists the same strategy id twice"]
    );
}

// ---- applications ----

fn app(id: &str, client_id: &str, strategy: &str) -> Value {
    json!({"id": id, "client_id": client_id, "auth_strategy_id": strategy, "scopes": ["orders-v1"]})
}

#[test]
fn applications_are_indexed_by_client_id() {
    let mut doc = example();
    set(
        &mut doc,
        "",
        "applications",
        json!([app("a1", "c1", "s-oidc"), app("a2", "c2", "s-oidc")]),
    );
    let config = load(&doc);
    let apps = config.applications.unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps.find("c1").unwrap().id, "a1");
    assert_eq!(apps.find("c2").unwrap().id, "a2");
    assert_eq!(apps.find("c2").unwrap().developer_id, None);
    assert!(apps.find("a1").is_none());
}

#[test]
fn no_applications_means_no_registry() {
    let mut doc = example();
    remove(&mut doc, "", "applications");
    remove(&mut doc, "/policies/orders-v1", "scope");
    assert!(load(&doc).applications.is_none());
}

#[test]
fn a_scope_without_applications_is_refused() {
    // Absent, or null as a nil list serializes: the scope would approve nothing and check
    // nothing, and any valid token would pass.
    let refused = vec![
        "$.policies[\"orders-v1\"].scope: needs \"applications\": a scope approves applications, and with none listed it would not be enforced",
    ];
    let mut doc = example();
    remove(&mut doc, "", "applications");
    assert_eq!(errors(&doc), refused);
    set(&mut doc, "", "applications", Value::Null);
    assert_eq!(errors(&doc), refused);
}

#[test]
fn duplicate_client_id_is_refused_at_the_second() {
    let mut doc = example();
    set(
        &mut doc,
        "",
        "applications",
        json!([
            app("a1", "c1", "s-oidc"),
            app("a2", "c2", "s-oidc"),
            app("a3", "c1", "s-oidc")
        ]),
    );
    assert_eq!(
        errors(&doc),
        vec!["$.applications[2].client_id: is also the client_id of application \"a1\""]
    );
}

/// What an application forwards upstream (`id`, `developer_id`, `portal_id`,
/// `organization_id`) and what it is found by (`client_id`) cannot begin or end with a space:
/// a header carries no such value as it is (RFC 9110 §5.5), so " a1" would reach the
/// upstream as `x-application-id: a1`, another application's identity; and a credential
/// claim with such a value is refused, so that `client_id` could never name its application.
#[test]
fn application_values_with_a_space_at_either_end_are_refused() {
    let mut doc = example();
    let mut a2 = app(" a1", "c2", "s-oidc");
    a2["developer_id"] = json!("dev ");
    a2["portal_id"] = json!(" p");
    a2["organization_id"] = json!("org-1");
    set(
        &mut doc,
        "",
        "applications",
        json!([app("a1", "c1", "s-oidc"), a2, app("a3", "c3 ", "s-oidc")]),
    );
    let why = "must not begin or end with a space (a header cannot carry it as it is)";
    assert_eq!(
        errors(&doc),
        vec![
            format!("$.applications[1].id: {why}"),
            format!("$.applications[1].developer_id: {why}"),
            format!("$.applications[1].portal_id: {why}"),
            format!("$.applications[2].client_id: {why}"),
        ]
    );
}

#[test]
fn application_naming_an_unknown_strategy_is_refused() {
    let mut doc = example();
    set(
        &mut doc,
        "/applications/0",
        "auth_strategy_id",
        json!("s-gone"),
    );
    assert_eq!(
        errors(&doc),
        vec!["$.applications[0].auth_strategy_id: names no configured strategy: \"s-gone\""]
    );
}

#[test]
fn applications_are_checked_against_strategies_listed_after_them() {
    // The applications are read as the document is parsed: the strategies they name may come
    // later in it, and an application missing a field of its own is still checked.
    let mut doc = example();
    set(
        &mut doc,
        "",
        "applications",
        json!([
            app("a1", "c1", "s-gone"),
            {"id": "a2", "auth_strategy_id": "s-gone-too", "scopes": []},
            app("a3", "c3", "s-oidc"),
        ]),
    );
    let Value::Object(members) = &doc else {
        panic!("the example is an object")
    };
    let apps_last = format!(
        "{{{},\"applications\":{}}}",
        members
            .iter()
            .filter(|(k, _)| *k != "applications")
            .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
            .collect::<Vec<_>>()
            .join(","),
        members["applications"]
    );
    assert!(apps_last.find("\"applications\"") > apps_last.find("\"policies\""));
    let expected = vec![
        "$.applications[1].client_id: is required",
        "$.applications[0].auth_strategy_id: names no configured strategy: \"s-gone\"",
        "$.applications[1].auth_strategy_id: names no configured strategy: \"s-gone-too\"",
    ];
    assert_eq!(errors_of(&apps_last), expected);
    assert_eq!(errors(&doc), expected);
}

#[test]
fn application_fields_are_required() {
    let mut doc = example();
    set(&mut doc, "", "applications", json!([{}]));
    assert_eq!(
        errors(&doc),
        vec![
            "$.applications[0].id: is required",
            "$.applications[0].client_id: is required",
            "$.applications[0].auth_strategy_id: is required",
            "$.applications[0].scopes: is required",
        ]
    );
}

#[test]
fn applications_need_every_policy_to_have_a_scope() {
    let mut doc = example();
    remove(&mut doc, "/policies/orders-v1", "scope");
    assert_eq!(
        errors(&doc),
        vec![format!("{EX_POLICY}: \"scope\" is required when applications are listed: an application is approved per scope")]
    );

    let mut doc = single_oidc(oidc_config());
    set(&mut doc, "", "applications", json!([app("a1", "c1", "s")]));
    assert_eq!(error_paths(&doc), vec!["$.policy"]);
}

// ---- upstreams ----

#[test]
fn upstreams_map_authorities_to_clusters() {
    let mut doc = example();
    set(
        &mut doc,
        "/upstreams",
        "idp.example.com:443",
        json!("outbound|443||idp"),
    );
    let config = load(&doc);
    assert_eq!(config.upstream_for(&url("http://127.0.0.1:3000/x")), "idp");
    assert_eq!(
        config.upstream_for(&url("https://idp.example.com:443/jwks")),
        "outbound|443||idp"
    );
}

#[test]
fn unmapped_authority_is_its_own_upstream() {
    let config = load(&example());
    assert_eq!(
        config.upstream_for(&url("https://idp.example.com/jwks")),
        "idp.example.com"
    );
    // Exact authority, port included.
    assert_eq!(
        config.upstream_for(&url("http://127.0.0.1:3001/x")),
        "127.0.0.1:3001"
    );
    assert_eq!(config.upstream_for(&url("http://127.0.0.1/x")), "127.0.0.1");

    let mut doc = example();
    remove(&mut doc, "", "upstreams");
    let config = load(&doc);
    assert_eq!(
        config.upstream_for(&config.issuers[0].discovery),
        "127.0.0.1:3000"
    );
}

#[test]
fn upstream_keys_must_be_authorities() {
    let mut doc = example();
    set(
        &mut doc,
        "",
        "upstreams",
        json!({"http://idp": "c", "": "c", "a b": "c", "u@h": "c", "ok:1": 5}),
    );
    assert_eq!(
        errors(&doc),
        vec![
            "$.upstreams[\"\"]: must be a URL authority (host[:port])",
            "$.upstreams[\"a b\"]: must be a URL authority (host[:port])",
            "$.upstreams[\"http://idp\"]: must be a URL authority (host[:port])",
            "$.upstreams[\"ok:1\"]: must be a string, not a number",
            "$.upstreams[\"u@h\"]: must be a URL authority (host[:port])",
        ]
    );
}

// ---- limits ----

#[test]
fn limits_default_and_can_be_set() {
    assert_eq!(
        Limits::default(),
        Limits {
            max_token_bytes: 16 * 1024,
            max_json_depth: 32,
            max_response_bytes: 256 * 1024,
            max_jwks_keys: 64,
            max_cache_entries: 10_000,
            max_request_headers: 100,
        }
    );
    let mut doc = example();
    set(
        &mut doc,
        "",
        "limits",
        json!({"max_token_bytes": 256, "max_json_depth": 128, "max_response_bytes": 1024, "max_jwks_keys": 1, "max_cache_entries": 1, "max_request_headers": 1}),
    );
    assert_eq!(
        load(&doc).limits,
        Limits {
            max_token_bytes: 256,
            max_json_depth: 128,
            max_response_bytes: 1024,
            max_jwks_keys: 1,
            max_cache_entries: 1,
            max_request_headers: 1,
        }
    );
    let mut doc = example();
    set(&mut doc, "", "limits", json!({"max_jwks_keys": 8}));
    assert_eq!(
        load(&doc).limits,
        Limits {
            max_jwks_keys: 8,
            ..Limits::default()
        }
    );
}

#[test]
fn limits_out_of_range_are_refused() {
    let mut doc = example();
    set(
        &mut doc,
        "",
        "limits",
        json!({"max_token_bytes": 255, "max_json_depth": 129, "max_response_bytes": 1023, "max_jwks_keys": 0, "max_cache_entries": 1_000_001, "max_request_headers": 0}),
    );
    assert_eq!(
        errors(&doc),
        vec![
            "$.limits.max_token_bytes: 255 is out of range 256..=1048576",
            "$.limits.max_json_depth: 129 is out of range 4..=128",
            "$.limits.max_response_bytes: 1023 is out of range 1024..=16777216",
            "$.limits.max_jwks_keys: 0 is out of range 1..=1024",
            "$.limits.max_cache_entries: 1000001 is out of range 1..=1000000",
            "$.limits.max_request_headers: 0 is out of range 1..=10000",
        ]
    );
}

#[test]
fn a_key_auth_application_client_id_is_the_lowercase_sha256_hex_of_its_key() {
    // A key_auth application is found by the lower-case SHA-256 hex of the key (Kong's and
    // Konnect's form). A client_id in upper case (PowerShell's Get-FileHash, many GUIs), or
    // the key itself pasted by mistake, would never match: every request with that key a 401
    // and nothing saying why.
    let upper = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    for client_id in [upper, "test", "9f86d081"] {
        let doc = json!({
            "policy": {"scope": "orders-v1", "strategies": [key_auth_strategy("k", json!({}))]},
            "applications": [app("a1", client_id, "k")],
        });
        assert_eq!(
            error_paths(&doc),
            vec!["$.applications[0].client_id"],
            "{client_id}"
        );
    }
}

#[test]
fn client_credentials_of_two_identity_providers_need_applications() {
    // Without a registry, a Basic client_id names no strategy: every client's id and secret
    // go to the first client_credentials strategy's token endpoint, so the secret of a client
    // of the second identity provider is sent to the first one (and the client is refused).
    let cc = |issuer: &str| {
        oidc_config_with(json!({"issuer": issuer, "auth_methods": ["client_credentials"]}))
    };
    let doc = single(json!([
        oidc_strategy("a", cc("https://idp-a.example.com")),
        oidc_strategy("b", cc("https://idp-b.example.com")),
    ]));
    assert_eq!(error_paths(&doc), vec!["$.policy.strategies[1]"]);
    // One identity provider behind both, or a registry: loads.
    load(&single(json!([
        oidc_strategy("a", cc("https://idp-a.example.com")),
        oidc_strategy("b", cc("https://idp-a.example.com")),
    ])));
}

#[test]
fn the_second_idp_refusal_names_the_policy_it_is_about() {
    // The refusal is about p2 (two IdPs with client_credentials there): its path is p2's,
    // not that of p1, where the strategy's id first appeared and nothing is wrong.
    let cc = |issuer: &str| {
        oidc_config_with(json!({"issuer": issuer, "auth_methods": ["client_credentials"]}))
    };
    let b = oidc_strategy("b", cc("https://idp-b.example.com"));
    let doc = json!({
        "policies": {
            "p1": {"strategies": [b.clone()]},
            "p2": {"strategies": [oidc_strategy("a", cc("https://idp-a.example.com")), b]},
        },
        "routes": {"r1": "p1", "r2": "p2"},
    });
    assert_eq!(error_paths(&doc), vec!["$.policies.p2.strategies[1]"]);
}

#[test]
fn the_second_idp_refusal_names_the_strategy_even_after_one_that_failed() {
    // The refusal names the strategy at fault where it is in the document: a strategy before
    // it that was itself refused must not shift the index onto its neighbour.
    let cc = |issuer: &str| {
        oidc_config_with(json!({"issuer": issuer, "auth_methods": ["client_credentials"]}))
    };
    let doc = single(json!([
        {"id": "x", "strategy_type": "basic_auth", "configs": {}},
        oidc_strategy("a", cc("https://idp-a.example.com")),
        oidc_strategy("b", cc("https://idp-b.example.com")),
    ]));
    assert_eq!(
        error_paths(&doc),
        vec![
            "$.policy.strategies[0].strategy_type",
            "$.policy.strategies[2]"
        ]
    );
}

#[test]
fn a_plain_http_issuer_off_this_machine_loads_with_a_warning() {
    // Keys, client secrets and tokens would cross the network in the clear: loud, not refused
    // (an IdP inside the cluster behind its own TLS is the operator's call).
    for (issuer, warned) in [
        ("http://keycloak.auth.svc:8080/realms/dev", true),
        ("http://10.0.0.7", true),
        ("http://127.0.0.1:3000", false),
        (
            "http://localhost:3000/.well-known/openid-configuration",
            false,
        ),
        ("https://idp.example.com", false),
    ] {
        let mut doc = example();
        set(&mut doc, EX_OIDC_PTR, "issuer", json!(issuer));
        let (_, warnings) = load_warned(&doc);
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        let want = format!("{EX_OIDC}.issuer");
        assert_eq!(
            paths,
            if warned { vec![want.as_str()] } else { vec![] },
            "{issuer}"
        );
        if warned {
            assert!(warnings[0].message.contains("in the clear"), "{warnings:?}");
        }
    }
}
