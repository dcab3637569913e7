"""The protocol state of one websocket, and the error a closed one raises.

:class:`State` is where a connection is in the websocket protocol, as the app
sees it; :data:`NEXT` lists the transitions there are. Everything else a
:class:`~flask_asyncws._websocket.Websocket` keeps (who reads from the server,
the inbox, a forgotten ``await``) is not protocol state and lives in its
collaborators.
"""

from __future__ import annotations

import enum


class WebsocketDisconnect(Exception):
    """The connection is closed: the client left, or the handler closed it.

    ``code`` and ``reason`` are what the server reported. Hypercorn reports
    1006 for every client-initiated close (the client's own code is lost).
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"websocket closed with code {self.code}" + (f": {self.reason}" if self.reason else "")


class State(enum.Enum):
    """Where a websocket is in the protocol.

    ``CONNECTING``: the handshake is not answered; the app may still refuse it
    with an HTTP response. ``ACCEPTED``: open both ways. ``CLOSED``: the app
    closed it (``close()``, the handler's end, a refusal before accept, or a
    close for what the client sent); nothing more may be sent, a receive raises
    :class:`WebsocketDisconnect` with the close's code. ``DISCONNECTED``: the
    client is gone (the server said so, a send failed, or the app treats it as
    gone: closed for flooding, or at shutdown); every call raises its
    departure, once the messages that came before it are read.
    """

    CONNECTING = 0
    ACCEPTED = 1
    CLOSED = 2
    DISCONNECTED = 3

    # Members are singletons: hashed by identity, in C (Enum's own hash is a
    # Python call, which a handshake would pay at each transition).
    __hash__ = object.__hash__


CONNECTING = State.CONNECTING
ACCEPTED = State.ACCEPTED
CLOSED = State.CLOSED
DISCONNECTED = State.DISCONNECTED

#: The states each state may move to. Every other move is a bug in the package
#: (a user's call in the wrong state gets its own error before any move).
NEXT: dict[State, frozenset[State]] = {
    CONNECTING: frozenset({ACCEPTED, CLOSED, DISCONNECTED}),
    ACCEPTED: frozenset({CLOSED, DISCONNECTED}),
    CLOSED: frozenset({DISCONNECTED}),
    DISCONNECTED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move between states that :data:`NEXT` does not list."""

    def __init__(self, current: State, new: State) -> None:
        super().__init__(f"A websocket cannot go from {current.name} to {new.name}.")
