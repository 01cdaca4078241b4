# The README's two commands are the contract: `make run` and `make test` each do
# all the set-up a fresh clone needs (a virtual environment with the project
# installed in it), then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench proto docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m secretbridge dev --resources-path components/local

test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench

docs: setup
	$(PY) -m secretbridge backends --markdown > docs/metadata.md

proto: setup
	$(PY) -m secretbridge.proto.generate

clean:
	rm -rf $(VENV) build *.egg-info service/*.egg-info .pytest_cache .ruff_cache
