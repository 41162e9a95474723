# The two commands of the README: `make run` (the demo) and `make test` (every test).
WASM := target/wasm32-wasip1/release/app_auth_filter.wasm

.PHONY: setup build run test unit e2e lint clean

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --target wasm32-wasip1

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

test: build lint
	cargo test --all-targets

clean:
	cargo clean
