//! A controllable identity provider on loopback, for fault injection: several issuers on one
//! port (`http://127.0.0.1:PORT/<name>`), each with its own ES256 keys, clients, opaque
//! tokens, clock offset and, per endpoint, a fault (down, slow, 500, HTML, truncated JSON,
//! oversize, wrong types, `"active": "true"`). One thread per connection, so a slow answer
//! holds only its own caller. Every wait is bounded; the server stops when dropped.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::loopback::{self, Request};

pub const AUD: &str = "https://api.example.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Discovery,
    Jwks,
    Token,
    Introspection,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Discovery,
        Endpoint::Jwks,
        Endpoint::Token,
        Endpoint::Introspection,
    ];

    fn path(self) -> &'static str {
        match self {
            Endpoint::Discovery => ".well-known/openid-configuration",
            Endpoint::Jwks => "jwks",
            Endpoint::Token => "token",
            Endpoint::Introspection => "introspect",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Discovery => "discovery",
            Endpoint::Jwks => "jwks",
            Endpoint::Token => "token",
            Endpoint::Introspection => "introspection",
        }
    }
}

/// What an endpoint does instead of answering well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed without an answer.
    Down,
    /// The answer comes after this long (past the filter's timeout, if longer).
    Slow(Duration),
    /// This status with a JSON error body.
    Status(u16),
    /// 200 with an HTML page.
    Html,
    /// 200 with the first half of the right JSON.
    Truncated,
    /// 200 with valid JSON of this many bytes.
    Oversize(usize),
    /// 200 with JSON whose members have the wrong types.
    WrongTypes,
    /// Introspection: `"active": "true"` (a string) for a token that is active.
    ActiveString,
}

impl Fault {
    pub fn name(self) -> String {
        match self {
            Fault::Down => "down".into(),
            Fault::Slow(d) => format!("slow {} ms", d.as_millis()),
            Fault::Status(s) => format!("HTTP {s}"),
            Fault::Html => "HTML".into(),
            Fault::Truncated => "truncated JSON".into(),
            Fault::Oversize(n) => format!("oversize ({n} bytes)"),
            Fault::WrongTypes => "wrong types".into(),
            Fault::ActiveString => "active as a string".into(),
        }
    }
}

struct Issuer {
    /// Published keys, newest first; the first signs.
    keys: Vec<ES256KeyPair>,
    serial: u32,
    clients: HashMap<String, String>,
    /// Opaque token -> client id.
    opaque: HashMap<String, String>,
    /// Seconds the issuer's clock is ahead of the real one (negative: behind).
    skew_s: i64,
    faults: HashMap<Endpoint, Fault>,
    hits: HashMap<Endpoint, u64>,
}

impl Issuer {
    fn new(name: &str) -> Issuer {
        Issuer {
            keys: vec![ES256KeyPair::generate().with_key_id(&format!("{name}-1"))],
            serial: 1,
            clients: HashMap::new(),
            opaque: HashMap::new(),
            skew_s: 0,
            faults: HashMap::new(),
            hits: HashMap::new(),
        }
    }
}

type State = Arc<Mutex<HashMap<String, Issuer>>>;

pub struct FakeIdp {
    pub port: u16,
    state: State,
    stop: Arc<AtomicBool>,
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FakeIdp {
    pub fn start() -> FakeIdp {
        let state: State = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let st = state.clone();
        let port = loopback::serve(Duration::from_secs(900), stop.clone(), move |stream| {
            serve(stream, &st)
        });
        FakeIdp { port, state, stop }
    }

    pub fn issuer(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Issuer) -> R) -> R {
        let mut state = self.state.lock().expect("state");
        f(state
            .entry(name.to_owned())
            .or_insert_with(|| Issuer::new(name)))
    }

    pub fn set(&self, name: &str, endpoint: Endpoint, fault: Option<Fault>) {
        self.with(name, |i| match fault {
            Some(f) => i.faults.insert(endpoint, f),
            None => i.faults.remove(&endpoint),
        });
    }

