"""A real server in a subprocess, for checks that need a separate process.

The listening socket is bound to a free port on 127.0.0.1 here and handed to
the server as a file descriptor, so there is no race for the port. The server
process is killed on exit if it has not stopped by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import typing as t

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(os.path.dirname(HERE))

#: How ``flask asyncws run`` is handed a listening socket (its reloader's way).
SOCKET_ENV = "FLASK_ASYNCWS_SOCKET_FD"


def _die_with_parent() -> None:
    """Have Linux kill the server if the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServerProcess:
    """``app`` (``module:attr``, importable from the tests folder) under a server.

    ``server`` is ``hypercorn``, ``uvicorn`` or ``asyncws`` (``flask --app module
    asyncws run``, which serves the module's Flask ``app``).
    """

    def __init__(
        self,
        server: str = "hypercorn",
        app: str = "hardening.soak.app:asgi",
        *,
        graceful_timeout: int = 3,
        env: dict[str, str] | None = None,
    ) -> None:
        self.server = server
        self.app = app
        self.graceful_timeout = graceful_timeout
        self.env = env or {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2048)
        self.port = self.sock.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_seconds: float | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        fd = self.sock.fileno()
        if self.server == "hypercorn":
            return [
                sys.executable, "-m", "hypercorn", "--bind", f"fd://{fd}",
                "--graceful-timeout", str(self.graceful_timeout), "--log-level", "warning", self.app,
            ]  # fmt: skip
        if self.server == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", "--fd", str(fd), "--log-level", "warning",
                "--timeout-graceful-shutdown", str(self.graceful_timeout), "--ws-max-queue", "32", self.app,
            ]  # fmt: skip
        if self.server == "asyncws":
            # ``flask asyncws run`` on the socket, as its reloader hands one to the server it
            # restarts; its shutdown waits Hypercorn's default graceful timeout, 3 s.
            assert self.graceful_timeout == 3, "flask asyncws run has Hypercorn's graceful timeout"
            module = self.app.partition(":")[0]
            return [sys.executable, "-m", "flask", "--app", module, "asyncws", "run"]
        raise ValueError(f"unknown server {self.server!r}")

    def start(self) -> ServerProcess:
        path = [TESTS, os.path.dirname(TESTS), os.environ.get("PYTHONPATH")]
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        if self.server == "asyncws":
            env[SOCKET_ENV] = str(self.sock.fileno())
        # A session of its own: hypercorn serves from a spawned worker process,
        # which stop() must end too (killing the parent alone would orphan it).
        self.proc = subprocess.Popen(
            self.command(),
            pass_fds=(self.sock.fileno(),),
            env=env,
            cwd=TESTS,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 20.0) -> None:
        """Return once the app answers a websocket handshake."""
        from websockets.sync.client import connect

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited with {self.proc.returncode} before serving")
            try:
                with connect(self.ws_url + "/echo", open_timeout=2) as ws:
                    ws.send("ready")
                    ws.recv(2)
                return
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def terminate(self, timeout: float) -> float:
        """SIGTERM the server; return how long it took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        finally:
            self.exit_seconds = time.monotonic() - started
        return self.exit_seconds

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the server and any worker it spawned
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.sock.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()
