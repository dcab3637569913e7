"""Prometheus metrics (``flask_asyncws.metrics``) scraped from real servers after real traffic."""

from __future__ import annotations

import threading
import time
import typing as t
import urllib.request
from collections import Counter

import pytest
from flask import Flask, abort
from support.extras import asyncws_metrics, prometheus_client, prometheus_parser
from support.servers import DocsServer, LiveServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from flask_asyncws import AsyncWS, websocket


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url``'s metrics, by name and labels."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum over every label of ``name``."""
    return sum(count for (sample, _), count in samples.items() if sample == name)


def eventually(url: str, check: t.Callable[[dict[t.Any, float]], bool], timeout: float = 10) -> dict[t.Any, float]:
    """The scrape once ``check`` holds (the app counts a connection's end after the client has seen it)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_metrics_single_process(serve: t.Callable[..., LiveServer]) -> None:
    app = Flask(__name__)
    app.config["ASYNCWS_HTTP_THREADS"] = 1
    app.config["ASYNCWS_BLOCKING_WARN_MS"] = 100
    AsyncWS(app)
    asyncws_metrics.init_metrics(app, registry=prometheus_client.CollectorRegistry())
    release = threading.Event()
    holding = threading.Event()

    @app.websocket("/echo")
    async def echo() -> None:
        if websocket.args.get("deny"):
            abort(401)
        while True:
            await websocket.send(await websocket.receive())

    @app.websocket("/block")
    def block() -> None:
        websocket.accept()
        time.sleep(0.5)  # blocks the loop: one warning
        websocket.close(4000)

    @app.websocket("/fail")
    def fail() -> None:
        websocket.accept()
        raise ValueError("boom")

    @app.get("/hold")
    def hold() -> str:
        holding.set()
        release.wait(10)
        return "held"

    srv = serve(app)
    for _ in range(3):
        with connect(srv.ws_url + "/echo") as ws:
            ws.send("héllo")  # 6 bytes in UTF-8
            assert ws.recv(timeout=5) == "héllo"
            ws.send(b"\x00" * 10)
            assert ws.recv(timeout=5) == b"\x00" * 10
    with pytest.raises(InvalidStatus):
        connect(srv.ws_url + "/echo?deny=1")
    for path in ("/block", "/fail"):
        with connect(srv.ws_url + path) as ws, pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    samples = eventually(
        srv.http_url, lambda s: value(s, "asyncws_websockets_open") == 0 and value(s, "asyncws_errors_total") == 1
    )
    assert value(samples, "asyncws_websockets_open") == 0
    assert value(samples, "asyncws_messages_received_total") == 6
    assert value(samples, "asyncws_messages_sent_total") == 6
    assert value(samples, "asyncws_received_bytes_total") == 3 * 16
    assert value(samples, "asyncws_sent_bytes_total") == 3 * 16
    assert value(samples, "asyncws_handshakes_total", status="101") == 5
    assert value(samples, "asyncws_handshakes_total", status="401") == 1
    # The client closed the echoes: the code is the server's report (hypercorn: 1006).
    assert total(samples, "asyncws_closes_total") == 5
    assert value(samples, "asyncws_closes_total", code="4000") == 1
    assert value(samples, "asyncws_closes_total", code="1011") == 1
    assert value(samples, "asyncws_errors_total") == 1
    assert value(samples, "asyncws_blocked_loop_warnings_total") >= 1

    # The HTTP worker pool: one thread, one request running in it, one waiting.
    results: list[bytes] = []
    fetches = [
        threading.Thread(target=lambda: results.append(urllib.request.urlopen(srv.http_url + "/hold").read()))
        for _ in range(2)
    ]
    for fetch in fetches:
        fetch.start()
    assert holding.wait(10)
    busy = eventually(srv.http_url, lambda s: value(s, "asyncws_http_requests_queued") == 1)
    assert value(busy, "asyncws_http_workers_busy") == 1
    assert value(busy, "asyncws_http_requests_queued") == 1
    release.set()
    for fetch in fetches:
        fetch.join(10)
    assert results == [b"held", b"held"]
    idle = eventually(srv.http_url, lambda s: value(s, "asyncws_http_workers_busy") == 0)
    assert value(idle, "asyncws_http_workers_busy") == value(idle, "asyncws_http_requests_queued") == 0


def test_metrics_two_workers_add_up(tmp_path: t.Any) -> None:
    """hypercorn --workers 2 in prometheus_client's multiprocess mode: /metrics adds up both workers."""
    with DocsServer(
        "hypercorn",
        target="support.metrics_app:asgi_app",
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        args=["--workers", "2"],
    ) as srv:
        served: list[str] = []

        def echo(message: str = "abc") -> None:
            with connect(srv.ws_url + "/echo") as ws:
                served.append(str(ws.recv(timeout=5)))
                ws.send(message)
                assert ws.recv(timeout=10) == message

        for _ in range(5):
            echo()
        # One worker's loop blocked: the connections made meanwhile go to the other one.
        blocking = threading.Thread(target=echo, args=("block",))
        blocking.start()
        while len(served) < 6:
            time.sleep(0.01)
        for _ in range(5):
            echo()
        blocking.join(10)
        assert len(set(served)) == 2, served
        connections = len(served)
        samples = eventually(srv.http_url, lambda s: total(s, "asyncws_closes_total") == connections)
        print(f"\n{connections} connections, by worker: {dict(Counter(served))}; /metrics:")
        with urllib.request.urlopen(srv.http_url + "/metrics", timeout=10) as response:
            print("\n".join(line for line in response.read().decode().splitlines() if line.startswith("asyncws")))
    assert connections == 11
    assert value(samples, "asyncws_handshakes_total", status="101") == connections
    assert value(samples, "asyncws_messages_received_total") == connections
    assert value(samples, "asyncws_messages_sent_total") == 2 * connections
    assert value(samples, "asyncws_received_bytes_total") == 3 * 10 + 5
    assert value(samples, "asyncws_closes_total", code="1006") == connections  # hypercorn's code for a client's close
    assert value(samples, "asyncws_websockets_open") == 0
    assert value(samples, "asyncws_blocked_loop_warnings_total") == 1
