"""The websocket signals with the test client, which runs ``app.asgi_app`` as a server would."""

from __future__ import annotations

import pytest
from flask import Flask, Response
from support.receivers import subscribed

from flask_asyncws import AsyncWS, WebsocketDisconnect, websocket
from flask_asyncws.testing import WebsocketResponseError


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config["ASYNCWS_ALLOWED_ORIGINS"] = ["https://app.example"]
    AsyncWS(app)

    @app.websocket("/echo")
    async def echo() -> None:
        await websocket.send(await websocket.receive())
        await websocket.close(4002)

    @app.websocket("/refuse")
    def refuse() -> Response:
        return Response("no", 409)

    @app.websocket("/fail")
    def fail() -> None:
        websocket.accept()
        raise KeyError("boom")

    return app


def test_started_and_finished(app: Flask) -> None:
    received = subscribed(app)
    with app.test_client().websocket("/echo") as ws:  # type: ignore[attr-defined]
        ws.send("hi")
        assert ws.receive() == "hi"
    assert received.wait_for("started") == [{"path": "/echo"}]
    assert received.wait_for("finished") == [{"path": "/echo", "code": 4002}]


def test_refused(app: Flask) -> None:
    received = subscribed(app)
    client = app.test_client()
    for path, headers, status in (("/refuse", {}, 409), ("/echo", {"Origin": "https://other.example"}, 403)):
        with pytest.raises(WebsocketResponseError) as info:
            with client.websocket(path, headers=headers):  # type: ignore[attr-defined]
                pass
        assert info.value.response.status_code == status
    assert received.wait_for("refused", 2) == [{"status": 409, "path": "/refuse"}, {"status": 403, "path": None}]
    assert received.wait_for("finished") == [{"path": "/refuse", "code": None}]


def test_got_websocket_exception_then_got_request_exception(app: Flask) -> None:
    received = subscribed(app)
    with app.test_client().websocket("/fail") as ws:  # type: ignore[attr-defined]
        with pytest.raises(WebsocketDisconnect) as info:
            ws.receive()
        assert info.value.code == 1011
    [sent] = received.wait_for("got_websocket_exception")
    assert sent["path"] == "/fail" and isinstance(sent["exception"], KeyError)
    assert received.wait_for("got_request_exception") == [{"exception": sent["exception"]}]
    received.wait_for("finished")
    assert received.names() == ["started", "got_websocket_exception", "got_request_exception", "finished"]
