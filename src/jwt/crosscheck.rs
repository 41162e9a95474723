// Test code only: the parent module declares this file behind #[cfg(test)].
//! The pure-Rust path against the one it replaced: jwt-simple's `verify_token`, with the
//! options the filter gave it, after the filter's own parsing and claim checks. Thousands of
//! random tokens of every algorithm, with odd headers and payloads, clock and leeway edges
//! and damaged signatures, must get the same verdict (and the same error) from both.

use super::fixtures::*;
use super::*;
use jwt_simple::prelude::*;
use p256::elliptic_curve::PrimeField as _;
use serde_json::{json, Value};

/// The verifying keys of the old path (jwt-simple's types, built as the filter built them).
struct Old {
    rs256: RS256PublicKey,
    rs384: RS384PublicKey,
    rs512: RS512PublicKey,
    ps256: PS256PublicKey,
    ps384: PS384PublicKey,
    ps512: PS512PublicKey,
    es256: ES256PublicKey,
    es384: ES384PublicKey,
    ed: Ed25519PublicKey,
    hs256: HS256Key,
    hs384: HS384Key,
    hs512: HS512Key,
}

impl Old {
    /// The filter's `Verifier::verify` as it was.
    fn verify(&self, alg: Alg, token: &str, now_s: u64, leeway: u64) -> Result<(), TokenError> {
        let options = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
            time_tolerance: Some(Duration::from_secs(leeway)),
            accept_future: true,
            max_token_length: None,
            ..VerificationOptions::default()
        };
        let o = Some(options);
        let result = match alg {
            Alg::RS256 => self
                .rs256
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::RS384 => self
                .rs384
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::RS512 => self
                .rs512
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::PS256 => self
                .ps256
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::PS384 => self
                .ps384
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::PS512 => self
                .ps512
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::ES256 => self
                .es256
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::ES384 => self
                .es384
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::EdDSA => self.ed.verify_token::<NoCustomClaims>(token, o).map(drop),
            Alg::HS256 => self
                .hs256
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::HS384 => self
                .hs384
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
            Alg::HS512 => self
                .hs512
                .verify_token::<NoCustomClaims>(token, o)
                .map(drop),
        };
        result.map_err(|_| TokenError::BadSignature)
    }
}

/// Signs any bytes with every algorithm.
struct Signers {
    rsa: rsa::RsaPrivateKey,
    es256: p256::ecdsa::SigningKey,
    es384: p384::ecdsa::SigningKey,
    ed: ed25519_compact::KeyPair,
}

impl Signers {
    fn sign(&self, alg: Alg, msg: &[u8], rng: &mut Rng) -> Vec<u8> {
        use hmac_sha256::Hash as Sha256;
        use hmac_sha512::sha384::Hash as Sha384;
        use hmac_sha512::Hash as Sha512;
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
        use rsa::{pkcs1v15, pss};
        let k = || self.rsa.clone();
        match alg {
            Alg::RS256 => pkcs1v15::SigningKey::<Sha256>::new(k()).sign(msg).to_vec(),
            Alg::RS384 => pkcs1v15::SigningKey::<Sha384>::new(k()).sign(msg).to_vec(),
            Alg::RS512 => pkcs1v15::SigningKey::<Sha512>::new(k()).sign(msg).to_vec(),
            Alg::PS256 => pss::SigningKey::<Sha256>::new(k())
                .sign_with_rng(rng, msg)
                .to_vec(),
            Alg::PS384 => pss::SigningKey::<Sha384>::new(k())
                .sign_with_rng(rng, msg)
                .to_vec(),
            Alg::PS512 => pss::SigningKey::<Sha512>::new(k())
                .sign_with_rng(rng, msg)
                .to_vec(),
            Alg::ES256 => {
                let s: p256::ecdsa::Signature =
                    self.es256.sign_prehash(&Sha256::hash(msg)).unwrap();
                s.to_bytes().to_vec()
            }
            Alg::ES384 => {
                let s: p384::ecdsa::Signature =
                    self.es384.sign_prehash(&Sha384::hash(msg)).unwrap();
                s.to_bytes().to_vec()
            }
            Alg::EdDSA => self.ed.sk.sign(msg, None).to_vec(),
            Alg::HS256 => hmac_sha256::HMAC::mac(msg, HS_SECRET).to_vec(),
            Alg::HS384 => hmac_sha512::sha384::HMAC::mac(msg, HS_SECRET).to_vec(),
            Alg::HS512 => hmac_sha512::HMAC::mac(msg, HS_SECRET).to_vec(),
        }
    }
}

