//! `jwt::native`: what the filter hands Envoy's `verify_signature` and reads back.
//!
//! - `ecdsa_der` on arbitrary bytes: `Some` exactly for JWS-sized signatures with non-zero
//!   r and s, and then the same signature as p256/p384 read it from the raw form;
//! - `rsa_spki` / `ec_spki` on arbitrary components: well-formed DER, and for a real RSA
//!   modulus the key jwt-simple reads back has the same components;
//! - `verify_arguments`: the protobuf decodes back to its four fields;
//! - `verify_result` on arbitrary bytes: never panics, `Some(true)` only if a `result` field
//!   said 1.
//!
//! Input: first byte selects nothing in particular; every check runs on every input.

#![no_main]

use app_auth_filter::jwt::native;
use app_auth_filter::jwt::Alg;
use jwt_simple::prelude::RS256PublicKey;
use libfuzzer_sys::fuzz_target;

/// Reads one DER TLV at the start of `b`: (tag, content, rest). Strict: minimal lengths.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (usize::from(first), b)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 8 || b.len() < n {
            return None;
        }
        let (bytes, b) = b.split_at(n);
        if bytes[0] == 0 {
            return None; // not minimal
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | usize::from(*x));
        if len < 0x80 {
            return None; // not minimal
        }
        (len, b)
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// A DER INTEGER's content is minimal and non-negative; returns its magnitude.
fn der_uint(content: &[u8]) -> &[u8] {
    assert!(!content.is_empty());
    if content.len() > 1 {
        assert!(
            !(content[0] == 0 && content[1] & 0x80 == 0),
            "non-minimal INTEGER"
        );
    }
    assert_eq!(content[0] & 0x80, 0, "negative INTEGER");
    if content[0] == 0 && content.len() > 1 {
        &content[1..]
    } else {
        content
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

fn check_ecdsa(alg: Alg, raw: &[u8]) {
    let size = if alg == Alg::ES256 { 32 } else { 48 };
    let der = native::ecdsa_der(alg, raw);
    let expect_some = raw.len() == 2 * size
        && raw[..size].iter().any(|b| *b != 0)
        && raw[size..].iter().any(|b| *b != 0);
    assert_eq!(
        der.is_some(),
        expect_some,
        "ecdsa_der({alg:?}, {} bytes)",
        raw.len()
    );
    let Some(der) = der else { return };
    let (tag, body, rest) = tlv(&der).expect("DER SEQUENCE");
    assert!(tag == 0x30 && rest.is_empty());
    let (t1, r, body) = tlv(body).expect("r");
    let (t2, s, body) = tlv(body).expect("s");
    assert!(t1 == 2 && t2 == 2 && body.is_empty());
    assert_eq!(der_uint(r), trim(&raw[..size]));
    assert_eq!(der_uint(s), trim(&raw[size..]));
    // The crypto library reads the DER form exactly as the raw JWS form.
    if alg == Alg::ES256 {
        let a = p256::ecdsa::Signature::from_slice(raw).ok();
        let b = p256::ecdsa::Signature::from_der(&der).ok();
        assert_eq!(a, b, "p256 raw vs DER");
    } else {
        let a = p384::ecdsa::Signature::from_slice(raw).ok();
        let b = p384::ecdsa::Signature::from_der(&der).ok();
        assert_eq!(a, b, "p384 raw vs DER");
    }
}

fn check_rsa_spki(n: &[u8], e: &[u8]) {
    let der = native::rsa_spki(n, e);
    let (tag, body, rest) = tlv(&der).expect("SPKI");
    assert!(tag == 0x30 && rest.is_empty());
    let (tag, _alg, body) = tlv(body).expect("AlgorithmIdentifier");
    assert_eq!(tag, 0x30);
    let (tag, bits, body) = tlv(body).expect("BIT STRING");
    assert!(tag == 0x03 && body.is_empty() && bits.first() == Some(&0));
    let (tag, key, rest) = tlv(&bits[1..]).expect("RSAPublicKey");
    assert!(tag == 0x30 && rest.is_empty());
    let (t1, dn, key) = tlv(key).expect("n");
    let (t2, de, key) = tlv(key).expect("e");
    assert!(t1 == 2 && t2 == 2 && key.is_empty());
    let (dn, de) = (der_uint(dn), der_uint(de));
    assert_eq!(trim(dn), trim(n));
    assert_eq!(trim(de), trim(e));
    if let Ok(k) = RS256PublicKey::from_der(&der) {
        let c = k.to_components();
        assert_eq!(trim(&c.n), trim(n));
        assert_eq!(trim(&c.e), trim(e));
    }
}

/// Decodes `verify_arguments`' protobuf: (field, bytes) pairs, all length-delimited.
fn fields(mut b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        assert_eq!(tag & 7, 2, "wire type");
        let mut len = 0usize;
        let mut shift = 0;
        let mut rest = rest;
        loop {
            let (&byte, r) = rest.split_first().expect("varint");
            rest = r;
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        assert!(rest.len() >= len);
        out.push((tag >> 3, &rest[..len]));
        b = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };

    check_ecdsa(Alg::ES256, data);
    check_ecdsa(Alg::ES384, data);
    assert_eq!(native::ecdsa_der(Alg::RS256, data), None);

    let split = usize::from(mode).min(data.len());
    let (a, b) = data.split_at(split);
    check_rsa_spki(b, a);
    for alg in [Alg::ES256, Alg::ES384] {
        let mut point = vec![0x04];
        point.extend_from_slice(b);
        let der = native::ec_spki(alg, &point).expect("ec_spki for ES*");
        let (tag, _, rest) = tlv(&der).expect("EC SPKI");
        assert!(tag == 0x30 && rest.is_empty());
    }
    assert_eq!(native::ec_spki(Alg::RS256, b), None);

    let hash = ["sha256", "sha384", "sha512"][usize::from(mode % 3)];
    let args = native::verify_arguments(hash, a, b, data);
    assert_eq!(
        fields(&args),
        vec![(1, hash.as_bytes()), (2, a), (3, b), (4, data)]
    );

    if native::verify_result(data) == Some(true) {
        assert!(
            data.windows(2).any(|w| w == [0x08, 0x01]),
            "true from nowhere"
        );
    }
});
