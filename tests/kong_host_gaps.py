"""What ngx_wasm_module (Kong) does that Envoy does not, and the filter must survive:
scenarios on tests/kong_host.py's host.

usage: python tests/kong_host_gaps.py MODULE.wasm   (exit 0 when every check holds)
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kong_host  # noqa: E402
from kong_host import CONFIG, PAUSE, CONTINUE, check, identity, configured  # noqa: E402
from wasm_work import BAD_ARGUMENT, OK, REQUEST_HEADERS, serialize  # noqa: E402

# ngx_wasm_module: src/http/ngx_http_wasm.h NGX_HTTP_WASM_MAX_REQ_HEADERS, applied by
# ngx_proxy_wasm_pairs_marshal to every marshalled map (pseudo-headers first, then the
# request's own headers in order), with a "marshalled map truncated to 100 elements" warning.
MAX_PAIRS = 100


class TruncatingKongHost(kong_host.KongHost):
    def proxy_get_header_map_pairs(self, kind, ptr_ptr, size_ptr):
        pairs = self.headers_of.get(self.current, []) if kind == REQUEST_HEADERS else self.call_headers
        return self._give(serialize(pairs[:MAX_PAIRS]), ptr_ptr, size_ptr)


def start_with(host, ctx, client_id, extra, num_headers=None):
    """As KongHost.start, with `extra` headers after the request's own."""
    host.headers_of[ctx] = [(n.encode(), v.encode()) for n, v in kong_host.wasm_work.BASE_HEADERS] + [
        (b"authorization", f"Bearer {kong_host.token_for(client_id)}".encode())] + extra
    host.enter(kong_host.ROOT_CONTEXT)
    host.exports["proxy_on_context_create"](host.store, ctx, kong_host.ROOT_CONTEXT)
    host.enter(ctx)
    if num_headers is None:  # nginx's count of the request's header lines (no pseudo-headers)
        num_headers = sum(1 for n, _ in host.headers_of[ctx] if not n.startswith(b":"))
    return host.exports["proxy_on_request_headers"](host.store, ctx, num_headers, 1)


def warm(host, ctx):
    """A first request that fetches the issuer's keys, so that later ones are decided at once."""
    host.start(ctx, "client-1")
    for _ in range(5):
        if host.answer(ctx) is None:
            break


def truncated_spoof(wasm_path, failures):
    host = kong_host.configured(wasm_path, CONFIG, TruncatingKongHost)
    assert host, "the module takes the configuration"
    warm(host, 2)
    check(identity(host, 2) == ["app-1"], f"warm-up request allowed ({host.changes.get(2)})", failures)
    # 110 ordinary headers, then a spoofed identity and its `_` alias: nginx keeps them all
    # (no count limit), ngx_wasm_module shows the filter the first 100 pairs only.
    ctx = 3
    extra = [(f"x-filler-{i}".encode(), b"1") for i in range(110)] + [
        (b"X-Application-ID", b"app-3"), (b"x_application_id", b"app-3")]
    action = start_with(host, ctx, "client-1", extra)
    check_not_spoofed(host, ctx, action, failures)
    # The same, with a host whose header count does not tell (the map alone shows it).
    action = start_with(host, 4, "client-1", extra, num_headers=8)
    check_not_spoofed(host, 4, action, failures)
    # 95 headers of its own (99 pairs with the 4 pseudo-headers): all seen, allowed. A map of
    # exactly 100 pairs cannot be told from a truncated one: refused.
    fits = [(f"x-filler-{i}".encode(), b"1") for i in range(91)]
    action = start_with(host, 5, "client-1", fits)
    check(action == CONTINUE and identity(host, 5) == ["app-1"],
          f"a request whose whole map fits is allowed (action {action}, local {host.local.get(5)})", failures)
    action = start_with(host, 6, "client-1", fits + [(b"x-one-more", b"1")])
    check(action == PAUSE and host.local.get(6) == 431,
          f"one more header than fits is refused 431 (action {action}, local {host.local.get(6)})", failures)


def check_not_spoofed(host, ctx, action, failures):
    changes = host.changes.get(ctx, [])
    removed = {n.lower() for (what, n, _) in changes if what == "remove"}
    forwarded = action == CONTINUE
    spoof_left = forwarded and not ({"x-application-id", "x_application_id"} <= removed)
    check(not spoof_left,
          f"a spoofed X-Application-ID past the host's 100-pair view is not forwarded "
          f"(action {action}, local {host.local.get(ctx)}, changes {changes})", failures)


