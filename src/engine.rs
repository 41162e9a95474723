//! The decision flow: compiled config + request view + time + cached key state in, a
//! [`Step`] out (allow with headers, deny with a reply, or wait for a callout and be called
//! back). Nothing here calls the proxy.

use crate::apps::Application;
use crate::cache::{Flights, IssuerKeys, Memo, Stage, TtlCache};
use crate::config::{Config, KeyAuthStrategy, Limits, OidcStrategy, Policy, Strategy};
use crate::credential::{self, Candidate, Credential, Header, Malformed, Source};
use crate::json::Json;
use crate::jwt::native::{self, SignatureBackend};
use crate::jwt::{
    self, claims, ClaimRules, HeaderMemo, KeySet, ParsedToken, TokenError, VerifiedClaims,
};
use crate::metrics::{self, Counters};
use crate::oidc::{self, Url};
use crate::response::{Denial, Reply};
use crate::shared::{Ended, KeyRecord, Lease, Refusal, SharedStore, Slots};
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

/// The least time keys fetched with a `Cache-Control: max-age` are kept (an IdP's
/// `max-age=0` must not make every request a fetch).
const MIN_KEYS_TTL_S: u64 = 30;

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
    pub headers: &'a [Header<'a>],
}

/// What a bearer token can have been accepted by: its signature, or the IdP's introspection.
const BEARER: &[Method] = &[Method::Bearer, Method::Introspection];

/// How the request was authenticated, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    None,
    Bearer,
    ClientCredentials,
    Introspection,
    KeyAuth,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Bearer => "bearer",
            Method::ClientCredentials => "client_credentials",
            Method::Introspection => "introspection",
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

impl Allow {
    /// Whether the header `name` is among those removed.
    fn removes(&self, name: &str) -> bool {
        self.remove_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }
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
    /// Shared: a remembered decision is handed out again without copying its headers.
    Allow(Rc<Allow>),
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

/// What a fetch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchKind {
    /// An issuer's discovery document or key set.
    Keys { issuer: usize, stage: Stage },
    /// A client-credentials token exchange.
    Token { serial: u64 },
    /// A token introspection.
    Introspection { serial: u64 },
}

/// Identifies a fetch, so that its response finds its way back, and a response for an
/// engine that was since replaced (reconfiguration) is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId {
    pub generation: u64,
    pub kind: FetchKind,
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
    /// `Cache-Control: max-age`, in seconds, if the response had one.
    pub max_age_s: Option<u64>,
}

/// Requests settled and callouts to send, after a callout response or a tick.
#[derive(Debug, Default)]
pub struct Progress {
    pub settled: Vec<(u32, Method, Outcome)>,
    pub callouts: Vec<Callout>,
    /// Lines for the log (fetch failures and successes), never secrets.
    pub log: Vec<String>,
}

/// The credential a request is being checked with, in the form that survives a wait.
#[derive(Debug)]
enum Pending {
    /// A bearer JWT.
    Bearer(ParsedToken),
    /// Basic client credentials, exchanged for a token at the IdP. `cache_key` is
    /// SHA-256(issuer, strategy id, client_id, secret); `retried` after one failed
    /// verification.
    ClientCredentials {
        client_id: String,
        client_secret: String,
        cache_key: String,
        retried: bool,
    },
    /// A token checked at the introspection endpoint.
    Introspection(String),
}

/// A bearer token on its way to a strategy (`Engine::new_bearer`).
struct NewBearer<'t> {
    /// As sent: text (from `extract`), or a JWT that parsed (ASCII).
    token: &'t [u8],
    source: Source,
    /// The verified-token cache was already asked about it.
    looked_up: bool,
    /// Parsed already (by `parsed_bearer`), or `None`.
    parsed: Option<Result<ParsedToken, TokenError>>,
}

/// A request being decided (possibly across waits).
#[derive(Debug)]
struct Job {
    policy: usize,
    strategy: usize,
    pending: Pending,
    source: Source,
    realm: String,
    path: String,
    since_ms: u64,
    /// Already counted as waiting for another VM's fetch (`KEYS_LEASE_WAIT`): the tick
    /// re-runs a waiting request while that VM still holds the lease, and one request is one
    /// wait.
    lease_wait_counted: bool,
}

impl Job {
    /// A job of the policy and strategy `(policy, strategy)` for this request.
    fn new(
        (policy, strategy): (usize, usize),
        pending: Pending,
        source: Source,
        req: &Request<'_>,
        now_ms: u64,
    ) -> Job {
        Job {
            policy,
            strategy,
            pending,
            source,
            realm: req.authority.to_owned(),
            path: req.path.to_owned(),
            since_ms: now_ms,
            lease_wait_counted: false,
        }
    }

    fn method(&self) -> Method {
        match self.pending {
            Pending::Bearer(_) => Method::Bearer,
            Pending::ClientCredentials { .. } => Method::ClientCredentials,
            Pending::Introspection(_) => Method::Introspection,
        }
    }

    fn credential_hash(&self) -> String {
        match &self.pending {
            Pending::Bearer(t) => short_hash(t.raw()),
            Pending::ClientCredentials { client_id, .. } => short_hash(client_id),
            Pending::Introspection(t) => short_hash(t),
        }
    }
}

/// What a waiting request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaited {
    Keys(usize),
    Token(String),
    Introspection(String),
}

/// A cached introspection answer.
#[derive(Debug, Clone)]
enum Introspected {
    /// Shared with each request it answers (claims are checked again, never copied).
    Active(Rc<crate::json::Object>),
    Inactive,
}

/// An IdP's no is remembered this long: an inactive introspection answer (a revoked token
/// stays revoked) and a token endpoint's refusal of client credentials (a client retrying a
/// wrong secret in a loop costs the IdP one exchange per this long, not one per request: an
/// IdP limits its token endpoint's rate per caller, and every exchange comes from the proxy).
/// A token that becomes active, or a secret that becomes valid, waits at most this long.
const REFUSAL_TTL_MS: u64 = 5_000;

/// The per-VM engine: compiled config plus what has been learnt from the IdPs.
#[derive(Debug)]
pub struct Engine {
    config: Rc<Config>,
    generation: u64,
    issuers: Vec<IssuerKeys>,
    waiting: HashMap<u32, (Awaited, Job)>,
    /// Exchanged client-credentials tokens, by `Pending::ClientCredentials::cache_key`.
    tokens: TtlCache<String>,
    /// SHA-256 (hex) of credentials that named something when last hashed (an API key of a
    /// registered application; the cache key of an exchanged token), by the bytes hashed:
    /// one presented again is looked up rather than hashed (the hash was most of the
    /// module's work on such a request). It holds the credentials, as `verified` holds
    /// tokens; bounded (`MAX_DIGESTS`, first in, first out), and wrong credentials are
    /// never kept, so a stream of them evicts nothing.
    digests: TtlCache<String>,
    /// Client credentials the token endpoint refused, by the same key, for `REFUSAL_TTL_MS`,
    /// with the IdP's error (a cache of their own: refusals never evict good tokens).
    refused_exchanges: TtlCache<String>,
    token_flights: Flights,
    /// Introspection answers, by SHA-256(endpoint, strategy id, token).
    introspections: TtlCache<Introspected>,
    introspection_flights: Flights,
    /// Tokens that passed every check, by (policy, token): the next request with one skips
    /// parsing and signature verification. Once full, a new token is kept at its second
    /// use: tokens used once each (a stream of new ones) do not push out the ones in use.
    verified: TtlCache<Verified>,
    /// Shared data across VMs (the issuer's keys and fetch lease), and the three keys of
    /// each issuer in it.
    store: Rc<dyn SharedStore>,
    slots: Vec<Slots>,
    counters: Rc<dyn Counters>,
    /// Who checks signatures the host can check (Envoy: native BoringSSL).
    backend: Rc<dyn SignatureBackend>,
    /// Bumped whenever any issuer's key set changes; remembered verifications of an older
    /// generation are not used.
    verified_generation: usize,
    /// Each application's forwarded identity, built once: most requests that are not
    /// cache hits (a new token, a key) forward exactly this. Bounded: cleared when full.
    identities: Memo<Rc<Allow>>,
    /// JWT headers already read (an issuer's new tokens share one).
    jose_headers: HeaderMemo,
    /// Whether every waiting request has a callout of its own and is answered only from
    /// it: for a host that resumes only the request whose callout answered (Kong), where
    /// a request that joined another's callout would never be resumed.
    own_callouts: bool,
    /// With `own_callouts`, the request whose callout is being answered: the only request
    /// a settle may answer (`None`: no request's, as on a tick).
    answering: Option<u32>,
    /// Exchanges and introspections whose callout the host dropped unanswered: the next
    /// tick re-runs whoever waited on them.
    dropped: Vec<Awaited>,
}

/// How many applications' identities are kept built (each a few hundred bytes).
const MAX_IDENTITIES: usize = 4096;

/// How many credentials' digests are kept (each about 200 bytes with its credential).
const MAX_DIGESTS: usize = 1024;

/// A remembered verification: what the request needs to be allowed again without redoing
/// the work, valid until the token's `exp` and only with the key set it was verified with.
#[derive(Debug, Clone)]
struct Verified {
    policy: usize,
    /// How the token was accepted: a token the filter got by exchanging client credentials
    /// stands for those credentials only, and a bearer token's decision is never one made
    /// for an exchange (whose allow replaces the client's `Authorization`).
    method: Method,
    issuer: usize,
    generation: usize,
    hide_credentials: bool,
    allow: Rc<Allow>,
    /// For a token the filter got by exchanging client credentials: the exchange's cache
    /// key (issuer, strategy, client_id, secret). The IdP may hand the same token to another
    /// client (or for another secret): that request is never given this one's identity.
    exchange: Option<String>,
}

/// What checking a JWT came to.
enum Checked {
    Verified(VerifiedClaims),
    Denied(Denial),
}

impl Engine {
    /// An engine with state of its own only (one VM), counting nothing.
    pub fn new(config: Rc<Config>, generation: u64) -> Engine {
        Engine::with_host(
            config,
            generation,
            Rc::new(crate::shared::MemoryStore::default()),
            Rc::new(metrics::NoCounters),
        )
    }

