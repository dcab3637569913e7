"""Websocket routes and hooks on a blueprint, nested in another."""

from __future__ import annotations

from flask import Flask, Response, g

from flask_asyncws import AsyncWS, Blueprint, websocket

api = Blueprint("api", __name__, url_prefix="/api")
events = Blueprint("events", __name__, url_prefix="/events")


@events.before_websocket
def load_user() -> None:
    g.user = websocket.args.get("user", "anonymous")


@events.before_websocket
async def check_quota() -> str | None:
    return None


@events.after_websocket
def after(response: Response | None) -> Response | None:
    return response


@events.teardown_websocket
async def teardown(exc: BaseException | None) -> None:
    pass


@events.before_app_websocket
def everywhere() -> None:
    pass


@events.after_app_websocket
async def after_everywhere(response: Response | None) -> Response | None:
    return response


@events.teardown_app_websocket
def teardown_everywhere(exc: BaseException | None) -> None:
    pass


@events.websocket("/stream/<int:since>")
async def stream(since: int) -> None:
    await websocket.send_json({"since": since, "user": g.user})


def plain(name: str) -> None:
    websocket.send(name)


events.add_websocket("/plain/<name>", view_func=plain)


@api.route("/status")
def status() -> dict[str, str]:
    return {"status": "ok"}


api.register_blueprint(events)
app = Flask(__name__)
app.register_blueprint(api)
AsyncWS(app)
