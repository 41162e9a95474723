#!/usr/bin/env python3
"""Writes the Envoy build of the filter: app_auth_filter.wasm without the callbacks that only
return the ABI's defaults.

Envoy (proxy-wasm-cpp-host) enters the VM for a callback only when the module exports it.
The module exports every callback of the ABI (src/host/callbacks.rs, as the Rust SDK did),
so each request would pay VM entries for
`proxy_on_response_headers`, `proxy_on_log` and `proxy_on_done` (and a body's chunks for the
body callbacks) that only return the defaults Envoy assumes for a callback that is absent:
about 2 us of Envoy CPU per request (bench/README.md, "Where the time goes"). The code is
the same; only the exports differ.

Kong (ngx_wasm_module) calls these callbacks without checking that they exist, so Kong loads
the full app_auth_filter.wasm. This build also leaves out `proxy_on_vm_start`, which the
filter does not implement, Envoy does not need and Kong requires: loaded into Kong by
mistake, it is refused at load time instead of failing on the first request.

usage: envoy_module.py IN.wasm OUT.wasm
"""
import os
import sys

# Callbacks that only return the ABI's defaults, which are what Envoy does without them;
# and `proxy_on_response_headers`, which the filter implements for Kong only (a request Kong
# forwarded while it still waited on a callout: Envoy never resumes a paused request itself).
DROPPED = (
    "proxy_on_vm_start",
    "proxy_on_done",
    "proxy_on_log",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
)
MAGIC = b"\0asm\1\0\0\0"
EXPORT_SECTION = 7


def read_u32(data, at):
    """An unsigned LEB128 number at `at`: (value, offset after it)."""
    value = shift = 0
    for i in range(at, min(at + 5, len(data))):
        value |= (data[i] & 0x7F) << shift
        shift += 7
        if data[i] < 0x80:
            return value, i + 1
    raise ValueError(f"bad LEB128 number at byte {at}")


def write_u32(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sections(module):
    """The module's sections in order, as (id, body)."""
    if module[:8] != MAGIC:
        raise ValueError("not a WebAssembly module (version 1)")
    at = 8
    while at < len(module):
        section = module[at]
        size, body_at = read_u32(module, at + 1)
        body = module[body_at:body_at + size]
        if len(body) != size:
            raise ValueError(f"section {section} runs past the end of the module")
        at = body_at + size
        yield section, body


def exports(body):
    """An export section's entries, as (name, the entry's bytes)."""
    count, i = read_u32(body, 0)
    for _ in range(count):
        start = i
        length, i = read_u32(body, i)
        name = body[i:i + length].decode()
        _, i = read_u32(body, i + length + 1)  # the kind byte, then the index
        yield name, body[start:i]


def export_names(module):
    return {name for section, body in sections(module) if section == EXPORT_SECTION
            for name, _ in exports(body)}


def without_exports(module, names):
    """`module` with the exports `names` removed (each must be there); nothing else changes."""
    out, missing = bytearray(MAGIC), set(names)
    for section, body in sections(module):
        if section == EXPORT_SECTION:
            kept = [entry for name, entry in exports(body) if name not in names]
            missing -= {name for name, _ in exports(body)}
            body = write_u32(len(kept)) + b"".join(kept)
        out += bytes([section]) + write_u32(len(body)) + body
    if missing:
        raise ValueError(f"not exported by the module: {', '.join(sorted(missing))}")
    return bytes(out)


def is_envoy_build(module):
    return not set(DROPPED) & export_names(module)


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__.split("\n\n")[-1].strip())
    with open(argv[1], "rb") as f:
        module = f.read()
    try:
        envoy = without_exports(module, DROPPED)
    except ValueError as e:
        sys.exit(f"envoy_module.py: {argv[1]}: {e}")
    tmp = f"{argv[2]}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(envoy)
    os.replace(tmp, argv[2])


if __name__ == "__main__":
    main(sys.argv)