    /// An engine that shares key state through `store` and counts into `counters`.
    pub fn with_host(
        config: Rc<Config>,
        generation: u64,
        store: Rc<dyn SharedStore>,
        counters: Rc<dyn Counters>,
    ) -> Engine {
        let issuers = config
            .issuers
            .iter()
            .map(|_| IssuerKeys::default())
            .collect();
        let slots = config
            .issuers
            .iter()
            .map(|i| Slots::for_issuer(&i.issuer))
            .collect();
        let capacity = config.limits.max_cache_entries;
        Engine {
            config,
            generation,
            issuers,
            waiting: HashMap::new(),
            tokens: TtlCache::new(capacity),
            digests: TtlCache::new(MAX_DIGESTS),
            refused_exchanges: TtlCache::new(capacity),
            token_flights: Flights::default(),
            introspections: TtlCache::new(capacity),
            introspection_flights: Flights::default(),
            verified: TtlCache::with_doorkeeper(capacity),
            store,
            slots,
            counters,
            backend: Rc::new(native::PureRust),
            verified_generation: 0,
            identities: Memo::new(MAX_IDENTITIES),
            jose_headers: HeaderMemo::default(),
            own_callouts: false,
            answering: None,
            dropped: Vec::new(),
        }
    }

    /// For a host that can resume a request only from that request's own callback (Kong:
    /// ngx_wasm_module's `set_effective_context` does nothing): a request that has to wait
    /// never joins another's callout but sends its own (the same fetch, exchange or
    /// introspection again), and each callout's answer settles only the request that sent
    /// it (see [`Engine::on_request_callout_response`]).
    pub fn set_own_callouts(&mut self) {
        self.own_callouts = true;
    }

    /// Whether request `context_id` waits for a callout.
    pub fn is_waiting(&self, context_id: u32) -> bool {
        self.waiting.contains_key(&context_id)
    }

    /// Lets the host verify the signatures it can (probed at start-up).
    pub fn set_signature_backend(&mut self, backend: Rc<dyn SignatureBackend>) {
        self.backend = backend;
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
        // Every request ends here, and almost none waited.
        if !self.waiting.is_empty() {
            self.waiting.remove(&context_id);
        }
    }

    /// A callout that will never be answered: the host dropped it with the request that
    /// sent it (Envoy cancels a request's callouts, unanswered, when its stream ends, and
    /// other requests may be waiting on that fetch). The fetch is over, nothing failed; the
    /// next tick re-runs its waiters, whose new callouts go out from the root context, which
    /// lives as long as the configuration.
    pub fn abandon(&mut self, id: FetchId, now_ms: u64) {
        if id.generation != self.generation {
            return;
        }
        match id.kind {
            FetchKind::Keys { issuer, stage } => {
                if let Some(state) = self.issuers.get_mut(issuer) {
                    if state.stage(now_ms) == Some(stage) {
                        state.abandoned();
                        if let Some(slots) = self.slots.get(issuer) {
                            Lease::release(self.store.as_ref(), &slots.lease, Ended::Dropped);
                        }
                    }
                }
                // The tick re-runs an issuer's waiters when no fetch is under way.
            }
            FetchKind::Token { serial } => {
                if let Some((key, _)) = self.token_flights.finish(serial) {
                    self.rerun_at_tick(Awaited::Token(key));
                }
            }
            FetchKind::Introspection { serial } => {
                if let Some((key, _)) = self.introspection_flights.finish(serial) {
                    self.rerun_at_tick(Awaited::Introspection(key));
                }
            }
        }
    }

    /// Has the next tick re-run whoever waits on `awaited`: kept once, and only while
    /// someone waits (so the list stays as short as the requests waiting, tick or no tick).
    fn rerun_at_tick(&mut self, awaited: Awaited) {
        if !self.dropped.contains(&awaited) && self.waiting.values().any(|(a, _)| *a == awaited) {
            self.dropped.push(awaited);
        }
    }

    /// Decides on a request whose headers just arrived.
    pub fn on_request(&mut self, context_id: u32, req: &Request<'_>, now_ms: u64) -> Step {
        let config = Rc::clone(&self.config);
        let realm = req.authority;
        // Before anything reads a header: nothing below should walk an unbounded list.
        if too_many_headers(req.headers, config.limits.max_request_headers) {
            return done(
                Method::None,
                deny(Denial::TooManyHeaders, realm, None, None),
            );
        }
        let Some((policy_index, policy)) = config.policy_for(req.route) else {
            return done(Method::None, deny(Denial::NoPolicy, realm, None, None));
        };
        let limits = &config.limits;

        // Kong's order: key-auth first, then OpenID Connect by method. One key under the
        // names of all the policy's key_auth strategies (two are a duplicate, whichever
        // strategies read them); the first strategy that reads its name takes it.
        if !policy.key_names.is_empty() {
            match credential::extract_api_key(
                req.headers,
                req.path,
                &policy.key_names,
                limits.max_token_bytes,
            ) {
                Ok(None) => {}
                Ok(Some((name, key))) => {
                    let first = policy.strategies.iter().find_map(|s| match s {
                        Strategy::KeyAuth(ka) if ka.key_names.iter().any(|n| n == name) => Some(ka),
                        _ => None,
                    });
                    if let Some(first) = first {
                        let registered = |e: &Self, hash: &str| {
                            e.config
                                .applications
                                .as_ref()
                                .is_some_and(|apps| apps.find(hash).is_some())
                        };
                        let decide = |e: &Self, hash: &str| {
                            let ka = e.key_auth_strategy(policy, first, (name, &key), hash, req);
                            e.key_auth(policy, ka, name, hash, req)
                        };
                        let outcome =
                            self.credential_digest(key.as_bytes(), registered, now_ms, decide);
                        return done(Method::KeyAuth, outcome);
                    }
                }
                Err(m) => return done(Method::KeyAuth, malformed(m, realm, None)),
            }
        }
        if !policy
            .strategies
            .iter()
            .any(|s| matches!(s, Strategy::OpenIdConnect(_)))
        {
            return done(
                Method::None,
                deny(Denial::MissingCredential, realm, None, None),
            );
        }
        // The hot path: a token this policy already accepted, still valid. It is looked up
        // before it is validated: what is remembered passed `extract` when first seen, so an
        // exact match is that same well-formed token.
        let candidate = credential::cache_candidate(req.headers, req.path, limits.max_token_bytes);
        match candidate {
            Some(Candidate::Bearer(token)) => {
                if let Some(hit) = self.remembered(
                    token,
                    policy_index,
                    req.path,
                    Source::Header,
                    BEARER,
                    None,
                    now_ms,
                ) {
                    return self.remembered_bearer(hit);
                }
            }
            // Client credentials whose exchanged token is cached and verified: the exact
            // `Authorization` value that was allowed with it, before it is decoded (see
            // `remember_basic`).
            Some(Candidate::Basic(value)) => {
                if let Some((method, allow)) = self.remembered(
                    value,
                    policy_index,
                    req.path,
                    Source::Header,
                    &[Method::ClientCredentials],
                    None,
                    now_ms,
                ) {
                    self.counters.add(metrics::CACHE_TOKEN_HIT);
                    return done(method, Outcome::Allow(allow));
                }
            }
            None => {}
        }
        let refused = match parsed_bearer(candidate, limits, &self.jose_headers) {
            Some((token, Ok(parsed))) => {
                let new = NewBearer {
                    token,
                    source: Source::Header,
                    looked_up: true,
                    parsed: Some(Ok(parsed)),
                };
                return self.new_bearer(context_id, (policy_index, policy), req, new, now_ms);
            }
            Some((token, Err(e))) => Some((token, e)),
            None => None,
        };
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
        let job = |strategy: usize, pending: Pending, source: Source| {
            Job::new((policy_index, strategy), pending, source, req, now_ms)
        };
        match credential {
            Credential::Bearer { token, source } => {
                // The same token the parse above refused is not parsed again.
                let parsed = match refused {
                    Some((t, e)) if t == token.as_bytes() => Some(Err(e)),
                    _ => None,
                };
                let new = NewBearer {
                    token: token.as_bytes(),
                    source,
                    looked_up: matches!(candidate, Some(Candidate::Bearer(_))),
                    parsed,
                };
                self.new_bearer(context_id, (policy_index, policy), req, new, now_ms)
            }
            Credential::Basic {
                client_id,
                client_secret,
            } => match self.client_credentials_strategy(policy, &client_id) {
                Ok((i, strategy)) => {
                    let issuer = config
                        .issuers
                        .get(strategy.issuer)
                        .map_or("", |i| i.issuer.as_str());
                    // One line per (issuer, strategy, client, secret): no configured string
                    // nor a client_id holds a newline (control characters are refused), so
                    // the secret cannot shift into another field. The strategy: two of one
                    // issuer may request different scopes, and a token got for one is not
                    // the other's (one id never names two strategies).
                    let line = [
                        issuer.as_bytes(),
                        b"\n",
                        strategy.id.as_bytes(),
                        b"\n",
                        client_id.as_bytes(),
                        b"\n",
                        client_secret.as_bytes(),
                    ]
                    .concat();
                    let exchanged = |e: &Self, key: &str| e.tokens.get(key, now_ms).is_some();
                    let cache_key =
                        self.credential_digest(&line, exchanged, now_ms, |_, d| d.to_owned());
                    let sent = match candidate {
                        Some(Candidate::Basic(value)) if credential::plain_basic(value) => {
                            Some((value, cache_key.clone()))
                        }
                        _ => None,
                    };
                    let pending = Pending::ClientCredentials {
                        client_id,
                        client_secret,
                        cache_key,
                        retried: false,
                    };
                    let step = self.run(context_id, job(i, pending, Source::Header), now_ms);
                    if let (Some((value, cache_key)), Step::Done(_, Outcome::Allow(_))) =
                        (sent, &step)
                    {
                        self.remember_basic(value, &cache_key, now_ms);
                    }
                    step
                }
                Err(d) => done(
                    Method::ClientCredentials,
                    deny(d, realm, None, Some(short_hash(&client_id))),
                ),
            },
            Credential::OtherScheme => done(
                Method::None,
                deny(Denial::UnsupportedCredential, realm, None, None),
            ),
        }
    }

