# Khazad: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
STAMP_LINT := $(VENV)/.installed-lint
# sim/ and tests/ are not linted yet: other engineers are editing sim/ (issue 19); tests/ follows once it settles.
LINT_PATHS  := bus sdk cli launch actors examples run_all.py
TYPED_PATHS := bus sdk cli launch actors

.PHONY: run test lint chaos bench clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

$(STAMP_LINT): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[lint]'
	touch $@ $(STAMP_RUN)

venv: $(STAMP_RUN)

run: $(STAMP_RUN)
	$(PY) run_all.py

test: $(STAMP_TEST)
	$(PY) -m pytest -q -p no:cacheprovider -m "not chaos" $(PYTEST_ARGS)

lint: $(STAMP_LINT)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy $(TYPED_PATHS)

chaos: $(STAMP_TEST)
	$(PY) -m pytest -q -p no:cacheprovider -m chaos tests/chaos $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) run build *.egg-info .mypy_cache .ruff_cache
