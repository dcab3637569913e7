"""The HTTP bridge end to end: Flask routes through ``app.asgi_app`` on real servers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import io
import os
import socket
import sys
import tempfile
import threading
import time
import typing as t
from importlib.metadata import version

import httpx
import pytest
from flask import (
    Flask,
    Response,
    abort,
    redirect,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)
from support.servers import SERVERS, LiveServer
from support.versions import REDIRECT_STATUS, STREAMED_TEARDOWNS

from flask_asyncws import AsyncWS
from flask_asyncws._environ import build_environ
from flask_asyncws._http_body import DRAIN_LIMIT, SPOOL_MEMORY

FLASK_VERSION = tuple(int(part) for part in version("flask").split(".")[:3])

TIMEOUT = 10


def make_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", **config)
    AsyncWS(app)
    return app


def vm_rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(params=SERVERS)
def server_name(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


# -- streaming both ways --


def temporary_files() -> set[str]:
    """This process's open files in the temporary directory."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(tempfile.gettempdir()):
                found.add(target)
    return found


def test_upload_is_received_in_bounded_memory(server_name: str) -> None:
    app = make_app()
    size = 200 * 1024 * 1024
    seen: dict[str, int] = {}

    @app.post("/upload")
    def upload() -> dict[str, int]:
        total = 0
        while chunk := request.stream.read(1024 * 1024):
            total += len(chunk)
        seen.update(total=total)
        return seen

    block = b"x" * (1024 * 1024)

    def body() -> t.Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    peak = [0]
    finished = threading.Event()

    def sample() -> None:
        while not finished.wait(0.01):
            peak[0] = max(peak[0], vm_rss())

    with LiveServer(app.asgi_app, server_name) as srv:
        assert httpx.get(srv.http_url + "/missing").status_code == 404  # the server is warm
        files, baseline = temporary_files(), vm_rss()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            response = httpx.post(srv.http_url + "/upload", content=body(), timeout=60)
        finally:
            finished.set()
            sampler.join()
        assert temporary_files() == files  # the body's temporary file is closed
    assert response.status_code == 200
    assert seen["total"] == size
    # Held in memory, the body would add 200 MB: it goes to a temporary file
    # while it is received, and the view reads it back in chunks.
    assert peak[0] - baseline < 50 * 1024 * 1024, peak[0] - baseline


def test_download_streams_before_the_generator_finishes(server_name: str) -> None:
    app = make_app()
    first_arrived = threading.Event()

    @app.get("/stream")
    def stream() -> Response:
        @stream_with_context
        def generate() -> t.Iterator[bytes]:
            yield f"first:{request.path};".encode()
            # Only a client that already received the first chunk sets this.
            yield b"second" if first_arrived.wait(TIMEOUT) else b"buffered"

        return Response(generate(), mimetype="text/plain")

    with LiveServer(app.asgi_app, server_name) as srv:
        with httpx.stream("GET", srv.http_url + "/stream", timeout=TIMEOUT) as response:
            chunks = response.iter_raw()
            received = next(chunks)
            assert received == b"first:/stream;"
            first_arrived.set()
            received += b"".join(chunks)
    assert received == b"first:/stream;second"


def test_client_disconnect_stops_the_stream_and_tears_down(server_name: str) -> None:
    app = make_app(ASYNCWS_HTTP_THREADS=1)
    client_gone = threading.Event()
    closed = threading.Event()
    torn_down: list[str] = []
    produced: list[int] = []

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        torn_down.append(request.path)

    @app.get("/forever")
    def forever() -> Response:
        @stream_with_context
        def generate() -> t.Iterator[bytes]:
            try:
                yield b"x" * 1024
                assert client_gone.wait(TIMEOUT)
                for n in range(100_000):
                    produced.append(n)
                    yield b"y" * 1024
            finally:
                closed.set()

        return Response(generate(), mimetype="text/plain")

    @app.get("/next")
    def next_request() -> str:
        return request.path

    with LiveServer(app.asgi_app, server_name) as srv:
        with httpx.Client(timeout=TIMEOUT) as client:
            with client.stream("GET", srv.http_url + "/forever") as response:
                next(response.iter_raw())
            # Leaving the block closed the connection mid-body.
        client_gone.set()
        assert closed.wait(TIMEOUT), "the generator was not closed"
        assert len(produced) < 100_000
        # The only worker thread is free and clean for the next request.
        assert httpx.get(srv.http_url + "/next", timeout=TIMEOUT).text == "/next"
    # As often as Flask tears a streamed request down under any WSGI server.
    assert torn_down == ["/forever"] * STREAMED_TEARDOWNS + ["/next"]


