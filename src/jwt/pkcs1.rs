//! RSA signatures verified in Wasm (RFC 8017): RS256, RS384 and RS512 (RSASSA-PKCS1-v1_5,
//! §8.2.2) and PS256, PS384 and PS512 (RSASSA-PSS, §8.1.2), for hosts without a native
//! verifier (Kong), and for PS* everywhere (Envoy's `verify_signature` only checks
//! PKCS1-v1_5).
//!
//! The `rsa` crate spent 1.2 ms per new RS256 token in V8 (0.9 without its `u64_digit`
//! feature, whose 64-bit products Wasm can only compute through a 128-bit software routine):
//! generic big integers, allocated at every step. Here the key's Montgomery constants are
//! computed once, when the JWK set is read, and a signature costs 16 squarings and two
//! multiplications of 32-bit limbs (JWK sets only carry keys with e = 65537, `jwks`): 0.15 ms.
//!
//! A PKCS1-v1_5 signature is checked the way RFC 8017 recommends: the expected encoding
//! `00 01 FF…FF 00 DigestInfo(hash)` is built and compared whole with `s^e mod n`; nothing
//! is parsed out of the decrypted block. A PSS signature has a random salt, so its encoding
//! cannot be rebuilt: it is taken apart as EMSA-PSS-VERIFY (§9.1.2) says, step by step.

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
    /// The digest's length in bytes.
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => hmac_sha256::Hash::hash(data).to_vec(),
            Hash::Sha384 => hmac_sha512::sha384::Hash::hash(data).to_vec(),
            Hash::Sha512 => hmac_sha512::Hash::hash(data).to_vec(),
        }
    }

    fn digest_info(self, signed: &[u8]) -> Vec<u8> {
        let prefix = match self {
            Hash::Sha256 => SHA256_PREFIX,
            Hash::Sha384 => SHA384_PREFIX,
            Hash::Sha512 => SHA512_PREFIX,
        };
        [prefix, &self.digest(signed)].concat()
    }

    /// MGF1 (RFC 8017 §B.2.1): `len` bytes of digests of `seed` and a 32-bit counter.
    fn mgf1(self, seed: &[u8], len: usize) -> Vec<u8> {
        let mut mask = Vec::with_capacity(len.saturating_add(self.len()));
        let mut input = [seed, &[0; 4]].concat();
        for counter in (0u32..).take(len.div_ceil(self.len())) {
            if let Some(slot) = input.get_mut(seed.len()..) {
                slot.copy_from_slice(&counter.to_be_bytes());
            }
            mask.extend_from_slice(&self.digest(&input));
        }
        mask.truncate(len);
        mask
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
    /// The modulus in bits.
    bits: usize,
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
        let top_zeros = n_be.first().map_or(0, |b| b.leading_zeros() as usize);
        let mut key = PublicKey {
            n0_inv: inv.wrapping_neg(),
            rr: Vec::new(),
            len: n_be.len(),
            bits: n_be.len().saturating_mul(8).saturating_sub(top_zeros),
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

    /// Whether `signature` is `hash`'s RSASSA-PSS signature of `signed` under this key, with
    /// MGF1 over the same hash and a salt as long as the digest (RFC 7518 §3.5): the steps of
    /// EMSA-PSS-VERIFY (RFC 8017 §9.1.2), numbered as there.
    pub fn verify_pss(&self, hash: Hash, signed: &[u8], signature: &[u8]) -> bool {
        let Some(decrypted) = self.public_op(signature) else {
            return false;
        };
        let (h_len, s_len) = (hash.len(), hash.len());
        // emBits = modBits − 1 (§8.1.2 step 2c): EM is a byte shorter than the modulus when
        // modBits ≡ 1 (mod 8), and that byte must be zero (I2OSP fails otherwise).
        let em_bits = self.bits.saturating_sub(1);
        let em_len = em_bits.div_ceil(8);
        let Some((high, em)) = decrypted.split_at_checked(self.len.saturating_sub(em_len)) else {
            return false;
        };
        if high.iter().any(|&b| b != 0) {
            return false;
        }
        // 3. emLen ≥ hLen + sLen + 2; 4. the last byte is 0xbc; 5. maskedDB, then H.
        let Some(db_len) = em_len.checked_sub(h_len.saturating_add(1)) else {
            return false;
        };
        let Some(ps_len) = db_len.checked_sub(s_len.saturating_add(1)) else {
            return false;
        };
        let Some((&0xbc, rest)) = em.split_last() else {
            return false;
        };
        let Some((masked_db, h)) = rest.split_at_checked(db_len) else {
            return false;
        };
        // 6. The 8·emLen − emBits leftmost bits of maskedDB are zero.
        let unused_bits = em_len.saturating_mul(8).saturating_sub(em_bits);
        let top_mask = u32::try_from(unused_bits)
            .ok()
            .and_then(|bits| 0xffu8.checked_shr(bits))
            .unwrap_or(0);
        if masked_db.first().is_some_and(|b| b & !top_mask != 0) {
            return false;
        }
        // 7.–9. DB = maskedDB ⊕ MGF1(H), its unused leftmost bits set to zero.
        let mut db = hash.mgf1(h, db_len);
        for (d, m) in db.iter_mut().zip(masked_db) {
            *d ^= m;
        }
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        // 10. PS (zeros), then 0x01; 11. the salt is the rest.
        let Some((ps, rest)) = db.split_at_checked(ps_len) else {
            return false;
        };
        let Some((&0x01, salt)) = rest.split_first() else {
            return false;
        };
        if ps.iter().any(|&b| b != 0) {
            return false;
        }
        // 12.–14. H = Hash(00 × 8 ‖ mHash ‖ salt).
        let m_prime = [&[0u8; 8][..], &hash.digest(signed), salt].concat();
        hash.digest(&m_prime) == h
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
        // Into Montgomery form (s·R), 16 squarings (s^(2¹⁶)·R), and a multiplication by s
        // itself, which leaves Montgomery form on the way: s^(2¹⁶)·R · s · R⁻¹ = s^65537.
        let mut x = self.mul(&s, &self.rr);
        for _ in 0..16 {
            x = self.mul(&x, &x);
        }
        Some(big_endian(&self.mul(&x, &s), self.len))
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
    use crate::jwt::fixtures::Rng;
    use hmac_sha256::Hash as Sha256;
    use hmac_sha512::sha384::Hash as Sha384;
    use hmac_sha512::Hash as Sha512;
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    use rsa::{pkcs1v15, pss, BigUint, RsaPrivateKey};

    fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.next() as u8).collect()
    }

    #[test]
    fn the_public_operation_is_modular_exponentiation() {
        // Any odd modulus will do for the arithmetic: lengths on and off limb boundaries,
        // top limbs full and nearly empty, and RSA's own sizes.
        let mut rng = Rng(0x51_7c_c1_b7_27_22_0a_95);
        for bits in [40usize, 64, 65, 95, 512, 1025, 2048, 2049, 2056, 3072, 4096] {
            for _ in 0..4 {
                let len = bits.div_ceil(8);
                let mut n = random_bytes(&mut rng, len);
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
                    let s = BigUint::from_bytes_be(&random_bytes(&mut rng, len)) % &big_n;
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

    /// Keys of 2048 and 3072 bits, and of 2047 and 2049 (a PSS encoding is a bit shorter
    /// than the modulus: 2049 bits leave it a whole byte shorter).
    fn rsa_key(bits: usize) -> RsaPrivateKey {
        use std::sync::OnceLock;
        static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            [2048, 3072, 2047, 2049]
                .iter()
                .map(|bits| RsaPrivateKey::new(&mut rng, *bits).unwrap())
                .collect()
        });
        keys.iter().find(|k| k.n().bits() == bits).unwrap().clone()
    }

    fn key_of(private: &RsaPrivateKey) -> PublicKey {
        PublicKey::new(&private.n().to_bytes_be()).unwrap()
    }

    #[test]
    fn signatures_of_the_rsa_crate_verify_and_nothing_else_does() {
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
                for bad in flipped(sig) {
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

    /// Damaged copies of a signature: every 97th bit flipped, one at a time.
    fn flipped(sig: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        (0..sig.len() * 8).step_by(97).map(|bit| {
            let mut bad = sig.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            bad
        })
    }

    #[test]
    fn pss_signatures_of_the_rsa_crate_verify_and_nothing_else_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let msg = b"eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJ4In0";
        for bits in [2048, 3072, 2047, 2049] {
            let private = rsa_key(bits);
            let key = key_of(&private);
            let k = || private.clone();
            // Salts as long as the digest (RFC 7518 §3.5), drawn afresh for each signature.
            let mut sign = |hash: Hash| match hash {
                Hash::Sha256 => pss::SigningKey::<Sha256>::new_with_salt_len(k(), 32)
                    .sign_with_rng(&mut rng, msg)
                    .to_vec(),
                Hash::Sha384 => pss::SigningKey::<Sha384>::new_with_salt_len(k(), 48)
                    .sign_with_rng(&mut rng, msg)
                    .to_vec(),
                Hash::Sha512 => pss::SigningKey::<Sha512>::new_with_salt_len(k(), 64)
                    .sign_with_rng(&mut rng, msg)
                    .to_vec(),
            };
            for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                let sig = sign(hash);
                assert!(key.verify_pss(hash, msg, &sig), "{hash:?}, {bits} bits");
                assert!(!key.verify_pss(hash, b"another message", &sig));
                assert!(!key.verify(hash, msg, &sig), "not a PKCS1-v1_5 signature");
                for other in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                    assert_eq!(key.verify_pss(other, msg, &sig), other == hash);
                }
                for bad in flipped(&sig) {
                    assert!(!key.verify_pss(hash, msg, &bad));
                }
                let mut longer = vec![0];
                longer.extend_from_slice(&sig);
                assert!(!key.verify_pss(hash, msg, &longer));
                assert!(!key.verify_pss(hash, msg, &sig[..sig.len() - 1]));
                // Two signatures of one message differ (the salt), and both verify.
                let again = sign(hash);
                assert_ne!(again, sig);
                assert!(key.verify_pss(hash, msg, &again));
            }
            // Salts of another length than the digest's are refused.
            for salt_len in [0, 20, 31, 33] {
                let sig = pss::SigningKey::<Sha256>::new_with_salt_len(k(), salt_len)
                    .sign_with_rng(&mut rng, msg)
                    .to_vec();
                assert!(
                    !key.verify_pss(Hash::Sha256, msg, &sig),
                    "salt of {salt_len}"
                );
            }
            // A PKCS1-v1_5 signature is no PSS signature.
            let v15 = pkcs1v15::SigningKey::<Sha256>::new(k()).sign(msg).to_vec();
            assert!(key.verify(Hash::Sha256, msg, &v15));
            assert!(!key.verify_pss(Hash::Sha256, msg, &v15));
        }
        let sig = pss::SigningKey::<Sha256>::new_with_salt_len(rsa_key(2048), 32)
            .sign_with_rng(&mut rng, msg)
            .to_vec();
        assert!(!key_of(&rsa_key(3072)).verify_pss(Hash::Sha256, msg, &sig));
    }

    /// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with `salt`, as `em_len` bytes.
    fn pss_encode(
        hash: Hash,
        msg: &[u8],
        salt: &[u8],
        em_len: usize,
        unused_bits: usize,
    ) -> Vec<u8> {
        let h = hash.digest(&[&[0u8; 8][..], &hash.digest(msg), salt].concat());
        let db_len = em_len - hash.len() - 1;
        let mut db = vec![0u8; db_len - salt.len() - 1];
        db.push(0x01);
        db.extend_from_slice(salt);
        for (d, m) in db.iter_mut().zip(hash.mgf1(&h, db_len)) {
            *d ^= m;
        }
        db[0] &= 0xff >> unused_bits;
        [db, h, vec![0xbc]].concat()
    }

    /// The signature whose public operation gives `block` (as many bytes as the modulus).
    fn sign_raw(private: &RsaPrivateKey, block: &[u8]) -> Vec<u8> {
        let s = BigUint::from_bytes_be(block).modpow(private.d(), private.n());
        let mut sig = s.to_bytes_be();
        while sig.len() < private.size() {
            sig.insert(0, 0);
        }
        sig
    }

    #[test]
    fn every_step_of_the_pss_check_refuses_its_own_flaw() {
        let msg = b"header.payload";
        let salt = [0x5a; 32];
        for bits in [2048, 2049] {
            let private = rsa_key(bits);
            let key = key_of(&private);
            let len = private.size();
            let em_len = (bits - 1).div_ceil(8);
            let unused = em_len * 8 - (bits - 1);
            let sign = |em: &[u8]| sign_raw(&private, &[&vec![0; len - em_len][..], em].concat());
            let good = pss_encode(Hash::Sha256, msg, &salt, em_len, unused);
            assert!(
                key.verify_pss(Hash::Sha256, msg, &sign(&good)),
                "{bits} bits"
            );

            let mut flaws: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut trailer = good.clone();
            *trailer.last_mut().unwrap() = 0xbd;
            flaws.push(("trailer byte", sign(&trailer)));
            let h_at = em_len - 33;
            let mut h = good.clone();
            h[h_at] ^= 1;
            flaws.push(("H", sign(&h)));
            // DB bytes are flipped through the mask: maskedDB ⊕ x unmasks to DB ⊕ x.
            let separator = em_len - 32 - 1 - 32 - 1;
            let mut sep = good.clone();
            sep[separator] ^= 0x03;
            flaws.push(("0x01 separator", sign(&sep)));
            let mut ps = good.clone();
            ps[separator - 1] ^= 0x01;
            flaws.push(("PS not zero", sign(&ps)));
            let mut salted = good.clone();
            salted[separator + 1] ^= 0x01;
            flaws.push(("salt", sign(&salted)));
            for salt_len in [31, 33] {
                let other = pss_encode(Hash::Sha256, msg, &vec![0x5a; salt_len], em_len, unused);
                flaws.push(("salt length", sign(&other)));
            }
            if unused > 0 {
                let mut top = good.clone();
                top[0] |= 0x80;
                flaws.push(("leftmost bit", sign(&top)));
            } else {
                // EM a byte shorter than the modulus, and that byte not zero: with a salt
                // that keeps the whole block below n, so that it is what s^e gives back.
                let n = private.n();
                let block = (0..=255u8)
                    .map(|b| {
                        let em = pss_encode(Hash::Sha256, msg, &[b; 32], em_len, unused);
                        [&[0x01][..], &em].concat()
                    })
                    .find(|block| BigUint::from_bytes_be(block) < *n)
                    .unwrap();
                flaws.push(("byte above EM", sign_raw(&private, &block)));
            }
            for (what, sig) in flaws {
                assert!(
                    !key.verify_pss(Hash::Sha256, msg, &sig),
                    "{what}, {bits} bits"
                );
            }
        }
    }
}
