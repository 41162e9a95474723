//! ES256 and ES384 signatures verified in Wasm, with the public key's multiples worked out
//! once.
//!
//! ECDSA verification is u₁·G + u₂·Q. The `ecdsa` crate computes both products together: a
//! doubling per bit of the order and some additions (wNAF), 0.76 ms per new ES256 token in
//! V8 where the host verifies nothing (Kong). But G is fixed, and so is Q for as long as the
//! JWK set holds the key: with 16ⁱ·k·P at hand for every radix-16 window i and k in 1..=8,
//! u·P is one addition per window and no doubling (65 additions on P-256: 0.28 ms per
//! token). The multiples are made at a key's first signature (520 points, 37 KB for P-256;
//! 776, 81 KB for P-384; as much work as two of the `ecdsa` crate's verifications), G's
//! once per VM; a key set fetched again takes them over for the keys it still holds.
//!
//! The checks are SEC 1 §4.1.4's, as the `ecdsa` crate's `verify_prehashed` makes them (the
//! tests compare the two): r and s in 1..n, e the digest reduced mod n, R = e·s⁻¹·G +
//! r·s⁻¹·Q not the identity, and x(R) mod n = r. Key, signature and digest are public:
//! nothing here needs constant time.

use p256::elliptic_curve::ff::{Field as _, PrimeField};
use p256::elliptic_curve::group::{Curve as _, Group as _};
use p256::elliptic_curve::ops::{Invert as _, Reduce};
use p256::elliptic_curve::point::AffineCoordinates as _;
use p256::elliptic_curve::{CurveAffine as _, CurveArithmetic, FieldBytes};
use std::sync::{Arc, OnceLock};

/// A curve whose keys this module checks signatures with: P-256 (ES256) and P-384 (ES384).
pub trait Curve: CurveArithmetic<Scalar: Reduce<FieldBytes<Self>>> {
    /// G, and its multiples once made.
    fn generator() -> &'static Key<Self>;

    /// The point of a SEC 1 encoding, if it is one of the curve's and not the identity.
    fn point(sec1: &[u8]) -> Option<Self::ProjectivePoint>;
}

static P256_GENERATOR: Key<p256::NistP256> = Key {
    point: p256::ProjectivePoint::GENERATOR,
    multiples: OnceLock::new(),
};
static P384_GENERATOR: Key<p384::NistP384> = Key {
    point: p384::ProjectivePoint::GENERATOR,
    multiples: OnceLock::new(),
};

impl Curve for p256::NistP256 {
    fn generator() -> &'static Key<Self> {
        &P256_GENERATOR
    }

    fn point(sec1: &[u8]) -> Option<p256::ProjectivePoint> {
        uncompressed::<Self>(sec1)
    }
}

impl Curve for p384::NistP384 {
    fn generator() -> &'static Key<Self> {
        &P384_GENERATOR
    }

    fn point(sec1: &[u8]) -> Option<p384::ProjectivePoint> {
        uncompressed::<Self>(sec1)
    }
}

/// The point of an uncompressed SEC 1 encoding (`04 ‖ x ‖ y`, what a JWK's `x` and `y`
/// make), if it is on the curve. The identity has no such encoding. Compressed encodings are
/// refused: no JWK makes one, and taking them would bring square roots into the module
/// (17 KB of `.wasm`, through `PublicKey::from_sec1_bytes`).
fn uncompressed<C: CurveArithmetic>(sec1: &[u8]) -> Option<C::ProjectivePoint> {
    let coordinates = sec1.strip_prefix(&[0x04])?;
    let half = coordinates.len() / 2;
    let (x, y) = coordinates.split_at(half);
    let size = FieldBytes::<C>::default().len();
    if x.len() != size || y.len() != size {
        return None;
    }
    let point = C::AffinePoint::from_coordinates(
        &FieldBytes::<C>::try_from(x).ok()?,
        &FieldBytes::<C>::try_from(y).ok()?,
    );
    Option::<C::AffinePoint>::from(point).map(Into::into)
}

