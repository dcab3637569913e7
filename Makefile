# `make run` serves the echo example; `make test` runs the test suite
# (`make test tests/test_websocket.py::test_misuse_errors_say_what_to_do` or
# `make test ARGS="-k misuse"` runs a selection).
# Both install what they need first.
PYTHON ?= python3

.PHONY: install run test bench docs dist matrix typecheck

install:
	$(PYTHON) -m pip install --quiet -e ".[test,bench,browser]"

run: install
	$(PYTHON) -m hypercorn --bind 127.0.0.1:8000 examples.echo.app:app.asgi_app

# With `test` among the goals, the goals that are not targets here are what
# pytest should run, node IDs included:
# `make test tests/test_websocket.py::test_misuse_errors_say_what_to_do`
# (or `make install test ...`). pytest's options go in ARGS (make reads dashes
# as its own).
TARGETS := install run test bench docs dist matrix typecheck
ifneq ($(filter test,$(MAKECMDGOALS)),)
SELECTION := $(filter-out $(TARGETS),$(MAKECMDGOALS))
# The selection's words are not targets to build (a mistyped goal without
# `test` still gets make's "No rule to make target").
.DEFAULT:
	@:
endif

test: install
	$(PYTHON) -m pytest $(ARGS) $(SELECTION)

bench: install
	$(PYTHON) -m benchmarks

# The docs into docs/_build/html, with warnings as errors.
docs:
	$(PYTHON) -m pip install --quiet -e ".[docs]"
	$(PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

# The sdist and wheel into DIST (emptied first), checked as PyPI checks them;
# the wheel must hold only the package.
DIST ?= dist
dist:
	$(PYTHON) -m pip install --quiet build twine
	rm -rf $(DIST)
	$(PYTHON) -m build --outdir $(DIST) .
	$(PYTHON) -m twine check --strict $(DIST)/*
	$(PYTHON) -c 'import sys, zipfile; other = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if not n.startswith(("flask_asyncws/", "flask_asyncws-"))]; sys.exit(f"The wheel holds more than the package: {other}" if other else None)' $(DIST)/*.whl

# The suite on Python 3.10, 3.12 and 3.13, on Flask's next release and at the
# declared minimums, each in its own venv under .matrix/ (`make matrix
# ENVS="py3.10 minimums"` runs some of them); see .ci/matrix.
matrix:
	bash .ci/matrix $(ENVS)

# mypy strict on the package against the latest Flask release and Flask's
# next release.
typecheck:
	bash .ci/matrix --typecheck
