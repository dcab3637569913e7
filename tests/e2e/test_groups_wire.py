"""Groups on Redis: what goes over the wire, and what it costs in Redis connections.

Nothing read from Redis is unpickled, key prefixes keep apps apart on one
Redis, passwords and ``rediss://`` URLs work, and a worker holds a few Redis
connections whatever its number of members and groups. Real ``redis-server``,
real hypercorn processes, a real client and an outside publisher process (see
``test_groups_redis.py``).
"""

from __future__ import annotations

import os
import pickle
import typing as t

from support.extras import redis
from support.groups import (
    Clients,
    GroupServer,
    Publisher,
    eventually,
    published_channel,
    receive,
    run_script,
)
from support.redis_server import RedisServer


class CreatesFile:
    """Unpickled, this creates the file at ``path`` (``open(path, "w")``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (open, (self.path, "w"))


def test_nothing_read_from_redis_is_unpickled(clients: Clients, redis_server: RedisServer, tmp_path: t.Any) -> None:
    """Pickles PUBLISHed raw on the group's channel never run (the file they would create does not exist);
    the server keeps serving and says what it dropped; the members get what comes next."""
    env = {"ASYNCWS_BROKER_URL": redis_server.url}
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)
    with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
        ws, _ = clients.join(srv, "room")
        assert eventually(lambda: publisher.count("room"), lambda n: n == 1) == 1
        channel, carried = published_channel(client, publisher, "room")
        assert receive(ws, 1) == ["probe"]
        print(f"\na publish to 'room' goes out on {channel!r} as {carried!r}")
        marker = str(tmp_path / "unpickled")
        payloads = [pickle.dumps(CreatesFile(marker), protocol=p) for p in (0, 2, pickle.HIGHEST_PROTOCOL)]
        # And one in the library's own framing: what framed "probe" above, framing a pickle instead.
        framed = carried[: carried.index(b"probe")] + payloads[0]
        logged_before = srv.output
        for payload in [*payloads, framed]:
            assert client.publish(channel, payload) >= 1  # the worker is subscribed
        publisher.ok("publish", group="room", text="after")
        # Passed on as the bytes or text they are, or dropped; never unpickled.
        harmless = [*payloads, payloads[0].decode("ascii")]
        messages = []
        while (message := receive(ws, 1)[0]) != "after":
            messages.append(message)
        print(f"the member got {messages!r}")
        assert all(m in harmless for m in messages), messages
        assert not os.path.exists(marker), "a payload read from Redis was unpickled"
        if len(messages) < len(payloads) + 1:  # some were dropped: the log says so, naming the group
            new = eventually(lambda: srv.output[len(logged_before) :], lambda text: "room" in text, timeout=10)
            assert "room" in new, f"a message read from Redis was dropped without a word: {new!r}"
            print(f"logged: {new.strip()[:500]}")
        ws.send("alive")
        assert receive(ws, 1) == ["echo:alive"]
        assert not os.path.exists(marker)


def test_prefixes_keep_apps_apart_on_one_redis(clients: Clients, redis_server: RedisServer) -> None:
    """Two apps with different ASYNCWS_BROKER_PREFIX on one Redis (one of them not ASCII: any str is a valid
    prefix): neither sees the other's group of the same name, in delivery, count or presence; every key and
    channel they use carries their prefix."""
    url = redis_server.url
    one = {"ASYNCWS_BROKER_URL": url, "ASYNCWS_BROKER_PREFIX": "one:"}
    two = {"ASYNCWS_BROKER_URL": url, "ASYNCWS_BROKER_PREFIX": "två:"}
    with (
        GroupServer("hypercorn", one) as a,
        GroupServer("hypercorn", two) as b,
        Publisher(one) as first,
        Publisher(two) as second,
    ):
        ann, _ = clients.join(a, "room", user="ann")
        ben, _ = clients.join(b, "room", user="ben")
        clients.join(b, "room", user="bea", route="aws")
        assert eventually(lambda: (first.count("room"), second.count("room")), lambda n: n == (1, 2)) == (1, 2)
        assert first.presence("room") == {"ann": 1}
        assert second.presence("room") == {"ben": 1, "bea": 1}
        assert a.http("GET", "/count/room")[1]["count"] == 1

        first.ok("publish", group="room", text="for one")
        second.ok("publish", group="room", text="for two")
        first.ok("publish", group="room", text="end one")
        second.ok("publish", group="room", text="end two")
        assert receive(ann, 2) == ["for one", "end one"]
        assert receive(ben, 2) == ["for two", "end two"]

        client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)
        keys = [key.decode() for key in client.keys("*")]
        channels = [channel.decode() for channel in client.pubsub_channels()]
        patterns = client.pubsub_numpat()
        print(f"\nkeys: {sorted(keys)}\nchannels: {sorted(channels)}\npatterns: {patterns}")
        assert keys, "presence is kept in keys"
        for name in keys + channels:
            assert name.startswith(("one:", "två:")), name


def test_password_in_the_url(clients: Clients, tmp_path: t.Any) -> None:
    """redis://:password@host:port/0 works for members, publish, count and presence; a wrong one gets a clear
    error; with Redis down the error names the URL without the password, and no log line shows it."""
    password = "pw-s3cret-9"
    with RedisServer(password=password) as redis_server:
        env = {"ASYNCWS_BROKER_URL": redis_server.url}
        assert password in env["ASYNCWS_BROKER_URL"]
        with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
            ws, _ = clients.join(srv, "room", user="ann")
            assert eventually(lambda: publisher.presence("room"), lambda p: p == {"ann": 1}) == {"ann": 1}
            publisher.ok("publish", group="room", text="through the password")
            assert receive(ws, 1) == ["through the password"]
            assert srv.http("POST", "/publish/room", b"from the view")[0] == 200
            assert receive(ws, 1) == ["from the view"]

            # A wrong password: a clear error, the password hidden.
            wrong = redis_server.url.replace(password, "not-the-one")
            [answer] = run_script({"ASYNCWS_BROKER_URL": wrong}, {"op": "count", "group": "room"})
            assert answer["error"] == "BrokerUnavailable" and "not-the-one" not in answer["message"], answer
            assert "password" in answer["message"] or "auth" in answer["message"].lower(), answer

            redis_server.stop()
            answer = publisher("count", group="room")
            assert answer["error"] == "BrokerUnavailable", answer
            assert f"127.0.0.1:{redis_server.port}" in answer["message"] and password not in answer["message"]
            status, answer = srv.http("POST", "/publish/room", b"x")
            assert status == 503 and password not in answer["message"], answer
            ws.send("alive")
            assert receive(ws, 1) == ["echo:alive"]
            assert password not in srv.output
            assert password not in publisher.errors


def test_rediss_url(clients: Clients) -> None:
    """rediss:// with the CA given in the URL (redis-server serving TLS only): members, publish, count, presence."""
    with RedisServer(listen="tls") as tls:
        env = {"ASYNCWS_BROKER_URL": tls.url}
        with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
            ws, _ = clients.join(srv, "room", user="ann")
            other, _ = clients.join(srv, "room", route="aws")
            assert eventually(lambda: publisher.count("room"), lambda n: n == 2) == 2
            assert publisher.presence("room") == {"ann": 1}
            publisher.ok("publish", group="room", text="over TLS")
            assert receive(ws, 1) == ["over TLS"] and receive(other, 1) == ["over TLS"]
            status, answer = srv.http("GET", "/acount/room")
            assert status == 200 and answer["count"] == 2, answer
            connections = redis.Redis.from_url(tls.url, socket_timeout=5).client_list()
            assert len(connections) >= 2  # the worker's connections and this one, all over TLS (no plain port)
        # Certificates not checked (as the URL may say): it works too.
        unchecked = tls.url.partition("?")[0] + "?ssl_cert_reqs=none"
        [published, counted] = run_script(
            {"ASYNCWS_BROKER_URL": unchecked},
            {"op": "publish", "group": "room", "text": "x"},
            {"op": "count", "group": "nobody"},
        )
        assert published["ok"] and counted["count"] == 0, (published, counted)


