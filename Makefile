# bulkio developer entry points. Everything runs from the project venv (.venv), which
# `make setup` (.ci/setup.sh) creates and keeps up to date; tests start their own throwaway
# PostgreSQL/Redis/S3 servers, `make run` uses the private long-running ones of .ci/services.sh.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BULKIO_HOST ?= 127.0.0.1
BULKIO_PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
CARGO_MANIFEST := native/Cargo.toml

# cargo may live in rustup's default location without being on PATH (fresh CI shells).
export PATH := $(PATH):$(HOME)/.cargo/bin
# cargo test/clippy build the PyO3 crate against the venv's interpreter, and the test binaries
# find libpython when that interpreter is a shared build (e.g. pyenv). Expanded when the recipe
# runs, i.e. after `setup` created the venv.
PY_LIBDIR = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")' 2>/dev/null)
CARGO_ENV = PYO3_PYTHON="$(CURDIR)/$(PY)" LD_LIBRARY_PATH="$(PY_LIBDIR)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}"

.PHONY: help setup run stop status test test-rust test-python lint bench clean

help:
	@echo "make setup    system packages + .venv with bulkio installed editable (.ci/setup.sh)"
	@echo "make run      start PostgreSQL/Redis (.ci/services.sh), migrate, API + one worker per core"
	@echo "make stop     stop the PostgreSQL/Redis started by make run"
	@echo "make status   are they running?"
	@echo "make test     cargo test (native/) + pytest (tests/); fails if either fails"
	@echo "make lint     ruff check, ruff format --check, mypy, stubtest, cargo fmt --check, cargo clippy"
	@echo "make bench    pytest-benchmark suite in bench/"

setup:
	@.ci/setup.sh

# The API (granian) and `nproc` workers run in the foreground; Ctrl-C or TERM stops them (the
# services keep running: `make stop`). Background jobs of a non-interactive shell ignore SIGINT,
# so the trap forwards the stop as TERM; `wait -n` also ends everything if one process dies.
run: setup
	@.ci/services.sh start
	@eval "$$(.ci/services.sh env)"; \
	export BULKIO_PUBLIC_URL="$${BULKIO_PUBLIC_URL:-http://$(BULKIO_HOST):$(BULKIO_PORT)}"; \
	$(VENV)/bin/bulkio migrate; \
	if [[ ! -s .data/dev-token ]]; then \
		$(VENV)/bin/bulkio token create --owner dev --scopes admin --name make-run \
			| awk '/^token:/ {print $$2}' > .data/dev-token; fi; \
	pids=(); stopping=0; \
	stop_all() { stopping=1; kill -TERM "$${pids[@]}" 2>/dev/null || true; }; \
	trap stop_all INT TERM; \
	$(VENV)/bin/granian --interface asgi --host $(BULKIO_HOST) --port $(BULKIO_PORT) \
		--factory api.app:create_app & pids+=($$!); \
	workers=$$(nproc); \
	for ((i = 0; i < workers; i++)); do $(VENV)/bin/bulkio worker & pids+=($$!); done; \
	echo "bulkio API: http://$(BULKIO_HOST):$(BULKIO_PORT)  ($$workers workers; Ctrl-C stops API and workers, 'make stop' the services)"; \
	echo "dev admin token (in .data/dev-token): $$(cat .data/dev-token)"; \
	rc=0; wait -n || rc=$$?; \
	stop_all; wait || true; \
	if ((stopping && rc >= 128)) || ((rc == 0)); then echo "bulkio stopped"; exit 0; fi; \
	echo "bulkio: a process exited with status $$rc; stopped the others" >&2; exit $$rc

stop:
	@.ci/services.sh stop

status:
	@.ci/services.sh status

# Both suites always run; the target fails if either failed.
test: setup
	@rust=0; python=0; log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	echo "== cargo test --manifest-path $(CARGO_MANIFEST)"; \
	$(CARGO_ENV) cargo test --manifest-path $(CARGO_MANIFEST) 2>&1 | tee "$$log" || rust=$$?; \
	cargo_summary=$$(grep -E '^test result:' "$$log" || true); \
	echo "== $(PY) -m pytest"; \
	$(PY) -m pytest 2>&1 | tee "$$log" || python=$$?; \
	pytest_summary=$$(grep -E '^=+ .*[0-9.]+s( \([0-9:]+\))? =+$$' "$$log" | tail -n 1 || true); \
	echo "== summary"; \
	if [[ -n "$$cargo_summary" ]]; then sed 's/^/cargo: /' <<<"$$cargo_summary"; fi; \
	if [[ -n "$$pytest_summary" ]]; then echo "pytest: $$pytest_summary"; fi; \
	echo "cargo test: $$( ((rust == 0)) && echo ok || echo "FAILED (exit $$rust)")"; \
	echo "pytest: $$( ((python == 0)) && echo ok || echo "FAILED (exit $$python)")"; \
	((rust == 0 && python == 0))

lint: setup
	@failed=(); \
	echo "== ruff check"; $(VENV)/bin/ruff check . || failed+=("ruff check"); \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check . || failed+=("ruff format"); \
	echo "== mypy engine api"; $(VENV)/bin/mypy engine api || failed+=(mypy); \
	echo "== mypy.stubtest engine._native (engine/_native.pyi against the compiled module)"; \
	$(PY) -m mypy.stubtest engine._native --mypy-config-file pyproject.toml || failed+=(stubtest); \
	echo "== cargo fmt --check"; cargo fmt --manifest-path $(CARGO_MANIFEST) --all --check || failed+=("cargo fmt"); \
	echo "== cargo clippy"; \
	$(CARGO_ENV) cargo clippy --manifest-path $(CARGO_MANIFEST) --all-targets -- -D warnings || failed+=("cargo clippy"); \
	if (($${#failed[@]})); then echo "lint FAILED: $${failed[*]}" >&2; exit 1; fi; \
	echo "lint ok"

bench: setup
	$(PY) -m pytest bench/ --benchmark-only -p no:cacheprovider

clean:
	rm -rf target .pytest_cache .mypy_cache .ruff_cache