    /// A bearer token no cache knew: handed to the strategy that takes it (by its issuer, or
    /// by introspection), or refused.
    fn new_bearer(
        &mut self,
        context_id: u32,
        (policy_index, policy): (usize, &Policy),
        req: &Request<'_>,
        new: NewBearer<'_>,
        now_ms: u64,
    ) -> Step {
        let NewBearer {
            token,
            source,
            looked_up,
            parsed,
        } = new;
        let realm = req.authority;
        let max_json_depth = self.config.limits.max_json_depth;
        let job = |strategy: usize, pending: Pending| {
            Job::new((policy_index, strategy), pending, source, req, now_ms)
        };
        // A scheme no strategy of the route takes (client_credentials only), as a Basic
        // header where none exchanges: no token error, nothing parsed.
        let takes_bearer = policy.strategies.iter().any(|s| {
            matches!(s, Strategy::OpenIdConnect(o)
                if o.auth_methods.bearer || o.auth_methods.introspection)
        });
        if !takes_bearer {
            return done(
                Method::None,
                deny(Denial::UnsupportedCredential, realm, None, None),
            );
        }
        // A token the fast path did not look up (from the query string).
        if !looked_up {
            if let Some(hit) =
                self.remembered(token, policy_index, req.path, source, BEARER, None, now_ms)
            {
                return self.remembered_bearer(hit);
            }
        }
        self.counters.add(metrics::CACHE_VERIFIED_MISS);
        let parsed = match parsed {
            Some(parsed) => parsed,
            None => ParsedToken::parse_with(token, max_json_depth, &self.jose_headers),
        };
        // A JWT goes to the bearer strategy that accepts its issuer; anything else (or any
        // token, with introspect_jwt_tokens) to introspection if enabled.
        let jwt_strategy = parsed
            .as_ref()
            .ok()
            .and_then(|t| self.bearer_strategy(policy, t));
        // The JWT's own strategy introspects it if it introspects JWTs; a token no strategy
        // takes by issuer goes to the first that introspects, and a JWT only to one that
        // accepts its `iss`: another IdP's endpoint never sees it.
        let introspecting = match jwt_strategy {
            Some(i) => match policy.strategies.get(i) {
                Some(Strategy::OpenIdConnect(o)) if takes_jwt_by_introspection(o) => Some(i),
                _ => None,
            },
            None => introspecting_by_issuer(policy, &parsed, token, max_json_depth),
        };
        // RFC 9068 §4: a strategy that requires JWT access tokens refuses any other JWT it
        // introspects, as it does on the bearer path: the IdP's `active` says the token is
        // live, not that it is an access token (an ID token may be). A JWT the filter could
        // not parse is read for its `typ` all the same.
        if let Some(Strategy::OpenIdConnect(o)) =
            introspecting.and_then(|i| policy.strategies.get(i))
        {
            let at_jwt = match &parsed {
                Ok(t) => Some(t.at_jwt),
                Err(_) => jwt::token::claimed_at_jwt(token),
            };
            if o.require_at_jwt && at_jwt == Some(false) {
                let d = Denial::InvalidToken(TokenError::NotAtJwt);
                return done(
                    Method::Introspection,
                    deny(d, realm, Some(&o.id), Some(short_hash(token))),
                );
            }
        }
        match (parsed, jwt_strategy, introspecting) {
            (_, _, Some(i)) => {
                // Text: it came from `extract` as text, or parsed as a JWT (ASCII).
                let Ok(text) = std::str::from_utf8(token) else {
                    let why = Malformed::InvalidRequest("bearer token is not a token68 string");
                    return done(Method::Introspection, malformed(why, realm, None));
                };
                let pending = Pending::Introspection(text.to_owned());
                self.run(context_id, job(i, pending), now_ms)
            }
            (Ok(t), Some(i), None) => self.run(context_id, job(i, Pending::Bearer(t)), now_ms),
            (Ok(_), None, None) => {
                let d = Denial::InvalidToken(TokenError::WrongIssuer);
                done(
                    Method::Bearer,
                    deny(d, realm, None, Some(short_hash(token))),
                )
            }
            (Err(e), _, None) => done(
                Method::Bearer,
                deny(
                    Denial::InvalidToken(e),
                    realm,
                    None,
                    Some(short_hash(token)),
                ),
            ),
        }
    }

