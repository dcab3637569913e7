"""Isolation under load: every message sees its own connection's contexts.

Many concurrent connections, half to a sync handler and half to an async one,
each with its own signed session cookie and query argument. On every message
the server checks that ``g``, ``session``, ``websocket`` and ``request`` all
belong to the connection that sent it, and the client checks the echo.

Run: ``python tests/hardening/soak/isolation.py [CONNECTIONS] [SECONDS]`` (defaults 1000, 30).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import typing as t

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hardening.soak import APP  # noqa: E402
from hardening.soak.churn import server_counts  # noqa: E402
from support.servers import SocketServer  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402


def session_cookie(tag: str) -> str:
    """A session cookie the app accepts, holding ``{"tag": tag}``."""
    from hardening.soak.app import app

    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return f"{app.config['SESSION_COOKIE_NAME']}={serializer.dumps({'tag': tag})}"


class AllOpen:
    """Set once ``count`` connections are open (``asyncio.Barrier`` is 3.11+)."""

    def __init__(self, count: int) -> None:
        self.missing = count
        self.event = asyncio.Event()

    def opened(self) -> None:
        self.missing -= 1
        if self.missing == 0:
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


async def _client(ws_url: str, n: int, deadline: list[float], opened: AllOpen) -> tuple[int, int]:
    tag = f"i{n}"
    route = "/isolation" if n % 2 else "/aisolation"
    headers = {"Cookie": session_cookie(tag)}
    sent = wrong = 0
    async with connect(f"{ws_url}{route}?n={tag}", additional_headers=headers, open_timeout=60) as ws:
        opened.opened()
        await opened.wait()
        while time.monotonic() < deadline[0]:
            message = f"{tag}:{sent}"
            await ws.send(message)
            if await ws.recv() != message:
                wrong += 1
            sent += 1
    return sent, wrong


async def run(ws_url: str, connections: int, seconds: float) -> dict[str, t.Any]:
    before = await server_counts(ws_url)
    opened = AllOpen(connections)
    deadline = [float("inf")]  # the clock starts once every connection is open

    async def start_clock() -> None:
        await opened.wait()
        deadline[0] = time.monotonic() + seconds

    clock = asyncio.create_task(start_clock())
    results = await asyncio.gather(*(_client(ws_url, n, deadline, opened) for n in range(connections)))
    await clock
    after = await server_counts(ws_url)
    return {
        "connections": connections,
        "seconds": seconds,
        "messages": sum(sent for sent, _ in results),
        "client_mismatches": sum(wrong for _, wrong in results),
        "server_mismatches": after["mismatches"] - before["mismatches"],
        "examples": after["mismatch_examples"],
    }


def main() -> None:
    connections = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    with SocketServer("hypercorn", APP) as server:
        figures = asyncio.run(run(server.ws_url, connections, seconds))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
