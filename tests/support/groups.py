"""What the groups tests share: the groups app under a server process, the external publisher, members, polling.

- :class:`GroupServer`: :mod:`support.groups_app` under hypercorn (``workers``
  processes) or uvicorn on a socket bound here, configured by ``env``; its
  output is collected (the library's log lines are part of what is tested);
- :class:`Publisher`: :mod:`support.publisher` in a process of its own, asked
  one command at a time; :func:`run_script` runs it once, as a cron job would;
- :class:`Clients`: real ``websockets`` clients; :meth:`Clients.join` returns once the client is a member;
- :func:`eventually`: poll with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request

from websockets.sync.client import ClientConnection, connect

from .servers import ROOT, TESTS, ServerProcess, echoes, listening_socket, read_shared

APP = "support.groups_app:asgi_app"

T = t.TypeVar("T")


class GroupServer(ServerProcess):
    """The groups app served by ``server`` (``hypercorn`` or ``uvicorn``) until the ``with`` block ends (SIGKILL)."""

    ready = staticmethod(echoes)

    def __init__(self, server: str, env: t.Mapping[str, str], *, workers: int = 1, graceful_timeout: int = 3) -> None:
        sock = listening_socket(2048)
        fd = str(sock.fileno())
        if server == "hypercorn":
            argv = [
                sys.executable, "-m", "hypercorn", "--bind", f"fd://{fd}", "--workers", str(workers),
                "--graceful-timeout", str(graceful_timeout), "--log-level", "warning", APP,
            ]  # fmt: skip
        elif server == "uvicorn":
            assert workers == 1
            argv = [
                sys.executable, "-m", "uvicorn", "--fd", fd, "--log-level", "warning",
                "--timeout-graceful-shutdown", str(graceful_timeout), APP,
            ]  # fmt: skip
        else:
            raise ValueError(f"unknown server {server!r}")
        super().__init__(
            argv, env=dict(env), sock=sock, new_session=True, exit_signal=signal.SIGKILL, exit_timeout=10, name=server
        )
        self.server = server

    def start(self, timeout: float | None = None) -> GroupServer:
        super().start(timeout)
        return self

    def __enter__(self) -> GroupServer:
        return self.start()

    def http(self, method: str, path: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, t.Any]:
        """``method path`` (with ``body``): the status and the JSON answer."""
        request = urllib.request.Request(self.http_url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), json.loads(error.read())


class Publisher:
    """:mod:`support.publisher` in a process of its own, configured by ``env``; call it with a command."""

    def __init__(self, env: t.Mapping[str, str]) -> None:
        self._errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.publisher"],
            cwd=TESTS,
            env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([TESTS, ROOT])},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    @property
    def errors(self) -> str:
        return read_shared(self._errors)

    def __call__(self, op: str, timeout: float = 30, **fields: t.Any) -> dict[str, t.Any]:
        """The publisher's answer to ``op`` with ``fields`` (an error if it takes over ``timeout`` seconds)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        self.proc.stdin.flush()
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the publisher did not answer {op} {fields} within {timeout} s") from None
        if not line:
            raise AssertionError(f"the publisher exited:\n{self.errors}")
        return t.cast(dict[str, t.Any], json.loads(line))

    def ok(self, op: str, timeout: float = 30, **fields: t.Any) -> dict[str, t.Any]:
        """As calling it, failing the test if the call raised."""
        answer = self(op, timeout, **fields)
        assert answer["ok"], answer
        return answer

    def count(self, group: str) -> int:
        return int(self.ok("count", group=group)["count"])

    def presence(self, group: str) -> dict[str, int]:
        return t.cast(dict[str, int], self.ok("presence", group=group)["presence"])

    def close(self, check: bool = True) -> None:
        """End its input; with ``check``, it must exit by itself, with 0, within 10 s (as a script must)."""
        hung = False
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait(10)
        errors = self.errors
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._errors.close()
        if check:
            assert not hung, f"the publisher did not exit 10 s after its last command:\n{errors}"
            assert self.proc.returncode == 0, f"the publisher exited with {self.proc.returncode}:\n{errors}"

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(check=exc_type is None)


def run_script(env: t.Mapping[str, str], *commands: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """:mod:`support.publisher` run once with ``commands`` as its arguments, as a cron job runs a script:
    its answers, once it has exited by itself (with 0, within 30 s)."""
    done = subprocess.run(
        [sys.executable, "-m", "support.publisher", *map(json.dumps, commands)],
        cwd=TESTS,
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([TESTS, ROOT])},
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [json.loads(line) for line in done.stdout.splitlines()]


class Clients(contextlib.ExitStack):
    """The test's websocket clients, each closed when the ``with`` block ends."""

    def connect(self, url: str, **options: t.Any) -> ClientConnection:
        options = {"open_timeout": 20, "close_timeout": 2, **options}
        return t.cast(ClientConnection, self.enter_context(connect(url, **options)))

    def join(
        self,
        server: ServerProcess,
        room: str,
        *,
        user: str | None = None,
        route: str = "ws",
        ident: str | None = None,
        also: t.Sequence[str] = (),
        **options: t.Any,
    ) -> tuple[ClientConnection, dict[str, t.Any]]:
        """A client connected to ``/<route>/<room>``: a member of ``room`` once this returns; and its hello."""
        fields = (("user", user), ("id", ident), ("also", ",".join(also)))
        query = urllib.parse.urlencode({key: value for key, value in fields if value})
        ws = self.connect(f"{server.ws_url}/{route}/{room}" + (f"?{query}" if query else ""), **options)
        hello = ws.recv(timeout=20)
        assert isinstance(hello, str) and hello.startswith("hello:"), hello
        return ws, t.cast(dict[str, t.Any], json.loads(hello[len("hello:") :]))


def receive(ws: ClientConnection, n: int, timeout: float = 30) -> list[str | bytes]:
    """The next ``n`` messages ``ws`` receives, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    messages: list[str | bytes] = []
    for _ in range(n):
        try:
            messages.append(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            raise AssertionError(f"{len(messages)} of {n} messages in {timeout} s; the last: {messages[-3:]}") from None
    return messages


def published_channel(client: t.Any, publisher: Publisher, group: str) -> tuple[bytes, bytes]:
    """The channel a publish to ``group`` goes out on, and what it carries (seen by a PSUBSCRIBE to every channel)."""
    pubsub = client.pubsub()
    pubsub.psubscribe("*")
    try:
        deadline = time.monotonic() + 10
        while (message := pubsub.get_message(timeout=1)) is None or message["type"] != "psubscribe":
            assert time.monotonic() < deadline, "no PSUBSCRIBE confirmation"
        publisher.ok("publish", group=group, text="probe")
        while True:
            message = pubsub.get_message(timeout=1)
            if message is not None and message["type"] == "pmessage" and b"probe" in message["data"]:
                return message["channel"], message["data"]
            assert time.monotonic() < deadline, "the publish went out on no channel"
    finally:
        pubsub.close()


def eventually(probe: t.Callable[[], T], done: t.Callable[[T], bool], timeout: float = 20, every: float = 0.1) -> T:
    """``probe()`` again until ``done`` says its value is the one awaited or ``timeout`` seconds have passed;
    the last value (the test asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)