    /// The strategy that takes this JWT (by `bearer`, or by introspecting JWTs) and whose
    /// accepted issuers include the token's (unverified) `iss`. With several (one IdP,
    /// several strategies), the application named by the token's credential claim picks, as
    /// Kong does (else one that introspects JWTs, else the first); verification then uses
    /// that strategy only. A strategy of another issuer never takes the token.
    fn bearer_strategy(&self, policy: &Policy, token: &ParsedToken) -> Option<usize> {
        let iss = token.claims.get("iss")?.as_str()?;
        let iss = iss.as_ref();
        let mut candidates = policy
            .strategies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Strategy::OpenIdConnect(o)
                    if (o.auth_methods.bearer || takes_jwt_by_introspection(o))
                        && o.issuers_allowed.iter().any(|a| a == iss) =>
                {
                    Some((i, o.as_ref()))
                }
                _ => None,
            });
        // One strategy takes this issuer's tokens (the usual route): no application to look
        // up twice.
        let first = candidates.next()?;
        let Some(second) = candidates.next() else {
            return Some(first.0);
        };
        let mut all: Vec<(usize, &OidcStrategy)> = vec![first, second];
        all.extend(candidates);
        let candidates = all;
        // Unless the application picks: one that introspects JWTs (it was configured to see
        // them), else the first.
        let fallback = candidates
            .iter()
            .find(|(_, o)| takes_jwt_by_introspection(o))
            .or(candidates.first())?
            .0;
        let Some(apps) = &self.config.applications else {
            return Some(fallback);
        };
        candidates
            .iter()
            .find(|(_, o)| {
                // The application `authorize` will find: the first of the claim's values
                // that names one.
                let app_strategy = claims::credential_values(&token.claims, &o.credential_claim)
                    .ok()
                    .and_then(|values| values.iter().find_map(|v| apps.find(v)))
                    .map(|a| a.auth_strategy_id.as_str());
                app_strategy == Some(o.id.as_str())
            })
            .map_or(Some(fallback), |(i, _)| Some(*i))
    }

    /// The key-auth strategy for a key that `first` found: with several on the route that find
    /// this same key (Konnect's key_auth strategies all default to `apikey`), the one its
    /// application was registered under, as for bearer tokens; otherwise `first`.
    fn key_auth_strategy<'a>(
        &self,
        policy: &'a Policy,
        first: &'a KeyAuthStrategy,
        (name, key): (&str, &str),
        hash: &str,
        req: &Request<'_>,
    ) -> &'a KeyAuthStrategy {
        // One key_auth strategy on the route (the usual case): nothing to pick, and no second
        // registry lookup on every request.
        let several = policy
            .strategies
            .iter()
            .filter(|s| matches!(s, Strategy::KeyAuth(_)))
            .nth(1)
            .is_some();
        if !several {
            return first;
        }
        let Some(app) = self
            .config
            .applications
            .as_ref()
            .and_then(|apps| apps.find(hash))
        else {
            return first;
        };
        if app.auth_strategy_id == first.id {
            return first;
        }
        let max = self.config.limits.max_token_bytes;
        policy
            .strategies
            .iter()
            .find_map(|s| match s {
                Strategy::KeyAuth(k) if k.id == app.auth_strategy_id => {
                    // Only if it reads this key under the same name (what hide_credentials
                    // strips), once.
                    match credential::extract_api_key(req.headers, req.path, &k.key_names, max) {
                        Ok(Some((n, found))) if *found == *key && n.eq_ignore_ascii_case(name) => {
                            Some(k)
                        }
                        _ => None,
                    }
                }
                _ => None,
            })
            .unwrap_or(first)
    }

    /// The client-credentials strategy for a client: with a registry, the application's own
    /// strategy (which must be on this route); without, the first that takes the method.
    fn client_credentials_strategy<'a>(
        &self,
        policy: &'a Policy,
        client_id: &str,
    ) -> Result<(usize, &'a OidcStrategy), Denial> {
        let mut candidates = policy
            .strategies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Strategy::OpenIdConnect(o) if o.auth_methods.client_credentials => {
                    Some((i, o.as_ref()))
                }
                _ => None,
            });
        let Some(apps) = &self.config.applications else {
            return candidates.next().ok_or(Denial::UnsupportedCredential);
        };
        let mut candidates = candidates.peekable();
        if candidates.peek().is_none() {
            return Err(Denial::UnsupportedCredential);
        }
        // Unknown clients are refused before any callout: the IdP is not an oracle for
        // guessing secrets of applications the portal never approved.
        let app = apps.find(client_id).ok_or(Denial::UnknownApplication)?;
        candidates
            .find(|(_, o)| o.id == app.auth_strategy_id)
            .ok_or(Denial::WrongStrategy)
    }

    /// Runs (or resumes) a job.
    fn run(&mut self, context_id: u32, job: Job, now_ms: u64) -> Step {
        match &job.pending {
            Pending::Bearer(_) => self.run_bearer(context_id, job, now_ms),
            Pending::ClientCredentials { .. } => {
                self.run_client_credentials(context_id, job, now_ms)
            }
            Pending::Introspection(_) => self.run_introspection(context_id, job, now_ms),
        }
    }

    fn fail(&self, job: &Job, denial: Denial) -> Step {
        let strategy = lookup(&self.config, job.policy, job.strategy).map(|(_, s)| s.id.as_str());
        done(
            job.method(),
            deny(denial, &job.realm, strategy, Some(job.credential_hash())),
        )
    }

    fn wait(
        &mut self,
        context_id: u32,
        awaited: Awaited,
        job: Job,
        callout: Option<Callout>,
    ) -> Step {
        if self.own_callouts && callout.is_none() {
            // Nothing would ever resume it: refused now rather than left hanging.
            return self.fail(
                &job,
                Denial::IdpUnavailable("no callout of its own to wait for"),
            );
        }
        self.waiting.insert(context_id, (awaited, job));
        Step::Wait(callout)
    }

    fn run_bearer(&mut self, context_id: u32, job: Job, now_ms: u64) -> Step {
        let config = Rc::clone(&self.config);
        let Some((policy, strategy)) = lookup(&config, job.policy, job.strategy) else {
            return self.fail(&job, Denial::NoPolicy);
        };
        let Pending::Bearer(token) = &job.pending else {
            return self.fail(&job, Denial::NoPolicy);
        };
        match self.check_jwt(strategy, token, now_ms) {
            Ok(Checked::Verified(verified)) => {
                let outcome = self.authorize(&job, policy, strategy, &verified, None);
                self.remember(
                    token.raw(),
                    &job,
                    policy,
                    strategy,
                    verified.exp().saturating_mul(1000),
                    &outcome,
                    now_ms,
                );
                done(job.method(), outcome)
            }
            Ok(Checked::Denied(d)) => self.fail(&job, d),
            Err(forced) => self.wait_for_keys(context_id, job, strategy.issuer, forced, now_ms),
        }
    }

    /// A remembered allow for `token` under this policy, made by one of `methods`: verified
    /// with the current key sets (or, for introspection, answered by the IdP), before its
    /// `exp` and, for introspection, before its cached answer expires. `exchange`: the
    /// exchange's cache key, for a token the filter got for client credentials.
    #[allow(clippy::too_many_arguments)]
    fn remembered(
        &self,
        token: &[u8],
        policy: usize,
        path: &str,
        source: Source,
        methods: &[Method],
        exchange: Option<&str>,
        now_ms: u64,
    ) -> Option<(Method, Rc<Allow>)> {
        let v = self.verified.get(token, now_ms)?;
        if v.policy != policy
            || v.generation != self.verified_generation
            || !methods.contains(&v.method)
            || v.exchange.as_deref() != exchange
        {
            return None;
        }
        if v.method != Method::Introspection {
            // Past the staleness bound the issuer's keys are gone, and so is what they
            // verified.
            let max_stale_ms = self.config.issuers.get(v.issuer)?.max_stale_ms();
            self.issuers.get(v.issuer)?.keys(now_ms, max_stale_ms)?;
        }
        // Hiding the credential depends on where this request carries it, which need not be
        // where the token was first seen: the remembered allow is completed for this one.
        if v.hide_credentials {
            match source {
                Source::Query => {
                    let mut allow = Allow::clone(&v.allow);
                    allow.path = Some(credential::strip_query_params(path, &["access_token"]));
                    return Some((v.method, Rc::new(allow)));
                }
                Source::Header if !v.allow.removes("authorization") => {
                    let mut allow = Allow::clone(&v.allow);
                    allow.remove_headers.push("authorization".into());
                    return Some((v.method, Rc::new(allow)));
                }
                Source::Header => {}
            }
        }
        Some((v.method, Rc::clone(&v.allow)))
    }

    /// `then` given the SHA-256 (hex) of a credential: from `digests` if it named something
    /// when last hashed (in place, not copied); otherwise hashed, and kept if `known` finds
    /// what the digest names.
    fn credential_digest<R>(
        &mut self,
        credential: &[u8],
        known: impl FnOnce(&Self, &str) -> bool,
        now_ms: u64,
        then: impl FnOnce(&Self, &str) -> R,
    ) -> R {
        if let Some(digest) = self.digests.get(credential, now_ms) {
            return then(self, digest);
        }
        let digest = sha256_hex(credential);
        if known(self, &digest) {
            self.digests
                .insert(credential, digest.clone(), u64::MAX, now_ms);
        }
        then(self, &digest)
    }

    /// Remembers the `Authorization` value of client credentials whose exchange just allowed
    /// a request, as sent: the same value again is answered before it is decoded. As what
    /// was remembered of the exchanged token (its allow, key set, policy; and for no other
    /// method: a bearer token of these bytes is not taken), and no longer than that token is
    /// used for the exchange: the two are answered alike until a new exchange. Only its plain
    /// spelling ([`credential::plain_basic`]): at most two values (base64, raw) for each
    /// client and secret.
    fn remember_basic(&mut self, value: &[u8], cache_key: &str, now_ms: u64) {
        let Some((token, used_until_ms)) = self.tokens.get_until(cache_key, now_ms) else {
            return;
        };
        let Some((v, verified_until_ms)) = self.verified.get_until(token.as_bytes(), now_ms) else {
            return;
        };
        // What was remembered of the token is this exchange's (the request was just allowed
        // with it); another client's, had the IdP handed both the same token, never is.
        if v.exchange.as_deref() != Some(cache_key) {
            return;
        }
        let entry = Verified {
            exchange: None,
            allow: Rc::clone(&v.allow),
            ..*v
        };
        let until_ms = used_until_ms.min(verified_until_ms);
        self.verified.insert(value, entry, until_ms, now_ms);
    }

    /// A bearer token answered from what was remembered of it.
    fn remembered_bearer(&self, (method, allow): (Method, Rc<Allow>)) -> Step {
        self.counters.add(metrics::CACHE_VERIFIED_HIT);
        if method == Method::Introspection {
            self.counters.add(metrics::CACHE_INTROSPECTION_HIT);
        }
        done(method, Outcome::Allow(allow))
    }

    /// Remembers an allowed token until `until_ms`: its `exp`, or sooner (what the request
    /// needs to be allowed again: the headers to set and remove; never past expiry, never
    /// across a key change).
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &mut self,
        token: &(impl AsRef<[u8]> + ?Sized),
        job: &Job,
        policy: &Policy,
        strategy: &OidcStrategy,
        until_ms: u64,
        outcome: &Outcome,
        now_ms: u64,
    ) {
        let Outcome::Allow(allow) = outcome else {
            return;
        };
        // What is remembered holds for any request: a path rewrite is made per request.
        let allow = if allow.path.is_some() {
            Rc::new(Allow {
                path: None,
                ..Allow::clone(allow)
            })
        } else {
            Rc::clone(allow)
        };
        let entry = Verified {
            policy: job.policy,
            method: job.method(),
            issuer: strategy.issuer,
            generation: self.verified_generation,
            hide_credentials: policy.hide_credentials || strategy.hide_credentials,
            allow,
            exchange: match &job.pending {
                Pending::ClientCredentials { cache_key, .. } => Some(cache_key.clone()),
                _ => None,
            },
        };
        self.verified.insert(token, entry, until_ms, now_ms);
    }

    /// Checks a JWT for a strategy. `Err(None)`: keys are needed first. `Err(Some(why))`:
    /// the token asks for a fresh key set (an unknown `kid`; or no `kid` and a signature the
    /// current key does not verify, as from an IdP that rotated a key set naming no kids),
    /// refused with `why` when that look cannot be made.
    fn check_jwt(
        &self,
        strategy: &OidcStrategy,
        token: &ParsedToken,
        now_ms: u64,
    ) -> Result<Checked, Option<TokenError>> {
        let rules = rules(strategy);
        let now_s = now_ms / 1000;
        let passed = match claims::check(token, &rules, now_s) {
            Ok(passed) => passed,
            Err(e) => return Ok(Checked::Denied(Denial::InvalidToken(e))),
        };
        if token.alg.is_symmetric() && !strategy.enable_hs_signatures {
            return Ok(Checked::Denied(Denial::InvalidToken(
                TokenError::SymmetricAlgNotEnabled,
            )));
        }
        let (Some(issuer), Some(state)) = (
            self.config.issuers.get(strategy.issuer),
            self.issuers.get(strategy.issuer),
        ) else {
            return Ok(Checked::Denied(Denial::IdpUnavailable(
                "issuer is not configured",
            )));
        };
        let Some(keys) = state.keys(now_ms, issuer.max_stale_ms()) else {
            return Err(None);
        };
        if state.stale(now_ms) {
            self.counters.add(metrics::KEYS_STALE_SERVE);
        }
        // The IdP may have rotated: look again (once per cooldown, or join a fetch under
        // way) before refusing.
        let may_look =
            || state.in_flight(now_ms) || state.may_force(now_ms, issuer.rediscovery_ms());
        if let Some(kid) = token.kid.as_deref() {
            if !keys.has_kid(kid) {
                if may_look() {
                    return Err(Some(TokenError::UnknownKid));
                }
                return Ok(Checked::Denied(Denial::InvalidToken(
                    TokenError::UnknownKid,
                )));
            }
        }
        self.counters.add(metrics::SIGNATURES_CHECKED);
        match jwt::verify_passed(passed, &keys, &rules, now_s, self.backend.as_ref()) {
            Ok(v) => Ok(Checked::Verified(v)),
            Err(TokenError::BadSignature) if token.kid.is_none() && may_look() => {
                Err(Some(TokenError::BadSignature))
            }
            Err(e) => Ok(Checked::Denied(Denial::InvalidToken(e))),
        }
    }

    /// Holds a job until the issuer's keys (and discovery) are in. First looks at what
    /// another VM may have published; then joins the fetch under way (here or in another
    /// VM: the shared lease says), or starts one; refuses at once while the IdP is in
    /// backoff, or when an unknown `kid` already caused a fetch within the cooldown.
    /// `forced_by`: [`Engine::check_jwt`] found a token (a bearer token or an exchanged one
    /// alike) that asks for a fresh key set: the fetch is a forced one, under the cooldown,
    /// and a look that cannot be made refuses the token for this reason.
    fn wait_for_keys(
        &mut self,
        context_id: u32,
        mut job: Job,
        issuer_index: usize,
        forced_by: Option<TokenError>,
        now_ms: u64,
    ) -> Step {
        if self.sync_shared(issuer_index) {
            // Newer keys from another VM: try again with them (sync only adopts a version
            // once, so this cannot loop).
            return self.run(context_id, job, now_ms);
        }
        let Some(issuer) = self.config.issuers.get(issuer_index) else {
            return self.fail(&job, Denial::IdpUnavailable("issuer is not configured"));
        };
        let (timeout_ms, cooldown_ms, max_stale_ms) = (
            issuer.timeout_ms,
            issuer.rediscovery_ms(),
            issuer.max_stale_ms(),
        );
        let Some(state) = self.issuers.get_mut(issuer_index) else {
            return self.fail(&job, Denial::IdpUnavailable("issuer is not configured"));
        };
        let forced_by = forced_by.filter(|_| state.keys(now_ms, max_stale_ms).is_some());
        let forced = forced_by.is_some();
        if state.in_flight(now_ms) {
            // Joins the fetch under way; or, answered only from its own callout, asks for
            // the same stage again (whichever answer comes first is used).
            let again = match state.stage(now_ms) {
                Some(stage) if self.own_callouts => self.keys_callout(issuer_index, stage),
                _ => None,
            };
            return self.wait(context_id, Awaited::Keys(issuer_index), job, again);
        }
        let refused = |engine: &Self, job: &Job, forced_by: Option<TokenError>| match forced_by {
            Some(why) => engine.fail(job, Denial::InvalidToken(why)),
            None => engine.fail(job, Denial::IdpUnavailable("identity provider unavailable")),
        };
        if state.in_backoff(now_ms) {
            return refused(self, &job, forced_by);
        }
        // Two callouts in a row at most (discovery, then keys).
        let hold_ms = timeout_ms.saturating_mul(2).saturating_add(1_000);
        let lease_key = self
            .slots
            .get(issuer_index)
            .map(|s| s.lease.clone())
            .unwrap_or_default();
        match Lease::acquire(
            self.store.as_ref(),
            &lease_key,
            now_ms,
            hold_ms,
            forced,
            cooldown_ms,
        ) {
            Ok(()) => {}
            // Another VM fetches: wait for its result (the tick adopts it), unless only an
            // own callout can resume this request; then fetch as well.
            Err(Refusal::Held) if !self.own_callouts => {
                if !job.lease_wait_counted {
                    job.lease_wait_counted = true;
                    self.counters.add(metrics::KEYS_LEASE_WAIT);
                }
                return self.wait(context_id, Awaited::Keys(issuer_index), job, None);
            }
            Err(Refusal::Held) => {}
            Err(Refusal::Backoff) => return refused(self, &job, forced_by),
            Err(Refusal::Cooldown) => {
                let why = forced_by.unwrap_or(TokenError::UnknownKid);
                return self.fail(&job, Denial::InvalidToken(why));
            }
        }
        let Some(stage) = self
            .issuers
            .get_mut(issuer_index)
            .and_then(|s| s.start(now_ms, timeout_ms, forced))
        else {
            Lease::release(self.store.as_ref(), &lease_key, Ended::Dropped);
            return refused(self, &job, forced_by);
        };
        match self.keys_callout(issuer_index, stage) {
            Some(c) => self.wait(context_id, Awaited::Keys(issuer_index), job, Some(c)),
            None => {
                Lease::release(self.store.as_ref(), &lease_key, Ended::Dropped);
                self.fail(
                    &job,
                    Denial::IdpUnavailable("identity provider has no key set URL"),
                )
            }
        }
    }

    /// Adopts the issuer's shared record if another VM published a newer one. Returns
    /// whether keys were adopted. A record that does not parse is skipped (and not read
    /// again until a newer version appears).
    fn sync_shared(&mut self, index: usize) -> bool {
        let (Some(slots), Some(state)) = (self.slots.get(index), self.issuers.get(index)) else {
            return false;
        };
        let version = KeyRecord::version(self.store.as_ref(), slots);
        if version <= state.shared_version {
            return false;
        }
        let record = KeyRecord::read(self.store.as_ref(), slots);
        let limits = &self.config.limits;
        // Trusted no longer than this configuration would keep keys it fetched itself,
        // whatever the publisher's cache_ttl (another filter configuration of the same issuer
        // may keep keys far longer).
        let own_ttl_ms = self.config.issuers.get(index).map_or(0, |i| {
            i.cache_ttl_s.max(MIN_KEYS_TTL_S).saturating_mul(1000)
        });
        let parsed = record.and_then(|r| {
            // Held to every limit this configuration holds an IdP's answer to: a set larger
            // than it reads from the IdP is not taken from another VM either.
            if r.jwks.len() > limits.max_response_bytes {
                return None;
            }
            let keys = KeySet::parse(
                r.jwks.as_bytes(),
                limits.max_jwks_keys,
                limits.max_json_depth,
            )
            .ok()?
            .0;
            Some((r, keys))
        });
        let Some(state) = self.issuers.get_mut(index) else {
            return false;
        };
        match parsed {
            Some((record, keys)) if record.version >= version => {
                let expires_ms = record
                    .expires_ms
                    .min(record.fetched_ms.saturating_add(own_ttl_ms));
                state.adopt(
                    record.discovery,
                    keys,
                    record.fetched_ms,
                    expires_ms,
                    record.version,
                );
                self.counters.add(metrics::KEYS_FROM_SHARED_DATA);
                // As for a set fetched here: what the previous set verified is void (a key
                // the IdP dropped stops verifying in every VM, not only the fetching one).
                self.verified_generation = self.verified_generation.wrapping_add(1);
                true
            }
            _ => {
                state.shared_version = version;
                false
            }
        }
    }

    fn run_client_credentials(&mut self, context_id: u32, mut job: Job, now_ms: u64) -> Step {
        let config = Rc::clone(&self.config);
        let Some((policy, strategy)) = lookup(&config, job.policy, job.strategy) else {
            return self.fail(&job, Denial::NoPolicy);
        };
        let Pending::ClientCredentials {
            cache_key, retried, ..
        } = &mut job.pending
        else {
            return self.fail(&job, Denial::NoPolicy);
        };
        let cached = self.tokens.get(cache_key, now_ms);
        self.counters.add(if cached.is_some() {
            metrics::CACHE_TOKEN_HIT
        } else {
            metrics::CACHE_TOKEN_MISS
        });
        // The hot path: the exchanged token, already verified for this policy (looked up in
        // place: a token is a kilobyte, not copied for a lookup).
        let remembered = cached.and_then(|token| {
            self.remembered(
                token.as_bytes(),
                job.policy,
                &job.path,
                job.source,
                &[Method::ClientCredentials],
                Some(cache_key.as_str()),
                now_ms,
            )
        });
        if let Some((method, allow)) = remembered {
            return done(method, Outcome::Allow(allow));
        }
        if let Some(token) = cached.cloned() {
            let parsed =
                ParsedToken::parse_with(&token, config.limits.max_json_depth, &self.jose_headers);
            let checked = match &parsed {
                Ok(t) => self.check_jwt(strategy, t, now_ms),
                Err(e) => Ok(Checked::Denied(Denial::InvalidToken(*e))),
            };
            match checked {
                Ok(Checked::Verified(v)) => {
                    let outcome = self.authorize(&job, policy, strategy, &v, Some(&token));
                    let until_ms = v.exp().saturating_mul(1000);
                    self.remember(&token, &job, policy, strategy, until_ms, &outcome, now_ms);
                    return done(job.method(), outcome);
                }
                Ok(Checked::Denied(Denial::InvalidToken(_))) if !*retried => {
                    // The IdP's token did not verify (rotated key, clock): drop it and
                    // exchange once more.
                    *retried = true;
                    self.tokens.remove(cache_key);
                }
                Ok(Checked::Denied(d)) => {
                    self.tokens.remove(cache_key);
                    return self.fail(&job, d);
                }
                Err(forced) => {
                    return self.wait_for_keys(context_id, job, strategy.issuer, forced, now_ms)
                }
            }
        }
        if self.refused_exchanges.get(cache_key, now_ms).is_some() {
            return self.fail(&job, Denial::InvalidClient);
        }
        // What the exchange returns is verified with the issuer's keys: without any (a key
        // fetch failed; the discovery document it came from is kept for its endpoints),
        // the keys first, rather than the client's secret to the IdP for a 503.
        let has_keys = config
            .issuers
            .get(strategy.issuer)
            .zip(self.issuers.get(strategy.issuer))
            .is_some_and(|(i, s)| s.keys(now_ms, i.max_stale_ms()).is_some());
        if !has_keys {
            return self.wait_for_keys(context_id, job, strategy.issuer, None, now_ms);
        }
        let Pending::ClientCredentials {
            client_id,
            client_secret,
            cache_key,
            ..
        } = &job.pending
        else {
            return self.fail(&job, Denial::NoPolicy);
        };
        let endpoint = match self.endpoint(
            strategy,
            |d| d.token_endpoint.as_ref(),
            strategy.token_endpoint.as_ref(),
        ) {
            Endpoint::Known(url) => url,
            Endpoint::NeedDiscovery => {
                return self.wait_for_keys(context_id, job, strategy.issuer, None, now_ms)
            }
            Endpoint::Missing => {
                return self.fail(
                    &job,
                    Denial::IdpUnavailable("identity provider has no token endpoint"),
                )
            }
        };
        let (timeout, ttl) = callout_limits(&config, strategy);
        let key = cache_key.clone();
        let Some(serial) = self
            .token_flights
            .start(&key, now_ms, timeout, self.own_callouts, ttl)
        else {
            return self.wait(context_id, Awaited::Token(key), job, None);
        };
        let body = oidc::client_credentials_body(&strategy.scopes);
        let callout = self.form_post(
            FetchKind::Token { serial },
            &endpoint,
            (client_id, client_secret),
            body,
            timeout,
        );
        self.wait(context_id, Awaited::Token(key), job, Some(callout))
    }

    fn run_introspection(&mut self, context_id: u32, job: Job, now_ms: u64) -> Step {
        let config = Rc::clone(&self.config);
        let Some((policy, strategy)) = lookup(&config, job.policy, job.strategy) else {
            return self.fail(&job, Denial::NoPolicy);
        };
        let Pending::Introspection(token) = &job.pending else {
            return self.fail(&job, Denial::NoPolicy);
        };
        let endpoint = match self.endpoint(
            strategy,
            |d| d.introspection_endpoint.as_ref(),
            strategy.introspection_endpoint.as_ref(),
        ) {
            Endpoint::Known(url) => url,
            Endpoint::NeedDiscovery => {
                return self.wait_for_keys(context_id, job, strategy.issuer, None, now_ms)
            }
            Endpoint::Missing => {
                return self.fail(
                    &job,
                    Denial::IdpUnavailable("identity provider has no introspection endpoint"),
                )
            }
        };
        // The endpoint's URL, the strategy, the token (one line each). The strategy: two of
        // them may share an endpoint with different cache_ttl (other issuers) or introspect
        // as different clients; an answer cached for one is not the other's.
        let key = sha256_hex_of(&[
            endpoint.scheme().as_bytes(),
            b"://",
            endpoint.authority.as_bytes(),
            endpoint.path.as_bytes(),
            b"\n",
            strategy.id.as_bytes(),
            b"\n",
            token.as_bytes(),
        ]);
        let cached = self.introspections.get_until(&key, now_ms);
        self.counters.add(if cached.is_some() {
            metrics::CACHE_INTROSPECTION_HIT
        } else {
            metrics::CACHE_INTROSPECTION_MISS
        });
        if let Some((answer, answered_until_ms)) = cached {
            return match answer {
                Introspected::Inactive => {
                    self.fail(&job, Denial::InvalidToken(TokenError::Inactive))
                }
                Introspected::Active(claims) => {
                    match jwt::introspected(Rc::clone(claims), &rules(strategy), now_ms / 1000) {
                        Ok(v) => {
                            let outcome = self.authorize(&job, policy, strategy, &v, None);
                            // Remembered as long as the answer is cached, and never past exp:
                            // the next request with this token skips the hash and the checks.
                            let until_ms = answered_until_ms.min(v.exp().saturating_mul(1000));
                            self.remember(
                                token, &job, policy, strategy, until_ms, &outcome, now_ms,
                            );
                            done(job.method(), outcome)
                        }
                        Err(e) => self.fail(&job, Denial::InvalidToken(e)),
                    }
                }
            };
        }
        let Some((client_id, client_secret)) = &strategy.client else {
            return self.fail(
                &job,
                Denial::IdpUnavailable("introspection has no client credentials"),
            );
        };
        let (timeout, ttl) = callout_limits(&config, strategy);
        let Some(serial) =
            self.introspection_flights
                .start(&key, now_ms, timeout, self.own_callouts, ttl)
        else {
            return self.wait(context_id, Awaited::Introspection(key), job, None);
        };
        let body = oidc::introspection_body(token);
        let callout = self.form_post(
            FetchKind::Introspection { serial },
            &endpoint,
            (client_id, client_secret),
            body,
            timeout,
        );
        self.wait(context_id, Awaited::Introspection(key), job, Some(callout))
    }

    /// A form POST to a token or introspection endpoint, with client authentication.
    fn form_post(
        &self,
        kind: FetchKind,
        endpoint: &Url,
        client: (&str, &str),
        body: String,
        timeout_ms: u64,
    ) -> Callout {
        Callout {
            id: FetchId {
                generation: self.generation,
                kind,
            },
            upstream: self.config.upstream_for(endpoint).to_owned(),
            https: endpoint.https,
            authority: endpoint.authority.clone(),
            method: "POST",
            path: endpoint.path.clone(),
            headers: vec![
                ("authorization".into(), oidc::basic_auth(client.0, client.1)),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: Some(body.into_bytes()),
            timeout_ms,
        }
    }

    /// An endpoint from configuration, else from the issuer's discovery document.
    fn endpoint(
        &self,
        strategy: &OidcStrategy,
        from: impl Fn(&oidc::Discovery) -> Option<&Url>,
        configured: Option<&Url>,
    ) -> Endpoint {
        if let Some(url) = configured {
            return Endpoint::Known(url.clone());
        }
        match self
            .issuers
            .get(strategy.issuer)
            .and_then(|s| s.discovery())
        {
            None => Endpoint::NeedDiscovery,
            Some(d) => from(d).cloned().map_or(Endpoint::Missing, Endpoint::Known),
        }
    }

    /// Scopes, application, and the headers to forward, for claims that were verified.
    /// `forward_token`: the access token to send upstream in place of the client's Basic
    /// credentials (client credentials).
    fn authorize(
        &self,
        job: &Job,
        policy: &Policy,
        strategy: &OidcStrategy,
        verified: &VerifiedClaims,
        forward_token: Option<&str>,
    ) -> Outcome {
        let fail = |d: Denial| {
            deny(
                d,
                &job.realm,
                Some(&strategy.id),
                Some(job.credential_hash()),
            )
        };
        // Client credentials name their application themselves (Kong reads the Basic
        // client_id): whatever client the IdP's token names, the request goes upstream as
        // the client that presented the secret.
        let values = match &job.pending {
            Pending::ClientCredentials { client_id, .. } => {
                claims::Values::One(Cow::Borrowed(client_id.as_str()))
            }
            _ => match verified.credential_values(&strategy.credential_claim) {
                Ok(v) => v,
                Err(e) => return fail(Denial::InvalidToken(e)),
            },
        };
        let app = match self.application(policy, &strategy.id, &values) {
            Ok(app) => app,
            Err(d) => return fail(d),
        };
        // After the application, as konnect-application-auth runs the openid-connect check
        // only for a credential that names an approved application (a 401 or "You cannot
        // consume this service" before any 403 insufficient_scope).
        if !claims::has_scopes(verified, &strategy.scopes_claim, &strategy.scopes_required) {
            return fail(Denial::InsufficientScope);
        }
        let adds_more = !strategy.upstream_headers.is_empty()
            || forward_token.is_some()
            || policy.hide_credentials
            || strategy.hide_credentials;
        let mut allow = match app {
            Some(app) if !adds_more => return Outcome::Allow(self.identity(app, policy)),
            Some(app) => Allow::clone(&self.identity(app, policy)),
            None => allow_for(
                None,
                values.first().map(AsRef::as_ref).unwrap_or_default(),
                &policy.forwarded_headers,
            ),
        };
        // The client's copies of these headers are removed already: they are among the
        // policy's forwarded headers.
        for (claim, header) in &strategy.upstream_headers {
            match verified.header_value(claim) {
                Ok(Some(v)) => allow.set_headers.push((header.clone(), v)),
                Ok(None) => {}
                Err(e) => return fail(Denial::InvalidToken(e)),
            }
        }
        if let Some(token) = forward_token {
            allow
                .set_headers
                .push(("authorization".into(), format!("Bearer {token}")));
        } else if policy.hide_credentials || strategy.hide_credentials {
            match job.source {
                Source::Header => allow.remove_headers.push("authorization".into()),
                Source::Query => {
                    allow.path = Some(credential::strip_query_params(&job.path, &["access_token"]))
                }
            }
        }
        Outcome::Allow(Rc::new(allow))
    }

    /// The application for these credential values, checked against the strategy that
    /// authenticated and the policy's scope. `Ok(None)` when no registry is configured.
    fn application<'a>(
        &'a self,
        policy: &Policy,
        strategy_id: &str,
        values: &[Cow<'_, str>],
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
        hash: &str,
        req: &Request<'_>,
    ) -> Outcome {
        let fail = |d: Denial| {
            deny(
                d,
                req.authority,
                Some(&strategy.id),
                Some(hash.get(..8).unwrap_or_default().to_owned()),
            )
        };
        let app = match self.application(policy, &strategy.id, &[Cow::Borrowed(hash)]) {
            Ok(Some(app)) => app,
            Ok(None) => return fail(Denial::UnknownApplication),
            Err(d) => return fail(d),
        };
        if !policy.hide_credentials {
            return Outcome::Allow(self.identity(app, policy));
        }
        let mut allow = Allow::clone(&self.identity(app, policy));
        allow.remove_headers.push(name.to_owned());
        if credential::has_query_params(req.path, &[name]) {
            allow.path = Some(credential::strip_query_params(req.path, &[name]));
        }
        Outcome::Allow(Rc::new(allow))
    }

    /// The application's forwarded identity under `policy` (see `allow_for`), shared by its
    /// requests.
    fn identity(&self, app: &Application, policy: &Policy) -> Rc<Allow> {
        // Kept for one policy's forwarded headers at a time (an application approved for
        // several policies is rebuilt when the next one forwards other headers).
        let fits = |allow: &Allow| {
            allow.remove_headers.get(APPLICATION_HEADERS.len()..)
                == Some(policy.forwarded_headers.as_slice())
        };
        if let Some(allow) = self.identities.get(&app.client_id) {
            if fits(&allow) {
                return allow;
            }
        }
        self.build_identity(app, policy)
    }

    /// The identity [`Engine::identity`] did not have: built once per application (and
    /// policy) in a while, out of line.
    #[cold]
    #[inline(never)]
    fn build_identity(&self, app: &Application, policy: &Policy) -> Rc<Allow> {
        let allow = Rc::new(allow_for(
            Some(app),
            &app.client_id,
            &policy.forwarded_headers,
        ));
        self.identities.remember(&app.client_id, Rc::clone(&allow));
        allow
    }

    fn keys_callout(&self, issuer_index: usize, stage: Stage) -> Option<Callout> {
        let issuer = self.config.issuers.get(issuer_index)?;
        let url: &Url = match stage {
            Stage::Discovery => &issuer.discovery,
            Stage::Jwks => &self.issuers.get(issuer_index)?.discovery()?.jwks_uri,
        };
        Some(Callout {
            id: FetchId {
                generation: self.generation,
                kind: FetchKind::Keys {
                    issuer: issuer_index,
                    stage,
                },
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
        self.answering = None;
        self.callout_answered(id, response, now_ms)
    }

    /// A callout that request `owner` sent came back, in that request's callback. With
    /// [`Engine::set_own_callouts`], only `owner` is settled, and always is: re-run when its
    /// answer came second (another request's copy of the same fetch was used), unless it
    /// waits on a callout it sends now. Otherwise as [`Engine::on_callout_response`].
    pub fn on_request_callout_response(
        &mut self,
        owner: u32,
        id: FetchId,
        response: CalloutResponse,
        now_ms: u64,
    ) -> Progress {
        self.answering = Some(owner);
        let mut progress = self.callout_answered(id, response, now_ms);
        if self.own_callouts && progress.callouts.is_empty() {
            if let Some((_, job)) = self.waiting.remove(&owner) {
                match self.run(owner, job, now_ms) {
                    Step::Done(method, outcome) => progress.settled.push((owner, method, outcome)),
                    Step::Wait(callout) => progress.callouts.extend(callout),
                }
            }
        }
        self.answering = None;
        progress
    }

    fn callout_answered(
        &mut self,
        id: FetchId,
        response: CalloutResponse,
        now_ms: u64,
    ) -> Progress {
        let mut progress = Progress::default();
        if id.generation != self.generation {
            return progress;
        }
        match id.kind {
            FetchKind::Keys { issuer, stage } => {
                self.on_keys_response(issuer, stage, &response, now_ms, &mut progress)
            }
            FetchKind::Token { serial } => {
                self.on_token_response(serial, &response, now_ms, &mut progress)
            }
            FetchKind::Introspection { serial } => {
                self.on_introspection_response(serial, &response, now_ms, &mut progress)
            }
        }
        progress
    }

    fn on_keys_response(
        &mut self,
        index: usize,
        stage: Stage,
        response: &CalloutResponse,
        now_ms: u64,
        progress: &mut Progress,
    ) {
        let config = Rc::clone(&self.config);
        let (Some(issuer), Some(state)) = (config.issuers.get(index), self.issuers.get_mut(index))
        else {
            return;
        };
        if state.stage(now_ms) != Some(stage) {
            return;
        }
        // The IdP's Cache-Control max-age, if it gives one, within [30 s, cache_ttl].
        let ttl_ms = match response.max_age_s {
            Some(age) => age
                .clamp(MIN_KEYS_TTL_S, issuer.cache_ttl_s.max(MIN_KEYS_TTL_S))
                .saturating_mul(1000),
            None => issuer.cache_ttl_ms(),
        };
        let limits = &config.limits;
        let result =
            check_response(response, limits.max_response_bytes).and_then(|body| match stage {
                Stage::Discovery => {
                    oidc::parse_discovery(body, &issuer.names, limits.max_json_depth)
                        .map(|d| {
                            state.discovered(d, now_ms, ttl_ms, issuer.timeout_ms);
                        })
                        .map_err(|e| format!("discovery document {e}"))
                }
                Stage::Jwks => KeySet::parse(body, limits.max_jwks_keys, limits.max_json_depth)
                    .map(|(keys, parsed)| {
                        progress.log.push(format!(
                            "keys of {}: {} usable, {} skipped",
                            issuer.issuer, parsed.usable, parsed.skipped
                        ));
                        state.keys_fetched(keys, now_ms, ttl_ms);
                    })
                    .map_err(|e| format!("key set {e}")),
            });
        match (result, stage) {
            (Ok(()), Stage::Discovery) => {
                self.counters.add(metrics::CALLOUT_DISCOVERY_OK);
                match self.keys_callout(index, Stage::Jwks) {
                    Some(c) => progress.callouts.push(c),
                    None => self.fail_keys(index, now_ms, "no key set URL".into(), progress),
                }
            }
            (Ok(()), Stage::Jwks) => {
                self.counters.add(metrics::CALLOUT_JWKS_OK);
                // Publish for the other VMs, then let them fetch again when due.
                if let (Some(slots), Some(state)) =
                    (self.slots.get(index), self.issuers.get_mut(index))
                {
                    if let (Some(discovery), Ok(jwks)) = (
                        state.discovery().cloned(),
                        std::str::from_utf8(&response.body),
                    ) {
                        state.shared_version = KeyRecord::publish(
                            self.store.as_ref(),
                            slots,
                            now_ms,
                            now_ms.saturating_add(ttl_ms),
                            &discovery,
                            jwks,
                        );
                    }
                    Lease::release(self.store.as_ref(), &slots.lease, Ended::Fetched);
                }
                // Verifications remembered under the old set are void: a key removed at
                // the IdP stops verifying now.
                self.verified_generation = self.verified_generation.wrapping_add(1);
                self.settle(&Awaited::Keys(index), None, now_ms, progress);
            }
            (Err(e), stage) => {
                self.counters.add(match stage {
                    Stage::Discovery => metrics::CALLOUT_DISCOVERY_FAILED,
                    Stage::Jwks => metrics::CALLOUT_JWKS_FAILED,
                });
                self.fail_keys(index, now_ms, e, progress)
            }
        }
    }

    fn fail_keys(&mut self, index: usize, now_ms: u64, error: String, progress: &mut Progress) {
        if let (Some(state), Some(cfg)) =
            (self.issuers.get_mut(index), self.config.issuers.get(index))
        {
            progress
                .log
                .push(format!("fetch for {} failed: {error}", cfg.issuer));
            state.failed(now_ms, error);
            // Every VM backs off with us: the lease carries the retry time, and the failures
            // in a row (whichever VM had them) that it doubles with.
            if let Some(slots) = self.slots.get(index) {
                Lease::release(self.store.as_ref(), &slots.lease, Ended::Failed { now_ms });
            }
        }
        // Waiters re-run: with stale keys they may still pass; without, the backoff
        // refuses them with a 503.
        self.settle(&Awaited::Keys(index), None, now_ms, progress);
    }

    fn on_token_response(
        &mut self,
        serial: u64,
        response: &CalloutResponse,
        now_ms: u64,
        progress: &mut Progress,
    ) {
        let Some((key, ttl)) = self.token_flights.finish(serial) else {
            return;
        };
        let limits = &self.config.limits;
        let answer = match (&response.failure, response.status) {
            (Some(f), _) => Err(f.clone()),
            (None, None) => Err("no response (connection failed, reset or timed out)".into()),
            (None, Some(_)) if response.body.len() > limits.max_response_bytes => {
                Err("response too large".into())
            }
            (None, Some(status)) => oidc::parse_token_response(
                status,
                &response.body,
                limits.max_json_depth,
                limits.max_token_bytes,
            ),
        };
        let awaited = Awaited::Token(key.clone());
        self.counters.add(if answer.is_ok() {
            metrics::CALLOUT_TOKEN_OK
        } else {
            metrics::CALLOUT_TOKEN_FAILED
        });
        match answer {
            Ok(oidc::TokenAnswer::Issued {
                access_token,
                expires_in,
            }) => {
                // Used until shortly before it expires, never past it: the JWT's own exp
                // (or expires_in), less a tenth of its life (at most 5 s), capped by
                // cache_ttl.
                let exp_ms = ParsedToken::parse(&access_token, limits.max_json_depth)
                    .ok()
                    .and_then(|t| t.claims.get("exp").and_then(Json::as_u64))
                    .map(|s| s.saturating_mul(1000))
                    .or_else(|| expires_in.map(|s| now_ms.saturating_add(s.saturating_mul(1000))));
                if let Some(exp_ms) = exp_ms {
                    let life = exp_ms.saturating_sub(now_ms);
                    // Kept at least a moment even if already past: the waiters re-run
                    // against the cache, where the checks refuse an expired token (and
                    // never loop on refetching it).
                    let until = exp_ms
                        .saturating_sub((life / 10).min(5_000))
                        .min(now_ms.saturating_add(ttl))
                        .max(now_ms.saturating_add(1_000));
                    self.tokens
                        .insert(&key, access_token.clone(), until, now_ms);
                    self.settle(&awaited, None, now_ms, progress);
                } else {
                    // Not a JWT and no expires_in: usable by the requests that waited for
                    // it, through the same checks, but never cached.
                    self.settle(
                        &awaited,
                        Some(Denial::InvalidToken(TokenError::NotAJwt)),
                        now_ms,
                        progress,
                    );
                }
            }
            Ok(oidc::TokenAnswer::Refused(error)) => {
                progress
                    .log
                    .push(format!("token endpoint refused a client: {error}"));
                self.refused_exchanges.insert(
                    &key,
                    error,
                    now_ms.saturating_add(REFUSAL_TTL_MS),
                    now_ms,
                );
                self.settle(&awaited, Some(Denial::InvalidClient), now_ms, progress);
            }
            Err(e) => {
                progress.log.push(format!("token exchange failed: {e}"));
                self.settle(
                    &awaited,
                    Some(Denial::IdpUnavailable("token endpoint unavailable")),
                    now_ms,
                    progress,
                );
            }
        }
    }

    fn on_introspection_response(
        &mut self,
        serial: u64,
        response: &CalloutResponse,
        now_ms: u64,
        progress: &mut Progress,
    ) {
        let Some((key, ttl)) = self.introspection_flights.finish(serial) else {
            return;
        };
        let limits = &self.config.limits;
        let answer = check_response_any_status(response, limits.max_response_bytes).and_then(
            |(status, body)| oidc::parse_introspection(status, body, limits.max_json_depth),
        );
        let awaited = Awaited::Introspection(key.clone());
        self.counters.add(if answer.is_ok() {
            metrics::CALLOUT_INTROSPECTION_OK
        } else {
            metrics::CALLOUT_INTROSPECTION_FAILED
        });
        match answer {
            Ok(oidc::Introspection::Active(claims)) => {
                let exp_ms = claims
                    .get("exp")
                    .and_then(Json::as_u64)
                    .map_or(u64::MAX, |s| s.saturating_mul(1000));
                // As for exchanged tokens: every hit re-checks exp, so a short floor is safe.
                let until = exp_ms
                    .min(now_ms.saturating_add(ttl))
                    .max(now_ms.saturating_add(1_000));
                self.introspections.insert(
                    &key,
                    Introspected::Active(Rc::new(claims)),
                    until,
                    now_ms,
                );
                self.settle(&awaited, None, now_ms, progress);
            }
            Ok(oidc::Introspection::Inactive) => {
                self.introspections.insert(
                    &key,
                    Introspected::Inactive,
                    now_ms.saturating_add(REFUSAL_TTL_MS),
                    now_ms,
                );
                self.settle(&awaited, None, now_ms, progress);
            }
            Err(e) => {
                progress.log.push(format!("introspection failed: {e}"));
                self.settle(
                    &awaited,
                    Some(Denial::IdpUnavailable("introspection endpoint unavailable")),
                    now_ms,
                    progress,
                );
            }
        }
    }

    /// Re-runs (or, with `denial`, refuses) every request waiting on `awaited`.
    fn settle(
        &mut self,
        awaited: &Awaited,
        denial: Option<Denial>,
        now_ms: u64,
        progress: &mut Progress,
    ) {
        let ids: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(id, (a, _))| {
                a == awaited && (!self.own_callouts || self.answering == Some(**id))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some((_, job)) = self.waiting.remove(&id) else {
                continue;
            };
            let step = match denial {
                Some(d) => self.fail(&job, d),
                None => self.run(id, job, now_ms),
            };
            match step {
                Step::Done(method, outcome) => progress.settled.push((id, method, outcome)),
                Step::Wait(callout) => progress.callouts.extend(callout),
            }
        }
    }

    /// Periodic work: warm and refresh keys before they are needed, and give up on requests
    /// that waited longer than their fetch could take.
    pub fn on_tick(&mut self, now_ms: u64) -> Progress {
        let mut progress = Progress::default();
        for awaited in std::mem::take(&mut self.dropped) {
            self.settle(&awaited, None, now_ms, &mut progress);
        }
        let config = Rc::clone(&self.config);
        for index in 0..self.issuers.len() {
            // Keys another VM published: adopt them and release whoever waited here.
            let adopted = self.sync_shared(index);
            let waiters = self
                .waiting
                .values()
                .any(|(a, _)| *a == Awaited::Keys(index));
            let (Some(issuer), Some(state)) = (config.issuers.get(index), self.issuers.get(index))
            else {
                continue;
            };
            if adopted || (waiters && !state.in_flight(now_ms)) {
                // Waiters whose fetch is another VM's re-run: with its keys now, or
                // refused if it failed (the shared backoff says so).
                self.settle(&Awaited::Keys(index), None, now_ms, &mut progress);
            }
            let Some(state) = self.issuers.get_mut(index) else {
                continue;
            };
            // Also where another VM fetches (or backs off): this VM's copy must not outlive it.
            state.expire_after_a_step_back(now_ms);
            if !state.wants_refresh(now_ms) || state.in_flight(now_ms) || state.in_backoff(now_ms) {
                continue;
            }
            // Refresh before expiry, in the background, by one VM: the lease picks it.
            let hold_ms = issuer.timeout_ms.saturating_mul(2).saturating_add(1_000);
            let lease_key = self
                .slots
                .get(index)
                .map(|s| s.lease.clone())
                .unwrap_or_default();
            if Lease::acquire(self.store.as_ref(), &lease_key, now_ms, hold_ms, false, 0).is_err() {
                continue;
            }
            let timeout_ms = issuer.timeout_ms;
            match self
                .issuers
                .get_mut(index)
                .and_then(|s| s.start(now_ms, timeout_ms, false))
            {
                Some(stage) => progress.callouts.extend(self.keys_callout(index, stage)),
                None => Lease::release(self.store.as_ref(), &lease_key, Ended::Dropped),
            }
        }
        // Answered only by their own callouts (which the host times out), waiting requests
        // are never given up on here with `own_callouts`.
        if self.own_callouts {
            return progress;
        }
        let expired: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, (_, job))| {
                let timeout = lookup(&config, job.policy, job.strategy)
                    .and_then(|(_, s)| config.issuers.get(s.issuer))
                    .map_or(0, |i| i.timeout_ms);
                // The callouts a request may wait for in a row: discovery and keys; then,
                // for client credentials or an opaque token, the exchange or introspection.
                let in_a_row = match job.method() {
                    Method::ClientCredentials | Method::Introspection => 3,
                    _ => 2,
                };
                now_ms
                    >= job
                        .since_ms
                        .saturating_add(timeout.saturating_mul(in_a_row))
                        .saturating_add(2_000)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, job)) = self.waiting.remove(&id) {
                let Step::Done(method, outcome) = self.fail(
                    &job,
                    Denial::IdpUnavailable("identity provider did not answer in time"),
                ) else {
                    continue;
                };
                progress.settled.push((id, method, outcome));
            }
        }
        progress
    }
}

