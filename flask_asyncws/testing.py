"""Testing websocket routes without a server.

``app.test_client().websocket("/ws")`` runs the app's ASGI websocket pipeline
(``app.asgi_app``, the same one servers call) on an event loop in a background
thread, and talks to it through a small synchronous API, so plain pytest tests
can open a websocket next to ordinary HTTP requests and share their cookies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import threading
import typing as t

import flask.testing
from werkzeug.datastructures import Headers
from werkzeug.test import Client
from werkzeug.wrappers import Request

from ._test_handshake import cookie_exchange, handshake
from ._websocket import WebsocketDisconnect

if t.TYPE_CHECKING:
    from werkzeug.test import TestResponse

    from ._types import Message, Scope

#: Seconds a receive, the handshake or the app's shutdown may take by default.
DEFAULT_TIMEOUT = 5.0

C = t.TypeVar("C", bound=Client)


class WebsocketResponseError(Exception):
    """The app refused the handshake with an HTTP response.

    ``response`` is a test response like the Flask test client returns
    (``status_code``, ``headers``, ``data``, ``get_json()``).
    """

    def __init__(self, response: TestResponse) -> None:
        super().__init__(f"The websocket handshake was refused with HTTP {response.status}.")
        self.response = response


class _Finished:
    """Put after the app's last message: the ASGI app returned or raised."""


_FINISHED = _Finished()


