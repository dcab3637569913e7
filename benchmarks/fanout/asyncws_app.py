"""flask-asyncws: a Flask app whose websocket handler joins the group and waits (``asyncws_app:app``).

The library sends every group message itself; the handler forwards nothing.
The publisher imports this module for the same configuration and calls
``asyncws.publish`` from a plain script, with no server and no event loop.
"""

from __future__ import annotations

import os

from flask import Flask

from flask_asyncws import AsyncWS, websocket

from .common import GROUP

app = Flask("fanout_asyncws")
app.config["ASYNCWS_BROKER_URL"] = os.environ.get("FANOUT_REDIS_URL", "redis://127.0.0.1:6379/0")
asyncws = AsyncWS(app)


@app.websocket("/ws")
async def member() -> None:
    await websocket.join(GROUP)
    while True:
        await websocket.receive()


@app.get("/")
def index() -> str:
    return "fan-out benchmark"
