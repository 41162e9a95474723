//! Signature verification by the host (Envoy's `verify_signature` foreign function, native
//! BoringSSL) for the algorithms it can do: RS256/384/512 and ES256/384. Verification in
//! Wasm costs about 0.15 ms per RS256 token (`pkcs1`) and a millisecond per ES256 token; the
//! host's is tens of microseconds. This module builds what the host needs (DER SubjectPublicKeyInfo, DER
//! ECDSA signatures) and leaves the call itself to the adapter.

use super::Alg;

/// Something that verifies signatures outside the VM.
pub trait SignatureBackend: std::fmt::Debug {
    /// `Some(valid)`, or `None` when the backend cannot do this (then the pure-Rust path
    /// decides). `hash` is `sha256`/`sha384`/`sha512`.
    fn verify(
        &self,
        hash: &'static str,
        spki_der: &[u8],
        signed: &[u8],
        signature: &[u8],
    ) -> Option<bool>;
}

/// No backend: always the pure-Rust path.
#[derive(Debug, Default)]
pub struct PureRust;

impl SignatureBackend for PureRust {
    fn verify(&self, _: &'static str, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
        None
    }
}

/// The hash of an algorithm the host verifies, `None` for those it does not (PS* need PSS
/// padding, EdDSA takes no digest, HS* are local).
pub fn host_hash(alg: Alg) -> Option<&'static str> {
    match alg {
        Alg::RS256 | Alg::ES256 => Some("sha256"),
        Alg::RS384 | Alg::ES384 => Some("sha384"),
        Alg::RS512 => Some("sha512"),
        _ => None,
    }
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len().saturating_add(6));
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        // Long form: 0x80 | the number of length bytes, then the length, big-endian and
        // minimal (0x81 up to 255 bytes, 0x82 up to 65535, and so on).
        let bytes = len.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(0);
        let significant = bytes.get(first..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from unsigned big-endian bytes (leading zeros dropped, a zero byte added
/// when the top bit is set).
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let trimmed = bytes.get(first..).unwrap_or(&[0]);
    let trimmed = if trimmed.is_empty() {
        &[0u8][..]
    } else {
        trimmed
    };
    let mut content = Vec::with_capacity(trimmed.len().saturating_add(1));
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len().saturating_add(1));
    bits.push(0);
    bits.extend_from_slice(key);
    let mut body = der(0x30, algorithm);
    body.extend_from_slice(&der(0x03, &bits));
    der(0x30, &body)
}

/// SubjectPublicKeyInfo of an RSA key (modulus, exponent).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut algorithm = der(0x06, OID_RSA);
    algorithm.extend_from_slice(&[0x05, 0x00]);
    let mut key = der_uint(n);
    key.extend_from_slice(&der_uint(e));
    spki(&algorithm, &der(0x30, &key))
}

/// SubjectPublicKeyInfo of an EC key, from its uncompressed point (0x04 ‖ x ‖ y).
pub fn ec_spki(alg: Alg, point: &[u8]) -> Option<Vec<u8>> {
    let curve = match alg {
        Alg::ES256 => OID_P256,
        Alg::ES384 => OID_P384,
        _ => return None,
    };
    let mut algorithm = der(0x06, OID_EC);
    algorithm.extend_from_slice(&der(0x06, curve));
    Some(spki(&algorithm, point))
}

/// A JWS ECDSA signature (r ‖ s, each exactly the curve size) as DER `ECDSA-Sig-Value`.
/// Anything but the exact JWS length is refused here (RFC 7518 §3.4): a DER signature in
/// a JWS is malformed, not an alternative spelling.
pub fn ecdsa_der(alg: Alg, raw: &[u8]) -> Option<Vec<u8>> {
    let (size, total) = match alg {
        Alg::ES256 => (32, 64),
        Alg::ES384 => (48, 96),
        _ => return None,
    };
    if raw.len() != total {
        return None;
    }
    let (r, s) = raw.split_at(size);
    if r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
        return None;
    }
    let mut body = der_uint(r);
    body.extend_from_slice(&der_uint(s));
    Some(der(0x30, &body))
}

