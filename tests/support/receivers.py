"""A receiver on each websocket signal (and Flask's ``got_request_exception``), recording what it is sent."""

from __future__ import annotations

import threading
import typing as t

from flask import Flask, got_request_exception

from flask_asyncws import (
    got_websocket_exception,
    websocket,
    websocket_finished,
    websocket_refused,
    websocket_started,
)


class Received:
    """What the receivers were sent, in order, waited for as the app sends it after the client is done."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, t.Any]]] = []
        self._changed = threading.Condition()

    def add(self, name: str, **kwargs: t.Any) -> None:
        with self._changed:
            self.events.append((name, kwargs))
            self._changed.notify_all()

    def wait_for(self, name: str, count: int = 1, timeout: float = 10) -> list[dict[str, t.Any]]:
        def found() -> list[dict[str, t.Any]]:
            return [kwargs for event, kwargs in self.events if event == name]

        with self._changed:
            assert self._changed.wait_for(lambda: len(found()) >= count, timeout), self.events
            return found()

    def names(self) -> list[str]:
        with self._changed:
            return [name for name, _ in self.events]


def subscribed(app: Flask) -> Received:
    """A receiver on each signal, for ``app`` only."""
    received = Received()

    def started(sender: Flask, **kwargs: t.Any) -> None:
        assert kwargs["websocket"] is websocket._get_current_object()  # the context is pushed
        received.add("started", path=kwargs["websocket"].path)

    def finished(sender: Flask, **kwargs: t.Any) -> None:
        received.add("finished", path=kwargs["websocket"].path, code=kwargs["code"])

    def refused(sender: Flask, **kwargs: t.Any) -> None:
        ws = kwargs["websocket"]
        received.add("refused", status=kwargs["response"].status_code, path=None if ws is None else ws.path)

    def ws_exception(sender: Flask, **kwargs: t.Any) -> None:
        received.add("got_websocket_exception", exception=kwargs["exception"], path=kwargs["websocket"].path)

    def request_exception(sender: Flask, **kwargs: t.Any) -> None:
        received.add("got_request_exception", exception=kwargs["exception"])

    for signal, receiver in (
        (websocket_started, started),
        (websocket_finished, finished),
        (websocket_refused, refused),
        (got_websocket_exception, ws_exception),
        (got_request_exception, request_exception),
    ):
        signal.connect(receiver, app, weak=False)  # disconnected when the app is freed
    return received
