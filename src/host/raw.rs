//! The host functions of the proxy-wasm ABI (0.2.1) this filter calls, without an SDK
//! between: the proxy-wasm Rust SDK's wrappers panic (a trap, which takes the VM and every
//! request of the worker with it) on any host status they do not expect, and on the request
//! path they copy: its `get_map_bytes` copies every header name and value into a `String` and
//! a `Vec` of their own (and panics on a name that is not UTF-8), its `get_property` builds
//! two vectors for the path, its `get_current_time` makes a `SystemTime` that every caller
//! here turned back into milliseconds. Here every status comes back as the number it is (an
//! `Err` for any but Ok, or NotFound where that means "none"), and a buffer the host fills is
//! taken as it is: headers are read in place by [`crate::header_map::parse`].

/// The header maps this filter reads or changes, as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum MapType {
    HttpRequestHeaders = 0,
    HttpCallResponseHeaders = 6,
}

/// The buffers this filter reads, as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum BufferType {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

/// The metric kinds this filter defines, as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

// The ABI's imports (as the SDK declares them), with its enums as the `u32`s they are on the
// wire.
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
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
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

/// The ABI's `WasmResult::Ok`, `NotFound` and `CasMismatch`.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
pub(crate) const CAS_MISMATCH: u32 = 8;

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

/// The host's clock in nanoseconds since the Unix epoch. `Err` carries a host status other
/// than Ok. (The SDK's getter makes a `SystemTime` of it, which every caller turned back into
/// a number, and panics on any other status.)
pub(crate) fn current_time_ns() -> Result<u64, u32> {
    let mut time: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer, which points to a live local.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut time) }).map(|()| time)
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

/// Writes `message` to the proxy's log at `level` (the ABI's: 0 trace to 5 critical).
pub(crate) fn log(level: u32, message: &str) -> Result<(), u32> {
    // SAFETY: the host reads `message.len()` bytes from `message`, a live string.
    status(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

/// The proxy's log level (the ABI's: 0 trace to 5 critical).
pub(crate) fn log_level() -> Result<u32, u32> {
    let mut level: u32 = 0;
    // SAFETY: the host writes one u32 through the pointer, which points to a live local.
    status(unsafe { proxy_get_log_level(&mut level) }).map(|()| level)
}

/// Has the host call `proxy_on_tick` every `period_ms`.
pub(crate) fn set_tick_period_ms(period_ms: u32) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}

/// Makes `context_id` the context later host calls act on (a request's, or a root's).
pub(crate) fn set_effective_context(context_id: u32) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Resumes the effective context's paused request.
pub(crate) fn resume_http_request() -> Result<(), u32> {
    // SAFETY: no pointers; 0 is the ABI's `StreamType::HttpRequest`.
    status(unsafe { proxy_continue_stream(0) })
}

/// Up to `max_size` bytes of buffer `buffer` from `start`; empty when the host has none
/// (NotFound, or no buffer).
pub(crate) fn buffer(buffer: BufferType, start: usize, max_size: usize) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes at most a pointer and a size through the two out-pointers,
    // which point to live locals.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    match status {
        // SAFETY: as in `header_map`.
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(other),
    }
}

/// The value under `key` in the host's shared data and its CAS (0: none), `None` when there
/// is no value.
pub(crate) fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: the host reads `key.len()` bytes from `key`, a live string, and writes at most
    // a pointer, a size and a u32 through the out-pointers, which point to live locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        // SAFETY: as in `header_map`.
        OK if !data.is_null() => Ok(Some((unsafe { take(data, size) }, cas))),
        OK | NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

/// Stores `value` under `key` in the host's shared data if its CAS is still `cas` (0: store
/// whatever is there). `Err(CAS_MISMATCH)` when another writer came first.
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), u32> {
    // SAFETY: the host reads `len()` bytes from each pointer, which point to live slices.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Sends an HTTP call to the cluster `upstream` with `headers` (serialized by
/// [`crate::header_map::serialize`]) and `body` (none: a null pointer, as the SDK passes),
/// no trailers; its token.
pub(crate) fn http_call(
    upstream: &str,
    headers: &[u8],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, u32> {
    let trailers = crate::header_map::serialize::<&str, &str>(&[]);
    let mut token: u32 = 0;
    // SAFETY: the host reads `len()` bytes from each pointer, which point to live slices,
    // and writes one u32 through the last, which points to a live local.
    let status = unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.map_or(std::ptr::null(), <[u8]>::as_ptr),
            body.map_or(0, <[u8]>::len),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    self::status(status).map(|()| token)
}

/// Calls the host's foreign function `name` with `arguments`; its result (empty when the
/// host gave no buffer).
pub(crate) fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host reads `len()` bytes from the two slices and writes at most a pointer
    // and a size through the out-pointers, which point to live locals.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    };
    // SAFETY: as in `header_map`.
    self::status(status).map(|()| unsafe { take(data, size) })
}

/// Defines the metric `name`; its id.
pub(crate) fn define_metric(kind: MetricType, name: &str) -> Result<u32, u32> {
    let mut id: u32 = 0;
    // SAFETY: the host reads `name.len()` bytes from `name` and writes one u32 through the
    // out-pointer, which points to a live local.
    let status = unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    self::status(status).map(|()| id)
}

/// Adds `offset` to the counter `id`.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, offset) })
}

/// Records `value` in the gauge or histogram `id`.
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_record_metric(id, value) })
}
