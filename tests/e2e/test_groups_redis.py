"""Groups, publish and presence on a real Redis, across real server processes.

Each test starts its own ``redis-server`` (:class:`support.redis_server.RedisServer`),
serves :mod:`support.groups_app` with hypercorn (one or two worker processes)
or uvicorn, connects real ``websockets`` clients and publishes from
:mod:`support.publisher`, a plain Python process outside the servers. What is
awaited is polled for with a deadline; nothing sleeps and hopes.

Delivery, presence and the external publisher run under both servers; the
rest under hypercorn. The safety of the wire and the cost in Redis connections
are in ``test_groups_wire.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
import typing as t
from functools import partial

import pytest
from support.extras import redis
from support.groups import Clients, GroupServer, Publisher, eventually, published_channel, receive, run_script
from support.redis_server import RedisServer
from support.servers import SERVERS, needs_hypercorn_cancel
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection


def broker(redis_server: RedisServer, **config: str) -> dict[str, str]:
    """The environment that configures the groups app (the servers and the publisher) for ``redis_server``."""
    return {"ASYNCWS_BROKER_URL": redis_server.url, **config}


def closed_with(ws: ClientConnection, timeout: float = 20) -> tuple[int | None, str | None]:
    """Read ``ws`` until it closes: the code and reason the server closed it with (None: no close frame)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ws.recv(timeout=max(0.0, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd is not None else (None, None)
    except TimeoutError:
        raise AssertionError(f"the connection is still open {timeout} s later") from None


# -- 1. Delivery and order ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_delivery_in_publish_order_across_two_server_processes(
    clients: Clients, redis_server: RedisServer, server: str
) -> None:
    """Members on two server processes (sync and async handlers) get each message of an outside publisher once,
    in publish order; one who joins later gets none of the earlier; str, bytes and a dict arrive as text,
    binary and JSON text, published from a plain process, a sync view and an async view."""
    env = broker(redis_server)
    with GroupServer(server, env) as a, GroupServer(server, env) as b, Publisher(env) as publisher:
        members = [
            clients.join(a, "room", compression=None)[0],
            clients.join(a, "room", route="aws", compression=None)[0],
            clients.join(b, "room", compression=None)[0],
            clients.join(b, "room", route="aws", compression=None)[0],
        ]
        outsider, _ = clients.join(a, "other")
        assert eventually(lambda: publisher.count("room"), lambda n: n == 4) == 4

        publisher.ok("sequence", group="room", n=200, prefix="m")
        late, _ = clients.join(b, "room")
        expected = [f"m{i}" for i in range(200)]
        for ws in members:
            assert receive(ws, 200) == expected

        everyone = [*members, late]
        publisher.ok("publish", group="room", text="text é")
        assert [receive(ws, 1)[0] for ws in everyone] == ["text é"] * 5  # the late member's first: no m<i>
        assert a.http("POST", "/publish/room?kind=bytes", b"\x00\xffbinary")[0] == 200  # a sync view
        assert [receive(ws, 1)[0] for ws in everyone] == [b"\x00\xffbinary"] * 5
        document = {"user": "zoë", "n": [1, 2.5, None, True]}
        assert b.http("POST", "/apublish/room?kind=json", json.dumps(document).encode())[0] == 200  # an async view
        for message in [receive(ws, 1)[0] for ws in everyone]:
            assert isinstance(message, str) and json.loads(message) == document

        # Once: nothing more came between; the other group got none of it.
        publisher.ok("publish", group="room", text="end")
        publisher.ok("publish", group="other", text="for other")
        assert [receive(ws, 1)[0] for ws in everyone] == ["end"] * 5
        assert receive(outsider, 1) == ["for other"]
        # A script run once (as a cron job): it publishes and counts, then exits by itself.
        answers = run_script(env, {"op": "publish", "group": "room", "text": "from a script"},
                             {"op": "count", "group": "room"})  # fmt: skip
        assert [answer["ok"] for answer in answers] == [True, True] and answers[1]["count"] == 5, answers
        assert [receive(ws, 1)[0] for ws in everyone] == ["from a script"] * 5
        # An app made by a factory, its extension called in its app context (as in a task queue's worker).
        publisher.ok("publish", group="room", text="from a factory app", factory=True)
        assert [receive(ws, 1)[0] for ws in everyone] == ["from a factory app"] * 5
        assert publisher.ok("count", group="room", factory=True)["count"] == 5
        # A publish in async code that is never awaited still goes out.
        assert b.http("POST", "/apublish/room?await=no", b"not awaited")[0] == 200
        assert [receive(ws, 1)[0] for ws in everyone] == ["not awaited"] * 5
        # The handlers forward nothing: their own echo still answers on the same connection.
        members[1].send("ping")
        assert receive(members[1], 1) == ["echo:ping"]
        # A member receives what is published right after its join returns, in its own handler.
        for i in range(20):
            ws = members[i % 4]
            ws.send(f"joinpub:fresh{i}")
            assert sorted(t.cast(list[str], receive(ws, 2))) == [f"echo:joinpub:fresh{i}", f"first in fresh{i}"]


def members_on_both_workers(
    clients: Clients, server: GroupServer, room: str, n: int
) -> list[tuple[ClientConnection, int]]:
    """``n`` or more members of ``room`` (sync and async handlers), on both of the server's worker processes.

    The kernel hands connections to whichever worker accepts first; while one
    worker's event loop is blocked (a sync handler's ``block:``), the next
    connections go to the other.
    """
    members: list[tuple[ClientConnection, int]] = []
    for i in range(n):
        ws, hello = clients.join(server, room, route=("ws", "aws")[i % 2], compression=None)
        members.append((ws, hello["pid"]))
    for _attempt in range(5):
        pids = {pid for _, pid in members}
        if len(pids) == 2:
            return members
        blocker = next(ws for ws, _ in members[::2])  # a sync handler: it blocks its worker's loop
        blocker.send("block:2")
        for _ in range(2):
            ws, hello = clients.join(server, room, compression=None)
            members.append((ws, hello["pid"]))
        assert receive(blocker, 1) == ["echo:block:2"]
    raise AssertionError(f"every member is on one worker: {members}")


def test_delivery_in_order_with_hypercorn_two_workers(clients: Clients, redis_server: RedisServer) -> None:
    """hypercorn --workers 2 on one port: members on both workers get the outside publisher's 200 messages
    once and in order, and a 300 KiB one whole; HTTP views on either worker count them all."""
    env = broker(redis_server)
    with GroupServer("hypercorn", env, workers=2) as srv, Publisher(env) as publisher:
        members = members_on_both_workers(clients, srv, "room", 6)
        total = len(members)
        assert eventually(lambda: publisher.count("room"), lambda n: n == total) == total
        publisher.ok("sequence", group="room", n=200, prefix="w")
        late, _ = clients.join(srv, "room")
        expected = [f"w{i}" for i in range(200)]
        for ws, pid in members:
            assert receive(ws, 200) == expected, pid
        publisher.ok("publish", group="room", text="end")
        for ws, _ in [*members, (late, 0)]:
            assert receive(ws, 1) == ["end"]
        # A large binary message arrives whole on both workers.
        large = bytes(range(256)) * 1200  # 300 KiB
        publisher.ok("publish", group="room", bytes_hex=large.hex())
        for ws, _ in [*members, (late, 0)]:
            assert receive(ws, 1) == [large]
        # Both workers' views see every member (the HTTP connections land on either).
        seen_by = {}
        for _ in range(20):
            status, answer = srv.http("GET", "/count/room")
            assert status == 200 and answer["count"] == total + 1, answer
            seen_by[answer["pid"]] = answer["count"]
        print(f"\n{total} members by worker: {[pid for _, pid in members]}; counted by {sorted(seen_by)}")


def test_members_joining_during_a_stream_get_all_of_it_from_their_first(
    clients: Clients, redis_server: RedisServer
) -> None:
    """Members join both servers while an outside publisher streams numbered messages: from the first message
    each receives, it receives every later one once and in order (it was a member when they were published),
    and one that joins once the stream has ended receives none of it."""
    env = broker(redis_server)
    with GroupServer("hypercorn", env) as a, GroupServer("uvicorn", env) as b, Publisher(env) as publisher:
        first, _ = clients.join(a, "room")
        total, batch = 6000, 20
        streamed: list[dict[str, t.Any]] = []
        stream = threading.Thread(
            target=lambda: streamed.extend(
                publisher("sequence", timeout=60, group="room", n=batch, prefix="s", start=start)
                for start in range(0, total, batch)
            ),
            daemon=True,
        )
        stream.start()
        seen = receive(first, 1)  # the stream is on its way
        joined = []
        while len(joined) < 12 and len(seen) < total - 200:
            server = (a, b)[len(joined) % 2]
            joined.append(clients.join(server, "room", route=("ws", "aws")[len(joined) // 2 % 2])[0])
            seen += receive(first, 100)  # a join every hundred messages or so
        stream.join(60)
        assert len(streamed) == total // batch and all(answer["ok"] for answer in streamed), streamed[-1:]
        after, _ = clients.join(b, "room")
        publisher.ok("publish", group="room", text="end")
        seen += receive(first, total + 1 - len(seen))
        assert seen == [f"s{i}" for i in range(total)] + ["end"]
        starts = []
        for ws in joined:
            messages = []
            while (message := ws.recv(timeout=30)) != "end":
                messages.append(message)
            start = int(t.cast(str, messages[0])[1:]) if messages else total
            assert messages == [f"s{i}" for i in range(start, total)], (start, messages[:3], len(messages))
            starts.append(start)
        assert receive(after, 1) == ["end"]
        print(f"\n{len(joined)} members joined during a stream of {total}; each got it from message {starts}")
        # Each joined after s0 went out (``first`` had it), and some while the stream was on its way.
        assert all(start > 0 for start in starts) and any(start < total for start in starts), starts


def test_no_message_lost_under_join_and_leave_churn(clients: Clients, redis_server: RedisServer) -> None:
    """While other connections join and leave the group over and over on both servers (a join or leave can be
    a SUBSCRIBE or UNSUBSCRIBE of the worker's), the steady members get every message once, in order, and the
    count and presence end exact."""
    env = broker(redis_server)
    with GroupServer("hypercorn", env) as a, GroupServer("hypercorn", env) as b, Publisher(env) as publisher:
        steady = [clients.join(a, "room", user="steady")[0], clients.join(b, "room", route="aws")[0]]
        churners = [
            clients.join(server, "lobby", user=f"churn{i}", route=("ws", "aws")[i % 2])[0]
            for i, server in enumerate((a, b, a, b))
        ]
        failed: list[BaseException] = []
        cycles = [0] * len(churners)
        stop = threading.Event()

        def churn(i: int, ws: ClientConnection) -> None:
            try:
                while not stop.is_set():
                    for command in ("join:room", "leave:room"):
                        ws.send(command)
                        while ws.recv(timeout=20) != f"echo:{command}":
                            pass  # what the group sent while it was a member
                    cycles[i] += 1
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=churn, args=item, daemon=True) for item in enumerate(churners)]
        for thread in threads:
            thread.start()
        sent = 0
        for _ in range(20):  # 20 bursts, each while every churner joins and leaves once more at least
            before = list(cycles)
            publisher.ok("sequence", group="room", n=20, prefix="c", start=sent)
            sent += 20
            churned = eventually(lambda: bool(failed) or all(map(int.__gt__, cycles, before)), bool, timeout=20)  # noqa: B023
            assert churned and not failed, (before, cycles, failed)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not failed, failed
        print(f"\n{sent} messages while each churner joined and left {cycles} times")
        expected = [f"c{i}" for i in range(sent)]
        for ws in steady:
            assert receive(ws, sent) == expected
        settled = (2, {"steady": 1})
        assert eventually(lambda: (publisher.count("room"), publisher.presence("room")),
                          lambda seen: seen == settled) == settled  # fmt: skip
        assert publisher.presence("lobby") == {f"churn{i}": 1 for i in range(4)}


# -- presence ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_presence_and_count_across_processes(clients: Clients, redis_server: RedisServer, server: str) -> None:
    """count is live connections on every process; presence counts a user's connections (two tabs: 2);
    join/leave/groups in the handler; the outside publisher and sync and async views agree."""
    env = broker(redis_server)
    with GroupServer(server, env) as a, GroupServer(server, env) as b, Publisher(env) as publisher:
        alice_a, _ = clients.join(a, "room", user="alice")
        alice_b, _ = clients.join(b, "room", user="alice", route="aws")
        bob, hello = clients.join(a, "room", user="team:bøb 🎉", route="aws", also=["second"])
        anonymous, _ = clients.join(b, "room")
        assert hello["groups"] == ["room", "second"]
        everyone = {"count": 4, "presence": {"alice": 2, "team:bøb 🎉": 1}}
        state = eventually(lambda: {"count": publisher.count("room"), "presence": publisher.presence("room")},
                           lambda seen: seen == everyone)  # fmt: skip
        assert state == everyone
        for srv, path in ((a, "/count/room"), (b, "/count/room"), (a, "/acount/room"), (b, "/acount/room")):
            status, answer = srv.http("GET", path)
            assert status == 200 and {"count": answer["count"], "presence": answer["presence"]} == everyone
        assert publisher.count("second") == 1 and publisher.presence("second") == {}
        assert publisher.count("nobody") == 0 and publisher.presence("nobody") == {}

        alice_b.send("leave:room")
        assert receive(alice_b, 1) == ["echo:leave:room"]
        alice_b.send("groups")
        assert receive(alice_b, 1) == ["groups:[]"]
        anonymous.send("leave:never-joined")  # a no-op
        assert receive(anonymous, 1) == ["echo:leave:never-joined"]
        fewer = {"count": 3, "presence": {"alice": 1, "team:bøb 🎉": 1}}
        assert eventually(lambda: {"count": publisher.count("room"), "presence": publisher.presence("room")},
                          lambda seen: seen == fewer) == fewer  # fmt: skip
        publisher.ok("publish", group="room", text="after leave")
        for ws in (alice_a, bob, anonymous):
            assert receive(ws, 1) == ["after leave"]
        alice_b.send("still here")
        assert receive(alice_b, 1) == ["echo:still here"]  # not "after leave": it left

        for ws in (alice_a, alice_b, bob, anonymous):
            ws.close()
        assert eventually(lambda: publisher.count("room"), lambda n: n == 0) == 0
        assert publisher.presence("room") == {} and publisher.count("second") == 0


# -- 2. Slow members ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_slow_member_is_closed_and_never_holds_up_the_others(
    clients: Clients, redis_server: RedisServer, server: str
) -> None:
    """A member that stops reading fills its bounded outbox: it is closed with 1008 and a reason, logged once,
    and leaves the group, while the members that read on the same worker get every message in order and
    publishing (from outside and from a view on that worker) never waits."""
    limit = 64 * 1024
    size = 4 * 1024
    burst = 8  # 32 KiB at a time: a member that reads keeps up
    env = broker(redis_server, ASYNCWS_OUTBOX_LIMIT=str(limit))
    with GroupServer(server, env) as srv, Publisher(env) as publisher:
        fast = [
            clients.join(srv, "room", compression=None)[0],
            clients.join(srv, "room", route="aws", compression=None)[0],
        ]
        # The slow one reads nothing: a small receive buffer, one message held by the client library.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        slow, _ = clients.join(srv, "room", user="slow", sock=sock, max_queue=1, compression=None, ping_interval=None)
        assert eventually(lambda: publisher.count("room"), lambda n: n == 3) == 3

        got: list[list[str]] = [[], []]
        failed: list[BaseException] = []

        def read(ws: ClientConnection, into: list[str]) -> None:
            deadline = time.monotonic() + 100
            try:
                while not into or into[-1] != "end":
                    into.append(t.cast(str, ws.recv(timeout=max(0.0, deadline - time.monotonic()))))
            except BaseException as exc:
                failed.append(exc)

        def reached(expected: int, n: int) -> bool:
            return n >= expected or bool(failed)

        readers = [
            threading.Thread(target=read, args=(ws, into), daemon=True) for ws, into in zip(fast, got, strict=True)
        ]
        for reader in readers:
            reader.start()
        longest = view_longest = 0.0
        sent: list[str] = []
        # Until it is closed: what the kernel buffers between server and client hold, then the outbox (a few
        # MiB with Linux's default buffer limits), and at most 16 MiB.
        for batch in range(512):
            answer = publisher.ok("sequence", group="room", n=burst, prefix=f"b{batch}.", size=size)
            sent += [f"b{batch}.{i}".ljust(size, ".") for i in range(burst)]
            longest = max(longest, answer["longest"])
            status, answer = srv.http("POST", "/publish/room", f"view{batch}".encode())
            assert status == 200, answer
            sent.append(f"view{batch}")
            view_longest = max(view_longest, answer["seconds"])
            caught_up = eventually(lambda: min(map(len, got)), partial(reached, len(sent)), timeout=20)
            assert not failed and caught_up == len(sent), f"the members that read are held up: {failed}"
            if "ASYNCWS_OUTBOX_LIMIT" in srv.output:
                break
        # Its membership has ended, while it still reads nothing.
        assert eventually(lambda: publisher.count("room"), lambda n: n == 2) == 2
        assert publisher.presence("room") == {}
        publisher.ok("publish", group="room", text="end")
        for reader in readers:
            reader.join(100)
        assert not failed, failed
        for messages in got:
            assert messages == [*sent, "end"]  # every one, once, in order
        print(f"\nthe slow member was closed after {len(sent) * size // 1024} KiB; the longest publish took"
              f" {longest * 1000:.1f} ms outside, {view_longest * 1000:.1f} ms in a view on its worker")  # fmt: skip
        assert longest < 5 and view_longest < 5

        # The client reads at last: what it had, in order, then the close.
        code, reason = closed_with(slow)
        assert code == 1008 and reason and "ASYNCWS_OUTBOX_LIMIT" in reason, (code, reason)
        srv.wait_for("ASYNCWS_OUTBOX_LIMIT", timeout=10)
        assert srv.output.count("ASYNCWS_OUTBOX_LIMIT") == 1, srv.output  # logged once
        for ws in fast:
            ws.send("alive")
            assert receive(ws, 1) == ["echo:alive"]


# -- 3. No leaked membership ---------------------------------------------------------------------------------------


def test_membership_ends_however_the_connection_ends(clients: Clients, redis_server: RedisServer) -> None:
    """Return, error, the client's close, the client's socket reset (also to a handler that never reads): each
    connection has left its group when its teardown_websocket function runs (the count it sees leaves it
    out), with no wait for any expiry."""
    env = broker(redis_server, ASYNCWS_PRESENCE_TTL="60")
    with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
        stay, _ = clients.join(srv, "room", user="stay")
        ends: dict[str, tuple[ClientConnection, t.Callable[[ClientConnection], None]]] = {}

        def reset(ws: ClientConnection) -> None:
            ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.close_socket()

        for name, route, end in (
            ("return", "ws", lambda ws: ws.send("return")),
            ("error", "aws", lambda ws: ws.send("error")),
            ("close", "ws", lambda ws: ws.close()),
            ("reset", "aws", reset),
            ("async-return", "aws", lambda ws: ws.send("return")),
            ("sync-error", "ws", lambda ws: ws.send("error")),
            ("listen-close", "listen", lambda ws: ws.close()),  # a handler that never reads
            ("listen-reset", "listen", reset),
        ):
            ws, _ = clients.join(srv, "room", user=f"u-{name}", route=route, ident=name)
            ends[name] = (ws, end)
        remaining = len(ends) + 1
        assert eventually(lambda: publisher.count("room"), lambda n: n == remaining) == remaining

        for name, (ws, end) in ends.items():
            end(ws)
            record = eventually(lambda: srv.http("GET", f"/teardown/{name}")[1], lambda seen: seen is not None)  # noqa: B023
            remaining -= 1
            assert record is not None, name
            assert "failed" not in record, record
            assert record["count"] == remaining, (name, record)
            assert f"u-{name}" not in record["presence"], (name, record)
            assert publisher.count("room") == remaining
        if ends["return"][0].close_code is not None:
            assert ends["return"][0].close_code == 1000
        assert publisher.presence("room") == {"stay": 1}
        assert srv.http("GET", "/teardown/error")[1]["error"].startswith("RuntimeError")
        publisher.ok("publish", group="room", text="to the one left")
        assert receive(stay, 1) == ["to the one left"]


@pytest.mark.parametrize(
    ("server", "workers"),
    [
        pytest.param("hypercorn", 1, marks=needs_hypercorn_cancel),
        pytest.param("hypercorn", 2, marks=needs_hypercorn_cancel),
        ("uvicorn", 1),
    ],
)
def test_membership_ends_at_server_shutdown(
    clients: Clients, redis_server: RedisServer, server: str, workers: int
) -> None:
    """SIGTERM (to hypercorn with one worker process, or uvicorn): the server's members have left by the time it
    exited (the presence TTL is 60 s); the other server's member stays.

    With two worker processes hypercorn's main process terminates the others as soon as one has exited (a
    SIGTERM its workers do not handle): a worker still closing its websockets is killed, and its members drop
    out within the presence TTL, as a killed worker's do.
    """
    ttl = 60 if workers == 1 else 3
    env = broker(redis_server, ASYNCWS_PRESENCE_TTL=str(ttl))
    with GroupServer(server, env, workers=workers) as a, GroupServer(server, env) as b, Publisher(env) as publisher:
        on_a = [clients.join(a, "room", user="a1")[0], clients.join(a, "room", user="a2", route="aws")[0]]
        on_b, _ = clients.join(b, "room", user="b1")
        assert eventually(lambda: publisher.count("room"), lambda n: n == 3) == 3
        # SIGTERM to the server's main process, as a process manager stops it (hypercorn's worker processes
        # leave signals to it: it tells them to shut down).
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        # (uvicorn re-raises the signal once it has shut down: it exits "killed by SIGTERM".)
        assert a.stop(None, timeout=30) in (0, -signal.SIGTERM), a.output
        exited = time.monotonic()
        if workers == 1:  # nothing of it is left, without waiting for any expiry
            assert publisher.count("room") == 1
        else:
            assert eventually(lambda: publisher.count("room"), lambda n: n == 1, timeout=ttl + 10) == 1
            assert time.monotonic() - exited <= ttl + 1.5
        assert publisher.presence("room") == {"b1": 1}
        status, answer = b.http("GET", "/count/room")
        assert status == 200 and answer["count"] == 1 and answer["presence"] == {"b1": 1}
        for ws in on_a:
            code, _ = closed_with(ws)
            assert code in (1001, 1012, None), code  # going away / service restart
        publisher.ok("publish", group="room", text="still")
        assert receive(on_b, 1) == ["still"]


def test_killed_worker_disappears_within_the_presence_ttl(clients: Clients, redis_server: RedisServer) -> None:
    """SIGKILL: nobody leaves anything, yet its members are gone from count and presence within
    ASYNCWS_PRESENCE_TTL; the live server's members stay past it."""
    ttl = 2.0
    env = broker(redis_server, ASYNCWS_PRESENCE_TTL=str(ttl))
    with GroupServer("hypercorn", env) as a, GroupServer("hypercorn", env) as b, Publisher(env) as publisher:
        clients.join(a, "room", user="alice")
        clients.join(a, "room", user="bob", route="aws")
        on_b, _ = clients.join(b, "room", user="alice")
        everyone = (3, {"alice": 2, "bob": 1})
        assert eventually(lambda: (publisher.count("room"), publisher.presence("room")),
                          lambda seen: seen == everyone) == everyone  # fmt: skip

        killed = time.monotonic()
        a.kill()
        while True:
            asked = time.monotonic() - killed
            if publisher.count("room") == 1:
                break
            assert asked < ttl + 10, "the killed worker's members are still counted"
            time.sleep(0.05)
        print(f"\nthe killed worker's members were gone {asked:.2f} s after SIGKILL (TTL {ttl} s)")
        assert asked <= ttl + 1.5
        assert publisher.presence("room") == {"alice": 1}
        status, answer = b.http("GET", "/count/room")
        assert status == 200 and (answer["count"], answer["presence"]) == (1, {"alice": 1})
        # The live worker heartbeats: its member is still counted three TTLs on.
        while time.monotonic() - killed < 3 * ttl:
            assert publisher.count("room") == 1
            time.sleep(0.2)
        publisher.ok("publish", group="room", text="after")
        assert receive(on_b, 1) == ["after"]


def test_a_killed_workers_tallies_are_removed_with_nobody_counting(clients: Clients, redis_server: RedisServer) -> None:
    """The live workers' heartbeats keep a group's hash alive; they also clear a killed worker's fields from it,
    so an app that never calls count() or presence() does not pile them up in Redis."""
    ttl = 2.0
    env = broker(redis_server, ASYNCWS_PRESENCE_TTL=str(ttl))
    observer = redis.Redis.from_url(redis_server.url)

    def workers() -> set[bytes]:
        return {field.split(b":")[1] for field in observer.hgetall("asyncws:p:room")}

    with GroupServer("hypercorn", env) as a, GroupServer("hypercorn", env) as b:
        clients.join(a, "room", user="alice")
        clients.join(b, "room", user="bob")
        assert len(eventually(workers, lambda seen: len(seen) == 2)) == 2
        a.kill()
        assert len(eventually(workers, lambda seen: len(seen) == 1, timeout=4 * ttl + 10)) == 1
        assert observer.ttl("asyncws:p:room") > 0  # still kept alive by the live worker


def test_paused_worker_is_counted_again_when_it_resumes(clients: Clients, redis_server: RedisServer) -> None:
    """A server paused (SIGSTOP) for longer than ASYNCWS_PRESENCE_TTL is counted out like a dead one; resumed,
    it finds itself counted dead and writes its tallies again, by itself, and its members receive again."""
    ttl = 2.0
    env = broker(redis_server, ASYNCWS_PRESENCE_TTL=str(ttl))
    with GroupServer("hypercorn", env) as a, GroupServer("hypercorn", env) as b, Publisher(env) as publisher:
        paused, _ = clients.join(a, "room", user="paused")
        live, _ = clients.join(b, "room", user="live", route="aws")
        both = (2, {"paused": 1, "live": 1})
        assert eventually(lambda: (publisher.count("room"), publisher.presence("room")),
                          lambda seen: seen == both) == both  # fmt: skip
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGSTOP)  # the server and its worker process
        try:
            alone = (1, {"live": 1})
            assert eventually(lambda: (publisher.count("room"), publisher.presence("room")),
                              lambda seen: seen == alone, timeout=ttl + 10) == alone  # fmt: skip
        finally:
            os.killpg(a.proc.pid, signal.SIGCONT)
        assert eventually(lambda: (publisher.count("room"), publisher.presence("room")),
                          lambda seen: seen == both, timeout=ttl + 10) == both  # fmt: skip
        # (Probes first: had its subscribing connection been given up meanwhile, it would be subscribing again.)
        probe_until_received(publisher, [paused, live])
        publisher.ok("sequence", group="room", n=5, prefix="resumed")
        for ws in (paused, live):
            assert_next_after_probes(ws, [f"resumed{i}" for i in range(5)])


