"""Real ASGI servers on 127.0.0.1 for end-to-end tests.

Each server runs on its own event loop in a background thread and listens on a
socket bound to a free port before the server starts, so there is no race for
the port.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import typing as t

import pytest

SERVERS = ("hypercorn", "uvicorn")

#: Since Python 3.12.1 asyncio's ``Server.wait_closed()`` waits for every open
#: connection, and hypercorn awaits it before its graceful-timeout cancel: with a
#: websocket open, hypercorn alone never finishes shutting down (hypercorn issue
#: #308). ``flask asyncws run`` closes the websockets first (``ASGIApp.shutdown()``).
HYPERCORN_WAITS_FOR_CONNECTIONS = sys.version_info >= (3, 12, 1)

#: For the tests of hypercorn cancelling open connections at its graceful timeout.
needs_hypercorn_cancel = pytest.mark.skipif(
    HYPERCORN_WAITS_FOR_CONNECTIONS,
    reason="hypercorn never cancels open websockets on Python 3.12.1+ (tests/test_shutdown.py pins what it does)",
)


class LiveServer:
    """An ASGI app served by hypercorn or uvicorn until :meth:`stop`."""

    def __init__(self, asgi_app: t.Any, server: str = "hypercorn", **options: t.Any) -> None:
        self.asgi_app = asgi_app
        self.server = server
        self.options = options
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._uvicorn: t.Any = None
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{server}-{self.port}", daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._started.wait(15):
            raise RuntimeError(f"{self.server} did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.loop is not None and self._thread.is_alive():
            if self._uvicorn is not None:
                self.loop.call_soon_threadsafe(setattr, self._uvicorn, "should_exit", True)
            elif self._stopping is not None:
                self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
        self.sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"{self.server} did not stop")
        if self._error is not None:
            raise self._error

    def call(self, coro: t.Coroutine[t.Any, t.Any, t.Any], timeout: float = 10) -> t.Any:
        """Run ``coro`` on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # pragma: no cover - surfaced by start()/stop()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.server == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            config = Config()
            config.bind = [f"fd://{os.dup(self.sock.fileno())}"]
            config.graceful_timeout = self.options.pop("graceful_timeout", 1.0)
            config.accesslog = None
            for key, value in self.options.items():
                setattr(config, key, value)
            self._stopping = asyncio.Event()
            self.loop.call_soon(self._started.set)
            await serve(self.asgi_app, config, shutdown_trigger=self._stopping.wait)  # type: ignore[arg-type]
        elif self.server == "uvicorn":
            import uvicorn

            config = uvicorn.Config(self.asgi_app, log_config=None, lifespan="on", **self.options)
            self._uvicorn = uvicorn.Server(config)
            self._uvicorn.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            serving = asyncio.ensure_future(self._uvicorn.serve(sockets=[self.sock]))
            while not self._uvicorn.started and not serving.done():
                await asyncio.sleep(0.01)
            self._started.set()
            await serving
        else:
            raise ValueError(f"unknown server {self.server!r}")
