//! Soak: Envoy with two workers under sustained mixed load (valid cached tokens, fresh
//! uncached tokens, forged tokens, no token) with a key rotation halfway: zero 5xx, zero
//! wrong allows, zero valid requests refused, memory flat. `SOAK_SECONDS` sets the length
//! (default 12 s in the test command; several minutes for the real soak).

mod support;

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    server_errors: AtomicU64,
    wrong_allows: AtomicU64,
    wrong_denials: AtomicU64,
}

#[test]
fn mixed_load_with_a_rotation() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
        .clamp(4, 3600);
    let dir = scratch();
    let idp = Idp::start(&dir);
    let upstream = Upstream::start(&dir);
    let client = idp.register(json!({"client_name": "soak", "grant_types": ["client_credentials"], "response_types": [],
        "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic", "scope": "orders:read"}));
    let config = json!({
        "policy": {"scope": "orders-v1", "strategies": [{"id": "s", "strategy_type": "openid_connect", "configs": {"openid-connect": {
            "issuer": idp.issuer(), "credential_claim": ["client_id"], "scopes": ["orders:read"], "auth_methods": ["bearer"],
            "scopes_required": ["orders:read"], "audience_required": ["https://api.example.com"], "timeout": 2000,
            "rediscovery_lifetime": 2}}}]},
        "applications": [{"id": "app-soak", "client_id": client.0, "auth_strategy_id": "s", "scopes": ["orders-v1"]}],
        "limits": {"max_cache_entries": 2000},
        "upstreams": {format!("127.0.0.1:{}", idp.port): "idp"}
    });
    let envoy = Envoy::start(&dir, &config, upstream.port, idp.port, 2);
    let pid = envoy.process.id();

    let cached: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
        (0..8)
            .map(|_| idp.token(&client, Some("orders:read")))
            .collect(),
    ));
    let mut forged = cached.lock().unwrap()[0].clone();
    forged.truncate(forged.len() - 6);
    forged.push_str("AAAAAA");
    // Warm every worker, then take the memory baseline.
    for t in cached.lock().unwrap().iter() {
        assert_eq!(envoy.bearer("/orders/1", t).status, 200);
    }
    let rss_start = rss_kb(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let port = envoy.port;
    let mut threads = Vec::new();
    // Valid tokens, repeated (served from the verified-token cache).
    for i in 0..2 {
        let (stop, tally, cached) = (stop.clone(), tally.clone(), cached.clone());
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(3700);
            let mut n = i;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let token = cached
                    .lock()
                    .map(|c| c[n % c.len()].clone())
                    .unwrap_or_default();
                let auth = format!("Bearer {token}");
                let status = try_http(
                    port,
                    "GET",
                    "/orders/1",
                    &[("authorization", auth.as_bytes())],
                    b"",
                )
                .map_or(0, |r| r.status);
                tally.sent.fetch_add(1, Ordering::SeqCst);
                match status {
                    200 => {}
                    s if s >= 500 || s == 0 => {
                        tally.server_errors.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        tally.wrong_denials.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Forged tokens and no token.
    {
        let (stop, tally) = (stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(3700);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let auth = format!("Bearer {forged}");
                let headers: Vec<(&str, &[u8])> = if n % 2 == 0 {
                    vec![("authorization", auth.as_bytes())]
                } else {
                    vec![]
                };
                let status =
                    try_http(port, "GET", "/orders/1", &headers, b"").map_or(0, |r| r.status);
                tally.sent.fetch_add(1, Ordering::SeqCst);
                match status {
                    401 => {}
                    200 => {
                        tally.wrong_allows.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        tally.server_errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Fresh tokens from the IdP, each used once (never cached), and the rotation halfway.
    let started = Instant::now();
    let mut rotated = false;
    let mut fresh = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        if !rotated && started.elapsed() > Duration::from_secs(seconds / 2) {
            assert_eq!(idp.admin("/__admin/rotate", json!({}))["kid"], "rs-2");
            // From now on the repeated tokens are the new key's.
            *cached.lock().unwrap() = (0..8)
                .map(|_| idp.token(&client, Some("orders:read")))
                .collect();
            rotated = true;
        }
        let token = idp.token(&client, Some("orders:read"));
        let r = envoy.bearer("/orders/1", &token);
        fresh += 1;
        tally.sent.fetch_add(1, Ordering::SeqCst);
        if r.status != 200 {
            if r.status >= 500 {
                tally.server_errors.fetch_add(1, Ordering::SeqCst);
            } else {
                tally.wrong_denials.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let rss_end = rss_kb(pid);
    let sent = tally.sent.load(Ordering::SeqCst);
    let (errors, allows, denials) = (
        tally.server_errors.load(Ordering::SeqCst),
        tally.wrong_allows.load(Ordering::SeqCst),
        tally.wrong_denials.load(Ordering::SeqCst),
    );
    eprintln!(
        "soak: {seconds} s, {sent} requests ({fresh} with fresh tokens), rotation at {} s; 5xx {errors}, wrong allows {allows}, valid refused {denials}; Envoy RSS {} MB -> {} MB",
        seconds / 2, rss_start / 1024, rss_end / 1024
    );
    assert!(rotated);
    assert!(sent > 500, "too little load: {sent}");
    assert_eq!(errors, 0, "5xx or failed requests");
    assert_eq!(allows, 0, "invalid requests allowed");
    assert_eq!(denials, 0, "valid requests refused");
    assert!(
        rss_end < rss_start + 64 * 1024,
        "memory grew from {rss_start} kB to {rss_end} kB"
    );
    // The VM reports its linear memory (from its tick): whole 64 KiB pages.
    let vm_memory = envoy.stat("wasmcustom.app_auth.vm.memory_bytes");
    eprintln!("soak: VM memory gauge {vm_memory:?} bytes");
    assert!(
        vm_memory.is_some_and(|b| b > 0 && b % 65_536 == 0),
        "no VM memory gauge: {vm_memory:?}"
    );
    let failures = envoy.vm_failures();
    assert!(failures.is_empty(), "VM failures:\n{}", failures.join("\n"));
}
