"""The Flask side of a websocket's life, under Quart's names.

Read top-down, this is the path of a connection through the app once its
contexts are pushed: :func:`preprocess_websocket` (URL value preprocessors,
before hooks), :func:`dispatch_websocket` (the handler), :func:`finish_websocket`
(error handlers, then :func:`finalize_websocket` or
:func:`handle_websocket_exception`), and :func:`do_teardown_websocket`. With
:mod:`~flask_asyncws._flask_version` (what differs between Flask 3.1 and 3.2),
this is the only module that calls Flask's dispatch machinery: the hooks,
``handle_user_exception``, ``make_response``, ``log_exception``,
``got_request_exception`` and the session interface.

It mirrors Flask's ``full_dispatch_request``, ``finalize_request`` and
``handle_exception`` with the websocket's hook registries, and differs where a
websocket does: the response a handler returns (or an error handler makes) is
sent only before accept, as the handshake's refusal; after accept the
connection is closed instead (1000, or 1011 for an unhandled error); the
session is saved only with such a refusal (an open websocket has no response
to carry a cookie); and a client leaving (:class:`WebsocketDisconnect`) is the
normal end of a connection, not an error for the error handlers.

All of it is sync code, run in a greenlet on the connection's task, where
``await_`` waits on the loop.
"""

from __future__ import annotations

import asyncio
import sys
import typing as t

from flask import Flask, Response, got_request_exception, session
from werkzeug.exceptions import InternalServerError

from . import _flask_version as flask_version
from ._bridge import await_
from ._denial import SETTLE_TIMEOUT, deny
from ._log import logger
from ._quirks import server_of
from ._routing import handler_of, hooks
from ._threads import run_handler_in_thread
from ._websocket import WebsocketDisconnect
from .signals import got_websocket_exception

if t.TYPE_CHECKING:
    from ._context import WebsocketContext


def preprocess_websocket(app: Flask, context: WebsocketContext) -> t.Any:
    """The URL value preprocessors, then the before hooks; a hook's return value ends the dispatch.

    As Flask's ``preprocess_request``, with ``before_websocket`` functions.
    """
    request = context.websocket.request
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


def websocket_handler(app: Flask, context: WebsocketContext) -> t.Callable[..., t.Any]:
    """The routed handler; a routing error is raised, as Flask's ``dispatch_request`` raises it."""
    request = context.websocket.request
    if request.routing_exception is not None:
        app.raise_routing_exception(request)
    view = app.view_functions[request.url_rule.endpoint]  # type: ignore[union-attr]
    return handler_of(view) or view


def dispatch_websocket(context: WebsocketContext, handler: t.Callable[..., t.Any], thread_mode: bool) -> t.Any:
    """Call a sync handler, in this greenlet or in a thread of its own.

    An async handler is not called here: the connection awaits it on its own
    task, outside any greenlet (see :class:`~flask_asyncws._connection.Connection`).
    """
    kwargs = context.websocket.view_args or {}
    if thread_mode:
        return await_(run_handler_in_thread(context.websocket, handler, kwargs))
    return handler(**kwargs) if kwargs else handler()  # see bridge._run_job


def finish_websocket(
    app: Flask, context: WebsocketContext, rv: t.Any, raised: BaseException | None
) -> BaseException | None:
    """Answer what the handler (or a before hook) returned or raised; return the error the teardowns get.

    As the end of Flask's ``full_dispatch_request``: an exception goes to the
    error handlers (``handle_user_exception``), whose return value is the
    response; one they do not handle to :func:`handle_websocket_exception`.
    Unlike a request, the client leaving ends the connection without a
    response or error handler: the teardowns get it as the error. Anything that
    is not an ``Exception`` (a cancellation, an exit) is raised.
    """
    try:
        if raised is not None:
            if isinstance(raised, WebsocketDisconnect):
                return raised
            if not isinstance(raised, Exception):
                raise raised
            try:
                rv = _handle_user_exception(app, context, raised)
            except WebsocketDisconnect as exc:
                return exc
            except Exception as exc:
                return handle_websocket_exception(app, context, exc)
        try:
            finalize_websocket(app, context, rv)
        except WebsocketDisconnect as exc:
            return exc
        except Exception as exc:
            return handle_websocket_exception(app, context, exc)
        return None
    finally:
        rv = raised = None  # a handled HTTPException is its own response: no cycle through its traceback


def _handle_user_exception(app: Flask, context: WebsocketContext, error: Exception) -> t.Any:
    """Flask's error handlers for ``error``; raised here first, as they re-raise
    one they do not handle with a bare ``raise``."""
    try:
        raise error
    except Exception as exc:
        return flask_version.handle_user_exception(app, context.request_context, exc)
    finally:
        error = None  # type: ignore[assignment]  # no cycle through this frame


