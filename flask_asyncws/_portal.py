"""A thread's way to the event loop: the one place a thread waits on the loop.

Sync code that runs in a thread of its own (a sync HTTP view in the worker
pool, a sync websocket handler in thread mode, a Flask-Sock ``ws`` used from a
background thread) reaches the server's loop through a :class:`Portal`:
``portal.run(awaitable)`` awaits it on the loop and blocks the thread until it
is done. A thread bound to a portal (``with portal:``) is found by
:func:`current_portal`, which is how ``await_`` and ``run_sync`` tell such a
thread from other code. The other direction, a thread handing its outcome back
to a future of the loop, is :func:`settle`.

The loop can stop a thread waiting here in two ways (see :class:`Portal`):
:meth:`Portal.interrupt` and :meth:`Portal.depart`. A portal nobody stops is
a plain ``run_coroutine_threadsafe(...).result()`` that gives up once the loop
is closed, instead of blocking its thread for ever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import types
import typing as t

T = t.TypeVar("T")

#: How often a thread waiting on the loop checks that the loop still runs.
POLL_SECONDS = 1.0

#: Websocket calls a departure leaves to finish: they return the messages
#: received before it, then raise it themselves.
_RECEIVE_CALLS = frozenset({"receive", "receive_json"})

_bound = threading.local()


class LoopClosed(RuntimeError):
    """The loop closed while a thread waited on it: nothing will answer."""


class Portal:
    """A thread's way to ``loop``, which the loop can interrupt.

    :meth:`run` awaits on the loop and waits. ``owner`` is what the thread
    works for (the websocket of a thread-mode handler), for callers that
    must tell their own thread from others.

    Two ways for the loop to stop the thread. :meth:`interrupt` (the server
    shutting down) makes the wait in progress raise, and every wait after it.
    :meth:`depart` (the client left) does what a greenlet handler would see:
    a wait on anything but the websocket raises, the one in progress or else
    the next one; websocket calls learn of the departure from the websocket
    itself, so a receive still returns the messages that came before it.
    """

    __slots__ = ("_departure", "_interrupt", "_lock", "_pending", "_pending_call", "_stopped_by", "loop", "owner")

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: object = None) -> None:
        self.loop = loop
        self.owner = owner
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[t.Any] | None = None
        self._pending_call: str | None = None
        self._interrupt: BaseException | None = None
        self._departure: BaseException | None = None
        self._stopped_by: BaseException | None = None

    def __enter__(self) -> Portal:
        """Bind the portal to this thread (see :func:`current_portal`) until the block ends."""
        _bound.portal = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        _bound.portal = None

    def run(self, awaitable: t.Awaitable[T], call: str | None = None) -> T:
        """Await ``awaitable`` on the loop and wait for it; ``call`` names the websocket method it is, if any.

        Raises :class:`LoopClosed` if the loop closes first.
        """
        with self._lock:
            stop = self._interrupt
            if stop is None and self._departure is not None:
                stop, self._departure = self._departure, None
                if call is not None:
                    stop = None  # the websocket reports the departure itself
            if stop is not None:
                discard(awaitable)
                raise stop
            coro: t.Coroutine[t.Any, t.Any, T] = (
                awaitable if isinstance(awaitable, types.CoroutineType) else _as_coroutine(awaitable)
            )
            # Sent under the lock: a departure noticed from here on finds it pending.
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending, self._pending_call = future, call
        try:
            while True:
                try:
                    return future.result(POLL_SECONDS)
                except concurrent.futures.TimeoutError:
                    if future.done():
                        raise  # the awaitable's own
                    if self.loop.is_closed():
                        future.cancel()
                        raise LoopClosed("The event loop closed while this thread waited on it.") from None
        except concurrent.futures.CancelledError:
            with self._lock:  # the loop sets it as it cancels
                stopped_by = self._stopped_by
            if stopped_by is not None:
                raise stopped_by from None
            raise
        finally:
            with self._lock:
                self._pending = self._pending_call = self._stopped_by = None

    def interrupt(self, exc: BaseException) -> None:
        """Make the wait in progress raise ``exc``, and every wait after it."""
        with self._lock:
            self._interrupt = exc
            self._stop_pending(exc)

    def depart(self, exc: BaseException) -> None:
        """The client left: the wait in progress, or else the next, raises ``exc`` unless it is a websocket call."""
        with self._lock:
            pending = self._pending
            if pending is not None and not pending.done() and self._pending_call in _RECEIVE_CALLS:
                return  # a receive in progress returns what came before the departure, or raises it
            if not self._stop_pending(exc):
                self._departure = exc  # for the next wait

    def _stop_pending(self, exc: BaseException) -> bool:
        """Make the wait in progress raise ``exc``; False if there is none (the
        thread is between waits, or its last one has ended but not returned)."""
        pending = self._pending
        if pending is None or not pending.cancel():
            return False
        self._stopped_by = exc
        return True


def current_portal() -> Portal | None:
    """The portal bound to this thread (``with portal:``), if any."""
    return getattr(_bound, "portal", None)


def settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], ok: bool, value: t.Any) -> None:
    """From a thread: resolve ``future`` of ``loop`` with ``value`` (``ok``) or fail it with ``value``.

    A future already done is left alone; a closed loop has nobody waiting,
    so there it does nothing.
    """
    try:
        loop.call_soon_threadsafe(_resolve if ok else _fail, future, value)
    except RuntimeError:  # the loop is closed
        pass


def _resolve(future: asyncio.Future[t.Any], result: t.Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[t.Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


async def _as_coroutine(awaitable: t.Awaitable[T]) -> T:
    return await awaitable


def discard(awaitable: t.Awaitable[t.Any]) -> None:
    """Close ``awaitable`` that will not be awaited (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
