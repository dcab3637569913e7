"""Websocket routes end to end: a real server (hypercorn and uvicorn) and a real client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import threading
import time
import typing as t
from importlib.metadata import version

import pytest
from flask import Flask, abort, g, request, session, url_for
from support.servers import SERVERS, LiveServer, needs_hypercorn_cancel
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from werkzeug.datastructures import Headers

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket


def make_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"
    AsyncWS(app)
    return app


def refused(url: str, **kwargs: t.Any) -> t.Any:
    """The HTTP response of a refused handshake."""
    with pytest.raises(InvalidStatus) as info:
        connect(url, **kwargs)
    return info.value.response


def closed(ws: t.Any) -> t.Any:
    """The close frame the server sent."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    return info.value.rcvd


# -- echo ----------------------------------------------------------------------


@pytest.fixture
def echo_app() -> Flask:
    app = make_app()

    @app.websocket("/echo")
    def echo() -> None:
        while True:
            websocket.send(websocket.receive())

    @app.websocket("/aecho")
    async def aecho() -> None:
        while True:
            await websocket.send(await websocket.receive())

    return app


@pytest.mark.parametrize("path", ["/echo", "/aecho"])
def test_echo_preserves_type_and_content(serve: t.Any, echo_app: Flask, path: str) -> None:
    srv = serve(echo_app)
    big = b"\x00\xff" * (512 * 1024)
    with connect(srv.ws_url + path, max_size=None) as ws:
        for message in ["hello", b"bytes", b"", "", "héllo ✓", big, big.decode("latin-1")]:
            ws.send(message)
            echoed = ws.recv(timeout=10)
            assert type(echoed) is type(message)
            assert echoed == message


def test_str_subclasses_are_sent_as_text_and_buffers_as_bytes(serve: t.Any) -> None:
    from markupsafe import Markup

    app = make_app()
    sent = [Markup("<b>bold</b>"), bytearray(b"\x01\x02"), memoryview(b"\x03")]

    @app.websocket("/sync")
    def sync_handler() -> None:
        for data in sent:
            websocket.send(data)

    @app.websocket("/async")
    async def async_handler() -> None:
        for data in sent:
            await websocket.send(data)

    srv = serve(app)
    for path in ("/sync", "/async"):
        with connect(srv.ws_url + path) as ws:
            assert [ws.recv(timeout=5) for _ in sent] == ["<b>bold</b>", b"\x01\x02", b"\x03"]
            assert closed(ws).code == 1000


# -- accept: subprotocols and headers -----------------------------------------------


