"""The filter's Wasm module under a host that resumes requests as Kong's Wasm engine
(ngx_wasm_module) does, driven through concurrent requests that wait on the identity provider.

What ngx_wasm_module does and Envoy does not (its proxy_wasm host functions):
- `proxy_set_effective_context` answers Ok and switches nothing;
- `proxy_continue_stream` (resume), `proxy_send_local_response` and the header-map calls act
  on the request whose callback is running;
- a callout's answer comes back in the callback of the request that sent it, and a paused
  request is resumed only from there.
So a request that waits without a callout of its own is never resumed, and an outcome decided
for one request but applied in another's callback lands on the other request. This host
records, per request, the header changes, local responses and resumes made in its callbacks,
answers callouts from a scripted identity provider (HS256 keys, so that Python's standard
library can sign the tokens), and checks that every request ends with its own decision. It
also answers Kong's route properties per request, for a configuration that picks the policy by
route name.

usage: python tests/kong_host.py MODULE.wasm  (exit 0 when every check holds; tests/kong_host.rs)
Needs the `wasmtime` package (installed into .venv by scripts/setup.sh).
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import wasm_work  # noqa: E402  (the minimal proxy-wasm host of the bench)
from wasm_work import OK, NOT_FOUND, ROOT_CONTEXT, REQUEST_HEADERS, serialize, deserialize  # noqa: E402

ISSUER = "http://idp.test"
SECRET = b"kong-host-test-secret-of-32-bytes!!"
CONTINUE, PAUSE = 0, 1


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "hs-1"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def token_for(client_id):
    now = int(time.time())
    return hs256({"iss": ISSUER, "client_id": client_id, "sub": client_id,
                  "iat": now - 5, "exp": now + 600})


CONFIG = json.dumps({
    "policy": {"scope": "orders-v1", "strategies": [
        {"id": "s-oidc", "strategy_type": "openid_connect", "configs": {"openid-connect": {
            "issuer": ISSUER, "credential_claim": ["client_id"], "scopes": [], "auth_methods": ["bearer", "client_credentials"],
            "enable_hs_signatures": True, "timeout": 2000}}}]},
    "applications": [
        {"id": f"app-{n}", "client_id": f"client-{n}", "auth_strategy_id": "s-oidc",
         "scopes": ["orders-v1"]} for n in (1, 2, 3)],
}).encode()

# One filter on several Kong routes, the policy chosen by route name (else the service's).
STRATEGY = json.loads(CONFIG)["policy"]["strategies"]
ROUTES_CONFIG = json.dumps({
    "policies": {"open": {"scope": "orders-v1", "strategies": STRATEGY},
                 "strict": {"scope": "orders-v2", "strategies": STRATEGY}},
    "routes": {"orders-strict": "strict", "orders-svc": "open"},
    "default_policy": None,
    "applications": json.loads(CONFIG)["applications"],
}).encode()

DISCOVERY = "/.well-known/openid-configuration"
ANSWERS = {
    DISCOVERY: {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks",
                                          "token_endpoint": f"{ISSUER}/token"},
    "/jwks": {"keys": [{"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64url(SECRET)}]},
}


class KongHost(wasm_work.Host):
    """ngx_wasm_module's request semantics, one request callback at a time."""

    def __init__(self, wasm_path):
        super().__init__(wasm_path, 0)
        self.current = ROOT_CONTEXT
        self.headers_of = {}
        self.changes = {}
        self.local = {}
        self.resumed = {}
        self.calls_of = {}
        self.properties_of = {}
        self.switches = 0

    def enter(self, context_id):
        self.current = context_id

    # ---- what differs from Envoy ----

    def proxy_get_log_level(self, _ptr):
        # ngx_wasm_module maps it to ngx_proxy_wasm_hfuncs_nop, which returns NGX_WAVM_NYI:
        # a trap ("host trap (function not yet implemented)", its t/03-proxy_wasm/hfuncs/000-nyi.t).
        raise RuntimeError("host trap (function not yet implemented): proxy_get_log_level")

    def proxy_call_foreign_function(self, name_ptr, name_size, *_):
        # ngx_wasm_module 0.6.0 (Kong 3.10) knows `resolve_lua` only, and traps on any other
        # name; before 0.6.0 the function was NYI, a trap too.
        raise RuntimeError(f"host trap: unknown foreign function {self._read(name_ptr, name_size)!r}")

    def proxy_get_shared_data(self, *_):
        # ngx_wasm_module without a `shm_kv` zone for the key's namespace (nor `*`), as Kong
        # configures none by default: "failed getting value from shm (could not resolve
        # namespace)", a trap.
        raise RuntimeError("host trap: failed getting value from shm (could not resolve namespace)")

    def proxy_set_shared_data(self, *_):
        raise RuntimeError("host trap: failed setting value to shm (could not resolve namespace)")

    def proxy_set_effective_context(self, _context_id):
        self.switches += 1
        return OK

    def proxy_continue_stream(self, _stream_type):
        self.resumed[self.current] = self.resumed.get(self.current, 0) + 1

    def proxy_send_local_response(self, status, *_):
        self.local[self.current] = status

    def proxy_http_call(self, _up_ptr, _up_size, headers_ptr, headers_size, _body_ptr, _body_size,
                        _trailers_ptr, _trailers_size, _timeout_ms, token_ptr):
        headers = dict(deserialize(self._read(headers_ptr, headers_size)))
        token = self.next_token
        self.next_token += 1
        self.calls_of.setdefault(self.current, []).append((token, headers[b":path"].decode(), headers))
        self._write(token_ptr, struct.pack("<I", token))

    def proxy_get_header_map_pairs(self, kind, ptr_ptr, size_ptr):
        pairs = self.headers_of.get(self.current, []) if kind == REQUEST_HEADERS else self.call_headers
        return self._give(serialize(pairs), ptr_ptr, size_ptr)

    def _change(self, what, kind, name_ptr, name_size, value_ptr=0, value_size=0):
        if kind == REQUEST_HEADERS:
            name = self._read(name_ptr, name_size).decode()
            value = self._read(value_ptr, value_size).decode() if value_size else None
            self.changes.setdefault(self.current, []).append((what, name, value))

    def proxy_add_header_map_value(self, kind, n, ns, v, vs):
        self._change("add", kind, n, ns, v, vs)

    def proxy_replace_header_map_value(self, kind, n, ns, v, vs):
        self._change("replace", kind, n, ns, v, vs)

    def proxy_remove_header_map_value(self, kind, n, ns):
        self._change("remove", kind, n, ns)

    def proxy_get_property(self, path_ptr, path_size, ptr_ptr, size_ptr):
        # Kong's route properties of the request whose callback is running (`kong.route_name`
        # is absent on a route without a name); xds.* is Envoy's, unknown here.
        path = self._read(path_ptr, path_size).replace(b"\0", b".").decode()
        value = self.properties_of.get(self.current, {}).get(path)
        return NOT_FOUND if value is None else self._give(value.encode(), ptr_ptr, size_ptr)

    def proxy_log(self, level, ptr, size):
        if level >= 2 or os.environ.get("KONG_HOST_LOG"):
            print(f"  [module log {level}] {self._read(ptr, size).decode(errors='replace')}")

    # ---- driving ----

    def start(self, context_id, client_id, basic=False):
        credential = (f"Basic {base64.b64encode(f'{client_id}:secret'.encode()).decode()}" if basic
                      else f"Bearer {token_for(client_id)}")
        self.headers_of[context_id] = [(n.encode(), v.encode()) for n, v in wasm_work.BASE_HEADERS] + [
            (b"authorization", credential.encode())]
        self.enter(ROOT_CONTEXT)
        self.exports["proxy_on_context_create"](self.store, context_id, ROOT_CONTEXT)
        self.enter(context_id)
        return self.exports["proxy_on_request_headers"](self.store, context_id, 8, 1)

    def answer(self, context_id):
        """Answers the oldest callout request `context_id` sent, in its callback (None: it
        sent none, and nothing can ever resume it)."""
        if not self.calls_of.get(context_id):
            return None
        token, path, headers = self.calls_of[context_id].pop(0)
        if path == "/token":
            # The client's own credentials, passed on: a token for that client.
            basic = headers[b"authorization"].decode().removeprefix("Basic ")
            client = base64.b64decode(basic).decode().split(":")[0]
            answer = {"access_token": token_for(client), "token_type": "Bearer", "expires_in": 600}
        else:
            answer = ANSWERS[path]
        body = json.dumps(answer).encode()
        self.call_headers = [(b":status", b"200")]
        self.call_body = body
        self.enter(context_id)
        self.exports["proxy_on_http_call_response"](self.store, context_id, token, 1, len(body), 0)
        return path


