//! JWK sets (RFC 7517): parsed once per fetch into ready-to-use verifying keys, indexed by
//! `kid`. A set is taken whole or refused whole.

use super::{ecdsa, pkcs1};
use super::{Alg, TokenError};
use crate::json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac_sha256::Hash as Sha256;
use hmac_sha512::sha384::Hash as Sha384;
use serde_json::{Map, Value};

/// A verifying key for exactly one algorithm: the key types and calls of the crates
/// jwt-simple's pure-Rust backend used (ed25519-compact, HMAC with a constant-time compare),
/// without its token parsing: the token was parsed and its claims checked by this crate
/// already. RSA and ECDSA are the exceptions: `super::pkcs1` verifies RS* eight times and PS*
/// six times faster in Wasm than the `rsa` crate jwt-simple used, and `super::ecdsa` ES256
/// 2.7 times faster than the `ecdsa` crate (on p256/p384's arithmetic, with each key's
/// multiples kept).
pub enum Verifier {
    RS256(pkcs1::PublicKey),
    RS384(pkcs1::PublicKey),
    RS512(pkcs1::PublicKey),
    PS256(pkcs1::PublicKey),
    PS384(pkcs1::PublicKey),
    PS512(pkcs1::PublicKey),
    ES256(ecdsa::Key<p256::NistP256>),
    ES384(ecdsa::Key<p384::NistP384>),
    EdDSA(ed25519_compact::PublicKey),
    HS256(Vec<u8>),
    HS384(Vec<u8>),
    HS512(Vec<u8>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({})", self.alg().name())
    }
}

impl Verifier {
    pub fn alg(&self) -> Alg {
        match self {
            Verifier::RS256(_) => Alg::RS256,
            Verifier::RS384(_) => Alg::RS384,
            Verifier::RS512(_) => Alg::RS512,
            Verifier::PS256(_) => Alg::PS256,
            Verifier::PS384(_) => Alg::PS384,
            Verifier::PS512(_) => Alg::PS512,
            Verifier::ES256(_) => Alg::ES256,
            Verifier::ES384(_) => Alg::ES384,
            Verifier::EdDSA(_) => Alg::EdDSA,
            Verifier::HS256(_) => Alg::HS256,
            Verifier::HS384(_) => Alg::HS384,
            Verifier::HS512(_) => Alg::HS512,
        }
    }

    /// Whether `signature` (the decoded third segment) signs `signed` (the first two
    /// segments, as received). RSA signatures must be as long as the modulus; PSS salts as
    /// long as the digest; ECDSA signatures are r || s, each in 1..n; Ed25519 refuses
    /// small-order results; MACs are compared in constant time.
    pub fn verify(&self, signed: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::RS256(k) => k.verify(pkcs1::Hash::Sha256, signed, signature),
            Verifier::RS384(k) => k.verify(pkcs1::Hash::Sha384, signed, signature),
            Verifier::RS512(k) => k.verify(pkcs1::Hash::Sha512, signed, signature),
            Verifier::PS256(k) => k.verify_pss(pkcs1::Hash::Sha256, signed, signature),
            Verifier::PS384(k) => k.verify_pss(pkcs1::Hash::Sha384, signed, signature),
            Verifier::PS512(k) => k.verify_pss(pkcs1::Hash::Sha512, signed, signature),
            Verifier::ES256(k) => k.verify_digest(&Sha256::hash(signed), signature),
            Verifier::ES384(k) => k.verify_digest(&Sha384::hash(signed), signature),
            Verifier::EdDSA(k) => ed25519_compact::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(signed, &s).is_ok()),
            Verifier::HS256(k) => same(&hmac_sha256::HMAC::mac(signed, k), signature),
            Verifier::HS384(k) => same(&hmac_sha512::sha384::HMAC::mac(signed, k), signature),
            Verifier::HS512(k) => same(&hmac_sha512::HMAC::mac(signed, k), signature),
        }
    }

    /// Takes over what `older` worked out for the same key (ECDSA keys' multiples).
    fn inherit(&self, older: &Verifier) {
        match (self, older) {
            (Verifier::ES256(new), Verifier::ES256(old)) => new.inherit(old),
            (Verifier::ES384(new), Verifier::ES384(old)) => new.inherit(old),
            _ => {}
        }
    }
}

