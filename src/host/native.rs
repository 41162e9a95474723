//! Envoy's `verify_signature` foreign function (native BoringSSL) as the engine's signature
//! backend. Probed once at start-up with a known signature: hosts without it (Kong) or
//! with a different contract keep the pure-Rust path.

use crate::jwt::native::{verify_arguments, verify_result, SignatureBackend};
use crate::metrics::{self, Counters};
use std::rc::Rc;

const FUNCTION: &str = "verify_signature";

/// A P-256 key and its signature over PROBE_TEXT, made once offline for the probe.
const PROBE_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d0301070342000465445ffd7813cf8603c3aa83f6e048e7a4ba9f01bbb5f9976f158d7f515cc23110ef8c2de7c659f641da8a723f3063b9f703176f3763a25fd273c72a25951e3e";
const PROBE_SIGNATURE: &str = "304402205c3d0e7c79d49156109905aa122942aafb60ee8bc2558803f529862a20427d8b022050ea4fefb76277058f19bbf2f019c4717ec8417140e2c113f1e4e497b3fa4065";
const PROBE_TEXT: &[u8] = b"app-auth-filter verify_signature probe";

#[derive(Debug)]
pub struct HostSignatures {
    counters: Rc<dyn Counters>,
}

fn call(hash: &str, spki: &[u8], signed: &[u8], signature: &[u8]) -> Option<bool> {
    let args = verify_arguments(hash, spki, signature, signed);
    // An empty result is a serialized VerifySignatureResult with default fields (false).
    let result = super::raw::call_foreign_function(FUNCTION, &args).ok()?;
    verify_result(&result)
}

fn hex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .filter_map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

impl HostSignatures {
    /// The host's verifier if it answers the probe exactly right: the good signature
    /// verifies and a tampered one does not.
    pub fn probe(counters: Rc<dyn Counters>) -> Option<HostSignatures> {
        let spki = hex(PROBE_SPKI);
        let good = hex(PROBE_SIGNATURE);
        let mut bad = good.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        let works = call("sha256", &spki, PROBE_TEXT, &good) == Some(true)
            && call("sha256", &spki, PROBE_TEXT, &bad) == Some(false);
        works.then_some(HostSignatures { counters })
    }
}

impl SignatureBackend for HostSignatures {
    fn verify(
        &self,
        hash: &'static str,
        spki: &[u8],
        signed: &[u8],
        signature: &[u8],
    ) -> Option<bool> {
        let verdict = call(hash, spki, signed, signature);
        if verdict.is_some() {
            self.counters.add(metrics::SIGNATURES_NATIVE);
        }
        verdict
    }
}
