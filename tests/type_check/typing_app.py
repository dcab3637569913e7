"""A small app in the typed form: ``AsyncWS(app)`` and the decorators on it."""

from __future__ import annotations

import typing as t

from flask import Flask, Response, abort, session
from typing_extensions import assert_type

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket

app = Flask(__name__)
app.secret_key = "change me"
asyncws = AsyncWS(app)


@asyncws.before_websocket
def require_login() -> None:
    if "user" not in session:
        abort(401)


@asyncws.before_websocket
async def refuse_at_night() -> tuple[str, int] | None:
    return None


@asyncws.after_websocket
def add_header(response: Response | None) -> Response | None:
    if response is not None:
        response.headers["X-Checked"] = "1"
    return response


@asyncws.after_websocket
async def keep(response: Response | None) -> Response | None:
    return response


@asyncws.teardown_websocket
def forget(exc: BaseException | None) -> None:
    pass


@asyncws.teardown_websocket
async def aforget(exc: BaseException | None) -> None:
    pass


@asyncws.websocket("/echo")
def echo() -> None:
    while True:
        websocket.send(websocket.receive())


@asyncws.websocket("/rooms/<room>", endpoint="room")
async def room(room: str) -> None:
    try:
        while True:
            await websocket.send(f"{room}: {await websocket.receive()}")
    except WebsocketDisconnect as exc:
        assert_type(exc.code, int)


@asyncws.websocket("/refuse")
def refuse() -> tuple[str, int]:
    return "not today", 403


def ping(times: int = 1) -> None:
    for _ in range(times):
        websocket.send("pong")


asyncws.add_websocket("/ping", view_func=ping)


@asyncws.before_serving
async def open_pool() -> None:
    pass


@asyncws.after_serving
def close_pool() -> None:
    pass


# The decorators hand back the function as it was: its signature is kept.
assert_type(ping(times=2), None)
keeps_async: t.Callable[[str], t.Coroutine[t.Any, t.Any, None]] = room
assert_type(add_header(None), Response | None)

# What a server is given: ``hypercorn typing_app:asyncws.asgi_app``.
application = asyncws.asgi_app

if __name__ == "__main__":
    asyncws.run(debug=True)
