//! Decoding a JWS segment: canonical unpadded base64url (RFC 7515 §2), nothing else. The
//! same verdicts as the `base64` crate's `URL_SAFE_NO_PAD` (the tests hold the two side by
//! side), in one small loop: a new token decodes its payload and signature on every request,
//! and the crate's general decoder is about 2 KB of native code run each time, four times
//! this. On a new token the code a request runs is what costs, more than its instructions:
//! Envoy's own code and the module's outgrow the CPU's L2 together (bench/README.md, "Where
//! the time goes").

/// Each base64url character's value; `INVALID` for every other byte. (Built when the crate
/// compiles: an index out of bounds here fails the build, it cannot fail a request.)
#[allow(clippy::indexing_slicing)]
const VALUES: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut values = [INVALID; 256];
    let mut i = 0;
    while i < alphabet.len() {
        values[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    values
};

const INVALID: u8 = 0xff;

fn value(byte: u8) -> u32 {
    u32::from(*VALUES.get(usize::from(byte)).unwrap_or(&INVALID))
}

/// The bytes of a canonical unpadded base64url text: characters of the URL-safe alphabet
/// only (no `=`, `+`, `/` or whitespace), a length that is not one more than a multiple of
/// four, and unused bits of the last character zero, so that a value has exactly one
/// spelling. `None` for anything else.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let tail = match text.len() % 4 {
        0 => 0,
        2 => 1,
        3 => 2,
        _ => return None,
    };
    let mut out = vec![0u8; (text.len() / 4).saturating_mul(3).saturating_add(tail)];
    // An invalid character's value is 0xff: OR-ed into `seen`, it sets a bit above the sixth.
    let mut seen = 0;
    let mut quads = text.chunks_exact(4);
    let mut triples = out.chunks_exact_mut(3);
    for (quad, triple) in quads.by_ref().zip(triples.by_ref()) {
        let &[a, b, c, d] = quad else { return None };
        let (a, b, c, d) = (value(a), value(b), value(c), value(d));
        seen |= a | b | c | d;
        let [_, x, y, z] = (a << 18 | b << 12 | c << 6 | d).to_be_bytes();
        triple.copy_from_slice(&[x, y, z]);
    }
    let rest = triples.into_remainder();
    match (quads.remainder(), rest) {
        ([], []) => {}
        (&[a, b], [first]) => {
            let (a, b) = (value(a), value(b));
            seen |= a | b;
            // Twelve bits for one byte: the last four must be zero.
            if b & 0x0f != 0 {
                return None;
            }
            let [.., x] = (a << 2 | b >> 4).to_be_bytes();
            *first = x;
        }
        (&[a, b, c], [first, second]) => {
            let (a, b, c) = (value(a), value(b), value(c));
            seen |= a | b | c;
            // Eighteen bits for two bytes: the last two must be zero.
            if c & 0x03 != 0 {
                return None;
            }
            let [.., x, y] = (a << 10 | b << 4 | c >> 2).to_be_bytes();
            (*first, *second) = (x, y);
        }
        _ => return None,
    }
    (seen <= 63).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    /// The crate's verdict: the bytes, or `None` for a refusal.
    fn reference(text: &[u8]) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text).ok()
    }

    #[test]
    fn decodes_what_the_encoder_writes() {
        for len in 0..100usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 131 + len * 7) as u8).collect();
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(decode(text.as_bytes()), Some(bytes), "len {len}");
        }
    }

    #[test]
    fn refuses_what_the_crate_refuses() {
        for text in [
            "a",
            "abcde",
            "ab=",
            "ab==",
            "abc=",
            "ab+c",
            "ab/c",
            "ab c",
            "ab\nc",
            "abc.",
            "ab\0c",
            "\u{e9}abc",
            "AB",
            "AR",
            "ABC",
            "ABD",
            "QUJD",
            "QUI",
            "QUJ",
            "QQ",
            "QR",
            "QUJDRA",
            "QUJDRB",
        ] {
            assert_eq!(
                decode(text.as_bytes()),
                reference(text.as_bytes()),
                "{text:?}"
            );
        }
    }

    /// Every byte in every position of short texts, and random texts of every length up to
    /// 64 drawn mostly from the alphabet: the same verdict and bytes as the crate.
    #[test]
    fn agrees_with_the_crate_everywhere() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for len in 1..=6usize {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = b"QUJDREVG"[..len].to_vec();
                    text[at] = byte;
                    assert_eq!(decode(&text), reference(&text), "{text:?}");
                }
            }
        }
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let len = (next() % 65) as usize;
            let text = crate::testing::mostly(&mut next, len, 50, |r| alphabet[r as usize % 64]);
            let ours = decode(&text);
            assert_eq!(ours, reference(&text), "{text:?}");
            if ours.is_some() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both verdicts were exercised, many times.
        assert!(
            accepted > 20_000 && refused > 20_000,
            "{accepted} {refused}"
        );
    }
}
