"""The websocket test client: ``app.test_client().websocket(path)``."""

from __future__ import annotations

import asyncio
import gc
import typing as t

import greenlet
import pytest
from flask import Flask, session
from flask.testing import FlaskClient

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket
from flask_asyncws.testing import TestWebsocket, WebsocketClientMixin, WebsocketResponseError


def make_app(subdomain_matching: bool = False, **config: t.Any) -> Flask:
    app = Flask(__name__, subdomain_matching=subdomain_matching)
    app.secret_key = "test"
    app.config.update(config)
    AsyncWS(app)
    return app


@pytest.fixture
def app() -> Flask:
    app = make_app()
    app.events = []  # type: ignore[attr-defined]

    @app.websocket("/echo")
    def echo() -> None:
        while True:
            websocket.send(websocket.receive())

    @app.websocket("/aecho")
    async def aecho() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.websocket("/json")
    def json_echo() -> None:
        websocket.send_json({"got": websocket.receive_json()})

    @app.websocket("/handshake")
    def handshake() -> None:
        websocket.accept(headers={"X-Extra": "1"}, subprotocol="chat")
        websocket.send_json(
            {
                "offered": websocket.requested_subprotocols,
                "args": websocket.args.to_dict(flat=False),
                "x-custom": websocket.headers.get("X-Custom"),
                "user": websocket.authorization.username if websocket.authorization else None,
                "remote_addr": websocket.remote_addr,
                "host": websocket.host,
                "url": websocket.url,
            }
        )

    @app.websocket("/silent")
    def silent() -> None:
        websocket.accept()
        websocket.receive()

    @app.websocket("/closes")
    def closes() -> None:
        websocket.send("bye soon")
        websocket.close(4001, "done here")

    @app.websocket("/refuse")
    def refuse() -> t.Any:
        session["refused"] = True
        return {"error": "nope"}, 401, {"X-Reason": "nope"}

    @app.websocket("/close-first")
    def close_first() -> None:
        websocket.close(4002)

    @app.websocket("/recorded")
    def recorded() -> None:
        try:
            while True:
                websocket.receive()
        except WebsocketDisconnect as exc:
            app.events.append(("disconnect", exc.code, exc.reason))  # type: ignore[attr-defined]
            raise

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        app.events.append(("teardown", websocket.path))  # type: ignore[attr-defined]

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.get("/page")
    def page() -> str:
        return "a page"

    @app.websocket("/whoami")
    def whoami() -> None:
        websocket.send(session.get("user", "anonymous"))

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- messaging -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/echo", "/aecho"])
@pytest.mark.parametrize("message", ["hello", "", "é ✓", b"\x00\xff", b""])
def test_echo(client: FlaskClient, path: str, message: str | bytes) -> None:
    with client.websocket(path) as ws:
        ws.send(message)
        received = ws.receive()
    assert received == message
    assert type(received) is type(message)


def test_json(client: FlaskClient) -> None:
    with client.websocket("/json") as ws:
        ws.send_json({"a": [1, 2]})
        assert ws.receive_json() == {"got": {"a": [1, 2]}}


def test_send_rejects_other_types(client: FlaskClient) -> None:
    with client.websocket("/echo") as ws:
        with pytest.raises(TypeError, match="send_json"):
            ws.send(3)  # type: ignore[arg-type]


def test_handshake_data(client: FlaskClient) -> None:
    client.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    with client.websocket(
        "/handshake",
        headers={"X-Custom": "yes"},
        query_string={"a": ["1", "2"]},
        subprotocols=["chat", "other"],
        auth=("bob", "secret"),
    ) as ws:
        info = ws.receive_json()
        assert ws.subprotocol == "chat"
        assert ws.accept_headers["X-Extra"] == "1"
    assert info == {
        "offered": ["chat", "other"],
        "args": {"a": ["1", "2"]},
        "x-custom": "yes",
        "user": "bob",
        "remote_addr": "10.0.0.7",
        "host": "localhost",
        "url": "ws://localhost/handshake?a=1&a=2",
    }


def test_query_in_path_and_subdomain() -> None:
    app = make_app(subdomain_matching=True, SERVER_NAME="example.test")

    @app.websocket("/where", subdomain="api")
    def where() -> None:
        websocket.send(websocket.url)

    with app.test_client().websocket("/where?x=1", subdomain="api") as ws:
        assert ws.receive() == "ws://api.example.test/where?x=1"


def test_origin_header_reaches_the_origin_check(client: FlaskClient) -> None:
    with pytest.raises(WebsocketResponseError) as info:
        with client.websocket("/echo", headers={"Origin": "https://elsewhere.example"}):
            pass
    assert info.value.response.status_code == 403


# -- refusal and close -----------------------------------------------------------


