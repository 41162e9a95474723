//! One request: read the headers (as bytes), ask the engine, act on its step.

use super::callbacks::{CONTINUE, PAUSE};
use super::raw::{self, MapType};
use super::{apply, dispatch_all, now_ms, settle, SharedRef};
use crate::engine::{Callout, Method, Progress, Request, Step};
use crate::header_map;
use crate::response::Denial;

/// The most pairs ngx_wasm_module marshals of a header map (`NGX_HTTP_WASM_MAX_REQ_HEADERS`,
/// applied by `ngx_proxy_wasm_pairs_marshal` with a "marshalled map truncated" warning).
const HOST_MAX_PAIRS: usize = 100;
/// The pseudo-headers ngx_wasm_module puts first in a request's map (`:path`, `:method`,
/// `:scheme`, `:authority`).
const HOST_PSEUDO_HEADERS: usize = 4;

/// Where each host keeps the route's name: Envoy's `xds.route_name`; Kong's
/// `kong.route_name` (3.9+), or its service's name for a route that has none. Serialized as
/// the ABI takes a property path (segments joined by NUL), so a lookup builds nothing.
const ENVOY_ROUTE: &[u8] = b"xds\0route_name";
const KONG_ROUTE: &[u8] = b"kong\0route_name";
const KONG_SERVICE: &[u8] = b"kong\0service_name";

/// The host, as far as route names go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteHost {
    Unknown,
    Envoy,
    Kong,
}

thread_local! {
    /// Learnt from the first request whose route property the host answered: the host is
    /// detected, never configured, and later requests ask only its own properties. Only
    /// the host is learnt, never which of its properties answered: that is each request's
    /// own (on Kong, a route without a name falls back to its service's name, and the next
    /// request's route may have one).
    static ROUTE_HOST: std::cell::Cell<RouteHost> = const { std::cell::Cell::new(RouteHost::Unknown) };
}

/// A non-empty UTF-8 property (the host's buffer becomes the String, no copy).
fn property(path: &[u8]) -> Option<String> {
    non_empty(raw::property(path)?)
}

