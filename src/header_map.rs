//! The proxy-wasm ABI's serialized header map, read in place.
//!
//! `proxy_get_header_map_pairs` hands the module one buffer: a little-endian `u32` count,
//! then per pair its name and value lengths (two `u32`), then each name and each value
//! followed by a NUL byte (Envoy's proxy-wasm host and ngx_wasm_module both write it so).
//! The proxy-wasm Rust SDK copied every name and value into a `String`/`Vec` of their own;
//! [`parse`] only points into the buffer, so a request's header list costs one allocation
//! (the list itself).

use crate::credential::Header;

/// The pairs of a serialized header map, borrowed from `buf`. `None` when the buffer is not
/// one: too short for its count or its lengths, a name or value running past the end, or a
/// missing NUL. Names and values are bytes, any byte goes: what reads a name compares it
/// with the names it knows (checking every name for UTF-8 was a fifth of a cached request's
/// Wasm work). An empty buffer is an empty map. Bytes after the last pair are ignored, as
/// the SDK ignores them.
pub fn parse(buf: &[u8]) -> Option<Vec<Header<'_>>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let (count, rest) = read_u32(buf)?;
    let lengths_size = count.checked_mul(8)?;
    // Checked before the list is sized by `count`: a huge count in a short buffer is refused
    // without allocating for it.
    let lengths = rest.get(..lengths_size)?;
    let mut data = rest.get(lengths_size..)?;
    let mut pairs = Vec::with_capacity(count);
    for entry in lengths.chunks_exact(8) {
        let (name_len, entry) = read_u32(entry)?;
        let (value_len, _) = read_u32(entry)?;
        let (name, rest) = field(data, name_len)?;
        let (value, rest) = field(rest, value_len)?;
        data = rest;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The value of the pseudo-header `name` (`:path`, `:authority`) as text, `""` when the map
/// has none. `None` when its value is not UTF-8: such a `:path` must be refused, never read
/// as empty (its query string, and any credential in it, would go unseen and unstripped).
pub fn pseudo<'a>(headers: &[Header<'a>], name: &str) -> Option<&'a str> {
    match headers.iter().find(|(n, _)| *n == name.as_bytes()) {
        Some((_, value)) => std::str::from_utf8(value).ok(),
        None => Some(""),
    }
}

