//! The whole decision engine, as a host drives it: requests with any headers and path, the
//! IdP's answers (right, wrong or missing) to its callouts in any order, clients hanging up,
//! and ticks as the clock moves. The configuration is fixed: one policy with key-auth (key
//! `k-secret`) and OpenID Connect (bearer, client credentials, introspection) whose issuer's
//! key set (fuzz/keys/jwks.json) has no private halves, with `hide_credentials`.
//!
//! Input: lines, each an operation (a line that is none is skipped):
//! - `R <path>\t<name>: <value>\t…`: a request (the rest of the line after the first tab
//!   are its headers, one per tab-separated field);
//! - `A <status> <body>`: the oldest pending callout answered with that status and body
//!   (`A 200 @` answers with the right document for its path: discovery, keys, or an
//!   introspection answer saying active for client-1);
//! - `F`: the oldest pending callout fails (reset, timeout);
//! - `T <ms>`: the clock moves on by that much (at most a day), and the engine ticks;
//! - `H`: the oldest undecided request's client hangs up.
//!
//! Invariants: no panic; a request is decided at most once, and never after it ended; a JWT
//! is never allowed on its signature (nobody can sign for these keys), so bearer and client
//! credentials allow only after an introspection answer said `"active"`; key-auth allows only
//! with the key; an allowed request's path no longer carries the key; forwarded header names
//! are lowercase tokens and no value carries CR, LF or NUL; no reply echoes a secret; and
//! once every callout has failed and the clock has moved past every bound, no request is
//! left waiting.

#![no_main]

use app_auth_filter::config::Config;
use app_auth_filter::engine::{
    Callout, CalloutResponse, Engine, Method, Outcome, Progress, Request, Step,
};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::OnceLock;

const JWKS: &str = include_str!("../keys/jwks.json");
const ISS: &str = "https://idp.example.com";
/// The clock the seed tokens were made for (fuzz/gen_seeds.py).
const NOW_MS: u64 = 1_800_000_000_000;
const KEY: &str = "k-secret";
const SECRETS: [&str; 2] = [KEY, "rs-secret"];

fn config_bytes() -> &'static [u8] {
    static CONFIG: OnceLock<Vec<u8>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let key_app = app_auth_filter::engine::sha256_hex(KEY.as_bytes());
        serde_json::json!({
            "policies": {"p": {"scope": "p", "hide_credentials": true, "strategies": [
                {"id": "s-key", "strategy_type": "key_auth",
                 "configs": {"key-auth": {"key_names": ["apikey"]}}},
                {"id": "s-oidc", "strategy_type": "openid_connect",
                 "configs": {"openid-connect": {"issuer": ISS, "credential_claim": ["client_id"],
                    "scopes": ["orders:read"],
                    "auth_methods": ["client_credentials", "bearer", "introspection"],
                    "scopes_required": ["orders:read"], "audience_required": ["https://api.example.com"],
                    "client_id": ["rs-client"], "client_secret": "rs-secret",
                    "upstream_headers_claims": ["sub"], "upstream_headers_names": ["x-subject"],
                    "timeout": 2000, "cache_ttl": 300}}}]}},
            "routes": {"orders": "p"},
            "default_policy": "p",
            "applications": [
                {"id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-oidc", "scopes": ["p"],
                 "developer_id": "dev-1", "portal_id": "portal-1", "organization_id": "org-1"},
                {"id": "app-key", "client_id": key_app, "auth_strategy_id": "s-key", "scopes": ["p"]},
            ],
            "upstreams": {"idp.example.com": "idp"},
        })
        .to_string()
        .into_bytes()
    })
}

/// The right answer to a callout, by its path.
fn right_answer(callout: &Callout) -> CalloutResponse {
    let body = match callout.path.as_str() {
        "/.well-known/openid-configuration" => serde_json::json!({
            "issuer": ISS, "jwks_uri": format!("{ISS}/jwks"),
            "token_endpoint": format!("{ISS}/token"),
            "introspection_endpoint": format!("{ISS}/introspect")})
        .to_string(),
        "/jwks" => JWKS.to_owned(),
        _ => serde_json::json!({"active": true, "iss": ISS, "client_id": "client-1",
            "sub": "client-1", "aud": "https://api.example.com", "scope": "orders:read",
            "exp": NOW_MS / 1000 + 600})
        .to_string(),
    };
    CalloutResponse {
        status: Some(200),
        body: body.into_bytes(),
        ..CalloutResponse::default()
    }
}

/// `text` with its `%XX` escapes decoded (others kept as they are), as a query value is read.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct World {
    engine: Engine,
    now: u64,
    /// Callouts sent and not answered, oldest first.
    pending: Vec<Callout>,
    /// Requests by context: (the request's text, for what it carried; decided?).
    requests: BTreeMap<u32, (String, bool)>,
    next_context: u32,
    /// Whether an introspection answer the engine was given says "active" (it could then
    /// rightly allow a token it cannot verify).
    active_fed: bool,
}

