"""Groups through a real redis-server with the test client; a worker behind its groups says so.

The app runs under the test client (which serves ``app.asgi_app`` on its own
loops); the broker side is real: messages go through Redis, and the outage is
the server stopped.
"""

from __future__ import annotations

import logging
import struct
import time
import typing as t

import pytest
from flask import Flask, current_app
from support.extras import asyncws_metrics, prometheus_client, redis
from support.redis_server import RedisProxy, RedisServer

import flask_asyncws._broker
from flask_asyncws import AsyncWS, BrokerUnavailable, broker_behind, websocket
from flask_asyncws._groups import close_hub, hub_of

#: The apps a test made: the test client runs no lifespan, so their brokers are closed here.
made: list[Flask] = []


@pytest.fixture(autouse=True)
def close_brokers() -> t.Iterator[None]:
    yield
    while made:
        close_hub(made.pop())


def make_app(url: str) -> tuple[Flask, AsyncWS, t.Any]:
    app = Flask(__name__)
    made.append(app)
    app.config["ASYNCWS_BROKER_URL"] = url
    asyncws = AsyncWS(app)
    registry = prometheus_client.CollectorRegistry()
    asyncws_metrics.init_metrics(app, registry=registry)

    @app.websocket("/member")
    def member() -> None:
        websocket.join("r")
        websocket.send("joined")
        while True:
            websocket.receive()

    return app, asyncws, registry


def wait_for(predicate: t.Callable[[], t.Any], within: float = 15.0) -> t.Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)


def test_members_on_the_test_client_receive_through_redis(redis_server: RedisServer) -> None:
    app, asyncws, _ = make_app(redis_server.url)
    with app.test_client().websocket("/member") as a, app.test_client().websocket("/member") as b:
        assert a.receive() == b.receive() == "joined"
        assert asyncws.count("r") == 2
        for i in range(50):
            asyncws.publish("r", {"n": i})
        for ws in (a, b):
            assert [ws.receive() for _ in range(50)] == [f'{{"n": {i}}}' for i in range(50)]
    wait_for(lambda: asyncws.count("r") == 0)


def test_a_client_joined_on_connect_misses_nothing_published_once_connected(redis_server: RedisServer) -> None:
    app, asyncws, _ = make_app(redis_server.url)

    @app.websocket("/joins-on-connect")
    def joins_on_connect() -> None:
        websocket.join("news")  # accepts once a member: the client sees the connection open after the join
        while True:
            websocket.receive()

    client = app.test_client()
    for i in range(20):
        with client.websocket("/joins-on-connect") as ws:
            asyncws.publish("news", str(i))
            assert ws.receive() == str(i)


def test_a_process_that_only_publishes_and_counts_holds_no_subscription(redis_server: RedisServer) -> None:
    app, asyncws, _ = make_app(redis_server.url)
    asyncws.publish("r", "nobody there")
    assert asyncws.count("r") == 0 and asyncws.presence("r") == {}
    observer = redis.Redis.from_url(redis_server.url)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a subscription started with the broker would show within this
        assert [c for c in observer.client_list() if int(c["sub"]) or int(c["psub"])] == []
        assert observer.keys("asyncws:w:*") == []  # no heartbeat either
        time.sleep(0.05)


def watched_app(url: str, caplog: pytest.LogCaptureFixture) -> tuple[Flask, AsyncWS, t.Any, list[dict[str, t.Any]]]:
    """An app whose warnings, metrics and ``broker_behind`` signals (as they come) the test reads."""
    caplog.set_level(logging.WARNING, "flask_asyncws")
    app, asyncws, registry = make_app(url)
    signalled: list[dict[str, t.Any]] = []
    broker_behind.connect(lambda sender, **extra: signalled.append(extra), app, weak=False)
    return app, asyncws, registry, signalled


def test_late_messages_are_logged_signalled_and_counted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app, asyncws, registry, signalled = watched_app(redis_server.url, caplog)
    with app.test_client().websocket("/member") as ws:
        assert ws.receive() == "joined"
        # A message published 10 s ago, as a publisher's clock would stamp it
        # (the wire form: b"t", the publish time as a big-endian double, the text).
        late = struct.pack(">cd", b"t", time.time() - 10) + b"late"
        redis.Redis.from_url(redis_server.url).publish("asyncws:g:r", late)
        assert ws.receive() == "late"  # delivered all the same
    assert len(signalled) == 1 and signalled[0]["lost"] is False and 9 < signalled[0]["lag"] < 60
    assert "falling behind its groups: messages reach its members 10." in caplog.text
    assert registry.get_sample_value("asyncws_broker_behind_total", {"lost": "false"}) == 1
    assert 9 < t.cast(float, registry.get_sample_value("asyncws_broker_lag_seconds")) < 60


