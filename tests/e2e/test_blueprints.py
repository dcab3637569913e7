"""Blueprints, hook order, url_value_preprocessors and extensions, end to end."""

from __future__ import annotations

import threading
import typing as t

import pytest
from flask import Flask, g, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user
from websockets.sync.client import connect

from flask_asyncws import (
    AsyncWS,
    Blueprint,
    after_this_websocket,
    copy_current_websocket_context,
    has_websocket_context,
    websocket,
)


def test_nested_blueprints_routes_and_hook_order(serve: t.Any) -> None:
    app = Flask(__name__)
    AsyncWS(app)
    calls: list[str] = []
    done = threading.Event()
    parent = Blueprint("parent", __name__, url_prefix="/parent")
    child = Blueprint("child", __name__, url_prefix="/child")

    def hook(name: str, kind: str) -> t.Callable[..., t.Any]:
        def record(arg: t.Any = None) -> t.Any:
            calls.append(f"{name}.{kind}")
            if name == "app" and kind == "teardown":
                done.set()
            return arg

        return record

    for scaffold, name in ((app, "app"), (parent, "parent"), (child, "child")):
        scaffold.before_websocket(hook(name, "before"))
        scaffold.after_websocket(hook(name, "after"))
        scaffold.teardown_websocket(hook(name, "teardown"))
    parent.before_app_websocket(hook("parent_app", "before"))
    parent.after_app_websocket(hook("parent_app", "after"))
    parent.teardown_app_websocket(hook("parent_app", "teardown"))

    @child.websocket("/ws/<name>")
    async def handler(name: str) -> None:
        calls.append("handler")
        after_this_websocket(hook("this", "after"))
        parts = [name, websocket.blueprint, websocket.endpoint, url_for(".handler", name="x"), has_websocket_context()]
        await websocket.send("|".join(map(str, parts)))

    parent.register_blueprint(child)
    app.register_blueprint(parent)

    srv = serve(app)
    with connect(srv.ws_url + "/parent/child/ws/bob") as ws:
        host = f"127.0.0.1:{srv.port}"
        assert ws.recv(timeout=5) == f"bob|parent.child|parent.child.handler|ws://{host}/parent/child/ws/x|True"
    assert done.wait(5)
    assert calls == [
        "app.before",
        "parent_app.before",
        "parent.before",
        "child.before",
        "handler",
        "this.after",
        "child.after",
        "parent.after",
        "parent_app.after",
        "app.after",
        "child.teardown",
        "parent.teardown",
        "parent_app.teardown",
        "app.teardown",
    ]


def test_blueprint_registered_before_init_app(serve: t.Any) -> None:
    bp = Blueprint("bp", __name__)
    seen: list[str] = []

    @bp.before_websocket
    def before() -> None:
        seen.append("bp.before")

    @bp.websocket("/ws")
    def handler() -> None:
        websocket.send("bp")

    app = Flask(__name__)
    app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(bp, url_prefix="/v2", name="bp2")
    AsyncWS().init_app(app)

    srv = serve(app)
    for prefix in ("/v1", "/v2"):
        with connect(f"{srv.ws_url}{prefix}/ws") as ws:
            assert ws.recv(timeout=5) == "bp"
    assert seen == ["bp.before", "bp.before"]


def test_url_value_preprocessors_and_stacked_rules(serve: t.Any) -> None:
    app = Flask(__name__)
    AsyncWS(app)

    @app.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
        g.lang = (values or {}).pop("lang", "en")

    @app.websocket("/<lang>/book", defaults={"page": 0})
    @app.websocket("/<lang>/book/<int:page>")
    def book(page: int) -> None:
        websocket.send(f"{g.lang}:{page}")

    srv = serve(app)
    for path, expected in (("/fr/book", "fr:0"), ("/de/book/3", "de:3")):
        with connect(srv.ws_url + path) as ws:
            assert ws.recv(timeout=5) == expected


def test_flask_login_current_user(serve: t.Any) -> None:
    app = Flask(__name__)
    app.secret_key = "login"
    AsyncWS(app)
    login_manager = LoginManager(app)

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    @login_manager.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.post("/login/<name>")
    def login(name: str) -> str:
        login_user(User(name))
        return "ok"

    @app.before_websocket
    def require_login() -> t.Any:
        if not current_user.is_authenticated:
            return "login first", 401
        return None

    @app.websocket("/whoami")
    def whoami() -> None:
        websocket.send(current_user.id)

    import httpx
    from websockets.exceptions import InvalidStatus

    srv = serve(app)
    with pytest.raises(InvalidStatus) as info:
        connect(srv.ws_url + "/whoami")
    assert info.value.response.status_code == 401
    with httpx.Client(base_url=srv.http_url) as client:
        client.post("/login/grace")
        cookie = client.cookies["session"]
    with connect(srv.ws_url + "/whoami", additional_headers={"Cookie": f"session={cookie}"}) as ws:
        assert ws.recv(timeout=5) == "grace"


def test_copy_current_websocket_context_in_a_task(serve: t.Any) -> None:
    app = Flask(__name__)
    AsyncWS(app)

    @app.websocket("/ws")
    async def handler() -> None:
        import asyncio

        g.marker = "from the handler"

        @copy_current_websocket_context
        async def background() -> None:
            await websocket.send(f"{websocket.path} {g.marker}")

        await asyncio.create_task(background())

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert ws.recv(timeout=5) == "/ws from the handler"


def test_copied_context_shares_g_and_leaves_its_teardown_to_the_connection(serve: t.Any) -> None:
    """A task's copy of the context shares the connection's ``g`` (Flask 3.2's own
    copy would have a fresh one), however often it is entered, and its end does not
    tear down what the connection keeps in ``g``: that happens once, at the end."""
    app = Flask(__name__)
    AsyncWS(app)
    closed: list[str] = []
    done = threading.Event()

    @app.teardown_appcontext
    def close_resource(error: BaseException | None) -> None:
        resource = g.pop("resource", None)
        if resource is not None:
            closed.append(resource)
            done.set()

    @app.websocket("/ws")
    async def handler() -> None:
        import asyncio

        g.resource = "db"

        @copy_current_websocket_context
        async def background() -> None:
            await websocket.send(f"task sees {g.get('resource')}")

        await asyncio.create_task(background())
        await asyncio.create_task(background())
        await websocket.send(f"handler has {g.get('resource')}, closed {closed}")

    srv = serve(app)
    with connect(srv.ws_url + "/ws") as ws:
        assert [ws.recv(timeout=5) for _ in range(3)] == ["task sees db", "task sees db", "handler has db, closed []"]
    assert done.wait(5)
    assert closed == ["db"]


def test_copy_context_outside_a_websocket_raises() -> None:
    with pytest.raises(RuntimeError, match="needs a websocket context"):
        copy_current_websocket_context(lambda: None)
