//! The decision flow: compiled config + request view + time + cached key state in, a
//! [`Step`] out (allow with headers, deny with a reply, or wait for a callout and be called
//! back). Nothing here calls the proxy.

use crate::apps::Application;
use crate::cache::{IssuerKeys, Stage};
use crate::config::{Config, KeyAuthStrategy, OidcStrategy, Policy, Strategy};
use crate::credential::{self, Credential, Header, Malformed, Source};
use crate::jwt::{self, claims, ClaimRules, KeySet, ParsedToken, TokenError, VerifiedClaims};
use crate::oidc::{self, Url};
use crate::response::{Denial, Reply};
use std::collections::HashMap;
use std::rc::Rc;

/// Headers the filter owns upstream: whatever the client sent under these names is removed
/// before the request is forwarded, so they cannot be spoofed.
pub const APPLICATION_HEADERS: [&str; 5] = [
    "x-application-id",
    "x-application-developer-id",
    "x-application-portal-id",
    "x-application-org-id",
    "x-credential-identifier",
];

/// What the host knows about a request when its headers arrive.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The proxy's route name (`xds.route_name` in Envoy, `kong.route_name` in Kong).
    pub route: Option<&'a str>,
    /// `:authority`, used as the challenge realm.
    pub authority: &'a str,
    /// `:path`, with the query string.
    pub path: &'a str,
    pub headers: &'a [Header],
}

/// How the request was authenticated, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    None,
    Bearer,
    ClientCredentials,
    KeyAuth,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Bearer => "bearer",
            Method::ClientCredentials => "client_credentials",
            Method::KeyAuth => "key_auth",
        }
    }
}

/// Forward the request, after these header and path changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allow {
    pub remove_headers: Vec<String>,
    pub set_headers: Vec<(String, String)>,
    /// A new `:path` (credentials removed from the query string).
    pub path: Option<String>,
    pub application_id: Option<String>,
}

/// Refuse the request with this reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub denial: Denial,
    pub reply: Reply,
    /// The strategy that was checking when the request failed, if one was chosen.
    pub strategy_id: Option<String>,
    /// A short hash of the credential, for the log (never the credential itself).
    pub credential_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow(Allow),
    Deny(Deny),
}

/// What the host does next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Done(Method, Outcome),
    /// Hold the request; send this callout if one is given. The engine settles the request
    /// later through [`Progress`].
    Wait(Option<Callout>),
}

/// Identifies a fetch, so that its response finds its way back, and a response for an
/// engine that was since replaced (reconfiguration) is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId {
    pub generation: u64,
    pub issuer: usize,
    pub stage: Stage,
}

/// An HTTP request the engine needs made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub id: FetchId,
    /// Envoy: a cluster name; Kong: `host:port`.
    pub upstream: String,
    pub https: bool,
    pub authority: String,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

/// A callout's result as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalloutResponse {
    /// `:status`; `None` when the call failed before a response (reset, timeout).
    pub status: Option<u16>,
    pub body: Vec<u8>,
    /// Why the host says the call failed (Kong's `:dispatch_status`, an oversize body).
    pub failure: Option<String>,
}

/// Requests settled and callouts to send, after a callout response or a tick.
#[derive(Debug, Default)]
pub struct Progress {
    pub settled: Vec<(u32, Method, Outcome)>,
    pub callouts: Vec<Callout>,
    /// Lines for the log (fetch failures and successes), never secrets.
    pub log: Vec<String>,
}

/// A request waiting for an issuer's keys.
#[derive(Debug)]
struct Waiting {
    policy: usize,
    strategy: usize,
    token: ParsedToken,
    source: Source,
    realm: String,
    path: String,
    issuer: usize,
    since_ms: u64,
}

/// The per-VM engine: compiled config plus what has been learnt from the IdPs.
#[derive(Debug)]
pub struct Engine {
    config: Rc<Config>,
    generation: u64,
    issuers: Vec<IssuerKeys>,
    waiting: HashMap<u32, Waiting>,
}