const ALGS: [(Alg, &str); 12] = [
    (Alg::RS256, "rs"),
    (Alg::RS384, "rs"),
    (Alg::RS512, "rs"),
    (Alg::PS256, "rs"),
    (Alg::PS384, "rs"),
    (Alg::PS512, "rs"),
    (Alg::ES256, "es"),
    (Alg::ES384, "es384"),
    (Alg::EdDSA, "ed"),
    (Alg::HS256, "hs"),
    (Alg::HS384, "hs"),
    (Alg::HS512, "hs"),
];

fn setup() -> (KeySet, Old, Signers) {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    let k = keys();
    let es384 = ES384KeyPair::generate();
    let rsa_c = k.rs.public_key().to_components();
    let p256 = k.es.public_key().public_key().to_bytes_uncompressed();
    let p384 = es384.public_key().public_key().to_bytes_uncompressed();
    let ed_x = k.ed.public_key().to_bytes();
    let set = json!({"keys": [
        {"kty": "RSA", "kid": "rs", "n": b64(&rsa_c.n), "e": b64(&rsa_c.e)},
        {"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(&p256[1..33]), "y": b64(&p256[33..])},
        {"kty": "EC", "crv": "P-384", "kid": "es384", "x": b64(&p384[1..49]), "y": b64(&p384[49..])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&ed_x)},
        {"kty": "oct", "kid": "hs", "k": b64(HS_SECRET)},
    ]});
    let (set, parsed) = KeySet::parse(set.to_string().as_bytes(), 16, 16).unwrap();
    assert_eq!(parsed.usable, 5);
    let (n, e) = (&rsa_c.n, &rsa_c.e);
    let old = Old {
        rs256: RS256PublicKey::from_components(n, e).unwrap(),
        rs384: RS384PublicKey::from_components(n, e).unwrap(),
        rs512: RS512PublicKey::from_components(n, e).unwrap(),
        ps256: PS256PublicKey::from_components(n, e).unwrap(),
        ps384: PS384PublicKey::from_components(n, e).unwrap(),
        ps512: PS512PublicKey::from_components(n, e).unwrap(),
        es256: ES256PublicKey::from_bytes(&p256).unwrap(),
        es384: ES384PublicKey::from_bytes(&p384).unwrap(),
        ed: Ed25519PublicKey::from_bytes(&ed_x).unwrap(),
        hs256: HS256Key::from_bytes(HS_SECRET),
        hs384: HS384Key::from_bytes(HS_SECRET),
        hs512: HS512Key::from_bytes(HS_SECRET),
    };
    let der = k.rs.to_der().unwrap();
    let rsa = rsa::RsaPrivateKey::from_pkcs1_der(&der)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_der(&der))
        .unwrap();
    let signers = Signers {
        rsa,
        es256: p256::ecdsa::SigningKey::from_slice(&k.es.to_bytes()).unwrap(),
        es384: p384::ecdsa::SigningKey::from_slice(&es384.to_bytes()).unwrap(),
        ed: ed25519_compact::KeyPair::from_slice(&k.ed.to_bytes()).unwrap(),
    };
    (set, old, signers)
}

/// `depth` levels of arrays around a number.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

fn header(rng: &mut Rng, alg: Alg, kid: &str) -> Value {
    let mut h = json!({"alg": alg.name(), "kid": kid});
    let extras: &[(&str, Value)] = &[
        ("typ", json!("JWT")),
        ("typ", json!("at+jwt")),
        ("typ", json!("application/jwt")),
        ("cty", json!("JWT")),
        ("cty", json!(5)),
        ("cty", Value::Null),
        ("x5c", json!(["MIIB"])),
        ("x5c", json!([1])),
        ("x5c", json!("MIIB")),
        ("x5c", Value::Null),
        ("salt", json!("c2FsdA")),
        ("salt", json!("c2FsdB")),
        ("salt", json!("c2FsdA==")),
        ("salt", json!("!")),
        ("salt", json!(7)),
        ("salt", Value::Null),
        ("jku", json!("https://evil/jwks")),
        ("jku", json!(["https://evil/jwks"])),
        ("jwk", json!({"kty": "oct"})),
        ("x5u", json!(true)),
        ("x5t", json!("abc")),
        ("x5t#S256", json!(1.5)),
        ("crit", json!([])),
        ("zzz", json!({"a": [1, 2]})),
        ("kid", Value::Null),
    ];
    for _ in 0..rng.below(3) {
        let (name, value) = rng.pick(extras);
        h[*name] = value.clone();
    }
    h
}