impl World {
    fn decided(&mut self, context: u32, method: Method, outcome: &Outcome) {
        let (text, done) = self
            .requests
            .get_mut(&context)
            .unwrap_or_else(|| panic!("request {context} decided after it ended"));
        assert!(!*done, "request {context} decided twice");
        *done = true;
        match outcome {
            Outcome::Allow(allow) => {
                match method {
                    Method::KeyAuth => assert!(
                        percent_decoded(text).contains(KEY),
                        "key-auth allowed without the key"
                    ),
                    Method::Bearer | Method::ClientCredentials | Method::Introspection => assert!(
                        self.active_fed,
                        "{method:?} allowed with no introspection answer saying active"
                    ),
                    Method::None => panic!("allowed with no method"),
                }
                if let Some(path) = &allow.path {
                    let query = path.split_once('?').map_or("", |(_, q)| q);
                    assert!(
                        !query.split('&').any(|p| {
                            let name = p.split_once('=').map_or(p, |(n, _)| n);
                            percent_decoded(name) == "apikey"
                        }),
                        "the key is still in the path: {path}"
                    );
                }
                for (name, value) in &allow.set_headers {
                    assert!(
                        !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_graphic()
                                && !b.is_ascii_uppercase()
                                && !b"()<>@,;:\\\"/[]?={}".contains(&b)),
                        "forwarded header name {name:?}"
                    );
                    assert!(
                        !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                        "forwarded header value {value:?}"
                    );
                }
            }
            Outcome::Deny(deny) => {
                assert!((400..=599).contains(&deny.reply.status));
                for secret in SECRETS {
                    assert!(
                        !deny.reply.body.contains(secret),
                        "reply body echoes a secret"
                    );
                    assert!(
                        !deny.reply.headers.iter().any(|(_, v)| v.contains(secret)),
                        "reply headers echo a secret"
                    );
                }
                for (_, value) in &deny.reply.headers {
                    assert!(!value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)));
                }
            }
        }
    }

    fn take(&mut self, progress: Progress) {
        for (context, method, outcome) in progress.settled {
            self.decided(context, method, &outcome);
            self.end(context);
        }
        self.pending.extend(progress.callouts);
    }

    /// A request's stream ends: Envoy forgets it (its callouts are the root's, and live on).
    fn end(&mut self, context: u32) {
        self.engine.forget(context);
        self.requests.remove(&context);
    }

    fn request(&mut self, line: &str) {
        let mut fields = line.split('\t');
        let path = fields.next().unwrap_or("/");
        let pairs: Vec<(&str, &str)> = fields
            .filter_map(|f| f.split_once(':'))
            .map(|(n, v)| (n.trim(), v.trim_start()))
            .collect();
        let headers: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let context = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(2);
        self.requests.insert(context, (line.to_owned(), false));
        let request = Request {
            route: Some("orders"),
            authority: "api.example.com",
            path,
            headers: &headers,
        };
        match self.engine.on_request(context, &request, self.now) {
            Step::Done(method, outcome) => {
                self.decided(context, method, &outcome);
                self.end(context);
            }
            Step::Wait(callout) => self.pending.extend(callout),
        }
    }

    fn answer(&mut self, response: Option<CalloutResponse>) {
        if self.pending.is_empty() {
            return;
        }
        let callout = self.pending.remove(0);
        let response = response.unwrap_or_else(|| right_answer(&callout));
        if callout.path.contains("introspect")
            && String::from_utf8_lossy(&response.body).contains("\"active\"")
        {
            self.active_fed = true;
        }
        let progress = self
            .engine
            .on_callout_response(callout.id, response, self.now);
        self.take(progress);
    }
}

fuzz_target!(|data: &[u8]| {
    let (config, _) = Config::parse(config_bytes()).expect("the fuzz configuration loads");
    let mut world = World {
        engine: Engine::new(Rc::new(config), 1),
        now: NOW_MS,
        pending: Vec::new(),
        requests: BTreeMap::new(),
        next_context: 2,
        active_fed: false,
    };
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n').take(64) {
        let (op, rest) = line.split_at(line.chars().next().map_or(0, char::len_utf8));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match op {
            "R" => world.request(rest),
            "A" => {
                let (status, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let response = (body != "@").then(|| CalloutResponse {
                    status: status.parse().ok(),
                    body: body.as_bytes().to_vec(),
                    ..CalloutResponse::default()
                });
                world.answer(response);
            }
            "F" => world.answer(Some(CalloutResponse::default())),
            "T" => {
                let ms = rest.parse::<u64>().unwrap_or(0).min(86_400_000);
                world.now = world.now.saturating_add(ms);
                let progress = world.engine.on_tick(world.now);
                world.take(progress);
            }
            "H" => {
                let undecided = world
                    .requests
                    .iter()
                    .find(|(_, (_, d))| !d)
                    .map(|(c, _)| *c);
                if let Some(context) = undecided {
                    world.end(context);
                }
            }
            _ => {}
        }
    }
    // Every callout fails, the clock moves past every bound: nobody is left waiting.
    for _ in 0..16 {
        for _ in 0..64 {
            if world.pending.is_empty() {
                break;
            }
            world.answer(Some(CalloutResponse::default()));
        }
        world.now = world.now.saturating_add(60_000);
        let progress = world.engine.on_tick(world.now);
        world.take(progress);
    }
    assert!(
        world.engine.waiting_contexts().is_empty(),
        "requests left waiting: {:?}",
        world.engine.waiting_contexts()
    );
});
