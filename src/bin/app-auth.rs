//! `app-auth`: the filter's own checks and engine, from a shell.
//!
//! ```text
//! app-auth validate CONFIG
//! app-auth explain --config CONFIG [--route NAME] [--path PATH] --header 'Authorization: …'
//!                  [--header 'Name: value' …] [--headers-from FILE|-] [--discovery FILE --jwks FILE]
//! app-auth register --issuer URL [--initial-access-token TOKEN] --name NAME
//!                   [--scope 'orders:read'] [--strategy-id ID] [--api-scope orders-v1]
//! ```

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("app-auth: {message}");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use app_auth_filter::config::Config;
    use app_auth_filter::engine::{
        Callout, CalloutResponse, Engine, FetchKind, Method, Outcome, Request, Step,
    };
    use app_auth_filter::jwt::TokenError;
    use app_auth_filter::response::Denial;
    use serde_json::{json, Value};
    use std::rc::Rc;
    use std::time::{SystemTime, UNIX_EPOCH};

    const USAGE: &str = "usage:
  app-auth validate CONFIG
  app-auth explain --config CONFIG [--route NAME] [--path PATH] --header 'Name: value' ... [--headers-from FILE|-] [--discovery FILE --jwks FILE]
    (--headers-from: 'Name: value' lines from a file, or - for standard input: a secret on the command line is visible to ps)
  app-auth register --issuer URL [--initial-access-token TOKEN] --name NAME [--scope SCOPES] [--strategy-id ID] [--api-scope SCOPE]
    (the token from APP_AUTH_INITIAL_ACCESS_TOKEN when not given: the command line is visible to ps)";

    pub fn run(args: &[String]) -> Result<i32, String> {
        match args.first().map(String::as_str) {
            // One file: a second would otherwise be left unchecked without a word.
            Some("validate") => match &args[1..] {
                [path] => validate(path),
                [] => Err(USAGE.into()),
                [_, extra, ..] => Err(format!("unexpected argument {extra:?}\n{USAGE}")),
            },
            Some("explain") => explain(&Options::parse(&args[1..], EXPLAIN_OPTIONS)?),
            Some("register") => register(&Options::parse(&args[1..], REGISTER_OPTIONS)?),
            Some("-h" | "--help" | "help") => {
                println!("{USAGE}");
                Ok(0)
            }
            _ => Err(USAGE.into()),
        }
    }

    const EXPLAIN_OPTIONS: &[&str] = &[
        "config",
        "route",
        "path",
        "header",
        "headers-from",
        "discovery",
        "jwks",
    ];
    /// Where `register` finds the initial access token when no `--initial-access-token` is
    /// given.
    const TOKEN_ENV: &str = "APP_AUTH_INITIAL_ACCESS_TOKEN";
    const REGISTER_OPTIONS: &[&str] = &[
        "issuer",
        "initial-access-token",
        "name",
        "scope",
        "strategy-id",
        "api-scope",
    ];

    /// `--name value` pairs; `--header` may repeat.
    #[derive(Default)]
    struct Options {
        values: Vec<(String, String)>,
    }

    impl Options {
        /// Refuses an option not in `known` (a misspelt one would otherwise be ignored).
        fn parse(args: &[String], known: &[&str]) -> Result<Options, String> {
            let mut values = Vec::new();
            let mut it = args.iter();
            while let Some(flag) = it.next() {
                let name = flag
                    .strip_prefix("--")
                    .ok_or_else(|| format!("unexpected argument {flag:?}\n{USAGE}"))?;
                if !known.contains(&name) {
                    return Err(format!("unknown option --{name}\n{USAGE}"));
                }
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                values.push((name.to_owned(), value.clone()));
            }
            Ok(Options { values })
        }
        fn get(&self, name: &str) -> Option<&str> {
            self.values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
        fn need(&self, name: &str) -> Result<&str, String> {
            self.get(name)
                .ok_or_else(|| format!("--{name} is required\n{USAGE}"))
        }
        fn all(&self, name: &str) -> Vec<&str> {
            self.values
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    fn read(path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("{path}: {e}"))
    }

    fn load(path: &str) -> Result<Result<Config, i32>, String> {
        let bytes = read(path)?;
        Ok(match Config::parse(&bytes) {
            Ok((config, warnings)) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                Ok(config)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("error: {e}");
                }
                eprintln!("{path}: refused ({} problems)", errors.len());
                Err(1)
            }
        })
    }

    /// The checks the filter runs at load, with the same messages and JSON paths.
    fn validate(path: &str) -> Result<i32, String> {
        match load(path)? {
            Ok(config) => {
                let strategies: Vec<&str> = config.strategy_ids().collect();
                let apps = config.applications.as_ref().map_or(0, |a| a.len());
                println!(
                    "{path}: valid ({} policies, strategies {}, {} applications, {} issuers)",
                    config.policies.len(),
                    strategies.join(", "),
                    apps,
                    config.issuers.len()
                );
                Ok(0)
            }
            Err(code) => Ok(code),
        }
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The agent for `register`. It follows no redirect: the discovery document and the
    /// registration answer are taken only from the URLs the issuer names, and a 3xx is
    /// refused (a redirect to another server would have it name the registration endpoint
    /// that gets the initial access token).
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into()
    }

    /// The agent for one of the engine's callouts: it waits as long as the proxy would (the
    /// callout's own timeout, the strategy's `timeout`) and, as `dispatch_http_call` in
    /// Envoy and Kong, follows no redirect (a 3xx is the answer), so that the IdP gets the
    /// filter's verdict.
    fn callout_agent(callout: &Callout) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(std::time::Duration::from_millis(
                callout.timeout_ms.max(1),
            )))
            .build()
            .into()
    }

    /// Performs a callout over the network (or from --discovery / --jwks files).
    fn perform(callout: &Callout, opts: &Options) -> CalloutResponse {
        let url = format!(
            "{}://{}{}",
            if callout.https { "https" } else { "http" },
            callout.authority,
            callout.path
        );
        let from_file = match callout.id.kind {
            FetchKind::Keys { stage, .. } => match stage {
                app_auth_filter::cache::Stage::Discovery => opts.get("discovery"),
                app_auth_filter::cache::Stage::Jwks => opts.get("jwks"),
            },
            _ => None,
        };
        if let Some(path) = from_file {
            println!("  fetch   {} {url}  (from {path})", callout.method);
            return match read(path) {
                Ok(body) => CalloutResponse {
                    status: Some(200),
                    body,
                    ..CalloutResponse::default()
                },
                Err(e) => CalloutResponse {
                    failure: Some(e),
                    ..CalloutResponse::default()
                },
            };
        }
        let agent = callout_agent(callout);
        let mut request = match callout.method {
            "POST" => {
                let mut r = agent.post(&url);
                for (n, v) in &callout.headers {
                    r = r.header(n.as_str(), v.as_str());
                }
                r.send(callout.body.clone().unwrap_or_default())
            }
            _ => {
                let mut r = agent.get(&url);
                for (n, v) in &callout.headers {
                    r = r.header(n.as_str(), v.as_str());
                }
                r.call()
            }
        };
        match request.as_mut() {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.body_mut().read_to_vec().unwrap_or_default();
                println!(
                    "  fetch   {} {url}  -> {status}, {} bytes",
                    callout.method,
                    body.len()
                );
                CalloutResponse {
                    status: Some(status),
                    body,
                    ..CalloutResponse::default()
                }
            }
            Err(e) => {
                println!("  fetch   {} {url}  -> failed: {e}", callout.method);
                CalloutResponse {
                    failure: Some(e.to_string()),
                    ..CalloutResponse::default()
                }
            }
        }
    }

    /// Runs the filter's engine on one request, printing each fetch, each check and the
    /// decision.
    fn explain(opts: &Options) -> Result<i32, String> {
        let config = match load(opts.need("config")?)? {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let from = match opts.get("headers-from") {
            Some("-") => std::io::read_to_string(std::io::stdin())
                .map_err(|e| format!("--headers-from -: {e}"))?,
            Some(path) => String::from_utf8(read(path)?)
                .map_err(|_| format!("--headers-from {path}: not UTF-8"))?,
            None => String::new(),
        };
        let mut headers = Vec::new();
        for h in opts.all("header") {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?} is not 'Name: value'"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().as_bytes()));
        }
        // The lines of --headers-from, after the --header ones; blank lines skipped. A
        // line that is not a header is refused by its number: it may hold a secret.
        for (n, line) in from.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| {
                let n = n.saturating_add(1);
                format!("--headers-from: line {n} is not 'Name: value'")
            })?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().as_bytes()));
        }
        let headers: Vec<_> = headers.iter().map(|(n, v)| (n.as_bytes(), *v)).collect();
        let path = opts.get("path").unwrap_or("/");
        let route = opts.get("route");
        let mut engine = Engine::new(Rc::new(config), 1);
        let request = Request {
            route,
            authority: "app-auth-explain",
            path,
            headers: &headers,
        };
        println!(
            "request  route={} path={}",
            route.unwrap_or("-"),
            without_query_values(path)
        );
        let mut step = engine.on_request(1, &request, now_ms());
        let mut result = None;
        for _ in 0..16 {
            match step {
                Step::Done(method, outcome) => {
                    result = Some((method, outcome));
                    break;
                }
                Step::Wait(None) => break,
                Step::Wait(Some(callout)) => {
                    let mut pending = vec![callout];
                    let mut settled = None;
                    for _ in 0..16 {
                        let Some(c) = pending.pop() else { break };
                        let response = perform(&c, opts);
                        let progress = engine.on_callout_response(c.id, response, now_ms());
                        for line in &progress.log {
                            println!("  note    {line}");
                        }
                        pending.extend(progress.callouts);
                        if let Some((_, m, o)) =
                            progress.settled.into_iter().find(|(id, _, _)| *id == 1)
                        {
                            settled = Some((m, o));
                            break;
                        }
                    }
                    step = match settled {
                        Some((m, o)) => Step::Done(m, o),
                        None => Step::Wait(None),
                    };
                }
            }
        }
        let Some((method, outcome)) = result else {
            println!("decision  none: the engine is still waiting (an IdP did not answer)");
            return Ok(1);
        };
        for (check, verdict) in checks(method, &outcome) {
            println!("  check   {check:<34} {verdict}");
        }
        match outcome {
            Outcome::Allow(allow) => {
                println!("decision  ALLOW ({})", method.name());
                for name in &allow.remove_headers {
                    println!("  remove  {name}");
                }
                for (name, value) in &allow.set_headers {
                    let shown = if name == "authorization" {
                        "Bearer <token>"
                    } else {
                        value.as_str()
                    };
                    println!("  set     {name}: {shown}");
                }
                if let Some(p) = &allow.path {
                    println!("  path    {p}");
                }
                Ok(0)
            }
            Outcome::Deny(deny) => {
                println!(
                    "decision  DENY {} ({}: {})",
                    deny.reply.status,
                    deny.denial.reason(),
                    deny.denial.detail()
                );
                for (name, value) in &deny.reply.headers {
                    println!("  header  {name}: {value}");
                }
                println!("  body    {}", deny.reply.body);
                Ok(1)
            }
        }
    }

    /// `path` with each query parameter's value shown as `…`: the query may carry a token
    /// (`access_token`) or an API key, which are never printed.
    fn without_query_values(path: &str) -> String {
        let Some((path, query)) = path.split_once('?') else {
            return path.to_owned();
        };
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((name, _)) => format!("{name}=…"),
                None => p.to_owned(),
            })
            .collect();
        format!("{path}?{}", params.join("&"))
    }

    /// The checks of a method in the order the engine runs them, each with its verdict:
    /// passed before the one that failed, not run after it.
    fn checks(method: Method, outcome: &Outcome) -> Vec<(&'static str, &'static str)> {
        let order: &[&str] = match method {
            Method::KeyAuth => &[
                "header count",
                "policy for the route",
                "one API key",
                "application for the credential",
                "application's strategy",
                "application approved for the API",
            ],
            Method::ClientCredentials => &[
                "header count",
                "policy for the route",
                "one credential",
                "application for the credential",
                "application's strategy",
                "token endpoint exchange",
                "token format",
                "expiry and validity times",
                "issuer",
                "audience",
                "signing key",
                "signature",
                "credential claim",
                "application approved for the API",
                "required scopes",
            ],
            Method::Introspection => &[
                "header count",
                "policy for the route",
                "one credential",
                "introspection",
                "token active",
                "expiry and validity times",
                "issuer",
                "audience",
                "credential claim",
                "application for the credential",
                "application's strategy",
                "application approved for the API",
                "required scopes",
            ],
            Method::Bearer | Method::None => &[
                "header count",
                "policy for the route",
                "one credential",
                "token format",
                "strategy for the issuer",
                "expiry and validity times",
                "issuer",
                "audience",
                "signing key",
                "signature",
                "credential claim",
                "application for the credential",
                "application's strategy",
                "application approved for the API",
                "required scopes",
            ],
        };
        let failed = match outcome {
            Outcome::Allow(_) => None,
            Outcome::Deny(d) => Some(failed_check(method, d.denial)),
        };
        let mut seen_failure = false;
        order
            .iter()
            .map(|check| {
                let verdict = if seen_failure {
                    "not run"
                } else if failed == Some(*check) {
                    seen_failure = true;
                    "FAILED"
                } else {
                    "ok"
                };
                (*check, verdict)
            })
            .collect()
    }

    fn failed_check(method: Method, denial: Denial) -> &'static str {
        match denial {
            // A key that is repeated, too long or malformed fails key-auth's own check.
            Denial::InvalidRequest(_) | Denial::DuplicateApiKey | Denial::TokenTooLarge
                if method == Method::KeyAuth =>
            {
                "one API key"
            }
            Denial::NoPolicy => "policy for the route",
            Denial::TooManyHeaders => "header count",
            Denial::MissingCredential
            | Denial::UnsupportedCredential
            | Denial::InvalidRequest(_)
            | Denial::DuplicateApiKey => "one credential",
            Denial::TokenTooLarge => "token format",
            Denial::InsufficientScope => "required scopes",
            Denial::UnknownApplication => "application for the credential",
            Denial::WrongStrategy => "application's strategy",
            Denial::NotApproved => "application approved for the API",
            Denial::InvalidClient => "token endpoint exchange",
            Denial::IdpUnavailable(_) => match method {
                Method::ClientCredentials => "token endpoint exchange",
                Method::Introspection => "introspection",
                _ => "signing key",
            },
            Denial::InvalidToken(e) => match e {
                TokenError::Expired
                | TokenError::NotYetValid
                | TokenError::IssuedInFuture
                | TokenError::MissingExp
                | TokenError::BadTimeClaim => "expiry and validity times",
                TokenError::WrongIssuer if method == Method::Bearer => "strategy for the issuer",
                TokenError::WrongIssuer => "issuer",
                TokenError::WrongAudience => "audience",
                TokenError::UnknownKid | TokenError::AmbiguousKey | TokenError::KeyAlgMismatch => {
                    "signing key"
                }
                TokenError::BadSignature => "signature",
                TokenError::BadCredentialClaim | TokenError::BadForwardedClaim => {
                    "credential claim"
                }
                TokenError::Inactive => "token active",
                _ => "token format",
            },
        }
    }

    /// Whether `url` may carry the initial access token, or name where it goes (the discovery
    /// document): https, or plain http to this machine only. The token is a bearer
    /// credential (RFC 6750 §5.3, RFC 7591 §5: TLS); sent in the clear, anyone on the path
    /// could register clients with it.
    fn secure_transport(url: &str) -> Result<(), String> {
        let parsed = app_auth_filter::oidc::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if parsed.https || parsed.is_loopback() {
            Ok(())
        } else {
            Err(format!(
                "{url}: refused: not https (the initial access token is sent over https, or over http to this machine only)"
            ))
        }
    }

    /// RFC 7591 dynamic client registration; prints the `applications` entry to add.
    fn register(opts: &Options) -> Result<i32, String> {
        // The issuer itself or its discovery URL, as a strategy's `issuer` may be either.
        let given = opts.need("issuer")?;
        let (_, discovery_url) = app_auth_filter::oidc::issuer_and_discovery(given);
        // From the environment rather than the command line, where `ps` and the shell's
        // history show it to anyone on the machine.
        let from_env = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let token = match (opts.get("initial-access-token"), from_env.as_deref()) {
            (Some(token), _) | (None, Some(token)) => token,
            (None, None) => {
                let what = format!("--initial-access-token (or {TOKEN_ENV} in the environment)");
                return Err(format!("{what} is required\n{USAGE}"));
            }
        };
        let name = opts.need("name")?;
        secure_transport(&discovery_url)?;
        let agent = agent();
        let mut response = agent
            .get(&discovery_url)
            .call()
            .map_err(|e| format!("{discovery_url}: {e}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            let moved = if (300..400).contains(&status) {
                " (redirects are not followed: give the issuer's own URL)"
            } else {
                ""
            };
            return Err(format!("{discovery_url}: HTTP {status}{moved}"));
        }
        let doc = app_auth_filter::json::parse_strict(
            &response
                .body_mut()
                .read_to_vec()
                .map_err(|e| e.to_string())?,
            // The nesting the filter allows an IdP's answer by default.
            app_auth_filter::config::Limits::default().max_json_depth,
        )
        .map_err(|e| format!("{discovery_url}: not JSON: {e}"))?;
        // OpenID Connect Discovery §4.3, as the filter checks it: the document must name the
        // issuer it was asked of, or it is another issuer's (its registration endpoint gets
        // no initial access token).
        let names = app_auth_filter::oidc::issuer_names(given);
        match doc.get("issuer") {
            Some(Value::String(s)) if names.contains(s) => {}
            Some(Value::String(s)) => {
                return Err(format!(
                    "{discovery_url}: the discovery document names issuer {s:?}, expected {}",
                    names.join(" or ")
                ))
            }
            _ => {
                return Err(format!(
                    "{discovery_url}: the discovery document has no issuer string"
                ))
            }
        }
        let endpoint = doc["registration_endpoint"]
            .as_str()
            .ok_or(format!("{discovery_url} names no registration_endpoint"))?;
        secure_transport(endpoint)?;
        let mut body = json!({"client_name": name, "grant_types": ["client_credentials"], "response_types": [],
            "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic"});
        if let Some(scope) = opts.get("scope") {
            body["scope"] = json!(scope);
        }
        let mut response = agent
            .post(endpoint)
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(|e| format!("{endpoint}: {e}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status != 201 && status != 200 {
            eprintln!(
                "registration refused: HTTP {status}{}",
                registration_error(&text, token)
            );
            return Ok(1);
        }
        let client: Value = serde_json::from_str(&text)
            .map_err(|e| format!("registration answer is not JSON: {e}"))?;
        let client_id = client["client_id"]
            .as_str()
            .ok_or("registration answer has no client_id")?;
        let entry = json!({
            "id": name,
            "client_id": client_id,
            "auth_strategy_id": opts.get("strategy-id").unwrap_or("REPLACE-WITH-STRATEGY-ID"),
            "scopes": [opts.get("api-scope").unwrap_or("REPLACE-WITH-API-SCOPE")],
        });
        println!(
            "Add to \"applications\":\n{}",
            serde_json::to_string_pretty(&entry).unwrap_or_default()
        );
        if let Some(secret) = client["client_secret"].as_str() {
            println!("\nclient_secret (shown once, store it now): {secret}");
            // RFC 7591 §3.2.1: 0 (or absent) for a secret that does not expire.
            if let Some(at) = client["client_secret_expires_at"]
                .as_u64()
                .filter(|&t| t > 0)
            {
                println!(
                    "client_secret expires at {} (register again before then)",
                    utc(at)
                );
            }
        }
        Ok(0)
    }

    /// What a refused registration says of itself (RFC 7591 §3.2.2: `error` and
    /// `error_description`), never its raw body: an IdP's error page may echo the request,
    /// initial access token included, or carry terminal escapes. Each is shown as printable
    /// ASCII, bounded, with the token masked.
    fn registration_error(body: &str, token: &str) -> String {
        let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(body) else {
            return String::new();
        };
        let mut said = String::new();
        for name in ["error", "error_description"] {
            let Some(Value::String(value)) = doc.get(name) else {
                continue;
            };
            let value = if token.is_empty() {
                value.clone()
            } else {
                value.replace(token, "<initial access token>")
            };
            let shown: String = value
                .chars()
                .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                .take(300)
                .collect();
            said.push_str(&format!(", {name}: {shown}"));
        }
        said
    }

    /// Seconds since the epoch as an RFC 3339 UTC time (days to a civil date: H. Hinnant).
    fn utc(seconds: u64) -> String {
        let days = (seconds / 86_400) as i64;
        let secs = seconds % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}
