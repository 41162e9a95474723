//! The Kong build of the filter (`app_auth_filter.wasm`) under a host that resumes requests as
//! Kong's Wasm engine does (tests/kong_host.py, on wasmtime): concurrent requests waiting on
//! the identity provider each send their own callout, are resumed only by its answer and
//! only with their own application's headers, and a request whose configuration was replaced
//! while it waited is refused, never left hanging; and each request's policy follows its own
//! route (`kong.route_name`, else `kong.service_name`). Kong itself cannot be installed here.

mod support;

use std::process::Command;

/// Runs a Python host scenario script on the Kong build; it prints "0 failed" when every
/// check holds.
fn run_scenarios(script: &str) {
    run_scenarios_on(script, &support::full_wasm_path());
}

fn run_scenarios_on(script: &str, module: &std::path::Path) {
    let out = Command::new(support::venv_python())
        .arg(support::root().join(script))
        .arg(module)
        .output()
        .unwrap_or_else(|e| panic!("python runs {script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\n0 failed"), "{text}");
}

#[test]
fn requests_waiting_under_kongs_semantics_are_each_resumed_with_their_own_decision() {
    run_scenarios("tests/kong_host.py");
}

/// tests/kong_host_gaps.py: ngx_wasm_module's 100-pair header maps, the query Kong forwards
/// whatever `:path` says, its trapping host calls, and its older releases' silent callout
/// failures.
#[test]
fn what_ngx_wasm_module_does_differently_is_survived() {
    run_scenarios("tests/kong_host_gaps.py");
}

/// tests/envoy_host.py: the Envoy build under Envoy's callout semantics (a request's callouts
/// cancelled, unanswered, when it ends; tokens that come round again): requests whose clients
/// hang up while they wait leave nothing behind in the VM.
#[test]
fn requests_that_end_while_waiting_leave_nothing_behind_on_envoy() {
    run_scenarios_on("tests/envoy_host.py", &support::wasm_path());
}