def test_a_lost_broker_is_logged_signalled_and_counted_then_restored(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app, asyncws, registry, signalled = watched_app(redis_server.url, caplog)
    with app.test_client().websocket("/member") as ws:
        assert ws.receive() == "joined"
        redis_server.stop()
        wait_for(lambda: signalled)
        assert signalled == [{"lag": None, "lost": True}]
        assert registry.get_sample_value("asyncws_broker_behind_total", {"lost": "true"}) == 1
        assert f"Lost the broker at {redis_server.url}" in caplog.text
        redis_server.start()

        def delivered() -> bool:
            try:  # until the worker has subscribed again, a publish may fail or reach nobody (at most once)
                asyncws.publish("r", "back")
                return ws.receive(timeout=0.3) == "back"
            except (BrokerUnavailable, TimeoutError):
                return False

        wait_for(delivered)
        assert "is back after" in caplog.text
        wait_for(lambda: asyncws.count("r") == 1)  # its tally rewritten in the restarted, empty Redis


def test_a_broker_behind_receiver_that_raises_stops_nothing(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Receivers run in the app's context; one that raises is logged, and delivery goes on."""
    app, asyncws, registry = make_app(redis_server.url)
    seen: list[str] = []

    @broker_behind.connect_via(app)
    def fails(sender: Flask, **extra: t.Any) -> None:
        seen.append(current_app.name)
        raise RuntimeError("the receiver failed")

    with app.test_client().websocket("/member") as ws:
        assert ws.receive() == "joined"
        late = struct.pack(">cd", b"t", time.time() - 10) + b"late"
        redis.Redis.from_url(redis_server.url).publish("asyncws:g:r", late)
        for i in range(5):
            asyncws.publish("r", str(i))
        assert [ws.receive() for _ in range(6)] == ["late", "0", "1", "2", "3", "4"]
        redis_server.stop()  # and the receiver fails again, on the broker's thread
        wait_for(lambda: len(seen) == 2)
        redis_server.start()
        wait_for(lambda: asyncws.count("r") == 1)  # reconnected and counted again all the same
    assert seen == [app.name, app.name]
    assert caplog.text.count("A broker_behind receiver failed") == 2
    assert "RuntimeError: the receiver failed" in caplog.text


def test_a_publish_is_never_sent_twice(redis_server: RedisServer) -> None:
    """A connection lost after Redis ran a PUBLISH (the reply lost): the publish raises, and the members got it once."""
    with RedisProxy(redis_server, drop_after_publish=True) as proxy:
        app, asyncws, _ = make_app(proxy.url)
        with app.test_client().websocket("/member") as ws:
            assert ws.receive() == "joined"
            with pytest.raises(BrokerUnavailable):
                asyncws.publish("r", "once")
            assert proxy.dropped.is_set()
            asyncws.publish("r", "next")
            assert [ws.receive(), ws.receive()] == ["once", "next"]


def test_a_subscriber_connection_that_hangs_is_given_up_and_made_again(redis_server: RedisServer) -> None:
    """Redis behind a proxy that accepts and says nothing for a while: the worker subscribes once it answers."""
    with RedisProxy(redis_server, silent=True) as proxy:
        app, asyncws, _ = make_app(proxy.url)
        with app.test_client().websocket("/member", timeout=30) as ws:
            assert ws.receive() == "joined"  # the join does not wait for ever
            proxy.silent = False

            def delivered() -> bool:
                asyncws.publish("r", "through")
                try:
                    return ws.receive(timeout=0.5) == "through"
                except TimeoutError:
                    return False

            wait_for(delivered, within=30)


def test_a_subscribing_connection_gone_silent_is_found_and_made_again(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The link to Redis goes silent with no reset: the health check finds it, and the worker subscribes again on
    a new connection by itself."""
    monkeypatch.setattr(flask_asyncws._broker, "HEALTH_EVERY", 0.2)
    monkeypatch.setattr(flask_asyncws._broker, "TIMEOUT", 1.0)
    direct = redis.Redis.from_url(redis_server.url)  # publishes around the proxy
    with RedisProxy(redis_server) as proxy:
        app, asyncws, _ = make_app(proxy.url)
        with app.test_client().websocket("/member", timeout=30) as ws:
            assert ws.receive() == "joined"
            proxy.cut_off()

            def delivered() -> bool:
                direct.publish("asyncws:g:r", struct.pack(">cd", b"t", time.time()) + b"through")
                try:
                    return ws.receive(timeout=0.5) == "through"
                except TimeoutError:
                    return False

            wait_for(delivered, within=20)
    assert "did not answer within 1 s; reconnecting" in caplog.text


def test_tallies_redis_refused_are_not_rewritten_in_a_busy_loop(redis_server: RedisServer) -> None:
    """A change of membership while Redis refuses connections waits for the reconnection: no CPU spent meanwhile."""
    app, asyncws, _ = make_app(redis_server.url)
    with app.test_client().websocket("/member") as ws:
        assert ws.receive() == "joined"
        redis_server.stop()
        with app.test_client().websocket("/member") as other:  # a tally to write, and Redis refuses
            assert other.receive() == "joined"
        started, cpu = time.monotonic(), time.process_time()
        time.sleep(2)
        spent = time.process_time() - cpu
        assert spent < 0.5 * (time.monotonic() - started), f"{spent:.2f} s of CPU in 2 s with Redis down"
        redis_server.start()
        wait_for(lambda: asyncws.count("r") == 1)  # written once Redis is back


def test_a_worker_paused_on_its_backlog_keeps_its_subscription(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While reading from Redis waits for delivery to catch up, the health check does not take the silence for a
    dead connection, even with a check under way when reading paused: every message Redis held arrives."""
    monkeypatch.setattr(flask_asyncws._broker, "HEALTH_EVERY", 0.01)  # a check due whenever the broker runs
    monkeypatch.setattr(flask_asyncws._broker, "TIMEOUT", 2.0)  # shorter than the pause
    app, asyncws, _ = make_app(redis_server.url)

    @app.websocket("/stalls")
    def stalls() -> None:
        websocket.join("r")
        websocket.send("joined")
        websocket.receive()
        time.sleep(6)  # this loop delivers nothing meanwhile: over 10,000 messages wait
        while True:
            websocket.receive()

    publisher = redis.Redis.from_url(redis_server.url)

    def publish(numbers: range) -> None:
        pipe = publisher.pipeline(transaction=False)
        for i in numbers:
            pipe.publish("asyncws:g:r", struct.pack(">cd", b"t", time.time()) + str(i).encode())
        pipe.execute()

    with app.test_client().websocket("/stalls") as ws:
        assert ws.receive() == "joined"
        ws.send("stall")
        broker = hub_of(app).broker
        assert broker is not None
        # The broker's thread held up a moment, as a busy process can hold it: the messages published meanwhile
        # wait ahead of the next check's PING, so its answer comes after reading has paused.
        broker.loop.call_soon_threadsafe(time.sleep, 1)
        publish(range(30_000))
        wait_for(lambda: broker.paused)  # reading stopped: what comes now waits in Redis
        publish(range(30_000, 33_000))
        received = [ws.receive(timeout=30) for _ in range(33_000)]
    assert received == [str(i) for i in range(33_000)]


def test_a_fractional_presence_ttl_is_kept_to_the_millisecond(redis_server: RedisServer) -> None:
    app, asyncws, _ = make_app(redis_server.url)
    app.config["ASYNCWS_PRESENCE_TTL"] = 1.5  # read when the app's groups start, at the first join
    observer = redis.Redis.from_url(redis_server.url)
    with app.test_client().websocket("/member") as ws:
        assert ws.receive() == "joined"
        [heartbeat] = wait_for(lambda: observer.keys("asyncws:w:*"))
        assert 0 < observer.pttl(heartbeat) <= 1500
        assert 1500 < observer.pttl("asyncws:p:r") <= 4 * 1500


def test_joining_again_with_another_presence_through_redis(redis_server: RedisServer) -> None:
    app, asyncws, _ = make_app(redis_server.url)

    @app.websocket("/away")
    def away() -> None:
        websocket.join("r", presence="ada")
        websocket.join("r", presence="ada (away)")
        websocket.send("rejoined")
        websocket.receive()

    with app.test_client().websocket("/away") as ws:
        assert ws.receive() == "rejoined"
        assert (asyncws.count("r"), asyncws.presence("r")) == (1, {"ada (away)": 1})
        asyncws.publish("r", "still a member")
        assert ws.receive() == "still a member"
    wait_for(lambda: (asyncws.count("r"), asyncws.presence("r")) == (0, {}))


def test_a_closed_broker_leaves_no_connection_open(redis_server: RedisServer) -> None:
    """Closing the broker (at the lifespan shutdown) closes every Redis connection it opened: none is left for the
    collector to close once the broker's event loop is gone."""
    app, asyncws, _ = make_app(redis_server.url)
    observer = redis.Redis.from_url(redis_server.url)
    own = observer.client_id()

    def connections() -> list[str]:
        return [c["name"] or c["cmd"] for c in observer.client_list() if int(c["id"]) != own]

    with app.test_client().websocket("/member") as ws:
        assert ws.receive() == "joined"
        asyncws.publish("r", "published")
        assert ws.receive() == "published"
        assert asyncws.count("r") == 1
    assert len(connections()) == 3  # subscribing, publishing, counting
    made.remove(app)
    close_hub(app)
    wait_for(lambda: connections() == [])
