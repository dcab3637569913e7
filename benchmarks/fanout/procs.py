"""The processes of one fan-out run: redis-server, two workers, load clients, the publisher.

Every process is started in its own session, so a Ctrl-C reaches only the
harness, which then stops them all (``Processes.stop_all`` in a ``finally``).
Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

from ..procs import cpu_seconds, rss_bytes, wait_for_http
from ..serve import LISTEN_BACKLOG

ROOT = Path(__file__).resolve().parent.parent.parent


class Processes:
    """Every process this run started, to stop them all however it ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[t.Any]] = []

    def start(self, command: list[str], **kwargs: t.Any) -> subprocess.Popen[t.Any]:
        proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """SIGTERM, then SIGKILL after 5 s: first everything started after the first process (Redis), then it."""
        for wave in (self.procs[1:], self.procs[:1]):
            for proc in wave:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            for proc in wave:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.procs.clear()


class Redis:
    """redis-server on a free 127.0.0.1 port, in a temporary directory, persisting nothing."""

    def __init__(self, procs: Processes, log: t.IO[bytes]) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian package redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.directory = tempfile.mkdtemp(prefix="fanout-redis-")
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.directory,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--maxclients", "10000",
        ]  # fmt: skip
        self.log = log
        self.proc = procs.start(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while self.info("server").get("redis_version") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (empty when nobody answers)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(f"INFO {section}\r\n".encode())
                data = b""
                while b"\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return {}
                    data += chunk
                head, _, body = data.partition(b"\r\n")
                size = int(head[1:])
                while len(body) < size:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
        except (OSError, ValueError):
            return {}
        fields = {}
        for line in body.decode(errors="replace").splitlines():
            if ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                fields[key] = value
        return fields

    def buffer_limit_closes(self) -> int:
        """How many clients Redis closed for passing their output-buffer limit (a subscriber too slow to read)."""
        try:
            with open(self.log.name, errors="replace") as f:
                return sum("output buffer limits" in line for line in f)
        except OSError:
            return 0

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Worker:
    """One server process with the system's app, on its own pre-bound port."""

    def __init__(self, procs: Processes, server: str, system: str, env: dict[str, str], log: t.IO[bytes]) -> None:
        self.name = f"{system}@{server}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(LISTEN_BACKLOG)
        self.port = sock.getsockname()[1]
        fd = sock.fileno()
        command = [sys.executable, "-m", "benchmarks.fanout.serve", server, system, str(fd)]
        self.log = log
        self.proc = procs.start(command, pass_fds=[fd], env=env, stdout=log, stderr=log)
        sock.close()

    def log_lines(self) -> list[str]:
        try:
            with open(self.log.name, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for_http(self.proc, self.name, self.port, "/", timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def sockets(self) -> int:
        """Open sockets of the process: its members, plus the listener and its Redis connections."""
        count = 0
        try:
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    count += os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:")
                except OSError:
                    continue
        except OSError:
            pass
        return count


class Lines:
    """A child process's stdout as JSON lines, read by a thread, taken with a deadline."""

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        self.proc = proc
        self.name = name
        self.queue: queue.Queue[dict[str, t.Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.queue.put(json.loads(line))
            except ValueError:
                continue
        self.queue.put(None)

    def send(self, **command: t.Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def take(self, timeout: float, check: t.Callable[[], None] | None = None) -> dict[str, t.Any]:
        """The next line; ``check`` runs every half second while waiting (it may raise)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:.0f}s")
            try:
                event = self.queue.get(timeout=min(0.5, left))
            except queue.Empty:
                if check is not None:
                    check()
                continue
            if event is None:
                raise RuntimeError(f"{self.name} exited with {self.proc.wait(5)}")
            if event.get("event") == "failed":
                raise RuntimeError(f"{self.name}: {event.get('reason')}")
            return event


def child(procs: Processes, module: str, args: list[str], env: dict[str, str], log: t.IO[bytes], name: str) -> Lines:
    proc = procs.start(
        [sys.executable, "-m", module, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    return Lines(proc, name)


def environment(redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["FANOUT_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
