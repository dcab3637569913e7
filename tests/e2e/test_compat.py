"""Flask-Sock apps under an ASGI server through ``flask_asyncws.compat``.

The first tests run the usage shown in Flask-Sock's documentation (quick start,
example app, blueprint app) with only the import changed; the rest pin the
``ws`` object's behaviour to simple-websocket's.
"""

from __future__ import annotations

import threading
import types
import typing as t

import pytest
from flask import Blueprint, Flask
from support.servers import SERVERS, LiveServer
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.sync.client import ClientConnection, connect

from flask_asyncws.compat import ConnectionClosed, Sock

TIMEOUT = 10


def ws(url: str, **options: t.Any) -> ClientConnection:
    return connect(url, proxy=None, open_timeout=TIMEOUT, close_timeout=2, **options)


def flask_sock_module(source: str) -> types.ModuleType:
    """Run Flask-Sock ``source`` with its one import line changed."""
    assert "from flask_sock import Sock" in source
    module = types.ModuleType("flask_sock_app")
    exec(source.replace("from flask_sock import Sock", "from flask_asyncws.compat import Sock"), module.__dict__)
    return module


QUICKSTART = """
from flask import Flask, render_template
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@sock.route('/echo')
def echo(ws):
    while True:
        data = ws.receive()
        ws.send(data)
"""

EXAMPLE_APP = """
from flask import Flask, render_template
from flask_sock import Sock

app = Flask(__name__)
app.config['SOCK_SERVER_OPTIONS'] = {'ping_interval': 25}

sock = Sock(app)


@app.route('/')
def index():
    return render_template('index.html')


@sock.route('/echo')
def echo(ws):
    while True:
        data = ws.receive()
        if data == 'close':
            break
        ws.send(data)
"""

BLUEPRINT_APP = """
from flask import Flask
from flask_sock import Sock

sock = Sock()


@sock.route('/echo')
def echo(ws):
    while True:
        data = ws.receive()
        if data == 'close':
            break
        ws.send(data)


def create_app():
    app = Flask(__name__)
    sock.init_app(app)
    return app
"""


@pytest.mark.parametrize("server", SERVERS)
def test_quickstart(server: str) -> None:
    app = flask_sock_module(QUICKSTART).app
    with LiveServer(app.asgi_app, server) as srv, ws(srv.ws_url + "/echo") as conn:
        for message in ("hello", b"\x01\x02"):
            conn.send(message)
            assert conn.recv(TIMEOUT) == message


@pytest.mark.parametrize("source", [EXAMPLE_APP, BLUEPRINT_APP], ids=["example", "deferred-init"])
def test_documented_echo_app(source: str) -> None:
    module = flask_sock_module(source)
    app = module.create_app() if hasattr(module, "create_app") else module.app
    if source is EXAMPLE_APP:
        assert app.config["ASYNCWS_PING_INTERVAL"] == 25  # from SOCK_SERVER_OPTIONS
    with LiveServer(app.asgi_app) as srv, ws(srv.ws_url + "/echo") as conn:
        conn.send("hi")
        assert conn.recv(TIMEOUT) == "hi"
        conn.send("close")
        with pytest.raises(ClientClosed):
            conn.recv(TIMEOUT)
        assert conn.close_code == 1000


def test_route_on_blueprint_with_url_variables() -> None:
    app = Flask(__name__)
    sock = Sock(app)
    bp = Blueprint("rooms", __name__)

    @sock.route("/<room>/<int:n>", bp=bp)
    def room(ws: t.Any, room: str, n: int) -> None:
        ws.send(f"{room} {n + 1}")

    app.register_blueprint(bp, url_prefix="/rooms")
    assert room.__name__ == "room"  # the decorator returns the function
    with LiveServer(app.asgi_app) as srv, ws(srv.ws_url + "/rooms/kitchen/41") as conn:
        assert conn.recv(TIMEOUT) == "kitchen 42"


@pytest.fixture
def served() -> t.Iterator[tuple[Sock, t.Callable[[], LiveServer]]]:
    app = Flask(__name__)
    sock = Sock(app)
    started: list[LiveServer] = []

    def start() -> LiveServer:
        started.append(LiveServer(app.asgi_app).start())
        return started[-1]

    yield sock, start
    for srv in started:
        srv.stop()


