"""What every process of the fan-out benchmark shares: the payload, the board and the latency histogram.

The payload is 64 bytes of ASCII text: a phase letter, a 10-digit sequence
number and the publisher's ``time.time()`` when it published, padded with
``.``. Clients and publisher run on one machine, so ``time.time()`` is one
clock for all of them.

The board is a small file mapped into memory by the harness, the publisher and
every load-client process. Each client process owns one slot and rewrites it
every few milliseconds: how many of its connections are open, how many have
received a "ready" message, how many messages of the current phase it has
received, and the lowest "newest sequence number" over its open connections.
The publisher reads the last field to keep a bounded number of messages in
flight (the max-rate phase); the harness reads the others to follow progress.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import time
import typing as t

GROUP = "bench"
PAYLOAD_SIZE = 64
#: Phase letters: a "ready" message, the fixed rate, the overload.
READY, FIXED, OVERLOAD = "r", "f", "o"
#: The max-rate phase's steps, each with a window four times the last one's.
MAX_STEPS = ("m", "n", "p")
PHASE_NAMES = {
    READY: "ready",
    FIXED: "fixed",
    OVERLOAD: "overload",
    **{m: f"max{i + 1}" for i, m in enumerate(MAX_STEPS)},
}


def payload(phase: str, seq: int) -> str:
    """The message: phase, sequence number, publish time; 64 characters."""
    head = f"{phase}{seq:010d}{time.time():017.6f}"
    return head + "." * (PAYLOAD_SIZE - len(head))


def parse(data: bytes) -> tuple[int, int, float]:
    """``(phase letter as a byte value, sequence number, publish time)`` of a payload."""
    return data[0], int(data[1:11]), float(data[11:28])


# -- the board ---------------------------------------------------------------

#: Per slot: open connections, connections that received "ready", messages of
#: the current phase received, lowest newest-sequence over open connections
#: (-1: none yet), closed connections, frames received of any kind.
SLOT = struct.Struct("<qqqqqq")


class Board:
    """Shared counters in a memory-mapped file, one slot per client process."""

    def __init__(self, path: str, slots: int, create: bool = False) -> None:
        self.path = path
        self.slots = slots
        size = SLOT.size * slots
        if create:
            with open(path, "wb") as f:
                f.write(b"\0" * size)
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, size)
        if create:
            for slot in range(slots):
                self.write(slot, 0, 0, 0, -1, 0, 0)

    def write(self, slot: int, opened: int, ready: int, received: int, low: int, closed: int, frames: int) -> None:
        SLOT.pack_into(self._map, slot * SLOT.size, opened, ready, received, low, closed, frames)

    def read(self) -> list[tuple[int, int, int, int, int, int]]:
        return [
            t.cast(tuple[int, int, int, int, int, int], SLOT.unpack_from(self._map, i * SLOT.size))
            for i in range(self.slots)
        ]

    def totals(self) -> dict[str, int]:
        rows = self.read()
        return {
            "open": sum(r[0] for r in rows),
            "ready": sum(r[1] for r in rows),
            "received": sum(r[2] for r in rows),
            "low": min(r[3] for r in rows),
            "closed": sum(r[4] for r in rows),
            "frames": sum(r[5] for r in rows),
        }

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


# -- latency histogram -------------------------------------------------------

#: Buckets per factor e of the latency in microseconds: about 2% wide.
BUCKETS_PER_E = 50


def bucket(seconds: float) -> int:
    return int(math.log(max(seconds * 1e6, 1.0)) * BUCKETS_PER_E)


def bucket_ms(index: int) -> float:
    """The middle of a bucket, in milliseconds."""
    return math.exp((index + 0.5) / BUCKETS_PER_E) / 1e3


def merge(histograms: t.Iterable[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for histogram in histograms:
        for key, count in histogram.items():
            total[int(key)] = total.get(int(key), 0) + count
    return total


def percentile_ms(histogram: dict[int, int], p: float) -> float | None:
    count = sum(histogram.values())
    if not count:
        return None
    rank = p / 100 * count
    seen = 0
    for key in sorted(histogram):
        seen += histogram[key]
        if seen >= rank:
            return bucket_ms(key)
    return bucket_ms(max(histogram))