def finalize_websocket(app: Flask, context: WebsocketContext, rv: t.Any) -> None:
    """Make the response and run the after hooks, then close, or refuse the handshake with it.

    As Flask's ``finalize_request``: ``make_response`` and the after hooks (the
    ``after_this_websocket`` functions first). A websocket already accepted is
    closed with 1000 whatever the response; one not accepted is refused with the
    response (the session saved with it), or with 403 if the handler returned
    nothing. A call the handler made without ``await`` is raised here first: a
    dropped call is not a clean end.
    """
    ws = context.websocket
    ws.check_awaited()
    response = None if rv is None else app.make_response(rv)
    response = _after(app, context, response)
    if ws.closed:
        return
    if ws.accepted:
        await_(ws.shut(1000, ""))
    elif response is not None:
        _save_session(app, response)
        _deny(app, context, response)
    else:
        logger.debug("Websocket handler for %r returned without accepting; closing (HTTP 403).", ws.path)
        await_(ws.shut(1000, ""))


def handle_websocket_exception(app: Flask, context: WebsocketContext, exc: Exception) -> Exception:
    """An exception no error handler took: 500 before accept, 1011 after; returns it for the teardowns.

    As Flask's ``handle_exception``: ``got_websocket_exception`` then
    ``got_request_exception`` (a receiver of the first, such as one tagging
    an error tracker's scope, runs before one of the second captures), logged unless
    propagated, the 500 error handler's response (after hooks too, their errors
    logged) before accept. With ``PROPAGATE_EXCEPTIONS`` (testing, debug) it is
    raised after the refusal or close. The client leaving while being told is
    not raised: the error is what ended the connection.
    """
    ws = context.websocket
    if got_websocket_exception.receivers:
        got_websocket_exception.send(app, _async_wrapper=app.ensure_sync, websocket=ws, exception=exc)
    got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)
    propagate = app.config["PROPAGATE_EXCEPTIONS"]
    if propagate is None:
        propagate = app.testing or app.debug
    if not propagate:
        flask_version.log_exception(app, context.request_context, sys.exc_info())
    try:
        if ws.closed:
            pass
        elif ws.accepted:
            await_(ws.shut(1011, ""))
        elif propagate:
            _deny(app, context, app.make_response(InternalServerError(original_exception=exc)))
        else:
            _deny(app, context, _server_error_response(app, context, exc))
    except WebsocketDisconnect:
        return exc
    if propagate:
        raise exc
    return exc


def _server_error_response(app: Flask, context: WebsocketContext, exc: Exception) -> Response:
    server_error = InternalServerError(original_exception=exc)
    try:
        handled = flask_version.handle_user_exception(app, context.request_context, server_error)
        response = app.make_response(handled)
    except Exception:
        app.logger.exception("Error in the 500 errorhandler")
        response = app.make_response(server_error)
    return _after(app, context, response, log_errors=True) or response


def do_teardown_websocket(app: Flask, context: WebsocketContext, error: BaseException | None) -> None:
    """The teardown functions, each one's error logged, then the contexts popped.

    As Flask's ``do_teardown_request``, for ``teardown_websocket`` functions.
    A session changed after accept is lost (no response carries it): warned of.
    """
    ws = context.websocket
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
        context.pop()
        flask_version.pop_request_context(context.request_context, error)


def _after(
    app: Flask, context: WebsocketContext, response: Response | None, *, log_errors: bool = False
) -> Response | None:
    """The after hooks, as Flask's ``process_response``: ``after_this_websocket`` ones first."""
    funcs = list(context.after_websocket_functions)
    after = hooks(app, "after")
    for name in (*context.websocket.request.blueprints, None):
        funcs.extend(reversed(after.get(name, ())))
    for func in funcs:
        try:
            response = app.ensure_sync(func)(response)
        except Exception:
            if not log_errors:
                raise
            app.logger.exception("Error in after_websocket function %r", func)
    return response


def _save_session(app: Flask, response: Response) -> None:
    interface = app.session_interface
    current = flask_version.current_session()
    if not interface.is_null_session(current):
        interface.save_session(app, current, response)


def _deny(app: Flask, context: WebsocketContext, response: Response) -> None:
    """Refuse the handshake with ``response`` and wait for the server to take it."""
    ws = context.websocket
    await_(deny(app, ws.scope, ws.asgi_send, response, ws))
    if server_of(ws.asgi_send) == "granian":
        return  # see _denial.settle()
    # Return once the server has taken the response (it reports the
    # connection gone); uvicorn logs an error if the app returns earlier.
    ws.reader.watch()
    watcher = ws.reader.watcher
    if watcher is not None:
        await_(asyncio.wait((watcher,), timeout=SETTLE_TIMEOUT))