def test_refusal(client: FlaskClient, app: Flask) -> None:
    connection = client.websocket("/refuse")
    with pytest.raises(WebsocketResponseError) as info:
        with connection:
            pytest.fail("the block must not run for a refused handshake")
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["X-Reason"] == "nope"
    assert response.get_json() == {"error": "nope"}
    assert response.json == {"error": "nope"}
    # Teardown has run; receiving on the refused connection raises the refusal again.
    assert app.events == [("teardown", "/refuse")]  # type: ignore[attr-defined]
    with pytest.raises(WebsocketResponseError):
        connection.receive()


def test_refusal_cookie_reaches_the_jar(client: FlaskClient) -> None:
    with pytest.raises(WebsocketResponseError):
        with client.websocket("/refuse"):
            pass
    with client.session_transaction() as sess:
        assert sess["refused"] is True


@pytest.mark.parametrize(("path", "status"), [("/nowhere", 404), ("/page", 400), ("/close-first", 403)])
def test_refused_by_status(client: FlaskClient, path: str, status: int) -> None:
    with pytest.raises(WebsocketResponseError) as info:
        with client.websocket(path):
            pass
    assert info.value.response.status_code == status


def test_server_close(client: FlaskClient, app: Flask) -> None:
    with client.websocket("/closes") as ws:
        assert ws.receive() == "bye soon"
        with pytest.raises(WebsocketDisconnect) as info:
            ws.receive()
        assert (info.value.code, info.value.reason) == (4001, "done here")
        # The app has finished by the time the close is reported.
        assert app.events == [("teardown", "/closes")]  # type: ignore[attr-defined]
        with pytest.raises(WebsocketDisconnect):
            ws.receive()
        with pytest.raises(WebsocketDisconnect):
            ws.send("too late")


def test_exit_disconnects_and_waits_for_teardown(client: FlaskClient, app: Flask) -> None:
    with client.websocket("/recorded") as ws:
        ws.send("x")
    assert app.events == [("disconnect", 1000, ""), ("teardown", "/recorded")]  # type: ignore[attr-defined]


def test_client_close_code_and_reason(client: FlaskClient, app: Flask) -> None:
    with client.websocket("/recorded") as ws:
        ws.close(4000, "leaving")
        assert app.events == [("disconnect", 4000, "leaving"), ("teardown", "/recorded")]  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="closed"):
            ws.send("x")
        ws.close()  # again: nothing


def test_test_exception_is_not_masked(client: FlaskClient, app: Flask) -> None:
    with pytest.raises(KeyError):
        with client.websocket("/recorded"):
            raise KeyError("from the test")
    assert app.events[-1] == ("teardown", "/recorded")  # type: ignore[attr-defined]


# -- timeouts --------------------------------------------------------------------


def test_receive_timeout(client: FlaskClient) -> None:
    with client.websocket("/echo") as ws:
        with pytest.raises(TimeoutError, match=r"Waited 0\.05 s .* to send a message"):
            ws.receive(timeout=0.05)
        ws.send("still open")
        assert ws.receive() == "still open"


def test_default_timeout(client: FlaskClient) -> None:
    with client.websocket("/silent", timeout=0.1) as ws:
        with pytest.raises(TimeoutError, match="timeout"):
            ws.receive()


def test_app_that_does_not_finish_is_cancelled() -> None:
    app = make_app()
    cancelled = []

    @app.websocket("/stubborn")
    async def stubborn() -> None:
        try:
            await websocket.receive()
        except WebsocketDisconnect:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    ws = app.test_client().websocket("/stubborn", timeout=0.3)
    with pytest.raises(TimeoutError, match="did not finish"):
        with ws:
            pass
    assert cancelled == [True]


# -- exceptions, as Flask's test client reports them -----------------------------


def boom_app(**config: t.Any) -> Flask:
    app = make_app(**config)

    @app.websocket("/early")
    def early() -> None:
        raise ValueError("before accept")

    @app.websocket("/accept-then-fail")
    def accept_then_fail() -> None:
        websocket.accept()
        raise ValueError("after accept")

    @app.websocket("/late")
    async def late() -> None:
        await websocket.accept()
        await websocket.receive()
        raise ValueError("after accept")

    return app


def test_testing_error_before_accept_reaches_the_test() -> None:
    client = boom_app(TESTING=True).test_client()
    with pytest.raises(ValueError, match="before accept"):
        with client.websocket("/early"):
            pass


def test_testing_error_after_accept_reaches_receive() -> None:
    client = boom_app(TESTING=True).test_client()
    with client.websocket("/late") as ws:
        ws.send("go")
        with pytest.raises(ValueError, match="after accept"):
            ws.receive()


def test_testing_error_after_accept_reaches_exit() -> None:
    client = boom_app(TESTING=True).test_client()
    with pytest.raises(ValueError, match="after accept"):
        with client.websocket("/accept-then-fail"):
            pass


def test_errors_not_propagated_are_observable() -> None:
    client = boom_app(PROPAGATE_EXCEPTIONS=False).test_client()
    with pytest.raises(WebsocketResponseError) as info:
        with client.websocket("/early"):
            pass
    assert info.value.response.status_code == 500
    with client.websocket("/late") as ws:
        ws.send("go")
        with pytest.raises(WebsocketDisconnect) as closed:
            ws.receive()
    assert closed.value.code == 1011