enum Endpoint {
    Known(Url),
    NeedDiscovery,
    Missing,
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

/// A response of any status within the size limit; transport failures are errors.
fn check_response_any_status(
    response: &CalloutResponse,
    max_bytes: usize,
) -> Result<(u16, &[u8]), String> {
    if let Some(failure) = &response.failure {
        return Err(failure.clone());
    }
    match response.status {
        None => Err("no response (connection failed, reset or timed out)".into()),
        Some(_) if response.body.len() > max_bytes => {
            Err(format!("response larger than {max_bytes} bytes"))
        }
        Some(status) => Ok((status, &response.body)),
    }
}

/// A strategy that checks JWTs by asking its IdP (`introspection` with
/// `introspect_jwt_tokens`) rather than by their signature.
fn takes_jwt_by_introspection(o: &OidcStrategy) -> bool {
    o.auth_methods.introspection && o.introspect_jwt_tokens
}

/// How long a callout of `strategy` may take, and the longest its answer may be cached, in ms.
fn callout_limits(config: &Config, strategy: &OidcStrategy) -> (u64, u64) {
    let timeout = config
        .issuers
        .get(strategy.issuer)
        .map_or(10_000, |i| i.timeout_ms);
    (timeout, strategy.cache_ttl_s.saturating_mul(1000))
}

fn lookup(config: &Config, policy: usize, strategy: usize) -> Option<(&Policy, &OidcStrategy)> {
    let p = config.policies.get(policy)?;
    match p.strategies.get(strategy)? {
        Strategy::OpenIdConnect(s) => Some((p, s)),
        Strategy::KeyAuth(_) => None,
    }
}

/// A new bearer token in the one Authorization header, parsed at once. A JWT that parses is
/// what `extract` would read (`candidate` is the bearer parameter of the request's only such
/// header, with no query string; within the length limit, three canonical base64url segments
/// joined by dots are a token68, and ASCII): it is taken without `extract`'s byte-by-byte
/// token68 and UTF-8 checks before the parse makes its own. A token the parse refuses, a
/// malformed one among them, is read by `extract`'s rules, for their reasons, and its refusal
/// kept for it. `None`: no such candidate within the limit.
fn parsed_bearer<'a>(
    candidate: Option<Candidate<'a>>,
    limits: &Limits,
    memo: &HeaderMemo,
) -> Option<(&'a [u8], Result<ParsedToken, TokenError>)> {
    let Some(Candidate::Bearer(token)) = candidate else {
        return None;
    };
    if token.len() > limits.max_token_bytes {
        return None;
    }
    Some((
        token,
        ParsedToken::parse_with(token, limits.max_json_depth, memo),
    ))
}

