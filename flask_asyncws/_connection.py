"""One websocket connection on its task: the async side of its life.

:meth:`Connection.serve` runs the Flask side (:mod:`~flask_asyncws._dispatch`)
in a greenlet on the connection's own task, awaits an async handler outside
it, and finishes in a greenlet again. Here too: the client leaving while the
handler waits on something else (the task is interrupted), and the app's
shutdown (:meth:`Connection.going_away`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing as t

from flask import Flask, Response

from . import _flask_version as flask_version
from ._bridge import SpawnHooks, await_, greenlet_spawn
from ._context import WebsocketContext
from ._denial import deny
from ._dispatch import (
    dispatch_websocket,
    do_teardown_websocket,
    finish_websocket,
    preprocess_websocket,
    websocket_handler,
)
from ._environ import build_environ
from ._groups import new_member
from ._log import logger
from ._watchdog import watchdog_for
from ._websocket import Websocket
from .signals import websocket_finished, websocket_started

if t.TYPE_CHECKING:
    from ._config import Settings
    from ._types import ASGIReceive, ASGISend, Scope

#: The close code and reason of a websocket the app closes because the server shuts down.
GOING_AWAY = (1001, "server shutting down")
#: Seconds the end of a connection waits for the broker to count it out of its groups.
LEAVE_WAIT = 5.0


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
        self.websocket.new_member = functools.partial(new_member, app)
        self.context = WebsocketContext(self.websocket, self.request_context)
        self.task = asyncio.current_task()
        self._dispatching = False
        self._interrupting = False
        #: What the handler raised, kept here rather than passed along: the
        #: spawning frame would be in the error's traceback (a cycle).
        self._raised: BaseException | None = None

    async def serve(self) -> None:
        ws = self.websocket
        ws.on_disconnect = self._interrupt
        ws.take_interrupt = self._take_interrupt
        ws.reader.watch_soon()  # usually the handler is receiving before the loop turns
        warn_ms = self.settings.blocking_warn_ms
        watchdog = None if warn_ms is None or self.task is None else watchdog_for(warn_ms)
        if watchdog is not None:
            watchdog.watch(self.task, self._label)  # type: ignore[arg-type]
        hooks = SpawnHooks(interrupt=self._take_interrupt, on_wait=ws.reader.waiting)
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
                    interrupt = self._take_interrupt() if isinstance(exc, asyncio.CancelledError) else None
                    self._raised = interrupt or exc
                finally:
                    self._dispatching = False
                try:
                    await greenlet_spawn(self.end, rv, hooks=hooks)
                finally:
                    rv = None
        finally:
            if watchdog is not None:
                watchdog.unwatch(self.task)  # type: ignore[arg-type]
            ws.reader.stop()
            ws.detach()
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
        outside the greenlet and finishes with :meth:`end`.
        """
        flask_version.push_request_context(self.request_context)
        self.context.push()
        rv = None
        self._dispatching = True
        try:
            if websocket_started.receivers:
                websocket_started.send(self.app, _async_wrapper=self.app.ensure_sync, websocket=self.websocket)
            rv = preprocess_websocket(self.app, self.context)
            if rv is None:
                handler = websocket_handler(self.app, self.context)
                if inspect.iscoroutinefunction(handler):
                    return handler
                rv = dispatch_websocket(self.context, handler, self.settings.sync_handler_mode == "thread")
        except BaseException as exc:
            self._raised = exc
        self._dispatching = False
        try:
            self.end(rv)
        finally:
            rv = None
        return None

    def end(self, rv: t.Any) -> None:
        """Answer what the handler returned or raised, then tear down (contexts popped)."""
        raised, self._raised = self._raised, None
        error: BaseException | None = None
        try:
            error = finish_websocket(self.app, self.context, rv, raised)
        except asyncio.CancelledError as exc:
            error = exc
            self._cancelled()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            rv = raised = None
            try:
                if websocket_finished.receivers:
                    self._finished()
            finally:
                try:
                    self._leave_groups()
                    do_teardown_websocket(self.app, self.context, error)
                finally:
                    error = None  # no cycle through this frame

    def _leave_groups(self) -> None:
        """End every membership before the teardowns: they, and anyone counting, see it gone."""
        member = self.websocket.member
        if member is None:
            return
        done = member.leave_all()
        if done is None or done.done():
            return
        try:
            await_(asyncio.wait_for(asyncio.wrap_future(done), LEAVE_WAIT))
        except BaseException:  # the broker restores its tallies once back; the teardowns must run
            logger.debug("The broker did not count %r out of its groups in time.", self.websocket.path, exc_info=True)

    def _finished(self) -> None:
        ws = self.websocket
        code = ws.close_code if ws.accepted else None
        websocket_finished.send(self.app, _async_wrapper=self.app.ensure_sync, websocket=ws, code=code)

    def _cancelled(self) -> None:
        """The server is cancelling us (shutdown): tell the client, not just drop it."""
        ws = self.websocket
        if ws.accepted and not ws.closed:
            try:
                await_(ws.shut(*GOING_AWAY))
            except Exception:
                pass

    async def going_away(self) -> None:
        """The app shuts down (:meth:`ASGIApp.shutdown`): close with 1001, or refuse with 503
        before accept, and interrupt the handler as if the client had left."""
        ws = self.websocket
        if ws.closed:
            return
        try:
            if ws.accepted:
                await ws.refuse(*GOING_AWAY, notify=True)
                return
            response = Response("The server is shutting down.", 503, mimetype="text/plain")
            await deny(self.app, self.scope, ws.asgi_send, response, ws)
        except Exception:
            logger.debug("Closing %r at shutdown failed.", ws.path, exc_info=True)
        ws.departed(*GOING_AWAY)  # the handler may not answer any more: it has been answered
