// Test code only: the parent module declares this file behind #[cfg(test)].
use super::*;
use base64::Engine as _;

const MAX: usize = 64;

const TWO_HEADERS: Malformed = Malformed::InvalidRequest("more than one Authorization header");
const HEADER_AND_QUERY: Malformed =
    Malformed::InvalidRequest("credentials in both the Authorization header and the query string");
const NOT_PRINTABLE: Malformed =
    Malformed::InvalidRequest("Authorization header has bytes that are not printable ASCII");
const COMMA: Malformed =
    Malformed::InvalidRequest("more than one credential in the Authorization header");
const NO_TOKEN: Malformed = Malformed::InvalidRequest("Bearer scheme without a token");
const NOT_TOKEN68: Malformed = Malformed::InvalidRequest("bearer token is not a token68 string");
const REPEATED_PARAM: Malformed = Malformed::InvalidRequest("query parameter given more than once");
const BAD_PERCENT: Malformed =
    Malformed::InvalidRequest("query parameter is not valid percent-encoding");
const NO_BASIC: Malformed = Malformed::InvalidRequest("Basic scheme without credentials");
const NOT_A_PAIR: Malformed =
    Malformed::InvalidRequest("Basic credentials are neither base64 nor client_id:client_secret");
const NO_COLON: Malformed = Malformed::InvalidRequest("Basic credentials have no ':'");
const EMPTY_PART: Malformed = Malformed::InvalidRequest("Basic credentials with an empty part");
const CONTROL: Malformed =
    Malformed::InvalidRequest("Basic credentials contain control characters");
const BAD_FORM: Malformed =
    Malformed::InvalidRequest("Basic credentials are not valid form-encoding");
const KEY_NOT_PRINTABLE: Malformed = Malformed::InvalidRequest("API key is not printable ASCII");

fn header<'a>(name: &'a str, value: &'a [u8]) -> Header<'a> {
    (name.as_bytes(), value)
}

/// `extract` with one `Authorization` header and no query string.
fn from_header(value: &[u8]) -> Result<Option<Credential>, Malformed> {
    extract(&[header("authorization", value)], "/", MAX)
}

fn from_query(path: &str) -> Result<Option<Credential>, Malformed> {
    extract(&[], path, MAX)
}

fn bearer(token: &str, source: Source) -> Result<Option<Credential>, Malformed> {
    Ok(Some(Credential::Bearer {
        token: token.to_owned(),
        source,
    }))
}

fn basic(client_id: &str, client_secret: &str) -> Result<Option<Credential>, Malformed> {
    Ok(Some(Credential::Basic {
        client_id: client_id.to_owned(),
        client_secret: client_secret.to_owned(),
    }))
}

/// `Basic base64(pair)` as header bytes.
fn basic_header(pair: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
    format!("Basic {b64}").into_bytes()
}

fn keys(
    headers: &[Header<'_>],
    path: &str,
    names: &[&str],
) -> Result<Option<(String, String)>, Malformed> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let found = extract_api_key(headers, path, &names, MAX)?;
    Ok(found.map(|(name, key)| (name.to_owned(), key.into_owned())))
}

fn key(name: &str, value: &str) -> Result<Option<(String, String)>, Malformed> {
    Ok(Some((name.to_owned(), value.to_owned())))
}

// ---- no credential ----

#[test]
fn no_credential_is_none() {
    assert_eq!(extract(&[], "/", MAX), Ok(None));
    assert_eq!(extract(&[], "/orders", MAX), Ok(None));
    let others = [
        header("x-authorization", b"Bearer abc"),
        header("proxy-authorization", b"Bearer abc"),
        header("cookie", b"access_token=abc"),
    ];
    assert_eq!(
        extract(
            &others,
            "/orders?a=1&access_tokens=x&xaccess_token=y&token=z",
            MAX
        ),
        Ok(None)
    );
}

#[test]
fn query_parameter_names_are_exact() {
    assert_eq!(from_query("/p?ACCESS_TOKEN=abc"), Ok(None));
    assert_eq!(from_query("/p?Access_Token=abc"), Ok(None));
    assert_eq!(from_query("/p?access_token_=abc"), Ok(None));
    assert_eq!(from_query("/p?access%5Ftoken%00=abc"), Ok(None));
}

