//! Byte comparison many bytes at a time: what the Wasm build links as `memcmp` and `bcmp`
//! (`host::memory`). wasi-libc's `memcmp` compares one byte per loop turn, and every slice or
//! string comparison in the module is a call to it: the verified-token cache compares the
//! whole token (a kilobyte) on every hit, which made it the largest part of a cached
//! request's Wasm work.

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
