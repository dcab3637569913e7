"""Groups: a name connections join, and messages published to every member.

A :class:`Hub` per app and process keeps who joined what; each joining
connection gets a :class:`~flask_asyncws._member.Member`, its groups and its
bounded outbox. A message for the members on an event loop waits in that
loop's :class:`LoopGroups` queue and is handed to them in order, a bounded
number per turn of the loop: the publisher never waits for a member, and a
member that stops reading fills its own outbox, not anyone else's.

Without a broker a publish is delivered here, to every member on any event
loop of this process. With one (:mod:`~flask_asyncws._broker`), it goes
through Redis and comes back to every worker with members, this one
included, and ``count``/``presence`` add up every worker's tallies.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import os
import struct
import threading
import time
import typing as t

from flask import Flask
from greenlet import getcurrent

from ._bridge import BridgeGreenlet, await_
from ._broker import BrokerUnavailable, tell_behind
from ._config import Settings
from ._log import logger
from ._member import Member

if t.TYPE_CHECKING:
    from ._broker import RedisBroker
    from ._websocket import Websocket

T = t.TypeVar("T")

#: Messages arriving this many seconds after they were published: the worker is behind.
BEHIND_AFTER = 1.0
#: Messages queued on one event loop, not yet delivered, over which the worker says it is falling behind.
MAX_QUEUED = 10_000
#: At most one "falling behind" warning per this many seconds.
BEHIND_WARN_EVERY = 30.0
#: Points in time, in order, across threads: when a member was seated, when a message was published.
SEQUENCE = itertools.count(1)
#: Members a message is handed to in one turn of the loop; the next turn goes on.
SENDS_PER_TURN = 1000

#: The wire form of a message: a kind byte, the publisher's clock, the payload.
_HEADER = struct.Struct(">cd")
_TEXT, _BINARY = b"t", b"b"


def encode(message: t.Any, dumps: t.Callable[[t.Any], str]) -> bytes:
    """The wire form of ``message``: ``str`` as text, ``bytes`` as binary, anything else as JSON text."""
    if isinstance(message, str):
        return _HEADER.pack(_TEXT, time.time()) + message.encode()
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _HEADER.pack(_BINARY, time.time()) + bytes(message)
    return _HEADER.pack(_TEXT, time.time()) + dumps(message).encode()


def decode(wire: bytes) -> tuple[dict[str, t.Any], int, float]:
    """The ASGI send event for a wire message, its size and when it was published.

    Raises ``ValueError`` for anything else: the payload is never evaluated.
    """
    if len(wire) < _HEADER.size:
        raise ValueError("too short")
    kind, published = _HEADER.unpack_from(wire)
    payload = wire[_HEADER.size :]
    if kind == _TEXT:
        return {"type": "websocket.send", "text": payload.decode()}, len(payload), published
    if kind == _BINARY:
        return {"type": "websocket.send", "bytes": payload}, len(payload), published
    raise ValueError(f"unknown kind {kind!r}")


class Tally:
    """A group's live connections in this process, and their presence values."""

    __slots__ = ("count", "presence")

    def __init__(self) -> None:
        self.count = 0
        self.presence: collections.Counter[str] = collections.Counter()


