"""The load client, run as its own process (``python -m benchmarks.client``).

It uses picows on uvloop: frames are handled in plain callbacks, so the client
costs far less CPU per message than any server under test. It writes JSON
lines on stdout: ``{"event": "start"}`` when the measured window opens,
``{"event": "stage", ...}`` while holding idle connections (then it waits for
a line on stdin), and a final ``{"event": "result", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import socket
import sys
import time
import typing as t

import uvloop
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

PAYLOAD = b"x" * 64


def raise_fd_limit() -> int:
    """Lift the open-file limit as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (1 << 20, 65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
            return target
        except (ValueError, OSError):
            continue
    return soft


def emit(**fields: t.Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


class Stats:
    """Round trips and errors, counted only inside the measured window."""

    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        self.count = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.error_kinds: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def summary(self, seconds: float) -> dict[str, t.Any]:
        lat = sorted(self.latencies)
        return {
            "count": self.count,
            "rate": self.count / seconds if seconds else 0.0,
            "p50_ms": None if not lat else percentile(lat, 50) * 1e3,  # type: ignore[operator]
            "p99_ms": None if not lat else percentile(lat, 99) * 1e3,  # type: ignore[operator]
            "errors": self.errors,
            "error_kinds": self.error_kinds,
        }


class EchoListener(WSListener):
    """Sends a message and waits for the echo; repeats at once (``repeat``) or on a timer (``paced``).

    Nothing is sent on connecting: the echo run starts every connection once
    all are open, so a server slow to accept under load is measured at the
    full count rather than starved while opening.
    """

    def __init__(self, stats: Stats, repeat: bool) -> None:
        self.stats = stats
        self.repeat = repeat
        self.transport: WSTransport | None = None
        self.sent_at = 0.0
        self.reply: asyncio.Future[None] | None = None
        self.closing = False
        #: Seconds between echoes in paced mode (0: not paced).
        self.paced = 0.0
        self.next_send: asyncio.TimerHandle | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.send(WSMsgType.TEXT, PAYLOAD)  # type: ignore[union-attr]

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            stats = self.stats
            if self.repeat and stats.measuring:
                stats.count += 1
                stats.latencies.append(time.perf_counter() - self.sent_at)
            if frame.get_payload_as_bytes() != PAYLOAD:
                stats.error("wrong echo")
            if self.reply is not None and not self.reply.done():
                self.reply.set_result(None)
            if self.paced:
                if stats.measuring:
                    stats.count += 1
                    stats.latencies.append(time.perf_counter() - self.sent_at)
                self.sent_at = 0.0
                if not stats.stopping:
                    self.next_send = asyncio.get_running_loop().call_later(self.paced, self.send)
            elif self.repeat and not stats.stopping:
                self.send()
        elif kind == WSMsgType.CLOSE:
            if not self.closing and not self.stats.stopping:
                self.stats.error(f"server closed {frame.get_close_code()}")
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closing and not self.stats.stopping:
            self.stats.error("disconnected")
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("disconnected"))

    async def echo_once(self) -> None:
        self.reply = asyncio.get_running_loop().create_future()
        self.send()
        await self.reply

    async def close(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.send_close(WSCloseCode.OK)
            try:
                await asyncio.wait_for(transport.wait_disconnected(), 5)
            except asyncio.TimeoutError:
                transport.disconnect(graceful=False)
            except WSError as exc:  # the server's side of the closing handshake was malformed
                self.stats.error(f"close: {type(exc).__name__}")
                transport.disconnect(graceful=False)


class Connector:
    """Opens connections, spreading them over 127.0.0.x source addresses so a
    large count does not exhaust one address's ephemeral ports."""

    def __init__(self, args: argparse.Namespace, stats: Stats) -> None:
        self.url = args.url
        self.stats = stats
        self.headers = [("Cookie", args.cookie)] if args.cookie else None
        self.sources = [f"127.0.0.{i}" for i in range(1, args.source_addresses + 1)]
        self.next_source = 0
        self.host, port = args.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        self.port = int(port)

    async def _socket(self, _url: t.Any) -> socket.socket:
        source = self.sources[self.next_source % len(self.sources)]
        self.next_source += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.sources) > 1:
            sock.bind((source, 0))
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def open(self, repeat: bool) -> EchoListener | None:
        try:
            _, listener = await ws_connect(
                lambda: EchoListener(self.stats, repeat),
                self.url,
                extra_headers=self.headers,
                socket_factory=self._socket,
                websocket_handshake_timeout=30,
            )
        except Exception as exc:
            self.stats.error(f"connect: {type(exc).__name__}")
            return None
        if listener is None:  # picows: the connection closed before the handshake's response
            self.stats.error("connect: closed during handshake")
            return None
        return t.cast(EchoListener, listener)

    async def open_many(self, count: int, repeat: bool, parallel: int = 100) -> list[EchoListener]:
        gate = asyncio.Semaphore(parallel)

        async def one() -> EchoListener | None:
            async with gate:
                return await self.open(repeat)

        opened = await asyncio.gather(*(one() for _ in range(count)))
        return [c for c in opened if c is not None]


async def close_all(conns: list[EchoListener], stats: Stats, result: dict[str, t.Any]) -> None:
    """Close every connection; errors while closing count with the run's."""
    await asyncio.gather(*(c.close() for c in conns))
    result["errors"] = stats.errors
    result["error_kinds"] = stats.error_kinds


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(stats: Stats, seconds: float, min_count: int = 0) -> dict[str, t.Any]:
    """Open the window, wait, close it; the client's own CPU share included.

    The window stays open past ``seconds`` until ``min_count`` round trips
    were counted or an error seen (the deadline bounds it), so a short smoke run on a busy
    machine still measures work instead of an empty window.
    """
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    stats.measuring = True
    emit(event="start")
    await asyncio.sleep(seconds)
    while stats.count < min_count and not stats.errors:
        await asyncio.sleep(0.05)
    stats.measuring = False
    elapsed = time.perf_counter() - wall0
    result = stats.summary(elapsed)
    result["seconds"] = elapsed
    result["client_cpu"] = (cpu_seconds() - cpu0) / elapsed
    emit(event="end")
    return result


async def echo(args: argparse.Namespace) -> dict[str, t.Any]:
    stats = Stats()
    connector = Connector(args, stats)
    conns = await connector.open_many(args.connections, repeat=True)
    result: dict[str, t.Any] = {"opened": len(conns)}
    for conn in conns:
        conn.send()
    if args.warmup:
        await asyncio.sleep(args.warmup)
    result.update(await measure(stats, args.duration, args.min_count))
    stats.stopping = True
    await close_all(conns, stats, result)
    return result


async def handshake(args: argparse.Namespace) -> dict[str, t.Any]:
    stats = Stats()
    connector = Connector(args, stats)

    async def worker() -> None:
        while not stats.stopping:
            started = time.perf_counter()
            conn = await connector.open(repeat=False)
            if conn is None:
                await asyncio.sleep(0.01)
                continue
            try:
                await asyncio.wait_for(conn.echo_once(), 10)
            except Exception as exc:
                stats.error(f"echo: {type(exc).__name__}")
            else:
                await conn.close()
                if stats.measuring:
                    stats.count += 1
                    stats.latencies.append(time.perf_counter() - started)

    workers = [asyncio.ensure_future(worker()) for _ in range(args.connections)]
    await asyncio.sleep(args.warmup)
    result = await measure(stats, args.duration, args.min_count)
    stats.stopping = True
    await asyncio.wait(workers, timeout=15)
    return result


async def idle(args: argparse.Namespace) -> dict[str, t.Any]:
    """Open connections in stages, echo once on each, hold them idle."""
    stats = Stats()
    connector = Connector(args, stats)
    conns: list[EchoListener] = []
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    for target in args.stages:
        batch = await connector.open_many(target - len(conns), repeat=False, parallel=200)
        for i in range(0, len(batch), 500):
            replies = await asyncio.gather(
                *(asyncio.wait_for(conn.echo_once(), 30) for conn in batch[i : i + 500]), return_exceptions=True
            )
            for reply in replies:
                if isinstance(reply, BaseException):
                    stats.error(f"echo: {type(reply).__name__}")
        conns.extend(batch)
        emit(event="stage", open=len(conns), target=target, errors=stats.errors, error_kinds=dict(stats.error_kinds))
        try:
            await asyncio.wait_for(reader.readline(), args.hold)
        except asyncio.TimeoutError:
            pass
    stats.stopping = True
    result = {"opened": len(conns)}
    await close_all(conns, stats, result)
    return result


async def scale(args: argparse.Namespace) -> dict[str, t.Any]:
    """Many connections, each echoing once a second.

    Pacing runs in callbacks (a timer per connection, no task per echo) so the
    client stays cheap at 10,000 connections; an echo unanswered for 10 s is
    an error.
    """
    stats = Stats()
    connector = Connector(args, stats)
    conns = await connector.open_many(args.connections, repeat=False, parallel=200)
    result: dict[str, t.Any] = {"opened": len(conns)}
    loop = asyncio.get_running_loop()
    for conn in conns:
        conn.paced = 1.0
        conn.next_send = loop.call_later(random.random(), conn.send)
    await asyncio.sleep(args.warmup)
    window = asyncio.ensure_future(measure(stats, args.duration, args.min_count))
    while not window.done():
        await asyncio.wait((window,), timeout=1.0)
        now = time.perf_counter()
        for conn in conns:
            if conn.sent_at and now - conn.sent_at > 10:
                stats.error("echo: no reply within 10s")
                conn.sent_at = 0.0
    result.update(window.result())
    stats.stopping = True
    for conn in conns:
        if conn.next_send is not None:
            conn.next_send.cancel()
    await asyncio.sleep(0.5)  # replies in flight
    await close_all(conns, stats, result)
    return result


MODES = {"echo": echo, "handshake": handshake, "idle": idle, "scale": scale}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--min-count", type=int, default=0, help="keep measuring until this many round trips")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--stages", type=lambda s: [int(x) for x in s.split(",")], default=[100])
    parser.add_argument("--hold", type=float, default=60.0, help="idle mode: longest wait for the runner per stage")
    parser.add_argument("--source-addresses", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=300.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    raise_fd_limit()
    # The client's own garbage collection would pause every connection at once
    # and show up as server latency; it allocates little that forms cycles.
    gc.disable()

    async def bounded() -> dict[str, t.Any]:
        return await asyncio.wait_for(MODES[args.mode](args), args.deadline)

    try:
        result = uvloop.run(bounded())
    except asyncio.TimeoutError:
        emit(event="result", failed=f"client deadline of {args.deadline}s passed")
        raise SystemExit(1) from None
    emit(event="result", **result)


if __name__ == "__main__":
    main()