impl Engine {
    pub fn new(config: Rc<Config>, generation: u64) -> Engine {
        let issuers = config
            .issuers
            .iter()
            .map(|_| IssuerKeys::default())
            .collect();
        Engine {
            config,
            generation,
            issuers,
            waiting: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Rc<Config> {
        &self.config
    }

    /// The requests still waiting (their contexts must be settled if the engine is replaced).
    pub fn waiting_contexts(&self) -> Vec<u32> {
        self.waiting.keys().copied().collect()
    }

    /// A request's context went away: stop tracking it.
    pub fn forget(&mut self, context_id: u32) {
        self.waiting.remove(&context_id);
    }

    /// Decides on a request whose headers just arrived.
    pub fn on_request(&mut self, context_id: u32, req: &Request<'_>, now_ms: u64) -> Step {
        let config = Rc::clone(&self.config);
        let realm = req.authority;
        let Some((policy_index, policy)) = config.policy_for(req.route) else {
            return done(Method::None, deny(Denial::NoPolicy, realm, None, None));
        };
        let limits = &config.limits;

        // Kong's order: key-auth first, then OpenID Connect by method.
        for strategy in &policy.strategies {
            if let Strategy::KeyAuth(ka) = strategy {
                let ka: &KeyAuthStrategy = ka;
                match credential::extract_api_key(
                    req.headers,
                    req.path,
                    &ka.key_names,
                    limits.max_token_bytes,
                ) {
                    Ok(None) => {}
                    Ok(Some((name, key))) => {
                        return done(Method::KeyAuth, self.key_auth(policy, ka, &name, &key, req));
                    }
                    Err(m) => return done(Method::KeyAuth, malformed(m, realm, Some(&ka.id))),
                }
            }
        }
        let has_oidc = policy
            .strategies
            .iter()
            .any(|s| matches!(s, Strategy::OpenIdConnect(_)));
        if !has_oidc {
            return done(
                Method::None,
                deny(Denial::MissingCredential, realm, None, None),
            );
        }
        let credential = match credential::extract(req.headers, req.path, limits.max_token_bytes) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return done(
                    Method::None,
                    deny(Denial::MissingCredential, realm, None, None),
                )
            }
            Err(m) => return done(Method::None, malformed(m, realm, None)),
        };
        match credential {
            Credential::Bearer { token, source } => {
                let hash = short_hash(&token);
                let token = match ParsedToken::parse(&token, limits.max_json_depth) {
                    Ok(t) => t,
                    Err(e) => {
                        return done(
                            Method::Bearer,
                            deny(Denial::InvalidToken(e), realm, None, Some(hash)),
                        );
                    }
                };
                let Some((strategy_index, strategy)) = bearer_strategy(policy, &token) else {
                    let e = TokenError::WrongIssuer;
                    return done(
                        Method::Bearer,
                        deny(Denial::InvalidToken(e), realm, None, Some(hash)),
                    );
                };
                let waiting = Waiting {
                    policy: policy_index,
                    strategy: strategy_index,
                    token,
                    source,
                    realm: realm.to_owned(),
                    path: req.path.to_owned(),
                    issuer: strategy.issuer,
                    since_ms: now_ms,
                };
                self.bearer(context_id, waiting, now_ms)
            }
            Credential::Basic { client_id, .. } => {
                // client_credentials is not enforced yet: such requests are refused.
                let hash = short_hash(&client_id);
                done(
                    Method::ClientCredentials,
                    deny(Denial::UnsupportedCredential, realm, None, Some(hash)),
                )
            }
            Credential::OtherScheme => done(
                Method::None,
                deny(Denial::UnsupportedCredential, realm, None, None),
            ),
        }
    }

