"""The app the metrics tests scrape, under hypercorn with several workers (multiprocess mode)."""

from __future__ import annotations

import os
import time

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
    """Says which worker serves it, then echoes until the client leaves.

    ``block`` blocks the worker's event loop for two seconds before its echo:
    the worker accepts no connection meanwhile, so the next ones go to another.
    """
    websocket.send(str(os.getpid()))
    while True:
        message = websocket.receive()
        if message == "block":
            time.sleep(2)
        websocket.send(message)


asgi_app = app.asgi_app  # type: ignore[attr-defined]