#[test]
fn query_parameter_names_are_compared_decoded() {
    // As Envoy's jwt_authn and Kong's query arguments read them, and as the upstream's form
    // decoder will: an encoded name is the same parameter, never a stranger let through.
    assert_eq!(
        from_query("/p?access%5Ftoken=abc"),
        bearer("abc", Source::Query)
    );
    assert_eq!(
        from_query("/p?access_token=a&%61ccess_token=b"),
        Err(REPEATED_PARAM)
    );
    let auth = header("authorization", b"Bearer a.b.c");
    assert_eq!(
        extract(&[auth], "/p?access%5ftoken=x", MAX),
        Err(HEADER_AND_QUERY)
    );
    assert_eq!(
        query_values("/p?api%6Bey=1&apikey=2&api+key=3", "apikey"),
        Ok(vec!["1".to_owned(), "2".to_owned()])
    );
    assert_eq!(
        strip_query_params(
            "/p?a=1&access%5Ftoken=t&b=2&access_token=u",
            &["access_token"]
        ),
        "/p?a=1&b=2"
    );
    // An undecodable name is nobody's.
    assert_eq!(from_query("/p?access%5_token=abc"), Ok(None));
}

// ---- bearer in the Authorization header ----

#[test]
fn bearer_from_header() {
    assert_eq!(
        from_header(b"Bearer eyJhbGciOi.eyJzdWIi.c2ln"),
        bearer("eyJhbGciOi.eyJzdWIi.c2ln", Source::Header)
    );
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    for value in [&b"bearer abc"[..], b"BEARER abc", b"bEaReR abc"] {
        assert_eq!(
            from_header(value),
            bearer("abc", Source::Header),
            "{value:?}"
        );
    }
}

#[test]
fn bearer_tolerates_extra_spaces_around_and_after_the_scheme() {
    assert_eq!(
        from_header(b"   Bearer     abc   "),
        bearer("abc", Source::Header)
    );
    assert_eq!(from_header(b"Bearer  abc"), bearer("abc", Source::Header));
}

#[test]
fn authorization_header_name_is_case_insensitive() {
    for name in ["Authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"] {
        assert_eq!(
            extract(&[header(name, b"Bearer abc")], "/", MAX),
            bearer("abc", Source::Header),
            "{name}"
        );
    }
}

#[test]
fn bearer_token_may_use_every_token68_character_and_trailing_padding() {
    let all = "AZaz09-._~+/";
    assert_eq!(
        from_header(format!("Bearer {all}").as_bytes()),
        bearer(all, Source::Header)
    );
    assert_eq!(from_header(b"Bearer abc="), bearer("abc=", Source::Header));
    assert_eq!(
        from_header(b"Bearer abc=="),
        bearer("abc==", Source::Header)
    );
}

#[test]
fn bearer_without_a_token_is_invalid() {
    assert_eq!(from_header(b"Bearer"), Err(NO_TOKEN));
    assert_eq!(from_header(b"Bearer "), Err(NO_TOKEN));
    assert_eq!(from_header(b"Bearer     "), Err(NO_TOKEN));
    assert_eq!(from_header(b"bearer"), Err(NO_TOKEN));
}

