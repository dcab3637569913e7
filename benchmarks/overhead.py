"""Per-message cost of each app with no server and no network.

``python -m benchmarks.overhead`` drives the ASGI apps directly with an
in-memory receive/send pair that behaves like one ping-pong client: each echo
makes the next message arrive on the next turn of the loop, so ``receive``
suspends once per message, as it does behind a real server. What is left is
the app's own cost per message, which the server-bound figures hide. Time is
this process's CPU time, so other load on the machine matters less; the
minimum over repeats is the figure to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import typing as t

import uvloop

from . import apps

PAYLOAD = "x" * 64
#: A browser-like handshake; the key must be valid or the app refuses it.
HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"user-agent", b"bench"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def websocket_scope(path: str) -> dict[str, t.Any]:
    """The scope a server would pass for a handshake to ``path``."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "subprotocols": [],
        "extensions": {},
    }


async def drive(app: t.Any, path: str, messages: int) -> float:
    """Seconds per echoed message."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
    done = loop.create_future()
    state = {"echoed": 0, "started": 0.0}
    message = {"type": "websocket.receive", "text": PAYLOAD}

    async def receive() -> dict[str, t.Any]:
        return await inbox.get()

    async def send(event: dict[str, t.Any]) -> None:
        kind = event["type"]
        if kind == "websocket.accept":
            state["started"] = time.process_time()
            loop.call_soon(inbox.put_nowait, message)
        elif kind == "websocket.send":
            state["echoed"] += 1
            if state["echoed"] == messages:
                done.set_result(time.process_time() - state["started"])
                loop.call_soon(inbox.put_nowait, {"type": "websocket.disconnect", "code": 1000})
            else:
                loop.call_soon(inbox.put_nowait, message)

    scope = websocket_scope(path)
    inbox.put_nowait({"type": "websocket.connect"})
    task = asyncio.ensure_future(app(scope, receive, send))
    seconds: float = await asyncio.wait_for(done, 120)
    await asyncio.wait_for(task, 10)
    return seconds / messages


async def handshakes(app: t.Any, path: str, count: int) -> float:
    """CPU seconds per connection: connect, accept, one echo, client close."""
    loop = asyncio.get_running_loop()
    scope = websocket_scope(path)
    echoed = 0
    started = time.process_time()
    for _ in range(count):
        inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(event: dict[str, t.Any], inbox: asyncio.Queue[dict[str, t.Any]] = inbox) -> None:
            nonlocal echoed
            if event["type"] == "websocket.accept":
                loop.call_soon(inbox.put_nowait, {"type": "websocket.receive", "text": PAYLOAD})
            elif event["type"] == "websocket.send":
                echoed += 1
                loop.call_soon(inbox.put_nowait, {"type": "websocket.disconnect", "code": 1000})

        await asyncio.wait_for(app(dict(scope), inbox.get, send), 10)
    seconds = time.process_time() - started
    if echoed != count:
        raise RuntimeError(f"{path}: {count - echoed} of {count} connections were not accepted and echoed")
    return seconds / count


def lifespan(app: t.Any) -> t.Any:
    """Quart needs its startup; run it once."""

    async def start() -> None:
        queue: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
        queue.put_nowait({"type": "lifespan.startup"})
        started = asyncio.get_running_loop().create_future()

        async def send(event: dict[str, t.Any]) -> None:
            if not started.done():
                started.set_result(event)

        asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send))
        await started

    return start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--metrics", action="store_true", help="add our app with Prometheus metrics on (sync+metrics, async+metrics)"
    )
    args = parser.parse_args(argv)
    ours = apps.make_flask_asyncws().asgi_app  # type: ignore[attr-defined]
    quart = apps.make_quart()
    cases = {"raw": (apps.raw_echo, "/"), "sync": (ours, "/sync"), "async": (ours, "/async"), "quart": (quart, "/echo")}
    if args.metrics:
        from prometheus_client import CollectorRegistry

        from flask_asyncws.metrics import init_metrics

        measured = apps.make_flask_asyncws()
        init_metrics(measured, path=None, registry=CollectorRegistry())
        cases |= {"sync+metrics": (measured.asgi_app, "/sync"), "async+metrics": (measured.asgi_app, "/async")}  # type: ignore[attr-defined]
    greenlet_floor = (apps.make_greenlet_floor(), "/floor")
    echo_floors = {"greenlet-ctx": greenlet_floor, "async-ctx": (apps.make_async_floor(), "/floor")}
    floor = {"flask-ctx": (apps.make_context_floor(), "/floor"), "greenlet-ctx": greenlet_floor}

    async def run() -> dict[str, list[float]]:
        await lifespan(quart)()
        results: dict[str, list[float]] = {name: [] for name in {**cases, **echo_floors}}
        for _ in range(args.repeat):
            for name, (app, path) in {**cases, **echo_floors}.items():
                results[name].append(await drive(app, path, args.messages))
        return results

    async def run_handshakes() -> dict[str, list[float]]:
        results: dict[str, list[float]] = {name: [] for name in {**cases, **floor}}
        for _ in range(args.repeat):
            for name, (app, path) in {**cases, **floor}.items():
                results[name].append(await handshakes(app, path, args.messages // 20))
        return results

    report("echo: CPU µs per message", uvloop.run(run()))
    print()
    report("handshake (connect, accept, one echo, close): CPU µs per connection", uvloop.run(run_handshakes()))


def report(title: str, results: dict[str, list[float]]) -> None:
    print(title)
    raw = min(results["raw"])
    print("| app | CPU µs (min) | median | over raw (min) |")
    print("|---|--:|--:|--:|")
    for name, values in results.items():
        m = min(values)
        print(f"| {name} | {m * 1e6:.2f} | {statistics.median(values) * 1e6:.2f} | {(m - raw) * 1e6:+.2f} |")


if __name__ == "__main__":
    main()
