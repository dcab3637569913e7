from __future__ import annotations

import typing as t

import pytest
from servers import SERVERS, LiveServer


@pytest.fixture(params=SERVERS)
def serve(request: pytest.FixtureRequest) -> t.Iterator[t.Callable[..., LiveServer]]:
    """Serve an app with a real server (each of hypercorn and uvicorn) for the test."""
    started: list[LiveServer] = []

    def start(app: t.Any, **options: t.Any) -> LiveServer:
        server = LiveServer(app.asgi_app, request.param, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def hypercorn() -> t.Iterator[t.Callable[..., LiveServer]]:
    """Serve an app with hypercorn only (for behaviour that is hypercorn's)."""
    started: list[LiveServer] = []

    def start(app: t.Any, **options: t.Any) -> LiveServer:
        server = LiveServer(app.asgi_app, "hypercorn", **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
