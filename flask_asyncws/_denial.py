"""Refusing a websocket handshake with an HTTP response, and waiting for it to settle."""

from __future__ import annotations

import asyncio
import typing as t

from ._quirks import server_of

if t.TYPE_CHECKING:
    from flask import Response

    from ._types import ASGIReceive, ASGISend, Scope

DENIAL_EXTENSION = "websocket.http.response"

#: How long to wait, after refusing a handshake, for the server to report the
#: connection gone before the app returns.
SETTLE_TIMEOUT = 1.0


async def deny(scope: Scope, send: ASGISend, response: Response) -> None:
    """Refuse the handshake with ``response`` (a real HTTP response where the
    server supports the ASGI denial extension, else the server's 403)."""
    try:
        if DENIAL_EXTENSION in (scope.get("extensions") or {}):
            body = b"".join(response.iter_encoded())
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
            await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": 1000})
    finally:
        response.close()


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