class FailingDispatchKongHost(kong_host.KongHost):
    """Every dispatch_http_call refused at once (Err status)."""

    def proxy_http_call(self, *args):
        return 2  # BadArgument


def dispatch_refused(wasm_path, failures):
    host = kong_host.configured(wasm_path, CONFIG, FailingDispatchKongHost)
    assert host, "the module takes the configuration"
    for ctx, basic in ((2, False), (3, True)):
        action = host.start(ctx, "client-1", basic=basic)
        check(action == PAUSE and host.local.get(ctx) == 503 and ctx not in host.resumed,
              f"request {ctx} whose callout cannot be sent is refused 503 at once "
              f"(action {action}, local {host.local.get(ctx)})", failures)


def dispatch_status(wasm_path, failures):
    """A failed call as Kong reports it: no :status, a :dispatch_status, no body."""
    host = configured(wasm_path, CONFIG)
    ctx = 2
    check(host.start(ctx, "client-1") == PAUSE, "request waits", failures)
    token, path, _ = host.calls_of[ctx].pop(0)
    host.call_headers = [(b":dispatch_status", b"timeout")]
    host.call_body = b""
    host.enter(ctx)
    host.exports["proxy_on_http_call_response"](host.store, ctx, token, 1, 0, 0)
    check(host.local.get(ctx) == 503 and ctx not in host.resumed,
          f"a timed-out callout is a 503 (local {host.local.get(ctx)}, resumed {host.resumed.get(ctx)})",
          failures)


class PathKongHost(kong_host.KongHost):
    """Kong proxies `$upstream_uri`, which its Lua access phase builds from the router's path
    and the request's query before the filter chain runs (ngx_wasm_module postpones its
    access handler behind Lua's): whatever the filter sets as `:path`, the upstream gets the
    query the client sent. ngx_wasm_module before 0.6.0 (`old`) traps on a `:path` with a
    query ("NYI - cannot set request path with querystring")."""

    def __init__(self, wasm_path, old):
        super().__init__(wasm_path)
        self.old = old
        self.sent_path = {}

    def proxy_replace_header_map_value(self, kind, n, ns, v, vs):
        if self.old and kind == REQUEST_HEADERS and self._read(n, ns) == b":path" and b"?" in self._read(v, vs):
            raise RuntimeError("host trap: NYI - cannot set request path with querystring")
        return super().proxy_replace_header_map_value(kind, n, ns, v, vs)

    def upstream_path(self, ctx):
        return self.sent_path[ctx]


KEY_CONFIG = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "filter-config",
                               "key-auth.json"), "rb").read()


def query_key_hidden(wasm_path, failures):
    """hide_credentials with the key in the query string: Kong cannot be made to forward the
    request without it, so the request is refused (and never traps the VM)."""
    for old in (False, True):
        host = kong_host.configured(wasm_path, KEY_CONFIG, lambda path: PathKongHost(path, old))
        assert host, "the module takes the configuration"
        for ctx, path in ((2, b"/catalog?apikey=test"), (3, b"/catalog?x=1&apikey=test")):
            host.headers_of[ctx] = [(b":authority", b"api.test"), (b":path", path), (b":method", b"GET"),
                                    (b":scheme", b"http"), (b"user-agent", b"t")]
            host.sent_path[ctx] = path
            host.enter(kong_host.ROOT_CONTEXT)
            host.exports["proxy_on_context_create"](host.store, ctx, kong_host.ROOT_CONTEXT)
            host.enter(ctx)
            try:
                action, error = host.exports["proxy_on_request_headers"](host.store, ctx, 1, 1), None
            except Exception as e:  # a trap
                action, error = None, str(e).splitlines()[0]
            forwarded = action == CONTINUE and b"apikey" in host.upstream_path(ctx)
            check(error is None and not forwarded and host.local.get(ctx) == 500,
                  f"hide_credentials ({'before 0.6.0' if old else '0.6.0'}): {path} is refused, not "
                  f"forwarded with its key (action {action}, trap {error}, local {host.local.get(ctx)})",
                  failures)