class LoopGroups:
    """The members on one event loop, by group, and the messages on their way to them.

    Messages are delivered in order, one after the other, at most
    ``SENDS_PER_TURN`` members per turn of the loop: a large group does not
    hold the loop for the whole fan-out. Each member's seat records the
    point in :data:`SEQUENCE` when it was seated, and each message the point
    it was published (in process) or queued here (from the broker): a member
    seated after that does not receive it.
    """

    __slots__ = ("at", "groups", "hub", "loop", "members", "queue", "scheduled")

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        #: Per group, its members here and their seats (a dict: ordered, O(1) removal).
        self.groups: dict[str, dict[Member, int]] = {}
        self.queue: collections.deque[tuple[str, dict[str, t.Any], int, float, int]] = collections.deque()
        self.scheduled = False
        #: The members of the message being delivered, and how many have it.
        self.members: list[Member] | None = None
        self.at = 0

    def seat(self, member: Member, group: str) -> None:
        self.groups.setdefault(group, {})[member] = next(SEQUENCE)

    def unseat(self, member: Member, group: str) -> None:
        room = self.groups.get(group)
        if room is not None:
            room.pop(member, None)
            if not room:
                del self.groups[group]

    def add(self, group: str, event: dict[str, t.Any], size: int, published: float, seq: int) -> None:
        queue = self.queue
        queue.append((group, event, size, published, seq))
        if len(queue) > MAX_QUEUED:  # publishers outpace this loop: its memory grows, say so
            self.hub.falling_behind(f"{len(queue)} messages wait for delivery on one event loop", None)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        budget = SENDS_PER_TURN
        queue = self.queue
        while queue and budget > 0:
            group, event, size, published, seq = queue[0]
            if self.members is None:
                room = self.groups.get(group)
                self.members = [] if room is None else [member for member, seat in room.items() if seat < seq]
                self.at = 0
                if self.hub.broker is not None:
                    self.hub.check_lag(published)
            members, start = self.members, self.at
            end = min(len(members), start + budget)
            for i in range(start, end):
                members[i].put(event, size)
            budget -= end - start
            self.at = end
            if end < len(members):
                break
            queue.popleft()
            self.members = None
        if queue:
            self.loop.call_soon(self.run)
        else:
            self.scheduled = False
            if not self.groups and self.hub.rooms.get(self.loop) is self:
                del self.hub.rooms[self.loop]  # its last member left while messages were queued


