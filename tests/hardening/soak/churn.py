"""Churn: many connections opened, used and closed, then count what is left.

Connections come in waves. In each wave a third close cleanly, a third drop
TCP without a close frame, and a third leave in the middle of the handshake.
Afterwards the server must hold no more greenlets, tasks, threads, contexts or
connection objects than before, its RSS must be near the baseline, and
teardown must have run exactly once for every connection that was accepted.

Run: ``python tests/hardening/soak/churn.py [TOTAL] [WAVE]`` (defaults 10000, 200).
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
from support.servers import SocketServer  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402


async def server_counts(ws_url: str) -> dict[str, t.Any]:
    async with connect(ws_url + "/_debug/counts", open_timeout=10) as ws:
        return t.cast(dict[str, t.Any], json.loads(await ws.recv()))


async def _clean(url: str) -> None:
    async with connect(url, open_timeout=20, close_timeout=10) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"


async def _drop(url: str) -> None:
    ws = await connect(url, open_timeout=20)
    await ws.send(b"\x00" * 100)
    assert await ws.recv() == b"\x00" * 100
    ws.transport.abort()  # no close frame: the TCP connection just ends


async def _mid_handshake(port: int, path: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n".encode())
    await writer.drain()
    writer.transport.abort()


async def churn(ws_url: str, port: int, total: int, wave: int, prefix: str = "c") -> dict[str, t.Any]:
    """Run ``total`` connections in waves of ``wave``; count those accepted."""
    accepted: list[int] = []
    for start in range(0, total, wave):
        jobs = []
        for n in range(start, min(start + wave, total)):
            path = ("/echo" if n % 2 else "/aecho") + f"?n={prefix}{n}"
            kind = n % 3
            if kind == 0:
                jobs.append(_clean(ws_url + path))
                accepted.append(n)
            elif kind == 1:
                jobs.append(_drop(ws_url + path))
                accepted.append(n)
            else:
                jobs.append(_mid_handshake(port, path))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)} connections failed in wave at {start}: {errors[0]!r}")
    return {"accepted": len(accepted)}


async def settle(ws_url: str, expected_teardowns: int, timeout: float = 30.0) -> dict[str, t.Any]:
    """Poll the server until every accepted connection has been torn down."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await server_counts(ws_url)
        if counts["teardown_tags"] >= expected_teardowns and counts["open_connections"] <= 1:
            return counts
        if time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def run(server: SocketServer, total: int, wave: int) -> dict[str, t.Any]:
    # Warm up so one-off allocations (imports, caches, pools) are in the baseline.
    await churn(server.ws_url, server.port, 300, 150, prefix="warm")
    warm = await settle(server.ws_url, 200)
    baseline = await server_counts(server.ws_url)
    started = time.monotonic()
    done = await churn(server.ws_url, server.port, total, wave)
    elapsed = time.monotonic() - started
    after = await settle(server.ws_url, warm["teardown_tags"] + done["accepted"])
    return {"baseline": baseline, "after": after, "accepted": done["accepted"], "seconds": elapsed}


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    wave = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with SocketServer("hypercorn", APP) as server:
        figures = asyncio.run(run(server, total, wave))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