def path_not_utf8(wasm_path, failures):
    """A `:path` with a raw byte that is not UTF-8 (nginx, and Envoy's HTTP/2 codec, pass one
    through) is a 400: read as no path at all, its query string (here a second key, which
    hide_credentials would also have to strip) would go unseen."""
    host = kong_host.configured(wasm_path, KEY_CONFIG)
    assert host, "the module takes the configuration"
    for ctx, path, status in ((2, b"/catalog?apikey=other", 401), (3, b"/catalog?apikey=other&x=\xe9", 400)):
        host.headers_of[ctx] = [(b":authority", b"api.test"), (b":path", path), (b":method", b"GET"),
                                (b":scheme", b"http"), (b"apikey", b"test")]
        host.enter(kong_host.ROOT_CONTEXT)
        host.exports["proxy_on_context_create"](host.store, ctx, kong_host.ROOT_CONTEXT)
        host.enter(ctx)
        action = host.exports["proxy_on_request_headers"](host.store, ctx, 1, 1)
        check(action == PAUSE and host.local.get(ctx) == status,
              f"a key in the header and another in the query {path!r} is refused {status} "
              f"(action {action}, local {host.local.get(ctx)})", failures)


class HeadersGoneKongHost(kong_host.KongHost):
    """A host that cannot hand over the request's headers once the request has waited (a
    failed `proxy_get_header_map_pairs`)."""

    def __init__(self, wasm_path):
        super().__init__(wasm_path)
        self.reads_fail = False

    def proxy_get_header_map_pairs(self, kind, ptr_ptr, size_ptr):
        if self.reads_fail and kind == REQUEST_HEADERS:
            return BAD_ARGUMENT
        return super().proxy_get_header_map_pairs(kind, ptr_ptr, size_ptr)


def headers_unreadable_after_wait(wasm_path, failures):
    """A request allowed after waiting is rewritten from its header list, read again (a
    client's `x_application_id` must be found to be removed): without it, a 500, never a
    request forwarded with what it may carry."""
    host = configured(wasm_path, CONFIG, HeadersGoneKongHost)
    ctx = 2
    check(host.start(ctx, "client-1") == PAUSE, "request waits for its keys", failures)
    host.reads_fail = True
    for _ in range(5):
        if host.answer(ctx) is None:
            break
    check(host.local.get(ctx) == 500 and not host.resumed.get(ctx),
          f"allowed after waiting, with its headers unreadable: 500 (local {host.local.get(ctx)}, "
          f"resumed {host.resumed.get(ctx)})", failures)


def claim_header_spelt_with_underscore(wasm_path, failures):
    """A claim forwarded under a name spelt with `_` (`x_subject`): a client's own
    `X-Subject` is the same header to many upstreams, and nginx drops the `_` spelling
    altogether (`underscores_in_headers off`), so the client's value would be the one read:
    it is removed."""
    config = json.loads(CONFIG)
    oidc = config["policy"]["strategies"][0]["configs"]["openid-connect"]
    oidc["upstream_headers_claims"] = ["client_id"]
    oidc["upstream_headers_names"] = ["x_subject"]
    host = configured(wasm_path, json.dumps(config).encode())
    assert host, "the module takes the configuration"
    warm(host, 2)
    action = start_with(host, 3, "client-1", [(b"X-Subject", b"spoofed")])
    changes = host.changes.get(3, [])
    removed = {n.lower() for (what, n, _) in changes if what == "remove"}
    check(action == CONTINUE and "x-subject" in removed and ("add", "x_subject", "client-1") in changes,
          f"a client's X-Subject goes when the claim is forwarded as x_subject (action {action}, "
          f"changes {changes})", failures)


class ForeignTrapKongHost(kong_host.KongHost):
    """ngx_wasm_module 0.6.0 (Kong 3.10): `proxy_call_foreign_function` knows only
    `resolve_lua` and traps on any other name ("unknown foreign function")."""

    def proxy_call_foreign_function(self, name_ptr, name_size, *_):
        name = self._read(name_ptr, name_size)
        if name != b"resolve_lua":
            raise RuntimeError(f"host trap: unknown foreign function {name!r}")
        return OK


def configures_on_kong_3_10(wasm_path, failures):
    host = ForeignTrapKongHost(wasm_path)
    host.enter(kong_host.ROOT_CONTEXT)
    host.exports["proxy_on_context_create"](host.store, kong_host.ROOT_CONTEXT, 0)
    host.plugin_config = CONFIG
    try:
        ok = host.exports["proxy_on_configure"](host.store, kong_host.ROOT_CONTEXT, len(CONFIG))
        error = None
    except Exception as e:  # a trap
        ok, error = 0, str(e).splitlines()[0]
    check(ok == 1, f"the filter configures on a host whose unknown foreign functions trap ({error})",
          failures)


