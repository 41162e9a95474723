//! The benchmark's baseline filter: the same SDK and V8 runtime as app-auth-filter, and the
//! least a filter does on a request: one host call for one request header, then continue.
//! Its cost over Envoy alone is the price of running any proxy-wasm filter at all.
//!
//! With the plugin configuration `{"identity":true}`, it also adds the five headers app-auth-filter
//! forwards for an allowed application (fixed values of the same lengths): the least any
//! filter that does this job pays, whatever it checks.
//!
//! With `{"identity":true,"verify":"HEX"}`, it also calls Envoy's `verify_signature` once per
//! request with HEX (a serialized `VerifySignatureArguments`: one RS256 key, token and
//! signature, fixed) and answers 500 unless the signature verifies: the least any filter pays
//! on Envoy for a new RS256 token when it verifies through that function (Envoy caches nothing
//! between calls, so one fixed signature costs what distinct ones do).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { identity: false, verify: None }) });
}}

struct NoopRoot {
    identity: bool,
    verify: Option<std::rc::Rc<Vec<u8>>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        self.identity = config.contains(r#""identity":true"#);
        self.verify = config.split_once(r#""verify":""#).and_then(|(_, rest)| {
            let hex = rest.split('"').next()?;
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            bytes.map(std::rc::Rc::new)
        });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            identity: self.identity,
            verify: self.verify.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    identity: bool,
    verify: Option<std::rc::Rc<Vec<u8>>>,
}

/// What app-auth-filter forwards for the benchmark's application.
const IDENTITY: [(&str, &str); 5] = [
    ("x-application-id", "app-bench"),
    ("x-application-developer-id", "dev-4"),
    ("x-application-portal-id", "portal-1"),
    ("x-application-org-id", "org-1"),
    ("x-credential-identifier", "bench-client"),
];

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Bytes, as app-auth-filter reads them; the value is looked at so it is not optimised away.
        let seen = self
            .get_http_request_header_bytes("authorization")
            .map_or(0, |v| v.len());
        std::hint::black_box(seen);
        if let Some(args) = &self.verify {
            // VerifySignatureResult: field 1 (result) true is the bytes 08 01.
            let verified =
                proxy_wasm::hostcalls::call_foreign_function("verify_signature", Some(args))
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.starts_with(&[0x08, 0x01]));
            if !verified {
                self.send_http_response(500, vec![], Some(b"verify_signature refused\n"));
                return Action::Pause;
            }
        }
        if self.identity {
            for (name, value) in IDENTITY {
                self.add_http_request_header(name, value);
            }
        }
        Action::Continue
    }
}
