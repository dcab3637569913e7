"""The HTTP bridge: the app's existing routes served through ASGI.

Builds a WSGI environ from an ASGI scope (also used for the websocket
handshake's request context) and runs Flask's ``wsgi_app`` for http scopes.
"""

from __future__ import annotations

import asyncio
import io
import sys
import typing as t

if t.TYPE_CHECKING:
    import flask

    from .asgi import ASGIReceive, ASGISend, Scope
    from .extension import Settings


def build_environ(scope: Scope, body: t.IO[bytes] | None = None) -> dict[str, t.Any]:
    """A PEP 3333 environ for ``scope`` (an http or websocket scope)."""
    root_path: str = scope.get("root_path", "") or ""
    path: str = scope["path"]
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
        "wsgi.input": body if body is not None else io.BytesIO(),
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
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE" or name == "CONTENT_LENGTH":
            key = name
        else:
            key = f"HTTP_{name}"
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = f"{environ[key]}{separator}{value}"
        else:
            environ[key] = value
    if websocket:
        # HTTP/2 websockets (RFC 8441) carry no Upgrade header; Werkzeug
        # binds websocket rules from these two.
        environ["HTTP_CONNECTION"] = "Upgrade"
        environ["HTTP_UPGRADE"] = "websocket"
    return environ


class HTTPBridge:
    """Runs the Flask app for http scopes."""

    def __init__(self, app: flask.Flask, settings: t.Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        environ = build_environ(scope, io.BytesIO(b"".join(chunks)))
        loop = asyncio.get_running_loop()
        status_headers: list[t.Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Callable[[bytes], None]:
            status_headers[:] = [status, headers]
            return lambda data: None

        def run() -> tuple[list[t.Any], list[bytes]]:
            from .bridge import bind_thread_to_loop

            bind_thread_to_loop(loop)
            try:
                iterable = self.app.wsgi_app(environ, start_response)
                try:
                    return status_headers, list(iterable)
                finally:
                    close = getattr(iterable, "close", None)
                    if close is not None:
                        close()
            finally:
                bind_thread_to_loop(None)

        (status, headers), body = await asyncio.to_thread(run)
        await send(
            {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"".join(body)})

    async def aclose(self) -> None:
        """Release worker threads; called at server shutdown."""
