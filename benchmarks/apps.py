"""The apps under test, each echoing text messages on the same paths.

``/sync`` and ``/async`` are our two handler kinds, ``/session`` a sync handler
behind a ``before_websocket`` hook that reads the cookie session. The other
apps echo on ``/echo`` (the raw ASGI app on any path, the Flask-context floors
on ``/floor``).
"""

from __future__ import annotations

import contextvars
import typing as t

from flask import Flask, session
from greenlet import getcurrent
from werkzeug.local import LocalProxy
from werkzeug.routing import Rule

from flask_asyncws import AsyncWS, await_, websocket
from flask_asyncws import _flask_version as flask_version
from flask_asyncws._bridge import greenlet_spawn
from flask_asyncws._environ import build_environ

SECRET_KEY = "benchmark-secret"


def make_flask_asyncws() -> Flask:
    app = Flask("bench_asyncws")
    app.secret_key = SECRET_KEY
    AsyncWS(app)

    @app.websocket("/sync")
    def sync_echo() -> None:
        while True:
            websocket.send(websocket.receive())

    @app.websocket("/async")
    async def async_echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.before_websocket
    def load_user() -> None:
        if websocket.path == "/session" and "user" not in session:
            websocket.close(1008)

    @app.websocket("/session")
    def session_echo() -> None:
        while True:
            websocket.send(websocket.receive())

    return app


def make_quart() -> t.Any:
    from quart import Quart
    from quart import websocket as qws

    app = Quart("bench_quart")
    app.secret_key = SECRET_KEY  # as ours: both open the cookie session per connection

    @app.websocket("/echo")
    async def echo() -> None:
        while True:
            await qws.send(await qws.receive())

    return app


async def raw_echo(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
    """The server's own ceiling: echo with nothing on top of ASGI."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"raw"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def make_context_floor() -> t.Any:
    """The least any extension giving handlers Flask's context can cost.

    The raw echo, holding a Flask request context (cookie session included,
    with the same secret key as our app) for each connection: what ``g``,
    ``session``, ``url_for`` and ``current_app`` need. No hooks, no handler
    dispatch, nothing else of ours.
    """
    return _in_flask_context("bench_floor", raw_echo)


def make_greenlet_floor() -> t.Any:
    """The Flask-context floor with the echo loop as sync code in a greenlet.

    The least a sync handler that waits in a greenlet (rather than a thread)
    can cost: the request context of :func:`make_context_floor` plus one
    suspended greenlet per connection, driven by the bridge's two primitives.
    """

    def sync_echo(receive: t.Any, send: t.Any) -> None:
        await_(receive())  # websocket.connect
        await_(send({"type": "websocket.accept"}))
        while True:
            message = await_(receive())
            if message["type"] == "websocket.disconnect":
                return
            await_(send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")}))

    async def echo(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        await greenlet_spawn(sync_echo, receive, send)

    return _in_flask_context("bench_greenlet_floor", echo)


class _BareWebsocket:
    """The least one ``websocket`` object serving sync and async handlers can
    be: each call tells an async caller (the loop's own greenlet) from a sync
    one, and hands the former one coroutine that unwraps or wraps the ASGI
    message. Only the async side is here."""

    __slots__ = ("_home", "_receive", "_send")

    def __init__(self, receive: t.Any, send: t.Any) -> None:
        self._home = getcurrent()
        self._receive = receive
        self._send = send

    def receive(self) -> t.Any:
        if getcurrent() is self._home:
            return self._receive_data()
        raise NotImplementedError("the floor serves async handlers only")

    def send(self, data: str | bytes) -> t.Any:
        if getcurrent() is self._home:
            return self._send_data(data)
        raise NotImplementedError("the floor serves async handlers only")

    async def _receive_data(self) -> str | bytes:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            raise ConnectionError(message.get("code", 1005))
        text: str | None = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def _send_data(self, data: str | bytes) -> None:
        if type(data) is str:
            await self._send({"type": "websocket.send", "text": data})
        else:
            await self._send({"type": "websocket.send", "bytes": data})


_bare_websocket: contextvars.ContextVar[_BareWebsocket] = contextvars.ContextVar("bench_bare_websocket")


class _BareProxy(LocalProxy):  # type: ignore[type-arg]
    """A context-local ``websocket`` whose two methods skip the generic lookup."""

    __slots__ = ()

    def receive(self) -> t.Any:
        return _bare_websocket.get().receive()

    def send(self, data: str | bytes) -> t.Any:
        return _bare_websocket.get().send(data)


def make_async_floor() -> t.Any:
    """The Flask-context floor with the echo loop as an async handler.

    The least an async handler using one ``websocket`` context-local for both
    handler kinds can cost: the request context of :func:`make_context_floor`,
    the proxy's lookup, telling the caller's kind, and one coroutine per
    ``receive()`` and ``send()``. Nothing notices a client leaving while the
    handler waits elsewhere, a forgotten ``await``, a closed socket or an
    oversized message: what is left between it and ``async`` is what those cost.
    """
    bare: t.Any = _BareProxy(_bare_websocket)

    async def handler() -> None:
        while True:
            await bare.send(await bare.receive())

    async def echo(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        _bare_websocket.set(_BareWebsocket(receive, send))
        try:
            await handler()
        except ConnectionError:
            pass

    return _in_flask_context("bench_async_floor", echo)


def _in_flask_context(name: str, echo: t.Callable[..., t.Awaitable[None]]) -> t.Any:
    """``echo`` served on ``/floor`` inside one Flask request context per connection."""
    app = Flask(name)
    app.secret_key = SECRET_KEY
    app.url_map.add(Rule("/floor", endpoint="floor", websocket=True))

    async def floor(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "websocket":
            return await raw_echo(scope, receive, send)
        context = flask_version.request_context(app, build_environ(scope))
        flask_version.push_request_context(context)
        try:
            await echo(scope, receive, send)
        except BaseException as exc:
            flask_version.pop_request_context(context, exc)
            raise
        flask_version.pop_request_context(context, None)

    return floor


def make_flask_sock() -> Flask:
    from flask_sock import Sock

    app = Flask("bench_flask_sock")
    sock = Sock(app)

    @sock.route("/echo")
    def echo(ws: t.Any) -> None:
        while True:
            ws.send(ws.receive())

    return app


def session_cookie() -> str:
    """A session cookie value signed with the benchmark app's secret key."""
    app = make_flask_asyncws()
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return serializer.dumps({"user": "bench"})
