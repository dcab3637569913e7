"""Websocket routes and hooks on apps and blueprints.

Routes are ordinary Werkzeug rules with ``websocket=True`` in ``app.url_map``,
so one path can serve HTTP and websocket, and ``url_for`` builds ``ws://`` URLs.
The view function Flask sees is a guard that answers 400 when a websocket route
is reached over plain HTTP (Werkzeug binds a WSGI request carrying
``Upgrade: websocket`` as a websocket request), saying how to run a server that
can serve it; the handler runs only for real websocket connections.
"""

from __future__ import annotations

import functools
import typing as t
import weakref
from collections import defaultdict

import flask
from flask import abort
from flask.sansio.app import App
from flask.sansio.blueprints import BlueprintSetupState
from flask.sansio.scaffold import Scaffold
from flask.typing import ResponseClass, ResponseReturnValue

HookDict = dict[str | None, list[t.Callable[..., t.Any]]]

# The functions each decorator takes, sync or async, as Flask's flask.typing
# has them for requests. The decorators return the function they were given,
# so its own signature is kept.
WebsocketHandler = (
    t.Callable[..., ResponseReturnValue | None] | t.Callable[..., t.Awaitable[ResponseReturnValue | None]]
)
BeforeWebsocketCallable = (
    t.Callable[[], ResponseReturnValue | None] | t.Callable[[], t.Awaitable[ResponseReturnValue | None]]
)
# The response is None when the handler returned nothing to answer with.
AfterWebsocketCallable = (
    t.Callable[[ResponseClass | None], ResponseClass | None]
    | t.Callable[[ResponseClass | None], t.Awaitable[ResponseClass | None]]
)
TeardownWebsocketCallable = (
    t.Callable[[BaseException | None], None] | t.Callable[[BaseException | None], t.Awaitable[None]]
)
ServingCallable = t.Callable[[], None] | t.Callable[[], t.Awaitable[None]]

T_websocket = t.TypeVar("T_websocket", bound=WebsocketHandler)
T_before_websocket = t.TypeVar("T_before_websocket", bound=BeforeWebsocketCallable)
T_after_websocket = t.TypeVar("T_after_websocket", bound=AfterWebsocketCallable[t.Any])
T_teardown_websocket = t.TypeVar("T_teardown_websocket", bound=TeardownWebsocketCallable)
T_serving = t.TypeVar("T_serving", bound=ServingCallable)

HOOK_KINDS = ("before", "after", "teardown")

_views: weakref.WeakKeyDictionary[t.Callable[..., t.Any], t.Callable[..., t.Any]] = weakref.WeakKeyDictionary()


def hooks(app: App, kind: str) -> HookDict:
    """The app's ``{kind}_websocket_funcs`` registry, created on first use."""
    attr = f"{kind}_websocket_funcs"
    registry: HookDict | None = app.__dict__.get(attr)
    if registry is None:
        registry = defaultdict(list)
        setattr(app, attr, registry)
    return registry


def handler_of(view: t.Callable[..., t.Any]) -> t.Callable[..., t.Any] | None:
    """The websocket handler behind a view function, or None for HTTP views."""
    return getattr(view, "websocket_handler", None)


