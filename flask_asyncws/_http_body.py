"""An HTTP request's body as the server delivers it, and the client leaving after it.

The body is received on the loop before the app runs (:meth:`RequestBody.read_request`):
kept in memory up to :data:`SPOOL_MEMORY`, in a temporary file beyond, so a
worker thread never waits on a client's network and an ``async def`` view
reads the body as sync code does. Only a body the app must not receive whole
(over ``MAX_CONTENT_LENGTH``, or cut short) is read further as the app reads
``wsgi.input`` (:class:`BodyInput`).
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import typing as t

from werkzeug.exceptions import ClientDisconnected, RequestTimeout

if t.TYPE_CHECKING:
    from ._types import ASGIReceive

#: Request body bytes read and discarded while the final response message is
#: being sent. Hypercorn only finishes that send once the app has made room in
#: its receive queue, so a response sent without reading the body (a 413, an
#: early error, a redirect) must read on; past this much, the server is left to
#: close the connection.
DRAIN_LIMIT = 1 << 20

#: Request body bytes held in memory while the body is received; a larger
#: body is written on to a temporary file, so an upload of any size costs at
#: most this much memory per request.
SPOOL_MEMORY = 1 << 20

#: Read size for a spooled body.
READ_SIZE = 1 << 16


class RequestBody:
    """What the server's ``receive()`` gives one request: its body, then the client leaving.

    Everything here runs on the loop. ``done`` once the whole body is
    received; ``disconnected`` once the client is known to have gone (also
    set by the response side when a send fails).
    """

    __slots__ = ("receive", "loop", "timeout", "done", "timed_out", "disconnected", "spool", "unread", "watcher")

    def __init__(self, receive: ASGIReceive, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self.receive = receive
        self.loop = loop
        self.timeout = timeout  # ASYNCWS_BODY_TIMEOUT
        self.done = False
        self.timed_out = False  # the client stopped sending its body
        self.disconnected = False
        self.spool: t.IO[bytes] | None = None  # the temporary file holding the body
        self.unread: int | None = None  # the declared body, when none of it is received
        self.watcher: asyncio.Task[None] | None = None

    async def read_request(self, environ: dict[str, t.Any], limit: int | None, more: t.Callable[[], bytes]) -> bool:
        """Receive the request body into ``environ["wsgi.input"]`` before the app runs.

        Up to :data:`SPOOL_MEMORY` is kept in memory, the rest in a temporary
        file. A body larger than ``limit`` (``MAX_CONTENT_LENGTH``) is not
        received, or only until it passes the limit, so Werkzeug answers 413
        at once. When no part of it arrives for ``timeout`` seconds, reading
        past what arrived raises 408. ``more`` is how the app's side waits for
        the rest, if any is left. Returns False if the client left before the
        request started.
        """
        if limit is not None and _declared_length(environ) > limit:
            self.unread = _declared_length(environ)  # Werkzeug refuses it before reading
            environ["wsgi.input"] = BodyInput(self, more, bytearray(), None, None)
            return True
        timer = None
        if self.timeout is not None and (
            "CONTENT_LENGTH" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
            or environ["SERVER_PROTOCOL"] not in ("HTTP/1.1", "HTTP/1.0")
        ):  # a body may follow (RFC 9112 section 6.3)
            timer = BodyTimer(self.loop, self.timeout)
        head = bytearray()
        error: type[Exception] | None = None
        try:
            message = await self.receive()
            if message["type"] != "http.request":
                return False
            if not message.get("more_body", False):  # the whole body, usually
                self.done = True
                if body := message.get("body"):
                    environ["wsgi.input"] = io.BytesIO(body)
                return True
            spool: t.IO[bytes] | None = None
            size = 0
            while True:
                body = message.get("body", b"")
                size += len(body)
                if spool is not None:
                    spool.write(body)
                elif size > SPOOL_MEMORY:
                    spool = self.spool = tempfile.TemporaryFile()
                    spool.write(head)
                    spool.write(body)
                    head = bytearray()
                else:
                    head += body
                if not message.get("more_body", False):
                    self.done = True
                    break
                if limit is not None and size > limit:
                    break  # what is left stays with the server
                if timer is not None:
                    timer.last = self.loop.time()
                message = await self.receive()
                if message["type"] != "http.request":
                    self.disconnected = self.done = True
                    error = ClientDisconnected
                    break
        except asyncio.CancelledError:
            if timer is None or not timer.timed_out():
                raise
            self.timed_out = True
            error = RequestTimeout
        finally:
            if timer is not None:
                timer.handle.cancel()
        if self.spool is not None:
            self.spool.seek(0)
        if self.done and error is None:
            environ["wsgi.input"] = self.spool if self.spool is not None else io.BytesIO(head)
        else:
            environ["wsgi.input"] = BodyInput(self, more, head, self.spool, error)
        return True

    async def read_more(self) -> bytes:
        """The next part of a body the app reads past what was received."""
        if self.done:
            return b""
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.disconnected = self.done = True
            raise ClientDisconnected()
        if not message.get("more_body", False):
            self.done = True
        return t.cast(bytes, message.get("body", b""))

    async def drain(self, limit: int | None) -> None:
        """Read and discard the rest of the request body, up to ``limit`` bytes.

        With a limit, it waits no longer for the next part than the body
        timeout allows.
        """
        timer = None if limit is None or self.timeout is None else BodyTimer(self.loop, self.timeout)
        drained = 0
        try:
            while not self.done and (limit is None or drained <= limit):
                message = await self.receive()
                if message["type"] != "http.request":
                    self.disconnected = self.done = True
                    return
                drained += len(message.get("body", b""))
                self.done = not message.get("more_body", False)
                if timer is not None:
                    timer.last = self.loop.time()
        except asyncio.CancelledError:
            if timer is None or not timer.timed_out():
                raise
            self.timed_out = True
        finally:
            if timer is not None:
                timer.handle.cancel()

    def watch(self) -> None:
        """Notice the client leaving while the response streams (the body is all read by now).

        Servers do not fail sends to a client that left; their
        ``http.disconnect`` message says so, once the body has been read.
        """
        if self.watcher is None:
            self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    def close(self) -> None:
        """The request is over: stop watching, drop the spool file."""
        # Let go of the watcher: its task keeps the context it was started in,
        # which holds the request, so the request would be freed only by the
        # cycle collector.
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.cancel()
        if self.spool is not None:
            self.spool.close()


class BodyTimer:
    """Cancels the task receiving a request body once none of it has come for ``timeout`` seconds.

    One timer per body, moved on lazily: each part that arrives only sets
    ``last``.
    """

    __slots__ = ("loop", "task", "timeout", "last", "handle", "expired", "cancelling")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.task = t.cast("asyncio.Task[t.Any]", asyncio.current_task())
        self.timeout = timeout
        self.last = loop.time()
        self.expired = False
        self.cancelling = self.task.cancelling() if sys.version_info >= (3, 11) else 0
        self.handle = loop.call_at(self.last + timeout, self._check)

    def _check(self) -> None:
        deadline = self.last + self.timeout
        if self.loop.time() < deadline:
            self.handle = self.loop.call_at(deadline, self._check)
        else:
            self.expired = True
            self.task.cancel()

    def timed_out(self) -> bool:
        """Whether the cancellation being handled is this timer's alone."""
        if not self.expired:
            return False
        if sys.version_info >= (3, 11):
            return self.task.uncancel() <= self.cancelling
        return True