def test_send_file_and_large_responses() -> None:
    app = make_app()
    data = bytes(range(256)) * 4096 * 3  # 3 MiB

    @app.get("/file")
    def file() -> Response:
        return send_file(io.BytesIO(data), mimetype="application/octet-stream")

    with LiveServer(app.asgi_app) as srv:
        response = httpx.get(srv.http_url + "/file", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == data


def test_chunked_upload_and_form_parsing() -> None:
    app = make_app()

    @app.post("/echo")
    def echo() -> bytes:
        return request.get_data()

    @app.post("/form")
    def form() -> dict[str, t.Any]:
        upload = request.files["file"]
        return {"name": request.form["name"], "file": upload.read().decode()}

    def body() -> t.Iterator[bytes]:
        yield b"chunked "
        yield b"body"

    with LiveServer(app.asgi_app) as srv:
        assert httpx.post(srv.http_url + "/echo", content=body()).content == b"chunked body"
        response = httpx.post(srv.http_url + "/form", data={"name": "n"}, files={"file": ("f.txt", b"content")})
    assert response.json() == {"name": "n", "file": "content"}


# -- bodies not read --


def test_413_above_max_content_length(server_name: str) -> None:
    app = make_app(MAX_CONTENT_LENGTH=DRAIN_LIMIT // 2)
    handled: list[int] = []

    @app.post("/upload")
    def upload() -> str:
        return str(len(request.get_data()))

    @app.post("/stream-upload")
    def stream_upload() -> str:
        total = 0
        while chunk := request.stream.read(64 * 1024):  # raises 413 past the limit
            total += len(chunk)
        return str(total)

    @app.errorhandler(413)
    def too_large(error: Exception) -> tuple[str, int]:
        handled.append(413)
        return "too large", 413

    with LiveServer(app.asgi_app, server_name) as srv, httpx.Client(base_url=srv.http_url, timeout=TIMEOUT) as client:
        # Declared too large: refused before the body is read, which is then
        # drained (it is within DRAIN_LIMIT) so the connection stays usable.
        response = client.post("/upload", content=b"x" * (DRAIN_LIMIT * 3 // 4))
        assert (response.status_code, response.text) == (413, "too large")
        assert client.post("/upload", content=b"small").text == "5"

        # Chunked, no length: refused once the view reads past the limit. The
        # rest is far beyond what the server drains, so the connection may be
        # cut instead; either way the request must finish promptly.
        def endless() -> t.Iterator[bytes]:
            for _ in range(200):
                yield b"x" * (256 * 1024)

        try:
            response = httpx.post(srv.http_url + "/stream-upload", content=endless(), timeout=TIMEOUT)
        except httpx.TransportError:
            pass
        else:
            assert response.status_code == 413
    assert handled == [413, 413]


def test_response_without_reading_the_body_does_not_hang(server_name: str) -> None:
    app = make_app()

    @app.post("/login")
    def login() -> Response:
        return redirect("/home")

    def body() -> t.Iterator[bytes]:
        # Many more chunks than hypercorn queues for the app (10 messages),
        # within what the bridge drains to keep the connection.
        for _ in range(DRAIN_LIMIT // 2 // 8192):
            yield b"x" * 8192

    with LiveServer(app.asgi_app, server_name) as srv, httpx.Client(base_url=srv.http_url, timeout=TIMEOUT) as client:
        for _ in range(3):  # keep-alive: the same connection serves each one
            response = client.post("/login", content=body())
            assert response.status_code == REDIRECT_STATUS
            assert response.headers["location"] == "/home"


# -- request bodies received before the view runs --


def test_async_views_read_the_body(server_name: str) -> None:
    app = make_app(MAX_CONTENT_LENGTH=4 * 1024 * 1024)

    @app.post("/json")
    async def json_view() -> dict[str, t.Any]:
        await asyncio.sleep(0)
        return {"json": request.get_json(), "thread": threading.current_thread().name}

    @app.post("/form")
    async def form_view() -> dict[str, t.Any]:
        upload = request.files["file"]
        return {"name": request.form["name"], "file": upload.read().decode()}

    @app.post("/data")
    async def data_view() -> dict[str, t.Any]:
        data = request.get_data()
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    @app.post("/stream")
    async def stream_view() -> dict[str, t.Any]:
        digest = hashlib.sha256()
        while chunk := request.stream.read(64 * 1024):  # 413 past the limit
            digest.update(chunk)
            await asyncio.sleep(0)
        return {"sha256": digest.hexdigest()}

    big = os.urandom(3 * SPOOL_MEMORY)  # kept in a temporary file

    def chunked(data: bytes) -> t.Iterator[bytes]:
        for start in range(0, len(data), 10_000):
            yield data[start : start + 10_000]

    with LiveServer(app.asgi_app, server_name) as srv, httpx.Client(base_url=srv.http_url, timeout=TIMEOUT) as client:
        response = client.post("/json", json={"a": [1, 2]})
        assert response.json()["json"] == {"a": [1, 2]}
        assert not response.json()["thread"].startswith("asyncws-http")  # on the loop
        response = client.post("/form", data={"name": "n"}, files={"file": ("f.txt", b"content")})
        assert response.json() == {"name": "n", "file": "content"}
        for content in (lambda: big, lambda: chunked(big)):  # with a length, then chunked
            response = client.post("/data", content=content())
            assert response.json() == {"size": len(big), "sha256": hashlib.sha256(big).hexdigest()}
            assert client.post("/stream", content=content()).json() == {"sha256": hashlib.sha256(big).hexdigest()}
        too_big = b"x" * (5 * 1024 * 1024)
        assert client.post("/data", content=too_big).status_code == 413
        try:
            response = client.post("/stream", content=chunked(too_big))
        except httpx.TransportError:
            pass  # the rest of the body is not read, so the server may cut the connection
        else:
            assert response.status_code == 413


def test_async_views_run_in_the_test_client_without_asgiref(monkeypatch: pytest.MonkeyPatch) -> None:
    # Flask's own async_to_sync needs asgiref (the "async" extra), which is not a dependency.
    monkeypatch.setitem(sys.modules, "asgiref", None)
    monkeypatch.setitem(sys.modules, "asgiref.sync", None)
    app = make_app()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    loops: list[asyncio.AbstractEventLoop] = []

    @app.before_request
    async def before() -> None:
        var.set("set by an async hook")
        loops.append(asyncio.get_running_loop())

    @app.post("/json")
    async def json_view() -> dict[str, t.Any]:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        return {"json": request.get_json(), "var": var.get(), "thread": threading.current_thread().name}

    @app.get("/sync")
    def sync_view() -> str:
        return var.get()

    client = app.test_client()
    response = client.post("/json", json={"a": 1})
    assert response.status_code == 200, response.text
    assert response.json == {"json": {"a": 1}, "var": "set by an async hook", "thread": threading.current_thread().name}
    assert client.get("/sync").text == "set by an async hook"  # as asgiref copies context variables back
    # A new loop per call, closed after it; the thread's own event loop is left alone.
    assert len(set(map(id, loops))) == 3 and all(loop.is_closed() for loop in loops)
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_an_apps_own_async_to_sync_still_serves_calls_outside_the_server() -> None:
    calls: list[str] = []

    class OwnFlask(Flask):
        def async_to_sync(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
            calls.append(func.__name__)
            return lambda *args, **kwargs: asyncio.run(func(*args, **kwargs))

    app = OwnFlask(__name__)
    AsyncWS(app)

    @app.get("/")
    async def index() -> str:
        return "own"

    assert app.test_client().get("/").text == "own"
    assert calls == ["index"]


def slow_upload(port: int, path: str, declared: int, sent: bytes) -> socket.socket:
    """A POST that declares ``declared`` bytes of body and sends only ``sent``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
    sock.sendall(head + sent)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def read_one_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of one response that has a Content-Length."""
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        assert data, received
        received += data
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:])
    while len(body) < length:
        data = sock.recv(65536)
        assert data, received
        body += data
    return head, body


def test_slow_request_bodies_take_no_worker_thread(server_name: str) -> None:
    # More slow clients than the 32 worker threads of the default pool.
    timeout = 4.0
    app = make_app(ASYNCWS_BODY_TIMEOUT=timeout)
    started = threading.Semaphore(0)

    @app.post("/upload")
    def upload() -> str:
        return str(len(request.get_data()))

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    async def counting(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] == "http":
            started.release()
        await app.asgi_app(scope, receive, send)

    with LiveServer(counting, server_name) as srv, contextlib.ExitStack() as stack:
        since = time.monotonic()
        slow = [stack.enter_context(slow_upload(srv.port, "/upload", 100_000, b"0123456789")) for _ in range(40)]
        for _ in slow:  # every slow request has reached the app
            assert started.acquire(timeout=TIMEOUT)
        asked = time.monotonic()
        response = httpx.get(srv.http_url + "/hello", timeout=TIMEOUT)
        answered = time.monotonic() - asked
        assert response.text == "hello"
        assert answered < timeout / 2, answered
        for sock in slow:  # still waiting for their bodies
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
            sock.setblocking(True)
        # Then each gets 408 through Flask's error handling, and its connection is closed.
        for sock in slow:
            response_bytes = read_response(sock)
            assert response_bytes.startswith(b"HTTP/1.1 408 "), response_bytes[:100]
            assert b"connection: close" in response_bytes.lower()
        waited = time.monotonic() - since
        assert timeout <= waited < timeout + TIMEOUT, waited


def test_a_declared_length_over_max_content_length_is_refused_at_once(server_name: str) -> None:
    app = make_app(MAX_CONTENT_LENGTH=1000)  # the body timeout stays at its 60 s

    @app.post("/upload")
    def upload() -> str:
        return str(len(request.get_data()))

    with LiveServer(app.asgi_app, server_name) as srv:
        since = time.monotonic()
        with slow_upload(srv.port, "/upload", 10 * DRAIN_LIMIT, b"") as sock:
            head, _ = read_one_response(sock)
        assert head.startswith(b"HTTP/1.1 413 ")
        assert time.monotonic() - since < TIMEOUT / 2


def test_a_limit_raised_for_one_request_lets_a_sync_view_read_on(server_name: str) -> None:
    app = make_app(MAX_CONTENT_LENGTH=1000)

    @app.before_request
    def raise_limit() -> None:
        request.max_content_length = 100_000

    @app.post("/sync")
    def sync_view() -> str:
        return str(len(request.get_data()))

    @app.post("/async")
    async def async_view() -> str:
        return str(len(request.get_data()))

    with LiveServer(app.asgi_app, server_name) as srv, httpx.Client(base_url=srv.http_url, timeout=TIMEOUT) as client:
        assert client.post("/sync", content=b"x" * 5000).text == "5000"
        assert client.post("/sync", content=iter([b"x" * 3000, b"y" * 2000])).text == "5000"  # chunked
        # Code on the event loop cannot wait for what the server still holds.
        assert client.post("/async", content=b"x" * 5000).status_code == 413


def test_body_timeout_is_the_longest_wait_for_more_of_the_body(server_name: str) -> None:
    app = make_app(ASYNCWS_BODY_TIMEOUT=1.0)

    @app.post("/upload")
    def upload() -> str:
        return str(len(request.get_data()))

    with LiveServer(app.asgi_app, server_name) as srv:
        # Slow but steady: 2.5 seconds in all, never 1 second without data.
        with slow_upload(srv.port, "/upload", 6, b"") as sock:
            for _ in range(5):
                time.sleep(0.5)
                sock.sendall(b"x")
            sock.sendall(b"x")
            head, body = read_one_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"6"
        # Nothing at all after the headers.
        since = time.monotonic()
        with slow_upload(srv.port, "/upload", 6, b"") as sock:
            assert read_response(sock).startswith(b"HTTP/1.1 408 ")
        assert 1.0 <= time.monotonic() - since < 1.0 + TIMEOUT


# -- threads and the loop --


def test_async_views_share_the_server_loop(server_name: str) -> None:
    app = make_app()
    shared: dict[str, t.Any] = {}
    background_done = asyncio.Event  # created on the loop below

    @app.get("/async")
    async def async_view() -> dict[str, t.Any]:
        if "lock" not in shared:
            shared["lock"] = asyncio.Lock()
            shared["done"] = background_done()
        async with shared["lock"]:
            loop = asyncio.get_running_loop()

        async def later() -> None:
            await asyncio.sleep(0)
            shared["done"].set()

        shared["task"] = loop.create_task(later())  # outlives the response
        return {"loop": id(loop), "thread": threading.current_thread().name, "path": request.path}

    @app.before_request
    async def before() -> None:
        request.environ["hook_loop"] = id(asyncio.get_running_loop())

    @app.get("/sync")
    def sync_view() -> dict[str, t.Any]:
        return {"loop": request.environ["hook_loop"], "thread": threading.current_thread().name}

    with LiveServer(app.asgi_app, server_name) as srv:
        first = httpx.get(srv.http_url + "/async", timeout=TIMEOUT).json()
        second = httpx.get(srv.http_url + "/async", timeout=TIMEOUT).json()
        sync = httpx.get(srv.http_url + "/sync", timeout=TIMEOUT).json()
        assert srv.call(asyncio.wait_for(shared["done"].wait(), TIMEOUT)) is True
    server_loop = id(srv.loop)
    assert first["loop"] == second["loop"] == sync["loop"] == server_loop
    assert first["path"] == "/async"
    # Async views run on the loop's thread; sync views in the HTTP pool.
    assert not first["thread"].startswith("asyncws-http")
    assert sync["thread"].startswith("asyncws-http")


def test_sync_views_can_use_run_sync_and_await(server_name: str) -> None:
    """A sync view runs in a worker thread: run_sync() calls the function there,
    await_() runs a coroutine on the server's loop; both see the request."""
    from flask import current_app

    from flask_asyncws import await_, run_sync

    app = make_app()

    async def on_the_loop() -> dict[str, t.Any]:
        return {"loop": id(asyncio.get_running_loop()), "path": request.path}

    @app.get("/view")
    def view() -> dict[str, t.Any]:
        blocking = run_sync(lambda x: {"x": x, "path": request.path, "app": current_app.name}, 41)
        return {
            "run_sync": blocking,
            "run_sync_thread": run_sync(lambda: threading.current_thread().name),
            "thread": threading.current_thread().name,
            "await_": await_(on_the_loop()),
        }

    with LiveServer(app.asgi_app, server_name) as srv:
        response = httpx.get(srv.http_url + "/view", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run_sync"] == {"x": 41, "path": "/view", "app": "test_http"}
    assert body["run_sync_thread"] == body["thread"]
    assert body["thread"].startswith("asyncws-http")
    assert body["await_"] == {"loop": id(srv.loop), "path": "/view"}


def test_http_threads_are_separate_from_websockets() -> None:
    from websockets.sync.client import connect

    app = make_app(ASYNCWS_HTTP_THREADS=1)

    @app.websocket("/ws")
    def ws() -> None:
        from flask_asyncws import websocket

        while True:
            websocket.send(websocket.receive())

    @app.get("/")
    def index() -> str:
        return "ok"

    with LiveServer(app.asgi_app) as srv:
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(connect(srv.ws_url + "/ws", open_timeout=TIMEOUT)) for _ in range(20)]
            for sock in sockets:  # every handler is running, none in the HTTP pool
                sock.send("ping")
                assert sock.recv(TIMEOUT) == "ping"
            assert httpx.get(srv.http_url + "/", timeout=TIMEOUT).text == "ok"


def test_pool_is_shut_down_with_the_server() -> None:
    app = make_app()

    @app.get("/")
    def index() -> str:
        return "ok"

    bridge = app.asgi_app.http  # type: ignore[attr-defined]
    with LiveServer(app.asgi_app) as srv:
        assert httpx.get(srv.http_url + "/").text == "ok"
        pool = bridge._pool
        assert [thread.is_alive() for thread in pool.threads] == [True]
    # Lifespan shutdown stopped the workers; a new server would start a new pool.
    assert bridge._pool is None
    assert [thread.is_alive() for thread in pool.threads] == [False]


# -- HTTP and WSGI semantics --


def test_head_204_304_have_no_body(server_name: str) -> None:
    app = make_app()

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/empty")
    def empty() -> tuple[str, int]:
        return "", 204

    @app.get("/cached")
    def cached() -> Response:
        response = Response("cached body")
        response.set_etag("v1")
        return response.make_conditional(request)

    with LiveServer(app.asgi_app, server_name) as srv, httpx.Client(base_url=srv.http_url, timeout=TIMEOUT) as client:
        head = client.head("/hello")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "5")
        assert client.get("/empty").status_code == 204
        assert client.get("/empty").content == b""
        not_modified = client.get("/cached", headers={"If-None-Match": '"v1"'})
        assert (not_modified.status_code, not_modified.content) == (304, b"")
        assert client.get("/cached").text == "cached body"  # the connection is still in step


def test_repeated_headers_and_cookies(server_name: str) -> None:
    app = make_app()

    @app.get("/headers")
    def headers() -> Response:
        response = Response(
            f"{request.headers['X-Multi']}|{request.cookies['a']}|{request.cookies['b']}|{request.args.getlist('q')}"
        )
        response.set_cookie("one", "1")
        response.set_cookie("two", "2")
        return response

    with LiveServer(app.asgi_app, server_name) as srv:
        response = httpx.get(
            srv.http_url + "/headers?q=1&q=2",
            headers=[("X-Multi", "a"), ("X-Multi", "b"), ("Cookie", "a=1"), ("Cookie", "b=2")],
            timeout=TIMEOUT,
        )
    assert response.text == "a,b|1|2|['1', '2']"
    assert sorted(c.split(";")[0] for c in response.headers.get_list("set-cookie")) == ["one=1", "two=2"]


def test_root_path_is_script_name(server_name: str) -> None:
    app = make_app()

    @app.get("/where")
    def where() -> str:
        return f"{request.script_root}|{request.path}|{url_for('where')}"

    # Hypercorn expects the prefix in the request path; uvicorn treats it as
    # already stripped by a proxy and adds it to the scope's path.
    path = "/prefix/where" if server_name == "hypercorn" else "/where"
    with LiveServer(app.asgi_app, server_name, root_path="/prefix") as srv:
        response = httpx.get(srv.http_url + path, timeout=TIMEOUT)
    assert response.text == "/prefix|/where|/prefix/where"


def test_environ_from_the_scope() -> None:
    app = make_app()

    @app.post("/environ")
    def environ() -> dict[str, t.Any]:
        keys = ("REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "CONTENT_TYPE", "CONTENT_LENGTH")
        env = request.environ
        return {key: env.get(key) for key in keys} | {"scheme": env["wsgi.url_scheme"], "query": env["QUERY_STRING"]}

    with LiveServer(app.asgi_app) as srv:
        got = httpx.post(srv.http_url + "/environ?a=b%20c", json={"x": 1}, timeout=TIMEOUT).json()
        with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as h2:  # h2c, prior knowledge
            over_h2 = h2.post(srv.http_url + "/environ", content=b"12").json()
    assert got == {
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(srv.port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "7",
        "scheme": "http",
        "query": "a=b%20c",
    }
    assert over_h2["SERVER_PROTOCOL"] == "HTTP/2"
    assert over_h2["CONTENT_LENGTH"] == "2"


def test_build_environ_types_and_websocket_scopes() -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/app/é",
        "root_path": "/app",
        "query_string": b"x=1",
        "headers": [(b"x-a", b"1"), (b"x-a", b"2"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
        "server": ("example.com", "8443"),  # granian gives strings
        "client": ("10.0.0.1", 5000),
    }
    env = build_environ(scope)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/é".encode().decode("latin-1"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]) == ("example.com", "8443", "https")
    assert (env["HTTP_X_A"], env["HTTP_COOKIE"], env["REMOTE_PORT"]) == ("1,2", "a=1; b=2", "5000")
    assert build_environ({**scope, "server": ("h", 80)})["SERVER_PORT"] == "80"
    assert build_environ({**scope, "server": ("/sock", None)})["SERVER_PORT"] == ""
    ws = build_environ({**scope, "type": "websocket", "scheme": "wss"})
    assert (ws["REQUEST_METHOD"], ws["wsgi.url_scheme"]) == ("GET", "https")
    assert (ws["HTTP_UPGRADE"], ws["HTTP_CONNECTION"]) == ("websocket", "Upgrade")


def test_build_environ_takes_the_path_and_host_of_an_absolute_form_target() -> None:
    scope = {"type": "http", "path": "/", "root_path": "/app", "headers": [(b"host", b"proxy.example")]}

    def path_and_host(path: str) -> tuple[str, str, str]:
        env = build_environ({**scope, "path": path})
        return env["SCRIPT_NAME"], env["PATH_INFO"], env["HTTP_HOST"]

    assert path_and_host("http://app.example:81/app/a/b") == ("/app", "/a/b", "app.example:81")
    assert path_and_host("WSS://user@app.example/app") == ("/app", "", "app.example")
    assert path_and_host("http://app.example") == ("/app", "/", "app.example")
    assert path_and_host("http:///app/x") == ("/app", "/x", "proxy.example")  # no authority: Host stands
    assert path_and_host("/app/http://x/y") == ("/app", "/http://x/y", "proxy.example")
    assert path_and_host("*") == ("/app", "*", "proxy.example")
    assert path_and_host("mailto://x/y") == ("/app", "mailto://x/y", "proxy.example")


def test_wsgi_write_exc_info_and_close() -> None:
    """Raw PEP 3333 behaviour, through WSGI middleware around Flask."""
    app = make_app()
    closed: list[str] = []
    flask_app = app.wsgi_app

    class Closing:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def __iter__(self) -> t.Iterator[bytes]:
            return iter(self.chunks)

        def close(self) -> None:
            closed.append("closed")

    def middleware(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/write":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"written, ")
            return Closing([b"then ", b"iterated"])
        if path == "/replace":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("before any byte was sent")
            except ValueError:
                import sys

                start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
            return Closing([b"replaced"])
        return flask_app(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]

    with LiveServer(app.asgi_app) as srv:
        written = httpx.get(srv.http_url + "/write", timeout=TIMEOUT)
        replaced = httpx.get(srv.http_url + "/replace", timeout=TIMEOUT)
    assert (written.status_code, written.text) == (200, "written, then iterated")
    assert (replaced.status_code, replaced.text) == (503, "replaced")
    assert closed == ["closed", "closed"]


def test_error_in_the_response_iterable_is_a_500_and_closes() -> None:
    app = make_app()
    closed = threading.Event()

    @app.get("/broken")
    def broken() -> Response:
        def generate() -> t.Iterator[bytes]:
            try:
                raise RuntimeError("broken generator")
                yield b""
            finally:
                closed.set()

        return Response(generate())

    with LiveServer(app.asgi_app) as srv:
        response = httpx.get(srv.http_url + "/broken", timeout=TIMEOUT)
    assert response.status_code == 500
    assert closed.is_set()


# -- Flask features unchanged --


def test_flask_features(server_name: str, tmp_path: t.Any) -> None:
    (tmp_path / "style.css").write_text("body {}")
    app = Flask(__name__, static_folder=str(tmp_path), static_url_path="/static")
    app.secret_key = "test"
    AsyncWS(app)

    @app.post("/login")
    def login() -> Response:
        session["user"] = request.form["user"]
        return redirect(url_for("me"))

    @app.get("/me")
    def me() -> str:
        return session.get("user", "nobody")

    @app.get("/teapot")
    def teapot() -> str:
        abort(418)

    @app.get("/crash")
    def crash() -> str:
        raise KeyError("crash")

    @app.errorhandler(418)
    def on_teapot(error: Exception) -> tuple[str, int]:
        return "custom teapot", 418

    @app.errorhandler(500)
    def on_500(error: Exception) -> tuple[str, int]:
        return "custom 500", 500

    with LiveServer(app.asgi_app, server_name) as srv, httpx.Client(base_url=srv.http_url, timeout=TIMEOUT) as client:
        assert client.get("/me").text == "nobody"
        response = client.post("/login", data={"user": "ann"})
        assert (response.status_code, response.headers["location"]) == (REDIRECT_STATUS, "/me")
        assert client.get("/me").text == "ann"
        assert (client.get("/teapot").status_code, client.get("/teapot").text) == (418, "custom teapot")
        assert (client.get("/crash").status_code, client.get("/crash").text) == (500, "custom 500")
        assert client.get("/missing").status_code == 404
        static = client.get("/static/style.css")
        assert (static.status_code, static.text) == (200, "body {}")
        etag = static.headers["etag"]
        assert client.get("/static/style.css", headers={"If-None-Match": etag}).status_code == 304


def test_raw_socket_pipelined_requests() -> None:
    """Keep-alive over one socket, including a body the view never reads."""
    app = make_app()

    @app.post("/ignore")
    def ignore() -> str:
        return "ignored"

    with LiveServer(app.asgi_app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as sock:
            body = b"y" * 100_000
            request_bytes = b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            for _ in range(2):
                sock.sendall(request_bytes)
                received = b""
                while not received.endswith(b"ignored"):
                    data = sock.recv(65536)
                    assert data, "connection closed"
                    received += data
                assert received.startswith(b"HTTP/1.1 200")
