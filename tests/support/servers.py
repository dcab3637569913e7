"""The one way the tests start a server on 127.0.0.1.

- :class:`LiveServer`: an ASGI app served by hypercorn or uvicorn on its own
  event loop in a thread of the test process, so a test can reach into the app
  (and run code on the server's loop with :meth:`LiveServer.call`);
- :class:`ServerProcess`: any server command in a process of its own, whose
  output is collected, which a test signals and whose exit code it reads;
  :class:`DocsServer` runs daphne, granian, hypercorn or uvicorn with the
  command line docs/servers.md gives, :class:`SocketServer` hands hypercorn,
  uvicorn or ``flask asyncws run`` a listening socket (the soak scripts' way).

Where the server can be handed a socket, it is bound here first
(:func:`listening_socket`), so there is no race for the port. Every server is
stopped on leaving its ``with`` block, and a process that does not exit on its
signal is killed.
"""

from __future__ import annotations

import asyncio
import os
import re
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
#: Every server the app is documented for, run as processes by :class:`DocsServer`.
ALL_SERVERS = ("hypercorn", "uvicorn", "daphne", "granian")

#: The tests folder (on a server process's import path, with the checkout).
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The checkout.
ROOT = os.path.dirname(TESTS)

#: How ``flask asyncws run`` is handed a listening socket (its reloader's way).
SOCKET_ENV = "FLASK_ASYNCWS_SOCKET_FD"


def listening_socket(backlog: int = 1024) -> socket.socket:
    """A TCP socket listening on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a server that binds it itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Address:
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class LiveServer(_Address):
    """An ASGI app served by hypercorn or uvicorn until :meth:`stop`."""

    def __init__(self, asgi_app: t.Any, server: str = "hypercorn", **options: t.Any) -> None:
        self.asgi_app = asgi_app
        self.server = server
        self.options = options
        self.sock = listening_socket()
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._uvicorn: t.Any = None
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{server}-{self.port}", daemon=True)

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

    def timed(self, start: t.Callable[[], t.Awaitable[t.Any]], timeout: float = 10) -> float:
        """Await what ``start()`` returns, called on the server's loop; return
        how long that took by the loop's clock."""

        async def run() -> float:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await start()
            return loop.time() - started

        return t.cast(float, self.call(run(), timeout))

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


