//! RS256, RS384 and RS512 verified in Wasm (RSASSA-PKCS1-v1_5, RFC 8017 §8.2.2), for hosts
//! without a native verifier (Kong) and wherever the host's is not used.
//!
//! The `rsa` crate spent 1.2 ms per new RS256 token in V8 (0.9 without its `u64_digit`
//! feature, whose 64-bit products Wasm can only compute through a 128-bit software routine):
//! generic big integers, allocated at every step. Here the key's Montgomery constants are
//! computed once, when the JWK set is read, and a signature costs 16 squarings and one
//! multiplication of 32-bit limbs (JWK sets only carry keys with e = 65537, `jwks`): 0.15 ms.
//!
//! The signature is checked the way RFC 8017 recommends: the expected encoding
//! `00 01 FF…FF 00 DigestInfo(hash)` is built and compared whole with `s^e mod n`; nothing
//! is parsed out of the decrypted block.

/// DigestInfo DER prefixes (RFC 8017 §9.2, note 1), followed by the digest itself.
const SHA256_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_PREFIX: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_PREFIX: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// The digest a signature covers, by algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest_info(self, signed: &[u8]) -> Vec<u8> {
        let (prefix, digest): (&[u8], Vec<u8>) = match self {
            Hash::Sha256 => (SHA256_PREFIX, hmac_sha256::Hash::hash(signed).to_vec()),
            Hash::Sha384 => (
                SHA384_PREFIX,
                hmac_sha512::sha384::Hash::hash(signed).to_vec(),
            ),
            Hash::Sha512 => (SHA512_PREFIX, hmac_sha512::Hash::hash(signed).to_vec()),
        };
        [prefix, &digest].concat()
    }
}

/// An RSA public key with e = 65537, ready for Montgomery arithmetic modulo n.
#[derive(Clone)]
pub struct PublicKey {
    /// n, least significant 32-bit limb first.
    n: Vec<u32>,
    /// -n⁻¹ mod 2³².
    n0_inv: u32,
    /// R² mod n, R = 2^(32·limbs): what brings a number into Montgomery form.
    rr: Vec<u32>,
    /// The modulus in bytes: every signature and encoded message is exactly this long.
    len: usize,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} bits)", self.len.saturating_mul(8))
    }
}

impl PublicKey {
    /// The key of modulus `n` (big-endian, leading zeros allowed) and e = 65537. `None` for
    /// an even or one-limb modulus, which no RSA key has.
    pub fn new(n: &[u8]) -> Option<PublicKey> {
        let n_be = n.get(n.iter().position(|b| *b != 0)?..)?;
        let n = limbs(n_be, n_be.len().div_ceil(4));
        let &n0 = n.first()?;
        if n0 & 1 == 0 || n.len() < 2 {
            return None;
        }
        // Newton's iteration doubles the correct low bits of an inverse each step: an odd n0
        // is its own inverse mod 2³, then 6, 12, 24 and 48 ≥ 32 bits.
        let mut inv = n0;
        for _ in 0..4 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut key = PublicKey {
            n0_inv: inv.wrapping_neg(),
            rr: Vec::new(),
            len: n_be.len(),
            n,
        };
        key.rr = key.r_squared();
        Some(key)
    }

    /// Whether `signature` is `hash`'s RSASSA-PKCS1-v1_5 signature of `signed` under this key.
    pub fn verify(&self, hash: Hash, signed: &[u8], signature: &[u8]) -> bool {
        let Some(decrypted) = self.public_op(signature) else {
            return false;
        };
        let t = hash.digest_info(signed);
        // 00 01, at least eight FF, 00, T (RFC 8017 §9.2 step 5).
        let Some(padding) = self.len.checked_sub(t.len()).and_then(|n| n.checked_sub(3)) else {
            return false;
        };
        if padding < 8 {
            return false;
        }
        let expected = [&[0x00, 0x01][..], &vec![0xff; padding], &[0x00], &t].concat();
        decrypted == expected
    }