/// The strategy that introspects a token no bearer strategy takes by issuer: the first that
/// introspects, and for a JWT only one that accepts its `iss`. A JWT the filter refuses to
/// parse still names its issuer: it is not an opaque token that the first introspection
/// endpoint may be shown. Out of line: a JWT of a known issuer never comes here.
#[cold]
#[inline(never)]
fn introspecting_by_issuer(
    policy: &Policy,
    parsed: &Result<ParsedToken, TokenError>,
    token: &[u8],
    max_json_depth: usize,
) -> Option<usize> {
    let iss = match parsed {
        Ok(t) => Some(t.claims.get("iss").and_then(Json::as_str)),
        Err(_) => jwt::token::claimed_issuer(token, max_json_depth).map(|iss| iss.map(Cow::Owned)),
    };
    policy.strategies.iter().position(|s| match s {
        Strategy::OpenIdConnect(o) if o.auth_methods.introspection => match &iss {
            None => true,
            Some(iss) => iss
                .as_ref()
                .is_some_and(|iss| o.issuers_allowed.iter().any(|a| a == iss.as_ref())),
        },
        _ => false,
    })
}

fn rules(strategy: &OidcStrategy) -> ClaimRules<'_> {
    ClaimRules {
        issuers_allowed: &strategy.issuers_allowed,
        audience_required: &strategy.audience_required,
        audience_claim: &strategy.audience_claim,
        leeway: strategy.leeway,
        enable_hs_signatures: strategy.enable_hs_signatures,
        require_at_jwt: strategy.require_at_jwt,
    }
}

