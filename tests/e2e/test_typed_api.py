"""The typed form: decorators on the extension, its test client and asgi_app."""

from __future__ import annotations

import inspect
import sys
import typing as t

import flask
import pytest
from flask import Flask, Response, session
from websockets.sync.client import connect

from flask_asyncws import AsyncWS, websocket
from flask_asyncws.testing import FlaskClient, WebsocketResponseError


def declare(asyncws: AsyncWS, events: list[str]) -> None:
    """A route and every hook, declared on the extension."""

    @asyncws.before_websocket
    def before() -> None:
        events.append("before")

    @asyncws.after_websocket
    def after(response: Response | None) -> Response | None:
        events.append("after")
        return response

    @asyncws.teardown_websocket
    async def teardown(exc: BaseException | None) -> None:
        events.append("teardown")

    @asyncws.websocket("/echo/<name>", endpoint="echo_ws")
    async def echo(name: str) -> None:
        await websocket.send(f"{name}:{await websocket.receive()}")

    asyncws.add_websocket("/sync", view_func=sync_handler)


def sync_handler() -> None:
    websocket.send("sync")


def test_decorators_with_the_app_form() -> None:
    app = Flask(__name__)
    asyncws = AsyncWS(app)
    events: list[str] = []
    declare(asyncws, events)
    client = asyncws.test_client()
    assert isinstance(client, FlaskClient)
    with client.websocket("/echo/a") as ws:
        ws.send("hi")
        assert ws.receive() == "a:hi"
    assert events == ["before", "after", "teardown"]
    with client.websocket("/sync") as ws:
        assert ws.receive() == "sync"
    with app.test_request_context():
        assert flask.url_for("echo_ws", name="x") == "ws://localhost/echo/x"
    assert asyncws.asgi_app is app.asgi_app  # type: ignore[attr-defined]


def test_decorators_with_an_app_factory_and_several_apps() -> None:
    asyncws = AsyncWS()
    events: list[str] = []
    declare(asyncws, events)

    def create_app() -> Flask:
        app = Flask(__name__)
        asyncws.init_app(app)
        return app

    first, second = create_app(), create_app()
    for app in (first, second):
        with asyncws.test_client(app).websocket("/echo/b") as ws:
            ws.send("x")
            assert ws.receive() == "b:x"
    assert events == ["before", "after", "teardown"] * 2
    # Each app has its own registration, none shared through the extension.
    assert first.view_functions["echo_ws"] is not None
    assert first.url_map is not second.url_map


def test_declared_after_init_app_is_an_error() -> None:
    asyncws = AsyncWS()
    asyncws.init_app(Flask(__name__))
    with pytest.raises(RuntimeError, match="after init_app"):

        @asyncws.websocket("/late")
        def late() -> None:
            pass

    with pytest.raises(RuntimeError, match="after init_app"):
        asyncws.before_serving(lambda: None)


def test_app_form_set_up_on_a_second_app_is_an_error() -> None:
    asyncws = AsyncWS(Flask(__name__))
    asyncws.init_app(Flask(__name__))
    with pytest.raises(RuntimeError, match="after init_app"):
        asyncws.teardown_websocket(lambda exc: None)


def test_methods_option_is_refused_at_once() -> None:
    asyncws = AsyncWS()
    with pytest.raises(TypeError, match="methods"):
        asyncws.websocket("/ws", methods=["POST"])(sync_handler)


def test_without_an_app_test_client_and_asgi_app_say_what_to_do() -> None:
    asyncws = AsyncWS()
    with pytest.raises(RuntimeError, match="pass the app"):
        asyncws.test_client()
    with pytest.raises(RuntimeError, match="asgi_app"):
        asyncws.asgi_app  # noqa: B018
    with pytest.raises(RuntimeError, match="init_app"):
        asyncws.test_client(Flask(__name__))


def test_serving_hooks_on_the_extension_run_under_a_server() -> None:
    from support.servers import LiveServer

    app = Flask(__name__)
    asyncws = AsyncWS(app)
    events: list[str] = []

    @asyncws.before_serving
    async def started() -> None:
        events.append("started")

    @asyncws.after_serving
    def stopped() -> None:
        events.append("stopped")

    @asyncws.websocket("/ws")
    def ws_handler() -> None:
        websocket.send(",".join(events))

    with LiveServer(asyncws.asgi_app, "hypercorn") as server:
        with connect(f"{server.ws_url}/ws") as ws:
            assert ws.recv(timeout=10) == "started"
    assert events == ["started", "stopped"]


