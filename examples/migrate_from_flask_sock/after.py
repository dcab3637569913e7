"""Step two: the same app on flask-asyncws's own API.

Run: hypercorn examples.migrate_from_flask_sock.after:app.asgi_app    (websockets at ws://127.0.0.1:8000/echo ...)

What changed from ``before.py``: ``Sock(app)`` → ``AsyncWS(app)``;
``@sock.route`` → ``@app.websocket``; the ``ws`` argument → the ``websocket``
proxy; ``SOCK_SERVER_OPTIONS`` → ``ASYNCWS_*`` keys. A receive with a timeout
becomes an async handler waiting on a receive task.
"""

import asyncio

from flask import Flask, request

from flask_asyncws import AsyncWS, websocket

app = Flask(__name__)
app.config["ASYNCWS_PING_INTERVAL"] = 25
asyncws = AsyncWS(app)


@app.websocket("/echo")
def echo():
    while True:
        data = websocket.receive()
        if data == "close":
            break
        websocket.send(data)


@app.websocket("/greet")
def greet():
    websocket.send(f"hello {request.args.get('name', 'stranger')}")


@app.websocket("/countdown/<int:start>")
async def countdown(start):
    """Count down, one number per tick; any message from the client stops it."""
    message = asyncio.ensure_future(websocket.receive())
    try:
        for n in range(start, 0, -1):
            await websocket.send(str(n))
            done, _ = await asyncio.wait((message,), timeout=0.05)
            if done:
                message.result()  # raises WebsocketDisconnect if the client left instead
                await websocket.close(1000, "stopped")
                return
        await websocket.send("liftoff")
    finally:
        message.cancel()
