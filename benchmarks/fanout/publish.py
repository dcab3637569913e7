"""The publisher, a plain process outside the servers (``python -m benchmarks.fanout.publish SYSTEM``).

Each system publishes the way its users do from a script: flask-asyncws with
``asyncws.publish(group, text)`` (a plain call, no event loop), Django
Channels with ``async_to_sync(layer.group_send)``, python-socketio with a
write-only ``AsyncRedisManager``'s ``emit`` (a coroutine, run on this
process's own loop). Commands, one JSON object a line on stdin:

- ``{"cmd": "ready"}``: publish one "ready" message;
- ``{"cmd": "rate", "phase": "f", "rate": R, "duration": D}``: open loop, R messages a second for D seconds;
- ``{"cmd": "window", "phase": "m", "window": W, "duration": D, "stall": S}``: closed loop for D seconds, at
  most W messages ahead of the slowest open member (the lowest "newest sequence number" on the board); a
  lost message does not hold it back, a board that does not move for S seconds ends it;
- ``{"cmd": "quit"}``.

Each command is answered on stdout with ``{"event": "done", ...}``: messages
published, seconds, this process's CPU seconds, publish errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import typing as t

from .common import GROUP, READY, Board, payload


def publisher(system: str) -> t.Callable[[str], None]:
    if system == "asyncws":
        from .asyncws_app import asyncws

        def publish_asyncws(text: str) -> None:
            asyncws.publish(GROUP, text)

        return publish_asyncws
    if system == "channels":
        from asgiref.sync import async_to_sync

        from .channels_app import channel_layer

        group_send = async_to_sync(channel_layer().group_send)

        def publish_channels(text: str) -> None:
            group_send(GROUP, {"type": "bench.message", "text": text})

        return publish_channels
    if system == "socketio":
        import socketio

        manager = socketio.AsyncRedisManager(os.environ["FANOUT_REDIS_URL"], write_only=True)
        loop = asyncio.new_event_loop()

        def publish_socketio(text: str) -> None:
            loop.run_until_complete(manager.emit("m", text, room=GROUP, namespace="/"))

        return publish_socketio
    raise SystemExit(f"unknown system {system!r}")


def emit(**fields: t.Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Publisher:
    def __init__(self, system: str, board: Board) -> None:
        self.publish = publisher(system)
        self.board = board
        self.errors: dict[str, int] = {}

    def one(self, phase: str, seq: int) -> None:
        try:
            self.publish(payload(phase, seq))
        except Exception as exc:
            kind = f"{type(exc).__name__}: {exc}"[:200]
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def at_rate(self, phase: str, rate: float, duration: float) -> dict[str, t.Any]:
        start = time.monotonic()
        seq = 0
        late = 0.0
        while True:
            due = start + seq / rate
            if due >= start + duration:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                late = max(late, -wait)
            self.one(phase, seq)
            seq += 1
        return {"published": seq, "seconds": time.monotonic() - start, "late": late}

    def windowed(self, phase: str, window: int, duration: float, stall: float) -> dict[str, t.Any]:
        start = time.monotonic()
        end = start + duration
        seq = 0
        low, moved = -1, start
        stalled = False
        while True:
            now = time.monotonic()
            if now >= end:
                break
            current = self.board.totals()["low"]
            if current != low:
                low, moved = current, now
            if seq - 1 - low < window:
                self.one(phase, seq)
                seq += 1
            elif now - moved > stall:
                stalled = True
                break
            else:
                time.sleep(0.0002)
        return {"published": seq, "seconds": time.monotonic() - start, "stalled": stalled}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("system", choices=("asyncws", "channels", "socketio"))
    parser.add_argument("--board", required=True)
    parser.add_argument("--slots", type=int, required=True)
    args = parser.parse_args(argv)
    board = Board(args.board, args.slots)
    pub = Publisher(args.system, board)
    emit(event="started")
    for line in sys.stdin:
        command = json.loads(line)
        cpu0 = time.process_time()
        pub.errors = {}
        if command["cmd"] == "ready":
            pub.one(READY, 0)
            result: dict[str, t.Any] = {"published": 1}
        elif command["cmd"] == "rate":
            result = pub.at_rate(command["phase"], command["rate"], command["duration"])
        elif command["cmd"] == "window":
            result = pub.windowed(command["phase"], command["window"], command["duration"], command["stall"])
        elif command["cmd"] == "quit":
            break
        else:
            raise SystemExit(f"unknown command {command!r}")
        emit(event="done", cpu=time.process_time() - cpu0, errors=pub.errors, **result)
    board.close()


if __name__ == "__main__":
    main()