    /// A bearer JWT for one strategy: claims, then keys (waiting for them if needed), then
    /// signature, scopes and application.
    fn bearer(&mut self, context_id: u32, w: Waiting, now_ms: u64) -> Step {
        let config = Rc::clone(&self.config);
        let Some((policy, strategy)) = lookup(&config, w.policy, w.strategy) else {
            return done(Method::Bearer, deny(Denial::NoPolicy, &w.realm, None, None));
        };
        let hash = short_hash(w.token.raw());
        let fail = |d: Denial| {
            done(
                Method::Bearer,
                deny(d, &w.realm, Some(&strategy.id), Some(hash.clone())),
            )
        };
        let rules = rules(strategy);
        if let Err(e) = claims::check(&w.token, &rules, now_ms / 1000) {
            return fail(Denial::InvalidToken(e));
        }
        if w.token.alg.is_symmetric() && !strategy.enable_hs_signatures {
            return fail(Denial::InvalidToken(TokenError::SymmetricAlgNotEnabled));
        }
        let Some(issuer) = config.issuers.get(w.issuer) else {
            return fail(Denial::IdpUnavailable("issuer is not configured"));
        };
        let Some(state) = self.issuers.get_mut(w.issuer) else {
            return fail(Denial::IdpUnavailable("issuer is not configured"));
        };
        let keys = state.keys(now_ms);
        let forced = match &keys {
            None => false,
            Some(keys) => match w.token.kid.as_deref() {
                // A kid we do not know: the IdP may have rotated; look again (once per
                // cooldown) before refusing.
                Some(kid) if !keys.has_kid(kid) => {
                    if !state.in_flight(now_ms)
                        && !state.may_force(now_ms, issuer.rediscovery_s * 1000)
                    {
                        return fail(Denial::InvalidToken(TokenError::UnknownKid));
                    }
                    true
                }
                _ => {
                    return done(
                        Method::Bearer,
                        self.finish_bearer(policy, strategy, &w, keys.as_ref(), now_ms),
                    )
                }
            },
        };
        // Wait for keys: join the fetch under way, or start one.
        if state.in_flight(now_ms) {
            self.waiting.insert(context_id, w);
            return Step::Wait(None);
        }
        if state.in_backoff(now_ms) {
            if forced {
                return fail(Denial::InvalidToken(TokenError::UnknownKid));
            }
            return fail(Denial::IdpUnavailable("identity provider unavailable"));
        }
        let Some(stage) = state.start(now_ms, issuer.timeout_ms, forced) else {
            return fail(Denial::IdpUnavailable("identity provider unavailable"));
        };
        let callout = self.fetch_callout(w.issuer, stage);
        match callout {
            Some(c) => {
                self.waiting.insert(context_id, w);
                Step::Wait(Some(c))
            }
            None => fail(Denial::IdpUnavailable(
                "identity provider has no key set URL",
            )),
        }
    }

    /// Signature, scopes, application, and the headers to forward.
    fn finish_bearer(
        &self,
        policy: &Policy,
        strategy: &OidcStrategy,
        w: &Waiting,
        keys: &KeySet,
        now_ms: u64,
    ) -> Outcome {
        let hash = short_hash(w.token.raw());
        let fail = |d: Denial| deny(d, &w.realm, Some(&strategy.id), Some(hash.clone()));
        let verified = match jwt::verify(&w.token, keys, &rules(strategy), now_ms / 1000) {
            Ok(v) => v,
            Err(e) => return fail(Denial::InvalidToken(e)),
        };
        if !claims::has_scopes(&verified, &strategy.scopes_claim, &strategy.scopes_required) {
            return fail(Denial::InsufficientScope);
        }
        let values = match verified.credential_values(&strategy.credential_claim) {
            Ok(v) => v,
            Err(e) => return fail(Denial::InvalidToken(e)),
        };
        let app = match self.application(policy, &strategy.id, &values) {
            Ok(app) => app,
            Err(d) => return fail(d),
        };
        let identifier = app.map_or_else(
            || values.first().copied().unwrap_or_default(),
            |a| a.client_id.as_str(),
        );
        let mut allow = allow_for(policy, app, identifier);
        for (claim, header) in &strategy.upstream_headers {
            match verified.header_value(claim) {
                Ok(Some(v)) => allow.set_headers.push((header.clone(), v)),
                Ok(None) => {}
                Err(e) => return fail(Denial::InvalidToken(e)),
            }
            allow.remove_headers.push(header.clone());
        }
        if policy.hide_credentials || strategy.hide_credentials {
            match w.source {
                Source::Header => allow.remove_headers.push("authorization".into()),
                Source::Query => {
                    allow.path = Some(credential::strip_query_params(&w.path, &["access_token"]))
                }
            }
        }
        let _: &VerifiedClaims = &verified;
        Outcome::Allow(allow)
    }

