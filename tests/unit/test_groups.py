"""Groups in process (no broker), with the test client: it runs ``app.asgi_app`` as a server would.

Each test client websocket runs on an event loop of its own, so these also
show delivery to members on other loops than the publisher's.
"""

from __future__ import annotations

import datetime
import gc
import threading
import time
import typing as t
import warnings

import pytest
from flask import Flask, request
from flask.json.provider import DefaultJSONProvider

from flask_asyncws import AsyncWS, BrokerUnavailable, WebsocketDisconnect, broker_behind, websocket
from flask_asyncws._groups import hub_of
from flask_asyncws.testing import TestWebsocket


class SortedJSON(DefaultJSONProvider):
    sort_keys = True

    @staticmethod
    def default(o: t.Any) -> t.Any:
        if isinstance(o, datetime.date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.json = SortedJSON(app)
    asyncws = AsyncWS(app)
    app.extensions["torn_down_counts"] = []

    @app.websocket("/sync/<room>")
    def sync_member(room: str) -> None:
        websocket.join(room, presence=request.args.get("user"))
        while True:
            message = websocket.receive()
            if message == "leave":
                websocket.leave(room)
                websocket.send(f"left {sorted(websocket.groups)}")
            elif message == "groups":
                websocket.send(repr(sorted(websocket.groups)))
            elif message == "fail":
                raise RuntimeError("the handler failed")
            elif message == "return":
                return
            else:
                asyncws.publish(room, message)

    @app.websocket("/async/<room>")
    async def async_member(room: str) -> None:
        await websocket.join(room, presence=request.args.get("user"))
        await websocket.join("everyone")
        while True:
            message = await websocket.receive()
            if message == "count":
                await websocket.send(f"{await asyncws.count(room)} {await asyncws.presence(room)}")
            else:
                await asyncws.publish(room, message)

    @app.teardown_websocket
    def record_count(exc: BaseException | None) -> None:
        room = (request.view_args or {}).get("room")
        if room is not None:
            app.extensions["torn_down_counts"].append(asyncws.count(room))

    @app.post("/publish/<room>")
    def publish(room: str) -> tuple[str, int]:
        asyncws.publish(room, request.get_json())
        return "", 204

    @app.post("/apublish/<room>")
    async def apublish(room: str) -> tuple[str, int]:
        await asyncws.publish(room, request.get_data())
        return "", 204

    @app.get("/who/<room>")
    def who(room: str) -> dict[str, t.Any]:
        return {"count": asyncws.count(room), "presence": asyncws.presence(room)}

    return app


def wait_for(predicate: t.Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def member(app: Flask, path: str) -> TestWebsocket:
    """A connected member: its join has returned (the handler asked for its groups)."""
    ws = app.test_client().websocket(path)  # type: ignore[attr-defined]
    ws.__enter__()
    return t.cast(TestWebsocket, ws)


def test_every_member_receives_a_publish_as_text_binary_or_json(app: Flask) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]
    with app.test_client().websocket("/sync/lobby") as a, app.test_client().websocket("/async/lobby") as b:
        a.send("groups")
        assert a.receive() == "['lobby']"
        b.send("count")
        assert b.receive() == "2 {}"
        asyncws.publish("lobby", "text")
        asyncws.publish("lobby", b"\x00binary")
        asyncws.publish("lobby", {"when": datetime.date(2026, 12, 3), "b": 1})
        for ws in (a, b):
            assert ws.receive() == "text"
            assert ws.receive() == b"\x00binary"
            assert ws.receive() == '{"b": 1, "when": "2026-12-03"}'  # through app.json: its sort and default


def test_messages_arrive_in_publish_order_and_only_after_joining(app: Flask) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]
    with app.test_client().websocket("/sync/r") as a:
        a.send("groups")
        assert a.receive() == "['r']"
        asyncws.publish("r", "before b joined")
        with app.test_client().websocket("/sync/r") as b:
            b.send("groups")
            assert b.receive() == "['r']"
            for i in range(200):
                asyncws.publish("r", str(i))
            assert a.receive() == "before b joined"
            assert [a.receive() for _ in range(200)] == [str(i) for i in range(200)]
            assert [b.receive() for _ in range(200)] == [str(i) for i in range(200)]