def test_accept_with_subprotocol_and_headers(serve: t.Any) -> None:
    app = make_app()

    @app.websocket("/sync")
    def sync_handler() -> None:
        websocket.accept({"X-Accepted": "sync"}, subprotocol="chat.v2")
        websocket.send(",".join(websocket.requested_subprotocols))

    @app.websocket("/async")
    async def async_handler() -> None:
        await websocket.accept(headers=[("X-Accepted", "async")], subprotocol="chat.v2")
        await websocket.accept(subprotocol="chat.v1")  # idempotent: nothing more is sent
        await websocket.send(",".join(websocket.requested_subprotocols))

    srv = serve(app)
    for path, marker in [("/sync", "sync"), ("/async", "async")]:
        with connect(srv.ws_url + path, subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["X-Accepted"] == marker
            assert ws.recv(timeout=5) == "chat.v1,chat.v2"


WEBSOCKETS_MAJOR = int(version("websockets").split(".")[0])

ACCEPT_HEADERS: dict[str, t.Any] = {
    "bytes": [(b"X-Form", b"bytes"), (b"X-Latin", "caf\u00e9".encode("latin-1"))],
    "str": [("X-Form", "str"), ("X-Latin", "caf\u00e9")],
    "mixed": [(b"X-Form", "mixed"), ("X-Latin", "caf\u00e9".encode("latin-1"))],
    "mapping": {"X-Form": "mapping", b"X-Latin": "caf\u00e9"},
    "Headers": Headers([("X-Form", "Headers"), ("X-Latin", "caf\u00e9"), ("X-Latin", "again")]),
}


def test_accept_headers_as_bytes_or_str_pairs_mappings_or_headers(serve: t.Any) -> None:
    """ASGI's own (bytes, bytes) pairs, as Starlette users write them, are sent as the header they name."""
    app = make_app()

    @app.websocket("/sync/<form>")
    def sync_handler(form: str) -> None:
        websocket.accept(ACCEPT_HEADERS[form])
        websocket.send("ok")

    @app.websocket("/async/<form>")
    async def async_handler(form: str) -> None:
        await websocket.accept(headers=ACCEPT_HEADERS[form])
        await websocket.send("ok")

    srv = serve(app)
    for kind in ("sync", "async"):
        for form in ACCEPT_HEADERS:
            with connect(f"{srv.ws_url}/{kind}/{form}") as ws:
                assert ws.recv(timeout=5) == "ok"
                headers = ws.response.headers
                assert headers["X-Form"] == form, (kind, form, list(headers.raw_items()))
                # The bytes on the wire: the websockets client decodes header
                # values as latin-1 from version 17, as ASCII with surrogate
                # escapes before.
                received = [value.encode("latin-1", "surrogateescape") for value in headers.get_all("X-Latin")]
                expected = [b"caf\xe9", b"again"] if form == "Headers" else [b"caf\xe9"]
                if srv.server == "uvicorn" and WEBSOCKETS_MAJOR < 17:
                    # uvicorn hands the app's latin-1 bytes to websockets, which
                    # before version 17 writes header values out as UTF-8.
                    expected = [value.decode("latin-1").encode() for value in expected]
                assert received == expected, (kind, form)
                assert not any(name.startswith("b'") for name in headers), list(headers.raw_items())


def test_subprotocol_not_offered_raises_value_error(serve: t.Any) -> None:
    app = make_app()
    errors: list[BaseException] = []

    @app.websocket("/ws")
    def handler() -> None:
        try:
            websocket.accept(subprotocol="other")
        except ValueError as exc:
            errors.append(exc)
        websocket.send("still usable")

    srv = serve(app)
    with connect(srv.ws_url + "/ws", subprotocols=["chat"]) as ws:
        assert ws.subprotocol is None
        assert ws.recv(timeout=5) == "still usable"
    assert "client offered ['chat']" in str(errors[0])


# -- refusing ------------------------------------------------------------------------------


@pytest.fixture
def refusing_app() -> Flask:
    app = make_app()

    @app.before_websocket
    def guard() -> t.Any:
        if request.args.get("hook") == "1":
            return "teapot", 418, {"X-From": "hook"}
        return None

    @app.errorhandler(409)
    def conflict(exc: Exception) -> t.Any:
        return {"error": "conflict"}, 409, {"X-Handled": "yes"}

    @app.websocket("/abort")
    def abort_route() -> None:
        abort(401)

    @app.websocket("/return")
    async def return_route() -> t.Any:
        return "denied", 403, {"X-Reason": "nope"}

    @app.websocket("/handled")
    def handled() -> None:
        abort(409)

    @app.websocket("/redirect")
    def redirect_route() -> t.Any:
        from flask import redirect

        return redirect(url_for("echo"))

    @app.websocket("/error")
    def error_route() -> None:
        raise RuntimeError("boom")

    @app.websocket("/close-early")
    def close_early() -> None:
        websocket.close(4001, "go away")

    @app.websocket("/silent")
    def silent() -> None:
        return None

    @app.websocket("/echo")
    def echo() -> None:
        websocket.send(websocket.receive())

    return app


def test_abort_before_accept_is_an_http_response(
    serve: t.Any, refusing_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve(refusing_app)
    with caplog.at_level(logging.INFO):
        response = refused(srv.ws_url + "/abort")
        srv.stop()  # every log line about the connection is out once the server stopped
    assert response.status_code == 401
    assert b"Unauthorized" in response.body
    # The app returned only once the server had taken the response: no server complaint.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_returned_value_is_the_denial(serve: t.Any, refusing_app: Flask) -> None:
    srv = serve(refusing_app)
    response = refused(srv.ws_url + "/return")
    assert response.status_code == 403
    assert response.headers["X-Reason"] == "nope"
    assert response.body == b"denied"

    # A redirect is a real redirect response (Flask's default status) with a
    # ws:// Location a client can follow. The handshake is read over HTTP: the
    # websockets sync client follows redirects itself from version 17 (Python
    # 3.11+) and not before.
    import httpx
    from flask import redirect

    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    response = httpx.get(srv.http_url + "/redirect", headers=handshake)
    assert response.status_code == redirect("/").status_code
    location = response.headers["Location"]
    assert location == srv.ws_url + "/echo"
    with connect(location) as ws:
        ws.send("followed")
        assert ws.recv(timeout=5) == "followed"


def test_before_websocket_refuses_before_the_handler(serve: t.Any, refusing_app: Flask) -> None:
    srv = serve(refusing_app)
    response = refused(srv.ws_url + "/echo?hook=1")
    assert (response.status_code, response.headers["X-From"], response.body) == (418, "hook", b"teapot")


def test_errorhandler_shapes_the_denial(serve: t.Any, refusing_app: Flask) -> None:
    srv = serve(refusing_app)
    response = refused(srv.ws_url + "/handled")
    assert response.status_code == 409
    assert response.headers["X-Handled"] == "yes"
    assert response.headers["Content-Type"] == "application/json"
    assert b'"error":"conflict"' in response.body.replace(b" ", b"")


def test_unhandled_error_before_accept_is_500_and_logged(
    serve: t.Any, refusing_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve(refusing_app)
    with caplog.at_level(logging.ERROR):
        response = refused(srv.ws_url + "/error")
    assert response.status_code == 500
    assert any("Exception on /error" in r.getMessage() and r.exc_info for r in caplog.records)


def test_close_before_accept_and_silent_return_are_403(serve: t.Any, refusing_app: Flask) -> None:
    srv = serve(refusing_app)
    assert refused(srv.ws_url + "/close-early").status_code == 403
    assert refused(srv.ws_url + "/silent").status_code == 403


def test_routing_errors(serve: t.Any) -> None:
    app = make_app()

    @app.route("/http-only")
    def http_only() -> str:
        return "http"

    @app.websocket("/ws-only")
    def ws_only() -> None:
        websocket.send("ws")

    @app.route("/both")
    def both_http() -> str:
        return "http side"

    @app.websocket("/both")
    def both_ws() -> None:
        websocket.send("ws side")

    srv = serve(app)
    assert refused(srv.ws_url + "/missing").status_code == 404
    assert refused(srv.ws_url + "/http-only").status_code == 400
    with connect(srv.ws_url + "/both") as ws:
        assert ws.recv(timeout=5) == "ws side"

    import httpx

    assert httpx.get(srv.http_url + "/ws-only").status_code == 400
    assert httpx.get(srv.http_url + "/both").text == "http side"


def raw_request(port: int, request: bytes, complete: t.Callable[[bytes], bool] = lambda data: False) -> bytes:
    """Send ``request`` over a plain socket; what comes back until ``complete`` or the server closes."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        while not complete(data):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def first_frame(data: bytes) -> bytes | None:
    """The payload of the first (short, unmasked) frame after a 101 response, once it is all there."""
    rest = data.partition(b"\r\n\r\n")[2]
    if len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
        return None
    return rest[2 : 2 + (rest[1] & 0x7F)]


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_absolute_form_request_targets_are_routed_on_their_path(serve: t.Any, scheme: str) -> None:
    """RFC 9112 §3.2.2: servers accept ``GET ws://host/path``; the target's
    authority is the request's host, not the Host header."""
    app = make_app()

    @app.route("/page/<name>")
    def page(name: str) -> str:
        return f"{name} {request.host} {request.full_path} {url_for('page', name=name, _external=True)}"

    @app.websocket("/chat/<room>")
    def chat(room: str) -> None:
        websocket.send(f"{room} {websocket.host} {websocket.full_path} {websocket.args['a']}")

    srv = serve(app)
    target = f"{scheme}://app.example:8080"
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\n" + key
    origin = b"Origin: http://app.example:8080\r\n"  # same-origin with the target's authority
    host = f"Host: 127.0.0.1:{srv.port}\r\n".encode()

    request_line = f"GET {target}/chat/lobby?a=1 HTTP/1.1\r\n".encode()
    data = raw_request(srv.port, request_line + host + origin + upgrade + b"\r\n", lambda d: first_frame(d) is not None)
    assert data.startswith(b"HTTP/1.1 101 "), data
    assert first_frame(data) == b"lobby app.example:8080 /chat/lobby?a=1 1"

    close = b"Connection: close\r\n\r\n"
    data = raw_request(srv.port, f"GET {target}/page/home?a=1 HTTP/1.1\r\n".encode() + host + close)
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.partition(b"\r\n\r\n")[2] == b"home app.example:8080 /page/home?a=1 http://app.example:8080/page/home"

    data = raw_request(srv.port, f"GET {target} HTTP/1.1\r\n".encode() + host + close)
    assert data.startswith(b"HTTP/1.1 404 "), data  # no path is "/", which has no route here


def test_wsgi_request_with_upgrade_headers_does_not_run_the_handler() -> None:
    app = make_app()
    ran: list[bool] = []

    @app.websocket("/ws")
    def handler() -> None:
        ran.append(True)

    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
    response = app.test_client().get("/ws", headers=upgrade)
    assert response.status_code == 400
    assert b"websocket endpoint" in response.data
    assert app.test_client().get("/ws").status_code == 400
    assert ran == []


# -- after accept ----------------------------------------------------------------------


def test_error_after_accept_closes_1011(serve: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.websocket("/sync")
    def sync_handler() -> None:
        websocket.send("ready")
        raise RuntimeError("boom")

    @app.websocket("/async")
    async def async_handler() -> None:
        await websocket.send("ready")
        raise RuntimeError("boom")

    srv = serve(app)
    for path in ("/sync", "/async"):
        with caplog.at_level(logging.ERROR), connect(srv.ws_url + path) as ws:
            assert ws.recv(timeout=5) == "ready"
            assert closed(ws).code == 1011
    assert sum("Exception on /" in r.getMessage() for r in caplog.records) == 2


def test_unhandled_error_reaches_the_teardowns(serve: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """As Flask passes a request's unhandled error to teardown_request; a
    handled one (an errorhandler's response) is not an error there either."""
    app = make_app()
    assert not app.config["PROPAGATE_EXCEPTIONS"] and not app.testing and not app.debug  # production
    seen: list[tuple[str, str, BaseException | None]] = []
    done = threading.Semaphore(0)

    class Handled(Exception):
        pass

    @app.errorhandler(Handled)
    def handled(exc: Handled) -> tuple[str, int]:
        return "handled", 409

    @app.teardown_websocket
    def teardown_websocket(exc: BaseException | None) -> None:
        seen.append(("teardown_websocket", websocket.path, exc))

    @app.teardown_request
    def teardown_request(exc: BaseException | None) -> None:
        seen.append(("teardown_request", request.path, exc))
        done.release()

    @app.websocket("/sync/<when>")
    def sync_handler(when: str) -> None:
        if when == "after":
            websocket.send("ready")
        raise Handled() if when == "handled" else RuntimeError(when)

    @app.websocket("/async/<when>")
    async def async_handler(when: str) -> None:
        if when == "after":
            await websocket.send("ready")
        raise Handled() if when == "handled" else RuntimeError(when)

    srv = serve(app)
    for kind in ("sync", "async"):
        with caplog.at_level(logging.CRITICAL, logger=app.logger.name):
            assert refused(f"{srv.ws_url}/{kind}/before").status_code == 500
            with connect(f"{srv.ws_url}/{kind}/after") as ws:
                assert ws.recv(timeout=5) == "ready"
                assert closed(ws).code == 1011
            assert refused(f"{srv.ws_url}/{kind}/handled").status_code == 409
        for when in ("before", "after", "handled"):
            assert done.acquire(timeout=5), (kind, when, seen)
            path = f"/{kind}/{when}"
            hooks = [(name, exc) for name, at, exc in seen if at == path]
            assert [name for name, _ in hooks] == ["teardown_websocket", "teardown_request"], seen
            for name, exc in hooks:
                if when == "handled":
                    assert exc is None, (path, name)
                else:
                    assert isinstance(exc, RuntimeError) and str(exc) == when, (path, name, exc)


def test_close_code_and_reason_and_return_closes_1000(serve: t.Any) -> None:
    app = make_app()

    @app.websocket("/close")
    async def close_handler() -> None:
        await websocket.send("bye soon")
        await websocket.close(4001, "go away")
        await websocket.close(4002, "ignored")  # closing again does nothing

    @app.websocket("/return")
    def return_handler() -> t.Any:
        websocket.send("done")
        return "finished"

    srv = serve(app)
    with connect(srv.ws_url + "/close") as ws:
        assert ws.recv(timeout=5) == "bye soon"
        frame = closed(ws)
        assert (frame.code, frame.reason) == (4001, "go away")
    with connect(srv.ws_url + "/return") as ws:
        assert ws.recv(timeout=5) == "done"
        assert closed(ws).code == 1000


# -- the client going away -----------------------------------------------------------------


def test_client_disconnect_reaches_waiting_handlers(serve: t.Any) -> None:
    app = make_app()
    seen: dict[str, BaseException | None] = {}
    torn_down: dict[str, threading.Event] = {}
    after: list[str] = []

    @app.after_websocket
    def after_hook(response: t.Any) -> t.Any:
        after.append(websocket.endpoint)
        return response

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        seen[websocket.endpoint] = exc
        torn_down[websocket.endpoint].set()

    @app.websocket("/sync-receive")
    def sync_receive() -> None:
        websocket.send("ready")
        websocket.receive()

    @app.websocket("/async-receive")
    async def async_receive() -> None:
        await websocket.send("ready")
        await websocket.receive()

    @app.websocket("/sync-elsewhere")
    def sync_elsewhere() -> None:
        from flask_asyncws import await_

        websocket.send("ready")
        await_(asyncio.sleep(60))

    @app.websocket("/async-elsewhere")
    async def async_elsewhere() -> None:
        await websocket.send("ready")
        await asyncio.sleep(60)

    @app.websocket("/sync-elsewhere-after-receiving")
    def sync_elsewhere_after_receiving() -> None:
        from flask_asyncws import await_

        websocket.send("ready")
        websocket.send(websocket.receive())  # reading directly: no watcher while it waited here
        await_(asyncio.sleep(60))  # so waiting elsewhere must start one

    @app.websocket("/async-elsewhere-after-receiving")
    async def async_elsewhere_after_receiving() -> None:
        await websocket.send("ready")
        await websocket.send(await websocket.receive())
        await asyncio.sleep(60)

    srv = serve(app)
    endpoints = ("sync_receive", "async_receive", "sync_elsewhere", "async_elsewhere")
    for endpoint in (*endpoints, "sync_elsewhere_after_receiving", "async_elsewhere_after_receiving"):
        torn_down[endpoint] = threading.Event()
        with connect(f"{srv.ws_url}/{endpoint.replace('_', '-')}") as ws:
            assert ws.recv(timeout=5) == "ready"
            if endpoint.endswith("after_receiving"):
                ws.send("echo me")
                assert ws.recv(timeout=5) == "echo me"
            ws.close(4000, "leaving")
        assert torn_down[endpoint].wait(5), endpoint
        exc = seen[endpoint]
        assert isinstance(exc, WebsocketDisconnect), (endpoint, exc)
        if srv.server == "uvicorn":
            assert (exc.code, exc.reason) == (4000, "leaving")
        else:
            assert exc.code == 1006  # hypercorn reports 1006 for every client close
    assert after == []  # the handlers did not return: after hooks are for handlers that finish


def test_send_after_disconnect_raises(serve: t.Any) -> None:
    app = make_app()
    outcome: list[BaseException] = []
    done = threading.Event()

    @app.websocket("/ws")
    def handler() -> None:
        from flask_asyncws import await_

        websocket.send("ready")
        try:
            while True:
                websocket.send("tick")
                await_(asyncio.sleep(0.01))
        except WebsocketDisconnect as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "ready"
    assert done.wait(5)
    assert isinstance(outcome[0], WebsocketDisconnect)


@pytest.mark.parametrize("mode", ["greenlet", "thread", "async"])
def test_send_raising_oserror_leaves_the_server_task_as_it_was(mode: str) -> None:
    """ASGI 2.4: a server's send may raise OSError once the client is gone
    (uvicorn does). The handler sees the departure, and the server's own code
    after the app returns runs in a task with no cancellation pending."""
    app = make_app()
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread" if mode == "thread" else "greenlet"
    torn_down: list[BaseException | None] = []

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(exc)

    @app.websocket("/sync")
    def sync_sender() -> None:
        while True:
            websocket.send("tick")

    @app.websocket("/async")
    async def async_sender() -> None:
        while True:
            await websocket.send("tick")

    scope = app.test_client().websocket("/async" if mode == "async" else "/sync").scope
    outcome: list[str] = []

    async def server() -> None:
        gone = asyncio.get_running_loop().create_future()
        connected = False

        async def receive() -> dict[str, t.Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await gone
            return {"type": "websocket.disconnect", "code": 1006}

        async def send(message: dict[str, t.Any]) -> None:
            if message["type"] == "websocket.send":
                if not gone.done():
                    gone.set_result(None)
                raise ConnectionResetError("the client is gone")

        task = asyncio.current_task()
        assert task is not None
        cancelling = getattr(task, "cancelling", lambda: 0)
        before = cancelling()
        await app.asgi_app(scope, receive, send)  # type: ignore[attr-defined]
        outcome.append(f"cancelling {cancelling() - before:+d}")
        try:
            await asyncio.sleep(0)  # what a server does next, e.g. closing the transport
        except asyncio.CancelledError:
            outcome.append("cancelled")
        else:
            outcome.append("ran")

    asyncio.run(asyncio.wait_for(server(), 10))
    assert outcome == ["cancelling +0", "ran"]
    assert len(torn_down) == 1 and isinstance(torn_down[0], WebsocketDisconnect), torn_down


# uvicorn's ``websockets`` protocol is deprecated, but shipped, and the one whose send raises.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The `websockets` implementation is deprecated")
def test_send_raising_oserror_under_uvicorn_leaves_the_server_task_as_it_was() -> None:
    """The same over a real server: uvicorn's ``websockets`` protocol raises
    from send when the client resets the connection mid-send. The server's
    own code after the app (here an ASGI middleware) must still run."""
    app = make_app()
    torn_down = threading.Event()

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        torn_down.set()

    @app.websocket("/flood")
    def flood() -> None:
        while True:
            websocket.send("x" * 65536)

    outcomes: list[tuple[bool, str]] = []

    async def server_side(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "websocket":
            return await app.asgi_app(scope, receive, send)  # type: ignore[attr-defined, no-any-return]
        raised = False

        async def recording_send(message: dict[str, t.Any]) -> None:
            nonlocal raised
            try:
                await send(message)
            except OSError:
                raised = True
                raise

        await app.asgi_app(scope, receive, recording_send)  # type: ignore[attr-defined]
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            outcomes.append((raised, "cancelled"))
            raise
        outcomes.append((raised, "ran"))

    with LiveServer(server_side, "uvicorn", ws="websockets") as server:
        for attempt in range(3):
            torn_down.clear()
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                raw.sendall(
                    b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                received = b""
                while len(received) < 8192:  # the handler is sending: the server's buffer fills
                    chunk = raw.recv(4096)
                    assert chunk, received
                    received += chunk
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            assert torn_down.wait(5), attempt
            deadline = time.monotonic() + 5
            while len(outcomes) <= attempt:
                assert time.monotonic() < deadline, outcomes
                time.sleep(0.01)
    assert outcomes == [(True, "ran")] * 3


MESSAGES_BEFORE_CLOSE = 50


@pytest.mark.parametrize("mode", ["greenlet", "thread", "async"])
def test_messages_sent_before_a_close_all_reach_receive(serve: t.Any, mode: str) -> None:
    """A client that sends and closes at once: every message first, then the disconnect."""
    seen = _receive_until_disconnect(serve, mode)
    assert seen["received"] == [str(i) for i in range(MESSAGES_BEFORE_CLOSE)]
    assert seen["raised"] == seen["teardown"]  # the handler let the disconnect propagate


@pytest.mark.parametrize("caught", [False, True])
def test_teardown_sees_the_same_disconnect_in_every_mode(serve: t.Any, caught: bool) -> None:
    modes = ("greenlet", "thread", "async")
    seen = {mode: _receive_until_disconnect(serve, mode, caught=caught)["teardown"] for mode in modes}
    # A handler that lets the disconnect propagate ends with it; one that catches it ends cleanly.
    assert seen["greenlet"] == (None if caught else ("WebsocketDisconnect", *seen["greenlet"][1:]))
    assert seen["thread"] == seen["greenlet"] == seen["async"]


def _receive_until_disconnect(serve: t.Any, mode: str, *, caught: bool = False) -> dict[str, t.Any]:
    """Serve a handler in ``mode`` that receives until the client's close; what it saw.

    The handler lets the disconnect propagate, or with ``caught`` returns.
    """
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread" if mode == "thread" else "greenlet"
    AsyncWS(app)
    seen: dict[str, t.Any] = {"received": []}
    torn_down = threading.Event()

    def describe(exc: BaseException | None) -> t.Any:
        return exc if exc is None else (type(exc).__name__, getattr(exc, "code", None), getattr(exc, "reason", None))

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        seen["teardown"] = describe(exc)
        torn_down.set()

    if mode == "async":

        @app.websocket("/ws")
        async def handler() -> None:
            await websocket.send("ready")
            try:
                while True:
                    seen["received"].append(await websocket.receive())
            except BaseException as exc:
                seen["raised"] = describe(exc)
                if not caught:
                    raise

    else:

        @app.websocket("/ws")
        def handler() -> None:
            websocket.send("ready")
            try:
                while True:
                    seen["received"].append(websocket.receive())
            except BaseException as exc:
                seen["raised"] = describe(exc)
                if not caught:
                    raise

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "ready"
        for i in range(MESSAGES_BEFORE_CLOSE):
            ws.send(str(i))
    assert torn_down.wait(10)
    return seen


# -- context -------------------------------------------------------------------------------


def test_handshake_urls_and_attributes_as_in_quart(serve: t.Any) -> None:
    """The request attributes a Flask or Quart user reaches for, with the ws scheme, under a root path."""
    app = make_app()

    @app.websocket("/ws/<name>")
    def handler(name: str) -> None:
        ws = websocket._get_current_object()  # type: ignore[attr-defined]
        websocket.send_json(
            {
                name: getattr(ws, name)
                for name in ("url", "base_url", "host_url", "root_url", "url_root", "root_path", "script_root")
            }
            | {
                "http_version": ws.http_version,
                "server": list(ws.server),
                "accept_languages": ws.accept_languages.best_match(["de", "fr", "en"]),
                "routing_exception": ws.routing_exception,
            }
        )

    srv = serve(app, root_path="/app")
    base = f"ws://127.0.0.1:{srv.port}"
    path = "/app/ws/x" if srv.server == "hypercorn" else "/ws/x"  # uvicorn: a proxy removed the prefix
    with connect(f"{base}{path}?a=1", additional_headers={"Accept-Language": "fr;q=0.9, en;q=0.5"}) as ws:
        got = json.loads(ws.recv(timeout=5))
    assert got == {
        "url": f"{base}/app/ws/x?a=1",
        "base_url": f"{base}/app/ws/x",
        "host_url": f"{base}/",
        "root_url": f"{base}/app/",
        "url_root": f"{base}/app/",
        "root_path": "/app",
        "script_root": "/app",
        "http_version": "1.1",
        "server": ["127.0.0.1", srv.port],
        "accept_languages": "fr",
        "routing_exception": None,
    }


PAGE = """<script>
const path = {{ websocket_path("chat", room=room, x="1&2")|tojson }};
const scheme = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${scheme}://${location.host}${path}`);
</script>"""


def test_a_page_gets_a_websocket_path_as_the_readme_shows(serve: t.Any) -> None:
    """Werkzeug builds websocket URLs absolute even with _external=False; the README's
    context processor gives a page the path, root path and query included."""
    from urllib.parse import urlsplit

    from flask import render_template_string

    app = make_app()

    @app.context_processor
    def websocket_paths() -> dict[str, t.Any]:
        def websocket_path(endpoint: str, **values: t.Any) -> str:
            url = urlsplit(url_for(endpoint, **values))  # ws://host/app/chat/lobby?x=1
            return f"{url.path}?{url.query}" if url.query else url.path  # /app/chat/lobby?x=1

        return {"websocket_path": websocket_path}

    @app.route("/page/<room>")
    def page(room: str) -> str:
        assert url_for("chat", room=room, _external=False).startswith("ws://")  # why the recipe exists
        return render_template_string(PAGE, room=room)

    @app.websocket("/chat/<room>")
    def chat(room: str) -> None:
        websocket.send(f"{room} {websocket.args['x']}")

    import httpx

    srv = serve(app, root_path="/app")
    prefix = "/app" if srv.server == "hypercorn" else ""  # uvicorn: a proxy removed the prefix
    html = httpx.get(f"{srv.http_url}{prefix}/page/a b").text
    path = json.loads(html.split("const path = ", 1)[1].split(";\n", 1)[0])
    assert path == "/app/chat/a%20b?x=1%262"
    with connect(f"ws://127.0.0.1:{srv.port}{prefix}{path.removeprefix('/app')}") as ws:
        assert ws.recv(timeout=5) == "a b 1&2"


def test_session_from_http_login_and_flask_globals(serve: t.Any) -> None:
    app = make_app()

    @app.post("/login")
    def login() -> str:
        session["user"] = request.form["name"]
        return "ok"

    @app.before_websocket
    def require_login() -> None:
        if "user" not in session:
            abort(401)
        g.user = session["user"]

    @app.websocket("/me")
    def me() -> None:
        websocket.send_json(
            {
                "user": g.user,
                "app": current_app_name(),
                "url": url_for("me"),
                "http": url_for("login", _external=True),
                "path": websocket.path,
                "scheme": websocket.scheme,
                "url_self": websocket.url,
                "cookie": "session" in websocket.cookies,
            }
        )

    srv = serve(app)
    assert refused(srv.ws_url + "/me").status_code == 401

    import httpx

    with httpx.Client(base_url=srv.http_url) as client:
        assert client.post("/login", data={"name": "ada"}).text == "ok"
        cookie = client.cookies["session"]
    host = f"127.0.0.1:{srv.port}"
    with connect(srv.ws_url + "/me?x=1", additional_headers={"Cookie": f"session={cookie}"}) as ws:
        import json

        data = json.loads(ws.recv(timeout=5))
    assert data == {
        "user": "ada",
        "app": "test_websocket",
        "url": f"ws://{host}/me",
        "http": f"http://{host}/login",
        "path": "/me",
        "scheme": "ws",
        "url_self": f"ws://{host}/me?x=1",
        "cookie": True,
    }


def current_app_name() -> str:
    from flask import current_app

    return current_app.name


def test_request_teardowns_run_and_session_changes_warn(serve: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    events: list[str] = []
    done = threading.Event()

    @app.teardown_request
    def teardown_request(exc: BaseException | None) -> None:
        events.append("teardown_request")

    @app.teardown_appcontext
    def teardown_appcontext(exc: BaseException | None) -> None:
        events.append("teardown_appcontext")
        done.set()

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send("hi")
        session["changed"] = True

    srv = serve(app)
    with caplog.at_level(logging.WARNING), connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "hi"
        assert done.wait(5)
    assert events == ["teardown_request", "teardown_appcontext"]
    assert any("session was modified" in r.getMessage() for r in caplog.records)


def test_g_is_isolated_across_200_concurrent_connections(serve: t.Any) -> None:
    app = make_app()

    @app.websocket("/sync/<int:n>")
    def sync_handler(n: int) -> None:
        g.n = n
        for _ in range(3):
            message = websocket.receive()
            websocket.send(f"{g.n}:{request.view_args['n']}:{websocket.view_args['n']}:{message}")

    @app.websocket("/async/<int:n>")
    async def async_handler(n: int) -> None:
        g.n = n
        for _ in range(3):
            message = await websocket.receive()
            await asyncio.sleep(0)
            await websocket.send(f"{g.n}:{request.view_args['n']}:{websocket.view_args['n']}:{message}")

    srv = serve(app)

    async def client(n: int) -> list[str]:
        from websockets.asyncio.client import connect as aconnect

        kind = "sync" if n % 2 else "async"
        async with aconnect(f"{srv.ws_url}/{kind}/{n}") as ws:
            replies = []
            for i in range(3):
                await ws.send(str(i))
                replies.append(await ws.recv())
            return replies

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(client(n) for n in range(200)))

    results = asyncio.run(main())
    for n, replies in enumerate(results):
        assert replies == [f"{n}:{n}:{n}:{i}" for i in range(3)]


def test_idle_sync_connections_use_no_threads(serve: t.Any) -> None:
    app = make_app()
    opened = threading.Semaphore(0)

    @app.websocket("/idle")
    def idle() -> None:
        websocket.accept()
        opened.release()
        websocket.receive()

    srv = serve(app)
    before = threading.active_count()

    async def main() -> int:
        from websockets.asyncio.client import connect as aconnect

        sockets = [await aconnect(srv.ws_url + "/idle") for _ in range(100)]
        for _ in range(100):
            assert await asyncio.to_thread(opened.acquire, True, 5)
        during = threading.active_count()
        for ws in sockets:
            await ws.close()
        return during

    during = asyncio.run(main())
    # asyncio.to_thread above may start a few executor threads in this client loop, not the server.
    assert during - before < 10


def test_idle_connections_hold_a_greenlet_only_for_sync_handlers() -> None:
    """An async handler runs in the connection's task: once its sync hooks
    have run, a waiting connection holds no greenlet. A sync handler holds one."""
    for server_name in SERVERS:  # in one test: a plain node ID, selectable from any shell
        _check_idle_greenlets(server_name)


def _check_idle_greenlets(server_name: str) -> None:
    import gc

    from flask_asyncws._bridge import BridgeGreenlet

    app = make_app()
    opened = threading.Semaphore(0)
    teardowns: list[str] = []

    @app.before_websocket
    def who() -> None:
        g.user = websocket.args["user"]

    @app.teardown_websocket
    def done(exc: BaseException | None) -> None:
        teardowns.append(g.user)

    @app.websocket("/sync")
    def sync_idle() -> None:
        websocket.send(g.user)
        opened.release()
        websocket.receive()

    @app.websocket("/async")
    async def async_idle() -> None:
        await websocket.send(g.user)
        opened.release()
        await websocket.receive()

    def live_greenlets() -> int:
        return sum(type(o) is BridgeGreenlet and o.busy for o in gc.get_objects())  # idle ones wait for reuse

    srv = LiveServer(app.asgi_app, server_name).start()

    async def hold(path: str, count: int) -> int:
        from websockets.asyncio.client import connect as aconnect

        sockets = [await aconnect(f"{srv.ws_url}{path}?user={path[1:]}{n}") for n in range(count)]
        try:
            for n, ws in enumerate(sockets):
                assert await ws.recv() == f"{path[1:]}{n}"  # the before hook's g, in the handler
            for _ in range(count):
                assert await asyncio.to_thread(opened.acquire, True, 5)
            return live_greenlets()
        finally:
            for ws in sockets:
                await ws.close()

    try:
        assert asyncio.run(hold("/async", 20)) == 0, server_name
        assert asyncio.run(hold("/sync", 20)) == 20, server_name
        deadline = time.monotonic() + 5
        while len(teardowns) < 40:
            assert time.monotonic() < deadline, (server_name, teardowns)
            time.sleep(0.01)
        assert sorted(teardowns) == sorted([f"async{n}" for n in range(20)] + [f"sync{n}" for n in range(20)])
        assert live_greenlets() == 0
    finally:
        srv.stop()


def test_async_hooks_run_on_the_server_loop(serve: t.Any) -> None:
    app = make_app()
    loops: list[asyncio.AbstractEventLoop] = []

    @app.before_websocket
    async def before() -> None:
        loops.append(asyncio.get_running_loop())

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send("ok")

    srv = serve(app)
    for _ in range(2):
        with connect(srv.ws_url + "/ws") as ws:
            assert ws.recv(timeout=5) == "ok"
    assert loops == [srv.loop, srv.loop]


# -- security ------------------------------------------------------------------------


def test_cross_origin_handshake_is_refused(serve: t.Any) -> None:
    app = make_app()
    ran: list[bool] = []

    @app.before_websocket
    def before() -> None:
        ran.append(True)

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send("ok")

    srv = serve(app)
    response = refused(srv.ws_url + "/ws", origin="http://evil.example")
    assert response.status_code == 403
    assert ran == []
    for origin in (f"http://127.0.0.1:{srv.port}", None):
        with connect(srv.ws_url + "/ws", origin=origin) as ws:
            assert ws.recv(timeout=5) == "ok"


def test_allowed_origins_setting(serve: t.Any) -> None:
    app = Flask(__name__)
    app.config["ASYNCWS_ALLOWED_ORIGINS"] = ["https://app.example"]
    AsyncWS(app)

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send("ok")

    srv = serve(app)
    with connect(srv.ws_url + "/ws", origin="https://app.example") as ws:
        assert ws.recv(timeout=5) == "ok"
    assert refused(srv.ws_url + "/ws", origin="https://other.example").status_code == 403


@pytest.mark.parametrize("trusted", [None, ["127.0.0.1"]])
def test_dns_rebinding_is_refused_with_trusted_hosts(serve: t.Any, trusted: list[str] | None) -> None:
    """A rebound name sends its own Host and Origin, which match each other;
    only Flask's TRUSTED_HOSTS tells the handshake apart (documented)."""
    app = make_app()
    app.config["TRUSTED_HOSTS"] = trusted
    ran: list[str] = []

    @app.websocket("/ws")
    def handler() -> None:
        ran.append("handler")
        websocket.send("hi")

    srv = serve(app)
    rebound = (
        b"GET /ws HTTP/1.1\r\nHost: evil.example:%d\r\nOrigin: http://evil.example:%d\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    ) % (srv.port, srv.port)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        raw.sendall(rebound)
        status = raw.recv(65536).split(b"\r\n", 1)[0]
    if trusted is None:
        assert status.startswith(b"HTTP/1.1 101") and ran == ["handler"]
    else:
        assert status.startswith(b"HTTP/1.1 400") and ran == []
        with connect(srv.ws_url + "/ws", origin=f"http://127.0.0.1:{srv.port}") as ws:
            assert ws.recv(timeout=5) == "hi"


# -- misuse ----------------------------------------------------------------------------------


def test_unawaited_call_in_async_handler_fails_loudly(serve: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("first")
        websocket.send("lost?")  # missing await
        await websocket.send("second")

    @app.websocket("/last")
    async def last() -> None:
        await websocket.send("first")
        websocket.send("lost?")  # missing await, and nothing after it

    srv = serve(app)
    for path in ("/ws", "/last"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG), connect(srv.ws_url + path) as ws:
            assert ws.recv(timeout=5) == "first"
            assert closed(ws).code == 1011
        # Logged once, as the handler's unhandled error, with its traceback.
        about = [r for r in caplog.records if "without 'await'" in r.getMessage() + str(r.exc_info and r.exc_info[1])]
        assert len(about) == 1, [r.getMessage() for r in about]
        assert about[0].getMessage() == f"Exception on {path} [GET]"
        assert "websocket.send() was called without 'await'" in str(about[0].exc_info[1])  # type: ignore[index]


def test_calls_awaited_later_or_run_as_tasks_are_not_mistaken_for_misuse(
    serve: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        held = websocket.send("held")  # awaited only after another call
        await websocket.send("first")
        await held
        pending = asyncio.create_task(websocket.send("task"))  # not started at the next call
        await websocket.send("second")
        await pending
        never_run = asyncio.create_task(websocket.receive())
        never_run.cancel()  # cancelled before it ever ran
        await asyncio.gather(never_run, return_exceptions=True)
        assert never_run.cancelled()
        await asyncio.gather(websocket.send("gathered"), websocket.send("together"))
        await websocket.send("done")

    srv = serve(app)
    with caplog.at_level(logging.ERROR), connect(srv.ws_url + "/ws") as ws:
        received = [ws.recv(timeout=5) for _ in range(7)]
        assert closed(ws).code == 1000
    # The task's send may come before or after "second", depending on the server.
    assert received[:2] == ["first", "held"] and sorted(received[2:4]) == ["second", "task"]
    assert sorted(received[4:6]) == ["gathered", "together"] and received[6] == "done"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_call_from_another_thread_fails_loudly(serve: t.Any) -> None:
    app = make_app()
    errors: list[BaseException] = []

    @app.websocket("/ws")
    def handler() -> None:
        ws = websocket._get_current_object()  # type: ignore[attr-defined]

        def from_thread() -> None:
            try:
                ws.send("from a thread")
            except RuntimeError as exc:
                errors.append(exc)

        from flask_asyncws import run_sync

        run_sync(from_thread)
        websocket.send("done")

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "done"
    assert "called from another thread" in str(errors[0])


def test_run_sync_keeps_the_loop_free(serve: t.Any) -> None:
    app = make_app()
    started = threading.Event()
    release = threading.Event()

    @app.websocket("/blocking")
    def blocking() -> None:
        from flask_asyncws import run_sync

        websocket.accept()
        websocket.send(run_sync(lambda: (started.set(), release.wait(10), current_app_name())[2]))

    @app.websocket("/echo")
    def echo() -> None:
        websocket.send(websocket.receive())

    srv = serve(app)
    with connect(srv.ws_url + "/blocking") as slow:
        assert started.wait(5)
        with connect(srv.ws_url + "/echo") as fast:
            fast.send("while blocked")
            assert fast.recv(timeout=5) == "while blocked"
        release.set()
        assert slow.recv(timeout=5) == "test_websocket"


# -- thread mode ---------------------------------------------------------------------


def test_thread_mode_runs_sync_handlers_in_their_own_thread(serve: t.Any) -> None:
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread"
    AsyncWS(app)
    torn_down = threading.Event()
    seen: list[t.Any] = []

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        seen.append(exc)
        torn_down.set()

    @app.websocket("/echo")
    def echo() -> None:
        import time

        websocket.send(threading.current_thread().name)
        while True:
            message = websocket.receive()
            time.sleep(0.01)  # blocks this thread only
            websocket.send(f"{g.get('x', 'g ok')}:{message}")

    @app.websocket("/async")
    async def still_async() -> None:
        await websocket.send(threading.current_thread().name)

    srv = serve(app)
    with connect(srv.ws_url + "/echo") as ws, connect(srv.ws_url + "/echo") as other:
        # The path is the client's: quoted, as thread names reach log lines.
        assert ws.recv(timeout=5) == "flask_asyncws '/echo'"
        assert other.recv(timeout=5) == "flask_asyncws '/echo'"
        ws.send("a")
        other.send("b")
        assert ws.recv(timeout=5) == "g ok:a"
        assert other.recv(timeout=5) == "g ok:b"
    assert torn_down.wait(5)
    assert isinstance(seen[0], WebsocketDisconnect)
    with connect(srv.ws_url + "/async") as ws:
        assert ws.recv(timeout=5) != "flask_asyncws '/async'"


def test_thread_mode_interrupts_a_thread_waiting_elsewhere(serve: t.Any) -> None:
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread"
    AsyncWS(app)
    outcome: list[BaseException] = []
    done = threading.Event()

    @app.websocket("/wait")
    def wait() -> None:
        from flask_asyncws import await_

        websocket.send("ready")
        try:
            await_(asyncio.sleep(60))
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()

    srv = serve(app)
    with connect(srv.ws_url + "/wait") as ws:
        assert ws.recv(timeout=5) == "ready"
    assert done.wait(5)
    assert isinstance(outcome[0], WebsocketDisconnect)


def test_thread_mode_handlers_can_use_run_sync_and_await(serve: t.Any) -> None:
    """Switching modes keeps run_sync() working: in the handler's own thread it
    calls the function there; await_() runs a coroutine on the server's loop."""
    from flask import current_app

    from flask_asyncws import await_, run_sync

    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread"
    AsyncWS(app)
    loops: list[int] = []

    async def on_the_loop() -> str:
        loops.append(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return f"await_ {websocket.path}"

    @app.websocket("/ws")
    def handler() -> None:
        g.x = "g"
        websocket.send(run_sync(lambda n: f"run_sync {current_app.name} {websocket.path} {g.x} {n}", 1))
        websocket.send(run_sync(lambda: threading.current_thread().name))
        websocket.send(await_(on_the_loop()))

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "run_sync test_websocket /ws g 1"
        assert ws.recv(timeout=5) == "flask_asyncws '/ws'"  # the handler's own thread (the path quoted)
        assert ws.recv(timeout=5) == "await_ /ws"
        assert closed(ws).code == 1000
    assert loops == [id(srv.loop)]


def test_thread_mode_handler_busy_elsewhere_learns_of_the_departure_from_the_websocket(serve: t.Any) -> None:
    """A thread blocked outside the websocket when the client leaves: its next
    receive still returns what was sent before, its next send or wait raises."""
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread"
    AsyncWS(app)
    client_gone = threading.Event()
    outcome: dict[str, t.Any] = {}
    torn_down = threading.Semaphore(0)

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        torn_down.release()

    def busy_until_the_client_left() -> None:
        websocket.send("ready")
        assert client_gone.wait(5)
        deadline = time.monotonic() + 5
        while not websocket.closed and time.monotonic() < deadline:
            time.sleep(0.005)  # blocked, not waiting on the loop, while the server notices
        assert websocket.closed

    @app.websocket("/receive")
    def receive() -> None:
        busy_until_the_client_left()
        received = []
        try:
            while True:
                received.append(websocket.receive())
        except WebsocketDisconnect as exc:
            outcome["receive"] = (received, type(exc))

    @app.websocket("/send")
    def send() -> None:
        busy_until_the_client_left()
        try:
            websocket.send("late")
        except WebsocketDisconnect as exc:
            outcome["send"] = type(exc)

    @app.websocket("/elsewhere")
    def elsewhere() -> None:
        from flask_asyncws import await_

        busy_until_the_client_left()
        try:
            await_(asyncio.sleep(60))
        except WebsocketDisconnect as exc:
            outcome["elsewhere"] = type(exc)

    srv = serve(app)
    for path in ("receive", "send", "elsewhere"):
        client_gone.clear()
        with connect(f"{srv.ws_url}/{path}") as ws:
            assert ws.recv(timeout=5) == "ready"
            if path == "receive":
                for message in ("a", "b", "c"):
                    ws.send(message)
        client_gone.set()
        assert torn_down.acquire(timeout=10), path
    assert outcome == {
        "receive": (["a", "b", "c"], WebsocketDisconnect),
        "send": WebsocketDisconnect,
        "elsewhere": WebsocketDisconnect,
    }


# -- server shutdown -------------------------------------------------------------------


@pytest.mark.parametrize("server", [pytest.param("hypercorn", marks=needs_hypercorn_cancel), "uvicorn"])
def test_server_shutdown_closes_sockets_and_runs_teardown(server: str) -> None:
    from support.servers import LiveServer

    app = make_app()
    seen: list[BaseException | None] = []
    popped = threading.Event()

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        seen.append(exc)

    @app.teardown_appcontext
    def appcontext_gone(exc: BaseException | None) -> None:
        if len(seen) == 2:
            popped.set()

    @app.websocket("/sync")
    def sync_handler() -> None:
        websocket.send("ready")
        websocket.receive()

    @app.websocket("/async")
    async def async_handler() -> None:
        await websocket.send("ready")
        await asyncio.sleep(60)

    srv = LiveServer(app.asgi_app, server).start()
    with connect(srv.ws_url + "/sync") as first, connect(srv.ws_url + "/async") as second:
        assert first.recv(timeout=5) == second.recv(timeout=5) == "ready"
        stopping = threading.Thread(target=srv.stop)
        stopping.start()
        codes = {closed(first).code, closed(second).code}
        stopping.join(10)
    assert codes == ({1001} if server == "hypercorn" else {1012})
    assert popped.wait(5)
    assert len(seen) == 2


def test_websocket_calls_work_as_tasks_and_with_wait_for(serve: t.Any) -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        receiving = asyncio.create_task(websocket.receive())
        await websocket.send("ready")
        first = await receiving
        try:
            await asyncio.wait_for(websocket.receive(), 0.05)
        except asyncio.TimeoutError:
            await websocket.send(f"{first} then a timeout")
        second, _ = await asyncio.gather(websocket.receive(), websocket.send("gathered"))
        await websocket.send(second)

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "ready"
        ws.send("one")
        assert ws.recv(timeout=5) == "one then a timeout"
        assert ws.recv(timeout=5) == "gathered"
        ws.send("two")
        assert ws.recv(timeout=5) == "two"
        assert closed(ws).code == 1000


def test_misuse_errors_say_what_to_do() -> None:
    # Both servers in one test: a plain node ID, selectable from any shell.
    for server_name in SERVERS:
        _check_misuse_errors(server_name)


def _check_misuse_errors(server_name: str) -> None:
    app = make_app()
    errors: list[str] = []

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        first = asyncio.create_task(websocket.receive())
        await asyncio.sleep(0)
        try:
            await websocket.receive()
        except RuntimeError as exc:
            errors.append(str(exc))
        try:
            await websocket.send(42)  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(str(exc))
        try:
            await websocket.close(1006)
        except ValueError as exc:
            errors.append(str(exc))
        # Only now may the client send: a message that arrived earlier would
        # have completed ``first`` before the second receive.
        await websocket.send("checked")
        await websocket.send(await first)

    with LiveServer(app.asgi_app, server_name) as srv, connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "checked"
        ws.send("after the errors")
        assert ws.recv(timeout=5) == "after the errors"
    assert len(errors) == 3, (server_name, errors)
    assert "receive from one task only" in errors[0]
    assert "use send_json() for other objects" in errors[1]
    assert "not a close code an endpoint may send" in errors[2]
