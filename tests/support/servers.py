"""Real ASGI servers on 127.0.0.1 for end-to-end tests.

Each server runs on its own event loop in a background thread and listens on a
socket bound to a free port before the server starts, so there is no race for
the port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request

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
    reason="hypercorn never cancels open websockets on Python 3.12.1+ (tests/e2e/test_shutdown.py pins what it does)",
)
#: Every server the app is documented for, run as processes by :class:`ServerProcess`.
ALL_SERVERS = ("hypercorn", "uvicorn", "daphne", "granian")

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


class ServerProcess:
    """A server command serving ``target`` (``module:attr`` under tests/) on 127.0.0.1 until :meth:`stop`.

    For servers that only run as their own process (daphne and granian), and to
    see what a server prints and how it exits. Each server's command line is
    the one docs/servers.md gives. The port is found free just before the
    start; a start that loses it to another process is retried on another.
    """

    def __init__(
        self,
        server: str,
        target: str = "support.server_app:asgi_app",
        env: dict[str, str] | None = None,
        args: t.Sequence[str] = (),
    ) -> None:
        self.server = server
        self.target = target
        self.args = list(args)  # the server's own options
        self.env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join((TESTS, os.path.dirname(TESTS)))}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()
        self.returncode: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = self._server_command()
        return [*command[:-1], *self.args, command[-1]]

    def _server_command(self) -> list[str]:
        port = str(self.port)
        if self.server == "hypercorn":
            return [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", self.target]
        if self.server == "uvicorn":
            return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", port, self.target]
        if self.server == "daphne":
            return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", port, self.target]
        if self.server == "granian":
            return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", port,
                    self.target]  # fmt: skip
        raise ValueError(f"unknown server {self.server!r}")

    def start(self, timeout: float = 30) -> ServerProcess:
        for _attempt in range(3):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            self._log.seek(0)
            self._log.truncate()
            self.proc = subprocess.Popen(
                self._command(), cwd=TESTS, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
            )
            if self._wait_ready(timeout):
                return self
            if "in use" not in self.output:  # lost the port: try another
                break
        raise RuntimeError(f"{self.server} did not start:\n{self.output}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.http_url + "/hello", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        return False

    @property
    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.http_url + path, timeout=10) as response:
            return t.cast(bytes, response.read())

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server (unless ``sig`` is None: signalled already) and wait
        for it to exit; returns its exit code."""
        if self.proc is None or self.returncode is not None:
            return self.returncode or 0
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.server} did not exit {timeout} s after signal {sig}:\n{self.output}") from None
        return self.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._log.close()
