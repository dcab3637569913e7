"""Groups as a user's type-checked code writes them."""

from __future__ import annotations

from flask import Flask, request

from flask_asyncws import AsyncWS, BrokerUnavailable, websocket

app = Flask(__name__)
app.config["ASYNCWS_BROKER_URL"] = None
asyncws = AsyncWS(app)


@asyncws.websocket("/ws/<room>")
def chat(room: str) -> None:
    websocket.join(room, presence=request.args.get("user"))
    members: frozenset[str] = websocket.groups
    while room in members:
        asyncws.publish(room, {"text": websocket.receive()})
    websocket.leave(room)


@asyncws.websocket("/async/<room>")
async def async_chat(room: str) -> None:
    await websocket.join(room)
    count: int = await asyncws.count(room)
    await asyncws.publish(room, f"{count} here")
    await websocket.leave(room)


@app.get("/rooms/<room>")
def who(room: str) -> dict[str, object]:
    try:
        presence: dict[str, int] = asyncws.presence(room)
    except BrokerUnavailable as exc:
        unavailable: ConnectionError = exc
        return {"error": str(unavailable)}
    return {"count": asyncws.count(room), "presence": presence}
