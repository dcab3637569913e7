"""The Flask extension: ``AsyncWS(app)`` or ``AsyncWS().init_app(app)``."""

from __future__ import annotations

import types
import typing as t

from flask import Flask

from . import _routing as routing
from . import cli, testing
from ._asgi import ASGIApp
from ._bridge import make_async_to_sync
from ._config import DEFAULTS, Settings, warn_unknown_keys

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class AsyncWS:
    """Adds websocket routes to a Flask app and serves it all as ASGI.

    After :meth:`init_app`, ``app.asgi_app`` is the ASGI application to give a
    server: ``hypercorn myproject:app.asgi_app``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``; for an app made later by a factory, as with other extensions."""
        if "asyncws" in app.extensions:
            raise RuntimeError("AsyncWS is already set up on this app; call init_app once per app.")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        Settings.from_config(app.config)  # fail now on a bad value, naming the key
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

    def run(self, host: str = "127.0.0.1", port: int = 5000, debug: bool | None = None, **options: t.Any) -> None:
        """Serve the app with hypercorn for development (``if __name__ == "__main__":``).

        See :func:`flask_asyncws.cli.run` for the options.
        """
        if self.app is None:
            raise RuntimeError("AsyncWS() was created without an app; call flask_asyncws.cli.run(app, ...) instead.")
        cli.run(self.app, host, port, debug, **options)


def _before_serving(app: Flask, func: F) -> F:
    """Run ``func`` (sync or async) once when the server starts, before it serves."""
    app.before_serving_funcs.append(func)  # type: ignore[attr-defined]
    return func


def _after_serving(app: Flask, func: F) -> F:
    """Run ``func`` (sync or async) once when the server shuts down."""
    app.after_serving_funcs.append(func)  # type: ignore[attr-defined]
    return func