    /// The application for these credential values, checked against the strategy that
    /// authenticated and the policy's scope. `Ok(None)` when no registry is configured.
    fn application<'a>(
        &'a self,
        policy: &Policy,
        strategy_id: &str,
        values: &[&str],
    ) -> Result<Option<&'a Application>, Denial> {
        let Some(apps) = &self.config.applications else {
            return Ok(None);
        };
        let app = values
            .iter()
            .find_map(|v| apps.find(v))
            .ok_or(Denial::UnknownApplication)?;
        // An application registered under another strategy may not use this one.
        if app.auth_strategy_id != strategy_id {
            return Err(Denial::WrongStrategy);
        }
        match &policy.scope {
            Some(scope) if app.approved_for(scope) => Ok(Some(app)),
            _ => Err(Denial::NotApproved),
        }
    }

    fn key_auth(
        &self,
        policy: &Policy,
        strategy: &KeyAuthStrategy,
        name: &str,
        key: &str,
        req: &Request<'_>,
    ) -> Outcome {
        let hash = sha256_hex(key.as_bytes());
        let fail = |d: Denial| {
            deny(
                d,
                req.authority,
                Some(&strategy.id),
                Some(hash.get(..8).unwrap_or_default().to_owned()),
            )
        };
        let app = match self.application(policy, &strategy.id, &[hash.as_str()]) {
            Ok(Some(app)) => app,
            Ok(None) => return fail(Denial::UnknownApplication),
            Err(d) => return fail(d),
        };
        let mut allow = allow_for(policy, Some(app), &app.client_id);
        if policy.hide_credentials {
            allow.remove_headers.push(name.to_owned());
            let stripped = credential::strip_query_params(req.path, &[name]);
            if stripped != req.path {
                allow.path = Some(stripped);
            }
        }
        Outcome::Allow(allow)
    }

    fn fetch_callout(&self, issuer_index: usize, stage: Stage) -> Option<Callout> {
        let issuer = self.config.issuers.get(issuer_index)?;
        let url: &Url = match stage {
            Stage::Discovery => &issuer.discovery,
            Stage::Jwks => &self.issuers.get(issuer_index)?.discovery()?.jwks_uri,
        };
        Some(Callout {
            id: FetchId {
                generation: self.generation,
                issuer: issuer_index,
                stage,
            },
            upstream: self.config.upstream_for(url).to_owned(),
            https: url.https,
            authority: url.authority.clone(),
            method: "GET",
            path: url.path.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            timeout_ms: issuer.timeout_ms,
        })
    }

    /// A callout came back. Unknown or stale ids are ignored.
    pub fn on_callout_response(
        &mut self,
        id: FetchId,
        response: CalloutResponse,
        now_ms: u64,
    ) -> Progress {
        let mut progress = Progress::default();
        if id.generation != self.generation {
            return progress;
        }
        let config = Rc::clone(&self.config);
        let (Some(issuer), Some(state)) = (
            config.issuers.get(id.issuer),
            self.issuers.get_mut(id.issuer),
        ) else {
            return progress;
        };
        if state.stage(now_ms) != Some(id.stage) {
            return progress;
        }
        let ttl_ms = issuer.cache_ttl_s * 1000;
        let limits = &config.limits;
        let body = match check_response(&response, limits.max_response_bytes) {
            Ok(body) => body,
            Err(e) => {
                let what = stage_name(id.stage);
                progress
                    .log
                    .push(format!("{what} fetch for {} failed: {e}", issuer.issuer));
                state.failed(now_ms, e);
                self.settle_issuer(id.issuer, now_ms, &mut progress);
                return progress;
            }
        };
        match id.stage {
            Stage::Discovery => {
                match oidc::parse_discovery(body, &issuer.issuer, limits.max_json_depth) {
                    Ok(discovery) => {
                        state.discovered(discovery, now_ms, ttl_ms, issuer.timeout_ms);
                        match self.fetch_callout(id.issuer, Stage::Jwks) {
                            Some(c) => progress.callouts.push(c),
                            None => self.fail_issuer(
                                id.issuer,
                                now_ms,
                                "no key set URL".into(),
                                &mut progress,
                            ),
                        }
                    }
                    Err(e) => self.fail_issuer(
                        id.issuer,
                        now_ms,
                        format!("discovery document {e}"),
                        &mut progress,
                    ),
                }
            }
            Stage::Jwks => match KeySet::parse(body, limits.max_jwks_keys, limits.max_json_depth) {
                Ok((keys, parsed)) => {
                    progress.log.push(format!(
                        "keys of {}: {} usable, {} skipped",
                        issuer.issuer, parsed.usable, parsed.skipped
                    ));
                    state.keys_fetched(keys, now_ms, ttl_ms);
                    self.settle_issuer(id.issuer, now_ms, &mut progress);
                }
                Err(e) => {
                    self.fail_issuer(id.issuer, now_ms, format!("key set {e}"), &mut progress)
                }
            },
        }
        progress
    }

    fn fail_issuer(&mut self, issuer: usize, now_ms: u64, error: String, progress: &mut Progress) {
        if let (Some(state), Some(cfg)) = (
            self.issuers.get_mut(issuer),
            self.config.issuers.get(issuer),
        ) {
            progress
                .log
                .push(format!("fetch for {} failed: {error}", cfg.issuer));
            state.failed(now_ms, error);
        }
        self.settle_issuer(issuer, now_ms, progress);
    }

    /// Re-runs every request waiting on this issuer, now that its fetch ended one way or
    /// the other.
    fn settle_issuer(&mut self, issuer: usize, now_ms: u64, progress: &mut Progress) {
        let ids: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.issuer == issuer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(w) = self.waiting.remove(&id) else {
                continue;
            };
            match self.bearer(id, w, now_ms) {
                Step::Done(method, outcome) => progress.settled.push((id, method, outcome)),
                Step::Wait(callout) => progress.callouts.extend(callout),
            }
        }
    }

    /// Periodic work: warm and refresh keys before they are needed, and give up on requests
    /// that waited longer than their fetch could take.
    pub fn on_tick(&mut self, now_ms: u64) -> Progress {
        let mut progress = Progress::default();
        for index in 0..self.issuers.len() {
            let (Some(issuer), Some(state)) =
                (self.config.issuers.get(index), self.issuers.get_mut(index))
            else {
                continue;
            };
            if state.wants_refresh(now_ms, issuer.cache_ttl_s * 1000) {
                if let Some(stage) = state.start(now_ms, issuer.timeout_ms, false) {
                    if let Some(c) = self.fetch_callout(index, stage) {
                        progress.callouts.push(c);
                    }
                }
            }
        }
        let config = Rc::clone(&self.config);
        let expired: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| {
                let timeout = config.issuers.get(w.issuer).map_or(0, |i| i.timeout_ms);
                now_ms >= w.since_ms.saturating_add(timeout).saturating_add(2_000)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiting.remove(&id) {
                let outcome = deny(
                    Denial::IdpUnavailable("identity provider did not answer in time"),
                    &w.realm,
                    None,
                    Some(short_hash(w.token.raw())),
                );
                progress.settled.push((id, Method::Bearer, outcome));
            }
        }
        progress
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Discovery => "discovery",
        Stage::Jwks => "key set",
    }
}

