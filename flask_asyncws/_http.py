"""The HTTP bridge: the app's existing routes served through ASGI.

Builds a WSGI environ from an ASGI scope (also used for the websocket
handshake's request context) and runs Flask's ``wsgi_app`` for http scopes in
a bounded pool of worker threads, with PEP 3333 semantics.

The request body is received on the loop before the app runs (kept in memory
up to :data:`SPOOL_MEMORY`, in a temporary file beyond), so a worker thread
never waits on a client's network and an ``async def`` view reads the body as
sync code does. A request costs one hop from the loop to a worker thread and
back when the response is a single block (most Flask responses); a streamed
response goes out one chunk at a time, each send waiting for the server, so
memory stays bounded in both directions.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import io
import queue
import sys
import tempfile
import threading
import typing as t

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout
from werkzeug.wsgi import FileWrapper

from . import _flask_version as flask_version
from ._bridge import SpawnHooks, await_, greenlet_spawn, in_bridge
from ._log import logger
from ._portal import LoopClosed, Portal, settle

if t.TYPE_CHECKING:
    import flask

    from ._config import Settings
    from ._types import ASGIReceive, ASGISend, Message, Scope

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

#: Read size for ``send_file`` responses: Werkzeug's default of 8 KiB would cost
#: one hop to the loop per 8 KiB.
FILE_BLOCK_SIZE = 1 << 16

T = t.TypeVar("T")

#: WSGI environ keys for header names already seen.
_HEADER_KEYS: dict[bytes, str] = {}


def build_environ(scope: Scope, body: t.IO[bytes] | None = None) -> dict[str, t.Any]:
    """A PEP 3333 environ for ``scope`` (an http or websocket scope)."""
    root_path: str = scope.get("root_path", "") or ""
    authority, path = split_target(scope["path"])
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    websocket = scope["type"] == "websocket"
    scheme = scope.get("scheme") or ("ws" if websocket else "http")
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, t.Any] = {
        "REQUEST_METHOD": "GET" if websocket else scope.get("method", "GET"),
        "SCRIPT_NAME": root_path.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": (scope.get("query_string") or b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if scheme in ("https", "wss") else "http",
        "wsgi.input": body if body is not None else io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "asgi.scope": scope,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope.get("headers", ()):
        key = _HEADER_KEYS.get(raw_name)
        if key is None:
            key = _environ_key(raw_name)
        value = raw_value.decode("latin-1")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = f"{environ[key]}{separator}{value}"
        else:
            environ[key] = value
    if authority:
        environ["HTTP_HOST"] = authority  # RFC 9112 §3.2.2: it replaces the Host header
    if websocket:
        # HTTP/2 websockets (RFC 8441) carry no Upgrade header; Werkzeug
        # binds websocket rules from these two.
        environ["HTTP_CONNECTION"] = "Upgrade"
        environ["HTTP_UPGRADE"] = "websocket"
    return environ


def split_target(path: str) -> tuple[str | None, str]:
    """The authority and path of an absolute-form request target
    (``ws://host/chat``), which servers pass on as the scope's path; RFC 9112
    §3.2.2 has servers accept it. ``(None, path)`` for the usual origin form."""
    if path.startswith("/"):
        return None, path
    scheme, sep, rest = path.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        return None, path
    authority, _, path = rest.partition("/")
    return authority.rpartition("@")[2], f"/{path}"  # userinfo is no part of the host


_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def _environ_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").upper().replace("-", "_")
    key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
    if len(_HEADER_KEYS) < 512:  # bounded: clients choose header names
        _HEADER_KEYS[raw_name] = key
    return key


def _file_wrapper(file: t.IO[bytes], block_size: int = 8192) -> FileWrapper:
    return FileWrapper(file, max(block_size, FILE_BLOCK_SIZE))


class _Disconnected(Exception):
    """The client has gone: stop producing the response."""


class _Exchange:
    """One request and its response, shared by the loop and a worker thread.

    The worker runs the WSGI app and calls into the loop (:meth:`call`) only
    to read more body or to push a response chunk; the loop sends the final
    message itself once the worker returns.
    """

    __slots__ = (
        "scope",
        "receive",
        "send",
        "loop",
        "body_done",
        "disconnected",
        "status",
        "headers",
        "remaining",
        "started",
        "error",
        "watcher",
        "portal",
        "on_loop",
        "timeout",
        "timed_out",
        "spool",
        "unread",
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
        self.receive = receive
        self.send = send
        self.loop = loop
        self.timeout = timeout  # ASYNCWS_BODY_TIMEOUT
        self.body_done = False
        self.timed_out = False  # the client stopped sending its body
        self.spool: t.IO[bytes] | None = None  # the temporary file holding the body
        self.unread: int | None = None  # the declared body, when none of it is received
        self.disconnected = False
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.remaining: int | None = None  # bytes the Content-Length still allows
        self.started = False  # http.response.start sent
        self.error: BaseException | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.on_loop = False  # run in a greenlet on the loop, not in a worker
        self.portal = Portal(loop)  # a worker's way to the loop, bound to it while it runs the app

    # -- in the worker thread (or the greenlet) --

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
        except _Disconnected:
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

    def _start_message(self) -> Message:
        return {"type": "http.response.start", "status": self.status, "headers": self.headers}

    def _push(self, chunks: list[bytes]) -> None:
        start = None if self.started else self._start_message()
        self.started = True
        self.call(self._send_chunk(start, b"".join(chunks)))

    def call(self, coro: t.Coroutine[t.Any, t.Any, t.Any]) -> t.Any:
        """Run ``coro`` on the loop and wait for its result."""
        if self.on_loop:
            return await_(coro)
        try:
            return self.portal.run(coro)
        except LoopClosed:  # the server stopped under us
            raise _Disconnected from None

    # -- on the loop --

    async def read_request(self, environ: dict[str, t.Any], limit: int | None) -> bool:
        """Receive the request body into ``environ["wsgi.input"]`` before the app runs.

        Up to :data:`SPOOL_MEMORY` is kept in memory, the rest in a temporary
        file. A body larger than ``limit`` (``MAX_CONTENT_LENGTH``) is not
        received, or only until it passes the limit, so Werkzeug answers 413
        at once. When no part of it arrives for ``timeout`` seconds, reading
        past what arrived raises 408. Returns False if the client left before
        the request started.
        """
        if limit is not None and _declared_length(environ) > limit:
            self.unread = _declared_length(environ)  # Werkzeug refuses it before reading
            environ["wsgi.input"] = _Input(self, bytearray(), None, None)
            return True
        timer = None
        if self.timeout is not None and (
            "CONTENT_LENGTH" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
            or environ["SERVER_PROTOCOL"] not in ("HTTP/1.1", "HTTP/1.0")
        ):  # a body may follow (RFC 9112 section 6.3)
            timer = _BodyTimer(self.loop, self.timeout)
        head = bytearray()
        error: type[Exception] | None = None
        try:
            message = await self.receive()
            if message["type"] != "http.request":
                return False
            if not message.get("more_body", False):  # the whole body, usually
                self.body_done = True
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
                    self.body_done = True
                    break
                if limit is not None and size > limit:
                    break  # what is left stays with the server
                if timer is not None:
                    timer.last = self.loop.time()
                message = await self.receive()
                if message["type"] != "http.request":
                    self.disconnected = self.body_done = True
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
        if self.body_done and error is None:
            environ["wsgi.input"] = self.spool if self.spool is not None else io.BytesIO(head)
        else:
            environ["wsgi.input"] = _Input(self, head, self.spool, error)
        return True

    async def _send_chunk(self, start: Message | None, body: bytes) -> None:
        if self.disconnected:
            raise _Disconnected
        try:
            if start is not None:
                await self.send(start)
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:  # ASGI 2.4: the client has gone
            self.disconnected = True
            raise _Disconnected from None
        if self.body_done and self.watcher is None:
            # Servers do not fail sends to a client that left; their
            # http.disconnect message says so, once the body has been read.
            self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    async def read_body(self) -> bytes:
        if self.body_done:
            return b""
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.disconnected = self.body_done = True
            raise ClientDisconnected()
        if not message.get("more_body", False):
            self.body_done = True
        return t.cast(bytes, message.get("body", b""))

    async def finish(self, start: Message | None, body: bytes) -> None:
        """Send the final message after reading what is left of the request body.

        Up to :data:`DRAIN_LIMIT`, the rest is read first (within the body
        timeout), so the connection stays usable. Beyond that (or when more is
        declared), it is read on only while the final message is being sent
        (hypercorn waits for room in its queue to finish), and the server then
        closes the connection.
        """
        final = {"type": "http.response.body", "body": body, "more_body": False}
        if (
            not self.body_done
            and not self.disconnected
            and not self.timed_out
            and (self.unread is None or self.unread <= DRAIN_LIMIT)
        ):
            await self.drain(DRAIN_LIMIT)
        if self.timed_out and start is not None:
            # RFC 9110 section 15.5.9: the connection is not reused after a 408.
            start["headers"] = [*start["headers"], (b"connection", b"close")]
        drain = None if self.body_done or self.disconnected else asyncio.ensure_future(self.drain(None))
        try:
            if start is not None:
                await self.send(start)
            await self.send(final)
        finally:
            if drain is not None:
                drain.cancel()

    async def drain(self, limit: int | None) -> None:
        """Read and discard the rest of the request body, up to ``limit`` bytes.

        With a limit, it waits no longer for the next part than the body
        timeout allows.
        """
        timer = None if limit is None or self.timeout is None else _BodyTimer(self.loop, self.timeout)
        drained = 0
        try:
            while not self.body_done and (limit is None or drained <= limit):
                message = await self.receive()
                if message["type"] != "http.request":
                    self.disconnected = self.body_done = True
                    return
                drained += len(message.get("body", b""))
                self.body_done = not message.get("more_body", False)
                if timer is not None:
                    timer.last = self.loop.time()
        except asyncio.CancelledError:
            if timer is None or not timer.timed_out():
                raise
            self.timed_out = True
        finally:
            if timer is not None:
                timer.handle.cancel()

    def stop(self) -> None:
        # Let go of the watcher: its task keeps the context it was started in,
        # which holds the request, so the request would be freed only by the
        # cycle collector.
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.cancel()
        if self.spool is not None:
            self.spool.close()


class _BodyTimer:
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


class _Input:
    """``wsgi.input`` for a body not wholly received before the app ran.

    What was received (``head``, then the ``spool`` file) is read first. Then
    ``error`` is raised if receiving ended with one (the client left, or
    stopped sending); otherwise the rest, beyond ``MAX_CONTENT_LENGTH``, is
    fetched from the server as it is read.
    """

    def __init__(
        self, exchange: _Exchange, head: bytearray, spool: t.IO[bytes] | None, error: type[Exception] | None
    ) -> None:
        self._exchange = exchange
        self._buffer = head
        self._spool = spool
        self._error = error

    def _fetch(self) -> bool:
        """Append the next part of the body to the buffer; False at the end."""
        if self._spool is not None:
            data = self._spool.read(FILE_BLOCK_SIZE)
            if data:
                self._buffer += data
                return True
            self._spool = None
        if self._error is not None:
            raise self._error()
        exchange = self._exchange
        if not exchange.body_done and not in_bridge() and _running_loop() is exchange.loop:
            # Code on the event loop (an async view) cannot wait for the part
            # of the body that the server still holds.
            raise RequestEntityTooLarge()
        while not exchange.body_done:
            data = exchange.call(exchange.read_body())
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


class WorkerPool:
    """Up to ``size`` worker threads, started as needed, that run calls for the loop.

    Leaner than ``run_in_executor`` with a ``ThreadPoolExecutor``: a call is one
    queue put to start and one ``call_soon_threadsafe`` to finish, which is a
    sizeable part of a short request. Each call runs in a copy of the caller's
    ``contextvars`` context, so nothing it sets outlives it on the thread.
    """

    #: How long :meth:`aclose` waits for busy workers to finish.
    SHUTDOWN_TIMEOUT = 5.0

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[tuple[t.Any, ...] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()

    def run(self, loop: asyncio.AbstractEventLoop, fn: t.Callable[..., T], *args: t.Any) -> asyncio.Future[T]:
        """Call ``fn(*args)`` in a worker; the future resolves on ``loop``."""
        future: asyncio.Future[T] = loop.create_future()
        if not self._idle.acquire(blocking=False):
            self._spawn()
        self._jobs.put((loop, future, contextvars.copy_context(), fn, args))
        return future

    def _spawn(self) -> None:
        with self._lock:
            if len(self.threads) >= self.size:
                return  # all busy: the job waits for the first one free
            thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self.threads)}", daemon=True)
            self.threads.append(thread)
        thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        while (job := jobs.get()) is not None:
            loop, future, context, fn, args = job
            try:
                outcome: tuple[bool, t.Any] = (True, context.run(fn, *args))
            except BaseException as exc:
                outcome = (False, exc)
            del job, context, args
            settle(loop, future, *outcome)
            del outcome
            self._idle.release()

    async def aclose(self) -> None:
        """Stop every worker once its current call returns."""
        for _ in self.threads:
            self._jobs.put(None)

        def join() -> None:
            for thread in self.threads:
                thread.join()

        try:
            await asyncio.wait_for(asyncio.to_thread(join), self.SHUTDOWN_TIMEOUT)
        except asyncio.TimeoutError:
            busy = [thread.name for thread in self.threads if thread.is_alive()]
            logger.warning("HTTP worker threads still busy at shutdown: %s", ", ".join(busy))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class HTTPBridge:
    """Runs the Flask app for http scopes.

    Requests for sync views run in a pool of ``ASYNCWS_HTTP_THREADS`` worker
    threads that serves HTTP only, so open websockets never take a thread from
    it. Each worker is bound to the server's loop: async hooks run there, not
    on a new loop per call. A request whose view is an ``async def`` runs its
    whole Flask pipeline in a greenlet on the loop instead, so it holds no
    thread while it awaits.
    """

    def __init__(self, app: flask.Flask, settings: t.Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings
        self._pool: WorkerPool | None = None
        self._async_endpoints: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(scope, receive, send, loop, self._settings().body_timeout)
        environ = build_environ(scope)
        environ["wsgi.input_terminated"] = True
        environ["wsgi.file_wrapper"] = _file_wrapper
        try:
            if not await exchange.read_request(environ, self.app.config.get("MAX_CONTENT_LENGTH")):
                return  # the client left before sending the request
            if self._runs_on_loop(environ):
                exchange.on_loop = True
                warn_ms = self._settings().blocking_warn_ms
                result = await greenlet_spawn(
                    exchange.run,
                    self.app.wsgi_app,
                    environ,
                    hooks=_NO_WARNING if warn_ms is None else SpawnHooks(on_slow=_warn_slow, slow_after=warn_ms / 1000),
                )
            else:
                pool = self._pool
                if pool is None:
                    pool = self._pool = WorkerPool(self._settings().http_threads, "asyncws-http")
                result = await pool.run(loop, self._work, exchange, environ)
        except BaseException:
            exchange.disconnected = True  # cancelled: a worker stops at its next send
            raise
        finally:
            exchange.stop()
        if result is not None:
            await exchange.finish(*result)
        elif exchange.error is not None and not exchange.disconnected:
            await exchange.drain(DRAIN_LIMIT)
        if exchange.error is not None:
            raise exchange.error

    def _runs_on_loop(self, environ: dict[str, t.Any]) -> bool:
        """Whether the request is for an ``async def`` view."""
        endpoints = self._async_endpoints
        if endpoints is None:
            # Flask refuses new routes once it has served a request.
            endpoints = self._async_endpoints = frozenset(
                name for name, view in self.app.view_functions.items() if inspect.iscoroutinefunction(view)
            )
        if not endpoints:
            return False
        try:
            endpoint, _ = self.app.url_map.bind_to_environ(environ).match()
        except Exception:  # no match, a redirect, a bad host: Flask decides, in a worker
            return False
        return endpoint in endpoints

    def _work(self, exchange: _Exchange, environ: dict[str, t.Any]) -> tuple[Message | None, bytes] | None:
        with exchange.portal:  # await_() in the app (async hooks) waits on the server's loop
            return exchange.run(self.app.wsgi_app, environ)

    async def aclose(self) -> None:
        """Release the worker threads; called at server shutdown."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


_NO_WARNING = SpawnHooks()


def _warn_slow(held: float) -> None:
    logger.warning(
        "A request to an async view held the event loop for %.0f ms without awaiting;"
        " sync code in its hooks blocks every other connection meanwhile.",
        held * 1000,
    )