class TestWebsocket:
    """A websocket connection from a test to the app, used as a context manager.

    Entering completes the handshake (raising :class:`WebsocketResponseError`
    if the app refuses it); leaving disconnects with code 1000 and waits for
    the app to finish, so teardown functions have run when the block exits.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        client: Client,
        path: str,
        *,
        headers: t.Any = None,
        query_string: t.Any = None,
        subprotocols: t.Sequence[str] | None = None,
        auth: t.Any = None,
        subdomain: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client = client
        self.app: flask.Flask = client.application  # type: ignore[assignment]
        self.timeout = timeout
        #: The subprotocol the app accepted, or None.
        self.subprotocol: str | None = None
        #: The extra headers the app sent with the accept.
        self.accept_headers = Headers()
        self.request, self.scope = self._handshake_request(path, headers, query_string, subprotocols, auth, subdomain)
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: queue.Queue[Message | _Finished] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._outcome: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._error_reported = False
        self._refusal: WebsocketResponseError | None = None
        self._closed: WebsocketDisconnect | None = None
        self._client_closed = False

    # -- the handshake ----------------------------------------------------

    def _handshake_request(
        self,
        path: str,
        headers: t.Any,
        query_string: t.Any,
        subprotocols: t.Sequence[str] | None,
        auth: t.Any,
        subdomain: str | None,
    ) -> tuple[Request, Scope]:
        """The handshake as a Werkzeug request (cookies from the client's jar)
        and as the ASGI scope a server would build for it."""
        self._builder_args: dict[str, t.Any] = {
            "path": path,
            # Read twice (the handshake, the cookie jar's request): an iterator once.
            "headers": None if headers is None else Headers(headers),
            "query_string": query_string,
            "auth": auth,
            "subdomain": subdomain,
            "environ_base": dict(getattr(self.client, "environ_base", None) or {}),
        }
        cookie = self._cookie_exchange([])
        return handshake(self.app, self._builder_args, cookie, subprotocols)

    def __enter__(self) -> TestWebsocket:
        self._thread = threading.Thread(target=self._run, name=f"websocket-test {self.scope['path']}", daemon=True)
        self._thread.start()
        self._started.wait()
        self._push({"type": "websocket.connect"})
        try:
            message = self._next(self.timeout, "to accept or refuse the handshake")
        except BaseException:
            self._end(1006, "", raise_errors=False)
            raise
        kind = message["type"] if isinstance(message, dict) else None
        if kind == "websocket.accept":
            self.subprotocol = message.get("subprotocol")  # type: ignore[union-attr]
            self.accept_headers = _headers(message.get("headers"))  # type: ignore[union-attr]
            self._store_cookies(self.accept_headers)
            return self
        if kind == "websocket.http.response.start":
            status = message["status"]  # type: ignore[index]
            response_headers = _headers(message.get("headers"))  # type: ignore[union-attr]
            body = self._denial_body()
            self._refuse(self._response(body, status, response_headers))
        # Closed before accepting: servers answer 403. Finished without a
        # word (the app raised): servers answer 500.
        self._refuse(self._response(b"", 403 if kind == "websocket.close" else 500, Headers()))

    def _denial_body(self) -> bytes:
        chunks = []
        while True:
            try:
                message = self._next(self.timeout, "to finish the denial response")
            except BaseException:
                self._end(1006, "", raise_errors=False)
                raise
            if isinstance(message, _Finished) or message["type"] != "websocket.http.response.body":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _refuse(self, response: TestResponse) -> t.NoReturn:
        self._store_cookies(response.headers)
        # The app's own exception (TESTING, PROPAGATE_EXCEPTIONS) wins over
        # the 500 it also sent, as with Flask's test client.
        self._end(1006, "")
        self._refusal = WebsocketResponseError(response)
        raise self._refusal

    def _response(self, body: bytes, status: int, headers: Headers) -> TestResponse:
        response = self.client.response_wrapper([body], status, headers, request=self.request)  # type: ignore[arg-type]
        response.json_module = self.app.json  # type: ignore[assignment]
        return response

    def _store_cookies(self, headers: Headers) -> None:
        cookies = headers.getlist("Set-Cookie")
        if cookies:
            self._cookie_exchange([("Set-Cookie", cookie) for cookie in cookies])

    def _cookie_exchange(self, answer: list[tuple[str, str]]) -> str | None:
        """The jar's ``Cookie`` header for the handshake, after storing ``answer``'s ``Set-Cookie`` headers."""
        return cookie_exchange(self.client, self.app, self._builder_args, answer)

    # -- messaging --------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Send ``str`` as a text message or ``bytes`` as a binary one."""
        self._check_open()
        if isinstance(data, str):
            self._push({"type": "websocket.receive", "text": data})
        elif isinstance(data, (bytes, bytearray, memoryview)):
            self._push({"type": "websocket.receive", "bytes": bytes(data)})
        else:
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}; use send_json() for other objects.")

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The app's next message, ``str`` or ``bytes`` as sent.

        Raises :class:`~flask_asyncws.WebsocketDisconnect` once the app closed
        the connection, and :class:`TimeoutError` after ``timeout`` seconds
        (default: the connection's ``timeout``) without a message.
        """
        self._check_open()
        message = self._next(self.timeout if timeout is None else timeout, "to send a message")
        if isinstance(message, _Finished):
            # The app returned without closing: servers close with 1011.
            self._server_closed(1011, "")
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        if kind == "websocket.close":
            self._server_closed(message.get("code", 1000), message.get("reason") or "")
        raise RuntimeError(f"The app sent an unexpected {kind!r} message after the handshake.")

    def send_json(self, obj: t.Any) -> None:
        """Send ``obj`` encoded with ``app.json`` as a text message."""
        self.send(self.app.json.dumps(obj))

    def receive_json(self, timeout: float | None = None) -> t.Any:
        """The app's next message decoded with ``app.json``."""
        return self.app.json.loads(self.receive(timeout))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Disconnect with ``code`` and ``reason`` and wait for the app to finish.

        The handler sees :class:`~flask_asyncws.WebsocketDisconnect` with the
        same code and reason. Closing again does nothing.
        """
        if self._client_closed or self._closed is not None or self._refusal is not None:
            return
        self._client_closed = True
        self._closed = WebsocketDisconnect(code, reason)
        self._end(code, reason)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: t.Any) -> None:
        if self._thread is None or self._refusal is not None:
            return
        if exc is None:
            if self._closed is None:
                self.close()
            else:
                self._end(1000, "")
        else:
            # Let the test's own exception through; the app still finishes.
            self._client_closed = True
            self._end(1000, "", raise_errors=False)

    def _check_open(self) -> None:
        if self._thread is None:
            raise RuntimeError("Use the websocket in a 'with' block: with client.websocket(path) as ws: ...")
        if self._refusal is not None:
            raise self._refusal
        if self._client_closed:
            raise RuntimeError("The test closed this websocket.")
        if self._closed is not None:
            raise WebsocketDisconnect(self._closed.code, self._closed.reason)

    def _server_closed(self, code: int, reason: str) -> t.NoReturn:
        self._closed = WebsocketDisconnect(code, reason)
        # The server completes the close handshake and tells the app; wait
        # for it to finish so its exception (if propagated) reaches the test.
        self._end(code, reason)
        raise WebsocketDisconnect(code, reason)

    # -- the app's side: an event loop in a background thread ---------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        # An executor of our own, shut down without waiting, so a worker
        # left in run_sync() does not hold the test up.
        executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="websocket-test")
        loop.set_default_executor(executor)
        try:
            loop.run_until_complete(self._serve())
            loop.run_until_complete(_cancel_leftover_tasks())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._to_app = asyncio.Queue()
        self._task = asyncio.current_task()
        self._started.set()
        try:
            await self.app.asgi_app(self.scope, self._to_app.get, self._app_send)  # type: ignore[attr-defined]
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            self._outcome.set_exception(exc)
        else:
            self._outcome.set_result(None)
        finally:
            self._from_app.put(_FINISHED)

    async def _app_send(self, message: Message) -> None:
        self._from_app.put(message)

    def _push(self, message: Message) -> None:
        """Hand a message to the app, unless it has finished."""
        loop, inbox = self._loop, self._to_app
        if loop is None or inbox is None or self._outcome.done():
            return
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, message)
        except RuntimeError:  # the loop closed in the meantime
            pass

    def _next(self, timeout: float, waiting_for: str) -> Message | _Finished:
        try:
            return self._from_app.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"Waited {timeout:g} s for the websocket handler {waiting_for}."
                " Pass a longer timeout (receive(timeout=...) or client.websocket(..., timeout=...))"
                " if the handler is just slow."
            ) from None

    def _end(self, code: int, reason: str, *, raise_errors: bool = True) -> None:
        """Tell the app the client is gone, wait for it to finish (bounded)
        and surface an exception that escaped the app, once."""
        self._push({"type": "websocket.disconnect", "code": code, "reason": reason})
        finished = self._wait()
        if not finished:
            loop, task = self._loop, self._task
            if loop is not None and task is not None:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:  # the loop closed in the meantime
                    pass
            self._wait()
        if self._outcome.done() and self._thread is not None:
            self._thread.join(self.timeout)
        if not raise_errors:
            return
        if not finished:
            raise TimeoutError(
                f"The websocket handler did not finish within {self.timeout:g} s of the client"
                " disconnecting, so it was cancelled."
            )
        error = self._outcome.exception()
        if error is not None and not self._error_reported:
            self._error_reported = True
            raise error

    def _wait(self) -> bool:
        try:
            self._outcome.exception(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True


class WebsocketClientMixin:
    """Adds :meth:`websocket` to a Flask test client class."""

    def websocket(
        self,
        path: str,
        *,
        headers: t.Any = None,
        query_string: t.Any = None,
        subprotocols: t.Sequence[str] | None = None,
        auth: t.Any = None,
        subdomain: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> TestWebsocket:
        """Open a websocket to ``path`` in a ``with`` block, without a server.

        Arguments are those of the Flask test client's requests; the client's
        cookies (the session) are sent with the handshake.
        """
        return TestWebsocket(
            t.cast(Client, self),
            path,
            headers=headers,
            query_string=query_string,
            subprotocols=subprotocols,
            auth=auth,
            subdomain=subdomain,
            timeout=timeout,
        )


class FlaskClient(WebsocketClientMixin, flask.testing.FlaskClient):
    """Flask's test client with :meth:`websocket`, as type checkers see it.

    ``app.test_client()`` returns one once :class:`~flask_asyncws.AsyncWS` has
    set the app up (with another ``app.test_client_class``, that class with
    :class:`WebsocketClientMixin` added). Flask's own annotations call it a
    :class:`flask.testing.FlaskClient`; name this class instead where typed
    code uses ``websocket()``, or get it from
    :meth:`AsyncWS.test_client() <flask_asyncws.AsyncWS.test_client>`.
    """


@functools.cache
def with_websocket(cls: type[C]) -> type[C]:
    """``cls`` (a test client class) with :class:`WebsocketClientMixin` added."""
    if issubclass(cls, WebsocketClientMixin):
        return cls
    if cls is flask.testing.FlaskClient:
        return t.cast("type[C]", FlaskClient)
    return t.cast("type[C]", type(cls.__name__, (WebsocketClientMixin, cls), {"__module__": cls.__module__}))


def install(app: flask.Flask) -> None:
    """Give ``app.test_client()`` a ``websocket()`` method.

    Whatever ``app.test_client_class`` is when a client is made (also one set
    after ``init_app``), the client gets the mixin on top of it.
    """
    make_client = app.test_client

    @functools.wraps(make_client)
    def test_client(*args: t.Any, **kwargs: t.Any) -> t.Any:
        client = make_client(*args, **kwargs)
        if not isinstance(client, WebsocketClientMixin):
            client.__class__ = with_websocket(type(client))  # type: ignore[arg-type]
        return client

    app.test_client = test_client  # type: ignore[method-assign]


async def _cancel_leftover_tasks() -> None:
    """Cancel tasks the app started and left running, as ``asyncio.run`` does."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _headers(raw: t.Iterable[tuple[bytes, bytes]] | None) -> Headers:
    return Headers([(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw or ()])
