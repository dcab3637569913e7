"""The websocket context, kept alongside Flask's request context.

Each connection pushes a Flask request context built from the handshake (so
``g``, ``session``, ``url_for`` and request-based extensions work) and a
websocket context holding the :class:`~flask_asyncws._websocket.Websocket`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing as t

from werkzeug.local import LocalProxy

from . import _flask_version as flask_version
from ._websocket import Websocket

if t.TYPE_CHECKING:
    from ._flask_version import RequestContext

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

_cv_websocket: contextvars.ContextVar[WebsocketContext] = contextvars.ContextVar("flask_asyncws.websocket_ctx")


class WebsocketContext:
    """Binds a :class:`Websocket` and its request context to the current task."""

    __slots__ = ("_token", "_outer_tokens", "after_websocket_functions", "request_context", "websocket")

    def __init__(self, websocket: Websocket, request_context: RequestContext) -> None:
        self.websocket = websocket
        self.request_context = request_context
        #: Functions registered by after_this_websocket(); a list once there is one.
        self.after_websocket_functions: t.Sequence[t.Callable[[t.Any], t.Any]] = ()
        # One token, the common case; pushes nested in it (a copied context
        # entered again) keep theirs in a list made when needed.
        self._token: contextvars.Token[WebsocketContext] | None = None
        self._outer_tokens: list[contextvars.Token[WebsocketContext]] | None = None

    def push(self) -> None:
        token = _cv_websocket.set(self)
        if self._token is not None:
            if self._outer_tokens is None:
                self._outer_tokens = []
            self._outer_tokens.append(self._token)
        self._token = token

    def pop(self) -> None:
        token = self._token
        if token is None:
            raise RuntimeError("Popped a websocket context that was not pushed.")
        self._token = self._outer_tokens.pop() if self._outer_tokens else None
        _cv_websocket.reset(token)

    def copy(self) -> WebsocketContext:
        """A copy for :func:`copy_current_websocket_context`: entered with ``with``, it shares ``g``."""
        return WebsocketContext(self.websocket, flask_version.copy_request_context(self.request_context))

    def __enter__(self) -> WebsocketContext:
        flask_version.push_request_context(self.request_context)
        self.push()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.pop()
        flask_version.pop_copied_request_context(self.request_context, exc)


_UNBOUND = "Working outside of a websocket context: this code runs outside a websocket handler."


_current_context = _cv_websocket.get


def _unbound() -> t.NoReturn:
    raise RuntimeError(_UNBOUND)


def _current_websocket() -> Websocket:
    return (_current_context(None) or _unbound()).websocket


class _WebsocketProxy(LocalProxy):  # type: ignore[type-arg]
    """The ``websocket`` proxy; per-message methods skip the generic lookup."""

    __slots__ = ()

    def receive(self) -> t.Any:
        return (_current_context(None) or _unbound()).websocket.receive()

    def send(self, data: str | bytes) -> t.Any:
        return (_current_context(None) or _unbound()).websocket.send(data)

    def receive_json(self) -> t.Any:
        return _current_websocket().receive_json()

    def send_json(self, obj: t.Any) -> t.Any:
        return _current_websocket().send_json(obj)


websocket: Websocket = _WebsocketProxy(_cv_websocket, "websocket", unbound_message=_UNBOUND)  # type: ignore[assignment]


def has_websocket_context() -> bool:
    """Whether the code runs for a websocket connection (handler, hook, task)."""
    return _cv_websocket.get(None) is not None


def copy_current_websocket_context(func: F) -> F:
    """Let ``func`` see this connection's contexts when it runs elsewhere.

    For a task started with ``asyncio.create_task`` or code that outlives the
    current stack. Works for sync and async functions.

    The function sees the connection's ``websocket``, ``request``, ``session``
    and ``g`` (the same ``g`` object, on Flask 3.1 and 3.2 alike). When it
    returns, Flask's ``teardown_request`` functions run for the copy, as for any
    copied request context; the ``teardown_appcontext`` functions do not tear
    down the shared ``g``: that happens once, when the connection ends. (On
    Flask 3.2 the copy's teardown functions see an empty ``g`` of their own.)
    """
    ctx = _cv_websocket.get(None)
    if ctx is None:
        raise RuntimeError(
            "copy_current_websocket_context() needs a websocket context: use it inside a websocket handler or hook."
        )
    copy = ctx.copy()

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            with copy:
                return await func(*args, **kwargs)

        return t.cast(F, async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        with copy:
            return func(*args, **kwargs)

    return t.cast(F, wrapper)


def after_this_websocket(func: F) -> F:
    """Run ``func(response)`` after this handler returns, before the after hooks."""
    ctx = _cv_websocket.get(None)
    if ctx is None:
        raise RuntimeError("after_this_websocket() needs a websocket context: call it inside a handler or hook.")
    ctx.after_websocket_functions = [*ctx.after_websocket_functions, func]
    return func
