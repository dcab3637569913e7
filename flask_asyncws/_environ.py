"""The WSGI environ (PEP 3333) of an ASGI scope.

For an http scope it is the environ the app runs with; for a websocket scope,
the environ of the handshake's request context.
"""

from __future__ import annotations

import io
import sys
import typing as t

if t.TYPE_CHECKING:
    from ._types import Scope

#: WSGI environ keys for header names already seen.
_HEADER_KEYS: dict[bytes, str] = {}


def build_environ(scope: Scope) -> dict[str, t.Any]:
    """A PEP 3333 environ for ``scope`` (an http or websocket scope)."""
    root_path: str = scope.get("root_path", "") or ""
    authority, path = split_target(scope["path"])
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    websocket = scope["type"] == "websocket"
    scheme = scope.get("scheme") or ("ws" if websocket else "http")
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, t.Any] = {
        "REQUEST_METHOD": "GET" if websocket else scope.get("method", "GET"),
        "SCRIPT_NAME": root_path.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": (scope.get("query_string") or b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if scheme in ("https", "wss") else "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "asgi.scope": scope,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope.get("headers", ()):
        key = _HEADER_KEYS.get(raw_name)
        if key is None:
            key = _environ_key(raw_name)
        value = raw_value.decode("latin-1")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = f"{environ[key]}{separator}{value}"
        else:
            environ[key] = value
    if authority:
        environ["HTTP_HOST"] = authority  # RFC 9112 §3.2.2: it replaces the Host header
    if websocket:
        # HTTP/2 websockets (RFC 8441) carry no Upgrade header; Werkzeug
        # binds websocket rules from these two.
        environ["HTTP_CONNECTION"] = "Upgrade"
        environ["HTTP_UPGRADE"] = "websocket"
    return environ


def split_target(path: str) -> tuple[str | None, str]:
    """The authority and path of an absolute-form request target
    (``ws://host/chat``), which servers pass on as the scope's path; RFC 9112
    §3.2.2 has servers accept it. ``(None, path)`` for the usual origin form."""
    if path.startswith("/"):
        return None, path
    scheme, sep, rest = path.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        return None, path
    authority, _, path = rest.partition("/")
    return authority.rpartition("@")[2], f"/{path}"  # userinfo is no part of the host


_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def _environ_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").upper().replace("-", "_")
    key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
    if len(_HEADER_KEYS) < 512:  # bounded: clients choose header names
        _HEADER_KEYS[raw_name] = key
    return key