def test_unix_socket_url(clients: Clients) -> None:
    """unix:///path/redis.sock?db=0 (redis-server on a unix socket only): members, publish, count, presence."""
    with RedisServer(listen="unix") as unix:
        env = {"ASYNCWS_BROKER_URL": unix.url}
        with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
            ws, _ = clients.join(srv, "room", user="ann")
            assert eventually(lambda: publisher.presence("room"), lambda p: p == {"ann": 1}) == {"ann": 1}
            publisher.ok("publish", group="room", text="through the socket")
            assert receive(ws, 1) == ["through the socket"]
            assert srv.http("GET", "/count/room")[1]["count"] == 1


def redis_connections(client: redis.Redis) -> list[dict[str, t.Any]]:
    """Every client connection to Redis but ``client``'s own."""
    own = client.client_id()
    return [c for c in client.client_list() if int(c["id"]) != own]


def test_a_worker_holds_a_few_redis_connections(clients: Clients, redis_server: RedisServer) -> None:
    """60 members in 89 groups on one worker process, publishing from its views: at most 3 Redis connections,
    however many it held with one member."""
    env = {"ASYNCWS_BROKER_URL": redis_server.url}
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)
    with GroupServer("hypercorn", env) as srv:
        first, _ = clients.join(srv, "g0")
        assert srv.http("POST", "/publish/g0", b"one")[0] == 200
        assert receive(first, 1) == ["one"]
        with_one = len(redis_connections(client))
        members = [first]
        for i in range(1, 60):
            ws, hello = clients.join(srv, f"g{i % 30}", route=("ws", "aws")[i % 2], also=[f"x{i}"], user=f"u{i}")
            assert len(hello["groups"]) == 2
            members.append(ws)
        for i in range(30):
            assert srv.http("POST", f"/publish/g{i}", f"to g{i}".encode())[0] == 200
            assert srv.http("GET", f"/acount/x{i + 1}")[1]["count"] == 1
        for i, ws in enumerate(members):
            assert receive(ws, 1) == [f"to g{i % 30}"]
        connections = redis_connections(client)
        described = [{key: c.get(key) for key in ("name", "sub", "psub", "cmd")} for c in connections]
        print(f"\none member: {with_one} connections; 60 members in 89 groups: {len(connections)}: {described}")
        assert len(connections) <= 3, described
