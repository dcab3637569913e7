"""Cross-Site WebSocket Hijacking protection.

Browsers send cookies with a websocket handshake to any site, and the same-origin
policy does not apply to websockets; only the ``Origin`` header tells a page on
another site apart. A handshake whose ``Origin`` names another host than the
request's ``Host`` is refused unless ``ASYNCWS_ALLOWED_ORIGINS`` allows it.
Handshakes without ``Origin`` (non-browser clients) are allowed.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case without the scheme's default port."""
    origin = origin.strip()
    if origin.lower() == "null":
        return "null"
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        raise ValueError(f"{origin!r} is not an origin such as 'https://example.com'.")
    port = parts.port
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _allowed_origin(origin: str) -> str:
    """``origin`` from the configuration, normalized; an error for a URL with more than an origin.

    A browser's ``Origin`` never has a path, so a listed
    ``https://app.example.com/chat`` would only seem to restrict anything.
    """
    parts = urlsplit(origin.strip())
    if parts.scheme and parts.netloc and (parts.path or parts.query or parts.fragment or "@" in parts.netloc):
        bare = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        raise ValueError(
            f"{origin!r} is a URL, not an origin: an origin is scheme://host[:port] with no path"
            f" (nor query or user); write {bare!r}."
        )
    return normalize_origin(origin)


class OriginPolicy:
    """Decides whether a handshake's ``Origin`` may open a websocket."""

    __slots__ = ("allow_all", "allowed")

    def __init__(self, allowed: t.Iterable[str] | None) -> None:
        allowed = list(allowed or ())
        self.allow_all = "*" in allowed
        self.allowed = frozenset(_allowed_origin(o) for o in allowed if o != "*")

    def permits(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.allow_all:
            return True
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return False
        if normalized in self.allowed:
            return True
        if normalized == "null" or not host:
            return False
        return _same_host(normalized, host)


def _same_host(origin: str, host: str) -> bool:
    """Whether ``origin`` names the host the client connected to.

    When ``Host`` carries no port (a TLS-terminating proxy forwards
    ``Host: example.com`` for ``https://example.com``), the origin's default port
    for its own scheme is the one the browser used.
    """
    o = urlsplit(origin)
    try:
        h = urlsplit(f"//{host.strip()}")
        host_port = h.port
        origin_port = o.port
    except ValueError:
        return False
    if (o.hostname or "") != (h.hostname or "").lower():
        return False
    if host_port is None:
        return origin_port is None
    return (origin_port or _DEFAULT_PORTS.get(o.scheme)) == host_port
