//! The proxy-wasm adapter: the only code that talks to the proxy. It reads what the engine
//! needs, performs the callouts the engine asks for, and applies the engine's decisions.
//! Every host call's error is handled; none is unwrapped.

mod callbacks;
mod filter;
mod logger;
mod memory;
mod native;
mod raw;
mod root;

use crate::credential::Header;
use crate::engine::{CalloutResponse, Engine, FetchId, Method, Outcome, Progress};
use crate::header_map;
use crate::metrics::{self, Counter, Counters};
use crate::response::Denial;
use crate::shared::SharedStore;
use raw::{BufferType, MapType, MetricType};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// The module's start (`_initialize`).
fn start() {
    // No host calls here: Envoy refuses them while the module initialises. The real level
    // is read at configure time.
    logger::set_level(LOG_INFO);
}

/// The ABI's `Info` log level.
const LOG_INFO: u32 = 2;

/// A root context's state (one plugin configuration), shared by its request contexts.
#[derive(Default)]
pub(crate) struct Shared {
    pub engine: Option<Engine>,
    pub generation: u64,
    /// The root context's id: where callouts are sent from on Envoy (see [`dispatch_all`]).
    pub root_id: u32,
    /// Callouts under way: host token -> (what they fetch, when they were sent, the request
    /// whose context sent them: `None` for the root's).
    pub callouts: HashMap<u32, (FetchId, u64, Option<u32>)>,
    pub counters: Rc<HostCounters>,
    /// The host's signature verifier: `None` until probed, then whether it has one.
    pub signatures: Option<Option<Rc<native::HostSignatures>>>,
    /// Whether the host resumes only the request whose own callout answered (Kong): `None`
    /// until probed.
    pub own_callouts: Option<bool>,
    /// Requests that waited under a configuration since replaced, where only their own
    /// callout's answer can settle them (Kong): undecided until it comes or they end.
    pub orphans: HashSet<u32>,
    /// Whether the tick period is set: once per root context (ngx_wasm_module traps on a
    /// second `set_tick_period`, "tick_period already set").
    pub ticking: bool,
}

/// Whether the host can act on another request than the one whose callback runs. Envoy's
/// `set_effective_context` refuses an id that names no context (and switches to any that
/// does); ngx_wasm_module's accepts every id and switches nothing, so there a request can
/// only be resumed from its own callouts' answers.
pub(crate) fn resumes_only_own_requests() -> bool {
    raw::set_effective_context(u32::MAX).is_ok()
}

/// A refusal for a request the filter cannot decide on any more (503, never an allow).
pub(crate) fn unavailable(reason: &'static str) -> Outcome {
    crate::engine::deny(Denial::IdpUnavailable(reason), "api", None, None)
}

/// Proxy-wasm shared data: process-wide in Envoy (every worker's VM), per worker process in
/// Kong (nginx).
#[derive(Debug, Default)]
pub(crate) struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        raw::shared_data(key).ok().flatten()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        match raw::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => true,
            Err(raw::CAS_MISMATCH) => false,
            Err(status) => {
                log::warn!("shared data {key} not written (host status {status})");
                false
            }
        }
    }
}

/// Counters in the proxy's stats (Envoy shows them as `app_auth.*`, and `app_auth_*` in /stats/prometheus). Defined
/// once per VM; a metric the host refused is simply not counted.
#[derive(Debug, Default)]
pub(crate) struct HostCounters {
    /// By counter index: the host's metric id (`None`: the host refused it) and the count
    /// not yet handed to the host. A request adds here (no host call on the hot path), the
    /// tick flushes (so the proxy's stats lag by at most one tick).
    slots: Vec<(Option<u32>, std::cell::Cell<u64>)>,
    latency: Option<u32>,
    /// The gauge of this VM's linear memory, and the value it was last set to.
    memory: Option<(u32, std::cell::Cell<u64>)>,
}

