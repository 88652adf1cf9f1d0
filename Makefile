# The two commands a newcomer needs are `make run` and `make test`; both set up everything.
SHELL := /bin/bash
# Python in UTF-8 mode whatever the machine's locale: the tests decode their children's output
# (and read the docs' Markdown) as text, and an ASCII locale (LC_ALL=C with UTF-8 mode off, or a
# library resetting LC_CTYPE) made them fail on the first non-ASCII byte.
export PYTHONUTF8 := 1
# pip installs without byte-compiling (--no-compile: the set-up took 103 s with it, 59 s without,
# on an AVX2 Zen 3) and Python writes the bytecode of what is imported, once, on first import.
# Some shells and sandboxes export PYTHONDONTWRITEBYTECODE=1 (this machine's does): then every
# process would compile its modules from source (importing the app took 3.3 s, not 1.5 s).
unexport PYTHONDONTWRITEBYTECODE
PIP_INSTALL = $(BIN)/python -m pip install --quiet --no-compile
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The licensed test photos: CUTOUT_TESTDATA from the environment, else ../shared/testdata.
TESTDATA ?= $(or $(CUTOUT_TESTDATA),$(abspath ../shared/testdata))
# axe-core, the accessibility checker the browser tests inject (fetched from the npm registry).
AXE_JS := build/axe-core/axe.min.js

.PHONY: install dev model browser redis container-setup container-image container-test axe node-clients photos run test lint typecheck docs docs-build package bench clients fuzz soak measure-memory clean

install: $(STAMP) model ## the shared set-up: venv, pinned dependencies, verified model

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -c requirements.lock -e '.[server]'
	touch $@

dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -c requirements.lock -e '.[server,docs,dev]'
	touch $@

model: $(STAMP)
	$(BIN)/cutout models fetch

# Debian's Chromium for the browser test; installed when missing and we may (root + apt).
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends chromium; \
		else echo "note: no chromium; the browser test will skip (fail under CI)"; fi; }

# Debian's redis-server for the batch-job tests (they start their own on a free loopback port).
redis:
	@command -v redis-server >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends redis-server; \
		else echo "note: no redis-server; the job tests will skip (fail under CI)"; fi; }

# podman and what it needs to build and run the image here (issue 15); installed when missing
# and we may (root + apt). Without podman the container tests skip (fail under CI). iptables:
# podman 4.3's network backend (netavark) publishes ports with it and fails without it
# ("netavark: No such file or directory"); a minimal Debian lacks it.
CONTAINER_TOOLS := podman buildah runc mmdebstrap podman-compose iptables
container-setup:
	@missing=$$(for t in $(CONTAINER_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				$(CONTAINER_TOOLS) netavark aardvark-dns catatonit; \
		else echo "note: no $$missing; the container tests will skip (fail under CI)"; fi; fi

# The stand-in base (mmdebstrap) and the app image from ./Dockerfile, each tagged by a digest
# of its inputs: a rerun with no change builds nothing.
container-image: container-setup
	$(PYTHON) scripts/container_build.py --redis

# The image built and run for real: health, hardening, offline models, the seed's flow,
# graceful stop, restart, reliability, `podman kube play` and podman-compose.
container-test: install dev container-setup photos
	$(BIN)/pytest tests/container

axe: $(AXE_JS)

$(AXE_JS): scripts/fetch_axe.py | $(STAMP)
	$(BIN)/python scripts/fetch_axe.py $@

# The npm remove.bg client the API tests run unchanged, pinned by its package-lock.json.
CLIENTS := tests/clients
NODE_STAMP := $(CLIENTS)/node_modules/.package-lock.json
node-clients: $(NODE_STAMP)

$(NODE_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	@command -v npm >/dev/null || { \
		echo "note: no npm; the npm client test will skip (fail under CI)"; exit 0; }
	npm ci --prefix $(CLIENTS) --no-audit --no-fund --loglevel=error

run: install ## start the app on SQLite + the local model at http://localhost:5000 (CUTOUT_PORT)
	CUTOUT_ENV=$${CUTOUT_ENV:-development} $(BIN)/cutout serve

lint: dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# mypy's cache outside the checkout: a fresh clone (CI) checks in ~3 s instead of ~34 s (Zen 3)
MYPY_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cutout/mypy
typecheck: dev
	$(BIN)/mypy --cache-dir $(MYPY_CACHE)

# The CC0 test photos most tests run on (the scikit-image wheel's, sha256-pinned), once.
photos: $(STAMP)
	$(BIN)/python -m tests.photos

test: install dev browser redis container-setup axe node-clients photos lint typecheck docs-build package
	CUTOUT_TESTDATA=$(TESTDATA) CUTOUT_AXE_JS=$(abspath $(AXE_JS)) \
		CUTOUT_WHEEL_DIR=$(abspath $(DIST)) $(BIN)/pytest --durations=40

# The documentation site, from docs/ (MkDocs, Material): `make docs` serves it at :8000.
docs: dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-build: dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# The wheel and sdist, as a release would make them, checked by twine; tests/test_packaging.py
# installs the wheel into a fresh virtualenv.
DIST := build/dist
package: dev
	rm -rf $(DIST)
	$(BIN)/python -m build --no-isolation --outdir $(DIST) . >/dev/null
	$(BIN)/twine check --strict $(DIST)/*

bench:
	@test -d "$(TESTDATA)/images" || { echo "make bench needs the licensed test photos with ground truth at $(TESTDATA) (../shared/testdata; set CUTOUT_TESTDATA)"; exit 2; }
	@$(MAKE) --no-print-directory install dev
	$(PIP_INSTALL) -c requirements.lock -e '.[dev,bench]'
	CUTOUT_TESTDATA=$(TESTDATA) $(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_touchup.py
	@$(MAKE) --no-print-directory redis
	$(BIN)/python -m tests.photos
	$(BIN)/python scripts/bench_jobs.py

# Every published remove.bg client we can install, unchanged, against a live server (~1 min).
clients: install dev node-clients
	CUTOUT_TESTDATA=$(TESTDATA) $(BIN)/python scripts/remove_bg_clients.py
# The fuzzing campaign at full size: 10,000 damaged photos through the decoder, POST / and
# the CLI each, new inputs every run (make test replays a fixed 400/50/50). About an hour.
FUZZ_CASES ?= 10000
fuzz: install dev
	CUTOUT_TESTDATA=$(TESTDATA) FUZZ_CASES=$(FUZZ_CASES) $(BIN)/pytest tests/fuzz -p no:cacheprovider

# N upload/delete cycles against a live server; prints the RSS curve of its process tree.
SOAK_CYCLES ?= 300
soak: install dev
	CUTOUT_TESTDATA=$(TESTDATA) SOAK_CYCLES=$(SOAK_CYCLES) $(BIN)/python scripts/soak.py

# Re-measure what a removal costs in memory (after any pipeline change) and print the
# constants of src/cutout/memory.py; ~4 minutes.
measure-memory: install dev
	CUTOUT_TESTDATA=$(TESTDATA) $(BIN)/python scripts/measure_memory.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache artifacts \
		$(CLIENTS)/node_modules
