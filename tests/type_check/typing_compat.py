"""A Flask-Sock app moved over by changing one import."""

from __future__ import annotations

from flask import Blueprint, Flask

from flask_asyncws.compat import ConnectionClosed, Sock, WebSocket

app = Flask(__name__)
sock = Sock(app)
bp = Blueprint("bp", __name__)


@sock.route("/echo")
def echo(ws: WebSocket) -> None:
    while True:
        try:
            data = ws.receive(timeout=5)
        except ConnectionClosed as exc:
            print(exc.reason, exc.message)
            return
        if data is None:
            continue
        ws.send(data)


@sock.route("/chat/<room>", bp=bp)
def chat(ws: WebSocket, room: str) -> None:
    ws.send(f"joined {room}")
    ws.close(reason=1000, message="bye")


app.register_blueprint(bp)
