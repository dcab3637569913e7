"""Echo over websockets, with a sync and an async handler.

Run: hypercorn examples.echo.app:app.asgi_app    (then open http://127.0.0.1:8000)
 or: flask --app examples.echo.app asyncws run    (then open http://127.0.0.1:5000)
"""

from flask import Flask, render_template_string

from flask_asyncws import AsyncWS, websocket

app = Flask(__name__)
asyncws = AsyncWS(app)

PAGE = """<!doctype html>
<title>flask-asyncws echo</title>
<p>Open the browser console and try:</p>
<pre>const ws = new WebSocket("{{ url_for('echo') }}");
ws.onmessage = (e) => console.log(e.data);
ws.onopen = () => ws.send("hello");</pre>
"""


@app.route("/")
def index() -> str:
    return render_template_string(PAGE)


@app.websocket("/echo")
def echo() -> None:
    """A sync handler: plain calls, run in a greenlet on the event loop."""
    while True:
        websocket.send(websocket.receive())


@app.websocket("/aecho")
async def aecho() -> None:
    """An async handler: the same API, awaited."""
    while True:
        await websocket.send(await websocket.receive())
