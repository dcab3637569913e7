"""The ``ASYNCWS_*`` configuration: every key, its default, and its validation."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing as t

from ._log import logger
from ._origin import OriginPolicy

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


#: The variable ``flask asyncws run`` passes its listening socket to the reloaded process in.
SOCKET_ENV = "FLASK_ASYNCWS_SOCKET_FD"

#: What ``app.config.from_prefixed_env()`` makes of :data:`SOCKET_ENV`.
_RELOADER_KEY = SOCKET_ENV.removeprefix("FLASK_")


def warn_unknown_keys(config: t.Mapping[str, t.Any]) -> None:
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
