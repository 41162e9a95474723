//! The filter configuration: read once at load, validated with JSON paths, compiled into
//! indexes that every request shares.
//!
//! Two forms are accepted:
//! - multi-policy: `{"policies": {...}, "routes": {...}, "default_policy": ..., ...}`, where
//!   each request's policy is chosen by its route name;
//! - single-policy: `{"policy": {...}, ...}`, for hosts that attach one filter per route
//!   (Kong filter chains).

mod reader;

use reader::{element, member, Fields};
pub use reader::{Problem, Problems};

use crate::apps::{Application, Applications};
use crate::json;
use crate::oidc::{issuer_and_discovery, issuer_names, Url};
use serde_json::Value;
use std::collections::HashMap;

/// Safety limits, each configurable under `limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest credential (token or key) accepted, in bytes.
    pub max_token_bytes: usize,
    /// Deepest JSON nesting accepted in tokens and IdP responses.
    pub max_json_depth: usize,
    /// Largest IdP response body read (discovery, JWKS), in bytes.
    pub max_response_bytes: usize,
    /// Most keys accepted in one JWK set.
    pub max_jwks_keys: usize,
    /// Capacity of each token cache (client-credentials exchanges, introspection results).
    pub max_cache_entries: usize,
    /// Most header fields a request may carry (pseudo-headers such as `:path` not counted);
    /// more is refused with 431 before anything else is looked at.
    pub max_request_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 16 * 1024,
            max_json_depth: 32,
            max_response_bytes: 256 * 1024,
            max_jwks_keys: 64,
            max_cache_entries: 10_000,
            // Envoy's own default (max_request_headers_count); Kong/nginx has no count limit.
            max_request_headers: 100,
        }
    }
}

/// The longest `timeout` of a strategy, in ms.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub policies: Vec<Policy>,
    routes: crate::cache::KeyedMap<String, usize>,
    default_policy: Option<usize>,
    /// Present when the configuration lists applications: then every allowed request must map
    /// to an approved application.
    pub applications: Option<Applications>,
    /// Each distinct issuer once; strategies refer to it by index, so keys are cached per
    /// issuer, not per strategy.
    pub issuers: Vec<Issuer>,
    upstreams: HashMap<String, String>,
    pub limits: Limits,
}

/// A named set of strategies guarding some routes.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    /// The API (product version) this policy guards; an application must be approved for it.
    pub scope: Option<String>,
    pub strategies: Vec<Strategy>,
    pub hide_credentials: bool,
    /// Every key name of the policy's key_auth strategies, in their order, each once: a
    /// request carries one API key under all of them together, or it is a duplicate.
    pub key_names: Vec<String>,
    /// Every header any of the policy's strategies forwards a claim under (lower case, each
    /// once): whichever strategy lets a request in, the client's own copies go, as the
    /// upstream reads them as verified claims.
    pub forwarded_headers: Vec<String>,
}

#[derive(Debug)]
pub enum Strategy {
    OpenIdConnect(Box<OidcStrategy>),
    KeyAuth(KeyAuthStrategy),
}

impl Strategy {
    pub fn id(&self) -> &str {
        match self {
            Strategy::OpenIdConnect(s) => &s.id,
            Strategy::KeyAuth(s) => &s.id,
        }
    }
}

#[derive(Debug)]
pub struct KeyAuthStrategy {
    pub id: String,
    pub key_names: Vec<String>,
}

/// How a client may authenticate under an OpenID Connect strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthMethods {
    pub bearer: bool,
    pub client_credentials: bool,
    pub introspection: bool,
}

/// A Konnect `openid_connect` strategy, compiled.
#[derive(Debug)]
pub struct OidcStrategy {
    pub id: String,
    /// Index into [`Config::issuers`].
    pub issuer: usize,
    /// The `iss` values accepted (the issuer itself unless `issuers_allowed` says otherwise).
    pub issuers_allowed: Vec<String>,
    /// Claim path whose value(s) identify the application (`["client_id"]`).
    pub credential_claim: Vec<String>,
    /// Scopes requested from the IdP (client_credentials), not required of tokens.
    pub scopes: Vec<String>,
    pub auth_methods: AuthMethods,
    /// Alternatives (OR) of scope sets that must all be present (AND).
    pub scopes_required: Vec<Vec<String>>,
    pub scopes_claim: Vec<String>,
    pub audience_required: Vec<Vec<String>>,
    pub audience_claim: Vec<String>,
    pub leeway: u64,
    pub enable_hs_signatures: bool,
    /// Only RFC 9068 JWT access tokens (`typ: at+jwt`) are accepted (a filter extension).
    pub require_at_jwt: bool,
    pub hide_credentials: bool,
    /// (claim path, upstream header name).
    pub upstream_headers: Vec<(Vec<String>, String)>,
    /// Overrides the discovery document's endpoints.
    pub token_endpoint: Option<Url>,
    pub introspection_endpoint: Option<Url>,
    /// The strategy's own client, which authenticates introspection requests.
    pub client: Option<(String, String)>,
    /// Introspect JWTs too (by default only tokens that are not JWTs are introspected).
    pub introspect_jwt_tokens: bool,
    /// How long exchanged tokens and introspection results may be cached, in seconds.
    pub cache_ttl_s: u64,
}

