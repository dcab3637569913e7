"""A multi-room chat: a login form, rooms joined by name, messages to everyone in a room.

Run: flask --app examples.chat.app asyncws run    (then open http://127.0.0.1:5000)
 or: hypercorn examples.chat.app:app.asgi_app    (then open http://127.0.0.1:8000)

The user name comes from the session; ``before_websocket`` refuses a handshake
without one (HTTP 401, before the upgrade). Rooms live in this process's
memory, so run one server process (see docs/deployment.md for more).
"""

from __future__ import annotations

import os

from flask import Flask, abort, redirect, render_template, request, session, url_for

from flask_asyncws import AsyncWS, Websocket, websocket

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev-only-change-me")
asyncws = AsyncWS(app)

#: room name -> the open websockets in it.
rooms: dict[str, set[Websocket]] = {}


@app.route("/")
def index() -> object:
    if "user" not in session:
        return redirect(url_for("login"))
    return render_template("chat.html", user=session["user"])


@app.route("/login", methods=["GET", "POST"])
def login() -> object:
    if request.method == "POST":
        name = request.form.get("name", "").strip()[:32]
        if name:
            session["user"] = name
            return redirect(url_for("index"))
    return render_template("login.html")


@app.post("/logout")
def logout() -> object:
    session.clear()
    return redirect(url_for("login"))


@app.before_websocket
def require_login() -> None:
    if "user" not in session:
        abort(401)


def broadcast(room: str, message: dict[str, str]) -> None:
    for member in list(rooms.get(room, ())):
        try:
            member.send_json(message)
        except Exception:  # that member left meanwhile; its own handler cleans up
            pass


@app.websocket("/ws/<room>")
def chat(room: str) -> None:
    """A sync handler: one greenlet per member, plain blocking-style calls."""
    user = session["user"]
    members = rooms.setdefault(room, set())
    members.add(websocket._get_current_object())
    broadcast(room, {"user": "", "text": f"{user} joined {room}"})
    try:
        while True:
            text = websocket.receive()
            if isinstance(text, str) and text.strip():
                broadcast(room, {"user": user, "text": text[:1000]})
    finally:
        members.discard(websocket._get_current_object())
        if not members:
            rooms.pop(room, None)
        broadcast(room, {"user": "", "text": f"{user} left {room}"})
