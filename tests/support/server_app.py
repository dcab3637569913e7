"""The app the server-process tests serve (:class:`support.servers.DocsServer`).

Daphne and granian run it as a real process, so it lives in a module they can
import. What the process saw (the close code a handler got, the serving hooks)
is reported over HTTP, or written to the file named by ``ASYNCWS_TEST_RECORD``
once the server is gone.
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t

from flask import Flask, abort, jsonify

from flask_asyncws import AsyncWS, WebsocketDisconnect, run_sync, websocket

app = Flask(__name__)
app.config["ASYNCWS_MAX_QUEUE_SIZE"] = 64 * 1024
asyncws = AsyncWS(app)

#: What the process has seen, reported by /seen.
seen: dict[str, t.Any] = {"serving": False, "disconnect": None}


def _record(line: str) -> None:
    path = os.environ.get("ASYNCWS_TEST_RECORD")
    if path:
        with open(path, "a") as file:
            file.write(line + "\n")


@app.before_serving
def started() -> None:
    seen["serving"] = True
    _record("before_serving")


@app.after_serving
def stopped() -> None:
    _record("after_serving")


@app.teardown_websocket
def teardown(error: BaseException | None) -> None:
    _record(f"teardown {type(error).__name__}")


@app.get("/hello")
def hello() -> str:
    return "hello"


@app.get("/seen")
def report() -> t.Any:
    return jsonify(seen)


@app.websocket("/echo")
def echo() -> None:
    while True:
        websocket.send(websocket.receive())


@app.websocket("/close/<int:code>")
def close(code: int) -> None:
    """Close with ``code`` once the client says so."""
    websocket.receive()
    websocket.close(code, f"closing with {code}")


@app.websocket("/error")
def error() -> None:
    websocket.receive()
    raise RuntimeError("handler failed after accept")


@app.websocket("/busy")
async def busy() -> None:
    """Accept and read nothing: the client's messages pile up until 1008."""
    await websocket.accept()
    await asyncio.sleep(30)


@app.websocket("/wait")
def wait() -> None:
    """Read until the client leaves; /seen reports the code and reason it left with."""
    _record("wait accepted")
    try:
        while True:
            websocket.receive()
    except WebsocketDisconnect as exc:
        seen["disconnect"] = [exc.code, exc.reason]
        _record(f"wait disconnect {exc.code}")
        raise


@app.websocket("/deny")
def deny() -> t.Any:
    return "go away", 401, {"X-Why": "token"}


@app.websocket("/deny-later")
def deny_later() -> t.Any:
    """Refuse after waiting on something else (the handshake is watched meanwhile)."""
    run_sync(time.sleep, 0.05)
    return "go away", 401, {"X-Why": "token"}


@app.websocket("/abort")
def aborted() -> None:
    abort(404)


@app.websocket("/silent")
def silent() -> None:
    """Return without accepting."""


@app.websocket("/subprotocol")
def subprotocol() -> None:
    websocket.accept(subprotocol="chat")
    websocket.send(websocket.receive())


@app.websocket("/headers")
def headers() -> None:
    websocket.accept(headers={"X-Extra": "yes"})
    websocket.send(websocket.receive())


@app.websocket("/group/<name>")
def group_member(name: str) -> None:
    websocket.join(name, presence=websocket.args.get("user"))
    while True:
        asyncws.publish(name, websocket.receive())


@app.websocket("/agroup/<name>")
async def async_group_member(name: str) -> None:
    await websocket.join(name, presence=websocket.args.get("user"))
    while True:
        await asyncws.publish(name, await websocket.receive())


@app.get("/group/<name>")
def group_count(name: str) -> dict[str, t.Any]:
    return {"count": asyncws.count(name), "presence": asyncws.presence(name)}


asgi_app = app.asgi_app
