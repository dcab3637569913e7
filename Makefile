# `make run` serves the echo example; `make test` runs the test suite
# (`make test tests/e2e/test_websocket.py::test_misuse_errors_say_what_to_do` or
# `make test ARGS="-k misuse"` runs a selection).
# Both install what they need first, into a virtualenv: the active one if there
# is one (VIRTUAL_ENV set), otherwise the project's own .venv, created with
# PYTHON (any Python 3.10+; a system Python that refuses pip installs, as
# PEP 668 lets distributions do, is fine: nothing is installed into it).
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV ?= $(VIRTUAL_ENV)
else
VENV ?= .venv
endif
VENV_PYTHON := $(VENV)/bin/python
PIP := $(VENV_PYTHON) -m pip --quiet --disable-pip-version-check
# The extras `make test` installs.
TEST_EXTRAS := test,bench,browser,metrics,redis
# Where `make run` listens (hypercorn's --bind).
BIND ?= 127.0.0.1:8000

# Each install is redone only when what it reads changed: the stamps live in
# the virtualenv (a new one starts without them) and are named after this
# checkout (a virtualenv shared by two checkouts installs each in turn).
STAMP := $(VENV)/.flask-asyncws$(subst /,-,$(CURDIR))
RUN_STAMP := $(STAMP)-run
TEST_STAMP := $(STAMP)-test
DOCS_STAMP := $(STAMP)-docs
DIST_STAMP := $(STAMP)-dist

.PHONY: venv install system-packages run test bench docs dist matrix typecheck

# `make -s venv` creates the virtualenv if needed and prints its interpreter:
# `$$(make -s venv) -m pytest -x` runs pytest there.
venv: $(VENV_PYTHON)
	@echo $(abspath $(VENV_PYTHON))

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(VENV_PYTHON)
	$(PIP) install -e .
	@touch $@

$(TEST_STAMP): pyproject.toml Makefile | $(VENV_PYTHON)
	$(PIP) install -e ".[$(TEST_EXTRAS)]"
	@touch $@

$(DOCS_STAMP): pyproject.toml | $(VENV_PYTHON)
	$(PIP) install -e ".[docs]"
	@touch $@

$(DIST_STAMP): | $(VENV_PYTHON)
	$(PIP) install build twine
	@touch $@

install: $(TEST_STAMP)

# The Debian packages some tests drive (Chromium, redis-server, ...), with
# apt-get when missing: see .ci/system-packages.
system-packages:
	@bash .ci/system-packages

run: $(RUN_STAMP)
	$(VENV_PYTHON) -m hypercorn --bind $(BIND) examples.echo.app:app.asgi_app

# With `test` among the goals, the goals that are not targets here are what
# pytest should run, node IDs included:
# `make test tests/e2e/test_websocket.py::test_misuse_errors_say_what_to_do`
# (or `make install test ...`). pytest's options go in ARGS (make reads dashes
# as its own).
TARGETS := venv install system-packages run test bench docs dist matrix typecheck
ifneq ($(filter test,$(MAKECMDGOALS)),)
SELECTION := $(filter-out $(TARGETS),$(MAKECMDGOALS))
# The selection's words are not targets to build (a mistyped goal without
# `test` still gets make's "No rule to make target").
.DEFAULT:
	@:
endif

test: $(TEST_STAMP) system-packages
	$(VENV_PYTHON) -m pytest $(ARGS) $(SELECTION)

bench: $(TEST_STAMP)
	$(VENV_PYTHON) -m benchmarks

# The docs into docs/_build/html, with warnings as errors.
docs: $(DOCS_STAMP)
	$(VENV_PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

# The sdist and wheel into DIST (emptied first), checked as PyPI checks them;
# the wheel must hold only the package.
DIST ?= dist
dist: $(DIST_STAMP)
	rm -rf $(DIST)
	$(VENV_PYTHON) -m build --outdir $(DIST) .
	$(VENV_PYTHON) -m twine check --strict $(DIST)/*
	$(VENV_PYTHON) -c 'import sys, zipfile; other = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if not n.startswith(("flask_asyncws/", "flask_asyncws-"))]; sys.exit(f"The wheel holds more than the package: {other}" if other else None)' $(DIST)/*.whl

# The suite on Python 3.10, 3.12 and 3.13, on Flask's next release and at the
# declared minimums, each in its own venv under .matrix/ (`make matrix
# ENVS="py3.10 minimums"` runs some of them); see .ci/matrix.
matrix:
	bash .ci/matrix $(ENVS)

# mypy --strict and pyright on the package and on the user-style files in
# tests/type_check (typing_*.py; pyproject.toml names them for both). mypy
# against Flask's next release is in the matrix (`bash .ci/matrix --typecheck`).
typecheck: $(TEST_STAMP)
	$(VENV_PYTHON) -m mypy --strict
	$(VENV_PYTHON) -m pyright --pythonpath $(abspath $(VENV_PYTHON))