fn non_empty(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

fn kong_route_name() -> Option<String> {
    property(KONG_ROUTE).or_else(|| property(KONG_SERVICE))
}

/// The route name of the current request.
pub(crate) fn route_name() -> Option<String> {
    match ROUTE_HOST.with(std::cell::Cell::get) {
        RouteHost::Envoy => property(ENVOY_ROUTE),
        RouteHost::Kong => kong_route_name(),
        RouteHost::Unknown => {
            // Envoy answers its property for a route with no name too (empty): an answer
            // at all is enough to know the host.
            if let Some(bytes) = raw::property(ENVOY_ROUTE) {
                ROUTE_HOST.with(|h| h.set(RouteHost::Envoy));
                return non_empty(bytes);
            }
            let name = kong_route_name();
            if name.is_some() {
                ROUTE_HOST.with(|h| h.set(RouteHost::Kong));
            }
            name
        }
    }
}

/// Whether the host is ngx_wasm_module (probed at configure time: it resumes a request only
/// from that request's own callouts).
fn kong_like(shared: &SharedRef) -> bool {
    shared.borrow().own_callouts == Some(true)
}

/// Refuses the request as one with too many headers (431).
fn too_many_headers(shared: &SharedRef, realm: &str) -> u32 {
    let outcome = crate::engine::deny(crate::response::Denial::TooManyHeaders, realm, None, None);
    apply(shared, &outcome, Method::None, None);
    PAUSE
}

/// A request's end, whenever it comes (answered, or the client gone while it waited): the
/// engine forgets it, and the callouts its context sent that are still unanswered, which
/// the host drops with it (other requests may wait on them: the engine re-runs those). Done
/// in `proxy_on_delete`, the one callback of a request's end that the Envoy build keeps
/// (scripts/envoy_module.py).
pub(crate) fn on_request_end(context_id: u32, shared: &SharedRef) {
    let Ok(mut s) = shared.try_borrow_mut() else {
        return;
    };
    let s = &mut *s;
    if !s.orphans.is_empty() {
        s.orphans.remove(&context_id);
    }
    let Some(engine) = s.engine.as_mut() else {
        return;
    };
    engine.forget(context_id);
    if !s.callouts.is_empty() {
        forget_callouts(context_id, s);
    }
}

/// The callouts a request that ended had sent: its fetches abandoned, unless another
/// request's copy of the same is still under way.
#[cold]
#[inline(never)]
fn forget_callouts(context_id: u32, s: &mut super::Shared) {
    let Some(engine) = s.engine.as_mut() else {
        return;
    };
    let mut dropped = Vec::new();
    s.callouts.retain(|_, (id, _, owner)| {
        let mine = *owner == Some(context_id);
        if mine {
            dropped.push(*id);
        }
        !mine
    });
    for id in dropped {
        // A copy of the same fetch still under way (sent by another request, where each
        // sends its own) keeps it going.
        if !s.callouts.values().any(|(other, _, _)| *other == id) {
            engine.abandon(id, now_ms());
        }
    }
}

/// A backstop: a response for a request still waiting on its callout means the host
/// forwarded it undecided. ngx_wasm_module before 0.6.0 (Kong 3.4 to 3.9) does so when a
/// callout fails (timeout, refused, resolver, TLS): it never calls
/// `on_http_call_response` for it, and resumes the request once no callout is left. The
/// upstream has seen the request by now; its answer at least does not reach the client.
/// (Envoy never resumes a paused request on its own; its build drops this callback.)
pub(crate) fn on_response_headers(context_id: u32, shared: &SharedRef) -> u32 {
    // Waiting in this configuration's engine, or in one since replaced.
    let undecided = shared.try_borrow().is_ok_and(|s| {
        s.engine.as_ref().is_some_and(|e| e.is_waiting(context_id))
            || s.orphans.contains(&context_id)
    });
    if !undecided {
        return CONTINUE;
    }
    log::error!(
        "request {context_id} reached the upstream before it was decided (a callout failed unreported); refusing its response"
    );
    apply(
        shared,
        &super::unavailable("the host forwarded the request before its callout answered"),
        Method::None,
        None,
    );
    PAUSE
}

/// A request's headers: the engine's decision applied (Continue), a local reply sent, or
/// the request held while its callout is under way (Pause).
pub(crate) fn on_request_headers(context_id: u32, shared: &SharedRef, num_headers: usize) -> u32 {
    // ngx_wasm_module hands a filter at most 100 pairs of a map, its pseudo-headers
    // (up to 4) first, and silently drops the rest: a request with more may carry headers
    // the filter never sees (a spoofed identity header it would neither find nor remove,
    // a second API key). Worse, its size estimate for a truncated map can fall short of
    // what it then writes into the module's memory. So a request whose map could be
    // truncated (a map of exactly 100 pairs cannot be told from one that was) is refused
    // before its map is read (`num_headers` is nginx's count of the request's header
    // lines, pseudo-headers not included).
    if num_headers.saturating_add(HOST_PSEUDO_HEADERS) >= HOST_MAX_PAIRS && kong_like(shared) {
        return too_many_headers(shared, "");
    }
    // The host's serialized map, read in place: names and values point into this one
    // buffer (values stay bytes: one non-UTF-8 header value must not trap the VM).
    let map = match raw::header_map(MapType::HttpRequestHeaders) {
        Ok(map) => map,
        Err(status) => {
            log::error!("could not read request headers (host status {status}); denying");
            super::reply(500, &[], b"");
            return PAUSE;
        }
    };
    let Some(headers) = header_map::parse(&map) else {
        log::error!(
            "request headers from the host are malformed ({} bytes); denying",
            map.len()
        );
        super::reply(500, &[], b"");
        return PAUSE;
    };
    let authority = header_map::pseudo(&headers, ":authority").unwrap_or_default();
    // Backstop for the check above (a host whose count differs): a list that fills the
    // pairs the host hands over may have lost some.
    if headers.len() >= HOST_MAX_PAIRS && kong_like(shared) {
        return too_many_headers(shared, authority);
    }
    // A `:path` that is not UTF-8 (Envoy's HTTP/2 codec and nginx pass raw bytes such as
    // 0xE9 through) is refused: read as empty, its query string (a second API key or
    // `access_token`, a key hide_credentials must strip) would go unseen.
    let Some(path) = header_map::pseudo(&headers, ":path") else {
        let why = "the request path is not UTF-8";
        let outcome = crate::engine::deny(Denial::InvalidRequest(why), authority, None, None);
        apply(shared, &outcome, Method::None, None);
        return PAUSE;
    };
    // The route name is a property lookup: only made when policies are chosen by it.
    let needs_route = shared
        .borrow()
        .engine
        .as_ref()
        .is_some_and(|e| e.config().chooses_by_route());
    let route = if needs_route { route_name() } else { None };
    let request = Request {
        route: route.as_deref(),
        authority,
        path,
        headers: &headers,
    };
    let step = {
        let mut s = shared.borrow_mut();
        match s.engine.as_mut() {
            Some(engine) => engine.on_request(context_id, &request, now_ms()),
            None => {
                drop(s);
                log::error!("request before configuration; denying");
                super::reply(503, &[], b"");
                return PAUSE;
            }
        }
    };
    match step {
        Step::Done(method, outcome) => {
            if apply(shared, &outcome, method, Some(&headers)) {
                CONTINUE
            } else {
                PAUSE
            }
        }
        Step::Wait(callout) => wait(context_id, shared, callout, &headers),
    }
}

/// A request that waits on `callout` (sent now, or already under way: `None`).
#[cold]
#[inline(never)]
fn wait(
    context_id: u32,
    shared: &SharedRef,
    callout: Option<Callout>,
    headers: &[crate::credential::Header<'_>],
) -> u32 {
    let progress = Progress {
        callouts: callout.into_iter().collect(),
        ..Progress::default()
    };
    // A callout that failed to send may settle this very request (and others).
    let mut settled = dispatch_all(shared, progress, Some(context_id));
    if let Some(pos) = settled
        .iter()
        .position(|(settled_id, _, _)| *settled_id == context_id)
    {
        let (_, method, outcome) = settled.remove(pos);
        settle(shared, settled);
        let _ = raw::set_effective_context(context_id);
        return if apply(shared, &outcome, method, Some(headers)) {
            CONTINUE
        } else {
            PAUSE
        };
    }
    settle(shared, settled);
    let _ = raw::set_effective_context(context_id);
    PAUSE
}