    /// s^65537 mod n as `len` big-endian bytes; `None` unless `signature` is exactly `len`
    /// bytes and less than n (RFC 8017 §5.2.2, §8.2.2 step 1).
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.len {
            return None;
        }
        let s = limbs(signature, self.n.len());
        if !less(&s, &self.n) {
            return None;
        }
        // Into Montgomery form, 16 squarings and a multiplication by s (65537 = 2¹⁶ + 1),
        // and out again (a multiplication by 1).
        let s_mont = self.mul(&s, &self.rr);
        let mut x = s_mont.clone();
        for _ in 0..16 {
            x = self.mul(&x, &x);
        }
        x = self.mul(&x, &s_mont);
        let mut one = vec![0u32; self.n.len()];
        if let Some(first) = one.first_mut() {
            *first = 1;
        }
        Some(big_endian(&self.mul(&x, &one), self.len))
    }

    /// a·b·R⁻¹ mod n for a, b < n (Montgomery multiplication, one limb of `a` a turn,
    /// reducing as it goes). Operands of another length than n give a wrong product, never
    /// a panic: whatever uses it then fails to verify.
    fn mul(&self, a: &[u32], b: &[u32]) -> Vec<u32> {
        let limbs = self.n.len();
        // t < 2n after every turn, in limbs + 1 limbs; each turn writes t / 2³² into u.
        let mut t = vec![0u32; limbs.saturating_add(1)];
        let mut u = t.clone();
        let (Some(&b0), Some(&n0)) = (b.first(), self.n.first()) else {
            return t;
        };
        let b_rest = b.get(1..).unwrap_or_default();
        let n_rest = self.n.get(1..).unwrap_or_default();
        for &ai in a {
            let t0 = t.first().copied().unwrap_or(0);
            // m makes t + ai·b + m·n a multiple of 2³²: its low limb is dropped.
            let m = t0
                .wrapping_add(ai.wrapping_mul(b0))
                .wrapping_mul(self.n0_inv);
            let (ai, m) = (u64::from(ai), u64::from(m));
            // Two running sums: t + ai·b, and its low limbs + m·n. Neither overflows 64 bits:
            // (2³² − 1)² + 2·(2³² − 1) = 2⁶⁴ − 1.
            let s1 = u64::from(t0).wrapping_add(ai.wrapping_mul(u64::from(b0)));
            let s2 = (s1 & 0xffff_ffff).wrapping_add(m.wrapping_mul(u64::from(n0)));
            let (mut c1, mut c2) = (s1 >> 32, s2 >> 32);
            for ((out, &tj), (&bj, &nj)) in u
                .iter_mut()
                .zip(t.iter().skip(1))
                .zip(b_rest.iter().zip(n_rest))
            {
                let s1 = u64::from(tj)
                    .wrapping_add(ai.wrapping_mul(u64::from(bj)))
                    .wrapping_add(c1);
                let s2 = (s1 & 0xffff_ffff)
                    .wrapping_add(m.wrapping_mul(u64::from(nj)))
                    .wrapping_add(c2);
                *out = s2 as u32;
                (c1, c2) = (s1 >> 32, s2 >> 32);
            }
            let top = u64::from(t.last().copied().unwrap_or(0))
                .wrapping_add(c1)
                .wrapping_add(c2);
            if let [.., below, last] = u.as_mut_slice() {
                (*below, *last) = (top as u32, (top >> 32) as u32);
            }
            std::mem::swap(&mut t, &mut u);
        }
        // t < 2n: one subtraction of n at most.
        let (value, top) = t.split_at_mut(limbs);
        if top.first().is_some_and(|&high| high != 0) || !less(value, &self.n) {
            subtract(value, &self.n);
        }
        t.truncate(limbs);
        t
    }

    /// R² mod n: 2^(32·limbs + limbs) mod n by doubling, which is 2^limbs in Montgomery form;
    /// five Montgomery squarings make it 2^(32·limbs) = R in Montgomery form, which is R².
    fn r_squared(&self) -> Vec<u32> {
        let limbs = self.n.len();
        // Doubling starts at n's top bit alone, the largest power of two below n (n is odd
        // and has two limbs or more, so n is not that power itself).
        let top = self.n.last().copied().unwrap_or(0);
        let top_bit = 31u32.saturating_sub(top.leading_zeros());
        let mut x = vec![0u32; limbs];
        if let Some(last) = x.last_mut() {
            *last = 1 << top_bit;
        }
        let from = limbs
            .saturating_sub(1)
            .saturating_mul(32)
            .saturating_add(top_bit as usize);
        let to = limbs.saturating_mul(33);
        for _ in from..to {
            // x = 2x mod n (x < n, so 2x < 2n: one subtraction at most).
            let carry = shift_left_one(&mut x);
            if carry || !less(&x, &self.n) {
                subtract(&mut x, &self.n);
            }
        }
        for _ in 0..5 {
            x = self.mul(&x, &x);
        }
        x
    }
}

