"""The app the metrics tests scrape, under hypercorn with several workers (multiprocess mode)."""

from __future__ import annotations

import os

from flask import Flask

from flask_asyncws import AsyncWS, websocket
from flask_asyncws.metrics import init_metrics

app = Flask(__name__)
AsyncWS(app)
init_metrics(app)


@app.get("/hello")
def hello() -> str:
    return "hello"


@app.websocket("/echo")
def echo() -> None:
    """Says which worker serves it, then echoes until the client leaves."""
    websocket.send(str(os.getpid()))
    while True:
        websocket.send(websocket.receive())


asgi_app = app.asgi_app  # type: ignore[attr-defined]
