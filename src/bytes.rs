//! Bytes many at a time. Comparison: what the Wasm build links as `memcmp` and `bcmp`
//! (`host::memory`). wasi-libc's `memcmp` compares one byte per loop turn, and every slice or
//! string comparison in the module is a call to it: the verified-token cache compares the
//! whole token (a kilobyte) on every hit, which made it the largest part of a cached
//! request's Wasm work. Search: the first of some bytes, eight a turn ([`find_by_words`]), for
//! the scans a new token's text takes (its dots, its claims' strings).

use std::cmp::Ordering;

/// `memcmp` of the first `min(a.len(), b.len())` bytes: the order of the first byte that
/// differs, taken as unsigned, or `Equal`.
pub fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (a, b) = (
        a.get(..n).unwrap_or_default(),
        b.get(..n).unwrap_or_default(),
    );
    // Thirty-two bytes a turn while they are equal (four loads a side, one branch); the block
    // that differs, and what is left, word by word.
    let (mut blocks_a, mut blocks_b) = (a.chunks_exact(32), b.chunks_exact(32));
    for (x, y) in blocks_a.by_ref().zip(blocks_b.by_ref()) {
        let differ = x
            .chunks_exact(8)
            .zip(y.chunks_exact(8))
            .fold(0, |acc, (p, q)| acc | (word(p) ^ word(q)));
        if differ != 0 {
            return by_words(x, y);
        }
    }
    by_words(blocks_a.remainder(), blocks_b.remainder())
}

/// Eight bytes a turn, then the last few byte by byte.
fn by_words(a: &[u8], b: &[u8]) -> Ordering {
    let (mut words_a, mut words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in words_a.by_ref().zip(words_b.by_ref()) {
        if word(x) != word(y) {
            return first_difference(x, y);
        }
    }
    first_difference(words_a.remainder(), words_b.remainder())
}

/// Eight bytes as one number (one load in Wasm).
fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]))
}

/// Byte by byte, for at most eight bytes. Written as a loop of its own: a slice comparison
/// here would be a call to `memcmp`, that is, to [`compare`].
fn first_difference(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    Ordering::Equal
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// `byte` in each of the eight bytes of a word.
pub const fn splat(byte: u8) -> u64 {
    ONES.wrapping_mul(byte as u64)
}

/// The bytes of the word `x` below `n` (at most 0x80), each marked by its high bit. Exact for
/// the lowest marked byte: a subtraction borrows only out of a byte below `n`, so a byte
/// marked wrongly always sits above one marked rightly.
#[inline(always)]
pub fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(splat(n)) & !x & HIGHS
}

/// The bytes of the word `x` equal to `byte`, marked as by [`below`].
#[inline(always)]
pub fn equal(x: u64, byte: u8) -> u64 {
    below(x ^ splat(byte), 1)
}

/// Where the first byte of `bytes` that `is` takes stands. `marks` marks, in a word of eight
/// bytes (the first one lowest), the bytes `is` takes, exactly for the lowest one, as
/// [`below`] and [`equal`] do: eight bytes a turn, then the last few one by one.
#[inline(always)]
pub fn find_by_words(
    bytes: &[u8],
    marks: impl Fn(u64) -> u64,
    is: impl Fn(&u8) -> bool,
) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0usize;
    for chunk in words.by_ref() {
        let marked = marks(word(chunk));
        if marked != 0 {
            // The lowest marked bit is the high bit of the first byte found.
            return at.checked_add(usize::try_from(marked.trailing_zeros() / 8).ok()?);
        }
        at = at.checked_add(8)?;
    }
    at.checked_add(words.remainder().iter().position(is)?)
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn orders_as_a_byte_slice_comparison_does() {
        let base: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert_eq!(compare(a, a), std::cmp::Ordering::Equal, "len {len}");
            for at in 0..len {
                for delta in [1u8, 0x7f, 0x80, 0xff] {
                    let mut b = a.to_vec();
                    b[at] = b[at].wrapping_add(delta);
                    // Unsigned, as memcmp: 0xff sorts after 0x01.
                    assert_eq!(compare(a, &b), a.cmp(&b[..]), "len {len} at {at} +{delta}");
                    assert_eq!(compare(&b, a), b[..].cmp(a), "len {len} at {at} +{delta}");
                }
            }
        }
    }

    /// The first byte found, wherever it falls in or across the words, among bytes that are
    /// it but for one bit (the high bit among them) or just below it: as a byte-by-byte
    /// search finds it.
    #[test]
    fn finds_the_first_byte_as_a_byte_search_does() {
        use super::{below, equal, find_by_words};
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for target in [b'.', b'"', 0x00, 0x7f] {
            let near = [
                target,
                target ^ 0x80,
                target ^ 0x01,
                target ^ 0x10,
                target.wrapping_sub(1),
                target.wrapping_add(1),
                0,
                0xff,
                b'a',
            ];
            for len in 0..40usize {
                for at in 0..=len {
                    for _ in 0..8 {
                        let mut text =
                            crate::testing::mostly(&mut next, len, 3, |r| near[r as usize % 8 + 1]);
                        if let Some(b) = text.get_mut(at) {
                            *b = target;
                        }
                        let naive = text.iter().position(|b| *b == target);
                        let found = find_by_words(&text, |x| equal(x, target), |b| *b == target);
                        assert_eq!(found, naive, "{target} {text:?}");
                    }
                }
            }
        }
        // Below a bound, every bound: bytes just above it, and high ones, around it.
        for n in 1..=0x80u8 {
            for len in 0..20usize {
                for _ in 0..20 {
                    let text = crate::testing::mostly(&mut next, len, 4, |r| {
                        [n, n.wrapping_add(1), n | 0x80, 0xff][r as usize % 4]
                    });
                    let naive = text.iter().position(|b| *b < n);
                    assert_eq!(find_by_words(&text, |x| below(x, n), |b| *b < n), naive);
                }
            }
        }
    }

    #[test]
    fn compares_the_common_length_only() {
        assert_eq!(
            compare(b"abcdefghij", b"abcdefghijZZZ"),
            std::cmp::Ordering::Equal
        );
        assert_eq!(compare(b"", b"x"), std::cmp::Ordering::Equal);
        assert_eq!(
            compare(b"abcdefghiX", b"abcdefghiY"),
            std::cmp::Ordering::Less
        );
    }
}
