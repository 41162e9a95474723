// Test code only: the parent module declares this file behind #[cfg(test)].
//! Named test tokens and the keys that sign them. Claims of the standard token:
//! `{"iss": ISS, "aud": AUD, "exp": NOW+600, "iat": NOW-10, "nbf": NOW-10,
//!   "client_id": "client-1", "sub": "client-1", "scope": "orders:read orders:write"}`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

pub const ISS: &str = "https://idp.example.com";
pub const AUD: &str = "https://api.example.com";
/// The test clock, in seconds.
pub const NOW: u64 = 1_800_000_000;
/// The HS256 secret published as an `oct` key (kid `hs-1`), so that tests can sign any
/// header and payload bytes they like.
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

/// xorshift64*: deterministic, so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

impl rsa::rand_core::RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.next()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next() as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for Rng {}

pub struct Keys {
    pub rs: RS256KeyPair,
    pub es: ES256KeyPair,
    pub ed: Ed25519KeyPair,
    /// Another IdP's RSA key (a token signed with it claims kid `rs-1`).
    pub rs_other: RS256KeyPair,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rs: RS256KeyPair::generate(2048).unwrap().with_key_id("rs-1"),
        es: ES256KeyPair::generate().with_key_id("es-1"),
        ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
        rs_other: RS256KeyPair::generate(2048).unwrap().with_key_id("rs-1"),
    })
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn rsa_jwk(key: &RS256KeyPair, kid: &str, alg: Option<&str>) -> Value {
    let c = key.public_key().to_components();
    let mut jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)});
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

pub fn ec_jwk(key: &ES256KeyPair, kid: &str) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
           "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

/// The issuer's JWK set: rs-1 (RS256), es-1 (ES256), ed-1 (EdDSA), hs-1 (HS256 `oct`).
pub fn jwks_value() -> Value {
    let k = keys();
    json!({"keys": [
        rsa_jwk(&k.rs, "rs-1", Some("RS256")),
        ec_jwk(&k.es, "es-1"),
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(&k.ed.public_key().to_bytes())},
        {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64(HS_SECRET)},
    ]})
}

pub fn jwks() -> String {
    jwks_value().to_string()
}

/// The standard claims.
pub fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "exp": NOW + 600, "iat": NOW - 10, "nbf": NOW - 10,
           "client_id": "client-1", "sub": "client-1", "scope": "orders:read orders:write"})
}

/// The standard claims with `changes` applied (a `null` removes the claim).
pub fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    if let (Some(map), Value::Object(changes)) = (c.as_object_mut(), changes) {
        for (k, v) in changes {
            if v.is_null() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
    }
    c
}

fn as_claims(claims: &Value) -> JWTClaims<Map<String, Value>> {
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

/// GoodToken: RS256, kid rs-1, typ JWT.
pub fn rs_token(claims: &Value) -> String {
    keys().rs.sign(as_claims(claims)).unwrap()
}

/// RS256 with `typ: at+jwt` (RFC 9068), as real IdPs issue access tokens.
pub fn rs_at_jwt(claims: &Value) -> String {
    let options = HeaderOptions {
        signature_type: Some("at+jwt".into()),
        ..HeaderOptions::default()
    };
    keys()
        .rs
        .sign_with_options(as_claims(claims), &options)
        .unwrap()
}

pub fn es_token(claims: &Value) -> String {
    keys().es.sign(as_claims(claims)).unwrap()
}

pub fn ed_token(claims: &Value) -> String {
    keys().ed.sign(as_claims(claims)).unwrap()
}

/// RotatedToken: signed with another RSA key under kid `rs-2` (the IdP's next key), and the
/// key set that publishes it next to rs-1.
pub fn rotated_token(claims: &Value) -> String {
    keys()
        .rs_other
        .clone()
        .with_key_id("rs-2")
        .sign(as_claims(claims))
        .unwrap()
}

pub fn rotated_jwks() -> String {
    let k = keys();
    json!({"keys": [rsa_jwk(&k.rs_other, "rs-2", Some("RS256")), rsa_jwk(&k.rs, "rs-1", Some("RS256"))]}).to_string()
}

/// The IdP's next key published and used with no `kid` at all (some IdPs name none): a
/// token signed with it, and the key set that has only it.
pub fn rotated_token_without_kid(claims: &Value) -> String {
    let der = keys().rs_other.to_der().unwrap();
    RS256KeyPair::from_der(&der)
        .unwrap()
        .sign(as_claims(claims))
        .unwrap()
}

pub fn rotated_jwks_without_kid() -> String {
    let mut jwk = rsa_jwk(&keys().rs_other, "", Some("RS256"));
    if let Some(jwk) = jwk.as_object_mut() {
        jwk.remove("kid");
    }
    json!({"keys": [jwk]}).to_string()
}

/// UnknownKidToken: signed with the issuer's RSA key under a kid its set does not have.
pub fn unknown_kid_token(claims: &Value) -> String {
    keys()
        .rs
        .clone()
        .with_key_id("rs-9")
        .sign(as_claims(claims))
        .unwrap()
}

/// ForeignToken: signed by another IdP's key but naming kid rs-1.
pub fn foreign_token(claims: &Value) -> String {
    keys().rs_other.sign(as_claims(claims)).unwrap()
}

/// Any header and payload text, HS256-signed with [`HS_SECRET`].
pub fn hs_raw(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let tag = hmac_sha256::HMAC::mac(input.as_bytes(), HS_SECRET);
    format!("{input}.{}", b64(&tag))
}

/// Standard claims under any header, HS256-signed.
pub fn hs_with_header(header: &str) -> String {
    hs_raw(header, &claims().to_string())
}

/// Standard header `{"alg":"HS256","kid":"hs-1","typ":"JWT"}` over any payload text.
pub fn hs_with_payload(payload: &str) -> String {
    hs_raw(r#"{"alg":"HS256","kid":"hs-1","typ":"JWT"}"#, payload)
}