#[test]
fn bearer_token_outside_token68_is_invalid() {
    for value in [
        &b"Bearer a\"b"[..],
        b"Bearer a;b",
        b"Bearer a\\b",
        b"Bearer a b",
        b"Bearer a:b",
        b"Bearer a@b",
        b"Bearer a=b",
        b"Bearer =abc",
        b"Bearer =",
        b"Bearer ===",
        b"Bearer \"abc\"",
    ] {
        assert_eq!(
            from_header(value),
            Err(NOT_TOKEN68),
            "{}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn non_printable_authorization_bytes_are_invalid() {
    for value in [
        &b"Bearer \xe9abc"[..],
        "Bearer é".as_bytes(),
        b"Bearer a\0b",
        b"Bearer\tabc",
        b"Bearer abc\t",
        b"Bearer abc\r\n",
        b"Bearer a\x7fb",
        b"Basic \x01",
    ] {
        assert_eq!(from_header(value), Err(NOT_PRINTABLE), "{value:?}");
    }
}

#[test]
fn comma_in_authorization_is_invalid() {
    // What Envoy makes of two Authorization headers.
    assert_eq!(from_header(b"Bearer a,Bearer b"), Err(COMMA));
    assert_eq!(from_header(b"Bearer a, Bearer b"), Err(COMMA));
    assert_eq!(from_header(b"Bearer a,"), Err(COMMA));
    assert_eq!(from_header(b"Basic aWQ6c2VjcmV0,Bearer b"), Err(COMMA));
}

#[test]
fn two_authorization_headers_are_invalid() {
    let two = |a: &str, b: &str| {
        extract(
            &[header(a, b"Bearer abc"), header(b, b"Bearer abc")],
            "/",
            MAX,
        )
    };
    assert_eq!(two("authorization", "authorization"), Err(TWO_HEADERS));
    assert_eq!(two("authorization", "Authorization"), Err(TWO_HEADERS));
    assert_eq!(two("AUTHORIZATION", "authorization"), Err(TWO_HEADERS));
    // Even when one is empty, and when other headers sit between them.
    assert_eq!(
        extract(
            &[
                header("authorization", b"Bearer abc"),
                header("x-other", b"1"),
                header("authorization", b""),
            ],
            "/",
            MAX
        ),
        Err(TWO_HEADERS)
    );
}

#[test]
fn two_authorization_headers_are_refused_before_anything_else() {
    // Even with a query token too (that would be HEADER_AND_QUERY otherwise).
    assert_eq!(
        extract(
            &[
                header("authorization", b"Bearer abc"),
                header("authorization", b"Bearer abc"),
            ],
            "/p?access_token=abc",
            MAX
        ),
        Err(TWO_HEADERS)
    );
}

// ---- bearer in the query string ----

#[test]
fn bearer_from_access_token_query_parameter() {
    assert_eq!(
        from_query("/p?access_token=abc"),
        bearer("abc", Source::Query)
    );
    assert_eq!(
        from_query("/p?a=1&access_token=abc&b=2"),
        bearer("abc", Source::Query)
    );
    // A fragment is not part of the query.
    assert_eq!(
        from_query("/p?access_token=abc#frag"),
        bearer("abc", Source::Query)
    );
}

#[test]
fn query_token_is_percent_decoded() {
    assert_eq!(
        from_query("/p?access_token=a%2Fb%2bc%3D%3d"),
        bearer("a/b+c==", Source::Query)
    );
}

#[test]
fn query_token_plus_is_a_literal_plus() {
    // RFC 6750 §2.3 uses RFC 3986 query syntax, not form encoding.
    assert_eq!(
        from_query("/p?access_token=a+b"),
        bearer("a+b", Source::Query)
    );
}

#[test]
fn query_token_must_be_token68_after_decoding() {
    assert_eq!(from_query("/p?access_token=a%20b"), Err(NOT_TOKEN68));
    assert_eq!(from_query("/p?access_token=a%22b"), Err(NOT_TOKEN68));
    assert_eq!(from_query("/p?access_token=a%00b"), Err(NOT_TOKEN68));
    assert_eq!(from_query("/p?access_token="), Err(NOT_TOKEN68));
    assert_eq!(from_query("/p?access_token"), Err(NOT_TOKEN68));
}

#[test]
fn query_token_with_bad_percent_encoding_is_invalid() {
    for path in [
        "/p?access_token=a%zz",
        "/p?access_token=a%4",
        "/p?access_token=a%",
        "/p?access_token=%E9",
        "/p?access_token=%+1",
        "/p?access_token=%-1",
    ] {
        assert_eq!(from_query(path), Err(BAD_PERCENT), "{path}");
    }
}

#[test]
fn repeated_access_token_parameter_is_invalid() {
    assert_eq!(
        from_query("/p?access_token=a&access_token=a"),
        Err(REPEATED_PARAM)
    );
    assert_eq!(
        from_query("/p?access_token=a&x=1&access_token="),
        Err(REPEATED_PARAM)
    );
}

#[test]
fn header_and_query_together_are_invalid() {
    let both = |value: &[u8]| {
        extract(
            &[header("authorization", value)],
            "/p?access_token=abc",
            MAX,
        )
    };
    assert_eq!(both(b"Bearer abc"), Err(HEADER_AND_QUERY));
    assert_eq!(both(b"Bearer other"), Err(HEADER_AND_QUERY));
    assert_eq!(both(&basic_header(b"id:secret")), Err(HEADER_AND_QUERY));
    assert_eq!(both(b"Digest abc"), Err(HEADER_AND_QUERY));
}

// ---- size limit ----

#[test]
fn header_token_at_the_limit_is_accepted_one_more_is_too_large() {
    let at = "a".repeat(MAX);
    assert_eq!(
        from_header(format!("Bearer {at}").as_bytes()),
        bearer(&at, Source::Header)
    );
    let over = "a".repeat(MAX + 1);
    assert_eq!(
        from_header(format!("Bearer {over}").as_bytes()),
        Err(Malformed::TooLarge)
    );
}

#[test]
fn query_token_at_the_limit_is_accepted_one_more_is_too_large() {
    let at = "a".repeat(MAX);
    assert_eq!(
        from_query(&format!("/p?access_token={at}")),
        bearer(&at, Source::Query)
    );
    let over = "a".repeat(MAX + 1);
    assert_eq!(
        from_query(&format!("/p?access_token={over}")),
        Err(Malformed::TooLarge)
    );
}

#[test]
fn huge_authorization_header_is_too_large_whatever_its_scheme() {
    let huge = format!("Digest {}", "a".repeat(MAX + 16));
    assert_eq!(from_header(huge.as_bytes()), Err(Malformed::TooLarge));
    let huge = format!("Basic {}", "a".repeat(MAX + 16));
    assert_eq!(from_header(huge.as_bytes()), Err(Malformed::TooLarge));
    // Size is checked before content.
    let huge = format!("Bearer {}\u{e9}", "a".repeat(MAX + 16));
    assert_eq!(from_header(huge.as_bytes()), Err(Malformed::TooLarge));
    // The bound is the limit plus 16 bytes of scheme and spaces, that long value included.
    let at = format!("Digest {}", "a".repeat(MAX + 9));
    assert_eq!(
        from_header(at.as_bytes()),
        Ok(Some(Credential::OtherScheme))
    );
    let over = format!("Digest {}", "a".repeat(MAX + 10));
    assert_eq!(from_header(over.as_bytes()), Err(Malformed::TooLarge));
}

// ---- Basic ----

#[test]
fn basic_decodes_base64_client_id_and_secret() {
    assert_eq!(
        from_header(&basic_header(b"client:s3cret")),
        basic("client", "s3cret")
    );
    assert_eq!(
        from_header(b"basic Y2xpZW50OnMzY3JldA=="),
        basic("client", "s3cret")
    );
    assert_eq!(
        from_header(b"  BASIC   Y2xpZW50OnMzY3JldA==  "),
        basic("client", "s3cret")
    );
}

#[test]
fn basic_secret_may_contain_colons() {
    assert_eq!(
        from_header(&basic_header(b"id:se:cr:et")),
        basic("id", "se:cr:et")
    );
}

#[test]
fn basic_parts_are_form_decoded() {
    // RFC 6749 §2.3.1: a client id with ':' reaches us as %3A.
    assert_eq!(
        from_header(&basic_header(b"my%3Aclient:a+b%20c%2B")),
        basic("my:client", "a b c+")
    );
    assert_eq!(
        from_header(&basic_header("caf%C3%A9:x".as_bytes())),
        basic("caf\u{e9}", "x")
    );
}

#[test]
fn basic_with_bad_form_encoding_is_invalid() {
    assert_eq!(from_header(&basic_header(b"id%zz:secret")), Err(BAD_FORM));
    assert_eq!(from_header(&basic_header(b"id:secret%")), Err(BAD_FORM));
    assert_eq!(from_header(&basic_header(b"id%E9:secret")), Err(BAD_FORM));
    assert_eq!(from_header(&basic_header(b"id%+1:secret")), Err(BAD_FORM));
}

#[test]
fn basic_literal_pair_is_accepted_as_is() {
    // Konnect's docs print `Basic CLIENT_ID:CLIENT_SECRET`.
    assert_eq!(
        from_header(b"Basic client:s3cret"),
        basic("client", "s3cret")
    );
    // The raw pair is not form-decoded.
    assert_eq!(from_header(b"Basic a%3Ab:c+d"), basic("a%3Ab", "c+d"));
}

#[test]
fn basic_literal_pair_needs_exactly_one_colon() {
    assert_eq!(from_header(b"Basic a:b:c"), Err(NOT_A_PAIR));
    assert_eq!(from_header(b"Basic a::"), Err(NOT_A_PAIR));
    assert_eq!(from_header(b"Basic nocolon"), Err(NOT_A_PAIR));
    assert_eq!(from_header(b"Basic a b"), Err(NOT_A_PAIR));
}

#[test]
fn basic_base64_without_colon_is_invalid() {
    assert_eq!(from_header(&basic_header(b"nocolon")), Err(NO_COLON));
}

#[test]
fn basic_base64_of_non_utf8_is_invalid() {
    assert_eq!(
        from_header(&basic_header(b"\xff\xfe:\xfd")),
        Err(NOT_A_PAIR)
    );
}

#[test]
fn basic_with_an_empty_part_is_invalid() {
    for pair in [&b":secret"[..], b"id:", b":"] {
        assert_eq!(
            from_header(&basic_header(pair)),
            Err(EMPTY_PART),
            "{pair:?}"
        );
    }
    assert_eq!(from_header(b"Basic :secret"), Err(EMPTY_PART));
    assert_eq!(from_header(b"Basic id:"), Err(EMPTY_PART));
    assert_eq!(from_header(b"Basic :"), Err(EMPTY_PART));
}

#[test]
fn basic_without_credentials_is_invalid() {
    assert_eq!(from_header(b"Basic"), Err(NO_BASIC));
    assert_eq!(from_header(b"Basic    "), Err(NO_BASIC));
}

#[test]
fn basic_with_control_characters_is_invalid() {
    for pair in [
        &b"id\x01:secret"[..],
        b"id:sec\nret",
        b"id:secret\0",
        b"id:\x7f",
        b"id%0A:secret",
        b"id:%00",
        b"id:%09",
    ] {
        assert_eq!(from_header(&basic_header(pair)), Err(CONTROL), "{pair:?}");
    }
}

// ---- other schemes ----

#[test]
fn other_schemes_are_reported_as_such() {
    for value in [
        &b"Digest username=\"a\""[..],
        b"Negotiate YIIBhgYGKwYBBQUCoIIBejCCAXag",
        b"DPoP abc",
        b"Token abc",
        b"Bearerabc",
    ] {
        assert_eq!(
            from_header(value),
            Ok(Some(Credential::OtherScheme)),
            "{}",
            String::from_utf8_lossy(value)
        );
    }
}

// ---- query_param / query_values ----

#[test]
fn query_param_finds_the_single_decoded_value() {
    assert_eq!(
        query_param("/p?a=1&b=x%20y", "b"),
        Ok(Some("x y".to_owned()))
    );
    assert_eq!(query_param("/p?a=1&b=x+y", "b"), Ok(Some("x+y".to_owned())));
    assert_eq!(query_param("/p?a=1", "b"), Ok(None));
    assert_eq!(query_param("/p", "b"), Ok(None));
    assert_eq!(query_param("/p?b", "b"), Ok(Some(String::new())));
    assert_eq!(query_param("/p?b=1&b=2", "b"), Err(REPEATED_PARAM));
    assert_eq!(query_param("/p?b=%G0", "b"), Err(BAD_PERCENT));
    // Another parameter's bad encoding is not our concern.
    assert_eq!(query_param("/p?a=%G0&b=1", "b"), Ok(Some("1".to_owned())));
}

#[test]
fn query_values_lists_every_value_form_decoded() {
    assert_eq!(
        query_values("/p?k=1&x=2&k=a+b&&k=%41", "k"),
        Ok(vec!["1".to_owned(), "a b".to_owned(), "A".to_owned()])
    );
    assert_eq!(query_values("/p?x=1", "k"), Ok(vec![]));
    assert_eq!(query_values("/p?k=1&k=%", "k"), Err(BAD_PERCENT));
}

// ---- API keys ----

#[test]
fn api_key_from_header() {
    assert_eq!(
        keys(&[header("apikey", b"k-123")], "/", &["apikey"]),
        key("apikey", "k-123")
    );
}

#[test]
fn api_key_query_name_is_the_configured_spelling() {
    let names = ["X-Api-Key"];
    assert_eq!(keys(&[], "/p?X-Api-Key=k", &names), key("X-Api-Key", "k"));
    assert_eq!(keys(&[], "/p?x-api-key=k", &names), Ok(None));
    assert_eq!(
        keys(&[header("x-api-key", b"k")], "/", &names),
        key("X-Api-Key", "k")
    );
}

#[test]
fn api_key_header_name_is_case_insensitive() {
    for name in ["ApiKey", "APIKEY"] {
        assert_eq!(
            keys(&[header(name, b"k")], "/", &["apikey"]),
            key("apikey", "k"),
            "{name}"
        );
    }
}

#[test]
fn api_key_from_query_is_form_decoded() {
    assert_eq!(
        keys(&[], "/p?a=1&apikey=k%2F1%3D", &["apikey"]),
        key("apikey", "k/1=")
    );
}

#[test]
fn api_key_query_name_is_exact() {
    assert_eq!(keys(&[], "/p?APIKEY=k", &["apikey"]), Ok(None));
}

#[test]
fn no_api_key_is_none() {
    assert_eq!(
        keys(&[header("x-api-key", b"k")], "/p?key=k", &["apikey"]),
        Ok(None)
    );
    assert_eq!(keys(&[], "/p", &["apikey", "x-api-key"]), Ok(None));
}

#[test]
fn api_key_under_any_of_several_names() {
    let names = ["apikey", "x-api-key"];
    assert_eq!(
        keys(&[header("x-api-key", b"k")], "/", &names),
        key("x-api-key", "k")
    );
    assert_eq!(keys(&[], "/p?x-api-key=k", &names), key("x-api-key", "k"));
}

#[test]
fn api_key_in_header_and_query_is_a_duplicate() {
    assert_eq!(
        keys(&[header("apikey", b"k")], "/p?apikey=k", &["apikey"]),
        Err(Malformed::DuplicateApiKey)
    );
    assert_eq!(
        keys(&[header("apikey", b"k")], "/p?apikey=other", &["apikey"]),
        Err(Malformed::DuplicateApiKey)
    );
}

#[test]
fn api_key_repeated_in_one_place_is_a_duplicate() {
    assert_eq!(
        keys(
            &[header("apikey", b"k"), header("ApiKey", b"k")],
            "/",
            &["apikey"]
        ),
        Err(Malformed::DuplicateApiKey)
    );
    assert_eq!(
        keys(&[], "/p?apikey=k&apikey=k", &["apikey"]),
        Err(Malformed::DuplicateApiKey)
    );
}

#[test]
fn api_keys_under_two_names_are_a_duplicate() {
    let names = ["apikey", "x-api-key"];
    assert_eq!(
        keys(
            &[header("apikey", b"k1"), header("x-api-key", b"k2")],
            "/",
            &names
        ),
        Err(Malformed::DuplicateApiKey)
    );
    assert_eq!(
        keys(&[header("x-api-key", b"k2")], "/p?apikey=k1", &names),
        Err(Malformed::DuplicateApiKey)
    );
}

#[test]
fn empty_api_key_values_are_ignored() {
    assert_eq!(
        keys(&[header("apikey", b"")], "/p?apikey=k", &["apikey"]),
        key("apikey", "k")
    );
    assert_eq!(
        keys(&[header("apikey", b"k")], "/p?apikey=&apikey", &["apikey"]),
        key("apikey", "k")
    );
    assert_eq!(
        keys(&[header("apikey", b"")], "/p?apikey=", &["apikey"]),
        Ok(None)
    );
}

#[test]
fn non_printable_api_key_in_header_is_invalid() {
    for value in [&b"a b"[..], b" k", b"k\t", b"k\0", b"\xe9", b"k\x7f"] {
        assert_eq!(
            keys(&[header("apikey", value)], "/", &["apikey"]),
            Err(KEY_NOT_PRINTABLE),
            "{value:?}"
        );
    }
}

#[test]
fn non_printable_api_key_in_query_is_invalid() {
    for path in [
        "/p?apikey=a%20b",
        "/p?apikey=a+b",
        "/p?apikey=k%00",
        "/p?apikey=k%0A",
        "/p?apikey=%C3%A9",
        "/p?apikey=k%7F",
    ] {
        assert_eq!(
            keys(&[], path, &["apikey"]),
            Err(KEY_NOT_PRINTABLE),
            "{path}"
        );
    }
}

#[test]
fn api_key_query_with_bad_percent_encoding_is_invalid() {
    assert_eq!(keys(&[], "/p?apikey=%zz", &["apikey"]), Err(BAD_PERCENT));
    assert_eq!(keys(&[], "/p?apikey=%+1", &["apikey"]), Err(BAD_PERCENT));
}

#[test]
fn api_key_at_the_limit_is_accepted_one_more_is_too_large() {
    let at = "k".repeat(MAX);
    let over = "k".repeat(MAX + 1);
    assert_eq!(
        keys(&[header("apikey", at.as_bytes())], "/", &["apikey"]),
        key("apikey", &at)
    );
    assert_eq!(
        keys(&[header("apikey", over.as_bytes())], "/", &["apikey"]),
        Err(Malformed::TooLarge)
    );
    assert_eq!(
        keys(&[], &format!("/p?apikey={at}"), &["apikey"]),
        key("apikey", &at)
    );
    assert_eq!(
        keys(&[], &format!("/p?apikey={over}"), &["apikey"]),
        Err(Malformed::TooLarge)
    );
    // The limit applies to the decoded key.
    let encoded_at = "%6B".repeat(MAX);
    assert_eq!(
        keys(&[], &format!("/p?apikey={encoded_at}"), &["apikey"]),
        key("apikey", &at)
    );
}

// ---- strip_query_params ----

#[test]
fn strip_query_params_keeps_other_parameters_in_order() {
    assert_eq!(
        strip_query_params("/p?z=1&access_token=t&a=2&m=%20", &["access_token"]),
        "/p?z=1&a=2&m=%20"
    );
}

#[test]
fn strip_query_params_removes_every_copy() {
    assert_eq!(
        strip_query_params(
            "/p?access_token=a&x=1&access_token=b&access_token",
            &["access_token"]
        ),
        "/p?x=1"
    );
}

#[test]
fn strip_query_params_removes_several_names() {
    assert_eq!(
        strip_query_params("/p?apikey=k&x=1&key=k", &["apikey", "key"]),
        "/p?x=1"
    );
}

#[test]
fn strip_query_params_drops_the_question_mark_when_nothing_is_left() {
    assert_eq!(
        strip_query_params("/p?access_token=a", &["access_token"]),
        "/p"
    );
    assert_eq!(
        strip_query_params("/p?&access_token=a&", &["access_token"]),
        "/p"
    );
    assert_eq!(strip_query_params("/p?", &["access_token"]), "/p");
}

#[test]
fn strip_query_params_matches_whole_names_only() {
    let path = "/p?access_tokens=1&xaccess_token=2&x=access_token";
    assert_eq!(strip_query_params(path, &["access_token"]), path);
}

#[test]
fn strip_query_params_leaves_paths_without_query_alone() {
    assert_eq!(strip_query_params("/p", &["access_token"]), "/p");
    assert_eq!(strip_query_params("/", &["access_token"]), "/");
}

#[test]
fn has_query_params_is_whether_strip_query_params_takes_one_out() {
    for path in [
        "/p",
        "/p?",
        "/p?&",
        "/p?a=1&&b=2&",
        "/p?apikeys=1&xapikey=2",
    ] {
        assert!(!has_query_params(path, &["apikey"]), "{path}");
    }
    for path in [
        "/p?apikey=k",
        "/p?apikey",
        "/p?a=1&apikey=",
        "/p?api%6Bey=k",
        "/p?a=1#x&apikey=k",
    ] {
        assert!(has_query_params(path, &["apikey"]), "{path}");
        assert_ne!(strip_query_params(path, &["apikey"]), path, "{path}");
    }
}

#[test]
fn the_one_pass_bearer_path_agrees_with_the_rules() {
    // Values built from the pieces that matter (scheme spellings, spaces, padding, commas,
    // control and non-ASCII bytes, token68 and other punctuation), a deterministic stream.
    let pieces: [&[u8]; 16] = [
        b"Bearer ",
        b"bearer ",
        b"BEARER  ",
        b" Bearer ",
        b"Bearer",
        b"Basic ",
        b"abc",
        b"Z9-._~+/",
        b"=",
        b"==",
        b" ",
        b",",
        b"\t",
        b"\xe9",
        b"\"",
        b"A",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut fast_taken = 0;
    let mut candidates_valid = 0;
    for _ in 0..20_000 {
        let mut value = Vec::new();
        let n = 1 + (state % 6) as usize;
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            value.extend_from_slice(pieces[(state % pieces.len() as u64) as usize]);
        }
        for max in [4, MAX] {
            let by_rules = parse_authorization_by_rules(&value, max);
            if let Some(token) = well_formed_bearer(&value, max) {
                fast_taken += 1;
                assert_eq!(
                    by_rules,
                    Ok(Credential::Bearer {
                        token,
                        source: Source::Header
                    }),
                    "{:?}",
                    String::from_utf8_lossy(&value)
                );
            }
            assert_eq!(parse_authorization(&value, max), by_rules);
            // The cache's candidate: whenever it names a token that could have been
            // remembered (a token68 within the limit), the rules read exactly that token;
            // and a candidate is the token the rules read, when they read one (the engine
            // looks a token up once: by its candidate, or after the rules when it has none).
            let headers = [header("authorization", &value)];
            let candidate = bearer_candidate(&headers, "/", max);
            let candidate = candidate.and_then(|t| std::str::from_utf8(t).ok());
            if let Some(t) = candidate.filter(|t| check_token68(t, max).is_ok()) {
                candidates_valid += 1;
                assert_eq!(
                    extract(&headers, "/", max),
                    bearer(t, Source::Header),
                    "{:?}",
                    String::from_utf8_lossy(&value)
                );
            }
            if let (Some(t), Ok(Credential::Bearer { token, .. })) = (candidate, &by_rules) {
                assert_eq!(t, token);
            }
        }
    }
    assert!(
        fast_taken > 300,
        "the one-pass path was tried: {fast_taken}"
    );
    assert!(candidates_valid > 300, "{candidates_valid}");
}

/// The bearer token of [`cache_candidate`], if it names one.
fn bearer_candidate<'a>(headers: &[Header<'a>], path: &str, max: usize) -> Option<&'a [u8]> {
    match cache_candidate(headers, path, max) {
        Some(Candidate::Bearer(token)) => Some(token),
        _ => None,
    }
}

#[test]
fn the_cache_candidate_is_none_wherever_the_rules_could_read_more() {
    let token = b"Bearer abc.def.ghi";
    let one = [header("authorization", token)];
    assert_eq!(
        bearer_candidate(&one, "/orders", MAX),
        Some(b"abc.def.ghi".as_slice())
    );
    // A query string may carry access_token (both together are refused).
    assert_eq!(bearer_candidate(&one, "/orders?access_token=x", MAX), None);
    assert_eq!(bearer_candidate(&one, "/orders?", MAX), None);
    // Two Authorization headers, whatever their case, are refused by the rules.
    let two = [
        header("authorization", token),
        header("Authorization", token),
    ];
    assert_eq!(bearer_candidate(&two, "/", MAX), None);
    // Other schemes, and values past the length limit.
    assert_eq!(
        bearer_candidate(&[header("authorization", b"Basic abc")], "/", MAX),
        None
    );
    let long = [b"Bearer ".as_slice(), &[b'a'; MAX + 10]].concat();
    assert_eq!(
        bearer_candidate(&[header("authorization", &long)], "/", MAX),
        None
    );
    // Only spaces are trimmed, as the rules do: a tab stays (and the rules refuse it).
    let tab = [header("authorization", b"Bearer \tabc")];
    assert_eq!(bearer_candidate(&tab, "/", MAX), Some(b"\tabc".as_slice()));
    assert!(from_header(b"Bearer \tabc").is_err());
}