/// An identity provider, shared by the strategies that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub issuer: String,
    /// What it may call itself in its discovery document ([`crate::oidc::issuer_names`]).
    pub names: Vec<String>,
    pub discovery: Url,
    pub timeout_ms: u64,
    /// How long discovery and keys are trusted before they are fetched again.
    pub cache_ttl_s: u64,
    /// Least time between two fetches triggered by a token (an unknown `kid`, or none and a
    /// signature the current key does not verify).
    pub rediscovery_s: u64,
    /// How long past expiry the last good keys keep serving while refreshes fail.
    pub max_stale_s: u64,
}

impl Issuer {
    pub fn cache_ttl_ms(&self) -> u64 {
        self.cache_ttl_s.saturating_mul(1000)
    }
    pub fn rediscovery_ms(&self) -> u64 {
        self.rediscovery_s.saturating_mul(1000)
    }
    pub fn max_stale_ms(&self) -> u64 {
        self.max_stale_s.saturating_mul(1000)
    }
}

/// Openid-connect plugin fields that would turn off a check: refused, never ignored.
const DANGEROUS: &[(&str, &str)] = &[
    ("verify_signature", "false would accept forged tokens"),
    (
        "verify_claims",
        "false would accept expired tokens and tokens of other issuers",
    ),
];

/// Openid-connect plugin fields that add a requirement this filter does not check: refused
/// when they ask for anything, never ignored (the strategy would promise more than is
/// enforced, and let through what it says to refuse).
const UNENFORCED: &[(&str, Unenforced)] = &[
    ("groups_required", Unenforced::Empty),
    ("roles_required", Unenforced::Empty),
    ("claims_forbidden", Unenforced::Empty),
    (
        "bearer_token_param_type",
        Unenforced::Includes(&["header", "query"]),
    ),
    (
        "client_credentials_param_type",
        Unenforced::Includes(&["header"]),
    ),
    ("proof_of_possession_mtls", Unenforced::Off),
    ("proof_of_possession_dpop", Unenforced::Off),
];

/// What an [`UNENFORCED`] field looks like when it asks for nothing more than the filter does.
#[derive(Debug, Clone, Copy)]
enum Unenforced {
    /// An empty list.
    Empty,
    /// A list that includes every place the filter reads that credential from (a narrower
    /// list would refuse some of them).
    Includes(&'static [&'static str]),
    /// `"off"`.
    Off,
}

impl Unenforced {
    fn refusal(self, v: &Value) -> Option<String> {
        match (self, v) {
            (Unenforced::Empty, Value::Array(a)) => (!a.is_empty()).then(|| {
                "is refused unless empty: this filter does not check it, so tokens that fail it would be let through".into()
            }),
            (Unenforced::Includes(places), Value::Array(a)) => {
                let lists = |place: &&str| a.iter().any(|x| x.as_str() == Some(*place));
                (!places.iter().all(lists)).then(|| {
                    format!(
                        "is refused unless it includes {}: this filter takes the credential from each of them, so a narrower list would not be enforced",
                        places.join(" and ")
                    )
                })
            }
            (Unenforced::Off, Value::String(s)) => (s != "off").then(|| {
                "is refused unless \"off\": this filter does not check proof of possession, so unbound tokens would be let through".into()
            }),
            (Unenforced::Off, _) => Some("must be a string".into()),
            (_, _) => Some("must be an array".into()),
        }
    }
}

impl Config {
    /// Parses and validates a configuration document. On error, every problem found, each
    /// with its JSON path; on success, the compiled configuration and the warnings.
    pub fn parse(bytes: &[u8]) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
        let mut p = Problems::default();
        // The applications are read one by one as the document is parsed: 100,000 of them as
        // a tree of JSON values first would take several times the registry's own memory (and
        // a Wasm VM's memory never shrinks).
        let mut listed = Listed::default();
        let parsed =
            json::parse_strict_streaming(bytes, 64, APPLICATIONS, &mut |app| listed.read(app));
        let (doc, streamed) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                p.error("$", format!("is not valid JSON: {e}"));
                return Err(p.errors);
            }
        };
        let config = compile(&mut p, &doc, streamed.then_some(listed));
        match config {
            Some(c) if p.errors.is_empty() => Ok((c, p.warnings)),
            _ => Err(p.errors),
        }
    }

    /// The policy guarding a route: by route name, else the default policy; `None` means the
    /// request must be denied.
    pub fn policy_for(&self, route_name: Option<&str>) -> Option<(usize, &Policy)> {
        let index = route_name
            .and_then(|r| self.routes.get(r).copied())
            .or(self.default_policy)?;
        Some((index, self.policies.get(index)?))
    }

    /// Whether the route name decides the policy (otherwise every request gets the default
    /// or single policy, and the route need not be looked up).
    pub fn chooses_by_route(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The callout target for a URL: the cluster mapped to its authority, else the authority
    /// itself (what Kong expects).
    pub fn upstream_for<'a>(&'a self, url: &'a Url) -> &'a str {
        self.upstreams
            .get(&url.authority)
            .map(String::as_str)
            .unwrap_or(&url.authority)
    }

    pub fn strategy_ids(&self) -> impl Iterator<Item = &str> {
        self.policies
            .iter()
            .flat_map(|p| p.strategies.iter().map(Strategy::id))
    }
}