def _declared_length(environ: dict[str, t.Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH", -1))
    except ValueError:
        return -1


class BodyInput:
    """``wsgi.input`` for a body not wholly received before the app ran.

    What was received (``head``, then the ``spool`` file) is read first. Then
    ``error`` is raised if receiving ended with one (the client left, or
    stopped sending); otherwise the rest, beyond ``MAX_CONTENT_LENGTH``, is
    fetched from the server as it is read, by calling ``more``.
    """

    def __init__(
        self,
        body: RequestBody,
        more: t.Callable[[], bytes],
        head: bytearray,
        spool: t.IO[bytes] | None,
        error: type[Exception] | None,
    ) -> None:
        self._body = body
        self._more = more
        self._buffer = head
        self._spool = spool
        self._error = error

    def _fetch(self) -> bool:
        """Append the next part of the body to the buffer; False at the end."""
        if self._spool is not None:
            data = self._spool.read(READ_SIZE)
            if data:
                self._buffer += data
                return True
            self._spool = None
        if self._error is not None:
            raise self._error()
        while not self._body.done:
            data = self._more()
            if data:
                self._buffer += data
                return True
        return False

    def read(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        if size is None or size < 0:
            while self._fetch():
                pass
            size = len(buffer)
        else:
            while len(buffer) < size and self._fetch():
                pass
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def read1(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._fetch()
        return self.read(len(self._buffer) if size < 0 else min(size, len(self._buffer)))

    def readline(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        limit = sys.maxsize if size is None or size < 0 else size
        start = 0
        while True:
            end = buffer.find(b"\n", start, limit)
            if end >= 0:
                return self.read(end + 1)
            if len(buffer) >= limit:
                return self.read(limit)
            start = len(buffer)
            if not self._fetch():
                return self.read(len(buffer))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> t.Iterator[bytes]:
        while line := self.readline():
            yield line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass
