//! The `app-auth` command-line tool: validate, explain (against the IdP fixture), register.

mod support;

use serde_json::json;
use std::process::Command;
use support::*;

fn app_auth(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_app-auth"))
        .args(args)
        .output()
        .expect("run app-auth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_examples_and_refuses_with_json_paths() {
    let example = root().join("filter-config/orders.json");
    let (code, out, _) = app_auth(&["validate", example.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("valid (1 policies"), "{out}");

    let dir = scratch();
    let bad = dir.join("bad.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&example).unwrap()).unwrap();
    doc["policies"]["orders-v1"]["strategies"][0]["configs"]["openid-connect"]
        ["verify_signature"] = json!(false);
    doc["routes"]["orders"] = json!("nope");
    std::fs::write(&bad, doc.to_string()).unwrap();
    let (code, _, err) = app_auth(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(r#"$.policies["orders-v1"].strategies[0].configs["openid-connect"].verify_signature: is refused"#), "{err}");
    assert!(err.contains("$.routes.orders: names no policy"), "{err}");
    assert!(err.contains("refused (2 problems)"), "{err}");
    let (code, _, err) = app_auth(&["validate", "/nonexistent.json"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn register_then_explain_against_the_identity_provider() {
    let dir = scratch();
    let idp = Idp::start(&dir);
    let (code, out, err) = app_auth(&[
        "register",
        "--issuer",
        &idp.issuer(),
        "--initial-access-token",
        INITIAL_ACCESS_TOKEN,
        "--name",
        "cli-app",
        "--scope",
        "orders:read",
        "--strategy-id",
        "s-oidc",
        "--api-scope",
        "orders-v1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let entry_text = out
        .split("Add to \"applications\":")
        .nth(1)
        .and_then(|s| s.split("\n\nclient_secret").next())
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(entry_text.trim()).unwrap();
    let secret = out
        .rsplit("store it now): ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let client_id = entry["client_id"].as_str().unwrap().to_owned();
    assert_eq!(entry["auth_strategy_id"], "s-oidc");

    let config = json!({
        "policy": {"scope": "orders-v1", "strategies": [{"id": "s-oidc", "strategy_type": "openid_connect",
            "configs": {"openid-connect": {"issuer": idp.issuer(), "credential_claim": ["client_id"],
                "scopes": ["orders:read"], "auth_methods": ["bearer"], "scopes_required": ["orders:read"],
                "audience_required": ["https://api.example.com"]}}}]},
        "applications": [entry],
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let token = idp.token(&(client_id.clone(), secret), Some("orders:read"));
    let auth = format!("Authorization: Bearer {token}");
    let (code, out, err) = app_auth(&[
        "explain",
        "--config",
        config_path.to_str().unwrap(),
        "--header",
        &auth,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("/.well-known/openid-configuration  -> 200"),
        "{out}"
    );
    assert!(out.contains("/jwks  -> 200"), "{out}");
    assert!(
        out.contains("check   signature                          ok"),
        "{out}"
    );
    assert!(out.contains("decision  ALLOW (bearer)"), "{out}");
    assert!(out.contains("set     x-application-id: cli-app"), "{out}");
    assert!(!out.contains(&token), "the token is never printed");

    let mut forged = token.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let auth = format!("Authorization: Bearer {forged}");
    let (code, out, _) = app_auth(&[
        "explain",
        "--config",
        config_path.to_str().unwrap(),
        "--header",
        &auth,
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("check   signature                          FAILED"),
        "{out}"
    );
    assert!(
        out.contains("check   required scopes                    not run"),
        "{out}"
    );
    assert!(
        out.contains("decision  DENY 401 (invalid_token: token signature is invalid)"),
        "{out}"
    );

    // Keys from files instead of the network.
    let discovery = dir.join("discovery.json");
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &discovery,
        http(
            idp.port,
            "GET",
            "/.well-known/openid-configuration",
            &[],
            b"",
        )
        .body,
    )
    .unwrap();
    std::fs::write(&jwks, http(idp.port, "GET", "/jwks", &[], b"").body).unwrap();
    let auth = format!("Authorization: Bearer {token}");
    let (code, out, _) = app_auth(&[
        "explain",
        "--config",
        config_path.to_str().unwrap(),
        "--header",
        &auth,
        "--discovery",
        discovery.to_str().unwrap(),
        "--jwks",
        jwks.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(from "), "{out}");
}

/// A bearer-only config for one issuer, without applications, with `extra` openid-connect
/// fields.
fn plain_config(dir: &std::path::Path, issuer: &str, extra: serde_json::Value) -> String {
    let mut oidc = json!({"issuer": issuer, "credential_claim": ["client_id"],
        "scopes": ["orders:read"], "auth_methods": ["bearer"]});
    for (k, v) in extra.as_object().unwrap() {
        oidc[k] = v.clone();
    }
    let config = json!({"policy": {"strategies": [{"id": "s-oidc",
        "strategy_type": "openid_connect", "configs": {"openid-connect": oidc}}]}});
    let path = dir.join("plain.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn explain_waits_for_a_callout_as_long_as_the_filter_would() {
    // The strategy's `timeout` is 500 ms: the filter gives up on a discovery document that
    // takes 3 s (503); explain must not wait for it and allow.
    let dir = scratch();
    let idp = fake_idp::FakeIdp::start();
    idp.set(
        "a",
        fake_idp::Endpoint::Discovery,
        Some(fake_idp::Fault::Slow(std::time::Duration::from_secs(3))),
    );
    let config = plain_config(&dir, &idp.issuer("a"), json!({"timeout": 500}));
    let auth = format!("Authorization: Bearer {}", idp.access_token("a", "c1"));
    let started = std::time::Instant::now();
    let (code, out, err) = app_auth(&["explain", "--config", &config, "--header", &auth]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("decision  DENY 503"), "{out}{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

/// A loopback server answering every request with `answer(base, request)`: (status, extra
/// header lines, JSON body), `base` being its own URL, which it returns. For two minutes at
/// most.
fn tiny_server(
    answer: impl Fn(&str, &loopback::Request) -> (u16, String, String) + Send + Sync + 'static,
) -> String {
    let stop = std::sync::Arc::default();
    let port = loopback::serve(
        std::time::Duration::from_secs(120),
        stop,
        move |mut stream| {
            let Some(request) = loopback::read_request(&mut stream) else {
                return;
            };
            let base = stream
                .local_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_default();
            let (status, extra, body) = answer(&base, &request);
            loopback::respond(
                &mut stream,
                status,
                &extra,
                "application/json",
                body.as_bytes(),
            );
        },
    );
    format!("http://127.0.0.1:{port}")
}

#[test]
fn explain_does_not_follow_redirects_the_filter_does_not_follow() {
    // The issuer's jwks_uri answers 302 (to a key set that would verify the token): the
    // proxy's callout takes the 302 as a failed fetch (503), and so must explain.
    let dir = scratch();
    let idp = fake_idp::FakeIdp::start();
    let keys = format!("{}/jwks", idp.issuer("a"));
    let issuer = tiny_server(move |_, request| match request.path.as_str() {
        "/jwks" => (302, format!("location: {keys}\r\n"), String::new()),
        _ => (200, String::new(), String::new()),
    });
    let discovery = dir.join("discovery.json");
    std::fs::write(
        &discovery,
        json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string(),
    )
    .unwrap();
    let config = plain_config(&dir, &issuer, json!({}));
    let mut claims = idp.claims("a", "c1");
    claims["iss"] = json!(issuer);
    let auth = format!("Authorization: Bearer {}", idp.sign("a", &claims));
    let (code, out, err) = app_auth(&[
        "explain",
        "--config",
        &config,
        "--header",
        &auth,
        "--discovery",
        discovery.to_str().unwrap(),
    ]);
    assert!(out.contains("/jwks  -> 302"), "{out}{err}");
    assert!(out.contains("decision  DENY 503"), "{out}{err}");
    assert_eq!(code, 1, "{out}{err}");
}

#[test]
fn explain_never_prints_a_token_from_the_query_string() {
    let dir = scratch();
    let idp = fake_idp::FakeIdp::start();
    let config = plain_config(&dir, &idp.issuer("a"), json!({}));
    let token = idp.access_token("a", "c1");
    let path = format!("/orders?x=1&access_token={token}");
    let (code, out, err) = app_auth(&["explain", "--config", &config, "--path", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision  ALLOW (bearer)"), "{out}");
    assert!(!out.contains(&token), "{out}");
    assert!(!err.contains(&token), "{err}");
}

#[test]
fn an_unknown_option_is_refused_not_ignored() {
    // `--heder` for `--header`: explain would otherwise judge a request without the header.
    let example = root().join("filter-config/orders.json");
    let (code, out, err) = app_auth(&[
        "explain",
        "--config",
        example.to_str().unwrap(),
        "--heder",
        "Authorization: Bearer x",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("unknown option --heder"), "{err}");
    assert!(!out.contains("decision"), "{out}");
}

/// `app-auth register` of an application named `app` at `issuer`, with the test's initial
/// access token.
fn register_app(issuer: &str) -> (i32, String, String) {
    app_auth(&[
        "register",
        "--issuer",
        issuer,
        "--initial-access-token",
        INITIAL_ACCESS_TOKEN,
        "--name",
        "app",
    ])
}

/// An RFC 7591 registration server on loopback: discovery names `registration_endpoint`
/// (its own `/register` unless given), which answers `client` (201) to a JSON request with
/// the initial access token as a bearer token, and 401 `invalid_token` otherwise.
fn registration_server(client: serde_json::Value, endpoint: Option<&str>) -> String {
    let endpoint = endpoint.map(str::to_owned);
    tiny_server(move |base, request| match request.path.as_str() {
        "/.well-known/openid-configuration" => {
            let reg = endpoint.clone().unwrap_or(format!("{base}/register"));
            let doc = json!({"issuer": base, "registration_endpoint": reg});
            (200, String::new(), doc.to_string())
        }
        "/register" => {
            let bearer = request
                .header("authorization")
                .and_then(|v| v.split_once(' '))
                .is_some_and(|(scheme, token)| {
                    scheme.eq_ignore_ascii_case("bearer") && token == INITIAL_ACCESS_TOKEN
                });
            let json_body = request.header("content-type") == Some("application/json")
                && serde_json::from_str::<serde_json::Value>(&request.body)
                    .is_ok_and(|b| b["client_name"].is_string());
            if bearer && json_body {
                (201, String::new(), client.to_string())
            } else {
                (
                    401,
                    String::new(),
                    json!({"error": "invalid_token"}).to_string(),
                )
            }
        }
        _ => (404, String::new(), "{}".into()),
    })
}

#[test]
fn register_takes_the_issuer_or_its_discovery_url() {
    // Konnect lets a strategy's issuer be its discovery URL, and the filter takes both.
    let issuer = registration_server(
        json!({"client_id": "c-1", "client_secret": "s-1", "client_secret_expires_at": 0}),
        None,
    );
    for given in [
        issuer.clone(),
        format!("{issuer}/.well-known/openid-configuration"),
    ] {
        let (code, out, err) = register_app(&given);
        assert_eq!(code, 0, "{given}: {out}{err}");
        assert!(out.contains(r#""client_id": "c-1""#), "{out}");
        assert!(!out.contains(INITIAL_ACCESS_TOKEN) && !err.contains(INITIAL_ACCESS_TOKEN));
    }
}

#[test]
fn register_reads_the_initial_access_token_from_the_environment() {
    // Kept off the command line, where `ps` and the shell's history show it.
    let issuer = registration_server(json!({"client_id": "c-4", "client_secret": "s-4"}), None);
    let run = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_app-auth"));
        command.args(["register", "--issuer", &issuer, "--name", "app"]);
        command.env_remove("APP_AUTH_INITIAL_ACCESS_TOKEN");
        if let Some(token) = token {
            command.env("APP_AUTH_INITIAL_ACCESS_TOKEN", token);
        }
        let out = command.output().expect("run app-auth");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = run(Some(INITIAL_ACCESS_TOKEN));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(r#""client_id": "c-4""#), "{text}");
    assert!(!text.contains(INITIAL_ACCESS_TOKEN), "{text}");
    // Neither given: refused before anything is sent, saying where the token may come from.
    let (code, text) = run(None);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("APP_AUTH_INITIAL_ACCESS_TOKEN"), "{text}");
}

#[test]
fn register_sends_the_initial_access_token_only_over_https_or_loopback() {
    // Discovery on loopback names a plain-http registration endpoint elsewhere: the initial
    // access token (a bearer credential) must not be sent to it in the clear.
    let issuer = registration_server(
        json!({"client_id": "c-3"}),
        Some("http://192.0.2.1:9/register"),
    );
    let started = std::time::Instant::now();
    let (code, out, err) = register_app(&issuer);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("http://192.0.2.1:9/register: refused: not https"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Nor is a remote issuer asked over plain http.
    let (code, _, err) = register_app("http://idp.example.com");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http://idp.example.com"), "{err}");
    assert!(err.contains("refused: not https"), "{err}");
}

#[test]
fn register_says_when_the_client_secret_expires() {
    // RFC 7591 §3.2.1: client_secret_expires_at, 0 for never. A secret that expires stops the
    // application working on that day: the user must be told.
    let issuer = registration_server(
        json!({"client_id": "c-2", "client_secret": "s-2", "client_secret_expires_at": 1_900_000_000u64}),
        None,
    );
    let (code, out, err) = register_app(&issuer);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("s-2"), "{out}");
    assert!(
        out.contains("client_secret expires at 2030-03-17T17:46:40Z"),
        "{out}"
    );
}

/// A configuration with one key_auth strategy (`apikey`) and the application of key `k1`,
/// written into `dir`; its path.
fn key_auth_config(dir: &std::path::Path) -> String {
    let config = json!({
        "policy": {"scope": "orders-v1", "strategies": [{"id": "s-key", "strategy_type": "key_auth",
            "configs": {"key-auth": {"key_names": ["apikey"]}}}]},
        "applications": [{"id": "app-k", "client_id": app_auth_filter::engine::sha256_hex(b"k1"),
            "auth_strategy_id": "s-key", "scopes": ["orders-v1"]}],
    });
    let path = dir.join("keys.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn explain_marks_the_api_key_check_failed_for_a_duplicate_key() {
    let dir = scratch();
    let path = key_auth_config(&dir);
    let path = path.as_str();
    let (code, out, err) = app_auth(&["explain", "--config", path, "--header", "apikey: k1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision  ALLOW (key_auth)"), "{out}");
    let (code, out, err) = app_auth(&[
        "explain",
        "--config",
        path,
        "--header",
        "apikey: k1",
        "--header",
        "apikey: k2",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("decision  DENY 401"), "{out}");
    let verdict = |check: &str| {
        out.lines().find_map(|l| {
            let rest = l
                .trim_start()
                .strip_prefix("check   ")?
                .strip_prefix(check)?;
            rest.starts_with(' ').then(|| rest.trim().to_owned())
        })
    };
    assert_eq!(verdict("one API key").as_deref(), Some("FAILED"), "{out}");
    assert_eq!(
        verdict("application for the credential").as_deref(),
        Some("not run"),
        "{out}"
    );
}

/// Headers, secrets among them, can come from standard input or a file instead of the
/// command line (which `ps` shows): the same decision as with `--header`; a line that is
/// not a header is refused by its number, not echoed.
#[test]
fn explain_reads_headers_from_standard_input_or_a_file() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = scratch();
    let path = key_auth_config(&dir);
    let path = path.as_str();
    let with_stdin = |input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_app-auth"))
            .args(["explain", "--config", path, "--headers-from", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run app-auth");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = with_stdin("\r\nApiKey: k1\r\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision  ALLOW (key_auth)"), "{out}");
    // Read after any --header: two keys are a duplicate, as two --header would be.
    let file = dir.join("headers.txt");
    std::fs::write(&file, "apikey: k2\n").unwrap();
    let (code, out, err) = app_auth(&[
        "explain",
        "--config",
        path,
        "--header",
        "apikey: k1",
        "--headers-from",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("decision  DENY 401"), "{out}");
    let (code, out, err) = with_stdin("apikey: k1\nsecret-without-a-name\n");
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("line 2 is not 'Name: value'"), "{err}");
    assert!(!err.contains("secret-without-a-name"), "{err}");
}

/// A loopback server whose `/register` records the `Authorization` value of each request it
/// gets (and answers 201 with client `c-9`), its other paths answered by `other(base, path)`.
/// Returns its base URL and what `/register` saw.
fn recording_server(
    other: impl Fn(&str, &str) -> (u16, String, String) + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let url = tiny_server(move |base, request| {
        if request.path == "/register" {
            let auth = request.header("authorization").unwrap_or("").to_owned();
            log.lock().unwrap().push(auth);
            let client = json!({"client_id": "c-9", "client_secret": "s-9"});
            return (201, String::new(), client.to_string());
        }
        other(base, &request.path)
    });
    (url, seen)
}

/// The recording server got no registration, and `register` printed no client of its.
fn nothing_registered_elsewhere(seen: &std::sync::Mutex<Vec<String>>, out: &str) {
    assert!(
        seen.lock().unwrap().is_empty(),
        "the other server got a registration"
    );
    assert!(!out.contains("c-9"), "{out}");
}

#[test]
fn register_follows_no_redirect_from_discovery() {
    // The issuer's discovery URL answers 307 to another server, whose document names the
    // issuer and the other server's registration endpoint: following the redirect would
    // hand that server the initial access token.
    let issuer = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let named = issuer.clone();
    let (elsewhere, seen) = recording_server(move |base, path| match path {
        "/.well-known/openid-configuration" => {
            let doc =
                json!({"issuer": named.get(), "registration_endpoint": format!("{base}/register")});
            (200, String::new(), doc.to_string())
        }
        _ => (404, String::new(), "{}".into()),
    });
    let own = tiny_server(move |_, request| {
        let location = format!("location: {elsewhere}{}\r\n", request.path);
        (307, location, String::new())
    });
    issuer.set(own.clone()).unwrap();
    let (code, out, err) = register_app(&own);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("HTTP 307"), "{err}");
    nothing_registered_elsewhere(&seen, &out);
}

#[test]
fn register_follows_no_redirect_from_the_registration_endpoint() {
    // The registration endpoint answers 307 to another server, which answers any request
    // with a client: a client the issuer never registered, not one to add.
    let (elsewhere, seen) = recording_server(|_, _| (404, String::new(), "{}".into()));
    let issuer = tiny_server(move |base, request| match request.path.as_str() {
        "/.well-known/openid-configuration" => {
            let doc = json!({"issuer": base, "registration_endpoint": format!("{base}/register")});
            (200, String::new(), doc.to_string())
        }
        _ => (
            307,
            format!("location: {elsewhere}/register\r\n"),
            String::new(),
        ),
    });
    let (code, out, err) = register_app(&issuer);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("registration refused: HTTP 307"), "{err}");
    nothing_registered_elsewhere(&seen, &out);
}

#[test]
fn register_refuses_a_discovery_document_of_another_issuer() {
    // OpenID Connect Discovery §4.3, as the filter checks it: a document that names another
    // issuer is not this issuer's, and its registration endpoint gets no initial access token.
    let (issuer, seen) = recording_server(|base, path| match path {
        "/.well-known/openid-configuration" => {
            let doc = json!({"issuer": "https://idp.example.com",
                "registration_endpoint": format!("{base}/register")});
            (200, String::new(), doc.to_string())
        }
        _ => (404, String::new(), "{}".into()),
    });
    let (code, out, err) = register_app(&issuer);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(r#"names issuer "https://idp.example.com""#),
        "{err}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the endpoint got a registration"
    );
    // Given by its discovery URL, the issuer may name itself with a trailing slash.
    let (issuer, seen) = recording_server(|base, path| match path {
        "/.well-known/openid-configuration" => {
            let doc = json!({"issuer": format!("{base}/"),
                "registration_endpoint": format!("{base}/register")});
            (200, String::new(), doc.to_string())
        }
        _ => (404, String::new(), "{}".into()),
    });
    let (code, out, err) = register_app(&format!("{issuer}/.well-known/openid-configuration"));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn register_prints_no_refusal_body_but_its_oauth_error() {
    // RFC 7591 §3.2.2: a refusal says `error` and `error_description`. Whatever else the body
    // holds (an echo of the request's Authorization header, terminal escapes) is not printed.
    let issuer = tiny_server(move |base, request| match request.path.as_str() {
        "/.well-known/openid-configuration" => {
            let doc = json!({"issuer": base, "registration_endpoint": format!("{base}/register")});
            (200, String::new(), doc.to_string())
        }
        _ => {
            let echoed = request.header("authorization").unwrap_or("").to_owned();
            let body = json!({"error": "invalid_client_metadata",
                    "error_description": format!("scope not allowed for {echoed}\u{1b}[2J"),
                    "request": {"authorization": echoed}});
            (400, String::new(), body.to_string())
        }
    });
    let (code, out, err) = register_app(&issuer);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("registration refused: HTTP 400"), "{err}");
    assert!(err.contains("invalid_client_metadata"), "{err}");
    assert!(!err.contains(INITIAL_ACCESS_TOKEN), "{err}");
    assert!(!out.contains(INITIAL_ACCESS_TOKEN), "{out}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn validate_refuses_extra_arguments() {
    // `validate a.json b.json` would check a.json alone and say nothing of b.json.
    let example = root().join("filter-config/orders.json");
    let example = example.to_str().unwrap();
    let (code, out, err) = app_auth(&["validate", example, example]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("unexpected argument"), "{err}");
    assert!(!out.contains("valid"), "{out}");
}