fn compile(p: &mut Problems, doc: &Value, listed: Option<Listed>) -> Option<Config> {
    let mut top = Fields::of(p, "$", doc)?;
    let mut b = Builder::default();

    let limits = top
        .get("limits")
        .and_then(|(path, v)| limits(p, &path, v))
        .unwrap_or_default();
    b.timeout_default = 10_000;

    let mut policies = Vec::new();
    let mut routes = crate::cache::KeyedMap::default();
    let mut default_policy = None;
    let single = top.get("policy");
    let multi = top.get("policies");
    match (single, multi) {
        (Some(_), Some(_)) => p.error("$", "give either \"policy\" or \"policies\", not both"),
        (None, None) => p.error("$", "one of \"policy\" or \"policies\" is required"),
        (Some((path, v)), None) => {
            for key in ["routes", "default_policy"] {
                if top.get(key).is_some() {
                    p.error(&member("$", key), "only allowed with \"policies\"");
                }
            }
            if let Some(policy) = b.policy(p, &path, "policy", v) {
                policies.push(policy);
                default_policy = Some(0);
            }
        }
        (None, Some((path, v))) => {
            let mut index = HashMap::new();
            match v.as_object() {
                Some(map) if !map.is_empty() => {
                    for (name, pv) in map {
                        let ppath = member(&path, name);
                        if let Some(policy) = b.policy(p, &ppath, name, pv) {
                            index.insert(name.clone(), policies.len());
                            policies.push(policy);
                        }
                    }
                }
                Some(_) => p.error(&path, "must name at least one policy"),
                None => p.error(&path, "must be an object mapping policy names to policies"),
            }
            if let Some((rpath, rv)) = top.get("routes") {
                if let Some(map) = rv.as_object() {
                    for (route, target) in map {
                        let tpath = member(&rpath, route);
                        let Some(name) = reader::string(p, &tpath, target) else {
                            continue;
                        };
                        match index.get(&name) {
                            Some(i) => {
                                routes.insert(route.clone(), *i);
                            }
                            None => p.error(&tpath, format!("names no policy: {name:?}")),
                        }
                    }
                } else {
                    p.error(
                        &rpath,
                        "must be an object mapping route names to policy names",
                    );
                }
            }
            if let Some((dpath, dv)) = top.get("default_policy") {
                if let Some(name) = reader::string(p, &dpath, dv) {
                    match index.get(&name) {
                        Some(i) => default_policy = Some(*i),
                        None => p.error(&dpath, format!("names no policy: {name:?}")),
                    }
                }
            }
        }
    }

    let mut upstreams = HashMap::new();
    if let Some((upath, uv)) = top.get("upstreams") {
        if let Some(map) = uv.as_object() {
            for (authority, cluster) in map {
                let cpath = member(&upath, authority);
                if authority.is_empty() || authority.contains(['/', ' ', '@']) {
                    p.error(&cpath, "must be a URL authority (host[:port])");
                }
                if let Some(cluster) = reader::string(p, &cpath, cluster) {
                    upstreams.insert(authority.clone(), cluster);
                }
            }
        } else {
            p.error(
                &upath,
                "must be an object mapping host:port to a cluster name",
            );
        }
    }

    let listed_at = top.get(APPLICATIONS).map(|(path, _)| path);
    let applications = listed_at.clone().and_then(|path| match listed {
        Some(listed) => listed.register(p, &path, &b.strategy_ids),
        None => {
            p.error(&path, "must be an array of applications");
            None
        }
    });
    if applications.is_none() {
        for policy in &policies {
            let policy_path = b
                .policy_paths
                .get(&policy.name)
                .cloned()
                .unwrap_or_default();
            for strategy in &policy.strategies {
                if let Strategy::KeyAuth(ka) = strategy {
                    let path = b
                        .strategy_ids
                        .get(&ka.id)
                        .map(|(p, _)| p.clone())
                        .unwrap_or_default();
                    p.error(&path, "a key_auth strategy needs \"applications\": an API key is only valid as an application's credential");
                }
            }
            // Without a registry a Basic client_id names no strategy: the first client
            // credentials strategy would take every client, and the secrets of another
            // identity provider's clients would be posted to its token endpoint.
            let mut cc = policy
                .strategies
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    Strategy::OpenIdConnect(o) if o.auth_methods.client_credentials => Some((i, o)),
                    _ => None,
                });
            if let Some((_, first)) = cc.next() {
                if let Some((index, _)) = cc.find(|(_, o)| o.issuer != first.issuer) {
                    // This policy's strategy (its id may have appeared first in another), where
                    // it is in the document.
                    let path = b
                        .strategy_paths
                        .get(&policy.name)
                        .and_then(|paths| paths.get(index))
                        .cloned()
                        .unwrap_or_else(|| policy_path.clone());
                    p.error(&path, "a second identity provider with client_credentials needs \"applications\": without them a client cannot be told apart, and its secret would go to the first one's token endpoint");
                }
            }
            // A scope approves applications: with none listed (or `applications: null`, as a
            // nil list serializes) it would check nothing, and any valid token would pass.
            if policy.scope.is_some() && listed_at.is_none() {
                p.error(
                    &member(&policy_path, "scope"),
                    "needs \"applications\": a scope approves applications, and with none listed it would not be enforced",
                );
            }
        }
    } else {
        for policy in &policies {
            if policy.scope.is_none() {
                p.error(
                    &b.policy_paths.get(&policy.name).cloned().unwrap_or_default(),
                    "\"scope\" is required when applications are listed: an application is approved per scope",
                );
            }
        }
    }

    top.deny_unknown(p);
    p.warnings.append(&mut b.warnings);
    Some(Config {
        policies,
        routes,
        default_policy,
        applications,
        issuers: b.issuers,
        upstreams,
        limits,
    })
}

