//! `jwt::ParsedToken::parse`, then `jwt::verify` against a fixed key set whose private keys
//! nobody has (fuzz/keys/jwks.json, asymmetric keys only): verification must fail for every
//! input, both with the pure-Rust backend and through the host path (`jwt::native`: DER
//! key and DER ECDSA signature handed to a stand-in for Envoy's `verify_signature`).
//!
//! Input: a mode byte, then the token.
//! - mode bit 0 clear: the rest is the compact token (lossy UTF-8);
//! - mode bit 0 set: the rest is `header \n payload \n signature` (raw bytes, the signature
//!   may contain `\n`), each base64url-encoded here, so the fuzzer works on JSON directly.
//! - bit 1: `enable_hs_signatures`; bits 2-3: leeway 0, 1, 60 or 3600 s.

#![no_main]

use app_auth_filter::jwt::native::{self, SignatureBackend};
use app_auth_filter::jwt::{self, ClaimRules, KeySet, ParsedToken};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const JWKS: &str = include_str!("../keys/jwks.json");
/// The clock the seed tokens were made for (fuzz/gen_seeds.py).
const NOW: u64 = 1_800_000_000;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (set, parsed) = KeySet::parse(JWKS.as_bytes(), 64, 32).expect("fuzz/keys/jwks.json");
        assert_eq!(parsed.usable, 5);
        set
    })
}

/// A host that checks what it is handed and then refuses (it has no better way to know: the
/// signature was made by nobody). RS/ES only reach it; a DER ECDSA signature must parse.
#[derive(Debug)]
struct Host;

impl SignatureBackend for Host {
    fn verify(&self, hash: &'static str, spki: &[u8], signed: &[u8], sig: &[u8]) -> Option<bool> {
        assert!(
            matches!(hash, "sha256" | "sha384" | "sha512"),
            "hash {hash}"
        );
        assert_eq!(spki.first(), Some(&0x30), "SPKI is a DER SEQUENCE");
        assert_eq!(
            signed.iter().filter(|b| **b == b'.').count(),
            1,
            "signing input"
        );
        assert!(!sig.is_empty());
        Some(false)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut parts = rest.splitn(3, |b| *b == b'\n');
        let (h, p, s) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(p),
            URL_SAFE_NO_PAD.encode(s)
        )
    };
    let Ok(parsed) = ParsedToken::parse(&token, 32) else {
        return;
    };

    // What parsing promises.
    assert_eq!(parsed.raw(), token.as_bytes());
    assert_eq!(jwt::Alg::from_name(parsed.alg.name()), Some(parsed.alg));
    if let Some(kid) = &parsed.kid {
        assert!(!kid.is_empty() && kid.len() <= 256);
    }
    // Canonical base64url: one token has exactly one spelling.
    for segment in token.split('.') {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .expect("segment of a parsed token");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(bytes),
            segment,
            "non-canonical segment"
        );
    }

    let issuers = ["https://idp.example.com".to_owned()];
    let audience = [vec!["https://api.example.com".to_owned()]];
    let audience_claim = ["aud".to_owned()];
    let rules = ClaimRules {
        issuers_allowed: &issuers,
        audience_required: &audience,
        audience_claim: &audience_claim,
        leeway: [0, 1, 60, 3600][usize::from((mode >> 2) & 3)],
        enable_hs_signatures: mode & 2 != 0,
        require_at_jwt: mode & 16 != 0,
    };
    let pure = jwt::verify(&parsed, keys(), &rules, NOW, &native::PureRust);
    assert!(
        pure.is_err(),
        "a fuzzed token verified against keys nobody has: {token}"
    );
    let host = jwt::verify(&parsed, keys(), &rules, NOW, &Host);
    assert!(host.is_err(), "host path: {token}");
});
