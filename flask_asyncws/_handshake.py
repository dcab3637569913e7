"""What a websocket takes from the handshake, and checks of what a handler gives it.

The request attributes read from the handshake's Flask request, the headers a
handler passes to ``accept()``, the data it passes to ``send()``, and the ASGI
spec version the server speaks.
"""

from __future__ import annotations

import re
import typing as t

from werkzeug.sansio.utils import get_current_url

if t.TYPE_CHECKING:
    from flask import Request
    from werkzeug.datastructures import Authorization, Headers, ImmutableMultiDict, LanguageAccept, MultiDict
    from werkzeug.routing import Rule

    from ._types import Scope


class FromRequest:
    """A websocket attribute read from the handshake's Flask request (``owner.request``)."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, ws: t.Any, owner: type) -> t.Any:
        if ws is None:
            return self
        return getattr(ws.request, self.name)


class Handshake:
    """The handshake's request data, as a websocket shows it (the URLs with the ``ws``/``wss`` scheme)."""

    __slots__ = ()

    request: Request
    scope: Scope

    headers: Headers = FromRequest()  # type: ignore[assignment]
    args: MultiDict[str, str] = FromRequest()  # type: ignore[assignment]
    cookies: ImmutableMultiDict[str, str] = FromRequest()  # type: ignore[assignment]
    authorization: Authorization | None = FromRequest()  # type: ignore[assignment]
    path: str = FromRequest()  # type: ignore[assignment]
    full_path: str = FromRequest()  # type: ignore[assignment]
    query_string: bytes = FromRequest()  # type: ignore[assignment]
    root_path: str = FromRequest()  # type: ignore[assignment]
    script_root: str = FromRequest()  # type: ignore[assignment]
    host: str = FromRequest()  # type: ignore[assignment]
    server: tuple[str, int | None] | None = FromRequest()  # type: ignore[assignment]
    remote_addr: str | None = FromRequest()  # type: ignore[assignment]
    access_route: list[str] = FromRequest()  # type: ignore[assignment]
    origin: str | None = FromRequest()  # type: ignore[assignment]
    user_agent: t.Any = FromRequest()
    accept_languages: LanguageAccept = FromRequest()  # type: ignore[assignment]
    method: str = FromRequest()  # type: ignore[assignment]
    environ: dict[str, t.Any] = FromRequest()  # type: ignore[assignment]
    url_rule: Rule | None = FromRequest()  # type: ignore[assignment]
    view_args: dict[str, t.Any] | None = FromRequest()  # type: ignore[assignment]
    routing_exception: Exception | None = FromRequest()  # type: ignore[assignment]
    endpoint: str | None = FromRequest()  # type: ignore[assignment]
    blueprint: str | None = FromRequest()  # type: ignore[assignment]
    blueprints: list[str] = FromRequest()  # type: ignore[assignment]

    @property
    def scheme(self) -> str:
        """``ws`` or ``wss``."""
        return "wss" if self.request.is_secure else "ws"

    @property
    def is_secure(self) -> bool:
        return bool(self.request.is_secure)

    @property
    def url(self) -> str:
        r = self.request
        return get_current_url(self.scheme, r.host, r.root_path, r.path, r.query_string)

    @property
    def base_url(self) -> str:
        r = self.request
        return get_current_url(self.scheme, r.host, r.root_path, r.path)

    @property
    def host_url(self) -> str:
        return get_current_url(self.scheme, self.request.host)

    @property
    def root_url(self) -> str:
        """Where the app is, with the websocket's scheme: ``ws://example.com/app/``."""
        r = self.request
        return get_current_url(self.scheme, r.host, r.root_path)

    url_root = root_url

    @property
    def http_version(self) -> str:
        """``1.1``, or ``2`` for a websocket over HTTP/2 (RFC 8441)."""
        return str(self.scope.get("http_version") or "1.1")

    @property
    def requested_subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    def __repr__(self) -> str:
        return f"<Websocket {self.url!r}>"


def header_list(headers: t.Any) -> list[tuple[bytes, bytes]]:
    """``accept()``'s headers as the ASGI byte pairs servers send: from a
    mapping (``Headers`` too) or (name, value) pairs of ``str`` or ``bytes``."""
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    if isinstance(headers, (str, bytes)) or not isinstance(items, t.Iterable):
        raise TypeError(f"accept() takes headers as a mapping or (name, value) pairs, not {headers!r}.")
    result = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"accept() takes headers as (name, value) pairs, not {item!r}.")
        name = _header_bytes(item[0], item).lower()
        value = _header_bytes(item[1], item)
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                f"Invalid header name for accept(): {item!r}; a name is letters, digits and !#$%&'*+-.^_`|~."
            )
        if not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"Invalid header value for accept(): {item!r}; a value has no line breaks or control characters."
            )
        if name == b"sec-websocket-protocol":
            raise ValueError("Pass the subprotocol as accept(subprotocol=...), not as a header.")
        result.append((name, value))
    return result


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # RFC 9110 field names (lowered)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def _header_bytes(part: t.Any, item: t.Any) -> bytes:
    if isinstance(part, bytes):
        return bytes(part)
    if isinstance(part, str):
        try:
            return part.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"Header {item!r} for accept() is not latin-1; encode it (or pass bytes).") from None
    raise TypeError(f"accept() takes header names and values as str or bytes, not {type(part).__name__}: {item!r}.")


def check_subprotocol(subprotocol: str | None, offered: list[str]) -> None:
    """``accept()``'s subprotocol must be one the client offered."""
    if subprotocol is not None and subprotocol not in offered:
        raise ValueError(
            f"Cannot accept subprotocol {subprotocol!r}: the client offered {offered!r}. Choose one of those, or None."
        )


def check_group(group: object, presence: object = None) -> None:
    """A group is named by a non-empty ``str``; a presence value is a ``str`` or None.

    Both must be text UTF-8 can carry (a lone surrogate, as a client's JSON may
    hold, cannot): they are Redis keys and fields with a broker.
    """
    if not isinstance(group, str) or not group:
        raise TypeError(f"A group is named by a non-empty str, not {group!r}.")
    if presence is not None and not isinstance(presence, str):
        raise TypeError(f"presence= is a str naming who joined (a user name or id) or None, not {presence!r}.")
    for what, text in (("A group name", group), ("presence=", presence)):
        if text is not None and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise ValueError(f"{what} must be text UTF-8 can encode (no lone surrogates), not {text!r}.") from None


_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def check_close(code: int, reason: str) -> None:
    """``close()``'s code must be one an endpoint may send, its reason fit a close frame."""
    if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"{code} is not a close code an endpoint may send; use 1000, 1001, 1008, 1011 or 3000-4999.")
    if len(reason.encode()) > 123:
        raise ValueError("A close reason is at most 123 bytes of UTF-8.")


def exact(data: t.Any) -> str | bytes:
    """``data`` as exactly ``str`` or ``bytes``, which is what servers take."""
    if isinstance(data, str):
        return str(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        f"websocket.send() takes str or bytes, not {type(data).__name__}; use send_json() for other objects."
    )


def send_event(data: str | bytes) -> dict[str, t.Any]:
    if type(data) is str:
        return {"type": "websocket.send", "text": data}
    return {"type": "websocket.send", "bytes": data}


def spec_version(scope: Scope) -> tuple[int, ...]:
    version = (scope.get("asgi") or {}).get("spec_version") or "2.0"
    try:
        return tuple(int(part) for part in str(version).split(".")[:2])
    except ValueError:
        return (2, 0)
