"""HTTP throughput of ``app.asgi_app`` against other ways to serve the same app.

Run ``python benchmarks/http_bench.py`` (needs ``wrk``). Each configuration is
a separate server process with one worker on 127.0.0.1; ``wrk`` drives it with
the same load. The script prints one table and stops every server it started.
It exits with ``MISSED_TARGET`` (3) when a ratio misses its target, so a crash
(1) is never mistaken for a slow run.

Configurations:

- ``asgiws``: this extension, ``hypercorn http_bench:app.asgi_app``
- ``hypercorn-wsgi``: hypercorn's WSGI mode, ``hypercorn http_bench:app``
- ``a2wsgi``: ``a2wsgi.WSGIMiddleware(app)`` under hypercorn
- ``asgiws-uvicorn``: this extension under uvicorn (uvloop and httptools when
  installed, lifespan on), started by ``serve_uvicorn``
- ``gunicorn-gthread``: Flask's WSGI app under gunicorn's gthread worker with
  32 threads, as many as ours gets from ``ASYNCWS_HTTP_THREADS`` by default
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import typing as t
import urllib.request

from flask import Flask

from flask_asyncws import AsyncWS

app = Flask(__name__)
app.config["ASYNCWS_HTTP_THREADS"] = int(os.environ.get("ASYNCWS_HTTP_THREADS_BENCH", "32"))
AsyncWS(app)


@app.route("/hello")
def hello() -> str:
    return "Hello, World!"


@app.route("/block")
def block() -> str:
    time.sleep(0.005)
    return "slept"


@app.route("/async")
async def async_view() -> str:
    await asyncio.sleep(0.005)
    return "awaited"


def _a2wsgi_app() -> t.Any:
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(app)


if __name__ != "__main__":
    try:
        a2wsgi_app = _a2wsgi_app()
    except ImportError:  # pragma: no cover - only that column is lost
        pass

#: Exit status when a ratio misses its target.
MISSED_TARGET = 3

#: uvicorn's fastest parts when they are installed, its pure-Python ones otherwise.
UVICORN_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
UVICORN_HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"
GTHREAD_THREADS = 32

#: ``python -m`` command line per configuration; ``{fd}`` is the inherited listening socket.
SERVERS: dict[str, str] = {
    "asgiws": "hypercorn --workers 1 --bind fd://{fd} http_bench:app.asgi_app",
    "hypercorn-wsgi": "hypercorn --workers 1 --bind fd://{fd} http_bench:app",
    "a2wsgi": "hypercorn --workers 1 --bind fd://{fd} http_bench:a2wsgi_app",
    "asgiws-uvicorn": "http_bench --uvicorn-fd {fd}",
    "gunicorn-gthread": f"gunicorn --worker-class gthread --workers 1 --threads {GTHREAD_THREADS}"
    " --bind fd://{fd} --log-level warning http_bench:app",
}

ALL = tuple(SERVERS)

#: (route, servers to run, [(ours, theirs, target ratio or None to only report)])
CASES: list[tuple[str, tuple[str, ...], list[tuple[str, str, float | None]]]] = [
    (
        "/hello",
        ALL,
        [
            ("asgiws", "hypercorn-wsgi", 1.2),
            ("asgiws", "a2wsgi", 1.5),
            ("asgiws-uvicorn", "gunicorn-gthread", 1.0),
        ],
    ),
    (
        "/block",
        ALL,
        [("asgiws", "hypercorn-wsgi", 1.0), ("asgiws-uvicorn", "gunicorn-gthread", 1.0)],
    ),
    (
        "/async",
        ("asgiws", "hypercorn-wsgi", "asgiws-uvicorn", "gunicorn-gthread"),
        [("asgiws", "hypercorn-wsgi", 3.0), ("asgiws-uvicorn", "gunicorn-gthread", None)],
    ),
]


def serve_uvicorn(fd: int) -> None:
    """One uvicorn worker on the inherited socket.

    ``uvicorn --fd`` wraps any socket as a Unix one, so accepted connections miss
    ``TCP_NODELAY`` and every keep-alive response waits ~40 ms for a delayed ACK;
    handing uvicorn the socket itself keeps it TCP.
    """
    import uvicorn

    config = uvicorn.Config(
        "http_bench:app.asgi_app",
        workers=1,
        loop=UVICORN_LOOP,
        http=UVICORN_HTTP,
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


class Server:
    """One server process on a socket it inherits, so it is listening before the process starts."""

    def __init__(self, command: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), *sys.path])}
        fd = self.sock.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command.format(fd=fd).split()],
            pass_fds=(fd,),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    response.read()
                return
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    errors = self.process.stderr.read().decode()  # type: ignore[union-attr]
                    raise RuntimeError(f"server did not start: {errors}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.sock.close()


def wrk(url: str, seconds: float, connections: int) -> tuple[float, float]:
    """Requests per second and p99 latency in milliseconds."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"warning: errors against {url}:\n{out}", file=sys.stderr)
    return rps, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs per cell")
    parser.add_argument("--quick", action="store_true", help="one one-second round without warm-up (smoke test)")
    parser.add_argument("--uvicorn-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.uvicorn_fd is not None:
        serve_uvicorn(args.uvicorn_fd)
        return 0
    if args.quick:
        args.seconds, args.rounds = 1, 1
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    # All servers up at once and measured in turn, best of a few rounds: the
    # machine's load drifts, and this keeps the comparison side by side.
    servers = {name: Server(command) for name, command in SERVERS.items()}
    results: dict[tuple[str, str], tuple[float, float]] = {}
    try:
        for server in servers.values():
            server.wait_ready("/hello")
        for round_ in range(args.rounds):
            for route, names, _ in CASES:
                for name in names:
                    url = servers[name].url + route
                    if round_ == 0 and not args.quick:
                        wrk(url, 1, args.connections)  # warm up
                    rps, p99 = wrk(url, args.seconds, args.connections)
                    if rps > results.get((route, name), (0.0, 0.0))[0]:
                        results[route, name] = rps, p99
    finally:
        for server in servers.values():
            server.stop()

    print(
        f"\nwrk -t2 -c{args.connections} -d{args.seconds:g}s, best of {args.rounds}, one worker each: hypercorn,"
        f" uvicorn ({UVICORN_LOOP}, {UVICORN_HTTP}), gunicorn gthread ({GTHREAD_THREADS} threads)\n"
    )
    print(f"{'route':<8} {'server':<16} {'req/s':>9} {'p99 ms':>8}")
    for route, names, _ in CASES:
        for name in names:
            rps, p99 = results[route, name]
            print(f"{route:<8} {name:<16} {rps:>9.0f} {p99:>8.2f}")
    print(f"\n{'route':<8} {'ratio':<34} {'value':>6} {'target':>7}")
    missed = 0
    for route, _, ratios in CASES:
        for ours, theirs, target in ratios:
            ratio = results[route, ours][0] / results[route, theirs][0]
            label = f"{route:<8} {ours + ' / ' + theirs:<34} {ratio:>6.2f}"
            if target is None:
                print(f"{label} {'-':>7}")
                continue
            ok = ratio >= target
            missed += not ok
            verdict = "ok" if ok else "MISSED"
            print(f"{label} {'>= ' + format(target, 'g'):>7} {verdict}")
    return MISSED_TARGET if missed else 0


if __name__ == "__main__":
    sys.exit(main())
