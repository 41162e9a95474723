//! `jwt::KeySet::parse` on arbitrary bytes, then key selection for every algorithm.

#![no_main]

use app_auth_filter::jwt::{Alg, KeySet, TokenError};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

const ALGS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

fuzz_target!(|data: &[u8]| {
    let Ok((set, parsed)) = KeySet::parse(data, 64, 32) else {
        return;
    };
    assert!(!set.is_empty(), "a key set was taken with no usable key");
    assert!(set.len() <= 64);
    assert_eq!(parsed.usable, set.len());
    assert!(parsed.usable + parsed.skipped <= 64);

    let kids: Vec<&str> = set.kids().collect();
    let unique: HashSet<&str> = kids.iter().copied().collect();
    assert_eq!(unique.len(), kids.len(), "repeated kid in a taken set");

    for name in ALGS {
        let alg = Alg::from_name(name).expect("known alg");
        for kid in &kids {
            assert!(set.has_kid(kid));
            match set.select(Some(kid), alg) {
                Ok(v) => {
                    assert_eq!(v.verifier.alg(), alg);
                    // RSA and EC keys carry a DER SubjectPublicKeyInfo for the host.
                    let asymmetric =
                        !matches!(alg, Alg::EdDSA | Alg::HS256 | Alg::HS384 | Alg::HS512);
                    assert_eq!(v.spki.is_some(), asymmetric, "{name}");
                }
                Err(e) => assert_eq!(e, TokenError::KeyAlgMismatch),
            }
        }
        match set.select(None, alg) {
            Ok(v) => assert_eq!(v.verifier.alg(), alg),
            Err(e) => assert!(matches!(
                e,
                TokenError::KeyAlgMismatch | TokenError::AmbiguousKey
            )),
        }
        // A kid that is not in the set is never matched to some other key.
        if !set.has_kid("fuzz-no-such-kid") {
            assert_eq!(
                set.select(Some("fuzz-no-such-kid"), alg).err(),
                Some(TokenError::UnknownKid)
            );
        }
    }
});
