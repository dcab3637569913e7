"""Setting the metrics up: a clear error without the extension, and the test client counting through them."""

from __future__ import annotations

import pytest
from flask import Flask
from support.extras import asyncws_metrics, prometheus_client

from flask_asyncws import AsyncWS, websocket


def test_init_metrics_needs_the_extension() -> None:
    with pytest.raises(RuntimeError, match=r"AsyncWS\(app\)"):
        asyncws_metrics.init_metrics(Flask(__name__), registry=prometheus_client.CollectorRegistry())


def test_counts_through_the_test_client() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    registry = prometheus_client.CollectorRegistry()
    asyncws_metrics.init_metrics(app, registry=registry)

    @app.websocket("/echo")
    async def echo() -> None:
        await websocket.send(await websocket.receive())

    client = app.test_client()
    with client.websocket("/echo") as ws:  # type: ignore[attr-defined]
        ws.send("hi")
        assert ws.receive() == "hi"
    assert registry.get_sample_value("asyncws_messages_received_total") == 1
    assert registry.get_sample_value("asyncws_sent_bytes_total") == 2
    assert registry.get_sample_value("asyncws_handshakes_total", {"status": "101"}) == 1
    assert registry.get_sample_value("asyncws_closes_total", {"code": "1000"}) == 1
    assert registry.get_sample_value("asyncws_websockets_open") == 0
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"asyncws_messages_sent_total 1.0" in response.data
