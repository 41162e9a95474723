//! Host calls made without the SDK's wrappers, on the request path: its `get_map_bytes`
//! copies every header name and value into a `String` and a `Vec` of their own (and panics on
//! a host status other than Ok, or a name that is not UTF-8), and its `get_property` builds
//! two vectors for the path. Here the host's buffer is taken as it is and read in place by
//! [`crate::header_map::parse`]. Its `set_map_value` and `add_map_value` panic (a trap, which
//! takes the VM and every request of the worker with it) on any status but Ok: a header
//! change the host refuses must come back as an error, for the request to be refused. So does
//! its `send_http_response`: a local reply the host refuses comes back as an error here.

use proxy_wasm::types::MapType;

// The same imports the SDK declares (proxy-wasm ABI 0.2.1), with the enums as the `u32`s
// they are on the wire.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// The ABI's `WasmResult::Ok` and `NotFound`.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// A buffer the host allocated in this module's memory and filled, owned from now on.
///
/// # Safety
/// `data` must be null, or a buffer of `size` initialised bytes that the host obtained
/// from `proxy_on_memory_allocate` (the SDK's: a boxed `[u8]` of exactly `size` bytes, so a
/// `Vec` of capacity `size` describes its allocation) and that nothing else owns.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's contract above; this is how the SDK's own getters take such a
    // buffer, and the Vec frees it once, when dropped.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The serialized map `map` (see [`crate::header_map`]), empty when the host has none
/// (NotFound, or no buffer). `Err` carries any other host status.
pub(crate) fn header_map(map: MapType) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes at most a pointer and a size through the two out-pointers,
    // which point to live locals; `map as u32` is the enum's `repr(u32)` wire value.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    match status {
        // SAFETY: on Ok the host returns a buffer it allocated through this module's
        // `proxy_on_memory_allocate`, or null (see `take`).
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(other),
    }
}

/// The value of the property at `path` (its segments joined by NUL bytes, as the ABI wants
/// them: `b"xds\0route_name"`). `None` when the host has none or refuses.
pub(crate) fn property(path: &[u8]) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host reads `path.len()` bytes from `path` and writes at most a pointer and
    // a size through the two out-pointers, which point to live locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    // SAFETY: as in `header_map`: on Ok, a buffer from `proxy_on_memory_allocate`, or null.
    (status == OK).then(|| unsafe { take(data, size) })
}

/// Ok, or the host's status.
fn status(status: u32) -> Result<(), u32> {
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Adds the header `name: value` to `map`. `Err` carries a host status other than Ok.
pub(crate) fn add_header(map: MapType, name: &str, value: &str) -> Result<(), u32> {
    // SAFETY: the host reads `len()` bytes from each pointer, which point to live strings.
    status(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Sets the header `name` of `map` to `value` (added when absent). `Err` carries a host
/// status other than Ok.
pub(crate) fn replace_header(map: MapType, name: &str, value: &str) -> Result<(), u32> {
    // SAFETY: as in `add_header`.
    status(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes the header `name` (every value of it) from `map`. `Err` carries a host status
/// other than Ok.
pub(crate) fn remove_header(map: MapType, name: &str) -> Result<(), u32> {
    // SAFETY: the host reads `name.len()` bytes from `name`, a live string.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// Answers the current request with a local reply: status `code`, `headers` (serialized by
/// [`crate::header_map::serialize`]) and `body`, without gRPC status. `Err` carries a host
/// status other than Ok (ngx_wasm_module answers InternalFailure when nginx cannot allocate
/// the reply).
pub(crate) fn send_local_response(code: u32, headers: &[u8], body: &[u8]) -> Result<(), u32> {
    // SAFETY: the host reads `len()` bytes from each pointer, which point to live slices (no
    // details: a null pointer with size 0, as the SDK passes).
    status(unsafe {
        proxy_send_local_response(
            code,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}
