//! `credential::extract`, `cache_candidate`, `extract_api_key`, `query_param`,
//! `query_values` and `strip_query_params` on an arbitrary request.
//!
//! Input: lines separated by `\n`. The first line is the path (lossy UTF-8, as the host's
//! `:path` is a string); each further line is a header `name:value`, the value raw bytes
//! (up to 8 headers).

#![no_main]

use app_auth_filter::credential::{self, Candidate, Credential, Header, Source};
use libfuzzer_sys::fuzz_target;

const KEY_NAMES: [&str; 2] = ["apikey", "x-api-key"];

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let path = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let owned: Vec<(String, &[u8])> = lines
        .take(8)
        .map(|line| {
            let (name, value) = match line.iter().position(|b| *b == b':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            };
            (String::from_utf8_lossy(name).into_owned(), value)
        })
        .collect();
    let headers: Vec<Header> = owned.iter().map(|(n, v)| (n.as_bytes(), *v)).collect();
    let key_names: Vec<String> = KEY_NAMES.iter().map(|s| s.to_string()).collect();

    // A small limit too, so that the size checks are reachable with short inputs.
    for max in [16384, 24] {
        let extracted = credential::extract(&headers, &path, max);
        // What a cache is asked before the rules: a bearer candidate that the rules read as
        // a token is exactly that token, from the header; a Basic candidate is the whole
        // value of the one Authorization header, which the rules read as Basic or refuse.
        match credential::cache_candidate(&headers, &path, max) {
            Some(Candidate::Bearer(t)) => match &extracted {
                Ok(Some(Credential::Bearer { token, source })) => {
                    assert_eq!(token.as_bytes(), t, "the rules read another token");
                    assert_eq!(*source, Source::Header);
                }
                Ok(Some(Credential::Basic { .. } | Credential::OtherScheme) | None) => {
                    panic!("a bearer candidate the rules read otherwise: {extracted:?}")
                }
                Err(_) => {}
            },
            Some(Candidate::Basic(v)) => {
                let mut values = headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(b"authorization"));
                assert_eq!(values.next().map(|(_, v)| *v), Some(v));
                assert!(values.next().is_none(), "a candidate of several values");
                assert!(
                    matches!(extracted, Ok(Some(Credential::Basic { .. })) | Err(_)),
                    "a Basic candidate the rules read otherwise: {extracted:?}"
                );
                // The plain spelling (the one remembered) is a function of the client and
                // secret: base64 of the pair, or the pair as it is.
                if let Ok(Some(Credential::Basic {
                    client_id,
                    client_secret,
                })) = &extracted
                {
                    if credential::plain_basic(v) {
                        use base64::Engine as _;
                        let pair = format!("{client_id}:{client_secret}");
                        let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
                        assert!(
                            v == format!("Basic {encoded}").as_bytes()
                                || v == format!("Basic {pair}").as_bytes(),
                            "another plain spelling of {pair:?}"
                        );
                    }
                }
            }
            None => {}
        }
        match extracted {
            Ok(Some(Credential::Bearer { token, .. })) => {
                assert!(!token.is_empty(), "empty bearer token");
                assert!(token.len() <= max, "bearer token over the limit");
                assert!(
                    token.bytes().all(|b| (0x21..0x7f).contains(&b)),
                    "bearer token is not printable ASCII: {token:?}"
                );
                assert!(!token.contains(','), "bearer token with a comma: {token:?}");
            }
            Ok(Some(Credential::Basic {
                client_id,
                client_secret,
            })) => {
                assert!(!client_id.is_empty() && !client_secret.is_empty());
                assert!(!client_id
                    .chars()
                    .chain(client_secret.chars())
                    .any(char::is_control));
            }
            Ok(Some(Credential::OtherScheme)) | Ok(None) | Err(_) => {}
        }

        if let Ok(Some((name, key))) = credential::extract_api_key(&headers, &path, &key_names, max)
        {
            assert!(key_names.iter().any(|n| n == name));
            assert!(
                !key.is_empty() && key.len() <= max,
                "API key length {}",
                key.len()
            );
            assert!(
                key.bytes().all(|b| (0x21..0x7f).contains(&b)),
                "API key is not printable ASCII: {key:?}"
            );
        }
    }

    let _ = credential::query_param(&path, "access_token");
    for name in KEY_NAMES {
        let _ = credential::query_values(&path, name);
    }

    // hide_credentials: once stripped, the query string carries no credential.
    let names = ["access_token", "apikey", "x-api-key"];
    let stripped = credential::strip_query_params(&path, &names);
    assert!(
        !matches!(
            credential::extract(&[], &stripped, 16384),
            Ok(Some(Credential::Bearer {
                source: Source::Query,
                ..
            }))
        ),
        "access_token survives strip_query_params: {path:?} -> {stripped:?}"
    );
    assert!(
        matches!(
            credential::extract_api_key(&[], &stripped, &key_names, 16384),
            Ok(None) | Err(_)
        ),
        "API key survives strip_query_params: {path:?} -> {stripped:?}"
    );
    assert_eq!(
        credential::strip_query_params(&stripped, &names),
        stripped,
        "strip_query_params is not idempotent"
    );
});