# -- 4. Broker outage --------------------------------------------------------------------------------------------

#: The longest a call may take to give up on a Redis that is down (the contract says a few seconds; a busy machine).
GIVE_UP = 15.0


def assert_unavailable(answer: dict[str, t.Any], redis_server: RedisServer) -> None:
    assert not answer.get("ok", False) and answer["error"] == "BrokerUnavailable", answer
    assert answer["connection_error"], answer
    assert f"127.0.0.1:{redis_server.port}" in answer["message"], answer
    assert answer["seconds"] < GIVE_UP, answer


def test_broker_outage_raises_then_recovers_by_itself(clients: Clients, redis_server: RedisServer) -> None:
    """Redis stopped: publish/count/presence raise BrokerUnavailable naming the URL within a bound, outside and in
    sync and async views; the websockets stay open and echo, and one can join. Redis started again on its port:
    presence and subscriptions come back by themselves and publishing works, with no server restart."""
    env = broker(redis_server)
    with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
        members = [clients.join(srv, "room", user="x")[0], clients.join(srv, "room", user="y", route="aws")[0]]
        assert eventually(lambda: publisher.count("room"), lambda n: n == 2) == 2
        redis_server.stop()

        for op in ("publish", "count", "presence"):
            assert_unavailable(publisher(op, timeout=GIVE_UP + 15, group="room", text="lost"), redis_server)
        for method, path in (("POST", "/publish/room"), ("GET", "/count/room"),
                             ("POST", "/apublish/room"), ("GET", "/acount/room")):  # fmt: skip
            status, answer = srv.http(method, path, b"lost" if method == "POST" else None, timeout=GIVE_UP + 15)
            assert status == 503, (path, answer)
            assert_unavailable(answer, redis_server)
        for i, ws in enumerate(members):
            ws.send(f"during {i}")
            assert receive(ws, 1) == [f"echo:during {i}"], "a websocket stopped echoing while Redis is down"
        # A connection joins meanwhile: it is a member here at once, and counted once Redis is back.
        started = time.monotonic()
        members.append(clients.join(srv, "room", user="z")[0])
        assert time.monotonic() - started < GIVE_UP

        redis_server.start()
        back = {"count": 3, "presence": {"x": 1, "y": 1, "z": 1}}

        def state() -> dict[str, t.Any]:
            count, presence = publisher("count", group="room"), publisher("presence", group="room")
            return {"count": count.get("count"), "presence": presence.get("presence")}

        assert eventually(state, lambda seen: seen == back, timeout=40, every=0.2) == back
        # Subscriptions back: probe until every member has received one.
        probe_until_received(publisher, members)
        publisher.ok("sequence", group="room", n=20, prefix="after")
        for ws in members:
            assert_next_after_probes(ws, [f"after{i}" for i in range(20)])
        status, answer = srv.http("POST", "/publish/room", b"from the view")
        assert status == 200, answer
        for ws in members:
            assert receive(ws, 1) == ["from the view"]


