"""The Wasm work of one request through a proxy-wasm filter, counted in wasmtime fuel.

Fuel is wasmtime's instruction meter: about one unit per Wasm instruction executed, the same
count on every run and every machine. CPU time per request on a shared machine moves by 10 %
between identical rounds, more than most changes to the filter's own code; the fuel a request
burns in the module does not move at all. It does not see the proxy's side of a host call
(Envoy copying a header map, adding a header) nor how fast a runtime's compiled code runs, so
it complements the CPU columns rather than replacing them: together with the host calls a
request makes (listed with it), it says where a request's cost comes from.

A minimal proxy-wasm host (ABI 0.2.1, what the Rust SDK imports) runs the module as Envoy
would: the root context is configured, ticks until its keys are in, then each request is a
context created, its request headers handed over, its callouts (if any) answered, and the
context deleted. Callouts go to the bench IdP over HTTP on 127.0.0.1. Shared data is a dict
with proxy-wasm's compare-and-swap rules. The host offers no `verify_signature`, so a new
token is verified in Wasm, as on Kong: what a distinct-token case measures here is Kong's
cost of a new token, not Envoy's.

Needs the `wasmtime` package (installed into .venv by scripts/setup.sh).
"""
import json
import struct
import time
import urllib.error
import urllib.request

import wasmtime

OK, NOT_FOUND, BAD_ARGUMENT, CAS_MISMATCH = 0, 1, 2, 8
# proxy-wasm map and buffer types the filter reads.
REQUEST_HEADERS, CALL_RESPONSE_HEADERS = 0, 6
CALL_RESPONSE_BODY, PLUGIN_CONFIGURATION = 4, 7
ROOT_CONTEXT = 1
# Headers Envoy hands a filter for the bench's requests, besides the credential.
BASE_HEADERS = [(":authority", "127.0.0.1"), (":path", "/orders/1"), (":method", "GET"),
                (":scheme", "http"), ("user-agent", "wrk"), ("x-forwarded-proto", "http"),
                ("x-request-id", "6d3e1b8e-1f5c-4b8a-9a4e-0c2f5d7e8a91")]

_engine = None
_modules = {}


def _module(path):
    global _engine
    if _engine is None:
        config = wasmtime.Config()
        config.consume_fuel = True
        _engine = wasmtime.Engine(config)
    if path not in _modules:
        _modules[path] = wasmtime.Module.from_file(_engine, path)
    return _modules[path]


def serialize(pairs):
    """proxy-wasm's serialized map: count, lengths, then each name and value NUL-terminated."""
    out = struct.pack("<I", len(pairs))
    for name, value in pairs:
        out += struct.pack("<II", len(name), len(value))
    for name, value in pairs:
        out += name + b"\0" + value + b"\0"
    return out


def deserialize(data):
    (count,) = struct.unpack_from("<I", data, 0)
    lengths = [struct.unpack_from("<II", data, 4 + 8 * i) for i in range(count)]
    at = 4 + 8 * count
    pairs = []
    for name_len, value_len in lengths:
        name = data[at:at + name_len]
        at += name_len + 1
        value = data[at:at + value_len]
        at += value_len + 1
        pairs.append((name, value))
    return pairs