/// One spelling of a client and secret is plain: `Basic`, one space, and base64 of a pair
/// with nothing form-encoded (or the raw pair, which is not decoded).
#[test]
fn the_plain_spelling_of_basic_credentials_is_one_for_each_client_and_secret() {
    let b64 = |pair: &str| base64::engine::general_purpose::STANDARD.encode(pair);
    let plain = format!("Basic {}", b64("client-1:s3cret"));
    assert!(plain_basic(plain.as_bytes()));
    assert!(plain_basic(b"Basic client-1:s3cret"), "a raw pair");
    for other in [
        format!("basic {}", b64("client-1:s3cret")),
        format!("Basic  {}", b64("client-1:s3cret")),
        format!("Basic {} ", b64("client-1:s3cret")),
        format!("Basic {}", b64("client%2D1:s3cret")),
        format!("Basic {}", b64("client%2d1:s3cret")),
        format!("Basic {}", b64("client-1:s3cr%65t")),
        format!("Basic {}", b64("client+1:s3cret")),
        "Basic ".to_owned(),
        "Bearer abc".to_owned(),
    ] {
        assert!(!plain_basic(other.as_bytes()), "{other}");
    }
    // Each other spelling is still the same client and secret to the rules.
    for other in [
        format!("Basic {}", b64("client%2D1:s3cret")),
        format!("Basic {}", b64("client%2d1:s3cret")),
    ] {
        assert!(matches!(
            from_header(other.as_bytes()),
            Ok(Some(Credential::Basic { client_id, .. })) if client_id == "client-1"
        ));
    }
}