/// A public key and, once it has verified a signature, its multiples.
pub struct Key<C: CurveArithmetic> {
    point: C::ProjectivePoint,
    /// Window i holds 16ⁱ·k·Q for k = 1..=8, affine (a mixed addition is the cheaper one).
    /// Shared with the same key in the set fetched next ([`Key::inherit`]).
    multiples: OnceLock<Arc<Vec<[C::AffinePoint; 8]>>>,
}

impl<C: CurveArithmetic> std::fmt::Debug for Key<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ecdsa::Key")
    }
}

impl<C: Curve> Key<C> {
    /// The key at this point (a SEC 1 encoding): `None` unless it is on the curve and not
    /// the identity.
    pub fn from_sec1(point: &[u8]) -> Option<Key<C>> {
        C::point(point).map(Key::at)
    }

    /// Takes `older`'s multiples if it has made them and is the same point: a key set
    /// fetched again mostly holds the keys it held, which need not be worked out again.
    pub fn inherit(&self, older: &Key<C>) {
        if let Some(multiples) = older.multiples.get() {
            if self.multiples.get().is_none() && self.point == older.point {
                let _ = self.multiples.set(Arc::clone(multiples));
            }
        }
    }

    /// Whether its multiples are made (inherited or worked out).
    #[cfg(test)]
    pub fn has_multiples(&self) -> bool {
        self.multiples.get().is_some()
    }

    fn at(point: C::ProjectivePoint) -> Key<C> {
        Key {
            point,
            multiples: OnceLock::new(),
        }
    }

    /// Whether `signature` (r ‖ s, each as long as the order) signs `digest` (as long as
    /// the order too: SHA-256 for P-256, SHA-384 for P-384) under this key.
    // The arithmetic here is the curve's (scalars mod n, points): it wraps by definition.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn verify_digest(&self, digest: &[u8], signature: &[u8]) -> bool {
        let size = FieldBytes::<C>::default().len();
        if signature.len() != size.saturating_mul(2) || digest.len() != size {
            return false;
        }
        let (r, s) = signature.split_at(size);
        let (Some(r), Some(s)) = (scalar::<C>(r), scalar::<C>(s)) else {
            return false;
        };
        let Some(s_inv) = Option::<C::Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let Ok(digest) = FieldBytes::<C>::try_from(digest) else {
            return false;
        };
        let e = <C::Scalar as Reduce<FieldBytes<C>>>::reduce(&digest);
        let u1 = e * s_inv;
        let u2 = r * s_inv;
        let sum = C::generator().times(&u1) + self.times(&u2);
        if bool::from(sum.is_identity()) {
            return false;
        }
        let x = sum.to_affine().x();
        <C::Scalar as Reduce<FieldBytes<C>>>::reduce(&x) == r
    }

    /// k·P, by P's multiples (made now if this is the first time).
    // The arithmetic here is the curve's (scalars mod n, points): it wraps by definition.
    #[allow(clippy::arithmetic_side_effects)]
    fn times(&self, k: &C::Scalar) -> C::ProjectivePoint {
        let multiples = self
            .multiples
            .get_or_init(|| Arc::new(multiples::<C>(self.point)));
        let mut sum = C::ProjectivePoint::identity();
        for (window, digit) in multiples.iter().zip(digits::<C>(k)) {
            // Digit 0 adds nothing (and finds no multiple).
            let Some(point) = window.get(usize::from(digit.unsigned_abs()).wrapping_sub(1)) else {
                continue;
            };
            sum = if digit < 0 {
                sum + -*point
            } else {
                sum + *point
            };
        }
        sum
    }
}

/// A scalar in 1..n from its big-endian bytes (as many as the order's), or `None`.
fn scalar<C: CurveArithmetic>(bytes: &[u8]) -> Option<C::Scalar> {
    let mut repr = <C::Scalar as PrimeField>::Repr::default();
    let slot: &mut [u8] = repr.as_mut();
    if slot.len() != bytes.len() {
        return None;
    }
    slot.copy_from_slice(bytes);
    Option::<C::Scalar>::from(C::Scalar::from_repr(repr)).filter(|k| !bool::from(k.is_zero()))
}

