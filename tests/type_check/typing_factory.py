"""An app factory: ``AsyncWS()`` declared at module level, ``init_app`` per app."""

from __future__ import annotations

from flask import Flask

from flask_asyncws import AsyncWS, Blueprint, websocket
from flask_asyncws.testing import FlaskClient

asyncws = AsyncWS()


@asyncws.websocket("/health")
async def health() -> None:
    await websocket.accept()
    await websocket.send_json({"ok": True})


@asyncws.before_serving
def warm_up() -> None:
    pass


chat = Blueprint("chat", __name__, url_prefix="/chat")


@chat.websocket("/<room>")
def chat_room(room: str) -> None:
    websocket.send(room)


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    app.register_blueprint(chat)
    asyncws.init_app(app)
    return app


def make_client() -> FlaskClient:
    return asyncws.test_client(create_app({"TESTING": True}))
