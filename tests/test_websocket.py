"""Websocket routes end to end: a real server (hypercorn and uvicorn) and a real client."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import typing as t

import pytest
from flask import Flask, abort, g, request, session, url_for
from servers import SERVERS, LiveServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

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

    # The client follows the redirect (a real 302 with a ws:// Location).
    with connect(srv.ws_url + "/redirect") as ws:
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


# -- context -------------------------------------------------------------------------------


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

    from flask_asyncws.bridge import _BridgeGreenlet

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
        return sum(type(o) is _BridgeGreenlet and o.busy for o in gc.get_objects())  # idle ones wait for reuse

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


# -- server shutdown -------------------------------------------------------------------


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
def test_server_shutdown_closes_sockets_and_runs_teardown(server: str) -> None:
    from servers import LiveServer

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
