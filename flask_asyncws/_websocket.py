"""The websocket object a handler talks to.

One :class:`Websocket` per connection: the handshake's request data, and the
calls. Its I/O methods have two forms behind one name: called from a sync
handler (a greenlet on the loop) they block and return the result; called from
async code they return an awaitable. Misusing a form raises an error that says
what to write instead, so a message is never silently lost.

The protocol state is a :class:`~flask_asyncws._state.State`; the
:class:`~flask_asyncws._reader.Reader` reads from the server, the
:class:`~flask_asyncws._misuse.MisuseGuard` notices a forgotten ``await``.
``receive()`` and ``send()`` read the fields they need directly: each call
more there is paid on every message.
"""

from __future__ import annotations

import asyncio
import threading
import typing as t

from greenlet import getcurrent

from . import _handshake as handshake
from ._bridge import BridgeGreenlet, finish_in, hand_over, thread_ident, wait_in
from ._handshake import Handshake, check_close, check_subprotocol, send_event, spec_version
from ._log import logger
from ._misuse import MisuseGuard
from ._portal import current_portal
from ._quirks import close_event, server_of
from ._reader import Reader
from ._state import ACCEPTED, CLOSED, CONNECTING, DISCONNECTED, NEXT, IllegalTransition, State, WebsocketDisconnect

if t.TYPE_CHECKING:
    from flask import Request

    from ._types import ASGIReceive, ASGISend, Scope

__all__ = ["Websocket", "WebsocketDisconnect"]

T = t.TypeVar("T")

#: Sends in a row that did not let the event loop turn before one that does.
_YIELD_EVERY = 16


