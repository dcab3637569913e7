"""Tests of a typed app with the test client's ``websocket()``, as pytest runs them."""

from __future__ import annotations

import pytest
from flask import Flask
from typing_extensions import assert_type

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket
from flask_asyncws.testing import FlaskClient, TestWebsocket, WebsocketResponseError

asyncws = AsyncWS()


@asyncws.websocket("/echo")
def echo() -> None:
    while True:
        websocket.send(websocket.receive())


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"
    asyncws.init_app(app)
    return app


@pytest.fixture
def app() -> Flask:
    return create_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return asyncws.test_client(app)


def test_echo(client: FlaskClient) -> None:
    client.post("/login", data={"name": "alice"})  # still Flask's test client
    with client.websocket("/echo", headers={"X-Test": "1"}, subprotocols=["chat"], timeout=2) as ws:
        assert_type(ws, TestWebsocket)
        ws.send("hi")
        assert_type(ws.receive(), str | bytes)
        ws.send_json({"n": 1})
        assert ws.receive_json(timeout=1) == {"n": 1}
        assert_type(ws.subprotocol, str | None)
        ws.close(1000, "done")


def test_refused(client: FlaskClient) -> None:
    with pytest.raises(WebsocketResponseError) as info:
        with client.websocket("/nowhere"):
            pass
    assert info.value.response.status_code == 404


def test_disconnect(client: FlaskClient) -> None:
    with client.websocket("/echo") as ws:
        with pytest.raises(WebsocketDisconnect) as info:
            ws.receive(timeout=0.1)
        assert_type(info.value.code, int)