fn limits(p: &mut Problems, path: &str, v: &Value) -> Option<Limits> {
    let mut f = Fields::of(p, path, v)?;
    let d = Limits::default();
    let l = Limits {
        max_token_bytes: f
            .uint(p, "max_token_bytes", 256, 1 << 20)
            .map_or(d.max_token_bytes, |n| n as usize),
        max_json_depth: f
            .uint(p, "max_json_depth", 4, 128)
            .map_or(d.max_json_depth, |n| n as usize),
        max_response_bytes: f
            .uint(p, "max_response_bytes", 1024, 16 << 20)
            .map_or(d.max_response_bytes, |n| n as usize),
        max_jwks_keys: f
            .uint(p, "max_jwks_keys", 1, 1024)
            .map_or(d.max_jwks_keys, |n| n as usize),
        max_cache_entries: f
            .uint(p, "max_cache_entries", 1, 1_000_000)
            .map_or(d.max_cache_entries, |n| n as usize),
        max_request_headers: f
            .uint(p, "max_request_headers", 1, 10_000)
            .map_or(d.max_request_headers, |n| n as usize),
    };
    f.deny_unknown(p);
    Some(l)
}

#[derive(Default)]
struct Builder {
    issuers: Vec<Issuer>,
    /// Strategy id -> (its path, its JSON), to refuse one id with two meanings.
    strategy_ids: HashMap<String, (String, Value)>,
    policy_paths: HashMap<String, String>,
    /// Policy name -> the path of each of its strategies that compiled, in the order of
    /// [`Policy::strategies`] (a refused strategy leaves no entry there).
    strategy_paths: HashMap<String, Vec<String>>,
    warnings: Vec<Problem>,
    timeout_default: u64,
}

