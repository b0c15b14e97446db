# braid: `make demo` runs the reference workflow, `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
COMPONENTS := target/components
GUEST_OUT := guest-steps/target/wasm32-wasip2/release
BRAID := target/debug/braid

.PHONY: setup guests build test demo bench lint fmt

## Install what the build needs: the wasm32-wasip2 Rust target.
setup:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

## Build every guest component and copy it to target/components/.
guests: setup
	cd guest-steps && $(CARGO) build --release --target wasm32-wasip2
	@mkdir -p $(COMPONENTS)
	@for f in $(GUEST_OUT)/*.wasm; do cp -u "$$f" $(COMPONENTS)/; done
	@echo "components in $(COMPONENTS)/: $$(cd $(COMPONENTS) && ls *.wasm | tr '\n' ' ')"

## Build the host (library + braid binary).
build: setup
	$(CARGO) build --bin braid

## Run every test: unit tests and the integration suite (needs the guests).
test: guests
	$(CARGO) test --workspace --no-fail-fast

## Start the sample API, run the reference workflow once, print the step tree.
demo: guests build
	@set -euo pipefail; \
	mkdir -p .braid; rm -f .braid/api.addr; \
	$(BRAID) sample-api --listen 127.0.0.1:0 --addr-file .braid/api.addr > /dev/null & api=$$!; \
	trap 'kill $$api 2>/dev/null' EXIT; \
	for i in $$(seq 100); do [ -s .braid/api.addr ] && break; sleep 0.05; done; \
	addr=$$(cat .braid/api.addr); \
	echo "sample API on http://$$addr"; \
	$(BRAID) run workflows/api-orchestration.toml \
	  --input "{\"api_base\": \"http://$$addr\", \"user_id\": \"u-100\", \"resource\": \"reports/q3\", \"action\": \"read\", \"work_item\": \"demo-$$(date +%s%N)\"}"; \
	echo; echo "requests the sample API received (traceparent per call):"; \
	python3 scripts/show-requests.py http://$$addr/_requests

## The standard benchmark suite on a release build; tables in target/bench/tables.md.
bench: guests
	$(CARGO) build --release --bin braid
	scripts/bench.sh

## Formatting and lints, as CI wants them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
