"""Fixtures for every tier of the suite.

The tests are grouped by what they run:

- ``unit/``: in-process tests (the protocol with hand-made ASGI scopes, the test client);
- ``e2e/``: the app under real servers (hypercorn, uvicorn, daphne, granian, ``flask
  asyncws run``) with a real client;
- ``hardening/``: hostile clients and load; ``hardening/soak/`` holds the longer soak
  scripts the tests run in short;
- ``browser/``: the chat example driven in Chromium;
- ``tooling/``: packaging, the Makefile's first run, the benchmarks.

``support/`` holds what they share: the one way to start a server
(``support/servers.py``) and the apps served in a separate process. The
folder is on the import path (pyproject's ``pythonpath``), so any test imports
``support.servers`` and the like.
"""

from __future__ import annotations

import typing as t

import pytest
from support.servers import SERVERS, LiveServer

#: ``type_check/`` holds user-style code for type checkers to check, not tests.
collect_ignore = ["type_check"]


def _serving(server: str) -> t.Iterator[t.Callable[..., LiveServer]]:
    """Start apps with ``server``: each is stopped when the test ends."""
    started: list[LiveServer] = []

    def start(app: t.Any, **options: t.Any) -> LiveServer:
        live = LiveServer(app.asgi_app, server, **options).start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture(params=SERVERS)
def serve(request: pytest.FixtureRequest) -> t.Iterator[t.Callable[..., LiveServer]]:
    """Serve an app with a real server (each of hypercorn and uvicorn) for the test."""
    yield from _serving(request.param)


@pytest.fixture
def hypercorn() -> t.Iterator[t.Callable[..., LiveServer]]:
    """Serve an app with hypercorn only (for behaviour that is hypercorn's)."""
    yield from _serving("hypercorn")
