"""Prometheus metrics for an operator: ``init_metrics(app)``, with the ``metrics`` extra.

Built on :mod:`flask_asyncws.signals` (connections, refusals, closes, errors,
a worker falling behind its groups)
and on three hooks that cost nothing while metrics are off: an accepted
connection's receive and send wrapped to count its messages, the blocked-loop
warning, and the HTTP worker pool's load. Under several worker processes
(``hypercorn --workers N``) set ``PROMETHEUS_MULTIPROC_DIR``, as
prometheus_client's multiprocess mode asks: ``/metrics`` then adds up every
worker's figures. The deployment docs say how.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask, Response

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        generate_latest,
        multiprocess,
    )
except ImportError as exc:  # pragma: no cover - shown by tests/tooling/test_missing_extra.py
    raise ImportError(
        f'flask_asyncws.metrics needs prometheus-client ({exc}): pip install "flask-asyncws[metrics]"'
    ) from exc

from . import _watchdog
from .signals import broker_behind, got_websocket_exception, websocket_finished, websocket_refused, websocket_started

if t.TYPE_CHECKING:
    from ._types import ASGIReceive, ASGISend, Message

#: The environment variable of prometheus_client's multiprocess mode.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The metrics of one registry (the process's default one unless given), shared by every app using it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.open = Gauge(
            "asyncws_websockets_open", "Websockets the app is serving.", registry=r, multiprocess_mode="livesum"
        )
        self.handshakes = Counter(
            "asyncws_handshakes", "Handshakes answered, by HTTP status (101: accepted).", ["status"], registry=r
        )
        self.closes = Counter("asyncws_closes", "Accepted websockets ended, by close code.", ["code"], registry=r)
        self.errors = Counter("asyncws_errors", "Unhandled errors in websocket handlers and hooks.", registry=r)
        self.received = Counter("asyncws_messages_received", "Websocket messages received.", registry=r)
        self.sent = Counter("asyncws_messages_sent", "Websocket messages sent.", registry=r)
        self.received_bytes = Counter("asyncws_received_bytes", "Websocket payload bytes received.", registry=r)
        self.sent_bytes = Counter("asyncws_sent_bytes", "Websocket payload bytes sent.", registry=r)
        self.blocked = Counter(
            "asyncws_blocked_loop_warnings", "Warnings of a websocket handler blocking the event loop.", registry=r
        )
        self.http_busy = Gauge(
            "asyncws_http_workers_busy", "HTTP worker threads running a view.", registry=r, multiprocess_mode="livesum"
        )
        self.http_queued = Gauge(
            "asyncws_http_requests_queued",
            "Sync HTTP requests waiting for a worker thread.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.behind = Counter(
            "asyncws_broker_behind",
            "Times a worker fell behind the groups it delivers for (lost: it lost its broker connection).",
            ["lost"],
            registry=r,
        )
        self.lag = Gauge(
            "asyncws_broker_lag_seconds",
            "Seconds from publish to delivery when a worker last fell behind.",
            registry=r,
            multiprocess_mode="max",
        )
        _watchdog.blocked_listeners.append(self.blocked.inc)

    # -- receivers of the signals --

    def started(self, sender: Flask, **extra: t.Any) -> None:
        self.open.inc()

    def finished(self, sender: Flask, *, code: int | None, **extra: t.Any) -> None:
        self.open.dec()
        if code is not None:
            self.closes.labels(str(code)).inc()

    def refused(self, sender: Flask, *, response: Response, **extra: t.Any) -> None:
        self.handshakes.labels(str(response.status_code)).inc()

    def failed(self, sender: Flask, **extra: t.Any) -> None:
        self.errors.inc()

    def fell_behind(self, sender: Flask, *, lag: float | None, lost: bool, **extra: t.Any) -> None:
        self.behind.labels("true" if lost else "false").inc()
        if lag is not None:
            self.lag.set(lag)

    def pool_load(self, busy: int, queued: int) -> None:
        self.http_busy.set(busy)
        self.http_queued.set(queued)

    # -- per message, for an accepted connection --

    def count(self, receive: ASGIReceive, send: ASGISend) -> tuple[ASGIReceive, ASGISend]:
        """``receive`` and ``send`` wrapped to count the messages through them, bound once per connection."""
        received, received_bytes = self.received.inc, self.received_bytes.inc

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                received()
                received_bytes(_size(data))
            return message

        return counted_receive, CountedSend(send, self)


def _size(data: str | bytes) -> int:
    """A message's payload in bytes: UTF-8 for text."""
    return len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())