fn payload(rng: &mut Rng, now: u64) -> Value {
    let exp = *rng.pick(&[
        now + 600,
        now + 1,
        now,
        now.saturating_sub(1),
        now.saturating_sub(61),
    ]);
    let mut c = json!({"iss": ISS, "aud": AUD, "exp": exp, "iat": now.saturating_sub(10),
                       "client_id": "client-1", "sub": "client-1"});
    let extras: &[(&str, Value)] = &[
        ("sub", json!(5)),
        ("sub", Value::Null),
        ("sub", json!(["a"])),
        ("jti", json!("j-1")),
        ("jti", json!(1)),
        ("nonce", json!({})),
        ("nonce", json!("n")),
        ("aud", Value::Null),
        ("aud", json!([1])),
        ("aud", json!([AUD, "other"])),
        ("aud", json!(5)),
        ("aud", json!([])),
        ("nbf", json!(now + 30)),
        ("iat", json!(now + 30)),
        ("exp", json!(now as f64 + 600.5)),
        ("exp", json!(-1)),
        ("deep", nested(125)),
        ("deep", nested(126)),
        ("deep", nested(127)),
        ("x", json!({"y": [{"z": null}]})),
    ];
    for _ in 0..rng.below(3) {
        let (name, value) = rng.pick(extras);
        c[*name] = value.clone();
    }
    c
}

fn damage(rng: &mut Rng, alg: Alg, sig: Vec<u8>) -> Vec<u8> {
    let mut sig = sig;
    match rng.below(12) {
        0 => {
            let bit = rng.below(sig.len() * 8);
            sig[bit / 8] ^= 1 << (bit % 8);
        }
        1 => sig.truncate(sig.len() - 1),
        2 => sig.push(0),
        3 => sig = vec![0; sig.len()],
        4 => sig.insert(0, 0),
        // The other S of the same ECDSA signature (n - s).
        5 if alg == Alg::ES256 => {
            let s = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            let (r, s) = s.split_scalars();
            sig = p256::ecdsa::Signature::from_scalars(r.to_repr(), (-s).to_repr())
                .unwrap()
                .to_bytes()
                .to_vec();
        }
        6 if alg == Alg::ES384 => {
            let s = p384::ecdsa::Signature::from_slice(&sig).unwrap();
            let (r, s) = s.split_scalars();
            sig = p384::ecdsa::Signature::from_scalars(r.to_repr(), (-s).to_repr())
                .unwrap()
                .to_bytes()
                .to_vec();
        }
        _ => {}
    }
    sig
}

