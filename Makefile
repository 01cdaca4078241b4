# The README's two commands are the contract: `make run` and `make test` each do
# all the set-up a fresh clone needs (a virtual environment with the project
# installed in it), then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench soak proto docs lock daprd compat image clean mutants

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# daprd when it can be had (found, or built once: tools/daprd/README.md), else the development gateway.
run: setup
	@daprd="$$($(PYTHON) tools/daprd/get_daprd.py)" || daprd=""; \
	exec $(PY) -m secretbridge dev --resources-path components/local $${daprd:+--daprd "$$daprd"}

# The real-daprd tests need daprd: it is found or built first (so no test waits on a build). Under CI a
# daprd that cannot be had fails the run; elsewhere those tests skip, saying how to get one.
test: setup lint
	@$(PYTHON) tools/daprd/get_daprd.py >/dev/null || { [ "$$CI" != true ] || exit 1; \
		echo "daprd could not be had (above): the tests that need it will skip"; }
	@$(PY) -m tests.apps >/dev/null || { [ "$$CI" != true ] || exit 1; \
		echo "the Go/JavaScript SDK apps could not be had (above): their tests will skip"; }
	@$(PYTHON) tools/image/build_image.py --quiet >/dev/null || { [ "$$CI" != true ] || exit 1; \
		echo "the image could not be built (above): the image tests will skip"; }
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# `make bench ONLY=through_daprd` runs one section (names: python -m bench --help). Section (i) drives
# daprd with wrk (installed here when missing and apt-get can, as root; else bench.load stands in) and
# profiles with py-spy (a bench-only tool, pinned here, installed into the venv).
ONLY ?=
PY_SPY := py-spy==0.4.3
bench: setup
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || \
		echo "wrk is not installed (apt-get install wrk): section (i) uses bench.load, a Python client"
	@test -x $(VENV)/bin/py-spy || $(PY) -m pip install --quiet --disable-pip-version-check '$(PY_SPY)' || \
		echo "py-spy could not be installed: section (i) is not profiled"
	$(PY) -m bench $(if $(ONLY),--only $(ONLY))

# The fault soak (bench/soak, issue 21): `make soak SOAK_MINUTES=2` for a short run. The app reads through
# daprd when one can be had (found, or built once); without one the soak says so and runs the rest.
SOAK_MINUTES ?= 10
soak: setup
	@daprd="$$($(PYTHON) tools/daprd/get_daprd.py)" || daprd=""; \
	exec $(PY) -m bench.soak --minutes $(SOAK_MINUTES) $${daprd:+--daprd "$$daprd"}

# Plants the bugs listed in tests/mutants.py one at a time in a copy of the tree and reports which the
# tests catch; every one must be caught (not part of `make test`: it runs tests once per bug).
mutants: setup
	$(PY) -m tests.mutants

docs: setup
	$(PY) -m secretbridge backends --markdown > docs/metadata.md

# The image's dependencies, pinned with hashes (deploy/Dockerfile installs them with --require-hashes):
# pyproject.toml's runtime dependencies, and its build backend. Pins that still fit pyproject.toml are
# kept; `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest allowed release. Local wheel
# folders (PIP_FIND_LINKS) stay out: the hashes must be those of the files the index serves.
LOCK_FLAGS ?=
PIP_COMPILE := env -u PIP_FIND_LINKS CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS)

lock: setup
	$(PIP_COMPILE) --output-file deploy/requirements.lock pyproject.toml
	$(PIP_COMPILE) --only-build-deps --build-deps-for wheel --output-file deploy/build-requirements.lock pyproject.toml

proto: setup
	$(PY) -m secretbridge.proto.generate

# Finds or builds the pinned daprd (tools/daprd/README.md); its absolute path is the last line of stdout.
daprd:
	@$(PYTHON) tools/daprd/get_daprd.py

# The sidecar image from deploy/Dockerfile with the Docker or Podman found (tools/image/build_image.py,
# docs/deployment.md "The image"); prints its name, size and packages. IMAGE_BASE=python|debian picks the base,
# IMAGE_ENGINE=docker|podman the engine, IMAGE_REFRESH=1 makes the Debian base and the image again.
image:
	@$(PYTHON) tools/image/build_image.py

# The version matrix: builds every daprd release tools/daprd keeps (the pin and releases/*) and runs the daprd
# suites under each; prints a table (release, passed, failed, what differs). Not part of `make test`, which runs
# the pin only.
compat: setup
	$(PY) tools/daprd/compat.py

clean:
	rm -rf $(VENV) build *.egg-info service/*.egg-info .pytest_cache .ruff_cache