/// Constant-time equality (of a MAC and a tag); different lengths are simply unequal.
fn same(mac: &[u8], tag: &[u8]) -> bool {
    mac.len() == tag.len() && mac.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Why a well-formed JWK's key material is refused (the words jwt-simple used).
const INVALID_KEY: &str = "Invalid public key";

/// One JWK: its `kid` and a verifier for each algorithm it may be used with.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    verifiers: Vec<Verifier>,
    /// DER SubjectPublicKeyInfo (RSA and EC keys), for verification by the host.
    spki: Option<Vec<u8>>,
}

/// The key chosen for a token: the pure-Rust verifier, and the DER key for the host.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub verifier: &'a Verifier,
    pub spki: Option<&'a [u8]>,
}

impl Key {
    fn for_alg(&self, alg: Alg) -> Option<&Verifier> {
        self.verifiers.iter().find(|v| v.alg() == alg)
    }
}

/// An issuer's signing keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    by_kid: crate::cache::KeyedMap<String, usize>,
}

/// The members of an RSA, EC or OKP JWK that are its private key (RFC 7518 §6.2.2, §6.3.2;
/// RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// How many keys of a set were taken and skipped, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub usable: usize,
    pub skipped: usize,
}

impl KeySet {
    /// Parses a JWK set document. Refused whole (never partly taken): not JSON, not
    /// `{"keys": [...]}`, more than `max_keys` keys, a key with malformed material (bad
    /// base64, a point off its curve), an RSA, EC or OKP key with its private members, two
    /// keys with one `kid`, or no usable key at all. Keys that are well-formed but not for us
    /// (encryption keys, unsupported types or curves, RSA under 2048 bits) are skipped.
    pub fn parse(
        body: &[u8],
        max_keys: usize,
        max_depth: usize,
    ) -> Result<(KeySet, Parsed), String> {
        let doc = json::parse_strict(body, max_depth).map_err(|e| format!("not JSON: {e}"))?;
        let Some(Value::Array(items)) = doc.get("keys") else {
            return Err("has no \"keys\" array".into());
        };
        if items.len() > max_keys {
            return Err(format!(
                "has {} keys, more than the limit of {max_keys}",
                items.len()
            ));
        }
        let mut set = KeySet::default();
        let mut skipped: usize = 0;
        for (i, item) in items.iter().enumerate() {
            let Value::Object(jwk) = item else {
                return Err(format!("keys[{i}] is not an object"));
            };
            let kid = match jwk.get("kid") {
                None => None,
                Some(Value::String(k)) => Some(k.clone()),
                Some(_) => return Err(format!("keys[{i}].kid is not a string")),
            };
            // A JWK set served for verification holds public keys. One with its private half
            // published signs for anyone who read it: the set is broken, not partly usable.
            if member(jwk, "kty")? != Some("oct") {
                if let Some(private) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
                    return Err(format!(
                        "keys[{i}] publishes its private key ({private:?}): anyone can sign with it"
                    ));
                }
            }
            let (verifiers, spki) = verifiers(jwk).map_err(|e| format!("keys[{i}] {e}"))?;
            if verifiers.is_empty() {
                skipped = skipped.saturating_add(1);
                continue;
            }
            if let Some(kid) = &kid {
                if set.by_kid.insert(kid.clone(), set.keys.len()).is_some() {
                    return Err(format!("keys[{i}] repeats kid {kid:?}"));
                }
            }
            set.keys.push(Key {
                kid,
                verifiers,
                spki,
            });
        }
        if set.keys.is_empty() {
            return Err("has no usable signing key".into());
        }
        let parsed = Parsed {
            usable: set.keys.len(),
            skipped,
        };
        Ok((set, parsed))
    }

    /// Takes over what the set it replaces worked out for keys both hold (see
    /// `ecdsa::Key::inherit`); nothing else of `older` is kept.
    pub fn inherit(&self, older: &KeySet) {
        for verifier in self.keys.iter().flat_map(|k| &k.verifiers) {
            for old in older.keys.iter().flat_map(|k| &k.verifiers) {
                verifier.inherit(old);
            }
        }
    }

    /// Makes the multiples of its ECDSA keys, as checking a signature with each does.
    #[cfg(test)]
    pub fn make_ecdsa_multiples(&self) {
        for verifier in self.keys.iter().flat_map(|k| &k.verifiers) {
            // r = s = 0x0101…, in range on both curves; the wrong length returns at once.
            verifier.verify(b"", &[1; 64]);
            verifier.verify(b"", &[1; 96]);
        }
    }

    /// How many of its ECDSA keys have their multiples made.
    #[cfg(test)]
    pub fn ecdsa_multiples_made(&self) -> usize {
        self.keys
            .iter()
            .flat_map(|k| &k.verifiers)
            .filter(|v| match v {
                Verifier::ES256(k) => k.has_multiples(),
                Verifier::ES384(k) => k.has_multiples(),
                _ => false,
            })
            .count()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The key that must verify a token with this `kid` and `alg`. `kid` is only ever a map
    /// key. Without a `kid`, the one key that fits `alg`; several is ambiguous (refused
    /// rather than tried one by one).
    pub fn select(&self, kid: Option<&str>, alg: Alg) -> Result<Selected<'_>, TokenError> {
        fn selected(key: &Key, alg: Alg) -> Option<Selected<'_>> {
            Some(Selected {
                verifier: key.for_alg(alg)?,
                spki: key.spki.as_deref(),
            })
        }
        match kid {
            Some(kid) => {
                let key = self
                    .by_kid
                    .get(kid)
                    .and_then(|i| self.keys.get(*i))
                    .ok_or(TokenError::UnknownKid)?;
                selected(key, alg).ok_or(TokenError::KeyAlgMismatch)
            }
            None => {
                let mut fitting = self.keys.iter().filter_map(|k| selected(k, alg));
                let first = fitting.next().ok_or(TokenError::KeyAlgMismatch)?;
                if fitting.next().is_some() {
                    return Err(TokenError::AmbiguousKey);
                }
                Ok(first)
            }
        }
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