class Hub:
    """Who joined which group in this process, and delivery to them."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.outbox_limit = settings.outbox_limit
        self.max_message_size = settings.max_message_size
        self.lock = threading.Lock()
        #: The members by event loop (the server's; each test client websocket has its own).
        self.rooms: dict[asyncio.AbstractEventLoop, LoopGroups] = {}
        self.tallies: dict[str, Tally] = {}
        self.broker: RedisBroker | None = None
        if settings.broker_url is not None:
            from ._broker import RedisBroker

            self.broker = RedisBroker(self, settings)
        self._behind_logged = self._behind_signalled = self._foreign_logged = -BEHIND_WARN_EVERY
        self._foreign_dropped = 0

    @property
    def where(self) -> str:
        """The broker's URL, its password hidden, for messages ("this process" without one)."""
        return "this process" if self.broker is None else self.broker.safe_url

    def member(self, websocket: Websocket) -> Member:
        return Member(self, websocket, asyncio.get_running_loop(), self.outbox_limit)

    # -- membership (from the member's loop) --

    def add(self, member: Member, group: str, presence: str | None) -> concurrent.futures.Future[None] | None:
        """Count ``member`` in; with a broker, it receives what is published once the future is done."""
        with self.lock:
            tally = self.tallies.get(group)
            if tally is None:
                tally = self.tallies[group] = Tally()
            tally.count += 1
            if presence is not None:
                tally.presence[presence] += 1
        member.joined[group] = presence
        if self.broker is None:
            self._seat(member, group)
            return None
        done = self.broker.joined(group)
        done.add_done_callback(lambda _: self._seat_soon(member, group))
        return done

    def recount(self, member: Member, group: str, presence: str | None) -> concurrent.futures.Future[None] | None:
        """Count ``member`` under another ``presence``: still a member, in its seat (nothing queued is missed)."""
        old = member.joined[group]
        with self.lock:
            tally = self.tallies[group]
            if old is not None:
                tally.presence[old] -= 1
                if tally.presence[old] <= 0:
                    del tally.presence[old]
            if presence is not None:
                tally.presence[presence] += 1
        member.joined[group] = presence
        return None if self.broker is None else self.broker.recount(group)

    def _seat_soon(self, member: Member, group: str) -> None:
        try:
            member.loop.call_soon_threadsafe(self._seat, member, group)
        except RuntimeError:
            pass  # its loop closed: the connection has ended

    def _seat(self, member: Member, group: str) -> None:
        if group not in member.joined or member.ended:
            return  # it left (or ended) while the broker confirmed
        here = self.rooms.get(member.loop)
        if here is None:
            here = self.rooms[member.loop] = LoopGroups(self, member.loop)
        here.seat(member, group)

    def remove(self, member: Member, group: str) -> concurrent.futures.Future[None] | None:
        presence = member.joined.pop(group)
        here = self.rooms.get(member.loop)
        if here is not None:
            here.unseat(member, group)
            if not here.groups and not here.queue:
                del self.rooms[member.loop]
        with self.lock:
            tally = self.tallies[group]
            tally.count -= 1
            if presence is not None:
                tally.presence[presence] -= 1
                if tally.presence[presence] <= 0:
                    del tally.presence[presence]
            if tally.count <= 0:
                del self.tallies[group]
        return None if self.broker is None else self.broker.left(group)

    # -- publishing (from any thread) --

    def publish(self, group: str, message: t.Any) -> concurrent.futures.Future[None]:
        wire = encode(message, self.app.json.dumps)
        self._check_size(len(wire) - _HEADER.size)
        if self.broker is not None:
            return self.broker.publish(group, wire)
        event, size, published = decode(wire)
        seq = next(SEQUENCE)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, here in list(self.rooms.items()):
            if group not in here.groups:
                continue
            if loop is running:
                here.add(group, event, size, published, seq)
                continue
            try:
                loop.call_soon_threadsafe(here.add, group, event, size, published, seq)
            except RuntimeError:
                self.rooms.pop(loop, None)  # its loop closed (a test client's websocket)
        return _done(None)

    def _check_size(self, size: int) -> None:
        """A message no member could be sent is refused here, where the publisher hears of it."""
        limit = self.max_message_size
        if limit is not None and size > limit:
            raise ValueError(f"A message of {size} bytes exceeds ASYNCWS_MAX_MESSAGE_SIZE ({limit}): send less.")
        if size > self.outbox_limit:
            raise ValueError(
                f"A message of {size} bytes cannot fit a member's outbox (ASYNCWS_OUTBOX_LIMIT, {self.outbox_limit}"
                " bytes): raise the limit, or send less."
            )

    def deliver_here(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, bytes]]) -> None:
        """Queue ``batch`` for the members on ``loop`` (the running one) that are in its groups now."""
        here = self.rooms.get(loop)
        if here is None:
            return
        for group, wire in batch:
            if group not in here.groups:
                continue
            try:
                event, size, published = decode(wire)
            except (ValueError, UnicodeDecodeError):
                self._dropped_foreign(group)
                continue
            here.add(group, event, size, published, next(SEQUENCE))

    def _dropped_foreign(self, group: str) -> None:
        """Whoever can publish on Redis could fill the log: one line per BEHIND_WARN_EVERY at most."""
        self._foreign_dropped += 1
        now = time.monotonic()
        if now - self._foreign_logged >= BEHIND_WARN_EVERY:
            self._foreign_logged = now
            dropped, self._foreign_dropped = self._foreign_dropped, 0
            logger.error(
                "Dropped %d message(s) on the channels of this app's groups that this library did not publish"
                " (the last for group %r); at most one such line per %g s.",
                dropped,
                group,
                BEHIND_WARN_EVERY,
            )

    def backlog(self) -> int:
        """Messages queued on every loop and not yet delivered to all their members."""
        return sum(len(here.queue) for here in list(self.rooms.values()))

    def check_lag(self, published: float) -> None:
        lag = time.time() - published
        if lag >= BEHIND_AFTER:
            self.falling_behind(f"messages reach its members {lag:.1f} s after they were published", lag)

    def falling_behind(self, why: str, lag: float | None) -> None:
        """Say so: a log line (at most one per BEHIND_WARN_EVERY) and the :data:`broker_behind` signal."""
        now = time.monotonic()
        if now - self._behind_logged >= BEHIND_WARN_EVERY:
            self._behind_logged = now
            logger.warning(
                "This worker is falling behind its groups: %s (it is overloaded, or the hosts' clocks differ).", why
            )
        if now - self._behind_signalled >= 1.0:
            self._behind_signalled = now
            tell_behind(self.app, lag, lost=False)

    # -- counting (from any thread) --

    def local_count(self, group: str) -> int:
        with self.lock:
            tally = self.tallies.get(group)
            return 0 if tally is None else tally.count

    def local_presence(self, group: str) -> dict[str, int]:
        with self.lock:
            tally = self.tallies.get(group)
            return {} if tally is None else dict(tally.presence)

    def snapshot(self) -> dict[str, tuple[int, dict[str, int]]]:
        with self.lock:
            return {group: (tally.count, dict(tally.presence)) for group, tally in self.tallies.items()}

    def count(self, group: str) -> concurrent.futures.Future[int]:
        if self.broker is not None:
            return self.broker.count(group)
        return _done(self.local_count(group))

    def presence(self, group: str) -> concurrent.futures.Future[dict[str, int]]:
        if self.broker is not None:
            return self.broker.presence(group)
        return _done(self.local_presence(group))

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()


