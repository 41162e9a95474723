#!/usr/bin/env bash
# The benchmark: app-auth-filter against Envoy's native jwt_authn, in one run.
#
#   bench/run.sh [--smoke] [--rounds N] [--seconds S] [--cases a,b,c] [more: bench/bench.py --help]
#   BENCH_WASM=path/to/app_auth_filter.wasm bench/run.sh ...   (use a prebuilt filter; no cargo build)
#
# Installs what is missing (wrk, taskset; Envoy through scripts/setup.sh), builds the filter and
# the no-op baseline filter (bench/noop-filter), then bench/bench.py starts the bench IdP
# (bench/idp.js), one Envoy per case, runs the interleaved rounds, prints the table and writes
# bench/results/latest.{md,json}. Everything it started is stopped on exit. --smoke: every case
# ~1 s, one round, non-zero exit unless every case answered only 2xx.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bench_pid=
cleanup() {
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    # bench.py stops its own children (the IdP, the Envoys, wrk) on SIGTERM; give it 20 s.
    for _ in $(seq 200); do kill -0 "$bench_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bench_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_updated=0
need_pkg() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "bench: installing $2 (for $1)"
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 still missing after installing $2" >&2; exit 1; }
}
need_pkg wrk wrk
need_pkg taskset util-linux
need_pkg node nodejs
need_pkg python3 python3
case " $* " in *" --perf "*) need_pkg perf linux-perf ;; esac
case " $* " in *" --callgrind "* | *" --callgrind="*) need_pkg valgrind valgrind ;; esac

if [ ! -x .venv/bin/envoy ] || ! command -v rustup >/dev/null 2>&1 \
   || ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 \
   || ! .venv/bin/python -c "import wasmtime" 2>/dev/null; then
  bash scripts/setup.sh
fi

if [ -n "${BENCH_WASM:-}" ]; then
  # A prebuilt filter (for example one built from another checkout); the main crate is not built.
  [ -f "$BENCH_WASM" ] || { echo "bench: BENCH_WASM=$BENCH_WASM does not exist" >&2; exit 1; }
  echo "bench: using BENCH_WASM=$BENCH_WASM; building the no-op filter"
else
  echo "bench: building app-auth-filter and the no-op filter (release, wasm32-wasip1)"
  cargo build --release --target wasm32-wasip1 --quiet
fi
# The baseline is built with the main crate's opt-level, whatever it is today.
opt_level=$(awk '/^\[profile\.release\]/{p=1;next} /^\[/{p=0} p && $1=="opt-level"{gsub(/"/,"",$3); print $3}' Cargo.toml)
(cd bench/noop-filter && CARGO_PROFILE_RELEASE_OPT_LEVEL=${opt_level:-z} cargo build --release --target wasm32-wasip1 --quiet)

# The project's Python (.venv, from scripts/setup.sh): it has wasmtime for the Wasm work.
.venv/bin/python bench/bench.py "$@" &
bench_pid=$!
set +e
wait "$bench_pid"
status=$?
set -e
bench_pid=
exit "$status"