/// 16ⁱ·k·p for every window i and k in 1..=8, for a point p of the curve's prime order n.
/// None is the identity: n (a prime above 2²⁵⁵) divides no k·2⁴ⁱ with k ≤ 8.
// Point additions and doublings: the curve's arithmetic, no integer overflow.
#[allow(clippy::arithmetic_side_effects)]
fn multiples<C: CurveArithmetic>(p: C::ProjectivePoint) -> Vec<[C::AffinePoint; 8]> {
    let windows = windows::<C>();
    let mut points = Vec::with_capacity(windows.saturating_mul(8));
    let mut base = p;
    for _ in 0..windows {
        let mut multiple = base;
        for _ in 0..8 {
            points.push(multiple);
            multiple += base;
        }
        // 16·base = 2·(8·base), the last one pushed.
        base = points.last().copied().unwrap_or(base).double();
    }
    // One field inversion for all of them.
    let mut affine = vec![C::AffinePoint::identity(); points.len()];
    C::ProjectivePoint::batch_normalize(&points, &mut affine);
    affine
        .chunks_exact(8)
        .map(|row| {
            let mut window = [C::AffinePoint::identity(); 8];
            window.copy_from_slice(row);
            window
        })
        .collect()
}

/// How many signed radix-16 digits a scalar has (below 2^(8·bytes): two per byte, in -8..=7,
/// and one more, 0 or 1), and so how many windows of multiples a key keeps.
fn windows<C: CurveArithmetic>() -> usize {
    FieldBytes::<C>::default()
        .len()
        .saturating_mul(2)
        .saturating_add(1)
}

