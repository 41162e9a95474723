// Test code only: the parent module declares this file behind #[cfg(test)].
use super::claims::Values;
use super::fixtures::*;
use super::*;
use crate::jwt::jwks::RSA_ALGS;
use crate::jwt::native;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::borrow::Cow;

fn rules_with<'a>(
    issuers: &'a [String],
    audience: &'a [Vec<String>],
    aud_claim: &'a [String],
) -> ClaimRules<'a> {
    ClaimRules {
        issuers_allowed: issuers,
        audience_required: audience,
        audience_claim: aud_claim,
        leeway: 0,
        enable_hs_signatures: true,
        require_at_jwt: false,
    }
}

fn key_set() -> KeySet {
    KeySet::parse(jwks().as_bytes(), 64, 16).unwrap().0
}

/// Verifies at NOW with the standard rules (issuer ISS, audience AUD, HS enabled).
fn check(token: &str) -> Result<VerifiedClaims, TokenError> {
    check_at(token, NOW, 0)
}

fn check_at(token: &str, now: u64, leeway: u64) -> Result<VerifiedClaims, TokenError> {
    let issuers = vec![ISS.to_owned()];
    let audience = vec![vec![AUD.to_owned()]];
    let aud_claim = vec!["aud".to_owned()];
    let mut rules = rules_with(&issuers, &audience, &aud_claim);
    rules.leeway = leeway;
    let parsed = ParsedToken::parse(token, 16)?;
    verify(&parsed, &key_set(), &rules, now, &native::PureRust)
}

#[test]
fn good_tokens_of_every_algorithm_verify() {
    let c = claims();
    for (name, token) in [
        ("RS256", rs_token(&c)),
        ("RS256 at+jwt", rs_at_jwt(&c)),
        ("ES256", es_token(&c)),
        ("EdDSA", ed_token(&c)),
        ("HS256", hs_with_payload(&c.to_string())),
    ] {
        let v = check(&token).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.exp(), NOW + 600, "{name}");
        assert_eq!(
            v.credential_values(&["client_id".into()]).unwrap().to_vec(),
            vec!["client-1"]
        );
    }
}

#[test]
fn the_signed_part_is_the_first_two_segments_as_received() {
    for token in [rs_token(&claims()), es_token(&claims())] {
        let parsed = ParsedToken::parse(&token, 16).unwrap();
        let (signed, _) = token.rsplit_once('.').unwrap();
        assert_eq!(parsed.signed(), signed.as_bytes());
        assert_eq!(parsed.raw(), token.as_bytes());
    }
}

#[test]
fn hs_tokens_need_hs_enabled() {
    let issuers = vec![ISS.to_owned()];
    let mut rules = rules_with(&issuers, &[], &[]);
    rules.enable_hs_signatures = false;
    let parsed = ParsedToken::parse(&hs_with_payload(&claims().to_string()), 16).unwrap();
    assert_eq!(
        verify(&parsed, &key_set(), &rules, NOW, &native::PureRust).unwrap_err(),
        TokenError::SymmetricAlgNotEnabled
    );
}

#[test]
fn alg_none_in_any_spelling_is_refused() {
    let payload = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        assert_eq!(
            check(&format!("{header}.{payload}.")).unwrap_err(),
            TokenError::NotCompactJws,
            "{alg} without signature"
        );
        assert_eq!(
            check(&format!("{header}.{payload}.AAAA")).unwrap_err(),
            TokenError::UnsupportedAlg,
            "{alg}"
        );
    }
}

