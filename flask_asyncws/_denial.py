"""Refusing a websocket handshake with an HTTP response, and waiting for it to settle."""

from __future__ import annotations

import asyncio
import typing as t

from ._quirks import server_of
from .signals import websocket_refused

if t.TYPE_CHECKING:
    from flask import Flask, Response

    from ._types import ASGIReceive, ASGISend, Scope
    from ._websocket import Websocket

DENIAL_EXTENSION = "websocket.http.response"

#: How long to wait, after refusing a handshake, for the server to report the
#: connection gone before the app returns.
SETTLE_TIMEOUT = 1.0


async def deny(
    app: Flask, scope: Scope, send: ASGISend, response: Response, websocket: Websocket | None = None
) -> None:
    """Refuse the handshake with ``response`` (a real HTTP response where the
    server supports the ASGI denial extension, else the server's 403).

    Every refusal with a response comes here, so :data:`~flask_asyncws.signals.websocket_refused`
    is sent here, before the response goes out (``websocket`` None: refused
    before any of the app's code ran).
    """
    try:
        if websocket_refused.receivers:
            await websocket_refused.send_async(app, _sync_wrapper=_as_async, response=response, websocket=websocket)
        if DENIAL_EXTENSION in (scope.get("extensions") or {}):
            body = b"".join(response.iter_encoded())
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
            await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": 1000})
    finally:
        response.close()


def _as_async(func: t.Callable[..., t.Any]) -> t.Callable[..., t.Coroutine[t.Any, t.Any, t.Any]]:
    """A sync receiver, called from async code (blinker's ``send_async`` asks for the wrapper)."""

    async def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return func(*args, **kwargs)

    return call


async def settle(receive: ASGIReceive, send: ASGISend) -> None:
    """Wait up to :data:`SETTLE_TIMEOUT` for the server to report a refused connection gone."""
    if server_of(send) == "granian":
        # Granian never reports it, and a receive() still waiting when granian shuts
        # down makes its worker panic (pyo3: "Cannot drop pointer into Python heap
        # without the thread being attached"). It has sent the refusal already.
        return

    async def disconnected() -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), SETTLE_TIMEOUT)
    except asyncio.TimeoutError:
        pass
