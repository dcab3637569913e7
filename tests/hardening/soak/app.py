"""The app the hardening tests and soak scripts serve.

It has sync and async echo routes, a route that checks every message is seen
with its own ``g``, ``session``, ``websocket`` and ``request``, and an async
``/_debug/counts`` route that reports what is alive in the server process, so
a test can check nothing is left behind after the connections are gone.

Serve it with ``hypercorn hardening.soak.app:asgi`` (``tests`` on the path). Set
``SOAK_TEARDOWN_LOG`` to a file name to have every teardown append a line.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import os
import threading
import time
import typing as t

import greenlet
from flask import Flask, g, request, session
from support.versions import REQUEST_CONTEXT

from flask_asyncws import AsyncWS, Websocket, run_sync, websocket
from flask_asyncws._bridge import BridgeGreenlet
from flask_asyncws._connection import Connection
from flask_asyncws._context import WebsocketContext

app = Flask(__name__)
app.secret_key = "soak-only"
asyncws = AsyncWS(app)
asgi = app.asgi_app

#: Teardown calls per connection tag (the ``n`` query argument).
teardowns: collections.Counter[str] = collections.Counter()
#: Messages whose contexts were not the connection's own.
mismatches: list[str] = []
#: Messages the ``/flood`` handler has handed to the server, per tag.
flood_sent: collections.Counter[str] = collections.Counter()
_teardown_log = os.environ.get("SOAK_TEARDOWN_LOG")


@app.teardown_websocket
def count_teardown(error: BaseException | None) -> None:
    tag = request.args.get("n")
    if tag is None:
        return
    teardowns[tag] += 1
    if _teardown_log:
        with open(_teardown_log, "a") as f:
            f.write(f"{tag} {time.time():.3f}\n")


@app.websocket("/echo")
def echo() -> None:
    while True:
        websocket.send(websocket.receive())


@app.websocket("/aecho")
async def aecho() -> None:
    while True:
        await websocket.send(await websocket.receive())


@app.websocket("/json")
def json_echo() -> None:
    """Echo JSON; invalid JSON is caught and reported, not fatal."""
    while True:
        try:
            value = websocket.receive_json()
        except ValueError as exc:
            websocket.send_json({"error": type(exc).__name__})
        else:
            websocket.send_json({"value": value})


@app.websocket("/json-uncaught")
def json_uncaught() -> None:
    while True:
        websocket.send_json(websocket.receive_json())


@app.websocket("/flood")
async def flood() -> None:
    """Send 256 MiB in 64 KiB messages, to a client that may not read.

    Bounded, because hypercorn's send returns without yielding once the
    client is gone, so an endless loop here would never let the loop run.
    """
    chunk = b"x" * 65536
    await websocket.accept()
    for _ in range(4096):
        await websocket.send(chunk)
        flood_sent[websocket.args.get("n", "")] += 1


@app.websocket("/block")
def block() -> None:
    """A sync handler that wrongly blocks the loop on every message."""
    while True:
        seconds = float(websocket.receive())
        time.sleep(seconds)
        websocket.send("slept")


@app.websocket("/cured")
def cured() -> None:
    """The same handler, blocking in a thread through run_sync()."""
    while True:
        seconds = float(websocket.receive())
        run_sync(time.sleep, seconds)
        websocket.send("slept")


def _check(tag: str, message: str) -> None:
    """Record a mismatch unless every context belongs to connection ``tag``."""
    seen = (g.get("tag"), session.get("tag"), websocket.args.get("n"), request.args.get("n"), message.split(":")[0])
    if any(value != tag for value in seen):
        mismatches.append(f"{tag}: {seen}")


@app.websocket("/isolation")
def isolation() -> None:
    tag = request.args["n"]
    g.tag = tag
    while True:
        message = websocket.receive()
        _check(tag, message)
        websocket.send(message)


@app.websocket("/aisolation")
async def aisolation() -> None:
    tag = request.args["n"]
    g.tag = tag
    while True:
        message = await websocket.receive()
        await asyncio.sleep(0)
        _check(tag, message)
        await websocket.send(message)


def rss_kib() -> int:
    """This process's resident set size, from ``/proc`` (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _trimmed_rss_kib() -> int:
    """RSS after asking glibc to return free heap pages to the system.

    Freed memory that the allocator keeps for reuse is not a leak; this tells
    the two apart.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return -1
    return rss_kib()


def counts() -> dict[str, t.Any]:
    """What is alive in this process, after a full collection."""
    gc.collect()
    kinds = {
        "greenlets": greenlet.greenlet,
        "connections": Connection,
        "websockets": Websocket,
        "websocket_contexts": WebsocketContext,
        "request_contexts": REQUEST_CONTEXT,
    }
    found = dict.fromkeys(kinds, 0)
    objects = gc.get_objects()
    found["objects"] = len(objects)
    for obj in objects:
        for name, kind in kinds.items():
            if isinstance(obj, kind):
                found[name] += 1
    # Finished greenlets kept for reuse (at most IDLE_GREENLETS) are not in use.
    found["idle_greenlets"] = sum(type(obj) is BridgeGreenlet and not obj.busy for obj in objects)
    found["greenlets"] -= found["idle_greenlets"]
    return {
        **found,
        "threads": threading.active_count(),
        "tasks": len(asyncio.all_tasks()),
        "open_connections": len(asgi.connections),
        "rss_kib": rss_kib(),
        "rss_trimmed_kib": _trimmed_rss_kib(),
        "teardowns": sum(teardowns.values()),
        "teardown_tags": len(teardowns),
        "teardown_repeats": sorted(tag for tag, n in teardowns.items() if n != 1)[:20],
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
    }


@app.websocket("/_debug/counts")
async def debug_counts() -> None:
    """Report :func:`counts` (run on the loop, so tasks can be listed)."""
    await websocket.send_json(counts())
    await websocket.close()
