# Two commands set everything up: `make reproduce` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install dev test lint typecheck train reproduce bench docs clean

# A recipe that fails leaves no target behind, so that the next make runs it again.
.DELETE_ON_ERROR:

# Made (anew: --clear) where .venv/bin/python is missing or points nowhere: no .venv yet, one
# left by a Python since removed or upgraded, or one that failed half-way.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "make: minidl needs Python \
	3.10 or newer, $(PYTHON) is %s (make PYTHON=python3.X chooses one)" % sys.version.split()[0])'
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch pinned to 2.13.0, whose CPU build the package index here offers; a bare `torch` would
# pull a multi-GB CUDA build. Checked at every install (not only when the venv is made), so that
# one which failed (offline, say) is installed pinned before the editable install asks for torch.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[reproduce,checkpoint]"
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

dev: $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# tests/typing: programs of one's own, typed strictly, whose assert_type lines mypy checks;
# tests/typecheck_docs.py: the README's and docs/'s code under mypy --strict, known errors listed.
typecheck: $(DEV_STAMP)
	$(BIN)/mypy src benchmarks examples tests/typing
	$(BIN)/python -m tests.typecheck_docs

test: lint typecheck
	$(BIN)/python -m pytest -q -n 2

train: $(STAMP)
	$(BIN)/minidl train

reproduce: $(STAMP)
	$(BIN)/minidl reproduce

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run.py

# The API reference and guides (docs/, mkdocs.yml) as a static site in site/.
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# What make and the commands it runs generate (benchmarks/results.json, a machine's record, stays).
clean:
	rm -rf $(VENV) results site .mypy_cache .ruff_cache .pytest_cache .hypothesis src/minidl.egg-info
