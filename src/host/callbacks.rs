//! The callbacks of the proxy-wasm ABI (0.2.1) the host enters the module by, and the
//! contexts they name.
//!
//! A root context is one plugin configuration (its [`Shared`] state: the engine, callouts
//! under way, counters); several may share a VM. A request context is a request's id and its
//! root: the filter keeps no other state per request (the engine keeps what a waiting request
//! needs), so creating one is one insertion in a map of ids, and its callbacks look up the
//! root's state there. (The proxy-wasm Rust SDK's dispatcher boxed a trait object per request
//! in hash maps, looked up again in each callback, some callbacks in three maps; it was a
//! fifth of the module's work on a request with a remembered token, and it panicked, trapping
//! the VM, on any context or token id it did not know.) An id the host never created is
//! answered safely: a request is refused, a root callback does nothing.
//!
//! Every callback the SDK exported is exported here, with the SDK's default where the filter
//! does nothing: ngx_wasm_module (Kong) calls them without checking that they exist.
//! `scripts/envoy_module.py` drops those Envoy can go without.

use super::{filter, root, Shared, SharedRef};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// The ABI's `Action`s.
pub(crate) const CONTINUE: u32 = 0;
pub(crate) const PAUSE: u32 = 1;

/// Context ids hashed by one multiplication (Fibonacci hashing): the host counts them up
/// from 1, and the map's control bytes take the top bits.
#[derive(Default)]
struct ContextIdHasher(u64);

impl Hasher for ContextIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
        self.0 = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Contexts {
    /// Root contexts by id, in the order they came (almost always one).
    roots: Vec<(u32, SharedRef)>,
    /// Each live request context's root context id.
    requests: HashMap<u32, u32, BuildHasherDefault<ContextIdHasher>>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

impl Contexts {
    fn root(&self, root_id: u32) -> Option<SharedRef> {
        self.roots
            .iter()
            .find(|(id, _)| *id == root_id)
            .map(|(_, shared)| Rc::clone(shared))
    }
}

/// The state of root context `root_id`.
fn root_state(root_id: u32) -> Option<SharedRef> {
    CONTEXTS.with(|c| c.borrow().root(root_id))
}

/// The state of request context `id`'s root.
fn request_state(id: u32) -> Option<SharedRef> {
    CONTEXTS.with(|c| {
        let c = c.borrow();
        c.root(*c.requests.get(&id)?)
    })
}

/// Where the answer to callout `token` goes: the root context whose state keeps its token,
/// and the request that sent it (`None`: the root itself). A token no root keeps any more
/// (its configuration was replaced while it was under way) goes to the context the host
/// names, `context_id`: on Kong the request that sent it, which must still be settled.
fn callout_owner(context_id: u32, token: u32) -> Option<(u32, SharedRef, Option<u32>)> {
    CONTEXTS.with(|c| {
        let c = c.borrow();
        for (root_id, shared) in &c.roots {
            if let Ok(s) = shared.try_borrow() {
                if let Some((_, _, owner)) = s.callouts.get(&token) {
                    return Some((*root_id, Rc::clone(shared), *owner));
                }
            }
        }
        match c.requests.get(&context_id) {
            Some(root_id) => Some((*root_id, c.root(*root_id)?, Some(context_id))),
            None => Some((context_id, c.root(context_id)?, None)),
        }
    })
}

extern "C" {
    /// The linker's: runs the module's static constructors (wasi-libc's among them).
    fn __wasm_call_ctors();
}

/// The module's start (a WASI reactor's): the host calls it once, before any callback.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: called once, first, as a reactor's `_initialize` must call it (what the SDK's
    // `main!` did).
    unsafe { __wasm_call_ctors() };
    super::start();
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// A buffer of `size` bytes for the host to fill: a boxed `[u8]` of exactly that size, which
/// the host hands back and [`super::raw`] takes as a `Vec` of that capacity.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let buffer: Box<[std::mem::MaybeUninit<u8>]> = Box::new_uninit_slice(size);
    Box::into_raw(buffer).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        return create_root(context_id);
    }
    let known = CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        let known = c.roots.iter().any(|(id, _)| *id == root_context_id);
        if known {
            c.requests.insert(context_id, root_context_id);
        }
        known
    });
    if !known {
        // Its requests are refused (`proxy_on_request_headers` finds no state).
        log::error!("context {context_id} created under an unknown root context {root_context_id}");
    }
}

/// A root context (a plugin configuration) and its state, empty until configured. Out of
/// line, as every rare path of a request's callbacks: what a request runs stays together.
#[cold]
#[inline(never)]
fn create_root(context_id: u32) {
    let shared = Rc::new(RefCell::new(Shared {
        root_id: context_id,
        ..Shared::default()
    }));
    CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        c.roots.retain(|(id, _)| *id != context_id);
        c.roots.push((context_id, shared));
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> u32 {
    match root_state(context_id) {
        Some(shared) => u32::from(root::on_configure(&shared, plugin_configuration_size)),
        None => {
            log::error!("configuration for an unknown root context {context_id}");
            0
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    if let Some(shared) = root_state(context_id) {
        root::on_tick(&shared);
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    match request_state(context_id) {
        Some(shared) => filter::on_request_headers(context_id, &shared, num_headers),
        None => {
            log::error!("request headers for an unknown context {context_id}; denying");
            super::reply(500, &[], b"");
            PAUSE
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    match request_state(context_id) {
        Some(shared) => filter::on_response_headers(context_id, &shared),
        None => CONTINUE,
    }
}

/// A callout's answer, handed to the context whose callback sent it (a request's or the
/// root's, see [`callout_owner`]): a request that ended meanwhile took its callouts' tokens
/// with it, and their answers are dropped.
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    let Some((root_id, shared, owner)) = callout_owner(context_id, token) else {
        return;
    };
    // Read all the same (on Envoy from the root context, which sent it): those waiting on it
    // are each answered in their own context, or dropped when it is gone.
    if super::raw::set_effective_context(owner.unwrap_or(root_id)).is_err() {
        log::warn!("the answer to callout {token} came for a context the host no longer has");
    }
    super::on_callout_response(&shared, token, body_size, owner);
}

/// A context's end: a request's is forgotten (with its callouts), a root's state dropped.
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let ended = CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        let root_id = c.requests.remove(&context_id)?;
        c.root(root_id)
    });
    match ended {
        Some(shared) => filter::on_request_end(context_id, &shared),
        None => delete_root(context_id),
    }
}

/// A root context's end (or an id never created): its state goes.
#[cold]
#[inline(never)]
fn delete_root(context_id: u32) {
    CONTEXTS.with(|c| c.borrow_mut().roots.retain(|(id, _)| *id != context_id));
}

// The SDK's defaults, for callbacks the filter has no use for.

#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_context_id: u32, _queue_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_id: u32, _size: usize, _end_of_stream: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context_id: u32, _num_trailers: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_id: u32, _size: usize, _end_of_stream: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _num_trailers: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_new_connection(_context_id: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(_id: u32, _size: usize, _end_of_stream: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(_context_id: u32, _peer_type: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(_id: u32, _size: usize, _end_of_stream: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_connection_close(_context_id: u32, _peer_type: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_id: u32, _token: u32, _headers: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_context_id: u32, _token: u32, _response_size: usize) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_id: u32, _token: u32, _trailers: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_context_id: u32, _token: u32, _status_code: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_foreign_function(_id: u32, _function_id: u32, _arguments_size: usize) {}
