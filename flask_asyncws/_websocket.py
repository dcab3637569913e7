"""The websocket object a handler talks to.

One :class:`Websocket` per connection. Its I/O methods have two forms behind one
name: called from a sync handler (a greenlet on the loop) they block and return
the result; called from async code they return an awaitable. Misusing a form
raises an error that says what to write instead, so a message is never silently
lost.

The handshake's request attributes (headers, args, cookies, …) come from the
Flask request built for the connection, with the ``ws``/``wss`` scheme.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import re
import sys
import threading
import types
import typing as t
import weakref

from flask import Request
from greenlet import getcurrent
from werkzeug.datastructures import Headers
from werkzeug.sansio.utils import get_current_url

from ._bridge import BridgeGreenlet, finish_in, hand_over, wait_in
from ._log import logger
from ._portal import current_portal
from ._quirks import sendable_close_code, server_of

if t.TYPE_CHECKING:
    from werkzeug.datastructures import Authorization, ImmutableMultiDict, LanguageAccept, MultiDict
    from werkzeug.routing import Rule

    from ._types import ASGIReceive, ASGISend, Scope

T = t.TypeVar("T")

#: Sends in a row that did not let the event loop turn before one that does.
_YIELD_EVERY = 16

_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


class WebsocketDisconnect(Exception):
    """The connection is closed: the client left, or the handler closed it.

    ``code`` and ``reason`` are what the server reported. Hypercorn reports
    1006 for every client-initiated close (the client's own code is lost).
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"websocket closed with code {self.code}" + (f": {self.reason}" if self.reason else "")


class _FromRequest:
    """A websocket attribute read from the handshake's Flask request."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, ws: Websocket | None, owner: type) -> t.Any:
        if ws is None:
            return self
        return getattr(ws.request, self.name)


class Websocket:
    """The handshake's request data plus the connection's messaging.

    Sync handlers call ``websocket.receive()``; async handlers ``await`` it.
    """

    __slots__ = (
        "__weakref__",
        "_accepted",
        "_asgi_receive",
        "_asgi_send",
        "_closed",
        "_disconnect",
        "_inbox",
        "_loop",
        "_max_queue",
        "_max_size",
        "_handed",
        "_held",
        "_home",
        "_misuse",
        "_reading",
        "_stopped",
        "refused_client",
        "_unyielded",
        "_thread",
        "_waiter",
        "_watch_pending",
        "_watch_queue",
        "_watcher",
        "on_disconnect",
        "take_interrupt",
        "request",
        "scope",
    )

    def __init__(
        self,
        request: Request,
        scope: Scope,
        receive: ASGIReceive,
        send: ASGISend,
        *,
        max_message_size: int | None = None,
        max_queue_size: int | None = None,
    ) -> None:
        self.request = request
        self.scope = scope
        self._asgi_receive = receive
        self._asgi_send = send
        self._loop = asyncio.get_running_loop()
        self._thread = _thread_ident()
        #: The greenlet running the loop: async code calls from there.
        self._home = getcurrent()
        self._inbox: collections.deque[str | bytes] | None = None  # created when the watcher holds a message
        #: The memory the inbox's messages take, in bytes.
        self._held = 0
        self._waiter: asyncio.Future[str | bytes] | None = None
        self._accepted = False
        self._closed: tuple[int, str] | None = None
        self._disconnect: tuple[int, str] | None = None
        self._misuse: str | None = None
        #: The coroutine last handed to async code, to notice a forgotten await.
        self._handed: types.CoroutineType[t.Any, t.Any, t.Any] | None = None
        self._max_size = max_message_size
        self._max_queue = max_queue_size
        self._watcher: asyncio.Task[None] | None = None
        self._watch_pending = False
        self._watch_queue = _watch_queue(self._loop)
        self._reading = False
        self._stopped = False
        #: Closed for what the client sent (1008, 1009): it may still be sending.
        self.refused_client = False
        self._unyielded = 0
        #: Called when the client goes away while no receive() is waiting.
        self.on_disconnect: t.Callable[[], None] | None = None
        #: The departure an interruption of the task by on_disconnect stands for, once (None: not one).
        self.take_interrupt: t.Callable[[], BaseException | None] | None = None

    # -- handshake data -------------------------------------------------

    headers: Headers = _FromRequest()  # type: ignore[assignment]
    args: MultiDict[str, str] = _FromRequest()  # type: ignore[assignment]
    cookies: ImmutableMultiDict[str, str] = _FromRequest()  # type: ignore[assignment]
    authorization: Authorization | None = _FromRequest()  # type: ignore[assignment]
    path: str = _FromRequest()  # type: ignore[assignment]
    full_path: str = _FromRequest()  # type: ignore[assignment]
    query_string: bytes = _FromRequest()  # type: ignore[assignment]
    root_path: str = _FromRequest()  # type: ignore[assignment]
    script_root: str = _FromRequest()  # type: ignore[assignment]
    host: str = _FromRequest()  # type: ignore[assignment]
    server: tuple[str, int | None] | None = _FromRequest()  # type: ignore[assignment]
    remote_addr: str | None = _FromRequest()  # type: ignore[assignment]
    access_route: list[str] = _FromRequest()  # type: ignore[assignment]
    origin: str | None = _FromRequest()  # type: ignore[assignment]
    user_agent: t.Any = _FromRequest()
    accept_languages: LanguageAccept = _FromRequest()  # type: ignore[assignment]
    method: str = _FromRequest()  # type: ignore[assignment]
    environ: dict[str, t.Any] = _FromRequest()  # type: ignore[assignment]
    url_rule: Rule | None = _FromRequest()  # type: ignore[assignment]
    view_args: dict[str, t.Any] | None = _FromRequest()  # type: ignore[assignment]
    routing_exception: Exception | None = _FromRequest()  # type: ignore[assignment]
    endpoint: str | None = _FromRequest()  # type: ignore[assignment]
    blueprint: str | None = _FromRequest()  # type: ignore[assignment]
    blueprints: list[str] = _FromRequest()  # type: ignore[assignment]

    @property
    def scheme(self) -> str:
        """``ws`` or ``wss``."""
        return "wss" if self.request.is_secure else "ws"

    @property
    def is_secure(self) -> bool:
        return bool(self.request.is_secure)

    @property
    def url(self) -> str:
        r = self.request
        return get_current_url(self.scheme, r.host, r.root_path, r.path, r.query_string)

    @property
    def base_url(self) -> str:
        r = self.request
        return get_current_url(self.scheme, r.host, r.root_path, r.path)

    @property
    def host_url(self) -> str:
        return get_current_url(self.scheme, self.request.host)

    @property
    def root_url(self) -> str:
        """Where the app is, with the websocket's scheme: ``ws://example.com/app/``."""
        r = self.request
        return get_current_url(self.scheme, r.host, r.root_path)

    url_root = root_url

    @property
    def http_version(self) -> str:
        """``1.1``, or ``2`` for a websocket over HTTP/2 (RFC 8441)."""
        return str(self.scope.get("http_version") or "1.1")

    @property
    def requested_subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    @property
    def accepted(self) -> bool:
        """Whether the handshake is complete; until then the app can still refuse with HTTP."""
        return self._accepted

    @property
    def closed(self) -> bool:
        """Whether the handler closed the connection or the client left."""
        return self._closed is not None or self._disconnect is not None

    def __repr__(self) -> str:
        return f"<Websocket {self.url!r}>"

    # -- messaging ------------------------------------------------------

    def accept(self, headers: t.Any = None, subprotocol: str | None = None) -> t.Any:
        """Complete the handshake, optionally with headers and a subprotocol.

        Idempotent; ``receive()`` and ``send()`` accept implicitly.
        """
        if subprotocol is not None and subprotocol not in self.requested_subprotocols:
            raise ValueError(
                f"Cannot accept subprotocol {subprotocol!r}: the client offered"
                f" {self.requested_subprotocols!r}. Choose one of those, or None."
            )
        header_list = _header_list(headers)
        return self._dispatch("accept", self._accept(header_list, subprotocol))

    def receive(self) -> t.Any:
        """The next message from the client, ``str`` or ``bytes`` as sent."""
        current = getcurrent()
        if current is self._home:
            coro = self._receive()
            # _hand()'s usual case, inline: the last one handed out has finished.
            if (self._handed is None or self._handed.cr_frame is None) and self._misuse is None:
                self._handed = coro  # type: ignore[assignment]
                return coro
            return self._hand(coro)
        if isinstance(current, BridgeGreenlet) and self._accepted and self._misuse is None:
            # The sync fast path: no coroutine layers between the handler and the
            # server. The next message is usually not there yet, so the read is
            # handed to the bridge's driver rather than tried here first.
            if self._inbox:
                return self._take()
            if (
                self._watcher is None
                and self._waiter is None
                and not self._reading
                and self._closed is None
                and self._disconnect is None
            ):
                # No watcher is needed when this returns: the bridge starts one
                # if the handler next waits on something else (see _waiting()).
                self._reading = True
                self._unyielded = 0
                try:
                    while True:
                        message = hand_over(current, self._asgi_receive())
                        data = self._data_of(message)
                        if data is not None:
                            return data
                        wait_in(current, self._no_data(message, notify=False))
                finally:
                    self._reading = False
        return self._dispatch("receive", self._receive())

    def send(self, data: str | bytes) -> t.Any:
        """Send ``str`` as a text message or ``bytes`` as a binary one."""
        if type(data) is not str and type(data) is not bytes:
            data = _exact(data)
        if self._max_size is not None and len(data) > self._max_size:
            raise ValueError(
                f"Outgoing message of {len(data)} bytes exceeds ASYNCWS_MAX_MESSAGE_SIZE ({self._max_size})."
            )
        current = getcurrent()
        if current is self._home:
            coro = self._send(data)
            if (self._handed is None or self._handed.cr_frame is None) and self._misuse is None:
                self._handed = coro  # type: ignore[assignment]
                return coro
            return self._hand(coro)
        if (
            isinstance(current, BridgeGreenlet)
            and self._accepted
            and self._misuse is None
            and self._closed is None
            and self._disconnect is None
            and self._unyielded < _YIELD_EVERY - 1
        ):
            self._unyielded += 1
            try:
                return finish_in(current, self._asgi_send(_send_event(data)))
            except OSError as exc:
                raise self._gone() from exc
        return self._dispatch("send", self._send(data))

    def receive_json(self) -> t.Any:
        """The next message decoded with ``app.json``.

        Invalid JSON raises :class:`ValueError` (``json.JSONDecodeError``).
        """
        if isinstance(getcurrent(), BridgeGreenlet):
            return self._decode(self._dispatch("receive_json", self._receive()))
        return self._dispatch("receive_json", self._receive_json())

    def send_json(self, obj: t.Any) -> t.Any:
        """Send ``obj`` encoded with ``app.json`` as a text message."""
        return self.send(self._json.dumps(obj))

    def close(self, code: int = 1000, reason: str = "") -> t.Any:
        """Close the connection. Before accept the client gets HTTP 403.

        Closing again, or after the client left, does nothing.
        """
        if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(
                f"{code} is not a close code an endpoint may send; use 1000, 1001, 1008, 1011 or 3000-4999."
            )
        if len(reason.encode()) > 123:
            raise ValueError("A close reason is at most 123 bytes of UTF-8.")
        return self._dispatch("close", self._close(code, reason))

    # -- the two call forms --------------------------------------------

    def _dispatch(self, name: str, coro: t.Coroutine[t.Any, t.Any, T]) -> t.Any:
        """Hand ``coro`` to an async caller to await, or run it for a sync one."""
        current = getcurrent()
        if not isinstance(current, BridgeGreenlet) and threading.get_ident() == self._thread:
            return self._hand(coro)
        if self._misuse is not None:
            coro.close()
            self._raise_misuse()
        if isinstance(current, BridgeGreenlet):
            return wait_in(current, coro)
        portal = current_portal()
        if portal is not None and portal.owner is self:
            return portal.run(coro, name)  # a sync handler in thread mode
        coro.close()
        raise RuntimeError(
            f"websocket.{name}() was called from another thread. Call it from the"
            " handler; a blocking function run through run_sync() should return"
            " its result to the handler, which then sends it."
        )

    def _hand(self, coro: t.Coroutine[t.Any, t.Any, T]) -> t.Coroutine[t.Any, t.Any, T]:
        """Give ``coro`` to async code to await.

        A call from async code without ``await`` (``websocket.send(x)``) drops
        the coroutine unrun. The next call notices that the one before was
        dropped, and so does the handler's end, so the mistake is reported
        instead of a message silently not being sent.
        """
        if self._misuse is None:
            # No local name for the last one: the check counts its references.
            if self._handed is None or self._handed.cr_frame is None:
                self._handed = coro  # type: ignore[assignment]
                return coro
            self._check_awaited()
            if self._misuse is None:
                self._handed = coro  # type: ignore[assignment]
                return coro
        coro.close()
        self._raise_misuse()

    def _check_awaited(self) -> None:
        """Report the last call from async code if it was never awaited."""
        if self._handed is not None and _dropped_unrun(self):
            coro, self._handed = self._handed, None
            coro.close()  # never run: no "never awaited" warning on top of our report
            self._report_unawaited(coro.__name__.lstrip("_"))

    def _report_unawaited(self, name: str) -> None:
        """Record the mistake; it is raised at the next call or at the handler's
        end, and logged there once like any unhandled error."""
        if self._misuse is None:
            self._misuse = (
                f"websocket.{name}() was called without 'await' in async code, so it did"
                f" not run. Write 'await websocket.{name}(...)'. Sync helper functions"
                " that use the websocket must be called from a sync handler."
            )
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(RuntimeError(self._misuse))

    def _raise_misuse(self) -> t.NoReturn:
        raise RuntimeError(self._misuse)

    @property
    def _json(self) -> t.Any:
        return self.request.json_module

    def _decode(self, data: str | bytes) -> t.Any:
        return self._json.loads(data)

    # -- coroutines run on the loop ------------------------------------

    async def _accept(self, headers: list[tuple[bytes, bytes]], subprotocol: str | None) -> None:
        if self._accepted:
            return
        if self._closed is not None:
            raise RuntimeError("Cannot accept: the handler already closed this websocket.")
        if self._disconnect is not None:
            raise WebsocketDisconnect(*self._disconnect)
        if headers and _spec_version(self.scope) < (2, 1):
            # Logged, not warnings.warn(): daphne sends Python's warnings to Twisted's log, which
            # it discards at its default verbosity.
            logger.warning(
                "Accept headers %s for %r were not sent: the ASGI server does not support them (ASGI spec < 2.1).",
                ", ".join(repr(name.decode("latin-1")) for name, _ in headers),
                self.path,
            )
            headers = []
        self._accepted = True
        await self._send_to_server({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
        if server_of(self._asgi_send) == "granian":
            self._watch_soon()  # not started before accept: see watch()

    def _hold(self, data: str | bytes, *, first: bool = False) -> bool:
        """Keep a message for the handler's next receive(); returns whether the
        inbox is over ``max_queue_size`` (one message alone never is)."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = collections.deque()
        inbox.appendleft(data) if first else inbox.append(data)
        self._held += sys.getsizeof(data)
        return self._max_queue is not None and self._held > self._max_queue and len(inbox) > 1

    def _take(self) -> str | bytes:
        data = self._inbox.popleft()  # type: ignore[union-attr]
        self._held -= sys.getsizeof(data)
        return data

    async def _receive(self) -> str | bytes:
        if not self._accepted:
            await self._accept([], None)
        if self._inbox:
            return self._take()
        if self._disconnect is not None:
            raise WebsocketDisconnect(*self._disconnect)
        if self._closed is not None:
            raise WebsocketDisconnect(*self._closed)
        if self._waiter is not None or self._reading:
            raise RuntimeError("websocket.receive() is already waiting in another task; receive from one task only.")
        if self._watcher is not None:
            # The watcher is reading for us: it hands the next message over.
            waiter: asyncio.Future[str | bytes] = self._loop.create_future()
            self._waiter = waiter
            try:
                return await waiter
            except asyncio.CancelledError:
                self._keep_handed(waiter)
                raise
            finally:
                self._waiter = None
        # Nobody is reading: read from the server directly, no hand-off.
        self._reading = True
        self._unyielded = 0
        try:
            while True:
                message = await self._asgi_receive()
                if message["type"] == "websocket.receive":  # _data_of(), inline on this path
                    data: str | bytes | None = message.get("text")
                    if data is None:
                        data = message.get("bytes") or b""
                    if self._max_size is None or len(data) <= self._max_size:
                        return data
                await self._no_data(message, notify=False)
        except asyncio.CancelledError:
            # The app closed the connection as this read waited (a shutdown): the
            # handler learns it as it learns of the client leaving.
            departure = None if self._disconnect is None or self.take_interrupt is None else self.take_interrupt()
            if departure is None:
                raise
            try:
                raise departure from None
            finally:
                departure = None  # no cycle through this frame: the connection is freed on return
        finally:
            self._reading = False
            self._watch_soon()

    async def receive_within(self, timeout: float) -> str | bytes | None:
        """The next message, or None if none comes within ``timeout`` seconds (Flask-Sock's receive).

        A watcher reads meanwhile, so the wait is only for its hand-over, which
        the timeout ends without losing a message; and like any receive, the
        wait returns the messages held before the client left, then raises.
        """
        if not self._accepted:
            await self._accept([], None)
        self.watch()
        if self._watcher is None or self._waiter is not None or self._inbox:
            return await self._receive()  # held messages, the departure, or a read of its own
        waiter: asyncio.Future[str | bytes] = self._loop.create_future()
        self._waiter = waiter
        expiry = self._loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            self._keep_handed(waiter)
            raise
        finally:
            self._waiter = None
            expiry.cancel()

    def _keep_handed(self, waiter: asyncio.Future[str | bytes]) -> None:
        """A message handed over as its receive was cancelled is kept for the next one."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._hold(waiter.result(), first=True)

    async def _receive_json(self) -> t.Any:
        return self._decode(await self._receive())

    async def _send(self, data: str | bytes) -> None:
        if not self._accepted:
            await self._accept([], None)
        if self._disconnect is not None:
            raise WebsocketDisconnect(*self._disconnect)
        if self._closed is not None:
            raise RuntimeError("Cannot send: the handler already closed this websocket.")
        try:
            if type(data) is str:
                await self._asgi_send({"type": "websocket.send", "text": data})
            else:
                await self._asgi_send({"type": "websocket.send", "bytes": data})
        except OSError as exc:
            raise self._gone() from exc
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            # Once the client is gone hypercorn's send returns without ever
            # suspending: let the loop turn, or a send loop never learns.
            self._unyielded = 0
            await asyncio.sleep(0)

    async def _close(self, code: int, reason: str) -> None:
        if self._closed is not None or self._disconnect is not None:
            return
        self._closed = (code, reason)
        message = self._close_event(code, reason if _spec_version(self.scope) >= (2, 3) else "")
        await self._send_to_server(message)

    def _close_event(self, code: int, reason: str) -> dict[str, t.Any]:
        """The ``websocket.close`` event for ``code``, in a code the server can send."""
        sendable = sendable_close_code(self._asgi_send, code)
        if sendable != code:
            logger.debug(
                "Closing %r with %d instead of %d (reason %r): the server sends no other codes below 3000.",
                self.path,
                sendable,
                code,
                reason,
            )
        message: dict[str, t.Any] = {"type": "websocket.close", "code": sendable}
        if reason:
            message["reason"] = reason
        return message

    async def _send_to_server(self, message: dict[str, t.Any]) -> None:
        try:
            await self._asgi_send(message)
        except OSError as exc:
            raise self._gone() from exc

    def _gone(self) -> WebsocketDisconnect:
        """ASGI 2.4: the server raises an OSError from send once the client is gone.

        The caller raises the result, so nobody is interrupted: cancelling the
        connection's task now would leave that cancellation pending after the
        handler has ended, for the server's next await.
        """
        self._disconnected(1006, "", notify=False)
        return WebsocketDisconnect(1006)

    # -- the reading side -------------------------------------------------
    #
    # One coroutine at a time reads from the server. While the handler waits in
    # receive() it reads directly. Whenever the handler is busy elsewhere for a
    # turn of the loop, a watcher task reads instead, so a client that leaves is
    # noticed at once (and the handler interrupted); the watcher keeps messages
    # for the handler and hands the read back when the handler next receives.
    # It never stops reading (ASGI has no way to see a departure without reading
    # what comes before it): a client that sends more than max_queue_size bytes
    # the handler has not read is closed with 1008 instead.

    def watch(self) -> None:
        """Start noticing the client's messages and departure."""
        if self._watcher is None and not self._reading and self._disconnect is None and not self._stopped:
            if not self._accepted and server_of(self._asgi_send) == "granian":
                # A receive() granian has not answered when the handshake is refused can stay
                # pending in granian even once cancelled, and make its worker panic at
                # shutdown (pyo3: "Cannot drop pointer into Python heap without the thread
                # being attached"). Under granian the watch starts at accept (_accept()), so
                # a client leaving during the handshake is noticed only then.
                return
            self._watcher = self._loop.create_task(self._watch())

    def stop_watching(self) -> None:
        """The connection is over: stop reading from the server."""
        self._stopped = True
        if self._watcher is not None:
            self._watcher.cancel()

    @property
    def watcher(self) -> asyncio.Task[None] | None:
        return self._watcher

    def _waiting(self) -> None:
        """The handler's greenlet is about to wait on the loop: unless it waits
        for the next message, start watching for the client leaving meanwhile."""
        if not self._reading:
            self._watch_soon()

    def _watch_soon(self) -> None:
        """Start watching at the end of this turn of the loop, unless the handler
        is reading again by then (the usual case)."""
        if not self._watch_pending and self._disconnect is None and not self._stopped:
            self._watch_pending = True
            queue = self._watch_queue
            queue.append(self)
            if len(queue) == 1:  # one callback per turn for all connections
                self._loop.call_soon(_start_watchers, queue, context=_empty_context())

    async def _watch(self) -> None:
        receive = self._asgi_receive
        try:
            while True:
                message = await receive()
                data = self._data_of(message)
                if data is None:
                    await self._no_data(message, notify=True)
                    if self._disconnect is not None:
                        return
                    continue
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(data)
                    return  # the handler is receiving again: it reads from here on
                if self._hold(data):
                    logger.info(
                        "Closing %r: %d bytes of unread messages, over ASYNCWS_MAX_QUEUE_SIZE", self.path, self._held
                    )
                    self._inbox, self._held = None, 0  # not kept until the handler ends
                    await self._refuse(1008, "too many unread messages", notify=True)
                    return
        finally:
            self._watcher = None

    def _data_of(self, message: dict[str, t.Any]) -> str | bytes | None:
        """The data of a received message within the size limit; None for anything else."""
        if message["type"] == "websocket.receive":
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if self._max_size is None or len(data) <= self._max_size:
                return data
        return None

    async def _no_data(self, message: dict[str, t.Any], *, notify: bool) -> None:
        """Act on a message without data for the handler: a departure or an oversized message.

        Without ``notify`` (the handler itself is reading) the departure is raised.
        """
        kind = message["type"]
        if kind == "websocket.receive":
            await self._refuse_oversized(len(_payload(message)), notify=notify)
        elif kind == "websocket.disconnect":
            self._disconnected(message.get("code", 1005), message.get("reason") or "", notify=notify)
        else:
            return
        if not notify:
            raise WebsocketDisconnect(*self._disconnect)  # type: ignore[misc]

    async def _refuse_oversized(self, size: int, *, notify: bool) -> None:
        logger.info("Closing %r: incoming message of %d bytes over ASYNCWS_MAX_MESSAGE_SIZE", self.path, size)
        await self._refuse(1009, "message too big", notify=notify)

    async def _refuse(self, code: int, reason: str, *, notify: bool) -> None:
        """Close the connection for what the client sent, and treat it as gone."""
        if self._closed is None and self._accepted:
            self._closed = (code, reason)
            try:
                await self._asgi_send(self._close_event(code, reason))
            except OSError:
                code, reason = 1006, ""  # it left first
            else:
                self.refused_client = True
        self._disconnected(code, reason, notify=notify)

    def _disconnected(self, code: int, reason: str, *, notify: bool = True) -> None:
        if self._disconnect is not None:
            return
        self._disconnect = (code, reason)
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_exception(WebsocketDisconnect(code, reason))
            # A waiter already done has a message to process first; the next
            # receive() raises.
        elif notify and self.on_disconnect is not None:
            self.on_disconnect()

    @property
    def disconnect(self) -> WebsocketDisconnect | None:
        """The client's departure, once known."""
        return None if self._disconnect is None else WebsocketDisconnect(*self._disconnect)


def _expire(waiter: asyncio.Future[t.Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _refcount_of_handed(ws: t.Any) -> int:
    coro = ws._handed
    return sys.getrefcount(coro)


def _unshared_refcount() -> int:
    """What :func:`_refcount_of_handed` reports for a coroutine held by
    nothing else (interpreters count borrowed references differently)."""

    class Holder:
        __slots__ = ("_handed",)
        _handed: t.Coroutine[t.Any, t.Any, None]

    async def probe() -> None:
        pass

    holder = Holder()
    holder._handed = probe()
    try:
        return _refcount_of_handed(holder)
    finally:
        holder._handed.close()


_UNSHARED = _unshared_refcount()


def _dropped_unrun(ws: Websocket) -> bool:
    """Whether the coroutine ``ws`` last handed out was never started and
    nothing but ``ws`` holds it: its caller dropped it without ``await``.
    One that is held (by a task not yet started, say) may still run."""
    return (
        inspect.getcoroutinestate(ws._handed) == inspect.CORO_CREATED  # type: ignore[arg-type]
        and _refcount_of_handed(ws) == _UNSHARED
    )


def _payload(message: dict[str, t.Any]) -> str | bytes:
    text: str | None = message.get("text")
    return text if text is not None else message.get("bytes") or b""


def _exact(data: t.Any) -> str | bytes:
    """``data`` as exactly ``str`` or ``bytes``, which is what servers take."""
    if isinstance(data, str):
        return str(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        f"websocket.send() takes str or bytes, not {type(data).__name__}; use send_json() for other objects."
    )


def _send_event(data: str | bytes) -> dict[str, t.Any]:
    if type(data) is str:
        return {"type": "websocket.send", "text": data}
    return {"type": "websocket.send", "bytes": data}


def _start_watchers(queue: list[Websocket]) -> None:
    due = queue.copy()
    queue.clear()
    for ws in due:
        ws._watch_pending = False
        if not ws._reading:  # the handler is busy elsewhere
            ws.watch()


_watch_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Websocket]] = weakref.WeakKeyDictionary()


def _watch_queue(loop: asyncio.AbstractEventLoop) -> list[Websocket]:
    """The loop's connections waiting for :func:`_start_watchers`."""
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


def _thread_ident() -> int:
    """This thread's ident as one shared int object (not a new one per connection)."""
    ident: int | None = getattr(_per_thread, "ident", None)
    if ident is None:
        ident = _per_thread.ident = threading.get_ident()
    return ident


def _header_list(headers: t.Any) -> list[tuple[bytes, bytes]]:
    """``accept()``'s headers as the ASGI byte pairs servers send: from a
    mapping (``Headers`` too) or (name, value) pairs of ``str`` or ``bytes``."""
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    if isinstance(headers, (str, bytes)) or not isinstance(items, t.Iterable):
        raise TypeError(f"accept() takes headers as a mapping or (name, value) pairs, not {headers!r}.")
    result = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"accept() takes headers as (name, value) pairs, not {item!r}.")
        name = _header_bytes(item[0], item).lower()
        value = _header_bytes(item[1], item)
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                f"Invalid header name for accept(): {item!r}; a name is letters, digits and !#$%&'*+-.^_`|~."
            )
        if not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"Invalid header value for accept(): {item!r}; a value has no line breaks or control characters."
            )
        if name == b"sec-websocket-protocol":
            raise ValueError("Pass the subprotocol as accept(subprotocol=...), not as a header.")
        result.append((name, value))
    return result


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # RFC 9110 field names (lowered)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def _header_bytes(part: t.Any, item: t.Any) -> bytes:
    if isinstance(part, bytes):
        return bytes(part)
    if isinstance(part, str):
        try:
            return part.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"Header {item!r} for accept() is not latin-1; encode it (or pass bytes).") from None
    raise TypeError(f"accept() takes header names and values as str or bytes, not {type(part).__name__}: {item!r}.")


def _spec_version(scope: Scope) -> tuple[int, ...]:
    version = (scope.get("asgi") or {}).get("spec_version") or "2.0"
    try:
        return tuple(int(part) for part in str(version).split(".")[:2])
    except ValueError:
        return (2, 0)
