#!/usr/bin/env bash
# The demo: builds the filter, starts the identity provider, the echo upstream and Envoy
# with the filter, registers an application by dynamic client registration, and shows an
# allowed and a denied call. Envoy stays up until Ctrl-C (or exits at once with DEMO_EXIT=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ENVOY=${ENVOY:-$root/.venv/bin/envoy}
IDP_PORT=${IDP_PORT:-3000}
UPSTREAM_PORT=${UPSTREAM_PORT:-8081}
LISTEN_PORT=${LISTEN_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
FULL_WASM=$root/target/wasm32-wasip1/release/app_auth_filter.wasm
# The Envoy build: the same filter without the callbacks Envoy can skip (scripts/envoy_module.py).
WASM=$root/target/wasm32-wasip1/release/app_auth_filter.envoy.wasm
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Waits (at most 20 s) until a file contains a line, or a URL answers.
wait_for_line() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; return 1; }
wait_for_url() { for _ in $(seq 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

say "building the filter"
cargo build --release --target wasm32-wasip1 --quiet
python3 scripts/envoy_module.py "$FULL_WASM" "$WASM"
ls -l "$WASM" | awk '{print $5 " bytes: " $9}'

say "starting the identity provider (oidc-provider) on 127.0.0.1:$IDP_PORT"
node envoy-test/idp/server.js --port "$IDP_PORT" >"$work/idp.out" 2>"$work/idp.log" &
pids+=($!)
wait_for_line "$work/idp.out" "idp listening"
node envoy-test/upstream/echo.js --port "$UPSTREAM_PORT" >"$work/upstream.out" 2>&1 &
pids+=($!)
wait_for_line "$work/upstream.out" "upstream listening"

say "registering an application (RFC 7591 dynamic client registration)"
registration=$(curl -fsS -X POST "http://127.0.0.1:$IDP_PORT/reg" \
  -H 'Authorization: Bearer dev-initial-access-token' -H 'Content-Type: application/json' \
  -d '{"client_name":"demo-app","grant_types":["client_credentials"],"response_types":[],"redirect_uris":[],"token_endpoint_auth_method":"client_secret_basic","scope":"orders:read"}')
client_id=$(printf '%s' "$registration" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
client_secret=$(printf '%s' "$registration" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
echo "client_id: $client_id"

cat >"$work/filter.json" <<JSON
{
  "policies": {
    "orders-v1": {
      "scope": "orders-v1",
      "strategies": [{
        "id": "s-oidc", "name": "demo", "display_name": "Demo IdP", "strategy_type": "openid_connect",
        "configs": {"openid-connect": {
          "issuer": "http://127.0.0.1:$IDP_PORT",
          "credential_claim": ["client_id"], "scopes": ["orders:read"], "auth_methods": ["bearer"],
          "scopes_required": ["orders:read"], "audience_required": ["https://api.example.com"]}}
      }]
    }
  },
  "routes": {"orders": "orders-v1"},
  "applications": [{"id": "app-demo", "client_id": "$client_id", "auth_strategy_id": "s-oidc",
    "scopes": ["orders-v1"], "developer_id": "dev-1", "portal_id": "portal-1", "organization_id": "org-1"}],
  "upstreams": {"127.0.0.1:$IDP_PORT": "idp"}
}
JSON
python3 envoy-test/render.py envoy-test/envoy.yaml ADMIN_PORT="$ADMIN_PORT" LISTEN_PORT="$LISTEN_PORT" \
  UPSTREAM_PORT="$UPSTREAM_PORT" IDP_PORT="$IDP_PORT" WASM_PATH="$WASM" FILTER_CONFIG="@$work/filter.json" >"$work/envoy.yaml"

say "starting Envoy on 127.0.0.1:$LISTEN_PORT (admin 127.0.0.1:$ADMIN_PORT)"
"$ENVOY" -c "$work/envoy.yaml" --concurrency 2 --log-level warn --component-log-level wasm:info \
  --base-id "$LISTEN_PORT" >"$work/envoy.log" 2>&1 &
pids+=($!)
wait_for_url "http://127.0.0.1:$ADMIN_PORT/ready"

token=$(curl -fsS -u "$client_id:$client_secret" -d grant_type=client_credentials -d scope=orders:read \
  "http://127.0.0.1:$IDP_PORT/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

say "allowed: a registered, approved application with a valid token"
echo "\$ curl -i -H 'Authorization: Bearer <token>' http://127.0.0.1:$LISTEN_PORT/orders/42"
curl -sS -i -H "Authorization: Bearer $token" "http://127.0.0.1:$LISTEN_PORT/orders/42"
echo
say "denied: no credential"
echo "\$ curl -i http://127.0.0.1:$LISTEN_PORT/orders/42"
curl -sS -i "http://127.0.0.1:$LISTEN_PORT/orders/42"
echo
say "denied: a tampered token"
curl -sS -i -H "Authorization: Bearer ${token%?????}AAAAA" "http://127.0.0.1:$LISTEN_PORT/orders/42"
echo

if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
say "Envoy is listening on 127.0.0.1:$LISTEN_PORT; IdP on 127.0.0.1:$IDP_PORT. Ctrl-C stops everything."
echo "Get a token:  curl -u '$client_id:$client_secret' -d grant_type=client_credentials -d scope=orders:read http://127.0.0.1:$IDP_PORT/token"
wait
