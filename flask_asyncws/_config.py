"""The ``ASYNCWS_*`` configuration: every key, its default, and its validation."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing as t
import urllib.parse

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
    "ASYNCWS_BROKER_URL": None,
    "ASYNCWS_BROKER_PREFIX": "asyncws:",
    "ASYNCWS_OUTBOX_LIMIT": 1024 * 1024,
    "ASYNCWS_PRESENCE_TTL": 15,
}

BROKER_SCHEMES = ("redis", "rediss", "unix")

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
    broker_url: str | None
    broker_prefix: str
    outbox_limit: int
    presence_ttl: float

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
            broker_url=_broker_url(config.get("ASYNCWS_BROKER_URL")),
            broker_prefix=_prefix(config.get("ASYNCWS_BROKER_PREFIX", DEFAULTS["ASYNCWS_BROKER_PREFIX"])),
            outbox_limit=_number(
                "ASYNCWS_OUTBOX_LIMIT",
                config.get("ASYNCWS_OUTBOX_LIMIT", DEFAULTS["ASYNCWS_OUTBOX_LIMIT"]),
                int,
                "a positive number of bytes",
            ),
            presence_ttl=_number(
                "ASYNCWS_PRESENCE_TTL",
                config.get("ASYNCWS_PRESENCE_TTL", DEFAULTS["ASYNCWS_PRESENCE_TTL"]),
                float,
                "a positive number of seconds",
            ),
        )


N = t.TypeVar("N", int, float)


def _broker_url(url: t.Any) -> str | None:
    if url is None:
        return None
    scheme = url.partition("://")[0] if isinstance(url, str) else None
    if scheme not in BROKER_SCHEMES:
        raise ValueError(
            f"ASYNCWS_BROKER_URL must be a Redis URL (redis://host:6379/0, rediss://..., unix://...) or None,"
            f" not {redacted(url) if isinstance(url, str) else url!r}."
        )
    return t.cast(str, url)


def _prefix(prefix: t.Any) -> str:
    try:
        prefix.encode()
    except (AttributeError, UnicodeEncodeError):
        raise ValueError(f"ASYNCWS_BROKER_PREFIX must be a str, such as 'myapp:', not {prefix!r}.") from None
    return t.cast(str, prefix)


def redacted(url: str) -> str:
    """``url`` with its password hidden (in the user part or a ``password`` query option), for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    if "password" in urllib.parse.parse_qs(query):
        query = urllib.parse.urlencode(
            [(k, "***" if k == "password" else v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)],
            safe="*/",
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _positive(config: t.Mapping[str, t.Any], key: str, kind: type[N], what: str) -> N | None:
    value = config.get(key)
    if value is None:
        return None
    return _number(key, value, kind, f"{what} or None")


def _number(key: str, value: t.Any, kind: type[N], what: str) -> N:
    allowed = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, allowed) or not 0 < value < math.inf:
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
