"""The app the shutdown tests serve in a separate process.

Serve it with ``hypercorn support.shutdown_app:asgi`` or ``flask --app support.shutdown_app
asyncws run`` (``tests`` on the path). Each teardown and ``after_serving``
appends a line to the file named by ``SHUTDOWN_LOG``. ``/slow`` answers the
client leaving by waiting for the file named by ``SHUTDOWN_RELEASE`` to
exist, which holds the shutdown open for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import os
import time

from flask import Flask

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket

app = Flask(__name__)
asyncws = AsyncWS(app)
asgi = app.asgi_app


def log(line: str) -> None:
    with open(os.environ["SHUTDOWN_LOG"], "a") as f:
        f.write(line + "\n")


@app.teardown_websocket
def record_teardown(error: BaseException | None) -> None:
    if websocket.path != "/echo":  # the check that the server is ready
        log(f"teardown {websocket.path} {error!r}")


@app.websocket("/echo")
def echo() -> None:
    websocket.send(websocket.receive())


@app.after_serving
def record_after_serving() -> None:
    log("after_serving")


@app.websocket("/sync")
def sync_echo() -> None:
    while True:
        websocket.send(websocket.receive())


@app.websocket("/async")
async def async_echo() -> None:
    while True:
        await websocket.send(await websocket.receive())


@app.websocket("/slow")
async def slow() -> None:
    try:
        while True:
            await websocket.send(await websocket.receive())
    except WebsocketDisconnect:
        deadline = time.monotonic() + 20
        while not os.path.exists(os.environ["SHUTDOWN_RELEASE"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        raise