#[test]
fn new_and_old_pure_rust_paths_agree() {
    let (set, old, signers) = setup();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let issuers = vec![ISS.to_owned()];
    let audience = vec![vec![AUD.to_owned()]];
    let aud_claim = vec!["aud".to_owned()];
    let mut accepted = 0;
    let mut refused_by_signature = 0;
    let mut refused_by_old_rules = 0;
    // One memo of headers for the whole run, as the engine keeps it: a header read before
    // (or a header met again, below) must give the verdict a fresh parse gives.
    let memo = token::HeaderMemo::default();
    let mut seen_header_again = 0;
    for i in 0..3000 {
        let (alg, kid) = *rng.pick(&ALGS);
        let now = *rng.pick(&[NOW, NOW, NOW, 30, 60]);
        let leeway = *rng.pick(&[0, 0, 60]);
        let audience_required: &[Vec<String>] = if rng.below(2) == 0 { &audience } else { &[] };
        let rules = ClaimRules {
            issuers_allowed: &issuers,
            audience_required,
            audience_claim: &aud_claim,
            leeway,
            enable_hs_signatures: rng.below(4) != 0,
            require_at_jwt: false,
        };
        let h = header(&mut rng, alg, kid).to_string();
        let p = payload(&mut rng, now).to_string();
        let signed = format!("{}.{}", b64(h.as_bytes()), b64(p.as_bytes()));
        let sig = signers.sign(alg, signed.as_bytes(), &mut rng);
        let sig = damage(&mut rng, alg, sig);
        let token = format!("{signed}.{}", b64(&sig));
        let max_depth = *rng.pick(&[16, 128]);

        let check = |t: ParsedToken| verify(&t, &set, &rules, now, &native::PureRust).map(drop);
        let new = ParsedToken::parse_with(&token, max_depth, &memo).and_then(check);
        let again = ParsedToken::parse_with(&token, max_depth, &memo).and_then(check);
        assert_eq!(again, new, "token {i} with its header remembered: {token}");
        assert_eq!(ParsedToken::parse(&token, max_depth).and_then(check), new);
        seen_header_again += usize::from(memo.knows(token.split('.').next().unwrap_or("")));
        let before = ParsedToken::parse(&token, max_depth).and_then(|t| {
            if t.alg.is_symmetric() && !rules.enable_hs_signatures {
                return Err(TokenError::SymmetricAlgNotEnabled);
            }
            claims::check(&t, &rules, now)?;
            let key = set.select(t.kid.as_deref(), t.alg)?;
            // jwt-simple refused these as a bad signature; they are a bad payload now, on
            // every path (`the_old_rules_every_path_keeps` pins that jwt-simple refuses them).
            if !compat::claims_ok(&t.claims, now, leeway) {
                return Err(TokenError::BadPayload);
            }
            old.verify(key.verifier.alg(), &token, now, leeway)
        });
        assert_eq!(new, before, "token {i}: {token}\nheader {h}\npayload {p}");
        match new {
            Ok(()) => accepted += 1,
            Err(TokenError::BadSignature) => refused_by_signature += 1,
            Err(TokenError::BadPayload) => refused_by_old_rules += 1,
            Err(_) => {}
        }
    }
    // Both verdicts were well represented.
    assert!(accepted > 150, "{accepted} accepted");
    assert!(
        seen_header_again > 1000,
        "{seen_header_again} headers remembered"
    );
    assert!(refused_by_signature > 100, "{refused_by_signature} refused");
    assert!(
        refused_by_old_rules > 100,
        "{refused_by_old_rules} refused by the old rules"
    );
}

#[test]
fn the_old_rules_every_path_keeps() {
    // Each of these verifies (HS256, good MAC) unless the rule refuses it; the pure-Rust
    // path refused them through jwt-simple, and every path refuses them now (the host path:
    // jwt::tests::the_old_rules_hold_on_the_host_path_too).
    let (set, _, _) = setup();
    let issuers = vec![ISS.to_owned()];
    let rules = ClaimRules {
        issuers_allowed: &issuers,
        audience_required: &[],
        audience_claim: &[],
        leeway: 0,
        enable_hs_signatures: true,
        require_at_jwt: false,
    };
    let run = |h: Value, p: Value| {
        let token = hs_raw(&h.to_string(), &p.to_string());
        ParsedToken::parse(&token, 128)
            .and_then(|t| verify(&t, &set, &rules, NOW, &native::PureRust))
            .map(drop)
    };
    let h = json!({"alg": "HS256", "kid": "hs"});
    let p = json!({"iss": ISS, "exp": NOW + 60});
    assert_eq!(run(h.clone(), p.clone()), Ok(()));
    let with = |v: &Value, name: &str, x: Value| {
        let mut v = v.clone();
        v[name] = x;
        v
    };
    for (name, x) in [
        ("cty", json!(1)),
        ("x5c", json!([1])),
        ("salt", json!("c2FsdA")),
    ] {
        assert_eq!(
            run(with(&h, name, x), p.clone()),
            Err(TokenError::BadHeader),
            "header {name}"
        );
    }
    for (name, x) in [
        ("sub", json!(1)),
        ("jti", json!([])),
        ("nonce", json!(true)),
        ("aud", Value::Null),
        ("aud", json!([1])),
    ] {
        assert_eq!(
            run(h.clone(), with(&p, name, x)),
            Err(TokenError::BadPayload),
            "payload {name}"
        );
    }
    assert_eq!(run(h.clone(), with(&p, "deep", nested(126))), Ok(()));
    let long_header = with(&h, "pad", json!("x".repeat(6200)));
    assert_eq!(run(long_header, p.clone()), Err(TokenError::BadHeader));
    assert_eq!(
        run(with(&h, "pad", json!("x".repeat(6000))), p.clone()),
        Ok(())
    );
}
