# The two commands of the README: `make run` (the demo) and `make test` (every test).
WASM := target/wasm32-wasip1/release/app_auth_filter.wasm
ENVOY_WASM := target/wasm32-wasip1/release/app_auth_filter.envoy.wasm

.PHONY: setup build run test unit e2e lint fuzz-replay fuzz bench bench-smoke clean

setup:
	@bash scripts/setup.sh

# $(WASM) is the filter for every host (Kong loads it); $(ENVOY_WASM) is the same module
# without the callbacks Envoy can skip (scripts/envoy_module.py): the one to give Envoy.
build: setup
	cargo build --release --target wasm32-wasip1
	python3 scripts/envoy_module.py $(WASM) $(ENVOY_WASM)

run: build
	bash envoy-test/run.sh

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 -- -D warnings

unit: setup
	cargo test --lib

e2e: build
	cargo test --test '*'

# Every fuzz target replays its committed seeds (and any local corpus) once: the crashes
# fuzzing ever found stay fixed. `make fuzz` fuzzes for real (FUZZ_SECONDS per target).
fuzz-replay: setup
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	bash fuzz/run.sh 0

fuzz: setup
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	bash fuzz/run.sh $${FUZZ_SECONDS:-60}

# The benchmark (bench/README.md): `make bench` is the full comparison with Envoy's
# jwt_authn; the smoke mode (every case ~1 s, fails unless every case answers 2xx; then one
# case's instruction count under callgrind) is part of `make test` so the benchmark cannot rot.
bench: build
	bash bench/run.sh $${BENCH_ARGS:-}

bench-smoke: build
	bash bench/run.sh --smoke
	bash bench/run.sh --smoke --callgrind 100 --cases filter-rs256-repeat

test: build lint
	cargo test --all-targets
	$(MAKE) fuzz-replay
	$(MAKE) bench-smoke

clean:
	cargo clean
