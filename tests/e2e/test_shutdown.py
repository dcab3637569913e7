"""Shutting down with websockets open: ``ASGIApp.shutdown()``, ``flask asyncws
run`` on SIGTERM/SIGINT, and what plain hypercorn does on this Python.

Since Python 3.12.1 hypercorn waits for open connections before its graceful
timeout's cancel can end them, so a server with websockets open never exits by
itself; the app closes them first where it controls the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import textwrap
import threading
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from support.servers import HYPERCORN_WAITS_FOR_CONNECTIONS, SOCKET_ENV, LiveServer, SocketServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket

GOING_AWAY = (1001, "server shutting down")
ROOT = Path(__file__).resolve().parents[2]


def echoing(stack: contextlib.ExitStack, url: str) -> ClientConnection:
    """A connection to ``url`` that has echoed a message, closed with ``stack``."""
    ws = stack.enter_context(connect(url, open_timeout=10, close_timeout=10))
    ws.send("hello")
    assert ws.recv(10) == "hello"
    return ws


def close_frame(ws: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    """The close frame the server sent (waiting up to ``timeout`` seconds for it)."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout)
    frame = info.value.rcvd
    assert frame is not None, "the connection ended without a close frame"
    return frame.code, frame.reason


def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=10)
    return info.value.response.status_code


class ShutdownServer(SocketServer):
    """``tests/support/shutdown_app.py`` in a server process, with its log and release files."""

    def __init__(self, server: str, folder: Path, command: list[str] | None = None) -> None:
        self.log = folder / "log"
        self.release = folder / "release"
        self.log.touch()
        super().__init__(
            server,
            "support.shutdown_app:asgi",
            env={"SHUTDOWN_LOG": str(self.log), "SHUTDOWN_RELEASE": str(self.release)},
            command=command,
        )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


# -- flask asyncws run and AsyncWS.run() -------------------------------------------


@pytest.mark.parametrize(
    "how, signum",
    [
        ("flask asyncws run", signal.SIGTERM),
        ("flask asyncws run", signal.SIGINT),
        ("AsyncWS.run()", signal.SIGINT),
        ("serve.py", signal.SIGTERM),
    ],
)
def test_run_closes_open_websockets_on_a_signal(tmp_path: Path, how: str, signum: signal.Signals) -> None:
    """Clients get 1001 at once, handlers see the close as the client leaving,
    new handshakes get 503 meanwhile, teardowns run, then ``after_serving``,
    and the process exits cleanly: on every Python."""
    command = None
    if how == "AsyncWS.run()":
        command = [sys.executable, "-c", "from support.shutdown_app import asyncws; asyncws.run()"]
    elif how == "serve.py":
        script = tmp_path / "serve.py"
        script.write_text(serve_py())
        command = [sys.executable, str(script)]
    with ShutdownServer("asyncws", tmp_path, command) as server, contextlib.ExitStack() as stack:
        assert server.proc is not None
        clients = {path: echoing(stack, f"{server.ws_url}/{path}") for path in ("sync", "async", "slow")}
        server.proc.send_signal(signum)
        # /slow's handler holds the shutdown open until released.
        assert {path: close_frame(ws) for path, ws in clients.items()} == dict.fromkeys(clients, GOING_AWAY)
        assert refused_status(f"{server.ws_url}/sync") == 503
        assert server.lines() == [
            f"teardown /{path} WebsocketDisconnect(1001, 'server shutting down')" for path in ("sync", "async")
        ] or server.lines() == [
            f"teardown /{path} WebsocketDisconnect(1001, 'server shutting down')" for path in ("async", "sync")
        ]
        server.release.touch()
        assert server.proc.wait(20) == 0
    lines = server.lines()
    assert sorted(lines[:3]) == sorted(
        f"teardown /{path} WebsocketDisconnect(1001, 'server shutting down')" for path in ("sync", "async", "slow")
    )
    assert lines[3:] == ["after_serving"]


