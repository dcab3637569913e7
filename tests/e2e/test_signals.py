"""The websocket signals under real servers (hypercorn and uvicorn), with a real client and real receivers."""

from __future__ import annotations

import asyncio
import socket
import threading
import typing as t

import pytest
from flask import Flask, Response, abort
from support.receivers import subscribed
from support.servers import LiveServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from flask_asyncws import AsyncWS, websocket


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    AsyncWS(app)
    return app


def refused_status(url: str, **kwargs: t.Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(url, **kwargs)
    return int(info.value.response.status_code)


def test_started_and_finished_with_the_close_code(app: Flask, serve: t.Callable[..., LiveServer]) -> None:
    @app.websocket("/sync")
    def sync_handler() -> None:
        websocket.send(websocket.receive())
        websocket.close(4001)

    @app.websocket("/async")
    async def async_handler() -> None:
        await websocket.send(await websocket.receive())

    received = subscribed(app)
    srv = serve(app)
    with connect(srv.ws_url + "/sync") as ws:
        ws.send("a")
        assert ws.recv(timeout=5) == "a"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert received.wait_for("finished") == [{"path": "/sync", "code": 4001}]
    with connect(srv.ws_url + "/async") as ws:
        ws.send("b")
        assert ws.recv(timeout=5) == "b"
    finished = received.wait_for("finished", 2)
    assert finished[1] == {"path": "/async", "code": 1000}  # the handler's end closes with 1000
    assert received.names() == ["started", "finished", "started", "finished"]
    assert received.wait_for("started", 2) == [{"path": "/sync"}, {"path": "/async"}]


def test_refused_by_the_app_with_its_response(app: Flask, serve: t.Callable[..., LiveServer]) -> None:
    @app.before_websocket
    def check() -> None:
        if websocket.args.get("deny"):
            abort(401)

    @app.websocket("/ws")
    def handler() -> Response:
        return Response("no", 418)

    @app.websocket("/silent")
    def silent() -> None:
        pass  # returns without accepting: the server's own 403

    received = subscribed(app)
    srv = serve(app)
    assert refused_status(srv.ws_url + "/ws?deny=1") == 401
    assert refused_status(srv.ws_url + "/ws") == 418
    assert received.wait_for("refused", 2) == [{"status": 401, "path": "/ws"}, {"status": 418, "path": "/ws"}]
    assert received.wait_for("finished", 2) == [{"path": "/ws", "code": None}] * 2
    assert refused_status(srv.ws_url + "/silent") == 403
    assert received.wait_for("finished", 3)[2] == {"path": "/silent", "code": None}
    assert received.names().count("refused") == 2


def test_refused_before_the_app_runs(app: Flask, serve: t.Callable[..., LiveServer]) -> None:
    app.config["ASYNCWS_ALLOWED_ORIGINS"] = ["https://app.example"]

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send("ok")

    received = subscribed(app)
    srv = serve(app)
    assert refused_status(srv.ws_url + "/ws", origin="https://other.example") == 403
    bad_key = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ) % srv.port
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        raw.sendall(bad_key)
        answer = raw.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    # Hypercorn upgrades any key, and the app refuses it; uvicorn answers 400 itself.
    by_app = srv.server == "hypercorn"
    srv.call(app.asgi_app.shutdown())  # type: ignore[attr-defined]
    assert refused_status(srv.ws_url + "/ws", origin="https://app.example") == 503
    refusals = received.wait_for("refused", 3 if by_app else 2)
    assert refusals == [{"status": 403, "path": None}, *([{"status": 400, "path": None}] if by_app else [])] + [
        {"status": 503, "path": None}
    ]
    assert "started" not in received.names()


@pytest.mark.parametrize("accept_first", [True, False])
def test_unhandled_error(app: Flask, serve: t.Callable[..., LiveServer], accept_first: bool) -> None:
    error = ValueError("boom")

    @app.websocket("/ws")
    def handler() -> None:
        if accept_first:
            websocket.accept()
        raise error

    received = subscribed(app)
    srv = serve(app)
    if accept_first:
        with connect(srv.ws_url + "/ws") as ws, pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    else:
        assert refused_status(srv.ws_url + "/ws") == 500
    assert received.wait_for("got_websocket_exception") == [{"exception": error, "path": "/ws"}]
    assert received.wait_for("got_request_exception") == [{"exception": error}]
    received.wait_for("finished")
    expected = ["started", "got_websocket_exception", "got_request_exception"]
    expected += ["finished"] if accept_first else ["refused", "finished"]
    assert received.names() == expected
    assert received.wait_for("finished")[0]["code"] == (1011 if accept_first else None)


def test_shutdown_refuses_and_finishes(app: Flask, serve: t.Callable[..., LiveServer]) -> None:
    """At shutdown a handshake the app holds is refused with 503 (by the app: websocket set),
    an open websocket closed with 1001."""
    pending = threading.Event()

    @app.websocket("/open")
    async def open_handler() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.websocket("/pending")
    async def pending_handler() -> None:
        pending.set()
        await asyncio.sleep(60)  # never accepts

    received = subscribed(app)
    srv = serve(app)
    with connect(srv.ws_url + "/open") as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        statuses: list[int] = []
        waiting = threading.Thread(target=lambda: statuses.append(refused_status(srv.ws_url + "/pending")))
        waiting.start()
        assert pending.wait(10)
        srv.call(app.asgi_app.shutdown())  # type: ignore[attr-defined]
        waiting.join(10)
        assert statuses == [503]
    assert received.wait_for("refused") == [{"status": 503, "path": "/pending"}]
    finished = sorted(received.wait_for("finished", 2), key=lambda kwargs: kwargs["path"])
    assert finished == [{"path": "/open", "code": 1001}, {"path": "/pending", "code": None}]
