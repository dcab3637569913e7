"""What the app does differently for one server (see docs/servers.md).

Neither daphne nor granian names itself in the scope: daphne sends no
``spec_version``, no ``extensions`` and no ``http_version`` (a scope other
servers could send too), granian sends the same keys as hypercorn. What does
name them is the ``send`` callable each hands the app: daphne's is
``functools.partial(Server.handle_reply, protocol)`` (a method of
``daphne.server.Server``), granian's a method of its Rust protocol object
(``granian._granian.ASGIWebsocketProtocol``). That is checked only when a quirk
is about to matter (a close code, a refusal), never per message.

Middleware that wraps ``send`` hides the server: the app then behaves as under
any other server.
"""

from __future__ import annotations

import typing as t

from ._log import logger

#: The servers told apart here.
KNOWN = ("daphne", "granian")


def server_of(send: t.Callable[..., t.Any]) -> str | None:
    """``"daphne"`` or ``"granian"`` when that server made ``send``, else None."""
    func = getattr(send, "func", send)  # functools.partial: daphne
    owner = getattr(func, "__self__", None)
    if owner is None:
        return None
    package = type(owner).__module__.partition(".")[0]
    return package if package in KNOWN else None


def sendable_close_code(send: t.Callable[..., t.Any], code: int) -> int:
    """The close code to hand ``send`` for ``code``.

    Daphne passes the code to autobahn, which raises for anything but 1000 and
    3000-4999 (RFC 6455 lets an endpoint send 1001, 1008, 1009 and 1011 too)
    and sends nothing: the client would wait for its own close timeout. Under
    daphne those codes become 1000, which is sent.
    """
    if code == 1000 or 3000 <= code <= 4999 or server_of(send) != "daphne":
        return code
    return 1000


def close_event(send: t.Callable[..., t.Any], code: int, reason: str, path: str) -> dict[str, t.Any]:
    """The ``websocket.close`` event for ``code``, in a code the server can send (for the websocket at ``path``)."""
    sendable = sendable_close_code(send, code)
    if sendable != code:
        logger.debug(
            "Closing %r with %d instead of %d (reason %r): the server sends no other codes below 3000.",
            path,
            sendable,
            code,
            reason,
        )
    message: dict[str, t.Any] = {"type": "websocket.close", "code": sendable}
    if reason:
        message["reason"] = reason
    return message
