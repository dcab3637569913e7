"""The test client's handshake: the request and ASGI scope it builds, and the cookie jar it shares.

A test websocket sends the client's cookies and stores those the app sets, as
a browser does. The jar is the Werkzeug client's own, reached through public
API only: a request to the handshake's URL, which :class:`CookieExchange`
answers before the app sees it.
"""

from __future__ import annotations

import base64
import os
import typing as t
import weakref
from urllib.parse import quote

import flask
from flask.testing import EnvironBuilder
from werkzeug.datastructures import EnvironHeaders
from werkzeug.test import Client
from werkzeug.wrappers import Request

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._types import Scope


def handshake(
    app: flask.Flask, builder_args: dict[str, t.Any], cookie: str | None, subprotocols: t.Sequence[str] | None
) -> tuple[Request, Scope]:
    """The handshake as a Werkzeug request (with the jar's ``cookie``) and as
    the ASGI scope a server would build for it."""
    builder = EnvironBuilder(app, **builder_args)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    request = Request(environ)

    names = set()
    header_list = []
    for name, value in EnvironHeaders(environ).items():
        names.add(name.lower())
        header_list.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    required = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": base64.b64encode(os.urandom(16)).decode("ascii"),
    }
    if subprotocols:
        required["sec-websocket-protocol"] = ", ".join(subprotocols)
    for name, value in required.items():
        if name not in names:
            header_list.append((name.encode("latin-1"), value.encode("latin-1")))

    root_path = unwsgi(environ.get("SCRIPT_NAME", ""))
    full_path = root_path + unwsgi(environ.get("PATH_INFO", ""))
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "wss" if environ["wsgi.url_scheme"] == "https" else "ws",
        "path": full_path,
        "raw_path": quote(full_path).encode("ascii"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": root_path,
        "headers": header_list,
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), int(environ.get("REMOTE_PORT") or 0)),
        "server": (environ["SERVER_NAME"], int(environ["SERVER_PORT"])),
        "subprotocols": list(subprotocols or ()),
        "extensions": {"websocket.http.response": {}},
    }
    return request, scope


def cookie_exchange(
    client: Client, app: flask.Flask, builder_args: dict[str, t.Any], answer: list[tuple[str, str]]
) -> str | None:
    """The ``Cookie`` header the client's jar has for the handshake, after
    storing the ``Set-Cookie`` headers in ``answer`` there.

    The request goes to the handshake's URL through the client (as Werkzeug's
    ``Client.open``, without Flask's context preservation), and
    :class:`CookieExchange` answers it with ``answer`` before the app sees it.
    """
    CookieExchange.install(app)
    seen: list[str | None] = []

    def exchange(environ: WSGIEnvironment) -> list[tuple[str, str]]:
        seen.append(environ.get("HTTP_COOKIE"))
        return answer

    builder = EnvironBuilder(app, **builder_args, environ_overrides={EXCHANGE: exchange})
    try:
        Client.open(client, builder).close()
    finally:
        builder.close()
    if not seen:
        raise RuntimeError(
            "The websocket test client's cookie request did not reach the app: a WSGI middleware"
            " around app.wsgi_app answered it. The websocket test client needs requests to reach the app."
        )
    return seen[0]


EXCHANGE = "flask_asyncws.testing.cookie_exchange"


class CookieExchange:
    """WSGI middleware answering the websocket test client's cookie requests
    (marked in the environ, which a client cannot set) without the app."""

    _installed: weakref.WeakSet[flask.Flask] = weakref.WeakSet()

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app

    @classmethod
    def install(cls, app: flask.Flask) -> None:
        """Wrap ``app.wsgi_app``, once, when the app's first test websocket opens."""
        if app not in cls._installed:
            app.wsgi_app = cls(app.wsgi_app)  # type: ignore[method-assign]
            cls._installed.add(app)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        exchange = environ.get(EXCHANGE)
        if exchange is None:
            return self.wsgi_app(environ, start_response)
        start_response("204 No Content", exchange(environ))
        return []


def unwsgi(value: str) -> str:
    """A WSGI (latin-1) environ string as the text ASGI uses."""
    return value.encode("latin-1").decode("utf-8", "replace")