def probe_until_received(publisher: Publisher, members: list[ClientConnection], timeout: float = 40) -> int:
    """Publish ``probe<n>`` again and again until every member has received one; the number published."""
    probed = [False] * len(members)
    deadline = time.monotonic() + timeout
    probe = 0
    while not all(probed):
        assert time.monotonic() < deadline, f"no publish reached the members: {probed}"
        publisher.ok("publish", group="room", text=f"probe{probe}")
        probe += 1
        for i, ws in enumerate(members):
            try:
                while True:
                    message = ws.recv(timeout=0.1 if probed[i] else 0.3)
                    assert isinstance(message, str) and message.startswith("probe"), message
                    probed[i] = True
            except TimeoutError:
                pass
    return probe


def assert_next_after_probes(ws: ClientConnection, expected: list[str]) -> None:
    """The messages after the probes ``ws`` may still hold are ``expected``."""
    while True:
        message = ws.recv(timeout=20)
        if not (isinstance(message, str) and message.startswith("probe")):
            break
    assert [message, *receive(ws, len(expected) - 1)] == expected


def test_subscription_dropped_by_redis_is_logged_and_restored(clients: Clients, redis_server: RedisServer) -> None:
    """Redis drops the worker's subscribing connection while it stays up (CLIENT KILL TYPE pubsub, as Redis does
    at its output-buffer limit): the worker says so in its log, naming the broker, never losing messages
    silently, and subscribes again by itself."""
    env = broker(redis_server)
    with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
        members = [clients.join(srv, "room")[0], clients.join(srv, "room", route="aws")[0]]
        assert eventually(lambda: publisher.count("room"), lambda n: n == 2) == 2
        client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)
        assert client.client_kill_filter(_type="pubsub") >= 1
        srv.wait_for(f"127.0.0.1:{redis_server.port}", timeout=20)  # said, naming the broker
        probe_until_received(publisher, members)
        publisher.ok("sequence", group="room", n=20, prefix="again")
        for ws in members:
            assert_next_after_probes(ws, [f"again{i}" for i in range(20)])
        assert publisher.count("room") == 2


