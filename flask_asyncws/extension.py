"""The Flask extension: ``AsyncWS(app)`` or ``AsyncWS().init_app(app)``."""

from __future__ import annotations

import dataclasses
import types
import typing as t

from flask import Flask

from . import routing
from .asgi import ASGIApp
from .bridge import make_async_to_sync
from .origin import OriginPolicy

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: Every configuration key the extension reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "ASYNCWS_ALLOWED_ORIGINS": None,
    "ASYNCWS_MAX_MESSAGE_SIZE": None,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated ``ASYNCWS_*`` configuration of one app."""

    origins: OriginPolicy
    max_message_size: int | None

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        origins = config.get("ASYNCWS_ALLOWED_ORIGINS")
        if isinstance(origins, str):
            origins = [origins]
        try:
            policy = OriginPolicy(origins)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"ASYNCWS_ALLOWED_ORIGINS must be a list of origins like 'https://example.com', or '*': {exc}"
            ) from None
        return cls(origins=policy, max_message_size=_positive_int(config, "ASYNCWS_MAX_MESSAGE_SIZE"))


def _positive_int(config: t.Mapping[str, t.Any], key: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive number of bytes or None, not {value!r}.")
    return value


class AsyncWS:
    """Adds websocket routes to a Flask app and serves it all as ASGI.

    After :meth:`init_app`, ``app.asgi_app`` is the ASGI application to give a
    server: ``hypercorn myproject:app.asgi_app``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "asyncws" in app.extensions:
            raise RuntimeError("AsyncWS is already set up on this app; call init_app once per app.")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        Settings.from_config(app.config)  # fail now on a bad value, naming the key

        for name in ("websocket", "add_websocket", "before_websocket", "after_websocket", "teardown_websocket"):
            setattr(app, name, types.MethodType(getattr(routing, name), app))
        for kind in routing.HOOK_KINDS:
            routing.hooks(app, kind)
        app.before_serving_funcs = []  # type: ignore[attr-defined]
        app.after_serving_funcs = []  # type: ignore[attr-defined]
        app.before_serving = types.MethodType(_before_serving, app)  # type: ignore[attr-defined]
        app.after_serving = types.MethodType(_after_serving, app)  # type: ignore[attr-defined]

        app.async_to_sync = make_async_to_sync(app.async_to_sync)  # type: ignore[method-assign]
        settings: list[Settings] = []

        def current_settings() -> Settings:
            if not settings:
                settings.append(Settings.from_config(app.config))
            return settings[0]

        app.asgi_app = ASGIApp(app, current_settings)  # type: ignore[attr-defined]
        app.extensions["asyncws"] = self


def _before_serving(app: Flask, func: F) -> F:
    """Run ``func`` (sync or async) once when the server starts, before it serves."""
    app.before_serving_funcs.append(func)  # type: ignore[attr-defined]
    return func


def _after_serving(app: Flask, func: F) -> F:
    """Run ``func`` (sync or async) once when the server shuts down."""
    app.after_serving_funcs.append(func)  # type: ignore[attr-defined]
    return func
