"""The processes of a benchmark run: servers, the load client, and what /proc says of them.

Each configuration gets a fresh server process (pinned to CPU 0) and a fresh
load-client process (pinned to CPU 1) where ``taskset`` and two cores exist.
Every process has a deadline, so a run always ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

from .serve import LISTEN_BACKLOG

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def pinned(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


# -- the server process ---------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's worker is a child)."""
    found = [pid]
    for p in found:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    found.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _over_tree(pid: int, name: str, read: t.Callable[[str], float]) -> float:
    """``read`` applied to ``/proc/<p>/<name>`` of ``pid`` and its descendants, summed."""
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/{name}") as f:
                total += read(f.read())
        except OSError:
            pass
    return total


def rss_bytes(pid: int) -> int:
    return int(_over_tree(pid, "statm", lambda text: int(text.split()[1]) * PAGE))


def tcp_retransmits() -> int | None:
    """The kernel's count of retransmitted TCP segments (all sockets).

    On loopback a retransmission means a dropped packet (a burst larger than
    ``net.core.netdev_max_backlog``), which costs a 200 ms+ timeout: a run
    where this grows has latency the apps did not cause.
    """
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Tcp:")]
        return int(lines[1][lines[0].index("RetransSegs")])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    def user_and_system(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    return _over_tree(pid, "stat", user_and_system)


def wait_for_http(proc: subprocess.Popen[bytes], name: str, port: int, path: str, timeout: float) -> None:
    """Wait until ``proc`` answers ``GET path`` on ``port`` with any HTTP response."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                if s.recv(16).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer within {timeout}s")


class Server:
    """One app under one server, in its own process, on a fresh port."""

    def __init__(self, server: str, app: str, threads: int = 100) -> None:
        self.name = f"{app}@{server}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(LISTEN_BACKLOG)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        self.log = None if os.environ.get("BENCH_SERVER_LOGS") else open(os.devnull, "wb")
        command = [
            *pinned(0),
            sys.executable,
            "-m",
            "benchmarks.serve",
            server,
            app,
            str(fd),
            "--threads",
            str(threads),
        ]
        self.proc = subprocess.Popen(command, pass_fds=[fd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)
        self.sock.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        wait_for_http(self.proc, self.name, self.port, "/ready", timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()


# -- the client process ---------------------------------------------------


def drive(
    server: Server, mode: str, path: str, deadline: float, settle: float = 1.0, **args: t.Any
) -> dict[str, t.Any]:
    """Run the load client against ``server``; add the server's CPU and RSS."""
    command = [
        *pinned(1),
        sys.executable,
        "-m",
        "benchmarks.client",
        mode,
        server.url(path),
        "--deadline",
        str(deadline),
    ]
    for key, value in args.items():
        if value is not None:
            command += [
                f"--{key.replace('_', '-')}",
                ",".join(map(str, value)) if isinstance(value, tuple) else str(value),
            ]
    rss_base = rss_bytes(server.pid)
    peak = [rss_base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_bytes(server.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    killer = threading.Timer(deadline + 30, proc.kill)
    killer.start()
    result: dict[str, t.Any] = {}
    stages: list[dict[str, t.Any]] = []
    cpu0 = wall0 = 0.0
    retrans0: int | None = None
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            event = json.loads(line)
            kind = event.pop("event")
            if kind == "start":
                cpu0, wall0, retrans0 = cpu_seconds(server.pid), time.perf_counter(), tcp_retransmits()
            elif kind == "end":
                result["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - wall0)
                retrans = tcp_retransmits()
                if retrans is not None and retrans0 is not None:
                    result["retransmits"] = retrans - retrans0
            elif kind == "stage":
                time.sleep(settle)  # let the server settle its allocations
                rss = rss_bytes(server.pid)
                event["rss"] = rss
                event["per_connection"] = (rss - rss_base) / event["open"] if event["open"] else None
                stages.append(event)
                proc.stdin.write("\n")
                proc.stdin.flush()
            elif kind == "result":
                result.update(event)
        proc.wait(30)
    finally:
        killer.cancel()
        done.set()
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0 and "failed" not in result:
        result["failed"] = f"client exited with {proc.returncode}"
    if server.proc.poll() is not None:
        result["failed"] = f"server exited with {server.proc.returncode}"
    result["rss_base"] = rss_base
    result["rss_peak"] = peak[0]
    result["stages"] = stages
    return result