def test_receive_timeout_never_loses_a_message(served: tuple[Sock, t.Callable[[], LiveServer]]) -> None:
    sock, start = served

    @sock.route("/t")
    def timed(ws: t.Any) -> None:
        ws.send(repr(ws.receive(timeout=0)))  # nothing yet
        ws.send(repr(ws.receive(timeout=0.05)))  # nothing within 50 ms
        ws.send("go")
        while (data := ws.receive(timeout=0.001)) is None:
            pass  # many short timeouts while the message arrives
        ws.send(f"got {data}")
        assert ws.receive() == "second"
        while (data := ws.receive(timeout=0)) is None:
            pass  # polling without waiting still gets the message, once it is there
        ws.send(repr(data))

    with ws(start().ws_url + "/t") as conn:
        assert conn.recv(TIMEOUT) == "None"
        assert conn.recv(TIMEOUT) == "None"
        assert conn.recv(TIMEOUT) == "go"
        conn.send("first")
        assert conn.recv(TIMEOUT) == "got first"
        conn.send("second")
        conn.send("third")
        assert conn.recv(TIMEOUT) == "'third'"


def test_receive_timeouts_under_load(served: tuple[Sock, t.Callable[[], LiveServer]]) -> None:
    sock, start = served
    count = 500

    @sock.route("/count")
    def counting(ws: t.Any) -> None:
        received = []
        while len(received) < count:
            data = ws.receive(timeout=0.0005)
            if data is not None:
                received.append(int(data))
        ws.send("ok" if received == list(range(count)) else f"lost or reordered: {received}")

    with ws(start().ws_url + "/count") as conn:
        for i in range(count):
            conn.send(str(i))
        assert conn.recv(TIMEOUT) == "ok"


def test_close_with_code_and_message(served: tuple[Sock, t.Callable[[], LiveServer]]) -> None:
    sock, start = served
    states = []

    @sock.route("/close")
    def closing(ws: t.Any) -> None:
        states.append(ws.connected)
        ws.close(reason=4001, message="bye now")
        states.append(ws.connected)
        with pytest.raises(ConnectionClosed):
            ws.send("too late")
        with pytest.raises(ConnectionClosed):
            ws.close()
        states.append("done")

    with ws(start().ws_url + "/close") as conn:
        with pytest.raises(ClientClosed):
            conn.recv(TIMEOUT)
        assert (conn.close_code, conn.close_reason) == (4001, "bye now")
    assert states == [True, False, "done"]


def test_client_leaving_raises_connection_closed(served: tuple[Sock, t.Callable[[], LiveServer]]) -> None:
    sock, start = served
    outcome: list[t.Any] = []
    finished = threading.Event()

    @sock.route("/leave")
    def leaving(ws: t.Any) -> None:
        try:
            ws.send("ready")
            while True:
                ws.receive()
        except ConnectionClosed as exc:
            outcome.append((ws.connected, isinstance(exc.reason, int)))
            raise  # swallowed by the route, as Flask-Sock does
        finally:
            finished.set()

    with ws(start().ws_url + "/leave") as conn:
        assert conn.recv(TIMEOUT) == "ready"
    assert finished.wait(TIMEOUT)
    assert outcome == [(False, True)]


@pytest.mark.parametrize("timeout", [None, 0.001, TIMEOUT], ids=["receive", "short-timeouts", "timeout"])
@pytest.mark.parametrize("mode", ["greenlet", "thread"])
def test_messages_sent_before_a_close_all_reach_receive(serve: t.Any, mode: str, timeout: float | None) -> None:
    """As simple-websocket: buffered messages first, then ConnectionClosed."""
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = mode
    sock = Sock(app)
    count = 50
    received: list[t.Any] = []
    torn_down = threading.Event()

    @app.teardown_websocket
    def teardown(exc: BaseException | None) -> None:
        received.append(("teardown", exc))
        torn_down.set()

    @sock.route("/ws")
    def handler(ws: t.Any) -> None:
        ws.send("ready")
        try:
            while True:
                data = ws.receive(timeout=timeout)
                if data is not None:
                    received.append(data)
        except ConnectionClosed:
            received.append("closed")
            raise  # swallowed by the route, as Flask-Sock does

    srv = serve(app)
    for _ in range(3):  # the ends of a receive race with the close: try a few
        received.clear()
        torn_down.clear()
        with ws(srv.ws_url + "/ws") as conn:
            assert conn.recv(TIMEOUT) == "ready"
            for i in range(count):
                conn.send(str(i))
        assert torn_down.wait(TIMEOUT)
        assert received == [*map(str, range(count)), "closed", ("teardown", None)]