class Websocket(Handshake):
    """The handshake's request data plus the connection's messaging.

    Sync handlers call ``websocket.receive()``; async handlers ``await`` it.

    The names not in the API docs (``reader``, ``asgi_send``, ``shut()``,
    ``refuse()``, ``departed()``, ``check_awaited()``) are the package's own,
    for the connection's life.
    """

    __slots__ = (
        "__weakref__",
        "_accepted",
        "_asgi_receive",
        "_closed",
        "_disconnect",
        "_guard",
        "_home",
        "_loop",
        "_max_size",
        "_state",
        "_thread",
        "_unyielded",
        "asgi_send",
        "member",
        "new_member",
        "on_disconnect",
        "reader",
        "request",
        "scope",
        "take_interrupt",
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
        #: The server's send (package-internal: the refusal and shutdown paths use it).
        self.asgi_send = send
        self._loop = asyncio.get_running_loop()
        self._thread = thread_ident()
        #: The greenlet running the loop: async code calls from there.
        self._home = getcurrent()
        self._state = CONNECTING
        #: Whether the handshake was accepted (it stays True once closed).
        self._accepted = False
        #: The app's close, and the client's departure: (code, reason) once known.
        self._closed: tuple[int, str] | None = None
        self._disconnect: tuple[int, str] | None = None
        self._max_size = max_message_size
        self._unyielded = 0
        self._guard = MisuseGuard()
        self.reader = Reader(self, receive, self._loop, max_message_size, max_queue_size)
        #: Called when the client goes away while no receive() is waiting.
        self.on_disconnect: t.Callable[[], None] | None = None
        #: The connection's side of groups, made by ``new_member(self)`` at its first join.
        self.member: t.Any = None
        self.new_member: t.Callable[[Websocket], t.Any] | None = None
        #: The departure an interruption of the task by on_disconnect stands for, once (None: not one).
        self.take_interrupt: t.Callable[[], BaseException | None] | None = None

    @property
    def accepted(self) -> bool:
        """Whether the handshake is complete; until then the app can still refuse with HTTP."""
        return self._accepted

    @property
    def closed(self) -> bool:
        """Whether the handler closed the connection or the client left."""
        return self._state is CLOSED or self._state is DISCONNECTED

    @property
    def close_code(self) -> int | None:
        """The code the connection ended with: the app's close, else the client's departure; None before."""
        end = self._closed or self._disconnect
        return None if end is None else end[0]

    @property
    def disconnect(self) -> WebsocketDisconnect | None:
        """The client's departure, once known."""
        return None if self._disconnect is None else WebsocketDisconnect(*self._disconnect)

    # -- messaging ------------------------------------------------------

    def accept(self, headers: t.Any = None, subprotocol: str | None = None) -> t.Any:
        """Complete the handshake, optionally with headers and a subprotocol.

        Idempotent; ``receive()`` and ``send()`` accept implicitly.
        """
        check_subprotocol(subprotocol, self.requested_subprotocols)
        return self._run_call("accept", self._accept(handshake.header_list(headers), subprotocol))

    def receive(self) -> t.Any:
        """The next message from the client, ``str`` or ``bytes`` as sent."""
        current = getcurrent()
        if current is self._home:
            coro = self._receive()
            # _hand()'s usual case, inline: the last one handed out has finished.
            guard = self._guard
            if (guard.handed is None or guard.handed.cr_frame is None) and guard.error is None:
                guard.handed = coro  # type: ignore[assignment]
                return coro
            return self._hand(coro)
        if isinstance(current, BridgeGreenlet) and self._state is ACCEPTED and self._guard.error is None:
            # The sync fast path: no coroutine layers between the handler and the
            # server. The next message is usually not there yet, so the read is
            # handed to the bridge's driver rather than tried here first.
            reader = self.reader
            if reader.inbox:
                return reader.take()
            if reader.watcher is None and reader.waiter is None and not reader.reading:
                # No watcher is needed when this returns: the bridge starts one
                # if the handler next waits on something else (Reader.waiting()).
                reader.reading = True
                self._unyielded = 0
                try:
                    while True:
                        message = hand_over(current, self._asgi_receive())
                        data = reader.data_of(message)
                        if data is not None:
                            return data
                        wait_in(current, reader.no_data(message, notify=False))
                finally:
                    reader.reading = False
        return self._run_call("receive", self._receive())

    def send(self, data: str | bytes) -> t.Any:
        """Send ``str`` as a text message or ``bytes`` as a binary one."""
        if type(data) is not str and type(data) is not bytes:
            data = handshake.exact(data)
        if self._max_size is not None and len(data) > self._max_size:
            raise ValueError(
                f"Outgoing message of {len(data)} bytes exceeds ASYNCWS_MAX_MESSAGE_SIZE ({self._max_size})."
            )
        current = getcurrent()
        if current is self._home:
            coro = self._send(data)
            guard = self._guard
            if (guard.handed is None or guard.handed.cr_frame is None) and guard.error is None:
                guard.handed = coro  # type: ignore[assignment]
                return coro
            return self._hand(coro)
        if (
            isinstance(current, BridgeGreenlet)
            and self._state is ACCEPTED
            and self._guard.error is None
            and self._unyielded < _YIELD_EVERY - 1
        ):
            self._unyielded += 1
            try:
                return finish_in(current, self.asgi_send(send_event(data)))
            except OSError as exc:
                raise self._gone() from exc
        return self._run_call("send", self._send(data))

    def receive_json(self) -> t.Any:
        """The next message decoded with ``app.json``.

        Invalid JSON raises :class:`ValueError` (``json.JSONDecodeError``).
        """
        if isinstance(getcurrent(), BridgeGreenlet):
            return self._decode(self._run_call("receive_json", self._receive()))
        return self._run_call("receive_json", self._receive_json())

    def send_json(self, obj: t.Any) -> t.Any:
        """Send ``obj`` encoded with ``app.json`` as a text message."""
        return self.send(self._json.dumps(obj))

    def close(self, code: int = 1000, reason: str = "") -> t.Any:
        """Close the connection. Before accept the client gets HTTP 403.

        Closing again, or after the client left, does nothing.
        """
        check_close(code, reason)
        return self._run_call("close", self.shut(code, reason))

    async def receive_within(self, timeout: float) -> str | bytes | None:
        """The next message, or None if none comes within ``timeout`` seconds (Flask-Sock's receive).

        A watcher reads meanwhile, so the wait is only for its hand-over, which
        the timeout ends without losing a message; and like any receive, the
        wait returns the messages held before the client left, then raises.
        """
        if not self._accepted:
            await self._accept([], None)
        reader = self.reader
        reader.watch()
        if reader.watcher is None or reader.waiter is not None or reader.inbox:
            return await self._receive()  # held messages, the departure, or a read of its own
        try:
            return await reader.handed_over(timeout)
        except TimeoutError:
            return None

    # -- groups (the connection's Member does the work: see flask_asyncws._groups) --

    def join(self, group: str, presence: str | None = None) -> t.Any:
        """Receive what is published to ``group``, until :meth:`leave` or the connection ends.

        ``presence`` (a user name or id) is counted in ``asyncws.presence(group)``.
        Accepts the handshake if the handler has not, once a member: a client
        that sees the connection open misses nothing published after.
        """
        handshake.check_group(group, presence)
        return self._run_call("join", self._join(group, presence))

    def leave(self, group: str) -> t.Any:
        """Stop receiving what is published to ``group`` (nothing if not a member)."""
        handshake.check_group(group)
        return self._run_call("leave", self._leave(group))

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection has joined."""
        return frozenset(() if self.member is None else self.member.joined)

    async def _join(self, group: str, presence: str | None) -> None:
        if self.closed or self.new_member is None:
            raise self._cannot("join")
        if self.member is None:
            self.member = self.new_member(self)
        await self.member.join(group, presence)
        # A member before the handshake completes: the client hears of nothing published after it connected.
        if not self._accepted:
            await self._accept([], None)
        self.member.start()

    async def _leave(self, group: str) -> None:
        if self.member is not None:
            await self.member.leave(group)

    # -- the two call forms --------------------------------------------

    def _run_call(self, name: str, coro: t.Coroutine[t.Any, t.Any, T]) -> t.Any:
        """Hand ``coro`` to an async caller to await, or run it for a sync one."""
        current = getcurrent()
        if not isinstance(current, BridgeGreenlet) and threading.get_ident() == self._thread:
            return self._hand(coro)
        if self._guard.error is not None:
            coro.close()
            self._guard.raise_error()
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
        """Give ``coro`` to async code to await, noticing first whether the one
        handed out before was dropped unrun (see :mod:`~flask_asyncws._misuse`)."""
        guard = self._guard
        if guard.error is None:
            self._notice_dropped()
        return guard.hand(coro)

    def _notice_dropped(self) -> None:
        noticed = self._guard.check()
        if noticed is not None:
            self.reader.fail_waiter(RuntimeError(noticed))

    def check_awaited(self) -> None:
        """Raise the misuse if a call from async code was dropped without ``await``
        (the handler's end asks: a dropped call is not a clean end)."""
        guard = self._guard
        if guard.handed is not None and guard.error is None:
            self._notice_dropped()
        if guard.error is not None:
            guard.raise_error()

    @property
    def _json(self) -> t.Any:
        return self.request.json_module

    def _decode(self, data: str | bytes) -> t.Any:
        return self._json.loads(data)

    # -- the protocol state ----------------------------------------------

    def _enter(self, state: State) -> None:
        if state not in NEXT[self._state]:
            raise IllegalTransition(self._state, state)
        self._state = state

    def _cannot(self, call: str) -> BaseException:
        """The error of ``call`` in a closed state (CLOSED or DISCONNECTED). An accept after the
        handler's own close hears of that close; otherwise the client's departure comes first; a
        receive after the handler's close raises its code, a send or accept says the handler closed it."""
        if call == "accept" and self._closed is not None:
            return RuntimeError("Cannot accept: the handler already closed this websocket.")
        if self._disconnect is not None:
            return WebsocketDisconnect(*self._disconnect)
        if call == "receive":
            return WebsocketDisconnect(*self._closed)  # type: ignore[misc]
        return RuntimeError(f"Cannot {call}: the handler already closed this websocket.")

    async def _accept(self, headers: list[tuple[bytes, bytes]], subprotocol: str | None) -> None:
        if self._state is not CONNECTING:
            if self._state is ACCEPTED:
                return
            raise self._cannot("accept")
        if headers and spec_version(self.scope) < (2, 1):
            # Logged, not warnings.warn(): daphne sends Python's warnings to Twisted's log, which
            # it discards at its default verbosity.
            logger.warning(
                "Accept headers %s for %r were not sent: the ASGI server does not support them (ASGI spec < 2.1).",
                ", ".join(repr(name.decode("latin-1")) for name, _ in headers),
                self.path,
            )
            headers = []
        self._accepted = True
        self._enter(ACCEPTED)
        await self._send_to_server({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
        if server_of(self.asgi_send) == "granian":
            self.reader.watch_soon()  # not started before accept: see Reader.watch()

    async def _receive(self) -> str | bytes:
        if not self._accepted:
            await self._accept([], None)
        reader = self.reader
        if reader.inbox:
            return reader.take()
        if self._state is not ACCEPTED:
            raise self._cannot("receive")
        if reader.waiter is not None or reader.reading:
            raise RuntimeError("websocket.receive() is already waiting in another task; receive from one task only.")
        if reader.watcher is not None:
            return await reader.handed_over()  # the watcher is reading for us: it hands the next message over
        # Nobody is reading: read from the server directly, no hand-off.
        reader.reading = True
        self._unyielded = 0
        try:
            while True:
                message = await self._asgi_receive()
                if message["type"] == "websocket.receive":  # Reader.data_of(), inline on this path
                    data = message.get("text")
                    if data is None:
                        data = message.get("bytes") or b""
                    if self._max_size is None or len(data) <= self._max_size:
                        return data
                await reader.no_data(message, notify=False)
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
            reader.reading = False
            reader.watch_soon()

    async def _receive_json(self) -> t.Any:
        return self._decode(await self._receive())

    async def _send(self, data: str | bytes) -> None:
        if self._state is not ACCEPTED:
            if not self._accepted:
                await self._accept([], None)
            if self._state is not ACCEPTED:
                raise self._cannot("send")
        try:
            if type(data) is str:
                await self.asgi_send({"type": "websocket.send", "text": data})
            else:
                await self.asgi_send({"type": "websocket.send", "bytes": data})
        except OSError as exc:
            raise self._gone() from exc
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            # Once the client is gone hypercorn's send returns without ever
            # suspending: let the loop turn, or a send loop never learns.
            self._unyielded = 0
            await asyncio.sleep(0)

    # -- the package's ways to end a connection --------------------------

    async def shut(self, code: int, reason: str) -> None:
        """Close with ``code`` (unchecked); nothing if closed already. ``close()`` checks, then calls this."""
        if self._state is CLOSED or self._state is DISCONNECTED:
            return
        self._closed = (code, reason)
        self._enter(CLOSED)
        message = close_event(self.asgi_send, code, reason if spec_version(self.scope) >= (2, 3) else "", self.path)
        await self._send_to_server(message)

    async def refuse(self, code: int, reason: str, *, notify: bool) -> None:
        """Close the connection for what the client sent (or at shutdown), and treat it as gone."""
        if self._state is ACCEPTED:
            self._closed = (code, reason)
            self._enter(CLOSED)
            try:
                await self.asgi_send(close_event(self.asgi_send, code, reason, self.path))
            except OSError:
                code, reason = 1006, ""  # it left first
            else:
                self.reader.refused_client = True
        self.departed(code, reason, notify=notify)

    def detach(self) -> None:
        """The connection is over: hold no greenlet of the loop's thread, which may end first (the test
        client's do); greenlet crashed collecting a dead thread's. Async calls then take :meth:`_run_call`."""
        self._home = None

    def departed(self, code: int, reason: str, *, notify: bool = True) -> None:
        """The client is gone (or treated as gone): every call raises this from now on.

        A receive waiting for the watcher's hand-over raises it at once; else,
        with ``notify``, ``on_disconnect`` interrupts the handler.
        """
        if self._disconnect is not None:
            return
        self._disconnect = (code, reason)
        self._enter(DISCONNECTED)
        reader = self.reader
        reader.finished = True
        waiter = reader.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_exception(WebsocketDisconnect(code, reason))
            # A waiter already done has a message to process first; the next
            # receive() raises.
        elif notify and self.on_disconnect is not None:
            self.on_disconnect()

    async def _send_to_server(self, message: dict[str, t.Any]) -> None:
        try:
            await self.asgi_send(message)
        except OSError as exc:
            raise self._gone() from exc

    def _gone(self) -> WebsocketDisconnect:
        """ASGI 2.4: the server raises an OSError from send once the client is gone. The caller raises
        the result, so nobody is interrupted: cancelling the connection's task now would leave that
        cancellation pending after the handler has ended, for the server's next await."""
        self.departed(1006, "", notify=False)
        return WebsocketDisconnect(1006)