/// k's signed radix-16 digits, least significant first: Σ dᵢ·16ⁱ = k.
fn digits<C: CurveArithmetic>(k: &C::Scalar) -> Vec<i8> {
    // The NIST curves' scalars are big-endian.
    let repr = k.to_repr();
    let bytes: &[u8] = repr.as_ref();
    let mut out = Vec::with_capacity(windows::<C>());
    let mut carry = 0u8;
    for nibble in bytes.iter().rev().flat_map(|b| [b & 0x0f, b >> 4]) {
        let d = nibble.wrapping_add(carry);
        // d ≤ 16: 8..=16 becomes d − 16 and a carry into the next digit.
        let (digit, next) = if d >= 8 {
            ((d as i8).wrapping_sub(16), 1)
        } else {
            (d as i8, 0)
        };
        out.push(digit);
        carry = next;
    }
    out.push(carry as i8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::fixtures::Rng;
    use p256::ecdsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
    use p256::elliptic_curve::ops::MulByGeneratorVartime as _;

    fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.next() as u8).collect()
    }

    fn reduced<C: Curve>(bytes: &[u8]) -> C::Scalar {
        let mut field = FieldBytes::<C>::default();
        field.copy_from_slice(bytes);
        <C::Scalar as Reduce<FieldBytes<C>>>::reduce(&field)
    }

    /// 0, 1, n − 1, scalars of repeated nibbles (every digit 8 → −8 with a carry; 7s; all
    /// ones reduced) and random ones.
    fn scalars<C: Curve>(rng: &mut Rng) -> Vec<C::Scalar> {
        let size = FieldBytes::<C>::default().len();
        let mut all = vec![C::Scalar::ZERO, C::Scalar::ONE, -C::Scalar::ONE];
        for byte in [0x88, 0x77, 0x80, 0xff] {
            all.push(reduced::<C>(&vec![byte; size]));
        }
        all.extend((0..24).map(|_| reduced::<C>(&random_bytes(rng, size))));
        all
    }

    fn digits_add_up<C: Curve>(seed: u64) {
        let sixteen = C::Scalar::from(16u64);
        for k in scalars::<C>(&mut Rng(seed)) {
            let digits = digits::<C>(&k);
            assert_eq!(digits.len(), windows::<C>());
            let (last, rest) = digits.split_last().unwrap();
            assert!(rest.iter().all(|d| (-8..=7).contains(d)));
            assert!((0..=1).contains(last));
            let mut sum = C::Scalar::ZERO;
            for &d in digits.iter().rev() {
                let magnitude = C::Scalar::from(u64::from(d.unsigned_abs()));
                sum = sum * sixteen + if d < 0 { -magnitude } else { magnitude };
            }
            assert!(sum == k);
        }
    }

    #[test]
    fn digits_add_up_to_the_scalar() {
        digits_add_up::<p256::NistP256>(0x9e37_79b9_7f4a_7c15);
        digits_add_up::<p384::NistP384>(0x9e37_79b9_7f4a_7c16);
    }

    fn same_products<C: Curve>(seed: u64) {
        let mut rng = Rng(seed);
        let size = FieldBytes::<C>::default().len();
        for _ in 0..3 {
            let q = C::ProjectivePoint::mul_by_generator_vartime(&reduced::<C>(&random_bytes(
                &mut rng, size,
            )));
            let key = Key::<C>::at(q);
            for k in scalars::<C>(&mut rng) {
                assert!(key.times(&k) == q * k);
            }
        }
        // And G's.
        for k in scalars::<C>(&mut rng) {
            assert!(C::generator().times(&k) == C::ProjectivePoint::generator() * k);
        }
    }

    #[test]
    fn the_multiples_give_the_products_the_group_gives() {
        same_products::<p256::NistP256>(0x2545_f491_4f6c_dd1d);
        same_products::<p384::NistP384>(0x2545_f491_4f6c_dd1e);
    }

    /// A key's point is read as the curve crate reads an uncompressed SEC 1 encoding
    /// (`theirs`); a point off the curve, the wrong length, another tag and compressed
    /// encodings (which no JWK makes) are refused. `encode`: a point's SEC 1 encoding,
    /// compressed or not.
    fn reads_points_as_the_curve_crate<C: Curve>(
        seed: u64,
        encode: impl Fn(&C::ProjectivePoint, bool) -> Vec<u8>,
        theirs: impl Fn(&[u8]) -> Option<C::ProjectivePoint>,
    ) {
        let mut rng = Rng(seed);
        let size = FieldBytes::<C>::default().len();
        for _ in 0..8 {
            let q = C::ProjectivePoint::mul_by_generator_vartime(&reduced::<C>(&random_bytes(
                &mut rng, size,
            )));
            let plain = encode(&q, false);
            assert!(C::point(&plain).expect("a point of the curve") == q);
            assert!(theirs(&plain).expect("a point of the curve") == q);
            // Compressed: the curve crate takes it, this module does not.
            let compressed = encode(&q, true);
            assert!(theirs(&compressed).is_some());
            assert!(C::point(&compressed).is_none());
            // y + 1 is off the curve (y and y + 1 cannot both square to x³ + ax + b).
            let mut off = plain.clone();
            let last = off.len() - 1;
            off[last] = off[last].wrapping_add(1);
            assert!(theirs(&off).is_none());
            assert!(C::point(&off).is_none());
            let mut tagged = plain.clone();
            tagged[0] = 0x06;
            assert!(C::point(&tagged).is_none());
            assert!(C::point(&plain[..plain.len() - 1]).is_none());
            assert!(C::point(&[plain.as_slice(), &[0]].concat()).is_none());
        }
        assert!(C::point(&[0x00]).is_none());
        assert!(C::point(&[]).is_none());
        let zeros = [&[0x04][..], &vec![0; 2 * size]].concat();
        assert!(theirs(&zeros).is_none());
        assert!(C::point(&zeros).is_none());
    }

    #[test]
    fn points_are_read_as_the_curve_crates_read_them() {
        use p256::elliptic_curve::sec1::ToSec1Point as _;
        reads_points_as_the_curve_crate::<p256::NistP256>(
            0x51ce_0001,
            |q, compress| q.to_affine().to_sec1_point(compress).as_bytes().to_vec(),
            |b| Some(p256::PublicKey::from_sec1_bytes(b).ok()?.to_projective()),
        );
        reads_points_as_the_curve_crate::<p384::NistP384>(
            0x51ce_0002,
            |q, compress| q.to_affine().to_sec1_point(compress).as_bytes().to_vec(),
            |b| Some(p384::PublicKey::from_sec1_bytes(b).ok()?.to_projective()),
        );
    }

    /// Compares `verify_digest` with the ecdsa crate's verification for signatures of a key,
    /// the other s, another key's, one bit flipped, r or s zero or too large, and lengths off.
    macro_rules! same_verdicts {
        ($krate:ident, $curve:ident, $seed:expr) => {{
            use $krate::ecdsa::{Signature, SigningKey};
            type C = $krate::$curve;
            let mut rng = Rng($seed);
            let size = FieldBytes::<C>::default().len();
            let signing_key = |rng: &mut Rng| loop {
                let mut bytes = FieldBytes::<C>::default();
                bytes.copy_from_slice(&random_bytes(rng, size));
                if let Ok(key) = SigningKey::from_bytes(&bytes) {
                    return key;
                }
            };
            for _ in 0..4 {
                let signing = signing_key(&mut rng);
                let verifying = *signing.verifying_key();
                let key = Key::<C>::from_sec1(verifying.to_sec1_point(false).as_bytes()).unwrap();
                let other = signing_key(&mut rng);
                for _ in 0..8 {
                    let digest = random_bytes(&mut rng, size);
                    let signature: Signature = signing.sign_prehash(&digest).unwrap();
                    let bytes = signature.to_bytes().to_vec();
                    let (r, s) = signature.split_scalars();
                    let high = Signature::from_scalars(*r, -*s).unwrap();
                    let forged: Signature = other.sign_prehash(&digest).unwrap();
                    let mut flipped = bytes.clone();
                    let at = (rng.next() as usize) % flipped.len();
                    flipped[at] ^= 1 << (rng.next() % 8);
                    let candidates = [
                        bytes.clone(),
                        high.to_bytes().to_vec(),
                        forged.to_bytes().to_vec(),
                        flipped,
                        [&vec![0u8; size][..], &bytes[size..]].concat(),
                        [&bytes[..size], &vec![0u8; size][..]].concat(),
                        [&bytes[..size], &vec![0xffu8; size][..]].concat(),
                        [&vec![0xffu8; size][..], &bytes[size..]].concat(),
                        bytes[..bytes.len() - 1].to_vec(),
                        [&bytes[..], &[0][..]].concat(),
                    ];
                    for candidate in &candidates {
                        let expected = Signature::try_from(candidate.as_slice())
                            .is_ok_and(|s| verifying.verify_prehash(&digest, &s).is_ok());
                        assert_eq!(key.verify_digest(&digest, candidate), expected);
                    }
                    // A valid signature and its other s verify; the forgeries above do
                    // not; another digest does not.
                    assert!(key.verify_digest(&digest, &candidates[0]));
                    assert!(key.verify_digest(&digest, &candidates[1]));
                    assert!(candidates[2..]
                        .iter()
                        .all(|c| !key.verify_digest(&digest, c)));
                    let mut other_digest = digest.clone();
                    other_digest[size - 1] ^= 1;
                    assert!(!key.verify_digest(&other_digest, &bytes));
                    assert!(!key.verify_digest(&digest[1..], &bytes));
                }
            }
        }};
    }

    /// Signatures random ones almost never are, built from a chosen R (u₁ and u₂ random,
    /// Q = u₂⁻¹·(R − u₁·G), s = r·u₂⁻¹, e = u₁·s): R with x(R) ≥ n, where r is x(R) − n and
    /// the signature is valid; R the identity, which must fail; r or s equal to n.
    macro_rules! edge_signatures {
        ($krate:ident, $curve:ident, $seed:expr) => {{
            use $krate::ecdsa::{Signature, VerifyingKey};
            use $krate::{ProjectivePoint, PublicKey, Scalar};
            type C = $krate::$curve;
            let mut rng = Rng($seed);
            let size = FieldBytes::<C>::default().len();
            let nonzero = |rng: &mut Rng| loop {
                let k = reduced::<C>(&random_bytes(rng, size));
                if !bool::from(k.is_zero()) {
                    return k;
                }
            };
            // Checks one signature both ways, and returns the verdict.
            let verdict = |q: ProjectivePoint, e: Scalar, r: &[u8], s: &[u8]| {
                let key = Key::<C>::at(q);
                let digest = e.to_repr();
                let signature = [r, s].concat();
                let ours = key.verify_digest(&digest, &signature);
                let theirs = VerifyingKey::from_affine(q.to_affine()).is_ok_and(|k| {
                    Signature::try_from(signature.as_slice())
                        .is_ok_and(|sig| k.verify_prehash(&digest, &sig).is_ok())
                });
                assert_eq!(ours, theirs);
                ours
            };
            // n, big-endian: (n − 1) + 1.
            let mut order = (-Scalar::ONE).to_repr().to_vec();
            for byte in order.iter_mut().rev() {
                let (sum, carry) = byte.overflowing_add(1);
                *byte = sum;
                if !carry {
                    break;
                }
            }
            // x(R) = n + t for the first t ≥ 1 that is a point's x (p − n is about 2¹²⁸
            // for P-256 and 2¹⁹⁰ for P-384: small t are below p).
            let mut found = 0;
            for t in 1u8..=64 {
                let mut x = order.clone();
                let (last, carry) = x[size - 1].overflowing_add(t);
                x[size - 1] = last;
                if carry {
                    continue;
                }
                let Ok(point) = PublicKey::from_sec1_bytes(&[&[0x02][..], &x].concat()) else {
                    continue;
                };
                let big_r = point.to_projective();
                let (u1, u2) = (nonzero(&mut rng), nonzero(&mut rng));
                let u2_inv = Option::<Scalar>::from(u2.invert()).unwrap();
                let q = (big_r - ProjectivePoint::GENERATOR * u1) * u2_inv;
                let r = Scalar::from(u64::from(t));
                let s = r * u2_inv;
                let e = u1 * s;
                assert!(verdict(q, e, &r.to_repr(), &s.to_repr()), "x(R) = n + {t}");
                // r taken as x(R) itself is not r: it is refused (x ≥ n is no scalar).
                assert!(!verdict(q, e, &x, &s.to_repr()));
                found += 1;
            }
            assert!(found >= 8, "{found} points with x(R) ≥ n");
            for _ in 0..8 {
                let (u1, u2, r) = (nonzero(&mut rng), nonzero(&mut rng), nonzero(&mut rng));
                let u2_inv = Option::<Scalar>::from(u2.invert()).unwrap();
                let q = -(ProjectivePoint::GENERATOR * u1) * u2_inv;
                let s = r * u2_inv;
                let e = u1 * s;
                assert!(
                    !verdict(q, e, &r.to_repr(), &s.to_repr()),
                    "R is the identity"
                );
                // And r or s equal to n is refused.
                assert!(!verdict(q, e, &order, &s.to_repr()));
                assert!(!verdict(q, e, &r.to_repr(), &order));
            }
        }};
    }

    #[test]
    fn signatures_at_the_edges_get_the_crates_verdict() {
        edge_signatures!(p256, NistP256, 0x6a09_e667_f3bc_c908);
        edge_signatures!(p384, NistP384, 0xbb67_ae85_84ca_a73b);
    }

    #[test]
    fn only_the_same_point_takes_over_multiples() {
        let q = p256::ProjectivePoint::GENERATOR * p256::Scalar::from(7u64);
        let older = Key::<p256::NistP256>::at(q);
        let same = Key::<p256::NistP256>::at(q.double() - q);
        same.inherit(&older);
        assert!(!same.has_multiples(), "nothing made yet, nothing taken");
        let k = p256::Scalar::from(1234u64);
        let product = older.times(&k);
        let other = Key::<p256::NistP256>::at(q.double());
        same.inherit(&older);
        other.inherit(&older);
        assert!(same.has_multiples());
        assert!(!other.has_multiples());
        assert!(Arc::ptr_eq(
            same.multiples.get().unwrap(),
            older.multiples.get().unwrap()
        ));
        assert!(same.times(&k) == product);
    }

    #[test]
    fn verifies_what_the_ecdsa_crate_verifies_and_nothing_else() {
        same_verdicts!(p256, NistP256, 0x51_7c_c1_b7_27_22_0a_95);
        same_verdicts!(p384, NistP384, 0x51_7c_c1_b7_27_22_0a_96);
    }
}
