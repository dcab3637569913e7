"""One HTTP request's run of the WSGI app and its response, with PEP 3333 semantics.

An :class:`Exchange` is shared by the loop and the app's side (a worker
thread, or a greenlet on the loop for an ``async def`` view). The app's side
runs the WSGI app (:meth:`Exchange.run`) and calls into the loop only to read
more body or to push a response chunk; the loop sends the final message
itself once the app's side returns (:meth:`Exchange.finish`). A response that
is a single block (most Flask responses) so costs no hop of its own; a
streamed one goes out a chunk at a time, each send waiting for the server.
"""

from __future__ import annotations

import asyncio
import typing as t

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import FileWrapper

from . import _flask_version as flask_version
from ._bridge import await_, in_bridge
from ._http_body import DRAIN_LIMIT, RequestBody
from ._portal import LoopClosed, Portal

if t.TYPE_CHECKING:
    from ._types import ASGIReceive, ASGISend, Message, Scope

#: Read size for ``send_file`` responses: Werkzeug's default of 8 KiB would cost
#: one hop to the loop per 8 KiB.
FILE_BLOCK_SIZE = 1 << 16


def file_wrapper(file: t.IO[bytes], block_size: int = 8192) -> FileWrapper:
    """``wsgi.file_wrapper``: Werkzeug's, reading at least :data:`FILE_BLOCK_SIZE` at a time."""
    return FileWrapper(file, max(block_size, FILE_BLOCK_SIZE))


class Disconnected(Exception):
    """The client has gone: stop producing the response."""


class Exchange:
    """One request and its response, shared by the loop and the app's side.

    ``body`` is the request's side (:class:`~flask_asyncws._http_body.RequestBody`).
    A worker thread running the app waits on the loop through ``portal``,
    bound to it meanwhile; without a portal, the app runs in a greenlet on
    the loop.
    """

    __slots__ = (
        "scope",
        "send",
        "loop",
        "body",
        "portal",
        "status",
        "headers",
        "remaining",
        "started",
        "error",
    )

    def __init__(
        self,
        scope: Scope,
        receive: ASGIReceive,
        send: ASGISend,
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
    ) -> None:
        self.scope = scope
        self.send = send
        self.loop = loop
        self.body = RequestBody(receive, loop, timeout)
        self.portal: Portal | None = None
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.remaining: int | None = None  # bytes the Content-Length still allows
        self.started = False  # http.response.start sent
        self.error: BaseException | None = None

    # -- on the app's side (a worker thread, or a greenlet on the loop) --

    def run(
        self, app: t.Callable[..., t.Iterable[bytes]], environ: dict[str, t.Any]
    ) -> tuple[Message | None, bytes] | None:
        """Run the WSGI app; return what is left to send, or None if nothing is."""
        held: list[bytes] = []
        try:
            iterable = app(environ, self.start_response)
            try:
                if self.status is None:
                    raise RuntimeError("The WSGI application returned without calling start_response().")
                no_body = self.scope.get("method") == "HEAD" or self.status in (204, 304) or self.status < 200
                for chunk in iterable:
                    if not chunk or no_body:
                        continue
                    if self.remaining is not None:
                        chunk = chunk[: self.remaining]
                        self.remaining -= len(chunk)
                        if self.remaining == 0:
                            # The whole declared body: hold it for the final
                            # message instead of a hop of its own.
                            held.append(chunk)
                            continue
                    held.append(chunk)
                    self._push(held)
                    held = []
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        except Disconnected:
            return None
        except Exception as exc:
            self.error = exc  # raised on the loop, for the server to log
            if self.started:
                return None  # too late for a 500: the server cuts the response short
            self.status = 500
            self.headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]
            held = [b"Internal Server Error"]
        finally:
            flask_version.release_request(environ)
        body = b"".join(held)
        return (None if self.started else self._start_message()), body

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Callable[[bytes], None]:
        if exc_info:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() was called twice without exc_info.")
        self.status = int(status[:3])
        encoded = []
        remaining = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-length":
                remaining = int(value)
            encoded.append((lowered.encode("latin-1"), value.encode("latin-1")))
        self.headers = encoded
        self.remaining = remaining
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write()``: the data is sent before this returns."""
        if self.status is None:
            raise RuntimeError("write() was called before start_response().")
        if self.remaining is not None:
            data = data[: self.remaining]
            self.remaining -= len(data)
        self._push([data])

    def read_body(self) -> bytes:
        """More of the request body, for ``wsgi.input`` (see :class:`~flask_asyncws._http_body.BodyInput`)."""
        if not self.body.done and not in_bridge() and _running_loop() is self.loop:
            # Code on the event loop (an async view) cannot wait for the part
            # of the body that the server still holds.
            raise RequestEntityTooLarge()
        return self.call(self.body.read_more())  # type: ignore[no-any-return]

    def _start_message(self) -> Message:
        return {"type": "http.response.start", "status": self.status, "headers": self.headers}

    def _push(self, chunks: list[bytes]) -> None:
        start = None if self.started else self._start_message()
        self.started = True
        self.call(self._send_chunk(start, b"".join(chunks)))

    def call(self, coro: t.Coroutine[t.Any, t.Any, t.Any]) -> t.Any:
        """Run ``coro`` on the loop and wait for its result; a closed loop means the client is gone."""
        portal = self.portal
        if portal is None:
            return await_(coro)
        try:
            return portal.run(coro)
        except LoopClosed:  # the server stopped under us
            raise Disconnected from None

    # -- on the loop --

    async def _send_chunk(self, start: Message | None, body: bytes) -> None:
        request = self.body
        if request.disconnected:
            raise Disconnected
        try:
            if start is not None:
                await self.send(start)
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:  # ASGI 2.4: the client has gone
            request.disconnected = True
            raise Disconnected from None
        if request.done and request.watcher is None:
            request.watch()

    async def finish(self, start: Message | None, body: bytes) -> None:
        """Send the final message after reading what is left of the request body.

        Up to :data:`~flask_asyncws._http_body.DRAIN_LIMIT`, the rest is read
        first (within the body timeout), so the connection stays usable.
        Beyond that (or when more is declared), it is read on only while the
        final message is being sent (hypercorn waits for room in its queue to
        finish), and the server then closes the connection.
        """
        request = self.body
        final = {"type": "http.response.body", "body": body, "more_body": False}
        if (
            not request.done
            and not request.disconnected
            and not request.timed_out
            and (request.unread is None or request.unread <= DRAIN_LIMIT)
        ):
            await request.drain(DRAIN_LIMIT)
        if request.timed_out and start is not None:
            # RFC 9110 section 15.5.9: the connection is not reused after a 408.
            start["headers"] = [*start["headers"], (b"connection", b"close")]
        drain = None if request.done or request.disconnected else asyncio.ensure_future(request.drain(None))
        try:
            if start is not None:
                await self.send(start)
            await self.send(final)
        finally:
            if drain is not None:
                drain.cancel()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
