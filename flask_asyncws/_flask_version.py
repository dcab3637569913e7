"""The one module that knows which Flask the package talks to.

Flask 3.2 changed two things the websocket pipeline depends on:

* Its dispatch methods take the context first:
  ``app.handle_user_exception(ctx, exc)`` and ``app.log_exception(ctx, exc_info)``
  where Flask 3.1 has ``app.handle_user_exception(exc)`` and
  ``app.log_exception(exc_info)``. Flask 3.2 adapts *subclasses* that override
  these with the old signature, not *callers* using it.
* It merges ``RequestContext`` into ``AppContext``: a request context is an
  app context holding a request, with its own ``g``. Popping it no longer
  breaks the reference cycle between the request and its WSGI environ, and
  copying it makes a fresh ``g``.

Both are decided once, here, at import, by looking at what the installed Flask
has rather than at its version string: a development build or a backport then
gets the calls it actually accepts. The dispatch signature is read from
``Flask.handle_user_exception`` (its second parameter is ``ctx`` on 3.2; the
signature is read through the wrapper Flask 3.2 may put around the method
for old-style subclasses). The merged context is recognised by
``flask.ctx`` no longer defining a ``RequestContext`` class (3.2 keeps the
name only as a deprecated alias, resolved lazily, which this check does not
touch, so no warning is raised).

The rest of the package calls the functions below and never branches on
Flask's version itself.
"""

from __future__ import annotations

import inspect
import typing as t
from types import TracebackType

import flask
import flask.ctx
from flask import Flask, Request

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from flask.sessions import SessionMixin

__all__ = [
    "CONTEXT_FIRST",
    "MERGED_CONTEXT",
    "RequestContext",
    "copy_request_context",
    "current_session",
    "handle_user_exception",
    "log_exception",
    "pop_copied_request_context",
    "pop_request_context",
    "push_request_context",
    "release_request",
    "request_context",
]

ExcInfo: t.TypeAlias = "tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]"


class RequestContext(t.Protocol):
    """What the package uses of Flask's request context.

    ``flask.ctx.RequestContext`` on Flask 3.1; on Flask 3.2 an
    ``flask.ctx.AppContext`` created with a request.
    """

    @property
    def app(self) -> Flask: ...

    @property
    def request(self) -> Request: ...

    def push(self) -> None: ...

    def pop(self, exc: BaseException | None = ...) -> None: ...


def _takes_context_first(method: t.Callable[..., t.Any]) -> bool:
    params = list(inspect.signature(method).parameters.values())
    return len(params) > 1 and params[1].name == "ctx"


#: Flask's dispatch methods take the context as their first argument (Flask 3.2+).
CONTEXT_FIRST: bool = _takes_context_first(Flask.handle_user_exception)

#: A request context is an ``AppContext`` with a request and its own ``g`` (Flask 3.2+).
MERGED_CONTEXT: bool = not isinstance(vars(flask.ctx).get("RequestContext"), type)


def _dispatch(app: Flask) -> t.Any:
    # Flask's annotations describe one version's signatures; which call is
    # right was decided above, so the call is made untyped.
    return app


if CONTEXT_FIRST:

    def _handle_user_exception(app: Flask, ctx: RequestContext, exc: Exception) -> t.Any:
        return _dispatch(app).handle_user_exception(ctx, exc)

    def _log_exception(app: Flask, ctx: RequestContext, exc_info: ExcInfo) -> None:
        _dispatch(app).log_exception(ctx, exc_info)

else:

    def _handle_user_exception(app: Flask, ctx: RequestContext, exc: Exception) -> t.Any:
        return _dispatch(app).handle_user_exception(exc)

    def _log_exception(app: Flask, ctx: RequestContext, exc_info: ExcInfo) -> None:
        _dispatch(app).log_exception(exc_info)


def handle_user_exception(app: Flask, ctx: RequestContext, exc: Exception) -> t.Any:
    """``app.handle_user_exception``: the errorhandler's return value, or ``exc`` raised again.

    Raised again, ``exc`` has the traceback it came with. The one Flask gives
    it runs through Flask's lookup, whose frames hold the error (and, on
    Flask 3.2, the context and so the request): a reference cycle that would
    keep the connection alive until the cycle collector's next pass.
    """
    tb = exc.__traceback__
    try:
        return _handle_user_exception(app, ctx, exc)
    except Exception as raised:
        if raised is not exc:
            raise  # an errorhandler's own error
        raise exc.with_traceback(tb)  # noqa: B904 - the same error, with its own traceback
    finally:
        del ctx, exc, tb  # this frame is in the traceback: no cycle through it


