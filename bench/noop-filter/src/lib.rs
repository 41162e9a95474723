//! The benchmark's baseline filter: the same SDK and V8 runtime as app-auth-filter, and the
//! least a filter does on a request: one host call for one request header, then continue.
//! Its cost over Envoy alone is the price of running any proxy-wasm filter at all.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Bytes, as app-auth-filter reads them; the value is looked at so it is not optimised away.
        let seen = self
            .get_http_request_header_bytes("authorization")
            .map_or(0, |v| v.len());
        std::hint::black_box(seen);
        Action::Continue
    }
}
