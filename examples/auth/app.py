"""Flask-Login protecting websocket routes.

Run: flask --app examples.auth.app asyncws run    (log in at http://127.0.0.1:5000/login)

The handshake carries the session cookie, so ``current_user`` works in
websocket handlers and hooks as in views. An anonymous handshake is refused
with HTTP 401 before the upgrade: by ``@login_required`` on a handler, or by a
``before_websocket`` hook for a whole blueprint.
"""

from __future__ import annotations

import os

from flask import Flask, abort, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user

from flask_asyncws import AsyncWS, Blueprint, has_websocket_context, websocket

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev-only-change-me")
asyncws = AsyncWS(app)
login_manager = LoginManager(app)


class User(UserMixin):
    def __init__(self, id: str, password: str, admin: bool = False) -> None:
        self.id = id
        self.password = password
        self.admin = admin


#: A stand-in for a user table. Never store plain passwords in a real app.
USERS = {"alice": User("alice", "wonderland", admin=True), "bob": User("bob", "builder")}


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return USERS.get(user_id)


@login_manager.unauthorized_handler
def unauthorized() -> object:
    if has_websocket_context():
        abort(401)  # a websocket cannot follow a redirect: refuse the handshake
    return redirect(url_for("login", next=request.path))


@app.route("/login", methods=["GET", "POST"])
def login() -> object:
    if request.method == "POST":
        user = USERS.get(request.form.get("username", ""))
        if user is not None and user.password == request.form.get("password"):
            login_user(user)
            return redirect(url_for("index"))
        abort(403)
    return (
        '<form method="post"><input name="username" placeholder="alice">'
        '<input name="password" type="password" placeholder="wonderland"><button>Log in</button></form>'
    )


@app.post("/logout")
def logout() -> object:
    logout_user()
    return redirect(url_for("login"))


@app.route("/")
@login_required
def index() -> str:
    return f"Hello {current_user.id}. Websockets: {url_for('whoami')}, {url_for('admin.events')}"


@app.websocket("/ws/whoami")
@login_required
def whoami() -> None:
    """``@login_required`` works on websocket handlers, sync or async."""
    websocket.send(f"you are {current_user.id}")
    while True:
        websocket.send(f"{current_user.id}: {websocket.receive()}")


admin = Blueprint("admin", __name__, url_prefix="/admin")


@admin.before_websocket
def require_admin() -> None:
    if not current_user.is_authenticated:
        abort(401)
    if not current_user.admin:
        abort(403)


@admin.websocket("/events")
async def events() -> None:
    """An async handler behind the blueprint's hook."""
    await websocket.send(f"admin feed for {current_user.id}")
    while True:
        await websocket.send(f"ack {await websocket.receive()}")


app.register_blueprint(admin)