    pub fn clear(&self, name: &str) {
        self.with(name, |i| i.faults.clear());
    }

    pub fn hits(&self, name: &str, endpoint: Endpoint) -> u64 {
        self.with(name, |i| i.hits.get(&endpoint).copied().unwrap_or(0))
    }

    pub fn register(&self, name: &str, client_id: &str, secret: &str) {
        self.with(name, |i| {
            i.clients.insert(client_id.to_owned(), secret.to_owned())
        });
    }

    /// An opaque token the introspection endpoint says is active for `client_id`.
    pub fn opaque(&self, name: &str, client_id: &str) -> String {
        let token = format!(
            "opaque-{name}-{client_id}-{}",
            self.with(name, |i| i.opaque.len())
        );
        self.with(name, |i| {
            i.opaque.insert(token.clone(), client_id.to_owned())
        });
        token
    }

    pub fn skew(&self, name: &str, seconds: i64) {
        self.with(name, |i| i.skew_s = seconds);
    }

    /// A new signing key; the previous one stays published when `keep_old`.
    pub fn rotate(&self, name: &str, keep_old: bool) -> String {
        self.with(name, |i| {
            i.serial += 1;
            let kid = format!("{name}-{}", i.serial);
            let fresh = ES256KeyPair::generate().with_key_id(&kid);
            if keep_old {
                i.keys.insert(0, fresh);
                i.keys.truncate(2);
            } else {
                i.keys = vec![fresh];
            }
            kid
        })
    }

    /// The claims this issuer puts in an access token for `client_id`, by its own clock.
    pub fn claims(&self, name: &str, client_id: &str) -> Value {
        let skew = self.with(name, |i| i.skew_s);
        access_claims(&self.issuer(name), client_id, skew)
    }

    /// `claims` signed with the issuer's current key, `typ: at+jwt`.
    pub fn sign(&self, name: &str, claims: &Value) -> String {
        self.with(name, |i| sign(&i.keys[0], claims))
    }

    /// A valid access token for `client_id`.
    pub fn access_token(&self, name: &str, client_id: &str) -> String {
        self.sign(name, &self.claims(name, client_id))
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn access_claims(issuer: &str, client_id: &str, skew_s: i64) -> Value {
    let now = now_s().saturating_add_signed(skew_s);
    json!({"iss": issuer, "aud": AUD, "sub": client_id, "client_id": client_id,
           "scope": "orders:read", "iat": now, "exp": now + 600})
}

/// A JSON object as jwt-simple's claims, every member as given (none of jwt-simple's own).
pub fn as_claims(claims: &Value) -> JWTClaims<Map<String, Value>> {
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims.as_object().cloned().unwrap_or_default(),
    }
}

fn sign(key: &ES256KeyPair, claims: &Value) -> String {
    let claims = as_claims(claims);
    let options = HeaderOptions {
        signature_type: Some("at+jwt".into()),
        ..HeaderOptions::default()
    };
    key.sign_with_options(claims, &options).expect("sign")
}

fn jwk(key: &ES256KeyPair) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
           "kid": key.key_id().clone().unwrap_or_default(),
           "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2B", "+")
                .replace("%2F", "/")
                .replace("%3D", "=")
        })
    })
}

