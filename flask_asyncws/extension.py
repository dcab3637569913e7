"""The Flask extension: ``AsyncWS(app)`` or ``AsyncWS().init_app(app)``."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing as t

from flask import Flask

from . import cli, routing, testing
from .asgi import ASGIApp
from .bridge import make_async_to_sync
from .log import logger
from .origin import OriginPolicy

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


#: Every configuration key the extension reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "ASYNCWS_ALLOWED_ORIGINS": None,
    "ASYNCWS_MAX_MESSAGE_SIZE": None,
    "ASYNCWS_MAX_QUEUE_SIZE": 1024 * 1024,
    "ASYNCWS_SERVER_MAX_MESSAGE_SIZE": 16 * 1024 * 1024,
    "ASYNCWS_PING_INTERVAL": None,
    "ASYNCWS_SYNC_HANDLER_MODE": "greenlet",
    "ASYNCWS_HTTP_THREADS": 32,
    "ASYNCWS_BLOCKING_WARN_MS": 100,
    "ASYNCWS_BODY_TIMEOUT": 60,
}

SYNC_HANDLER_MODES = ("greenlet", "thread")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated ``ASYNCWS_*`` configuration of one app."""

    origins: OriginPolicy
    max_message_size: int | None
    max_queue_size: int | None
    server_max_message_size: int | None
    ping_interval: float | None
    sync_handler_mode: str
    http_threads: int
    blocking_warn_ms: float | None
    body_timeout: float | None

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        origins = config.get("ASYNCWS_ALLOWED_ORIGINS")
        if isinstance(origins, str):
            origins = [origins]
        try:
            policy = OriginPolicy(origins)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"ASYNCWS_ALLOWED_ORIGINS must be a list of origins like 'https://example.com', or ['*']: {exc}"
            ) from None
        mode = config.get("ASYNCWS_SYNC_HANDLER_MODE", "greenlet")
        if mode not in SYNC_HANDLER_MODES:
            raise ValueError(f"ASYNCWS_SYNC_HANDLER_MODE must be one of {SYNC_HANDLER_MODES}, not {mode!r}.")
        threads = _number(
            "ASYNCWS_HTTP_THREADS", config.get("ASYNCWS_HTTP_THREADS"), int, "a positive number of threads"
        )
        return cls(
            origins=policy,
            max_message_size=_positive(config, "ASYNCWS_MAX_MESSAGE_SIZE", int, "a positive number of bytes"),
            max_queue_size=_positive(config, "ASYNCWS_MAX_QUEUE_SIZE", int, "a positive number of bytes"),
            server_max_message_size=_positive(
                config, "ASYNCWS_SERVER_MAX_MESSAGE_SIZE", int, "a positive number of bytes"
            ),
            ping_interval=_positive(config, "ASYNCWS_PING_INTERVAL", float, "a positive number of seconds"),
            sync_handler_mode=mode,
            http_threads=threads,
            blocking_warn_ms=_positive(config, "ASYNCWS_BLOCKING_WARN_MS", float, "a positive number of milliseconds"),
            body_timeout=_positive(config, "ASYNCWS_BODY_TIMEOUT", float, "a positive number of seconds"),
        )


N = t.TypeVar("N", int, float)


def _positive(config: t.Mapping[str, t.Any], key: str, kind: type[N], what: str) -> N | None:
    value = config.get(key)
    if value is None:
        return None
    return _number(key, value, kind, f"{what} or None")


def _number(key: str, value: t.Any, kind: type[N], what: str) -> N:
    allowed = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, allowed) or value <= 0:
        raise ValueError(f"{key} must be {what}, not {value!r}.")
    return kind(value)


#: What ``app.config.from_prefixed_env()`` makes of the variable the reloader passes its socket in.
_RELOADER_KEY = cli.SOCKET_ENV.removeprefix("FLASK_")


def _warn_unknown_keys(config: t.Mapping[str, t.Any]) -> None:
    """A misspelled key would otherwise be silently ignored, its default in force."""
    for key in config:
        if (
            isinstance(key, str)
            and key not in DEFAULTS
            and key != _RELOADER_KEY
            and key.upper().replace("_", "").startswith("ASYNCWS")
        ):
            # Compared without the prefix every setting shares, which would
            # make any two names look alike (ASYNCWS_FOO ~ ASYNCWS_BODY_TIMEOUT).
            names = {setting.removeprefix("ASYNCWS_"): setting for setting in DEFAULTS}
            close = difflib.get_close_matches(re.sub(r"^ASYNC_?WS_?", "", key.upper()), names, n=1)
            hint = f"did you mean {names[close[0]]!r}?" if close else f"the settings are {', '.join(DEFAULTS)}."
            logger.warning("Unknown setting %r in app.config is ignored: %s", key, hint)


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
        _warn_unknown_keys(app.config)

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