def test_a_member_publishing_reaches_everyone_including_itself(app: Flask) -> None:
    with app.test_client().websocket("/sync/r") as a, app.test_client().websocket("/async/r") as b:
        a.send("groups")
        a.receive()
        b.send("count")
        b.receive()
        a.send("from a")
        b.send("from b")
        assert sorted([a.receive(), a.receive()]) == ["from a", "from b"]
        assert sorted([b.receive(), b.receive()]) == ["from a", "from b"]


def test_publish_from_sync_and_async_views(app: Flask) -> None:
    with app.test_client().websocket("/sync/news") as a:
        a.send("groups")
        a.receive()
        client = app.test_client()
        assert client.post("/publish/news", json={"headline": "hi"}).status_code == 204
        assert client.post("/apublish/news", data=b"raw").status_code == 204
        assert a.receive() == '{"headline": "hi"}'
        assert a.receive() == b"raw"


def test_leave_stops_delivery_and_groups_follow(app: Flask) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]
    with app.test_client().websocket("/sync/r") as a, app.test_client().websocket("/sync/r") as b:
        for ws in (a, b):
            ws.send("groups")
            assert ws.receive() == "['r']"
        a.send("leave")
        assert a.receive() == "left []"
        assert asyncws.count("r") == 1
        asyncws.publish("r", "only b")
        assert b.receive() == "only b"
        a.send("groups")
        assert a.receive() == "[]"  # and "only b" never came before it


def test_count_and_presence_count_connections_a_user_with_two_tabs_twice(app: Flask) -> None:
    client = app.test_client()
    with client.websocket("/sync/r?user=ada") as a1, client.websocket("/sync/r?user=ada") as a2:
        with client.websocket("/async/r?user=bob") as b:
            for ws in (a1, a2):
                ws.send("groups")
                ws.receive()
            b.send("count")
            assert b.receive() == "3 {'ada': 2, 'bob': 1}"
            assert client.get("/who/r").json == {"count": 3, "presence": {"ada": 2, "bob": 1}}
        wait_for(lambda: client.get("/who/r").json == {"count": 2, "presence": {"ada": 2}})
    wait_for(lambda: client.get("/who/r").json == {"count": 0, "presence": {}})


@pytest.mark.parametrize("ending", ["return", "fail", "client leaves"])
def test_a_connection_leaves_its_groups_before_its_teardown_however_it_ends(app: Flask, ending: str) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]
    torn_down: list[int] = app.extensions["torn_down_counts"]
    with app.test_client().websocket("/sync/r") as stays:
        stays.send("groups")
        stays.receive()
        with app.test_client().websocket("/sync/r") as goes:
            goes.send("groups")
            goes.receive()
            assert asyncws.count("r") == 2
            if ending != "client leaves":
                goes.send(ending)
                with pytest.raises(WebsocketDisconnect):
                    goes.receive()
        wait_for(lambda: len(torn_down) == 1)
        assert torn_down == [1]  # in its own teardown, the connection is no longer counted
        asyncws.publish("r", "after")
        assert stays.receive() == "after"


def test_join_accepts_the_handshake(app: Flask) -> None:
    @app.websocket("/join-first")
    def join_first() -> None:
        websocket.join("r")
        websocket.send(f"accepted={websocket.accepted}")

    with app.test_client().websocket("/join-first") as ws:
        assert ws.receive() == "accepted=True"