/// The forwarded identity: the application's headers (when a registry is configured) and
/// the credential identifier, after removing any client-sent copies, and those of the
/// headers the policy forwards claims under (`forwarded`, after the identity headers):
/// whichever strategy let the request in, the upstream reads those as verified claims.
fn allow_for(app: Option<&Application>, identifier: &str, forwarded: &[String]) -> Allow {
    let mut allow = Allow {
        remove_headers: APPLICATION_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .chain(forwarded.iter().cloned())
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

/// More header fields than `max`, pseudo-headers (`:path`...) not counted. The length of the
/// list the host already read decides almost every request; only one longer than `max` is
/// walked.
fn too_many_headers(headers: &[Header<'_>], max: usize) -> bool {
    headers.len() > max && headers.iter().filter(|(n, _)| !n.starts_with(b":")).count() > max
}

fn done(method: Method, outcome: Outcome) -> Step {
    Step::Done(method, outcome)
}

pub(crate) fn deny(
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
    sha256_hex_of(&[data])
}

/// [`sha256_hex`] of `parts` one after the other, hashed as they are (a cache key made of
/// several fields is not copied into one buffer first: that was a third of a cached
/// introspection's cost).
pub fn sha256_hex_of(parts: &[&[u8]]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hash = hmac_sha256::Hash::new();
    for part in parts {
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut out = String::with_capacity(64);
    // By table (no formatting machinery: key-auth and client credentials hash every
    // request's credential).
    let digit = |nibble: u8| char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'));
    for b in digest {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

/// Eight hex digits of SHA-256: enough to correlate log lines, useless to an attacker.
pub fn short_hash(secret: impl AsRef<[u8]>) -> String {
    let mut h = sha256_hex(secret.as_ref());
    h.truncate(8);
    h
}

#[cfg(test)]
mod tests;