impl Builder {
    fn policy(&mut self, p: &mut Problems, path: &str, name: &str, v: &Value) -> Option<Policy> {
        let mut f = Fields::of(p, path, v)?;
        self.policy_paths.insert(name.to_owned(), path.to_owned());
        let scope = f.str(p, "scope");
        let hide_credentials = f.bool(p, "hide_credentials").unwrap_or(false);
        let mut strategies = Vec::new();
        let mut paths = Vec::new();
        if let Some((spath, sv)) = f.require(p, "strategies") {
            match sv {
                Value::Array(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(s) = self.strategy(p, &element(&spath, i), item) {
                            if strategies.iter().any(|o: &Strategy| o.id() == s.id()) {
                                p.error(&element(&spath, i), "lists the same strategy id twice");
                            }
                            strategies.push(s);
                            paths.push(element(&spath, i));
                        }
                    }
                }
                Value::Array(_) => p.error(&spath, "must list at least one strategy"),
                _ => p.error(&spath, "must be an array of Konnect auth strategy objects"),
            }
        }
        f.deny_unknown(p);
        self.strategy_paths.insert(name.to_owned(), paths);
        let mut key_names: Vec<String> = Vec::new();
        let mut forwarded_headers: Vec<String> = Vec::new();
        for s in &strategies {
            match s {
                Strategy::KeyAuth(ka) => {
                    for n in &ka.key_names {
                        if !key_names.contains(n) {
                            key_names.push(n.clone());
                        }
                    }
                }
                Strategy::OpenIdConnect(o) => {
                    for (_, h) in &o.upstream_headers {
                        if !forwarded_headers.contains(h) {
                            forwarded_headers.push(h.clone());
                        }
                    }
                }
            }
        }
        Some(Policy {
            name: name.to_owned(),
            scope,
            strategies,
            hide_credentials,
            key_names,
            forwarded_headers,
        })
    }

    fn strategy(&mut self, p: &mut Problems, path: &str, v: &Value) -> Option<Strategy> {
        let mut f = Fields::of(p, path, v)?;
        // Konnect metadata that rides along when a strategy is pasted from the API.
        f.ignore(&[
            "name",
            "display_name",
            "dcr_provider_id",
            "dcr_provider",
            "labels",
            "active",
            "created_at",
            "updated_at",
        ]);
        let id = f.required_str(p, "id");
        let strategy_type = f.required_str(p, "strategy_type");
        let configs = f.require(p, "configs");
        f.deny_unknown(p);
        let id = id?;
        if let Some((prev_path, prev)) = self.strategy_ids.get(&id) {
            if prev != v {
                p.error(
                    &member(path, "id"),
                    format!("{id:?} is already used by a different strategy at {prev_path}"),
                );
            }
        } else {
            self.strategy_ids
                .insert(id.clone(), (path.to_owned(), v.clone()));
        }
        let (cpath, cv) = configs?;
        let mut configs = Fields::of(p, &cpath, cv)?;
        let strategy = match strategy_type?.as_str() {
            "openid_connect" => {
                let (opath, ov) = configs.require(p, "openid-connect")?;
                self.oidc(p, &opath, id, ov)
                    .map(|s| Strategy::OpenIdConnect(Box::new(s)))
            }
            "key_auth" => {
                let (kpath, kv) = configs.require(p, "key-auth")?;
                key_auth(p, &kpath, id, kv).map(Strategy::KeyAuth)
            }
            other => {
                p.error(
                    &member(path, "strategy_type"),
                    format!("unknown strategy type {other:?} (expected \"openid_connect\" or \"key_auth\")"),
                );
                None
            }
        };
        configs.deny_unknown(p);
        strategy
    }

    fn oidc(
        &mut self,
        p: &mut Problems,
        path: &str,
        id: String,
        v: &Value,
    ) -> Option<OidcStrategy> {
        let mut f = Fields::of(p, path, v)?;
        let issuer_text = f.required_str(p, "issuer");
        let credential_claim = f.required_str_list(p, "credential_claim");
        if credential_claim.as_ref().is_some_and(Vec::is_empty) {
            p.error(&member(path, "credential_claim"), "must name a claim");
        }
        let scopes = f.required_str_list(p, "scopes");
        let methods_path = member(path, "auth_methods");
        let methods = f.required_str_list(p, "auth_methods");
        let scopes_required = f.str_list(p, "scopes_required").unwrap_or_default();
        let scopes_claim = f
            .str_list(p, "scopes_claim")
            .unwrap_or_else(|| vec!["scope".into()]);
        let audience_required = f.str_list(p, "audience_required").unwrap_or_default();
        let audience_claim = f
            .str_list(p, "audience_claim")
            .unwrap_or_else(|| vec!["aud".into()]);
        for (key, list) in [
            ("scopes_claim", &scopes_claim),
            ("audience_claim", &audience_claim),
        ] {
            if list.is_empty() {
                p.error(
                    &member(path, key),
                    "must name a claim (an empty path matches nothing)",
                );
            }
        }
        let issuers_allowed = f.str_list(p, "issuers_allowed");
        if issuers_allowed.as_ref().is_some_and(Vec::is_empty) {
            p.error(
                &member(path, "issuers_allowed"),
                "must name at least one issuer (an empty list would refuse every token)",
            );
        }
        let leeway = f.uint(p, "leeway", 0, 3600).unwrap_or(0);
        let enable_hs_signatures = f.bool(p, "enable_hs_signatures").unwrap_or(false);
        let require_at_jwt = f.bool(p, "require_at_jwt").unwrap_or(false);
        let hide_credentials = f.bool(p, "hide_credentials").unwrap_or(false);
        let timeout_ms = f
            .uint(p, "timeout", 1, MAX_TIMEOUT_MS)
            .unwrap_or(self.timeout_default);
        let cache_ttl_s = f.uint(p, "cache_ttl", 1, 86_400 * 7).unwrap_or(3600);
        let rediscovery_s = f.uint(p, "rediscovery_lifetime", 0, 86_400).unwrap_or(30);
        let max_stale_s = f.uint(p, "keys_max_stale", 0, 86_400 * 7).unwrap_or(3600);
        let token_endpoint = url_field(p, &mut f, "token_endpoint");
        let introspection_endpoint = url_field(p, &mut f, "introspection_endpoint");
        let client_id = first_of(p, &mut f, "client_id");
        let client_secret = first_of(p, &mut f, "client_secret");
        let introspect_jwt_tokens = f.bool(p, "introspect_jwt_tokens").unwrap_or(false);
        let claim_headers = f.str_list(p, "upstream_headers_claims").unwrap_or_default();
        let header_names = f.str_list(p, "upstream_headers_names").unwrap_or_default();
        for (key, why) in DANGEROUS {
            if let Some((kpath, kv)) = f.get(key) {
                match kv {
                    Value::Bool(true) => {}
                    Value::Bool(false) => p.error(&kpath, format!("is refused: {why}")),
                    _ => p.error(&kpath, "must be a boolean"),
                }
            }
        }
        for (key, rule) in UNENFORCED {
            if let Some((kpath, kv)) = f.get(key) {
                if let Some(why) = rule.refusal(kv) {
                    p.error(&kpath, why);
                }
            }
        }
        if let Some((kpath, kv)) = f.get("ignore_signature") {
            if !matches!(kv, Value::Array(a) if a.is_empty()) {
                p.error(
                    &kpath,
                    "is refused: ignoring signatures would accept forged tokens",
                );
            }
        }
        // A blank entry would otherwise vanish, and a list of blanks would require nothing.
        for (key, entries) in [
            ("scopes_required", &scopes_required),
            ("audience_required", &audience_required),
        ] {
            for (i, entry) in entries.iter().enumerate() {
                if entry.split_ascii_whitespace().next().is_none() {
                    p.error(
                        &element(&member(path, key), i),
                        "must name at least one value",
                    );
                }
            }
        }
        // Any other openid-connect plugin field rides along from Konnect: accepted, ignored,
        // and said so once.
        for unknown in f.unknown() {
            self.warnings.push(Problem {
                path: unknown,
                message: "openid-connect field not used by this filter; ignored".into(),
            });
        }

        let mut auth_methods = AuthMethods::default();
        for (i, m) in methods.iter().flatten().enumerate() {
            match m.as_str() {
                "bearer" => auth_methods.bearer = true,
                "client_credentials" => auth_methods.client_credentials = true,
                "introspection" => auth_methods.introspection = true,
                "password" | "authorization_code" | "userinfo" | "kong_oauth2"
                | "refresh_token" | "session" => self.warnings.push(Problem {
                    path: element(&methods_path, i),
                    message: format!(
                        "auth method {m:?} does not apply to an API gateway filter; ignored"
                    ),
                }),
                other => p.error(
                    &element(&methods_path, i),
                    format!("unknown auth method {other:?}"),
                ),
            }
        }
        if methods.is_some() && auth_methods == AuthMethods::default() {
            p.error(&methods_path, "names no auth method this filter enforces (bearer, client_credentials, introspection)");
        }
        let client = match (client_id, client_secret) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) => None,
            _ => {
                p.error(path, "client_id and client_secret go together");
                None
            }
        };
        if auth_methods.introspection && client.is_none() {
            p.error(path, "the introspection auth method needs client_id and client_secret (they authenticate the introspection requests)");
        }
        if claim_headers.len() != header_names.len() {
            p.error(
                &member(path, "upstream_headers_names"),
                "must have one entry for each entry of upstream_headers_claims",
            );
        }
        let mut header_names_seen: Vec<(usize, String)> = Vec::new();
        let upstream_headers = claim_headers
            .into_iter()
            .zip(header_names)
            .enumerate()
            .filter_map(|(i, (claim, name))| {
                let at = || element(&member(path, "upstream_headers_names"), i);
                if !is_header_name(&name) {
                    p.error(&at(), "must be a valid HTTP header name");
                    return None;
                }
                if let Some(why) = reserved_header(&name) {
                    p.error(&at(), why);
                    return None;
                }
                // One header, one claim: names that differ only in case, or in `_` for `-`
                // (one header to many upstreams), would send two values.
                let same = |n: &str| {
                    n.replace('_', "-")
                        .eq_ignore_ascii_case(&name.replace('_', "-"))
                };
                if let Some((j, _)) = header_names_seen.iter().find(|(_, n)| same(n)) {
                    p.error(
                        &at(),
                        format!("names the same header as upstream_headers_names[{j}]"),
                    );
                    return None;
                }
                header_names_seen.push((i, name.clone()));
                Some((vec![claim], name.to_ascii_lowercase()))
            })
            .collect();

        let issuer_text = issuer_text?;
        let (issuer, discovery_text) = issuer_and_discovery(&issuer_text);
        let discovery = match Url::parse(&discovery_text) {
            Ok(u) => u,
            Err(e) => {
                p.error(&member(path, "issuer"), e);
                return None;
            }
        };
        // An issuer has no query (OpenID Connect Discovery §2): the discovery path would be
        // appended inside it.
        if issuer_text.contains('?') {
            p.error(
                &member(path, "issuer"),
                "must not contain a query (an issuer is a URL without one)",
            );
            return None;
        }
        if !discovery.https && !discovery.is_loopback() {
            self.warnings.push(Problem {
                path: member(path, "issuer"),
                message: "plain http off this machine: keys are fetched, and client secrets and tokens posted, in the clear (anyone on the way can read them or swap the keys); use https".into(),
            });
        }
        let names = issuer_names(&issuer_text);
        let candidate = Issuer {
            issuer: issuer.clone(),
            names: names.clone(),
            discovery,
            timeout_ms,
            cache_ttl_s,
            rediscovery_s,
            max_stale_s,
        };
        let issuer_index = match self.issuers.iter().position(|i| i.issuer == issuer) {
            Some(i) => {
                if let Some(known) = self.issuers.get_mut(i) {
                    // One strategy may give the issuer, another its discovery URL: the
                    // issuer goes by what either allows.
                    for name in &names {
                        if !known.names.contains(name) {
                            known.names.push(name.clone());
                        }
                    }
                    let same = Issuer {
                        names: known.names.clone(),
                        ..candidate
                    };
                    if same != *known {
                        p.error(&member(path, "issuer"), "is used by another strategy with a different timeout, cache_ttl, rediscovery_lifetime or keys_max_stale");
                    }
                }
                i
            }
            None => {
                self.issuers.push(candidate);
                self.issuers.len().saturating_sub(1)
            }
        };
        Some(OidcStrategy {
            id,
            issuer: issuer_index,
            issuers_allowed: issuers_allowed.unwrap_or(names),
            credential_claim: credential_claim?,
            scopes: scopes?,
            auth_methods,
            scopes_required: split_alternatives(scopes_required),
            scopes_claim,
            audience_required: split_alternatives(audience_required),
            audience_claim,
            leeway,
            enable_hs_signatures,
            require_at_jwt,
            hide_credentials,
            upstream_headers,
            token_endpoint,
            introspection_endpoint,
            client,
            introspect_jwt_tokens,
            cache_ttl_s,
        })
    }
}

