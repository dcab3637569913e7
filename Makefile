# `make run` serves the echo example; `make test` runs the test suite
# (`make test ARGS="tests/test_websocket.py -k misuse"` runs a selection).
# Both install what they need first.
PYTHON ?= python3

.PHONY: install run test bench

install:
	$(PYTHON) -m pip install --quiet -e ".[test]"

run: install
	$(PYTHON) -m hypercorn --bind 127.0.0.1:8000 examples.echo.app:app.asgi_app

test: install
	$(PYTHON) -m pytest $(ARGS)

bench: install
	$(PYTHON) -m benchmarks