fn bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = member(jwk, name)?.ok_or_else(|| format!("has no {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name} is not base64url"))
}

/// Every algorithm an RSA key verifies (one of them, when the JWK names its `alg`).
pub(crate) const RSA_ALGS: [Alg; 6] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
];

/// The verifiers of one JWK and, for RSA and EC keys, its DER SubjectPublicKeyInfo.
fn verifiers(jwk: &Map<String, Value>) -> Result<(Vec<Verifier>, Option<Vec<u8>>), String> {
    let verifiers = verifiers_of(jwk)?;
    let spki = match verifiers.first().map(Verifier::alg) {
        None => None,
        Some(Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512) => Some(
            super::native::rsa_spki(&bytes(jwk, "n")?, &bytes(jwk, "e")?),
        ),
        Some(alg @ (Alg::ES256 | Alg::ES384)) => {
            let mut point = vec![0x04];
            point.extend_from_slice(&bytes(jwk, "x")?);
            point.extend_from_slice(&bytes(jwk, "y")?);
            super::native::ec_spki(alg, &point)
        }
        Some(_) => None,
    };
    Ok((verifiers, spki))
}

/// The verifiers of one JWK. Empty when the key is not a signing key we can use.
fn verifiers_of(jwk: &Map<String, Value>) -> Result<Vec<Verifier>, String> {
    let kty = member(jwk, "kty")?.ok_or("has no kty")?;
    if let Some(use_) = member(jwk, "use")? {
        if use_ != "sig" {
            return Ok(Vec::new());
        }
    }
    match jwk.get("key_ops") {
        Some(Value::Array(ops)) if !ops.iter().any(|o| o.as_str() == Some("verify")) => {
            return Ok(Vec::new());
        }
        None | Some(Value::Array(_)) => {}
        Some(_) => return Err("key_ops is not an array".into()),
    }
    // A key that names its algorithm is used for that algorithm only.
    let named = match member(jwk, "alg")? {
        None => None,
        Some(name) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            None => return Ok(Vec::new()),
        },
    };
    let wanted = |candidates: &[Alg]| -> Vec<Alg> {
        match named {
            Some(alg) if candidates.contains(&alg) => vec![alg],
            Some(_) => Vec::new(),
            None => candidates.to_vec(),
        }
    };
    match kty {
        "RSA" => {
            let n = bytes(jwk, "n")?;
            let e = bytes(jwk, "e")?;
            let modulus_bits = significant_bits(&n);
            // RFC 8725 practice (and what jwt-simple took): 2048..=4096-bit keys, e = 65537.
            if !(2048..=4096).contains(&modulus_bits) || e != [1, 0, 1] {
                return Ok(Vec::new());
            }
            let algs = wanted(&RSA_ALGS);
            if algs.is_empty() {
                return Ok(Vec::new());
            }
            // An even modulus is no RSA key: the set is malformed.
            if n.last().is_none_or(|b| b & 1 == 0) {
                return Err(INVALID_KEY.into());
            }
            // The checks above imply every one the `rsa` crate made (n of at most 4096 bits,
            // odd and above e; e odd, 2 ≤ e < 2³³): the keys accepted are those jwt-simple
            // accepted.
            let key = pkcs1::PublicKey::new(&n).ok_or(INVALID_KEY)?;
            Ok(algs
                .into_iter()
                .map(|alg| {
                    let key = key.clone();
                    match alg {
                        Alg::RS256 => Verifier::RS256(key),
                        Alg::RS384 => Verifier::RS384(key),
                        Alg::RS512 => Verifier::RS512(key),
                        Alg::PS256 => Verifier::PS256(key),
                        Alg::PS384 => Verifier::PS384(key),
                        _ => Verifier::PS512(key),
                    }
                })
                .collect())
        }
        "EC" => {
            let (alg, size) = match member(jwk, "crv")? {
                Some("P-256") => (Alg::ES256, 32),
                Some("P-384") => (Alg::ES384, 48),
                _ => return Ok(Vec::new()),
            };
            if wanted(&[alg]).is_empty() {
                return Ok(Vec::new());
            }
            let x = bytes(jwk, "x")?;
            let y = bytes(jwk, "y")?;
            if x.len() != size || y.len() != size {
                return Err("has coordinates of the wrong length".into());
            }
            let mut point = Vec::with_capacity(97);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // from_sec1 refuses points that are not on the curve, and the identity.
            let v = match alg {
                Alg::ES256 => {
                    Verifier::ES256(ecdsa::Key::from_sec1(&point).ok_or("is not a point on P-256")?)
                }
                _ => {
                    Verifier::ES384(ecdsa::Key::from_sec1(&point).ok_or("is not a point on P-384")?)
                }
            };
            Ok(vec![v])
        }
        "OKP" => {
            if member(jwk, "crv")? != Some("Ed25519") || wanted(&[Alg::EdDSA]).is_empty() {
                return Ok(Vec::new());
            }
            let x = bytes(jwk, "x")?;
            if x.len() != 32 {
                return Err("has an Ed25519 key of the wrong length".into());
            }
            // Not a point, or of small order (a weak key): the set is malformed.
            let key = ed25519_compact::PublicKey::from_slice(&x).map_err(|_| INVALID_KEY)?;
            key.validate().map_err(|_| INVALID_KEY)?;
            Ok(vec![Verifier::EdDSA(key)])
        }
        "oct" => {
            let k = bytes(jwk, "k")?;
            if k.len() < 32 {
                return Ok(Vec::new());
            }
            Ok(wanted(&[Alg::HS256, Alg::HS384, Alg::HS512])
                .into_iter()
                .map(|alg| match alg {
                    Alg::HS256 => Verifier::HS256(k.clone()),
                    Alg::HS384 => Verifier::HS384(k.clone()),
                    _ => Verifier::HS512(k.clone()),
                })
                .collect())
        }
        _ => Ok(Vec::new()),
    }
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => {
            let rest = n.len().saturating_sub(i).saturating_sub(1);
            let top = n.get(i).copied().unwrap_or(0);
            rest.saturating_mul(8)
                .saturating_add(8usize.saturating_sub(top.leading_zeros() as usize))
        }
    }
}