/// A usable response body: a 200 within the size limit. Anything else is a failure whose
/// result is never cached.
fn check_response(response: &CalloutResponse, max_bytes: usize) -> Result<&[u8], String> {
    if let Some(failure) = &response.failure {
        return Err(failure.clone());
    }
    match response.status {
        None => Err("no response (connection failed, reset or timed out)".into()),
        Some(200) if response.body.len() > max_bytes => {
            Err(format!("response larger than {max_bytes} bytes"))
        }
        Some(200) => Ok(&response.body),
        Some(status) => Err(format!("HTTP status {status}")),
    }
}

fn lookup(config: &Config, policy: usize, strategy: usize) -> Option<(&Policy, &OidcStrategy)> {
    let p = config.policies.get(policy)?;
    match p.strategies.get(strategy)? {
        Strategy::OpenIdConnect(s) => Some((p, s)),
        Strategy::KeyAuth(_) => None,
    }
}

/// The bearer strategy whose accepted issuers include the token's (unverified) `iss`; the
/// signature check that follows uses only that issuer's keys.
fn bearer_strategy<'a>(
    policy: &'a Policy,
    token: &ParsedToken,
) -> Option<(usize, &'a OidcStrategy)> {
    let iss = token.claims.get("iss")?.as_str()?;
    policy
        .strategies
        .iter()
        .enumerate()
        .find_map(|(i, s)| match s {
            Strategy::OpenIdConnect(o)
                if o.auth_methods.bearer && o.issuers_allowed.iter().any(|a| a == iss) =>
            {
                Some((i, o))
            }
            _ => None,
        })
}

