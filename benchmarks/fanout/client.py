"""A load-client process: members of the group, counting what they receive (``python -m benchmarks.fanout.client``).

It opens its share of the connections (alternating between the workers'
URLs), tells the harness on stdout when they are open, then counts every
message each connection receives, per phase: first receipts, duplicates,
out-of-order arrivals (a sequence number below one the connection already
had) and the publish-to-receive latency. It keeps its board slot current and
answers the harness's commands, one JSON object a line on stdin:
``{"cmd": "phase", "phase": "m"}`` (the phase the board follows),
``{"cmd": "report", "phase": "m"}`` and ``{"cmd": "quit"}``.

``--protocol socketio`` speaks Engine.IO v4 / Socket.IO over the websocket
itself: it answers the open packet with ``40``, joins the room with an
acknowledged ``join`` event, answers pings (``2``) with pongs (``3``) and reads
``42["m","<payload>"]`` event frames. picows on uvloop handles frames in plain
callbacks, so a client process costs far less per message than a server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
import typing as t

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from ..client import raise_fd_limit
from .common import PAYLOAD_SIZE, READY, Board, bucket

READY_BYTE = ord(READY)
#: What a Socket.IO event frame carries before the payload: ``42["m","``.
SIO_EVENT_PREFIX = b'42["m","'


def emit(**fields: t.Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Phase:
    """What the connections of this process received in one phase."""

    def __init__(self) -> None:
        self.unique = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.first = 0.0
        self.last = 0.0
        self.histogram: dict[int, int] = {}

    def summary(self) -> dict[str, t.Any]:
        return {
            "unique": self.unique,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "first": self.first,
            "last": self.last,
            "histogram": self.histogram,
        }


class Stats:
    def __init__(self) -> None:
        self.phases: dict[int, Phase] = {}
        self.current = 0
        #: For the current phase: how many open members have a newest sequence number at or past each one,
        #: and the highest sequence number every open member has reached (the board's "low").
        self.reached: list[int] = []
        self.low = -1
        self.open = 0
        self.ready = 0
        self.closed = 0
        self.errors: dict[str, int] = {}
        self.unexpected = 0
        #: Every text frame received, of any kind: the harness waits for these to stop between phases.
        self.frames = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def follow(self, letter: int) -> None:
        """Start following phase ``letter`` on the board."""
        self.current = letter
        self.reached = []
        self.low = -1

    def advance(self, member: Member, seq: int) -> None:
        """``member``'s newest sequence number of the current phase moved up to ``seq``."""
        reached = self.reached
        if seq >= len(reached):
            reached.extend([0] * (seq + 256 - len(reached)))
        for s in range(member.max_seq + 1, seq + 1):
            reached[s] += 1
        self.raise_low()

    def raise_low(self) -> None:
        reached, low, size = self.reached, self.low, len(self.reached)
        while low + 1 < size and reached[low + 1] >= self.open:
            low += 1
        self.low = low

    def gone(self, member: Member) -> None:
        """``member`` closed: it no longer holds the low mark back."""
        self.open -= 1
        if self.reached:
            for s in range(member.newest(self.current) + 1):
                self.reached[s] -= 1
        self.raise_low()

    def phase(self, letter: int) -> Phase:
        phase = self.phases.get(letter)
        if phase is None:
            phase = self.phases[letter] = Phase()
        return phase