/// A big-endian number as `count` little-endian 32-bit limbs (the excess high bytes, which
/// callers only pass as zeros, dropped).
fn limbs(be: &[u8], count: usize) -> Vec<u32> {
    let mut out = vec![0u32; count];
    for (slot, chunk) in out.iter_mut().zip(be.rchunks(4)) {
        *slot = chunk
            .iter()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
    }
    out
}

/// `len` big-endian bytes of a little-endian limb number (which is less than 2^(8·len)).
fn big_endian(limbs: &[u32], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    out.resize(len, 0);
    out.reverse();
    out
}

/// a < b, for numbers of the same number of limbs.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a −= b (mod 2^(32·limbs)), limbs of the same count.
fn subtract(a: &mut [u32], b: &[u32]) {
    let mut borrow = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(u32::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
}

/// x <<= 1; returns the bit shifted out.
fn shift_left_one(x: &mut [u32]) -> bool {
    let mut carry = 0u32;
    for limb in x.iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | carry;
        carry = next;
    }
    carry != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    use rsa::traits::PublicKeyParts as _;
    use rsa::{pkcs1v15, BigUint, RsaPrivateKey};

    /// xorshift: reproducible numbers without a dependency.
    fn numbers(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    fn random_bytes(next: &mut impl FnMut() -> u64, len: usize) -> Vec<u8> {
        (0..len).map(|_| next() as u8).collect()
    }

    #[test]
    fn the_public_operation_is_modular_exponentiation() {
        // Any odd modulus will do for the arithmetic: lengths on and off limb boundaries,
        // top limbs full and nearly empty, and RSA's own sizes.
        let mut next = numbers(0x51_7c_c1_b7_27_22_0a_95);
        for bits in [40usize, 64, 65, 95, 512, 1025, 2048, 2049, 2056, 3072, 4096] {
            for _ in 0..4 {
                let len = bits.div_ceil(8);
                let mut n = random_bytes(&mut next, len);
                n[0] &= 0xff >> (len * 8 - bits);
                n[0] |= 0x80 >> (len * 8 - bits);
                n[len - 1] |= 1;
                let key = PublicKey::new(&n).unwrap();
                let big_n = BigUint::from_bytes_be(&n);
                let r = BigUint::from(1u8) << (32 * key.n.len());
                assert_eq!(
                    BigUint::from_bytes_be(&big_endian(&key.rr, len)),
                    (&r * &r) % &big_n,
                    "R² mod n, {bits} bits"
                );
                for _ in 0..8 {
                    let s = BigUint::from_bytes_be(&random_bytes(&mut next, len)) % &big_n;
                    let mut s_bytes = s.to_bytes_be();
                    while s_bytes.len() < len {
                        s_bytes.insert(0, 0);
                    }
                    let expected = s.modpow(&BigUint::from(65537u32), &big_n);
                    let got = key.public_op(&s_bytes).unwrap();
                    assert_eq!(BigUint::from_bytes_be(&got), expected, "{bits} bits");
                    assert_eq!(got.len(), len);
                }
            }
        }
    }

    #[test]
    fn moduli_that_are_no_rsa_modulus_are_refused() {
        assert!(PublicKey::new(&[]).is_none());
        assert!(PublicKey::new(&[0, 0]).is_none());
        assert!(PublicKey::new(&[0xff, 0xff, 0xff, 0xfe, 0x01, 0x00]).is_none()); // even
        assert!(PublicKey::new(&[0xff, 0xff, 0xff, 0xff]).is_none()); // one limb
        assert!(PublicKey::new(&[0, 0, 1, 0, 0, 0, 1]).is_some());
    }

    fn rsa_key(bits: usize) -> RsaPrivateKey {
        use rsa::pkcs8::DecodePrivateKey as _;
        use std::sync::OnceLock;
        static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            [2048, 3072]
                .iter()
                .map(|bits| {
                    let pair = jwt_simple::prelude::RS256KeyPair::generate(*bits).unwrap();
                    RsaPrivateKey::from_pkcs8_der(&pair.to_der().unwrap()).unwrap()
                })
                .collect()
        });
        keys.iter().find(|k| k.n().bits() == bits).unwrap().clone()
    }

    fn key_of(private: &RsaPrivateKey) -> PublicKey {
        PublicKey::new(&private.n().to_bytes_be()).unwrap()
    }

    #[test]
    fn signatures_of_the_rsa_crate_verify_and_nothing_else_does() {
        use hmac_sha256::Hash as Sha256;
        use hmac_sha512::sha384::Hash as Sha384;
        use hmac_sha512::Hash as Sha512;
        for bits in [2048, 3072] {
            let private = rsa_key(bits);
            let key = key_of(&private);
            let k = || private.clone();
            let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0";
            let signatures = [
                (
                    Hash::Sha256,
                    pkcs1v15::SigningKey::<Sha256>::new(k()).sign(msg).to_vec(),
                ),
                (
                    Hash::Sha384,
                    pkcs1v15::SigningKey::<Sha384>::new(k()).sign(msg).to_vec(),
                ),
                (
                    Hash::Sha512,
                    pkcs1v15::SigningKey::<Sha512>::new(k()).sign(msg).to_vec(),
                ),
            ];
            for (hash, sig) in &signatures {
                assert!(key.verify(*hash, msg, sig), "{hash:?}, {bits} bits");
                assert!(!key.verify(*hash, b"another message", sig));
                for other in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                    assert_eq!(key.verify(other, msg, sig), other == *hash);
                }
                // Every single bit flipped, some of them.
                for bit in (0..sig.len() * 8).step_by(97) {
                    let mut bad = sig.clone();
                    bad[bit / 8] ^= 1 << (bit % 8);
                    assert!(!key.verify(*hash, msg, &bad));
                }
                // Not exactly the modulus long: a leading zero added or dropped.
                let mut longer = vec![0];
                longer.extend_from_slice(sig);
                assert!(!key.verify(*hash, msg, &longer));
                if sig[0] == 0 {
                    assert!(!key.verify(*hash, msg, &sig[1..]));
                }
                assert!(!key.verify(*hash, msg, &sig[..sig.len() - 1]));
            }
            // The other key does not verify them.
            let other = key_of(&rsa_key(if bits == 2048 { 3072 } else { 2048 }));
            assert!(!other.verify(Hash::Sha256, msg, &signatures[0].1));
        }
    }

    #[test]
    fn forgeries_without_the_private_key_fail() {
        let key = key_of(&rsa_key(2048));
        let msg = b"header.payload";
        let n = rsa_key(2048).n().to_bytes_be();
        let len = n.len();
        // The expected encoding itself (what an exponentiation that did nothing would accept),
        // 0, 1, n − 1, n and all ones.
        let t = Hash::Sha256.digest_info(msg);
        let em = [&[0, 1][..], &vec![0xff; len - 3 - t.len()], &[0], &t].concat();
        let mut n_minus_1 = n.clone();
        n_minus_1[len - 1] -= 1;
        let mut one = vec![0; len];
        one[len - 1] = 1;
        for forged in [em, vec![0; len], one, n_minus_1, n.clone(), vec![0xff; len]] {
            assert!(!key.verify(Hash::Sha256, msg, &forged));
        }
        assert!(key.public_op(&n).is_none(), "s = n is out of range");
        assert!(key.public_op(&vec![0xff; len]).is_none());
    }
}
