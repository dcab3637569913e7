"""The websocket's protocol state: its transitions, and the error of each call in a closed state."""

from __future__ import annotations

import asyncio
import typing as t

import pytest
from flask import Flask, request

from flask_asyncws import AsyncWS, WebsocketDisconnect
from flask_asyncws._state import ACCEPTED, CLOSED, CONNECTING, DISCONNECTED, NEXT, IllegalTransition, State
from flask_asyncws._websocket import Websocket

app = Flask(__name__)
AsyncWS(app)


class Server:
    """An in-memory server side: what the app sent, and a client that never sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, t.Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, t.Any]:
        await self.gone.wait()
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(self, message: dict[str, t.Any]) -> None:
        self.sent.append(message)


def run(test: t.Callable[[Websocket, Server], t.Awaitable[None]]) -> None:
    async def main() -> None:
        server = Server()
        with app.test_request_context("/ws"):
            ws = Websocket(request._get_current_object(), {"type": "websocket"}, server.receive, server.send)  # type: ignore[attr-defined]
            try:
                await test(ws, server)
            finally:
                ws.reader.stop()

    asyncio.run(main())


def test_the_transitions_there_are() -> None:
    assert set(NEXT) == set(State)
    assert NEXT[CONNECTING] == {ACCEPTED, CLOSED, DISCONNECTED}
    assert NEXT[ACCEPTED] == {CLOSED, DISCONNECTED}
    assert NEXT[CLOSED] == {DISCONNECTED}
    assert NEXT[DISCONNECTED] == set()


def test_accept_close_and_departure_move_the_state() -> None:
    async def test(ws: Websocket, server: Server) -> None:
        assert ws._state is CONNECTING and not ws.accepted and not ws.closed
        await ws.accept()
        assert ws._state is ACCEPTED and ws.accepted
        await ws.accept()  # idempotent
        await ws.close(1000, "bye")
        assert ws._state is CLOSED and ws.closed and ws.accepted
        await ws.close()  # again: nothing
        with pytest.raises(RuntimeError, match="Cannot send: the handler already closed this websocket."):
            await ws.send("x")
        with pytest.raises(WebsocketDisconnect) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (1000, "bye")
        ws.departed(1001, "")
        assert ws._state is DISCONNECTED and ws.disconnect is not None
        with pytest.raises(WebsocketDisconnect):
            await ws.send("x")
        assert [m["type"] for m in server.sent] == ["websocket.accept", "websocket.close"]

    run(test)


def test_accept_after_the_handlers_close_says_so_even_once_the_client_left() -> None:
    async def test(ws: Websocket, server: Server) -> None:
        await ws.close()  # before accept: the client gets 403
        ws.departed(1006, "")
        assert ws._state is DISCONNECTED and not ws.accepted
        with pytest.raises(RuntimeError, match="Cannot accept: the handler already closed this websocket."):
            await ws.accept()

    run(test)


def test_a_move_not_in_the_table_is_an_error() -> None:
    async def test(ws: Websocket, server: Server) -> None:
        ws.departed(1006, "")
        with pytest.raises(IllegalTransition, match="from DISCONNECTED to ACCEPTED"):
            ws._enter(ACCEPTED)
        assert ws._state is DISCONNECTED

    run(test)


def test_a_refusal_for_what_the_client_sent_closes_and_treats_it_as_gone() -> None:
    async def test(ws: Websocket, server: Server) -> None:
        await ws.accept()
        await ws.refuse(1008, "too many unread messages", notify=False)
        assert ws._state is DISCONNECTED and ws.reader.refused_client
        assert server.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "too many unread messages"}
        with pytest.raises(WebsocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1008

    run(test)
