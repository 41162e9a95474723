//! The benchmark's baseline filter: the same SDK and V8 runtime as app-auth-filter, and the
//! least a filter does on a request: one host call for one request header, then continue.
//! Its cost over Envoy alone is the price of running any proxy-wasm filter at all.
//!
//! With the plugin configuration `{"identity":true}`, it also adds the five headers app-auth-filter
//! forwards for an allowed application (fixed values of the same lengths): the least any
//! filter that does this job pays, whatever it checks.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { identity: false }) });
}}

struct NoopRoot {
    identity: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.identity = self
            .get_plugin_configuration()
            .is_some_and(|c| c.as_slice() == br#"{"identity":true}"#);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            identity: self.identity,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    identity: bool,
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
        if self.identity {
            for (name, value) in IDENTITY {
                self.add_http_request_header(name, value);
            }
        }
        Action::Continue
    }
}