class Member(WSListener):
    """One member connection; counts each message it receives."""

    def __init__(self, stats: Stats, socketio: bool) -> None:
        self.stats = stats
        self.socketio = socketio
        self.transport: WSTransport | None = None
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready = False
        self.closed = False
        #: Whether it is one of the open members the low mark waits for.
        self.counted = False
        self.phase = 0
        self.max_seq = -1
        self.seen = bytearray()
        self.others: dict[int, tuple[int, bytearray]] = {}

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.socketio:
            self.joined.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            self.stats.frames += 1
            data = frame.get_payload_as_bytes()
            if self.socketio:
                if data.startswith(SIO_EVENT_PREFIX):
                    data = data[8 : 8 + PAYLOAD_SIZE]
                elif data == b"2":  # Engine.IO ping
                    transport.send(WSMsgType.TEXT, b"3")
                    return
                elif data.startswith(b"0"):  # Engine.IO open: connect to the default namespace
                    transport.send(WSMsgType.TEXT, b"40")
                    return
                elif data.startswith(b"40"):  # Socket.IO connected: join the room, with an ack
                    transport.send(WSMsgType.TEXT, b'421["join","bench"]')
                    return
                elif data.startswith(b"431"):  # the join's ack
                    if not self.joined.done():
                        self.joined.set_result(None)
                    return
                else:
                    self.stats.unexpected += 1
                    return
            self.received(data)
        elif kind == WSMsgType.CLOSE:
            if not self.closed:
                self.stats.error(f"server closed {frame.get_close_code()}")
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def switch(self, letter: int) -> None:
        """Make ``letter`` the phase whose counters ``max_seq`` and ``seen`` hold (a late message of another)."""
        self.others[self.phase] = (self.max_seq, self.seen)
        self.phase = letter
        self.max_seq, self.seen = self.others.pop(letter, (-1, bytearray()))

    def newest(self, letter: int) -> int:
        return self.max_seq if letter == self.phase else self.others.get(letter, (-1, b""))[0]

    def received(self, data: bytes) -> None:
        now = time.time()
        letter = data[0]
        stats = self.stats
        if letter == READY_BYTE:
            if not self.ready:
                self.ready = True
                stats.ready += 1
            return
        try:
            seq = int(data[1:11])
            sent = float(data[11:28])
        except ValueError:
            stats.unexpected += 1
            return
        phase = stats.phases.get(letter) or stats.phase(letter)
        if letter != self.phase:
            self.switch(letter)
        seen = self.seen
        if seq >= len(seen):
            seen.extend(bytes(seq + 256 - len(seen)))
        if seen[seq]:
            phase.duplicates += 1
            return
        seen[seq] = 1
        phase.unique += 1
        if seq < self.max_seq:
            phase.out_of_order += 1
        else:
            if letter == stats.current:
                stats.advance(self, seq)
            self.max_seq = seq
        key = bucket(now - sent)
        histogram = phase.histogram
        histogram[key] = histogram.get(key, 0) + 1
        if not phase.first:
            phase.first = now
        phase.last = now

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self.stats.closed += 1
            self.stats.error("disconnected")
            if self.counted:
                self.stats.gone(self)
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("disconnected before joining"))


async def open_members(args: argparse.Namespace, stats: Stats) -> list[Member]:
    gate = asyncio.Semaphore(args.parallel)
    socketio = args.protocol == "socketio"

    async def one(url: str) -> Member | None:
        async with gate:
            try:
                _, listener = await ws_connect(
                    lambda: Member(stats, socketio), url, websocket_handshake_timeout=60, enable_auto_pong=True
                )
                if listener is None:
                    stats.error("connect: closed during handshake")
                    return None
                member = t.cast(Member, listener)
                await asyncio.wait_for(member.joined, 60)
                return member
            except Exception as exc:
                stats.error(f"connect: {type(exc).__name__}")
                return None

    urls = args.urls
    opened = await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(args.connections)))
    return [m for m in opened if m is not None]


async def run(args: argparse.Namespace) -> None:
    stats = Stats()
    board = Board(args.board, args.slots)
    members = [m for m in await open_members(args, stats) if not m.closed]
    for m in members:
        m.counted = True
    stats.open = len(members)
    emit(event="open", open=len(members), errors=stats.errors)

    async def keep_board() -> None:
        while True:
            phase = stats.phases.get(stats.current)
            received = phase.unique + phase.duplicates if phase else 0
            board.write(args.slot, stats.open, stats.ready, received, stats.low, stats.closed, stats.frames)
            await asyncio.sleep(0.005)

    keeper = asyncio.create_task(keep_board())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cpu0 = time.process_time()
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "phase":
            stats.follow(ord(command["phase"]))
            cpu0 = time.process_time()
        elif command["cmd"] == "report":
            phase = stats.phases.get(ord(command["phase"])) or Phase()
            emit(
                event="report",
                cpu=time.process_time() - cpu0,
                ready=stats.ready,
                closed=stats.closed,
                errors=stats.errors,
                unexpected=stats.unexpected,
                **phase.summary(),
            )
        elif command["cmd"] == "quit":
            break
    keeper.cancel()
    for m in members:
        m.closed = True
        if m.transport is not None:
            m.transport.send_close(WSCloseCode.GOING_AWAY)
            m.transport.disconnect()
    await asyncio.sleep(0.5)
    board.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", type=lambda s: s.split(","), required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--protocol", choices=("websocket", "socketio"), default="websocket")
    parser.add_argument("--board", required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--deadline", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    raise_fd_limit()
    # A collection would pause every connection of this process at once and
    # read as the server's latency; the client makes few cycles.
    gc.disable()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        uvloop.run(asyncio.wait_for(run(args), args.deadline))
    except asyncio.TimeoutError:
        emit(event="failed", reason=f"client deadline of {args.deadline}s passed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
