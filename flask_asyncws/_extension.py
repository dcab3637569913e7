"""The Flask extension: ``AsyncWS(app)`` or ``AsyncWS().init_app(app)``."""

from __future__ import annotations

import types
import typing as t

from flask import Flask, current_app, has_app_context

from . import _flask_version as flask_version
from . import _routing as routing
from . import cli, testing
from ._asgi import ASGIApp
from ._bridge import make_async_to_sync
from ._broker import WAIT, preload
from ._config import DEFAULTS, Settings, warn_unknown_keys
from ._groups import hub_of, outcome
from ._handshake import check_group
from ._routing import (
    T_after_websocket,
    T_before_websocket,
    T_serving,
    T_teardown_websocket,
    T_websocket,
)

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class AsyncWS:
    """Adds websocket routes to a Flask app and serves it all as ASGI.

    After :meth:`init_app`, ``app.asgi_app`` is the ASGI application to give a
    server: ``hypercorn myproject:app.asgi_app``.

    The decorators on the extension (:meth:`websocket`, :meth:`before_websocket`
    ...) are the typed form of those ``init_app`` adds to the app: they belong
    to every app this extension sets up. With ``AsyncWS(app)`` they register on
    ``app`` at once, whenever they are used. With ``AsyncWS()`` and an app
    factory, they are recorded and each :meth:`init_app` registers them on its
    app, so they must come before the first ``init_app`` (as module-level
    decorators do); later ones would reach no app and raise ``RuntimeError``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        # What the decorators declared, replayed on each app init_app sets up.
        # Nothing here refers to an app: the apps keep their own state.
        self._deferred: list[t.Callable[[Flask], object]] = []
        self._set_up = 0
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``; for an app made later by a factory, as with other extensions."""
        if "asyncws" in app.extensions:
            raise RuntimeError("AsyncWS is already set up on this app; call init_app once per app.")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        broker_url = Settings.from_config(app.config).broker_url  # fail now on a bad value, naming the key
        if broker_url is not None:
            preload(broker_url)
        warn_unknown_keys(app.config)

        for name in ("websocket", "add_websocket", "before_websocket", "after_websocket", "teardown_websocket"):
            setattr(app, name, types.MethodType(getattr(routing, name), app))
        for kind in routing.HOOK_KINDS:
            routing.hooks(app, kind)
        app.before_serving_funcs = []  # type: ignore[attr-defined]
        app.after_serving_funcs = []  # type: ignore[attr-defined]
        app.before_serving = types.MethodType(_before_serving, app)  # type: ignore[attr-defined]
        app.after_serving = types.MethodType(_after_serving, app)  # type: ignore[attr-defined]

        # An app class with its own async_to_sync keeps it for calls outside the server.
        own = type(app).async_to_sync is not Flask.async_to_sync
        app.async_to_sync = make_async_to_sync(  # type: ignore[method-assign, assignment]
            app.async_to_sync if own else None  # type: ignore[arg-type]
        )
        settings: list[Settings] = []

        def current_settings() -> Settings:
            if not settings:
                settings.append(Settings.from_config(app.config))
            return settings[0]

        app.asgi_app = ASGIApp(app, current_settings)  # type: ignore[attr-defined]
        app.extensions["asyncws"] = self
        testing.install(app)
        app.cli.add_command(cli.asyncws_cli)
        self._set_up += 1
        for register in self._deferred:
            register(app)

    def run(self, host: str = "127.0.0.1", port: int = 5000, debug: bool | None = None, **options: t.Any) -> None:
        """Serve the app with hypercorn for development (``if __name__ == "__main__":``).

        See :func:`flask_asyncws.cli.run` for the options.
        """
        if self.app is None:
            raise RuntimeError("AsyncWS() was created without an app; call flask_asyncws.cli.run(app, ...) instead.")
        cli.run(self.app, host, port, debug, **options)

    # -- the typed form of the app's websocket methods --------------------

    def _declare(self, what: str, register: t.Callable[[Flask], object]) -> None:
        """Register on the extension's app now, or on each app init_app sets up."""
        if self._set_up and (self.app is None or self._set_up > 1):
            raise RuntimeError(
                f"asyncws.{what} came after init_app(): AsyncWS() registers what its decorators declare on each"
                " app when init_app() sets it up, so this one would reach no app. Declare websocket routes and"
                " hooks on the extension before init_app() (at module level), or on a flask_asyncws.Blueprint."
            )
        self._deferred.append(register)
        if self.app is not None and self._set_up:
            register(self.app)

    def websocket(self, rule: str, **options: t.Any) -> t.Callable[[T_websocket], T_websocket]:
        """Decorate a sync or async function to handle websockets at ``rule``.

        The typed form of ``app.websocket(rule, **options)``; ``options`` are
        those of :meth:`flask.Flask.route` but ``methods``.
        """

        def decorator(func: T_websocket) -> T_websocket:
            options_ = dict(options)
            endpoint = options_.pop("endpoint", None)
            self.add_websocket(rule, endpoint, func, **options_)
            return func

        return decorator

    def add_websocket(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: routing.WebsocketHandler | None = None,
        **options: t.Any,
    ) -> None:
        """Register ``view_func`` as the websocket handler for ``rule``
        (the typed form of ``app.add_websocket``)."""
        if "methods" in options:  # say so now, not at init_app
            raise TypeError("Websocket routes always use GET; remove 'methods=' from the route.")
        self._declare("websocket()", lambda app: routing.add_websocket(app, rule, endpoint, view_func, **options))

    def before_websocket(self, func: T_before_websocket) -> T_before_websocket:
        """Run ``func()`` (sync or async) before each websocket handler; a
        returned value refuses the connection with that response."""
        self._declare("before_websocket", lambda app: routing.hooks(app, "before")[None].append(func))
        return func

    def after_websocket(self, func: T_after_websocket) -> T_after_websocket:
        """Run ``func(response)`` after a handler returns; ``response`` is None
        when the handler returned nothing. Return the response (or None)."""
        self._declare("after_websocket", lambda app: routing.hooks(app, "after")[None].append(func))
        return func

    def teardown_websocket(self, func: T_teardown_websocket) -> T_teardown_websocket:
        """Run ``func(exc)`` when a connection ends, however it ends."""
        self._declare("teardown_websocket", lambda app: routing.hooks(app, "teardown")[None].append(func))
        return func

    def before_serving(self, func: T_serving) -> T_serving:
        """Run ``func()`` (sync or async) once when the server starts, before it serves."""
        self._declare("before_serving", lambda app: _before_serving(app, func))
        return func

    def after_serving(self, func: T_serving) -> T_serving:
        """Run ``func()`` (sync or async) once when the server shuts down."""
        self._declare("after_serving", lambda app: _after_serving(app, func))
        return func

    # -- groups ------------------------------------------------------------

    def publish(self, group: str, message: t.Any) -> t.Any:
        """Send ``message`` to every connection in ``group``, on every worker and host.

        ``str`` is sent as a text message, ``bytes`` as a binary one, anything
        else as JSON text through ``app.json``. Returns once the message is on
        its way (with a broker: Redis has it), never waiting for a member. In
        async code, ``await`` it. Raises :class:`~flask_asyncws.BrokerUnavailable`
        when the broker cannot be reached.
        """
        check_group(group)
        hub = self._hub("publish")
        return outcome(hub.publish(group, message), WAIT, hub.where)

    def count(self, group: str) -> t.Any:
        """The number of live connections in ``group``, on every worker and host (``await`` it in async code)."""
        check_group(group)
        hub = self._hub("count")
        return outcome(hub.count(group), WAIT, hub.where)

    def presence(self, group: str) -> t.Any:
        """Each ``presence`` value connections joined ``group`` with, and its number of
        live connections: ``{"ada": 2}`` for a user with two tabs (``await`` it in async code)."""
        check_group(group)
        hub = self._hub("presence")
        return outcome(hub.presence(group), WAIT, hub.where)

    def _hub(self, call: str) -> t.Any:
        if has_app_context() and current_app.extensions.get("asyncws") is self:
            app = flask_version.current_app_object()
        elif self.app is not None:
            app = self.app
        else:
            raise RuntimeError(
                f"asyncws.{call}() needs the app: AsyncWS() was created without one, so call it inside"
                " app.app_context() (a request, a handler, a CLI command or a Celery task with the app's context)."
            )
        return hub_of(app)

    # -- typed access to what init_app adds to an app ---------------------

    @property
    def asgi_app(self) -> ASGIApp:
        """The ASGI application of the extension's app: ``app.asgi_app``, typed.

        Only for ``AsyncWS(app)``; ``hypercorn myproject:asyncws.asgi_app``
        serves it too.
        """
        if self.app is None:
            raise RuntimeError(
                "AsyncWS() was created without an app, so it has no asgi_app: serve app.asgi_app of the app"
                " init_app() set up (hypercorn 'myproject:create_app().asgi_app')."
            )
        return t.cast(ASGIApp, self.app.asgi_app)  # type: ignore[attr-defined]

    def test_client(self, app: Flask | None = None, use_cookies: bool = True, **kwargs: t.Any) -> testing.FlaskClient:
        """``app.test_client(use_cookies, **kwargs)``, typed as the
        :class:`flask_asyncws.testing.FlaskClient` it is, with ``websocket()``.

        ``app`` defaults to the extension's app (``AsyncWS(app)``); with an app
        factory, pass the app it made.
        """
        if app is None:
            if self.app is None:
                raise RuntimeError("AsyncWS() was created without an app; pass the app: asyncws.test_client(app).")
            app = self.app
        if app.extensions.get("asyncws") is not self:
            raise RuntimeError("This app was not set up by this AsyncWS; call init_app(app) first.")
        return t.cast(testing.FlaskClient, app.test_client(use_cookies, **kwargs))


def _before_serving(app: Flask, func: F) -> F:
    """Run ``func`` (sync or async) once when the server starts, before it serves."""
    app.before_serving_funcs.append(func)  # type: ignore[attr-defined]
    return func


def _after_serving(app: Flask, func: F) -> F:
    """Run ``func`` (sync or async) once when the server shuts down."""
    app.after_serving_funcs.append(func)  # type: ignore[attr-defined]
    return func