def test_misuse_says_what_to_do(app: Flask) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]
    errors: list[str] = []

    @app.websocket("/misuse")
    def misuse() -> None:
        calls = (
            lambda: websocket.leave(3),  # before any join
            lambda: websocket.join(""),
            lambda: websocket.join("r", presence=5),
            # What a client's JSON can hold ("\ud800" is valid JSON) but UTF-8 cannot carry.
            lambda: websocket.join("\ud800"),
            lambda: websocket.join("r", presence="ann\udc80"),
        )
        for call in calls:
            try:
                call()
            except (TypeError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        websocket.send(repr(sorted(websocket.groups)))

    with app.test_client().websocket("/misuse") as ws:
        assert ws.receive() == "[]"
    assert errors == [
        "TypeError: A group is named by a non-empty str, not 3.",
        "TypeError: A group is named by a non-empty str, not ''.",
        "TypeError: presence= is a str naming who joined (a user name or id) or None, not 5.",
        "ValueError: A group name must be text UTF-8 can encode (no lone surrogates), not '\\ud800'.",
        "ValueError: presence= must be text UTF-8 can encode (no lone surrogates), not 'ann\\udc80'.",
    ]
    with pytest.raises(ValueError, match="no lone surrogates"):
        asyncws.publish("\ud800", "x")
    with pytest.raises(TypeError, match="non-empty str"):
        asyncws.publish(None, "x")  # type: ignore[arg-type]

    limited = Flask("limited")
    limited.config["ASYNCWS_MAX_MESSAGE_SIZE"] = 10
    with pytest.raises(ValueError, match=r"A message of 11 bytes exceeds ASYNCWS_MAX_MESSAGE_SIZE \(10\)"):
        AsyncWS(limited).publish("r", "x" * 11)
    with pytest.raises(ValueError, match=r"cannot fit a member's outbox \(ASYNCWS_OUTBOX_LIMIT, 1048576 bytes\)"):
        asyncws.publish("r", b"x" * (1024 * 1024 + 1))

    factory_made = AsyncWS()
    other = Flask("other")
    factory_made.init_app(other)
    with pytest.raises(RuntimeError, match=r"inside app.app_context\(\)"):
        factory_made.publish("r", "x")
    with other.app_context():
        factory_made.publish("r", "x")  # nobody there: nothing to do
        assert factory_made.count("r") == 0


def test_a_publish_need_not_be_awaited(app: Flask) -> None:
    """In async code a publish starts when called; not awaiting it delivers, with no "never awaited" warning."""
    asyncws: AsyncWS = app.extensions["asyncws"]

    @app.websocket("/fire/<room>")
    async def fire(room: str) -> None:
        await websocket.join(room)
        await websocket.receive()
        asyncws.publish(room, "fired")  # not awaited
        await asyncws.publish(room, "awaited")

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with app.test_client().websocket("/fire/r") as ws:
            ws.send("go")
            assert [ws.receive(), ws.receive()] == ["fired", "awaited"]
        gc.collect()  # a coroutine never awaited warns once collected
    assert not [w for w in warned if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in warned]


def test_joining_again_with_another_presence_misses_nothing(app: Flask) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]

    @app.websocket("/away/<room>")
    def away(room: str) -> None:
        websocket.join(room, presence="ada")
        asyncws.publish(room, "m1")  # queued for the members: this one is still one after the next join
        websocket.join(room, presence="ada (away)")
        asyncws.publish(room, "m2")
        websocket.send(f"{asyncws.presence(room)}")
        websocket.receive()

    with app.test_client().websocket("/away/r") as ws:
        assert sorted([ws.receive(), ws.receive(), ws.receive()]) == ["m1", "m2", "{'ada (away)': 1}"]


