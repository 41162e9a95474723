//! The adversarial battery (REFERENCE §8 and more), end to end through Envoy: every case
//! asserts its exact status and that nothing reached the upstream. The IdP here is a small
//! static server of this test's own, so that the test holds every private key and can sign
//! whatever an attacker might send.

mod support;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::fake_idp::as_claims;
use support::*;

const AUD: &str = "https://api.example.com";
const HS_SECRET: &[u8] = b"adversarial-battery-hs-secret-0123456789";
const LEEWAY: u64 = 5;
/// `limits.max_request_headers` here: under Envoy's own limit of 100, so the filter's applies.
const MAX_HEADERS: usize = 20;
/// Header fields the filter sees besides a case's own: the harness sends `host` (which Envoy
/// turns into `:authority`, a pseudo-header, not counted) and `connection` (removed by
/// Envoy); Envoy adds `x-forwarded-proto` and `x-request-id`.
const ADDED_HEADERS: usize = 2;

/// Request headers, raw.
type Headers = Vec<(&'static str, Vec<u8>)>;
/// (name, path, headers, expected status).
type Case = (String, String, Headers, u16);

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Keys {
    rs: RS256KeyPair,
    rs2: RS256KeyPair,
    es: ES256KeyPair,
    other_idp: RS256KeyPair,
    small_rsa_n: Vec<u8>,
}

fn rsa_jwk(k: &RS256KeyPair, kid: &str) -> Value {
    let c = k.public_key().to_components();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
}

/// A static IdP: discovery, JWKS and an introspection endpoint that answers by token.
struct StaticIdp {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl StaticIdp {
    fn start(keys: &Keys) -> StaticIdp {
        let point = keys.es.public_key().public_key().to_bytes_uncompressed();
        let jwks = json!({"keys": [
            rsa_jwk(&keys.rs, "rs-1"),
            rsa_jwk(&keys.rs2, "rs-2"),
            {"kty": "EC", "crv": "P-256", "kid": "es-1", "alg": "ES256", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64(HS_SECRET)},
            {"kty": "RSA", "kid": "rs-small", "n": b64(&keys.small_rsa_n), "e": "AQAB"},
        ]})
        .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let port = loopback::serve(Duration::from_secs(600), stop.clone(), move |mut stream| {
            let Some(request) = loopback::read_request(&mut stream) else {
                return;
            };
            let port = stream.local_addr().map_or(0, |a| a.port());
            let issuer = format!("http://127.0.0.1:{port}");
            let path = request.path.as_str();
            let body = if path.starts_with("/.well-known") {
                json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
                    "introspection_endpoint": format!("{issuer}/introspect")})
                .to_string()
            } else if path.starts_with("/jwks") {
                jwks.clone()
            } else if path.starts_with("/introspect-any") {
                // The access-tokens-only strategy's endpoint: an IdP that calls any token
                // it is shown active (as one may of an ID token it issued). Only the
                // filter's own rules stand between such a token and the upstream.
                json!({"active": true, "iss": issuer, "client_id": "client-2", "aud": AUD, "scope": "orders:read"})
                    .to_string()
            } else if path.starts_with("/introspect") {
                let token = request
                    .body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .unwrap_or("");
                match token {
                    "active-as-string" => json!({"active": "true", "client_id": "client-1", "aud": AUD, "scope": "orders:read"}),
                    "active-missing" => json!({"client_id": "client-1", "aud": AUD, "scope": "orders:read"}),
                    "active-one" => json!({"active": 1, "client_id": "client-1", "aud": AUD, "scope": "orders:read"}),
                    _ => json!({"active": false}),
                }
                .to_string()
            } else {
                "{}".to_owned()
            };
            loopback::respond(&mut stream, 200, "", "application/json", body.as_bytes());
        });
        StaticIdp { port, stop }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StaticIdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Signs `header` and `claims` text with the HS key (kid hs-1).
fn hs(header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let tag = hmac_sha256::HMAC::mac(input.as_bytes(), HS_SECRET);
    format!("{input}.{}", b64(&tag))
}

#[test]
fn no_adversarial_request_is_accepted() {
    let keys = Keys {
        rs: RS256KeyPair::generate(2048).unwrap().with_key_id("rs-1"),
        rs2: RS256KeyPair::generate(2048).unwrap().with_key_id("rs-2"),
        es: ES256KeyPair::generate().with_key_id("es-1"),
        other_idp: RS256KeyPair::generate(2048).unwrap().with_key_id("rs-1"),
        small_rsa_n: vec![0xc5; 128],
    };
    let idp = StaticIdp::start(&keys);
    let dir = scratch();
    let upstream = Upstream::start(&dir);
    let iss = idp.issuer();
    // Route "orders" (/orders...): the main strategy. Route "unguarded" (every other path):
    // a strategy of the same issuer that requires RFC 9068 access tokens (require_at_jwt),
    // for application client-2; it also introspects, at an endpoint that answers active for
    // any token, so a JWT it must refuse that is sent there instead would get through.
    let config = json!({
        "policies": {
            "main": {"scope": "orders-v1", "strategies": [{"id": "s-oidc", "strategy_type": "openid_connect",
                "configs": {"openid-connect": {"issuer": iss, "credential_claim": ["client_id"], "scopes": ["orders:read"],
                    "auth_methods": ["bearer", "client_credentials", "introspection"], "client_id": "rs", "client_secret": "rs-secret",
                    "scopes_required": ["orders:read"], "audience_required": [AUD], "leeway": LEEWAY,
                    "enable_hs_signatures": true, "timeout": 2000, "rediscovery_lifetime": 3600}}}]},
            "access-tokens-only": {"scope": "orders-v1", "strategies": [{"id": "s-at", "strategy_type": "openid_connect",
                "configs": {"openid-connect": {"issuer": iss, "credential_claim": ["client_id"], "scopes": ["orders:read"],
                    "auth_methods": ["bearer", "introspection"], "scopes_required": ["orders:read"], "audience_required": [AUD],
                    "introspection_endpoint": format!("{iss}/introspect-any"), "client_id": "rs", "client_secret": "rs-secret",
                    "leeway": LEEWAY, "enable_hs_signatures": true, "require_at_jwt": true,
                    "timeout": 2000, "rediscovery_lifetime": 3600}}}]}
        },
        "routes": {"orders": "main", "unguarded": "access-tokens-only"},
        "applications": [
            {"id": "app-1", "client_id": "client-1", "auth_strategy_id": "s-oidc", "scopes": ["orders-v1"]},
            {"id": "app-2", "client_id": "client-2", "auth_strategy_id": "s-at", "scopes": ["orders-v1"]}
        ],
        "limits": {"max_token_bytes": 4096, "max_request_headers": MAX_HEADERS},
        "upstreams": {format!("127.0.0.1:{}", idp.port): "idp"}
    });
    let envoy = Envoy::start(&dir, &config, upstream.port, idp.port, 2);

    let t = now();
    let good = json!({"iss": iss, "aud": AUD, "exp": t + 600, "iat": t - 10, "client_id": "client-1", "scope": "orders:read", "sub": "client-1"});
    let with = |changes: Value| -> Value {
        let mut c = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs_header = r#"{"alg":"HS256","kid":"hs-1","typ":"JWT"}"#;
    let hs_claims = |c: &Value| hs(hs_header, &c.to_string());
    let rs = |c: &Value| keys.rs.sign(as_claims(c)).unwrap();
    // The access-tokens-only route, and tokens for its application with a chosen typ.
    let at_path = "/at/1";
    let at_claims = with(json!({"client_id": "client-2"}));
    let rs_typ = |typ: Option<&str>, c: &Value| {
        let options = HeaderOptions {
            signature_type: typ.map(str::to_owned),
            ..HeaderOptions::default()
        };
        keys.rs.sign_with_options(as_claims(c), &options).unwrap()
    };
    let hs_typ = |typ: &str, c: &Value| {
        hs(
            &format!(r#"{{"alg":"HS256","kid":"hs-1","typ":"{typ}"}}"#),
            &c.to_string(),
        )
    };
    let es = |c: &Value| keys.es.sign(as_claims(c)).unwrap();

    // Controls: these must pass, or the battery proves nothing.
    let controls: Vec<(&str, Headers)> = vec![
        (
            "RS256",
            vec![(
                "authorization",
                format!("Bearer {}", rs(&good)).into_bytes(),
            )],
        ),
        (
            "ES256",
            vec![(
                "authorization",
                format!("Bearer {}", es(&good)).into_bytes(),
            )],
        ),
        (
            "HS256 (enabled)",
            vec![(
                "authorization",
                format!("Bearer {}", hs_claims(&good)).into_bytes(),
            )],
        ),
        (
            "expired, within leeway",
            vec![(
                "authorization",
                format!("Bearer {}", rs(&with(json!({"exp": t - LEEWAY + 2})))).into_bytes(),
            )],
        ),
        (
            "not yet valid, within leeway",
            vec![(
                "authorization",
                format!("Bearer {}", rs(&with(json!({"nbf": t + LEEWAY - 2})))).into_bytes(),
            )],
        ),
    ];
    // Filler headers up to (and, in the cases below, one beyond) the header-count limit.
    let fill = |headers: Headers, total: usize| -> Headers {
        let mut h = headers;
        let names: Vec<&'static str> = (0..MAX_HEADERS)
            .map(|i| &*Box::leak(format!("x-fill-{i}").into_boxed_str()))
            .collect();
        let mut i = 0;
        while h.len() + ADDED_HEADERS < total {
            h.push((names[i], b"1".to_vec()));
            i += 1;
        }
        h
    };
    let controls: Vec<(&str, Headers)> = controls
        .into_iter()
        .chain([(
            "header count at the limit",
            fill(
                vec![(
                    "authorization",
                    format!("Bearer {}", rs(&good)).into_bytes(),
                )],
                MAX_HEADERS,
            ),
        )])
        .collect();
    for (name, headers) in &controls {
        let h: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let r = envoy.get("/orders/1", &h);
        assert_eq!(r.status, 200, "control {name}: {}", r.text());
    }
    // RFC 9068 §2.1/§4: "at+jwt", or the full media type "application/at+jwt", any case.
    let at_controls = [
        ("typ at+jwt", rs_typ(Some("at+jwt"), &at_claims)),
        (
            "typ application/at+jwt",
            rs_typ(Some("application/at+jwt"), &at_claims),
        ),
        ("typ AT+JWT", hs_typ("AT+JWT", &at_claims)),
    ];
    for (name, token) in &at_controls {
        let r = envoy.bearer(at_path, token);
        assert_eq!(r.status, 200, "control {name}: {}", r.text());
    }

    let good_rs = rs(&good);
    let (rs_input, rs_sig) = good_rs.rsplit_once('.').unwrap();
    let rs_sig = URL_SAFE_NO_PAD.decode(rs_sig).unwrap();
    let good_es = es(&good);
    let (es_input, es_sig) = good_es.rsplit_once('.').unwrap();
    let es_sig = URL_SAFE_NO_PAD.decode(es_sig).unwrap();
    let payload = b64(good.to_string().as_bytes());
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}").into_bytes())];
    let mut flipped = rs_sig.clone();
    flipped[10] ^= 0x01;
    let der_sig = {
        let int = |x: &[u8]| {
            let mut v = x.to_vec();
            while v.len() > 1 && v[0] == 0 {
                v.remove(0);
            }
            if v[0] & 0x80 != 0 {
                v.insert(0, 0);
            }
            [vec![0x02, v.len() as u8], v].concat()
        };
        let body = [int(&es_sig[..32]), int(&es_sig[32..])].concat();
        [vec![0x30, body.len() as u8], body].concat()
    };
    let hs_rsa_confusion = {
        let c = keys.rs.public_key().to_components();
        let input = format!(
            "{}.{payload}",
            b64(br#"{"alg":"HS256","kid":"rs-1","typ":"JWT"}"#)
        );
        let tag = hmac_sha256::HMAC::mac(input.as_bytes(), &c.n);
        format!("{input}.{}", b64(&tag))
    };
    let attacker = RS256KeyPair::generate(2048).unwrap();
    let attacker_jwk = rsa_jwk(&attacker, "evil");
    let embedded = |extra: &str| {
        let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"evil",{extra}}}"#);
        let input = format!("{}.{payload}", b64(header.as_bytes()));
        // The attacker signs with their own key; the token names it in the header.
        let signed = attacker.sign(as_claims(&good)).unwrap();
        format!("{input}.{}", signed.rsplit('.').next().unwrap())
    };
    let rs_no_kid = RS256KeyPair::from_pem(&keys.rs.to_pem().unwrap())
        .unwrap()
        .sign(as_claims(&good))
        .unwrap();
    let huge_nest = format!(
        r#"{{"iss":"{iss}","aud":"{AUD}","exp":{},"client_id":"client-1","scope":"orders:read","x":{}1{}}}"#,
        t + 600,
        "[".repeat(60),
        "]".repeat(60)
    );
    let dup = format!(
        r#"{{"iss":"{iss}","aud":"{AUD}","exp":{},"client_id":"client-1","scope":"orders:read","client_id":"admin"}}"#,
        t + 600
    );
    let sig_of = |s: &[u8]| b64(s);

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: &str, path: &str, headers: Vec<(&'static str, Vec<u8>)>, status: u16| {
        cases.push((name.to_owned(), path.to_owned(), headers, status));
    };
    let p = "/orders/1";
    // alg none, any case, with or without a signature segment.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        add(
            &format!("alg {alg}, empty signature"),
            p,
            bearer(&format!("{h}.{payload}.")),
            401,
        );
        add(
            &format!("alg {alg}, junk signature"),
            p,
            bearer(&format!("{h}.{payload}.AAAA")),
            401,
        );
    }
    add(
        "HS256 keyed with the RSA public key (HS/RS confusion)",
        p,
        bearer(&hs_rsa_confusion),
        401,
    );
    add(
        "embedded jwk of the attacker's key",
        p,
        bearer(&embedded(&format!(r#""jwk":{attacker_jwk}"#))),
        401,
    );
    add(
        "jku to the attacker's keys",
        p,
        bearer(&embedded(r#""jku":"http://127.0.0.1:1/jwks""#)),
        401,
    );
    add(
        "x5u to the attacker",
        p,
        bearer(&embedded(r#""x5u":"http://127.0.0.1:1/cert""#)),
        401,
    );
    add(
        "x5c with the attacker's certificate",
        p,
        bearer(&embedded(r#""x5c":["MIIB"]"#)),
        401,
    );
    add(
        "kid as a path",
        p,
        bearer(&hs(
            r#"{"alg":"HS256","kid":"../../../../dev/null"}"#,
            &good.to_string(),
        )),
        401,
    );
    add(
        "kid as SQL",
        p,
        bearer(&hs(
            r#"{"alg":"HS256","kid":"' OR 1=1 --"}"#,
            &good.to_string(),
        )),
        401,
    );
    add("no kid, several RSA keys", p, bearer(&rs_no_kid), 401);
    add(
        "kid of a key under 2048 bits",
        p,
        bearer(&hs(
            r#"{"alg":"RS256","kid":"rs-small"}"#,
            &good.to_string(),
        )),
        401,
    );
    add(
        "ECDSA r = 0",
        p,
        bearer(&format!(
            "{es_input}.{}",
            sig_of(&[&[0u8; 32][..], &es_sig[32..]].concat())
        )),
        401,
    );
    add(
        "ECDSA s = 0",
        p,
        bearer(&format!(
            "{es_input}.{}",
            sig_of(&[&es_sig[..32], &[0u8; 32][..]].concat())
        )),
        401,
    );
    add(
        "ECDSA r beyond the order",
        p,
        bearer(&format!(
            "{es_input}.{}",
            sig_of(&[&[0xffu8; 32][..], &es_sig[32..]].concat())
        )),
        401,
    );
    add(
        "ECDSA DER instead of r||s",
        p,
        bearer(&format!("{es_input}.{}", sig_of(&der_sig))),
        401,
    );
    add(
        "ECDSA 63-byte signature",
        p,
        bearer(&format!("{es_input}.{}", sig_of(&es_sig[..63]))),
        401,
    );
    add(
        "ECDSA 65-byte signature",
        p,
        bearer(&format!(
            "{es_input}.{}",
            sig_of(&[&es_sig[..], &[0u8]].concat())
        )),
        401,
    );
    add(
        "unknown crit",
        p,
        bearer(&hs(
            r#"{"alg":"HS256","kid":"hs-1","crit":["exp"],"exp":1}"#,
            &good.to_string(),
        )),
        401,
    );
    add(
        "duplicate member names",
        p,
        bearer(&hs(hs_header, &dup)),
        401,
    );
    for (claim, bad) in [
        ("exp", json!("9999999999")),
        ("exp", json!(true)),
        ("exp", json!(null)),
        ("exp", json!(1e30)),
        ("exp", json!(-1)),
        ("nbf", json!("0")),
        ("iat", json!(false)),
        ("nbf", json!(-5)),
        ("iat", json!(1e300)),
        ("nbf", json!(null)),
        ("iat", json!(null)),
        ("nbf", json!(true)),
        ("iat", json!("0")),
        ("iat", json!(-1)),
        ("nbf", json!(1e30)),
    ] {
        let mut c = good.clone();
        c[claim] = bad.clone();
        add(&format!("{claim} = {bad}"), p, bearer(&hs_claims(&c)), 401);
    }
    add(
        "missing exp",
        p,
        bearer(&hs_claims(&with(json!({"exp": null})))),
        401,
    );
    for aud in [
        json!([]),
        json!(""),
        json!(["https://api.example.co"]),
        json!("https://api.example.com/"),
        json!("HTTPS://API.EXAMPLE.COM"),
        json!(7),
    ] {
        add(
            &format!("aud {aud}"),
            p,
            bearer(&rs(&with(json!({ "aud": aud })))),
            401,
        );
    }
    for bad_iss in [
        format!("{iss}/"),
        format!("{iss}x"),
        iss[..iss.len() - 1].to_owned(),
        iss.to_uppercase(),
        format!("{iss}/evil"),
    ] {
        add(
            &format!("iss {bad_iss}"),
            p,
            bearer(&rs(&with(json!({ "iss": bad_iss })))),
            401,
        );
    }
    add(
        "key of another issuer under our kid",
        p,
        bearer(&keys.other_idp.sign(as_claims(&good)).unwrap()),
        401,
    );
    add(
        "forged signature (one bit)",
        p,
        bearer(&format!("{rs_input}.{}", sig_of(&flipped))),
        401,
    );
    add(
        "tampered payload",
        p,
        bearer(&format!(
            "{}.{}.{}",
            rs_input.split('.').next().unwrap(),
            b64(with(json!({"client_id": "admin"})).to_string().as_bytes()),
            sig_of(&rs_sig)
        )),
        401,
    );
    add("padding", p, bearer(&format!("{good_rs}=")), 401);
    add(
        "standard base64 alphabet",
        p,
        bearer(&good_rs.replace('-', "+").replace('_', "/")),
        if good_rs.contains(['-', '_']) {
            401
        } else {
            200
        },
    );
    add(
        "whitespace inside the token",
        p,
        vec![(
            "authorization",
            format!("Bearer {} {}", &good_rs[..20], &good_rs[20..]).into_bytes(),
        )],
        400,
    );
    let (h0, rest) = good_rs.split_once('.').unwrap();
    let mut bent = h0.to_owned();
    let last = bent.pop().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bent.push(alphabet.as_bytes()[(alphabet.find(last).unwrap() + 1) % 64] as char);
    add(
        "non-canonical trailing bits",
        p,
        bearer(&format!("{bent}.{rest}")),
        if h0.len() % 4 == 0 { 200 } else { 401 },
    );
    add("two segments", p, bearer(rs_input), 401);
    add("four segments", p, bearer(&format!("{good_rs}.x")), 401);
    add(
        "five segments (JWE)",
        p,
        bearer(&format!("{good_rs}.x.y")),
        401,
    );
    add(
        "oversize token",
        p,
        bearer(&format!("{good_rs}{}", "A".repeat(5000))),
        401,
    );
    add(
        "deeply nested JSON",
        p,
        bearer(&hs(hs_header, &huge_nest)),
        401,
    );
    add(
        "invalid UTF-8 in Authorization",
        p,
        vec![("authorization", b"Bearer \xff\xfe".to_vec())],
        400,
    );
    add(
        "non-ASCII in Authorization",
        p,
        vec![("authorization", "Bearer caf\u{e9}".as_bytes().to_vec())],
        400,
    );
    add(
        "two Authorization headers",
        p,
        vec![
            ("authorization", format!("Bearer {good_rs}").into_bytes()),
            ("authorization", format!("Bearer {good_rs}").into_bytes()),
        ],
        400,
    );
    add(
        "two credentials in one header",
        p,
        vec![(
            "authorization",
            format!("Bearer {good_rs}, Bearer {good_rs}").into_bytes(),
        )],
        400,
    );
    add(
        "token in header and query",
        &format!("{p}?access_token={good_rs}"),
        bearer(&good_rs),
        400,
    );
    add(
        "token twice in the query",
        &format!("{p}?access_token={good_rs}&access_token={good_rs}"),
        vec![],
        400,
    );
    add(
        "introspection active as a string",
        p,
        bearer("active-as-string"),
        401,
    );
    add(
        "introspection active missing",
        p,
        bearer("active-missing"),
        401,
    );
    add("introspection active as 1", p, bearer("active-one"), 401);
    add(
        "issued in the future beyond leeway",
        p,
        bearer(&rs(&with(json!({"iat": t + LEEWAY + 60})))),
        401,
    );
    for scope in [
        "orders:rea",
        "orders:readx",
        "Orders:read",
        "orders:read,",
        "xorders:read",
        "orders: read",
    ] {
        add(
            &format!("scope near-miss {scope:?}"),
            p,
            bearer(&rs(&with(json!({ "scope": scope })))),
            403,
        );
    }
    add(
        "scope claim as a number",
        p,
        bearer(&rs(&with(json!({"scope": 1})))),
        403,
    );
    add(
        "credential claim missing",
        p,
        bearer(&rs(&with(json!({"client_id": null})))),
        401,
    );
    add(
        "credential claim a number",
        p,
        bearer(&rs(&with(json!({"client_id": 7})))),
        401,
    );
    add(
        "credential claim an object",
        p,
        bearer(&rs(&with(json!({"client_id": {"id": "client-1"}})))),
        401,
    );
    add(
        "credential claim with a newline",
        p,
        bearer(&rs(&with(
            json!({"client_id": "client-1\nx-application-id: app-1"}),
        ))),
        401,
    );
    add(
        "credential claim with a NUL",
        p,
        bearer(&rs(&with(json!({"client_id": "client-1\u{0}"})))),
        401,
    );
    add(
        "NUL in the Authorization header",
        p,
        vec![("authorization", format!("Bearer {good_rs}\0").into_bytes())],
        400,
    );
    add(
        "percent-encoded NUL in the query token",
        &format!("{p}?access_token={good_rs}%00"),
        vec![],
        400,
    );
    add(
        "credential claim of another case",
        p,
        bearer(&rs(&with(json!({"client_id": "CLIENT-1"})))),
        401,
    );
    add(
        "spoofed X-Application-ID without a credential",
        p,
        vec![
            ("x-application-id", b"app-1".to_vec()),
            ("x-credential-identifier", b"client-1".to_vec()),
        ],
        401,
    );
    add(
        "spoofed X-Application-ID with a forged token",
        p,
        vec![
            ("x-application-id", b"app-1".to_vec()),
            (
                "authorization",
                format!("Bearer {rs_input}.{}", sig_of(&flipped)).into_bytes(),
            ),
        ],
        401,
    );
    add(
        "Basic with no colon",
        p,
        vec![(
            "authorization",
            format!("Basic {}", STANDARD.encode("client-1")).into_bytes(),
        )],
        400,
    );
    add(
        "Basic raw with two colons",
        p,
        vec![("authorization", b"Basic client-1:a:b".to_vec())],
        400,
    );
    add(
        "Basic with an empty secret",
        p,
        vec![(
            "authorization",
            format!("Basic {}", STANDARD.encode("client-1:")).into_bytes(),
        )],
        400,
    );
    add(
        "Basic of an unknown client",
        p,
        vec![(
            "authorization",
            format!("Basic {}", STANDARD.encode("nobody:secret")).into_bytes(),
        )],
        401,
    );
    add(
        "empty Authorization",
        p,
        vec![("authorization", b"".to_vec())],
        401,
    );
    add(
        "whitespace Authorization",
        p,
        vec![("authorization", b"   ".to_vec())],
        401,
    );
    add(
        "Bearer without a token",
        p,
        vec![("authorization", b"Bearer".to_vec())],
        400,
    );
    add(
        "Bearer and spaces",
        p,
        vec![("authorization", b"Bearer    ".to_vec())],
        400,
    );
    add(
        "Bearer with a quote",
        p,
        vec![("authorization", b"Bearer \"abc\"".to_vec())],
        400,
    );
    add(
        "unknown scheme",
        p,
        vec![("authorization", b"Digest username=x".to_vec())],
        401,
    );
    add("no credential at all", p, vec![], 401);
    // Where at+jwt is required: an ID token, or any other typ, is no access token.
    add(
        "at+jwt required: ID token (typ JWT, the claims of an accepted access token)",
        at_path,
        bearer(&rs_typ(Some("JWT"), &at_claims)),
        401,
    );
    let t_id = now();
    let id_token = json!({"iss": iss, "sub": "user-1", "aud": "client-2", "azp": "client-2",
        "client_id": "client-2", "exp": t_id + 600, "iat": t_id, "auth_time": t_id, "nonce": "n-0S6_WzA2Mj"});
    add(
        "at+jwt required: ID token with ID-token claims",
        at_path,
        bearer(&rs_typ(Some("JWT"), &id_token)),
        401,
    );
    add(
        "at+jwt required: no typ",
        at_path,
        bearer(&rs_typ(None, &at_claims)),
        401,
    );
    for typ in [
        "jwt",
        "dpop+jwt",
        "logout+jwt",
        "application/jwt",
        "at+jwt; charset=utf-8",
        "at+jws",
    ] {
        add(
            &format!("at+jwt required: typ {typ:?}"),
            at_path,
            bearer(&hs_typ(typ, &at_claims)),
            401,
        );
    }
    add(
        "header count one beyond the limit, valid token",
        p,
        fill(bearer(&good_rs), MAX_HEADERS + 1),
        431,
    );
    add(
        "header count far beyond the limit, no credential",
        p,
        fill(vec![], MAX_HEADERS + 1)
            .into_iter()
            .chain((0..40).map(|_| ("x-more", b"1".to_vec())))
            .collect(),
        431,
    );

    let mut accepted = Vec::new();
    let mut wrong = Vec::new();
    let started = std::time::Instant::now();
    // Time boundaries are minted right before they are sent (the run takes a while).
    let boundary = |name: &str| -> Case {
        let t = now();
        let c = match name {
            "expired beyond leeway by 1 s" => with(json!({"exp": t - LEEWAY - 1, "iat": t - 600})),
            _ => with(json!({"nbf": t + LEEWAY + 3})),
        };
        (name.to_owned(), p.to_owned(), bearer(&rs(&c)), 401)
    };
    let late: Vec<_> = [
        "expired beyond leeway by 1 s",
        "not yet valid beyond leeway by 1 s",
    ]
    .iter()
    .map(|n| boundary(n))
    .collect();
    for (name, path, headers, want) in late.iter().chain(cases.iter()) {
        let before = upstream.count();
        let h: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let sent = std::time::Instant::now();
        let r = envoy.get(path, &h);
        if sent.elapsed() > Duration::from_millis(300) {
            eprintln!("slow case {name}: {:?}", sent.elapsed());
        }
        let reached = upstream.count() - before;
        if *want != 200 && (r.status == 200 || reached > 0) {
            accepted.push(format!("{name}: {} (upstream saw {reached})", r.status));
        }
        if r.status != *want {
            wrong.push(format!(
                "{name}: got {}, want {want}: {}",
                r.status,
                r.text()
            ));
        }
    }
    let cases_len = cases.len() + late.len();
    let denied_cases = cases
        .iter()
        .chain(late.iter())
        .filter(|c| c.3 != 200)
        .count();
    eprintln!("adversarial battery: {cases_len} cases ({denied_cases} must be refused), {} accepted, {} with another status; {} controls passed; {:?}",
        accepted.len(), wrong.len(), controls.len() + at_controls.len(), started.elapsed());
    assert!(accepted.is_empty(), "ACCEPTED:\n{}", accepted.join("\n"));
    assert!(
        wrong.is_empty(),
        "unexpected statuses:\n{}",
        wrong.join("\n")
    );
    let failures = envoy.vm_failures();
    assert!(failures.is_empty(), "VM failures:\n{}", failures.join("\n"));
}