fn url_field(p: &mut Problems, f: &mut Fields<'_>, key: &'static str) -> Option<Url> {
    let (path, v) = f.get(key)?;
    let text = reader::string(p, &path, v)?;
    match Url::parse(&text) {
        Ok(u) => Some(u),
        Err(e) => {
            p.error(&path, e);
            None
        }
    }
}

/// A string, or (as in Kong's openid-connect schema) an array whose first entry is used.
fn first_of(p: &mut Problems, f: &mut Fields<'_>, key: &'static str) -> Option<String> {
    let (path, v) = f.get(key)?;
    match v {
        Value::Array(items) if items.is_empty() => {
            p.error(&path, "must not be empty");
            None
        }
        // Every entry must be valid even though only the first is used.
        Value::Array(_) => {
            reader::string_list(p, &path, v).and_then(|list| list.into_iter().next())
        }
        other => reader::string(p, &path, other),
    }
}

/// `["a b", "c"]` means (a AND b) OR c.
fn split_alternatives(entries: Vec<String>) -> Vec<Vec<String>> {
    entries
        .into_iter()
        .map(|e| {
            e.split_ascii_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|set| !set.is_empty())
        .collect()
}

fn key_auth(p: &mut Problems, path: &str, id: String, v: &Value) -> Option<KeyAuthStrategy> {
    let mut f = Fields::of(p, path, v)?;
    let key_names = f
        .str_list(p, "key_names")
        .unwrap_or_else(|| vec!["apikey".into()]);
    f.ignore(&["ttl"]);
    f.deny_unknown(p);
    for (i, name) in key_names.iter().enumerate() {
        if !is_header_name(name) {
            p.error(
                &element(&member(path, "key_names"), i),
                "must be usable as a header name and a query parameter",
            );
        } else if key_names
            .iter()
            .take(i)
            .any(|k| k.eq_ignore_ascii_case(name))
        {
            // Header names are case-insensitive: the same key would be found twice and every
            // request carrying it refused as a duplicate.
            p.error(
                &element(&member(path, "key_names"), i),
                "names the same key as an earlier entry (names are case-insensitive)",
            );
        }
    }
    if key_names.is_empty() {
        p.error(&member(path, "key_names"), "must name at least one key");
    }
    Some(KeyAuthStrategy {
        id,
        // As given: headers match them in any case, query parameters exactly (as Kong's).
        key_names,
    })
}

/// Why a token claim may not be forwarded under this header name, if it may not: the
/// application's identity is the filter's to say, and a claim must not re-frame or re-route
/// the request. Compared as upstreams do, ignoring case and with `_` for `-`.
fn reserved_header(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase().replace('_', "-");
    if crate::engine::APPLICATION_HEADERS.contains(&name.as_str()) {
        return Some("is one of the application identity headers the filter sets");
    }
    // Proxy-Authorization is a credential too, and with Proxy-Authenticate hop-by-hop
    // (RFC 9110 §11.7).
    const FRAMING: [&str; 12] = [
        "authorization",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "trailer",
    ];
    FRAMING
        .contains(&name.as_str())
        .then_some("is a header a token claim must not set (credentials, routing or framing)")
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The top-level member listing the applications.
const APPLICATIONS: &str = "applications";

/// The applications as the document is parsed: each is checked on its own as it is read; what
/// needs the rest of the document (the strategies they name) is checked by
/// [`Listed::register`].
#[derive(Default)]
struct Listed {
    problems: Problems,
    apps: Vec<(usize, Application)>,
    /// The strategy named by each application left out of `apps` for a problem of its own.
    incomplete: Vec<(usize, String)>,
    count: usize,
}

impl Listed {
    fn read(&mut self, item: Value) {
        let index = self.count;
        self.count = index.saturating_add(1);
        let p = &mut self.problems;
        let apath = format!("$.{APPLICATIONS}[{index}]");
        let Some(mut f) = Fields::of(p, &apath, &item) else {
            return;
        };
        f.ignore(&[
            "name",
            "consumer_groups",
            "labels",
            "created_at",
            "updated_at",
        ]);
        let id = f.required_str(p, "id");
        let client_id = f.required_str(p, "client_id");
        let auth_strategy_id = f.required_str(p, "auth_strategy_id");
        let scopes = f.required_str_list(p, "scopes");
        let developer_id = f.str(p, "developer_id");
        let portal_id = f.str(p, "portal_id");
        let organization_id = f.str(p, "organization_id");
        f.deny_unknown(p);
        // Forwarded as header values, or matched against claims that are: a space at either
        // end would be dropped by whatever reads the header (RFC 9110 §5.5), so " a1"
        // would arrive as "a1", and a client_id with one would never match.
        let fields = [
            ("id", &id),
            ("client_id", &client_id),
            ("developer_id", &developer_id),
            ("portal_id", &portal_id),
            ("organization_id", &organization_id),
        ];
        let mut spaced = false;
        for (name, value) in fields {
            if value
                .as_deref()
                .is_some_and(|v| v.starts_with(' ') || v.ends_with(' '))
            {
                p.error(
                    &member(&apath, name),
                    "must not begin or end with a space (a header cannot carry it as it is)",
                );
                spaced = true;
            }
        }
        if spaced {
            if let Some(auth_strategy_id) = auth_strategy_id {
                self.incomplete.push((index, auth_strategy_id));
            }
            return;
        }
        let Some(auth_strategy_id) = auth_strategy_id else {
            return;
        };
        let (Some(id), Some(client_id), Some(scopes)) = (id, client_id, scopes) else {
            self.incomplete.push((index, auth_strategy_id));
            return;
        };
        self.apps.push((
            index,
            Application {
                id,
                client_id,
                auth_strategy_id,
                scopes,
                developer_id,
                portal_id,
                organization_id,
            },
        ));
    }

    /// The registry, once the strategies are known (`path`: the applications' own).
    fn register(
        self,
        p: &mut Problems,
        path: &str,
        strategies: &HashMap<String, (String, Value)>,
    ) -> Option<Applications> {
        let Listed {
            mut problems,
            apps,
            incomplete,
            ..
        } = self;
        p.errors.append(&mut problems.errors);
        p.warnings.append(&mut problems.warnings);
        let named = apps
            .iter()
            .map(|(index, app)| (*index, app.auth_strategy_id.as_str()))
            .chain(incomplete.iter().map(|(index, sid)| (*index, sid.as_str())));
        for (index, sid) in named {
            if !strategies.contains_key(sid) {
                p.error(
                    &member(&element(path, index), "auth_strategy_id"),
                    format!("names no configured strategy: {sid:?}"),
                );
            }
        }
        // A key_auth application is found by the lower-case SHA-256 hex of the key: any other
        // client_id (upper case, or the key itself) would load and never match.
        for (index, app) in &apps {
            let key_auth = strategies.get(&app.auth_strategy_id).is_some_and(|(_, v)| {
                v.get("strategy_type").and_then(Value::as_str) == Some("key_auth")
            });
            let hex = app.client_id.len() == 64
                && app
                    .client_id
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if key_auth && !hex {
                p.error(
                    &member(&element(path, *index), "client_id"),
                    "must be the SHA-256 of the API key in lower-case hex (64 characters 0-9a-f): a key_auth application is found by it",
                );
            }
        }
        match Applications::new(apps) {
            Ok(a) => Some(a),
            Err((index, msg)) => {
                p.error(&member(&element(path, index), "client_id"), msg);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