def log_exception(app: Flask, ctx: RequestContext, exc_info: ExcInfo) -> None:
    """``app.log_exception``: log an error no errorhandler took."""
    _log_exception(app, ctx, exc_info)


def current_session() -> SessionMixin:
    """The current request's session object itself, not the ``flask.session`` proxy."""
    # The proxy's declared type differs between versions; the call is the same.
    return t.cast("SessionMixin", t.cast(t.Any, flask.session)._get_current_object())


def current_app_object() -> Flask:
    """The current app itself, not the ``flask.current_app`` proxy."""
    # The proxy's declared type differs between versions; the call is the same.
    return t.cast("Flask", t.cast(t.Any, flask.current_app)._get_current_object())


def request_context(app: Flask, environ: WSGIEnvironment) -> RequestContext:
    """A request context for ``environ``, not yet pushed."""
    return app.request_context(environ)


def push_request_context(ctx: RequestContext) -> None:
    """Make ``ctx`` current: ``request``, ``session``, ``g`` and ``current_app`` work.

    On Flask 3.1 this also pushes an app context when the app's is not
    current; on 3.2 the request context is the app context.
    """
    ctx.push()


def pop_request_context(ctx: RequestContext, exc: BaseException | None) -> None:
    """Pop ``ctx``: Flask's teardown functions run with ``exc``.

    Then break the reference cycle between the request and its WSGI environ
    (``environ["werkzeug.request"]``) so the connection is freed as soon as it
    ends rather than at the cycle collector's next pass. Flask 3.1's
    ``RequestContext.pop`` does this itself; Flask 3.2's ``AppContext.pop``
    does not.
    """
    try:
        ctx.pop(exc)
    finally:
        release_request(ctx.request.environ)


def release_request(environ: WSGIEnvironment) -> None:
    """Flask is done with the request made from ``environ``: drop the environ's
    reference to it (``environ["werkzeug.request"]``), which with the request's
    reference to its environ is a cycle only the cycle collector would free.

    Flask 3.1 does this when it pops a request context, under any server;
    Flask 3.2 does not.
    """
    if MERGED_CONTEXT:
        environ.pop("werkzeug.request", None)


def copy_request_context(ctx: RequestContext) -> RequestContext:
    """A copy of ``ctx`` for code running elsewhere, sharing ``g`` with it.

    On Flask 3.1 ``g`` belongs to the app context, which a copied request
    context uses when it is the current one (as in a task the connection
    started). Flask 3.2's copy is an app context with a fresh ``g``; it is
    given the original's ``g`` instead, so both versions share it.
    """
    copy: t.Any = t.cast(t.Any, ctx).copy()
    if MERGED_CONTEXT:
        copy.g = _globals(ctx)
    return t.cast(RequestContext, copy)


def pop_copied_request_context(ctx: RequestContext, exc: BaseException | None) -> None:
    """Pop a context made by :func:`copy_request_context`.

    On Flask 3.2 popping an app context runs the ``teardown_appcontext``
    functions, which on the shared ``g`` would close what the connection
    still uses (a database connection kept in ``g``, say). So the copy's
    teardown functions are given an empty ``g`` of their own, and the shared
    one is torn down once, when the connection ends. On Flask 3.1 the copy
    leaves the app context to the connection and ``teardown_appcontext``
    does not run for it; Flask's ``teardown_request`` functions run for the
    copy on both versions, as they do for any copied request context.
    """
    if not MERGED_CONTEXT:
        pop_request_context(ctx, exc)
        return
    shared = _globals(ctx)
    own = ctx.app.app_ctx_globals_class()
    _set_globals(ctx, own)
    try:
        ctx.pop(exc)
    finally:
        _set_globals(ctx, shared)  # entered again, the copy shares it again


def _globals(ctx: RequestContext) -> object:
    """The context's ``g`` (``app.app_ctx_globals_class``, which an app may replace)."""
    return t.cast(object, t.cast(t.Any, ctx).g)


def _set_globals(ctx: RequestContext, g: object) -> None:
    t.cast(t.Any, ctx).g = g
