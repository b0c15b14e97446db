# braid: `make demo` runs the reference workflow, `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
COMPONENTS := target/components
GUEST_OUT := guest-steps/target/wasm32-wasip2/release
BRAID := target/debug/braid

# Toolchains for the Python and JavaScript steps, pinned in
# guest-steps/python/requirements.txt and guest-steps/js/package-lock.json.
TOOLS := target/tools
COMPONENTIZE_PY := $(TOOLS)/python/bin/componentize-py
COMPONENTIZE_JS := guest-steps/js/node_modules/.bin/componentize-js
# Each Python or JavaScript step is a directory guest-steps/{python,js}/NAME/
# holding its source and a `world` file naming the braid world it implements;
# it builds to $(COMPONENTS)/NAME.wasm.
PY_STEPS := $(patsubst guest-steps/python/%/world,%,$(wildcard guest-steps/python/*/world))
# A JavaScript policy is guest-steps/js/NAME/policy.js (no `world` file: it is
# always policy-component), built with QuickJS (componentize-qjs).
JS_STEPS := $(patsubst guest-steps/js/%/world,%,$(wildcard guest-steps/js/*/world))
JS_POLICIES := $(patsubst guest-steps/js/%/policy.js,%,$(wildcard guest-steps/js/*/policy.js))
COMPONENTIZE_QJS := guest-steps/js/node_modules/.bin/componentize-qjs
# A C step is guest-steps/c/NAME/ holding its .c files and a `world` file;
# it builds with clang and wasi-libc (Debian packages, installed on first
# use) plus the helpers `braid new --lang c` ships (host/templates/c/), its
# bindings from `braid bindings c`, and becomes a component with `braid
# componentize`.
C_STEPS := $(patsubst guest-steps/c/%/world,%,$(wildcard guest-steps/c/*/world))
C_HELPERS := host/templates/c
C_TARGET := --target=wasm32-wasi -mexec-model=reactor

.PHONY: setup guests rust-guests python-guests js-guests c-guests c-toolchain chromium build test test-busy demo bench lint fmt

## Install what the build needs: the wasm32-wasip2 Rust target.
setup:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

## Build every guest component (Rust, Python, JavaScript, C) into target/components/.
guests: rust-guests python-guests js-guests c-guests
	@echo "components in $(COMPONENTS)/: $$(cd $(COMPONENTS) && ls *.wasm | tr '\n' ' ')"

