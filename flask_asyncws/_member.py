"""A connection's side of groups: what it joined, and its outbox.

The :class:`~flask_asyncws._groups.Hub` makes one :class:`Member` per
connection at its first join and hands it the messages for it
(:meth:`Member.put`); the connection's end calls :meth:`Member.leave_all`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import typing as t

from ._bridge import step
from ._log import logger
from ._quirks import server_of

if t.TYPE_CHECKING:
    from ._websocket import Websocket

#: The close of a member whose outbox overflowed.
OVERFLOW = (1008, "too slow: over ASYNCWS_OUTBOX_LIMIT")
#: How long the close frame of an overflowed member may wait for its client to read.
CLOSE_WAIT = 2.0
#: Sends in a row by a writer before it lets the loop turn.
YIELD_EVERY = 64


class GroupsError(RuntimeError):
    """Groups used where they cannot work (a connection that already ended)."""


class Membership(t.Protocol):
    """What a member needs of the hub: being counted in and out of a group."""

    def add(self, member: Member, group: str, presence: str | None) -> concurrent.futures.Future[None] | None: ...
    def recount(self, member: Member, group: str, presence: str | None) -> concurrent.futures.Future[None] | None: ...
    def remove(self, member: Member, group: str) -> concurrent.futures.Future[None] | None: ...


class Member:
    """One connection's side of groups: what it joined, and its outbox.

    A message for a member with nothing waiting is sent at once, in the
    deliverer's turn of the loop: the server's send usually finishes without
    suspending (granian's always runs in a task). One that suspends (the
    client reads slowly), and whatever arrives meanwhile, wait in the outbox
    for a writer task, which ends once the outbox is empty. The outbox holds
    at most ``ASYNCWS_OUTBOX_LIMIT`` bytes: over it, the member is closed with
    1008 and leaves its groups.
    """

    __slots__ = (
        "closing",
        "ended",
        "hub",
        "inline",
        "joined",
        "limit",
        "loop",
        "outbox",
        "queued",
        "started",
        "websocket",
        "writer",
    )

    def __init__(self, hub: Membership, websocket: Websocket, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.hub = hub
        self.websocket = websocket
        self.loop = loop
        self.limit = limit
        #: Each joined group, with the presence value given to join().
        self.joined: dict[str, str | None] = {}
        self.outbox: collections.deque[tuple[dict[str, t.Any], int]] = collections.deque()
        #: Bytes in the outbox and in the send in progress.
        self.queued = 0
        #: Whether the handshake is accepted, so messages may be sent (:meth:`start`).
        self.started = False
        self.writer: asyncio.Task[None] | None = None
        #: Closing the connection for falling behind (kept: a task nobody holds may vanish).
        self.closing: asyncio.Task[None] | None = None
        self.ended = False
        #: Whether a send may start outside a task: not granian's, whose native send needs one.
        self.inline = server_of(websocket.asgi_send) != "granian"

    def start(self) -> None:
        if not self.started and not self.ended:
            self.started = True
            if self.outbox:
                self.writer = self.loop.create_task(self._write(None, 0))

    # -- joining and leaving (on the member's loop; Websocket.join/leave checked the arguments) --

    async def join(self, group: str, presence: str | None) -> None:
        if self.ended:
            raise GroupsError("This connection has ended; it cannot join a group.")
        if group in self.joined:
            done = None if self.joined[group] == presence else self.hub.recount(self, group, presence)
        else:
            done = self.hub.add(self, group, presence)
        if done is not None:
            await asyncio.wrap_future(done)

    async def leave(self, group: str) -> None:
        if group not in self.joined:
            return
        done = self.hub.remove(self, group)
        if done is not None:
            await asyncio.wrap_future(done)

    def leave_all(self) -> concurrent.futures.Future[None] | None:
        """End every membership and stop sending: the connection has ended."""
        self.ended = True
        writer, self.writer = self.writer, None
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        self.outbox.clear()
        self.queued = 0
        done = None
        for group in list(self.joined):
            done = self.hub.remove(self, group)
        return done

    # -- delivery (on the member's loop) --

    def put(self, event: dict[str, t.Any], size: int) -> None:
        if self.ended:
            return
        if self.writer is None and self.started:
            if self.websocket.closed:
                return
            try:
                sending = self.websocket.asgi_send(event)
                rest = step(sending) if self.inline else sending
            except Exception as exc:
                self._failed(exc)
                return
            if rest is not None:
                self.queued += size
                self.writer = self.loop.create_task(self._write(rest, size))
            return
        self.queued += size
        if self.queued > self.limit:
            self._overflow()
            return
        self.outbox.append((event, size))

    async def _write(self, sending: t.Awaitable[None] | None, size: int) -> None:
        outbox = self.outbox
        ws = self.websocket
        sent = 0
        try:
            if sending is not None:
                await sending
                self.queued -= size
            while outbox:
                event, size = outbox.popleft()
                if ws.closed:
                    break
                await ws.asgi_send(event)
                self.queued -= size
                sent += 1
                if sent % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass  # the connection ended
        except Exception as exc:
            self._failed(exc)
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None
                if ws.closed:
                    outbox.clear()
                    self.queued = 0

    def _failed(self, exc: Exception) -> None:
        """The server's send failed: the client is gone (OSError), or the server could not send. Either way
        nothing more reaches this member: it leaves its groups now, not counted as one that receives."""
        if not isinstance(exc, OSError):
            logger.warning(
                "Sending a group message to the websocket at %r failed; it leaves its groups.",
                self.websocket.path,
                exc_info=exc,
            )
        self.leave_all()

    def _overflow(self) -> None:
        ws = self.websocket
        logger.warning(
            "Closed the websocket at %r with %d: over %d bytes of group messages were waiting for it"
            " (ASYNCWS_OUTBOX_LIMIT); it left its %d groups %s.",
            ws.path,
            OVERFLOW[0],
            self.limit,
            len(self.joined),
            sorted(self.joined)[:10],
        )
        self.leave_all()
        self.closing = self.loop.create_task(self._close_slow())

    async def _close_slow(self) -> None:
        ws = self.websocket
        try:
            await asyncio.wait_for(ws.refuse(*OVERFLOW, notify=True), CLOSE_WAIT)
        except (TimeoutError, asyncio.TimeoutError, OSError):
            pass
        except Exception:
            logger.warning("Closing the websocket at %r failed.", ws.path, exc_info=True)
        finally:
            ws.departed(*OVERFLOW)  # the handler hears of it however the close went