def _die_with_parent() -> None:
    """Have Linux kill the server if the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServerProcess(_Address):
    """A server command (``argv``) in a process of its own until :meth:`stop`.

    It runs in ``cwd`` with ``env`` over this process's environment (a None
    value removes a variable; with ``inherit_env`` false, ``env`` alone) and
    ``pythonpath`` ahead of any ``PYTHONPATH`` there (None: the environment's
    as it is). ``sock``, a listening socket, is handed to it (the command names
    its file descriptor) and closed here once the server stops. Its output
    (stdout and stderr) is collected in :attr:`output` unless ``capture`` is
    false (then it goes where this process's goes). With ``new_session`` it
    leads a process group of its own and signals go to the whole group (a
    server that spawns workers, or ``make``), and it dies with this process.

    Leaving the ``with`` block sends ``exit_signal`` (and kills the server if
    it has not exited ``exit_timeout`` seconds later).
    """

    #: Started without a ready check: its output says when it serves (:meth:`wait_for`).
    ready: t.Callable[[ServerProcess], bool] | None = None
    #: How long :meth:`start` waits for the ready check by default.
    start_timeout: float = 30

    def __init__(
        self,
        argv: t.Sequence[str] = (),
        *,
        cwd: str | os.PathLike[str] = TESTS,
        env: t.Mapping[str, str | None] | None = None,
        inherit_env: bool = True,
        pythonpath: t.Sequence[str | os.PathLike[str]] | None = (TESTS, ROOT),
        sock: socket.socket | None = None,
        capture: bool = True,
        new_session: bool = False,
        exit_signal: int = signal.SIGTERM,
        exit_timeout: float = 30,
        name: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        merged = {**(os.environ if inherit_env else {}), **(env or {})}
        self.env = {name: value for name, value in merged.items() if value is not None}
        if pythonpath is not None:
            path = [*map(str, pythonpath), self.env.get("PYTHONPATH")]
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        self.sock = sock
        self.port = sock.getsockname()[1] if sock is not None else 0
        self.new_session = new_session
        self.exit_signal = exit_signal
        self.exit_timeout = exit_timeout
        self.name = name or (self.argv[2] if self.argv[1:2] == ["-m"] else self.argv[0] if self.argv else "server")
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.exit_seconds: float | None = None  # see terminate()
        self._log = tempfile.TemporaryFile() if capture else None
        self._read_to = 0  # how far wait_for() has read the output

    def command(self) -> list[str]:
        """The command line (``argv`` unless a subclass builds it)."""
        return self.argv

    def start(self, timeout: float | None = None) -> ServerProcess:
        """Start the server; return once :attr:`ready` says it serves (if there is a check)."""
        if self._log is not None:
            self._log.seek(0)
            self._log.truncate()
            self._read_to = 0
        self.returncode = None
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            pass_fds=(self.sock.fileno(),) if self.sock is not None else (),
            start_new_session=self.new_session,
            preexec_fn=_die_with_parent if self.new_session else None,
        )
        if self.ready is not None and not self._wait_ready(self.start_timeout if timeout is None else timeout):
            raise RuntimeError(f"{self.name} did not start:\n{self.output}")
        return self

    def _wait_ready(self, timeout: float) -> bool:
        """Whether the server came to serve within ``timeout`` seconds (if not, it is killed)."""
        assert self.proc is not None and self.ready is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.ready(self):
                return True
            time.sleep(0.05)
        self.kill()
        return False

    @property
    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        if self._log is None or self._log.closed:
            return ""
        return read_shared(self._log)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 20) -> re.Match[str]:
        """The first match of ``pattern`` in an output line after the last line
        this found, waiting up to ``timeout`` seconds for it to be printed."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            output = self.output
            lines = output[self._read_to :].splitlines(keepends=True)
            for line in lines:
                if not line.endswith("\n"):
                    break  # not all printed yet
                self._read_to += len(line)
                match = regex.search(line)
                if match:
                    return match
            assert self.proc is not None
            exited = self.proc.poll() is not None
            if (exited and self.output == output) or time.monotonic() > deadline:
                raise AssertionError(f"no {regex.pattern!r} in the output:\n{self.output}")
            time.sleep(0.02)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.http_url + path, timeout=10) as response:
            return t.cast(bytes, response.read())

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            if self.new_session:
                os.killpg(self.proc.pid, sig)  # the server and any process it spawned
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server (unless ``sig`` is None: signalled already) and wait
        for it to exit; returns its exit code. One that does not exit in
        ``timeout`` seconds is killed, and that is an error."""
        if self.proc is None or self.returncode is not None:
            return self.returncode or 0
        if sig is not None:
            self._signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not exit {timeout} s after signal {sig}:\n{self.output}") from None
        return self.returncode

    def terminate(self, timeout: float) -> float:
        """SIGTERM the server and wait for it to exit; return how long that took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        finally:
            self.exit_seconds = time.monotonic() - started
        return self.exit_seconds

    def kill(self) -> None:
        """End the server (and, with ``new_session``, all its group) at once."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop(self.exit_signal, self.exit_timeout)
        finally:
            self.kill()
            if self.sock is not None:
                self.sock.close()
            if self._log is not None:
                self._log.close()


def read_shared(file: t.IO[bytes]) -> str:
    """All a child process has written to ``file``, read without moving the
    offset the child shares: after a seek here the child's next write would land
    over what it wrote before."""
    fd = file.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def answers_hello(server: ServerProcess) -> bool:
    """Whether ``GET /hello`` answers 200."""
    try:
        with urllib.request.urlopen(server.http_url + "/hello", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def echoes(server: ServerProcess) -> bool:
    """Whether a websocket to ``/echo`` echoes a message."""
    from websockets.sync.client import connect

    try:
        with connect(server.ws_url + "/echo", open_timeout=2) as ws:
            ws.send("ready")
            ws.recv(2)
        return True
    except (OSError, TimeoutError):
        return False


class DocsServer(ServerProcess):
    """``target`` (``module:attr`` under tests/) served by ``server`` with the
    command line docs/servers.md gives, plus ``args`` (the server's own options).

    For servers that only run as their own process (daphne and granian), and to
    see what a server prints and how it exits. The port is found free just
    before the start; a start that loses it to another process is retried on
    another. It serves once ``GET /hello`` answers.
    """

    ready = staticmethod(answers_hello)

    def __init__(
        self,
        server: str,
        target: str = "support.server_app:asgi_app",
        env: dict[str, str] | None = None,
        args: t.Sequence[str] = (),
    ) -> None:
        super().__init__(env=env, name=server)
        self.server = server
        self.target = target
        self.args = list(args)

    def command(self) -> list[str]:
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

    def start(self, timeout: float | None = None) -> DocsServer:
        for _attempt in range(3):
            self.port = free_port()
            try:
                super().start(timeout)
            except RuntimeError:
                if "in use" not in self.output:  # lost the port: try another
                    raise
            else:
                return self
        raise RuntimeError(f"{self.server} did not start:\n{self.output}")


class SocketServer(ServerProcess):
    """``app`` (``module:attr``, importable from the tests folder) under
    ``server`` on a socket bound here; it serves once a websocket to ``/echo``
    echoes.

    ``server`` is ``hypercorn``, ``uvicorn`` or ``asyncws`` (``flask --app module
    asyncws run``, which serves the module's Flask ``app``). The server leads a
    process group of its own (hypercorn serves from a spawned worker process,
    which must end too) and is killed on leaving the ``with`` block. Its output
    goes where the test's goes.
    """

    ready = staticmethod(echoes)
    start_timeout = 20

    def __init__(
        self,
        server: str,
        app: str,
        *,
        graceful_timeout: int = 3,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        sock = listening_socket(2048)
        env = {**(env or {})}
        if server == "asyncws":
            env[SOCKET_ENV] = str(sock.fileno())
        super().__init__(
            command or (), env=env, sock=sock, capture=False, new_session=True, exit_signal=signal.SIGKILL, name=server
        )
        self.server = server
        self.app = app
        self.graceful_timeout = graceful_timeout

    def command(self) -> list[str]:
        if self.argv:
            return self.argv
        assert self.sock is not None
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