def test_send_from_another_thread(served: tuple[Sock, t.Callable[[], LiveServer]]) -> None:
    """Flask-Sock apps often push from a background thread (a clock, a feed)."""
    sock, start = served

    @sock.route("/feed")
    def feed(ws: t.Any) -> None:
        def push() -> None:
            for i in range(3):
                ws.send(f"tick {i}")
            ws.send(b"done")

        worker = threading.Thread(target=push)
        worker.start()
        assert ws.receive() == "stop"
        worker.join(TIMEOUT)

    with ws(start().ws_url + "/feed") as conn:
        assert [conn.recv(TIMEOUT) for _ in range(4)] == ["tick 0", "tick 1", "tick 2", b"done"]
        conn.send("stop")


def test_send_converts_like_simple_websocket(served: tuple[Sock, t.Callable[[], LiveServer]]) -> None:
    sock, start = served

    @sock.route("/types")
    def types_(ws: t.Any) -> None:
        ws.send(42)
        ws.send(bytearray(b"ab"))
        ws.send({"a": 1})

    with ws(start().ws_url + "/types") as conn:
        assert [conn.recv(TIMEOUT) for _ in range(3)] == ["42", b"ab", "{'a': 1}"]


def test_subprotocols_from_sock_server_options() -> None:
    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"subprotocols": ["chat.v2", "chat.v1"]}
    sock = Sock(app)

    @sock.route("/proto")
    def proto(ws: t.Any) -> None:
        ws.send(str(ws.subprotocol))

    with LiveServer(app.asgi_app) as srv:
        with ws(srv.ws_url + "/proto", subprotocols=["chat.v1", "chat.v2"]) as conn:  # type: ignore[list-item]
            assert conn.subprotocol == "chat.v1"  # the client's first choice the server allows
            assert conn.recv(TIMEOUT) == "chat.v1"
        with ws(srv.ws_url + "/proto", subprotocols=["other"]) as conn:  # type: ignore[list-item]
            assert conn.subprotocol is None
            assert conn.recv(TIMEOUT) == "None"


def test_a_subprotocols_string_is_one_subprotocol() -> None:
    """simple-websocket takes ``subprotocols="bar"`` as ``["bar"]``, not as its characters."""
    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"subprotocols": "bar"}
    sock = Sock(app)

    @sock.route("/proto")
    def proto(ws: t.Any) -> None:
        ws.send(str(ws.subprotocol))

    with LiveServer(app.asgi_app) as srv:
        for offered, chosen in ((["foo", "bar"], "bar"), (["b"], None), (["b", "a", "r"], None)):
            with ws(srv.ws_url + "/proto", subprotocols=offered) as conn:  # type: ignore[arg-type]
                assert conn.subprotocol == chosen, offered
                assert conn.recv(TIMEOUT) == str(chosen)


def test_async_handler_is_refused_at_registration() -> None:
    sock = Sock(Flask(__name__))
    with pytest.raises(TypeError, match="async"):

        @sock.route("/a")
        async def handler(ws: t.Any) -> None:
            pass


def test_thread_mode_for_blocking_handlers() -> None:
    """Flask-Sock handlers that block (time.sleep) can keep a thread each."""
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread"
    sock = Sock(app)

    @sock.route("/slow")
    def slow(ws: t.Any) -> None:
        import time

        time.sleep(0.01)
        ws.send(repr(ws.receive(timeout=0.01)))
        ws.send(ws.receive(timeout=TIMEOUT))
        ws.close(4000, "done")

    with LiveServer(app.asgi_app) as srv, ws(srv.ws_url + "/slow") as conn:
        assert conn.recv(TIMEOUT) == "None"
        conn.send("hey")
        assert conn.recv(TIMEOUT) == "hey"
        with pytest.raises(ClientClosed):
            conn.recv(TIMEOUT)
        assert (conn.close_code, conn.close_reason) == (4000, "done")