#[test]
fn hs_rs_confusion_is_refused() {
    // HS256 keyed with the RSA public key's bytes, naming the RSA kid.
    let k = keys().rs.public_key().to_components();
    let header = b64(br#"{"alg":"HS256","kid":"rs-1","typ":"JWT"}"#);
    let input = format!("{header}.{}", b64(claims().to_string().as_bytes()));
    let tag = hmac_sha256::HMAC::mac(input.as_bytes(), &k.n);
    assert_eq!(
        check(&format!("{input}.{}", b64(&tag))).unwrap_err(),
        TokenError::KeyAlgMismatch
    );
    // RS256 header naming the HS key.
    let token = rs_token(&claims());
    let (_, rest) = token.split_once('.').unwrap();
    let header = b64(br#"{"alg":"RS256","kid":"hs-1","typ":"JWT"}"#);
    assert_eq!(
        check(&format!("{header}.{rest}")).unwrap_err(),
        TokenError::KeyAlgMismatch
    );
}

#[test]
fn the_header_memo_keeps_the_last_eight_headers() {
    let payload = b64(claims().to_string().as_bytes());
    let header = |i: usize| b64(format!(r#"{{"alg":"RS256","kid":"k{i}"}}"#).as_bytes());
    let parse = |memo: &HeaderMemo, i: usize| {
        ParsedToken::parse_with(&format!("{}.{payload}.AAAA", header(i)), 8, memo).unwrap()
    };
    let memo = HeaderMemo::default();
    for i in 0..9 {
        assert_eq!(
            parse(&memo, i).kid.as_deref(),
            Some(format!("k{i}").as_str())
        );
    }
    // The ninth took the first one's place.
    assert!(!memo.knows(&header(0)));
    assert!((1..9).all(|i| memo.knows(&header(i))));
    // A header read before reads as it did.
    assert_eq!(parse(&memo, 3).kid.as_deref(), Some("k3"));
    assert_eq!(parse(&memo, 0).kid.as_deref(), Some("k0"));
    assert!(memo.knows(&header(0)) && !memo.knows(&header(1)));
}

#[test]
fn segment_counts_other_than_three_are_refused() {
    let token = rs_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(
        check(&parts[..2].join(".")).unwrap_err(),
        TokenError::NotCompactJws
    );
    assert_eq!(
        check(&format!("{token}.x")).unwrap_err(),
        TokenError::NotCompactJws
    );
    assert_eq!(
        check(&format!("{token}.x.y")).unwrap_err(),
        TokenError::Encrypted
    );
    assert_eq!(check("").unwrap_err(), TokenError::NotCompactJws);
    assert_eq!(check("..").unwrap_err(), TokenError::NotCompactJws);
    // The number of segments is said first, whatever else is wrong with them.
    assert_eq!(check("....").unwrap_err(), TokenError::Encrypted);
    assert_eq!(check("!!.??.a.b.c").unwrap_err(), TokenError::Encrypted);
    assert_eq!(check(".b.c.d").unwrap_err(), TokenError::NotCompactJws);
    let bad_payload = format!("{}.!.x.y", parts[0]);
    assert_eq!(check(&bad_payload).unwrap_err(), TokenError::NotCompactJws);
    let bad_signature = format!("{}.{}.!.x.y", parts[0], parts[1]);
    assert_eq!(check(&bad_signature).unwrap_err(), TokenError::Encrypted);
    for empty in 0..3 {
        let mut parts = parts.clone();
        parts[empty] = "";
        assert_eq!(
            check(&parts.join(".")).unwrap_err(),
            TokenError::NotCompactJws,
            "segment {empty} empty"
        );
    }
}

#[test]
fn only_canonical_base64url_is_accepted() {
    let token = rs_token(&claims());
    let (head, rest) = token.split_once('.').unwrap();
    assert_eq!(
        check(&format!("{head}=.{rest}")).unwrap_err(),
        TokenError::BadEncoding,
        "padding"
    );
    assert_eq!(
        check(&format!("{head} .{rest}")).unwrap_err(),
        TokenError::BadEncoding,
        "space"
    );
    let std_b64 = token.replace('-', "+").replace('_', "/");
    if std_b64 != token {
        assert_eq!(
            check(&std_b64).unwrap_err(),
            TokenError::BadEncoding,
            "+ and /"
        );
    }
    // Non-canonical trailing bits: the header's last character bumped within its group.
    let mut bad = head.to_owned();
    let last = bad.pop().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let i = alphabet.find(last).unwrap();
    if head.len() % 4 != 0 {
        bad.push(alphabet.as_bytes()[(i + 1) % 64] as char);
        assert!(
            check(&format!("{bad}.{rest}")).is_err(),
            "non-canonical trailing bits"
        );
    }
}

#[test]
fn at_jwt_required_refuses_every_other_typ() {
    let issuers = vec![ISS.to_owned()];
    let audience = vec![vec![AUD.to_owned()]];
    let aud_claim = vec!["aud".to_owned()];
    let mut rules = rules_with(&issuers, &audience, &aud_claim);
    rules.require_at_jwt = true;
    let check = |h: &str| {
        let parsed = ParsedToken::parse(&hs_with_header(h), 16)?;
        verify(&parsed, &key_set(), &rules, NOW, &native::PureRust)
    };
    // RFC 9068 §4: "at+jwt" or "application/at+jwt"; media types compare in any case.
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/At+JWT",
    ] {
        let h = format!(r#"{{"alg":"HS256","kid":"hs-1","typ":"{typ}"}}"#);
        assert!(check(&h).is_ok(), "{typ}");
    }
    // An ID token (typ JWT), no typ at all: valid JWTs, but not access tokens.
    for h in [
        r#"{"alg":"HS256","kid":"hs-1","typ":"JWT"}"#,
        r#"{"alg":"HS256","kid":"hs-1","typ":"jwt"}"#,
        r#"{"alg":"HS256","kid":"hs-1"}"#,
    ] {
        assert_eq!(check(h).unwrap_err(), TokenError::NotAtJwt, "{h}");
    }
    // Other types are malformed whatever the rule.
    for typ in ["dpop+jwt", "application/jwt", "at+jwt ", "logout+jwt"] {
        let h = format!(r#"{{"alg":"HS256","kid":"hs-1","typ":"{typ}"}}"#);
        assert_eq!(check(&h).unwrap_err(), TokenError::WrongType, "{typ}");
    }
    // Without the rule, the JWT-typed token passes (Kong's behaviour).
    assert!(check_at(
        &hs_with_header(r#"{"alg":"HS256","kid":"hs-1","typ":"JWT"}"#),
        NOW,
        0
    )
    .is_ok());
    assert_eq!(
        TokenError::NotAtJwt.description(),
        "token type is not at+jwt"
    );
}

#[test]
fn header_rules() {
    let ok = |h: &str| check(&hs_with_header(h));
    assert!(
        ok(r#"{"alg":"HS256","kid":"hs-1"}"#).is_ok(),
        "typ is optional"
    );
    assert!(ok(r#"{"alg":"HS256","kid":"hs-1","typ":"at+jwt"}"#).is_ok());
    assert!(ok(r#"{"alg":"HS256","kid":"hs-1","typ":"application/at+JWT"}"#).is_ok());
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":"hs-1","typ":"dpop+jwt"}"#).unwrap_err(),
        TokenError::WrongType
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":"hs-1","typ":"JWE"}"#).unwrap_err(),
        TokenError::WrongType
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":"hs-1","typ":7}"#).unwrap_err(),
        TokenError::WrongType
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":"hs-1","crit":["exp"]}"#).unwrap_err(),
        TokenError::UnknownCritical
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":"hs-1","crit":[]}"#).unwrap_err(),
        TokenError::UnknownCritical
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":7}"#).unwrap_err(),
        TokenError::BadKid
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":""}"#).unwrap_err(),
        TokenError::BadKid
    );
    assert_eq!(
        ok(r#"{"alg":"HS256","kid":"hs-1","alg":"HS256"}"#).unwrap_err(),
        TokenError::BadHeader
    );
    assert_eq!(ok(r#"{"kid":"hs-1"}"#).unwrap_err(), TokenError::BadHeader);
    assert_eq!(ok(r#"["HS256"]"#).unwrap_err(), TokenError::BadHeader);
    assert_eq!(
        ok(r#"{"alg":"ES512","kid":"hs-1"}"#).unwrap_err(),
        TokenError::UnsupportedAlg
    );
    assert_eq!(
        ok(r#"{"alg":"hs256","kid":"hs-1"}"#).unwrap_err(),
        TokenError::UnsupportedAlg
    );
    // Embedded keys and key URLs are never used: the signature must still verify with the
    // issuer's own key (here it does, so the token passes; an attacker's key would not).
    assert!(
        ok(r#"{"alg":"HS256","kid":"hs-1","jku":"https://evil/jwks","x5u":"https://evil/c"}"#)
            .is_ok()
    );
}

#[test]
fn embedded_jwk_does_not_help_a_forger() {
    // Signed with another key, carrying that key in the header: refused.
    let forged = foreign_token(&claims());
    assert_eq!(check(&forged).unwrap_err(), TokenError::BadSignature);
}

#[test]
fn payload_must_be_one_unambiguous_object() {
    let dup = r#"{"iss":"https://idp.example.com","aud":"https://api.example.com","exp":1800000600,"exp":1900000000}"#;
    assert_eq!(
        check(&hs_with_payload(dup)).unwrap_err(),
        TokenError::BadPayload
    );
    assert_eq!(
        check(&hs_with_payload("[1]")).unwrap_err(),
        TokenError::BadPayload
    );
    assert_eq!(
        check(&hs_with_payload("\"x\"")).unwrap_err(),
        TokenError::BadPayload
    );
    let deep = format!(
        r#"{{"exp":1800000600,"x":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    assert_eq!(
        check(&hs_with_payload(&deep)).unwrap_err(),
        TokenError::BadPayload
    );
    let invalid_utf8 = hs_raw(r#"{"alg":"HS256","kid":"hs-1"}"#, "{\"iss\":\"\u{0}\"}");
    assert!(check(&invalid_utf8).is_err());
}

#[test]
fn time_claims_must_be_whole_seconds() {
    for bad in [
        json!("1800000600"),
        json!(true),
        json!(1.8e9 + 0.5),
        json!(-1),
        json!(1e20),
        // Whole numbers past the year 5138 (MAX_TIME): an exp of u64::MAX never expires.
        json!(100_000_000_001u64),
        json!(u64::MAX),
        json!([1]),
        json!({}),
    ] {
        let t = hs_with_payload(&claims_with(json!({"exp": bad.clone()})).to_string());
        assert_eq!(
            check(&t).unwrap_err(),
            TokenError::BadTimeClaim,
            "exp {bad}"
        );
        let t = hs_with_payload(&claims_with(json!({"nbf": bad.clone()})).to_string());
        assert_eq!(
            check(&t).unwrap_err(),
            TokenError::BadTimeClaim,
            "nbf {bad}"
        );
        let t = hs_with_payload(&claims_with(json!({"iat": bad.clone()})).to_string());
        assert_eq!(
            check(&t).unwrap_err(),
            TokenError::BadTimeClaim,
            "iat {bad}"
        );
    }
    let no_exp = rs_token(&claims_with(json!({"exp": null})));
    assert_eq!(check(&no_exp).unwrap_err(), TokenError::MissingExp);
    let null_exp = hs_with_payload(
        r#"{"iss":"https://idp.example.com","aud":"https://api.example.com","exp":null}"#,
    );
    assert_eq!(check(&null_exp).unwrap_err(), TokenError::BadTimeClaim);
}

#[test]
fn expiry_and_validity_start_at_the_leeway_boundaries() {
    let exp = NOW + 600;
    let t = rs_token(&claims());
    assert!(check_at(&t, exp - 1, 0).is_ok());
    assert_eq!(check_at(&t, exp, 0).unwrap_err(), TokenError::Expired);
    assert!(check_at(&t, exp + 4, 5).is_ok());
    assert_eq!(check_at(&t, exp + 5, 5).unwrap_err(), TokenError::Expired);

    let t = rs_token(&claims_with(json!({"nbf": NOW + 1, "iat": NOW})));
    assert_eq!(check_at(&t, NOW, 0).unwrap_err(), TokenError::NotYetValid);
    assert!(check_at(&t, NOW, 1).is_ok());
    assert!(check_at(&t, NOW + 1, 0).is_ok());

    let t = rs_token(&claims_with(json!({"iat": NOW + 1, "nbf": null})));
    assert_eq!(
        check_at(&t, NOW, 0).unwrap_err(),
        TokenError::IssuedInFuture
    );
    assert!(check_at(&t, NOW, 1).is_ok());
}

#[test]
fn issuer_must_match_exactly() {
    for iss in [
        json!("https://idp.example.com/"),
        json!("https://idp.example.co"),
        json!("https://IDP.example.com"),
        json!("https://idp.example.com.evil"),
        json!(""),
        json!(["https://idp.example.com"]),
        json!(null),
    ] {
        let t = rs_token(&claims_with(json!({"iss": iss.clone()})));
        assert_eq!(check(&t).unwrap_err(), TokenError::WrongIssuer, "{iss}");
    }
}

#[test]
fn audience_near_misses_are_refused() {
    for aud in [
        json!("https://api.example.com/"),
        json!("https://API.example.com"),
        json!("api.example.com"),
        json!([]),
        json!(["https://other"]),
        json!(null),
        json!(7),
    ] {
        let t = rs_token(&claims_with(json!({"aud": aud.clone()})));
        assert_eq!(check(&t).unwrap_err(), TokenError::WrongAudience, "{aud}");
    }
    let t = rs_token(&claims_with(json!({"aud": ["https://other", AUD]})));
    assert!(check(&t).is_ok(), "array containing the audience");
}

#[test]
fn audience_and_scope_alternatives() {
    let issuers = vec![ISS.to_owned()];
    let aud_claim = vec!["aud".to_owned()];
    // (a AND b) OR c
    let required = vec![vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]];
    let rules = rules_with(&issuers, &required, &aud_claim);
    let run = |aud: Value| {
        let t = rs_token(&claims_with(json!({ "aud": aud })));
        verify(
            &ParsedToken::parse(&t, 16).unwrap(),
            &key_set(),
            &rules,
            NOW,
            &native::PureRust,
        )
        .map(drop)
    };
    assert!(run(json!(["a", "b"])).is_ok());
    assert!(run(json!("c")).is_ok());
    assert_eq!(run(json!(["a"])), Err(TokenError::WrongAudience));
    assert_eq!(
        run(json!("a b")),
        Err(TokenError::WrongAudience),
        "aud is not space-split"
    );

    let scopes_claim = vec!["scope".to_owned()];
    let verified =
        |scope: Value| check(&rs_token(&claims_with(json!({ "scope": scope })))).unwrap();
    let req = vec![
        vec!["orders:read".to_owned(), "orders:write".to_owned()],
        vec!["admin".to_owned()],
    ];
    assert!(claims::has_scopes(
        &verified(json!("orders:write orders:read")),
        &scopes_claim,
        &req
    ));
    assert!(claims::has_scopes(
        &verified(json!(["admin"])),
        &scopes_claim,
        &req
    ));
    assert!(!claims::has_scopes(
        &verified(json!("orders:read")),
        &scopes_claim,
        &req
    ));
    assert!(!claims::has_scopes(
        &verified(json!("orders:read orders:writer")),
        &scopes_claim,
        &req
    ));
    assert!(!claims::has_scopes(
        &verified(json!("Orders:read orders:write")),
        &scopes_claim,
        &req
    ));
    assert!(!claims::has_scopes(
        &verified(json!("orders:read  adminx")),
        &scopes_claim,
        &req
    ));
    assert!(!claims::has_scopes(
        &verified(json!(null)),
        &scopes_claim,
        &req
    ));
    assert!(!claims::has_scopes(
        &verified(json!(7)),
        &scopes_claim,
        &req
    ));
    assert!(
        claims::has_scopes(&verified(json!(null)), &scopes_claim, &[]),
        "nothing required"
    );
    // Nested scope claim path (Keycloak-style).
    let nested = check(&rs_token(&claims_with(
        json!({"realm_access": {"roles": ["admin"]}}),
    )))
    .unwrap();
    assert!(claims::has_scopes(
        &nested,
        &["realm_access".into(), "roles".into()],
        &req
    ));
}

#[test]
fn key_selection() {
    // Unknown kid.
    let token = unknown_kid_token(&claims());
    assert_eq!(check(&token).unwrap_err(), TokenError::UnknownKid);
    // No kid: the one key that fits the algorithm.
    let no_kid = hs_with_header(r#"{"alg":"HS256"}"#);
    assert!(check(&no_kid).is_ok());
    // No kid and two RSA keys: ambiguous.
    let k = keys();
    let two =
        json!({"keys": [rsa_jwk(&k.rs, "a", None), rsa_jwk(&k.rs_other, "b", None)]}).to_string();
    let set = KeySet::parse(two.as_bytes(), 64, 16).unwrap().0;
    assert_eq!(
        set.select(None, Alg::RS256).unwrap_err(),
        TokenError::AmbiguousKey
    );
    assert!(
        set.select(Some("a"), Alg::PS256).is_ok(),
        "a key without alg serves RS* and PS*"
    );
    assert_eq!(
        set.select(Some("a"), Alg::ES256).unwrap_err(),
        TokenError::KeyAlgMismatch
    );
}

#[test]
fn every_flipped_signature_bit_is_refused() {
    for token in [
        rs_token(&claims()),
        es_token(&claims()),
        ed_token(&claims()),
    ] {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let parsed_ok = check(&token);
        assert!(parsed_ok.is_ok());
        for bit in 0..sig.len() * 8 {
            let mut flipped = sig.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let t = format!("{input}.{}", b64(&flipped));
            assert_eq!(
                check(&t).unwrap_err(),
                TokenError::BadSignature,
                "bit {bit}"
            );
        }
    }
}

/// Fast counterparts of `every_flipped_signature_bit_is_refused` for the MAC compare:
/// a tag is the whole tag, and its every byte counts.
#[test]
fn an_hs_tag_verifies_only_whole_and_exact() {
    let good = hs_with_payload(&claims().to_string());
    assert!(check(&good).is_ok());
    let (signed, tag) = good.rsplit_once('.').unwrap();
    let tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
    let with_tag = |t: &[u8]| format!("{signed}.{}", b64(t));
    // A prefix of the right tag, and the right tag with a byte more.
    assert_eq!(
        check(&with_tag(&tag[..16])).unwrap_err(),
        TokenError::BadSignature
    );
    assert_eq!(
        check(&with_tag(&tag[..1])).unwrap_err(),
        TokenError::BadSignature
    );
    let longer = [tag.as_slice(), &[0]].concat();
    assert_eq!(
        check(&with_tag(&longer)).unwrap_err(),
        TokenError::BadSignature
    );
    // One bit flipped in one byte, and the same bit flipped in two bytes (differences that
    // cancel out if they were combined with XOR instead of OR).
    let mut one = tag.clone();
    one[5] ^= 0x10;
    assert_eq!(
        check(&with_tag(&one)).unwrap_err(),
        TokenError::BadSignature
    );
    let mut two = tag.clone();
    two[3] ^= 0x01;
    two[9] ^= 0x01;
    assert_eq!(
        check(&with_tag(&two)).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn tampered_payload_is_refused() {
    let token = rs_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let evil = b64(claims_with(json!({"client_id": "admin"}))
        .to_string()
        .as_bytes());
    assert_eq!(
        check(&format!("{}.{evil}.{}", parts[0], parts[2])).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn ecdsa_signature_shapes_are_strict() {
    let token = es_token(&claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    let zero_r = [&[0u8; 32][..], &sig[32..]].concat();
    let zero_s = [&sig[..32], &[0u8; 32][..]].concat();
    let max_r = [&[0xffu8; 32][..], &sig[32..]].concat();
    let short = sig[..63].to_vec();
    let long = [&sig[..], &[0u8]].concat();
    // DER form of the same (r, s).
    let der = {
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
        let body = [int(&sig[..32]), int(&sig[32..])].concat();
        [vec![0x30, body.len() as u8], body].concat()
    };
    for (name, bad) in [
        ("r=0", zero_r),
        ("s=0", zero_s),
        ("r>n", max_r),
        ("63 bytes", short),
        ("65 bytes", long),
        ("DER", der),
    ] {
        assert_eq!(
            check(&format!("{input}.{}", b64(&bad))).unwrap_err(),
            TokenError::BadSignature,
            "{name}"
        );
    }
}

#[test]
fn one_claim_value_is_kept_without_a_list() {
    let one: Values<'_> = ["a"].map(Cow::Borrowed).into_iter().collect();
    assert_eq!(one, Values::One(Cow::Borrowed("a")));
    let two: Values<'_> = ["a", "b"].map(Cow::Borrowed).into_iter().collect();
    assert_eq!(two.to_vec(), vec!["a", "b"]);
    let three: Values<'_> = ["a", "b", "c"].map(Cow::Borrowed).into_iter().collect();
    assert_eq!(three.to_vec(), vec!["a", "b", "c"]);
    let none: Values<'_> = std::iter::empty().collect();
    assert!(none.is_empty());
}

#[test]
fn credential_claim_shapes() {
    let path = vec!["client_id".to_owned()];
    let v = |c: Value| check(&rs_token(&claims_with(json!({ "client_id": c })))).unwrap();
    assert_eq!(
        v(json!(["a", "b"]))
            .credential_values(&path)
            .unwrap()
            .to_vec(),
        vec!["a", "b"]
    );
    for bad in [
        json!(7),
        json!([]),
        json!(["a", 1]),
        json!({"x": 1}),
        json!("a\nb"),
        json!(""),
    ] {
        assert_eq!(
            v(bad.clone()).credential_values(&path).unwrap_err(),
            TokenError::BadCredentialClaim,
            "{bad}"
        );
    }
    let missing = check(&rs_token(&claims_with(json!({"client_id": null})))).unwrap();
    assert_eq!(
        missing.credential_values(&path).unwrap_err(),
        TokenError::BadCredentialClaim
    );
}

#[test]
fn forwarded_claims_render_numbers_and_booleans_as_json() {
    let path = vec!["level".to_owned()];
    let v = |c: Value| check(&rs_token(&claims_with(json!({ "level": c })))).unwrap();
    for (claim, text) in [
        (json!(7), "7"),
        (json!(1.5), "1.5"),
        (json!(true), "true"),
        (json!(false), "false"),
        (json!([1, true, "a"]), "1,true,a"),
    ] {
        assert_eq!(
            v(claim.clone()).header_value(&path).unwrap().as_deref(),
            Some(text),
            "{claim}"
        );
    }
    for bad in [json!({"x": 1}), json!([null]), json!([["a"]])] {
        assert_eq!(
            v(bad.clone()).header_value(&path).unwrap_err(),
            TokenError::BadForwardedClaim,
            "{bad}"
        );
    }
}

mod jwks {
    use super::*;

    fn parse(v: Value) -> Result<KeySet, String> {
        KeySet::parse(v.to_string().as_bytes(), 8, 16).map(|(s, _)| s)
    }

    /// Verifies `token` with `set` in Rust (where ECDSA keys make their multiples).
    fn verify_with(set: &KeySet, token: &str) -> Result<VerifiedClaims, TokenError> {
        let issuers = vec![ISS.to_owned()];
        let audience = vec![vec![AUD.to_owned()]];
        let aud_claim = vec!["aud".to_owned()];
        let rules = rules_with(&issuers, &audience, &aud_claim);
        let parsed = ParsedToken::parse(token, 16)?;
        verify(&parsed, set, &rules, NOW, &native::PureRust)
    }

    #[test]
    fn a_set_fetched_again_takes_over_the_multiples_of_the_keys_it_still_holds() {
        let token = es_token(&claims());
        let first = key_set();
        verify_with(&first, &token).unwrap();
        assert_eq!(first.ecdsa_multiples_made(), 1);
        // The same key again (under another kid too), and another key under es-1.
        let again = key_set();
        let renamed = parse(json!({"keys": [ec_jwk(&keys().es, "es-2")]})).unwrap();
        let replaced = parse(json!({"keys": [ec_jwk(&ES256KeyPair::generate(), "es-1")]})).unwrap();
        for set in [&again, &renamed, &replaced] {
            assert_eq!(set.ecdsa_multiples_made(), 0);
            set.inherit(&first);
        }
        assert_eq!(again.ecdsa_multiples_made(), 1);
        assert_eq!(renamed.ecdsa_multiples_made(), 1);
        assert_eq!(replaced.ecdsa_multiples_made(), 0);
        // What was taken over verifies as before, and the replaced key refuses the token.
        verify_with(&again, &token).unwrap();
        assert_eq!(
            verify_with(&replaced, &token).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn a_good_set_indexes_every_usable_key() {
        let set = key_set();
        let mut kids: Vec<&str> = set.kids().collect();
        kids.sort();
        assert_eq!(kids, vec!["ed-1", "es-1", "hs-1", "rs-1"]);
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let k = keys();
        let full_n = b64(&k.rs_other.public_key().to_components().n);
        let ec = ec_jwk(&k.es, "es-1");
        let (set, parsed) = KeySet::parse(json!({"keys": [
            rsa_jwk(&k.rs, "rs-1", Some("RS256")),
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": b64(&[0xff; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "e3", "n": b64(&k.rs.public_key().to_components().n), "e": "Aw"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"},
            {"kty": "XYZ", "kid": "x"},
            // Full-size keys that only their `use`, `alg` or `key_ops` rules out (the three
            // above are also too small, so they would be skipped anyway).
            {"kty": "RSA", "kid": "enc-2048", "use": "enc", "n": full_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep-2048", "alg": "RSA-OAEP", "n": full_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops-2048", "key_ops": ["encrypt"], "n": full_n, "e": "AQAB"},
            // A key that names an algorithm of another key type is for none of its own.
            {"kty": "RSA", "kid": "rsa-es256", "alg": "ES256", "n": full_n, "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "ec-rs256", "alg": "RS256", "x": ec["x"], "y": ec["y"]},
        ]}).to_string().as_bytes(), 16, 16).unwrap();
        assert_eq!(
            parsed,
            crate::jwt::jwks::Parsed {
                usable: 1,
                skipped: 12
            }
        );
        assert!(set.has_kid("rs-1") && !set.has_kid("small"));
        for kid in ["enc-2048", "oaep-2048", "ops-2048", "rsa-es256", "ec-rs256"] {
            assert!(!set.has_kid(kid), "{kid}");
        }
    }

    #[test]
    fn a_key_set_debugs_its_algorithms_never_its_secrets() {
        let set = key_set();
        let shown = format!("{set:?}");
        assert!(shown.contains("Verifier(HS256)"), "{shown}");
        assert!(shown.contains("Verifier(ES256)"), "{shown}");
        // The oct key's bytes, in any form Debug could print them.
        let secret = std::str::from_utf8(HS_SECRET).unwrap();
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains(&format!("{HS_SECRET:?}")), "{shown}");
        assert!(!shown.contains("48, 49, 50, 51"), "{shown}");
    }

    #[test]
    fn a_set_fetched_again_takes_over_the_multiples_of_its_p384_keys_too() {
        let p384 = ES384KeyPair::generate()
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        let set = || {
            parse(
                json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "es384",
                                   "x": b64(&p384[1..49]), "y": b64(&p384[49..])}]}),
            )
            .unwrap()
        };
        let first = set();
        first.make_ecdsa_multiples();
        assert_eq!(first.ecdsa_multiples_made(), 1);
        let again = set();
        again.inherit(&first);
        assert_eq!(again.ecdsa_multiples_made(), 1);
    }

    #[test]
    fn a_set_of_exactly_max_keys_is_taken_one_more_is_refused() {
        let k = keys();
        let distinct = |n: usize| -> Value {
            let keys: Vec<Value> = (0..n)
                .map(|i| rsa_jwk(&k.rs, &format!("rs-{i}"), None))
                .collect();
            json!({ "keys": keys })
        };
        let full = parse(distinct(8)).unwrap();
        assert_eq!(full.len(), 8);
        assert!(!full.is_empty() && KeySet::default().is_empty());
        let e = parse(distinct(9)).unwrap_err();
        assert!(e.contains("more than the limit of 8"), "{e}");
    }

    #[test]
    fn a_key_whose_key_ops_include_verify_is_taken() {
        let mut verify_only = rsa_jwk(&keys().rs, "verify", None);
        verify_only["key_ops"] = json!(["verify"]);
        let mut both = rsa_jwk(&keys().rs_other, "both", None);
        both["key_ops"] = json!(["sign", "verify"]);
        let set = parse(json!({"keys": [verify_only, both]})).unwrap();
        assert!(set.has_kid("verify") && set.has_kid("both"));
    }

    #[test]
    fn an_rsa_key_without_alg_verifies_each_rsa_algorithm_as_itself() {
        let set = parse(json!({"keys": [rsa_jwk(&keys().rs, "rs", None)]})).unwrap();
        for alg in RSA_ALGS {
            let selected = set.select(Some("rs"), alg).unwrap();
            assert_eq!(selected.verifier.alg(), alg);
        }
    }

    #[test]
    fn an_even_rsa_modulus_refuses_the_set() {
        let mut n = keys().rs.public_key().to_components().n;
        *n.last_mut().unwrap() &= 0xfe;
        let jwk = json!({"kty": "RSA", "kid": "even", "n": b64(&n), "e": "AQAB"});
        let e = parse(json!({"keys": [rsa_jwk(&keys().rs, "rs", None), jwk]})).unwrap_err();
        assert!(e.contains("Invalid public key"), "{e}");
    }

    #[test]
    fn okp_keys_of_other_curves_are_skipped_never_read_as_ed25519() {
        let good = rsa_jwk(&keys().rs, "rs", None);
        let (set, parsed) = KeySet::parse(
            json!({"keys": [
                good,
                {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64(&keys().ed.public_key().to_bytes())},
                {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64(&[9u8; 57])},
            ]})
            .to_string()
            .as_bytes(),
            8,
            16,
        )
        .unwrap();
        assert_eq!(parsed.skipped, 2);
        assert!(!set.has_kid("x25519") && !set.has_kid("ed448"));
    }

    #[test]
    fn ec_coordinates_must_each_be_of_the_curve_size() {
        let point = keys().es.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = (&point[1..33], &point[33..65]);
        let long_y = [y, &[0]].concat();
        for (x, y) in [(x, &y[..31]), (&x[..31], y), (x, long_y.as_slice())] {
            let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(x), "y": b64(y)});
            let e = parse(json!({"keys": [jwk]})).unwrap_err();
            assert!(e.contains("coordinates of the wrong length"), "{e}");
        }
    }

    #[test]
    fn oct_keys_under_32_bytes_are_skipped() {
        let (set, parsed) = KeySet::parse(
            json!({"keys": [
                {"kty": "oct", "kid": "short", "k": b64(&[7u8; 31])},
                {"kty": "oct", "kid": "tiny", "k": b64(&[7u8; 1])},
                {"kty": "oct", "kid": "enough", "k": b64(&[7u8; 32])},
            ]})
            .to_string()
            .as_bytes(),
            8,
            16,
        )
        .unwrap();
        assert_eq!(parsed.skipped, 2);
        assert!(set.has_kid("enough") && !set.has_kid("short") && !set.has_kid("tiny"));
        for alg in [Alg::HS256, Alg::HS384, Alg::HS512] {
            let selected = set.select(Some("enough"), alg).unwrap();
            assert_eq!(selected.verifier.alg(), alg);
        }
    }

    #[test]
    fn garbage_sets_are_refused_whole() {
        let k = keys();
        let good = rsa_jwk(&k.rs, "rs-1", None);
        let mut off_curve = ec_jwk(&k.es, "es-1");
        off_curve["y"] = json!(b64(&[1u8; 32]));
        let cases = [
            ("html", KeySet::parse(b"<html>oops</html>", 8, 16).map(drop)),
            (
                "truncated",
                KeySet::parse(&jwks().as_bytes()[..40], 8, 16).map(drop),
            ),
            ("no keys", parse(json!({"keys": []})).map(drop)),
            ("keys not array", parse(json!({"keys": {}})).map(drop)),
            (
                "key not object",
                parse(json!({"keys": [good.clone(), 7]})).map(drop),
            ),
            (
                "duplicate kid",
                parse(json!({"keys": [good.clone(), good.clone()]})).map(drop),
            ),
            (
                "off-curve",
                parse(json!({"keys": [good.clone(), off_curve]})).map(drop),
            ),
            (
                "bad base64",
                parse(json!({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]})).map(drop),
            ),
            (
                "kid not string",
                parse(json!({"keys": [{"kty": "RSA", "kid": 1, "n": "AQAB", "e": "AQAB"}]}))
                    .map(drop),
            ),
            (
                "n not string",
                parse(json!({"keys": [{"kty": "RSA", "n": 5, "e": "AQAB"}]})).map(drop),
            ),
            (
                "too many",
                parse(json!({"keys": vec![good.clone(); 9]})).map(drop),
            ),
            (
                "only unusable",
                parse(json!({"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]}))
                    .map(drop),
            ),
            (
                "duplicate member",
                KeySet::parse(br#"{"keys":[],"keys":[]}"#, 8, 16).map(drop),
            ),
        ];
        for (name, result) in cases {
            assert!(result.is_err(), "{name} should be refused");
        }
        // A published private key signs for anyone: the set is broken, whatever else it holds
        // (an encryption key's private half too: its IdP publishes what it should keep).
        for (kty, member) in [
            ("RSA", "d"),
            ("RSA", "p"),
            ("RSA", "q"),
            ("RSA", "dp"),
            ("RSA", "dq"),
            ("RSA", "qi"),
            ("RSA", "oth"),
            ("EC", "d"),
            ("OKP", "d"),
        ] {
            let mut leaked = match kty {
                "RSA" => rsa_jwk(&k.rs_other, "leaked", None),
                "EC" => ec_jwk(&k.es, "leaked"),
                _ => json!({"kty": "OKP", "crv": "Ed25519", "kid": "leaked", "x": b64(&[9u8; 32])}),
            };
            leaked[member] = json!(b64(&[7u8; 32]));
            let e = parse(json!({"keys": [good.clone(), leaked]}))
                .map(drop)
                .unwrap_err();
            assert!(
                e.contains("private") && e.contains(member),
                "{kty} {member}: {e}"
            );
        }
    }
}

/// A stand-in for Envoy's `verify_signature` for ECDSA: parses the DER key and the DER
/// signature this crate hands over, as BoringSSL would.
#[derive(Debug, Default)]
struct HostEcdsa(std::cell::Cell<u32>);

impl native::SignatureBackend for HostEcdsa {
    fn verify(
        &self,
        hash: &'static str,
        spki: &[u8],
        signed: &[u8],
        signature: &[u8],
    ) -> Option<bool> {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        if hash != "sha256" {
            return None;
        }
        let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) else {
            return None;
        };
        self.0.set(self.0.get() + 1);
        let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
            return Some(false);
        };
        Some(key.verify(signed, &sig).is_ok())
    }
}

#[test]
fn the_host_path_gets_correct_keys_and_signatures() {
    let host = HostEcdsa::default();
    let issuers = vec![ISS.to_owned()];
    let audience = vec![vec![AUD.to_owned()]];
    let aud_claim = vec!["aud".to_owned()];
    let rules = rules_with(&issuers, &audience, &aud_claim);
    let run = |t: &str| {
        verify(
            &ParsedToken::parse(t, 16).unwrap(),
            &key_set(),
            &rules,
            NOW,
            &host,
        )
        .map(drop)
    };
    let token = es_token(&claims());
    assert_eq!(run(&token), Ok(()));
    assert_eq!(host.0.get(), 1, "verified by the host, not in Rust");
    // RS256 has no host here (the stand-in declines): the pure-Rust path decides.
    assert_eq!(run(&rs_token(&claims())), Ok(()));
    // Every flipped bit is refused by the host path too.
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    for bit in (0..sig.len() * 8).step_by(7) {
        let mut flipped = sig.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            run(&format!("{input}.{}", b64(&flipped))),
            Err(TokenError::BadSignature),
            "bit {bit}"
        );
    }
    assert_eq!(
        run(&format!("{input}.{}", b64(&[0u8; 64]))),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        run(&format!("{input}.{}", b64(&sig[..63]))),
        Err(TokenError::BadSignature)
    );
}

/// DER lengths past 65535 bytes need a third length byte: `der` used to write 0x82 and the
/// low 16 bits, a malformed key. Unreachable from a JWK set today (moduli are capped at 4096
/// bits before a key is built), but the encoder must be right for every length.
#[test]
fn der_lengths_of_every_size() {
    let header = |der: &[u8]| -> (usize, usize) {
        // (length, header size) of the outer SEQUENCE.
        match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let count = usize::from(n & 0x7f);
                let len = der[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                assert_ne!(der[2], 0, "length not minimal");
                (len, 2 + count)
            }
        }
    };
    for n_len in [1, 100, 200, 256, 512, 70_000] {
        let spki = native::rsa_spki(&vec![0x7f; n_len], &[1, 0, 1]);
        assert_eq!(spki[0], 0x30);
        let (len, head) = header(&spki);
        assert_eq!(len, spki.len() - head, "n of {n_len} bytes");
    }
    let big = native::rsa_spki(&vec![0x7f; 70_000], &[1, 0, 1]);
    assert_eq!(big[1], 0x83, "three length bytes");
    // What real keys get is unchanged: 0x82 and two bytes for a 2048-bit key.
    let c = keys().rs.public_key().to_components();
    let der = native::rsa_spki(&c.n, &c.e);
    assert_eq!(&der[..2], &[0x30, 0x82]);
    assert_eq!(
        RS256PublicKey::from_der(&der).unwrap().to_components().n,
        c.n
    );
}

#[test]
fn the_old_rules_hold_on_the_host_path_too() {
    // A well-signed ES256 token the host verifies, whose payload breaks a rule jwt-simple
    // had (crosscheck::the_old_rules_every_path_keeps): one verdict on every path.
    let host = HostEcdsa::default();
    let issuers = vec![ISS.to_owned()];
    let rules = rules_with(&issuers, &[], &[]);
    for (name, value) in [("sub", json!(1)), ("jti", json!([])), ("aud", json!([1]))] {
        let token = es_token(&claims_with(json!({ name: value })));
        let parsed = ParsedToken::parse(&token, 16).unwrap();
        assert_eq!(
            verify(&parsed, &key_set(), &rules, NOW, &host).map(drop),
            Err(TokenError::BadPayload),
            "{name}"
        );
    }
}

/// ES256 signatures whose r or s has leading zero bytes or a high top bit: the DER given to
/// the host must verify exactly when the pure-Rust path does.
#[test]
fn es256_signatures_with_leading_zeros_or_high_bits_agree_on_both_paths() {
    let host = HostEcdsa::default();
    let issuers = vec![ISS.to_owned()];
    let rules = rules_with(&issuers, &[], &[]);
    let (mut zero, mut high) = (0, 0);
    for i in 0..1500u64 {
        let token = es_token(&claims_with(json!({ "jti": format!("t{i}") })));
        let (_, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let interesting = sig[0] == 0 || sig[32] == 0;
        if interesting {
            zero += 1;
        } else if sig[0] & 0x80 != 0 && sig[32] & 0x80 != 0 {
            high += 1;
            if high > 5 {
                continue;
            }
        } else {
            continue;
        }
        let parsed = ParsedToken::parse(&token, 16).unwrap();
        assert!(
            verify(&parsed, &key_set(), &rules, NOW, &host).is_ok(),
            "{token}"
        );
        assert!(verify(&parsed, &key_set(), &rules, NOW, &native::PureRust).is_ok());
    }
    assert!(zero > 0, "no signature with a leading zero byte drawn");
}

/// HS256 over raw header and payload bytes (which need not be UTF-8).
fn hs_bytes(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let tag = hmac_sha256::HMAC::mac(input.as_bytes(), HS_SECRET);
    format!("{input}.{}", b64(&tag))
}

/// REFERENCE §8, one spelling per token: padding on any segment, `+` or `/` alone, any
/// whitespace, and trailing bits that a lenient decoder would ignore are each refused, on a
/// token that verifies as sent (so a refusal is the spelling's, not the signature's).
#[test]
fn every_non_canonical_spelling_of_a_valid_token_is_refused() {
    // A token with both `-` and `_` in its signature, so that each substitution alone bites.
    let token = (0..200)
        .map(|i| hs_with_payload(&claims_with(json!({ "jti": format!("j{i}") })).to_string()))
        .find(|t| {
            let sig = t.rsplit('.').next().unwrap();
            sig.contains('-') && sig.contains('_')
        })
        .expect("a signature with both - and _");
    assert!(check(&token).is_ok());
    let segments: Vec<&str> = token.split('.').collect();
    let with_segment = |i: usize, s: &str| {
        let mut parts = segments.clone();
        parts[i] = s;
        parts.join(".")
    };
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut spellings = vec![
        ("'+' for '-'", format!("{input}.{}", sig.replace('-', "+"))),
        ("'/' for '_'", format!("{input}.{}", sig.replace('_', "/"))),
    ];
    for (i, name) in ["header", "payload", "signature"].iter().enumerate() {
        for pad in ["=", "=="] {
            spellings.push((name, with_segment(i, &format!("{}{pad}", segments[i]))));
        }
        for ws in [" ", "\t", "\n", "\r"] {
            let s = segments[i];
            spellings.push((
                name,
                with_segment(i, &format!("{}{ws}{}", &s[..4], &s[4..])),
            ));
            spellings.push((name, with_segment(i, &format!("{s}{ws}"))));
        }
    }
    // The signature is 32 bytes: 43 characters, the last carrying 2 unused bits. Setting
    // one of them spells the same tag, which would verify under a lenient decoder.
    assert_eq!(sig.len() % 4, 3);
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(sig.chars().last().unwrap()).unwrap();
    assert_eq!(last & 0b11, 0, "canonical: the unused bits are zero");
    for bits in 1..=3 {
        let bent = alphabet.as_bytes()[last | bits] as char;
        let t = format!("{input}.{}{bent}", &sig[..sig.len() - 1]);
        spellings.push(("trailing bits", t));
    }
    for (name, t) in &spellings {
        assert_ne!(t, &token);
        assert_eq!(
            check(t).unwrap_err(),
            TokenError::BadEncoding,
            "{name}: {t:?}"
        );
    }
}

/// REFERENCE §8: NUL and invalid UTF-8 inside the JSON of a token that is otherwise well
/// signed: a malformed header or payload, never a token.
#[test]
fn nul_and_invalid_utf8_in_the_json_are_refused() {
    let header = br#"{"alg":"HS256","kid":"hs-1","typ":"JWT"}"#;
    let payload = claims().to_string();
    assert!(check(&hs_bytes(header, payload.as_bytes())).is_ok());
    let in_string = |bytes: &[u8]| {
        // Inside the value of `sub`, where any text would be a valid claim.
        let p = payload.replacen("\"sub\":\"client-1\"", "\"sub\":\"client-1@\"", 1);
        let at = p.find('@').unwrap();
        [&p.as_bytes()[..at], bytes, &p.as_bytes()[at + 1..]].concat()
    };
    for bad in [
        &b"\xe9"[..],
        b"\xff\xfe",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\x00",
    ] {
        assert_eq!(
            check(&hs_bytes(header, &in_string(bad))).unwrap_err(),
            TokenError::BadPayload,
            "payload with {bad:?}"
        );
        let h = [
            &br#"{"alg":"HS256","kid":"hs-1","typ":"JWT","x":""#[..],
            bad,
            b"\"}",
        ]
        .concat();
        assert_eq!(
            check(&hs_bytes(&h, payload.as_bytes())).unwrap_err(),
            TokenError::BadHeader,
            "header with {bad:?}"
        );
    }
    // Escaped, NUL is text: it makes no claim that matches (an issuer) or that may go
    // upstream (the credential claim).
    let t = hs_with_payload(&claims_with(json!({"iss": format!("{ISS}\u{0}")})).to_string());
    assert_eq!(check(&t).unwrap_err(), TokenError::WrongIssuer);
    let nul_client = check(&hs_with_payload(
        &claims_with(json!({"client_id": "client-1\u{0}"})).to_string(),
    ))
    .unwrap();
    assert_eq!(
        nul_client
            .credential_values(&["client_id".into()])
            .unwrap_err(),
        TokenError::BadCredentialClaim
    );
}

/// REFERENCE §8, deeply nested JSON in the header (the payload's limit is tested above): a
/// header nests at most four levels.
#[test]
fn a_deeply_nested_header_is_refused() {
    let nested = |depth: usize| {
        format!(
            r#"{{"alg":"HS256","kid":"hs-1","typ":"JWT","x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    assert!(check(&hs_with_header(&nested(3))).is_ok());
    for depth in [4, 64, 10_000] {
        assert_eq!(
            check(&hs_with_header(&nested(depth))).unwrap_err(),
            TokenError::BadHeader,
            "{depth}"
        );
    }
}

/// REFERENCE §8: `nbf` and `iat` of null are as malformed as `exp` of null (the shape test
/// above removes a claim given as null, so these are built as text).
#[test]
fn null_time_claims_are_malformed_not_absent() {
    for claim in ["exp", "nbf", "iat"] {
        let mut c = claims();
        c[claim] = Value::Null;
        let t = hs_with_payload(&c.to_string());
        assert_eq!(check(&t).unwrap_err(), TokenError::BadTimeClaim, "{claim}");
    }
}

/// REFERENCE §8: the header's `jwk`, `jku`, `x5u` and `x5c` are never used. A token the
/// attacker signed with their own key, naming the issuer's kid and pointing at (or
/// carrying) the attacker's key, is refused; a real embedded JWK (an object) is a malformed
/// header before any key is looked at.
#[test]
fn keys_named_or_carried_in_the_header_are_never_used() {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let signer = |pair: &RS256KeyPair| {
        let der = pair.to_der().unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_der(&der))
            .unwrap();
        rsa::pkcs1v15::SigningKey::<hmac_sha256::Hash>::new(key)
    };
    let (issuer, attacker) = (signer(&keys().rs), signer(&keys().rs_other));
    let c = keys().rs_other.public_key().to_components();
    let jwk = json!({"kty": "RSA", "kid": "rs-1", "n": b64(&c.n), "e": b64(&c.e)});
    let payload = b64(claims().to_string().as_bytes());
    let signed = |key: &rsa::pkcs1v15::SigningKey<hmac_sha256::Hash>, extra: &str| {
        let header = format!(r#"{{"alg":"RS256","kid":"rs-1","typ":"JWT",{extra}}}"#);
        let input = format!("{}.{payload}", b64(header.as_bytes()));
        format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_vec()))
    };
    for (name, extra, want) in [
        ("jwk", format!(r#""jwk":{jwk}"#), TokenError::BadHeader),
        (
            "jku",
            r#""jku":"https://evil.example/jwks""#.to_owned(),
            TokenError::BadSignature,
        ),
        (
            "x5u",
            r#""x5u":"https://evil.example/cert""#.to_owned(),
            TokenError::BadSignature,
        ),
        (
            "x5c",
            r#""x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]"#.to_owned(),
            TokenError::BadSignature,
        ),
    ] {
        if want == TokenError::BadSignature {
            // Control: signed with the issuer's key, the same header verifies.
            assert!(check(&signed(&issuer, &extra)).is_ok(), "{name}");
        }
        assert_eq!(
            check(&signed(&attacker, &extra)).unwrap_err(),
            want,
            "{name}"
        );
    }
}

#[test]
fn every_verified_algorithm_is_read_from_the_header_by_its_exact_name() {
    let others = [
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];
    for alg in RSA_ALGS.into_iter().chain(others) {
        assert_eq!(Alg::from_name(alg.name()), Some(alg), "{alg:?}");
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, alg.name());
        let token = hs_raw(&header, &claims().to_string());
        assert_eq!(ParsedToken::parse(&token, 16).unwrap().alg, alg, "{alg:?}");
    }
}

#[test]
fn a_token_error_displays_as_its_description() {
    for e in [
        TokenError::Expired,
        TokenError::WrongAudience,
        TokenError::BadSignature,
    ] {
        assert_eq!(e.to_string(), e.description());
    }
    assert_eq!(TokenError::Expired.to_string(), "token has expired");
}
