//! The Envoy build of the filter (scripts/envoy_module.py): the same module with fewer
//! exports. Pins which callbacks each host gets, and that Kong would refuse the Envoy build at
//! load time rather than call a callback it lacks.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

/// Every callback ngx_wasm_module looks up for an HTTP filter of ABI 0.2.1, which it calls
/// without checking that the module exports it, and the three it requires at load.
const KONG_CALLS: [&str; 12] = [
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_done",
    "proxy_on_log",
    "proxy_on_delete",
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
];

/// What Envoy must still call: the module's start (its static constructors, its logger), a
/// request's context and headers, its end (the engine forgets it when the context is
/// deleted), configuration, the tick, callouts and native signatures.
const ENVOY_CALLS: [&str; 10] = [
    "_initialize",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_delete",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_foreign_function",
    "proxy_on_memory_allocate",
    "proxy_abi_version_0_2_1",
];

fn leb_u32(bytes: &[u8], at: &mut usize) -> usize {
    let mut value = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
    }
    panic!("LEB128 number longer than 5 bytes");
}

/// A module's export names, and its other sections as they are.
fn exports_and_rest(module: &[u8]) -> (BTreeSet<String>, Vec<(u8, Vec<u8>)>) {
    assert_eq!(&module[..8], b"\0asm\x01\0\0\0");
    let (mut exports, mut rest, mut at) = (BTreeSet::new(), Vec::new(), 8);
    while at < module.len() {
        let id = module[at];
        at += 1;
        let size = leb_u32(module, &mut at);
        let body = &module[at..at + size];
        at += size;
        if id != 7 {
            rest.push((id, body.to_vec()));
            continue;
        }
        let mut i = 0;
        for _ in 0..leb_u32(body, &mut i) {
            let len = leb_u32(body, &mut i);
            exports.insert(String::from_utf8(body[i..i + len].to_vec()).unwrap());
            i += len + 1;
            leb_u32(body, &mut i);
        }
        assert_eq!(i, body.len(), "the export section is read to its end");
    }
    (exports, rest)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn the_envoy_build_differs_only_in_the_callbacks_envoy_can_skip() {
    let full = std::fs::read(support::full_wasm_path()).unwrap();
    let envoy = std::fs::read(support::wasm_path()).unwrap();
    let (full_exports, full_rest) = exports_and_rest(&full);
    let (envoy_exports, envoy_rest) = exports_and_rest(&envoy);
    assert!(full_rest == envoy_rest, "the code and data are the same");

    let kong = set(&KONG_CALLS);
    assert!(
        kong.is_subset(&full_exports),
        "Kong loads the full module: {:?}",
        kong.difference(&full_exports).collect::<Vec<_>>()
    );
    let needed = set(&ENVOY_CALLS);
    assert!(
        needed.is_subset(&envoy_exports),
        "{:?}",
        needed.difference(&envoy_exports).collect::<Vec<_>>()
    );

    let dropped: BTreeSet<_> = full_exports.difference(&envoy_exports).cloned().collect();
    assert_eq!(
        dropped,
        set(&[
            "proxy_on_vm_start",
            "proxy_on_done",
            "proxy_on_log",
            "proxy_on_request_body",
            "proxy_on_request_trailers",
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_response_trailers",
        ])
    );
    assert!(envoy_exports.is_subset(&full_exports));
    // Kong requires on_vm_start at load: the Envoy build is refused there, not run.
    assert!(!envoy_exports.contains("proxy_on_vm_start"));
}

#[test]
fn the_script_refuses_a_module_without_the_callbacks_to_drop() {
    let out = Command::new("python3")
        .arg(support::root().join("scripts/envoy_module.py"))
        .arg(support::wasm_path())
        .arg(support::scratch().join("twice.wasm"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not exported by the module: proxy_on_done"),
        "{err}"
    );
}

/// Issue 5's bound on the module (release build, as `make build` makes it): under 700 KB
/// (700,000 bytes). The standard library's address or float formatting, one more generic
/// cache, are each a few KB: this says when a change crosses it.
#[test]
fn the_module_is_under_700_kb() {
    for module in [support::full_wasm_path(), support::wasm_path()] {
        let size = std::fs::metadata(&module).expect("the module").len();
        assert!(size < 700_000, "{}: {size} bytes", module.display());
    }
}