def serve_py() -> str:
    """docs/deployment.md's ``serve.py`` for ``shutdown_app``, on the socket the test binds."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    blocks = [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", text, re.S)]
    (block,) = [block for block in blocks if block.startswith("# serve.py")]
    replaced = {
        "from myproject import app": "from support.shutdown_app import app",
        'config.bind = ["0.0.0.0:8000"]': f'config.bind = ["fd://" + __import__("os").environ["{SOCKET_ENV}"]]',
    }
    for old, new in replaced.items():
        assert old in block, old
        block = block.replace(old, new)
    return block


# -- plain hypercorn -----------------------------------------------------------------


def test_hypercorn_sigterm_on_open_websockets(tmp_path: Path) -> None:
    """What ``hypercorn support.shutdown_app:asgi`` does on SIGTERM with websockets open.

    Up to Python 3.12.0 it waits its graceful timeout (3 s here), then cancels
    the connections: clients get 1001, teardowns run, then ``after_serving``.
    From 3.12.1 on it never gets that far: it stops accepting connections, the
    open websockets keep working, and it exits only once every client has
    left (then the teardowns and ``after_serving`` run, and the exit is clean).
    """
    with ShutdownServer("hypercorn", tmp_path) as server, contextlib.ExitStack() as stack:
        assert server.proc is not None
        clients = [echoing(stack, f"{server.ws_url}/{path}") for path in ("sync", "async")]
        server.proc.send_signal(signal.SIGTERM)
        server.proc.send_signal(signal.SIGTERM)  # a second one changes nothing
        if not HYPERCORN_WAITS_FOR_CONNECTIONS:
            assert [close_frame(ws, server.graceful_timeout + 10) for ws in clients] == [GOING_AWAY] * 2
            assert server.proc.wait(20) == 0
            assert sorted(server.lines()) == [
                "after_serving",
                "teardown /async CancelledError()",
                "teardown /sync CancelledError()",
            ]
            assert server.lines()[-1] == "after_serving"
            return
        with pytest.raises(subprocess.TimeoutExpired):
            server.proc.wait(server.graceful_timeout + 2)
        for ws in clients:  # still served, long after the graceful timeout
            ws.send("still here")
            assert ws.recv(10) == "still here"
        with pytest.raises(TimeoutError):  # no new connection is answered
            connect(f"{server.ws_url}/sync", open_timeout=1)
        assert server.lines() == []
        for ws in clients:
            ws.close()
        assert server.proc.wait(20) == 0
    lines = server.lines()
    assert sorted(lines[:2]) == [
        "teardown /async WebsocketDisconnect(1006, '')",
        "teardown /sync WebsocketDisconnect(1006, '')",
    ]
    assert lines[2:] == ["after_serving"]


# -- ASGIApp.shutdown() --------------------------------------------------------------


def shutdown_app(mode: str) -> tuple[Flask, list[str], threading.Event]:
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = mode
    AsyncWS(app)
    seen: list[str] = []
    pending = threading.Event()

    @app.teardown_websocket
    def teardown(error: BaseException | None) -> None:
        seen.append(f"teardown {websocket.path} {error!r}")

    @app.websocket("/sync")
    def sync_echo() -> None:
        try:
            while True:
                websocket.send(websocket.receive())
        except WebsocketDisconnect as exc:
            seen.append(f"handler /sync {exc!r}")
            raise

    @app.websocket("/async")
    async def async_wait() -> None:
        await websocket.accept()
        await websocket.send("accepted")
        try:
            await asyncio.sleep(60)  # waiting on something else than the websocket
        except asyncio.CancelledError:
            seen.append("handler /async cancelled")
            raise

    @app.websocket("/pending")
    async def pending_handshake() -> None:
        pending.set()
        await asyncio.sleep(60)  # never accepts

    return app, seen, pending


@pytest.mark.parametrize("mode", ["greenlet", "thread"])
def test_asgi_app_shutdown(serve: t.Callable[..., LiveServer], mode: str) -> None:
    app, seen, pending = shutdown_app(mode)
    server = serve(app)
    with connect(server.ws_url + "/sync") as sync_ws, connect(server.ws_url + "/async") as async_ws:
        sync_ws.send("hello")
        assert sync_ws.recv(10) == "hello"
        assert async_ws.recv(10) == "accepted"
        refusal: list[int] = []
        waiting = threading.Thread(target=lambda: refusal.append(refused_status(server.ws_url + "/pending")))
        waiting.start()
        assert pending.wait(10)
        server.call(app.asgi_app.shutdown())  # type: ignore[attr-defined]
        # Returned once every connection has ended, teardowns included.
        assert sorted(seen) == sorted(
            [
                "handler /sync WebsocketDisconnect(1001, 'server shutting down')",
                "handler /async cancelled",
                "teardown /sync WebsocketDisconnect(1001, 'server shutting down')",
                "teardown /async WebsocketDisconnect(1001, 'server shutting down')",
                "teardown /pending WebsocketDisconnect(1001, 'server shutting down')",
            ]
        )
        assert close_frame(sync_ws) == close_frame(async_ws) == GOING_AWAY
        waiting.join(10)
        assert refusal == [503]
    assert refused_status(server.ws_url + "/sync") == 503
    server.stop()
    # The next lifespan startup serves websockets again.
    with LiveServer(app.asgi_app, server.server) as again, connect(again.ws_url + "/sync") as ws:
        ws.send("again")
        assert ws.recv(10) == "again"


def test_asgi_app_shutdown_cancels_what_outlives_its_timeout(hypercorn: t.Callable[..., LiveServer]) -> None:
    app = Flask(__name__)
    AsyncWS(app)
    seen: list[str] = []

    @app.teardown_websocket
    def teardown(error: BaseException | None) -> None:
        seen.append(repr(error))

    @app.websocket("/stubborn")
    async def stubborn() -> None:
        try:
            while True:
                await websocket.send(await websocket.receive())
        except WebsocketDisconnect:
            await asyncio.sleep(60)  # ignores the close

    server = hypercorn(app)
    with connect(server.ws_url + "/stubborn") as ws:
        ws.send("hello")
        assert ws.recv(10) == "hello"
        took = server.timed(lambda: app.asgi_app.shutdown(0.2))  # type: ignore[attr-defined]
        assert close_frame(ws) == GOING_AWAY
    assert seen == ["CancelledError()"]
    assert 0.2 <= took < 2, took


def test_shutdown_without_connections_refuses_new_ones(hypercorn: t.Callable[..., LiveServer]) -> None:
    app, _, _ = shutdown_app("greenlet")
    server = hypercorn(app)
    server.call(app.asgi_app.shutdown())  # type: ignore[attr-defined]
    assert refused_status(server.ws_url + "/sync") == 503


def test_concurrent_shutdowns_wait_for_the_same_connections(hypercorn: t.Callable[..., LiveServer]) -> None:
    app, seen, _ = shutdown_app("greenlet")
    server = hypercorn(app)
    with connect(server.ws_url + "/sync") as ws:
        ws.send("hello")
        assert ws.recv(10) == "hello"
        took = server.timed(lambda: asyncio.gather(app.asgi_app.shutdown(), app.asgi_app.shutdown()))  # type: ignore[attr-defined]
        assert close_frame(ws) == GOING_AWAY
    assert seen[-1] == "teardown /sync WebsocketDisconnect(1001, 'server shutting down')"
    assert took < 2, took  # neither waited for its timeout (3 s)
