"""Reading from the server for one websocket: the inbox and the departure watcher.

One coroutine at a time reads from the server. While the handler waits in
``receive()`` it reads directly (that loop is inline in
:class:`~flask_asyncws._websocket.Websocket`, the per-message path, and uses
the fields here). Whenever the handler is busy elsewhere for a turn of the
loop, a watcher task reads instead, so a client that leaves is noticed at once
(and the handler interrupted); the watcher keeps messages for the handler in
the inbox and hands the read back when the handler next receives. It never
stops reading (ASGI has no way to see a departure without reading what comes
before it): a client that sends more than ``max_queue_size`` bytes the handler
has not read is closed with 1008 instead.

The reader tells its websocket what it learns through two methods of the
websocket's: ``departed()`` (the client left) and ``refuse()`` (close it for
what it sent).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import sys
import threading
import typing as t
import weakref

from ._log import logger
from ._quirks import server_of
from ._state import WebsocketDisconnect

if t.TYPE_CHECKING:
    from ._types import ASGIReceive


class Owner(t.Protocol):
    """What the reader needs of its websocket."""

    @property
    def path(self) -> str: ...

    @property
    def accepted(self) -> bool: ...

    @property
    def disconnect(self) -> WebsocketDisconnect | None: ...

    @property
    def asgi_send(self) -> t.Callable[..., t.Any]: ...

    def departed(self, code: int, reason: str, *, notify: bool = True) -> None: ...

    async def refuse(self, code: int, reason: str, *, notify: bool) -> None: ...


class Reader:
    """Who reads from the server, and what was read before the handler asked.

    The per-message path reads ``inbox``, ``waiter``, ``watcher`` and ``reading``
    and sets ``reading``; everything else goes through the methods here.
    """

    __slots__ = (
        "finished",
        "held",
        "inbox",
        "loop",
        "max_queue",
        "max_size",
        "owner",
        "reading",
        "receive",
        "refused_client",
        "waiter",
        "watch_pending",
        "watch_queue",
        "watcher",
    )

    def __init__(
        self,
        owner: Owner,
        receive: ASGIReceive,
        loop: asyncio.AbstractEventLoop,
        max_size: int | None,
        max_queue: int | None,
    ) -> None:
        #: The websocket; None once reading has stopped (no cycle outlives the connection).
        self.owner: Owner | None = owner
        self.receive = receive
        self.loop = loop
        self.max_size = max_size
        self.max_queue = max_queue
        self.inbox: collections.deque[str | bytes] | None = None  # created when the watcher holds a message
        #: The memory the inbox's messages take, in bytes.
        self.held = 0
        #: The handler's receive waiting for the watcher to hand it a message.
        self.waiter: asyncio.Future[str | bytes] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.watch_pending = False
        self.watch_queue = _watch_queue(loop)
        #: The handler is reading from the server itself.
        self.reading = False
        #: Nothing more to read: the client left, or the connection is over.
        self.finished = False
        #: Closed for what the client sent (1008, 1009): it may still be sending.
        self.refused_client = False

    # -- the inbox --------------------------------------------------------

    def hold(self, data: str | bytes, *, first: bool = False) -> bool:
        """Keep a message for the handler's next receive(); returns whether the
        inbox is over ``max_queue_size`` (one message alone never is)."""
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = collections.deque()
        inbox.appendleft(data) if first else inbox.append(data)
        self.held += sys.getsizeof(data)
        return self.max_queue is not None and self.held > self.max_queue and len(inbox) > 1

    def take(self) -> str | bytes:
        data = self.inbox.popleft()  # type: ignore[union-attr]
        self.held -= sys.getsizeof(data)
        return data

    async def handed_over(self, timeout: float | None = None) -> str | bytes:
        """Wait for the watcher to hand over the next message (TimeoutError after ``timeout``)."""
        waiter: asyncio.Future[str | bytes] = self.loop.create_future()
        self.waiter = waiter
        expiry = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # A message handed over as its receive was cancelled is kept for the next one.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.hold(waiter.result(), first=True)
            raise
        finally:
            self.waiter = None
            if expiry is not None:
                expiry.cancel()

    def fail_waiter(self, exc: BaseException) -> None:
        """Make the receive waiting for a hand-over raise ``exc``."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- what a message means ----------------------------------------------

    def data_of(self, message: dict[str, t.Any]) -> str | bytes | None:
        """The data of a received message within the size limit; None for anything else."""
        if message["type"] == "websocket.receive":
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if self.max_size is None or len(data) <= self.max_size:
                return data
        return None

    async def no_data(self, message: dict[str, t.Any], *, notify: bool) -> None:
        """Act on a message without data for the handler: a departure or an oversized message.

        Without ``notify`` (the handler itself is reading) the departure is raised.
        """
        owner = self.owner
        if owner is None:
            return
        kind = message["type"]
        if kind == "websocket.receive":
            size = len(_payload(message))
            logger.info("Closing %r: incoming message of %d bytes over ASYNCWS_MAX_MESSAGE_SIZE", owner.path, size)
            await owner.refuse(1009, "message too big", notify=notify)
        elif kind == "websocket.disconnect":
            owner.departed(message.get("code", 1005), message.get("reason") or "", notify=notify)
        else:
            return
        if not notify:
            raise owner.disconnect or WebsocketDisconnect(1006)

    # -- the watcher --------------------------------------------------------

    def watch(self) -> None:
        """Start noticing the client's messages and departure."""
        owner = self.owner
        if self.watcher is None and not self.reading and not self.finished and owner is not None:
            if not owner.accepted and server_of(owner.asgi_send) == "granian":
                # A receive() granian has not answered when the handshake is refused can stay
                # pending in granian even once cancelled, and make its worker panic at
                # shutdown (pyo3: "Cannot drop pointer into Python heap without the thread
                # being attached"). Under granian the watch starts at accept, so a client
                # leaving during the handshake is noticed only then.
                return
            self.watcher = self.loop.create_task(self._watch(owner))

    def waiting(self) -> None:
        """The handler's greenlet is about to wait on the loop: unless it waits
        for the next message, start watching for the client leaving meanwhile."""
        if not self.reading:
            self.watch_soon()

    def watch_soon(self) -> None:
        """Start watching at the end of this turn of the loop, unless the handler
        is reading again by then (the usual case)."""
        if not self.watch_pending and not self.finished:
            self.watch_pending = True
            queue = self.watch_queue
            queue.append(self)
            if len(queue) == 1:  # one callback per turn for all connections
                self.loop.call_soon(_start_watchers, queue, context=_empty_context())

    def stop(self) -> None:
        """The connection is over: stop reading from the server."""
        self.finished = True
        self.owner = None
        if self.watcher is not None:
            self.watcher.cancel()

    async def _watch(self, owner: Owner) -> None:
        receive = self.receive
        try:
            while True:
                message = await receive()
                data = self.data_of(message)
                if data is None:
                    await self.no_data(message, notify=True)
                    if self.finished:
                        return
                    continue
                waiter = self.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(data)
                    return  # the handler is receiving again: it reads from here on
                if self.hold(data):
                    logger.info(
                        "Closing %r: %d bytes of unread messages, over ASYNCWS_MAX_QUEUE_SIZE", owner.path, self.held
                    )
                    self.inbox, self.held = None, 0  # not kept until the handler ends
                    await owner.refuse(1008, "too many unread messages", notify=True)
                    return
        finally:
            self.watcher = None


def _expire(waiter: asyncio.Future[t.Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _payload(message: dict[str, t.Any]) -> str | bytes:
    text: str | None = message.get("text")
    return text if text is not None else message.get("bytes") or b""


def _start_watchers(queue: list[Reader]) -> None:
    due = queue.copy()
    queue.clear()
    for reader in due:
        reader.watch_pending = False
        if not reader.reading:  # the handler is busy elsewhere
            reader.watch()


_watch_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Reader]] = weakref.WeakKeyDictionary()


def _watch_queue(loop: asyncio.AbstractEventLoop) -> list[Reader]:
    """The loop's readers waiting for :func:`_start_watchers`."""
    queue = _watch_queues.get(loop)
    if queue is None:
        queue = _watch_queues[loop] = []
    return queue


_per_thread = threading.local()


def _empty_context() -> contextvars.Context:
    """An empty context for the watcher's callbacks, so they never keep a
    connection's Flask contexts alive. One per thread is enough: callbacks
    run one at a time on a loop, and never nest."""
    context: contextvars.Context | None = getattr(_per_thread, "context", None)
    if context is None:
        context = _per_thread.context = contextvars.Context()
    return context