def configured(wasm_path, config, make=None):
    """A new host (`make(wasm_path)`, a KongHost by default) whose module took `config` (None
    if it refused it)."""
    host = (make or KongHost)(wasm_path)
    host.enter(ROOT_CONTEXT)
    host.exports["proxy_on_context_create"](host.store, ROOT_CONTEXT, 0)
    host.plugin_config = config
    return host if host.exports["proxy_on_configure"](host.store, ROOT_CONTEXT, len(config)) else None


def pending(host):
    """Requests with callouts unanswered, and the paths of those."""
    return [(ctx, [p for _, p, _ in calls]) for ctx, calls in host.calls_of.items() if calls]


def forwarded_authorization(host, context_id):
    """The `Authorization` values the changes made in a request's callbacks set."""
    return [v for (_, n, v) in host.changes.get(context_id, []) if n == "authorization" and v]


def identity(host, context_id):
    """Every application id the changes made in a request's callbacks named."""
    return [v for (_, n, v) in host.changes.get(context_id, []) if n == "x-application-id" and v]


def check(condition, message, failures):
    print(("ok   " if condition else "FAIL ") + message)
    if not condition:
        failures.append(message)


def main(wasm_path):
    failures = []
    host = configured(wasm_path, CONFIG)
    if host is None:
        print("FAIL the module refused its configuration")
        return 1
    # Three requests of three applications arrive before the issuer's keys are in.
    for ctx, client in ((2, "client-1"), (3, "client-2"), (4, "client-3")):
        action = host.start(ctx, client)
        check(action == PAUSE, f"request {ctx} waits for the keys (action {action})", failures)
        check(len(host.calls_of.get(ctx, [])) == 1,
              f"request {ctx} sent a callout of its own ({host.calls_of.get(ctx)})", failures)
    # Request 3's discovery answers first, then its key set: request 3 alone is decided.
    check(host.answer(3) is not None, "request 3's discovery answered", failures)
    check(dict(pending(host)).get(3) == ["/jwks"], "request 3 fetches the key set next", failures)
    check(host.answer(3) is not None, "request 3's key set answered", failures)
    check(identity(host, 3) == ["app-2"] and host.resumed.get(3) == 1,
          f"request 3 resumed once as app-2 ({host.changes.get(3)}, resumed {host.resumed.get(3)})", failures)
    for ctx in (2, 4):
        check(ctx not in host.changes and ctx not in host.resumed,
              f"request {ctx} untouched by another's answer", failures)
    # Requests 2 and 4: their own discovery answers come back (second), and each is decided
    # with the keys now in, as its own application.
    for ctx, app in ((4, "app-3"), (2, "app-1")):
        check(host.answer(ctx) is not None, f"request {ctx}'s own callout answered", failures)
        check(identity(host, ctx) == [app] and host.resumed.get(ctx) == 1 and ctx not in host.local,
              f"request {ctx} resumed once as {app} ({host.changes.get(ctx)}, resumed {host.resumed.get(ctx)}, local {host.local.get(ctx)})",
              failures)
    check(not any(host.calls_of.values()), f"no callout left unanswered ({dict(pending(host))})", failures)
    # Whatever is still pending is answered (a module that made requests share a callout
    # leaves one here), then each request must have been given its own application only.
    for _ in range(10):
        left = [ctx for ctx, _ in pending(host)]
        if not left:
            break
        host.answer(left[0])
    for ctx, app in ((2, "app-1"), (3, "app-2"), (4, "app-3")):
        check(identity(host, ctx) == [app], f"request {ctx} was given {app} only ({identity(host, ctx)})", failures)

    # The configuration replaced while a request waits (its engine goes, and with it what
    # the request waited for): the request cannot be resumed from the root, and is refused
    # when its own callout answers, never left hanging.
    fresh = configured(wasm_path, CONFIG)
    check(fresh.start(5, "client-1") == PAUSE, "request 5 waits for the keys", failures)
    fresh.enter(ROOT_CONTEXT)
    check(fresh.exports["proxy_on_configure"](fresh.store, ROOT_CONTEXT, len(CONFIG)) == 1,
          "a new configuration is taken", failures)
    check(not fresh.local and not fresh.resumed and not fresh.changes,
          f"nothing answered from the root's callback (local {fresh.local}, resumed {fresh.resumed})", failures)
    fresh.answer(5)
    check(fresh.local.get(5) == 503 and 5 not in fresh.resumed and 5 not in fresh.changes,
          f"request 5 refused (503) when its callout answers (local {fresh.local.get(5)}, resumed {fresh.resumed.get(5)})",
          failures)

    # Two requests with the same client credentials, before anything is known: each sends
    # its own callouts, and each is forwarded with a token and its application from its own
    # callback only.
    cc = configured(wasm_path, CONFIG)
    for ctx in (6, 7):
        check(cc.start(ctx, "client-2", basic=True) == PAUSE, f"request {ctx} waits for its exchange", failures)
    # The token endpoint comes from discovery: each request looks it up itself first.
    check(dict(pending(cc)) == {6: [DISCOVERY], 7: [DISCOVERY]}, f"one callout each ({pending(cc)})", failures)
    for _ in range(5):
        if cc.answer(7) is None:
            break
    check(identity(cc, 7) == ["app-2"] and cc.resumed.get(7) == 1, f"request 7 resumed as app-2 ({cc.changes.get(7)})", failures)
    check(len(forwarded_authorization(cc, 7)) == 1 and forwarded_authorization(cc, 7)[0].startswith("Bearer ey"),
          f"request 7 forwarded with the token ({forwarded_authorization(cc, 7)})", failures)
    check(6 not in cc.changes and 6 not in cc.resumed, "request 6 untouched meanwhile", failures)
    answered_6 = []
    for _ in range(5):
        path = cc.answer(6)
        if path is None:
            break
        answered_6.append(path)
    # Its own discovery answer resumes it: by then request 7's exchange is cached, and used.
    check(answered_6 == [DISCOVERY], f"request 6 resumed by its own callout's answer ({answered_6})", failures)
    check(identity(cc, 6) == ["app-2"] and cc.resumed.get(6) == 1, f"request 6 resumed as app-2 ({cc.changes.get(6)})", failures)
    check(len(forwarded_authorization(cc, 6)) == 1, f"request 6 forwarded with one token ({forwarded_authorization(cc, 6)})", failures)
    check(not pending(cc), f"no callout left ({pending(cc)})", failures)
    # The policy follows each request's own route: a first request on a route without a name
    # (its service's name decides) does not make later requests on named routes go by their
    # service's name too.
    kr = configured(wasm_path, ROUTES_CONFIG)
    if kr is None:
        print("FAIL the module refused the routes configuration")
        return 1
    kr.properties_of[8] = {"kong.service_name": "orders-svc"}
    check(kr.start(8, "client-1") == PAUSE, "request 8 (a route without a name) waits for the keys", failures)
    for _ in range(5):
        if kr.answer(8) is None:
            break
    check(identity(kr, 8) == ["app-1"] and kr.resumed.get(8) == 1,
          f"request 8 allowed by its service's policy ({kr.changes.get(8)}, local {kr.local.get(8)})", failures)
    kr.properties_of[9] = {"kong.route_name": "orders-strict", "kong.service_name": "orders-svc"}
    action = kr.start(9, "client-1")
    check(action == PAUSE and kr.local.get(9) == 403 and 9 not in kr.changes,
          f"request 9 (route orders-strict) refused by its route's policy, where app-1 is not approved "
          f"(action {action}, local {kr.local.get(9)}, changes {kr.changes.get(9)})", failures)
    kr.properties_of[10] = {"kong.service_name": "orders-svc"}
    check(kr.start(10, "client-1") == CONTINUE and identity(kr, 10) == ["app-1"],
          f"request 10 (no route name again) allowed ({kr.changes.get(10)}, local {kr.local.get(10)})", failures)
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