def _done(value: T) -> concurrent.futures.Future[T]:
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    done.set_result(value)
    return done


_hubs_lock = threading.Lock()


def hub_of(app: Flask) -> Hub:
    """The app's hub in this process (a forked worker makes its own)."""
    key = "asyncws.groups"
    found = app.extensions.get(key)
    if found is not None and found[0] == os.getpid():
        return t.cast(Hub, found[1])
    with _hubs_lock:
        found = app.extensions.get(key)
        if found is None or found[0] != os.getpid():
            found = app.extensions[key] = (os.getpid(), Hub(app, Settings.from_config(app.config)))
    return t.cast(Hub, found[1])


def new_member(app: Flask, websocket: Websocket) -> Member:
    """The side of groups of a connection to ``app``: made at its first join."""
    return hub_of(app).member(websocket)


def close_hub(app: Flask) -> None:
    """Stop the app's broker in this process, if it has one: the server is shutting down."""
    found = app.extensions.pop("asyncws.groups", None)
    if found is not None and found[0] == os.getpid():
        found[1].close()


def outcome(future: concurrent.futures.Future[T], wait: float, where: str) -> t.Any:
    """The result for a sync caller, waited for; an awaitable for async code.

    Sync handlers wait in their greenlet, threads (HTTP views, thread-mode
    handlers, scripts) block; async code gets something to ``await``, while
    the work has started already.
    """
    if isinstance(getcurrent(), BridgeGreenlet):
        if future.done():
            return future.result()
        return await_(_within(asyncio.wrap_future(future), wait, where))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            raise BrokerUnavailable(f"The broker at {where} did not answer within {wait:g} s.") from None
    return Outcome(future, wait, where)


class Outcome(t.Generic[T]):
    """What async code awaits for a publish, count or presence already under way.

    Not a coroutine: a publish need not be awaited, and then Python has no
    "never awaited" warning to give. Nothing of the loop's is made unless it
    is awaited.
    """

    __slots__ = ("future", "wait", "where")

    def __init__(self, future: concurrent.futures.Future[T], wait: float, where: str) -> None:
        self.future = future
        self.wait = wait
        self.where = where

    def __await__(self) -> t.Generator[t.Any, None, T]:
        return _within(asyncio.wrap_future(self.future), self.wait, self.where).__await__()


async def _within(future: asyncio.Future[T], wait: float, where: str) -> T:
    try:
        return await asyncio.wait_for(future, wait)
    except (TimeoutError, asyncio.TimeoutError):
        raise BrokerUnavailable(f"The broker at {where} did not answer within {wait:g} s.") from None