def silent_dispatch_failure(wasm_path, failures):
    """ngx_wasm_module before 0.6.0 (Kong 3.4 to 3.9; its test 131-proxy_dispatch_http_timeouts
    TEST 1 expects the location's content, `ok`): a callout that times out is not reported
    to the filter, and the request, with no callout left, goes on to the upstream. Then the
    upstream's response headers come to the filter."""
    host = configured(wasm_path, CONFIG)
    ctx = 2
    check(host.start(ctx, "client-1") == PAUSE, "request waits for its callout", failures)
    host.calls_of[ctx].pop(0)  # timed out: no on_http_call_response
    host.enter(ctx)
    action = host.exports["proxy_on_response_headers"](host.store, ctx, 3, 0)
    check(host.local.get(ctx) == 503,
          f"the upstream's response to a request forwarded undecided is replaced by a 503 "
          f"(action {action}, local {host.local.get(ctx)})", failures)


def silent_dispatch_failure_after_reconfigure(wasm_path, failures):
    """As silent_dispatch_failure, for a request that waited while the configuration was
    replaced (its engine, and the engine's record of it waiting, gone): its callout times out
    unreported, the request goes on to the upstream, and the upstream's response headers
    come to the filter."""
    host = configured(wasm_path, CONFIG)
    ctx = 2
    check(host.start(ctx, "client-1") == PAUSE, "request waits for its callout", failures)
    host.enter(kong_host.ROOT_CONTEXT)
    check(host.exports["proxy_on_configure"](host.store, kong_host.ROOT_CONTEXT, len(CONFIG)) == 1,
          "a new configuration is taken while it waits", failures)
    host.calls_of[ctx].pop(0)  # timed out: no on_http_call_response
    host.enter(ctx)
    action = host.exports["proxy_on_response_headers"](host.store, ctx, 3, 0)
    check(host.local.get(ctx) == 503 and action == PAUSE,
          f"the upstream's response to a request forwarded undecided across a reconfiguration is "
          f"replaced by a 503 (action {action}, local {host.local.get(ctx)})", failures)


class RefusingWritesKongHost(kong_host.KongHost):
    """A host that answers a change to the request's headers with an error status instead of
    Ok (once `refusing`): ngx_wasm_module's InternalFailure (10, `ngx_proxy_wasm_result_err`,
    when nginx cannot make the change), Envoy's BadArgument (2, when the request's map is not
    there). proxy-wasm 0.2.5's `set_map_value`/`add_map_value` panic on any status but Ok."""

    def __init__(self, wasm_path, status):
        super().__init__(wasm_path)
        self.status = status
        self.refusing = False

    def _refused(self, kind):
        return self.refusing and kind == REQUEST_HEADERS

    def proxy_add_header_map_value(self, kind, *args):
        return self.status if self._refused(kind) else super().proxy_add_header_map_value(kind, *args)

    def proxy_replace_header_map_value(self, kind, *args):
        return self.status if self._refused(kind) else super().proxy_replace_header_map_value(kind, *args)

    def proxy_remove_header_map_value(self, kind, *args):
        return self.status if self._refused(kind) else super().proxy_remove_header_map_value(kind, *args)


def header_writes_refused(wasm_path, failures):
    """An allowed request whose header changes the host refuses is answered 500 and never
    forwarded: not a trap (which takes the VM, and every request of the worker, with it)."""
    for status in (2, 10):
        # Decided at once (keys already in).
        host = configured(wasm_path, CONFIG, lambda path: RefusingWritesKongHost(path, status))
        warm(host, 2)
        host.refusing = True
        try:
            action, error = host.start(3, "client-1"), None
        except Exception as e:  # a trap
            action, error = None, str(e).splitlines()[0]
        check(error is None and action == PAUSE and host.local.get(3) == 500 and 3 not in host.resumed,
              f"header changes refused with status {status}: 500 at once, no trap "
              f"(action {action}, trap {error}, local {host.local.get(3)})", failures)
        # Decided after waiting for the keys (resumed from its callout's answer).
        host = configured(wasm_path, CONFIG, lambda path: RefusingWritesKongHost(path, status))
        host.refusing = True
        check(host.start(2, "client-1") == PAUSE, "request waits for its keys", failures)
        error = None
        try:
            for _ in range(5):
                if host.answer(2) is None:
                    break
        except Exception as e:  # a trap
            error = str(e).splitlines()[0]
        check(error is None and host.local.get(2) == 500 and not host.resumed.get(2),
              f"header changes refused with status {status} after waiting: 500, no trap "
              f"(trap {error}, local {host.local.get(2)}, resumed {host.resumed.get(2)})", failures)


