"""The same websocket scenarios through the test client and through hypercorn.

Each scenario talks to a small "peer" interface; one peer uses
``app.test_client().websocket()``, the other a real hypercorn and the
``websockets`` client. Both must report the same outcomes, so the test client
shows what a real server would do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing as t

import httpx
import pytest
from flask import Flask, abort, session
from support.servers import LiveServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from flask_asyncws import AsyncWS, Blueprint, WebsocketDisconnect, websocket
from flask_asyncws.testing import WebsocketResponseError


@dataclasses.dataclass
class Refused(Exception):
    """The handshake was answered with this HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass
class Closed(Exception):
    """The server closed the connection with this code and reason."""

    code: int
    reason: str


class Connection(t.Protocol):
    subprotocol: str | None
    accept_headers: dict[str, str]

    def send(self, data: str | bytes) -> None: ...

    def receive(self) -> str | bytes: ...


def make_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "scenarios"
    app.config["PROPAGATE_EXCEPTIONS"] = False  # so a failing handler is seen on the wire
    AsyncWS(app)

    @app.websocket("/echo")
    def echo() -> None:
        while True:
            websocket.send(websocket.receive())

    @app.websocket("/json")
    async def json_echo() -> None:
        data = await websocket.receive_json()
        await websocket.send_json({"got": data})

    @app.websocket("/chat")
    def chat() -> None:
        websocket.accept(headers={"X-Room": "lobby"}, subprotocol="chat.v2")
        websocket.send("welcome")

    @app.websocket("/abort")
    def aborted() -> None:
        abort(403)

    @app.websocket("/refuse")
    def refuse() -> t.Any:
        return "denied", 401, {"X-Reason": "nope"}

    guarded = Blueprint("guarded", __name__, url_prefix="/guarded")

    @guarded.before_websocket
    def keep_out() -> t.Any:
        return "no entry", 418

    @guarded.websocket("/room")
    def room() -> None:
        websocket.send("inside")

    app.register_blueprint(guarded)

    @app.get("/page")
    def page() -> str:
        return "a page"

    @app.websocket("/fail-early")
    def fail_early() -> None:
        raise RuntimeError("before accept")

    @app.websocket("/fail-late")
    async def fail_late() -> None:
        await websocket.accept()
        await websocket.receive()
        raise RuntimeError("after accept")

    @app.websocket("/leave")
    def leave() -> None:
        websocket.send("bye soon")
        websocket.close(4001, "done here")

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.websocket("/whoami")
    def whoami() -> None:
        websocket.send(session.get("user", "anonymous"))

    return app


# -- the two peers ---------------------------------------------------------------


class TestClientPeer:
    """In process: ``app.test_client()``."""

    __test__ = False

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def login(self) -> None:
        assert self.client.post("/login").status_code == 200

    @contextlib.contextmanager
    def connect(self, path: str, subprotocols: list[str] | None = None) -> t.Iterator[Connection]:
        try:
            with self.client.websocket(path, subprotocols=subprotocols) as ws:  # type: ignore[attr-defined]
                yield _TestClientConnection(ws)
        except WebsocketResponseError as exc:
            response = exc.response
            raise Refused(response.status_code, dict(response.headers), response.data) from None


class _TestClientConnection:
    def __init__(self, ws: t.Any) -> None:
        self.ws = ws
        self.subprotocol = ws.subprotocol
        self.accept_headers = {k.lower(): v for k, v in ws.accept_headers.items()}

    def send(self, data: str | bytes) -> None:
        self.ws.send(data)

    def receive(self) -> str | bytes:
        try:
            return t.cast("str | bytes", self.ws.receive())
        except WebsocketDisconnect as exc:
            raise Closed(exc.code, exc.reason) from None


