"""The ASGI application: the path a connection takes through the app.

``app.asgi_app`` sends websocket scopes to :class:`Connection`, http scopes to
the HTTP bridge and lifespan scopes to the serving hooks. A websocket
connection is read top-down in :meth:`ASGIApp.websocket` and
:meth:`Connection.handle`: origin check, contexts pushed, before hooks, the
handler, after hooks, the response (denial or close), teardown, contexts popped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import sys
import time
import typing as t

from flask import Flask, Response, got_request_exception, session
from werkzeug.exceptions import InternalServerError

from . import _flask_version as flask_version
from ._bridge import SpawnHooks, await_, greenlet_spawn
from ._context import WebsocketContext
from ._environ import build_environ, split_target
from ._http import HTTPBridge
from ._log import logger
from ._quirks import server_of
from ._routing import handler_of, hooks
from ._threads import run_handler_in_thread
from ._types import ASGIReceive, ASGISend, Scope
from ._watchdog import watchdog_for
from ._websocket import Websocket, WebsocketDisconnect

if t.TYPE_CHECKING:
    from ._config import Settings

DENIAL_EXTENSION = "websocket.http.response"

#: How long to wait, after refusing a handshake, for the server to report the
#: connection gone before the app returns.
SETTLE_TIMEOUT = 1.0

#: Seconds between warnings of refused cross-origin handshakes.
REFUSAL_WARN_INTERVAL = 60.0

#: How long :meth:`ASGIApp.shutdown` waits for connections it cancelled after its timeout.
CANCEL_WAIT = 1.0

#: The close code and reason of a websocket the app closes because the server shuts down.
GOING_AWAY = (1001, "server shutting down")


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
        if self.shutting_down:
            await deny(scope, send, Response("The server is shutting down.", 503, mimetype="text/plain"))
            await _settle(receive, send)
            return
        settings = self._settings()
        origin, host = _origin_and_host(scope)
        if not settings.origins.permits(origin, host):
            self._refused(origin, host, scope.get("path"))
            await deny(scope, send, Response("Cross-origin websocket refused.", 403, mimetype="text/plain"))
            await _settle(receive, send)
            return
        if scope.get("http_version", "1.1") in ("1.0", "1.1") and not _valid_key(scope):
            # Hypercorn upgrades any key; a client sending a bad one is not a websocket client.
            await deny(scope, send, Response("Invalid Sec-WebSocket-Key.", 400, mimetype="text/plain"))
            await _settle(receive, send)
            return
        connection = Connection(self.app, scope, receive, send, settings)
        self.connections.add(connection)
        try:
            await connection.serve()
        except asyncio.CancelledError:
            pass
        else:
            if connection.websocket.refused_client:
                # A client closed for flooding may still be sending: read it off until
                # the server reports it gone, or hypercorn's reader blocks on its full
                # queue to the app and the connection outlives its close.
                await _settle(receive, send)
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
                    await self._serving_hooks("before")
                except Exception as exc:
                    logger.exception("A before_serving function failed; the server will not start.")
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


class Connection:
    """One websocket connection, from the handshake to the last teardown."""

    __slots__ = (
        "_dispatching",
        "_interrupting",
        "_raised",
        "app",
        "context",
        "request_context",
        "scope",
        "settings",
        "task",
        "websocket",
    )

    def __init__(self, app: Flask, scope: Scope, receive: ASGIReceive, send: ASGISend, settings: Settings) -> None:
        self.app = app
        self.scope = scope
        self.settings = settings
        self.request_context = flask_version.request_context(app, build_environ(scope))
        self.websocket = Websocket(
            self.request_context.request,
            scope,
            receive,
            send,
            max_message_size=settings.max_message_size,
            max_queue_size=settings.max_queue_size,
        )
        self.context = WebsocketContext(self.websocket, self.request_context)
        self.task = asyncio.current_task()
        self._dispatching = False
        self._interrupting = False
        self._raised: BaseException | None = None

    async def serve(self) -> None:
        ws = self.websocket
        ws.on_disconnect = self._interrupt
        ws.take_interrupt = self._take_interrupt
        ws._watch_soon()  # usually the handler is receiving before the loop turns
        warn_ms = self.settings.blocking_warn_ms
        watchdog = None if warn_ms is None or self.task is None else watchdog_for(warn_ms)
        if watchdog is not None:
            watchdog.watch(self.task, self._label)  # type: ignore[arg-type]
        hooks = SpawnHooks(interrupt=self._take_interrupt, on_wait=ws._waiting)
        try:
            handler = await greenlet_spawn(self.handle, hooks=hooks)
            if handler is not None:
                # An async handler runs in this task, with no greenlet held while
                # it waits (an idle connection is only its coroutine frames);
                # the pipeline then finishes in a new greenlet.
                rv = None
                try:
                    rv = await handler(**ws.view_args)  # type: ignore[arg-type]
                except BaseException as exc:
                    # Kept on the connection, not passed as an argument: the
                    # spawning frame would be in the error's traceback (a cycle).
                    interrupt = self._take_interrupt() if isinstance(exc, asyncio.CancelledError) else None
                    self._raised = interrupt or exc
                finally:
                    self._dispatching = False
                try:
                    await greenlet_spawn(self._end, rv, hooks=hooks)
                finally:
                    rv = None
        finally:
            if watchdog is not None:
                watchdog.unwatch(self.task)  # type: ignore[arg-type]
            ws.stop_watching()
            ws.on_disconnect = ws.take_interrupt = None  # no cycle: the connection is freed on return
            if self._interrupting:
                self._take_interrupt()
        task = self.task
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            raise asyncio.CancelledError  # the server cancelled us too: honour it

    def _label(self) -> str:
        """How the blocking-loop warning names this connection: its endpoint, once routed, and path."""
        ws = self.websocket
        return f"{ws.endpoint!r} at {ws.path!r}" if ws.endpoint else f"at {ws.path!r}"

    # -- the client leaving while the handler waits on something else --

    def _interrupt(self) -> None:
        if self._dispatching and not self._interrupting and self.task is not None:
            self._interrupting = True
            self.task.cancel()

    def _take_interrupt(self) -> BaseException | None:
        if not self._interrupting:
            return None
        self._interrupting = False
        uncancel = getattr(self.task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        return self.websocket.disconnect

    # -- sync code from here on: it runs in a greenlet on the connection's task --

    def handle(self) -> t.Callable[..., t.Awaitable[t.Any]] | None:
        """Push the contexts, run the before hooks and a sync handler, and finish.

        For an async handler, return it instead: :meth:`serve` awaits it
        outside the greenlet and finishes with :meth:`_end`.
        """
        flask_version.push_request_context(self.request_context)
        self.context.push()
        rv = None
        self._dispatching = True
        try:
            rv = self._preprocess()
            if rv is None:
                handler = self._handler()
                if inspect.iscoroutinefunction(handler):
                    return handler
                rv = self._call_sync(handler)
        except BaseException as exc:
            self._raised = exc
        self._dispatching = False
        try:
            self._end(rv)
        finally:
            rv = None
        return None

    def _end(self, rv: t.Any) -> None:
        """Respond to what the handler returned or raised, then tear down."""
        app = self.app
        raised, self._raised = self._raised, None
        error: BaseException | None = None
        try:
            try:
                if raised is not None:
                    try:
                        raise raised
                    except WebsocketDisconnect:
                        raise
                    except Exception as exc:
                        rv = flask_version.handle_user_exception(app, self.request_context, exc)
                try:
                    self._finish(rv)
                finally:
                    rv = None  # a handled HTTPException is its own response: no cycle through its traceback
            except WebsocketDisconnect:
                raise
            except Exception as exc:
                error = exc  # unhandled: the teardowns get it, as Flask's do for a request
                self._fail(exc)
        except WebsocketDisconnect as exc:
            if error is None:  # the client leaving while told of an error: the error is what ended it
                error = exc
        except asyncio.CancelledError as exc:
            error = exc
            self._going_away()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            raised = None
            self._teardown(error)
            error = None  # no cycle through this frame

    async def going_away(self) -> None:
        """The app shuts down (:meth:`ASGIApp.shutdown`): close with 1001, or refuse with 503
        before accept, and interrupt the handler as if the client had left."""
        ws = self.websocket
        if ws.closed:
            return
        try:
            if ws.accepted:
                await ws._refuse(*GOING_AWAY, notify=True)
                return
            await deny(self.scope, ws._asgi_send, Response("The server is shutting down.", 503, mimetype="text/plain"))
        except Exception:
            logger.debug("Closing %r at shutdown failed.", ws.path, exc_info=True)
        ws._disconnected(*GOING_AWAY)  # the handler may not answer any more: it has been answered

    def _going_away(self) -> None:
        """The server is cancelling us (shutdown): tell the client, not just drop it."""
        ws = self.websocket
        if ws.accepted and not ws.closed:
            try:
                await_(ws._close(1001, "server shutting down"))
            except Exception:
                pass

    def _preprocess(self) -> t.Any:
        app = self.app
        request = self.websocket.request
        names = (None, *reversed(request.blueprints))
        for name in names:
            for url_func in app.url_value_preprocessors.get(name, ()):
                url_func(request.endpoint, request.view_args)
        before = hooks(app, "before")
        for name in names:
            for func in before.get(name, ()):
                rv = app.ensure_sync(func)()
                if rv is not None:
                    return rv
        return None

    def _handler(self) -> t.Callable[..., t.Any]:
        app = self.app
        request = self.websocket.request
        if request.routing_exception is not None:
            app.raise_routing_exception(request)
        view = app.view_functions[request.url_rule.endpoint]  # type: ignore[union-attr]
        return handler_of(view) or view

    def _call_sync(self, handler: t.Callable[..., t.Any]) -> t.Any:
        kwargs = self.websocket.view_args or {}
        if self.settings.sync_handler_mode == "thread":
            return await_(run_handler_in_thread(self.websocket, handler, kwargs))
        return handler(**kwargs) if kwargs else handler()  # see bridge._run_job

    def _finish(self, rv: t.Any) -> None:
        self.websocket._check_awaited()
        if self.websocket._misuse is not None:
            self.websocket._raise_misuse()  # a dropped, unawaited call: not a clean end
        response = None if rv is None else self.app.make_response(rv)
        response = self._after(response)
        ws = self.websocket
        if ws.closed:
            return
        if ws.accepted:
            await_(ws._close(1000, ""))
        elif response is not None:
            self._save_session(response)
            self._deny(response)
        else:
            logger.debug("Websocket handler for %r returned without accepting; closing (HTTP 403).", ws.path)
            await_(ws._close(1000, ""))

    def _after(self, response: Response | None, *, log_errors: bool = False) -> Response | None:
        app = self.app
        funcs = list(self.context.after_websocket_functions)
        after = hooks(app, "after")
        for name in (*self.websocket.request.blueprints, None):
            funcs.extend(reversed(after.get(name, ())))
        for func in funcs:
            try:
                response = app.ensure_sync(func)(response)
            except Exception:
                if not log_errors:
                    raise
                app.logger.exception("Error in after_websocket function %r", func)
        return response

    def _fail(self, exc: Exception) -> None:
        """An exception no errorhandler took: 500 before accept, 1011 after."""
        app = self.app
        ws = self.websocket
        got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)
        propagate = app.config["PROPAGATE_EXCEPTIONS"]
        if propagate is None:
            propagate = app.testing or app.debug
        if not propagate:
            flask_version.log_exception(app, self.request_context, sys.exc_info())
        server_error = InternalServerError(original_exception=exc)
        if ws.closed:
            pass
        elif ws.accepted:
            await_(ws._close(1011, ""))
        elif propagate:
            self._deny(app.make_response(server_error))
        else:
            try:
                handled = flask_version.handle_user_exception(app, self.request_context, server_error)
                response = app.make_response(handled)
            except Exception:
                app.logger.exception("Error in the 500 errorhandler")
                response = app.make_response(server_error)
            self._deny(self._after(response, log_errors=True) or response)
        if propagate:
            raise exc

    def _deny(self, response: Response) -> None:
        await_(deny(self.scope, self.websocket._asgi_send, response))
        if server_of(self.websocket._asgi_send) == "granian":
            return  # see _settle()
        # Return once the server has taken the response (it reports the
        # connection gone); uvicorn logs an error if the app returns earlier.
        self.websocket.watch()
        watcher = self.websocket.watcher
        if watcher is not None:
            await_(asyncio.wait((watcher,), timeout=SETTLE_TIMEOUT))

    def _save_session(self, response: Response) -> None:
        interface = self.app.session_interface
        current = flask_version.current_session()
        if not interface.is_null_session(current):
            interface.save_session(self.app, current, response)

    def _teardown(self, error: BaseException | None) -> None:
        app = self.app
        ws = self.websocket
        try:
            teardown = hooks(app, "teardown")
            for name in (*ws.request.blueprints, None):
                for func in reversed(teardown.get(name, ())):
                    try:
                        app.ensure_sync(func)(error)
                    except Exception:
                        app.logger.exception("Error in teardown_websocket function %r", func)
            if ws.accepted and getattr(session, "modified", False):
                logger.warning(
                    "The session was modified in websocket handler %r after the connection was accepted;"
                    " a cookie session cannot be saved once the websocket is open, so the change is lost.",
                    ws.endpoint,
                )
        finally:
            self.context.pop()
            flask_version.pop_request_context(self.request_context, error)


async def deny(scope: Scope, send: ASGISend, response: Response) -> None:
    """Refuse the handshake with ``response`` (a real HTTP response where the
    server supports the ASGI denial extension, else the server's 403)."""
    try:
        if DENIAL_EXTENSION in (scope.get("extensions") or {}):
            body = b"".join(response.iter_encoded())
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
            await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": 1000})
    finally:
        response.close()


async def _settle(receive: ASGIReceive, send: ASGISend) -> None:
    """Wait up to :data:`SETTLE_TIMEOUT` for the server to report a refused connection gone."""
    if server_of(send) == "granian":
        # Granian never reports it, and a receive() still waiting when granian shuts
        # down makes its worker panic (pyo3: "Cannot drop pointer into Python heap
        # without the thread being attached"). It has sent the refusal already.
        return

    async def disconnected() -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), SETTLE_TIMEOUT)
    except asyncio.TimeoutError:
        pass


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