#[test]
fn a_basic_cache_candidate_is_the_whole_value_as_sent_and_only_where_the_rules_read_it_alone() {
    fn basic<'a>(value: &'a [u8], path: &str) -> Option<Candidate<'a>> {
        cache_candidate(&[header("Authorization", value)], path, MAX)
    }
    // Basic to the rules. Spelt `Basic` and one space, a candidate: the whole value as sent
    // (a cache keyed by it never takes another spelling of the same credentials for this
    // one, nor these bytes for a bearer token). Spelt otherwise, never remembered, so never
    // looked up.
    for (value, candidate) in [
        (b"Basic Y2xpZW50OnNlY3JldA==".as_slice(), true),
        (b"Basic client:secret", true),
        (b"basic Y2xpZW50OnNlY3JldA==", false),
        (b"Basic  Y2xpZW50OnNlY3JldA==", false),
        (b"BASIC client:secret", false),
    ] {
        let expected = candidate.then_some(Candidate::Basic(value));
        assert_eq!(basic(value, "/orders"), expected);
        assert!(matches!(
            from_header(value),
            Ok(Some(Credential::Basic { .. }))
        ));
    }
    // Not Basic: another scheme, a scheme that only starts like it, no parameter.
    for value in [
        b"Basically x".as_slice(),
        b"Digest x",
        b"Basic",
        b"Basic ",
        b"Basi x",
    ] {
        assert_eq!(
            basic(value, "/"),
            None,
            "{}",
            String::from_utf8_lossy(value)
        );
    }
    // Wherever the rules could read more than this one value: a query string, a second
    // Authorization header, a value past the limit.
    assert_eq!(basic(b"Basic Y2xpZW50OnNlY3JldA==", "/orders?x=1"), None);
    let two = [
        header("authorization", b"Basic Y2xpZW50OnNlY3JldA=="),
        header("AUTHORIZATION", b"Basic Y2xpZW50OnNlY3JldA=="),
    ];
    assert_eq!(cache_candidate(&two, "/", MAX), None);
    let long = [b"Basic ".as_slice(), &[b'a'; MAX + 20]].concat();
    assert_eq!(basic(&long, "/"), None);
}