class RefusingRepliesKongHost(kong_host.KongHost):
    """A host that refuses the first `refusals` local replies with InternalFailure (10):
    ngx_wasm_module's `ngx_proxy_wasm_result_err` when nginx cannot allocate the stashed
    reply's status line, headers or body. proxy-wasm 0.2.5's `send_http_response` panics on
    any status but Ok."""

    def __init__(self, wasm_path, refusals):
        super().__init__(wasm_path)
        self.refusals = refusals
        self.refused = 0
        self.replies = []

    def proxy_send_local_response(self, status, _reason_ptr, _reason_size, body_ptr, body_size,
                                  headers_ptr, headers_size, _grpc_status):
        self.replies.append((status, body_size, headers_size))
        if self.refused < self.refusals:
            self.refused += 1
            return 10
        self.local[self.current] = status
        return OK


def local_reply_refused(wasm_path, failures):
    """A denial the host refuses to send whole is sent bare (status only, which needs the
    least of the host); if that is refused too, the request stays held, never forwarded:
    never a trap (which takes the VM, and every request of the worker, with it). Both for a
    request decided at once and for one decided when its keys came in."""
    for refusals, want in ((1, 401), (5, None)):
        for waits in (False, True):
            host = configured(wasm_path, CONFIG, lambda path: RefusingRepliesKongHost(path, refusals))
            if not waits:
                warm(host, 2)
                host.refused, host.replies = 0, []
            error, action = None, None
            try:
                # An unknown application: a 401 once the token is verified.
                action = host.start(3, "client-9")
                for _ in range(5):
                    if host.answer(3) is None:
                        break
            except Exception as e:  # a trap
                error = str(e).splitlines()[0]
            last = host.replies[-1] if host.replies else None
            bare = last is not None and last[1] == 0 and last[2] <= 4
            check(error is None and action == PAUSE and host.local.get(3) == want
                  and 3 not in host.resumed and not identity(host, 3) and len(host.replies) == 2
                  and bare,
                  f"{refusals} local replies refused{' after waiting' if waits else ''}: "
                  f"{want or 'held'}, bare on the second try, no trap (action {action}, trap {error}, "
                  f"local {host.local.get(3)}, replies {host.replies})", failures)


class TickOnceKongHost(kong_host.KongHost):
    """ngx_wasm_module's `proxy_set_tick_period_milliseconds` traps when the root already has
    a tick period ("tick_period already set": its on_tick 'double_tick' test must die; later
    releases answer an error status, which proxy-wasm 0.2's `set_tick_period` turns into a
    panic, a trap too)."""

    def __init__(self, wasm_path):
        super().__init__(wasm_path)
        self.tick_period = None

    def proxy_set_tick_period_milliseconds(self, period):
        if self.tick_period:
            raise RuntimeError("host trap: tick_period already set")
        self.tick_period = period


def reconfigured_root_keeps_its_tick(wasm_path, failures):
    """A configuration replaced on the same root context (what tests/kong_host.py's request
    5 goes through) sets no second tick period."""
    host = configured(wasm_path, CONFIG, TickOnceKongHost)
    check(host is not None and host.tick_period, "the first configuration sets the tick", failures)
    host.enter(kong_host.ROOT_CONTEXT)
    try:
        ok = host.exports["proxy_on_configure"](host.store, kong_host.ROOT_CONTEXT, len(CONFIG))
        error = None
    except Exception as e:  # a trap
        ok, error = 0, str(e).splitlines()[0]
    check(ok == 1, f"a second configuration on the same root is taken ({error})", failures)


def main(wasm_path):
    failures = []
    reconfigured_root_keeps_its_tick(wasm_path, failures)
    silent_dispatch_failure(wasm_path, failures)
    silent_dispatch_failure_after_reconfigure(wasm_path, failures)
    configures_on_kong_3_10(wasm_path, failures)
    query_key_hidden(wasm_path, failures)
    path_not_utf8(wasm_path, failures)
    headers_unreadable_after_wait(wasm_path, failures)
    claim_header_spelt_with_underscore(wasm_path, failures)
    truncated_spoof(wasm_path, failures)
    dispatch_refused(wasm_path, failures)
    dispatch_status(wasm_path, failures)
    header_writes_refused(wasm_path, failures)
    local_reply_refused(wasm_path, failures)
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
