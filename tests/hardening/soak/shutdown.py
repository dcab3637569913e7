"""Shutdown under load: SIGTERM a server holding many open connections.

Every client must get a close frame, teardown must run for every connection
(the app appends each one to a file) once the server gives up on its
connections, and the server must then exit; ``teardown_window`` says when the
teardowns ran, ``exit_seconds`` when the server was gone.

Run: ``python tests/hardening/soak/shutdown.py [hypercorn|uvicorn|asyncws] [CONNECTIONS]``
(``asyncws``: ``flask asyncws run``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import tempfile
import time
import typing as t

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hardening.soak import APP  # noqa: E402
from support.servers import SocketServer  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402


async def _open(ws_url: str, n: int) -> ClientConnection:
    route = "/echo" if n % 2 else "/aecho"
    ws = await connect(f"{ws_url}{route}?n=s{n}", open_timeout=60, close_timeout=30)
    await ws.send("hello")
    assert await ws.recv() == "hello"
    return ws


async def _until_closed(ws: ClientConnection) -> str:
    """How the connection ended, from the client's side."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass
    frame = ws.protocol.close_rcvd
    return "no close frame" if frame is None else f"close {frame.code}"


async def _run(server: SocketServer, connections: int) -> dict[str, t.Any]:
    sockets = []
    for start in range(0, connections, 100):
        sockets += await asyncio.gather(*(_open(server.ws_url, n) for n in range(start, min(start + 100, connections))))
    endings = [asyncio.create_task(_until_closed(ws)) for ws in sockets]
    signalled = time.time()
    exit_seconds = await asyncio.to_thread(server.terminate, server.graceful_timeout + 30)
    done, pending = await asyncio.wait(endings, timeout=10)
    for task in pending:
        task.cancel()
    outcomes = collections.Counter(task.result() for task in done)
    outcomes["still open"] += len(pending)
    assert server.proc is not None
    return {
        "signalled": signalled,
        "exit_seconds": round(exit_seconds, 2),
        "returncode": server.proc.returncode,
        "clients": dict(outcomes),
    }


def run(server_name: str, connections: int, graceful_timeout: int = 3) -> dict[str, t.Any]:
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "teardowns")
        open(log, "w").close()
        with SocketServer(
            server_name, APP, graceful_timeout=graceful_timeout, env={"SOAK_TEARDOWN_LOG": log}
        ) as server:
            started = time.monotonic()
            figures = asyncio.run(_run(server, connections))
            figures["open_seconds"] = round(time.monotonic() - started - figures["exit_seconds"], 2)
        with open(log) as f:
            lines = [line.split() for line in f if line.startswith("s")]
    tags = [tag for tag, _ in lines]
    if lines:
        times = [float(when) - figures["signalled"] for _, when in lines]
        # When teardowns ran, in seconds after SIGTERM: where shutdown time goes.
        figures["teardown_window"] = (round(min(times), 2), round(max(times), 2))
    del figures["signalled"]
    figures.update(
        server=server_name,
        connections=connections,
        graceful_timeout=graceful_timeout,
        teardowns=len(tags),
        teardown_tags=len(set(tags)),
    )
    return figures


def main() -> None:
    server_name = sys.argv[1] if len(sys.argv) > 1 else "hypercorn"
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    print(json.dumps(run(server_name, connections), indent=2))


if __name__ == "__main__":
    main()