/// `pairs` serialized as [`parse`] reads them: the form the ABI also wants for a map the
/// module hands to the host (a local reply's headers). Lengths are `u32`s, as on the wire
/// (in Wasm, where this runs, no slice is longer).
pub fn serialize<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let size = pairs.iter().fold(4usize, |size, (n, v)| {
        size.saturating_add(10)
            .saturating_add(n.as_ref().len())
            .saturating_add(v.as_ref().len())
    });
    let mut out = Vec::with_capacity(size);
    out.extend((pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend((n.as_ref().len() as u32).to_le_bytes());
        out.extend((v.as_ref().len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// A little-endian `u32` at the start of `buf`, as a length, and what follows it.
fn read_u32(buf: &[u8]) -> Option<(usize, &[u8])> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let n = usize::try_from(u32::from_le_bytes(bytes)).ok()?;
    Some((n, buf.get(4..)?))
}

/// The `len` bytes at the start of `data`, which must be followed by a NUL, and what follows
/// that NUL.
fn field(data: &[u8], len: usize) -> Option<(&[u8], &[u8])> {
    let bytes = data.get(..len)?;
    match data.get(len..)?.split_first()? {
        (0, rest) => Some((bytes, rest)),
        _ => None,
    }
}

/// Whether a request header name is `name` with some `-` and `_` swapped (letters in any
/// case), and not `name` itself: `x_application_id` for `x-application-id`, and `x-subject`
/// for a claim forwarded as `x_subject`.
pub fn is_alias(header: &[u8], name: &str) -> bool {
    spells(header, name) && !header.eq_ignore_ascii_case(name.as_bytes())
}

/// Whether a request header name is `name` in some spelling: letters in any case, each `-`
/// or `_` as either.
pub fn spells(header: &[u8], name: &str) -> bool {
    let dash = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    header.len() == name.len()
        && header
            .iter()
            .zip(name.bytes())
            .all(|(h, n)| dash(*h) == dash(n))
}

/// Whether the request carries none of `names` in any spelling ([`spells`]): then none is
/// removed, and every one of them is absent. Most requests carry none; their header names are
/// first told apart by length, against all of `names` at once (one bit per length, lengths
/// of 63 and more sharing the last).
pub fn carries_none(headers: &[Header<'_>], names: &[String]) -> bool {
    let bit = |len: usize| 1u64 << len.min(63);
    let lengths = names.iter().fold(0u64, |bits, name| bits | bit(name.len()));
    headers.iter().all(|(header, _)| {
        lengths & bit(header.len()) == 0 || !names.iter().any(|name| spells(header, name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs` as [`parse`] gives them.
    fn headers<'a>(pairs: &[(&'a str, &'a [u8])]) -> Vec<Header<'a>> {
        pairs.iter().map(|(n, v)| (n.as_bytes(), *v)).collect()
    }

    const PAIRS: &[(&str, &[u8])] = &[
        (":method", b"GET"),
        (":path", b"/bytes/1"),
        (":authority", b"httpbin.org"),
        ("Powered-By", b"proxy-wasm"),
    ];

    #[test]
    fn reads_the_sdk_example() {
        // proxy-wasm 0.2.5's own test vector (hostcalls::utils::tests::SERIALIZED_MAP).
        #[rustfmt::skip]
        let sdk: &[u8] = &[
            4, 0, 0, 0,
            7, 0, 0, 0, 3, 0, 0, 0,
            5, 0, 0, 0, 8, 0, 0, 0,
            10, 0, 0, 0, 11, 0, 0, 0,
            10, 0, 0, 0, 10, 0, 0, 0,
            58, 109, 101, 116, 104, 111, 100, 0,
            71, 69, 84, 0,
            58, 112, 97, 116, 104, 0,
            47, 98, 121, 116, 101, 115, 47, 49, 0,
            58, 97, 117, 116, 104, 111, 114, 105, 116, 121, 0,
            104, 116, 116, 112, 98, 105, 110, 46, 111, 114, 103, 0,
            80, 111, 119, 101, 114, 101, 100, 45, 66, 121, 0,
            112, 114, 111, 120, 121, 45, 119, 97, 115, 109, 0,
        ];
        assert_eq!(sdk, serialize(PAIRS).as_slice());
        assert_eq!(parse(sdk), Some(headers(PAIRS)));
    }

    #[test]
    fn borrows_from_the_buffer() {
        let buf = serialize(PAIRS);
        let pairs = parse(&buf).unwrap();
        let range = buf.as_ptr_range();
        for (n, v) in pairs {
            assert!(range.contains(&n.as_ptr()) && range.contains(&v.as_ptr()));
        }
    }

    #[test]
    fn empty_maps() {
        assert_eq!(parse(&[]), Some(vec![]));
        assert_eq!(parse(&[0, 0, 0, 0]), Some(vec![]));
        assert_eq!(parse(&serialize::<&str, &[u8]>(&[])), Some(vec![]));
    }

    #[test]
    fn empty_names_and_values() {
        let pairs: &[(&str, &[u8])] = &[("", b""), ("x-empty", b""), ("", b"v")];
        assert_eq!(parse(&serialize(pairs)), Some(headers(pairs)));
    }

    #[test]
    fn values_are_bytes() {
        let pairs: &[(&str, &[u8])] = &[
            ("authorization", b"Bearer \xe9t\xe9"),
            ("x-bin", b"\xff\x00\xfe"),
            ("caf\u{e9}", "caf\u{e9}".as_bytes()),
        ];
        assert_eq!(parse(&serialize(pairs)), Some(headers(pairs)));
    }

    #[test]
    fn names_are_bytes_too() {
        let mut buf = serialize(&[("a", b"1"), ("xy", b"2")]);
        // Header: 4 + 2 × 8 bytes; "a\0" "1\0", then "xy".
        let at = 4 + 16 + 4;
        assert_eq!(&buf[at..at + 2], b"xy");
        buf[at] = 0xe9;
        let pairs = parse(&buf).unwrap();
        assert_eq!(pairs[1], (b"\xe9y".as_slice(), b"2".as_slice()));
    }

    #[test]
    fn short_buffers_are_refused() {
        let buf = serialize(PAIRS);
        for len in 1..buf.len() {
            assert_eq!(parse(&buf[..len]), None, "truncated to {len}");
        }
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut buf = serialize(PAIRS);
        buf.extend(b"junk");
        assert_eq!(parse(&buf), Some(headers(PAIRS)));
    }

    #[test]
    fn counts_too_large_are_refused() {
        let buf = serialize(PAIRS);
        for count in [5u32, 6, 1000, u32::MAX / 8, u32::MAX / 8 + 1, u32::MAX] {
            let mut b = buf.clone();
            b[..4].copy_from_slice(&count.to_le_bytes());
            assert_eq!(parse(&b), None, "count {count}");
        }
        // A count of 0 with pairs behind it is an empty map (the rest is trailing bytes).
        let mut b = buf.clone();
        b[..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse(&b), Some(vec![]));
    }

    #[test]
    fn lengths_past_the_end_are_refused() {
        let buf = serialize(PAIRS);
        // Each length in turn (name and value of every pair), made too large.
        for slot in 0..PAIRS.len() * 2 {
            let at = 4 + slot * 4;
            for len in [buf.len() as u32, 1 << 20, u32::MAX] {
                let mut b = buf.clone();
                b[at..at + 4].copy_from_slice(&len.to_le_bytes());
                assert_eq!(parse(&b), None, "slot {slot} length {len}");
            }
        }
    }

    #[test]
    fn shifted_lengths_are_refused() {
        // A name one byte longer than written: the NUL lands inside it, the next byte is not NUL.
        let mut buf = serialize(&[("ab", b"cd")]);
        buf[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(parse(&buf), None);
        // One byte shorter: where its NUL should be is the name's last byte.
        let mut buf = serialize(&[("ab", b"cd")]);
        buf[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse(&buf), None);
    }

    /// A `:path` that is not UTF-8 (Envoy's HTTP/2 codec passes a raw 0xE9 through; its
    /// HTTP/1 codec answers 400 itself) is no path, never an empty one: read as `""`, its
    /// query string would be invisible to the credential rules (a second API key or
    /// `access_token` let through unseen, a key `hide_credentials` must strip forwarded).
    #[test]
    fn a_path_that_is_not_utf8_is_none_never_empty() {
        let pairs: &[(&str, &[u8])] = &[
            (":path", b"/orders?apikey=other&x=\xe9"),
            (":authority", b"api.example.com"),
            ("apikey", b"key-one"),
        ];
        let buf = serialize(pairs);
        let h = parse(&buf).unwrap();
        assert_eq!(pseudo(&h, ":authority"), Some("api.example.com"));
        assert_eq!(pseudo(&h, ":path"), None);
        // Absent is empty (a request without `:path` carries no query string).
        assert_eq!(pseudo(&h, ":method"), Some(""));
    }

    #[test]
    fn missing_nuls_are_refused() {
        let buf = serialize(&[("ab", b"cd".as_slice()), ("e", b"f".as_slice())]);
        let data = 4 + 2 * 8;
        // The NUL after each name and value.
        for at in [data + 2, data + 5, data + 7, data + 9] {
            assert_eq!(buf[at], 0);
            let mut b = buf.clone();
            b[at] = b'x';
            assert_eq!(parse(&b), None, "NUL at {at}");
        }
    }

    #[test]
    fn a_name_is_spelt_in_any_case_with_dashes_and_underscores_swapped() {
        for header in [
            "x-application-id",
            "X-Application-ID",
            "x_application_id",
            "X_application-Id",
        ] {
            assert!(spells(header.as_bytes(), "x-application-id"), "{header}");
        }
        for header in [
            "x-application-i",
            "x-application-idd",
            "x.application.id",
            "y-application-id",
            "",
        ] {
            assert!(!spells(header.as_bytes(), "x-application-id"), "{header}");
        }
        // An alias is another spelling, never the name itself in another case.
        assert!(is_alias(b"x_application_id", "x-application-id"));
        assert!(is_alias(b"X-Application_Id", "x-application-id"));
        assert!(!is_alias(b"X-Application-Id", "x-application-id"));
        assert!(!is_alias(b"x-application-id", "x-application-id"));
    }

    /// `carries_none` against `spells` name by name, over names of every length around the
    /// 63 where lengths share their bit.
    #[test]
    fn carries_none_is_no_header_spelling_any_name() {
        let names: Vec<String> = [
            "x-application-id",
            "x-credential-identifier",
            "a",
            &"n".repeat(63),
            &"m".repeat(70),
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        let mut senders: Vec<Vec<u8>> = vec![
            b"X_Application-Id".to_vec(),
            b"x-credential_identifier".to_vec(),
            b"A".to_vec(),
        ];
        senders.extend([62, 63, 64, 70, 71].map(|len| vec![b'n'; len]));
        senders.extend([62, 63, 64, 70, 71].map(|len| vec![b'M'; len]));
        senders.extend([
            b"x-application-ix".to_vec(),
            b"b".to_vec(),
            b"authorization".to_vec(),
        ]);
        for sent in &senders {
            let mut headers: Vec<Header<'_>> =
                PAIRS.iter().map(|(n, v)| (n.as_bytes(), *v)).collect();
            headers.push((sent.as_slice(), b"v"));
            let expected = !names.iter().any(|n| spells(sent, n));
            assert_eq!(
                carries_none(&headers, &names),
                expected,
                "{}",
                String::from_utf8_lossy(sent)
            );
        }
        // The benchmark's kind of request, and no names at all.
        assert!(carries_none(&headers(PAIRS), &names));
        assert!(carries_none(
            &headers(&[("x_application_id", b"spoof")]),
            &[]
        ));
        assert!(!carries_none(
            &headers(&[("x_application_id", b"spoof")]),
            &names
        ));
    }
}