def test_default_client_class_is_the_typed_one() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    assert type(app.test_client()) is FlaskClient


# -- the HTTP guard keeps Flask calling it as sync code -----------------------


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is new in Python 3.12")
def test_marked_coroutine_handler_gets_a_sync_guard() -> None:
    app = Flask(__name__)
    asyncws = AsyncWS(app)

    async def handler() -> None:
        await websocket.send("marked")

    def marked() -> t.Any:
        return handler()

    inspect.markcoroutinefunction(marked)  # type: ignore[attr-defined, unused-ignore]
    asyncws.add_websocket("/marked", view_func=marked)
    view = app.view_functions["marked"]
    assert not inspect.iscoroutinefunction(view)
    assert view.__name__ == "marked"
    response = app.test_client().get("/marked", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert response.status_code == 400
    with asyncws.test_client().websocket("/marked") as ws:
        assert ws.receive() == "marked"


# -- cookies of the handshake, through the client's jar ------------------------


def cookie_app() -> tuple[Flask, AsyncWS]:
    app = Flask(__name__)
    app.secret_key = "test"
    asyncws = AsyncWS(app)

    @app.route("/set")
    def set_cookie() -> str:
        session["seen"] = True
        response = flask.make_response("set")
        response.set_cookie("theme", "dark")
        return response  # type: ignore[return-value]

    @asyncws.websocket("/forget")
    def forget() -> None:
        websocket.accept(headers={"Set-Cookie": "theme=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/"})

    @asyncws.websocket("/scoped")
    def scoped() -> None:
        websocket.accept(headers={"Set-Cookie": "scoped=1; Path=/scoped"})
        websocket.send(websocket.cookies.get("scoped", "-"))

    @asyncws.websocket("/show")
    def show() -> None:
        websocket.send(f"{websocket.cookies.get('theme', '-')},{websocket.cookies.get('scoped', '-')}")

    @asyncws.websocket("/refuse")
    def refuse() -> Response:
        response = flask.make_response("no", 403)
        response.set_cookie("refused", "1")
        return response

    return app, asyncws


def test_handshake_cookie_deleted_by_the_handshake() -> None:
    app, asyncws = cookie_app()
    client = asyncws.test_client()
    client.get("/set")
    assert client.get_cookie("theme") is not None
    with client.websocket("/show") as ws:
        assert ws.receive() == "dark,-"
    with client.websocket("/forget"):
        pass
    assert client.get_cookie("theme") is None
    with client.websocket("/show") as ws:
        assert ws.receive() == "-,-"


def test_handshake_cookie_path_is_kept() -> None:
    app, asyncws = cookie_app()
    client = asyncws.test_client()
    with client.websocket("/scoped") as ws:
        assert ws.receive() == "-"
    assert client.get_cookie("scoped", path="/scoped") is not None
    with client.websocket("/scoped") as ws:
        assert ws.receive() == "1"
    with client.websocket("/show") as ws:  # not sent outside its path
        assert ws.receive() == "-,-"


def test_refusal_cookie_reaches_http_requests() -> None:
    app, asyncws = cookie_app()

    @app.route("/read")
    def read() -> str:
        return flask.request.cookies.get("refused", "-")

    client = asyncws.test_client()
    with pytest.raises(WebsocketResponseError):
        with client.websocket("/refuse"):
            pass
    assert client.get("/read").get_data(as_text=True) == "1"


def test_preserved_request_context_survives_a_websocket() -> None:
    app, asyncws = cookie_app()
    client = asyncws.test_client()
    with client:
        client.get("/set?x=1")
        with client.websocket("/show") as ws:
            assert ws.receive() == "dark,-"
        assert flask.request.args["x"] == "1"


def test_http_requests_are_not_answered_by_the_cookie_exchange() -> None:
    app, asyncws = cookie_app()
    client = asyncws.test_client()
    with client.websocket("/show") as ws:
        ws.receive()
    # The app's WSGI callable now passes through the exchange: requests still reach the app.
    assert client.get("/set").get_data(as_text=True) == "set"


def test_headers_given_as_an_iterator_reach_the_cookie_jar_too() -> None:
    app, asyncws = cookie_app()
    client = asyncws.test_client()
    client.set_cookie("theme", "dark", domain="example.org")
    headers = iter([("Host", "example.org")])
    with client.websocket("/show", headers=headers) as ws:
        assert ws.receive() == "dark,-"