# -- cookies and the session -----------------------------------------------------


def test_session_from_http_login(client: FlaskClient) -> None:
    with client.websocket("/whoami") as ws:
        assert ws.receive() == "anonymous"
    client.post("/login")
    with client.websocket("/whoami") as ws:
        assert ws.receive() == "alice"


def test_accept_cookie_reaches_the_jar() -> None:
    app = make_app()

    @app.websocket("/cookie")
    def cookie() -> None:
        websocket.accept(headers={"Set-Cookie": "theme=dark; Path=/"})

    client = app.test_client()
    with client.websocket("/cookie"):
        pass
    cookie_ = client.get_cookie("theme")
    assert cookie_ is not None and cookie_.value == "dark"


def test_without_cookies(app: Flask) -> None:
    client = app.test_client(use_cookies=False)
    client.post("/login")
    with client.websocket("/whoami") as ws:
        assert ws.receive() == "anonymous"


# -- the client class ------------------------------------------------------------


class CustomClient(FlaskClient):
    def hello(self) -> str:
        return "custom"


@pytest.mark.parametrize("when", ["before", "after"])
def test_custom_test_client_class(when: str) -> None:
    app = Flask(__name__)
    if when == "before":
        app.test_client_class = CustomClient
    AsyncWS(app)
    if when == "after":
        app.test_client_class = CustomClient

    @app.websocket("/ws")
    def ws_route() -> None:
        websocket.send("ok")

    client = app.test_client()
    assert isinstance(client, CustomClient)
    assert isinstance(client, WebsocketClientMixin)
    assert client.hello() == "custom"
    with client.websocket("/ws") as ws:  # type: ignore[attr-defined]
        assert ws.receive() == "ok"


def test_explicit_mixin_is_used_as_is() -> None:
    class MyClient(WebsocketClientMixin, FlaskClient):
        pass

    app = Flask(__name__)
    app.test_client_class = MyClient
    AsyncWS(app)
    assert type(app.test_client()) is MyClient


def test_outside_with_block(client: FlaskClient) -> None:
    ws = client.websocket("/echo")
    assert isinstance(ws, TestWebsocket)
    with pytest.raises(RuntimeError, match="with"):
        ws.send("x")


def test_message_read_with_the_disconnect_is_received() -> None:
    """A message that arrives in the same read as the disconnect must still be
    received by a handler waiting in receive(); the disconnect should come on
    its next receive(). Driven at the ASGI level so both arrive together."""
    app = make_app()
    received: list[str | bytes] = []

    @app.websocket("/last-word")
    def last_word() -> None:
        websocket.accept()
        received.append(websocket.receive())

    scope = app.test_client().websocket("/last-word").scope

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(message: dict[str, t.Any]) -> None:
            if message["type"] == "websocket.accept":
                inbox.put_nowait({"type": "websocket.receive", "text": "go"})
                inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

        await asyncio.wait_for(app.asgi_app(scope, inbox.get, send), 5)  # type: ignore[attr-defined]

    asyncio.run(main())
    assert received == ["go"]


@pytest.mark.parametrize("mode", ["greenlet", "thread"])
def test_messages_sent_before_exit_all_reach_receive(mode: str) -> None:
    """In-process too, every message sent before the with block ends comes first."""
    app = make_app(ASYNCWS_SYNC_HANDLER_MODE=mode)
    received: list[t.Any] = []

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        received.append(("teardown", type(exc)))

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send("ready")
        while True:
            received.append(websocket.receive())

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "ready"
        for i in range(50):
            ws.send(str(i))
    assert received == [*map(str, range(50)), ("teardown", WebsocketDisconnect)]


def test_an_ended_connection_holds_no_greenlet_of_its_thread() -> None:
    """Each test client websocket runs on a thread of its own, which ends with it. A connection object that
    outlives it must hold none of that thread's greenlets: collected later from another thread, a dead thread's
    main greenlet crashed the garbage collector (in greenlet)."""
    app = Flask(__name__)
    AsyncWS(app)
    kept: list[t.Any] = []

    @app.websocket("/sync")
    def sync_handler() -> None:
        kept.append(websocket._get_current_object())  # type: ignore[attr-defined]
        websocket.send(websocket.receive())

    @app.websocket("/async")
    async def async_handler() -> None:
        kept.append(websocket._get_current_object())  # type: ignore[attr-defined]
        await websocket.send(await websocket.receive())

    for path in ("/sync", "/async"):
        with app.test_client().websocket(path) as ws:  # type: ignore[attr-defined]
            ws.send("x")
            assert ws.receive() == "x"
    assert len(kept) == 2
    held = [
        type(referrer).__name__
        for obj in gc.get_objects()
        if isinstance(obj, greenlet.greenlet)
        for referrer in gc.get_referrers(obj)
        if any(referrer is connection for connection in kept)
    ]
    assert held == []