fn rules(strategy: &OidcStrategy) -> ClaimRules<'_> {
    ClaimRules {
        issuers_allowed: &strategy.issuers_allowed,
        audience_required: &strategy.audience_required,
        audience_claim: &strategy.audience_claim,
        leeway: strategy.leeway,
        enable_hs_signatures: strategy.enable_hs_signatures,
    }
}

/// The forwarded identity: the application's headers (when a registry is configured) and
/// the credential identifier, after removing any client-sent copies.
fn allow_for(policy: &Policy, app: Option<&Application>, identifier: &str) -> Allow {
    let _ = policy;
    let mut allow = Allow {
        remove_headers: APPLICATION_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect(),
        ..Allow::default()
    };
    if let Some(app) = app {
        allow
            .set_headers
            .push(("x-application-id".into(), app.id.clone()));
        let optional = [
            ("x-application-developer-id", &app.developer_id),
            ("x-application-portal-id", &app.portal_id),
            ("x-application-org-id", &app.organization_id),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                allow.set_headers.push((name.into(), v.clone()));
            }
        }
        allow.application_id = Some(app.id.clone());
    }
    allow
        .set_headers
        .push(("x-credential-identifier".into(), identifier.to_owned()));
    allow
}

fn done(method: Method, outcome: Outcome) -> Step {
    Step::Done(method, outcome)
}

fn deny(
    denial: Denial,
    realm: &str,
    strategy_id: Option<&str>,
    credential_hash: Option<String>,
) -> Outcome {
    Outcome::Deny(Deny {
        denial,
        reply: denial.reply(realm),
        strategy_id: strategy_id.map(str::to_owned),
        credential_hash,
    })
}

fn malformed(m: Malformed, realm: &str, strategy_id: Option<&str>) -> Outcome {
    let denial = match m {
        Malformed::InvalidRequest(why) => Denial::InvalidRequest(why),
        Malformed::TooLarge => Denial::TokenTooLarge,
        Malformed::DuplicateApiKey => Denial::DuplicateApiKey,
    };
    deny(denial, realm, strategy_id, None)
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = hmac_sha256::Hash::hash(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Eight hex digits of SHA-256: enough to correlate log lines, useless to an attacker.
pub fn short_hash(secret: &str) -> String {
    let mut h = sha256_hex(secret.as_bytes());
    h.truncate(8);
    h
}

#[cfg(test)]
mod tests;