def test_publishing_faster_than_a_loop_delivers_is_said(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """In process, what a busy loop has not delivered yet waits in memory: over 10,000 messages, a warning and
    the broker_behind signal say so, and every message still arrives."""
    asyncws: AsyncWS = app.extensions["asyncws"]
    signalled: list[dict[str, t.Any]] = []
    broker_behind.connect(lambda sender, **extra: signalled.append(extra), app, weak=False)

    @app.websocket("/busy")
    def busy() -> None:
        websocket.join("r")
        websocket.send("joined")
        websocket.receive()
        websocket.send("holding")
        time.sleep(3)  # holds this loop: nothing is delivered meanwhile
        websocket.receive()

    with app.test_client().websocket("/busy") as ws:
        assert ws.receive() == "joined"
        ws.send("hold")
        assert ws.receive() == "holding"
        for i in range(10_001):
            asyncws.publish("r", str(i))
        assert [ws.receive() for _ in range(10_001)] == [str(i) for i in range(10_001)]
    assert "falling behind its groups: 10001 messages wait for delivery on one event loop" in caplog.text, (
        "the publishes took longer than the handler held its loop"
    )
    assert signalled[:1] == [{"lag": None, "lost": False}]


def test_no_event_loop_is_kept_once_its_members_have_left(app: Flask) -> None:
    """The chat pattern: a member publishes as its handler ends, so a message is queued on its loop as it
    leaves. Each test client websocket has a loop of its own; none stays in the app's groups."""
    asyncws: AsyncWS = app.extensions["asyncws"]

    @app.websocket("/bye/<room>")
    def bye(room: str) -> None:
        websocket.join(room)
        websocket.receive()
        asyncws.publish(room, "bye")

    for _ in range(5):
        with app.test_client().websocket("/bye/r") as ws:
            ws.send("go")
    wait_for(lambda: asyncws.count("r") == 0)
    wait_for(lambda: hub_of(app).rooms == {})


def test_an_unreachable_broker_raises_broker_unavailable_and_websockets_keep_working() -> None:
    with socket_nobody_listens_on() as port:
        app = Flask(__name__)
        app.config["ASYNCWS_BROKER_URL"] = f"redis://:s3cret@127.0.0.1:{port}/0"
        asyncws = AsyncWS(app)

        @app.websocket("/echo")
        def echo() -> None:
            websocket.join("r")
            while True:
                websocket.send(websocket.receive())

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            asyncws.publish("r", "x")
        assert isinstance(info.value, ConnectionError)
        assert f"redis://:***@127.0.0.1:{port}/0" in str(info.value)
        assert "s3cret" not in str(info.value)
        for call in (asyncws.count, asyncws.presence):
            with pytest.raises(BrokerUnavailable):
                call("r")
        assert time.monotonic() - started < 30  # refused at once; bounded in any case
        with app.test_client().websocket("/echo") as ws:
            ws.send("still here")
            assert ws.receive() == "still here"

        # redis-py also takes the password as a URL option.
        in_query = Flask(__name__)
        in_query.config["ASYNCWS_BROKER_URL"] = f"redis://127.0.0.1:{port}/0?password=s3cret&socket_keepalive=1"
        with pytest.raises(BrokerUnavailable) as info:
            AsyncWS(in_query).publish("r", "x")
        assert f"redis://127.0.0.1:{port}/0?password=***&socket_keepalive=1" in str(info.value)
        assert "s3cret" not in str(info.value)


class socket_nobody_listens_on:
    """A port of 127.0.0.1 held by a bound socket that does not listen: connects are refused."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc_info: t.Any) -> None:
        self.sock.close()


def test_publish_from_many_threads_reaches_every_member_once(app: Flask) -> None:
    asyncws: AsyncWS = app.extensions["asyncws"]
    with app.test_client().websocket("/sync/r") as a:
        a.send("groups")
        a.receive()

        def publish(n: int) -> None:
            for i in range(50):
                asyncws.publish("r", f"{n}-{i}")

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        got = [a.receive() for _ in range(200)]
        assert sorted(got) == sorted(f"{n}-{i}" for n in range(4) for i in range(50))
        for n in range(4):  # each publisher's messages in its order
            assert [m for m in got if m.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(50)]


def test_thread_mode_handlers_join_and_publish() -> None:
    app = Flask(__name__)
    app.config["ASYNCWS_SYNC_HANDLER_MODE"] = "thread"
    asyncws = AsyncWS(app)

    @app.websocket("/member")
    def member() -> None:
        websocket.join("r", presence=threading.current_thread().name)
        while True:
            asyncws.publish("r", websocket.receive())

    client = app.test_client()
    with client.websocket("/member") as a, client.websocket("/member") as b:
        a.send("from a thread")
        assert a.receive() == b.receive() == "from a thread"
        assert asyncws.count("r") == 2
        assert sum(asyncws.presence("r").values()) == 2