def websocket_view(handler: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """The view registered with Flask for a websocket handler (one per handler)."""
    try:
        return _views[handler]
    except (KeyError, TypeError):
        pass

    def view(**kwargs: t.Any) -> t.NoReturn:
        # Reached by a handshake that a WSGI server (flask run, gunicorn) or an
        # ASGI server without websocket support passed on as plain HTTP.
        abort(400, _no_websocket_server_message(flask.current_app.import_name))

    # The handler's name and docs, but not its __dict__: that may hold the mark
    # inspect.markcoroutinefunction() leaves, and Flask must call the guard as
    # the sync function it is.
    functools.update_wrapper(view, handler, updated=())
    view.websocket_handler = handler  # type: ignore[attr-defined]
    try:
        _views[handler] = view
    except TypeError:
        pass
    return view


def _no_websocket_server_message(import_name: str) -> str:
    name = "APP" if import_name == "__main__" else import_name
    return (
        "This URL is a websocket endpoint, but this server cannot serve websockets"
        " (flask run and other WSGI servers cannot). Run the app with"
        f" flask --app {name} asyncws run, or with an ASGI server such as"
        f" hypercorn {name}:app.asgi_app. In tests, use app.test_client().websocket()."
    )


# -- registration methods, bound to an app by AsyncWS or defined on Blueprint --


def add_websocket(
    scaffold: Scaffold,
    rule: str,
    endpoint: str | None = None,
    view_func: t.Callable[..., t.Any] | None = None,
    **options: t.Any,
) -> None:
    """Register ``view_func`` as the websocket handler for ``rule``."""
    if "methods" in options:
        raise TypeError("Websocket routes always use GET; remove 'methods=' from the route.")
    if view_func is not None and endpoint is None:
        endpoint = view_func.__name__
    scaffold.add_url_rule(
        rule,
        endpoint,
        None if view_func is None else websocket_view(view_func),
        methods=["GET"],
        websocket=True,
        provide_automatic_options=False,
        **options,
    )


def websocket(scaffold: Scaffold, rule: str, **options: t.Any) -> t.Callable[[T_websocket], T_websocket]:
    """Decorate a sync or async function to handle websockets at ``rule``."""

    def decorator(func: T_websocket) -> T_websocket:
        endpoint = options.pop("endpoint", None)
        add_websocket(scaffold, rule, endpoint, func, **options)
        return func

    return decorator


F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def _hook_method(kind: str) -> t.Callable[[flask.Flask, F], F]:
    def register(app: flask.Flask, func: F) -> F:
        hooks(app, kind)[None].append(func)
        return func

    register.__name__ = f"{kind}_websocket"
    return register


before_websocket = _hook_method("before")
before_websocket.__doc__ = "Run before each websocket handler; a returned value refuses the connection."
after_websocket = _hook_method("after")
after_websocket.__doc__ = "Run ``func(response)`` after a handler returns; must return the response (or None)."
teardown_websocket = _hook_method("teardown")
teardown_websocket.__doc__ = "Run ``func(exc)`` when a connection ends, however it ends."


class Blueprint(flask.Blueprint):
    """A :class:`flask.Blueprint` that can also hold websocket routes and hooks."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_websocket_funcs: HookDict = defaultdict(list)
        self.after_websocket_funcs: HookDict = defaultdict(list)
        self.teardown_websocket_funcs: HookDict = defaultdict(list)
        self.record(self._merge_websocket_hooks)

    def websocket(self, rule: str, **options: t.Any) -> t.Callable[[T_websocket], T_websocket]:
        """Decorate a sync or async function to handle websockets at ``rule``."""
        return websocket(self, rule, **options)

    def add_websocket(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: t.Callable[..., t.Any] | None = None,
        **options: t.Any,
    ) -> None:
        """Register ``view_func`` as the websocket handler for ``rule``."""
        add_websocket(self, rule, endpoint, view_func, **options)

    def before_websocket(self, func: T_before_websocket) -> T_before_websocket:
        """Run before this blueprint's websocket handlers."""
        self.before_websocket_funcs[None].append(func)
        return func

    def after_websocket(self, func: T_after_websocket) -> T_after_websocket:
        """Run ``func(response)`` after this blueprint's websocket handlers."""
        self.after_websocket_funcs[None].append(func)
        return func

    def teardown_websocket(self, func: T_teardown_websocket) -> T_teardown_websocket:
        """Run ``func(exc)`` when a connection to this blueprint ends."""
        self.teardown_websocket_funcs[None].append(func)
        return func

    def before_app_websocket(self, func: T_before_websocket) -> T_before_websocket:
        """Like :meth:`before_websocket`, for every websocket of the app."""
        self.record_once(lambda state: hooks(state.app, "before")[None].append(func))
        return func

    def after_app_websocket(self, func: T_after_websocket) -> T_after_websocket:
        """Like :meth:`after_websocket`, for every websocket of the app."""
        self.record_once(lambda state: hooks(state.app, "after")[None].append(func))
        return func

    def teardown_app_websocket(self, func: T_teardown_websocket) -> T_teardown_websocket:
        """Like :meth:`teardown_websocket`, for every websocket of the app."""
        self.record_once(lambda state: hooks(state.app, "teardown")[None].append(func))
        return func

    def _merge_websocket_hooks(self, state: BlueprintSetupState) -> None:
        """At each registration, add this blueprint's hooks to the app's,
        under the blueprint's full dotted name (as Flask does for its own)."""
        name = f"{state.name_prefix}.{state.name}".lstrip(".")
        for kind in HOOK_KINDS:
            mine: HookDict = getattr(self, f"{kind}_websocket_funcs")
            registry = hooks(state.app, kind)
            for key, funcs in mine.items():
                registry[name if key is None else f"{name}.{key}"].extend(funcs)
