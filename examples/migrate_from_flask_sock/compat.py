"""Step one: the same app with one import changed, served by an ASGI server.

Run: hypercorn examples.migrate_from_flask_sock.compat:app.asgi_app    (websockets at ws://127.0.0.1:8000/echo ...)
"""

from flask import Flask, request

from flask_asyncws.compat import Sock

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}
sock = Sock(app)


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        if data == "close":
            break
        ws.send(data)


@sock.route("/greet")
def greet(ws):
    ws.send(f"hello {request.args.get('name', 'stranger')}")


@sock.route("/countdown/<int:start>")
def countdown(ws, start):
    """Count down, one number per tick; any message from the client stops it."""
    for n in range(start, 0, -1):
        ws.send(str(n))
        if ws.receive(timeout=0.05) is not None:
            ws.close(message="stopped")
            return
    ws.send("liftoff")