rust-guests: setup
	cd guest-steps && $(CARGO) build --release --target wasm32-wasip2
	@mkdir -p $(COMPONENTS)
	@for f in $(GUEST_OUT)/*.wasm; do cp -u "$$f" $(COMPONENTS)/; done

python-guests: $(foreach s,$(PY_STEPS),$(COMPONENTS)/$(s).wasm)
js-guests: $(foreach s,$(JS_STEPS) $(JS_POLICIES),$(COMPONENTS)/$(s).wasm)
c-guests: $(foreach s,$(C_STEPS),$(COMPONENTS)/$(s).wasm)

# componentize-py from PyPI, in a virtualenv of its own.
$(COMPONENTIZE_PY): guest-steps/python/requirements.txt
	python3 -m venv $(TOOLS)/python
	$(TOOLS)/python/bin/pip install --quiet --disable-pip-version-check -r $<
	@touch $@

# componentize-js from npm, exactly as the lockfile pins it.
$(COMPONENTIZE_JS): guest-steps/js/package.json guest-steps/js/package-lock.json
	cd guest-steps/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

define python_step
$(COMPONENTS)/$(1).wasm: $(wildcard guest-steps/python/$(1)/*) wit/braid.wit $(COMPONENTIZE_PY)
	@mkdir -p $(COMPONENTS)
	$(COMPONENTIZE_PY) -d wit -w braid:workflow/$$$$(cat guest-steps/python/$(1)/world)@0.1.1 \
	  componentize app -p guest-steps/python/$(1) -o $$@.tmp
	@mv $$@.tmp $$@
endef
$(foreach s,$(PY_STEPS),$(eval $(call python_step,$(s))))

define js_step
$(COMPONENTS)/$(1).wasm: $(wildcard guest-steps/js/$(1)/*) wit/braid.wit $(COMPONENTIZE_JS)
	@mkdir -p $(COMPONENTS)
	$(COMPONENTIZE_JS) guest-steps/js/$(1)/step.js -w wit \
	  -n braid:workflow/$$$$(cat guest-steps/js/$(1)/world)@0.1.1 -o $$@.tmp
	@mv $$@.tmp $$@
endef
$(foreach s,$(JS_STEPS),$(eval $(call js_step,$(s))))

# clang for wasm32-wasi, wasm-ld and wasi-libc, from Debian (as the C
# scaffold's Makefile does): a reactor that links proves them. Checked
# whenever a C step is built (a stamp file would hide a removed toolchain).
c-toolchain:
	@printf 'int x;\n' | clang $(C_TARGET) -x c - -o /dev/null 2>/dev/null || { \
	  echo "installing clang, lld and wasi-libc (Debian packages)"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  install() { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32; }; \
	  install || { $$sudo apt-get update -q && install; }; }
	@printf 'int x;\n' | clang $(C_TARGET) -x c - -o /dev/null

# The braid binary: `braid bindings c` and `braid componentize` build the C steps.
$(BRAID): FORCE
	$(CARGO) build --bin braid
FORCE:

define c_step
$(COMPONENTS)/$(1).wasm: $(wildcard guest-steps/c/$(1)/*) $(wildcard $(C_HELPERS)/*) wit/braid.wit $(BRAID) | c-toolchain
	@mkdir -p $(COMPONENTS) target/c/$(1)
	$(BRAID) bindings c --world $$$$(cat guest-steps/c/$(1)/world) --out target/c/$(1) > /dev/null
	clang $(C_TARGET) -O2 -Wall -Wextra -Werror -I target/c/$(1) -I $(C_HELPERS) \
	  $(wildcard guest-steps/c/$(1)/*.c) $(C_HELPERS)/braid_json.c $(C_HELPERS)/braid_text.c target/c/$(1)/braid.c \
	  -Wl,--strip-all -o target/c/$(1)/core.wasm
	$(BRAID) componentize target/c/$(1)/core.wasm --world $$$$(cat guest-steps/c/$(1)/world) -o $$@.tmp > /dev/null
	@mv $$@.tmp $$@
endef
$(foreach s,$(C_STEPS),$(eval $(call c_step,$(s))))

define js_policy
$(COMPONENTS)/$(1).wasm: $(wildcard guest-steps/js/$(1)/*) wit/braid.wit $(COMPONENTIZE_JS)
	@mkdir -p $(COMPONENTS)
	$(COMPONENTIZE_QJS) --sync -w wit -n braid:workflow/policy-component@0.1.1 \
	  -j guest-steps/js/$(1)/policy.js -o $$@.tmp > /dev/null
	@mv $$@.tmp $$@
endef
$(foreach s,$(JS_POLICIES),$(eval $(call js_policy,$(s))))

## Build the host (library + braid binary).
build: setup
	$(CARGO) build --bin braid

# Test-only Python tools (an OTLP receiver's dependencies), pinned in tests/requirements.txt.
TEST_TOOLS := $(TOOLS)/python/.test-tools
$(TEST_TOOLS): tests/requirements.txt $(COMPONENTIZE_PY)
	$(TOOLS)/python/bin/pip install --quiet --disable-pip-version-check -r $<
	@touch $@

# Debian's Chromium, headless, for the run viewer's tests (tests/viewer.rs).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package)"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  install() { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; \
	  install || { $$sudo apt-get update -q && install; }; }
	@command -v chromium >/dev/null

## Run every test: unit tests and the integration suite (needs the guests and
## Chromium, and starts a private PostgreSQL on 127.0.0.1:25432 for the
## PostgreSQL backend's tests).
test: guests $(TEST_TOOLS) chromium
	url=$$(scripts/test-postgres.sh) && BRAID_TEST_POSTGRES=$$url $(CARGO) test --workspace --no-fail-fast

## `make test` beside a CPU hog keeping both cores busy (stress-ng, from
## Debian's stress-ng package): the suite must hold on a loaded machine.
test-busy:
	@command -v stress-ng >/dev/null || { echo "test-busy needs stress-ng (apt-get install stress-ng)"; exit 2; }
	@set -e; stress-ng --cpu $$(nproc) --quiet & hog=$$!; \
	trap 'kill $$hog 2>/dev/null' EXIT; \
	$(MAKE) test

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
bench: guests chromium
	$(CARGO) build --release --bin braid
	scripts/bench.sh

## Formatting, lints and API docs (no broken links), as CI wants them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p braid

fmt:
	$(CARGO) fmt --all