def test_broker_not_answering_never_hangs(clients: Clients, redis_server: RedisServer) -> None:
    """Redis stopped with SIGSTOP (connections open, nothing answers): the calls still give up within the bound
    with BrokerUnavailable, the websockets echo meanwhile, and all works again once Redis answers."""
    env = broker(redis_server)
    with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher, Publisher(env) as other:
        ws, _ = clients.join(srv, "room")
        assert eventually(lambda: publisher.count("room"), lambda n: n == 1) == 1
        answers: dict[str, dict[str, t.Any]] = {}
        calls = {
            "count": lambda: publisher("count", timeout=GIVE_UP + 15, group="room"),
            "publish": lambda: other("publish", timeout=GIVE_UP + 15, group="room", text="x"),
            "view": lambda: srv.http("GET", "/count/room", timeout=GIVE_UP + 15)[1],
        }
        threads = [
            threading.Thread(target=lambda name=name, call=call: answers.__setitem__(name, call()), daemon=True)
            for name, call in calls.items()
        ]
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            for thread in threads:
                thread.start()
            for i in range(5):  # while they wait on Redis
                ws.send(f"meanwhile {i}")
                assert receive(ws, 1, timeout=5) == [f"echo:meanwhile {i}"]
            for thread in threads:
                thread.join(GIVE_UP + 20)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert sorted(answers) == sorted(calls), answers
        for answer in answers.values():
            assert_unavailable(answer, redis_server)
        answer = eventually(lambda: publisher("count", group="room"), lambda a: a.get("count") == 1, timeout=40)
        assert answer.get("count") == 1, answer
        # The worker may still be subscribing again (its health check gave the link up while Redis was stopped):
        # what is published meanwhile is lost (at most once), so probe first.
        try:
            probe_until_received(publisher, [ws])
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe server's output:\n{srv.output}") from None
        publisher.ok("sequence", group="room", n=5, prefix="answered")
        assert_next_after_probes(ws, [f"answered{i}" for i in range(5)])