impl HostCounters {
    pub fn define() -> HostCounters {
        let slots = metrics::ALL
            .iter()
            .map(|counter| {
                let id = raw::define_metric(MetricType::Counter, counter.name()).ok();
                (id, std::cell::Cell::new(0))
            })
            .collect();
        let latency = raw::define_metric(MetricType::Histogram, metrics::CALLOUT_LATENCY_MS).ok();
        let memory = raw::define_metric(MetricType::Gauge, metrics::VM_MEMORY_BYTES)
            .ok()
            .map(|id| (id, std::cell::Cell::new(0)));
        HostCounters {
            slots,
            latency,
            memory,
        }
    }

    pub fn ids_defined(&self) -> usize {
        self.slots.iter().filter(|(id, _)| id.is_some()).count()
    }

    pub fn record_latency(&self, ms: u64) {
        if let Some(id) = self.latency {
            let _ = raw::record_metric(id, ms);
        }
    }

    /// Hands the counts gathered since the last flush to the host, and the VM's memory when
    /// it changed (a Wasm memory only grows, by 64 KiB pages).
    pub fn flush(&self) {
        for (id, pending) in &self.slots {
            let n = pending.replace(0);
            if let (Some(id), true) = (id, n > 0) {
                let _ = raw::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Some((id, reported)) = &self.memory {
            let pages = u64::try_from(core::arch::wasm32::memory_size(0)).unwrap_or(u64::MAX);
            let bytes = pages.saturating_mul(65_536);
            if bytes != reported.get() && raw::record_metric(*id, bytes).is_ok() {
                reported.set(bytes);
            }
        }
    }
}

impl Counters for HostCounters {
    fn add(&self, counter: Counter) {
        if let Some((_, pending)) = self.slots.get(counter.index()) {
            pending.set(pending.get().saturating_add(1));
        }
    }
}

pub(crate) type SharedRef = Rc<RefCell<Shared>>;

/// Formats log lines only when the host would print them (a debug line per request is
/// otherwise formatted and thrown away on the hot path). Not on ngx_wasm_module (`kong`):
/// its `proxy_get_log_level` is not implemented, and calling it traps ("host trap (function
/// not yet implemented)"); there the level stays Info.
pub(crate) fn follow_host_log_level(kong: bool) {
    if kong {
        return;
    }
    logger::set_level(raw::log_level().unwrap_or(LOG_INFO));
}

pub(crate) fn now_ms() -> u64 {
    // A host that cannot tell the time makes every token look expired (fail closed), never
    // valid forever.
    raw::current_time_ns().map_or(u64::MAX, |ns| ns / 1_000_000)
}

/// The root context, where a host that resumes any request (Envoy) sends callouts from and
/// makes their answers readable ([`dispatch_all`]); `None` on Kong, or before the probe.
fn envoy_root(shared: &SharedRef) -> Option<u32> {
    match shared.try_borrow() {
        Ok(s) if s.own_callouts == Some(false) => Some(s.root_id),
        _ => None,
    }
}

/// Sends the engine's callouts for the current context (`owner`: a request's, `None`: the
/// root's) and remembers their tokens. A callout that cannot even be sent is answered at
/// once as a failed one.
///
/// On Envoy every callout goes out from the root context (the effective context at the
/// time of the call is the one Envoy gives it to), so that Envoy does not cancel it when
/// the request that needed it ends. Its token is kept with that request, its owner, and the
/// answer goes to the owner's callback ([`callbacks::proxy_on_http_call_response`]), which
/// reads it from the root context ([`callout_settles`]). A request that ends takes its
/// callouts' tokens with it ([`filter::on_request_end`]): an answer that comes after is
/// dropped, and the requests that waited on it send it again at the next tick. Kong resumes
/// a request only from its own callouts' answers: there, a callout goes out from the
/// request.
pub(crate) fn dispatch_all(
    shared: &SharedRef,
    mut progress: Progress,
    owner: Option<u32>,
) -> Vec<(u32, Method, Outcome)> {
    let mut settled = std::mem::take(&mut progress.settled);
    for line in progress.log.drain(..) {
        log::info!("{line}");
    }
    let mut queue: Vec<_> = progress.callouts.drain(..).collect();
    let from_root = if queue.is_empty() {
        None
    } else {
        envoy_root(shared)
    };
    if let Some(root) = from_root {
        if let Err(status) = raw::set_effective_context(root) {
            log::warn!("could not send callouts from the root context (host status {status})");
        }
    }
    // Bounded: each failed dispatch can only settle waiters or start one fetch per issuer.
    let mut budget: u32 = 64;
    while let Some(callout) = queue.pop() {
        budget = budget.saturating_sub(1);
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", callout.method),
            (":path", &callout.path),
            (":authority", &callout.authority),
        ];
        if callout.https {
            headers.push((":scheme", "https"));
        }
        for (n, v) in &callout.headers {
            headers.push((n.as_str(), v.as_str()));
        }
        let timeout_ms = u32::try_from(callout.timeout_ms.max(1)).unwrap_or(u32::MAX);
        match raw::http_call(
            &callout.upstream,
            &header_map::serialize(&headers),
            callout.body.as_deref(),
            timeout_ms,
        ) {
            Ok(token) => {
                shared
                    .borrow_mut()
                    .callouts
                    .insert(token, (callout.id, now_ms(), owner));
            }
            Err(status) => {
                log::warn!(
                    "callout to {} failed to start (host status {status})",
                    callout.upstream
                );
                let response = CalloutResponse {
                    failure: Some(format!(
                        "callout could not be sent to {:?} (host status {status})",
                        callout.upstream
                    )),
                    ..CalloutResponse::default()
                };
                let mut s = shared.borrow_mut();
                if let Some(engine) = s.engine.as_mut() {
                    let mut more = answer(engine, owner, callout.id, response);
                    settled.append(&mut more.settled);
                    for line in more.log.drain(..) {
                        log::info!("{line}");
                    }
                    if budget > 0 {
                        queue.append(&mut more.callouts);
                    }
                }
            }
        }
    }
    if let (Some(_), Some(owner)) = (from_root, owner) {
        let _ = raw::set_effective_context(owner);
    }
    settled
}

/// Hands a callout's answer to the engine, in the callback of the request that sent it
/// (`owner`) or of the root.
fn answer(
    engine: &mut Engine,
    owner: Option<u32>,
    id: FetchId,
    response: CalloutResponse,
) -> Progress {
    match owner {
        Some(owner) => engine.on_request_callout_response(owner, id, response, now_ms()),
        None => engine.on_callout_response(id, response, now_ms()),
    }
}

/// Reads the response to a callout sent from `owner`'s context (a request's, or `None`: the
/// root's), hands it to the engine and settles whom it decides.
pub(crate) fn on_callout_response(
    shared: &SharedRef,
    token: u32,
    body_size: usize,
    owner: Option<u32>,
) {
    let mut settled = callout_settles(shared, token, body_size, owner);
    // Where only a request's own callouts can resume it, one that is neither answered nor
    // waiting for another callout of its own (its fetch belonged to a configuration since
    // replaced) would hang: it is refused instead.
    if let Some(owner) = owner {
        let lost = {
            let s = shared.borrow();
            s.own_callouts == Some(true)
                && !settled.iter().any(|(id, _, _)| *id == owner)
                && !s.engine.as_ref().is_some_and(|e| e.is_waiting(owner))
        };
        if lost {
            settled.push((
                owner,
                Method::None,
                unavailable("its callout's answer was lost"),
            ));
        }
        if let Ok(mut s) = shared.try_borrow_mut() {
            if !s.orphans.is_empty() && settled.iter().any(|(id, _, _)| *id == owner) {
                s.orphans.remove(&owner);
            }
        }
    }
    settle(shared, settled);
}

fn callout_settles(
    shared: &SharedRef,
    token: u32,
    body_size: usize,
    owner: Option<u32>,
) -> Vec<(u32, Method, Outcome)> {
    let sent = shared.borrow_mut().callouts.remove(&token);
    let Some((id, sent_ms, _)) = sent else {
        return Vec::new();
    };
    let counters = Rc::clone(&shared.borrow().counters);
    counters.record_latency(now_ms().saturating_sub(sent_ms));
    let max = shared
        .borrow()
        .engine
        .as_ref()
        .map_or(0, |e| e.config().limits.max_response_bytes);
    let mut response = CalloutResponse::default();
    // On Envoy the answer is the root context's, which sent the callout ([`dispatch_all`]),
    // whichever context's callback it is handed to.
    if let Some(root) = owner.and(envoy_root(shared)) {
        let _ = raw::set_effective_context(root);
    }
    // Read in place, as the request's headers; a map the host cannot give or that is
    // malformed is a response without headers (no `:status`: a failed callout).
    let map = raw::header_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
    if let Some(headers) = header_map::parse(&map) {
        for (name, value) in headers {
            match name {
                b":status" => {
                    response.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                }
                // Kong (ngx_wasm_module) reports a failed call this way.
                b":dispatch_status" => {
                    response.failure = Some(format!(
                        "dispatch failed: {}",
                        String::from_utf8_lossy(value)
                    ));
                }
                // Envoy lowercases header names; Kong hands over the IdP's own spelling
                // (`Cache-Control`).
                name if name.eq_ignore_ascii_case(b"cache-control") => {
                    response.max_age_s = max_age(value)
                }
                _ => {}
            }
        }
    }
    if body_size > max {
        response.failure = Some(format!(
            "response body of {body_size} bytes exceeds the limit of {max}"
        ));
    } else if body_size > 0 {
        match raw::buffer(BufferType::HttpCallResponseBody, 0, body_size) {
            Ok(body) => response.body = body,
            Err(status) => {
                response.failure = Some(format!("response body unreadable (host status {status})"))
            }
        }
    }
    let progress = {
        let mut s = shared.borrow_mut();
        match s.engine.as_mut() {
            Some(engine) => answer(engine, owner, id, response),
            None => return Vec::new(),
        }
    };
    dispatch_all(shared, progress, owner)
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache` mean 0).
fn max_age(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut age = None;
    for directive in text.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok();
        }
    }
    age
}

/// Answers the current request with a local reply. One the host refuses (ngx_wasm_module
/// does when nginx cannot allocate it) is sent once more bare, the status alone, which needs
/// the least of the host; if that is refused too, the request stays held: never forwarded.
pub(crate) fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let bare = headers.is_empty() && body.is_empty();
    let sent = raw::send_local_response(u32::from(status), &header_map::serialize(headers), body)
        .or_else(|refused| {
            if bare {
                return Err(refused);
            }
            log::warn!(
                "the host refused the {status} reply (host status {refused}); sending it bare"
            );
            raw::send_local_response(
                u32::from(status),
                &header_map::serialize::<&str, &str>(&[]),
                &[],
            )
        });
    if let Err(refused) = sent {
        log::error!("the host refused the bare {status} reply (host status {refused}); the request is held, never forwarded");
    }
}

/// Applies outcomes to requests that were waiting (each in its own context).
pub(crate) fn settle(shared: &SharedRef, settled: Vec<(u32, Method, Outcome)>) {
    for (context_id, method, outcome) in settled {
        if raw::set_effective_context(context_id).is_err() {
            // The request is gone (client hung up); nothing to answer.
            continue;
        }
        if apply(shared, &outcome, method, None) {
            if let Err(status) = raw::resume_http_request() {
                log::warn!("could not resume request {context_id} (host status {status})");
            }
        }
    }
}

/// Applies an outcome to the effective context. Returns true when the request should go on
/// upstream (allowed and every header change took), false when a local reply was sent.
pub(crate) fn apply(
    shared: &SharedRef,
    outcome: &Outcome,
    method: Method,
    present: Option<&[Header<'_>]>,
) -> bool {
    if let Ok(s) = shared.try_borrow() {
        s.counters.add(metrics::outcome_counter(method, outcome));
    }
    match outcome {
        Outcome::Allow(allow) => {
            let mut ok = true;
            // A request that waited is applied without its header list at hand: read it
            // now, so that what it carries under another spelling is found too.
            let (read_map, read_list);
            let present = match present {
                Some(h) => Some(h),
                None => {
                    read_map = raw::header_map(MapType::HttpRequestHeaders).ok();
                    read_list = read_map.as_deref().and_then(header_map::parse);
                    // Without the list, a client's `_` spelling of an identity header could
                    // not be found and removed: fail closed below.
                    ok = read_list.is_some();
                    read_list.as_deref()
                }
            };
            // Whether the request carries a header (names compare by length first: most
            // differ there).
            let carries = |h: &[Header<'_>], name: &str| {
                h.iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            };
            // With the request's header list at hand, only what is there is removed: each
            // removal is a call into the proxy (and most requests carry none of them).
            let remove: &[String] = match present {
                Some(h) if header_map::carries_none(h, &allow.remove_headers) => &[],
                _ => &allow.remove_headers,
            };
            for name in remove {
                if present.is_none_or(|h| carries(h, name)) {
                    ok &= raw::remove_header(MapType::HttpRequestHeaders, name).is_ok();
                }
                // The same name with `-` and `_` swapped is the same header to many upstreams
                // (CGI, WSGI, Rack; nginx drops the `_` spelling): a client's
                // `x_application_id` goes too.
                for (alias, _) in present.unwrap_or_default() {
                    if header_map::is_alias(alias, name) {
                        let alias = String::from_utf8_lossy(alias);
                        ok &= raw::remove_header(MapType::HttpRequestHeaders, &alias).is_ok();
                    }
                }
            }
            for (name, value) in &allow.set_headers {
                // A header known to be absent now (never sent, or just removed) is added,
                // which is cheaper for the proxy than a replace.
                let absent = present.is_some_and(|h| {
                    allow.remove_headers.iter().any(|r| r == name) || !carries(h, name)
                });
                let result = if absent {
                    raw::add_header(MapType::HttpRequestHeaders, name, value)
                } else {
                    raw::replace_header(MapType::HttpRequestHeaders, name, value)
                };
                ok &= result.is_ok();
            }
            if let Some(path) = &allow.path {
                // A credential to strip from the query string. Kong proxies `$upstream_uri`,
                // which it builds from the request's query before the filter chain runs, so
                // no `:path` the filter sets takes the credential out there (and
                // ngx_wasm_module before 0.6.0 traps on a `:path` with a query): refused on
                // Kong (a borrow that fails counts as Kong: refusing is the safe side).
                let kong = shared
                    .try_borrow()
                    .map_or(true, |s| s.own_callouts == Some(true));
                if kong {
                    log::error!("a credential in the query string cannot be hidden on this host (Kong forwards the query it received); denying");
                    ok = false;
                } else {
                    ok &= raw::replace_header(MapType::HttpRequestHeaders, ":path", path).is_ok();
                }
            }
            if !ok {
                // Forwarding without the identity headers (or with a spoofed one left in
                // place) is not an option: fail closed.
                log::error!("could not rewrite request headers; denying");
                reply(
                    500,
                    &[("content-type", "application/json")],
                    br#"{"message":"An unexpected error occurred"}"#,
                );
                return false;
            }
            log::debug!(
                "allowed: method={} application={}",
                method.name(),
                allow.application_id.as_deref().unwrap_or("-")
            );
            true
        }
        Outcome::Deny(deny) => {
            // A 4xx is logged at debug: unless the host prints those, neither the route
            // property nor the line is made.
            let level = if deny.reply.status >= 500 {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            if log::log_enabled!(level) {
                let route = filter::route_name();
                log::log!(
                    level,
                    "denied {}: reason={} detail=\"{}\" method={} route={} strategy={} credential={}",
                    deny.reply.status,
                    deny.denial.reason(),
                    deny.denial.detail(),
                    method.name(),
                    route.as_deref().unwrap_or("-"),
                    deny.strategy_id.as_deref().unwrap_or("-"),
                    deny.credential_hash.as_deref().unwrap_or("-"),
                );
            }
            let headers: Vec<(&str, &str)> = deny
                .reply
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            reply(deny.reply.status, &headers, deny.reply.body.as_bytes());
            false
        }
    }
}
