"""The Envoy build's callouts under a host that treats them as Envoy 1.40 does, on
tests/kong_host.py's host with Envoy's semantics where they differ:
- `proxy_set_effective_context` switches to any live context and refuses an id that names none;
- a callout belongs to the *effective* context that sent it, and is answered on it
  (`proxy_on_http_call_response(that context, token, ...)`);
- when a request's context is destroyed, its callouts still under way are cancelled
  (`Context::~Context`: `http_request_[...].request->cancel()`), and never answered;
- tokens are handed out per VM, each 4 above the last (`nextHttpCallId`), and come round again
  after 2^30 callouts (no rollover protection).

usage: python tests/envoy_host.py MODULE.wasm  (exit 0 when every check holds)
"""
import base64
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kong_host  # noqa: E402
import wasm_work  # noqa: E402
from kong_host import CONFIG, PAUSE, check, identity  # noqa: E402
from wasm_work import BAD_ARGUMENT, OK, ROOT_CONTEXT, deserialize  # noqa: E402


class EnvoyHost(kong_host.KongHost):
    def __init__(self, wasm_path):
        super().__init__(wasm_path)
        self.shared = {}
        self.owner_of = {}  # token -> the context the callout belongs to (Envoy's view)
        self.token_step = 4
        self.next_token = 4

    # Where Kong's host differs from Envoy's here, the bench host's answers are Envoy's: the
    # log level, no foreign functions, shared data with compare-and-swap.
    proxy_get_log_level = wasm_work.Host.proxy_get_log_level
    proxy_call_foreign_function = wasm_work.Host.proxy_call_foreign_function
    proxy_get_shared_data = wasm_work.Host.proxy_get_shared_data
    proxy_set_shared_data = wasm_work.Host.proxy_set_shared_data

    def proxy_set_effective_context(self, context_id):
        if context_id not in self.live:
            return BAD_ARGUMENT
        self.current = context_id
        return OK

    def proxy_http_call(self, _up_ptr, _up_size, headers_ptr, headers_size, _body_ptr, _body_size,
                        _trailers_ptr, _trailers_size, _timeout_ms, token_ptr):
        headers = dict(deserialize(self._read(headers_ptr, headers_size)))
        token = self.next_token
        self.next_token = (self.next_token + self.token_step) & 0xFFFFFFFF
        self.owner_of[token] = self.current
        self.calls_of.setdefault(self.current, []).append((token, headers[b":path"].decode(), headers))
        self._write(token_ptr, struct.pack("<I", token))

    def create(self, context_id):
        self.live.add(context_id)
        self.enter(ROOT_CONTEXT)
        self.exports["proxy_on_context_create"](self.store, context_id, ROOT_CONTEXT)

    def start(self, context_id, client_id, basic=False, secret="secret"):
        credential = (f"Basic {base64.b64encode(f'{client_id}:{secret}'.encode()).decode()}" if basic
                      else f"Bearer {kong_host.token_for(client_id)}")
        self.headers_of[context_id] = [(n.encode(), v.encode()) for n, v in kong_host.wasm_work.BASE_HEADERS] + [
            (b"authorization", credential.encode())]
        self.create(context_id)
        self.enter(context_id)
        return self.exports["proxy_on_request_headers"](self.store, context_id, 8, 1)

    def end(self, context_id):
        """The request's stream ends (the client hung up): Envoy cancels its callouts."""
        self.enter(context_id)
        self.exports["proxy_on_delete"](self.store, context_id)
        self.live.discard(context_id)
        for token, _, _ in self.calls_of.pop(context_id, []):
            self.owner_of.pop(token, None)

    def answer_any(self):
        """Answers the oldest callout under way, on the context it belongs to."""
        for ctx, calls in self.calls_of.items():
            if calls:
                return self.answer(ctx)
        return None

    def pages(self):
        return self.memory.size(self.store)


def configured(wasm_path):
    host = EnvoyHost(wasm_path)
    host.enter(ROOT_CONTEXT)
    host.exports["proxy_on_context_create"](host.store, ROOT_CONTEXT, 0)
    host.plugin_config = CONFIG
    assert host.exports["proxy_on_configure"](host.store, ROOT_CONTEXT, len(CONFIG)), "configured"
    return host


def hung_up_callouts_leave_nothing_behind(wasm_path, failures):
    """Clients that hang up while their request waits on a callout (a token exchange here, one
    per distinct client secret: anyone who knows a client id can cause one) leave nothing in
    the VM: its memory stays flat, and a token Envoy hands out again after 2^30 callouts is a
    callout like any other."""
    host = configured(wasm_path)
    host.start(2, "client-1")
    for _ in range(5):
        if host.answer_any() is None:
            break
    check(identity(host, 2) == ["app-1"], f"warm-up request allowed ({host.changes.get(2)})", failures)

    def hang_ups(first, count):
        for ctx in range(first, first + count):
            sent = host.next_token
            action = host.start(ctx, "client-1", basic=True, secret=f"guess-{ctx}")
            if action != PAUSE or host.next_token == sent:
                return f"request {ctx} did not wait on a callout (action {action})"
            host.end(ctx)
            # Whatever Envoy did not cancel with the request is answered.
            while host.answer_any() is not None:
                pass
        return None

    error = hang_ups(10, 2_000)
    check(error is None, error or "requests wait on their exchange, then hang up", failures)
    before = host.pages()
    error = hang_ups(10_000, 30_000)
    after = host.pages()
    check(error is None and after - before <= 1,
          f"30,000 hung-up requests leave the VM's memory flat ({before} -> {after} pages of 64 KiB)", failures)

    # Envoy's tokens come round after 2^30 callouts: the token of a callout cancelled long ago
    # is handed out again, for a new request's exchange.
    host.next_token = 4 * 10  # a token one of the hung-up requests' callouts had
    host.token_step = 4
    try:
        action = host.start(100_000, "client-1", basic=True, secret="again")
        ok = action == PAUSE
        detail = f"action {action}"
    except Exception as e:  # a trap
        ok, detail = False, f"trap: {str(e).splitlines()[0]}"
    check(ok, f"a token Envoy hands out again is taken ({detail})", failures)


def main(wasm_path):
    failures = []
    hung_up_callouts_leave_nothing_behind(wasm_path, failures)
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