fn serve(mut stream: TcpStream, state: &State) {
    let port = stream.local_addr().map_or(0, |a| a.port());
    let Some(Request {
        path,
        headers,
        body,
    }) = loopback::read_request(&mut stream)
    else {
        return;
    };
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let Some((name, rest)) = path.trim_start_matches('/').split_once('/') else {
        return respond(&mut stream, 404, "application/json", b"{}");
    };
    let Some(endpoint) = Endpoint::ALL.into_iter().find(|e| e.path() == rest) else {
        return respond(&mut stream, 404, "application/json", b"{}");
    };
    let issuer = format!("http://127.0.0.1:{port}/{name}");
    // The right answer, and the fault (if any), decided under the lock.
    let (status, answer, fault) = {
        let mut all = state.lock().expect("state");
        let i = all
            .entry(name.to_owned())
            .or_insert_with(|| Issuer::new(name));
        *i.hits.entry(endpoint).or_default() += 1;
        let fault = i.faults.get(&endpoint).copied();
        let (status, answer) = match endpoint {
            Endpoint::Discovery => (
                200,
                json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
                       "token_endpoint": format!("{issuer}/token"),
                       "introspection_endpoint": format!("{issuer}/introspect")}),
            ),
            Endpoint::Jwks => (
                200,
                json!({"keys": i.keys.iter().map(jwk).collect::<Vec<_>>()}),
            ),
            Endpoint::Token => {
                let client = headers
                    .iter()
                    .find(|(n, _)| n == "authorization")
                    .and_then(|(_, v)| v.strip_prefix("Basic "))
                    .and_then(|b| STANDARD.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
                match client {
                    Some((id, secret)) if i.clients.get(&id) == Some(&secret) => {
                        let claims = access_claims(&issuer, &id, i.skew_s);
                        let token = sign(&i.keys[0], &claims);
                        (
                            200,
                            json!({"access_token": token, "token_type": "Bearer", "expires_in": 600}),
                        )
                    }
                    _ => (401, json!({"error": "invalid_client"})),
                }
            }
            Endpoint::Introspection => {
                let token = form_value(&body, "token").unwrap_or_default();
                match i.opaque.get(&token) {
                    Some(client) => {
                        let mut c = access_claims(&issuer, client, i.skew_s);
                        c["active"] = json!(true);
                        (200, c)
                    }
                    None => (200, json!({"active": false})),
                }
            }
        };
        (status, answer, fault)
    };
    let text = answer.to_string();
    match fault {
        None => respond(&mut stream, status, "application/json", text.as_bytes()),
        Some(Fault::Down) => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Some(Fault::Slow(d)) => {
            std::thread::sleep(d);
            respond(&mut stream, status, "application/json", text.as_bytes());
        }
        Some(Fault::Status(s)) => respond(
            &mut stream,
            s,
            "application/json",
            br#"{"error":"server_error","error_description":"injected"}"#,
        ),
        Some(Fault::Html) => respond(
            &mut stream,
            200,
            "text/html",
            b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>",
        ),
        Some(Fault::Truncated) => respond(
            &mut stream,
            200,
            "application/json",
            &text.as_bytes()[..text.len() / 2],
        ),
        Some(Fault::Oversize(n)) => {
            // The right document, padded with whitespace: valid JSON, only too big.
            let mut big = text.into_bytes();
            big.resize(n.max(big.len()), b' ');
            respond(&mut stream, 200, "application/json", &big)
        }
        Some(Fault::WrongTypes) => {
            let wrong = wrong_types(endpoint, &answer);
            respond(
                &mut stream,
                200,
                "application/json",
                wrong.to_string().as_bytes(),
            )
        }
        Some(Fault::ActiveString) => {
            let mut a = answer;
            if a["active"] == json!(true) {
                a["active"] = json!("true");
            }
            respond(
                &mut stream,
                200,
                "application/json",
                a.to_string().as_bytes(),
            )
        }
    }
}

/// The right answer with members of the wrong JSON types.
fn wrong_types(endpoint: Endpoint, answer: &Value) -> Value {
    let mut a = answer.as_object().cloned().unwrap_or_else(Map::new);
    match endpoint {
        Endpoint::Discovery => {
            a.insert("issuer".into(), json!(7));
            a.insert("jwks_uri".into(), json!(["/jwks"]));
        }
        Endpoint::Jwks => {
            a.insert("keys".into(), json!({"kty": "EC"}));
        }
        Endpoint::Token => {
            a.insert("access_token".into(), json!(7));
            a.insert("expires_in".into(), json!("600"));
        }
        Endpoint::Introspection => {
            // Active, but exp is a string: not a time the filter can trust.
            a.insert("exp".into(), json!("soon"));
        }
    }
    Value::Object(a)
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    loopback::respond(
        stream,
        status,
        "cache-control: no-store\r\n",
        content_type,
        body,
    );
}