class HypercornPeer:
    """Over the network: hypercorn, httpx and the ``websockets`` client."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.http_url, timeout=5)

    def login(self) -> None:
        assert self.http.post("/login").status_code == 200

    @contextlib.contextmanager
    def connect(self, path: str, subprotocols: list[str] | None = None) -> t.Iterator[Connection]:
        cookies = "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())
        try:
            ws = connect(
                self.server.ws_url + path,
                subprotocols=subprotocols,  # type: ignore[arg-type]
                additional_headers={"Cookie": cookies} if cookies else None,
                open_timeout=5,
                close_timeout=5,
            )
        except InvalidStatus as exc:
            response = exc.response
            raise Refused(response.status_code, dict(response.headers), response.body) from None
        with ws:
            yield _WireConnection(ws)


class _WireConnection:
    def __init__(self, ws: t.Any) -> None:
        self.ws = ws
        self.subprotocol = ws.subprotocol
        self.accept_headers = {k.lower(): v for k, v in ws.response.headers.items()}

    def send(self, data: str | bytes) -> None:
        self.ws.send(data)

    def receive(self) -> str | bytes:
        try:
            return t.cast("str | bytes", self.ws.recv(timeout=5))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the server left without a close frame"
            raise Closed(exc.rcvd.code, exc.rcvd.reason) from None


Peer = TestClientPeer | HypercornPeer


@pytest.fixture(scope="module")
def app() -> Flask:
    return make_app()


@pytest.fixture(scope="module")
def hypercorn_server(app: Flask) -> t.Iterator[LiveServer]:
    with LiveServer(app.asgi_app, "hypercorn") as server:  # type: ignore[attr-defined]
        yield server


@pytest.fixture(params=["test_client", "hypercorn"])
def peer(request: pytest.FixtureRequest, app: Flask) -> Peer:
    if request.param == "test_client":
        return TestClientPeer(app)
    return HypercornPeer(request.getfixturevalue("hypercorn_server"))


# -- scenarios -------------------------------------------------------------------


@pytest.mark.parametrize("message", ["hello", "", "é ✓", b"\x00\xff", b""])
def test_echo(peer: Peer, message: str | bytes) -> None:
    with peer.connect("/echo") as ws:
        ws.send(message)
        received = ws.receive()
    assert received == message
    assert type(received) is type(message)


def test_json(peer: Peer) -> None:
    with peer.connect("/json") as ws:
        ws.send('{"a": [1, 2]}')
        assert json.loads(ws.receive()) == {"got": {"a": [1, 2]}}


def test_subprotocol_and_accept_headers(peer: Peer) -> None:
    with peer.connect("/chat", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.accept_headers["x-room"] == "lobby"
        assert ws.receive() == "welcome"


@pytest.mark.parametrize(
    ("path", "status", "body", "header"),
    [
        ("/abort", 403, b"Forbidden", None),
        ("/refuse", 401, b"denied", ("x-reason", "nope")),
        ("/guarded/room", 418, b"no entry", None),
        ("/nowhere", 404, b"Not Found", None),
        ("/page", 400, b"Bad Request", None),
        ("/fail-early", 500, b"Internal Server Error", None),
    ],
)
def test_refusal(peer: Peer, path: str, status: int, body: bytes, header: tuple[str, str] | None) -> None:
    with pytest.raises(Refused) as info:
        with peer.connect(path):
            pytest.fail("the handshake must be refused")
    refused = info.value
    assert refused.status == status
    assert body in refused.body
    if header is not None:
        name, value = header
        assert {k.lower(): v for k, v in refused.headers.items()}[name] == value


def test_error_after_accept_closes_1011(peer: Peer) -> None:
    with peer.connect("/fail-late") as ws:
        ws.send("go")
        with pytest.raises(Closed) as info:
            ws.receive()
    assert info.value.code == 1011


def test_close_code_and_reason(peer: Peer) -> None:
    with peer.connect("/leave") as ws:
        assert ws.receive() == "bye soon"
        with pytest.raises(Closed) as info:
            ws.receive()
    assert info.value == Closed(4001, "done here")


def test_session_from_http_login(peer: Peer) -> None:
    with peer.connect("/whoami") as ws:
        assert ws.receive() == "anonymous"
    peer.login()
    with peer.connect("/whoami") as ws:
        assert ws.receive() == "alice"


def test_testing_exception_reaches_the_test() -> None:
    """With TESTING=True a handler's exception is raised in the test, as
    Flask's test client does for HTTP views, before and after accept."""
    app = make_app()
    app.config.update(TESTING=True, PROPAGATE_EXCEPTIONS=None)
    client = app.test_client()
    with pytest.raises(RuntimeError, match="before accept"):
        with client.websocket("/fail-early"):  # type: ignore[attr-defined]
            pass
    with client.websocket("/fail-late") as ws:  # type: ignore[attr-defined]
        ws.send("go")
        with pytest.raises(RuntimeError, match="after accept"):
            ws.receive()
