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

import signal
import typing as t

import pytest
from support import requirements
from support.servers import SERVERS, LiveServer

#: ``type_check/`` holds user-style code for type checkers to check, not tests.
collect_ignore = ["type_check"]


def pytest_configure(config: pytest.Config) -> None:
    """Check that this Python can run the suite, and let the servers the tests start see SIGINT.

    A Python that lacks what the tests need stops the run at once, with one
    message saying what to install (each test file would fail on its own).

    SIGINT, as a terminal's CTRL+C sends it: a run started in the background by
    a non-interactive shell inherits SIGINT ignored, and a process keeps an
    ignored signal ignored across exec, so a server stopped with SIGINT would
    never see it. A handler is reset to the default at exec instead.
    """
    unmet = requirements.problem()
    if unmet is not None:
        raise pytest.UsageError(unmet)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


#: Packages test files import that an extra installs, and that extra.
EXTRAS = {"playwright": "browser", "prometheus_client": "metrics", "redis": "redis"}


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> t.Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A test file that cannot import what an extra installs says which extra.

    The file still fails (a missing dependency is never a skip); the rest of the
    suite runs on (pyproject's ``--continue-on-collection-errors``).
    """
    report = yield
    if report.failed and isinstance(collector, pytest.Module):
        error = str(report.longrepr)
        for package, extra in EXTRAS.items():
            if f"No module named '{package}'" in error:
                report.longrepr = (
                    f"{error}\n\n{collector.path.name} needs {package}, which the {extra!r} extra installs:"
                    f' `make test` installs every extra the suite needs (pip install -e ".[test,{extra}]").'
                )
    return report


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
