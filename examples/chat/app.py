"""A chat: rooms, a live member list, announcements over HTTP. Rooms are groups.

One server process, the rooms in its memory:

Run: flask --app examples.chat.app asyncws run    (then open http://127.0.0.1:5000)
 or: hypercorn examples.chat.app:app.asgi_app    (then open http://127.0.0.1:8000)

Two worker processes (or more, on several hosts) sharing the rooms through Redis, then open
http://127.0.0.1:8000 in two browsers: a message typed in one reaches the other, whichever worker serves it.

Run: ASYNCWS_BROKER_URL=redis://localhost:6379/0 hypercorn --workers 2 examples.chat.app:app.asgi_app

Every worker must have the same ``SECRET_KEY`` (the session cookie names the user): the development default
below is; in production set your own in the environment of each.

- ``GET /?room=lobby``: the chat page (a login form first: the user name lives in the session).
- websocket ``/ws/<room>``: joins the room's group with the user name as presence. Everything the page shows
  comes from ``asyncws.publish``; the handler forwards nothing (it sends a connection only its welcome).
- ``GET /rooms/<room>``: the room's live connections and who they are, across every worker.
- ``POST /rooms/<room>/announce`` with ``{"text": "..."}``: a message to everyone in the room, from any process.
  Open to anyone here; put it behind your own authentication in a real app.
"""

from __future__ import annotations

import logging
import os
import re
import time
import typing as t
from urllib.parse import urlsplit

from flask import Flask, abort, redirect, render_template, request, session, url_for

from flask_asyncws import AsyncWS, BrokerUnavailable, websocket

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev-only-change-me")
# None (unset): groups in this process only, for one worker.
app.config["ASYNCWS_BROKER_URL"] = os.environ.get("ASYNCWS_BROKER_URL") or None
asyncws = AsyncWS(app)
log = logging.getLogger(__name__)

ROOM = re.compile(r"[\w-]{1,32}")
MAX_TEXT = 1000


def now() -> int:
    """The server's clock in milliseconds since the epoch (the page shows it in the reader's time zone)."""
    return int(time.time() * 1000)


def checked_room(room: str) -> str:
    if not ROOM.fullmatch(room):
        abort(404, f"A room name is 1 to 32 letters, digits, '-' or '_', not {room!r}.")
    return room


def publish_members(room: str) -> None:
    """Send the room its member list: user name -> open connections (two tabs count 2).

    ``at`` is when the list was read: two lists published at about the same time from two
    workers can arrive in either order, and the page keeps the newer one.
    """
    asyncws.publish(room, {"type": "members", "members": asyncws.presence(room), "at": time.time()})


# -- pages --------------------------------------------------------------------


@app.context_processor
def websocket_paths() -> dict[str, t.Any]:
    def websocket_path(endpoint: str, **values: t.Any) -> str:
        # url_for builds ws://host/ws/lobby; the page adds its own scheme and host to the path,
        # which stays right behind a proxy that terminates TLS.
        return urlsplit(url_for(endpoint, **values)).path

    return {"websocket_path": websocket_path}


@app.route("/")
def index() -> t.Any:
    if "user" not in session:
        return redirect(url_for("login"))
    room = request.args.get("room", "lobby").strip()
    if not ROOM.fullmatch(room):
        return render_template("chat.html", user=session["user"], room="lobby", error=f"No room {room!r}."), 400
    return render_template("chat.html", user=session["user"], room=room, error=None)


@app.route("/login", methods=["GET", "POST"])
def login() -> t.Any:
    if request.method == "POST":
        name = request.form.get("name", "").strip()[:32]
        if name:
            session["user"] = name
            return redirect(url_for("index"))
    return render_template("login.html")


@app.post("/logout")
def logout() -> t.Any:
    session.clear()
    return redirect(url_for("login"))


# -- the websocket --------------------------------------------------------------


@app.before_websocket
def require_login() -> None:
    if "user" not in session:
        abort(401)  # refused before the upgrade


@app.websocket("/ws/<room>")
def chat(room: str) -> None:
    """A sync handler: plain calls, one greenlet per connection."""
    room = checked_room(room)
    user: str = session["user"]
    websocket.join(room, presence=user)
    try:
        websocket.send_json({"type": "welcome", "user": user, "room": room, "worker": os.getpid()})
        asyncws.publish(room, {"type": "notice", "text": f"{user} joined", "time": now()})
        publish_members(room)
        while True:
            text = websocket.receive()
            if not isinstance(text, str) or not text.strip():
                continue
            message = {"type": "message", "user": user, "text": text.strip()[:MAX_TEXT], "time": now()}
            try:
                asyncws.publish(room, message)
            except BrokerUnavailable:
                websocket.send_json({"type": "error", "text": "Not sent: the server lost its broker. Try again soon."})
    finally:
        # Leave first, so that the member list published below no longer counts this connection.
        # (A connection that ends leaves its groups anyway; this is for the list.)
        websocket.leave(room)
        try:
            asyncws.publish(room, {"type": "notice", "text": f"{user} left", "time": now()})
            publish_members(room)
        except BrokerUnavailable as exc:
            log.warning("Could not tell room %r that %r left: %s", room, user, exc)


# -- HTTP, from any worker or any process -------------------------------------


@app.get("/rooms/<room>")
def room_info(room: str) -> dict[str, t.Any]:
    room = checked_room(room)
    return {"room": room, "count": asyncws.count(room), "presence": asyncws.presence(room)}


@app.post("/rooms/<room>/announce")
def announce(room: str) -> t.Any:
    room = checked_room(room)
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return {"error": 'Send a JSON object with a non-empty "text" string.'}, 400
    asyncws.publish(room, {"type": "announcement", "text": text.strip()[:MAX_TEXT], "time": now()})
    return "", 204


@app.errorhandler(BrokerUnavailable)
def broker_unavailable(exc: BrokerUnavailable) -> t.Any:
    log.warning("%s", exc)  # names the broker's URL (without its password): for the logs, not for clients
    return {"error": "The chat's broker is unavailable; try again soon."}, 503