class CountedSend:
    """A connection's send, counting messages and accepts.

    ``func`` is what :func:`~flask_asyncws._quirks.server_of` reads to tell the
    server by its send: the server's own, so the quirks still apply.
    """

    __slots__ = ("accepted", "func", "send", "sent", "sent_bytes")

    def __init__(self, send: ASGISend, metrics: Metrics) -> None:
        self.send = send
        self.func = getattr(send, "func", send)
        self.sent, self.sent_bytes = metrics.sent.inc, metrics.sent_bytes.inc
        self.accepted = metrics.handshakes.labels("101").inc

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            self.sent()
            self.sent_bytes(_size(data))
        elif kind == "websocket.accept":
            self.accepted()
        await self.send(message)


_metrics: dict[int, Metrics] = {}


def init_metrics(app: Flask, *, path: str | None = "/metrics", registry: CollectorRegistry | None = None) -> Metrics:
    """Count ``app``'s websockets (and its HTTP worker pool) in Prometheus metrics, served at ``path``.

    Call it after ``AsyncWS(app)`` (or ``init_app``). ``path=None`` adds no
    route: serve ``registry`` yourself (``prometheus_client.start_http_server``,
    say). The metrics live in ``registry`` (prometheus_client's default one
    unless given), created once per registry. With ``PROMETHEUS_MULTIPROC_DIR``
    set, the route serves every worker process's figures added up, and the
    live gauges of workers no longer running are dropped as this worker starts.
    """
    asgi = getattr(app, "asgi_app", None)
    if not hasattr(asgi, "message_counter"):
        raise RuntimeError("init_metrics(app) needs the AsyncWS extension set up on the app first: AsyncWS(app).")
    registry = REGISTRY if registry is None else registry
    metrics = _metrics.get(id(registry))
    if metrics is None:
        metrics = _metrics[id(registry)] = Metrics(registry)
        if os.environ.get(MULTIPROC_DIR):
            _forget_dead_workers(os.environ[MULTIPROC_DIR])
    websocket_started.connect(metrics.started, app, weak=False)
    websocket_finished.connect(metrics.finished, app, weak=False)
    websocket_refused.connect(metrics.refused, app, weak=False)
    got_websocket_exception.connect(metrics.failed, app, weak=False)
    broker_behind.connect(metrics.fell_behind, app, weak=False)
    asgi.message_counter = metrics.count  # type: ignore[union-attr]
    asgi.http.on_pool_load = metrics.pool_load  # type: ignore[union-attr]
    if path is not None:

        async def metrics_view() -> Response:
            # On the event loop, not in an HTTP worker thread: a scrape is
            # answered while every worker is busy, and does not count as busy.
            return scrape(registry)

        app.add_url_rule(path, "asyncws_metrics", metrics_view)
    return metrics


def scrape(registry: CollectorRegistry) -> Response:
    """The metrics in Prometheus's text format: every worker's, added up, in multiprocess mode."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _forget_dead_workers(directory: str) -> None:
    """``mark_process_dead`` for each process with files there that no longer runs (a worker restarted)."""
    pids = set()
    for name in os.listdir(directory):
        digits = name.rsplit(".", 1)[0].rsplit("_", 1)[-1]  # gauge_livesum_1234.db
        if digits.isdigit():
            pids.add(int(digits))
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # running, under another user


__all__ = ["Metrics", "init_metrics", "scrape"]