/// The `VerifySignatureArguments` protobuf Envoy's `verify_signature` takes:
/// hash_function = 1, public_key = 2 (DER), signature = 3, text = 4.
pub fn verify_arguments(hash: &str, spki_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        spki_der
            .len()
            .saturating_add(signature.len())
            .saturating_add(text.len())
            .saturating_add(32),
    );
    for (field, bytes) in [
        (1u8, hash.as_bytes()),
        (2, spki_der),
        (3, signature),
        (4, text),
    ] {
        out.push((field << 3) | 2);
        let mut len = bytes.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(bytes);
    }
    out
}

/// Reads `VerifySignatureResult.result` (field 1, varint). Anything unexpected is `None`.
pub fn verify_result(bytes: &[u8]) -> Option<bool> {
    let mut i = 0usize;
    let mut result = false;
    while let Some(&tag) = bytes.get(i) {
        i = i.saturating_add(1);
        match (tag >> 3, tag & 7) {
            (1, 0) => {
                let v = *bytes.get(i)?;
                i = i.saturating_add(1);
                result = v == 1;
            }
            (_, 2) => {
                let len = usize::from(*bytes.get(i)?);
                if len >= 0x80 {
                    return Some(result);
                }
                i = i.saturating_add(1).saturating_add(len);
            }
            _ => return None,
        }
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::fixtures::keys;
    use jwt_simple::prelude::*;

    #[test]
    fn spki_matches_what_crypto_libraries_parse() {
        let k = keys();
        let c = k.rs.public_key().to_components();
        let der = rsa_spki(&c.n, &c.e);
        let parsed = RS256PublicKey::from_der(&der).expect("SPKI parses");
        assert_eq!(parsed.to_components().n, c.n);
        let point = k.es.public_key().public_key().to_bytes_uncompressed();
        let der = ec_spki(Alg::ES256, &point).unwrap();
        let parsed = ES256PublicKey::from_der(&der).expect("EC SPKI parses");
        assert_eq!(parsed.public_key().to_bytes_uncompressed(), point);
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        let token = crate::jwt::fixtures::es_token(&crate::jwt::fixtures::claims());
        let (_, sig) = token.rsplit_once('.').unwrap();
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let der = ecdsa_der(Alg::ES256, &raw).unwrap();
        let from_der = p256::ecdsa::Signature::from_der(&der).expect("DER signature");
        let from_raw = p256::ecdsa::Signature::from_slice(&raw).unwrap();
        assert_eq!(from_der, from_raw);
        assert_eq!(ecdsa_der(Alg::ES256, &raw[..63]), None);
        assert_eq!(ecdsa_der(Alg::ES256, &[0; 64]), None);
        assert_eq!(ecdsa_der(Alg::ES384, &raw), None);
        // High bits get a leading zero; leading zeros are trimmed.
        let mut odd = vec![0u8; 64];
        odd[0] = 0x80;
        odd[63] = 1;
        assert_eq!(
            ecdsa_der(Alg::ES256, &odd).unwrap()[..6],
            [0x30, 0x26, 0x02, 0x21, 0x00, 0x80]
        );
        assert!(ecdsa_der(Alg::ES256, &odd)
            .unwrap()
            .ends_with(&[0x02, 0x01, 0x01]));
    }

    #[test]
    fn protobuf_round_trip() {
        let args = verify_arguments("sha256", &[1, 2], &[3; 200], b"x");
        assert_eq!(
            &args[..10],
            &[0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', 0x12, 2]
        );
        assert_eq!(&args[12..15], &[0x1a, 0xc8, 0x01], "varint length 200");
        assert_eq!(verify_result(&[0x08, 0x01]), Some(true));
        assert_eq!(
            verify_result(&[0x08, 0x00, 0x12, 0x03, b'b', b'a', b'd']),
            Some(false)
        );
        assert_eq!(verify_result(&[0x12, 0x03, b'b', b'a', b'd']), Some(false));
        assert_eq!(verify_result(&[]), Some(false));
        assert_eq!(verify_result(&[0x0d]), None);
    }
}