class Host:
    """One VM of the module, and the host functions it imports."""

    def __init__(self, wasm_path, idp_port):
        module = _module(wasm_path)
        self.store = wasmtime.Store(_engine)
        self.store.set_fuel(10**15)
        self.store.set_wasi(wasmtime.WasiConfig())
        linker = wasmtime.Linker(_engine)
        linker.define_wasi()
        self.idp_port = idp_port
        self.calls = {}
        self.request_headers = []
        self.call_headers = []
        self.call_body = b""
        self.plugin_config = b""
        self.pending = []
        self.next_token = 1
        self.shared = {}
        self.local_response = None
        self.live = {ROOT_CONTEXT}
        for imp in module.imports:
            if imp.module == "env":
                linker.define_func("env", imp.name, imp.type,
                                   self._host_function(imp.name, imp.type), access_caller=True)
        instance = linker.instantiate(self.store, module)
        self.exports = instance.exports(self.store)
        self.memory = self.exports["memory"]
        if "_initialize" in self.exports:
            self.exports["_initialize"](self.store)

    def _host_function(self, name, func_type):
        handler = getattr(self, name, None)
        returns = bool(func_type.results)

        def call(_caller, *args):
            self.calls[name] = self.calls.get(name, 0) + 1
            result = handler(*args) if handler else None
            return (result or OK) if returns else None
        return call

    def _read(self, ptr, size):
        return bytes(self.memory.read(self.store, ptr, ptr + size))

    def _write(self, ptr, data):
        self.memory.write(self.store, data, ptr)

    def _give(self, data, ptr_ptr, size_ptr):
        """Hands `data` to the module in memory it allocates, as a host does."""
        ptr = self.exports["proxy_on_memory_allocate"](self.store, len(data)) if data else 0
        if data:
            self._write(ptr, data)
        self._write(ptr_ptr, struct.pack("<I", ptr))
        self._write(size_ptr, struct.pack("<I", len(data)))
        return OK

    # ---- the host functions the filter calls (the others answer Ok) ----

    def proxy_get_log_level(self, ptr):
        self._write(ptr, struct.pack("<I", 2))  # info

    def proxy_get_current_time_nanoseconds(self, ptr):
        self._write(ptr, struct.pack("<Q", time.time_ns()))

    def proxy_get_buffer_bytes(self, kind, start, max_size, ptr_ptr, size_ptr):
        data = {PLUGIN_CONFIGURATION: self.plugin_config, CALL_RESPONSE_BODY: self.call_body}.get(kind)
        if data is None:
            return NOT_FOUND
        # Sizes are u32 in the ABI (wasmtime hands i32s over signed: the SDK asks for
        # usize::MAX, "all of it").
        start, max_size = start & 0xFFFFFFFF, max_size & 0xFFFFFFFF
        return self._give(data[start:start + max_size], ptr_ptr, size_ptr)

    def proxy_get_header_map_pairs(self, kind, ptr_ptr, size_ptr):
        pairs = {REQUEST_HEADERS: self.request_headers, CALL_RESPONSE_HEADERS: self.call_headers}.get(kind, [])
        return self._give(serialize(pairs), ptr_ptr, size_ptr)

    def proxy_get_header_map_value(self, kind, name_ptr, name_size, ptr_ptr, size_ptr):
        name = self._read(name_ptr, name_size).lower()
        for n, v in (self.request_headers if kind == REQUEST_HEADERS else []):
            if n == name:
                return self._give(v, ptr_ptr, size_ptr)
        return NOT_FOUND

    def proxy_set_effective_context(self, context_id):
        # As Envoy: an id that names no context is refused (the filter probes this to learn
        # whether the host can resume another request than the current one).
        return OK if context_id in self.live else BAD_ARGUMENT

    def proxy_get_property(self, *_):
        return NOT_FOUND

    def proxy_call_foreign_function(self, *_):
        return NOT_FOUND

    def proxy_define_metric(self, _kind, _name_ptr, _name_size, id_ptr):
        self._write(id_ptr, struct.pack("<I", self.calls["proxy_define_metric"]))

    def proxy_get_shared_data(self, key_ptr, key_size, ptr_ptr, size_ptr, cas_ptr):
        key = self._read(key_ptr, key_size)
        if key not in self.shared:
            return NOT_FOUND
        value, cas = self.shared[key]
        self._write(cas_ptr, struct.pack("<I", cas))
        return self._give(value, ptr_ptr, size_ptr)

    def proxy_set_shared_data(self, key_ptr, key_size, value_ptr, value_size, cas):
        key = self._read(key_ptr, key_size)
        # A missing key is created whatever the CAS; an existing one only with a matching CAS.
        if key in self.shared and cas and cas != self.shared[key][1]:
            return CAS_MISMATCH
        self.shared[key] = (self._read(value_ptr, value_size), self.shared.get(key, (b"", 0))[1] + 1)

    def proxy_send_local_response(self, status, *_):
        self.local_response = status

    def proxy_http_call(self, _up_ptr, _up_size, headers_ptr, headers_size, body_ptr, body_size,
                        _trailers_ptr, _trailers_size, _timeout_ms, token_ptr):
        headers = {n.decode(): v.decode() for n, v in deserialize(self._read(headers_ptr, headers_size))}
        body = self._read(body_ptr, body_size) if body_size else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.idp_port}{headers[':path']}", data=body,
                                         method=headers[":method"])
        for name, value in headers.items():
            if not name.startswith(":"):
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                answer = (r.status, list(r.headers.items()), r.read())
        except urllib.error.HTTPError as e:
            answer = (e.code, list(e.headers.items()), e.read())
        token = self.next_token
        self.next_token += 1
        self.pending.append((token,) + answer)
        self._write(token_ptr, struct.pack("<I", token))

    # ---- driving the module ----

    def _answer_callouts(self, context_id):
        for _ in range(100):
            if not self.pending:
                return
            token, status, headers, body = self.pending.pop(0)
            self.call_headers = [(b":status", str(status).encode())] + [
                (n.lower().encode(), v.encode()) for n, v in headers]
            self.call_body = body
            self.exports["proxy_on_http_call_response"](self.store, context_id, token,
                                                        len(self.call_headers), len(body), 0)

    def configure(self, plugin_config):
        self.plugin_config = plugin_config
        self.exports["proxy_on_context_create"](self.store, ROOT_CONTEXT, 0)
        if not self.exports["proxy_on_configure"](self.store, ROOT_CONTEXT, len(plugin_config)):
            raise RuntimeError("the module refused its configuration")
        if "proxy_on_tick" in self.exports:
            for _ in range(20):
                self.exports["proxy_on_tick"](self.store, ROOT_CONTEXT)
                self._answer_callouts(ROOT_CONTEXT)

    def request(self, context_id, headers):
        """One request; returns (continued, local response status or None)."""
        self.request_headers = [(n.encode(), v.encode()) for n, v in BASE_HEADERS + headers]
        self.local_response = None
        self.live.add(context_id)
        self.exports["proxy_on_context_create"](self.store, context_id, ROOT_CONTEXT)
        action = self.exports["proxy_on_request_headers"](self.store, context_id, len(self.request_headers), 1)
        self._answer_callouts(context_id)
        self.exports["proxy_on_delete"](self.store, context_id)
        self.live.discard(context_id)
        return action == 0, self.local_response


def work_per_request(wasm_path, plugin_config, headers, idp_port, requests=200):
    """Fuel and host calls per request for `headers`, once the filter has its keys and has
    seen the credential (so a cached credential is measured as cached). `headers` may be a
    function of the request's number instead (a new credential per request). None when a
    request is not answered at once with a continue."""
    headers_of = headers if callable(headers) else (lambda _: headers)
    host = Host(wasm_path, idp_port)
    host.configure(plugin_config)
    for i in range(4):
        host.request(100 + i, headers_of(i))
    continued, local = host.request(104, headers_of(4))
    if not continued or local is not None:
        return None
    host.calls = {}
    before = host.store.get_fuel()
    for i in range(requests):
        continued, local = host.request(1000 + i, headers_of(5 + i))
        if not continued or local is not None:
            return None
    return {"fuel": (before - host.store.get_fuel()) / requests,
            "host_calls": {name.removeprefix("proxy_"): count / requests
                           for name, count in sorted(host.calls.items())}}
