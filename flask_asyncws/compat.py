"""Run a Flask-Sock app under an ASGI server by changing one import.

``from flask_sock import Sock`` becomes ``from flask_asyncws.compat import Sock``;
routes, handlers taking ``ws`` first, ``ws.receive(timeout=...)``, ``ws.send``,
``ws.close`` and ``ConnectionClosed`` keep working. Handlers run as sync
websocket handlers (greenlets on the event loop), so the app is then served by
``hypercorn myproject:app.asgi_app`` instead of a WSGI server.

From ``SOCK_SERVER_OPTIONS`` (read once, when ``Sock`` is set up on the app),
``ping_interval`` and ``max_message_size`` become ``ASYNCWS_PING_INTERVAL`` and
``ASYNCWS_MAX_MESSAGE_SIZE`` unless those are set, and ``subprotocols`` is the
list to choose from (a string is one subprotocol, as for simple-websocket).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import typing as t

import flask

from ._bridge import await_
from ._context import websocket
from ._extension import AsyncWS
from ._portal import Portal, current_portal
from ._routing import websocket as register_websocket
from ._websocket import Websocket, WebsocketDisconnect

if t.TYPE_CHECKING:
    from flask.sansio.scaffold import Scaffold

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
T = t.TypeVar("T")

#: Close code simple-websocket reports when the peer sent none.
NO_STATUS_RECEIVED = 1005


class ConnectionClosed(RuntimeError):
    """The connection is closed, as ``simple_websocket.ConnectionClosed``.

    ``reason`` is the numeric close code and ``message`` the close reason text.
    """

    def __init__(self, reason: int = NO_STATUS_RECEIVED, message: str | None = None) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"Connection closed: {reason} {message or ''}")


class Sock:
    """The Flask-Sock extension, on flask-asyncws.

    Sets up :class:`~flask_asyncws.AsyncWS` on the app if it is not already.
    """

    def __init__(self, app: flask.Flask | None = None) -> None:
        self.app: flask.Flask | None = None
        self.bp: flask.Blueprint | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Set up ``app``, with the routes declared before there was an app."""
        options = app.config.get("SOCK_SERVER_OPTIONS") or {}
        if "asyncws" not in app.extensions:
            app.config.setdefault("ASYNCWS_PING_INTERVAL", options.get("ping_interval"))
            app.config.setdefault("ASYNCWS_MAX_MESSAGE_SIZE", options.get("max_message_size"))
            AsyncWS(app)
        if self.bp is not None:
            app.register_blueprint(self.bp)
        self.app = app

    def route(self, path: str, bp: flask.Blueprint | None = None, **kwargs: t.Any) -> t.Callable[[F], F]:
        """Register ``f(ws, **url_args)`` as the websocket handler for ``path``.

        On ``bp`` if given (the app registers that blueprint itself), else on the
        app, or on a blueprint registered by :meth:`init_app` if no app is set yet.
        """

        def decorator(f: F) -> F:
            if inspect.iscoroutinefunction(f):
                raise TypeError(
                    f"{f.__name__} is async: Flask-Sock handlers are sync. Use"
                    " @app.websocket and the websocket proxy for async handlers."
                )

            @functools.wraps(f)
            def handler(**view_args: t.Any) -> None:
                ws = WebSocket(websocket._get_current_object())  # type: ignore[attr-defined]
                try:
                    f(ws, **view_args)
                except ConnectionClosed:
                    pass

            if bp is not None:
                scaffold: Scaffold = bp
            elif self.app is not None:
                scaffold = self.app
            else:
                if self.bp is None:
                    self.bp = flask.Blueprint("__flask_sock", __name__)
                scaffold = self.bp
            register_websocket(scaffold, path, **kwargs)(handler)
            return f

        return decorator


class WebSocket:
    """The ``ws`` a Flask-Sock handler receives, on top of :class:`Websocket`.

    The handshake completes before the handler runs, as with Flask-Sock. The
    methods may also be called from another thread (a background sender, say).
    """

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws
        portal = current_portal()
        #: The loop serving the connection, for calls from other threads.
        self._loop = asyncio.get_running_loop() if portal is None else portal.loop
        self._thread = threading.get_ident()
        options = flask.current_app.config.get("SOCK_SERVER_OPTIONS") or {}
        offered = options.get("subprotocols") or ()
        if isinstance(offered, str):
            offered = (offered,)  # one subprotocol, as simple-websocket takes it
        #: The subprotocol chosen from ``SOCK_SERVER_OPTIONS["subprotocols"]``, or None.
        self.subprotocol: str | None = next((p for p in ws.requested_subprotocols if p in offered), None)
        #: The close code, once the connection is closed.
        self.close_reason: int | None = None
        #: The close reason text, once the connection is closed.
        self.close_message: str | None = None
        self._call("accept", ws.accept, None, self.subprotocol)

    @property
    def connected(self) -> bool:
        """Whether the connection is still open."""
        return not self._ws.closed

    @property
    def request(self) -> flask.Request:
        """The handshake request."""
        return self._ws.request

    def send(self, data: t.Any) -> None:
        """Send ``bytes`` as a binary message, anything else as text (``str(data)``)."""
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            data = str(data)
        if not self.connected:
            raise self._closed_error()
        self._call("send", self._ws.send, data)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message; ``None`` if none arrived within ``timeout`` seconds (0: do not wait).

        Messages that arrived before the client left are returned first, then
        :class:`ConnectionClosed` is raised.
        """
        if timeout is None:
            return t.cast("str | bytes", self._call("receive", self._ws.receive))
        return self._call("receive", self._ws.receive_within, max(timeout, 0))

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Close with code ``reason`` (default 1000) and text ``message``."""
        if not self.connected:
            raise self._closed_error()
        self._call("close", self._ws.close, reason or 1000, message or "")

    def _call(self, name: str, func: t.Callable[..., t.Awaitable[T]], *args: t.Any) -> T:
        """Run ``await func(*args)``, the websocket's ``name``, on the loop for the handler or any other thread."""
        operation = _later(func, *args)
        try:
            if not self._in_handler():
                return Portal(self._loop).run(operation)  # another thread: a background sender, say
            portal = current_portal()
            if portal is not None:
                return portal.run(operation, name)  # a handler in thread mode
            return await_(operation)
        except WebsocketDisconnect as exc:
            self.close_reason, self.close_message = exc.code, exc.reason or None
            raise self._closed_error() from None

    def _in_handler(self) -> bool:
        return threading.get_ident() == self._thread

    def _closed_error(self) -> ConnectionClosed:
        disconnect = self._ws.disconnect
        if disconnect is not None and self.close_reason is None:
            self.close_reason, self.close_message = disconnect.code, disconnect.reason or None
        return ConnectionClosed(self.close_reason or NO_STATUS_RECEIVED, self.close_message)


async def _later(func: t.Callable[..., t.Awaitable[T]], *args: t.Any) -> T:
    """Call ``func`` on the loop, outside the handler's greenlet, and await it."""
    return await func(*args)