def test_publish_during_a_redis_stall_goes_out_at_most_once(clients: Clients, redis_server: RedisServer) -> None:
    """Redis stalls (SIGSTOP) for longer than a command may take (5 s), then answers again: a publish made
    meanwhile reaches Redis at most once, so no member receives it twice; publish answers within the bound."""
    env = broker(redis_server)
    stall = 7.0
    with GroupServer("hypercorn", env) as srv, Publisher(env) as publisher:
        ws, _ = clients.join(srv, "room")
        assert eventually(lambda: publisher.count("room"), lambda n: n == 1) == 1
        # What reaches Redis on the group's channel, seen by a subscriber of this test's own.
        channel, _ = published_channel(redis.Redis(host="127.0.0.1", port=redis_server.port), publisher, "room")
        assert receive(ws, 1) == ["probe"]
        watcher = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=30).pubsub()
        watcher.subscribe(channel)
        assert eventually(lambda: watcher.get_message(timeout=1), lambda m: m is not None)["type"] == "subscribe"
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        resume = threading.Timer(stall, redis_server.process.send_signal, (signal.SIGCONT,))
        resume.start()
        try:
            answer = publisher("publish", timeout=GIVE_UP + 15, group="room", text="once")
        finally:
            resume.join()
        assert answer["seconds"] < GIVE_UP, answer
        publisher.ok("publish", group="room", text="end")  # after it, in Redis's order
        seen = []
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, f"the end did not go out: {seen}"
            message = watcher.get_message(timeout=1)
            if message is not None and message["type"] == "message":
                if message["data"].endswith(b"end"):
                    break
                seen.append(message["data"])
        watcher.close()
        print(f"\npublish during the stall: {answer}; Redis carried {len(seen)} copies of it")
        assert len(seen) <= 1, f"the message went out {len(seen)} times: {seen}"
        got = []
        while (message := ws.recv(timeout=20)) != "end":
            got.append(message)
        assert got in ([], ["once"]), got
