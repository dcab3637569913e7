"""The ASGI application: where every connection enters the app.

``app.asgi_app`` is an :class:`ASGIApp`. By scope type: a websocket's connect
message is read, the handshake refused (with its HTTP status) while the server
shuts down, for a cross-origin client or for an invalid key; otherwise the
connection is served (:class:`~flask_asyncws._connection.Connection`, and the
Flask side in :mod:`~flask_asyncws._dispatch`), settled if the app closed it
for what the client sent, and counted out for :meth:`ASGIApp.shutdown`'s
drain. An http scope goes to the HTTP bridge, a lifespan scope to the serving
hooks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import typing as t

from flask import Flask, Response

from ._bridge import greenlet_spawn
from ._connection import Connection
from ._denial import deny, settle
from ._environ import split_target
from ._groups import close_hub, hub_of
from ._http import HTTPBridge
from ._log import logger
from ._types import ASGIReceive, ASGISend, Scope

if t.TYPE_CHECKING:
    from ._config import Settings

#: Seconds between warnings of refused cross-origin handshakes.
REFUSAL_WARN_INTERVAL = 60.0

#: How long :meth:`ASGIApp.shutdown` waits for connections it cancelled after its timeout.
CANCEL_WAIT = 1.0


class ASGIApp:
    """The whole Flask app (HTTP routes, websocket routes, lifespan) as ASGI 3."""

    def __init__(self, app: Flask, settings: t.Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings
        self.http = HTTPBridge(app, settings)
        self.connections: set[Connection] = set()
        #: Set by :meth:`shutdown` until the next lifespan startup: new handshakes get 503.
        self.shutting_down = False
        #: One event per running :meth:`shutdown`, set when no connection is left.
        self._drained: list[asyncio.Event] = []
        self._refusal_warned: float | None = None
        self._refusals_unwarned = 0
        #: Set by :func:`flask_asyncws.metrics.init_metrics`: wraps an accepted
        #: connection's receive and send to count its messages (None: nothing per message).
        self.message_counter: t.Callable[[ASGIReceive, ASGISend], tuple[ASGIReceive, ASGISend]] | None = None

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        else:
            raise RuntimeError(f"Unsupported ASGI scope type {kind!r}.")

    async def websocket(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left during the handshake
        settings = self._settings()
        refusal = self._refusal(scope, settings)
        if refusal is not None:
            await deny(self.app, scope, send, refusal)
            await settle(receive, send)
            return
        if self.message_counter is not None:
            receive, send = self.message_counter(receive, send)
        # Served, settled if closed for what the client sent, counted out for shutdown()'s drain.
        connection = Connection(self.app, scope, receive, send, settings)
        self.connections.add(connection)
        try:
            await connection.serve()
        except asyncio.CancelledError:
            pass
        else:
            if connection.websocket.reader.refused_client:
                # A client closed for flooding may still be sending: read it off until
                # the server reports it gone, or hypercorn's reader blocks on its full
                # queue to the app and the connection outlives its close.
                await settle(receive, send)
            return
        finally:
            self.connections.discard(connection)
            if not self.connections:
                for drained in self._drained:
                    drained.set()
        # Cancelled by the server, whose task keeps the error it ends with. Raised afresh
        # and with the connection out of this frame, that error holds nothing of ours:
        # the caught one's traceback would keep every frame and object of the connection
        # alive until a full gc pass (slow at shutdown with many connections).
        del connection
        raise asyncio.CancelledError

    def _refusal(self, scope: Scope, settings: Settings) -> Response | None:
        """The response refusing a handshake before any of the app's code runs, or None."""
        if self.shutting_down:
            return _refusal_response(503, "The server is shutting down.")
        origin, host = _origin_and_host(scope)
        if not settings.origins.permits(origin, host):
            self._refused(origin, host, scope.get("path"))
            return _refusal_response(403, "Cross-origin websocket refused.")
        if scope.get("http_version", "1.1") in ("1.0", "1.1") and not _valid_key(scope):
            # Hypercorn upgrades any key; a client sending a bad one is not a websocket client.
            return _refusal_response(400, "Invalid Sec-WebSocket-Key.")
        return None

    async def shutdown(self, timeout: float = 3.0) -> None:
        """Close every open websocket with 1001 (going away) and wait for their teardowns.

        For a server that waits for open connections before it shuts the app
        down (hypercorn on Python 3.12.1 and later): call this first, then tell
        the server to stop. Handlers learn it as they learn of a client
        leaving (waiting on the websocket: :class:`WebsocketDisconnect` (1001);
        an async handler waiting on anything else is cancelled), their
        teardowns run, and a handshake not yet accepted is refused with HTTP
        503, as is every new handshake until the next lifespan startup.
        Calls while one runs wait for the same connections.
        Connections still running after ``timeout`` seconds are cancelled, as a
        server cancels them at its graceful timeout, and given a second more.
        Run it on the server's event loop.
        """
        self.shutting_down = True
        connections = list(self.connections)
        if not connections:
            return
        drained = asyncio.Event()
        self._drained.append(drained)
        # Each in a task of its own: a client that does not read holds up only its own close.
        closing = [asyncio.ensure_future(connection.going_away()) for connection in connections]
        try:
            try:
                await asyncio.wait_for(drained.wait(), timeout)
            except asyncio.TimeoutError:
                left = list(self.connections)
                logger.warning(
                    "%d websocket connection(s) still running %.1f s after the shutdown began; cancelling them.",
                    len(left),
                    timeout,
                )
                for connection in left:
                    if connection.task is not None:
                        connection.task.cancel()
                try:
                    await asyncio.wait_for(drained.wait(), CANCEL_WAIT)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in closing:
                task.cancel()
            self._drained.remove(drained)

    def _refused(self, origin: str | None, host: str | None, path: str | None) -> None:
        """Log a cross-origin refusal: a warning at most once per :data:`REFUSAL_WARN_INTERVAL`.

        Any client can cause refusals at will, so one warning each would let it
        fill the disk; the others are logged at DEBUG and counted in the next
        warning. Everything here is the client's, so it is quoted (a path may
        hold a decoded line break).
        """
        now = time.monotonic()
        if self._refusal_warned is not None and now - self._refusal_warned < REFUSAL_WARN_INTERVAL:
            self._refusals_unwarned += 1
            logger.debug("Refused cross-origin websocket: Origin %r, Host %r, path %r.", origin, host, path)
            return
        since, self._refusals_unwarned = self._refusals_unwarned, 0
        self._refusal_warned = now
        logger.warning(
            "Refused cross-origin websocket: Origin %r, Host %r, path %r. (Warned of at most every %.0f s;"
            " %d more since the last warning were logged at DEBUG.)",
            origin,
            host,
            path,
            REFUSAL_WARN_INTERVAL,
            since,
        )

    async def lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.shutting_down = False
                try:
                    if self._settings().broker_url is not None:  # subscribed before the first connection
                        await asyncio.get_running_loop().run_in_executor(None, hub_of, self.app)
                    await self._serving_hooks("before")
                except Exception as exc:
                    logger.exception("Starting up failed (the broker, or a before_serving function): not serving.")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self._serving_hooks("after")
                except Exception as exc:
                    logger.exception("An after_serving function failed.")
                    await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                finally:
                    await self.http.aclose()
                    # The broker's thread blocks while it leaves Redis: not on this loop.
                    await asyncio.get_running_loop().run_in_executor(None, close_hub, self.app)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serving_hooks(self, kind: str) -> None:
        funcs = list(getattr(self.app, f"{kind}_serving_funcs", ()))
        if not funcs:
            return
        app = self.app

        def run() -> None:
            with app.app_context():
                for func in funcs:
                    app.ensure_sync(func)()

        await greenlet_spawn(run)


def _refusal_response(status: int, text: str) -> Response:
    return Response(text, status, mimetype="text/plain")


def _valid_key(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"sec-websocket-key":
            try:
                return len(base64.b64decode(value, validate=True)) == 16
            except (binascii.Error, ValueError):
                return False
    return False


def _origin_and_host(scope: Scope) -> tuple[str | None, str | None]:
    origin = host = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    authority, _ = split_target(scope["path"])
    if authority:
        host = authority  # as build_environ: the request's host is the one the app sees
    if host is None and scope.get("http_version") == "2":
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else None
    return origin, host
